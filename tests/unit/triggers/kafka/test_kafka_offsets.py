"""The committable position is the end of the completed prefix, never beyond a gap."""

from __future__ import annotations

import threading

from tickrun.triggers.kafka.offsets import OffsetBook

TP = ("ticks", 0)


def test_in_order_completion_moves_the_position() -> None:
    book = OffsetBook()
    book.add(TP, [5, 6, 7])
    assert book.to_commit() == {}
    book.complete(TP, 5)
    assert book.to_commit() == {TP: 6}
    book.complete(TP, 6)
    book.complete(TP, 7)
    assert book.to_commit() == {TP: 8}
    assert book.outstanding(TP) == 0


def test_out_of_order_completion_waits_for_the_gap() -> None:
    book = OffsetBook()
    book.add(TP, [10, 11, 12, 13])
    book.complete(TP, 12)
    book.complete(TP, 11)
    assert book.to_commit() == {}, "offset 10 is unfinished, nothing may be committed"
    assert book.outstanding(TP) == 2
    book.complete(TP, 10)
    assert book.to_commit() == {TP: 13}
    book.complete(TP, 13)
    assert book.to_commit() == {TP: 14}


def test_offset_gaps_from_compaction_are_fine() -> None:
    book = OffsetBook()
    book.add(TP, [3, 9, 40])
    book.complete(TP, 3)
    book.complete(TP, 9)
    assert book.to_commit() == {TP: 10}


def test_committed_positions_are_not_committed_again() -> None:
    book = OffsetBook()
    other = ("ticks", 1)
    book.add(TP, [0, 1])
    book.add(other, [0])
    book.complete(TP, 0)
    book.complete(other, 0)
    assert book.uncommitted == 2
    first = book.to_commit()
    assert first == {TP: 1, other: 1}
    book.committed(first)
    assert book.uncommitted == 0
    assert book.to_commit() == {}
    book.complete(TP, 1)
    assert book.to_commit() == {TP: 2}
    assert book.to_commit([other]) == {}


def test_dropped_partition_ignores_late_completions() -> None:
    book = OffsetBook()
    book.add(TP, [0, 1])
    book.drop([TP])
    book.complete(TP, 0)  # a handler of the revoked partition finishing late
    assert book.to_commit() == {}
    assert book.partitions() == []
    book.add(TP, [0])  # reassigned: a fresh start
    assert book.position(TP) is None


def test_concurrent_completions_are_consistent() -> None:
    book = OffsetBook()
    n = 20_000
    book.add(TP, range(n))

    def finish(parity: int) -> None:
        for off in range(parity, n, 2):
            book.complete(TP, off)

    threads = [threading.Thread(target=finish, args=(p,)) for p in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert book.to_commit() == {TP: n}
    assert book.outstanding(TP) == 0


def test_restart_point_is_the_first_unfinished_offset() -> None:
    book = OffsetBook()
    assert book.restart_point(TP) is None
    book.add(TP, [4, 5, 6, 7])
    assert book.restart_point(TP) == 4
    book.complete(TP, 4)
    book.complete(TP, 6)
    assert book.restart_point(TP) == 5, "6 is done but 5 is not: resume at 5"
    book.complete(TP, 5)
    book.complete(TP, 7)
    assert book.restart_point(TP) == 8
