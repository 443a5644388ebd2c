"""A small synchronous client of the controller's REST API (used by the CLI, tests, bench)."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tickrun.functions.errors import (
    AuthError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    PlatformError,
    SpecError,
    TickrunError,
)
from tickrun.functions.settings import CONTROLLER_URL, TOKEN
from tickrun.functions.spec import FunctionSpec

from .auth import read_token_file
from .builder.hashing import pack_dir
from .settings import Settings

_BY_STATUS: dict[int, type[TickrunError]] = {
    400: SpecError,
    401: AuthError,
    404: NotFoundError,
    409: ConflictError,
    413: BadRequestError,
}


@dataclass
class Invocation:
    status: int
    headers: dict[str, str]  # names lower-cased (HTTP header names are case-insensitive)
    body: bytes


class ControllerClient:
    """Constructor does no I/O."""

    def __init__(self, url: str, token: str | None, *, timeout_s: float = 60.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise SpecError(f"controller URL {url!r} must start with http:// or https://")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    @classmethod
    def from_env(cls, state_dir: str | None = None) -> ControllerClient:
        """URL/token from TICKRUN_CONTROLLER_URL / TICKRUN_TOKEN, else the state dir's files."""
        settings = Settings.from_env(state_dir=state_dir)
        url = CONTROLLER_URL.get()
        if not url:
            try:
                url = json.loads(settings.url_file.read_text())["url"]
            except (OSError, ValueError, KeyError):
                url = f"http://127.0.0.1:{settings.port}"
        token = TOKEN.get() or read_token_file(settings.token_file)
        return cls(url, token)

    def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        resp = self._open(method, path, body, headers=headers, raw=raw, timeout_s=timeout_s)
        with resp:
            data = resp.read()
        return json.loads(data) if data else None

    def _open(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        hdrs = dict(headers or {})
        if self.token:
            hdrs.setdefault("Authorization", f"Bearer {self.token}")
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        req = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
            self.url + path, data=data, method=method, headers=hdrs
        )
        try:
            return urllib.request.urlopen(req, timeout=timeout_s or self.timeout_s)  # noqa: S310
        except urllib.error.HTTPError as exc:
            raise self._error(exc) from None
        except urllib.error.URLError as exc:
            raise PlatformError(
                f"cannot reach the controller at {self.url} ({exc.reason}); start it with "
                f"`tickrun controller start` or set {CONTROLLER_URL.name}"
            ) from exc

    @staticmethod
    def _error(exc: urllib.error.HTTPError) -> TickrunError:
        try:
            payload = json.loads(exc.read() or b"{}")
        except ValueError:
            payload = {}
        if not isinstance(payload, dict):  # e.g. a proxy's own error page in front
            payload = {}
        message = str(payload.get("detail") or f"HTTP {exc.code}")
        if exc.code >= 500 and payload.get("request_id"):
            message += f" (request id {payload['request_id']}: see the controller log)"
        cls = _BY_STATUS.get(exc.code, TickrunError)
        err = cls(str(message), detail=payload.get("fields"))
        err.status = exc.code
        return err

    # --- API ------------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return dict(self._request("GET", "/healthz"))

    def deploy(
        self,
        spec: FunctionSpec | Mapping[str, Any],
        code_dir: Path | None,
        *,
        platform: str | None = None,
    ) -> dict[str, Any]:
        """Create or update a function. ``spec`` is a model, or a raw mapping the API validates."""
        data = spec.to_yaml_dict() if isinstance(spec, FunctionSpec) else dict(spec)
        body: dict[str, Any] = {"spec": data}
        if code_dir is not None:
            body["code"] = base64.b64encode(pack_dir(code_dir)).decode()
        if platform:
            body["platform"] = platform
        name = data.get("metadata", {}).get("name", "")
        exists = True
        try:
            self.get_function(name)
        except NotFoundError:
            exists = False
        if exists:
            return dict(self._request("PUT", f"/api/functions/{name}", body))
        return dict(self._request("POST", "/api/functions", body))

    def list_functions(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/api/functions")["functions"])

    def get_function(self, name: str) -> dict[str, Any]:
        return dict(self._request("GET", f"/api/functions/{name}"))

    def delete_function(self, name: str) -> None:
        self._request("DELETE", f"/api/functions/{name}", timeout_s=120)

    def scale(
        self,
        name: str,
        *,
        replicas: int | None = None,
        min_replicas: int | None = None,
        max_replicas: int | None = None,
    ) -> dict[str, Any]:
        """Set a fixed replica count or autoscaled bounds (no build, no new version).
        Returns ``{"function": …, "scale": {"from": …, "to": …}}``."""
        body: dict[str, int] = {}
        if replicas is not None:
            body["replicas"] = replicas
        if min_replicas is not None:
            body["minReplicas"] = min_replicas
        if max_replicas is not None:
            body["maxReplicas"] = max_replicas
        return dict(self._request("PUT", f"/api/functions/{_seg(name)}/scale", body))

    def export(self, name: str) -> dict[str, Any]:
        return dict(self._request("GET", f"/api/functions/{name}/export"))

    def events(self, name: str, after: int = 0) -> list[dict[str, Any]]:
        return list(self._request("GET", f"/api/functions/{name}/events?after={after}")["events"])

    def logs(self, name: str, tail: int = 200, replica: str | None = None) -> list[dict[str, Any]]:
        q = f"?tail={tail}" + (f"&replica={replica}" if replica else "")
        return list(self._request("GET", f"/api/functions/{name}/logs{q}")["replicas"])

    def follow_build(self, build_id: str) -> Iterator[str]:
        resp = self._open("GET", f"/api/builds/{build_id}/log?follow=1", timeout_s=3600)
        with resp:
            for line in resp:
                yield line.decode(errors="replace").rstrip("\n")

    def get_build(self, build_id: str) -> dict[str, Any]:
        return dict(self._request("GET", f"/api/builds/{build_id}"))

    def wait_ready(
        self, name: str, *, version: int | None = None, timeout_s: float = 600, poll_s: float = 0.05
    ) -> dict[str, Any]:
        """Until the function is ready (or error: raised as PlatformError with the message)."""
        deadline = time.monotonic() + timeout_s
        while True:
            fn = self.get_function(name)
            current = version is None or fn["version"] == version
            if current and fn["state"] == "ready":
                return fn
            if current and fn["state"] == "error":
                raise PlatformError(f"function {name!r} failed: {fn['message']}")
            if time.monotonic() > deadline:
                raise PlatformError(
                    f"function {name!r} not ready after {timeout_s:.0f} s "
                    f"(state {fn['state']}); see `tickrun logs {name}`"
                )
            time.sleep(poll_s)

    def invoke(
        self,
        name: str,
        *,
        path: str = "/",
        method: str = "GET",
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> Invocation:
        hdrs = dict(headers or {})
        if self.token:
            hdrs.setdefault("Authorization", f"Bearer {self.token}")
        url = f"{self.url}/fn/{name}/{path.lstrip('/')}"
        req = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
            url, data=body, method=method, headers=hdrs
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout_s or self.timeout_s) as resp:  # noqa: S310
                return Invocation(resp.status, _lower(resp.headers.items()), resp.read())
        except urllib.error.HTTPError as exc:
            return Invocation(exc.code, _lower(exc.headers.items()), exc.read())
        except urllib.error.URLError as exc:
            raise PlatformError(f"cannot reach the controller at {self.url}: {exc.reason}") from exc

    # --- scheduled jobs (controller/schedules/) -------------------------------------------------

    def create_schedule(
        self,
        name: str,
        cron: str,
        job: Mapping[str, Any],
        *,
        concurrency: str = "forbid",
        missed: str = "skip",
        starting_deadline_s: float | None = None,
        timezone: str = "UTC",
        paused: bool = False,
    ) -> dict[str, Any]:
        """Schedule ``job`` (a JobRequest's fields without uid) on ``cron``."""
        body = {
            "name": name,
            "cron": cron,
            "job": dict(job),
            "concurrency": concurrency,
            "missed": missed,
            "timezone": timezone,
            "paused": paused,
        }
        if starting_deadline_s is not None:
            body["starting_deadline_s"] = starting_deadline_s
        return dict(self._request("POST", "/api/schedules", body))

    def list_schedules(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/api/schedules")["schedules"])

    def get_schedule(self, name: str) -> dict[str, Any]:
        return dict(self._request("GET", f"/api/schedules/{_seg(name)}"))

    def pause_schedule(self, name: str) -> dict[str, Any]:
        return dict(self._request("POST", f"/api/schedules/{_seg(name)}/pause"))

    def resume_schedule(self, name: str) -> dict[str, Any]:
        return dict(self._request("POST", f"/api/schedules/{_seg(name)}/resume"))

    def run_schedule(self, name: str) -> str:
        """Run the schedule's job now; the run's uid."""
        return str(self._request("POST", f"/api/schedules/{_seg(name)}/run")["run_uid"])

    def delete_schedule(self, name: str) -> None:
        self._request("DELETE", f"/api/schedules/{_seg(name)}")


def _seg(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _lower(items: Any) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in items}
