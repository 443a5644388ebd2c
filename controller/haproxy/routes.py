"""Mirrors the endpoint table into HAProxy: each function with ready replicas gets a slot backend
and its replicas as dynamic servers; a replica leaving is drained (no new requests, those on it
finish) and then deleted. The table tells this class what changed (sync, no I/O); one task
applies it through the runtime API and reads HAProxy's per-backend load back for the autoscaler.

Order matters for zero failed requests: a function's map entry (what sends requests straight to
its backend) is added only after a server is up, and removed before its last server drains, so
HAProxy never picks a backend without a usable server: such requests go to the controller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass

from .config import CONTROLLER_BACKEND, slot_backend
from .runtime import RuntimeApi, RuntimeApiError, StatRow

logger = logging.getLogger(__name__)

# Names that are safe in a runtime API command line and as a map key; others stay on Python.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
POLL_S = 0.25  # load for the autoscaler, drains finishing
DRAIN_POLL_S = 0.05
# HAProxy 2.6 gives a dynamic server no idle pool (purge delay 0): every request opened a new
# connection to the replica (measured: twice the replica's CPU a request). These are the
# static servers' defaults; a reused connection the replica closed meanwhile is retried.
SERVER_OPTIONS = "pool-max-conn -1 pool-purge-delay 5s"


@dataclass
class _Server:
    function: str
    replica_id: str
    addr: str  # host:port
    slot: int
    draining: bool = False

    @property
    def name(self) -> str:
        return f"{self.replica_id}-{self.addr.rpartition(':')[2]}"

    @property
    def path(self) -> str:
        return f"{slot_backend(self.slot)}/{self.name}"


def _addr(url: str) -> str | None:
    addr = url.removeprefix("http://")
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit() or not SAFE_NAME.match(host.strip("[]")):
        return None
    return addr


class Routes:
    """The endpoint table's :class:`~controller.endpoints.Mirror` for HAProxy."""

    def __init__(self, api: RuntimeApi, functions_map: str, slots: int) -> None:
        self.api = api
        self.functions_map = functions_map
        self.slots = slots
        self._want: dict[str, dict[str, str]] = {}  # function → replica id → host:port
        self._servers: dict[str, _Server] = {}  # "slot/server" → server, as HAProxy has them
        self._slot_of: dict[str, int] = {}
        self._mapped: set[str] = set()
        self._served: dict[str, int] = {}
        self._in_flight: dict[str, int] = {}
        self._last_total: dict[int, int] = {}  # slot → its backend's stot at the last poll
        self._no_slot_logged: set[str] = set()
        self._wake = asyncio.Event()
        self.online = False  # HAProxy answers and has been told the current state

    # --- the endpoint table's side (no I/O) -----------------------------------------------------

    def published(self, name: str, ready: Mapping[str, str]) -> None:
        if not SAFE_NAME.match(name):
            return
        want = {}
        for rid, url in ready.items():
            addr = _addr(url)
            if addr is not None and SAFE_NAME.match(rid):
                want[rid] = addr
        self._want[name] = want
        self._wake.set()

    def dropped(self, name: str) -> None:
        self._want.pop(name, None)
        self._wake.set()

    def load(self, name: str) -> tuple[int, int]:
        return self._in_flight.get(name, 0), self._served.get(name, 0)

    def busy(self, name: str, replica_ids: set[str]) -> bool:
        return any(
            s.function == name and s.replica_id in replica_ids for s in self._servers.values()
        )

    # --- the supervisor's side ------------------------------------------------------------------

    def reset(self) -> None:
        """HAProxy (re)started from its config: no servers, an empty map. What is wanted stays."""
        self._servers.clear()
        self._slot_of.clear()
        self._mapped.clear()
        self._last_total.clear()
        self._in_flight.clear()
        self.online = False
        self._wake.set()

    async def run(self) -> None:
        """Apply changes and poll the load until cancelled; errors wait for the next round."""
        while True:
            self._wake.clear()
            try:
                await self.sync()
                await self.poll()
                self.online = True
            except RuntimeApiError as exc:
                self.online = False
                logger.debug("HAProxy runtime API unavailable", extra={"error": exc.message})
            draining = any(s.draining for s in self._servers.values())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), DRAIN_POLL_S if draining else POLL_S)

    async def sync(self) -> None:
        """Make HAProxy's servers and map what the table published."""
        for name in sorted(set(self._want) | {s.function for s in self._servers.values()}):
            await self._sync_function(name)

    async def _sync_function(self, name: str) -> None:
        want = self._want.get(name, {})
        mine = {k: s for k, s in self._servers.items() if s.function == name}
        wanted_keys = set()
        slot = self._slot_of.get(name)
        if want and slot is None:
            slot = self._free_slot(name)
        if slot is not None:
            for rid, addr in want.items():
                server = _Server(name, rid, addr, slot)
                key = server.path
                wanted_keys.add(key)
                have = mine.get(key)
                if have is None:
                    await self._add(server)
                elif have.draining:
                    await self._command(f"set server {key} state ready")
                    have.draining = False
        up = [k for k in wanted_keys if k in self._servers]
        if up and name not in self._mapped and slot is not None:
            await self._map(name, slot)
        if not up and name in self._mapped:
            # First: no new requests pick the backend; they go to the controller (hold, 503).
            await self._command(f"del map {self.functions_map} {name}")
            self._mapped.discard(name)
        for key, server in mine.items():
            if key not in wanted_keys and not server.draining:
                await self._command(f"set server {key} state drain")
                server.draining = True

    def _free_slot(self, name: str) -> int | None:
        used = set(self._slot_of.values())
        for slot in range(self.slots):
            if slot not in used:
                self._slot_of[name] = slot
                self._served.setdefault(name, 0)
                return slot
        if name not in self._no_slot_logged:
            self._no_slot_logged.add(name)
            logger.warning(
                "no HAProxy backend left for a function: it is served by the Python gateway",
                extra={"function": name, "slots": self.slots},
            )
        return None

    async def _add(self, server: _Server) -> None:
        out = await self.api.run(
            f"add server {server.path} {server.addr} {SERVER_OPTIONS}",
            f"enable server {server.path}",
        )
        if "New server registered" not in out:
            logger.warning(
                "HAProxy refused a server",
                extra={"function": server.function, "server": server.path, "answer": out[:200]},
            )
            return
        self._servers[server.path] = server

    async def _map(self, name: str, slot: int) -> None:
        backend = slot_backend(slot)
        await self._command(f"del map {self.functions_map} {name}")  # none, or a stale one
        await self._command(f"add map {self.functions_map} {name} {backend}")
        self._mapped.add(name)

    async def _command(self, line: str) -> str:
        out = await self.api.run(line)
        if out.strip() and any(w in out for w in ("No such", "Unknown", "not", "error")):
            logger.debug("HAProxy answered", extra={"command": line, "answer": out[:200]})
        return out

    async def poll(self) -> None:
        """Read the load back; delete drained servers; free slots nobody uses any more."""
        # The slots in use (a function keeps its slot until its last server, drained, is gone);
        # with none, the controller's backend: HAProxy still has to answer to be online.
        slots = sorted(self._slot_of.values())
        rows = await self.api.stats([slot_backend(s) for s in slots] or [CONTROLLER_BACKEND])
        by_backend: dict[str, StatRow] = {}
        by_server: dict[str, StatRow] = {}
        for row in rows:
            if row.server == "BACKEND":
                by_backend[row.backend] = row
            else:
                by_server[f"{row.backend}/{row.server}"] = row
        for name, slot in list(self._slot_of.items()):
            backend = by_backend.get(slot_backend(slot))
            if backend is None:
                continue
            last = self._last_total.get(slot, backend.total)
            self._served[name] = self._served.get(name, 0) + max(backend.total - last, 0)
            self._last_total[slot] = backend.total
            self._in_flight[name] = backend.current
        for key, server in list(self._servers.items()):
            stat = by_server.get(key)
            if server.draining and (stat is None or stat.current == 0):
                await self._delete(key)
        for name, slot in list(self._slot_of.items()):
            if name not in self._want and not any(
                s.function == name for s in self._servers.values()
            ):
                del self._slot_of[name]
                self._in_flight.pop(name, None)
                self._served.pop(name, None)
                self._last_total.pop(slot, None)

    async def _delete(self, key: str) -> None:
        out = await self.api.run(f"set server {key} state maint", f"del server {key}")
        if "Server deleted" in out:
            del self._servers[key]
        # else: connections still attached (idle ones close soon): tried again next poll
