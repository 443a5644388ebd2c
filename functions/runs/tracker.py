"""Batched persistence of one run: results are kept in memory and flushed at intervals.

``log_result`` only touches a dict under a lock, so tracking is never the bottleneck; a
background thread writes the whole run record (plus new artifact records) every
``flush_interval_s`` and refreshes the heartbeat that tells a reader the process is alive. The
final state is written synchronously. A crash loses at most one flush interval of results, and
the run itself is marked aborted by the next reader (dead pid or stale heartbeat).

An artifact record whose sha256 is still being computed (:mod:`.pending`) is written by the
first flush after its hash is known; a strict flush (``commit()``, the run's end) waits for
them all, and a run whose artifact could not be hashed ends in error, never completed.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from ..errors import RunError, TickrunError
from .db.base import HOST, RunDB
from .records import ArtifactRecord, RunBatch, RunRecord, RunState

logger = logging.getLogger(__name__)


def hash_done(rec: ArtifactRecord) -> bool:
    if type(rec) is ArtifactRecord:
        return True
    from .pending import hash_done  # only records of a deferred hash are of another type

    return hash_done(rec)


def settle_all(records: list[ArtifactRecord]) -> list[tuple[ArtifactRecord, str]]:
    """Wait for the records' pending hashes; (record, why) of each that failed."""
    if all(type(r) is ArtifactRecord for r in records):
        return []
    from .pending import settle_all as settle

    return settle(records)


class RunTracker:
    def __init__(
        self,
        db: RunDB,
        record: RunRecord,
        *,
        flush_interval_s: float = 1.0,
        heartbeat_interval_s: float = 5.0,
    ) -> None:
        self.db = db
        self._rec = record
        self._pending: list[ArtifactRecord] = []
        self._dirty = True
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.flush_interval_s = flush_interval_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self._last_write = 0.0
        # Artifacts whose hash failed, with why, by (iteration, key): the run ends in error.
        self.hash_failures: dict[tuple[int, str], tuple[ArtifactRecord, str]] = {}

    @property
    def record(self) -> RunRecord:
        with self._lock:
            return self._rec.model_copy(deep=True)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Write the run as created, then running (synchronously), and start the flusher."""
        now = time.time()
        with self._lock:
            self._rec = self._rec.model_copy(
                update={
                    "pid": os.getpid(),
                    "host": HOST,
                    "heartbeat_at": now,
                    "updated_at": now,
                    "state": RunState.CREATED,
                }
            )
        self.flush(strict=True)
        with self._lock:
            self._rec.state = RunState.RUNNING
            self._rec.started_at = time.time()
            self._dirty = True
        self.flush(strict=True)
        self._thread = threading.Thread(target=self._loop, name=f"run-{self._rec.uid}", daemon=True)
        self._thread.start()

    def finish(self, state: RunState, error: str | None = None) -> RunRecord:
        """Stop the flusher and write the final state; raises RunError if that write fails."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._lock:
            pending = list(self._pending)
        self._note_failures(settle_all(pending))
        failed = list(self.hash_failures.values())
        if failed and state is RunState.COMPLETED:
            rec, why = failed[0]
            more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
            state, error = RunState.ERROR, f"artifact {rec.key!r}: {why}{more}"
        now = time.time()
        with self._lock:
            self._rec.state = state
            self._rec.error = error
            self._rec.ended_at = now
            self._dirty = True
        # The final state matters most: ride out a short DB/controller hiccup before giving up
        # (the run would then be marked aborted by the next reader, never left "running").
        for attempt in range(3):
            try:
                self.flush(strict=True)
                break
            except RunError:
                if attempt == 2:
                    raise
                time.sleep(0.5 * 2**attempt)
        return self.record

    def _note_failures(self, failed: list[tuple[ArtifactRecord, str]]) -> None:
        for rec, why in failed:
            if (rec.iteration, rec.key) not in self.hash_failures:
                logger.error(
                    "artifact hash failed",
                    extra={"uid": rec.uid, "key": rec.key, "error": why},
                )
            self.hash_failures[(rec.iteration, rec.key)] = (rec, why)

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_interval_s):
            if time.time() - self._last_write >= self.heartbeat_interval_s:
                with self._lock:
                    self._dirty = True
            self.flush(strict=False)

    # -- updates -------------------------------------------------------------------------------

    def set_result(self, key: str, value: Any) -> None:
        with self._lock:
            self._rec.results[key] = value
            self._dirty = True

    def set_results(self, values: dict[str, Any]) -> None:
        with self._lock:
            self._rec.results.update(values)
            self._dirty = True

    def set_label(self, key: str, value: str) -> None:
        with self._lock:
            self._rec.labels[key] = value
            self._dirty = True

    def update(self, **fields: Any) -> None:
        with self._lock:
            for k, v in fields.items():
                setattr(self._rec, k, v)
            self._dirty = True

    def add_artifact(self, record: ArtifactRecord) -> None:
        with self._lock:
            self._pending.append(record)
            self._dirty = True

    def flush(self, *, strict: bool = True) -> None:
        """Write what changed. ``strict=False`` (the background flusher) logs and retries later.

        A strict flush first waits for the artifacts' pending hashes; the background one writes
        the records whose hash is known and keeps the others for a later flush."""
        with self._flush_lock:
            if strict:
                with self._lock:
                    pending = list(self._pending)
                self._note_failures(settle_all(pending))
            with self._lock:
                if not self._dirty:
                    return
                now = time.time()
                self._rec.heartbeat_at = now
                self._rec.updated_at = now
                # A snapshot the job cannot change while it is written; a JSON round trip
                # (its values as the run DB will hold them).
                snapshot = RunRecord.from_trusted_json(self._rec.model_dump_json())
                # The records up to the first one still hashing, in the order they were
                # logged: a key logged twice is written in that order (the last one wins).
                n = 0
                while n < len(self._pending) and hash_done(self._pending[n]):
                    n += 1
                ready, self._pending = self._pending[:n], self._pending[n:]
                self._dirty = bool(self._pending)  # flush again once they are hashed
            self._note_failures(settle_all(ready))  # hashed already: fills sha256 in, no wait
            batch = RunBatch(runs=[snapshot], artifacts=ready)
            try:
                self.db.apply(batch)
                self._last_write = time.time()
            except TickrunError as exc:
                with self._lock:  # put them back so the next flush retries
                    self._pending[:0] = batch.artifacts
                    self._dirty = True
                if strict:
                    raise RunError(f"cannot record run {self._rec.uid}: {exc.message}") from exc
                logger.warning(
                    "run flush failed; will retry",
                    extra={"uid": self._rec.uid, "error": exc.message},
                )
