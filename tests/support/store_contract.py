"""What the controller's state store promises, whatever database is behind ``TICKRUN_DB_URL``.

Each check takes the SQLAlchemy URL of an empty database and opens its own :class:`Store` s on
it (some reopen it, or open two at once like two controllers). tests/unit runs every check on
a SQLite file, tests/integration on a fresh database of a real PostgreSQL server: one contract,
two backends.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.support.controller_rows import function_row, replica_row
from tickrun.controller.store import BuildRow, EventRow, FunctionRow, Store
from tickrun.controller.store.db import MIGRATIONS
from tickrun.controller.store.models import _spec_of
from tickrun.functions.errors import NotFoundError, StoreError
from tickrun.functions.spec import FunctionSpec, parse_spec

Check = Callable[[str], None]
CHECKS: list[Check] = []

SPEC: dict[str, Any] = {
    "metadata": {"name": "f", "labels": {"team": "desk"}},
    "spec": {
        "handler": "main:handler",
        "minReplicas": 0,
        "maxReplicas": 3,
        "env": [{"name": "A", "value": "1"}],
        "triggers": {"tick": {"kind": "cron", "attributes": {"interval": "10s"}}},
    },
}


def contract(check: Check) -> Check:
    CHECKS.append(check)
    return check


@contextmanager
def opened(url: str) -> Iterator[Store]:
    store = Store(url)
    store.open()
    try:
        yield store
    finally:
        store.close()


def head_revision() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def scalar(url: str, sql: str) -> Any:
    """One value read past the store, straight from the database."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql)).scalar_one()
    finally:
        engine.dispose()


def build_row(build_id: str, function: str, started_at: float, *, cached: bool) -> BuildRow:
    return BuildRow(
        id=build_id,
        function=function,
        version=1,
        platform="process",
        content_hash="h" * 64,
        state="running",
        cached=cached,
        log_path="/x/build.log",
        started_at=started_at,
    )


@contract
def migrates_and_survives_reopen(url: str) -> None:
    with opened(url) as store:
        cid = store.controller_id()
        store.save_function(function_row("f"))
        store.save_replica(replica_row("r1", "f"))
        store.add_event("f", "deploy", "v1")
    assert scalar(url, "SELECT version_num FROM alembic_version") == head_revision()
    with opened(url) as again:  # migrating an up-to-date database is a no-op
        assert again.controller_id() == cid
        assert again.get_function("f").state == "ready"
        assert [r.id for r in again.list_replicas("f")] == ["r1"]
        assert [e.message for e in again.list_events("f")] == ["v1"]
        again.delete_function("f")
        assert again.list_replicas() == []
        with pytest.raises(NotFoundError, match="'f' not found"):
            again.get_function("f")


@contract
def upgrade_from_0001_keeps_rows(url: str) -> None:
    from alembic import command
    from alembic.config import Config

    engine = create_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.execute(
            text(
                "INSERT INTO functions (name, spec, platform, version, state, message, code_hash, "
                'created_at, updated_at) VALUES (\'old\', \'{"metadata": {"name": "old"}}\', '
                "'process', 3, 'ready', '', 'c', 0, 0)"
            )
        )
    engine.dispose()
    with opened(url) as store:
        row = store.get_function("old")
        assert row.version == 3 and row.gateway_port is None
        store.update_function("old", gateway_port=23456)
        assert store.get_function("old").gateway_port == 23456
        # 0003: a /proc start time past 2^31 clock ticks (~248 days of uptime) fits.
        store.save_replica(replica_row("r", "old", pid=4321, pid_start=2**40 + 7))
        assert store.list_replicas("old")[0].pid_start == 2**40 + 7


@contract
def a_spec_round_trips_as_the_users_json(url: str) -> None:
    with opened(url) as store:
        row = function_row("f")
        row.spec = parse_spec(SPEC)
        store.save_function(row)
        got = store.get_function("f").spec
        assert isinstance(got, FunctionSpec) and got == parse_spec(SPEC)
        assert got.spec.triggers["tick"].kind == "cron" and got.spec.max_replicas == 3
    # Stored as the Nuclio-shaped JSON a user would write, not a pickle or a Python repr.
    stored = scalar(url, "SELECT CAST(spec AS TEXT) FROM functions WHERE name = 'f'")
    assert json.loads(stored) == parse_spec(SPEC).to_yaml_dict()


@contract
def loading_rows_again_does_not_validate_again(url: str) -> None:
    calls: list[object] = []
    real = FunctionSpec.model_validate.__func__  # type: ignore[attr-defined]

    def counting(cls: type[FunctionSpec], data: object, **kw: object) -> FunctionSpec:
        calls.append(data)
        return real(cls, data, **kw)  # type: ignore[no-any-return]

    _spec_of.cache_clear()  # as after a restart (another backend's run may have filled it)
    with opened(url) as store:
        row = function_row("f")
        row.spec = parse_spec(SPEC)
        store.save_function(row)
        store.list_functions()  # the first load of this JSON after a (re)start validates it
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(FunctionSpec, "model_validate", classmethod(counting))  # type: ignore[arg-type]
            for _ in range(20):  # what reconcile passes do
                (fn,) = store.list_functions()
                assert fn.spec.spec.max_replicas == 3
            assert calls == []
            # A changed spec is a new JSON text: validated once, then cached like the first.
            changed = dict(SPEC, spec=dict(SPEC["spec"], maxReplicas=5))
            store.update_function("f", spec=real(FunctionSpec, changed))
            for _ in range(5):
                assert store.get_function("f").spec.spec.max_replicas == 5
        assert len(calls) == 1


