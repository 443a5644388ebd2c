"""An aiohttp app serving hub folders over real loopback HTTP from a thread (the resolver's
HTTP calls block), for the remote-hub tests."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from aiohttp import web

from tickrun.hub.api import add_routes


class HubServer:
    """An aiohttp app serving hub folders from a thread (the resolver's HTTP calls block)."""

    def __init__(self, roots: list[Path] | None) -> None:
        self.roots = roots
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.requests: list[str] = []

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    async def _start(self) -> None:
        @web.middleware
        async def record(request: web.Request, handler):  # type: ignore[no-untyped-def]
            self.requests.append(request.path)
            return await handler(request)

        app = web.Application(middlewares=[record])
        add_routes(app, roots=self.roots)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
