"""The client address HAProxy passes to the controller's app: believed only with the secret,
and both headers taken off before any handler (or replica) sees them."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tickrun.controller.haproxy.trust import CLIENT_HEADER, FRONT_SECRET, SECRET_HEADER, install
from tickrun.controller.settings import Settings
from tickrun.functions.httpserver import request_id_of


async def _seen(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "remote": request.remote,
            "headers": sorted(k.lower() for k in request.headers),
            "request_id": request_id_of(request),
        }
    )


def _ask(app: web.Application, headers: dict[str, str]) -> tuple[dict[str, object], str]:
    async def main() -> tuple[dict[str, object], str]:
        async with TestClient(TestServer(app)) as client:
            resp = await client.get("/", headers=headers)
            return await resp.json(), resp.headers.get("X-Request-Id", "")

    return asyncio.run(main())


def _app(tmp_path: Path, proxy: str) -> web.Application:
    app = web.Application()
    install(app, Settings(state_dir=tmp_path, proxy=proxy))  # type: ignore[arg-type]
    app.router.add_get("/", _seen)

    async def stamp(request: web.Request, response: web.StreamResponse) -> None:
        response.headers["X-Request-Id"] = request_id_of(request)

    app.on_response_prepare.append(stamp)
    return app


def test_the_address_is_believed_with_the_secret_only(tmp_path: Path) -> None:
    app = _app(tmp_path, "haproxy")
    secret = app[FRONT_SECRET]
    seen, _ = _ask(app, {CLIENT_HEADER: "10.1.2.3", SECRET_HEADER: secret})
    assert seen["remote"] == "10.1.2.3"
    assert not {CLIENT_HEADER.lower(), SECRET_HEADER.lower()} & set(seen["headers"])  # type: ignore[arg-type]
    forged, _ = _ask(_app(tmp_path, "haproxy"), {CLIENT_HEADER: "10.1.2.3", SECRET_HEADER: "no"})
    assert forged["remote"] == "127.0.0.1"
    assert CLIENT_HEADER.lower() not in forged["headers"]  # type: ignore[operator]


def test_a_header_that_is_not_utf8_passes_as_it_came(tmp_path: Path) -> None:
    app = _app(tmp_path, "haproxy")
    trusted = {CLIENT_HEADER: "10.1.2.3", SECRET_HEADER: app[FRONT_SECRET]}

    async def main() -> tuple[int, object]:
        async with TestClient(TestServer(app)) as client:
            # Raw bytes on the wire: aiohttp's client would refuse to send them.
            reader, writer = await asyncio.open_connection(client.host, client.port)
            head = "".join(f"{k}: {v}\r\n" for k, v in trusted.items()).encode()
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Odd: \xff\xfe\r\n" + head + b"\r\n")
            await writer.drain()
            status_line = await reader.readline()
            writer.close()
            return int(status_line.split()[1]), status_line

    status, line = asyncio.run(main())
    assert status == 200, line


def test_the_request_id_of_the_answer_is_the_handlers(tmp_path: Path) -> None:
    app = _app(tmp_path, "auto")
    seen, answered = _ask(app, {CLIENT_HEADER: "10.1.2.3", SECRET_HEADER: app[FRONT_SECRET]})
    assert seen["request_id"] == answered != ""


def test_without_haproxy_nothing_is_installed(tmp_path: Path) -> None:
    app = _app(tmp_path, "python")
    assert FRONT_SECRET not in app
    seen, _ = _ask(app, {CLIENT_HEADER: "10.1.2.3"})
    assert seen["remote"] == "127.0.0.1"
