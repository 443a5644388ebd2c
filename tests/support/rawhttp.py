"""Reading HTTP/1.1 responses off a raw socket exactly as the wire framed them.

For tests that must see what a server really sent (repeated headers, framing, keep-alive
reuse), which a client library would normalise or hide.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

CRLF = b"\r\n"
MAX_BODY = 1 << 20  # bodies are kept up to this size (the rest is read and dropped)


@dataclass(frozen=True, slots=True)
class RawResponse:
    status: int
    headers: list[tuple[str, str]]  # as sent: order, case and repeats kept
    body: bytes

    def values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


async def read_response(reader: asyncio.StreamReader, *, head: bool = False) -> RawResponse:
    """One response as the wire framed it (after any 1xx), trusting its own framing headers."""
    while True:
        block = await reader.readuntil(b"\r\n\r\n")
        status_line, _, rest = block.partition(CRLF)
        status = int(status_line.split(b" ", 2)[1])
        headers: list[tuple[str, str]] = []
        for line in rest.split(CRLF):
            name, sep, value = line.partition(b":")
            if sep:
                headers.append((name.decode("latin-1"), value.strip().decode("latin-1")))
        if not 100 <= status < 200:
            break  # a 1xx (100 Continue) is followed by the final answer
    framing = {k.lower(): v for k, v in headers}
    if head or status in (204, 304):
        return RawResponse(status, headers, b"")
    if "chunked" in framing.get("transfer-encoding", "").lower():
        body = bytearray()
        while size := int((await reader.readuntil(CRLF)).split(b";")[0], 16):
            body += (await reader.readexactly(size + 2))[:-2]
            del body[MAX_BODY:]
        await reader.readuntil(CRLF)
        return RawResponse(status, headers, bytes(body))
    if "content-length" in framing:
        length = int(framing["content-length"])
        return RawResponse(status, headers, await reader.readexactly(min(length, MAX_BODY)))
    return RawResponse(status, headers, await reader.read(MAX_BODY))


async def closed_by_server(reader: asyncio.StreamReader, within_s: float) -> bool:
    """True when the server closes (or resets) the connection within ``within_s``."""
    try:
        return await asyncio.wait_for(reader.read(1024), within_s) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
