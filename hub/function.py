"""A resolved hub item as something to run (jobs) or deploy (serving items).

Runs go through :func:`tickrun.functions.runs.run_function`, labelled with the item and the
version that was resolved, so a run made with ``hub://auto_trainer:1`` still says which 1.y.z did
the work. Each item version's module is imported under its own name, so two versions of one item
can be used in the same process.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import types
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from tickrun.functions.errors import HubError, SpecError, TickrunError
from tickrun.functions.runs.settings import CONTROLLER_URL_ENV
from tickrun.functions.spec import parse_spec

from .catalogue import BUNDLED_ROOT
from .resolver import ResolvedItem
from .safefiles import copy_inside, write_inside
from .spec import HandlerSpec, ItemSpec

logger = logging.getLogger(__name__)

LABEL_ITEM = "hub.item"
LABEL_VERSION = "hub.version"
LABEL_SOURCE = "hub.source"
LABEL_HANDLER = "hub.handler"


def _runs_api() -> types.ModuleType:
    try:
        return importlib.import_module("tickrun.functions.runs")
    except ModuleNotFoundError as exc:
        raise HubError(f"running hub items needs tickrun.functions.runs ({exc})") from exc


class HubFunction:
    """``tickrun.import_function("hub://name:1.2")``. Constructor does no I/O."""

    def __init__(self, resolved: ResolvedItem) -> None:
        self.resolved = resolved
        self._module: types.ModuleType | None = None

    @property
    def spec(self) -> ItemSpec:
        return self.resolved.spec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def version(self) -> str:
        return self.spec.version

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
        platform: str | None = None,
        project: str = "default",
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run one handler as a tracked run; returns the runs API's ``RunObject``.

        ``platform`` ``"local"`` (the default) runs it in this process; ``"process"`` (also
        ``local=False``) or ``"container"`` run it as ``tickrun run hub://… --platform …``
        does, through :mod:`tickrun.controller.jobs`, and wait for it.
        """
        chosen, hspec = self.spec.handler_spec(handler or self.resolved.handler)
        params = dict(params or {})
        inputs = dict(inputs or {})
        check_arguments(self.spec, chosen, hspec, params, inputs)
        run_labels = {**dict(labels or {}), **self.run_labels(chosen)}
        run_name = name or f"{self.name}-{chosen}".replace("_", "-")
        where = platform or ("local" if local else "process")
        logger.info(
            "hub run",
            extra={
                "item": self.name,
                "version": self.version,
                "handler": chosen,
                "project": project,
                "platform": where,
            },
        )
        if where != "local":
            return self._run_elsewhere(
                where, chosen, params, inputs, project, run_name, run_labels, kwargs
            )
        return _runs_api().run_function(
            self.handler(chosen),
            params=params,
            inputs=inputs,
            project=project,
            name=run_name,
            labels=run_labels,
            **kwargs,
        )

    def job_target(self, handler: str, platform: str = "process") -> str:
        """What another process runs: this exact version as ``hub://name:x.y.z#handler`` when
        its hub settings (the environment) resolve that to the same folder, else the item's
        file (a hub object built in code, e.g. ``Hub([folder])``, is not in the environment)."""
        pinned = f"hub://{self.name}:{self.version}#{handler}"
        if platform == "container":
            return pinned  # the job runner decides what a container can run
        from .resolver import Hub

        try:
            same = Hub.from_env().resolve(pinned).folder.resolve() == self.folder.resolve()
        except TickrunError:
            same = False
        return pinned if same else f"{self.code_path}:{handler}"

    def _run_elsewhere(
        self,
        platform: str,
        handler: str,
        params: dict[str, Any],
        inputs: dict[str, Any],
        project: str,
        name: str,
        labels: dict[str, str],
        extra: dict[str, Any],
    ) -> Any:
        runs = _runs_api()
        unsupported = sorted(set(extra) - set(_JOB_OPTIONS) - {"artifact_path", "uid", "progress"})
        if unsupported:
            raise HubError(
                f"run(platform={platform!r}) cannot hand {', '.join(unsupported)} to another "
                "process; the job uses the environment's run DB and artifact store"
            )
        options = ["--project", project, "--name", name]
        for key, value in params.items():
            options += ["--param", f"{key}={_json_arg(key, value)}"]
        for key, value in labels.items():
            options += ["--label", f"{key}={value}"]
        for key, values in (extra.get("hyperparams") or {}).items():
            options += ["--hyper", f"{key}={_json_arg(key, list(values))}"]
        for kwarg, flag in _JOB_OPTIONS.items():
            if kwarg != "hyperparams" and extra.get(kwarg) is not None:
                options += [flag, str(extra[kwarg])]
        try:
            # By name and lazily: the hub does not depend on the controller package.
            jobs = importlib.import_module("tickrun.controller.jobs")
        except ImportError as exc:
            raise HubError(
                f"platform {platform!r} needs tickrun.controller, which is not installed"
            ) from exc
        uid = str(extra.get("uid") or uuid.uuid4().hex)
        artifact_path = extra.get("artifact_path")
        code: int = jobs.run_job(
            platform,
            self.job_target(handler, platform),
            inputs={k: str(getattr(v, "url", v)) for k, v in inputs.items()},
            options=options,
            artifact_path=str(artifact_path) if artifact_path else None,
            uid=uid,
        )
        return _finished_run(runs, uid, platform, code)

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
                f"platform={platform!r} needs a controller: set TICKRUN_CONTROLLER_URL or "
                "pass controller=…"
            )
        deployment = LocalDeployment(folder, port=port or free_port())
        deployment.start(ready_timeout_s=ready_timeout_s)
        return deployment


