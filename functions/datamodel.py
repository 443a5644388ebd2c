"""Records as plain dataclasses: built, copied and dumped without pydantic, validated by it at
the edge.

Every ``tickrun run`` is a new process, and the run path's records (run and artifact records,
tracking and S3 settings, job requests) were pydantic models: importing pydantic and building
their schemas was about half of the command's start-up (docs/perf/README.md). These records are
now stdlib dataclasses on :class:`Model`, which keeps the part of pydantic's model API the code
and users call (``model_dump``, ``model_dump_json``, ``model_copy``, ``model_validate``,
``model_validate_json``, ``model_json_schema``):

- data from outside (a REST body, a job's JSON argument, a config dict) goes through
  ``model_validate*``: pydantic validates the dataclass, with the field limits declared in
  :class:`Meta`, ``extra="forbid"`` and its own error messages, imported on first use;
- records the process builds itself are checked against the same :class:`Meta` limits by
  ``__post_init__`` (types are mypy's job), and records it wrote itself (run DB bodies) are read
  back by :meth:`Model.from_trusted_json`, which converts enums, paths, secrets and nested
  records without validating again;
- dumps follow pydantic's: ``mode="json"`` gives enum values, paths as text, secrets masked,
  tuples as lists, and NaN or infinity as None.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import enum
import functools
import json
import math
import re
import types
import typing
from collections.abc import Callable, Collection, Mapping
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

from .errors import InvalidFieldError

if TYPE_CHECKING:
    from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler, TypeAdapter
    from pydantic_core import CoreSchema

SECRET_MASK = "**********"  # noqa: S105 -- what a secret shows instead of itself
_CONSTRAINTS = ("ge", "gt", "le", "min_length", "max_length", "pattern")


class Meta:
    """A field's limits and description, in ``Annotated[T, Meta(...)]``: checked when the record
    is built, and handed to pydantic's schema (validation and JSON schema) at the edge."""

    __slots__ = ("description", "ge", "gt", "le", "max_length", "min_length", "pattern")

    def __init__(
        self,
        *,
        ge: float | None = None,
        gt: float | None = None,
        le: float | None = None,
        min_length: int | None = None,
        max_length: int | None = None,
        pattern: str | None = None,
        description: str | None = None,
    ) -> None:
        self.ge, self.gt, self.le = ge, gt, le
        self.min_length, self.max_length = min_length, max_length
        self.pattern, self.description = pattern, description

    def _constraints(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _CONSTRAINTS if getattr(self, k) is not None}

    def problem(self, value: Any) -> str | None:
        """Why ``value`` breaks the limits (pydantic's wording), or None."""
        if value is None:
            return None
        if self.ge is not None and value < self.ge:
            return f"Input should be greater than or equal to {self.ge}"
        if self.gt is not None and value <= self.gt:
            return f"Input should be greater than {self.gt}"
        if self.le is not None and value > self.le:
            return f"Input should be less than or equal to {self.le}"
        if self.min_length is not None and len(value) < self.min_length:
            return f"Value should have at least {self.min_length} items/characters"
        if self.max_length is not None and len(value) > self.max_length:
            return f"Value should have at most {self.max_length} items/characters"
        if self.pattern is not None and not _compiled(self.pattern).search(value):
            return f"String should match pattern '{self.pattern}'"
        return None

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        schema = handler(source)
        # str/int/float schemas all take these keys by these names
        typing.cast("dict[str, Any]", schema).update(self._constraints())
        return schema

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        out = handler(schema)
        if self.description:
            out["description"] = self.description
        return out


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


