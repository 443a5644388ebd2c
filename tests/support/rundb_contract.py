"""What the SQL run DB promises, whatever database is behind ``TICKRUN_DB_URL``.

Each check takes the SQLAlchemy URL of an empty database. tests/unit/functions/runs runs them on
a SQLite file, tests/integration/test_rundb_postgres.py on a fresh database of a real PostgreSQL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from tickrun.functions.errors import NotFoundError
from tickrun.functions.processes import pid_alive
from tickrun.functions.runs import ArtifactRecord, RunBatch, RunRecord, RunState, SqlRunDB
from tickrun.functions.runs.db.base import HOST as THIS_HOST

Check = Callable[[str], None]
CHECKS: list[Check] = []


def contract(check: Check) -> Check:
    CHECKS.append(check)
    return check


def rec(uid: str = "u1", it: int = 0, **kw: object) -> RunRecord:
    return RunRecord(uid=uid, iteration=it, project=str(kw.pop("project", "p")), **kw)  # type: ignore[arg-type]


@contextmanager
def opened(url: str, **kw: float) -> Iterator[SqlRunDB]:
    db = SqlRunDB(url, **kw)
    try:
        yield db
    finally:
        db.close()


@contract
def apply_get_list(url: str) -> None:
    with opened(url) as db:
        db.apply(
            RunBatch(
                runs=[
                    rec("a", state=RunState.RUNNING, pid=os.getpid(), host=THIS_HOST),
                    rec("a", 1),
                    rec("b", project="q"),
                ]
            )
        )
        db.apply(RunBatch(runs=[rec("a", state=RunState.COMPLETED, results={"x": 1})]))
        assert db.get_run("a").results == {"x": 1}
        assert db.get_run("a", 1).iteration == 1
        assert {r.uid for r in db.list_runs()} == {"a", "b"}
        assert [r.uid for r in db.list_runs("q")] == ["b"]
        assert [r.iteration for r in db.list_runs(uid="a")] == [0, 1]
        assert len(db.list_runs(iterations=True)) == 3
        assert [r.uid for r in db.list_runs(state="completed")] == ["a"]
        with pytest.raises(NotFoundError):
            db.get_run("zzz")


@contract
def records_keep_every_field_at_its_limits(url: str) -> None:
    created = time.time()
    run = rec(
        "u" * 64,
        project="p" * 63,
        name="n" * 300,  # the column keeps 255 characters, the record all of them
        created_at=created,
        params={"lr": 0.001, "layers": [64, 32], "text": "ü€"},
        labels={"team": "desk"},
    )
    with opened(url) as db:
        db.apply(RunBatch(runs=[run, rec("older", created_at=created - 10)]))
        got = db.get_run("u" * 64)
        assert got == run and got.name == "n" * 300
        assert [r.uid for r in db.list_runs("p" * 63)] == ["u" * 64]
        assert [r.uid for r in db.list_runs(limit=1)] == ["u" * 64]  # newest first


@contract
def tables_created_idempotently(url: str) -> None:
    for _ in range(2):
        with opened(url) as db:
            db.apply(RunBatch(runs=[rec("same")]))
            assert db.get_run("same").uid == "same"


@contract
def artifact_records_upsert(url: str) -> None:
    with opened(url) as db:
        a = ArtifactRecord(project="p", uid="u", key="m", target="/x/m.bin", size_bytes=1)
        db.apply(RunBatch(artifacts=[a]))
        db.apply(RunBatch(artifacts=[a.model_copy(update={"size_bytes": 2})]))
        found = db.list_artifacts("p", uid="u")
        assert len(found) == 1 and found[0].size_bytes == 2
        assert db.get_artifact("p", "u", 0, "m").target == "/x/m.bin"
        with pytest.raises(NotFoundError):
            db.get_artifact("p", "u", 1, "m")
        db.apply(RunBatch(artifacts=[a.model_copy(update={"key": "k" * 128, "iteration": 2})]))
        assert [x.key for x in db.list_artifacts(iteration=2)] == ["k" * 128]


@contract
def late_write_keeps_the_terminal_state(url: str) -> None:
    with opened(url) as db:
        db.apply(RunBatch(runs=[rec("t", state=RunState.RUNNING), rec("live")]))
        db.apply(RunBatch(runs=[rec("t", state=RunState.ABORTED, error="killed")]))
        late = [rec("t", state=RunState.RUNNING, results={"x": 2}), rec("live", results={"y": 1})]
        db.apply(RunBatch(runs=late))
        t = db.get_run("t")
        assert (t.state, t.error, t.results) == (RunState.ABORTED, "killed", {"x": 2})
        assert [r.uid for r in db.list_runs(state="aborted")] == ["t"], "state column agrees"
        assert db.get_run("live").results == {"y": 1}


@contract
def queued_heartbeat_never_replaces_a_started_iteration(url: str) -> None:
    """A sweep refreshes its queued iterations as created; one that lost the race with the
    iteration's own start (another process, a Kubernetes pod) must not undo what it wrote."""
    with opened(url) as db:
        queued = [rec("q", 1, heartbeat_at=1.0), rec("q", 2, heartbeat_at=1.0)]
        db.apply(RunBatch(runs=queued))
        db.apply(RunBatch(runs=[rec("q", 1, state=RunState.COMPLETED, results={"acc": 0.9})]))
        db.apply(RunBatch(runs=[rec("q", 2, state=RunState.RUNNING, results={"step": 1})]))
        db.apply(RunBatch(runs=[r.model_copy(update={"heartbeat_at": 2.0}) for r in queued]))
        done, running = db.get_run("q", 1), db.get_run("q", 2)
        assert (done.state, done.results) == (RunState.COMPLETED, {"acc": 0.9})
        assert (running.state, running.results) == (RunState.RUNNING, {"step": 1})
        db.apply(RunBatch(runs=[rec("q", 3, heartbeat_at=1.0)]))
        db.apply(RunBatch(runs=[rec("q", 3, heartbeat_at=2.0)]))
        assert db.get_run("q", 3).heartbeat_at == 2.0, "created over created still refreshes"


