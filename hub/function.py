"""A resolved hub item as something to run (jobs) or deploy (serving items): the item handle.

Runs here go through :func:`tickrun.functions.runs.run_function`, labelled with the item and the
version that was resolved, so a run made with ``hub://auto_trainer:1`` still says which 1.y.z did
the work; runs in another process are a :class:`~tickrun.functions.runs.plugins.JobRequest`
handed to that runner's job launcher, the same request ``tickrun run --runner`` submits.
Deployments are in :mod:`.deployments`. Each item version's module is imported under its own name
(:func:`tickrun.functions.modules.import_file`), so two versions of one item can be used in the
same process.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import tempfile
import types
import uuid
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import yaml
from pydantic import ValidationError

from tickrun.functions import settings
from tickrun.functions.errors import HubError, SpecError, TickrunError
from tickrun.functions.modules import import_file
from tickrun.functions.runs.plugins import JobRequest, job_launcher
from tickrun.functions.spec import parse_spec

from .catalogue import BUNDLED_ROOT
from .deployments import ControllerDeployment, LocalDeployment, controller_client, free_port
from .resolved import ResolvedItem
from .safefiles import copy_inside, write_inside
from .spec import HandlerSpec, ItemSpec

if TYPE_CHECKING:
    from tickrun.functions.runs import RunObject

logger = logging.getLogger(__name__)

LABEL_ITEM = "hub.item"
LABEL_VERSION = "hub.version"
LABEL_SOURCE = "hub.source"
LABEL_HANDLER = "hub.handler"


class ItemResolver(Protocol):
    def resolve(self, uri: str) -> ResolvedItem: ...


class HubFunction:
    """``tickrun.import_function("hub://name:1.2")``. Constructor does no I/O."""

    def __init__(
        self, resolved: ResolvedItem, *, environment: Callable[[], ItemResolver] | None = None
    ) -> None:
        self.resolved = resolved
        # The hubs of the environment (what another process resolves against), if known.
        self._environment = environment
        self._module: types.ModuleType | None = None

    @property
    def spec(self) -> ItemSpec:
        return self.resolved.spec

    @property
    def name(self) -> str:
        return self.resolved.name

    @property
    def version(self) -> str:
        return self.resolved.version

    @property
    def uri(self) -> str:
        return self.resolved.uri

    @property
    def folder(self) -> Path:
        return self.resolved.folder

    @property
    def code_path(self) -> Path:
        return self.folder / f"{self.spec.module}.py"

    def __repr__(self) -> str:
        return f"HubFunction({self.uri!r}, source={self.resolved.source!r})"

    # --- code ---------------------------------------------------------------------------------

    def module(self) -> types.ModuleType:
        """The item's Python module (e.g. market_features' feature code for a streaming handler)."""
        if self._module is None:
            self._module = _import_item_module(self.spec, self.folder)
        return self._module

    def handler(self, name: str | None = None) -> Callable[..., Any]:
        chosen, _spec = self.spec.handler_spec(name or self.resolved.handler)
        fn = getattr(self.module(), chosen, None)
        if not callable(fn):
            raise HubError(f"{self.uri}: module {self.spec.module} has no function {chosen!r}")
        return fn  # type: ignore[no-any-return]

    # --- jobs ---------------------------------------------------------------------------------

    def run(
        self,
        handler: str | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        inputs: Mapping[str, Any] | None = None,
        local: bool = True,
        runner: str | None = None,
        project: str = "default",
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run one handler as a tracked run; returns the runs API's ``RunObject``.

        ``runner`` ``"local"`` (the default) runs it in this process; ``"subprocess"`` (also
        ``local=False``), ``"container"`` or ``"kubernetes"`` submit a ``JobRequest`` to that
        runner's job launcher (``tickrun.job_runners``), as ``tickrun run hub://… --runner …``
        does, and wait for it. (``platform=`` is the keyword's name before 0.2.)
        """
        if "platform" in kwargs:
            legacy = kwargs.pop("platform")
            warnings.warn(
                "HubFunction.run(platform=…) is now run(runner=…)", DeprecationWarning, stacklevel=2
            )
            runner = runner or {"process": "subprocess"}.get(legacy, legacy)
        chosen, hspec = self.spec.handler_spec(handler or self.resolved.handler)
        params = dict(params or {})
        inputs = dict(inputs or {})
        check_arguments(self.spec, chosen, hspec, params, inputs)
        run_labels = {**dict(labels or {}), **self.run_labels(chosen)}
        run_name = name or self.run_name(chosen)
        where = runner or ("local" if local else "subprocess")
        logger.info(
            "hub run",
            extra={
                "item": self.name,
                "version": self.version,
                "handler": chosen,
                "project": project,
                "runner": where,
            },
        )
        if where != "local":
            return self._run_elsewhere(
                where, chosen, params, inputs, project, run_name, run_labels, kwargs
            )
        # Lazily: `import tickrun.hub` (the CLI's start) does not pay for the run tracker.
        from tickrun.functions.runs import run_function

        return run_function(
            self.handler(chosen),
            params=params,
            inputs=inputs,
            project=project,
            name=run_name,
            labels=run_labels,
            **kwargs,
        )

    def job_target(self, handler: str, runner: str = "subprocess") -> str:
        """What another process runs: this exact version as ``hub://name:x.y.z#handler`` when
        its hub settings (the environment) resolve that to the same folder, else the item's
        file (a hub object built in code, e.g. ``Hub([folder])``, is not in the environment)."""
        pinned = f"hub://{self.name}:{self.version}#{handler}"
        if runner == "kubernetes":
            # The Job's image is built from the item's folder, like any FILE.py:handler job.
            return f"{self.code_path}:{handler}"
        if runner == "container":
            return pinned  # the job runner decides what a container can run
        try:
            found = self._environment() if self._environment is not None else None
            same = found is not None and (
                found.resolve(pinned).folder.resolve() == self.folder.resolve()
            )
        except TickrunError:
            same = False
        return pinned if same else f"{self.code_path}:{handler}"

    def _run_elsewhere(
        self,
        runner: str,
        handler: str,
        params: dict[str, Any],
        inputs: dict[str, Any],
        project: str,
        name: str,
        labels: dict[str, str],
        extra: dict[str, Any],
    ) -> Any:
        unsupported = sorted(set(extra) - _JOB_OPTIONS - {"artifact_path", "uid", "progress"})
        if unsupported:
            raise HubError(
                f"run(runner={runner!r}) cannot hand {', '.join(unsupported)} to another "
                "process; the job uses the environment's run DB and artifact store"
            )
        for key, value in params.items():
            _check_json(key, value)
        options = {k: v for k, v in extra.items() if k in _JOB_OPTIONS and v is not None}
        artifact_path = extra.get("artifact_path")
        try:
            # model_validate, not the constructor: ``options`` are the caller's, checked here
            # with pydantic's messages (an unknown option is refused, not a TypeError).
            request = JobRequest.model_validate(
                dict(
                    runner=runner,
                    target=self.job_target(handler, runner),
                    uid=str(extra.get("uid") or uuid.uuid4().hex),
                    params=params,
                    inputs={k: str(getattr(v, "url", v)) for k, v in inputs.items()},
                    project=project,
                    name=name,
                    labels=labels,
                    artifact_path=str(artifact_path) if artifact_path else None,
                    # Built into the Job's image (the environment here has its own).
                    requirements=list(self.spec.requirements) if runner == "kubernetes" else [],
                    **options,
                )
            )
        except ValidationError as exc:
            raise HubError(f"run(runner={runner!r}): {exc.errors()[0]['msg']}") from exc
        code = job_launcher(runner)(request)
        return _finished_run(request.uid, runner, code)

    def run_name(self, handler: str) -> str:
        """A run's default name: the item and the handler."""
        return f"{self.name}-{handler}".replace("_", "-")

    def run_labels(self, handler: str | None = None) -> dict[str, str]:
        """The labels that record which item, version and handler a run used."""
        chosen, _spec = self.spec.handler_spec(handler or self.resolved.handler)
        return {
            LABEL_ITEM: self.name,
            LABEL_VERSION: self.version,
            LABEL_SOURCE: self.resolved.source,
            LABEL_HANDLER: chosen,
        }

    # --- serving ------------------------------------------------------------------------------

    def function_config(
        self,
        *,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        workers: int | None = None,
    ) -> dict[str, Any]:
        """The Nuclio ``function.yaml`` (as a dict) that serves this item."""
        serving = self.spec.serving
        if serving is None:
            raise HubError(f"{self.uri} is a job item; run it with .run(), it has no server")
        given = dict(env or {})
        missing = [e.name for e in serving.env if e.required and e.name not in given]
        if missing:
            raise HubError(f"{self.uri} needs env {', '.join(missing)} to deploy")
        merged = {e.name: e.default for e in serving.env if e.default is not None}
        merged.update(given)
        fn_name = name or self.name.replace("_", "-")
        config: dict[str, Any] = {
            "apiVersion": "nuclio.io/v1",
            "kind": "NuclioFunction",
            "metadata": {
                "name": fn_name,
                "labels": {
                    "tickrun.io/hub-item": self.name,
                    "tickrun.io/hub-version": self.version,
                },
            },
            "spec": {
                "description": self.spec.description,
                "runtime": "python:3.11",
                "handler": serving.handler,
                "env": [{"name": k, "value": str(v)} for k, v in merged.items()],
                "workers": workers or serving.workers,
                "requirements": list(self.spec.requirements),
                "triggers": {"http": {"kind": "http", "maxWorkers": serving.max_workers}},
            },
        }
        try:
            parse_spec(config)
        except SpecError as exc:
            raise HubError(f"{self.uri} yields an invalid function spec: {exc.message}") from exc
        return config

    def export(self, directory: str | Path, **config: Any) -> Path:
        """Write a deployable function folder (code + function.yaml) to ``directory``.

        Every write lands inside ``directory`` (resolved; symlinks in it are replaced, not
        followed) and every file copied lies inside the item's folder.
        """
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        spec = self.function_config(**config)
        for file in self.spec.code_files:
            copy_inside(self.folder, target, file)
        write_inside(target, "function.yaml", yaml.safe_dump(spec, sort_keys=False).encode())
        return target

    def deploy(
        self,
        *,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        workers: int | None = None,
        directory: str | Path | None = None,
        ready_timeout_s: float = 60.0,
        controller: bool | str | None = None,
        platform: str | None = None,
    ) -> LocalDeployment | ControllerDeployment:
        """Serve the item; returns a handle with ``url``, ``invoke()`` and ``stop()``.

        With a controller configured (``$TICKRUN_CONTROLLER_URL``, or ``controller=True`` for
        the local controller's state files, or ``controller="http://…"``) the function is
        deployed through the controller's API — built, run on its ``platform`` and served
        behind its gateway, as ``tickrun deploy hub://…`` does. Otherwise (or
        ``controller=False``) it runs as a local replica (``python -m tickrun serve``).
        """
        folder = Path(directory) if directory else Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        self.export(folder, name=name, env=env, workers=workers)
        client = controller_client(controller)
        if client is not None:
            if port is not None:
                raise HubError("port= is for local replicas; the controller assigns ports")
            return ControllerDeployment.create(
                client, folder, platform=platform, ready_timeout_s=ready_timeout_s
            )
        if platform not in (None, "local"):
            raise HubError(
                f"platform={platform!r} needs a controller: set {settings.CONTROLLER_URL.name} or "
                "pass controller=…"
            )
        deployment = LocalDeployment(folder, port=port or free_port())
        deployment.start(ready_timeout_s=ready_timeout_s)
        return deployment


