"""What every trigger kind shares."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

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


def lazy_exports(package: str, modules: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for a kind package: ``name`` from its submodule, on first use.

    A kind's package is imported to register the kind, on every spec parse; its trigger and its
    client library (kafka-python, croniter) must load only when a function runs one.
    """

    def __getattr__(name: str) -> Any:
        module = modules.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module, package), name)

    return __getattr__
