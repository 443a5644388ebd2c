"""Inputs as data items: one object over a local file, an ``s3://`` object or an earlier run's
artifact (``store://<project>/<run uid>[/<iteration>]/<key>``, or a registered model version
``models:/<name>/<version>``, ``models:/<name>@<alias>``, ``models:/<name>/latest``, which the
run DB's model registry maps to its ``store://`` artifact).

A ``store://`` item's target comes from a run record, which whoever can write the run DB chose;
it is read only when it lies in one of the configured artifact stores (:class:`ArtifactRoots`),
checked here, on the reading host, with symlinks resolved. A plain path or ``s3://`` URL given by
the caller is the caller's own choice and is read as given.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..artifacts import S3Settings, split_url
from ..artifacts.base import CHUNK_BYTES, ArtifactNotFoundError, ArtifactStore
from ..artifacts.targets import ArtifactRoots
from ..errors import BadRequestError
from .records import STORE_SCHEME, ArtifactRecord, parse_store_uri

if TYPE_CHECKING:
    import pandas as pd

    from .db.base import RunDB
    from .registry_records import ModelVersion

# The stores of the run being executed: a handler's own load_model / DataItem calls check
# store:// targets against the run's stores (which may be an explicit artifact_path).
_CURRENT_ROOTS: ContextVar[ArtifactRoots | None] = ContextVar(
    "tickrun_artifact_roots", default=None
)


@contextmanager
def using_roots(roots: ArtifactRoots | None) -> Iterator[None]:
    token = _CURRENT_ROOTS.set(roots) if roots is not None else None
    try:
        yield
    finally:
        if token is not None:
            _CURRENT_ROOTS.reset(token)


def default_roots() -> ArtifactRoots:
    """The running run's stores, else the configured ones."""
    current = _CURRENT_ROOTS.get()
    if current is not None:
        return current
    from .settings import TrackingSettings

    return TrackingSettings.from_env().artifact_roots()


_READERS = {
    "csv": "csv",
    "tsv": "csv",
    "parquet": "parquet",
    "pq": "parquet",
    "json": "json",
    "jsonl": "jsonl",
    "ndjson": "jsonl",
}


