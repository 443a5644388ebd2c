"""The registry module's seams that need no registry: where an image goes, which credentials are
used, the auth file handed to the engine, and what a push refuses. Lookups and pushes against a
real registry are in tests/integration/test_registry_publish.py."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from tickrun.controller.builder import registry as r
from tickrun.controller.builder.engine import Engine
from tickrun.controller.settings import Settings
from tickrun.functions.errors import BuildError, SpecError


def _auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_references_put_the_function_under_the_registry_path() -> None:
    cfg = r.RegistryConfig("reg.example:5000/team/tickrun")
    assert cfg.host == "reg.example:5000"
    assert cfg.repository("scorer") == "team/tickrun/scorer"
    assert cfg.tag_ref("scorer", "0123") == "reg.example:5000/team/tickrun/scorer:0123"
    digest = "sha256:" + "a" * 64
    assert cfg.digest_ref("scorer", digest) == f"reg.example:5000/team/tickrun/scorer@{digest}"
    bare = r.RegistryConfig("reg.example")
    assert (bare.host, bare.repository("scorer")) == ("reg.example", "scorer")


def test_config_from_settings_and_no_registry_means_no_push(tmp_path: Path) -> None:
    assert r.RegistryConfig.from_settings(Settings(state_dir=tmp_path)) is None
    settings = Settings.from_env(
        {
            "TICKRUN_STATE_DIR": str(tmp_path),
            "TICKRUN_REGISTRY": "127.0.0.1:5000/tickrun/",
            "TICKRUN_REGISTRY_USERNAME": "ci",
            "TICKRUN_REGISTRY_PASSWORD": "pa55-word",
            "TICKRUN_REGISTRY_TLS_VERIFY": "false",
        }
    )
    cfg = r.RegistryConfig.from_settings(settings)
    assert cfg is not None
    assert (cfg.registry, cfg.username, cfg.password, cfg.tls_verify) == (
        "127.0.0.1:5000/tickrun",
        "ci",
        "pa55-word",
        False,
    )
    # Neither the settings' nor the config's repr shows the password.
    assert "pa55-word" not in repr(settings)
    assert "pa55-word" not in repr(cfg)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("https://reg.example/tickrun", "without a scheme"),
        ("reg.example/Tickrun", "lowercase"),
        ("/tickrun", "host"),
    ],
)
def test_a_bad_registry_setting_is_refused(raw: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        Settings.from_env({"TICKRUN_REGISTRY": raw})


def test_user_without_password_is_refused() -> None:
    with pytest.raises(SpecError, match="username and password go together"):
        Settings.from_env({"TICKRUN_REGISTRY_USERNAME": "ci"})


def test_credentials_from_the_settings_win_over_the_auth_file(tmp_path: Path) -> None:
    auth_file = tmp_path / "auth.json"
    auth_file.write_text(json.dumps({"auths": {"reg:5000": {"auth": _auth("file", "f-pw")}}}))
    both = r.RegistryConfig("reg:5000/x", auth_file=auth_file, username="env", password="e-pw")
    assert r.credentials(both) == ("env", "e-pw")
    assert r.credentials(r.RegistryConfig("reg:5000/x", auth_file=auth_file)) == ("file", "f-pw")
    assert r.credentials(r.RegistryConfig("reg:5000/x")) is None


@pytest.mark.parametrize("key", ["reg:5000/x", "reg:5000", "https://reg:5000"])
def test_auth_file_entries_are_found_by_the_keys_podman_and_docker_write(
    tmp_path: Path, key: str
) -> None:
    auth_file = tmp_path / "config.json"
    auth_file.write_text(
        json.dumps(
            {"auths": {"other:1": {"auth": _auth("no", "no")}, key: {"auth": _auth("u", "p:w")}}}
        )
    )
    # A password may contain ':'; only the first one separates the user.
    assert r.credentials(r.RegistryConfig("reg:5000/x", auth_file=auth_file)) == ("u", "p:w")


def test_an_auth_file_without_the_host_is_anonymous_and_a_broken_one_an_error(
    tmp_path: Path,
) -> None:
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"auths": {"elsewhere:1": {"auth": _auth("u", "p")}}}))
    assert r.credentials(r.RegistryConfig("reg:5000", auth_file=other)) is None
    broken = tmp_path / "broken.json"
    broken.write_text('{"auths": {"reg:5000": {"auth": "c2VjcmV0"')  # truncated, has a secret
    with pytest.raises(BuildError) as info:
        r.credentials(r.RegistryConfig("reg:5000", auth_file=broken))
    assert "cannot read the registry auth file" in info.value.message
    assert "c2VjcmV0" not in info.value.message
    with pytest.raises(BuildError, match="cannot read"):
        r.credentials(r.RegistryConfig("reg:5000", auth_file=tmp_path / "missing.json"))


def test_the_engine_gets_the_password_in_a_private_auth_file_removed_afterwards() -> None:
    cfg = r.RegistryConfig("reg:5000/x", username="ci", password="pa55")
    with r.engine_authfile(cfg) as path:
        assert path is not None
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        data = json.loads(path.read_text())
        assert data == {"auths": {"reg:5000": {"auth": _auth("ci", "pa55")}}}
    assert not path.exists() and not path.parent.exists()


def test_the_engine_gets_the_configured_auth_file_or_none(tmp_path: Path) -> None:
    auth_file = tmp_path / "auth.json"
    with r.engine_authfile(r.RegistryConfig("reg", auth_file=auth_file)) as path:
        assert path == auth_file
    with r.engine_authfile(r.RegistryConfig("reg")) as path:
        assert path is None


def test_push_needs_podman_or_buildah_and_a_tagged_image() -> None:
    cfg = r.RegistryConfig("reg:5000")
    with pytest.raises(BuildError, match="needs podman or buildah"):
        r.push(Engine("docker"), "localhost/tickrun/f:1", "reg:5000/f:1", cfg, lambda _m: None)
    with pytest.raises(BuildError, match="no tag"):
        r.publish(Engine("podman"), "localhost/tickrun/f", cfg, lambda _m: None)


def test_an_unreachable_registry_is_a_build_error_without_credentials(
    unused_tcp_port: int,
) -> None:
    cfg = r.RegistryConfig(
        f"127.0.0.1:{unused_tcp_port}/x", username="ci", password="pa55", tls_verify=False
    )
    with pytest.raises(BuildError) as info:
        r.lookup(cfg, "f", "0123")
    assert "unreachable" in info.value.message
    assert "pa55" not in info.value.message


def test_a_bearer_challenge_names_the_token_service_to_ask() -> None:
    challenge = (
        'Bearer realm="https://auth.example/token",service="registry.example",'
        'scope="repository:tickrun/scorer:pull"'
    )
    assert r.token_url(challenge) == (
        "https://auth.example/token?service=registry.example"
        "&scope=repository%3Atickrun%2Fscorer%3Apull"
    )
    assert r.token_url('Bearer realm="https://a.example/t?x=1",service="s"') == (
        "https://a.example/t?x=1&service=s"
    )
    # A realm that is not a URL (or none) is not followed anywhere.
    assert r.token_url('Bearer realm="file:///etc/passwd"') is None
    assert r.token_url("Bearer") is None
