"""The store keeps a function's spec as the model's JSON and hands the model back."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.support.controller_rows import function_row
from tickrun.controller.store import Store
from tickrun.functions.errors import StoreError
from tickrun.functions.spec import FunctionSpec, parse_spec

SPEC = {
    "metadata": {"name": "f", "labels": {"team": "desk"}},
    "spec": {
        "handler": "main:handler",
        "minReplicas": 0,
        "maxReplicas": 3,
        "env": [{"name": "A", "value": "1"}],
        "triggers": {"tick": {"kind": "cron", "attributes": {"interval": "10s"}}},
    },
}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    s.open()
    yield s  # type: ignore[misc]
    s.close()


def test_a_row_round_trips_the_model(store: Store, tmp_path: Path) -> None:
    row = function_row("f")
    row.spec = parse_spec(SPEC)
    store.save_function(row)
    got = store.get_function("f").spec
    assert isinstance(got, FunctionSpec) and got == parse_spec(SPEC)
    assert got.spec.triggers["tick"].kind == "cron" and got.spec.max_replicas == 3
    # On disk it is the Nuclio-shaped JSON a user would write, not a pickle or Python repr.
    with sqlite3.connect(tmp_path / "db.sqlite") as db:
        (text,) = db.execute("select spec from functions where name = 'f'").fetchone()
    assert json.loads(text) == parse_spec(SPEC).to_yaml_dict()


def test_loading_rows_again_does_not_validate_again(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    row = function_row("f")
    row.spec = parse_spec(SPEC)
    store.save_function(row)
    store.list_functions()  # the first load of this JSON after a (re)start validates it
    calls: list[object] = []
    real = FunctionSpec.model_validate.__func__  # type: ignore[attr-defined]

    def counting(cls: type[FunctionSpec], data: object, **kw: object) -> FunctionSpec:
        calls.append(data)
        return real(cls, data, **kw)  # type: ignore[no-any-return]

    monkeypatch.setattr(FunctionSpec, "model_validate", classmethod(counting))
    for _ in range(20):  # what reconcile passes do
        (fn,) = store.list_functions()
        assert fn.spec.spec.max_replicas == 3
    assert calls == []
    # A changed spec is a new JSON text: validated once, then cached like the first.
    changed = dict(SPEC, spec=dict(SPEC["spec"], maxReplicas=5))  # type: ignore[arg-type]
    store.update_function("f", spec=real(FunctionSpec, changed))
    for _ in range(5):
        assert store.get_function("f").spec.spec.max_replicas == 5
    assert len(calls) == 1


def test_a_row_refuses_anything_but_the_model(store: Store) -> None:
    row = function_row("f")
    row.spec = SPEC  # type: ignore[assignment]
    with pytest.raises(StoreError, match="state store error"):
        store.save_function(row)
    assert store.find_function("f") is None