class DataItem:
    """A readable input. Nothing is fetched until ``get``/``local``/``as_df`` is called."""

    def __init__(
        self,
        url: str | Path,
        *,
        key: str | None = None,
        db: RunDB | None = None,
        s3: S3Settings | None = None,
        meta: ArtifactRecord | None = None,
        roots: ArtifactRoots | None = None,
    ) -> None:
        """``roots``: the stores a ``store://`` target may lie in (default: the running run's,
        else the configured ones, :meth:`TrackingSettings.artifact_roots`). ``meta`` given by
        the caller (a run's own records) is trusted as it is."""
        self.url = str(url)
        self._roots = roots
        self.key = key or Path(self.url.rstrip("/")).name
        self._db = db
        self._s3 = s3
        self._meta = meta
        # "models:/" (registry_records.MODEL_SCHEME; the registry's pydantic models are imported
        # when such a URI is resolved, not by every run).
        tracked = self.url.startswith((STORE_SCHEME, "models:/"))
        self._target: str | None = None if tracked else self.url
        # The registered version a models:/ item resolved to (None for other items).
        self.model_version: ModelVersion | None = None
        if meta is not None:
            self._target = meta.target
        self._local: Path | None = None
        self._tmpdir: str | None = None

    def __repr__(self) -> str:
        return f"DataItem({self.url!r})"

    # -- resolution ----------------------------------------------------------------------------

    @property
    def meta(self) -> ArtifactRecord | None:
        """The artifact record, for ``store://`` and ``models:/`` items."""
        self._resolve()
        return self._meta

    @property
    def target(self) -> str:
        """Where the bytes are: a local path or ``s3://bucket/key``."""
        return self._resolve()

    def _resolve(self) -> str:
        if self._target is None:
            uri = self.url
            # A malformed URI fails before any DB is opened.
            from .registry_records import MODEL_SCHEME, parse_model_uri

            registered = uri.startswith(MODEL_SCHEME)
            if registered:
                parse_model_uri(uri)
            else:
                parse_store_uri(uri)
            if self._db is None:
                from .db import open_db

                self._db = open_db()
            if registered:
                self.model_version = self._db.registry().resolve(uri)
                uri = self.model_version.model_uri
            project, uid, iteration, key = parse_store_uri(uri)
            rec = self._db.get_artifact(project, uid, iteration, key)
            if self._roots is None:
                self._roots = default_roots()
            target = self._roots.check(rec.target)
            self._meta = rec
            self._target = target
        return self._target

    def _store(self) -> tuple[ArtifactStore | None, str]:
        target = self._resolve()
        if target.startswith("s3://"):
            return split_url(target, self._s3)
        return None, target

    @property
    def suffix(self) -> str:
        """File type from the target's name, ignoring ``.gz`` (``csv``, ``parquet``, …)."""
        name = Path(self._resolve()).name.lower()
        if name.endswith(".gz"):
            name = name[:-3]
        return name.rsplit(".", 1)[-1] if "." in name else ""

    # -- reading -------------------------------------------------------------------------------

    def stream(self, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        store, key = self._store()
        if store is not None:
            return store.stream(key, chunk_bytes)
        path = Path(key).expanduser()
        if not path.is_file():
            raise ArtifactNotFoundError(f"input {self.url!r}: {path} does not exist")
        return _iter_file(path, chunk_bytes)

    def get(self, encoding: str | None = None) -> Any:
        """The whole object as bytes (or ``str`` with an ``encoding``)."""
        data = b"".join(self.stream())
        return data.decode(encoding) if encoding else data

    def local(self) -> str:
        """A local file path with the content (downloaded once for remote items)."""
        if self._local is not None:
            return str(self._local)
        store, key = self._store()
        if store is None:
            path = Path(key).expanduser()
            if not path.exists():
                raise ArtifactNotFoundError(f"input {self.url!r}: {path} does not exist")
            self._local = path
        else:
            self._tmpdir = tempfile.mkdtemp(prefix="tickrun-input-")
            self._local = store.download(key, Path(self._tmpdir) / Path(key).name)
        return str(self._local)

    def download(self, dest: str | Path) -> Path:
        target = Path(dest)
        store, key = self._store()
        if store is None:
            shutil.copyfile(Path(key).expanduser(), target)
            return target
        return store.download(key, target)

    def as_df(self, format: str | None = None, **kwargs: Any) -> pd.DataFrame:
        """Read as a pandas DataFrame: csv, parquet, json / jsonl (any of them gzipped)."""
        import pandas as pd

        fmt = format or (self.meta.format if self.meta and self.meta.format else "") or self.suffix
        kind = _READERS.get(fmt.removesuffix(".gz"))
        if kind is None:
            raise BadRequestError(
                f"cannot read {self.key!r} as a table: unknown format {fmt or '(none)'!r}; "
                "pass format='csv'|'parquet'|'json'"
            )
        gz = self._resolve().lower().endswith(".gz")
        source: Any = self.local()
        if kind == "parquet":
            if gz:
                import gzip

                with gzip.open(source, "rb") as f:
                    source = io.BytesIO(f.read())
            return pd.read_parquet(source, **kwargs)
        comp = "gzip" if gz else None
        if kind == "csv":
            return pd.read_csv(source, compression=comp, **kwargs)
        try:
            return pd.read_json(
                source, orient="records", lines=kind == "jsonl", compression=comp, **kwargs
            )
        except ValueError:
            # A JSON Lines file named .json: retry as lines before giving up.
            return pd.read_json(source, lines=True, compression=comp, **kwargs)

    def cleanup(self) -> None:
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
            self._local = None


def _iter_file(path: Path, chunk_bytes: int) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(chunk_bytes):
            yield chunk
