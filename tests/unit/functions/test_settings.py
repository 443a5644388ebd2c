"""The settings registry: the docs table, that every TICKRUN_* name is spelled only there, parsing
and the one state root."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tickrun.functions import settings
from tickrun.functions.errors import SpecError, TickrunError

ROOT = Path(__file__).resolve().parents[3]
SOURCE_DIRS = ("functions", "triggers", "controller", "hub", "tickrun")
# User code (hub items, examples) may read the environment as it likes.
USER_CODE = (ROOT / "hub" / "items", ROOT / "functions" / "examples")
REGISTRY_FILE = ROOT / "functions" / "settings.py"
NAME = re.compile(r"TICKRUN_[A-Z0-9_]+")


def _sources() -> Iterator[Path]:
    for folder in SOURCE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == REGISTRY_FILE or any(path.is_relative_to(u) for u in USER_CODE):
                continue
            yield path


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the constants that are docstrings (a module's, class's or function's first line)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def _trees() -> Iterator[tuple[Path, ast.AST]]:
    for path in _sources():
        yield path, ast.parse(path.read_text(), filename=str(path))


def test_docs_table_is_generated_from_the_registry() -> None:
    committed = (ROOT / "docs" / "settings.md").read_text()
    assert committed == settings.render_markdown(), (
        "docs/settings.md is stale: run `python -m tickrun.functions.settings > docs/settings.md`"
    )


def test_variable_names_are_spelled_only_in_the_registry() -> None:
    found: list[str] = []
    for path, tree in _trees():
        skip = _docstrings(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in skip
            ):
                for name in NAME.findall(node.value):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
    assert not found, "use the constant in tickrun.functions.settings:\n" + "\n".join(found)


def test_every_registered_variable_is_used() -> None:
    constants = {
        attr: s.name
        for attr, s in vars(settings).items()
        if isinstance(s, settings.Setting) and attr.isupper()
    }
    assert sorted(constants.values()) == sorted(settings.REGISTRY)  # each one has a constant
    used: set[str] = set()
    for _path, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                used.add(node.attr)
            elif isinstance(node, ast.alias):
                used.add(node.name)
    dead = sorted(name for attr, name in constants.items() if attr not in used)
    assert not dead, f"registered but never read or set: {dead}"


def test_define_refuses_a_second_definition() -> None:
    with pytest.raises(ValueError, match="TICKRUN_HOME is defined twice"):
        settings.define("TICKRUN_HOME", settings.path, Path("/x"), "again", "paths")


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        (settings.CONTROLLER_PORT, "eighty"),
        (settings.MAX_CONNECTIONS, "1.5"),
        (settings.STALE_AFTER_S, "soon"),
        (settings.HEADER_TIMEOUT_S, ""),  # empty counts as unset: no error, the default
        (settings.PUBLIC_GATEWAY, "maybe"),
        (settings.S3_SECURE, "sure"),
        (settings.PORT_RANGE, "20000-lots"),
        (settings.PORT_RANGE, "x"),
        (settings.PLATFORM, "mainframe"),
        (settings.LOG_FORMAT, "xml"),
    ],
)
def test_bad_values_raise_a_spec_error_naming_the_variable(
    setting: settings.Setting[object], value: str
) -> None:
    env = {setting.name: value}
    if not value:
        assert setting.get(env) == setting.default_for(env)
        return
    with pytest.raises(SpecError, match=setting.name) as info:
        setting.get(env)
    assert isinstance(info.value, TickrunError)
    assert value in info.value.message


def test_a_secret_value_is_never_in_the_error() -> None:
    secret = settings.define(
        "TICKRUN_TEST_ONLY_SECRET", settings.integer, 0, "x", "tracking", secret=True
    )
    try:
        with pytest.raises(SpecError, match="TICKRUN_TEST_ONLY_SECRET") as info:
            secret.get({secret.name: "hunter2"})
        assert "hunter2" not in info.value.message
    finally:
        del settings.REGISTRY[secret.name]


def test_values_parse_to_their_types() -> None:
    env = {
        settings.CONTROLLER_PORT.name: "9000",
        settings.STALE_AFTER_S.name: "12.5",
        settings.PUBLIC_GATEWAY.name: "Yes",
        settings.FUNCTION_PORTS.name: "off",
        settings.PORT_RANGE.name: "30000-30100",
        settings.ARTIFACT_STORES.name: " s3://a , /b ,,",
        settings.PLATFORM.name: "Container",
    }
    assert settings.CONTROLLER_PORT.get(env) == 9000
    assert settings.STALE_AFTER_S.get(env) == 12.5
    assert settings.PUBLIC_GATEWAY.get(env) is True
    assert settings.FUNCTION_PORTS.get(env) is False
    assert settings.PORT_RANGE.get(env) == (30000, 30100)
    assert settings.PORT_RANGE.get({settings.PORT_RANGE.name: "30000"}) == (30000, 30000)
    assert settings.ARTIFACT_STORES.get(env) == ("s3://a", "/b")
    assert settings.PLATFORM.get(env) == "container"
    assert settings.CONTROLLER_PORT.get({}) == 8070
    assert settings.TOKEN.get({}) is None


def test_derived_defaults_follow_tickrun_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {settings.HOME.name: str(home)}
    assert settings.HOME.get(env) == home
    assert settings.STATE_DIR.get(env) == home / "controller"
    assert settings.CACHE.get(env) == home / "cache"
    assert settings.HUB_CACHE.get(env) == home / "cache" / "hub"
    assert settings.DB_URL.get(env) == f"sqlite:///{home / 'runs.db'}"
    assert settings.ARTIFACT_PATH.get(env) == str(home / "artifacts")
    # Each one's own variable wins, and the hub cache follows a moved cache.
    env[settings.CACHE.name] = str(tmp_path / "c")
    env[settings.STATE_DIR.name] = str(tmp_path / "s")
    assert settings.HUB_CACHE.get(env) == tmp_path / "c" / "hub"
    assert settings.STATE_DIR.get(env) == tmp_path / "s"
    # XDG variables are no longer consulted.
    env = {settings.HOME.name: str(home), "XDG_STATE_HOME": "/x", "XDG_CACHE_HOME": "/y"}
    assert settings.STATE_DIR.get(env) == home / "controller"
    assert settings.HUB_CACHE.get(env) == home / "cache" / "hub"


def test_controller_and_tracking_settings_share_the_root(tmp_path: Path) -> None:
    from tickrun.controller.settings import Settings
    from tickrun.functions.runs.settings import TrackingSettings

    env = {settings.HOME.name: str(tmp_path)}
    controller = Settings.from_env(env)
    tracking = TrackingSettings.from_env(env)
    assert controller.state_dir.parent == tracking.home == tmp_path


def test_secrets_never_show_their_defaults_in_the_table() -> None:
    table = settings.render_markdown()
    secrets = [s for s in settings.REGISTRY.values() if s.secret]
    assert secrets
    for s in secrets:
        (row,) = [line for line in table.splitlines() if line.startswith(f"| `{s.name}` |")]
        assert row.split("|")[3].strip() == ""  # the default column
        assert "(secret)" in row
    for s in settings.REGISTRY.values():
        assert f"`{s.name}`" in table
