"""Cron trigger: schedule arithmetic, one firing worker per replica, no overlap by default."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from tickrun.functions.errors import SpecError, TriggerConfigError
from tickrun.functions.results import Result, to_result
from tickrun.functions.spec import parse_spec
from tickrun.triggers.cron import CronConfig, CronTrigger


def _fn(**attrs: Any) -> Any:
    return parse_spec(
        {
            "metadata": {"name": "job"},
            "spec": {"triggers": {"tick": {"kind": "cron", "attributes": attrs}}},
        }
    )


def _config(**attrs: Any) -> CronConfig:
    return CronConfig.from_spec(_fn(**attrs).spec.triggers["tick"])


T0 = dt.datetime(2024, 1, 1, 0, 0, 1, tzinfo=dt.UTC)


def test_five_field_schedule_fires_on_minutes() -> None:
    cfg = _config(schedule="*/15 * * * *")
    first = cfg.next_fire(T0)
    assert first == dt.datetime(2024, 1, 1, 0, 15, tzinfo=dt.UTC)
    assert cfg.next_fire(first) == dt.datetime(2024, 1, 1, 0, 30, tzinfo=dt.UTC)


def test_six_fields_have_seconds_first() -> None:
    cfg = _config(schedule="*/5 * * * * *")
    assert cfg.next_fire(T0) == dt.datetime(2024, 1, 1, 0, 0, 5, tzinfo=dt.UTC)


def test_timezone_is_respected() -> None:
    cfg = _config(schedule="0 9 * * *", timezone="America/New_York")
    assert cfg.next_fire(T0) == dt.datetime(2024, 1, 1, 14, 0, tzinfo=dt.UTC)


def test_interval() -> None:
    assert _config(interval="90s").next_fire(T0) == T0 + dt.timedelta(seconds=90)


@pytest.mark.parametrize(
    "attrs", [{}, {"schedule": "* * * * *", "interval": "1s"}, {"schedule": "every day"}]
)
def test_spec_refuses_bad_attributes(attrs: dict[str, Any]) -> None:
    with pytest.raises(SpecError):
        _fn(**attrs)


@pytest.mark.parametrize(
    "attrs", [{"schedule": "61 * * * *"}, {"interval": "1s", "timezone": "Mars/Olympus"}]
)
def test_trigger_refuses_what_croniter_refuses(attrs: dict[str, Any]) -> None:
    with pytest.raises(TriggerConfigError):
        _config(**attrs)


class Host:
    def __init__(self, handler: Any, worker_index: int = 0) -> None:
        self.worker_index = worker_index
        self.worker_count = 2
        self.events: list[Any] = []
        self._handler = handler

    def dispatcher(self, trigger: Any) -> Any:
        host = self

        class D:
            trigger_name = trigger.name
            trigger_kind = "cron"
            in_flight = 0

            async def dispatch(self, event: Any) -> Result:
                host.events.append(event)
                return to_result(await host._handler(event))

        return D()


async def _noop(event: Any) -> str:
    return "ok"


def _trigger(**attrs: Any) -> CronTrigger:
    fn = _fn(**attrs)
    return CronTrigger(fn.spec.triggers["tick"], fn)


async def test_fires_with_configured_event() -> None:
    trigger = _trigger(
        interval="50ms", event={"body": {"job": "retrain"}, "headers": {"X-Job": "r"}}
    )
    host = Host(_noop)
    await trigger.start(host)  # type: ignore[arg-type]
    await asyncio.sleep(0.33)
    await trigger.stop(1.0)
    assert 3 <= len(host.events) <= 8
    ev = host.events[0]
    assert ev.body == {"job": "retrain"}
    assert ev.headers == {"X-Job": "r"}
    assert (ev.trigger.kind, ev.trigger.name) == ("cron", "tick")
    assert ev.timestamp.tzinfo is not None
    stamps = [e.timestamp for e in host.events]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)


async def test_only_worker_zero_fires() -> None:
    trigger = _trigger(interval="20ms")
    host = Host(_noop, worker_index=1)
    await trigger.start(host)  # type: ignore[arg-type]
    await asyncio.sleep(0.1)
    await trigger.stop(1.0)
    assert host.events == []
    assert not trigger.active


async def _slow(event: Any) -> str:
    await asyncio.sleep(0.25)
    return "ok"


async def test_forbid_skips_overlapping_ticks() -> None:
    trigger = _trigger(interval="50ms")
    host = Host(_slow)
    await trigger.start(host)  # type: ignore[arg-type]
    await asyncio.sleep(0.6)
    await trigger.stop(1.0)
    # 12 ticks in 0.6 s, but each run takes 0.25 s: only every ~5th tick may start one.
    assert 2 <= len(host.events) <= 3


async def test_allow_overlaps() -> None:
    trigger = _trigger(interval="50ms", concurrencyPolicy="Allow")
    host = Host(_slow)
    await trigger.start(host)  # type: ignore[arg-type]
    await asyncio.sleep(0.6)
    await trigger.stop(1.0)
    assert len(host.events) >= 8


def test_string_body_given_as_json_is_decoded() -> None:
    from tickrun.triggers.cron.trigger import _body

    assert _body('{"kind": "tick"}') == ({"kind": "tick"}, "application/json")
    assert _body("hello") == (b"hello", "text/plain")
    assert _body(None) == (b"", "application/octet-stream")
