"""A big ``log_artifact(local_path=…)`` returns once the store holds the copy; its sha256 is
computed on the hashing thread. Whoever reads the record in this process (the returned record,
``context.artifacts``, a commit, the run's end, a copy or a pickle of it) gets the stored bytes'
hash; the run DB never holds the record without it; a hash that fails is reported by commit()
and ends the run in error."""

from __future__ import annotations

import copy
import errno
import hashlib
import os
import pickle
import threading
from pathlib import Path
from typing import Any

import pytest

from tickrun.functions.artifacts import hashing as hashing_mod
from tickrun.functions.artifacts.hashing import ArtifactHashError
from tickrun.functions.runs import SqlRunDB, TrackingSettings, run_function
from tickrun.functions.runs.pending import HASH_ERROR_META, PendingArtifactRecord
from tickrun.functions.runs.records import ArtifactRecord

MB = 1024 * 1024


def gate_hashing(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Hashes wait for the returned event: a test can look at a record before its hash."""
    gate = threading.Event()
    real = hashing_mod.digest_fd

    def gated(fd: int, size: int) -> str:
        gate.wait(10)
        return real(fd, size)

    monkeypatch.setattr(hashing_mod, "digest_fd", gated)
    return gate


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_record_sha256_is_the_stored_bytes_mid_run_and_after(
    settings: TrackingSettings, db: SqlRunDB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(2 * MB + 3)
    src = tmp_path / "model.bin"
    src.write_bytes(data)
    gate = gate_hashing(monkeypatch)
    seen: dict[str, Any] = {}

    def job(context: Any) -> None:
        rec = context.log_artifact("weights", local_path=src)
        # The user overwrites the file right after the call: the artifact is what was logged.
        src.write_bytes(b"overwritten")
        seen["pending"] = isinstance(rec, PendingArtifactRecord) and not rec.hash_done()
        # Not in the run DB before its hash is known (a background flush skips it).
        context._tracker.flush(strict=False)
        seen["in_db_early"] = [a.key for a in db.list_artifacts(context.project, uid=context.uid)]
        threading.Timer(0.2, gate.set).start()
        seen["returned"] = rec.sha256  # waits for the hash
        seen["by_context"] = context.artifacts["weights"].sha256
        context.commit()
        mid = db.get_artifact(context.project, context.uid, 0, "weights")
        seen["db_mid_run"] = mid.sha256
        seen["copy"] = copy.deepcopy(rec).sha256
        seen["pickle"] = pickle.loads(pickle.dumps(rec)).sha256
        seen["dump"] = rec.model_dump()["sha256"]

    run = run_function(job, settings=settings, db=db)
    assert run.state == "completed", run.error
    assert seen["pending"] is True
    assert seen["in_db_early"] == []
    want = sha(data)
    for what in ("returned", "by_context", "db_mid_run", "copy", "pickle", "dump"):
        assert seen[what] == want, what
    stored = db.get_artifact(run.project, run.uid, 0, "weights")
    assert stored.sha256 == want and stored.size_bytes == len(data)
    assert sha(Path(stored.target).read_bytes()) == want
    assert run.artifact_record("weights").sha256 == want


def test_run_end_waits_for_every_pending_hash(
    settings: TrackingSettings, db: SqlRunDB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blobs = [os.urandom(MB + i) for i in range(5)]
    for i, b in enumerate(blobs):
        (tmp_path / f"b{i}.bin").write_bytes(b)
    gate = gate_hashing(monkeypatch)

    def job(context: Any) -> None:
        for i in range(len(blobs)):
            context.log_artifact(f"b{i}", local_path=tmp_path / f"b{i}.bin")
        threading.Timer(0.2, gate.set).start()  # still hashing when the handler returns

    run = run_function(job, settings=settings, db=db)
    assert run.state == "completed", run.error
    stored = {a.key: a for a in db.list_artifacts(run.project, uid=run.uid)}
    assert {k: a.sha256 for k, a in stored.items()} == {
        f"b{i}": sha(b) for i, b in enumerate(blobs)
    }
    for a in stored.values():
        assert type(a) is ArtifactRecord
        assert sha(Path(a.target).read_bytes()) == a.sha256


def test_a_failing_hash_is_reported_and_ends_the_run_in_error(
    settings: TrackingSettings, db: SqlRunDB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(fd: int, size: int) -> str:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(hashing_mod, "digest_fd", broken)
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(MB))
    seen: dict[str, Any] = {}

    def job(context: Any) -> None:
        rec = context.log_artifact("big", local_path=src)
        with pytest.raises(ArtifactHashError, match="'big'.*Input/output error"):
            _ = rec.sha256
        with pytest.raises(ArtifactHashError, match="'big'.*Input/output error"):
            context.commit()
        context.commit()  # reported once; the run's end reports it again
        seen["ok"] = True

    run = run_function(job, settings=settings, db=db)
    assert seen == {"ok": True}
    assert run.state == "error"
    assert "'big'" in (run.error or "") and "Input/output error" in (run.error or "")
    stored = db.get_artifact(run.project, run.uid, 0, "big")
    assert stored.sha256 == ""
    assert "Input/output error" in stored.meta[HASH_ERROR_META]


def test_small_files_and_bodies_are_hashed_in_the_call(
    settings: TrackingSettings, db: SqlRunDB, tmp_path: Path
) -> None:
    src = tmp_path / "small.txt"
    src.write_bytes(b"a small file")

    def job(context: Any) -> None:
        a = context.log_artifact("small", local_path=src)
        b = context.log_artifact("body", b"some bytes")
        assert type(a) is ArtifactRecord and type(b) is ArtifactRecord
        assert a.sha256 == sha(b"a small file") and b.sha256 == sha(b"some bytes")

    run = run_function(job, settings=settings, db=db)
    assert run.state == "completed", run.error


def test_commit_hashes_what_the_thread_has_not_reached(
    settings: TrackingSettings, db: SqlRunDB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """commit() waits anyway: it computes the hashes the thread has not started (newest
    first), so a burst of big artifacts is hashed on two cores; here the thread is stuck on
    another hash for the whole commit."""
    import tempfile

    gate, entered = threading.Event(), threading.Event()
    real = hashing_mod.digest_fd

    def thread_held(fd: int, size: int) -> str:
        if threading.current_thread().name == "tickrun-hash":
            entered.set()
            gate.wait(30)
        return real(fd, size)

    monkeypatch.setattr(hashing_mod, "digest_fd", thread_held)
    with tempfile.TemporaryFile() as f:
        f.write(b"x")
        f.flush()
        held = hashing_mod.digest_later(os.dup(f.fileno()), 1)
    assert entered.wait(30)
    blobs = [os.urandom(MB + i) for i in range(4)]
    for i, b in enumerate(blobs):
        (tmp_path / f"b{i}.bin").write_bytes(b)
    seen: dict[str, Any] = {}

    def job(context: Any) -> None:
        for i in range(len(blobs)):
            context.log_artifact(f"b{i}", local_path=tmp_path / f"b{i}.bin")
        context.commit()
        seen["thread_still_held"] = not held.done()
        seen["in_db"] = {
            a.key: a.sha256 for a in db.list_artifacts(context.project, uid=context.uid)
        }

    try:
        run = run_function(job, settings=settings, db=db)
    finally:
        gate.set()
    assert run.state == "completed", run.error
    assert seen["thread_still_held"] is True
    assert seen["in_db"] == {f"b{i}": sha(b) for i, b in enumerate(blobs)}
    assert held.result(30) == sha(b"x")
