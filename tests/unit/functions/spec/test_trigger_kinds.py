"""The trigger-kind registry: built-in kinds, entry-point plugins, and a light spec import."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tickrun.functions.errors import SpecError, TriggerConfigError
from tickrun.functions.processor.registry import trigger_class
from tickrun.functions.spec import parse_spec, trigger_kind, trigger_kinds
from tickrun.functions.spec.triggers import ENTRY_POINT_GROUP, TriggerKind, discover_trigger_kinds


def test_builtin_kinds_registered_by_their_packages() -> None:
    kinds = trigger_kinds()
    assert {"http", "kafka-cluster", "cron"} <= set(kinds)
    for name, kind in kinds.items():
        assert isinstance(kind, TriggerKind) and kind.name == name
        assert kind.spec.__module__.startswith("tickrun.triggers.")


def test_union_is_built_from_registered_models() -> None:
    fn = parse_spec(
        {
            "metadata": {"name": "f"},
            "spec": {"triggers": {"c": {"kind": "cron", "attributes": {"interval": "5s"}}}},
        }
    )
    trigger = fn.spec.triggers["c"]
    assert type(trigger) is trigger_kind("cron").spec
    assert trigger.name == "c"


def test_unknown_kind_names_known_ones() -> None:
    with pytest.raises(TriggerConfigError, match="known: cron, http, kafka-cluster"):
        trigger_kind("rabbit-mq")
    with pytest.raises(SpecError, match="rabbit-mq"):
        parse_spec({"metadata": {"name": "f"}, "spec": {"triggers": {"q": {"kind": "rabbit-mq"}}}})


def test_trigger_class_loads_the_implementation() -> None:
    cls = trigger_class("cron")
    assert cls.__name__ == "CronTrigger"  # type: ignore[attr-defined]


def test_spec_import_and_parse_leave_client_libraries_unloaded() -> None:
    # Parsing a spec with every kind must not import kafka-python or croniter: the controller,
    # the CLI and the hub parse specs of functions they never run.
    code = textwrap.dedent(
        """
        import sys
        from tickrun.functions.spec import parse_spec
        parse_spec({"metadata": {"name": "f"}, "spec": {"triggers": {
            "k": {"kind": "kafka-cluster",
                  "attributes": {"brokers": "a:9092", "topics": ["t"], "consumerGroup": "g"}},
            "c": {"kind": "cron", "attributes": {"schedule": "* * * * *"}}}}})
        print(sorted(m for m in ("kafka", "croniter") if m in sys.modules))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_kind_package_imported_first_still_registers() -> None:
    # A kind's spec module imports the spec package, which must not build the union then.
    code = "import tickrun.triggers.kafka as k; from tickrun.functions.spec import trigger_kind;"
    code += "print(trigger_kind('kafka-cluster') is k.KIND)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "True"


def _plugin(tmp_path: Path, name: str, target: str, module_text: str) -> None:
    (tmp_path / "tickrun_test_plugin.py").write_text(textwrap.dedent(module_text))
    dist = tmp_path / "tickrun_test_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: tickrun-test-plugin\nVersion: 0.1\n"
    )
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{name} = {target}\n")


PLUGIN = """
from typing import Literal
from tickrun.functions.spec.triggers import TriggerKind
from tickrun.functions.spec.triggers import SpecModel, TriggerSpecBase

class WebhookAttributes(SpecModel):
    secret_header: str = "X-Secret"

class WebhookTriggerSpec(TriggerSpecBase):
    kind: Literal["webhook"]
    attributes: WebhookAttributes = WebhookAttributes()

def _load():
    raise ImportError("not needed here")

KIND = TriggerKind(name="webhook", spec=WebhookTriggerSpec, load_trigger=_load)
WRONG = TriggerKind(name="other", spec=WebhookTriggerSpec, load_trigger=_load)
"""


def test_entry_point_plugin_is_discovered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _plugin(tmp_path, "webhook", "tickrun_test_plugin:KIND", PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    kinds = discover_trigger_kinds()
    assert kinds["webhook"].spec.__name__ == "WebhookTriggerSpec"
    assert {"http", "kafka-cluster", "cron"} <= set(kinds)


def test_mislabelled_or_broken_plugin_is_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _plugin(tmp_path, "webhook", "tickrun_test_plugin:WRONG", PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    kinds = discover_trigger_kinds()
    assert "webhook" not in kinds and "other" not in kinds
    assert "is not TriggerKind(name='webhook'" in caplog.text
    assert {"http", "kafka-cluster", "cron"} <= set(kinds)
