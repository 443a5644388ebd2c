"""Triggers: one package per kind (config, event mapping, trigger) behind one interface.

The interface itself is :class:`tickrun.functions.interfaces.Trigger`; :class:`BaseTrigger`
gives implementations the common parts.
"""

from __future__ import annotations

from .base import BaseTrigger

__all__ = ["BaseTrigger"]