# The run_function keywords a job in another process takes besides params, inputs and labels.
_JOB_OPTIONS = frozenset(
    {
        "hyperparams",
        "hyper_strategy",
        "selector",
        "stop_condition",
        "max_iterations",
        "parallel",
        "seed",
        "timeout_s",  # the kubernetes runner's Job deadline
    }
)


def _check_json(key: str, value: Any) -> None:
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise HubError(
            f"parameter {key!r} must be a JSON value to run in another process "
            f"({type(value).__name__} is not)"
        ) from exc


def _finished_run(uid: str, runner: str, code: int) -> RunObject:
    """The run a job recorded, read back as a ``RunObject`` like a local run returns."""
    from tickrun.functions.runs.job import load_run

    try:
        return load_run(uid)
    except TickrunError as exc:
        raise HubError(
            f"the {runner} job exited with {code} before run {uid} was recorded"
        ) from exc


def check_arguments(
    item: ItemSpec,
    handler: str,
    spec: HandlerSpec,
    params: dict[str, Any],
    inputs: dict[str, Any],
) -> None:
    """Refuse unknown or missing arguments up front, listing what the handler takes."""
    known = {p.name for p in spec.parameters}
    unknown = sorted(k for k in [*params, *inputs] if k not in known)
    if unknown and not spec.accepts_extra:
        raise HubError(
            f"{item.name}:{item.version} {handler}() has no parameter "
            f"{', '.join(map(repr, unknown))}; parameters: {', '.join(sorted(known)) or 'none'}"
        )
    given = set(params) | set(inputs)
    missing = [p.name for p in spec.parameters if p.required and p.name not in given]
    if missing:
        raise HubError(f"{item.name}:{item.version} {handler}() needs {', '.join(missing)}")


def _import_item_module(spec: ItemSpec, folder: Path) -> types.ModuleType:
    path = folder / f"{spec.module}.py"
    try:
        relative = folder.resolve().relative_to(BUNDLED_ROOT)
    except ValueError:
        relative = None
    try:
        if relative is not None and all(p.isidentifier() for p in relative.parts):
            # Bundled items are real sub-packages: the same module a streaming handler imports.
            dotted = ".".join(("tickrun.hub.items", *relative.parts, spec.module))
            return importlib.import_module(dotted)
        tag = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:12]
        unique = f"tickrun_hub_item_{spec.name}_{spec.version.replace('.', '_')}_{tag}"
        return import_file(path, unique)
    except TickrunError:
        raise
    except ModuleNotFoundError as exc:
        raise HubError(
            f"{spec.name}:{spec.version} needs {exc.name!r}, which is not installed "
            f"(requirements: {', '.join(spec.requirements) or 'none'})"
        ) from exc
    except Exception as exc:
        raise HubError(
            f"importing {spec.name}:{spec.version} raised {type(exc).__name__}: {exc}"
        ) from exc


__all__ = [
    "ControllerDeployment",
    "HubFunction",
    "LocalDeployment",
    "check_arguments",
    "controller_client",
    "free_port",
]