@contract
def a_row_refuses_anything_but_the_model(url: str) -> None:
    with opened(url) as store:
        row = function_row("f")
        row.spec = SPEC  # type: ignore[assignment]
        with pytest.raises(StoreError, match="state store error"):
            store.save_function(row)
        assert store.find_function("f") is None


@contract
def every_column_type_round_trips_at_its_limits(url: str) -> None:
    name = "f" * 63  # a DNS label, the longest function name
    now = time.time()
    with opened(url) as store:
        row = function_row(name)
        row.image = "registry.example:5000/" + "i" * 162 + "@sha256:" + "d" * 63
        row.artifact = {"image": "x", "nested": {"list": [1, 2.5, None, True], "text": "ü€"}}
        row.revision = "r" * 64
        row.message = "m" * 10_000  # Text has no limit on either backend
        store.save_function(row)
        got = store.get_function(name)
        assert len(got.image or "") == 255 and got.artifact == row.artifact
        assert got.message == row.message and got.revision == row.revision
        assert all(abs(t - time.time()) < 60 for t in (got.created_at, got.updated_at))
        replica = replica_row("p" * 64, name, pid=2**31 - 1, pid_start=2**33, container="c" * 128)
        replica.started_at = now  # a float keeps its microseconds (double precision)
        store.save_replica(replica)
        (r,) = store.list_replicas(name)
        assert (r.id, r.pid, r.pid_start, r.started_at) == ("p" * 64, 2**31 - 1, 2**33, now)
        assert r.ready_at is None and r.exit_code is None and r.restarts == 0
        store.add_build(build_row("b" * 32, name, now, cached=True))
        store.add_build(build_row("b2", name, now + 1, cached=False))
        builds = store.list_builds(name)
        assert [(b.id, b.cached) for b in builds] == [("b2", False), ("b" * 32, True)]
        assert store.list_builds(name, limit=1)[0].id == "b2"


@contract
def updates_deletes_and_missing_rows(url: str) -> None:
    with opened(url) as store:
        for missing in (
            lambda: store.update_function("nope", state="error"),
            lambda: store.get_function("nope"),
            lambda: store.update_build("nope", state="failed"),
            lambda: store.get_build("nope"),
        ):
            with pytest.raises(NotFoundError):
                missing()
        assert store.find_function("nope") is None
        store.save_function(function_row("f", version=1))
        saved = function_row("f", version=2, state="deploying")  # merge: an upsert by name
        store.save_function(saved)
        assert [(f.name, f.version, f.state) for f in store.list_functions()] == [
            ("f", 2, "deploying")
        ]
        assert store.update_function("f", state="ready", message="ok").message == "ok"
        # A conditional update writes only over the row it expects, and says whether it did.
        assert not store.update_function_if("f", {"version": 1}, state="error")
        assert not store.update_function_if("nope", {"version": 2}, state="error")
        assert store.get_function("f").state == "ready"
        assert store.update_function_if("f", {"version": 2, "state": "ready"}, message="cas")
        assert (store.get_function("f").state, store.get_function("f").message) == ("ready", "cas")
        store.add_build(build_row("b1", "f", 1.0, cached=False))
        assert store.update_build("b1", state="succeeded").state == "succeeded"
        store.delete_builds("f")
        assert store.list_builds("f") == []
        store.save_replica(replica_row("r1", "f"))
        store.save_replica(replica_row("r2", "f"))
        store.delete_replica("r1")
        assert [r.id for r in store.list_replicas()] == ["r2"]


@contract
def replicas_belong_to_an_existing_function(url: str) -> None:
    with opened(url) as store:
        # The foreign key is enforced (SQLite needs its pragma on every connection).
        with pytest.raises(StoreError, match="state store error"):
            store.save_replica(replica_row("orphan", "no-such-function"))
        store.save_function(function_row("f"))
        store.save_replica(replica_row("r1", "f"))
        # ON DELETE CASCADE in the database itself, not only in delete_function.
        with store.session() as s:
            s.execute(text("DELETE FROM functions WHERE name = 'f'"))
        assert store.list_replicas() == []


