"""Model bindings: a function whose spec env has a value ``models:/<name>@<alias>`` (or
``models:/<name>/<version>``, ``models:/<name>/latest``) is bound to that registered model.

A sandboxed replica has no run-DB credentials and (under a root controller) cannot read the
user's artifact folder, so it cannot resolve a ``models:/`` URI itself. The controller does it
against its own registry (the run DB behind its ``/api/models``), copies the model file out of
the artifact store into a content-addressed folder ``<state>/models/<sha256>/`` (world-readable
files in a 0700 state dir: only replicas, which get that one folder bound read-only, reach it),
and starts the replica with, for every bound variable ``VAR``:

- ``VAR`` = the local model file (the ``models:/`` value never reaches the replica);
- ``VAR_VERSION`` = ``<name>/<version>``, ``VAR_SHA256`` = the file's sha256;
- ``MODEL_VERSION`` = ``<name>/<version>`` too when ``VAR`` is ``MODEL_URI`` and the spec does not
  set ``MODEL_VERSION`` (hub://model_server's ``X-Model-Version``).

The resolved bindings are part of the function's revision: ``revision = H(build revision,
bindings)``, kept with the bindings in ``<state>/models/revisions/<revision>.json`` (so a
restarted controller knows what each revision binds; everything else is derived from the stored
spec and the registry). When an alias moves (the registry API nudges at once; a periodic check
catches writes that bypass the API, e.g. a shared PostgreSQL) the function gets a new revision
and the reconciler rolls it over replica by replica. A deleted alias keeps the current revision
serving (an event says so).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tickrun.functions.errors import SpecError, TickrunError
from tickrun.functions.spec import FunctionSpec

from .builder.hashing import publish_tree, sha256_bytes, sha256_file

if TYPE_CHECKING:
    from tickrun.functions.runs.db.base import RunDB

    from .store import FunctionRow, Store

logger = logging.getLogger(__name__)

MODEL_SCHEME = "models:/"  # tickrun.functions.runs.registry_records.MODEL_SCHEME (lazy import)
# Writes that bypass the controller's API (another controller on a shared PostgreSQL, a script
# with the database URL) are seen within this many seconds.
CHECK_INTERVAL_S = 3.0
# Platforms whose replicas can be given a folder of the controller host.
LOCAL_PLATFORMS = ("process", "container")
RECORD_VERSION = 1


@dataclass(frozen=True)
class Binding:
    """One bound variable, resolved: what the replica gets."""

    var: str
    uri: str  # as written in the spec: models:/btc@champion
    name: str
    version: int
    sha256: str
    path: str  # the local model file, under <state>/models/<sha256>/

    @property
    def label(self) -> str:
        return f"{self.name}/{self.version}"


def bound_vars(spec: FunctionSpec) -> dict[str, str]:
    """Env name → ``models:/`` URI, for the spec's plain env values that name a model."""
    return {k: v for k, v in spec.spec.env_dict().items() if v.startswith(MODEL_SCHEME)}


def unbound_spec(data: dict[str, Any]) -> dict[str, Any]:
    """A spec dict (``FunctionSpec.to_yaml_dict``) without its bound env entries: the replica
    reads its ``function.yaml`` into its environment, which would put the ``models:/`` URI back
    over the local path the controller gives it."""
    env = data.get("spec", {}).get("env")
    if isinstance(env, list):
        data["spec"]["env"] = [
            e
            for e in env
            if not (isinstance(e, dict) and str(e.get("value") or "").startswith(MODEL_SCHEME))
        ]
    return data


def binding_env(bindings: list[Binding], spec_env: dict[str, str]) -> dict[str, str]:
    """The variables a replica gets for ``bindings`` (see the module docstring)."""
    env: dict[str, str] = {}
    for b in bindings:
        env[b.var] = b.path
        env[f"{b.var}_VERSION"] = b.label
        env[f"{b.var}_SHA256"] = b.sha256
        if b.var == "MODEL_URI" and not spec_env.get("MODEL_VERSION"):
            env["MODEL_VERSION"] = b.label
    return env


def bound_revision(base: str, bindings: list[Binding]) -> str:
    """The function's revision: the build's, changed by any binding's version or file."""
    if not bindings:
        return base
    fingerprint = json.dumps(sorted((b.var, b.uri, b.name, b.version, b.sha256) for b in bindings))
    return sha256_bytes(base, fingerprint)[:32]