@contract
def dead_pid_marked_aborted_on_read(url: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with opened(url) as db:
        alive = rec(
            "dead", state=RunState.RUNNING, pid=proc.pid, host=THIS_HOST, heartbeat_at=time.time()
        )
        db.apply(RunBatch(runs=[alive]))
        assert db.mark_stale() == []  # alive: left alone
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not pid_alive(proc.pid)
        marked = db.mark_stale()
        assert [m.uid for m in marked] == ["dead"]
        got = db.get_run("dead")
        assert got.state is RunState.ABORTED
        assert got.error is not None and f"process {proc.pid}" in got.error


@contract
def silent_heartbeat_marked_aborted(url: str) -> None:
    with opened(url, stale_after_s=30) as db:
        now = time.time()
        remote = rec(
            "remote", state=RunState.RUNNING, pid=1, host="other-host", heartbeat_at=now - 120
        )
        fresh = rec("fresh", state=RunState.RUNNING, pid=1, host="other-host", heartbeat_at=now)
        db.apply(RunBatch(runs=[remote, fresh]))
        marked = db.mark_stale(now)
        assert [m.uid for m in marked] == ["remote"]
        assert "no heartbeat" in (db.get_run("remote").error or "")
        assert db.get_run("fresh").state is RunState.RUNNING


_ITERATION = """
import sys, time
from tickrun.functions.runs import RunBatch, RunRecord, SqlRunDB
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
db = SqlRunDB(sys.argv[1])
db.apply(RunBatch(runs=[RunRecord(uid="sweep", iteration=int(sys.argv[3]), project="p")]))
db.close()
"""


@contract
def sweep_iterations_open_one_new_database_at_once(url: str) -> None:
    """The first writes of a sweep's parallel iterations create the tables together."""
    go = time.time() + 3.0  # after every interpreter has imported the run DB
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _ITERATION, url, str(go), str(i)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(1, 4)
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [e[-2000:] for e in errors]
    with opened(url) as db:
        assert sorted(r.iteration for r in db.list_runs(uid="sweep")) == [1, 2, 3]
