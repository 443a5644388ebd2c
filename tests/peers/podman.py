"""podman settings shared by tests, the controller and ``deploy/images/podman-env.sh``.

podman itself and the offline base image are provided by ``deploy/peers/ensure.sh podman``;
this module computes the same environment as ``podman-env.sh`` and checks that the image is
there.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from ._util import ENSURE_SH, REPO_ROOT, PeerUnavailable, peers_cache, versions

logger = logging.getLogger(__name__)

IMAGES_DIR = REPO_ROOT / "deploy" / "images"
CONTAINERS_CONF = IMAGES_DIR / "containers.conf"
GEN_STORAGE_CONF = IMAGES_DIR / "gen-storage-conf.sh"


def base_image() -> str:
    """Name of the offline Python base image (BASE_IMAGE in deploy/peers/versions.env)."""
    return versions()["BASE_IMAGE"]


def storage_conf_path() -> Path:
    return peers_cache() / "podman" / "storage.conf"


def podman_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: os.environ) plus CONTAINERS_CONF, CONTAINERS_STORAGE_CONF and
    TICKRUN_BASE_IMAGE, exactly as ``source deploy/images/podman-env.sh`` sets them."""
    env = dict(os.environ if base is None else base)
    storage_conf = storage_conf_path()
    # The generator is the single definition of the storage layout; it only rewrites the file
    # when the content would change, so calling it every time is cheap.
    subprocess.run([str(GEN_STORAGE_CONF), str(storage_conf)], env=env, check=True, timeout=30)
    env["CONTAINERS_CONF"] = str(CONTAINERS_CONF)
    env["CONTAINERS_STORAGE_CONF"] = str(storage_conf)
    env["TICKRUN_BASE_IMAGE"] = base_image()
    return env


def podman(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 120.0, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run podman with tickrun's settings (``env`` defaults to ``podman_env()``)."""
    proc = subprocess.run(
        ["podman", *args],
        env=dict(env) if env is not None else podman_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, proc.args, proc.stdout, proc.stderr)
    return proc


def require_base_image(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the podman env after checking podman works and the base image exists; raise
    PeerUnavailable naming ensure.sh otherwise."""
    if shutil.which("podman") is None:
        raise PeerUnavailable(f"podman is not installed. Run `{ENSURE_SH} podman` (as root).")
    if not GEN_STORAGE_CONF.is_file():
        raise PeerUnavailable(f"{GEN_STORAGE_CONF} is missing from the checkout")
    full_env = podman_env(env)
    image = base_image()
    proc = podman("image", "exists", image, env=full_env, check=False, timeout=60)
    if proc.returncode == 1:
        raise PeerUnavailable(
            f"podman image {image} not found in the tickrun image store "
            f"(CONTAINERS_STORAGE_CONF={full_env['CONTAINERS_STORAGE_CONF']}). "
            f"Run `{ENSURE_SH} podman` first."
        )
    if proc.returncode != 0:
        raise PeerUnavailable(
            f"`podman image exists {image}` failed (exit {proc.returncode}): {proc.stderr.strip()}. "
            f"Run `{ENSURE_SH} podman` to install and configure podman."
        )
    return full_env
