"""The UI's routes on the real controller app: page and static files, login, cookie, CSRF."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tickrun.controller.app import create_app
from tickrun.controller.settings import Settings
from tickrun.controller.ui.routes import UI_KEY
from tickrun.controller.ui.session import COOKIE_NAME, SessionSigner
from tickrun.controller.ui.static_files import StaticFiles

TOKEN = "sekret-token"


@pytest.fixture
def static_dir(tmp_path: Path) -> Path:
    # ui-runs owns the real static/ folder: the tests serve a folder of their own.
    root = tmp_path / "static"
    (root / "pages").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>tickrun</title>", encoding="utf-8")
    (root / "app.js").write_text("export const x = 1;\n", encoding="utf-8")
    (root / "style.css").write_text("body{}\n", encoding="utf-8")
    (root / "pages" / "runs.js").write_text("export async function render(){}\n")
    (root / "logo.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (root / "font.woff2").write_bytes(b"wOF2\x00\x01")
    (root / "notes.py").write_text("secret = 1\n")
    (tmp_path / "outside.js").write_text("no")
    return root


@pytest.fixture
async def client(tmp_path: Path, static_dir: Path) -> AsyncIterator[TestClient]:
    settings = Settings(state_dir=tmp_path / "state", cache_dir=tmp_path / "cache", token=TOKEN)
    app = create_app(settings)
    app[UI_KEY].static = StaticFiles(static_dir)
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_index_and_static_files_are_served_with_types_and_etags(client: TestClient) -> None:
    page = await client.get("/")
    assert page.status == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert "<title>tickrun</title>" in await page.text()
    types = {
        "app.js": "text/javascript",
        "style.css": "text/css",
        "logo.svg": "image/svg+xml",
        "font.woff2": "font/woff2",
        "pages/runs.js": "text/javascript",
    }
    for rel, ctype in types.items():
        resp = await client.get(f"/ui/static/{rel}")
        assert resp.status == 200, rel
        assert resp.headers["Content-Type"].startswith(ctype), rel
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        etag = resp.headers["ETag"]
        again = await client.get(f"/ui/static/{rel}", headers={"If-None-Match": etag})
        assert again.status == 304
    hashed = await client.get("/ui/static/app.js?v=abc")
    assert "immutable" in hashed.headers["Cache-Control"]
    plain = await client.get("/ui/static/app.js")
    assert plain.headers["Cache-Control"] == "no-cache"


@pytest.mark.parametrize(
    "path",
    [
        "/ui/static/../outside.js",
        "/ui/static/%2e%2e/outside.js",
        "/ui/static/pages/..%2f..%2foutside.js",
        "/ui/static/..%5coutside.js",
        "/ui/static/notes.py",
        "/ui/static/missing.js",
        "/ui/static/.hidden.js",
        "/ui/static//etc/passwd",
    ],
)
async def test_static_paths_outside_the_folder_or_of_other_kinds_are_404(
    client: TestClient, path: str
) -> None:
    resp = await client.get(path)
    # A client may normalise ``..`` away first (then the path is outside /ui/static/: a 401).
    assert resp.status in (401, 404)
    body = await resp.text()
    assert body != "no" and "error" in body
    assert "secret" not in body and "Traceback" not in body


async def test_login_cookie_admits_api_reads_and_writes_need_the_csrf_header(
    client: TestClient,
) -> None:
    assert (await client.get("/ui/session")).status == 401
    assert (await client.get("/api/functions")).status == 401
    wrong = await client.post("/ui/login", json={"token": "nope"})
    assert wrong.status == 401
    assert TOKEN not in await wrong.text()
    ok = await client.post("/ui/login", data={"token": TOKEN})  # the login form
    assert ok.status == 200
    cookie = ok.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Max-Age" in cookie
    assert TOKEN not in cookie
    csrf = (await ok.json())["csrf"]
    session = await client.get("/ui/session")
    assert session.status == 200
    assert (await session.json())["csrf"] == csrf and (await session.json())["mode"] == "controller"
    assert (await client.get("/api/functions")).status == 200
    # A write without the CSRF header is refused even with the cookie; with it, it is admitted
    # (and fails on its own merits: the secret's body is checked after auth).
    no_csrf = await client.post("/api/secrets", json={})
    assert no_csrf.status == 403 and (await no_csrf.json())["error"] == "CsrfError"
    bad_csrf = await client.post("/api/secrets", json={}, headers={"X-CSRF-Token": "x" + csrf})
    assert bad_csrf.status == 403
    with_csrf = await client.post("/api/secrets", json={}, headers={"X-CSRF-Token": csrf})
    assert with_csrf.status not in (401, 403)
    # The gateway is not the UI's: the cookie does not open /fn/.
    assert (await client.get("/fn/x/")).status == 401
    # Logging out needs the CSRF token, then the cookie no longer works.
    assert (await client.post("/ui/logout")).status == 403
    out = await client.post("/ui/logout", headers={"X-CSRF-Token": csrf})
    assert out.status == 200
    assert (await client.get("/api/functions")).status == 401


async def test_bearer_token_still_works_and_a_wrong_one_is_not_rescued_by_a_cookie(
    client: TestClient,
) -> None:
    assert (
        await client.get("/api/functions", headers={"Authorization": f"Bearer {TOKEN}"})
    ).status == 200
    await client.post("/ui/login", json={"token": TOKEN})
    assert (await client.get("/api/functions")).status == 200
    resp = await client.get("/api/functions", headers={"Authorization": "Bearer wrong"})
    assert resp.status == 401


async def test_forged_or_expired_cookies_are_refused(client: TestClient) -> None:
    other = SessionSigner("another-token")
    forged, _ = other.issue()
    client.session.cookie_jar.update_cookies({COOKIE_NAME: forged})
    assert (await client.get("/api/functions")).status == 401
    expired, _ = SessionSigner(TOKEN, ttl_s=10).issue(now=1000.0)
    client.session.cookie_jar.update_cookies({COOKIE_NAME: expired})
    assert (await client.get("/api/functions")).status == 401
    tampered, _ = SessionSigner(TOKEN).issue()
    exp, nonce, sig = tampered.split(".")
    client.session.cookie_jar.update_cookies({COOKIE_NAME: f"{int(exp) + 999}.{nonce}.{sig}"})
    assert (await client.get("/api/functions")).status == 401


async def test_bad_login_bodies_are_400(client: TestClient) -> None:
    assert (await client.post("/ui/login", json={"nope": 1})).status == 400
    bad = await client.post(
        "/ui/login", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert bad.status == 400
    big = await client.post("/ui/login", json={"token": "x" * 10000})
    assert big.status == 400


def test_signer_revocation_and_csrf() -> None:
    signer = SessionSigner("t")
    value, sess = signer.issue()
    found = signer.check(value)
    assert found is not None and found.csrf == sess.csrf
    assert SessionSigner.csrf_ok(sess, sess.csrf) and not SessionSigner.csrf_ok(sess, None)
    signer.revoke(sess)
    assert signer.check(value) is None
    assert SessionSigner("t2").check(value) is None  # a rotated token ends every session
