"""What the model registry promises, whatever run DB keeps it.

Each check takes a run DB (empty) and an artifact store folder its records may point into.
tests/unit/functions/runs/test_registry_contract.py runs them on a SQLite file and on the HTTP
run DB against the runs API over loopback; tests/integration/test_rundb_postgres.py on a real
PostgreSQL.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from tickrun.functions.errors import BadRequestError, ConflictError, NotFoundError
from tickrun.functions.runs import ArtifactKind, ArtifactRecord, RunBatch, RunDB, RunRecord
from tickrun.functions.runs.registry_records import RegisterRequest

Check = Callable[[RunDB, str], None]
CHECKS: list[Check] = []


def contract(check: Check) -> Check:
    CHECKS.append(check)
    return check


def logged_model(
    db: RunDB,
    store: str,
    uid: str,
    *,
    inputs: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    kind: ArtifactKind = ArtifactKind.MODEL,
    project: str = "p",
) -> str:
    """A completed run ``uid`` that logged artifact ``model``; its store:// URI."""
    run = RunRecord(
        uid=uid,
        project=project,
        name=f"train-{uid}",
        handler="train.py:train",
        state="completed",  # type: ignore[arg-type]
        params={"lr": 0.1},
        inputs=inputs or {},
        labels=labels or {},
    )
    art = ArtifactRecord(
        project=project,
        uid=uid,
        key="model",
        kind=kind,
        target=f"{store}/{project}/{uid}/0/model.json",
        format="json",
        sha256=uid.encode().hex()[:64].ljust(64, "0"),
        meta={"framework": "xgboost", "metrics": {"auc": 0.6}},
    )
    db.apply(RunBatch(runs=[run], artifacts=[art]))
    return art.uri


def register(db: RunDB, uri: str, name: str, **kw: object) -> int:
    return db.registry().register(RegisterRequest(model_uri=uri, name=name, **kw)).version  # type: ignore[arg-type]


@contract
def versions_are_numbered_per_name(db: RunDB, store: str) -> None:
    reg = db.registry()
    a, b = logged_model(db, store, "ra"), logged_model(db, store, "rb")
    assert [register(db, a, "alpha"), register(db, b, "alpha"), register(db, a, "beta")] == [
        1,
        2,
        1,
    ]
    assert reg.get_version("alpha", 2).model_uri == b
    assert reg.get_version("alpha", "latest").version == 2
    assert [v.version for v in reg.list_versions("alpha")] == [2, 1]
    reg.delete_version("alpha", 2)
    assert reg.get_version("alpha", "latest").version == 1
    assert register(db, b, "alpha") == 3, "a deleted version's number is not given again"
    model = reg.get_model("alpha")
    assert (model.latest_version, model.versions) == (3, 2)
    assert {m.name for m in reg.list_models()} == {"alpha", "beta"}
    with pytest.raises(NotFoundError):
        reg.get_version("alpha", 2)
    with pytest.raises(NotFoundError):
        reg.get_model("gamma")


@contract
def aliases_point_at_one_version_and_move(db: RunDB, store: str) -> None:
    reg = db.registry()
    uris = [logged_model(db, store, f"r{i}") for i in (1, 2)]
    register(db, uris[0], "m", aliases=["champion"])
    assert register(db, uris[1], "m", aliases=["challenger"]) == 2
    assert reg.resolve("models:/m@champion").version == 1
    assert reg.resolve_uri("models:/m@challenger") == uris[1]
    assert reg.resolve_uri("models:/m/1") == uris[0]
    assert reg.resolve_uri("models:/m/latest") == uris[1]
    moved = reg.set_alias("m", "champion", 2)
    assert moved.aliases == ["challenger", "champion"]
    assert reg.resolve_uri("models:/m@champion") == uris[1]
    assert reg.get_version("m", 1).aliases == []
    assert reg.get_model("m").aliases == {"challenger": 2, "champion": 2}
    reg.delete_alias("m", "challenger")
    with pytest.raises(NotFoundError, match="challenger"):
        reg.resolve("models:/m@challenger")
    with pytest.raises(NotFoundError):
        reg.delete_alias("m", "challenger")
    with pytest.raises(NotFoundError):
        reg.set_alias("m", "champion", 9)
    with pytest.raises(NotFoundError):
        reg.set_alias("nope", "champion", 1)
    for bad in ("latest", "1st", "a/b", "", "x" * 65):
        with pytest.raises(BadRequestError):
            reg.set_alias("m", bad, 1)
    assert reg.resolve_uri("models:/m@champion") == uris[1], "refusals changed nothing"


