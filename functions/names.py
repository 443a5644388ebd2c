"""The name rules shared by functions, schedules, pipelines and runs (no pydantic here: the CLI
imports it for `--help`)."""

from __future__ import annotations

import re

# A DNS label (RFC 1123): a function, schedule or pipeline step name, also valid for Kubernetes.
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# A run's project: what the run DB keeps and artifact paths are made of.
PROJECT_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
PROJECT_MAX = 63
PROJECT = re.compile(PROJECT_PATTERN)


def slug(text: str) -> str:
    """A DNS label from free text: lowercase letters, digits and '-' ("" when nothing is left)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:63].rstrip("-")


def is_project(value: object) -> bool:
    return isinstance(value, str) and len(value) <= PROJECT_MAX and bool(PROJECT.match(value))
