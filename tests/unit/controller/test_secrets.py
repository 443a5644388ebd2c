"""The secret store and the spec's ``valueFrom.secretKeyRef``."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tickrun.controller.store.secrets import SecretStore
from tickrun.functions.errors import NotFoundError, SpecError
from tickrun.functions.spec import parse_spec


def _spec(env: list[dict[str, object]]) -> dict[str, object]:
    return {"metadata": {"name": "f"}, "spec": {"handler": "main:handler", "env": env}}


def test_secrets_live_in_a_0600_file_and_only_keys_come_back(tmp_path: Path) -> None:
    store = SecretStore(tmp_path / "state" / "secrets.json")
    assert store.keys() == {}
    assert store.set("exchange", {"api-key": "v1", "secret": "v2"}) == ["api-key", "secret"]
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    assert store.keys() == {"exchange": ["api-key", "secret"]}
    assert store.resolve({"KEY": ("exchange", "api-key")}) == {"KEY": "v1"}
    store.set("exchange", {"api-key": "v3"})  # a put replaces the whole secret
    assert store.keys() == {"exchange": ["api-key"]}
    with pytest.raises(SpecError, match="secret 'exchange' key 'secret', which is not set"):
        store.resolve({"S": ("exchange", "secret")})
    store.delete("exchange")
    with pytest.raises(NotFoundError):
        store.delete("exchange")
    assert store.resolve({}) == {}


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("Bad_Name", {"k": "v"}, "secret name"),
        ("ok", {}, "at least one key"),
        ("ok", {"bad key": "v"}, "secret key"),
        ("ok", {"k": "x" * 70_000}, "over 65536 bytes"),
    ],
)
def test_invalid_secrets_are_refused_without_echoing_values(
    tmp_path: Path, name: str, data: dict[str, str], message: str
) -> None:
    with pytest.raises(SpecError, match=message) as err:
        SecretStore(tmp_path / "s.json").set(name, data)
    assert "x" * 100 not in err.value.message


def test_spec_secret_key_refs_are_validated_and_kept_as_references() -> None:
    ref = {"secretKeyRef": {"name": "exchange", "key": "api-key"}}
    spec = parse_spec(_spec([{"name": "A", "valueFrom": ref}, {"name": "B", "value": "1"}]))
    assert spec.spec.secret_refs() == {"A": ("exchange", "api-key")}
    assert spec.spec.env_dict() == {"B": "1"}  # the value is not part of the spec
    assert spec.to_yaml_dict()["spec"]["env"][0] == {"name": "A", "valueFrom": ref}
    cases: list[tuple[dict[str, object], str]] = [
        ({"name": "A", "value": "x", "valueFrom": ref}, "not both"),
        ({"name": "A", "valueFrom": {"fieldRef": {}}}, "secretKeyRef only"),
        ({"name": "A", "valueFrom": {"secretKeyRef": {"name": "s"}}}, "a name and a key"),
    ]
    for bad, message in cases:
        with pytest.raises(SpecError, match=message):
            parse_spec(_spec([bad]))


def test_cli_pairs_read_values_inline_from_a_file_or_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    from tickrun.controller.secrets_cli import parse_pairs

    (tmp_path / "v").write_text("from-file\n")
    monkeypatch.setattr("sys.stdin", io.StringIO("from-stdin\n"))
    assert parse_pairs(["a=inline=x", f"b=@{tmp_path / 'v'}", "c=-"]) == {
        "a": "inline=x",
        "b": "from-file",
        "c": "from-stdin",
    }
    with pytest.raises(SpecError, match="KEY=VALUE"):
        parse_pairs(["novalue"])
    with pytest.raises(SpecError, match="cannot read"):
        parse_pairs([f"k=@{tmp_path / 'missing'}"])
