"""The model registry as a client of the controller's ``/api/models`` (see registry_api.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

from ..registry_records import (
    ModelVersion,
    RegisteredModel,
    RegisterRequest,
    check_alias,
    check_name,
    check_version,
    version_ref,
)
from .registry_base import ModelRegistry

# (method, path with query, JSON body) → the decoded answer; raises the TickrunError of a 4xx/5xx.
Request = Callable[[str, str, bytes | None], Any]


def _seg(text: str) -> str:
    return quote(text, safe="")


class HttpModelRegistry(ModelRegistry):
    def __init__(self, request: Request) -> None:
        self._request = request

    def register(self, request: RegisterRequest) -> ModelVersion:
        data = self._request("POST", "/api/models", request.model_dump_json().encode())
        return ModelVersion.model_validate(data["version"])

    def get_model(self, name: str) -> RegisteredModel:
        data = self._request("GET", f"/api/models/{_seg(check_name(name))}", None)
        return RegisteredModel.model_validate(data["model"])

    def list_models(self, limit: int = 1000) -> list[RegisteredModel]:
        data = self._request("GET", f"/api/models?limit={int(limit)}", None)
        return [RegisteredModel.model_validate(m) for m in data["models"]]

    def list_versions(
        self,
        name: str | None = None,
        *,
        tags: dict[str, str] | None = None,
        run_uid: str | None = None,
        limit: int = 1000,
    ) -> list[ModelVersion]:
        query: list[tuple[str, str]] = [("limit", str(int(limit)))]
        if name:
            query.append(("name", check_name(name)))
        if run_uid:
            query.append(("run_uid", run_uid))
        query += [("tag", f"{k}={v}") for k, v in (tags or {}).items()]
        data = self._request("GET", f"/api/model-versions?{urlencode(query)}", None)
        return [ModelVersion.model_validate(v) for v in data["versions"]]

    def get_version(self, name: str, version: int | str) -> ModelVersion:
        ref = version_ref(version)
        path = f"/api/models/{_seg(check_name(name))}/versions/{_seg(str(ref))}"
        return ModelVersion.model_validate(self._request("GET", path, None)["version"])

    def set_alias(self, name: str, alias: str, version: int) -> ModelVersion:
        path = f"/api/models/{_seg(check_name(name))}/aliases/{_seg(check_alias(alias))}"
        body = json.dumps({"version": check_version(version)}).encode()
        return ModelVersion.model_validate(self._request("PUT", path, body)["version"])

    def delete_alias(self, name: str, alias: str) -> None:
        path = f"/api/models/{_seg(check_name(name))}/aliases/{_seg(check_alias(alias))}"
        self._request("DELETE", path, None)

    def delete_version(self, name: str, version: int, *, force: bool = False) -> None:
        path = f"/api/models/{_seg(check_name(name))}/versions/{check_version(version)}"
        self._request("DELETE", path + ("?force=1" if force else ""), None)
