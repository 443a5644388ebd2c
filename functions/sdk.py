"""The objects a handler sees: nuclio-sdk's own types, so Nuclio functions run unchanged.

tickrun adds only what a platform must provide: a ``Platform`` whose ``call_function`` goes
through tickrun's gateway, and a logger wired into tickrun's structured logging.
"""

from __future__ import annotations

import http.client
import json
import logging
from typing import Any
from urllib.parse import urlsplit

import nuclio_sdk
from nuclio_sdk import Context, Event, ExceptionWithResponse, Response, TriggerInfo

from . import settings

__all__ = [
    "Context",
    "Event",
    "ExceptionWithResponse",
    "Response",
    "TickrunPlatform",
    "TriggerInfo",
    "make_context",
    "make_logger",
]

GATEWAY_ENV = settings.GATEWAY_URL.name


class TickrunPlatform(nuclio_sdk.Platform):  # type: ignore[misc]
    """``context.platform``: ``call_function`` reaches other functions through the gateway."""

    def __init__(self, gateway_url: str | None = None, namespace: str = "default") -> None:
        super().__init__("tickrun", namespace=namespace)
        self._gateway_url = gateway_url or settings.GATEWAY_URL.get()

    def call_function(
        self,
        function_name: str,
        event: Event,
        node: Any = None,
        timeout: float | None = None,
        service_name_override: str | None = None,
    ) -> Response:
        target = urlsplit(self._gateway_url)
        conn_cls = (
            http.client.HTTPSConnection if target.scheme == "https" else http.client.HTTPConnection
        )
        conn = conn_cls(target.netloc, timeout=timeout)
        if isinstance(event.body, dict | list):
            body: Any = json.dumps(event.body)
            content_type = "application/json"
        else:
            body = event.body
            content_type = event.content_type or "text/plain"
        headers = dict(event.headers or {})
        headers["Content-Type"] = content_type
        headers.pop("Content-Length", None)
        name = service_name_override or function_name
        path = f"{target.path.rstrip('/')}/fn/{name}/{(event.path or '/').lstrip('/')}"
        token = settings.TOKEN.get()
        if token:
            headers.setdefault("Authorization", f"Bearer {token}")
        try:
            conn.request(event.method or "POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        resp_headers = {k.lower(): v for k, v in resp.getheaders()}
        ctype = resp_headers.get("content-type", "text/plain")
        payload: Any = raw
        if ctype.split(";")[0].strip() == "application/json":
            payload = json.loads(raw)
        return Response(
            headers=resp_headers, body=payload, content_type=ctype, status_code=resp.status
        )


class LevelledLogger(nuclio_sdk.Logger):  # type: ignore[misc]
    """nuclio-sdk's logger, minus one flaw: its ``*_with`` calls skip the level check.

    Without the check, a handler's ``debug_with`` in a hot loop formats and emits every record
    even when the replica logs at INFO.
    """

    def _update_bound_vars_and_log(
        self, level: int, message: str, *args: Any, **kw_args: Any
    ) -> None:
        if self._logger.isEnabledFor(level):
            super()._update_bound_vars_and_log(level, message, *args, **kw_args)


def make_logger(function_name: str, level: int = logging.NOTSET) -> nuclio_sdk.Logger:
    """nuclio-sdk's logger (``info_with`` & co.), emitting into tickrun's log pipeline.

    ``NOTSET`` defers to the root logger's level, i.e. the replica's ``--log-level``.
    """
    return LevelledLogger(level, name=f"tickrun.handler.{function_name}")


def make_context(
    function_name: str,
    *,
    worker_id: int = 0,
    trigger: TriggerInfo | None = None,
    platform: nuclio_sdk.Platform | None = None,
) -> Context:
    return Context(
        logger=make_logger(function_name),
        platform=platform or TickrunPlatform(),
        worker_id=worker_id,
        trigger=trigger,
    )
