"""The run DB as a client of the controller's REST API (``/api/runs``, ``/api/artifacts``,
and the model registry's ``/api/models``).

Stdlib ``http.client`` (one keep-alive connection per thread); the bearer token is sent in a
header and never appears in errors or logs.
"""

from __future__ import annotations

import http.client
import json
import threading
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from ...errors import (
    AuthError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    StoreError,
    TickrunError,
)
from ..records import ArtifactRecord, RunBatch, RunRecord
from .base import DbLocator, RunDB
from .registry_base import ModelRegistry
from .registry_http import HttpModelRegistry


class HttpRunDB(RunDB):
    def __init__(self, url: str, token: str | None = None, *, timeout_s: float = 30.0) -> None:
        parts = urlsplit(url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise BadRequestError(f"controller URL must be http(s)://host:port, got {url[:80]!r}")
        self.url = url.rstrip("/")
        self._scheme = parts.scheme
        self._netloc = parts.netloc
        self._base = parts.path.rstrip("/")
        self._token = token
        self._timeout_s = timeout_s
        self._local = threading.local()

    def locator(self) -> DbLocator:
        return DbLocator("http", self.url, self._token)

    def registry(self) -> ModelRegistry:
        return HttpModelRegistry(self._request)

    def _conn(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            cls = (
                http.client.HTTPSConnection
                if self._scheme == "https"
                else http.client.HTTPConnection
            )
            conn = cls(self._netloc, timeout=self._timeout_s)
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _request(self, method: str, path: str, body: bytes | None = None) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        for attempt in (1, 2):  # a keep-alive connection the server closed: reconnect once
            conn = self._conn()
            try:
                conn.request(method, self._base + path, body=body, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
                break
            except (http.client.HTTPException, OSError) as exc:
                self.close()
                if attempt == 2:
                    raise StoreError(
                        f"cannot reach the controller at {self.url}: {type(exc).__name__}"
                    ) from exc
        if resp.status >= 400:
            raise _error(resp.status, raw, self.url)
        return json.loads(raw) if raw else None

    # -- interface -----------------------------------------------------------------------------

    def apply(self, batch: RunBatch) -> None:
        if batch.runs or batch.artifacts:
            self._request("POST", "/api/runs", batch.model_dump_json().encode())

    def get_run(self, uid: str, iteration: int = 0) -> RunRecord:
        q = f"?iteration={iteration}" if iteration else ""
        data = self._request("GET", f"/api/runs/{quote(uid, safe='')}{q}")
        return RunRecord.model_validate(data["run"])

    def list_runs(
        self,
        project: str | None = None,
        *,
        uid: str | None = None,
        state: str | None = None,
        name: str | None = None,
        iterations: bool = False,
        limit: int = 100,
        label: str | None = None,
    ) -> list[RunRecord]:
        q = _query(
            project=project,
            uid=uid,
            state=state,
            name=name,
            iterations="1" if iterations else None,
            limit=str(limit),
            label=label,
        )
        data = self._request("GET", f"/api/runs{q}")
        return [RunRecord.model_validate(r) for r in data["runs"]]

    def list_artifacts(
        self,
        project: str | None = None,
        *,
        uid: str | None = None,
        iteration: int | None = None,
        key: str | None = None,
        kind: str | None = None,
        limit: int = 1000,
    ) -> list[ArtifactRecord]:
        q = _query(
            project=project,
            uid=uid,
            key=key,
            kind=kind,
            limit=str(limit),
            iteration=None if iteration is None else str(iteration),
        )
        data = self._request("GET", f"/api/artifacts{q}")
        return [ArtifactRecord.model_validate(a) for a in data["artifacts"]]

    def get_artifact(self, project: str, uid: str, iteration: int, key: str) -> ArtifactRecord:
        path = "/".join(quote(p, safe="") for p in (project, uid, str(iteration), key))
        data = self._request("GET", f"/api/artifacts/{path}")
        return ArtifactRecord.model_validate(data["artifact"])

    def mark_stale(self, now: float | None = None) -> list[RunRecord]:
        data = self._request("POST", "/api/runs/_stale", b"{}")
        return [RunRecord.model_validate(r) for r in data["runs"]]


def _query(**params: str | None) -> str:
    kept = {k: v for k, v in params.items() if v not in (None, "")}
    return f"?{urlencode(kept)}" if kept else ""


def _error(status: int, raw: bytes, url: str) -> TickrunError:
    try:
        detail = str(json.loads(raw).get("detail") or "")[:500]
    except (ValueError, AttributeError):
        detail = ""
    msg = detail or f"HTTP {status}"
    if status == 404:
        return NotFoundError(msg)
    if status in (401, 403):
        return AuthError(f"the controller at {url} refused the token: {msg}")
    if status == 400:
        return BadRequestError(msg)
    if status == 409:
        return ConflictError(msg)
    return StoreError(f"the controller at {url} failed: {msg}")
