"""The baseline: a bare aiohttp app with the same no-op handler, N processes on one port."""

from __future__ import annotations

import asyncio
import os
import sys

from aiohttp import web


async def handler(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(text="ok")


def main() -> None:
    port = int(sys.argv[1])
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
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
