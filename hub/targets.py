"""``hub://`` as a run target: what ``run_function("hub://auto_trainer:1#train")`` calls.

Registered as the ``hub`` plugin of ``tickrun.run_targets`` (pyproject.toml), so tracked runs
resolve hub items without importing the hub: the CLI's ``tickrun run hub://…`` and a job process
running a hub item both arrive here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tickrun.functions.runs.plugins import ResolvedTarget

from .function import check_arguments
from .resolver import import_function


def resolve_target(target: str) -> ResolvedTarget:
    """The item's handler, labelled with the item and the version that was resolved."""
    item = import_function(target)
    chosen, spec = item.spec.handler_spec(item.resolved.handler)

    def check(params: Mapping[str, Any], inputs: Mapping[str, Any]) -> None:
        check_arguments(item.spec, chosen, spec, dict(params), dict(inputs))

    return ResolvedTarget(
        fn=item.handler(chosen),
        ref=target,
        labels=item.run_labels(chosen),
        name=item.run_name(chosen),
        check=check,
    )
