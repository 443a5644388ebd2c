"""The container engine CLI (podman, buildah or docker): build, inspect and remove images."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tickrun.functions.errors import BuildError, PlatformError

from .wheels import LogFn, run_logged


class Engine:
    """Thin wrapper over one engine binary. Constructor does no I/O."""

    def __init__(self, name: str) -> None:
        if name not in ("podman", "buildah", "docker"):
            raise BuildError(f"unknown container engine {name!r}: use podman, buildah or docker")
        self.name = name

    @property
    def can_run(self) -> bool:
        return self.name != "buildah"

    def binary(self) -> str:
        path = shutil.which(self.name)
        if path is None:
            raise PlatformError(
                f"{self.name} is not installed; install podman (apt-get install podman) or use "
                "the process platform (--platform process)"
            )
        return path

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.name == "docker":
            env.setdefault("DOCKER_BUILDKIT", "1")  # RUN --mount needs BuildKit
        return env

    def run(
        self, *args: str, timeout_s: float = 60.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        try:
            proc = subprocess.run(
                [self.binary(), *args],
                capture_output=True,
                text=True,
                env=self.env(),
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise PlatformError(
                f"`{self.name} {args[0]}` timed out after {timeout_s:.0f} s"
            ) from exc
        if check and proc.returncode != 0:
            msg = (proc.stderr.strip().splitlines() or [""])[-1][:300]
            raise PlatformError(f"`{self.name} {args[0]}` failed (exit {proc.returncode}): {msg}")
        return proc

    def image_exists(self, tag: str) -> bool:
        if self.name == "podman":
            args = ["image", "exists", tag]
        elif self.name == "buildah":
            args = ["inspect", "--type", "image", tag]
        else:
            args = ["image", "inspect", tag]
        return self.run(*args, check=False).returncode == 0

    def build(
        self,
        context: Path,
        tag: str,
        log: LogFn,
        *,
        no_cache: bool = False,
        timeout_s: float = 1800,
    ) -> None:
        cmd = [self.binary(), "bud" if self.name == "buildah" else "build"]
        if self.name != "docker":
            cmd.append("--layers")
        if no_cache:
            cmd.append("--no-cache")
        cmd += ["-t", tag, "-f", str(context / "Containerfile"), str(context)]
        run_logged(cmd, log, env=self.env(), timeout_s=timeout_s, what=f"{self.name} build")

    def prune_tags(self, repository: str, keep: set[str], keep_newest: int = 3) -> list[str]:
        """Remove old content-hash tags of ``repository`` (newest ``keep_newest`` and ``keep``
        stay). Images still used by a container are left alone by the engine."""
        if self.name == "buildah":
            return []
        proc = self.run("images", "--format", "{{.Repository}}:{{.Tag}}", repository, check=False)
        tags = [t for t in proc.stdout.split() if t.startswith(repository + ":")]
        removed = []
        for tag in tags[keep_newest:]:  # newest first
            if tag not in keep and self.run("rmi", tag, check=False).returncode == 0:
                removed.append(tag)
        return removed

    def remove_image(self, tag: str) -> None:
        args = ["rmi", tag] if self.name != "podman" else ["image", "rm", tag]
        self.run(*args, check=False)
