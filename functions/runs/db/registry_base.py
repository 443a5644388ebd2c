"""The model registry's store interface, kept by each run DB (SQL tables, or the controller's
``/api/models`` over HTTP), and the resolution of ``models:/`` URIs on top of it."""

from __future__ import annotations

from abc import ABC, abstractmethod

from ..registry_records import (
    LATEST,
    MODEL_SCHEME,
    ModelVersion,
    RegisteredModel,
    RegisterRequest,
    parse_model_uri,
)


class ModelRegistry(ABC):
    @abstractmethod
    def register(self, request: RegisterRequest) -> ModelVersion:
        """The next version of ``request.name`` (created on first use), its lineage read from
        the run that logged ``request.model_uri``; the aliases are set in the same transaction.
        """

    @abstractmethod
    def get_model(self, name: str) -> RegisteredModel: ...

    @abstractmethod
    def list_models(self, limit: int = 1000) -> list[RegisteredModel]:
        """Most recently updated first."""

    @abstractmethod
    def list_versions(
        self,
        name: str | None = None,
        *,
        tags: dict[str, str] | None = None,
        run_uid: str | None = None,
        limit: int = 1000,
    ) -> list[ModelVersion]:
        """Newest first; ``tags`` must all match; ``run_uid``: versions logged by that run."""

    @abstractmethod
    def get_version(self, name: str, version: int | str) -> ModelVersion:
        """``version``: a number, ``latest`` or an alias."""

    @abstractmethod
    def set_alias(self, name: str, alias: str, version: int) -> ModelVersion:
        """Point ``alias`` at ``version`` (one statement: readers see the old or the new)."""

    @abstractmethod
    def delete_alias(self, name: str, alias: str) -> None: ...

    @abstractmethod
    def delete_version(self, name: str, version: int, *, force: bool = False) -> None:
        """Refused (409) while an alias points at it, unless ``force`` (the aliases go too)."""

    def resolve(self, uri: str) -> ModelVersion:
        """The version a ``models:/`` URI names."""
        name, ref = parse_model_uri(uri)
        return self.get_version(name, ref)

    def resolve_uri(self, uri: str) -> str:
        """``models:/…`` → its ``store://`` model artifact; any other URI as it is."""
        if uri.startswith(MODEL_SCHEME):
            return self.resolve(uri).model_uri
        return uri


__all__ = ["LATEST", "MODEL_SCHEME", "ModelRegistry"]
