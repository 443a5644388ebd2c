from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from tickrun.functions.artifacts import (
    ArtifactKeyError,
    ArtifactNotFoundError,
    LocalArtifactStore,
    S3Settings,
    open_store,
    sanitize_key,
)
from tickrun.functions.artifacts.s3 import S3ArtifactStore, parse_s3_url


@pytest.mark.parametrize("key", ["a", "proj/uid/0/model.json", "x_y-z.csv.gz", "a=1/b+c@d"])
def test_valid_keys_are_kept(key: str) -> None:
    assert sanitize_key(key) == key


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/etc/passwd",
        "../x",
        "a/../../b",
        "a/./b",
        "a//b",
        ".hidden",
        "a\\b",
        "C:\\x",
        "a/\x00b",
        "a b",
        "a/",
        "~/x",
    ],
)
def test_bad_keys_are_refused(key: str) -> None:
    with pytest.raises(ArtifactKeyError) as exc:
        sanitize_key(key)
    assert exc.value.status == 400


def test_local_store_refuses_traversal_and_writes_nothing(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "root")
    with pytest.raises(ArtifactKeyError):
        store.put("../escape.txt", b"x")
    with pytest.raises(ArtifactKeyError):
        store.get("../../etc/passwd")
    assert not (tmp_path / "escape.txt").exists()


def test_local_store_refuses_symlink_escape(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(tmp_path)
    store = LocalArtifactStore(root)
    with pytest.raises(Exception, match="outside the store root"):
        store.put("link/evil.txt", b"x")
    assert not (tmp_path / "evil.txt").exists()


def test_local_store_round_trip(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    data = b"abc" * 1000
    info = store.put("p/u/0/f.bin", data)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.size_bytes == len(data)
    assert store.get("p/u/0/f.bin") == data
    assert b"".join(store.stream("p/u/0/f.bin", 7)) == data
    info2 = store.put_stream("p/u/0/g.bin", io.BytesIO(data))
    assert info2.sha256 == info.sha256
    assert [o.key for o in store.list("p/u")] == ["p/u/0/f.bin", "p/u/0/g.bin"]
    store.delete("p/u/0/f.bin")
    with pytest.raises(ArtifactNotFoundError):
        store.stat("p/u/0/f.bin")
    # No temp files left beside the objects.
    assert sorted(p.name for p in (tmp_path / "p/u/0").iterdir()) == ["g.bin"]


def test_open_store_picks_backend_without_io(tmp_path: Path) -> None:
    assert isinstance(open_store(tmp_path), LocalArtifactStore)
    s3 = open_store("s3://bucket/some/prefix", S3Settings(endpoint="127.0.0.1:1"))
    assert isinstance(s3, S3ArtifactStore)
    assert s3.url_for("p/k.bin") == "s3://bucket/some/prefix/p/k.bin"
    with pytest.raises(ArtifactKeyError):
        parse_s3_url("s3://bucket/../x")


def test_s3_settings_from_env_hide_secrets() -> None:
    s = S3Settings.from_env(
        {
            "TICKRUN_S3_ENDPOINT": "http://127.0.0.1:9000",
            "TICKRUN_S3_ACCESS_KEY": "AKIAEXAMPLE",
            "TICKRUN_S3_SECRET_KEY": "supersecretvalue",
        }
    )
    assert s.endpoint == "127.0.0.1:9000"
    assert s.secure is False
    assert "supersecretvalue" not in repr(s)
    assert "supersecretvalue" not in s.describe()
    assert s.secret_key is not None and s.secret_key.get_secret_value() == "supersecretvalue"


def test_s3_store_without_endpoint_says_what_to_set() -> None:
    store = S3ArtifactStore("s3://bucket", S3Settings())
    with pytest.raises(Exception, match="TICKRUN_S3_ENDPOINT"):
        store.put("k", b"x")


# -- reading existing S3 objects: any valid S3 key but a traversal ----------------------------


class _FakeResponse:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, chunk: int):  # type: ignore[no-untyped-def]
        for i in range(0, len(self._data), chunk):
            yield self._data[i : i + chunk]

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass


class _FakeMinio:
    """Just enough of minio.Minio to read objects; records the names asked for."""

    def __init__(self, objects: dict[tuple[str, str], bytes]) -> None:
        self.objects = objects
        self.asked: list[str] = []

    def get_object(self, bucket: str, name: str) -> _FakeResponse:
        self.asked.append(name)
        return _FakeResponse(self.objects[(bucket, name)])

    def stat_object(self, bucket: str, name: str):  # type: ignore[no-untyped-def]
        self.asked.append(name)

        class St:
            size = len(self.objects[(bucket, name)])
            last_modified = None

        return St()


ODD_KEYS = [
    "exports/2024-01-01T00:00:00Z/bars.csv",
    "my data/btc usdt (1).csv",
    "~backup/a~b.csv",
    "a/./b.csv",
    "dir/.hidden.csv",
    "a//b.csv",
    "ünïcode/€.csv",
]


@pytest.mark.parametrize("key", ODD_KEYS)
def test_inputs_read_any_valid_s3_key(key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from tickrun.functions.runs import DataItem

    fake = _FakeMinio({("market", key): b"a,b\n1,2\n"})
    monkeypatch.setattr(S3ArtifactStore, "client", property(lambda self: fake))
    item = DataItem(f"s3://market/{key}", s3=S3Settings(endpoint="127.0.0.1:1"))
    assert item.get() == b"a,b\n1,2\n"
    assert fake.asked == [key]
    assert item.as_df().to_dict("list") == {"a": [1], "b": [2]}
    item.cleanup()


@pytest.mark.parametrize(
    "url",
    [
        "s3://market/../etc/passwd",
        "s3://market/a/../../b.csv",
        "s3://market/a/..",
        "s3://market/a\\..\\b.csv",
        "s3://market//abs/key.csv",
        "s3://market/",
    ],
)
def test_reads_still_refuse_traversal(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from tickrun.functions.runs import DataItem

    fake = _FakeMinio({})
    monkeypatch.setattr(S3ArtifactStore, "client", property(lambda self: fake))
    with pytest.raises(ArtifactKeyError) as exc:
        DataItem(url, s3=S3Settings(endpoint="127.0.0.1:1")).get()
    assert exc.value.status == 400
    assert fake.asked == []


def test_writes_keep_the_strict_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    store = S3ArtifactStore("s3://bucket", S3Settings(endpoint="127.0.0.1:1"))
    for key in ("my data/x.csv", "a:b", "~x", "a(1)"):
        with pytest.raises(ArtifactKeyError):
            store.put(key, b"x")
        with pytest.raises(ArtifactKeyError):
            store.url_for(key)
    with pytest.raises(ArtifactKeyError):
        parse_s3_url("s3://bucket/my prefix")


def test_cli_download_of_an_odd_s3_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tickrun.cli import main

    key = "exports/run (2):final~v1.csv"
    fake = _FakeMinio({("market", key): b"x,y\n"})
    monkeypatch.setattr(S3ArtifactStore, "client", property(lambda self: fake))
    monkeypatch.setenv("TICKRUN_S3_ENDPOINT", "127.0.0.1:1")
    out = tmp_path / "got.csv"
    with pytest.raises(SystemExit) as done:
        main(["artifact", "download", f"s3://market/{key}", "-o", str(out)])
    assert done.value.code in (0, None)
    assert out.read_bytes() == b"x,y\n"
    with pytest.raises(SystemExit) as refused:
        main(["artifact", "download", "s3://market/../x.csv", "-o", str(out)])
    assert refused.value.code != 0
    assert "'..'" in capsys.readouterr().err
