"""Port allocation for replicas: a configured range, minus ports in use or recorded."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable

from tickrun.functions.errors import PlatformError
from tickrun.functions.settings import PORT_RANGE


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class PortAllocator:
    """Hands out ports round-robin over ``[lo, hi]`` so a just-freed port is not reused at once
    (a dying replica may still hold it). Constructor does no I/O."""

    def __init__(
        self,
        lo: int,
        hi: int,
        *,
        in_use: Callable[[], Iterable[int]],
        probe: Callable[[int], bool] = port_free,
    ) -> None:
        if lo > hi:
            raise PlatformError(f"empty port range {lo}-{hi}")
        self.lo, self.hi = lo, hi
        self._in_use = in_use
        self._probe = probe
        self._next = lo

    def allocate(self) -> int:
        taken = set(self._in_use())
        size = self.hi - self.lo + 1
        for i in range(size):
            port = self.lo + (self._next - self.lo + i) % size
            if port in taken or not self._probe(port):
                continue
            self._next = port + 1 if port < self.hi else self.lo
            return port
        raise PlatformError(
            f"no free port in {self.lo}-{self.hi} for a new replica; widen {PORT_RANGE.name}"
        )
