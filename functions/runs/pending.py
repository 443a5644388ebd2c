"""Artifact records whose sha256 is still being computed on the hashing thread.

``log_artifact`` of a big local file returns as soon as the store holds the copy; the copy's
sha256 arrives a little later (:mod:`tickrun.functions.artifacts.hashing`). The record it
returns is a :class:`PendingArtifactRecord`: reading its ``sha256`` waits for the hash, and so
does every dump or copy of it, so no one in this process sees a record with a missing hash.
The run tracker writes a record to the run DB only once its hash is known, commit() and the
run's end wait for them all, and a hash that failed ends the run in error.
"""

from __future__ import annotations

from typing import Any

from ..artifacts.hashing import ArtifactHashError, Digest
from .records import ArtifactRecord

HASH_ERROR_META = "sha256_error"


class PendingArtifactRecord(ArtifactRecord):
    """An :class:`ArtifactRecord` whose ``sha256`` is filled in when its hash completes."""

    # Not fields: state of this process only, never dumped, compared or copied.
    _digest: Digest | None = None
    _hash_error: str | None = None

    @classmethod
    def pending(cls, digest: Digest, **fields: Any) -> PendingArtifactRecord:
        rec = cls(**fields)
        rec._digest = digest
        return rec

    def __getattribute__(self, name: str) -> Any:
        if name == "sha256":
            error = object.__getattribute__(self, "settle")()
            if error is not None:
                key = object.__getattribute__(self, "key")
                raise ArtifactHashError(f"artifact {key!r}: {error}")
        return super().__getattribute__(name)

    def hash_done(self) -> bool:
        """True when :meth:`settle` would not wait."""
        digest = self._digest
        return digest is None or digest.done()

    def settle(self, timeout: float | None = None) -> str | None:
        """Wait for the hash and fill ``sha256`` in; the reason when the hash failed (then
        ``sha256`` stays empty and ``meta["sha256_error"]`` says why), else None."""
        state = self.__dict__  # not through ``sha256``, which would wait here again
        digest: Digest | None = state.get("_digest")
        if digest is not None:
            try:
                state["sha256"] = digest.result(timeout)
            except ArtifactHashError as exc:
                state["_hash_error"] = exc.message
            except Exception as exc:  # any other failure of the hashing thread, reported too
                state["_hash_error"] = f"{type(exc).__name__}: {exc}"
            if state.get("_hash_error") is not None:
                state["meta"] = {**state["meta"], HASH_ERROR_META: state["_hash_error"]}
            state["_digest"] = None
        error: str | None = state.get("_hash_error")
        return error

    # Everything that reads the fields without going through ``sha256`` waits first.

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        self.settle()
        return super().model_dump(**kwargs)

    def model_dump_json(self, **kwargs: Any) -> str:
        self.settle()
        return super().model_dump_json(**kwargs)

    def __eq__(self, other: object) -> bool:
        self.settle()
        if isinstance(other, PendingArtifactRecord):
            other.settle()
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]

    def __getstate__(self) -> dict[str, Any]:
        # copy, deepcopy and pickle all come here: a copy holds the digest, never a pending
        # one (which could not be pickled either: a sweep's worker sends records back).
        self.settle()
        return dict(self.__dict__)


def settle_all(records: list[ArtifactRecord]) -> list[tuple[ArtifactRecord, str]]:
    """Wait for the pending hashes among ``records``; (record, why) for each that failed.

    Newest first: the hashing thread works from the oldest, and a hash it has not started is
    computed by this (otherwise idle, waiting) thread, so the two meet in the middle."""
    failed: list[tuple[ArtifactRecord, str]] = []
    for rec in reversed(records):
        if isinstance(rec, PendingArtifactRecord) and (error := rec.settle()) is not None:
            failed.append((rec, error))
    failed.reverse()  # reported in the order they were logged
    return failed


def hash_done(rec: ArtifactRecord) -> bool:
    return not isinstance(rec, PendingArtifactRecord) or rec.hash_done()