class ModelBindings:
    """Resolves and materialises bindings against the controller's run DB. Constructor does no
    I/O; :meth:`start` runs the periodic check."""

    def __init__(self, models_dir: Path, store: Store, db: RunDB | None) -> None:
        self.models_dir = models_dir
        self.revisions_dir = models_dir / "revisions"
        self.store = store
        self.db = db
        # Set by the app: the function's lock (one writer of its revision at a time) and the
        # reconciler's wake-up.
        self.lock: Callable[[str], asyncio.Lock] = lambda name: asyncio.Lock()
        self.on_change: Callable[[], None] = lambda: None
        self._nudged = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Functions whose alias is gone, so the event is recorded once, not every check.
        self._missing: dict[str, str] = {}

    # --- deploy time ----------------------------------------------------------------------------

    async def check(self, spec: FunctionSpec, platform: str) -> None:
        """Refuse (SpecError, 400) a deploy whose bindings cannot be served."""
        wanted = bound_vars(spec)
        if not wanted:
            return
        first = next(iter(wanted.items()))
        if platform not in LOCAL_PLATFORMS:
            raise SpecError(
                f"env {first[0]}={first[1]}: models:/ bindings are served on the process and "
                f"container platforms only; on {platform} the controller cannot give pods the "
                "model file (no shared volume): ship the model in the image, or use an s3:// "
                "MODEL_URI the pods can read",
                detail=[{"field": f"spec.env.{first[0]}", "message": "binding not supported"}],
            )
        await asyncio.to_thread(self.resolve_all, spec, False)

    # --- resolution -----------------------------------------------------------------------------

    def resolve_all(self, spec: FunctionSpec, materialise: bool = True) -> list[Binding]:
        """Resolve every bound variable (and copy the model files when ``materialise``)."""
        return [self._resolve(var, uri, materialise) for var, uri in bound_vars(spec).items()]

    def _resolve(self, var: str, uri: str, materialise: bool) -> Binding:
        if self.db is None:
            raise SpecError(
                f"env {var}={uri}: this controller has no model registry (tracking is not "
                "installed)"
            )
        from tickrun.functions.runs.dataitem import DataItem

        item = DataItem(uri, db=self.db)
        try:
            rec = item.meta
        except TickrunError as exc:
            raise SpecError(
                f"env {var}={uri} does not resolve in this controller's model registry: "
                f"{exc.message}",
                detail=[{"field": f"spec.env.{var}", "message": exc.message}],
            ) from exc
        mv = item.model_version
        if rec is None or mv is None:
            raise SpecError(f"env {var}={uri} names no model")
        if rec.kind.value != "model":
            raise SpecError(f"env {var}={uri} is a {rec.kind.value}, not a model")
        sha = rec.sha256 or mv.sha256
        path = ""
        if materialise:
            sha, path = self._materialise(item, sha, rec.meta, mv.uri)
        return Binding(var=var, uri=uri, name=mv.name, version=mv.version, sha256=sha, path=path)

    def _materialise(
        self, item: Any, sha: str, meta: dict[str, Any], registry_uri: str
    ) -> tuple[str, str]:
        """The model file in ``<models>/<sha256>/`` (copied once; readable by replicas)."""
        filename = Path(item.target).name or "model"
        if sha:
            final = self.models_dir / sha
            if (final / filename).is_file():
                return sha, str(final / filename)
        self.models_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=self.models_dir))
        try:
            try:
                item.download(tmp / filename)
            except (TickrunError, OSError) as exc:
                why = exc.message if isinstance(exc, TickrunError) else str(exc)
                raise SpecError(f"{registry_uri}: cannot copy the model file: {why}") from exc
            digest = sha256_file(tmp / filename)
            if sha and digest != sha:
                raise SpecError(
                    f"{registry_uri}: the model file's sha256 {digest[:12]} differs from the "
                    f"recorded {sha[:12]} (changed after it was logged)"
                )
            (tmp / "model.json").write_text(
                json.dumps({"model": registry_uri, "file": filename, "meta": meta}, default=str),
                encoding="utf-8",
            )
            # Replicas run as another user (tickrun-fn, a container's nobody): world-readable,
            # reached only through the read-only bind of this one folder.
            tmp.chmod(0o755)
            for f in tmp.iterdir():
                f.chmod(0o644)
            final = self.models_dir / digest
            publish_tree(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return digest, str(final / filename)

    # --- revisions ------------------------------------------------------------------------------

    def bind(self, spec: FunctionSpec, base: str) -> str:
        """Resolve and materialise ``spec``'s bindings for a build whose revision is ``base``;
        the function's revision (recorded with them). Blocking: call it in a thread."""
        bindings = self.resolve_all(spec)
        revision = bound_revision(base, bindings)
        if bindings:
            self._write_record(revision, base, bindings)
        return revision

    def _write_record(self, revision: str, base: str, bindings: list[Binding]) -> None:
        self.revisions_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        data = {
            "format": RECORD_VERSION,
            "base": base,
            "bindings": [asdict(b) for b in bindings],
        }
        path = self.revisions_dir / f"{revision}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        os.replace(tmp, path)

    def record(self, revision: str) -> tuple[str, list[Binding]] | None:
        """(build revision, bindings) of a bound revision; None when it binds nothing."""
        try:
            data = json.loads((self.revisions_dir / f"{revision}.json").read_text("utf-8"))
        except FileNotFoundError:
            return None
        return str(data["base"]), [Binding(**b) for b in data["bindings"]]

    def launch_env(self, fn: FunctionRow) -> tuple[dict[str, str], tuple[str, ...]]:
        """(variables, read-only folders) a replica of ``fn``'s revision gets."""
        if not bound_vars(fn.spec) or fn.revision is None:
            return {}, ()
        rec = self.record(fn.revision)
        if rec is None:
            raise SpecError(
                f"the model bindings of revision {fn.revision[:12]} are not recorded; "
                "deploy the function again"
            )
        _, bindings = rec
        for b in bindings:
            if not Path(b.path).is_file():
                raise SpecError(f"{b.label}: the model file {b.path} is gone; deploy again")
        mounts = tuple(sorted({str(Path(b.path).parent) for b in bindings}))
        return binding_env(bindings, fn.spec.spec.env_dict()), mounts

    # --- moves ----------------------------------------------------------------------------------

    def nudge(self, model: str = "") -> None:
        """An alias or version changed (the registry API calls this; any thread)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._nudged.set)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="model-bindings")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._loop = None

    async def _run(self) -> None:
        while True:
            try:
                await self.check_moves()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("model binding check failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._nudged.wait(), CHECK_INTERVAL_S)
            self._nudged.clear()

    async def check_moves(self) -> list[str]:
        """Give every bound function whose models moved a new revision; the names rolled."""
        rolled = []
        for fn in self.store.list_functions():
            if fn.state not in ("ready", "deploying", "error") or fn.revision is None:
                continue  # building (it resolves when done), deleting
            if not bound_vars(fn.spec):
                continue
            async with self.lock(fn.name):
                if await self._check_one(fn.name):
                    rolled.append(fn.name)
        if rolled:
            self.on_change()
        return rolled

    async def _check_one(self, name: str) -> bool:
        fn = self.store.find_function(name)
        if fn is None or fn.revision is None or fn.state not in ("ready", "deploying", "error"):
            return False
        rec = self.record(fn.revision)
        if rec is None:
            return False  # deployed before bindings were recorded: a deploy records them
        base, current = rec
        try:
            fresh = await asyncio.to_thread(self.resolve_all, fn.spec, False)
        except SpecError as exc:
            if self._missing.get(name) != exc.message:
                self._missing[name] = exc.message
                self.store.add_event(
                    name,
                    "model_binding",
                    f"{exc.message}; still serving "
                    + ", ".join(f"{b.uri} = {b.label}" for b in current),
                )
            return False
        self._missing.pop(name, None)
        if not _moved(fresh, current):
            return False
        try:
            bindings = await asyncio.to_thread(self.resolve_all, fn.spec, True)
        except SpecError as exc:
            self.store.add_event(name, "model_binding", f"cannot roll out: {exc.message}")
            return False
        revision = bound_revision(base, bindings)
        if revision == fn.revision:
            return False
        await asyncio.to_thread(self._write_record, revision, base, bindings)
        latest = self.store.find_function(name)
        if latest is None or latest.version != fn.version or latest.revision != fn.revision:
            return False  # a deploy came in meanwhile: its build resolves the bindings itself
        self.store.update_function(name, revision=revision, state="deploying", message="")
        old = {b.var: b for b in current}
        moves = []
        for b in bindings:
            before = old.get(b.var)
            was = str(before.version) if before is not None else "?"
            moves.append(f"{b.uri.removeprefix(MODEL_SCHEME)} moved {was} -> {b.version}")
        self.store.add_event(
            name,
            "model_binding",
            "; ".join(moves) + ", rolling out",
            data={"revision": revision, "bindings": {b.var: b.label for b in bindings}},
        )
        logger.info("model binding moved", extra={"function": name, "revision": revision})
        return True


def _moved(fresh: list[Binding], current: list[Binding]) -> bool:
    """A variable now names another version, or the same version another file (a recorded
    sha256; an unmaterialised resolution may have none)."""
    now = {b.var: b for b in fresh}
    was = {b.var: b for b in current}
    if now.keys() != was.keys():
        return True
    for var, b in now.items():
        c = was[var]
        if (b.name, b.version) != (c.name, c.version) or (b.sha256 and b.sha256 != c.sha256):
            return True
    return False
