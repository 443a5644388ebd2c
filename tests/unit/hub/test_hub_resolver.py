from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import tickrun
from tickrun.functions.errors import HubError, SpecError
from tickrun.hub import Hub, import_function, parse_uri
from tickrun.hub.catalogue import BUNDLED_ROOT, build_index, scan, write_index


def test_parse_uri_forms() -> None:
    assert parse_uri("hub://auto_trainer").pin.parts == ()
    assert parse_uri("hub://auto_trainer:1").pin.parts == (1,)
    assert parse_uri("hub://auto_trainer:1.2").pin.parts == (1, 2)
    ref = parse_uri("hub://auto_trainer:1.2.0")
    assert (ref.name, ref.pin.parts) == ("auto_trainer", (1, 2, 0))
    assert str(ref) == "hub://auto_trainer:1.2.0"
    with pytest.raises(HubError, match="not a hub reference"):
        parse_uri("hub://Auto Trainer")
    with pytest.raises(HubError, match="version pin"):
        parse_uri("hub://auto_trainer:one")


def test_pinned_and_unpinned_imports(private_hub: Path) -> None:
    hub = Hub([private_hub], bundled=False)
    assert hub.import_function("hub://toy").version == "2.0.0"
    assert hub.import_function("hub://toy:1").version == "1.2.3"
    assert hub.import_function("hub://toy:1.2").version == "1.2.3"
    assert hub.import_function("hub://toy:1.2.0").version == "1.2.0"
    assert hub.import_function("hub://toy:1.0").version == "1.0.0"
    assert hub.import_function("hub://other").version == "0.1.0"


def test_versions_side_by_side_in_one_process(private_hub: Path) -> None:
    hub = Hub([private_hub], bundled=False)
    old, new = hub.import_function("toy:1.0.0"), hub.import_function("toy:2")
    assert old.module().VERSION == "1.0.0"
    assert new.module().VERSION == "2.0.0"


def test_bad_version_lists_what_exists(private_hub: Path) -> None:
    hub = Hub([private_hub], bundled=False)
    with pytest.raises(HubError) as err:
        hub.import_function("hub://toy:3")
    assert "no version matching 3" in err.value.message
    assert "2.0.0, 1.2.3, 1.2.0, 1.0.0" in err.value.message
    assert err.value.status == 404


def test_unknown_name_lists_items(private_hub: Path) -> None:
    hub = Hub([private_hub], bundled=False)
    with pytest.raises(HubError, match="no hub item named 'nope'; items: other, toy"):
        hub.import_function("hub://nope")


def test_private_hub_beats_bundled_on_a_tie(tmp_path: Path, item_writer: Any) -> None:
    root = tmp_path / "h"
    item_writer(root, "backtest", "1.0.0", extra="")
    hub = Hub([root])
    fn = hub.import_function("hub://backtest:1.0.0")
    assert fn.resolved.source == str(root)
    assert fn.module().VERSION == "1.0.0"
    # the bundled item stays reachable for other names
    assert hub.import_function("hub://auto_trainer").resolved.source == "bundled"


def test_env_configures_private_paths(private_hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKRUN_HUB_PATH", str(private_hub))
    monkeypatch.delenv("TICKRUN_HUB_URL", raising=False)
    fn = tickrun.import_function("hub://toy:1.2")
    assert (fn.name, fn.version) == ("toy", "1.2.3")
    assert import_function("hub://market_features").name == "market_features"


def test_index_is_generated_from_items(private_hub: Path) -> None:
    index = build_index(private_hub)
    toy = index["items"]["toy"]
    assert toy["latest"] == "2.0.0"
    assert list(toy["versions"]) == ["2.0.0", "1.2.3", "1.2.0", "1.0.0"]
    files = toy["versions"]["1.2.0"]["files"]
    assert set(files) == {"item.yaml", "code.py"}
    assert all(len(h) == 64 for h in files.values())
    path = write_index(private_hub)
    assert json.loads(path.read_text()) == index


def test_bundled_catalogue_is_valid_and_complete() -> None:
    names = {item.spec.name for item in scan(BUNDLED_ROOT)}
    assert {
        "auto_trainer",
        "describe",
        "market_features",
        "backtest",
        "model_server",
        "batch_predict",
    } <= names
    versions = {i.spec.version for i in scan(BUNDLED_ROOT) if i.spec.name == "market_features"}
    assert len(versions) >= 2  # several versions side by side


def test_invalid_item_spec_is_an_error(tmp_path: Path, item_writer: Any) -> None:
    folder = item_writer(tmp_path, "broken", "1.0.0")
    text = (folder / "item.yaml").read_text().replace("description:", "descripton:")
    (folder / "item.yaml").write_text(text)
    with pytest.raises(SpecError, match="item.yaml") as err:
        scan(tmp_path)
    fields = {f["field"] for f in err.value.detail}  # type: ignore[attr-defined]
    assert {"description", "descripton"} <= fields


def test_item_name_must_match_folder(tmp_path: Path, item_writer: Any) -> None:
    folder = item_writer(tmp_path, "alpha", "1.0.0")
    folder.parent.rename(tmp_path / "beta")
    with pytest.raises(SpecError, match="does not match its folder"):
        scan(tmp_path)


def test_parse_uri_with_handler() -> None:
    ref = parse_uri("hub://auto_trainer:1.2#evaluate")
    assert (ref.name, ref.pin.parts, ref.handler) == ("auto_trainer", (1, 2), "evaluate")
    assert str(ref) == "hub://auto_trainer:1.2#evaluate"
    assert parse_uri("hub://x#train").handler == "train"
