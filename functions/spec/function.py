"""The function spec: a compatible subset of Nuclio's ``function.yaml`` plus tickrun's own fields.

Fields Nuclio has and tickrun does not act on locally (``volumes``, ``nodeSelector``, …) are
accepted so real Nuclio files load, and are passed to the platforms that understand them.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from ..names import DNS_LABEL
from .durations import DurationS
from .triggers import SpecModel, TriggerSpec, trigger_kind

_NAME = DNS_LABEL
_HANDLER = re.compile(r"^[A-Za-z_][\w.]*(:[A-Za-z_]\w*)?$")
_CPU = re.compile(r"^\d+(\.\d+)?m?$")
_MEMORY = re.compile(r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|K|M|G|T|k)?$")
_MEMORY_UNIT = {
    "": 1,
    "k": 1000,
    "K": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
}


class Metadata(SpecModel):
    name: str
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                f"{value!r} is not a valid function name: lowercase letters, digits and '-', "
                "starting and ending with a letter or digit, at most 63 characters"
            )
        return value

    @field_validator("labels", "annotations", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        # Nuclio's own examples carry numeric label values (`l3: 100`).
        if isinstance(value, dict):
            return {str(k): str(v) for k, v in value.items()}
        return value


class EnvVar(SpecModel):
    name: str = Field(min_length=1)
    value: str | None = None
    value_from: dict[str, Any] | None = Field(default=None, alias="valueFrom")

    @field_validator("value", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        return value if value is None or isinstance(value, str) else str(value)

    @model_validator(mode="after")
    def _one_source(self) -> EnvVar:
        if self.value_from is None:
            return self
        if self.value is not None:
            raise ValueError(f"env {self.name}: give value or valueFrom, not both")
        ref = self.value_from.get("secretKeyRef")
        if set(self.value_from) != {"secretKeyRef"} or not isinstance(ref, dict):
            raise ValueError(
                f"env {self.name}: valueFrom supports secretKeyRef only "
                "({secretKeyRef: {name: <secret>, key: <key>}})"
            )
        if not all(isinstance(ref.get(k), str) and ref.get(k) for k in ("name", "key")):
            raise ValueError(f"env {self.name}: secretKeyRef needs a name and a key")
        return self

    @property
    def secret_ref(self) -> tuple[str, str] | None:
        """(secret, key) for a ``valueFrom.secretKeyRef`` entry: resolved at replica launch."""
        if self.value_from is None:
            return None
        ref = self.value_from["secretKeyRef"]
        return str(ref["name"]), str(ref["key"])


class ResourceAmounts(SpecModel):
    cpu: str | None = None
    memory: str | None = None
    gpu: str | None = Field(default=None, alias="nvidia.com/gpu")

    @field_validator("cpu", "memory", "gpu", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        return value if value is None or isinstance(value, str) else str(value)

    @field_validator("cpu")
    @classmethod
    def _cpu(cls, value: str | None) -> str | None:
        if value is not None and not _CPU.match(value):
            raise ValueError(f"cpu {value!r} is not a quantity such as '500m' or '2'")
        return value

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str | None) -> str | None:
        if value is not None and not _MEMORY.match(value):
            raise ValueError(f"memory {value!r} is not a quantity such as '512Mi' or '2Gi'")
        return value

    @property
    def cpus(self) -> float | None:
        if self.cpu is None:
            return None
        return float(self.cpu[:-1]) / 1000 if self.cpu.endswith("m") else float(self.cpu)

    @property
    def memory_bytes(self) -> int | None:
        if self.memory is None:
            return None
        match = re.match(r"^(\d+(?:\.\d+)?)(\D*)$", self.memory)
        if match is None:  # pragma: no cover - the validator already matched
            return None
        return int(float(match.group(1)) * _MEMORY_UNIT[match.group(2)])


class Resources(SpecModel):
    requests: ResourceAmounts = Field(default_factory=ResourceAmounts)
    limits: ResourceAmounts = Field(default_factory=ResourceAmounts)


class BuildSpec(SpecModel):
    commands: list[str] = Field(default_factory=list)
    base_image: str | None = Field(default=None, alias="baseImage")
    image: str | None = None
    no_cache: bool = Field(default=False, alias="noCache")
    no_base_images_pull: bool = Field(default=False, alias="noBaseImagesPull")
    offline: bool = False
    path: str | None = None
    registry: str | None = None
    function_source_code: str | None = Field(default=None, alias="functionSourceCode")
    function_config_path: str | None = Field(default=None, alias="functionConfigPath")
    code_entry_type: str | None = Field(default=None, alias="codeEntryType")
    code_entry_attributes: dict[str, Any] | None = Field(default=None, alias="codeEntryAttributes")
    onbuild_image: str | None = Field(default=None, alias="onbuildImage")
    runtime_attributes: dict[str, Any] | None = Field(default=None, alias="runtimeAttributes")
    script_paths: list[str] = Field(default_factory=list, alias="scriptPaths")
    added_object_paths: dict[str, str] = Field(default_factory=dict, alias="addedObjectPaths")
    dependencies: list[str] = Field(default_factory=list)
    timestamp: int | None = None
    mode: str | None = None


class Spec(SpecModel):
    # `triggers` is a union over the registered kinds, whose packages import this one: build the
    # validator on first use, when they are importable (see .triggers).
    model_config = ConfigDict(defer_build=True)

    runtime: str = "python:3.11"
    handler: str = "main:handler"
    description: str | None = None
    image: str | None = None
    env: list[EnvVar] = Field(default_factory=list)
    env_from: list[dict[str, Any]] = Field(default_factory=list, alias="envFrom")
    replicas: int | None = Field(default=None, ge=0)
    min_replicas: int | None = Field(default=None, alias="minReplicas", ge=0)
    max_replicas: int | None = Field(default=None, alias="maxReplicas", ge=1)
    target_cpu_percent: int | None = Field(default=None, alias="targetCPU", ge=1, le=100)
    triggers: dict[str, TriggerSpec] = Field(default_factory=dict)
    build: BuildSpec = Field(default_factory=BuildSpec)
    resources: Resources = Field(default_factory=Resources)
    event_timeout_s: DurationS | None = Field(default=None, alias="eventTimeout")
    readiness_timeout_s: int | None = Field(default=None, alias="readinessTimeoutSeconds", ge=1)
    disable_default_http_trigger: bool = Field(default=False, alias="disableDefaultHTTPTrigger")
    # Accepted for compatibility with real Nuclio files; platforms that understand them use them.
    version: int | None = None
    alias: str | None = None
    image_hash: str | None = Field(default=None, alias="imageHash")
    volumes: list[dict[str, Any]] = Field(default_factory=list)
    logger_sinks: list[dict[str, Any]] = Field(default_factory=list, alias="loggerSinks")
    platform: dict[str, Any] = Field(default_factory=dict)
    runtime_attributes: dict[str, Any] = Field(default_factory=dict, alias="runtimeAttributes")
    security_context: dict[str, Any] = Field(default_factory=dict, alias="securityContext")
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    priority_class_name: str | None = Field(default=None, alias="priorityClassName")
    service_type: str | None = Field(default=None, alias="serviceType")
    # tickrun's own fields, where Nuclio has none.
    requirements: list[str] = Field(default_factory=list)
    workers: int = Field(default=1, ge=1, le=256, description="OS worker processes per replica")
    drain_timeout_s: DurationS = Field(default=30.0, alias="drainTimeout")
    idle_timeout_s: DurationS = Field(default=300.0, alias="scaleToZeroIdleTime")
    target_in_flight: int = Field(default=8, alias="targetInFlight", ge=1)
    # Kafka consumer-group lag (records) one replica is expected to keep up with; the
    # autoscaler reads the peak lag over lagWindow (controller/autoscaler.py).
    target_lag: int = Field(default=1000, alias="targetLag", ge=1)
    lag_window_s: DurationS = Field(default=30.0, alias="lagWindow", gt=0, le=3600)

    @field_validator("event_timeout_s", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # `nuctl export` writes `eventTimeout: ""` for "no timeout".
        return None if value == "" else value

    @field_validator("runtime")
    @classmethod
    def _python_only(cls, value: str) -> str:
        if not (value == "python" or value.startswith("python:")):
            raise ValueError(f"runtime {value!r} is not supported: tickrun runs Python functions")
        return value

    @field_validator("handler")
    @classmethod
    def _handler_form(cls, value: str) -> str:
        if not _HANDLER.match(value):
            raise ValueError(f"handler {value!r} is not 'module:entrypoint' (e.g. 'main:handler')")
        return value if ":" in value else f"{value}:handler"

    @field_validator("env", mode="before")
    @classmethod
    def _env_map(cls, value: Any) -> Any:
        if isinstance(value, dict):  # `env: {K: V}` is a common shorthand
            return [{"name": k, "value": v} for k, v in value.items()]
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Spec:
        for key, trigger in self.triggers.items():
            if not trigger.name:
                trigger.name = key
        lo, hi = self.min_replicas, self.max_replicas
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"minReplicas ({lo}) is greater than maxReplicas ({hi})")
        if sum(1 for t in self.triggers.values() if t.kind == "http" and not t.disabled) > 1:
            raise ValueError("at most one enabled http trigger per function")
        return self

    @property
    def handler_module(self) -> str:
        return self.handler.split(":", 1)[0]

    @property
    def handler_entrypoint(self) -> str:
        return self.handler.split(":", 1)[1]

    def env_dict(self) -> dict[str, str]:
        return {e.name: e.value for e in self.env if e.value is not None}

    def secret_refs(self) -> dict[str, tuple[str, str]]:
        """Env name → (secret, key) of the entries whose value lives in the secret store."""
        return {e.name: ref for e in self.env if (ref := e.secret_ref) is not None}

    def effective_triggers(self) -> list[TriggerSpec]:
        """Enabled triggers, with Nuclio's default HTTP trigger added when none is configured."""
        triggers: list[TriggerSpec] = [t for t in self.triggers.values() if not t.disabled]
        has_http = any(t.kind == "http" for t in self.triggers.values())
        if not has_http and not self.disable_default_http_trigger:
            triggers.insert(0, trigger_kind("http").spec(kind="http", name="default-http"))
        return triggers

    def replica_bounds(self) -> tuple[int, int]:
        """(min, max) replicas, as Nuclio reads ``replicas`` / ``minReplicas`` / ``maxReplicas``."""
        if self.replicas is not None and self.min_replicas is None and self.max_replicas is None:
            return self.replicas, max(self.replicas, 1)
        lo = self.min_replicas if self.min_replicas is not None else 1
        hi = self.max_replicas if self.max_replicas is not None else max(lo, 1)
        return lo, hi


class FunctionSpec(SpecModel):
    model_config = ConfigDict(defer_build=True)  # holds Spec (see there)

    api_version: Literal["nuclio.io/v1", "nuclio.io/v1beta1"] = Field(
        default="nuclio.io/v1", alias="apiVersion"
    )
    kind: Literal["NuclioFunction", "Function"] = "NuclioFunction"
    metadata: Metadata
    spec: Spec = Field(default_factory=Spec)
    # A `status` section is written by platforms, never read; exported files may carry it.
    status: dict[str, Any] | None = Field(default=None, exclude=True)

    @property
    def name(self) -> str:
        return self.metadata.name

    def to_yaml_dict(self) -> dict[str, Any]:
        """The spec as a Nuclio-style mapping (camelCase keys, defaults left out)."""
        return self.model_dump(
            by_alias=True, exclude_none=True, exclude_defaults=True, mode="json"
        ) | {
            "apiVersion": self.api_version,
            "kind": self.kind,
        }
