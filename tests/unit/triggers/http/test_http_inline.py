"""Where a sync HTTP handler runs: inline on the loop's thread, or in the pool.

One slot: always inline. Many slots: inline while calls are quick; a slow call sends the next
ones to the pool (they would have waited for it), and quick calls there bring it back.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tickrun.functions.processor import dispatcher
from tickrun.functions.processor.inline import InlineGuard
from tickrun.functions.processor.worker import Worker, WorkerConfig

HANDLER = """\
import threading
import time


def handler(context, event):
    seconds = float(event.fields.get("s", "0"))
    if seconds:
        time.sleep(seconds)
    if event.fields.get("fail"):
        raise ValueError("no")
    return threading.current_thread().name
"""


def _spec(triggers: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"handler": "where:handler", **extra}
    if triggers is not None:
        spec["triggers"] = triggers
    return {"metadata": {"name": "where"}, "spec": spec}


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Any]:
    (tmp_path / "where.py").write_text(HANDLER)
    workers: list[Worker] = []

    async def _serve(triggers: dict[str, Any] | None = None, **extra: Any) -> Worker:
        config = WorkerConfig(function_dir=str(tmp_path), spec=_spec(triggers, **extra), port=0)
        worker = Worker(config)
        await worker.start()
        workers.append(worker)
        return worker

    yield _serve
    for w in workers:
        await w.stop()


async def _where(session: aiohttp.ClientSession, worker: Worker, query: str = "") -> str:
    async with session.get(f"http://127.0.0.1:{worker.port}/{query}") as resp:
        assert resp.status == 200
        return await resp.text()


async def test_one_slot_runs_inline_even_after_a_slow_call(serve: Any) -> None:
    worker = await serve()  # no triggers section: the default HTTP trigger, one slot
    async with aiohttp.ClientSession() as session:
        assert await _where(session, worker) == "MainThread"
        assert await _where(session, worker, "?s=0.05") == "MainThread"
        assert await _where(session, worker) == "MainThread"


async def test_many_slots_leave_inline_after_a_slow_call_and_come_back(
    serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatcher, "PROBE_BASE", 4)
    worker = await serve({"http": {"kind": "http", "maxWorkers": 8}})
    async with aiohttp.ClientSession() as session:
        assert await _where(session, worker) == "MainThread"
        assert await _where(session, worker, "?s=0.05") == "MainThread"  # found slow here
        pooled = [await _where(session, worker) for _ in range(4)]
        assert all(name.startswith("handler") for name in pooled)
        assert await _where(session, worker) == "MainThread"  # 4 quick pool calls: back
        # Leaving again doubles the quick calls it takes to return.
        await _where(session, worker, "?s=0.05")
        pooled = [await _where(session, worker) for _ in range(8)]
        assert all(name.startswith("handler") for name in pooled)
        assert await _where(session, worker) == "MainThread"


async def test_slow_calls_in_the_pool_keep_it_there(
    serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatcher, "PROBE_BASE", 2)
    worker = await serve({"http": {"kind": "http", "maxWorkers": 8}})
    async with aiohttp.ClientSession() as session:
        await _where(session, worker, "?s=0.05")  # to the pool
        for _ in range(3):
            assert (await _where(session, worker)).startswith("handler")
            assert (await _where(session, worker, "?s=0.01")).startswith("handler")


async def test_many_slots_still_overlap_slow_calls_in_the_pool(serve: Any) -> None:
    worker = await serve({"http": {"kind": "http", "maxWorkers": 8}})
    async with aiohttp.ClientSession() as session:
        await _where(session, worker, "?s=0.05")  # to the pool
        names = await asyncio.gather(*(_where(session, worker, "?s=0.2") for _ in range(4)))
        assert len(set(names)) == 4  # four pool threads at once, not one after another


async def _errors(session: aiohttp.ClientSession, url: str) -> float:
    async with session.get(url + "/metrics") as resp:
        text = await resp.text()
    # Statistics are per process: other tests' workers are in there too.
    key = 'function="where",kind="http",outcome="error",trigger="default-http"'
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if key in line)


async def test_inline_handler_failure_is_500_and_counted(serve: Any) -> None:
    worker = await serve()
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{worker.port}"
        before = await _errors(session, url)
        async with session.get(url + "/?fail=1") as resp:
            assert resp.status == 500
        assert await _where(session, worker) == "MainThread"
        assert await _errors(session, url) == before + 1


async def test_no_inline_off_the_main_thread_or_when_disabled(tmp_path: Path) -> None:
    (tmp_path / "where.py").write_text(HANDLER)
    config = WorkerConfig(function_dir=str(tmp_path), spec=_spec(None), port=0)
    worker = Worker(config, inline=False)
    await worker.start()
    try:
        async with aiohttp.ClientSession() as session:
            assert (await _where(session, worker)).startswith("handler")
    finally:
        await worker.stop()
    errors: list[BaseException] = []

    def build() -> None:
        try:
            InlineGuard(None, on_hung=lambda: None)
        except RuntimeError as exc:
            errors.append(exc)

    t = threading.Thread(target=build)
    t.start()
    t.join()
    assert len(errors) == 1


async def test_event_timeout_interrupts_inline_calls_of_every_worker_in_a_process(
    serve: Any,
) -> None:
    # Two workers in one process (as in these tests) share the interrupt signal's handler.
    first = await serve(eventTimeout="200ms")
    second = await serve(eventTimeout="200ms")
    async with aiohttp.ClientSession() as session:
        for worker in (first, second, first):
            url = f"http://127.0.0.1:{worker.port}"
            async with session.get(url + "/?s=3") as resp:
                assert resp.status == 504
            assert await _where(session, worker) == "MainThread"


async def test_one_moderately_slow_call_alone_stays_inline_two_close_together_leave(
    serve: Any,
) -> None:
    # One call of a few milliseconds may be the OS preempting the worker on a busy machine.
    worker = await serve({"http": {"kind": "http", "maxWorkers": 8}})
    async with aiohttp.ClientSession() as session:
        assert await _where(session, worker, "?s=0.003") == "MainThread"
        for _ in range(dispatcher.SLOW_PAIR_CALLS):
            assert await _where(session, worker) == "MainThread"
        assert await _where(session, worker, "?s=0.003") == "MainThread"  # far apart: stays
        assert await _where(session, worker, "?s=0.003") == "MainThread"  # close: leaves
        assert (await _where(session, worker)).startswith("handler")
