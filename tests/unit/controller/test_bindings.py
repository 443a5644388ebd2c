"""Model bindings (controller/bindings.py) against a real run DB and controller store: a
``models:/`` env value is resolved in the registry, its file copied into the content-addressed
models folder, the replica's env names that file and ``name/version``; the revision changes
exactly when the bound version does; a moved alias gives the function a new revision (with an
event), a deleted one keeps it (with an event); a fresh instance (a restarted controller) reads
the recorded bindings back; unresolvable bindings and the kubernetes platform are a 400."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tickrun
from tests.unit.hub.items.test_hub_model_server_alias import train_versions
from tickrun.controller.bindings import (
    Binding,
    ModelBindings,
    binding_env,
    bound_revision,
    bound_vars,
    unbound_spec,
)
from tickrun.controller.service import runtime_spec
from tickrun.controller.store import FunctionRow, Store
from tickrun.functions.errors import SpecError
from tickrun.functions.runs.db import SqlRunDB
from tickrun.functions.spec import FunctionSpec
from tickrun.functions.spec.loader import parse_spec


def spec_of(env: dict[str, str], name: str = "srv") -> FunctionSpec:
    return parse_spec(
        {
            "metadata": {"name": name},
            "spec": {
                "handler": "model_server:handler",
                "env": [{"name": k, "value": v} for k, v in env.items()],
            },
        }
    )


@pytest.fixture
def env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[ModelBindings, SqlRunDB, Store]]:
    monkeypatch.setenv("TICKRUN_ARTIFACT_PATH", str(tmp_path / "artifacts"))
    monkeypatch.delenv("TICKRUN_CONTROLLER_URL", raising=False)
    db = SqlRunDB(f"sqlite:///{tmp_path / 'runs.db'}")
    for uri, _model in train_versions(db):
        tickrun.register_model(uri, "btc", db=db)
    tickrun.set_alias("btc", "champion", 1, db=db)
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    store.open()
    try:
        yield ModelBindings(tmp_path / "state" / "models", store, db), db, store
    finally:
        store.close()
        db.close()


def test_bound_vars_and_the_runtime_spec_without_them() -> None:
    spec = spec_of({"MODEL_URI": "models:/btc@champion", "OTHER": "x", "B": "models:/m/3"})
    assert bound_vars(spec) == {"MODEL_URI": "models:/btc@champion", "B": "models:/m/3"}
    written = runtime_spec(spec)["spec"]["env"]
    assert [e["name"] for e in written] == ["OTHER"]  # the replica gets the path instead
    assert unbound_spec({"spec": {}}) == {"spec": {}}


def test_env_contract_and_revision() -> None:
    b1 = Binding("MODEL_URI", "models:/btc@champion", "btc", 1, "a" * 64, "/m/a/model.pkl")
    b2 = Binding("MODEL_URI", "models:/btc@champion", "btc", 2, "b" * 64, "/m/b/model.pkl")
    assert binding_env([b1], {}) == {
        "MODEL_URI": "/m/a/model.pkl",
        "MODEL_URI_VERSION": "btc/1",
        "MODEL_URI_SHA256": "a" * 64,
        "MODEL_VERSION": "btc/1",
    }
    # The user's MODEL_VERSION stays; another variable gets only its own _VERSION.
    assert "MODEL_VERSION" not in binding_env([b1], {"MODEL_VERSION": "mine"})
    other = Binding("FALLBACK", "models:/m/3", "m", 3, "c" * 64, "/m/c/f.json")
    assert set(binding_env([other], {})) == {"FALLBACK", "FALLBACK_VERSION", "FALLBACK_SHA256"}
    base = "0" * 32
    assert bound_revision(base, []) == base
    r1, r2 = bound_revision(base, [b1]), bound_revision(base, [b2])
    assert len({base, r1, r2}) == 3
    assert bound_revision(base, [b1]) == r1  # deterministic
    assert bound_revision("1" * 32, [b1]) != r1  # a new build changes it too


def test_bind_materialises_the_file_and_records_the_revision(
    env: tuple[ModelBindings, SqlRunDB, Store],
) -> None:
    bindings, db, _store = env
    spec = spec_of({"MODEL_URI": "models:/btc@champion"})
    revision = bindings.bind(spec, "f" * 32)
    base, (b,) = bindings.record(revision) or ("", [None])
    assert base == "f" * 32 and b is not None
    assert (b.name, b.version) == ("btc", 1)
    path = Path(b.path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert path.parent == bindings.models_dir / digest == bindings.models_dir / b.sha256
    assert oct(path.stat().st_mode & 0o777) == "0o644"  # readable by the replica user
    assert (path.parent / "model.json").is_file()
    # The same version again: same folder, same revision (nothing copied twice).
    assert bindings.bind(spec, "f" * 32) == revision
    tickrun.set_alias("btc", "champion", 2, db=db)
    moved = bindings.bind(spec, "f" * 32)
    assert moved != revision
    rec = bindings.record(moved)
    assert rec is not None and rec[1][0].version == 2 and rec[1][0].path != b.path


async def test_check_refuses_unresolvable_and_kubernetes(
    env: tuple[ModelBindings, SqlRunDB, Store],
) -> None:
    bindings, _db, _store = env
    await bindings.check(spec_of({"MODEL_URI": "models:/btc@champion"}), "process")
    await bindings.check(spec_of({"X": "plain"}), "kubernetes")  # nothing bound: fine
    with pytest.raises(SpecError, match="does not resolve") as err:
        await bindings.check(spec_of({"MODEL_URI": "models:/btc@nope"}), "process")
    assert err.value.status == 400
    with pytest.raises(SpecError, match="process and container platforms only"):
        await bindings.check(spec_of({"MODEL_URI": "models:/btc@champion"}), "kubernetes")
    with pytest.raises(SpecError, match="bad model URI"):
        await bindings.check(spec_of({"MODEL_URI": "models:/btc/x/y"}), "process")


def _function(store: Store, spec: FunctionSpec, revision: str) -> None:
    now = time.time()
    store.save_function(
        FunctionRow(
            name=spec.name,
            spec=spec,
            platform="process",
            version=1,
            state="ready",
            message="",
            code_hash="c" * 64,
            revision=revision,
            created_at=now,
            updated_at=now,
        )
    )


async def test_moves_roll_a_new_revision_and_a_deleted_alias_keeps_serving(
    env: tuple[ModelBindings, SqlRunDB, Store], tmp_path: Path
) -> None:
    bindings, db, store = env
    woken: list[Any] = []
    bindings.on_change = lambda: woken.append(1)
    spec = spec_of({"MODEL_URI": "models:/btc@champion"})
    rev1 = bindings.bind(spec, "f" * 32)
    _function(store, spec, rev1)
    assert await bindings.check_moves() == []  # nothing moved
    env1, mounts1 = bindings.launch_env(store.get_function("srv"))
    assert env1["MODEL_VERSION"] == "btc/1" and mounts1 == (str(Path(env1["MODEL_URI"]).parent),)

    tickrun.set_alias("btc", "champion", 2, db=db)
    # A restarted controller: a new instance over the same folder and store.
    again = ModelBindings(bindings.models_dir, store, db)
    assert await again.check_moves() == ["srv"]
    fn = store.get_function("srv")
    assert fn.revision != rev1 and fn.state == "deploying"
    env2, _ = again.launch_env(fn)
    assert env2["MODEL_VERSION"] == "btc/2" and env2["MODEL_URI"] != env1["MODEL_URI"]
    messages = [e.message for e in store.list_events("srv")]
    assert "btc@champion moved 1 -> 2, rolling out" in messages
    assert await again.check_moves() == []  # settled

    tickrun.delete_alias("btc", "champion", db=db)
    assert await again.check_moves() == []
    assert await again.check_moves() == []
    fn2 = store.get_function("srv")
    assert fn2.revision == fn.revision  # still serving version 2
    gone = [e.message for e in store.list_events("srv") if "still serving" in e.message]
    assert len(gone) == 1 and "models:/btc@champion = btc/2" in gone[0]  # recorded once
    assert woken == []  # only the instance that rolled was asked to wake the reconciler
