"""Reconciler and gateway in-process, over a fake platform whose replicas are real aiohttp
servers on the allocated ports (the platform is our own seam; podman/processes are covered by
the integration tests)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tickrun.controller.builder import Builder
from tickrun.controller.builder.hashing import pack_dir
from tickrun.controller.gateway import Gateway
from tickrun.controller.platforms.base import (
    AdoptResult,
    Launched,
    LaunchSpec,
    Liveness,
    Platform,
    ReplicaRef,
)
from tickrun.controller.portgateway import PortGateway, listen_host
from tickrun.controller.reconciler import Reconciler
from tickrun.controller.service import FunctionService
from tickrun.controller.settings import Settings
from tickrun.controller.store import Store
from tickrun.functions.spec import parse_spec


class FakePlatform(Platform):
    name = "process"

    def __init__(self) -> None:
        self.runners: dict[str, web.AppRunner] = {}
        self.exits: dict[str, int] = {}
        self.started: list[LaunchSpec] = []

    async def start(self, launch: LaunchSpec) -> Launched:
        async def any_path(request: web.Request) -> web.Response:
            body = await request.read()
            if request.path == "/slow":
                await asyncio.sleep(0.3)
            return web.json_response(
                {
                    "replica": launch.replica_id,
                    "revision": launch.revision,
                    "path": request.path_qs,
                    "rid": request.headers.get("X-Request-Id"),
                    "auth": request.headers.get("Authorization"),
                    "body_len": len(body),
                }
            )

        app = web.Application(client_max_size=64 << 20)

        async def readyz(request: web.Request) -> web.Response:
            return web.Response(text="ok")

        app.router.add_get("/readyz", readyz)
        app.router.add_route("*", "/{tail:.*}", any_path)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", launch.port).start()
        self.runners[launch.replica_id] = runner
        self.exits.pop(launch.replica_id, None)
        self.started.append(launch)
        return Launched(pid=None, log_path=None)

    async def kill(self, replica_id: str) -> None:
        await self.runners.pop(replica_id).cleanup()
        self.exits[replica_id] = 137

    async def inspect(self, refs: Sequence[ReplicaRef]) -> dict[str, Liveness]:
        return {
            r.id: Liveness(True)
            if r.id in self.runners
            else Liveness(False, self.exits.get(r.id), "exited")
            for r in refs
        }

    async def stop(self, ref: ReplicaRef, timeout_s: float) -> None:
        runner = self.runners.pop(ref.id, None)
        if runner is not None:
            await runner.cleanup()

    async def adopt(self, refs: Sequence[ReplicaRef], controller_id: str) -> AdoptResult:
        return AdoptResult(alive={r.id for r in refs if r.id in self.runners})

    async def logs(self, ref: ReplicaRef, tail: int) -> list[str]:
        return [f"log of {ref.id}"]


@dataclass
class Rig:
    settings: Settings
    store: Store
    service: FunctionService
    reconciler: Reconciler
    gateway: Gateway
    platform: FakePlatform
    url: str
    code: bytes

    async def until(self, cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            await self.reconciler.tick()
            if cond():
                return
            await asyncio.sleep(0.05)
        raise AssertionError("condition not reached")

    def ready(self, name: str) -> list[str]:
        return [r.id for r in self.store.list_replicas(name) if r.state == "ready"]

    async def deploy(
        self, name: str, replicas: int, code: bytes | None = None, env: str = "a"
    ) -> None:
        spec = {
            "metadata": {"name": name},
            "spec": {"replicas": replicas, "env": [{"name": "E", "value": env}]},
        }
        await self.service.deploy(parse_spec(spec), code, None)
        await self.until(lambda: self.store.get_function(name).state in ("deploying", "ready"))


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    settings = Settings(
        state_dir=tmp_path / "state", cache_dir=tmp_path / "cache", port_range=(41000, 41999)
    )
    store = Store(settings.database_url)
    store.open()
    platform = FakePlatform()
    platforms: dict[str, Platform] = {"process": platform}
    service = FunctionService(settings, store, Builder(settings), platforms)
    reconciler = Reconciler(settings, store, service, platforms, "cid")
    gateway = Gateway(reconciler.endpoints, store)
    reconciler.port_gateway = PortGateway(reconciler.endpoints, "127.0.0.1")
    await reconciler.start()
    assert reconciler._task is not None
    reconciler._task.cancel()  # ticks are driven by the tests
    await gateway.start()
    app = web.Application()
    app.router.add_route("*", "/fn/{name}/{tail:.*}", gateway.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    src = tmp_path / "src"
    src.mkdir()
    (src / "main.py").write_text("def handler(c, e): return 1\n")
    rig = Rig(
        settings,
        store,
        service,
        reconciler,
        gateway,
        platform,
        f"http://127.0.0.1:{port}",
        pack_dir(src),
    )
    try:
        yield rig
    finally:
        await runner.cleanup()
        await gateway.stop()
        await reconciler.port_gateway.stop()
        await reconciler.stop()
        for rid in list(platform.runners):
            await platform.runners.pop(rid).cleanup()
        store.close()


async def _get(rig: Rig, path: str, **kw: object) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as s, s.get(rig.url + path, **kw) as resp:  # type: ignore[arg-type]
        return resp.status, await resp.json()


async def test_scale_balance_and_scale_down(rig: Rig) -> None:
    await rig.deploy("f", 1, rig.code)
    await rig.until(lambda: rig.store.get_function("f").state == "ready")
    first = rig.ready("f")
    await rig.deploy("f", 3)  # spec-only update
    await rig.until(lambda: len(rig.ready("f")) == 3)
    assert first[0] in rig.ready("f")  # scaling never restarts running replicas
    seen = {(await _get(rig, "/fn/f/x"))[1]["replica"] for _ in range(6)}
    assert seen == set(rig.ready("f"))
    await rig.deploy("f", 1)
    await rig.until(lambda: len(rig.store.list_replicas("f")) == 1)
    assert len(rig.platform.runners) == 1


async def test_gateway_passes_request_id_strips_token_and_streams_big_bodies(rig: Rig) -> None:
    await rig.deploy("f", 1, rig.code)
    await rig.until(lambda: bool(rig.ready("f")))
    status, body = await _get(
        rig,
        "/fn/f/a/b?q=1",
        headers={"X-Request-Id": "r-1", "Authorization": "Bearer controller-secret"},
    )
    assert status == 200 and body["path"] == "/a/b?q=1" and body["rid"] == "r-1"
    assert body["auth"] is None  # the controller's token never reaches the function
    _, minted = await _get(rig, "/fn/f/")
    assert minted["rid"]  # a request id is minted when the caller sent none
    big = b"x" * (3 << 20)
    async with aiohttp.ClientSession() as s, s.post(rig.url + "/fn/f/up", data=big) as resp:
        assert (await resp.json())["body_len"] == len(big)


async def test_least_in_flight_prefers_the_idle_replica(rig: Rig) -> None:
    await rig.deploy("f", 2, rig.code)
    await rig.until(lambda: len(rig.ready("f")) == 2)
    slow = asyncio.create_task(_get(rig, "/fn/f/slow"))
    await asyncio.sleep(0.1)
    busy = None
    published = rig.reconciler.endpoints.get("f")
    assert published is not None
    for e in published.endpoints:
        if e.in_flight:
            busy = e.replica_id
    assert busy is not None
    replies = [(await _get(rig, "/fn/f/quick"))[1]["replica"] for _ in range(3)]
    assert busy not in replies
    slow_replica = (await slow)[1]["replica"]
    assert slow_replica == busy


async def test_crashed_replica_is_restarted_with_backoff_and_recorded(rig: Rig) -> None:
    await rig.deploy("f", 1, rig.code)
    await rig.until(lambda: bool(rig.ready("f")))
    [rid] = rig.ready("f")
    await rig.platform.kill(rid)
    await rig.until(lambda: rig.store.list_replicas("f")[0].state == "failed")
    row = rig.store.list_replicas("f")[0]
    assert row.exit_code == 137 and row.restart_at > time.time()  # waits out the backoff
    status, body = await _get(rig, "/fn/f/")
    assert status == 503 and "no ready replica" in str(body["detail"])
    await rig.until(lambda: rig.ready("f") == [rid])
    assert rig.store.list_replicas("f")[0].restarts == 1
    kinds = [e.kind for e in rig.store.list_events("f")]
    assert kinds.count("replica_exited") == 1 and "replica_restarted" in kinds


async def test_new_revision_replaces_replicas_after_the_new_ones_are_ready(rig: Rig) -> None:
    await rig.deploy("f", 2, rig.code)
    await rig.until(lambda: len(rig.ready("f")) == 2)
    old_rev = rig.store.get_function("f").revision
    await rig.deploy("f", 2, env="b")  # env change → new revision
    new_rev = rig.store.get_function("f").revision
    assert new_rev != old_rev
    await rig.until(
        lambda: (
            {r.revision for r in rig.store.list_replicas("f")} == {new_rev}
            and len(rig.ready("f")) == 2
        )
    )
    _, body = await _get(rig, "/fn/f/")
    assert body["revision"] == new_rev


async def test_restart_adopts_live_replicas_and_replaces_lost_ones(rig: Rig) -> None:
    await rig.deploy("f", 2, rig.code)
    await rig.until(lambda: len(rig.ready("f")) == 2)
    keep, lost = rig.ready("f")
    await rig.platform.runners.pop(lost).cleanup()  # died while the controller was down
    fresh = Reconciler(rig.settings, rig.store, rig.service, {"process": rig.platform}, "cid")
    await fresh.adopt()
    kinds = {e.replica: e.kind for e in rig.store.list_events("f")[-2:]}
    assert kinds == {keep: "replica_adopted", lost: "replica_lost"}
    rig.reconciler = fresh
    fresh._session = aiohttp.ClientSession()
    try:
        await rig.until(lambda: len(rig.ready("f")) == 2)
    finally:
        await fresh._session.close()
    assert sorted(r.id for r in rig.store.list_replicas("f")) == sorted([keep, lost])


async def test_function_port_splices_to_ready_replicas_and_says_503_without(rig: Rig) -> None:
    await rig.deploy("f", 2, rig.code)
    await rig.until(lambda: len(rig.ready("f")) == 2)
    port = rig.store.get_function("f").gateway_port
    assert port is not None and rig.reconciler.port_gateway is not None
    assert rig.reconciler.port_gateway.port_of("f") == port
    seen = set()
    for _ in range(4):  # one connection each: balanced per connection
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"http://127.0.0.1:{port}/p?x=1", headers={"X-Request-Id": "q"}) as resp,
        ):
            body = await resp.json()
            assert body["path"] == "/p?x=1" and body["rid"] == "q"
            seen.add(body["replica"])
    assert seen == set(rig.ready("f"))
    big = b"y" * (2 << 20)
    async with aiohttp.ClientSession() as s, s.post(f"http://127.0.0.1:{port}/", data=big) as r:
        assert (await r.json())["body_len"] == len(big)
    for rid in rig.ready("f"):
        await rig.platform.kill(rid)
    await rig.until(lambda: not rig.ready("f"))
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/") as resp:
        assert resp.status in (502, 503)
        assert (await resp.json())["error"] in ("NoReadyReplica", "BadGateway")
    await rig.service.delete("f")
    await rig.until(lambda: rig.reconciler.port_gateway.port_of("f") is None)  # type: ignore[union-attr]


async def test_function_ports_stay_on_loopback_unless_the_gateway_is_public(rig: Rig) -> None:
    # No token on a function port: on a non-loopback controller it must not become a way
    # around the token that /fn/ asks for.
    assert listen_host("0.0.0.0", public=False) == "127.0.0.1"
    assert listen_host("::", public=False) == "::1"
    assert listen_host("10.1.2.3", public=False) == "127.0.0.1"
    assert listen_host("127.0.0.1", public=False) == "127.0.0.1"
    assert listen_host("localhost", public=False) == "localhost"
    assert listen_host("0.0.0.0", public=True) == "0.0.0.0"
    for public, expected in ((False, {"127.0.0.1"}), (True, {"0.0.0.0"})):
        gateway = PortGateway(rig.reconciler.endpoints, "0.0.0.0", public=public)
        try:
            port = await gateway.ensure("f", rig.reconciler.ports.allocate(), on_fail=lambda: 0)
            server = gateway._servers["f"][1]
            assert {sock.getsockname()[0] for sock in server.sockets} == expected
            assert port == gateway.port_of("f")
        finally:
            await gateway.stop()


async def test_scaled_to_zero_function_holds_the_request_and_comes_back(rig: Rig) -> None:
    spec = {
        "metadata": {"name": "z"},
        "spec": {"minReplicas": 0, "maxReplicas": 2, "scaleToZeroIdleTime": "1s"},
    }
    await rig.service.deploy(parse_spec(spec), rig.code, None)
    await rig.until(lambda: rig.store.get_function("z").state == "ready")
    assert len(rig.ready("z")) == 1  # starts with one replica
    await rig.until(lambda: not rig.store.list_replicas("z"), timeout_s=10)  # idle → zero
    assert rig.reconciler.should_hold("z")

    async def drive() -> None:  # the reconciler loop, as the controller runs it
        while True:
            await rig.reconciler.tick()
            await asyncio.sleep(0.05)

    loop_task = asyncio.create_task(drive())
    try:
        status, body = await _get(rig, "/fn/z/held")
    finally:
        loop_task.cancel()
    assert status == 200 and body["path"] == "/held"
    kinds = [e.kind for e in rig.store.list_events("z")]
    assert kinds.count("replica_started") == 2  # the second one woke up for the request
