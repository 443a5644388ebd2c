"""tickrun.hub: versioned ``hub://`` functions — trainers, market features, backtests, servers.

``tickrun.import_function("hub://auto_trainer:1")`` resolves the newest 1.y.z against private
hub folders (``$TICKRUN_HUB_PATH``), the bundled catalogue and a remote hub
(``$TICKRUN_HUB_URL``, https; pinned with ``$TICKRUN_HUB_PINS``), and returns a
:class:`HubFunction` to ``.run()`` or ``.deploy()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tickrun.functions.lazy import lazy_exports

if TYPE_CHECKING:
    from .deployments import ControllerDeployment, LocalDeployment
    from .function import HubFunction
    from .resolved import ResolvedItem
    from .resolver import Hub, ItemRef, import_function, parse_uri
    from .spec import ItemSpec, load_item
    from .versions import Version, VersionPin

__all__ = [
    "ControllerDeployment",
    "Hub",
    "HubFunction",
    "ItemRef",
    "ItemSpec",
    "LocalDeployment",
    "ResolvedItem",
    "Version",
    "VersionPin",
    "import_function",
    "load_item",
    "parse_uri",
]

# Imported on first use: every `tickrun` command imports tickrun.hub.cli (and so this package)
# to build its parser, and the resolver, the item spec (pydantic) and the deployments are for
# the command that resolves an item.
_EXPORTS = {
    "ControllerDeployment": ".deployments",
    "LocalDeployment": ".deployments",
    "HubFunction": ".function",
    "ResolvedItem": ".resolved",
    "Hub": ".resolver",
    "ItemRef": ".resolver",
    "import_function": ".resolver",
    "parse_uri": ".resolver",
    "ItemSpec": ".spec",
    "load_item": ".spec",
    "Version": ".versions",
    "VersionPin": ".versions",
}


__getattr__ = lazy_exports(__name__, _EXPORTS, globals())
