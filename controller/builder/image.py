"""The container build context: Containerfile, wheelhouses, the tickrun wheel, function code.

Layer order is chosen for the cache: the venv and tickrun's dependencies first, then the
function's locked requirements, then ``build.commands``, then the tickrun wheel (installed like
any distribution, see :mod:`.selfwheel`), and the function's code last, so a code-only change
rebuilds only the last layer and a tickrun change rebuilds from the tickrun layer on.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from tickrun.functions import settings
from tickrun.functions.spec import FunctionSpec

from .hashing import IGNORED, hash_tree
from .wheels import Wheelhouse

APP = "/opt/tickrun"
# tickrun's own runtime dependencies, pinned to the controller's versions so replicas behave as
# the controller tested them.
RUNTIME_DISTRIBUTIONS = (
    "aiohttp",
    "pydantic",
    "PyYAML",
    "nuclio-sdk",
    "prometheus-client",
    "orjson",
    "kafka-python",
    "crc32c",
    "croniter",
)


def runtime_requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for dist in RUNTIME_DISTRIBUTIONS:
        try:
            out.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:
            out.append(dist)
    return out


def _locked_install(lock: str, wheels: str, *, deps: bool = True) -> list[str]:
    # COPY the lock first: bind-mount contents are not part of the layer cache key, the lock's
    # hashes are.
    return [
        f"COPY {lock} {APP}/{lock}",
        f"RUN --mount=type=bind,source={wheels},target=/tmp/wheels "
        "pip install --no-index --no-cache-dir --disable-pip-version-check "
        + ("" if deps else "--no-deps ")
        + f"--find-links /tmp/wheels --require-hashes -r {APP}/{lock}",
    ]


def containerfile(spec: FunctionSpec, base_image: str, *, has_requirements: bool) -> str:
    s = spec.spec
    lines = [
        f"FROM {base_image}",
        f"ENV LANG=C.UTF-8 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 VIRTUAL_ENV={APP}/venv "
        f"PATH={APP}/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "
        f"{settings.BUILD_DIR.name}={APP}/build",
        f"RUN python3 -m venv {APP}/venv",
        *_locked_install("runtime.lock", "runtime-wheels"),
    ]
    if has_requirements:
        lines += _locked_install("requirements.lock", "wheels")
    lines.append(f"WORKDIR {APP}/build")
    lines += [f"RUN {cmd}" for cmd in s.build.commands]
    # Its dependencies are the runtime wheels above (pinned to the controller's versions); the
    # wheel's metadata also names the controller's, which a replica does not need.
    lines += _locked_install("tickrun.lock", "tickrun-wheel", deps=False)
    # Metadata steps each commit a layer too, so they go before the code: after a code-only
    # change the COPY of the function is the one step podman has to run.
    lines += [
        f"WORKDIR {APP}/function",
        # Replicas run unprivileged (the container platform passes the same --user).
        "USER 65534:65534",
        f"LABEL tickrun.function={spec.name}",
        'CMD ["/bin/sh", "-c", "exec python -m tickrun serve '
        f'{APP}/function --host 127.0.0.1 --port ${{PORT:-8080}}"]',
        f"COPY function {APP}/function",
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ImagePlan:
    containerfile: str
    content_hash: str


def plan(
    spec: FunctionSpec,
    function_dir: Path,
    base_image: str,
    runtime: Wheelhouse,
    requirements: Wheelhouse,
    tickrun: Wheelhouse,
) -> ImagePlan:
    """The Containerfile and the content hash of everything that goes into the image."""
    has_reqs = requirements.lock.stat().st_size > 0
    text = containerfile(spec, base_image, has_requirements=has_reqs)
    h = hashlib.sha256()
    h.update(text.encode())
    # Each lock pins its wheels by sha256, so these cover the wheels' bytes.
    for house in (runtime, requirements, tickrun):
        h.update(house.lock_hash.encode())
    hash_tree(function_dir, h)
    return ImagePlan(text, h.hexdigest())


def _link_tree(src: Path, dest: Path) -> None:
    """Hard-link (or copy across filesystems) a folder's files; wheelhouses are large."""
    dest.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        target = dest / item.name
        try:
            os.link(item, target)
        except OSError:
            shutil.copy2(item, target)


def write_context(
    ctx: Path,
    image_plan: ImagePlan,
    function_dir: Path,
    runtime: Wheelhouse,
    requirements: Wheelhouse,
    tickrun: Wheelhouse,
) -> None:
    if ctx.exists():
        shutil.rmtree(ctx)
    ctx.mkdir(parents=True)
    (ctx / "Containerfile").write_text(image_plan.containerfile, encoding="utf-8")
    for house, lock, wheels in (
        (runtime, "runtime.lock", "runtime-wheels"),
        (requirements, "requirements.lock", "wheels"),
        (tickrun, "tickrun.lock", "tickrun-wheel"),
    ):
        shutil.copy2(house.lock, ctx / lock)
        _link_tree(house.wheels, ctx / wheels)
    shutil.copytree(function_dir, ctx / "function", ignore=shutil.ignore_patterns(*IGNORED))
    # The stored code is 0600/0700 (the controller's alone); in the image it must be readable
    # by the unprivileged user replicas run as. COPY keeps these modes.
    for dirpath, _dirs, files in os.walk(ctx / "function"):
        os.chmod(dirpath, 0o755)  # noqa: S103 - inside the image, for its replica user
        for name in files:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, 0o755 if os.stat(path).st_mode & 0o111 else 0o644)
    (ctx / "context.json").write_text(json.dumps({"content_hash": image_plan.content_hash}))
