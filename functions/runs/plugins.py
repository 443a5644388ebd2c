"""What tracked runs need from the layers above them, and how they find it: entry points.

Tracked runs sit below the controller and the hub (docs: DESIGN.md §5), yet ``run_function
("hub://…")`` needs the hub to resolve a target, and ``run(runner="subprocess")`` needs the
controller's job runner. Both are found here, through the ``tickrun.*`` entry-point groups of
pyproject.toml (the one plugin registry; a package added later registers the same way), or set
in code with :func:`register`. Nothing in this layer imports the layers above by name.

- ``tickrun.run_targets``: scheme → ``resolve(target) -> ResolvedTarget``;
- ``tickrun.job_runners``: runner → ``launch(JobRequest) -> exit status``;
- ``tickrun.controller_clients``: ``default`` → a controller client class (``from_env()``,
  ``(url, token)``), the hub's way to deploy through a controller.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

from ..datamodel import Meta, Model
from ..errors import BadRequestError
from ..settings import LOG_FORMAT

if TYPE_CHECKING:
    from importlib.metadata import EntryPoints

    from ..spec import FunctionSpec

RUN_TARGETS = "tickrun.run_targets"
JOB_RUNNERS = "tickrun.job_runners"
CONTROLLER_CLIENTS = "tickrun.controller_clients"
MAX_PARALLEL = 1000


@dataclass(frozen=True)
class ResolvedTarget:
    """A run target of a plugin scheme (``hub://…``), ready for ``run_function``."""

    fn: Callable[..., Any]
    ref: str  # what the run record names, and what another process can resolve again
    labels: dict[str, str] = field(default_factory=dict)
    name: str | None = None  # the run's default name
    # Refuses unknown or missing arguments before the run is recorded (params, inputs).
    check: Callable[[Mapping[str, Any], Mapping[str, Any]], None] | None = None


TargetResolver = Callable[[str], ResolvedTarget]


@dataclass(frozen=True, kw_only=True)
class JobRequest(Model):
    """One tracked run for another process: what ``run_function`` takes, as data.

    The CLI (``tickrun run … --runner``) and the hub (``HubFunction.run(runner=…)``) both
    submit this; the job process gets it back as JSON and calls ``run_function`` with it.
    """

    # Where the job runs: local (the caller's process), subprocess, container or kubernetes (a
    # Job). Not a controller platform: a job is one tracked run, never a function's replica.
    runner: str
    target: str  # path/to/file.py:fn, module:fn or hub://name:x.y.z#handler
    uid: str
    params: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)  # name → path or URL
    # name → a list of values, or (strategy optuna) a range {"low": …, "high": …, "log": …}
    hyperparams: dict[str, list[Any] | dict[str, Any]] = field(default_factory=dict)
    hyper_strategy: Literal["grid", "list", "random", "optuna"] = "grid"
    selector: str | None = None
    stop_condition: str | None = None
    max_iterations: Annotated[int, Meta(ge=1)] | None = None
    # Iterations at once: worker processes here, a Job's parallelism on Kubernetes.
    parallel: Annotated[int, Meta(ge=1, le=MAX_PARALLEL)] = 1
    seed: int | None = None
    project: str = "default"
    name: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    artifact_path: str | None = None
    # How long the whole job may run: the kubernetes runner's activeDeadlineSeconds (the other
    # runners refuse it rather than ignore it).
    timeout_s: Annotated[int, Meta(ge=1)] | None = None
    # What the job's image needs beyond the folder's function.yaml (a hub item's requirements);
    # only runners that build an image take it.
    requirements: list[str] = field(default_factory=list)

    def run_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``run_function`` in the job process (uid included)."""
        kwargs = self.model_dump(exclude={"runner", "target", "timeout_s", "requirements"})
        if not self.hyperparams:
            kwargs["hyperparams"] = None  # not a sweep
        if not self.artifact_path:
            kwargs.pop("artifact_path")
        return kwargs


def configure_job_logging() -> None:
    """Logging of a process started for a JobRequest (job.main, indexed.main), in the format
    LOG_FORMAT asks for."""
    from ..logs import configure_logging

    fmt = LOG_FORMAT.get()
    configure_logging(json_logs=None if fmt is None else fmt == "json")


def parse_job_request(argv: Sequence[str] | None) -> JobRequest:
    """A job process's one argument, the JobRequest as JSON (``sys.argv`` when ``argv`` is
    None). Raises ValueError (pydantic's ValidationError is one) for a bad request."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        raise ValueError("expects one argument, the job request as JSON")
    return JobRequest.model_validate_json(args[0])


class Reply(Protocol):
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes


class ControllerApi(Protocol):
    """What the hub needs of a controller client (``tickrun.controller.client``) to deploy."""

    url: str

    def deploy(
        self,
        spec: FunctionSpec | Mapping[str, Any],
        code_dir: Path | None,
        *,
        platform: str | None = None,
    ) -> dict[str, Any]: ...

    def follow_build(self, build_id: str) -> Iterator[str]: ...

    def get_build(self, build_id: str) -> dict[str, Any]: ...

    def wait_ready(
        self, name: str, *, version: int | None = None, timeout_s: float = 600
    ) -> dict[str, Any]: ...

    def invoke(
        self,
        name: str,
        *,
        path: str = "/",
        method: str = "GET",
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> Reply: ...

    def delete_function(self, name: str) -> None: ...


class ControllerApiClass(Protocol):
    """The registered client class: built from a URL and a token, or from the environment."""

    def __call__(self, url: str, token: str | None) -> ControllerApi: ...

    def from_env(self) -> ControllerApi: ...


class JobLauncher(Protocol):
    def __call__(self, request: JobRequest) -> int:
        """Run ``request`` to its end elsewhere; the job's exit status (0: completed)."""


_registered: dict[str, dict[str, Any]] = {}


def register(group: str, name: str, value: Any) -> None:
    """Set a plugin in code (tests, embedding); it wins over an entry point of the same name."""
    _registered.setdefault(group, {})[name] = value


def unregister(group: str, name: str) -> None:
    _registered.get(group, {}).pop(name, None)


def _entry_points(group: str, name: str | None = None) -> EntryPoints:
    # importlib.metadata (~12 ms) and its scan of every installed distribution (more): only
    # when a plugin is looked up, never on import (the CLI imports this module's users).
    from importlib.metadata import entry_points

    if name is None:
        return entry_points(group=group)
    return entry_points(group=group, name=name)


def names(group: str) -> list[str]:
    found = {ep.name for ep in _entry_points(group)}
    return sorted(found | set(_registered.get(group, {})))


def plugin(group: str, name: str, *, needs: str) -> Any:
    """The plugin ``name`` of ``group``; a clear 400 when no installed package provides it."""
    chosen: Mapping[str, Any] = _registered.get(group, {})
    if name in chosen:
        return chosen[name]
    for ep in _entry_points(group, name=name):
        try:
            return ep.load()
        except ImportError as exc:
            raise BadRequestError(f"{needs} needs {ep.value}, which cannot be imported") from exc
    raise BadRequestError(
        f"{needs} needs a {group} plugin named {name!r}, and none is installed "
        f"(installed: {', '.join(names(group)) or 'none'}; reinstall tickrun to register them)"
    )


def job_launcher(runner: str) -> JobLauncher:
    launcher: JobLauncher = plugin(JOB_RUNNERS, runner, needs=f"job runner {runner!r}")
    return launcher


def target_resolver(scheme: str) -> TargetResolver:
    resolver: TargetResolver = plugin(RUN_TARGETS, scheme, needs=f"a {scheme}:// target")
    return resolver


def controller_client_class() -> ControllerApiClass:
    client_class: ControllerApiClass = plugin(
        CONTROLLER_CLIENTS, "default", needs="a controller client"
    )
    return client_class


__all__ = [
    "CONTROLLER_CLIENTS",
    "JOB_RUNNERS",
    "RUN_TARGETS",
    "ControllerApi",
    "ControllerApiClass",
    "JobLauncher",
    "JobRequest",
    "ResolvedTarget",
    "TargetResolver",
    "controller_client_class",
    "job_launcher",
    "names",
    "plugin",
    "register",
    "target_resolver",
    "unregister",
]
