"""Resolving ``hub://name[:version]`` against the configured hubs.

Sources, in precedence order when two carry the same version: private hub folders
(``$TICKRUN_HUB_PATH``, ``os.pathsep``-separated), the catalogue bundled with tickrun, then a
remote hub (``$TICKRUN_HUB_URL``, e.g. the controller's ``/api/hub``; https unless
``$TICKRUN_HUB_ALLOW_HTTP``). The newest version matching the pin across all of them wins, so a
private hub can add versions without hiding the bundled ones.

A remote hub never shadows a bundled item version: the bundled copy wins the tie, and a remote
copy of a bundled name and version with other content is ignored (with a warning) even when the
bundled catalogue is not a source. A range (``hub://backtest:1``) resolves to the newest matching
version that is not deprecated; a deprecated version is handed out only when nothing else matches
(an exact pin), with a :class:`~.catalogue.HubDeprecationWarning`. With ``$TICKRUN_HUB_PINS``
(see :mod:`tickrun.hub.pins`) items from private folders and remote hubs resolve only when their
files match the pinned SHA-256s.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tickrun.functions import settings
from tickrun.functions.errors import HubError

from .catalogue import BUNDLED_ROOT, HubDeprecationWarning, latest_of
from .function import HubFunction
from .pins import HubPins
from .resolved import ResolvedItem
from .sources import (
    LocalSource,
    NotCachedError,
    RemoteSource,
    Source,
    SourceUnavailableError,
    versions_of,
)
from .spec import load_item
from .versions import Version, VersionPin

logger = logging.getLogger(__name__)

SCHEME = "hub://"
_URI = re.compile(
    r"^(?P<name>[a-z][a-z0-9_-]*)(?::(?P<pin>[^:/#]+))?(?:#(?P<handler>[A-Za-z_]\w*))?$"
)


@dataclass(frozen=True, slots=True)
class ItemRef:
    name: str
    pin: VersionPin
    handler: str | None = None

    def __str__(self) -> str:
        text = f"{SCHEME}{self.name}" + (f":{self.pin}" if self.pin.parts else "")
        return text + (f"#{self.handler}" if self.handler else "")


def parse_uri(uri: str) -> ItemRef:
    """``hub://name``, ``hub://name:1``, ``hub://name:1.2``, ``hub://name:1.2.0`` (or a bare
    name); ``#handler`` picks a handler (``hub://auto_trainer:1#evaluate``), so a plain string
    reference such as ``tickrun run hub://…`` can name one."""
    text = uri.strip()
    body = text[len(SCHEME) :] if text.startswith(SCHEME) else text
    match = _URI.match(body)
    if match is None:
        raise HubError(
            f"{uri!r} is not a hub reference such as hub://auto_trainer or hub://auto_trainer:1.2"
        )
    try:
        pin = VersionPin.parse(match["pin"])
    except ValueError as exc:
        raise HubError(f"{uri!r}: {exc}") from exc
    return ItemRef(match["name"], pin, match["handler"])


def default_cache_dir() -> Path:
    return settings.HUB_CACHE.get()


