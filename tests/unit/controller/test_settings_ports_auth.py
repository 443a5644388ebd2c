from __future__ import annotations

import stat
from pathlib import Path

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from tickrun.controller.auth import authorization, check_bearer, load_or_create_token
from tickrun.controller.ports import PortAllocator
from tickrun.controller.settings import Settings
from tickrun.functions.errors import AuthError, PlatformError, SpecError


def test_settings_from_env_and_overrides(tmp_path: Path) -> None:
    s = Settings.from_env(
        {
            "TICKRUN_STATE_DIR": str(tmp_path),
            "TICKRUN_PORT_RANGE": "30000-30010",
            "TICKRUN_PLATFORM": "container",
            "TICKRUN_PUBLIC_GATEWAY": "yes",
        },
        port=9999,
    )
    assert s.state_dir == tmp_path and s.port == 9999
    assert s.port_range == (30000, 30010)
    assert s.default_platform == "container" and s.public_gateway is True
    assert s.database_url == f"sqlite:///{tmp_path / 'tickrun.db'}"
    assert (
        Settings.from_env({"TICKRUN_DB_URL": "postgresql://x/y"}).database_url == "postgresql://x/y"
    )


def test_edge_settings_from_env() -> None:
    s = Settings.from_env(
        {
            "TICKRUN_HEADER_TIMEOUT_S": "2.5",
            "TICKRUN_KEEPALIVE_TIMEOUT_S": "7",
            "TICKRUN_BODY_TIMEOUT_S": "9",
            "TICKRUN_MAX_CONNECTIONS": "64",
        }
    )
    assert (s.header_timeout_s, s.keepalive_timeout_s, s.body_timeout_s) == (2.5, 7.0, 9.0)
    assert s.max_connections == 64
    defaults = Settings()
    assert (defaults.header_timeout_s, defaults.keepalive_timeout_s) == (10.0, 30.0)
    assert (defaults.body_timeout_s, defaults.max_connections) == (30.0, 1000)


@pytest.mark.parametrize(
    ("var", "value", "needle"),
    [
        ("TICKRUN_PLATFORM", "mainframe", "default_platform"),
        ("TICKRUN_PORT_RANGE", "10-20", "port range"),
        ("TICKRUN_CONTAINER_ENGINE", "lxc", "container_engine"),
        ("TICKRUN_HEADER_TIMEOUT_S", "0", "header_timeout_s"),
        ("TICKRUN_KEEPALIVE_TIMEOUT_S", "soon", "keepalive_timeout_s"),
        ("TICKRUN_MAX_CONNECTIONS", "2", "max_connections"),
    ],
)
def test_bad_settings_name_the_field(var: str, value: str, needle: str) -> None:
    with pytest.raises(SpecError, match=needle):
        Settings.from_env({var: value})


def test_forced_engine_wins() -> None:
    assert Settings.from_env({"TICKRUN_CONTAINER_ENGINE": "docker"}).engine() == "docker"


def test_ports_skip_recorded_and_busy_ports_round_robin() -> None:
    busy = {20001}
    alloc = PortAllocator(20000, 20003, in_use=lambda: [20000], probe=lambda p: p not in busy)
    assert alloc.allocate() == 20002
    assert alloc.allocate() == 20003
    assert alloc.allocate() == 20002  # wrapped around, still skipping 20000 and 20001
    full = PortAllocator(20000, 20000, in_use=lambda: [20000])
    with pytest.raises(PlatformError, match="TICKRUN_PORT_RANGE"):
        full.allocate()


def test_token_file_is_generated_once_with_0600(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    token = load_or_create_token(settings)
    assert len(token) >= 32
    mode = stat.S_IMODE(settings.token_file.stat().st_mode)
    assert mode == 0o600
    assert load_or_create_token(settings) == token
    assert load_or_create_token(Settings(state_dir=tmp_path, token="fixed")) == "fixed"


def test_check_bearer() -> None:
    check_bearer("Bearer abc", "abc")
    check_bearer("bearer abc", "abc")
    with pytest.raises(AuthError, match="missing"):
        check_bearer(None, "abc")
    for bad in ("Bearer abd", "Basic abc", "abc"):
        with pytest.raises(AuthError, match="invalid"):
            check_bearer(bad, "abc")
    # Header bytes that are not UTF-8 arrive as surrogates; latin-1 text, as text: a 401 each.
    for odd in ("Bearer \udcff\udcfe", "Bearer \u00e9t\u00e9", "Bearer abc\udc80"):
        with pytest.raises(AuthError, match="invalid"):
            check_bearer(odd, "abc")


def test_a_duplicated_authorization_header_is_refused() -> None:
    one = CIMultiDictProxy(CIMultiDict([("Authorization", "Bearer abc")]))
    assert authorization(one) == "Bearer abc"
    assert authorization(CIMultiDictProxy(CIMultiDict())) is None
    two = CIMultiDictProxy(CIMultiDict([("Authorization", "Bearer abc"), ("authorization", "x")]))
    with pytest.raises(AuthError, match="more than one"):
        authorization(two)
