"""HAProxy's runtime API (the admin stats socket, 0600 in the controller's private state dir):
one connection a batch of commands, as HAProxy's non-interactive mode expects."""

from __future__ import annotations

import asyncio
import csv
import io
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

    async def stats(self) -> list[StatRow]:
        """Backends' and servers' current and total requests (``show stat``, types 2 and 4)."""
        return parse_stats(await self.run("show stat -1 6 -1"))


def parse_stats(text: str) -> list[StatRow]:
    lines = text.lstrip("# ").splitlines()
    rows: list[StatRow] = []
    for rec in csv.DictReader(io.StringIO("\n".join(line for line in lines if line))):
        try:
            rows.append(
                StatRow(rec["pxname"], rec["svname"], int(rec["scur"] or 0), int(rec["stot"] or 0))
            )
        except (KeyError, ValueError):
            continue  # not a stats line (an error message instead)
    return rows
