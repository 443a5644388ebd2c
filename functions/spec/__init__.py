"""Function specs: Nuclio's ``function.yaml`` subset as typed, validated models."""

from __future__ import annotations

from .durations import DurationS, parse_duration_s
from .function import BuildSpec, EnvVar, FunctionSpec, Metadata, Resources, Spec
from .loader import default_spec, load_spec, load_spec_text, parse_spec
from .triggers import (
    TRIGGER_KINDS,
    CronAttributes,
    CronTriggerSpec,
    HttpAttributes,
    HttpTriggerSpec,
    KafkaAttributes,
    KafkaTriggerSpec,
    TriggerSpec,
)

__all__ = [
    "TRIGGER_KINDS",
    "BuildSpec",
    "CronAttributes",
    "CronTriggerSpec",
    "DurationS",
    "EnvVar",
    "FunctionSpec",
    "HttpAttributes",
    "HttpTriggerSpec",
    "KafkaAttributes",
    "KafkaTriggerSpec",
    "Metadata",
    "Resources",
    "Spec",
    "TriggerSpec",
    "default_spec",
    "load_spec",
    "load_spec_text",
    "parse_duration_s",
    "parse_spec",
]