@contract
def events_get_increasing_ids_and_page(url: str) -> None:
    with opened(url) as store:
        store.save_function(function_row("f"))
        for i in range(7):
            store.add_event("f", "tick", f"m{i}", replica="r" if i % 2 else None, data={"i": i})
        store.add_event("g", "tick", "other function")
        events = store.list_events("f")
        ids = [e.id for e in events]
        assert ids == sorted(ids) and len(set(ids)) == 7
        assert [e.data for e in events] == [{"i": i} for i in range(7)]
        assert [e.replica for e in events[:2]] == [None, "r"]
        page = store.list_events("f", after_id=ids[2], limit=3)
        assert [e.message for e in page] == ["m3", "m4", "m5"]
        assert store.list_events("f", after_id=ids[-1]) == []
        assert isinstance(events[0], EventRow) and events[0].time > 0


_OPEN_AT = """
import sys, time
from tickrun.controller.store import Store
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
store = Store(sys.argv[1])
store.open()
print(store.controller_id())
store.close()
"""


@contract
def controllers_open_one_new_database_at_once(url: str) -> None:
    """Three controller processes start on one empty database at the same moment: all migrate
    (one after the other), all get the same controller id, none fails."""
    go = time.time() + 3.0  # after every interpreter has imported the store
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _OPEN_AT, url, str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-2000:] for _, err in outs]
    ids = {out.strip() for out, _ in outs}
    assert len(ids) == 1 and len(ids.pop()) == 12
    assert scalar(url, "SELECT COUNT(*) FROM alembic_version") == 1


@contract
def concurrent_sessions_see_each_others_writes(url: str) -> None:
    with opened(url) as one, opened(url) as two:
        errors: list[BaseException] = []

        def writer(store: Store, prefix: str) -> None:
            try:
                for i in range(15):
                    store.save_function(function_row(f"{prefix}{i}"))
                    store.add_event(f"{prefix}{i}", "deploy", prefix)
                    store.update_function(f"{prefix}{i}", state="deploying")
            except BaseException as exc:
                errors.append(exc)

        threads = [
            threading.Thread(target=writer, args=(one, "a")),
            threading.Thread(target=writer, args=(two, "b")),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert errors == []
        for store in (one, two):
            rows: list[FunctionRow] = list(store.list_functions())
            assert len(rows) == 30 and {r.state for r in rows} == {"deploying"}
        two.delete_function("a3")
        assert one.find_function("a3") is None
        assert [e.message for e in one.list_events("b7")] == ["b"]


def _schedule_row(name: str) -> Any:
    from tickrun.controller.schedules.rows import ScheduleRow

    return ScheduleRow(
        name=name,
        cron="0 * * * *",
        timezone="Europe/London",
        job={"runner": "subprocess", "target": "job.py:train", "params": {"lr": 0.1}},
        concurrency="replace",
        missed="run-once",
        starting_deadline_s=600.0,
        paused=False,
        next_at=1_700_003_600.0,
        runs=0,
        skipped=0,
        missed_firings=0,
    )


@contract
def schedules_keep_their_job_policies_and_last_run_across_a_restart(url: str) -> None:
    from tickrun.controller.schedules.store import ScheduleStore
    from tickrun.functions.errors import ConflictError

    with opened(url) as store:
        schedules = ScheduleStore(store)
        schedules.add(_schedule_row("hourly"))
        with pytest.raises(ConflictError, match="'hourly' exists"):
            schedules.add(_schedule_row("hourly"))
        schedules.add(_schedule_row("b-other"))
        schedules.record_start("hourly", 1_700_003_600.0, "u1")
        schedules.count_skip("hourly", 1_700_004_000.5, "forbid: run u1 still running")
        schedules.count_skip("hourly", 1_700_004_001.0, "missed 3 firing(s)", missed=3)
        schedules.record_end("hourly", "u0", "error")  # not its last run: changes nothing
        schedules.update("hourly", paused=True, next_at=1_700_007_200.0)
    with opened(url) as again:  # a restarted controller
        schedules = ScheduleStore(again)
        row = schedules.get("hourly")
        assert row.job == {"runner": "subprocess", "target": "job.py:train", "params": {"lr": 0.1}}
        assert (row.cron, row.timezone, row.concurrency, row.missed) == (
            "0 * * * *",
            "Europe/London",
            "replace",
            "run-once",
        )
        assert row.starting_deadline_s == 600.0 and row.paused is True
        assert (row.last_run_uid, row.last_run_state, row.runs, row.skipped) == (
            "u1",
            "running",
            1,
            1,
        )
        assert row.last_fired_at == 1_700_003_600.0 and row.next_at == 1_700_007_200.0
        assert (row.skipped, row.missed_firings) == (1, 3)
        assert row.last_skipped_at == 1_700_004_001.0
        assert row.last_skip_reason == "missed 3 firing(s)"
        schedules.record_end("hourly", "u1", "completed")
        assert schedules.get("hourly").last_run_state == "completed"
        assert [r.name for r in schedules.list()] == ["b-other", "hourly"]
        schedules.delete("hourly")
        assert schedules.find("hourly") is None
        with pytest.raises(NotFoundError, match="schedule 'hourly' not found"):
            schedules.delete("hourly")
        schedules.count_skip("hourly", 0.0, "gone")  # a deleted schedule: nothing to count
