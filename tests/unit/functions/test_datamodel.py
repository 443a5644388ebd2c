"""Plain-dataclass records: the same limits whether built in code, read back, or validated by
pydantic at the edge; dumps that match pydantic's; secrets that never show."""

from __future__ import annotations

import copy
import enum
import json
import math
import pickle
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from tickrun.functions.datamodel import SECRET_MASK, Meta, Model, Secret
from tickrun.functions.errors import BadRequestError, InvalidFieldError


class Colour(enum.StrEnum):
    RED = "red"
    BLUE = "blue"


@dataclass(kw_only=True)
class Inner(Model):
    n: Annotated[int, Meta(ge=0)] = 0


@dataclass(frozen=True, kw_only=True)
class Sample(Model):
    name: Annotated[str, Meta(min_length=1, max_length=8, pattern=r"^[a-z]+$")]
    colour: Colour = Colour.RED
    home: Path = Path("/tmp")
    token: Secret | None = None
    ratio: Annotated[float, Meta(gt=0, le=1, description="a share")] = 0.5
    limit: Annotated[int, Meta(ge=1)] | None = None
    mode: Literal["a", "b"] = "a"
    tags: tuple[str, ...] = ()
    inner: Inner = field(default_factory=Inner)
    inners: list[Inner] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def test_limits_are_checked_when_a_record_is_built_in_code() -> None:
    for bad, message in (
        ({"name": ""}, "name: Value should have at least 1"),
        ({"name": "UPPER"}, "name: String should match pattern"),
        ({"name": "a", "ratio": 0.0}, "ratio: Input should be greater than 0"),
        ({"name": "a", "ratio": 2.0}, "ratio: Input should be less than or equal to 1"),
        ({"name": "a", "limit": 0}, "limit: Input should be greater than or equal to 1"),
        ({"name": "a", "mode": "c"}, "mode: Input should be 'a', 'b'"),
    ):
        with pytest.raises(InvalidFieldError, match=message) as caught:
            Sample(**bad)
        # one error tree, and a ValueError as pydantic's ValidationError was
        assert isinstance(caught.value, BadRequestError | ValueError)
    assert Sample(name="ok", limit=None).limit is None  # an optional limit allows None


def test_construction_coerces_as_pydantic_models_did() -> None:
    s = Sample(name="a", colour="blue", home="/x", token="k", tags=["p"])  # type: ignore[arg-type]
    assert s.colour is Colour.BLUE
    assert s.home == Path("/x")
    assert s.token == Secret("k")
    assert s.tags == ("p",)


def test_model_copy_checks_the_limits_again_and_deep_copies_on_request() -> None:
    s = Sample(name="a", extra={"k": [1]})
    with pytest.raises(InvalidFieldError, match="name"):
        s.model_copy(update={"name": "NO"})
    deep = s.model_copy(deep=True)
    deep.extra["k"].append(2)
    assert s.extra == {"k": [1]}
    assert s.model_copy(update={"name": "b"}).name == "b"


def test_json_dump_matches_pydantics_and_reads_back() -> None:
    s = Sample(
        name="a",
        colour=Colour.BLUE,
        token=Secret("hunter2"),
        tags=("x", "y"),
        inners=[Inner(n=2)],
        extra={"nan": math.nan, "inf": math.inf, "nested": (1, Path("/p"), Colour.RED)},
    )
    dumped = s.model_dump(mode="json")
    assert dumped["colour"] == "blue"
    assert dumped["home"] == "/tmp"
    assert dumped["token"] == SECRET_MASK
    assert dumped["tags"] == ["x", "y"]
    assert dumped["inner"] == {"n": 0}
    assert dumped["inners"] == [{"n": 2}]
    assert dumped["extra"] == {"nan": None, "inf": None, "nested": [1, "/p", "red"]}
    text = s.model_dump_json()
    assert "hunter2" not in text
    assert json.loads(text) == dumped

    class Twin(BaseModel):  # what pydantic makes of the same values
        extra: dict[str, Any]

    assert Twin(extra=s.extra).model_dump(mode="json")["extra"] == dumped["extra"]

    built = Sample(name="b", colour=Colour.BLUE, tags=("t",), inners=[Inner(n=3)])
    back = Sample.from_trusted_json(built.model_dump_json())
    assert back == built
    assert isinstance(back.colour, Colour) and isinstance(back.home, Path)
    assert isinstance(back.inners[0], Inner) and back.tags == ("t",)


