"""An item version found in one of the hub's sources: what resolution hands to the item handle."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .spec import ItemSpec


@dataclass(frozen=True, slots=True)
class ResolvedItem:
    spec: ItemSpec
    folder: Path
    source: str
    uri: str
    handler: str | None = None
    deprecated: str | None = None  # why, when the catalogue marks this version deprecated

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def version(self) -> str:
        return self.spec.version
