"""Function lifecycle: create/update → build → deploy → ready | error; get, list, delete.

Deploys return at once with a build id; the build runs in a thread, and the reconciler
(``reconciler.py``) brings replicas to the function's revision and replica count.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import yaml

from tickrun.functions.errors import ConflictError, SpecError, TickrunError
from tickrun.functions.settings import KUBECONFIG, OFFERED_PLATFORMS, PLATFORMS, REGISTRY_URL
from tickrun.functions.spec import FunctionSpec

from .bindings import unbound_spec
from .builder import Builder
from .builder.hashing import hash_tree, private, publish_tree, sha256_bytes, unpack
from .builder.wheels import BuildScope, kill_active
from .kafka_defaults import with_default_brokers
from .platforms.base import ClusterPlatform, Platform, unacted_fields
from .settings import Settings
from .store import BuildRow, FunctionRow, ReplicaRow, Store
from .store.secrets import SecretStore

if TYPE_CHECKING:
    from .bindings import ModelBindings

logger = logging.getLogger(__name__)

# Spec fields that only say how many replicas to run: changing them scales, never rebuilds.
SCALE_FIELDS = ("replicas", "minReplicas", "maxReplicas")
# How long a cancelled build may take to notice (its subprocess is killed at once; a step
# between subprocesses, such as hashing, runs to its end).
BUILD_STOP_GRACE_S = 10.0


def runtime_spec(spec: FunctionSpec) -> dict[str, Any]:
    """The spec as written into the function's code folder/image (without replica counts, and
    without ``models:/`` env values: the controller binds those at launch, ``bindings.py``)."""
    data: dict[str, Any] = spec.to_yaml_dict()
    for key in SCALE_FIELDS:
        data.get("spec", {}).pop(key, None)
    return unbound_spec(data)


def make_private_dirs(settings: Settings) -> None:
    """The state dir and its code, logs and builds folders: 0700, the controller's alone (it
    holds the token, the database and the secret store)."""
    for d in (settings.state_dir, settings.code_dir, settings.logs_dir, settings.builds_dir):
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        d.chmod(0o700)


def desired_replicas(spec: FunctionSpec) -> int:
    """Replicas to run. The autoscaler's seam: without it, the lower bound, at least 1 (nothing
    would wake a function scaled to zero) unless ``replicas: 0`` stops the function outright."""
    s = spec.spec
    if s.replicas == 0 and s.min_replicas is None and s.max_replicas is None:
        return 0
    lo, _hi = s.replica_bounds()
    return max(int(lo), 1)


@dataclass
class _RunningBuild:
    function: str
    task: asyncio.Task[None]
    scope: BuildScope


class FunctionService:
    """Constructor does no I/O."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        builder: Builder,
        platforms: dict[str, Platform],
        clusters: dict[str, ClusterPlatform] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.builder = builder
        self.platforms = platforms
        self.clusters = clusters or {}
        self.secrets = SecretStore(settings.state_dir / "secrets.json")
        # The newest build task per function (the next one waits for it) and every build
        # task by build id (a delete aborts them all).
        self._builds: dict[str, asyncio.Task[None]] = {}
        self._running: dict[str, _RunningBuild] = {}
        self.locks: dict[str, asyncio.Lock] = {}
        # Called when a build finished, so replicas start without waiting for the next pass.
        self.on_change: Callable[[], None] = lambda: None
        # Called first thing on delete: stop routing to the function before its replicas stop.
        self.on_delete: Callable[[str], Awaitable[None]] = _noop
        # models:/ env values, resolved against the controller's registry (set by the app).
        self.bindings: ModelBindings | None = None

    def lock(self, name: str) -> asyncio.Lock:
        return self.locks.setdefault(name, asyncio.Lock())

    def offered(self) -> list[str]:
        """The platforms this controller can deploy to."""
        return [p for p in PLATFORMS if p in self.platforms or p in self.clusters]

    async def spec_warnings(self, spec: FunctionSpec, platform: str) -> list[str]:
        """What ``spec`` asks for that ``platform`` will not do (the deploy says so)."""
        replicas, cluster = self.platforms.get(platform), self.clusters.get(platform)
        acted_on: set[str] = set()
        if replicas is not None:
            acted_on = await replicas.acts_on()
        elif cluster is not None:
            acted_on = await cluster.acts_on_spec(spec)
        warnings = unacted_fields(spec, acted_on, platform)
        if cluster is not None:
            warnings += cluster.warnings(spec)
        if spec.spec.build.registry:
            # Nuclio's per-function registry: tickrun pushes to the controller's one only.
            warnings.append(
                "spec field build.registry is accepted but not acted on: images are pushed to "
                f"the controller's registry ({REGISTRY_URL.name}), if any"
            )
        if platform in self.clusters and not self.settings.registry:
            # kwok and a one-node cluster sharing the controller's image store get by; a real
            # node pulls, and no registry serves localhost/.
            warnings.append(
                f"no registry is set ({REGISTRY_URL.name}): the {platform} platform runs the "
                f"local image localhost/tickrun/{spec.name}, which the nodes of a real cluster "
                "cannot pull"
            )
        return warnings

    # --- deploy ---------------------------------------------------------------------------------

    async def deploy(
        self,
        spec: FunctionSpec,
        code: bytes | None,
        platform: str | None,
        *,
        name: str | None = None,
    ) -> tuple[FunctionRow, BuildRow, list[str]]:
        """Store ``spec`` (validated at the edge) and ``code``, and start a build. Also returns
        the deploy's warnings (fields the platform accepts without acting on them)."""
        if name is not None and spec.name != name:
            raise SpecError(f"metadata.name {spec.name!r} does not match the URL's {name!r}")
        # Stored with real brokers: replicas, the lag monitor and KEDA read them from the spec.
        spec = with_default_brokers(spec, self.settings.kafka_brokers)
        # Every secretKeyRef must name a secret key that is set (the values stay in the store).
        await asyncio.to_thread(self.secrets.resolve, spec.spec.secret_refs())
        existing = self.store.find_function(spec.name)
        if existing is not None and existing.state == "deleting":
            raise ConflictError(f"function {spec.name!r} is being deleted; retry in a moment")
        platform = platform or (existing.platform if existing else self.settings.default_platform)
        if platform not in PLATFORMS:
            raise SpecError(
                f"unknown platform {platform!r}: use one of {', '.join(PLATFORMS)}",
                detail=[{"field": "platform", "message": "unknown platform"}],
            )
        if not self.settings.offers(platform):
            raise SpecError(
                f"the {platform} platform is turned off on this controller: it offers "
                f"{', '.join(self.settings.platforms or ())} ({OFFERED_PLATFORMS.name})",
                detail=[{"field": "platform", "message": "platform turned off"}],
            )
        if platform == "container" and "container" not in self.platforms:
            raise SpecError(
                "the container platform is not available on this controller: no "
                "podman or docker found (install podman, or use --platform process)"
            )
        if platform == "kubernetes" and "kubernetes" not in self.clusters:
            raise SpecError(
                "the kubernetes platform is not available on this controller: set "
                f"{KUBECONFIG.name}, or run the controller in the cluster"
            )
        if self.bindings is not None:
            await self.bindings.check(spec, platform)  # an unresolvable models:/ value: 400
        if code is None:
            if existing is None:
                raise SpecError(f"function {spec.name!r} does not exist yet: send its code")
            code_dir = self.settings.code_dir / spec.name / existing.code_hash
            code_hash = await asyncio.to_thread(self._rewrite_spec, code_dir, spec)
        else:
            code_hash = await asyncio.to_thread(self._store_code, spec, code)
        now = time.time()
        if existing is None:
            row = FunctionRow(
                name=spec.name,
                spec=spec,
                platform=platform,
                version=1,
                state="building",
                message="",
                code_hash=code_hash,
                created_at=now,
                updated_at=now,
            )
        else:
            row = existing
            row.spec, row.platform, row.code_hash = spec, platform, code_hash
            row.version += 1
            row.state, row.message = "building", ""
        row = self.store.save_function(row)
        build = self._add_build(spec.name, row.version, platform, now)
        self.store.add_event(
            spec.name,
            "deploy",
            f"version {row.version} on {platform} (code {code_hash[:12]})",
            data={"build": build.id},
        )
        warnings = await self.spec_warnings(spec, platform)
        for warning in warnings:
            self.store.add_event(spec.name, "warning", warning)
        self._start_build(row, build)
        return row, build, warnings

    def _add_build(self, name: str, version: int, platform: str, started_at: float) -> BuildRow:
        build_id = uuid.uuid4().hex[:16]
        # The build id keeps logs apart even if a folder of a deleted namesake survived.
        log_path = self.settings.builds_dir / name / "logs" / f"{version}-{build_id}.log"
        return self.store.add_build(
            BuildRow(
                id=build_id,
                function=name,
                version=version,
                platform=platform,
                content_hash="",
                state="running",
                cached=False,
                log_path=str(log_path),
                message="",
                started_at=started_at,
            )
        )

    def _write_spec(self, folder: Path, spec: FunctionSpec) -> None:
        for old in ("function.yaml", "function.yml"):
            (folder / old).unlink(missing_ok=True)
        text = yaml.safe_dump(runtime_spec(spec), sort_keys=False)
        (folder / "function.yaml").write_text(text, encoding="utf-8")

    def _store_code(self, spec: FunctionSpec, code: bytes) -> str:
        """Unpack uploaded code (plus the effective spec) into a content-addressed folder."""
        root = self.settings.code_dir / spec.name
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".upload-", dir=root))
        try:
            unpack(code, tmp)
            self._write_spec(tmp, spec)
            private(tmp)
            digest = hash_tree(tmp)
            publish_tree(tmp, root / digest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return digest

    def _rewrite_spec(self, code_dir: Path, spec: FunctionSpec) -> str:
        """A spec-only update: same code, new function.yaml (unchanged if only replicas moved)."""
        if not code_dir.is_dir():
            raise SpecError(
                f"the stored code of {spec.name!r} is missing; deploy it again with its code"
            )
        tmp = Path(tempfile.mkdtemp(prefix=".respec-", dir=code_dir.parent))
        shutil.rmtree(tmp)
        shutil.copytree(code_dir, tmp)
        self._write_spec(tmp, spec)
        private(tmp)
        digest = hash_tree(tmp)
        publish_tree(tmp, code_dir.parent / digest)
        return digest

    def _start_build(self, row: FunctionRow, build: BuildRow) -> None:
        previous = self._builds.get(row.name)
        scope = BuildScope()
        task = asyncio.create_task(
            self._build(row.name, row.version, build.id, previous, scope),
            name=f"build-{row.name}-{row.version}",
        )
        self._builds[row.name] = task
        self._running[build.id] = _RunningBuild(row.name, task, scope)

        def done(_task: asyncio.Task[None]) -> None:
            self._running.pop(build.id, None)
            if self._builds.get(row.name) is _task:
                del self._builds[row.name]

        task.add_done_callback(done)

    async def _build(
        self,
        name: str,
        version: int,
        build_id: str,
        previous: asyncio.Task[None] | None,
        scope: BuildScope,
    ) -> None:
        if previous is not None and not previous.done():
            await asyncio.wait([previous])  # one build per function at a time, in order
        row = self.store.get_function(name)
        build = self.store.get_build(build_id)
        spec = row.spec
        code_dir = self.settings.code_dir / name / row.code_hash
        with _open_log(Path(build.log_path)) as log_file:

            def log(line: str) -> None:
                # The builder's thread may outlive a cancelled build by a moment.
                with contextlib.suppress(ValueError):
                    log_file.write(line + "\n")

            work = asyncio.ensure_future(
                asyncio.to_thread(
                    scope.run,
                    self.builder.build,
                    spec,
                    code_dir,
                    row.platform,  # kubernetes: the container image, pushed to the registry
                    log,
                    code_hash=row.code_hash,
                )
            )
            work.add_done_callback(_retrieve)
            try:
                # Shielded: on cancel the thread is told to stop and given time to do so.
                result = await asyncio.shield(work)
            except asyncio.CancelledError:
                scope.cancel()
                await asyncio.wait([work], timeout=BUILD_STOP_GRACE_S)
                raise
            except TickrunError as exc:
                log(f"error: {exc.message}")
                self._build_failed(name, version, build_id, exc.message)
                return
            except Exception as exc:
                logger.exception("build crashed", extra={"function": name, "build": build_id})
                log("error: the build crashed; see the controller log")
                self._build_failed(name, version, build_id, f"build crashed: {type(exc).__name__}")
                return
        self.store.update_build(
            build_id,
            state="succeeded",
            cached=result.cached,
            content_hash=result.content_hash,
            finished_at=time.time(),
            artifact=json.dumps(result.artifact),
        )
        current = self.store.find_function(name)
        if current is None or current.version != version:
            return  # superseded or deleted while building
        revision = sha256_bytes(
            result.content_hash, row.platform, json.dumps(runtime_spec(spec), sort_keys=True)
        )[:32]
        if self.bindings is not None:
            try:  # the resolved model versions are part of the revision
                revision = await asyncio.to_thread(self.bindings.bind, spec, revision)
            except TickrunError as exc:
                self._build_failed(name, version, build_id, exc.message)
                return
        self.store.update_function(
            name,
            state="deploying",
            artifact=result.artifact,
            image=result.artifact.get("image"),
            revision=revision,
            message="",
        )
        how = "cached" if result.cached else "built"
        self.store.add_event(
            name,
            "build",
            f"build {build_id} {how} in {result.duration_s:.2f} s",
            data={"build": build_id},
        )
        self.on_change()

    def _build_failed(self, name: str, version: int, build_id: str, message: str) -> None:
        self.store.update_build(build_id, state="failed", message=message, finished_at=time.time())
        current = self.store.find_function(name)
        if current is not None and current.version == version:
            # Replicas of the previous revision (if any) keep serving.
            self.store.update_function(name, state="error", message=f"build failed: {message}")
        self.store.add_event(name, "build_failed", message, data={"build": build_id})

    async def resume_builds(self) -> None:
        """Builds interrupted by a controller restart are run again."""
        for row in self.store.list_functions():
            if row.state != "building":
                continue
            builds = self.store.list_builds(row.name, limit=1)
            if builds and builds[0].state == "running":
                build = builds[0]
            else:
                build = self._add_build(row.name, row.version, row.platform, time.time())
            self.store.add_event(
                row.name,
                "build",
                "resuming a build interrupted by a controller restart",
                data={"build": build.id},
            )
            self._start_build(row, build)

    async def _abort_builds(self, name: str, reason: str) -> None:
        """End every build of ``name``: kill its subprocess, wait for its task, and record it
        as aborted (also builds that were waiting their turn or never started)."""
        running = [r for r in self._running.values() if r.function == name]
        for r in running:
            r.scope.cancel()
            r.task.cancel()
        if running:
            await asyncio.wait([r.task for r in running], timeout=BUILD_STOP_GRACE_S + 5)
        for build in self.store.list_builds(name, limit=1000):
            if build.state != "running":
                continue
            with contextlib.suppress(OSError, ValueError), _open_log(Path(build.log_path)) as f:
                f.write(f"build aborted: {reason}\n")
            self.store.update_build(
                build.id, state="aborted", message=reason, finished_at=time.time()
            )
            self.store.add_event(
                name,
                "build_aborted",
                f"build {build.id} aborted: {reason}",
                data={"build": build.id},
            )

    # --- delete ---------------------------------------------------------------------------------

    async def delete(self, name: str) -> None:
        self.store.get_function(name)
        self.store.update_function(name, state="deleting")
        await self._finish_delete(name)

    async def finish_deletes(self) -> None:
        """Deletes interrupted by a controller crash are finished (run after adoption, so the
        replicas that survived are known and stopped)."""
        for row in self.store.list_functions():
            if row.state != "deleting":
                continue
            logger.info("finishing an interrupted delete", extra={"function": row.name})
            try:
                await self._finish_delete(row.name)
            except TickrunError as exc:
                logger.warning(
                    "cannot finish a delete", extra={"function": row.name, "error": exc.message}
                )

    async def _finish_delete(self, name: str) -> None:
        row = self.store.get_function(name)
        await self.on_delete(name)
        await self._abort_builds(name, "function deleted")
        async with self.lock(name):
            cluster = self.clusters.get(row.platform)
            if cluster is not None:
                await cluster.remove(name)
            platform = self.platforms.get(row.platform)
            for rep in self.store.list_replicas(name):
                plat = self.platforms.get(rep.platform, platform)
                if plat is not None:
                    await plat.stop(replica_ref(rep), self.settings.stop_timeout_s)
                self.store.delete_replica(rep.id)
            self.store.delete_builds(name)
            self.store.delete_function(name)
            self.store.add_event(name, "deleted", "function deleted; all replicas stopped")
        # Code, build logs/contexts and replica logs go with the function: a re-created
        # namesake starts clean.
        await asyncio.to_thread(self._remove_files, name)

    def _remove_files(self, name: str) -> None:
        for root in (self.settings.code_dir, self.settings.builds_dir, self.settings.logs_dir):
            shutil.rmtree(root / name, ignore_errors=True)

    async def stop(self) -> None:
        # Interrupted builds stay "running" in the store and are resumed on the next start.
        running = list(self._running.values())
        for r in running:
            r.scope.cancel()
        kill_active()
        for r in running:
            r.task.cancel()
        await asyncio.gather(*(r.task for r in running), return_exceptions=True)


def _retrieve(task: asyncio.Future[Any]) -> None:
    # A cancelled build's thread may still fail (its subprocess was killed): nobody awaits it.
    if not task.cancelled():
        task.exception()


async def _noop(name: str) -> None:
    return None


def _open_log(path: Path) -> TextIO:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    return os.fdopen(fd, "a", encoding="utf-8", buffering=1)  # line-buffered: followers see lines


def replica_ref(row: ReplicaRow) -> Any:
    from .platforms.base import ReplicaRef

    return ReplicaRef(
        id=row.id,
        function=row.function,
        pid=row.pid,
        pid_start=row.pid_start,
        container=row.container,
        log_path=row.log_path,
    )