def test_python_dump_copies_containers_and_can_exclude() -> None:
    s = Sample(name="a", extra={"k": [1]}, limit=None)
    dumped = s.model_dump(exclude={"home"}, exclude_none=True)
    assert "home" not in dumped and "limit" not in dumped and "token" not in dumped
    assert dumped["inner"] == {"n": 0} and dumped["colour"] is Colour.RED
    dumped["extra"]["k"].append(2)
    assert s.extra == {"k": [1]}


def test_trusted_reads_refuse_unknown_fields() -> None:
    with pytest.raises(InvalidFieldError, match="unexpected keyword argument 'surprise'"):
        Sample.from_trusted({"name": "a", "surprise": 1})


def test_the_edge_validates_with_pydantic_under_the_same_limits() -> None:
    ok = Sample.model_validate({"name": "a", "colour": "blue", "token": "t", "ratio": "0.25"})
    assert ok.colour is Colour.BLUE and ok.ratio == 0.25 and ok.token == Secret("t")
    assert Sample.model_validate_json('{"name": "a", "inners": [{"n": 1}]}').inners == [Inner(n=1)]
    for bad in (
        {"name": "UPPER"},
        {"name": "a", "ratio": 0},
        {"name": "a", "limit": 0},
        {"name": "a", "mode": "c"},
        {"name": "a", "inners": [{"n": -1}]},
        {"name": "a", "unknown": 1},
    ):
        with pytest.raises(ValidationError):
            Sample.model_validate(bad)


def test_the_json_schema_carries_limits_and_descriptions() -> None:
    props = Sample.model_json_schema()["properties"]
    assert props["name"]["pattern"] == "^[a-z]+$" and props["name"]["maxLength"] == 8
    assert props["ratio"]["exclusiveMinimum"] == 0 and props["ratio"]["description"] == "a share"
    assert props["token"]["anyOf"][0]["type"] == "string"


def test_records_nest_in_pydantic_models_and_secrets_stay_masked() -> None:
    class Envelope(BaseModel):
        sample: Sample

    env = Envelope.model_validate({"sample": {"name": "a", "token": "s3cr3t"}})
    assert isinstance(env.sample, Sample)
    assert "s3cr3t" not in env.model_dump_json()
    assert "s3cr3t" not in repr(env)
    assert TypeAdapter(Secret).dump_json(Secret("x")) == json.dumps(SECRET_MASK).encode()


def test_a_secret_never_shows_but_compares_and_survives_copies() -> None:
    secret = Secret("p4ss")
    assert "p4ss" not in repr(secret) and "p4ss" not in str(secret)
    assert secret.get_secret_value() == "p4ss"
    s = Sample(name="a", token=secret)
    assert "p4ss" not in repr(s)
    assert pickle.loads(pickle.dumps(s)) == s
    assert copy.deepcopy(s).token == Secret("p4ss")
    assert Secret.of(secret) is secret
    with pytest.raises(InvalidFieldError):
        Secret.of(123)


def test_the_run_path_does_not_import_pydantic() -> None:
    # The point of these records: `tickrun run` starts without pydantic (docs/perf/README.md).
    code = (
        "import sys\n"
        "from tickrun.functions.runs import records, settings, plugins, runner\n"
        "settings.TrackingSettings.from_env()\n"
        "r = records.RunRecord(uid='u')\n"
        "records.RunRecord.from_trusted_json(r.model_dump_json())\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pydantic', 'pydantic_core')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
