"""The direct path: the consumer thread runs the handler itself, between two polls.

With more slots it does the same for a handler measured to be fast (:mod:`.inline`), whose
chunks it times; a slow chunk hands the rest of the poll to the pool.

With one slot and a sync handler (the default, and what CPU-bound Python handlers want) this is
what a plain consumer loop does: no hop to the event loop and a handler thread per chunk, which
cost half the throughput of a no-op handler. It only runs while the loop side (:mod:`.loop`) has
nothing to do, so the one slot is never used twice at once; a failure, a record with earlier
attempts, or a pending rebalance hands the rest of the poll to the loop side, which retries,
dead-letters and settles revoked partitions as usual, and the consumer thread takes over again
once it has caught up.

Handled offsets go to the offset book; commits stay with the consumer thread (this code runs on
it, and asks it to commit when due between chunks).

With several slots, an event that runs long here is taken over (see
:meth:`~.trigger.KafkaTrigger.take_over`): the event loop adopts the chunk under way
(:attr:`DirectPath.running`) and the rest of the poll, a new thread polls, and this thread
finishes the event and ends (:class:`~.thread.ConsumerMoved`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .event import to_event
from .loop import BATCH_MAX_EVENTS
from .thread import ConsumerMoved

if TYPE_CHECKING:
    from .inline import InlineGate
    from .state import KafkaState


class DirectPath:
    """Runs a poll's records on the consumer thread (see the module docstring)."""

    def __init__(self, trigger: KafkaState) -> None:
        self._t = trigger
        # Several slots: run inline only while this says the handler is fast (.inline).
        self.gate: InlineGate | None = None
        # While a chunk runs: (its partition, the chunk, the poll's records not handled yet,
        # the chunk's included): what a take-over hands to the event loop, and the trigger's
        # ``here_tp``.
        self.running: tuple[Any, list[Any], dict[Any, list[Any]]] | None = None

    def run(self, batch: dict[Any, list[Any]]) -> None:
        """Handle a poll's records on this thread, committing when due.

        Partitions take turns a chunk at a time, so one partition's long fetch does not hold
        the others back (the loop path interleaves them the same way).
        """
        todo = dict(batch)  # partition -> its records not handled yet
        counters = self._t.processed
        # Counted once per poll: a multiprocess Prometheus counter costs microseconds per inc.
        processed: dict[str, int] = dict.fromkeys(counters, 0)
        try:
            self._run(todo, processed)
        finally:
            for topic, n in processed.items():
                if n:
                    counters[topic].inc(n)

    def _run(self, todo: dict[Any, list[Any]], processed: dict[str, int]) -> None:
        t = self._t
        dispatcher, thread = t.dispatcher, t.thread
        assert dispatcher is not None
        assert thread is not None
        book, revoking, sort_out = t.book, t.revoking, t.outputs.sort_out
        name, info = t.name, t.trigger_info
        gate = self.gate
        clock = time.perf_counter

        while todo:
            for tp, records in list(todo.items()):
                if t.stopping or tp in revoking:
                    del todo[tp]  # not completed, so not committed: the next owner has them
                    continue
                if thread.rejoin_pending() or t.retried(records[0]):
                    # The loop side settles a rebalance and paces retries.
                    self._hand_off(todo, tp, None)
                    return
                chunk = records[: BATCH_MAX_EVENTS if gate is None else gate.chunk()]
                events = [to_event(r, name, info) for r in chunk]
                self.running = (tp, chunk, todo)
                started = clock()
                try:
                    outcome = dispatcher.run_here(events, _Abandoned(t, tp))
                except BaseException:
                    self.running = None
                    raise
                if outcome is None:
                    # Taken over while it ran: the event loop has this chunk and the rest of
                    # the poll, and another thread polls; this one is done.
                    raise ConsumerMoved
                self.running = None
                fast = gate is None or gate.observe(clock() - started, len(outcome.results))
                done, stopped_at, failure = sort_out(chunk, outcome)
                if done:
                    processed[tp.topic] += len(done)
                    book.complete_many(tp, done)  # ignored once the partition is dropped
                todo[tp] = records[stopped_at:]
                if failure is not None:
                    # A failed publish's later results are dropped: those events run again
                    # on the loop side (at-least-once; nothing was produced for them yet).
                    self._hand_off(todo, tp, failure)
                    return
                if stopped_at < len(chunk) or not todo[tp]:
                    del todo[tp]  # done, or stopping / revoked
                if not fast and todo:
                    # A slow handler wants its threads: the pool takes the rest of the poll.
                    self._t.hand_off(todo, None, None)
                    return
                thread.commit_if_due()

    def _hand_off(
        self, todo: dict[Any, list[Any]], failed_tp: Any, failure: BaseException | None
    ) -> None:
        """Give the rest of a poll to the loop side; ``failure``: the first record left of
        ``failed_tp`` failed once already."""
        failed = (todo[failed_tp][0].offset, failure) if failure is not None else None
        self._t.hand_off(todo, failed_tp, failed)


class _Abandoned:
    """Asked before each event of a chunk: stop there (stopping, or the partition revoked)."""

    __slots__ = ("_t", "_tp")

    def __init__(self, trigger: KafkaState, tp: Any) -> None:
        self._t = trigger
        self._tp = tp

    def __call__(self) -> bool:
        t = self._t
        return t.stopping or self._tp in t.revoking
