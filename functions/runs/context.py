"""``RunContext``: what a job handler receives as ``context`` (MLRun's ``context.log_*``)."""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..artifacts.base import ArtifactKeyError, ArtifactStore, ObjectInfo, sanitize_key
from ..artifacts.hashing import ArtifactHashError
from ..errors import BadRequestError, NotFoundError
from . import serialize as ser
from . import trials
from .dataitem import DataItem
from .records import ArtifactKind, ArtifactRecord

if TYPE_CHECKING:
    import nuclio_sdk

    from ..artifacts.hashing import Digest
    from ..sdk import LevelledLogger
    from .runlog import RunLog
    from .tracker import RunTracker

_log = logging.getLogger(__name__)
_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def check_key(key: str) -> str:
    """Artifact and result keys: one path segment, so store:// URIs stay unambiguous."""
    if not isinstance(key, str) or not _KEY.match(key):
        raise ArtifactKeyError(
            f"artifact key {str(key)[:80]!r} is invalid: use letters, digits, '_', '-', '.' "
            "(no '/', no '..', at most 128 characters)"
        )
    return key


def job_logger(name: str) -> LevelledLogger:
    # nuclio_sdk (~10 ms) is imported by the first job that logs, not by every run.
    from ..sdk import LevelledLogger

    return LevelledLogger(logging.NOTSET, name=f"tickrun.job.{name}")


