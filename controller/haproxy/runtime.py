"""HAProxy's runtime API (the admin stats socket, 0600 in the controller's private state dir):
one connection a batch of commands, as HAProxy's non-interactive mode expects."""

from __future__ import annotations

import asyncio
import csv
from collections.abc import Sequence
from dataclasses import dataclass

from tickrun.functions.errors import TickrunError


class RuntimeApiError(TickrunError):
    """HAProxy's runtime API did not answer (it is down or restarting)."""

    status = 503


@dataclass(frozen=True)
class StatRow:
    backend: str
    server: str  # "BACKEND" for the backend's own row
    current: int  # requests in flight (scur)
    total: int  # requests so far (stot)


class RuntimeApi:
    def __init__(self, path: str, timeout_s: float = 2.0) -> None:
        self.path = path
        self.timeout_s = timeout_s

    async def run(self, *commands: str) -> str:
        """Send ``commands`` (one line, ``;``-separated) and return HAProxy's whole answer."""
        line = "; ".join(commands)
        if "\n" in line:
            raise ValueError("a runtime API command is one line")
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(self.path), self.timeout_s
            )
        except (OSError, TimeoutError) as exc:
            raise RuntimeApiError(f"HAProxy's runtime API is unreachable ({exc!r})") from exc
        try:
            writer.write(line.encode() + b"\n")
            await writer.drain()
            data = await asyncio.wait_for(reader.read(), self.timeout_s)
        except (OSError, TimeoutError) as exc:
            raise RuntimeApiError(f"HAProxy's runtime API broke off ({exc!r})") from exc
        finally:
            writer.close()
        return data.decode("utf-8", "replace")

    async def stats(self, backends: Sequence[str]) -> list[StatRow]:
        """The current and total requests of ``backends`` and their servers (``show stat``,
        types 2 and 4), in one batch. Only those: the controller polls four times a second,
        and every slot's rows (a few hundred of ~100 fields each) cost HAProxy and the
        controller CPU the functions' requests need on a small machine."""
        return parse_stats(await self.run(*(f"show stat {b} 6 -1" for b in backends)))


def parse_stats(text: str) -> list[StatRow]:
    """The rows of ``show stat`` answers: a batch answers one CSV a command (each with its
    ``# pxname,…`` header) and an error line for a command that failed."""
    lines = text.splitlines()
    header = next((line[2:] for line in lines if line.startswith("# pxname,")), None)
    if header is None:
        return []
    data = (line for line in lines if line and not line.startswith("#"))
    rows: list[StatRow] = []
    for rec in csv.DictReader(data, fieldnames=header.split(",")):
        server, scur, stot = rec.get("svname"), rec.get("scur"), rec.get("stot")
        if server is None or scur is None or stot is None:
            continue  # an error message (no commas), not a row
        try:
            rows.append(StatRow(rec["pxname"], server, int(scur or 0), int(stot or 0)))
        except ValueError:
            continue
    return rows
