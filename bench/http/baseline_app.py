"""The baseline: a bare aiohttp app calling the same no-op handler inline, N processes on one port.

    baseline_app.py PORT [sync|async]

``sync`` calls ``noop.sync_handler`` on the event loop (what Nuclio's Python runtime does: one
event at a time, inline); ``async`` awaits ``noop.handler``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent / "noop"))

import noop


async def sync_inline(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(text=noop.sync_handler(None, request))


async def async_handler(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(text=await noop.handler(None, request))


def main() -> None:
    port = int(sys.argv[1])
    kind = sys.argv[2] if len(sys.argv) > 2 else "async"
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", sync_inline if kind == "sync" else async_handler)
    web.run_app(
        app,
        host="127.0.0.1",
        port=port,
        reuse_port=True,
        access_log=None,
        print=lambda *_: print(f"baseline ready pid={os.getpid()}", flush=True),
    )


if __name__ == "__main__":
    main()
