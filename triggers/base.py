"""What every trigger kind shares."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Generic, TypeVar

if TYPE_CHECKING:
    from tickrun.functions.interfaces import TriggerHost
    from tickrun.functions.spec import FunctionSpec

SpecT = TypeVar("SpecT")


class BaseTrigger(Generic[SpecT]):
    """Holds the trigger's spec and the function's; subclasses implement start/stop."""

    kind: ClassVar[str] = ""

    def __init__(self, spec: SpecT, function: FunctionSpec) -> None:
        self.spec = spec
        self.function = function
        self.name: str = getattr(spec, "name", "") or self.kind

    async def start(self, host: TriggerHost) -> None:
        raise NotImplementedError

    async def stop(self, drain_timeout_s: float) -> None:
        raise NotImplementedError

    def ready(self) -> bool:
        return True