class RunContext:
    """One run's (or one iteration's) view: params, inputs, results, labels, artifacts."""

    def __init__(
        self,
        tracker: RunTracker,
        store: ArtifactStore,
        *,
        inputs: dict[str, DataItem] | None = None,
        logger: nuclio_sdk.Logger | None = None,
        run_log: RunLog | None = None,
    ) -> None:
        rec = tracker.record
        self._tracker = tracker
        self._store = store
        self.uid = rec.uid
        self.project = rec.project
        self.name = rec.name
        self.iteration = rec.iteration
        self.parameters: dict[str, Any] = dict(rec.params)
        self.artifact_path = store.url
        self._inputs = dict(inputs or {})
        self._artifacts: dict[str, ArtifactRecord] = {}
        self._logger = logger
        self._run_log = run_log  # the run's own log (runlog.py): context.logger writes into it
        # (step, value) of the report after which the sweep said stop: the run ends pruned.
        self.pruned_at: tuple[int, float] | None = None
        self._reported: set[tuple[int, str]] = set()  # hash failures commit() raised already

    @property
    def logger(self) -> nuclio_sdk.Logger:
        """The job's logger (Nuclio's interface: ``context.logger.info_with(…)``)."""
        if self._logger is None:
            if self._run_log is not None:
                from .runlog import capturing_logger

                self._logger = capturing_logger(self.name or "job", self._run_log)
            else:
                self._logger = job_logger(self.name or "job")
        return self._logger

    @logger.setter
    def logger(self, value: nuclio_sdk.Logger) -> None:
        self._logger = value

    def __repr__(self) -> str:
        return f"RunContext(uid={self.uid!r}, project={self.project!r}, it={self.iteration})"

    # -- params, inputs, labels, results ------------------------------------------------------

    @property
    def labels(self) -> dict[str, str]:
        return dict(self._tracker.record.labels)

    @property
    def results(self) -> dict[str, Any]:
        return dict(self._tracker.record.results)

    @property
    def inputs(self) -> dict[str, DataItem]:
        return dict(self._inputs)

    @property
    def artifacts(self) -> dict[str, ArtifactRecord]:
        return dict(self._artifacts)

    def get_param(self, key: str, default: Any = None) -> Any:
        return self.parameters.get(key, default)

    def get_input(self, name: str) -> DataItem:
        try:
            return self._inputs[name]
        except KeyError:
            raise NotFoundError(
                f"run has no input {name!r} (inputs: {', '.join(self._inputs) or 'none'})"
            ) from None

    def set_label(self, key: str, value: Any) -> None:
        self._tracker.set_label(str(key), str(value))

    def log_result(self, key: str, value: Any) -> None:
        self._tracker.set_result(str(key), ser.jsonable(value))

    def log_results(self, results: dict[str, Any]) -> None:
        self._tracker.set_results({str(k): ser.jsonable(v) for k, v in results.items()})

    def report_intermediate(self, step: int, value: float) -> None:
        """An intermediate value of the sweep's objective (higher is better for a ``max.``
        selector, lower for ``min.``) at ``step`` (an epoch, a fold…). A pruning sweep (strategy
        optuna) compares it with earlier trials at the same step; :meth:`should_prune` says
        what it decided. The last report is kept as results ``intermediate_step`` and
        ``intermediate_value``."""
        step, value = int(step), float(value)
        self._tracker.set_results({"intermediate_step": step, "intermediate_value": value})
        if trials.report(step, value) and self.pruned_at is None:
            self.pruned_at = (step, value)

    def should_prune(self) -> bool:
        """True once the sweep has decided this iteration should stop: return (or raise
        ``TrialPruned``) and the run ends ``aborted``, label ``hyper.pruned``."""
        return self.pruned_at is not None

    def commit(self) -> None:
        """Write buffered results now rather than at the next flush interval; the artifacts
        logged so far are written with their sha256 (waiting for hashes still running).
        Raises :class:`ArtifactHashError` if an artifact's stored copy could not be hashed."""
        self._tracker.flush(strict=True)
        failures = self._tracker.hash_failures
        new = [f for k, f in failures.items() if k not in self._reported]
        if new:
            self._reported.update(failures)
            raise ArtifactHashError("; ".join(f"artifact {r.key!r}: {why}" for r, why in new))

    # -- artifacts -----------------------------------------------------------------------------

    def _object_key(self, key: str, fmt: str) -> str:
        name = f"{key}.{fmt}" if fmt else key
        return sanitize_key(f"{self.project}/{self.uid}/{self.iteration}/{name}")

    def _record(
        self,
        key: str,
        kind: ArtifactKind,
        fmt: str,
        info: ObjectInfo,
        *,
        preview: Any = None,
        meta: dict[str, Any] | None = None,
        labels: dict[str, str] | None = None,
        digest: Digest | None = None,
    ) -> ArtifactRecord:
        fields: dict[str, Any] = dict(
            project=self.project,
            uid=self.uid,
            iteration=self.iteration,
            key=key,
            kind=kind,
            target=info.url or self._store.url_for(info.key),
            format=fmt,
            size_bytes=info.size_bytes,
            sha256=info.sha256 or "",
            preview=preview,
            meta=meta or {},
            labels={str(k): str(v) for k, v in (labels or {}).items()},
        )
        # A big local file's sha256 is computed on the hashing thread: a record that waits
        # for it when read (pending.py).
        if digest is None:
            rec = ArtifactRecord(**fields)
        else:
            from .pending import PendingArtifactRecord  # imported when first needed

            rec = PendingArtifactRecord.pending(digest, **fields)
        self._artifacts[key] = rec
        self._tracker.add_artifact(rec)
        _log.debug(
            "logged artifact",
            extra={"uid": self.uid, "key": key, "kind": kind.value, "size_bytes": info.size_bytes},
        )
        return rec

    def log_artifact(
        self,
        key: str,
        body: Any = None,
        local_path: str | Path | None = None,
        *,
        kind: str | ArtifactKind | None = None,
        format: str | None = None,
        labels: dict[str, str] | None = None,
        preview: Any = None,
        meta: dict[str, Any] | None = None,
    ) -> ArtifactRecord:
        """Store ``body`` (bytes, str, a matplotlib Figure → PNG plot, a DataFrame → table)
        or the file at ``local_path`` (streamed) under ``<key>.<format>``."""
        check_key(key)
        if (body is None) == (local_path is None):
            raise BadRequestError("log_artifact needs exactly one of body= or local_path=")
        if local_path is not None:
            path = Path(local_path)
            if not path.is_file():
                raise NotFoundError(f"local_path {path} is not a file")
            fmt = format or "".join(path.suffixes).lstrip(".")[:20] or ""
            info, digest = self._store.put_file_deferred(self._object_key(key, fmt), path)
            return self._record(
                key,
                ArtifactKind(kind or ArtifactKind.FILE),
                fmt,
                info,
                preview=preview,
                meta=meta,
                labels=labels,
                digest=digest,
            )
        if ser.is_figure(body):
            fmt = "png"
            info = self._store.put(self._object_key(key, fmt), ser.figure_png(body))
            return self._record(
                key,
                ArtifactKind(kind or ArtifactKind.PLOT),
                fmt,
                info,
                preview=preview,
                meta=meta,
                labels=labels,
            )
        if ser.is_frame(body):
            fmt = format or "csv"
            data = ser.frame_bytes(body, fmt)
            info = self._store.put(self._object_key(key, fmt), data)
            m = {"rows": len(body), "columns": [str(c) for c in body.columns], **(meta or {})}
            return self._record(
                key,
                ArtifactKind(kind or ArtifactKind.TABLE),
                fmt,
                info,
                preview=ser.frame_preview(body) if preview is None else preview,
                meta=m,
                labels=labels,
            )
        if isinstance(body, str):
            data, fmt = body.encode(), format or "txt"
        elif isinstance(body, bytes | bytearray | memoryview):
            data, fmt = bytes(body), format or "bin"
        else:
            raise BadRequestError(
                f"log_artifact cannot store a {type(body).__name__}; pass bytes, str, a "
                "matplotlib Figure, a DataFrame, or local_path= (use log_model for models)"
            )
        info = self._store.put(self._object_key(key, fmt), data)
        return self._record(
            key,
            ArtifactKind(kind or ArtifactKind.FILE),
            fmt,
            info,
            preview=ser.text_preview(data) if preview is None else preview,
            meta=meta,
            labels=labels,
        )

    def log_dataset(
        self,
        key: str,
        df: Any,
        format: str = "parquet",
        *,
        labels: dict[str, str] | None = None,
        preview_rows: int = ser.PREVIEW_ROWS,
        stats: bool = True,
        meta: dict[str, Any] | None = None,
    ) -> ArtifactRecord:
        """A DataFrame as a dataset, with its schema, statistics and a preview of its head.

        ``meta`` is kept beside the statistics, e.g. ``{"targets": [...], "time_column": ...,
        "label_horizon_bars": h}``: what a consumer (auto_trainer) needs to avoid training on a
        target or splitting a time series at random."""
        check_key(key)
        if not ser.is_frame(df):
            raise BadRequestError("log_dataset needs a pandas DataFrame")
        data = ser.frame_bytes(df, format)
        info = self._store.put(self._object_key(key, format), data)
        meta = {
            **(ser.frame_stats(df) if stats else {"rows": len(df), "columns": len(df.columns)}),
            **(meta or {}),
        }
        return self._record(
            key,
            ArtifactKind.DATASET,
            format,
            info,
            preview=ser.frame_preview(df, preview_rows),
            meta=meta,
            labels=labels,
        )

    def log_model(
        self,
        key: str,
        model: Any,
        framework: str | None = None,
        *,
        metrics: dict[str, Any] | None = None,
        labels: dict[str, str] | None = None,
        feature_names: list[str] | None = None,
        model_format: str | None = None,
        extra_data: dict[str, Any] | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> ArtifactRecord:
        """Save ``model`` in its framework's format (scikit-learn: joblib, XGBoost: JSON/UBJ).

        ``extra_data`` maps names to bytes, str, DataFrames, figures or local paths; each is
        logged as its own artifact ``<key>-<name>`` and referenced from the model's metadata.
        """
        check_key(key)
        fw = framework or ser.detect_framework(model)
        tmp = Path(tempfile.mkdtemp(prefix="tickrun-model-"))
        try:
            path, fmt, meta = ser.save_model(model, fw, tmp, model_format=model_format)
            # The store's copy is hashed, so the temporary file may go as soon as it returns.
            info, digest = self._store.put_file_deferred(self._object_key(key, fmt), path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if feature_names is not None:
            meta["feature_names"] = [str(n) for n in feature_names]
        meta["metrics"] = ser.jsonable(metrics or {})
        if parameters:
            meta["parameters"] = ser.jsonable(parameters)
        extras: dict[str, str] = {}
        for name, value in (extra_data or {}).items():
            sub = check_key(f"{key}-{name}")
            if isinstance(value, str | Path) and Path(value).is_file():
                rec = self.log_artifact(sub, local_path=value)
            else:
                rec = self.log_artifact(sub, value)
            extras[str(name)] = rec.uri
        if extras:
            meta["extra_data"] = extras
        preview = {
            "framework": fw,
            "metrics": meta["metrics"],
            "features": len(meta.get("feature_names", [])),
        }
        return self._record(
            key,
            ArtifactKind.MODEL,
            fmt,
            info,
            preview=preview,
            meta=meta,
            labels=labels,
            digest=digest,
        )
