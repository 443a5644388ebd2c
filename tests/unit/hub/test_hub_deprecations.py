"""Deprecated item versions: marked in the catalogue (deprecations.yaml), never chosen by a range
while a sound version matches, a warning with the reason when resolved, shown by the CLI, carried
by the index a remote hub serves."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest

from tests.support.hub_server import HubServer
from tickrun.cli import main as tickrun_main
from tickrun.functions.errors import SpecError
from tickrun.hub import Hub
from tickrun.hub.api import _merged
from tickrun.hub.catalogue import (
    BUNDLED_ROOT,
    DEPRECATIONS_FILE,
    HubDeprecationWarning,
    build_index,
    load_deprecations,
    validate_index,
)
from tickrun.hub.sources import LocalSource


def _deprecate(root: Path, text: str) -> None:
    (root / DEPRECATIONS_FILE).write_text(text)


def test_bundled_backtest_1_0_is_deprecated_and_ranges_skip_it() -> None:
    marks = load_deprecations(BUNDLED_ROOT)
    assert "+218%" in marks[("backtest", "1.0.0")]
    hub = Hub(bundled=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = hub.import_function("hub://backtest:1.0.0")
        newest = hub.import_function("hub://backtest:1")
    assert old.resolved.deprecated == marks[("backtest", "1.0.0")]
    assert newest.resolved.deprecated is None and newest.version != "1.0.0"
    messages = [str(w.message) for w in caught if issubclass(w.category, HubDeprecationWarning)]
    assert len(messages) == 1 and messages[0].startswith("hub://backtest:1.0.0 is deprecated: ")


def test_a_range_falls_back_to_a_deprecated_version_only_when_nothing_else_matches(
    private_hub: Path,
) -> None:
    _deprecate(private_hub, 'toy:\n  2.0.0: "leaks the label"\n  1.2.3: "wrong window"\n')
    hub = Hub([private_hub], bundled=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert hub.import_function("hub://toy").version == "1.2.0"  # newest sound one
        assert hub.import_function("hub://toy:1.2").version == "1.2.0"
        assert not caught
        pinned = hub.import_function("hub://toy:2")  # only 2.0.0 matches
    assert pinned.version == "2.0.0" and pinned.resolved.deprecated == "leaks the label"
    assert [w.category for w in caught] == [HubDeprecationWarning]
    index = build_index(private_hub)
    assert index["items"]["toy"]["latest"] == "1.2.0"
    assert index["items"]["toy"]["versions"]["2.0.0"]["deprecated"] == "leaks the label"
    assert "deprecated" not in index["items"]["toy"]["versions"]["1.2.0"]
    row = next(r for r in hub.list_items() if r["name"] == "toy")
    assert row["latest"] == "1.2.0"
    assert row["deprecated"] == {"2.0.0": "leaks the label", "1.2.3": "wrong window"}


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('toy:\n  9.9.9: "gone"\n', "deprecates toy 9.9.9, which is absent"),
        ('toy:\n  1.0.0: ""\n', "non-empty text"),
        ("toy:\n  one: x\n", "toy"),
        ("- toy\n", "expected a mapping"),
        ("toy: [\n", "not YAML"),
    ],
)
def test_a_bad_deprecations_file_is_an_error(private_hub: Path, text: str, why: str) -> None:
    _deprecate(private_hub, text)
    with pytest.raises(SpecError, match=why):
        build_index(private_hub)


def test_a_remote_hub_carries_the_mark(private_hub: Path, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("TICKRUN_HUB_ALLOW_HTTP", "1")
    _deprecate(private_hub, 'toy:\n  2.0.0: "leaks the label"\n')
    served, _ = _merged([LocalSource(private_hub)])
    assert served["items"]["toy"]["latest"] == "1.2.3"
    server = HubServer([private_hub])
    server.start()
    try:
        hub = Hub(url=server.url, bundled=False, cache_dir=tmp_path / "cache")
        assert hub.import_function("hub://toy").version == "1.2.3"
        with pytest.warns(HubDeprecationWarning, match="leaks the label"):
            assert hub.import_function("hub://toy:2.0.0").resolved.deprecated == "leaks the label"
    finally:
        server.stop()
    bad = json.loads(json.dumps(served))
    bad["items"]["toy"]["versions"]["2.0.0"]["deprecated"] = 1
    with pytest.raises(SpecError, match="'deprecated' must be a text"):
        validate_index(bad, source="remote")


def test_cli_marks_deprecated_versions(
    private_hub: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _deprecate(private_hub, 'toy:\n  2.0.0: "leaks the label"\n')
    with pytest.raises(SystemExit):
        tickrun_main(["hub", "list", "--hub-path", str(private_hub)])
    listed = capsys.readouterr().out
    assert "2.0.0!, 1.2.3" in listed and "! deprecated" in listed
    with pytest.warns(HubDeprecationWarning), pytest.raises(SystemExit):
        tickrun_main(["hub", "show", "toy:2.0.0", "--hub-path", str(private_hub)])
    assert "DEPRECATED: leaks the label" in capsys.readouterr().out
