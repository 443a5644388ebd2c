"""The endpoint table on its own: publish, balanced pick, hold while a function comes up,
mark unready, and the one pick/hold/retry loop both gateways use. The replica source is a
recording stand-in for the reconciler (the protocol is our own seam; the reconciler behind it is
covered in test_reconciler_gateway.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from tickrun.controller.endpoints import Endpoint, EndpointTable, Miss


@dataclass
class Source:
    hold: bool = True
    wanted: list[str] = field(default_factory=list)
    rechecked: list[tuple[str, str]] = field(default_factory=list)

    def should_hold(self, name: str) -> bool:
        return self.hold

    def want_replica(self, name: str) -> None:
        self.wanted.append(name)

    def recheck(self, name: str, replica_id: str) -> None:
        self.rechecked.append((name, replica_id))


def test_publish_keeps_in_flight_counts_and_drops_gone_replicas() -> None:
    table = EndpointTable()
    table.publish("f", {"a": "http://127.0.0.1:1", "b": "http://127.0.0.1:2"})
    a = table.pick("f", set())
    assert a is not None
    a.in_flight = 3
    table.publish("f", {a.replica_id: a.url, "c": "http://127.0.0.1:3"})
    entry = table.get("f")
    assert entry is not None
    by_id = {e.replica_id: e for e in entry.endpoints}
    assert set(by_id) == {a.replica_id, "c"} and by_id[a.replica_id].in_flight == 3
    # a replica that moved to another port is a new endpoint
    table.publish("f", {a.replica_id: "http://127.0.0.1:9"})
    [moved] = table.get("f").endpoints  # type: ignore[union-attr]
    assert moved.url.endswith(":9") and moved.in_flight == 0


def test_pick_prefers_least_in_flight_rotates_ties_and_counts_load() -> None:
    table = EndpointTable()
    table.publish("f", {"a": "u1", "b": "u2", "c": "u3"})
    assert {table.pick("f", set()).replica_id for _ in range(3)} == {"a", "b", "c"}  # type: ignore[union-attr]
    entry = table.get("f")
    assert entry is not None
    for e in entry.endpoints:
        e.in_flight = 0 if e.replica_id == "b" else 2
    assert [table.pick("f", set()).replica_id for _ in range(4)] == ["b"] * 4  # type: ignore[union-attr]
    assert table.pick("f", {"a", "b", "c"}) is None
    assert table.pick("nope", set()) is None
    assert table.load("f") == (4, 7)  # in flight now, routed so far (the excluded pick too)
    assert table.load("nope") == (0, 0)
    table.drop("f")
    assert table.names() == [] and table.get("f") is None


def test_mark_unready_stops_routing_there_and_asks_for_a_recheck() -> None:
    source = Source()
    table = EndpointTable(source)
    table.publish("f", {"a": "u1", "b": "u2"})
    table.mark_unready("f", "a")
    assert [table.pick("f", set()).replica_id for _ in range(3)] == ["b"] * 3  # type: ignore[union-attr]
    assert source.rechecked == [("f", "a")]


async def test_route_retries_a_refused_replica_and_marks_it_unready() -> None:
    source = Source()
    table = EndpointTable(source)
    table.publish("f", {"a": "u1", "b": "u2"})
    asked: list[str] = []

    async def attempt(endpoint: Endpoint) -> str | None:
        asked.append(endpoint.replica_id)
        return None if len(asked) == 1 else f"answered by {endpoint.replica_id}"

    outcome = await table.route("f", attempt, hold_timeout_s=1.0)
    assert outcome == f"answered by {asked[1]}" and asked[0] != asked[1]
    assert source.rechecked == [("f", asked[0])]
    assert source.wanted == []  # there were replicas: nothing held


async def test_route_gives_up_after_every_replica_refused_or_one_that_cannot_replay() -> None:
    table = EndpointTable(Source())
    table.publish("f", {"a": "u1", "b": "u2"})

    async def refused(endpoint: Endpoint) -> str | None:
        return None

    assert await table.route("f", refused, hold_timeout_s=1.0) == Miss(2)
    table.publish("f", {"a": "u1", "b": "u2"})  # the next pass publishes them again
    assert await table.route("f", refused, hold_timeout_s=1.0, replayable=False) == Miss(1)


async def test_route_holds_once_until_a_replica_is_published() -> None:
    source = Source()
    table = EndpointTable(source)

    async def attempt(endpoint: Endpoint) -> str | None:
        return endpoint.replica_id

    held = asyncio.create_task(table.route("z", attempt, hold_timeout_s=5.0))
    await asyncio.sleep(0.05)
    assert not held.done() and source.wanted == ["z"]  # the reconciler was asked for a replica
    table.publish("z", {})  # a pass with nothing ready yet does not release it
    await asyncio.sleep(0.05)
    assert not held.done()
    table.publish("z", {"r": "u"})
    assert await asyncio.wait_for(held, 1.0) == "r"


async def test_route_answers_a_miss_when_nothing_comes_or_holding_is_not_worth_it() -> None:
    source = Source()
    table = EndpointTable(source)

    async def attempt(endpoint: Endpoint) -> str | None:
        return endpoint.replica_id

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert await table.route("z", attempt, hold_timeout_s=0.2) == Miss(0)
    assert 0.15 <= loop.time() - t0 < 2.0 and source.wanted == ["z"]  # held once, then gave up
    source.hold = False
    t0 = loop.time()
    assert await table.route("z", attempt, hold_timeout_s=5.0) == Miss(0)
    assert loop.time() - t0 < 0.1 and source.wanted == ["z"]  # no hold this time
    assert await EndpointTable().route("z", attempt, hold_timeout_s=5.0) == Miss(0)
