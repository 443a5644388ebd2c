"""A pipeline's definition: steps (any ``run_function`` target), the Refs between them, and the
checks that refuse a bad graph before anything runs.

Nothing here does I/O: building a pipeline and calling ``graph()`` only look at the
definition; ``Pipeline.run`` (:mod:`.runnable`) hands it to :mod:`.execution`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import BadRequestError
from ..names import DNS_LABEL, is_project

NAME = DNS_LABEL
STRATEGIES = ("grid", "list", "random", "optuna")
RESULT_UID = "uid"  # result("uid"): the producing step run's uid


class PipelineError(BadRequestError):
    """A pipeline definition is invalid (cycle, unknown or duplicate step, bad name): 400."""


@dataclass(frozen=True)
class Ref:
    """A value another step produces, resolved when that step has finished.

    ``kind="output"``: the artifact URI (``store://…``) the step logged under ``key``;
    ``kind="result"``: ``results[key]`` (``"uid"``: the step run's uid).
    """

    step: str
    kind: Literal["output", "result"]
    key: str
    # The pipeline the producing step belongs to ("" when made by hand); not part of equality.
    pipeline: str = field(default="", compare=False)

    def __str__(self) -> str:
        return f"{{{self.step}.{self.kind}s.{self.key}}}"

    def to_json(self) -> dict[str, str]:
        return {"ref": self.step, "kind": self.kind, "key": self.key}


Target = str | Callable[..., Any]


@dataclass
class Step:
    """One node: a target run with params/inputs (values or Refs) and its policies."""

    name: str
    target: Target
    params: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    hyperparams: dict[str, Any] = field(default_factory=dict)
    selector: str | None = None
    hyper_strategy: str = "grid"
    retries: int = 0
    retry_backoff_s: float = 1.0
    cache: bool = True
    after: tuple[str, ...] = ()
    pipeline: str = ""

    def output(self, key: str) -> Ref:
        """The artifact URI this step logs under ``key`` (for another step's inputs/params)."""
        return Ref(self.name, "output", _key(key), self.pipeline)

    def result(self, key: str) -> Ref:
        """``results[key]`` of this step's run (``"uid"``: the run's uid)."""
        return Ref(self.name, "result", _key(key), self.pipeline)

    @property
    def target_name(self) -> str:
        if isinstance(self.target, str):
            return self.target
        module = getattr(self.target, "__module__", "")
        return f"{module}:{getattr(self.target, '__qualname__', repr(self.target))}"

    def refs(self) -> list[Ref]:
        values = [*self.params.values(), *self.inputs.values()]
        return [v for v in values if isinstance(v, Ref)]

    def upstream(self) -> list[str]:
        """The steps this one waits for, in definition order, without repeats."""
        seen: dict[str, None] = {}
        for r in self.refs():
            seen.setdefault(r.step, None)
        for a in self.after:
            seen.setdefault(a, None)
        return list(seen)


def _key(key: str) -> str:
    if not isinstance(key, str) or not key:
        raise PipelineError(f"a Ref's key must be a non-empty string, got {key!r}")
    return key


def _name(kind: str, name: Any) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise PipelineError(
            f"{kind} name {name!r} must be 1-63 of a-z, 0-9 and '-' (not at either end)"
        )
    return name


class PipelineSpec:
    """A DAG of steps (the definition; :class:`~.runnable.Pipeline` adds ``run``). Constructing
    one does no I/O. ``retries``/``retry_backoff_s`` are the default retry policy of its steps.
    """

    def __init__(
        self,
        name: str,
        *,
        project: str = "default",
        retries: int = 0,
        retry_backoff_s: float = 1.0,
        description: str = "",
    ) -> None:
        self.name = _name("pipeline", name)
        if not is_project(project):
            raise PipelineError(
                f"project {project!r} must be 1-63 of letters, digits, '_', '.' and '-'"
            )
        self.project = project
        self.retries = _retries(retries)
        self.retry_backoff_s = _backoff(retry_backoff_s)
        self.description = description
        self.steps: dict[str, Step] = {}

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, steps={list(self.steps)})"

    def step(
        self,
        name: str,
        target: Target,
        *,
        params: Mapping[str, Any] | None = None,
        inputs: Mapping[str, Any] | None = None,
        hyperparams: Mapping[str, Any] | None = None,
        selector: str | None = None,
        hyper_strategy: str = "grid",
        retries: int | None = None,
        retry_backoff_s: float | None = None,
        cache: bool = True,
        after: Iterable[Step | str] = (),
    ) -> Step:
        """Add a step; Refs and ``after`` must name steps already added (so no cycle can form
        through this method; :meth:`validate` still checks a graph edited by hand)."""
        _name("step", name)
        if name in self.steps:
            raise PipelineError(f"pipeline {self.name}: step {name!r} is defined twice")
        if not callable(target) and not (isinstance(target, str) and target.strip()):
            raise PipelineError(f"step {name}: target must be a callable or a target string")
        if hyper_strategy not in STRATEGIES:
            raise PipelineError(
                f"step {name}: hyper_strategy must be one of {', '.join(STRATEGIES)}, "
                f"got {hyper_strategy!r}"
            )
        step = Step(
            name=name,
            target=target,
            params=dict(params or {}),
            inputs=dict(inputs or {}),
            hyperparams=dict(hyperparams or {}),
            selector=selector,
            hyper_strategy=hyper_strategy,
            retries=self.retries if retries is None else _retries(retries),
            retry_backoff_s=(
                self.retry_backoff_s if retry_backoff_s is None else _backoff(retry_backoff_s)
            ),
            cache=bool(cache),
            after=tuple(self._after_name(name, a) for a in after),
            pipeline=self.name,
        )
        for value in step.inputs.values():
            if not isinstance(value, Ref) and not isinstance(value, str):
                raise PipelineError(
                    f"step {name}: an input is a URI string or a Ref, got {type(value).__name__}"
                )
        self._check_refs(step)
        self.steps[name] = step
        return step

    def _after_name(self, name: str, a: Step | str) -> str:
        if isinstance(a, Step):
            if self.steps.get(a.name) is not a:
                raise PipelineError(
                    f"step {name}: after={a.name!r} is a step of pipeline {a.pipeline}, "
                    f"not of {self.name}"
                )
            return a.name
        return str(a)

    def _check_refs(self, step: Step) -> None:
        for r in step.refs():
            if r.pipeline and r.pipeline != self.name:
                raise PipelineError(
                    f"step {step.name} refers to step {r.step!r} of pipeline {r.pipeline}, "
                    f"not of {self.name}"
                )
        for up in step.upstream():
            if up == step.name:
                raise PipelineError(f"step {step.name} depends on itself")
            if up not in self.steps:
                raise PipelineError(
                    f"step {step.name} refers to step {up!r}, which is not in pipeline "
                    f"{self.name} (known: {', '.join(self.steps) or 'none'})"
                )

    def validate(self) -> list[str]:
        """Check every step's references and that the graph has no cycle; the steps in an
        order that runs each after its upstream steps."""
        if not self.steps:
            raise PipelineError(f"pipeline {self.name} has no steps")
        for step in self.steps.values():
            for up in step.upstream():
                if up not in self.steps:
                    raise PipelineError(
                        f"step {step.name} refers to step {up!r}, which is not in pipeline "
                        f"{self.name}"
                    )
        return topological_order({s.name: s.upstream() for s in self.steps.values()})

    def edges(self) -> list[list[str]]:
        return [[up, s.name] for s in self.steps.values() for up in s.upstream()]

    def graph(self) -> dict[str, Any]:
        """``{"nodes": [{"name", "target"}…], "edges": [[upstream, step]…]}`` (no states)."""
        self.validate()
        return {
            "pipeline": self.name,
            "nodes": [{"name": s.name, "target": s.target_name} for s in self.steps.values()],
            "edges": self.edges(),
        }


def topological_order(deps: Mapping[str, list[str]]) -> list[str]:
    """Kahn's order (definition order among ready nodes); PipelineError naming a cycle."""
    remaining = {n: set(d) for n, d in deps.items()}
    order: list[str] = []
    while remaining:
        ready = [n for n, d in remaining.items() if not d]
        if not ready:
            raise PipelineError(f"the pipeline's steps form a cycle: {_cycle(remaining)}")
        for n in ready:
            order.append(n)
            del remaining[n]
        for d in remaining.values():
            d.difference_update(ready)
    return order


def _cycle(remaining: Mapping[str, set[str]]) -> str:
    # Walk upstream from any node left until a node repeats: that loop is a cycle.
    node = next(iter(remaining))
    path: list[str] = []
    while node not in path:
        path.append(node)
        node = next(iter(sorted(remaining[node])))
    loop = path[path.index(node) :]
    return " -> ".join([*reversed(loop), loop[-1]])


def _retries(n: Any) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= 100:
        raise PipelineError(f"retries must be an integer from 0 to 100, got {n!r}")
    return n


def _backoff(s: Any) -> float:
    if not isinstance(s, int | float) or isinstance(s, bool) or not 0 <= s <= 3600:
        raise PipelineError(f"retry_backoff_s must be from 0 to 3600 seconds, got {s!r}")
    return float(s)


__all__ = ["PipelineError", "PipelineSpec", "Ref", "Step", "Target", "topological_order"]
