"""Hub items stay where they belong: safe ``files:`` names, ``export`` writes only inside its
folder, a remote hub needs https and never shadows a bundled item version, and a pin file of
SHA-256s refuses anything else. Remote hubs are served over real loopback HTTP."""

from __future__ import annotations

import json
import logging
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tickrun.cli import main
from tickrun.functions.errors import HubError, SpecError
from tickrun.hub import Hub
from tickrun.hub.catalogue import build_index, validate_index
from tickrun.hub.pins import HubPinError, HubPins, pin_lines
from tickrun.hub.sources import HubConfigError, RemoteSource, _NoDowngrade
from tickrun.hub.spec import parse_item

from .conftest import write_item
from .test_hub_remote import HubServer

BASE: dict[str, Any] = {
    "name": "toy",
    "version": "1.0.0",
    "description": "d",
    "module": "code",
    "handlers": {"main": {}},
}


@pytest.mark.parametrize(
    "bad",
    [
        "/etc/passwd",
        "../outside.py",
        "data/../../outside.py",
        "..",
        ".",
        "..\\..\\outside.py",
        "data\\..\\x",
        "C:/x.py",
        "c:x.py",
        ".hidden",
        "data//x.csv",
        "data/",
        "",
        "a\x00b",
        "a\nb",
        "~/x",
        "/".join(["d"] * 9),
    ],
)
def test_item_files_must_be_safe_relative_paths(bad: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_item({**BASE, "files": [bad]})
    assert err.value.detail[0]["field"].startswith("files")


def test_item_files_that_are_fine() -> None:
    spec = parse_item({**BASE, "files": ["data/table.csv", "helpers.py", "a/b-c_d+e.1.txt"]})
    assert spec.code_files == ["code.py", "data/table.csv", "helpers.py", "a/b-c_d+e.1.txt"]


def test_a_remote_index_with_unsafe_names_is_refused() -> None:
    digest = "0" * 64

    def index(name: str, file: str, sha: str = digest) -> dict[str, Any]:
        return {"schema": 1, "items": {name: {"versions": {"1.0.0": {"files": {file: sha}}}}}}

    for bad in (
        index("toy", "../../.bashrc"),
        index("toy", "a\\..\\b"),
        index("toy", "/etc/cron.d/x"),
        index("../../escape", "code.py"),  # item names become cache folders
        index("Toy", "code.py"),
        index("toy", "code.py", sha="not-a-digest"),
    ):
        with pytest.raises(SpecError):
            validate_index(bad, source="test")
    assert validate_index(index("toy", "code.py"), source="test")["items"]["toy"]


def test_a_symlink_out_of_an_item_is_refused(tmp_path: Path, secret_file: Path) -> None:
    root = tmp_path / "hub"
    folder = write_item(root, "toy", "1.0.0", extra="files: [leak.txt]\n")
    (folder / "leak.txt").symlink_to(secret_file)
    with pytest.raises(SpecError, match="link out of the item"):
        build_index(root)


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text("keep out")
    return path


SERVING = textwrap.dedent("""\
    kind: serving
    serving:
      handler: code:handler
    files: [data/table.csv]
    """)


def _serving_hub(root: Path) -> Path:
    folder = write_item(root, "srv", "1.0.0", extra=SERVING)
    (folder / "data").mkdir()
    (folder / "data" / "table.csv").write_text("a,b\n1,2\n")
    return root


def test_export_writes_only_inside_its_folder(tmp_path: Path, secret_file: Path) -> None:
    fn = Hub([_serving_hub(tmp_path / "hub")], bundled=False).import_function("hub://srv")
    target = tmp_path / "fn"
    target.mkdir()
    # A symlink planted where a file goes is replaced, not written through.
    (target / "code.py").symlink_to(secret_file)
    (target / "function.yaml").symlink_to(secret_file)
    fn.export(target)
    assert secret_file.read_text() == "keep out"
    assert not (target / "code.py").is_symlink() and not (target / "function.yaml").is_symlink()
    assert (target / "code.py").read_bytes() == (fn.folder / "code.py").read_bytes()
    assert (target / "data" / "table.csv").read_text() == "a,b\n1,2\n"

    # A symlinked sub-folder leading out of the target is refused.
    outside = tmp_path / "outside"
    outside.mkdir()
    other = tmp_path / "fn2"
    other.mkdir()
    (other / "data").symlink_to(outside)
    with pytest.raises(HubError, match="outside"):
        fn.export(other)
    assert list(outside.iterdir()) == []


def test_export_does_not_copy_a_file_swapped_for_a_link_after_indexing(
    tmp_path: Path, secret_file: Path
) -> None:
    fn = Hub([_serving_hub(tmp_path / "hub")], bundled=False).import_function("hub://srv")
    table = fn.folder / "data" / "table.csv"
    table.unlink()
    table.symlink_to(secret_file)
    with pytest.raises(HubError, match="not a file inside"):
        fn.export(tmp_path / "fn")
    assert not (tmp_path / "fn" / "data" / "table.csv").exists()


# -- remote hubs ---------------------------------------------------------------------------


@pytest.fixture
def forged_hub(tmp_path: Path) -> Iterator[HubServer]:
    """A remote hub offering its own code under a bundled name and version, and a new one."""
    root = tmp_path / "forged"
    for version in ("1.0.0", "9.0.0"):
        write_item(root, "backtest", version, body=f"VERSION = 'forged {version}'\n")
    server = HubServer([root])
    server.start()
    yield server
    server.stop()


def test_remote_hub_needs_https(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TICKRUN_HUB_ALLOW_HTTP", raising=False)
    for url in ("http://127.0.0.1:8070", "HTTP://hub.example"):
        with pytest.raises(HubConfigError, match="TICKRUN_HUB_ALLOW_HTTP"):
            Hub(url=url, cache_dir=tmp_path)
    for url in ("ftp://hub.example", "file:///etc", "hub.example:8070"):
        with pytest.raises(HubConfigError, match="https://"):
            Hub(url=url, cache_dir=tmp_path)
    monkeypatch.setenv("TICKRUN_HUB_URL", "http://127.0.0.1:8070")
    with pytest.raises(HubConfigError):
        Hub.from_env(cache_dir=tmp_path)
    assert (
        Hub(url="https://hub.example", cache_dir=tmp_path)
        .sources[-1]
        .label.startswith("https://hub.example")
    )
    monkeypatch.setenv("TICKRUN_HUB_ALLOW_HTTP", "1")
    hub = Hub.from_env(cache_dir=tmp_path)
    assert isinstance(hub.sources[-1], RemoteSource)
    assert isinstance(
        Hub(url="http://127.0.0.1:8070", cache_dir=tmp_path, allow_http=True).sources[-1],
        RemoteSource,
    )


def test_remote_hub_cannot_shadow_a_bundled_item(
    forged_hub: HubServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tickrun.hub.resolver")
    hub = Hub(url=forged_hub.url, cache_dir=tmp_path / "c", allow_http=True)
    fn = hub.import_function("hub://backtest:1.0.0")
    assert fn.resolved.source == "bundled"
    assert "forged" not in fn.code_path.read_text()
    assert any("differs from the bundled" in r.getMessage() for r in caplog.records)
    # Without the bundled catalogue as a source the forged copy is still not offered.
    remote_only = Hub(url=forged_hub.url, cache_dir=tmp_path / "c2", bundled=False, allow_http=True)
    with pytest.raises(HubError, match="no version matching 1.0.0; versions: 9.0.0"):
        remote_only.import_function("hub://backtest:1.0.0")
    assert not any("/items/backtest/1.0.0/" in r for r in forged_hub.requests)
    # A version the bundled catalogue does not have is the remote hub's to add.
    newer = hub.import_function("hub://backtest:9")
    assert newer.resolved.source.endswith("/api/hub") and newer.module().VERSION == "forged 9.0.0"


# -- pins ----------------------------------------------------------------------------------


def _pin_file(path: Path, lines: list[str]) -> Path:
    path.write_text("# pins\n\n" + "\n".join(lines) + "\n")
    return path


def test_pins_from_the_cli_accept_the_pinned_and_refuse_the_rest(
    private_hub: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = 0
    try:
        main(["--log-level", "WARNING", "hub", "pins", str(private_hub)])
    except SystemExit as exc:
        code = int(exc.code or 0)
    assert code == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if not ln.startswith("#")]
    assert "  toy/1.2.0/code.py" in "\n".join(lines)
    assert len(lines) == 10  # 5 versions x (item.yaml, code.py)
    pins = _pin_file(tmp_path / "pins.txt", [ln for ln in lines if "/2.0.0/" not in ln])
    hub = Hub([private_hub], pins=pins)
    assert hub.import_function("hub://toy:1.2.0").module().VERSION == "1.2.0"
    # Bundled items are part of the package, not subject to the pins.
    assert hub.import_function("hub://backtest:1.0.0").resolved.source == "bundled"
    # The newest match is unpinned: refused, not silently replaced by an older pinned version.
    with pytest.raises(HubPinError, match="toy:2.0.0 is not pinned"):
        hub.import_function("hub://toy")
    # A pinned file changed after pinning.
    (private_hub / "toy" / "v1_2_3" / "code.py").write_text("VERSION = 'evil'\n")
    with pytest.raises(HubPinError, match="code.py does not match its pinned SHA-256"):
        Hub([private_hub], pins=pins).import_function("hub://toy:1.2.3")
    # An extra file not in the pins.
    folder = private_hub / "other" / "0.1.0"
    (folder / "extra.txt").write_text("x")
    text = (folder / "item.yaml").read_text() + "files: [extra.txt]\n"
    (folder / "item.yaml").write_text(text)
    with pytest.raises(HubPinError) as err:
        Hub([private_hub], pins=pins).import_function("hub://other")
    assert err.value.status == 403


def test_pins_check_the_remote_cache_every_time(
    private_hub: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pins = _pin_file(tmp_path / "pins.txt", pin_lines(private_hub))
    server = HubServer([private_hub])
    server.start()
    try:
        monkeypatch.setenv("TICKRUN_HUB_PINS", str(pins))
        cache = tmp_path / "cache"
        hub = Hub(url=server.url, cache_dir=cache, bundled=False, allow_http=True)
        fn = hub.import_function("hub://toy:1.0.0")
        assert fn.folder.is_relative_to(cache) and fn.module().VERSION == "1.0.0"
        # Someone edits the cached copy: the next resolution hashes it again and refuses it.
        (fn.folder / "code.py").write_text("VERSION = 'tampered'\n")
        again = Hub(url=server.url, cache_dir=cache, bundled=False, allow_http=True)
        with pytest.raises(HubPinError, match="does not match its pinned SHA-256"):
            again.import_function("hub://toy:1.0.0")
    finally:
        server.stop()


def test_a_bad_pin_file_is_a_clear_error(private_hub: Path, tmp_path: Path) -> None:
    bad = tmp_path / "pins.txt"
    bad.write_text("deadbeef  toy/1.0.0/code.py\n")
    with pytest.raises(HubConfigError, match="pins.txt:1"):
        Hub([private_hub], pins=bad).import_function("hub://toy:1.0.0")
    with pytest.raises(HubConfigError, match="cannot read"):
        Hub([private_hub], pins=tmp_path / "missing.txt").import_function("hub://toy:1.0.0")
    loaded = HubPins.load(_pin_file(tmp_path / "ok.txt", pin_lines(private_hub)))
    assert len(loaded.digests) == 10


def test_the_hub_api_does_not_serve_a_file_swapped_for_a_link(
    private_hub: Path, secret_file: Path
) -> None:
    server = HubServer([private_hub])
    server.start()
    try:
        url = f"{server.url}/api/hub/items/toy/1.0.0/code.py"
        with urllib.request.urlopen(f"{server.url}/api/hub") as r:  # the index is built now
            assert json.loads(r.read())["items"]["toy"]
        code = private_hub / "toy" / "v1_0_0" / "code.py"
        code.unlink()
        code.symlink_to(secret_file)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url)
        assert err.value.code == 404
        assert b"keep out" not in err.value.read()
    finally:
        server.stop()


def test_https_hub_redirects_never_downgrade_to_http(tmp_path: Path) -> None:
    source = Hub(url="https://hub.example", cache_dir=tmp_path, bundled=False).sources[0]
    assert isinstance(source, RemoteSource)
    handler = next(h for h in source._opener.handlers if isinstance(h, _NoDowngrade))
    req = urllib.request.Request("https://hub.example/api/hub")
    with pytest.raises(HubError, match="non-https"):
        handler.redirect_request(req, None, 302, "Found", {}, "http://hub.example/api/hub")
    follow = handler.redirect_request(req, None, 302, "Found", {}, "https://mirror.example/x")
    assert follow is not None and follow.full_url == "https://mirror.example/x"
