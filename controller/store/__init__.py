"""The controller's durable state: functions, builds, replicas and their events."""

from __future__ import annotations

from .db import Store
from .models import BuildRow, EventRow, FunctionRow, ReplicaRow

__all__ = ["BuildRow", "EventRow", "FunctionRow", "ReplicaRow", "Store"]
