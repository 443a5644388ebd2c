"""Workarounds for kafka-python 3.0 bugs seen in CI, in one place.

All read or set the consumer's private state, and both do nothing when the attributes they
need are absent (another kafka-python version), so upgrading cannot break the trigger, only
bring the bugs back: tests/integration/test_kafka_*.py would show it.
"""

from __future__ import annotations

from typing import Any

from kafka.errors import CorruptRecordError


def unpark_resumed(consumer: Any) -> None:
    """Work around a kafka-python 3.0 fetcher bug that stalls a resumed partition forever.

    The fetcher parks the records of a paused partition and restores them only while its
    in-line slot ``_next_partition_records`` is ``None``; but an exhausted slot keeps a
    falsy ``PartitionRecords`` object instead, so once another partition has been drained the
    parked records are never restored and the partition is never fetched again. Clearing the
    exhausted slot between polls (on the polling thread, where the fetcher runs) lets the
    fetcher restore them. Harmless when the attribute is absent (other versions).
    """
    fetcher = getattr(consumer, "_fetcher", None)
    slot = getattr(fetcher, "_next_partition_records", None)
    if slot is not None and not slot:
        fetcher._next_partition_records = None  # type: ignore[union-attr]


def joining(consumer: Any) -> bool:
    """True while this member has to (re)join its group; polls are long meanwhile.

    Works around two kafka-python 3.0 races around a rejoin, both seen in CI:

    - A rejoin caused by new topic metadata is only remembered by comparing snapshots, and the
      group leader updates its snapshot while it computes the assignment. A poll that timed
      out just before the join finished then finds nothing to rejoin, never applies the
      assignment, and the member keeps polling with no partitions, forever. Asking for the
      rejoin explicitly keeps it wanted until the assignment is applied.
    - A join that finishes between two polls is thrown away and a new JoinGroup is sent; long
      polls during a join make that rare.

    Reads the coordinator's private state; False when the attributes are absent (other
    versions).
    """
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is None or not hasattr(coordinator, "rejoin_needed"):
        return False
    if not coordinator.rejoin_needed and coordinator.need_rejoin():
        coordinator.request_rejoin()
    return bool(
        coordinator.rejoin_needed
        or getattr(coordinator, "rejoining", False)
        or getattr(coordinator, "_join_task", None) is not None
    )


def unreadable_partition(consumer: Any) -> Any:
    """The partition whose next record just failed to decode in ``poll()``, or None.

    kafka-python raises ``CorruptRecordError`` from ``poll()`` without saying where (a failed
    CRC, a header name that is not UTF-8), and from then on returns nothing for that
    partition's fetch, nor for any fetch queued behind it: one bad record would stop the
    consumer for good. The fetcher's in-line slot still holds the failed partition's records;
    its position is the bad record's offset, so the caller can seek past it (which discards
    the slot). None when the attribute is absent (other versions): the caller reconnects.

    kafka-python reads a batch from its first record, so when the bad record shares a batch
    with later ones those cannot be read either: each is reported in turn (one dead-letter
    envelope per offset, nothing silently lost). A hostile client's record is usually a batch
    of its own.
    """
    fetcher = getattr(consumer, "_fetcher", None)
    part = getattr(fetcher, "_next_partition_records", None)
    return getattr(part, "topic_partition", None)


def deferred_unreadable(consumer: Any) -> tuple[Any, BaseException] | None:
    """Take a decode failure ``poll()`` kept for its next call: (partition, error), or None.

    When a poll had records of other partitions to return, kafka-python keeps the failure for
    the next poll, and drops it unseen if that partition is paused by then: its dead record
    iterator would then make a later ``poll()`` spin forever. Taking it right after the poll
    that hit it (before flow control can pause the partition) leaves the fetcher as an
    immediate raise would. None when nothing is kept or the attributes are absent.
    """
    fetcher = getattr(consumer, "_fetcher", None)
    kept = getattr(fetcher, "_next_in_line_exception_metadata", None)
    if kept is None or not isinstance(getattr(kept, "exception", None), CorruptRecordError):
        return None
    fetcher._next_in_line_exception_metadata = None  # type: ignore[union-attr]
    return kept.partition, kept.exception
