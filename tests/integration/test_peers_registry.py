"""Smoke test: the registry peer is a real CNCF distribution registry that stores what it is given
and refuses anyone without the htpasswd credentials."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request

import pytest

from tests.peers.registry import RegistryServer

pytestmark = [pytest.mark.registry, pytest.mark.timeout(60)]

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def call(
    registry: RegistryServer, method: str, url: str, body: bytes | None = None, auth: bool = True
) -> tuple[int, dict[str, str], bytes]:
    full = url if url.startswith("http") else registry.url + url
    req = urllib.request.Request(full, data=body, method=method)
    if auth:
        req.add_header("Authorization", registry.auth_header())
    if body is not None:
        req.add_header("Content-Type", "application/octet-stream")
    try:
        with _NO_PROXY.open(req, timeout=10) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


def test_registry_stores_a_blob_for_its_user_and_refuses_anonymous(
    registry: RegistryServer,
) -> None:
    assert registry.startup_seconds is not None and registry.startup_seconds < 10
    assert call(registry, "GET", "/v2/", auth=False)[0] == 401
    assert registry.get("/v2/", auth=registry.auth_header(password="wrong"))[0] == 401
    assert call(registry, "GET", "/v2/")[0] == 200

    data = b"tickrun registry smoke " * 100
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    status, headers, _ = call(registry, "POST", "/v2/smoke/blob/blobs/uploads/", b"")
    assert status == 202
    location = headers["Location"]
    sep = "&" if "?" in location else "?"
    status, _, _ = call(registry, "PUT", f"{location}{sep}digest={digest}", data)
    assert status == 201

    status, headers, body = call(registry, "GET", f"/v2/smoke/blob/blobs/{digest}")
    assert status == 200 and body == data
    assert headers["Docker-Content-Digest"] == digest
    assert call(registry, "GET", f"/v2/smoke/blob/blobs/{digest}", auth=False)[0] == 401
    # Blobs belong to the repository they were pushed to.
    assert call(registry, "HEAD", f"/v2/smoke/other/blobs/{digest}")[0] == 404
    # The access log the tests count requests in saw the upload.
    assert registry.requests("POST", "/blobs/uploads/") >= 1
