"""Where items come from: a hub folder on disk (bundled or private) or a remote hub over HTTP.

A remote item is downloaded once into the local cache (``$TICKRUN_HUB_CACHE``, default
``~/.cache/tickrun/hub``), each file checked against the SHA-256 in the index. The last index
fetched is cached too, so when the remote hub is unreachable the cached items still resolve:
imports work offline.

A remote hub is code this process will import, so it must be reached over https (redirects
included); plain http needs ``allow_http`` (``TICKRUN_HUB_ALLOW_HTTP=1``), e.g. a controller on
loopback.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Protocol

from tickrun.functions import settings
from tickrun.functions.errors import HubError, SpecError

from .catalogue import cached_index, validate_index
from .safefiles import write_inside
from .versions import Version

logger = logging.getLogger(__name__)

API_PATH = "/api/hub"
_COMPLETE = ".complete"


class SourceUnavailableError(HubError):
    """A hub source cannot be listed at all (a missing folder, an unreachable remote hub with
    nothing cached): resolution skips it, with a warning, and goes on with the others."""


class HubConfigError(HubError):
    """The hub settings are unsafe or malformed (plain http without allow_http, a bad pin
    file)."""

    status = 400


class _NoDowngrade(urllib.request.HTTPRedirectHandler):
    """Follows redirects, but never from https to plain http."""

    def redirect_request(  # type: ignore[no-untyped-def]
        self, req, fp, code, msg, headers, newurl
    ):
        if not newurl.lower().startswith("https://"):
            raise HubError(f"{req.full_url} redirected to a non-https URL; refused")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class NotCachedError(HubError):
    """Offline, and this item version was never cached: an older cached (or bundled) version
    matching the pin may still do."""


class Source(Protocol):
    label: str

    def index(self) -> dict[str, Any]:
        """The catalogue index (see :mod:`tickrun.hub.catalogue`)."""
        ...

    def fetch(self, name: str, version: str) -> Path:
        """A local folder holding the item version's files."""
        ...


class LocalSource:
    """A hub folder on disk; the index is built from the item specs, and rebuilt when one of
    them changes (kept per process while their stat is unchanged: catalogue.cached_index)."""

    def __init__(self, root: str | Path, label: str | None = None) -> None:
        self.root = Path(root).expanduser()
        self.label = label or str(self.root)

    def index(self) -> dict[str, Any]:
        if not self.root.is_dir():
            # A stale $TICKRUN_HUB_PATH entry; a folder that exists but holds a broken item
            # is still an error (scan), not something to skip quietly.
            raise SourceUnavailableError(f"hub folder {self.root} does not exist")
        return cached_index(self.root)

    def fetch(self, name: str, version: str) -> Path:
        meta = _version_meta(self.index(), name, version, self.label)
        return (self.root / str(meta["path"])).resolve()


