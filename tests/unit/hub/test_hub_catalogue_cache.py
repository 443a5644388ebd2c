"""The hub catalogue is kept per process while its files' stat is unchanged (hub/statcache.py):
an unchanged hub is not parsed again, and any change (an edit, an added or removed item, a
deprecation, a file swapped for a link) is seen by the next call."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tickrun.functions.errors import HubError, SpecError
from tickrun.hub import Hub, import_function, spec, statcache
from tickrun.hub.catalogue import cached_index

from .conftest import write_item


@pytest.fixture
def settled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files written by the test count as settled (not racy) once read: the cache keeps them.
    (With the real margin, files younger than a second are read again on every call.)"""
    monkeypatch.setattr(statcache, "RACY_NS", 0)


@pytest.fixture
def yaml_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every item.yaml parsed from here on (the YAML loader, counted)."""
    seen: list[str] = []
    real = spec.yaml.load

    def counting(text: str, Loader: Any) -> Any:  # noqa: N803 - yaml's own keyword
        seen.append(text)
        return real(text, Loader=Loader)

    monkeypatch.setattr(spec.yaml, "load", counting)
    return seen


def _edit(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text().replace(old, new))


def test_an_unchanged_hub_is_not_parsed_again(
    private_hub: Path, settled: None, yaml_reads: list[str]
) -> None:
    first = cached_index(private_hub)
    assert len(yaml_reads) == 5  # every item version's spec, once
    assert Hub([private_hub], bundled=False).import_function("hub://toy:1").version == "1.2.3"
    yaml_reads.clear()
    for _ in range(3):  # a fresh Hub each time, as tickrun.import_function makes
        fn = import_function("hub://toy:1.2", hub=Hub([private_hub], bundled=False))
        assert fn.version == "1.2.3"
    assert yaml_reads == []
    assert cached_index(private_hub) is first


def test_each_resolution_hands_out_its_own_spec(private_hub: Path, settled: None) -> None:
    one = Hub([private_hub], bundled=False).resolve("hub://toy:2")
    one.spec.description = "changed by a caller"
    one.spec.handlers["main"].parameters[0].default = 99
    two = Hub([private_hub], bundled=False).resolve("hub://toy:2")
    assert two.spec.description == "test item toy 2.0.0"
    assert two.spec.handlers["main"].parameters[0].default == 1


def test_an_edited_item_is_seen_at_once(private_hub: Path, settled: None) -> None:
    hub = Hub([private_hub], bundled=False)
    assert hub.list_items()[1]["description"] == "test item toy 2.0.0"
    _edit(private_hub / "toy" / "v2_0_0" / "item.yaml", "test item toy", "an edited toy item")
    rows = Hub([private_hub], bundled=False).list_items()
    assert rows[1]["description"] == "an edited toy item 2.0.0"
    # The same Hub handle sees it too: sources are not memoised per handle.
    assert hub.resolve("hub://toy:2").spec.description == "an edited toy item 2.0.0"


def test_an_edited_code_file_changes_its_checksum(private_hub: Path, settled: None) -> None:
    code = private_hub / "toy" / "v1_0_0" / "code.py"
    before = cached_index(private_hub)["items"]["toy"]["versions"]["1.0.0"]["files"]["code.py"]
    _edit(code, 'VERSION = "1.0.0"', 'VERSION = "1.0.0"  # patched')
    after = cached_index(private_hub)["items"]["toy"]["versions"]["1.0.0"]["files"]["code.py"]
    assert after != before
    assert after == statcache_free_sha256(code)


def statcache_free_sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_added_and_removed_versions_are_seen(private_hub: Path, settled: None) -> None:
    assert Hub([private_hub], bundled=False).import_function("hub://toy").version == "2.0.0"
    write_item(private_hub, "toy", "2.1.0")
    assert Hub([private_hub], bundled=False).import_function("hub://toy").version == "2.1.0"
    write_item(private_hub, "newcomer", "0.0.1")
    assert Hub([private_hub], bundled=False).import_function("hub://newcomer").version == "0.0.1"
    shutil.rmtree(private_hub / "toy" / "v2_1_0")
    shutil.rmtree(private_hub / "newcomer")
    hub = Hub([private_hub], bundled=False)
    assert hub.import_function("hub://toy").version == "2.0.0"
    with pytest.raises(HubError, match="no hub item named 'newcomer'"):
        hub.import_function("hub://newcomer")


def test_an_item_yaml_added_to_an_existing_folder_is_seen(private_hub: Path, settled: None) -> None:
    cached_index(private_hub)
    made = write_item(private_hub, "toy", "3.0.0")
    os.unlink(made / "item.yaml")
    assert "3.0.0" not in cached_index(private_hub)["items"]["toy"]["versions"]
    shutil.rmtree(made)
    write_item(private_hub, "toy", "3.0.0")
    assert "3.0.0" in cached_index(private_hub)["items"]["toy"]["versions"]


def test_a_deprecation_added_later_is_seen(private_hub: Path, settled: None) -> None:
    assert Hub([private_hub], bundled=False).import_function("hub://toy").version == "2.0.0"
    (private_hub / "deprecations.yaml").write_text("toy:\n  2.0.0: leaks the future\n")
    assert Hub([private_hub], bundled=False).import_function("hub://toy").version == "1.2.3"


def test_a_file_swapped_for_a_link_out_fails_the_next_index(
    private_hub: Path, settled: None, tmp_path: Path
) -> None:
    cached_index(private_hub)
    outside = tmp_path / "outside.py"
    outside.write_text("SECRET = 1\n")
    code = private_hub / "toy" / "v1_0_0" / "code.py"
    code.unlink()
    code.symlink_to(outside)
    with pytest.raises(SpecError, match="link out of the item's folder"):
        cached_index(private_hub)


def test_files_changed_within_the_margin_are_read_again() -> None:
    """File times come from a coarse clock: a same-size rewrite in the tick of the read would
    keep the signature. So a value made from a file changed less than RACY_NS before the read
    is not kept, and the next call builds it again even though the stat still matches."""
    import time

    builds: list[int] = []

    def build(ctime_ns: int) -> Any:
        def run() -> tuple[statcache.Signature, int]:
            builds.append(1)
            return (("item.yaml", (1, 10, ctime_ns, ctime_ns)),), len(builds)

        return run

    cache = statcache.StatCache()
    now = time.time_ns()
    fresh = (("item.yaml", (1, 10, now, now)),)
    assert cache.get("fresh", lambda _v: fresh, build(now)) == 1
    assert cache.get("fresh", lambda _v: fresh, build(now)) == 2  # not kept: built again
    old_ns = now - 2 * statcache.RACY_NS
    settled = (("item.yaml", (1, 10, old_ns, old_ns)),)
    assert cache.get("old", lambda _v: settled, build(old_ns)) == 3
    assert cache.get("old", lambda _v: settled, build(old_ns)) == 3  # kept
    moved = (("item.yaml", (1, 10, old_ns, old_ns + 1)),)  # only the ctime moved
    assert cache.get("old", lambda _v: moved, build(old_ns)) == 4


def test_a_vanished_hub_folder_is_skipped(private_hub: Path, settled: None) -> None:
    hub = Hub([private_hub])
    assert hub.import_function("hub://toy").version == "2.0.0"
    shutil.rmtree(private_hub)
    hub = Hub([private_hub])
    with pytest.raises(HubError, match="no hub item named 'toy'"):
        hub.import_function("hub://toy")
    assert str(private_hub) in hub.skipped


def test_the_hub_api_serves_changes_and_leaves_a_broken_folder_out(
    private_hub: Path, settled: None, tmp_path: Path
) -> None:
    import json
    import urllib.request

    from .test_hub_remote import HubServer

    def served() -> dict[str, Any]:
        with urllib.request.urlopen(f"{server.url}/api/hub") as r:
            items: dict[str, Any] = json.loads(r.read())["items"]
            return items

    server = HubServer([private_hub])
    server.start()
    try:
        assert "2.1.0" not in served()["toy"]["versions"]
        write_item(private_hub, "toy", "2.1.0")  # a running server sees a new version
        assert served()["toy"]["latest"] == "2.1.0"
        code = private_hub / "toy" / "v1_0_0" / "code.py"
        kept = code.read_text()
        code.unlink()
        code.symlink_to(tmp_path / "elsewhere.py")
        (tmp_path / "elsewhere.py").write_text("SECRET = 1\n")
        assert served() == {}  # the folder holds a bad item: left out, not a 500
        code.unlink()
        code.write_text(kept)
        assert sorted(served()) == ["other", "toy"]
    finally:
        server.stop()
