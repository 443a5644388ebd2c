"""``load_model(uri)``: a logged model back as an object, with its metadata."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from ..artifacts import ArtifactRoots, S3Settings
from ..errors import BadRequestError
from .dataitem import DataItem
from .records import STORE_SCHEME, ArtifactKind
from .registry_records import MODEL_SCHEME
from .serialize import load_model_file

if TYPE_CHECKING:
    from .db.base import RunDB


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    uri: str
    framework: str
    framework_version: str | None = None
    model_class: str | None = None
    feature_names: list[str] | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    parameters: dict[str, Any] = Field(default_factory=dict)
    extra_data: dict[str, str] = Field(default_factory=dict)
    sha256: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    registry_uri: str | None = Field(
        default=None, description="models:/<name>/<version> when loaded through the registry"
    )


def load_model(
    uri: str,
    *,
    db: RunDB | None = None,
    s3: S3Settings | None = None,
    roots: ArtifactRoots | None = None,
) -> tuple[Any, ModelInfo]:
    """(model, info) for ``store://project/uid[/iteration]/key``, a registered version
    (``models:/name/3``, ``models:/name@champion``, ``models:/name/latest``), an ``s3://`` or
    local file.

    scikit-learn models are joblib pickles: load only models from a store you trust. A
    ``store://`` model must lie in ``roots`` (default: the configured artifact stores, or the
    running run's; ``RunObject.roots`` for a run's own).
    """
    item = DataItem(uri, db=db, s3=s3, roots=roots)
    meta: dict[str, Any] = {}
    sha, labels = "", {}
    if uri.startswith((STORE_SCHEME, MODEL_SCHEME)):
        rec = item.meta
        if rec is None or rec.kind is not ArtifactKind.MODEL:
            raise BadRequestError(f"{uri} is a {rec.kind.value if rec else '?'}, not a model")
        meta, sha, labels = dict(rec.meta), rec.sha256, rec.labels
    tmp = Path(tempfile.mkdtemp(prefix="tickrun-model-"))
    try:
        name = Path(item.target).name
        path = item.download(tmp / name)
        model = load_model_file(path, meta)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    framework = meta.get("framework") or (
        "xgboost" if path.suffix in (".json", ".ubj") else "sklearn"
    )
    info = ModelInfo(
        uri=uri,
        framework=framework,
        framework_version=meta.get("framework_version"),
        model_class=meta.get("model_class")
        or f"{type(model).__module__}.{type(model).__qualname__}",
        feature_names=meta.get("feature_names"),
        metrics=meta.get("metrics") or {},
        parameters=meta.get("parameters") or {},
        extra_data=meta.get("extra_data") or {},
        sha256=sha,
        labels=labels,
        registry_uri=item.model_version.uri if item.model_version else None,
    )
    return model, info
