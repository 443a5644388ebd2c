from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from tickrun.cli import build_parser
from tickrun.controller.cli import build_spec
from tickrun.functions.errors import BadRequestError, SpecError


def _fn(tmp_path: Path) -> Path:
    (tmp_path / "main.py").write_text("def handler(c, e): return 1\n")
    (tmp_path / "function.yaml").write_text(
        json.dumps(
            {
                "metadata": {"name": "f"},
                "spec": {"minReplicas": 1, "maxReplicas": 3, "env": [{"name": "A", "value": "1"}]},
            }
        )
    )
    return tmp_path


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["deploy", *argv])


def test_deploy_flags_shape_the_spec(tmp_path: Path) -> None:
    folder = _fn(tmp_path)
    code_dir, spec = build_spec(
        _args(
            str(folder),
            "--replicas",
            "2",
            "--env",
            "A=9",
            "--env",
            "B=x=y",
            "--trigger",
            "tick=cron,interval=10s",
            "--name",
            "g",
        )
    )
    data = spec.to_yaml_dict()
    s = data["spec"]
    assert code_dir == folder and spec.name == "g"
    assert s["replicas"] == 2 and "minReplicas" not in s and "maxReplicas" not in s
    assert {e["name"]: e["value"] for e in s["env"]} == {"A": "9", "B": "x=y"}
    assert s["triggers"]["tick"] == {
        "name": "tick",
        "kind": "cron",
        "attributes": {"interval": "10s"},
    }
    _, spec = build_spec(_args(str(folder), "--min", "0", "--max", "5"))
    assert (spec.spec.min_replicas, spec.spec.max_replicas) == (0, 5)


def test_bad_flags_fail_before_uploading(tmp_path: Path) -> None:
    folder = _fn(tmp_path)
    with pytest.raises(BadRequestError, match="KEY=VALUE"):
        build_spec(_args(str(folder), "--env", "NOEQUALS"))
    with pytest.raises(BadRequestError, match="NAME=KIND"):
        build_spec(_args(str(folder), "--trigger", "cron"))
    with pytest.raises(SpecError, match="minReplicas"):
        build_spec(_args(str(folder), "--min", "4", "--max", "2"))


def test_verbs_are_registered() -> None:
    parser = build_parser()
    for argv in (
        ["controller", "start", "--port", "0"],
        ["get", "functions", "-o", "json"],
        ["get", "function", "f", "-o", "yaml"],
        ["invoke", "f", "-m", "POST", "-b", "x", "-H", "K:V", "--path", "/p"],
        ["logs", "f"],
        ["delete", "f"],
        ["export", "f"],
    ):
        assert callable(parser.parse_args(argv).func)


def test_deploy_hub_item_exports_its_serving_function() -> None:
    from tickrun.functions.errors import HubError

    with pytest.raises(HubError, match="needs env MODEL_URI"):
        build_spec(_args("hub://model_server"))
    code_dir, spec = build_spec(
        _args("hub://model_server", "--env", "MODEL_URI=file:///m.pkl", "--name", "ms")
    )
    assert spec.name == "ms"
    assert (code_dir / "function.yaml").is_file()
    assert spec.spec.env_dict()["MODEL_URI"] == "file:///m.pkl"
