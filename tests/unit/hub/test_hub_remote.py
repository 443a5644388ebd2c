"""A remote hub over real loopback HTTP: the catalogue served by ``tickrun.hub.api``, mirrored
into the local cache, then used offline."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.hub_server import HubServer
from tickrun.functions.errors import HubError
from tickrun.hub import Hub


@pytest.fixture(autouse=True)
def allow_plain_http(monkeypatch: pytest.MonkeyPatch) -> None:
    # These hubs are served over plain http on loopback; a remote hub needs https otherwise.
    monkeypatch.setenv("TICKRUN_HUB_ALLOW_HTTP", "1")


@pytest.fixture
def served_private(private_hub: Path) -> Iterator[HubServer]:
    server = HubServer([private_hub])
    server.start()
    yield server
    server.stop()


def test_api_serves_index_and_files(served_private: HubServer) -> None:
    with urllib.request.urlopen(f"{served_private.url}/api/hub") as r:
        index = json.loads(r.read())
    assert index["items"]["toy"]["latest"] == "2.0.0"
    with urllib.request.urlopen(f"{served_private.url}/api/hub/items/toy/1.2.0/code.py") as r:
        assert b'VERSION = "1.2.0"' in r.read()
    for bad in (
        "/api/hub/items/toy/1.2.0/../../other/0.1.0/code.py",
        "/api/hub/items/toy/9.9.9/code.py",
        "/api/hub/items/toy/1.2.0/secret.txt",
    ):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{served_private.url}{bad}")
        assert err.value.code == 404


def test_api_serves_the_bundled_catalogue_by_default() -> None:
    server = HubServer(None)
    server.start()
    try:
        with urllib.request.urlopen(f"{server.url}/api/hub") as r:
            index = json.loads(r.read())
        assert "auto_trainer" in index["items"]
        # One version's item.yaml parsed for the web UI, beside the text as written.
        with urllib.request.urlopen(f"{server.url}/api/hub/items/model_monitor/1.1.0") as r:
            got = json.loads(r.read())
        params = got["item"]["handlers"]["monitor"]["parameters"]
        assert got["item"]["version"] == "1.1.0" and got["yaml"].startswith("name: model_monitor")
        assert {"name": "topic", "type": "str"}.items() <= next(
            p for p in params if p["name"] == "topic"
        ).items()
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{server.url}/api/hub/items/model_monitor/9.9.9")
        assert err.value.code == 404
    finally:
        server.stop()


def test_remote_import_caches_and_then_works_offline(
    served_private: HubServer, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    hub = Hub(url=served_private.url, cache_dir=cache, bundled=False)
    fn = hub.import_function("hub://toy:1.2")
    assert fn.version == "1.2.3"
    assert fn.folder.is_relative_to(cache)
    assert fn.module().VERSION == "1.2.3"
    assert fn.resolved.source.endswith("/api/hub")
    served_private.stop()  # the hub goes away
    offline = Hub(url=served_private.url, cache_dir=cache, bundled=False, timeout_s=1)
    again = offline.import_function("hub://toy:1.2")
    assert again.version == "1.2.3" and again.folder == fn.folder
    # an uncached version cannot appear out of thin air
    with pytest.raises(HubError, match="not in the local cache"):
        offline.import_function("hub://toy:2")


def test_cached_versions_are_not_downloaded_twice(
    served_private: HubServer, tmp_path: Path
) -> None:
    Hub(url=served_private.url, cache_dir=tmp_path, bundled=False).import_function("toy:1.0.0")
    downloads = [p for p in served_private.requests if "/items/" in p]
    Hub(url=served_private.url, cache_dir=tmp_path, bundled=False).import_function("toy:1.0.0")
    assert [p for p in served_private.requests if "/items/" in p] == downloads
    assert len(downloads) == 2  # item.yaml + code.py


def test_tampered_file_is_refused(
    served_private: HubServer, private_hub: Path, tmp_path: Path
) -> None:
    hub = Hub(url=served_private.url, cache_dir=tmp_path, bundled=False)
    hub.sources[0].index()  # index (with checksums) fetched before the file changes
    (private_hub / "toy" / "v2_0_0" / "code.py").write_text("VERSION = 'evil'\n")
    with pytest.raises(HubError, match="checksum"):
        hub.import_function("hub://toy:2.0.0")


def test_unreachable_hub_with_empty_cache(tmp_path: Path) -> None:
    hub = Hub(url="http://127.0.0.1:9", cache_dir=tmp_path, bundled=False, timeout_s=1)
    with pytest.raises(HubError, match="unreachable .* nothing is cached"):
        hub.import_function("hub://toy")


def test_unreachable_hub_with_empty_cache_does_not_hide_bundled_items(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hub = Hub(url="http://127.0.0.1:9", cache_dir=tmp_path, timeout_s=1)
    with caplog.at_level("WARNING", logger="tickrun.hub"):
        fn = hub.import_function("hub://backtest:1")
    assert fn.resolved.source == "bundled"
    assert any(r.getMessage() == "hub source skipped" for r in caplog.records)
    assert "auto_trainer" in {row["name"] for row in hub.list_items()}
    # an item only the unreachable hub could have had: the error says why it is missing
    with pytest.raises(HubError, match="no hub item named 'toy'.*skipped: remote hub"):
        hub.import_function("hub://toy")


def test_stale_hub_path_folder_is_skipped(
    private_hub: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    import tickrun

    gone = tmp_path / "moved-away"
    monkeypatch.setenv("TICKRUN_HUB_PATH", os.pathsep.join([str(gone), str(private_hub)]))
    monkeypatch.delenv("TICKRUN_HUB_URL", raising=False)
    assert tickrun.import_function("hub://market_features").resolved.source == "bundled"
    assert tickrun.import_function("hub://toy:1").version == "1.2.3"
    assert tickrun.import_function("hub://toy:1").resolved.source == str(private_hub)


def test_offline_falls_back_to_the_newest_cached_version(
    served_private: HubServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    online = Hub(url=served_private.url, cache_dir=cache, bundled=False)
    assert online.import_function("hub://toy:1.2").version == "1.2.3"  # cached; 2.0.0 is not
    served_private.stop()
    offline = Hub(url=served_private.url, cache_dir=cache, bundled=False, timeout_s=1)
    with caplog.at_level("WARNING", logger="tickrun.hub"):
        fn = offline.import_function("hub://toy")  # the index's newest, 2.0.0, is not cached
    assert fn.version == "1.2.3" and fn.module().VERSION == "1.2.3"
    fallback = [r for r in caplog.records if "not cached" in r.getMessage()]
    assert fallback and fallback[0].__dict__["wanted"] == "2.0.0"
    with pytest.raises(HubError, match="not in the local cache.*no older matching version"):
        offline.import_function("hub://toy:2")
    with pytest.raises(HubError, match="no version matching 1.0"):
        offline.import_function("hub://toy:1.0")  # 1.0.0 was never cached either


def test_offline_falls_back_to_bundled_versions(tmp_path: Path, item_writer: Any) -> None:
    root = tmp_path / "remote-hub"
    item_writer(root, "backtest", "9.0.0")
    server = HubServer([root])
    server.start()
    cache = tmp_path / "cache"
    try:
        Hub(url=server.url, cache_dir=cache).indexes()  # the index is cached, no item is
    finally:
        server.stop()
    offline = Hub(url=server.url, cache_dir=cache, timeout_s=1)
    fn = offline.import_function("hub://backtest")
    assert fn.resolved.source == "bundled" and fn.version.startswith("1.")
