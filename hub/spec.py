"""The hub item spec (``item.yaml``): what an item is, which handlers it has and what they take.

An item version is a folder holding ``item.yaml`` and the item's code. The spec is strict
(``extra="forbid"``) so a typo in a hand-written ``item.yaml`` fails loudly at index time rather
than silently dropping a parameter's documentation.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tickrun.functions.errors import HubError, SpecError

from .statcache import Signature, StatCache, signature
from .versions import Version

ITEM_FILE = "item.yaml"
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_MODULE = re.compile(r"^[A-Za-z_]\w*$")
# One segment of an item file's path: no leading dot (so no '.', '..' or hidden files), no
# backslash, colon or control character (no Windows separators, drive letters or ADS tricks).
_FILE_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]{0,127}$")
_MAX_FILE_SEGMENTS = 8


def check_item_file(name: Any) -> str:
    """``name`` if it is a safe relative item file path (``data/table.csv``), else ValueError.

    Item files are copied into caches and exported folders by joining them to a folder, so a
    name must not be absolute, climb out with ``..`` or hide a separator in a backslash.
    """
    if not isinstance(name, str) or not name:
        raise ValueError("an item file must be a non-empty relative path")
    segments = name.split("/")
    if len(segments) > _MAX_FILE_SEGMENTS or not all(_FILE_SEGMENT.match(s) for s in segments):
        raise ValueError(
            f"item file {name[:80]!r} must be a relative path of segments made of letters, "
            "digits and ._+- (no leading dot, no '..', no absolute path, no backslash)"
        )
    return name


def check_item_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"{str(name)[:80]!r} is not a valid item name: lowercase letters, digits, '_' and "
            "'-', starting with a letter"
        )
    return name


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ParamSpec(_Model):
    """One handler parameter; ``input: true`` marks a data input (passed as a DataItem)."""

    name: str
    type: str = "str"
    default: Any = None
    required: bool = False
    doc: str = ""
    input: bool = False


class HandlerSpec(_Model):
    doc: str = ""
    parameters: list[ParamSpec] = Field(default_factory=list)
    outputs: list[str] = Field(default_factory=list, description="results and artifacts logged")
    accepts_extra: bool = Field(
        default=False,
        description="handler takes **kwargs (e.g. MLRun's CLASS_*/FIT_* prefixes); "
        "unknown params are passed through instead of rejected",
    )

    def param(self, name: str) -> ParamSpec | None:
        return next((p for p in self.parameters if p.name == name), None)


class EnvSpec(_Model):
    name: str
    doc: str = ""
    default: str | None = None
    required: bool = False


class ServingSpec(_Model):
    """How an item is deployed as a function (its Nuclio handler and env). Serving items must
    have one; a job item may too (market_features' streaming handler)."""

    handler: str = Field(description="module:entrypoint of the Nuclio handler")
    env: list[EnvSpec] = Field(default_factory=list)
    workers: int = Field(default=1, ge=1, le=64)
    max_workers: int = Field(
        default=16,
        ge=1,
        alias="maxWorkers",
        description="concurrent handler slots per worker process",
    )


class ItemSpec(_Model):
    name: str
    version: str
    description: str
    kind: Literal["job", "serving"] = "job"
    categories: list[str] = Field(default_factory=list)
    module: str = Field(description="the item's Python module (file name without .py)")
    default_handler: str | None = None
    handlers: dict[str, HandlerSpec] = Field(default_factory=dict)
    serving: ServingSpec | None = None
    requirements: list[str] = Field(default_factory=list)
    files: list[str] = Field(
        default_factory=list, description="extra files shipped with the item besides the module"
    )
    labels: dict[str, str] = Field(default_factory=dict)
    maintainers: list[str] = Field(default_factory=list)
    doc: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_item_name(value)

    @field_validator("files")
    @classmethod
    def _files(cls, value: list[str]) -> list[str]:
        return [check_item_file(f) for f in value]

    @field_validator("version")
    @classmethod
    def _version(cls, value: Any) -> str:
        Version.parse(str(value))  # raises ValueError with a readable message
        return str(value)

    @field_validator("module")
    @classmethod
    def _module(cls, value: str) -> str:
        if not _MODULE.match(value):
            raise ValueError(f"module {value!r} is not a Python module name")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ItemSpec:
        if self.kind == "serving" and self.serving is None:
            raise ValueError("a serving item needs a 'serving' section (handler, env)")
        if self.kind == "job" and not self.handlers:
            raise ValueError("a job item needs at least one handler")
        if self.default_handler is not None and self.default_handler not in self.handlers:
            raise ValueError(
                f"default_handler {self.default_handler!r} is not one of the handlers "
                f"({', '.join(self.handlers) or 'none'})"
            )
        return self

    @property
    def parsed_version(self) -> Version:
        return Version.parse(self.version)

    @property
    def code_files(self) -> list[str]:
        return [f"{self.module}.py", *self.files]

    def handler_spec(self, handler: str | None) -> tuple[str, HandlerSpec]:
        """(name, spec) of ``handler`` or the default; a clear error lists the handlers."""
        chosen = (
            handler
            or self.default_handler
            or (next(iter(self.handlers)) if len(self.handlers) == 1 else None)
        )
        if chosen is None or chosen not in self.handlers:
            what = f"handler {chosen!r}" if chosen else "no handler given and no default"
            raise HubError(
                f"{self.name}:{self.version}: {what}; handlers: "
                f"{', '.join(sorted(self.handlers)) or 'none'}"
            )
        return chosen, self.handlers[chosen]

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "kind": self.kind,
            "description": self.description,
            "categories": self.categories,
            "handlers": sorted(self.handlers),
        }


def parse_item(data: Any, *, source: str = "item.yaml") -> ItemSpec:
    if not isinstance(data, dict):
        raise SpecError(f"{source}: an item spec must be a mapping")
    try:
        return ItemSpec.model_validate(data)
    except ValidationError as exc:
        fields = [
            {"field": ".".join(str(p) for p in err["loc"]) or "(item)", "message": err["msg"]}
            for err in exc.errors()
        ]
        first = fields[0]
        raise SpecError(f"{source}: {first['field']}: {first['message']}", detail=fields) from exc


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# The parsed YAML of each item.yaml read, while its stat is unchanged (statcache.py).
_PARSED = StatCache()


def load_item(folder: str | Path) -> ItemSpec:
    path = Path(folder) / ITEM_FILE

    def current(_data: Any) -> Signature:
        return signature(path.parent, [ITEM_FILE])

    def read() -> tuple[Signature, Any]:
        sig = current(None)  # taken before the read: a later write moves it
        try:
            text = path.read_text()
        except OSError as exc:
            raise SpecError(f"cannot read {path}: {exc.strerror}") from exc
        try:
            # libyaml when present: resolving hub:// parses every item spec of the catalogue.
            data = yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 - a safe loader either way
        except yaml.YAMLError as exc:
            raise SpecError(f"{path} is not valid YAML: {exc}") from exc
        return sig, data

    data = _PARSED.get(os.path.abspath(path), current, read)
    # A fresh spec each time (the cached data is never handed out): callers may change theirs.
    return parse_item(copy.deepcopy(data), source=str(path))
