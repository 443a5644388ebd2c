"""``tickrun controller start``: serve the controller until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal

from tickrun.functions.httpserver import HardenedSite
from tickrun.functions.httpserver_guard import raise_fd_limit

from . import api
from .app import GUARD, TOKEN, create_app
from .edge import make_runner
from .haproxy.front import HaproxyFront, haproxy_binary, listen
from .haproxy.trust import FRONT_SECRET
from .settings import Settings

logger = logging.getLogger(__name__)


async def serve(settings: Settings) -> None:
    fd_limit = raise_fd_limit()  # before the app sizes its connection budget from it
    exe = haproxy_binary(settings)
    # With HAProxy in front, it owns the public address and the app listens on loopback.
    public = listen(settings.host, settings.port) if exe else None
    app = create_app(settings)
    runner = make_runner(app, app[GUARD], shutdown_timeout=10.0)
    await runner.setup()
    site = HardenedSite(runner, "127.0.0.1" if exe else settings.host, 0 if exe else settings.port)
    await site.start()
    port = settings.port
    for addr in runner.addresses:  # the real port when settings.port is 0
        port = addr[1]
        break
    front = None
    if exe is not None and public is not None:
        endpoints = app[api.RECONCILER].endpoints
        front = HaproxyFront(
            exe, settings, endpoints, app[TOKEN], app[GUARD].limit, app[FRONT_SECRET]
        )
        await front.start(public, internal_port=port)
        port = public.getsockname()[1]
    url = f"http://{settings.host}:{port}"
    # Local CLIs find the controller here (with the token file beside it).
    tmp = settings.url_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"url": url, "pid": os.getpid()}))
    tmp.replace(settings.url_file)
    print(
        json.dumps({"event": "ready", "url": url, "state_dir": str(settings.state_dir)}), flush=True
    )
    logger.info(
        "controller listening",
        extra={
            "url": url,
            "max_connections": app[GUARD].limit,
            "fd_limit": fd_limit,
            "front": "haproxy" if front is not None else "python",
        },
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        logger.info("controller stopping; replicas keep running and are re-adopted on restart")
        if front is not None:
            # Together: HAProxy stops accepting and lets requests to replicas finish, while the
            # app ends its own (log follows, held requests) as it does without HAProxy; one after
            # the other, a client's open log follow would hold the stop for the stop timeout.
            await asyncio.gather(front.stop(), runner.cleanup())
        else:
            await runner.cleanup()
        if public is not None:
            public.close()
        with contextlib.suppress(OSError):
            settings.url_file.unlink()


def run(settings: Settings) -> int:
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(settings))
    else:
        uvloop.run(serve(settings))
    return 0