@contract
def lineage_is_recorded_with_every_version(db: RunDB, store: str) -> None:
    data = ArtifactRecord(
        project="p",
        uid="feat",
        key="features",
        kind=ArtifactKind.DATASET,
        target=f"{store}/p/feat/0/features.parquet",
        sha256="d" * 64,
    )
    db.apply(RunBatch(runs=[RunRecord(uid="feat", project="p")], artifacts=[data]))
    labels = {
        "hub.item": "auto_trainer",
        "hub.version": "1.1.0",
        "hub.source": "bundled",
        "hub.handler": "train",
        "code.hash": "c0de",
        "requirements.lock": "xgboost==2.1.0",
    }
    base = logged_model(db, store, "base")
    register(db, base, "base", aliases=["champion"])
    inputs = {
        "dataset": data.uri,
        "raw": "/data/bars.csv",
        "gone": "store://p/none/x",
        "base": "models:/base@champion",
    }
    uri = logged_model(db, store, "trained", inputs=inputs, labels=labels)
    mv = db.registry().register(
        RegisterRequest(model_uri=uri, name="m", description="first", tags={"stage": "dev"})
    )
    lin = mv.lineage
    assert (lin.run_uid, lin.run_project, lin.run_iteration) == ("trained", "p", 0)
    assert (lin.run_name, lin.handler, lin.run_state) == (
        "train-trained",
        "train.py:train",
        "completed",
    )
    assert lin.params == {"lr": 0.1}
    assert (lin.hub_item, lin.hub_version, lin.hub_source, lin.hub_handler) == (
        "auto_trainer",
        "1.1.0",
        "bundled",
        "train",
    )
    assert (lin.code_hash, lin.requirements_lock) == ("c0de", "xgboost==2.1.0")
    by_name = {d.name: d for d in lin.datasets}
    assert by_name["dataset"].sha256 == "d" * 64 and by_name["dataset"].kind == "dataset"
    assert by_name["dataset"].target == data.target
    assert by_name["raw"].uri == "/data/bars.csv" and by_name["raw"].sha256 == ""
    assert by_name["gone"].kind == "", "a missing input is kept as the run gave it"
    base_version = db.registry().get_version("base", 1)
    assert (by_name["base"].uri, by_name["base"].kind) == ("models:/base@champion", "model")
    assert by_name["base"].sha256 == base_version.sha256 != ""
    assert (mv.framework, mv.metrics, mv.description, mv.tags) == (
        "xgboost",
        {"auc": 0.6},
        "first",
        {"stage": "dev"},
    )
    got = db.registry().get_version("m", 1)
    assert got.lineage == lin and got.sha256 == mv.sha256 and got.sha256


@contract
def an_aliased_version_is_deleted_only_by_force(db: RunDB, store: str) -> None:
    reg = db.registry()
    uri = logged_model(db, store, "r")
    register(db, uri, "m", aliases=["champion", "prod"])
    with pytest.raises(ConflictError, match="champion, prod"):
        reg.delete_version("m", 1)
    assert reg.resolve("models:/m@prod").version == 1
    reg.delete_version("m", 1, force=True)
    assert reg.get_model("m").aliases == {}
    with pytest.raises(NotFoundError):
        reg.resolve("models:/m@champion")
    with pytest.raises(NotFoundError):
        reg.delete_version("m", 1)


@contract
def registration_refuses_what_is_not_a_logged_model(db: RunDB, store: str) -> None:
    reg = db.registry()
    dataset = logged_model(db, store, "d", kind=ArtifactKind.DATASET)
    with pytest.raises(BadRequestError, match="not a model"):
        register(db, dataset, "m")
    with pytest.raises(NotFoundError):
        register(db, "store://p/missing/model", "m")
    with pytest.raises(BadRequestError):
        register(db, "/tmp/model.json", "m")
    with pytest.raises(BadRequestError):
        register(db, "models:/m/x", "m")
    uri = logged_model(db, store, "ok")
    for bad in ("a/b", "x@y", "..", "-lead", ""):
        with pytest.raises(BadRequestError):
            register(db, uri, bad)
    with pytest.raises(NotFoundError):
        reg.get_model("m")  # nothing was created by the refusals
    register(db, uri, "m")
    assert register(db, "models:/m/1", "copy") == 1, "a version registers under another name"
    assert reg.get_version("copy", 1).model_uri == uri


@contract
def versions_are_searched_by_tags_and_run(db: RunDB, store: str) -> None:
    reg = db.registry()
    a, b = logged_model(db, store, "ra"), logged_model(db, store, "rb")
    register(db, a, "m", tags={"stage": "dev", "algo": "xgb"})
    register(db, b, "m", tags={"stage": "prod", "algo": "xgb"})
    register(db, b, "n", tags={"stage": "prod"})
    assert [v.version for v in reg.list_versions("m", tags={"algo": "xgb"})] == [2, 1]
    assert [v.version for v in reg.list_versions("m", tags={"stage": "dev"})] == [1]
    prod = reg.list_versions(tags={"stage": "prod"})
    assert sorted((v.name, v.version) for v in prod) == [("m", 2), ("n", 1)]
    assert sorted(v.name for v in reg.list_versions(run_uid="rb")) == ["m", "n"]
    assert len(reg.list_versions("m", limit=1)) == 1
    with pytest.raises(NotFoundError):
        reg.list_versions("zzz")


@contract
def concurrent_registrations_take_distinct_numbers(db: RunDB, store: str) -> None:
    uri = logged_model(db, store, "r")
    got: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(3):
                got.append(register(db, uri, "race"))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sorted(got) == list(range(1, 13))


@contract
def readers_never_see_an_alias_half_moved(db: RunDB, store: str) -> None:
    """An alias flipped back and forth while others resolve it: every read names one of the two
    versions, none fails (the move is one row updated in one transaction)."""
    reg = db.registry()
    uris = [logged_model(db, store, f"r{i}") for i in (1, 2)]
    register(db, uris[0], "m", aliases=["champion"])
    register(db, uris[1], "m")
    done = threading.Event()
    seen: list[str] = []
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not done.is_set():
                seen.append(reg.resolve_uri("models:/m@champion"))
        except BaseException as exc:  # reported below
            errors.append(exc)

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        for i in range(20):
            reg.set_alias("m", "champion", 2 - i % 2)
    finally:
        done.set()
        for t in readers:
            t.join()
    assert not errors, errors[:3]
    assert seen and set(seen) <= set(uris)
    assert reg.resolve_uri("models:/m@champion") == uris[0]