class Hub:
    """The set of hubs to resolve against. Constructor does no I/O; indexes load on first use."""

    def __init__(
        self,
        paths: Sequence[str | Path] = (),
        url: str | None = None,
        *,
        cache_dir: str | Path | None = None,
        bundled: bool = True,
        timeout_s: float = 10.0,
        allow_http: bool | None = None,
        pins: str | Path | HubPins | None = None,
    ) -> None:
        """``allow_http``: let a remote hub be plain http (default ``$TICKRUN_HUB_ALLOW_HTTP``).
        ``pins``: a pin file (default ``$TICKRUN_HUB_PINS``) that private and remote items
        must match."""
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        if allow_http is None:
            allow_http = settings.HUB_ALLOW_HTTP.get()
        self._bundled = LocalSource(BUNDLED_ROOT, label="bundled")
        sources: list[Source] = [LocalSource(p) for p in paths]
        if bundled:
            sources.append(self._bundled)
        if url:
            sources.append(
                RemoteSource(url, self.cache_dir, timeout_s=timeout_s, allow_http=allow_http)
            )
        self.sources = sources
        self.skipped: dict[str, str] = {}  # source label → why it could not be listed
        self._pins_from: str | Path | HubPins | None = (
            pins if pins is not None else settings.HUB_PINS.get()
        )
        self._pins: HubPins | None = None
        self._warned: set[tuple[str, str, str]] = set()

    @classmethod
    def from_env(cls, **overrides: Any) -> Hub:
        paths = list(settings.HUB_PATH.get())
        kwargs: dict[str, Any] = {"paths": paths, "url": settings.HUB_URL.get()}
        kwargs.update(overrides)
        return cls(**kwargs)

    # --- catalogue ----------------------------------------------------------------------------

    def indexes(self) -> list[tuple[Source, dict[str, Any]]]:
        """Each source with its index, in precedence order. A source that cannot be listed (a
        stale hub folder, a remote hub unreachable with nothing cached) is skipped with a
        warning, so the others — the bundled catalogue at least — still resolve."""
        found: list[tuple[Source, dict[str, Any]]] = []
        for source in self.sources:
            try:
                found.append((source, source.index()))
            except SourceUnavailableError as exc:
                if source.label not in self.skipped:
                    logger.warning(
                        "hub source skipped", extra={"hub": source.label, "reason": exc.message}
                    )
                self.skipped[source.label] = exc.message
        return found

    def catalogue(self) -> dict[str, dict[str, tuple[Source, dict[str, Any]]]]:
        """name → version → (source, index entry); earlier sources win a tie."""
        merged: dict[str, dict[str, tuple[Source, dict[str, Any]]]] = {}
        for name, versions in self._offers().items():
            merged[name] = {v: offers[0] for v, offers in versions.items()}
        return merged

    def _offers(self) -> dict[str, dict[str, list[tuple[Source, dict[str, Any]]]]]:
        """name → version → every (source, index entry) that has it, in precedence order."""
        merged: dict[str, dict[str, list[tuple[Source, dict[str, Any]]]]] = {}
        indexes = self.indexes()
        remote = any(isinstance(source, RemoteSource) for source, _ in indexes)
        reserved = self._bundled.index()["items"] if remote else {}
        for source, index in indexes:
            for name, entry in index["items"].items():
                versions = merged.setdefault(name, {})
                for version, meta in entry["versions"].items():
                    if isinstance(source, RemoteSource) and self._shadows(
                        source, name, version, meta, reserved
                    ):
                        continue
                    versions.setdefault(version, []).append((source, meta))
        return {name: versions for name, versions in merged.items() if versions}

    def _shadows(
        self,
        source: Source,
        name: str,
        version: str,
        meta: dict[str, Any],
        reserved: dict[str, Any],
    ) -> bool:
        """A remote copy of a bundled name:version whose files differ from the bundled ones."""
        bundled = reserved.get(name, {}).get("versions", {}).get(version)
        if bundled is None or bundled["files"] == meta["files"]:
            return False
        if (source.label, name, version) not in self._warned:
            self._warned.add((source.label, name, version))
            logger.warning(
                "remote hub item differs from the bundled item of the same version; ignored",
                extra={"hub": source.label, "item": name, "version": version},
            )
        return True

    def _skipped_note(self) -> str:
        if not self.skipped:
            return ""
        return " (skipped: " + "; ".join(self.skipped.values()) + ")"

    def list_items(self) -> list[dict[str, Any]]:
        """One row per item: newest version's summary plus every version and its source."""
        rows = []
        for name, versions in sorted(self.catalogue().items()):
            ordered = sorted(versions, key=Version.parse, reverse=True)
            metas = {v: meta for v, (_source, meta) in versions.items()}
            marked = {v: str(metas[v]["deprecated"]) for v in ordered if metas[v].get("deprecated")}
            latest = latest_of(metas)
            source, meta = versions[latest]
            rows.append(
                {
                    "name": name,
                    "latest": latest,
                    "versions": ordered,
                    "kind": meta.get("kind", "job"),
                    "description": meta.get("description", ""),
                    "categories": meta.get("categories", []),
                    "source": source.label,
                    "deprecated": marked,
                }
            )
        return rows

    # --- resolution ---------------------------------------------------------------------------

    def resolve(self, uri: str) -> ResolvedItem:
        ref = parse_uri(uri)
        offers = self._offers()
        versions = offers.get(ref.name)
        if not versions:
            known = ", ".join(sorted(offers)) or "none"
            raise HubError(f"no hub item named {ref.name!r}; items: {known}{self._skipped_note()}")
        parsed = {Version.parse(v): v for v in versions}
        matching = sorted((v for v in parsed if ref.pin.matches(v)), reverse=True)
        # Deprecated versions go last: a range never lands on one while a sound version matches.
        matching.sort(key=lambda v: _deprecation(versions[parsed[v]]) is not None)
        if not matching:
            have = ", ".join(str(v) for v in sorted(parsed, reverse=True))
            raise HubError(
                f"{ref.name} has no version matching {ref.pin}; versions: {have}"
                f"{self._skipped_note()}"
            )
        source, folder, version = self._fetch_newest(ref, [parsed[v] for v in matching], versions)
        spec = load_item(folder)
        if (spec.name, spec.version) != (ref.name, version):
            raise HubError(
                f"{folder} holds {spec.name}:{spec.version}, but the index of {source.label} "
                f"says {ref.name}:{version}"
            )
        if ref.handler is not None:
            spec.handler_spec(ref.handler)  # an unknown handler fails here, listing the real ones
        deprecated = _deprecation(versions[version])
        if deprecated is not None:
            self._warn_deprecated(ref.name, version, deprecated)
        return ResolvedItem(
            spec=spec,
            folder=folder,
            source=source.label,
            uri=f"{SCHEME}{ref.name}:{version}",
            handler=ref.handler,
            deprecated=deprecated,
        )

    def _warn_deprecated(self, name: str, version: str, why: str) -> None:
        # Once per hub handle in the log; the Python warning follows the warnings filters.
        if ("deprecated", name, version) not in self._warned:
            self._warned.add(("deprecated", name, version))
            logger.warning(
                "deprecated hub item version resolved",
                extra={"item": name, "version": version, "reason": why},
            )
        warnings.warn(
            f"hub://{name}:{version} is deprecated: {why}", HubDeprecationWarning, stacklevel=3
        )

    def _fetch_newest(
        self,
        ref: ItemRef,
        candidates: list[str],
        versions: dict[str, list[tuple[Source, dict[str, Any]]]],
    ) -> tuple[Source, Path, str]:
        """The newest matching version some source can deliver. Offline, a remote hub's index
        may list versions that were never cached: fall back to the newest cached or bundled
        version matching the pin, with a warning, rather than fail."""
        missing: list[str] = []
        for version in candidates:  # newest first
            for source, meta in versions[version]:
                try:
                    folder = source.fetch(ref.name, version)
                except NotCachedError as exc:
                    missing.append(exc.message)
                    continue
                pins = self.pins()
                if pins is not None and source is not self._bundled:
                    pins.verify(ref.name, version, folder, meta["files"])
                if missing:
                    logger.warning(
                        "hub offline: newest matching version not cached; using the newest that is",
                        extra={
                            "item": ref.name,
                            "pin": str(ref.pin),
                            "wanted": candidates[0],
                            "using": version,
                            "hub": source.label,
                        },
                    )
                return source, folder, version
        raise HubError(
            f"{ref.name}: no version matching {ref.pin} is available offline — {missing[0]}; "
            f"no older matching version is cached or bundled (listed: {', '.join(candidates)})"
        )

    def pins(self) -> HubPins | None:
        """The pin file's digests, read on first use."""
        if self._pins is None and self._pins_from is not None:
            given = self._pins_from
            self._pins = given if isinstance(given, HubPins) else HubPins.load(given)
        return self._pins

    def versions(self, name: str) -> list[Version]:
        found: set[Version] = set()
        for _source, index in self.indexes():
            found.update(versions_of(index, name))
        return sorted(found, reverse=True)

    def import_function(self, uri: str) -> HubFunction:
        # The handle re-resolves against the environment's hubs to hand a job a hub:// URI.
        return HubFunction(self.resolve(uri), environment=Hub.from_env)


def _deprecation(offers: list[tuple[Source, dict[str, Any]]]) -> str | None:
    """Why this version is deprecated, by the first source offering it (None: it is not)."""
    why = offers[0][1].get("deprecated")
    return str(why) if why else None


def import_function(uri: str, *, hub: Hub | None = None) -> HubFunction:
    """``tickrun.import_function("hub://auto_trainer:1")`` → a runnable :class:`HubFunction`."""
    return (hub or Hub.from_env()).import_function(uri)
