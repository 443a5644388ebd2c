"""The OpenAPI document is valid and describes every route of the app."""

from __future__ import annotations

from pathlib import Path

from openapi_spec_validator import validate

from tickrun.controller.app import create_app
from tickrun.controller.openapi import document
from tickrun.controller.settings import Settings


def test_openapi_document_is_valid_and_covers_every_route(tmp_path: Path) -> None:
    doc = document()
    validate(doc)
    # The whole app, not only api.add_routes: routes added in app.py (/api/version, /fn/…)
    # were missed before. Building it does no I/O.
    settings = Settings(state_dir=tmp_path / "state", cache_dir=tmp_path / "cache", token="t")
    app = create_app(settings)
    # Mounted from other packages, which describe them themselves.
    foreign = ("/api/runs", "/api/artifacts", "/api/hub")
    seen = set()
    for route in app.router.routes():
        if route.method == "HEAD":  # aiohttp adds HEAD beside every GET
            continue
        info = route.resource.get_info() if route.resource else {}
        path = str(info.get("path") or info.get("formatter"))
        if path.startswith(foreign):
            continue
        path = path.replace("{tail}", "{path}")  # the gateway's catch-all, named for readers
        seen.add(path)
        assert path in doc["paths"], f"{path} missing from the OpenAPI document"
        methods = doc["paths"][path]
        if route.method == "*":
            assert {"get", "post"} <= set(methods), f"{path}: invocation methods undocumented"
        else:
            assert route.method.lower() in methods, f"{route.method} {path} undocumented"
    assert {"/api/version", "/healthz", "/fn/{name}"} <= seen
    assert set(doc["paths"]) == seen, "the document describes routes the app does not have"
    assert doc["components"]["schemas"]["DeployRequest"]["additionalProperties"] is False
