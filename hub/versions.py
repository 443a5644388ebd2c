"""Item versions (``MAJOR.MINOR.PATCH``) and the partial pins ``hub://`` accepts.

``hub://x:1`` means "the newest 1.y.z", ``hub://x:1.2`` "the newest 1.2.z", ``hub://x:1.2.0``
exactly that, and no version (or ``latest``) the newest of all — so a user can pin as tightly as
they need and an item's author can publish 1.3.0 without breaking someone pinned to ``1.2``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_VERSION = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
_PIN = re.compile(r"^(0|[1-9]\d*)(?:\.(0|[1-9]\d*)(?:\.(0|[1-9]\d*))?)?$")


@dataclass(frozen=True, order=True, slots=True)
class Version:
    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> Version:
        match = _VERSION.match(text.strip())
        if match is None:
            raise ValueError(f"{text!r} is not a version such as 1.2.0")
        return cls(int(match[1]), int(match[2]), int(match[3]))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


@dataclass(frozen=True, slots=True)
class VersionPin:
    """A (possibly partial) version constraint; ``parts`` empty means latest."""

    parts: tuple[int, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> VersionPin:
        if text is None or text.strip() in ("", "latest"):
            return cls(())
        match = _PIN.match(text.strip())
        if match is None:
            raise ValueError(f"{text!r} is not a version pin such as 1, 1.2 or 1.2.0")
        return cls(tuple(int(g) for g in match.groups() if g is not None))

    def matches(self, version: Version) -> bool:
        full = (version.major, version.minor, version.patch)
        return full[: len(self.parts)] == self.parts

    def best(self, versions: Iterable[Version]) -> Version | None:
        candidates = [v for v in versions if self.matches(v)]
        return max(candidates) if candidates else None

    @property
    def exact(self) -> bool:
        return len(self.parts) == 3

    def __str__(self) -> str:
        return ".".join(str(p) for p in self.parts) or "latest"
