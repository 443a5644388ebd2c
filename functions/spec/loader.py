"""Loading and validating function specs from YAML, JSON or mappings."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import SpecError
from .function import FunctionSpec
from .triggers import trigger_kinds


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model class that owns the field at ``loc`` (for 'did you mean' hints)."""
    model: type[BaseModel] = FunctionSpec
    parts = list(loc)
    if parts[:2] == ["spec", "triggers"] and len(parts) >= 4:
        kind = trigger_kinds().get(str(parts[3]))
        if kind is None:
            return None
        model, parts = kind.spec, parts[4:]
    for part in parts:
        field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
        if field is None:
            return None
        candidates = [field.annotation, *getattr(field.annotation, "__args__", ())]
        nxt = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
        if nxt is None:
            return None
        model = nxt
    return model


def _hint(loc: tuple[int | str, ...]) -> str:
    model = _model_at(loc[:-1])
    if model is None:
        return ""
    names = [f.alias or n for n, f in model.model_fields.items()]
    close = difflib.get_close_matches(str(loc[-1]), names, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _display(loc: tuple[int | str, ...]) -> str:
    # pydantic puts the union tag (`http`) after the trigger name; users never wrote it.
    parts = list(loc)
    if parts[:2] == ["spec", "triggers"] and len(parts) >= 4 and parts[3] in trigger_kinds():
        del parts[3]
    return ".".join(str(p) for p in parts) or "<root>"


def format_validation_error(exc: ValidationError) -> tuple[str, list[dict[str, str]]]:
    fields: list[dict[str, str]] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        path = _display(loc)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field" + _hint(loc)
        elif msg.startswith("Value error, "):
            msg = msg.removeprefix("Value error, ")
        fields.append({"field": path, "message": msg})
    summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields[:5])
    if len(fields) > 5:
        summary += f"; and {len(fields) - 5} more"
    return f"invalid function spec: {summary}", fields


def parse_spec(data: Any) -> FunctionSpec:
    """Validate a mapping into a :class:`FunctionSpec`; errors name each bad field's path."""
    if not isinstance(data, dict):
        raise SpecError("invalid function spec: the document must be a mapping")
    try:
        return FunctionSpec.model_validate(data)
    except ValidationError as exc:
        message, fields = format_validation_error(exc)
        raise SpecError(message, detail=fields) from exc


def load_spec_text(text: str, *, source: str = "<spec>") -> FunctionSpec:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(f"{source} is not valid YAML{where}") from exc
    return parse_spec(data)


def load_spec(path: str | Path) -> FunctionSpec:
    """Load ``function.yaml`` (or JSON) from a file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"cannot read function spec {p}: {exc.strerror}") from exc
    return load_spec_text(text, source=str(p))


def default_spec(name: str, handler: str = "main:handler") -> FunctionSpec:
    """The spec used when a function directory has no ``function.yaml``."""
    return parse_spec({"metadata": {"name": name}, "spec": {"handler": handler}})
