"""A model version's lineage, read from the run DB when the version is registered."""

from __future__ import annotations

import logging

from ...errors import BadRequestError, NotFoundError, TickrunError
from ..records import STORE_SCHEME, ArtifactKind, ArtifactRecord, parse_store_uri
from ..registry_records import MODEL_SCHEME, DatasetLineage, Lineage
from .base import RunDB

logger = logging.getLogger(__name__)

# Labels a runner or a hub item may set on a run; see Lineage's docstring.
HUB_LABELS = {
    "hub_item": "hub.item",
    "hub_version": "hub.version",
    "hub_source": "hub.source",
    "hub_handler": "hub.handler",
}
CODE_HASH_LABELS = ("code.hash", "code_hash")
REQUIREMENTS_LOCK_LABELS = ("requirements.lock", "requirements_lock")


def model_artifact(runs: RunDB, model_uri: str) -> ArtifactRecord:
    """The model artifact record a ``store://`` URI names: 404 if unknown, 400 if not a model."""
    if not model_uri.startswith(STORE_SCHEME):
        raise BadRequestError(
            f"register a logged model by its store:// URI (or a models:/ URI), "
            f"got {model_uri[:100]!r}"
        )
    project, uid, iteration, key = parse_store_uri(model_uri)
    rec = runs.get_artifact(project, uid, iteration, key)
    if rec.kind is not ArtifactKind.MODEL:
        raise BadRequestError(f"{model_uri} is a {rec.kind.value}, not a model")
    return rec


def build_lineage(runs: RunDB, rec: ArtifactRecord) -> Lineage:
    """The lineage of the run that logged ``rec`` (iteration 0 of a sweep: the parent, whose
    inputs are the children's)."""
    try:
        run = runs.get_run(rec.uid, rec.iteration)
    except NotFoundError:
        raise NotFoundError(
            f"the run that logged {rec.uri} ({rec.uid}) is not in the run DB"
        ) from None
    labels = dict(run.labels)
    return Lineage(
        run_uid=run.uid,
        run_project=run.project,
        run_iteration=run.iteration,
        run_name=run.name,
        handler=run.handler,
        run_state=run.state.value,
        params=dict(run.params),
        datasets=[_dataset(runs, name, uri) for name, uri in sorted(run.inputs.items())],
        code_hash=_first(labels, CODE_HASH_LABELS),
        requirements_lock=_first(labels, REQUIREMENTS_LOCK_LABELS),
        labels=labels,
        hub_item=labels.get(HUB_LABELS["hub_item"]),
        hub_version=labels.get(HUB_LABELS["hub_version"]),
        hub_source=labels.get(HUB_LABELS["hub_source"]),
        hub_handler=labels.get(HUB_LABELS["hub_handler"]),
    )


def _dataset(runs: RunDB, name: str, uri: str) -> DatasetLineage:
    if not uri.startswith((STORE_SCHEME, MODEL_SCHEME)):
        return DatasetLineage(name=name, uri=uri)
    try:
        # A models:/ input is pinned by what its alias or number names now (and its sha256).
        store = runs.registry().resolve_uri(uri) if uri.startswith(MODEL_SCHEME) else uri
        project, uid, iteration, key = parse_store_uri(store)
        rec = runs.get_artifact(project, uid, iteration, key)
    except TickrunError as exc:
        # The input may have been deleted since: the version keeps what the run said.
        logger.warning("input %s (%s) of a registered model not found: %s", name, uri, exc)
        return DatasetLineage(name=name, uri=uri)
    return DatasetLineage(
        name=name, uri=uri, kind=rec.kind.value, sha256=rec.sha256, target=rec.target
    )


def _first(labels: dict[str, str], names: tuple[str, ...]) -> str | None:
    return next((labels[n] for n in names if labels.get(n)), None)