class Secret:
    """A string never shown: masked in repr, str and JSON dumps (pydantic's ``SecretStr``
    contract, without importing pydantic)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{SECRET_MASK}')" if self._value else "Secret('')"

    def __str__(self) -> str:
        return SECRET_MASK if self._value else ""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __len__(self) -> int:
        return len(self._value)

    @classmethod
    def of(cls, value: Any) -> Secret:
        """A secret from its text or from anything with ``get_secret_value`` (pydantic's)."""
        if isinstance(value, Secret):
            return value
        reveal = getattr(value, "get_secret_value", None)
        if reveal is not None:
            return cls(reveal())
        if isinstance(value, str):
            return cls(value)
        raise InvalidFieldError(f"expected a string secret, not {type(value).__name__}")

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        from pydantic_core import core_schema as cs

        from_text = cs.no_info_after_validator_function(cls, cs.str_schema())
        return cs.json_or_python_schema(
            json_schema=from_text,
            python_schema=cs.no_info_plain_validator_function(cls.of),
            serialization=cs.plain_serializer_function_ser_schema(str, when_used="json"),
        )


class Model:
    """Base of the plain-dataclass records (``@dataclass(kw_only=True)`` subclasses)."""

    # pydantic reads this off stdlib dataclasses: unknown fields are refused at the edge.
    __pydantic_config__: ClassVar[dict[str, Any]] = {"extra": "forbid"}

    def __post_init__(self) -> None:
        shape = _shape(type(self))
        for name, kind, convert in shape.coercions:
            value = getattr(self, name)
            if value is not None and not isinstance(value, kind):
                # As pydantic's models did: "completed" for a RunState, text for a Path.
                object.__setattr__(self, name, convert(value))
        for name, meta in shape.limits:
            problem = meta.problem(getattr(self, name))
            if problem is not None:
                raise InvalidFieldError(f"{name}: {problem}")
        for name, allowed in shape.choices:
            value = getattr(self, name)
            if value is not None and value not in allowed:
                listed = ", ".join(repr(a) for a in allowed)
                raise InvalidFieldError(f"{name}: Input should be {listed}")

    # -- reading data from outside: pydantic, imported on first use ------------------------

    @classmethod
    def model_validate(cls, data: Any) -> Self:
        return _adapter(cls).validate_python(data)  # type: ignore[no-any-return]

    @classmethod
    def model_validate_json(cls, raw: str | bytes) -> Self:
        return _adapter(cls).validate_json(raw)  # type: ignore[no-any-return]

    @classmethod
    def model_json_schema(cls) -> dict[str, Any]:
        return _adapter(cls).json_schema()

    # -- reading what this code wrote -------------------------------------------------------

    @classmethod
    def from_trusted(cls, data: Mapping[str, Any]) -> Self:
        """A record from a dump this code made (``model_dump(mode="json")``), without
        validating it again; an unknown field is still refused."""
        convert = _shape(cls).converters
        kwargs = {
            k: (convert[k](v) if v is not None and k in convert else v) for k, v in data.items()
        }
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise InvalidFieldError(f"not a {cls.__name__}: {exc}") from exc

    @classmethod
    def from_trusted_json(cls, raw: str | bytes) -> Self:
        return cls.from_trusted(json.loads(raw))

    # -- writing ----------------------------------------------------------------------------

    def model_dump(
        self,
        *,
        mode: Literal["python", "json"] = "python",
        exclude: Collection[str] | None = None,
        exclude_none: bool = False,
    ) -> dict[str, Any]:
        as_json = mode == "json"
        out: dict[str, Any] = {}
        state = self.__dict__  # the fields as stored, past any property of a subclass
        for name in _shape(type(self)).names:
            if exclude and name in exclude:
                continue
            value = state[name]
            if value is None and exclude_none:
                continue
            out[name] = _dump(value, as_json)
        return out

    def model_dump_json(self, *, exclude: Collection[str] | None = None) -> str:
        return json.dumps(
            self.model_dump(mode="json", exclude=exclude),
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
        )

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy with ``update`` applied; the limits are checked again (pydantic's would not)."""
        base = copy.deepcopy(self) if deep else self
        return dataclasses.replace(base, **(update or {}))  # type: ignore[type-var]


def _dump(value: Any, as_json: bool) -> Any:
    if isinstance(value, Model):
        return value.model_dump(mode="json" if as_json else "python")
    if isinstance(value, dict):
        return {(_dump(k, as_json) if as_json else k): _dump(v, as_json) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [_dump(v, as_json) for v in value]
        return items if as_json or isinstance(value, list) else type(value)(items)
    if not as_json:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str | int | bool) or value is None:
        return value.value if isinstance(value, enum.Enum) else value
    if isinstance(value, enum.Enum):
        return _dump(value.value, True)
    if isinstance(value, PurePath | Secret):
        return str(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _dump(dataclasses.asdict(value), True)
    reveal = getattr(value, "get_secret_value", None)
    if reveal is not None:  # pydantic's SecretStr handed in by a caller: still masked
        return SECRET_MASK
    return value  # json.dumps refuses it, as pydantic's serializer would


@dataclasses.dataclass(frozen=True)
class _Shape:
    names: tuple[str, ...]
    limits: tuple[tuple[str, Meta], ...]
    choices: tuple[tuple[str, tuple[Any, ...]], ...]  # Literal fields
    coercions: tuple[tuple[str, type, Callable[[Any], Any]], ...]  # on construction
    converters: dict[str, Callable[[Any], Any]]


_SHAPES: dict[type[Model], _Shape] = {}
_ADAPTERS: dict[type[Model], TypeAdapter[Any]] = {}


def _shape(cls: type[Model]) -> _Shape:
    shape = _SHAPES.get(cls)
    if shape is None:
        shape = _SHAPES[cls] = _make_shape(cls)
    return shape


def _make_shape(cls: type[Model]) -> _Shape:
    hints = typing.get_type_hints(cls, include_extras=True)
    names = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
    limits: list[tuple[str, Meta]] = []
    choices: list[tuple[str, tuple[Any, ...]]] = []
    coercions: list[tuple[str, type, Callable[[Any], Any]]] = []
    converters: dict[str, Callable[[Any], Any]] = {}
    for name in names:
        hint = hints[name]
        limits += [(name, m) for m in _metas(hint)]
        bare = _strip(hint)
        if typing.get_origin(bare) is Literal:
            choices.append((name, typing.get_args(bare)))
        convert = _converter(bare)
        if convert is not None:
            converters[name] = convert
            kind = typing.get_origin(bare) or bare
            if isinstance(kind, type) and kind is not list:
                coercions.append((name, kind, convert))
    return _Shape(names, tuple(limits), tuple(choices), tuple(coercions), converters)


def _metas(hint: Any) -> list[Meta]:
    if typing.get_origin(hint) is typing.Annotated:
        return [m for m in hint.__metadata__ if isinstance(m, Meta)]
    if _is_union(hint):
        return [m for arg in typing.get_args(hint) for m in _metas(arg)]
    return []


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _strip(hint: Any) -> Any:
    """``Annotated[T, …]`` → T and ``T | None`` → T."""
    if typing.get_origin(hint) is typing.Annotated:
        return _strip(hint.__origin__)
    if _is_union(hint):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _strip(args[0]) if len(args) == 1 else hint
    return hint


def _converter(hint: Any) -> Callable[[Any], Any] | None:
    """How a JSON value becomes the field's type, for the types the records use."""
    origin = typing.get_origin(hint)
    if isinstance(hint, type):
        if issubclass(hint, Model):
            return hint.from_trusted
        if issubclass(hint, enum.Enum):
            return hint
        if issubclass(hint, PurePath):
            return Path
        if issubclass(hint, Secret):
            return Secret.of
        return None
    if origin in (list, tuple):
        args = typing.get_args(hint)
        item = _converter(_strip(args[0])) if args else None
        if origin is tuple:
            return (lambda v: tuple(map(item, v))) if item else tuple
        return (lambda v: [item(x) for x in v]) if item else None
    return None


def _adapter(cls: type[Model]) -> TypeAdapter[Any]:
    adapter = _ADAPTERS.get(cls)
    if adapter is None:
        from pydantic import TypeAdapter

        adapter = _ADAPTERS[cls] = TypeAdapter(cls)
    return adapter
