"""The event timeout of a dispatcher's async handler calls, on one loop timer for them all.

``asyncio.timeout`` arms a loop timer for each call and cancels it after: 3-10 µs a call here
(uvloop's libuv timer most of it), more than a no-op async handler's whole event, paid by every
event of a function with an ``eventTimeout``. A dispatcher has one event timeout, so its calls'
deadlines fall due in the order the calls started: one timer, set for the oldest call still
running, serves them all, and each call costs a dict entry in and out.

On expiry the call's task is cancelled, and the dispatcher turns that cancellation into a timed
out event, exactly as ``asyncio.timeout`` would: a cancellation someone else asked for as well
(the server shutting down) stays a cancellation, and a handler that swallows it and returns
keeps its answer.
"""

from __future__ import annotations

import asyncio

Task = asyncio.Task[object]


class Deadlines:
    """One timeout for every call; made and used on the event loop's thread only."""

    __slots__ = ("_calls", "_fired", "_loop", "_prior", "_timer", "timeout_s")

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        # task → deadline, oldest call first (a task runs one call at a time)
        self._calls: dict[Task, float] = {}
        self._fired: set[Task] = set()  # cancelled by us, not yet left
        # A task's cancel requests when its call started, when there were any (rare: the
        # task was being cancelled already).
        self._prior: dict[Task, int] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the first call's

    def enter(self) -> Task:
        """Start the calling task's call; pair with :meth:`leave` in a ``finally``."""
        task: Task | None = asyncio.current_task()
        if task is None:
            raise RuntimeError("Deadlines.enter outside a task")
        loop = self._loop
        if loop is None:
            loop = self._loop = task.get_loop()
        deadline = loop.time() + self.timeout_s
        self._calls[task] = deadline
        prior = task.cancelling()
        if prior:
            self._prior[task] = prior
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._expire)
        return task

    def expired(self, task: Task) -> bool:
        """Is this CancelledError the call's timeout (and only that)? Call it in the
        ``except CancelledError`` of the call; it takes the timeout's request back."""
        if task not in self._fired:
            return False
        self._fired.discard(task)
        return task.uncancel() <= self._prior.get(task, 0)

    def leave(self, task: Task) -> None:
        del self._calls[task]
        if self._fired and task in self._fired:  # timed out, yet it returned or raised
            self._fired.discard(task)
            task.uncancel()
        if self._prior:
            self._prior.pop(task, None)

    def _expire(self) -> None:
        self._timer = None
        loop = self._loop
        if loop is None:  # pragma: no cover - a timer is only set after enter() set it
            return
        now = loop.time()
        fired = self._fired
        due: list[Task] = []
        for task, deadline in self._calls.items():
            if deadline > now:
                self._timer = loop.call_at(deadline, self._expire)
                break
            if task not in fired:  # (one that outlives its cancellation stays listed)
                due.append(task)
        for task in due:
            fired.add(task)
            task.cancel()
