"""Model registry records: registered models, their numbered versions, aliases and lineage.

A version is named ``models:/<name>/<version>``; an alias ``models:/<name>@<alias>`` points at
one version of its model; ``models:/<name>/latest`` is the highest version that exists. Every
version points at one logged model artifact (``store://…``) and keeps the lineage of the run that
logged it, copied when the version is registered (a later change to the run does not rewrite it).
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from ..errors import BadRequestError

MODEL_SCHEME = "models:/"
LATEST = "latest"

# One URL path segment: no "/", "@" or "..", so a name is safe in models:/ URIs and REST paths.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# MLflow's rule, stricter: an alias starts with a letter (never a number, so "3" is a version)
# and is never "latest" (that is the highest version).
_ALIAS_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
MAX_TAGS = 50


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise BadRequestError(
            f"bad model name {str(name)[:100]!r}: 1-128 characters of [A-Za-z0-9_.-], "
            "starting with a letter or digit"
        )
    return name


def check_alias(alias: str) -> str:
    if not isinstance(alias, str) or not _ALIAS_RE.match(alias) or alias.lower() == LATEST:
        raise BadRequestError(
            f"bad alias {str(alias)[:100]!r}: 1-64 characters of [A-Za-z0-9_-] starting with a "
            f"letter, not {LATEST!r}"
        )
    return alias


def check_version(version: Any) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version < 2**31:
        raise BadRequestError(f"bad model version {str(version)[:40]!r}: an integer ≥ 1")
    return version


def check_tags(tags: dict[str, str]) -> dict[str, str]:
    if len(tags) > MAX_TAGS:
        raise BadRequestError(f"at most {MAX_TAGS} tags")
    for k, v in tags.items():
        if not k or len(k) > 250 or len(v) > 5000:
            raise BadRequestError(f"bad tag {k[:60]!r}: key 1-250 characters, value ≤ 5000")
    return tags


ModelName = Annotated[str, AfterValidator(check_name)]
Alias = Annotated[str, AfterValidator(check_alias)]
Tags = Annotated[dict[str, str], AfterValidator(check_tags)]


class DatasetLineage(BaseModel):
    """One input of the run: its URI as given and, for a tracked artifact, its record's facts."""

    model_config = ConfigDict(extra="forbid")

    name: str
    uri: str
    kind: str = ""  # the artifact's kind (dataset, model, …); "" for a path or s3:// URL
    sha256: str = ""
    target: str = ""


class Lineage(BaseModel):
    """What the run record held when the version was registered.

    ``hub_*`` come from the run's ``hub.item``/``hub.version``/``hub.source``/``hub.handler``
    labels (set when the run came from a hub item); ``code_hash`` and ``requirements_lock`` from
    the labels ``code.hash`` and ``requirements.lock`` when a runner recorded them (None when
    not); ``labels`` keeps all of the run's labels.
    """

    model_config = ConfigDict(extra="forbid")

    run_uid: str
    run_project: str
    run_iteration: int = 0
    run_name: str = ""
    handler: str = ""
    run_state: str = ""
    params: dict[str, Any] = Field(default_factory=dict)
    datasets: list[DatasetLineage] = Field(default_factory=list)
    hub_item: str | None = None
    hub_version: str | None = None
    hub_source: str | None = None
    hub_handler: str | None = None
    code_hash: str | None = None
    requirements_lock: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class ModelVersion(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    name: str
    version: int
    model_uri: str = Field(description="the logged model artifact: store://project/uid[/it]/key")
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    aliases: list[str] = Field(default_factory=list)
    framework: str = ""
    sha256: str = ""
    metrics: dict[str, Any] = Field(default_factory=dict)
    lineage: Lineage
    created_at: float = Field(default_factory=time.time)

    @property
    def uri(self) -> str:
        return f"{MODEL_SCHEME}{self.name}/{self.version}"


class RegisteredModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    latest_version: int = Field(description="the highest version number ever given")
    versions: int = Field(default=0, description="how many versions exist")
    aliases: dict[str, int] = Field(default_factory=dict)
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)


class RegisterRequest(BaseModel):
    """``POST /api/models``: register a logged model as the next version of ``name``."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_uri: str = Field(min_length=1, max_length=1024)
    name: ModelName
    description: str = Field(default="", max_length=10000)
    tags: Tags = Field(default_factory=dict)
    aliases: list[Alias] = Field(default_factory=list, max_length=20)


class AliasRequest(BaseModel):
    """``PUT /api/models/{name}/aliases/{alias}``: point the alias at ``version``."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, lt=2**31)


def parse_model_uri(uri: str) -> tuple[str, int | str]:
    """``models:/name/3`` → ("name", 3); ``models:/name@champion`` → ("name", "champion");
    ``models:/name/latest`` → ("name", "latest")."""
    if not uri.startswith(MODEL_SCHEME):
        raise BadRequestError(f"not a models:/ URI: {uri[:100]!r}")
    rest = uri[len(MODEL_SCHEME) :]
    if "@" in rest and "/" not in rest:
        name, alias = rest.split("@", 1)
        return check_name(name), check_alias(alias)
    parts = rest.split("/")
    if len(parts) == 2 and parts[1] == LATEST:
        return check_name(parts[0]), LATEST
    if len(parts) == 2 and parts[1].isdigit() and len(parts[1]) <= 10:
        return check_name(parts[0]), check_version(int(parts[1]))
    raise BadRequestError(
        f"bad model URI {uri[:100]!r}: expected models:/<name>/<version>, "
        "models:/<name>/latest or models:/<name>@<alias>"
    )


def version_ref(ref: int | str) -> int | str:
    """A version given as text or number: an int, ``latest`` or an alias (checked)."""
    if isinstance(ref, int) and not isinstance(ref, bool):
        return check_version(ref)
    text = str(ref)
    if text.isdigit() and len(text) <= 10:
        return check_version(int(text))
    if text == LATEST:
        return LATEST
    return check_alias(text)