# run_function keyword → `tickrun run` flag, for runs on another platform.
_JOB_OPTIONS = {
    "hyperparams": "--hyper",
    "hyper_strategy": "--strategy",
    "selector": "--selector",
    "stop_condition": "--stop-condition",
    "max_iterations": "--max-iterations",
    "parallel": "--parallel",
    "seed": "--seed",
}


def _json_arg(key: str, value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise HubError(
            f"parameter {key!r} must be a JSON value to run on another platform "
            f"({type(value).__name__} is not)"
        ) from exc


def _finished_run(runs: types.ModuleType, uid: str, platform: str, code: int) -> Any:
    """The run a job recorded, read back as a ``RunObject`` like a local run returns."""
    settings = runs.TrackingSettings.from_env()
    db = runs.open_db(settings)
    try:
        record = db.get_run(uid)
    except TickrunError as exc:
        raise HubError(
            f"the {platform} job exited with {code} before run {uid} was recorded"
        ) from exc
    iterations = [r for r in db.list_runs(None, uid=uid, limit=100_000) if r.iteration > 0]
    iterations.sort(key=lambda r: r.iteration)
    artifacts = db.list_artifacts(record.project, uid=uid, iteration=0)
    return runs.RunObject(record, artifacts, iterations, db=db, s3=settings.s3)


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
        if unique in sys.modules:
            return sys.modules[unique]
        loader_spec = importlib.util.spec_from_file_location(unique, path)
        if loader_spec is None or loader_spec.loader is None:
            raise HubError(f"cannot load {path}")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[unique] = module
        try:
            loader_spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(unique, None)
            raise
        return module
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


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def controller_client(controller: bool | str | None = None) -> Any:
    """The controller client ``deploy()`` goes through, or None for a local replica.

    None: ``$TICKRUN_CONTROLLER_URL`` decides (the setting runs and the CLI use too); True: the
    configured controller, else the local one's state files; a URL: that controller; False:
    never (local replica).
    """
    if controller is False:
        return None
    url = controller if isinstance(controller, str) else os.environ.get(CONTROLLER_URL_ENV)
    if controller is None and not url:
        return None
    try:
        # By name and lazily: the hub does not depend on the controller package.
        client_mod = importlib.import_module("tickrun.controller.client")
    except ImportError as exc:
        raise HubError(
            f"deploying through a controller needs tickrun.controller ({exc}); "
            "pass controller=False for a local replica"
        ) from exc
    if isinstance(controller, str):
        return client_mod.ControllerClient(controller, os.environ.get("TICKRUN_TOKEN"))
    return client_mod.ControllerClient.from_env()


class ControllerDeployment:
    """A serving item deployed through the controller's API. Constructor does no I/O."""

    def __init__(self, client: Any, name: str, *, port: int | None = None) -> None:
        self.client = client
        self.name = name
        self.port = port

    @classmethod
    def create(
        cls,
        client: Any,
        folder: Path,
        *,
        platform: str | None = None,
        ready_timeout_s: float = 60.0,
    ) -> ControllerDeployment:
        """Upload ``folder`` (code + function.yaml), wait for the build and a ready replica."""
        spec = yaml.safe_load((folder / "function.yaml").read_text())
        result = client.deploy(spec, folder, platform=platform)
        fn, build = result["function"], result["build"]
        name = str(fn["name"])
        logger.info(
            "hub deploy through the controller",
            extra={"function": name, "controller": client.url, "build": build["id"]},
        )
        for line in client.follow_build(build["id"]):
            logger.debug("build", extra={"function": name, "line": line})
        final = client.get_build(build["id"])
        if final["state"] != "succeeded":
            raise HubError(
                f"the controller's build of {name} ended {final['state']}: "
                f"{final.get('message') or 'see `tickrun logs ' + name + '`'}"
            )
        ready = client.wait_ready(name, version=fn["version"], timeout_s=ready_timeout_s)
        return cls(client, name, port=ready.get("port"))

    @property
    def url(self) -> str:
        """The function's URL behind the controller's gateway."""
        return f"{self.client.url}/fn/{self.name}"

    def invoke(self, body: Any = None, *, path: str = "/", timeout_s: float = 30.0) -> Any:
        reply = self.client.invoke(
            self.name,
            path=path,
            method="POST",
            body=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            timeout_s=timeout_s,
        )
        if reply.status >= 400:
            raise HubError(f"POST {path} answered {reply.status}: {reply.body[:500]!r}")
        return json.loads(reply.body)

    def stop(self) -> None:
        """Delete the function from the controller (what leaving a ``with`` block does)."""
        self.client.delete_function(self.name)

    def __enter__(self) -> ControllerDeployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LocalDeployment:
    """A serving item running as a local replica. Constructor does no I/O."""

    def __init__(self, directory: Path, *, port: int, host: str = "127.0.0.1") -> None:
        self.directory = directory
        self.host = host
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, *, ready_timeout_s: float = 60.0) -> None:
        log = (self.directory / "replica.log").open("wb")
        cmd = [
            sys.executable,
            "-m",
            "tickrun",
            "serve",
            str(self.directory),
            "--host",
            self.host,
            "--port",
            str(self.port),
        ]
        self.process = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        log.close()
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = (self.directory / "replica.log").read_text(errors="replace")[-2000:]
                raise HubError(f"the replica exited with {self.process.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as r:  # noqa: S310
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise HubError(f"the replica was not ready within {ready_timeout_s:.0f}s")

    def invoke(self, body: Any = None, *, path: str = "/", timeout_s: float = 30.0) -> Any:
        data = json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - self.url is http://host:port
            f"{self.url}{path}",
            data=data,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as r:  # noqa: S310
                return json.loads(r.read())
        except urllib.error.HTTPError as exc:
            raise HubError(f"POST {path} answered {exc.code}: {exc.read()[:500]!r}") from exc

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> LocalDeployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
