"""The single-page app's files, served from inside the package (offline: nothing from a CDN).

``/`` is ``static/index.html``; ``/ui/static/{path}`` any other file under ``static/``. A path is
joined segment by segment (no ``..``, no absolute or hidden parts, no backslashes) and must still
resolve inside the folder, so no request reaches another file. Each file gets a strong ETag (a
hash of its bytes, cached by mtime and size); a request with ``?v=`` (a content hash the page
appends) may be cached for a year, any other revalidates with ``If-None-Match`` (a 304).
"""

from __future__ import annotations

import hashlib
import threading
from importlib import resources
from pathlib import Path

from aiohttp import web

from tickrun.functions.errors import NotFoundError

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".woff": "font/woff",
    ".txt": "text/plain; charset=utf-8",
}
# Served from the page's own origin only; ECharts sets inline styles, and images may be data: or
# blob: URLs (artifact previews). No inline scripts: index.html loads app.js as a module.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
MAX_PATH = 300


def static_root() -> Path:
    """The package's ``static/`` folder (a real folder: the package is installed unzipped)."""
    return Path(str(resources.files("tickrun.controller.ui"))) / "static"


class StaticFiles:
    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or static_root()).resolve()
        self._etags: dict[Path, tuple[float, int, str]] = {}
        self._lock = threading.Lock()

    def resolve(self, rel: str) -> Path:
        """The file ``rel`` names inside the root; NotFoundError for anything else."""
        missing = NotFoundError("no such UI file")
        if not rel or len(rel) > MAX_PATH or "\\" in rel or "\x00" in rel:
            raise missing
        parts = rel.split("/")
        if any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            raise missing
        path = self.root.joinpath(*parts)
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError):
            raise missing from None
        if not real.is_relative_to(self.root) or not real.is_file():
            raise missing
        if real.suffix.lower() not in CONTENT_TYPES:
            raise missing
        return real

    def _etag(self, path: Path) -> str:
        st = path.stat()
        with self._lock:
            cached = self._etags.get(path)
            if cached and cached[0] == st.st_mtime and cached[1] == st.st_size:
                return cached[2]
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:32]
        etag = f'"{digest}"'
        with self._lock:
            self._etags[path] = (st.st_mtime, st.st_size, etag)
        return etag

    def response(self, request: web.Request, path: Path, *, immutable: bool) -> web.StreamResponse:
        etag = self._etag(path)
        headers = {
            "ETag": etag,
            "Cache-Control": "public, max-age=31536000, immutable" if immutable else "no-cache",
            **SECURITY_HEADERS,
        }
        if path.suffix == ".html":
            headers["Content-Security-Policy"] = CSP
        match = request.headers.get("If-None-Match", "")
        if etag in (m.strip() for m in match.split(",")):
            return web.Response(status=304, headers=headers)
        return web.Response(
            body=path.read_bytes(),
            headers={**headers, "Content-Type": CONTENT_TYPES[path.suffix.lower()]},
        )


__all__ = ["CONTENT_TYPES", "CSP", "StaticFiles", "static_root"]
