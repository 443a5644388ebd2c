"""Step caching: a key over what decides a step's result, and the middleware that reuses an
earlier completed run with the same key.

Key = sha256 over (the target's code hash, params after Ref resolution, each input's digest,
hyperparams and selector, the requirements lock). An input's digest: the sha256 the run DB
recorded for a ``store://`` (or ``models:/``) artifact, of the file's bytes for a local path,
else the URI itself. Every step run carries its key as the label ``tickrun.pipeline.cache-key``
(cache on or off), so a later run can find it with an indexed label query.
"""

from __future__ import annotations

import hashlib
import json
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import TickrunError
from ..runs.codehash import fingerprint
from ..runs.db import RunDB
from ..runs.job_handler import handler_ref
from ..runs.records import STORE_SCHEME, parse_store_uri
from ..runs.runner import resolve_handler
from ..runs.serialize import jsonable
from .steps import CACHE_KEY_LABEL, CACHED, COMPLETED, Call, Outcome, StepCall

logger = logging.getLogger(__name__)
MODEL_SCHEME = "models:/"


def cache_key(job: StepCall, db: RunDB) -> str | None:
    """The step's cache key, or None when its code cannot be hashed (never cached)."""
    step = job.step
    if callable(step.target) and handler_ref(step.target) is None:
        # A lambda or a closure: its file says nothing of the values it captured.
        return None
    try:
        fp = fingerprint(resolve_handler(step.target).fn)
    except TickrunError as exc:
        logger.warning("step %s: cannot resolve its target to hash it: %s", step.name, exc)
        return None
    if fp is None:
        return None
    doc = {
        "code": fp.code_hash,
        "requirements": fp.requirements_lock,
        "params": jsonable(job.params),
        "inputs": {k: input_digest(v, db) for k, v in sorted(job.inputs.items())},
        "hyperparams": jsonable(step.hyperparams),
        "hyper_strategy": step.hyper_strategy if step.hyperparams else None,
        "selector": step.selector,
    }
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def input_digest(uri: str, db: RunDB) -> str:
    try:
        if uri.startswith(MODEL_SCHEME):
            uri = db.registry().resolve_uri(uri)
        if uri.startswith(STORE_SCHEME):
            project, uid, iteration, key = parse_store_uri(uri)
            rec = db.get_artifact(project, uid, iteration, key)
            return f"sha256:{rec.sha256}" if rec.sha256 else f"uri:{uri}"
    except TickrunError as exc:
        # The step itself will fail on it; the key just must not match an older run.
        return f"unresolved:{uri}:{exc.message}"
    path = Path(uri).expanduser()
    if "://" not in uri and path.is_file():
        st = path.stat()
        return f"sha256:{_file_sha256(str(path.resolve()), st.st_mtime_ns, st.st_size)}"
    return f"uri:{uri}"


@lru_cache(maxsize=128)
def _file_sha256(path: str, _mtime_ns: int, _size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class StepCache:
    """Middleware: label the step run with its key; when enabled (the pipeline's ``cache`` and
    the step's), reuse the newest completed run of the project with that key."""

    def __init__(self, db: RunDB, *, enabled: bool = True) -> None:
        self.db = db
        self.enabled = enabled

    def wrap(self, call: Call) -> Call:
        def cached(job: StepCall) -> Outcome:
            key = cache_key(job, self.db)
            if key is not None:
                job.cache_key = key
                job.labels[CACHE_KEY_LABEL] = key
                if self.enabled and job.step.cache:
                    hit = self.lookup(job.project, key)
                    if hit is not None:
                        logger.info(
                            "pipeline step cached",
                            extra={"step": job.step.name, "run_uid": hit.run_uid},
                        )
                        return hit
            return call(job)

        return cached

    def lookup(self, project: str, key: str) -> Outcome | None:
        found = self.db.list_runs(
            project, state=COMPLETED, label=f"{CACHE_KEY_LABEL}={key}", limit=1
        )
        if not found:
            return None
        rec = found[0]
        arts = self.db.list_artifacts(rec.project, uid=rec.uid, iteration=0)
        outputs: dict[str, Any] = dict(rec.results)
        outputs.update({a.key: a.uri for a in arts})
        return Outcome(
            CACHED,
            run_uid=rec.uid,
            outputs=outputs,
            results=dict(rec.results),
            started_at=rec.started_at,
            ended_at=rec.ended_at,
        )


__all__ = ["CACHE_KEY_LABEL", "StepCache", "cache_key", "input_digest"]