class RemoteSource:
    """A hub served over HTTP (``<url>/api/hub``), mirrored into a local cache."""

    def __init__(
        self,
        url: str,
        cache_dir: str | Path,
        *,
        timeout_s: float = 10.0,
        allow_http: bool = False,
    ) -> None:
        scheme, sep, rest = url.rstrip("/").partition("://")
        base = f"{scheme.lower()}{sep}{rest}"
        if not base.startswith(("http://", "https://")):
            raise HubConfigError(f"hub URL {url[:100]!r} must start with https://")
        if base.startswith("http://") and not allow_http:
            raise HubConfigError(
                f"remote hub {base[:100]} is plain http: its items are code this process "
                f"imports, so use https, or set {settings.HUB_ALLOW_HTTP.name}=1 to allow plain "
                "http (e.g. a controller on loopback)"
            )
        handlers: list[urllib.request.BaseHandler] = [] if allow_http else [_NoDowngrade()]
        self._opener = urllib.request.build_opener(*handlers)
        self.api_url = base if base.endswith(API_PATH) else base + API_PATH
        self.label = self.api_url
        self.timeout_s = timeout_s
        key = hashlib.sha256(self.api_url.encode()).hexdigest()[:16]
        netloc = urllib.parse.urlsplit(self.api_url).netloc.replace(":", "_")
        self.cache_root = Path(cache_dir).expanduser() / f"{netloc}-{key}"
        self._index: dict[str, Any] | None = None
        self.offline = False

    def index(self) -> dict[str, Any]:
        if self._index is not None:
            return self._index
        cached = self.cache_root / "index.json"
        try:
            raw = self._get(self.api_url)
            try:
                data = validate_index(json.loads(raw), source=self.api_url)
            except (ValueError, SpecError) as exc:
                raise HubError(f"{self.api_url} did not return a hub index: {exc}") from exc
        except HubError as exc:
            self._index = self._cached_index(cached, exc.message)
            return self._index
        try:
            self.cache_root.mkdir(parents=True, exist_ok=True)
            _atomic_write(cached, json.dumps(data).encode())
        except OSError as exc:  # a read-only cache costs offline use, not this resolution
            logger.warning(
                "cannot cache the hub index", extra={"hub": self.api_url, "reason": str(exc)}
            )
        self._index = data
        return data

    def _cached_index(self, cached: Path, reason: str) -> dict[str, Any]:
        if not cached.exists():
            raise SourceUnavailableError(
                f"remote hub {self.api_url} is unreachable ({reason}) and nothing is "
                "cached from it yet"
            )
        try:
            data = validate_index(json.loads(cached.read_text()), source=str(cached))
        except (OSError, ValueError, SpecError) as exc:
            raise SourceUnavailableError(
                f"remote hub {self.api_url} is unreachable ({reason}) and its cached index "
                f"{cached} is unreadable ({exc})"
            ) from exc
        logger.warning(
            "remote hub unreachable; using the cached index",
            extra={"hub": self.api_url, "reason": reason},
        )
        self.offline = True
        return data

    def fetch(self, name: str, version: str) -> Path:
        meta = _version_meta(self.index(), name, version, self.label)
        files: dict[str, str] = meta["files"]
        target = self.cache_root / name / version
        if _cached_ok(target, files):
            return target
        if self.offline:
            raise NotCachedError(
                f"{name}:{version} is not in the local cache and the remote hub "
                f"{self.api_url} is unreachable"
            )
        self.cache_root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-{version}-", dir=self.cache_root))
        try:
            for file, digest in files.items():
                quoted = "/".join(urllib.parse.quote(p) for p in (name, version, file))
                body = self._get(f"{self.api_url}/items/{quoted}")
                if hashlib.sha256(body).hexdigest() != digest:
                    raise HubError(
                        f"{name}:{version}/{file} from {self.api_url} does not match the "
                        "index's checksum; refusing to cache it"
                    )
                write_inside(staging, file, body)
            (staging / _COMPLETE).write_text(json.dumps(files))
            if target.exists():  # a stale or partial copy
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            staging.rename(target)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        logger.info(
            "hub item cached", extra={"item": name, "version": version, "path": str(target)}
        )
        return target

    def _get(self, url: str) -> bytes:
        request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
        try:
            # The scheme was checked in __init__ (and redirects by the opener).
            with self._opener.open(request, timeout=self.timeout_s) as response:
                body: bytes = response.read()
                return body
        except urllib.error.HTTPError as exc:
            raise HubError(f"GET {url} answered {exc.code}") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise HubError(f"GET {url} failed: {reason}") from exc


def _version_meta(index: dict[str, Any], name: str, version: str, label: str) -> dict[str, Any]:
    try:
        meta: dict[str, Any] = index["items"][name]["versions"][version]
    except KeyError as exc:
        raise HubError(f"{name}:{version} is not in hub {label}") from exc
    return meta


def _cached_ok(folder: Path, files: dict[str, str]) -> bool:
    marker = folder / _COMPLETE
    if not marker.exists():
        return False
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    # Versions are immutable, so a complete copy with the same checksums needs no re-download.
    return bool(recorded == files and all((folder / f).is_file() for f in files))


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def versions_of(index: dict[str, Any], name: str) -> list[Version]:
    entry = index["items"].get(name)
    if entry is None:
        return []
    try:
        return [Version.parse(v) for v in entry["versions"]]
    except ValueError as exc:
        raise SpecError(f"hub index lists a bad version for {name}: {exc}") from exc
