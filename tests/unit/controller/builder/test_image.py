from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tickrun.controller.builder import image
from tickrun.controller.builder.wheels import Wheelhouse
from tickrun.functions.spec import parse_spec

TreeMaker = Callable[[Path, dict[str, str]], Path]  # the make_tree fixture (conftest.py)


def _house(tmp_path: Path, name: str, lock: str) -> Wheelhouse:
    (tmp_path / name / "wheels").mkdir(parents=True)
    (tmp_path / name / "requirements.lock").write_text(lock)
    return Wheelhouse(tmp_path / name, f"hash-{lock}")


def test_containerfile_layers_put_code_last_and_commands_before_tickrun() -> None:
    spec = parse_spec(
        {
            "metadata": {"name": "f"},
            "spec": {
                "handler": "main:handler",
                "build": {"commands": ["apt-get -v", "echo hi > x"]},
            },
        }
    )
    text = image.containerfile(spec, "localhost/base:3.11", has_requirements=True)
    lines = text.splitlines()
    assert lines[0] == "FROM localhost/base:3.11"
    idx = {
        key: next(i for i, ln in enumerate(lines) if ln.startswith(key))
        for key in (
            "COPY runtime.lock",
            "COPY requirements.lock",
            "RUN apt-get -v",
            "COPY tickrun.lock",
            "COPY function",
        )
    }
    assert (
        idx["COPY runtime.lock"]
        < idx["COPY requirements.lock"]
        < idx["RUN apt-get -v"]
        < idx["COPY tickrun.lock"]
        < idx["COPY function"]
    )
    assert idx["COPY function"] == len(lines) - 1
    install = lines[idx["COPY tickrun.lock"] + 1]
    assert install.startswith("RUN --mount=type=bind,source=tickrun-wheel,")
    assert "--no-index" in install and "--no-deps" in install and "--require-hashes" in install
    # tickrun is an installed distribution now, not folders on the path
    assert "PYTHONPATH" not in text and "COPY lib" not in text
    assert "--no-deps" not in lines[idx["COPY runtime.lock"] + 1]
    assert "COPY requirements.lock" not in image.containerfile(spec, "b", has_requirements=False)


def test_plan_hash_changes_with_code_and_the_tickrun_wheel_not_with_mtime(
    tmp_path: Path, make_tree: TreeMaker
) -> None:
    spec = parse_spec({"metadata": {"name": "f"}})
    code = make_tree(tmp_path / "code", {"main.py": "def handler(c, e): return 1"})
    runtime = _house(tmp_path, "rt", "aiohttp==1 --hash=sha256:00\n")
    reqs = _house(tmp_path, "rq", "")
    own = _house(tmp_path, "tr", "tickrun==0.1.0 --hash=sha256:aa\n")
    first = image.plan(spec, code, "base", runtime, reqs, own)
    assert image.plan(spec, code, "base", runtime, reqs, own) == first
    other = image.plan(spec, code, "other-base", runtime, reqs, own)
    assert other.content_hash != first.content_hash
    newer = _house(tmp_path, "tr2", "tickrun==0.1.0 --hash=sha256:bb\n")
    assert image.plan(spec, code, "base", runtime, reqs, newer).content_hash != first.content_hash
    (code / "main.py").write_text("def handler(c, e): return 2")
    assert image.plan(spec, code, "base", runtime, reqs, own).content_hash != first.content_hash


def test_write_context_has_everything_the_containerfile_copies(
    tmp_path: Path, make_tree: TreeMaker
) -> None:
    spec = parse_spec({"metadata": {"name": "f"}})
    code = make_tree(tmp_path / "code", {"main.py": "x", "function.yaml": "metadata: {name: f}"})
    runtime = _house(tmp_path, "rt", "")
    (runtime.wheels / "a-1-py3-none-any.whl").write_bytes(b"w")
    reqs = _house(tmp_path, "rq", "")
    own = _house(tmp_path, "tr", "tickrun==0.1.0 --hash=sha256:aa\n")
    (own.wheels / "tickrun-0.1.0-py3-none-any.whl").write_bytes(b"t")
    plan = image.plan(spec, code, "base", runtime, reqs, own)
    ctx = tmp_path / "ctx"
    image.write_context(ctx, plan, code, runtime, reqs, own)
    assert (ctx / "Containerfile").read_text() == plan.containerfile
    assert (ctx / "runtime-wheels" / "a-1-py3-none-any.whl").read_bytes() == b"w"
    assert (ctx / "tickrun-wheel" / "tickrun-0.1.0-py3-none-any.whl").read_bytes() == b"t"
    assert (ctx / "tickrun.lock").read_text() == own.lock.read_text()
    assert (ctx / "function" / "main.py").read_text() == "x"
    assert not (ctx / "lib").exists()
    # every COPY and bind-mount source of the Containerfile is in the context
    for line in plan.containerfile.splitlines():
        if line.startswith("COPY "):
            assert (ctx / line.split()[1]).exists(), line
        if "source=" in line:
            assert (ctx / line.split("source=")[1].split(",")[0]).is_dir(), line
