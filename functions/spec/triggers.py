"""Trigger specs: the fields every kind shares, and the registry of kinds.

Each trigger kind is one package under ``tickrun.triggers`` (its spec model, runtime config,
event mapping and trigger) that registers itself with a :class:`TriggerKind`.
The function spec's ``triggers`` map is a discriminated union over the registered kinds' models,
chosen by ``kind`` and assembled when the first spec is validated (not at import: a kind's spec
module imports this one, so building the union here at import time would be circular).

Kinds are found through the ``tickrun.triggers`` entry-point group, so another distribution can
add one; the built-in kinds are also listed below for a source tree copied without its
distribution metadata (a replica image copies the folders). This module is the one place that
names a trigger package as a string: ``functions`` must not import ``triggers``.

Field names on the YAML side are Nuclio's (``maxWorkers``, ``attributes.consumerGroup``, …);
on the Python side they are snake_case with units in the name.
"""

from __future__ import annotations

import functools
import logging
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Annotated, Any, Union, get_args

from pydantic import BaseModel, ConfigDict, Discriminator, Field, GetCoreSchemaHandler
from pydantic_core import CoreSchema

from ..errors import TriggerConfigError
from .durations import DurationS

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "tickrun.triggers"

BUILTIN_KINDS: dict[str, str] = {
    "http": "tickrun.triggers.http:KIND",
    "kafka-cluster": "tickrun.triggers.kafka:KIND",
    "cron": "tickrun.triggers.cron:KIND",
}
"""Kind → ``module:attribute`` of its :class:`TriggerKind`; entry points of the same name win."""


class SpecModel(BaseModel):
    """Base for every spec model: unknown keys are refused; YAML names are Nuclio's aliases."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=False)


class TriggerSpecBase(SpecModel):
    """What every trigger kind's spec has; a kind adds ``kind: Literal[...]`` and ``attributes``."""

    kind: str
    name: str = ""
    class_: str | None = Field(default=None, alias="class")
    description: str | None = None
    disabled: bool = False
    max_workers: int | None = Field(default=None, alias="maxWorkers", ge=1, le=10_000)
    num_workers: int | None = Field(default=None, alias="numWorkers", ge=1, le=10_000)
    worker_availability_timeout_ms: int = Field(
        default=10_000, alias="workerAvailabilityTimeoutMilliseconds", ge=0
    )
    worker_termination_timeout_s: DurationS | None = Field(
        default=None, alias="workerTerminationTimeout"
    )
    worker_allocator_name: str | None = Field(default=None, alias="workerAllocatorName")
    explicit_ack_mode: str | None = Field(default=None, alias="explicitAckMode")
    url: str | None = None
    annotations: dict[str, str] = Field(default_factory=dict)

    @property
    def slots(self) -> int:
        """Events this trigger handles at once in each worker process. Nuclio calls these
        ``maxWorkers`` / ``numWorkers``; here a worker is an OS process (``spec.workers``)."""
        return self.max_workers or self.num_workers or 1


# --- the registry ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TriggerKind:
    """One trigger kind, as its package registers it (``KIND = TriggerKind(...)``).

    ``spec`` is imported with the registration, so it must stay light (pydantic only): every
    spec parse needs it. ``load_trigger`` imports the implementation, and with it the kind's
    client library, only when a function actually runs a trigger of this kind; it returns a
    :data:`~tickrun.functions.interfaces.TriggerFactory` (typed loosely here: the interfaces
    refer to this module, not the other way round).
    """

    name: str
    """The ``kind:`` value in ``function.yaml``; ``spec.kind`` is ``Literal[name]``."""
    spec: type[TriggerSpecBase]
    load_trigger: Callable[[], Callable[..., Any]]
    extra: str | None = None
    """The ``tickrun[...]`` extra that installs the client library, for error messages."""


def _load_kind(name: str, target: str) -> TriggerKind | None:
    try:
        kind = pkgutil.resolve_name(target)
    except (ImportError, AttributeError, ValueError) as exc:
        logger.warning("trigger kind %r (%s) cannot be loaded: %s", name, target, exc)
        return None
    if not isinstance(kind, TriggerKind) or kind.name != name:
        logger.warning("trigger kind %r: %s is not TriggerKind(name=%r, ...)", name, target, name)
        return None
    declared = get_args(kind.spec.model_fields["kind"].annotation)
    if declared != (name,):
        logger.warning("trigger kind %r: %s.kind is not Literal[%r]", name, kind.spec, name)
        return None
    return kind


def discover_trigger_kinds() -> dict[str, TriggerKind]:
    """Every kind the built-in table and the installed distributions' entry points name.

    A kind that fails to load is logged and left out, so one broken plugin does not stop every
    function spec from parsing; the built-in kinds import nothing beyond pydantic here.
    """
    targets = dict(BUILTIN_KINDS)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        targets[entry.name] = entry.value
    kinds = {}
    for name, target in targets.items():
        kind = _load_kind(name, target)
        if kind is not None:
            kinds[name] = kind
    return kinds


@functools.cache
def trigger_kinds() -> dict[str, TriggerKind]:
    """The registered kinds by name (discovered once per process)."""
    return discover_trigger_kinds()


def trigger_kind(name: str) -> TriggerKind:
    kind = trigger_kinds().get(name)
    if kind is None:
        known = ", ".join(sorted(trigger_kinds()))
        raise TriggerConfigError(f"unknown trigger kind {name!r} (known: {known})")
    return kind


class _RegisteredKinds:
    """Pydantic metadata: validate as the discriminated union of the registered kinds' models."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        models = tuple(kind.spec for kind in trigger_kinds().values())
        # A union of classes known only now: mypy sees a variable where it wants a type.
        union = Annotated[Union[models], Discriminator("kind")]  # type: ignore[valid-type]  # noqa: UP007
        return handler.generate_schema(union)


TriggerSpec = Annotated[TriggerSpecBase, _RegisteredKinds()]
"""Any trigger kind; ``kind`` selects the registered model. Models holding it set
``defer_build`` so the union is assembled on first use, after every kind package is importable."""

__all__ = [
    "BUILTIN_KINDS",
    "ENTRY_POINT_GROUP",
    "SpecModel",
    "TriggerKind",
    "TriggerSpec",
    "TriggerSpecBase",
    "discover_trigger_kinds",
    "trigger_kind",
    "trigger_kinds",
]
