"""Tracked runs: a handler run as a job, its results and artifacts kept and comparable.

::

    from tickrun.functions.runs import run_function, DataItem

    def train(context, lr=0.1, data: DataItem = None):
        df = data.as_df()
        ...
        context.log_result("accuracy", acc)
        context.log_model("model", clf, metrics={"accuracy": acc})

    run = run_function(train, params={"lr": 0.05}, inputs={"data": "s3://bucket/btc.csv.gz"},
                       hyperparams={"max_depth": [2, 4, 6]}, selector="max.accuracy")
    model, info = load_model(run.outputs["model"])

Runs live in a SQLite file (``$TICKRUN_HOME/runs.db``) unless ``TICKRUN_CONTROLLER_URL`` points
at a controller; artifacts under ``$TICKRUN_ARTIFACT_PATH`` (a folder or ``s3://bucket/prefix``),
laid out as ``<artifact_path>/<project>/<run uid>/<iteration>/<key>.<ext>`` and addressed as
``store://<project>/<run uid>[/<iteration>]/<key>``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

if TYPE_CHECKING:
    from .context import RunContext
    from .dataitem import DataItem
    from .db import HttpRunDB, RunDB, SqlRunDB, open_db
    from .models import ModelInfo, load_model
    from .records import (
        ArtifactKind,
        ArtifactRecord,
        RunBatch,
        RunRecord,
        RunState,
        parse_store_uri,
        store_uri,
    )
    from .registry import (
        delete_alias,
        delete_model_version,
        get_model_version,
        get_registered_model,
        list_model_versions,
        list_models,
        register_model,
        resolve_model_uri,
        search_model_versions,
        set_alias,
    )
    from .registry_records import ModelVersion, RegisteredModel
    from .runner import run_function
    from .runobject import RunObject
    from .settings import TrackingSettings

__all__ = [
    "ArtifactKind",
    "ArtifactRecord",
    "DataItem",
    "HttpRunDB",
    "ModelInfo",
    "ModelVersion",
    "RegisteredModel",
    "RunBatch",
    "RunContext",
    "RunDB",
    "RunObject",
    "RunRecord",
    "RunState",
    "SqlRunDB",
    "TrackingSettings",
    "delete_alias",
    "delete_model_version",
    "get_model_version",
    "get_registered_model",
    "list_model_versions",
    "list_models",
    "load_model",
    "open_db",
    "parse_store_uri",
    "register_model",
    "resolve_model_uri",
    "run_function",
    "search_model_versions",
    "set_alias",
    "store_uri",
]

REGISTRY_NAMES = (
    "delete_alias",
    "delete_model_version",
    "get_model_version",
    "get_registered_model",
    "list_model_versions",
    "list_models",
    "register_model",
    "resolve_model_uri",
    "search_model_versions",
    "set_alias",
)

# Lazy exports: `tickrun --help` and the CLI's argument parsing must not pay for SQLAlchemy,
# pandas or the minio client; the first use of a name imports its module.
_EXPORTS = {
    "RunContext": ".context",
    "DataItem": ".dataitem",
    "HttpRunDB": ".db",
    "RunDB": ".db",
    "SqlRunDB": ".db",
    "open_db": ".db",
    "ArtifactKind": ".records",
    "ArtifactRecord": ".records",
    "RunBatch": ".records",
    "RunRecord": ".records",
    "RunState": ".records",
    "parse_store_uri": ".records",
    "store_uri": ".records",
    "ModelInfo": ".models",
    "load_model": ".models",
    "run_function": ".runner",
    "ModelVersion": ".registry_records",
    "RegisteredModel": ".registry_records",
    **dict.fromkeys(REGISTRY_NAMES, ".registry"),
    "RunObject": ".runobject",
    "TrackingSettings": ".settings",
}


__getattr__ = lazy_exports(__name__, _EXPORTS, globals())


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
