"""The builder publishes kubernetes images to a real registry (CNCF distribution with htpasswd
auth), in-process: podman builds, pushes with the credentials, and the digest it records is the
one the registry serves; an unchanged function is neither rebuilt nor pushed again (counted in the
registry's access log); wrong credentials are refused without showing them; an auth file works
as well as a user and password. The controller end to end (deploy on kubernetes → the
Deployment pulls by digest) is in test_k8s_registry.py."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest

from tests.peers.podman import podman
from tests.peers.registry import RegistryServer
from tickrun.controller.builder import Builder, BuildResult
from tickrun.controller.settings import Settings
from tickrun.functions.errors import BuildError
from tickrun.functions.spec import FunctionSpec, parse_spec

pytestmark = [pytest.mark.podman, pytest.mark.registry, pytest.mark.slow]

HANDLER = "def handler(context, event):\n    return {'version': '%s'}\n"


@pytest.fixture
def podman_os_env(podman_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    # The builder runs podman with the controller's own environment.
    for key in ("CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF"):
        monkeypatch.setenv(key, podman_env[key])
    return podman_env


def function(root: Path, name: str, version: str = "1") -> tuple[FunctionSpec, Path]:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "main.py").write_text(HANDLER % version)
    return parse_spec({"metadata": {"name": name}, "spec": {"handler": "main:handler"}}), folder


def settings_for(
    tmp_path: Path, podman_env: dict[str, str], registry: RegistryServer, **auth: object
) -> Settings:
    return Settings(
        state_dir=tmp_path / "state",
        container_engine="podman",
        base_image=podman_env["TICKRUN_BASE_IMAGE"],
        registry=f"{registry.host}/tickrun",
        registry_tls_verify=False,  # the test registry speaks plain http on loopback
        **auth,  # type: ignore[arg-type]
    )


def build(settings: Settings, spec: FunctionSpec, code: Path) -> tuple[BuildResult, str]:
    lines: list[str] = []
    result = Builder(settings).build(spec, code, "kubernetes", lines.append, code_hash="0" * 64)
    return result, "\n".join(lines)


def test_push_records_the_registry_digest_and_an_unchanged_function_is_not_pushed_again(
    podman_os_env: dict[str, str], registry: RegistryServer, tmp_path: Path
) -> None:
    settings = settings_for(
        tmp_path,
        podman_os_env,
        registry,
        registry_username=registry.username,
        registry_password=registry.password,
    )
    spec, code = function(tmp_path / "src", "pushed-fn")

    u0 = registry.requests("POST", "/blobs/uploads/")
    t0 = time.monotonic()
    first, log = build(settings, spec, code)
    first_s = time.monotonic() - t0
    first_uploads = registry.requests("POST", "/blobs/uploads/") - u0
    art = first.artifact
    tag = first.content_hash[:16]
    assert art["image"] == f"{registry.host}/tickrun/pushed-fn:{tag}"
    served = registry.manifest_digest("tickrun/pushed-fn", tag)
    assert served is not None
    assert art["image_digest"] == f"{registry.host}/tickrun/pushed-fn@{served}"
    assert f"pushed {art['image']} ({served})" in log
    assert registry.password not in log
    # Nobody else can read it: the registry wants the credentials.
    status, headers = registry.get(f"/v2/tickrun/pushed-fn/manifests/{tag}", method="HEAD")
    assert status == 401
    assert headers["Www-Authenticate"].startswith("Basic")
    status, _ = registry.get(
        f"/v2/tickrun/pushed-fn/manifests/{tag}", auth=registry.auth_header(password="wrong")
    )
    assert status == 401

    # The same function again, even with the local image gone: no build, no push.
    podman("rmi", f"localhost/tickrun/pushed-fn:{tag}", env=podman_os_env)
    manifests, uploads = (
        registry.requests("PUT", "/manifests/"),
        registry.requests("POST", "/blobs/uploads/"),
    )
    t0 = time.monotonic()
    again, log2 = build(settings, spec, code)
    again_s = time.monotonic() - t0
    assert again.cached is True
    assert again.artifact["image_digest"] == art["image_digest"]
    assert f"{art['image']} is already in the registry ({served}); nothing to build or push" in log2
    assert "podman build" not in log2 and "podman push" not in log2
    assert registry.requests("PUT", "/manifests/") == manifests
    assert registry.requests("POST", "/blobs/uploads/") == uploads
    assert (
        podman(
            "image", "exists", f"localhost/tickrun/pushed-fn:{tag}", env=podman_os_env, check=False
        ).returncode
        == 1
    )
    print(
        f"\nregistry: build + push {first_s:.2f} s; unchanged again {again_s:.2f} s (no build, no push)"
    )

    # A code change is a new tag: built and pushed; the base layers are already there.
    _spec, _ = function(tmp_path / "src", "pushed-fn", version="2")
    changed, log3 = build(settings, spec, code)
    new_tag = changed.content_hash[:16]
    assert new_tag != tag
    assert f"pushed {registry.host}/tickrun/pushed-fn:{new_tag}" in log3
    new_digest = registry.manifest_digest("tickrun/pushed-fn", new_tag)
    assert changed.artifact["image_digest"].endswith(f"@{new_digest}")
    assert new_digest != served
    assert registry.requests("PUT", "/manifests/") == manifests + 1
    # Only the code layer and the config are new.
    assert 0 < registry.requests("POST", "/blobs/uploads/") - uploads < first_uploads


def test_wrong_credentials_are_refused_and_never_shown(
    podman_os_env: dict[str, str], registry: RegistryServer, tmp_path: Path
) -> None:
    secret = "not-the-password-" + "z" * 12
    settings = settings_for(
        tmp_path,
        podman_os_env,
        registry,
        registry_username=registry.username,
        registry_password=secret,
    )
    spec, code = function(tmp_path / "src", "refused-fn")
    lines: list[str] = []
    manifests = registry.requests("PUT", "/manifests/")
    with pytest.raises(BuildError) as info:
        Builder(settings).build(spec, code, "kubernetes", lines.append, code_hash="0" * 64)
    assert "refused the credentials" in info.value.message
    assert secret not in info.value.message and secret not in "\n".join(lines)
    assert registry.requests("PUT", "/manifests/") == manifests


def test_credentials_from_an_auth_file(
    podman_os_env: dict[str, str], registry: RegistryServer, tmp_path: Path
) -> None:
    auth_file = tmp_path / "config.json"
    token = base64.b64encode(f"{registry.username}:{registry.password}".encode()).decode()
    auth_file.write_text(json.dumps({"auths": {registry.host: {"auth": token}}}))
    settings = settings_for(tmp_path, podman_os_env, registry, registry_auth_file=auth_file)
    spec, code = function(tmp_path / "src", "authfile-fn")
    result, log = build(settings, spec, code)
    tag = result.content_hash[:16]
    served = registry.manifest_digest("tickrun/authfile-fn", tag)
    assert served is not None
    assert result.artifact["image_digest"] == f"{registry.host}/tickrun/authfile-fn@{served}"
    assert "pushed" in log
    again, log2 = build(settings, spec, code)  # the lookup reads the same file
    assert "already in the registry" in log2 and again.artifact == result.artifact

    # noCache: rebuilt and pushed although the registry has the tag; the tag follows the push.
    fresh = parse_spec(
        {
            "metadata": {"name": "authfile-fn"},
            "spec": {"handler": "main:handler", "build": {"noCache": True}},
        }
    )
    manifests = registry.requests("PUT", "/manifests/")
    forced, log3 = build(settings, fresh, code)
    assert forced.content_hash[:16] == tag
    assert f"podman build localhost/tickrun/authfile-fn:{tag}" in log3
    assert f"pushed {registry.host}/tickrun/authfile-fn:{tag}" in log3
    assert registry.requests("PUT", "/manifests/") == manifests + 1
    now_served = registry.manifest_digest("tickrun/authfile-fn", tag)
    assert forced.artifact["image_digest"] == f"{registry.host}/tickrun/authfile-fn@{now_served}"
