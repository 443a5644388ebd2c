"""The CLI imports what a command needs: a verb builds only its areas' parsers, and `tickrun
--help` / `tickrun run` leave the heavy libraries alone (checked on sys.modules, not timings)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tickrun import cli

NOOP = Path(__file__).resolve().parents[3] / "bench" / "tracking" / "noop_job.py"

# Run `tickrun ARGS` in a fresh interpreter and print the names of its imported modules.
_PROBE = """
import json, sys
from tickrun.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def _modules_after(args: list[str], home: Path) -> set[str]:
    env = {**os.environ, "TICKRUN_HOME": str(home)}
    for name in ("TICKRUN_CONTROLLER_URL", "TICKRUN_DB_URL", "TICKRUN_ARTIFACT_PATH"):
        env.pop(name, None)
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["code"] in (0, None), proc.stderr[-2000:]
    return set(out["modules"])


def _loaded(modules: set[str], *roots: str) -> list[str]:
    return sorted(m for m in modules if any(m == r or m.startswith(r + ".") for r in roots))


def _helps(parser: argparse.ArgumentParser, path: str = "") -> dict[str, str]:
    """Every (nested) sub-command's help text, by its command path."""
    out = {path: parser.format_help()}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.update(_helps(sub, f"{path} {name}".strip()))
    return out


def test_each_fast_verb_builds_the_parser_the_full_cli_has() -> None:
    full = _helps(cli.build_parser())
    for verb, modules in cli.FAST_COMMANDS.items():
        fast = _helps(cli.build_parser(modules))
        ours = {k: v for k, v in fast.items() if k == verb or k.startswith(verb + " ")}
        assert ours, f"{verb}: its modules do not register it"
        assert ours == {k: v for k, v in full.items() if k in ours}, verb
        # … and no sub-command of the verb is missing from the fast parser
        assert set(ours) == {k for k in full if k == verb or k.startswith(verb + " ")}, verb


def test_run_parser_has_the_schedule_option_from_the_schedules_area() -> None:
    helps = _helps(cli.build_parser(cli.FAST_COMMANDS["run"]))
    assert "--schedule" in helps["run"]


@pytest.mark.parametrize(
    ("argv", "verb"),
    [
        (["run", "f.py:fn"], "run"),
        (["--log-level", "WARNING", "run", "x"], "run"),
        (["--log-format", "json", "--log-level", "DEBUG", "serve", "."], "serve"),
        (["--log-level=INFO", "get", "runs"], "get"),
        (["--help"], None),
        ([], None),
    ],
)
def test_command_verb_skips_global_options_and_their_values(
    argv: list[str], verb: str | None
) -> None:
    assert cli.command_verb(argv) == verb


def test_help_imports_no_heavy_library(tmp_path: Path) -> None:
    modules = _modules_after(["--help"], tmp_path)
    assert _loaded(modules, "tickrun.functions.runs.cli", "tickrun.hub.cli") == [
        "tickrun.functions.runs.cli",
        "tickrun.hub.cli",
    ]  # the probe did build every area's parser
    heavy = ("sqlalchemy", "pandas", "numpy", "minio", "aiohttp", "kafka", "nuclio_sdk")
    assert _loaded(modules, *heavy) == []
    # nor pydantic (the function spec, the trigger kinds, the hub's item spec), yaml, or
    # importlib.metadata's entry-point scans
    assert (
        _loaded(modules, "pydantic", "yaml", "importlib.metadata", "tickrun.functions.spec") == []
    )
    assert _loaded(modules, "tickrun.functions.runs.db", "tickrun.functions.runs.runner") == []


def test_run_records_the_run_without_sqlalchemy(tmp_path: Path) -> None:
    modules = _modules_after(["--log-level", "WARNING", "run", f"{NOOP}:noop"], tmp_path)
    assert "tickrun.functions.runs.runner" in modules  # it did run the job
    assert _loaded(modules, "sqlalchemy", "pandas", "numpy", "minio", "aiohttp", "kafka") == []
    # only the run's own area was built: not the hub's, the controller's or kafka's
    assert _loaded(modules, "tickrun.hub", "tickrun.controller.cli", "tickrun.triggers") == []
    # … and the run is in the run DB (read back through the SQLAlchemy DB)
    from tickrun.functions.runs.db.sql import SqlRunDB

    runs = SqlRunDB(f"sqlite:///{tmp_path / 'runs.db'}").list_runs()
    assert [(r.name, r.state.value) for r in runs] == [("noop_job-noop", "completed")]
