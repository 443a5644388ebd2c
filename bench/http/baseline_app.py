"""The baseline: a bare aiohttp app with the same no-op handler, N processes on one port."""

from __future__ import annotations

import asyncio
import os
import sys

from aiohttp import web


def noop() -> str:
    return "ok"


async def handler(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(text=noop())


async def threaded_handler(request: web.Request) -> web.Response:
    # What an aiohttp app does with blocking code: a thread hop per request.
    await request.read()
    return web.Response(text=await asyncio.get_running_loop().run_in_executor(None, noop))


def main() -> None:
    port = int(sys.argv[1])
    threaded = len(sys.argv) > 2 and sys.argv[2] == "threaded"
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", threaded_handler if threaded else handler)
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
