"""The model registry's Python API: ``tickrun.register_model``, ``set_alias``, …

::

    import tickrun

    mv = tickrun.register_model(run.outputs["model"], "btc-updown", aliases=["challenger"])
    tickrun.set_alias("btc-updown", "champion", mv.version)
    model, info = tickrun.functions.runs.load_model("models:/btc-updown@champion")

The registry lives in the run DB (``TICKRUN_DB_URL``'s SQLite file, or the controller's
``/api/models`` when ``TICKRUN_CONTROLLER_URL`` is set); pass ``db=`` to use another one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from ..errors import BadRequestError
from .registry_records import (
    LATEST,
    MODEL_SCHEME,
    ModelVersion,
    RegisteredModel,
    RegisterRequest,
    check_alias,
    check_name,
    check_version,
    parse_model_uri,
)

if TYPE_CHECKING:
    from .db.base import RunDB
    from .db.registry_base import ModelRegistry


def _registry(db: RunDB | None) -> ModelRegistry:
    if db is None:
        from .db import open_db

        db = open_db()
    return db.registry()


def register_model(
    model_uri: str,
    name: str,
    *,
    description: str | None = None,
    tags: Mapping[str, str] | None = None,
    aliases: Iterable[str] = (),
    db: RunDB | None = None,
) -> ModelVersion:
    """Register the logged model ``model_uri`` (``store://…``, or a ``models:/`` URI to
    register an existing version under another name) as the next version of ``name``.

    Versions are numbered 1, 2, … per name by the registry (a deleted number is not reused).
    The version keeps its lineage, read from the run that logged the model. ``aliases`` are
    pointed at the new version in the same transaction.
    """
    request = RegisterRequest(
        model_uri=str(model_uri),
        name=name,
        description=description or "",
        tags={str(k): str(v) for k, v in (tags or {}).items()},
        aliases=list(aliases),
    )
    return _registry(db).register(request)


def set_alias(name: str, alias: str, version: int, *, db: RunDB | None = None) -> ModelVersion:
    """Point ``models:/name@alias`` at ``version`` (created, or moved atomically)."""
    return _registry(db).set_alias(check_name(name), check_alias(alias), check_version(version))


def delete_alias(name: str, alias: str, *, db: RunDB | None = None) -> None:
    _registry(db).delete_alias(check_name(name), check_alias(alias))


def get_model_version(
    uri_or_name: str, version: int | str | None = None, *, db: RunDB | None = None
) -> ModelVersion:
    """A version by ``models:/`` URI, or by name and ``version`` (a number, ``"latest"`` or an
    alias; the latest when omitted)."""
    if uri_or_name.startswith(MODEL_SCHEME):
        if version is not None:
            raise BadRequestError(f"{uri_or_name} already names a version; leave version out")
        name, ref = parse_model_uri(uri_or_name)
    else:
        name, ref = check_name(uri_or_name), LATEST if version is None else version
    return _registry(db).get_version(name, ref)


def resolve_model_uri(uri: str, *, db: RunDB | None = None) -> str:
    """``models:/…`` → the ``store://`` model artifact it names; other URIs as they are."""
    if not uri.startswith(MODEL_SCHEME):
        return uri
    return _registry(db).resolve_uri(uri)


def get_registered_model(name: str, *, db: RunDB | None = None) -> RegisteredModel:
    return _registry(db).get_model(check_name(name))


def list_models(*, limit: int = 1000, db: RunDB | None = None) -> list[RegisteredModel]:
    """Registered models, most recently updated first."""
    return _registry(db).list_models(limit)


def list_model_versions(
    name: str | None = None,
    *,
    tags: Mapping[str, str] | None = None,
    run_uid: str | None = None,
    limit: int = 1000,
    db: RunDB | None = None,
) -> list[ModelVersion]:
    """Versions newest first: of one model, with all of ``tags``, logged by ``run_uid``."""
    return _registry(db).list_versions(
        name, tags=dict(tags) if tags else None, run_uid=run_uid, limit=limit
    )


search_model_versions = list_model_versions


def delete_model_version(
    name: str, version: int, *, force: bool = False, db: RunDB | None = None
) -> None:
    """Delete a version. While an alias points at it this is refused (ConflictError, 409);
    ``force=True`` deletes those aliases with it. Its number is never given again."""
    _registry(db).delete_version(check_name(name), check_version(version), force=force)


__all__ = [
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
]
