"""The builder: turns (code, spec, platform) into what replicas run, skipping unchanged work.

- process: a cached per-function environment (keyed by the lock hash and build commands);
- container: an OCI image tagged by the content hash of its build context, tickrun installed
  in it from a wheel of its own sources (cached by their hash too);
- kubernetes: the container image, published to TICKRUN_REGISTRY when one is set
  (:mod:`.registry`): a tag the registry already has is neither rebuilt nor pushed, and the
  artifact records the digest the pods pull.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tickrun.functions.errors import BuildError, PlatformError
from tickrun.functions.spec import FunctionSpec

from ..settings import Settings
from . import image as image_ctx
from . import registry
from .engine import Engine
from .env import ensure_env
from .hashing import sha256_bytes
from .selfwheel import tickrun_wheel
from .wheels import LogFn, resolve


@dataclass(frozen=True)
class BuildResult:
    content_hash: str
    cached: bool
    # process: {"python", "build_dir", "code_dir"}; container: {"image", "code_dir"};
    # kubernetes with a registry also "image_digest" (<registry>/<name>@sha256:…), and "image"
    # is the registry's tag.
    artifact: dict[str, Any]
    duration_s: float


class Builder:
    """Constructor does no I/O; :meth:`build` blocks (run it in a thread)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def engine(self) -> Engine:
        name = self.settings.engine()
        if name is None:
            raise PlatformError(
                "no container engine found (podman, buildah or docker); install podman or "
                "deploy with --platform process"
            )
        return Engine(name)

    def build(
        self, spec: FunctionSpec, code_dir: Path, platform: str, log: LogFn, *, code_hash: str
    ) -> BuildResult:
        t0 = time.monotonic()
        if platform == "process":
            result = self._build_process(spec, code_dir, log, code_hash=code_hash)
        elif platform == "container":
            result = self._build_image(spec, code_dir, log)
        elif platform == "kubernetes":
            target = registry.RegistryConfig.from_settings(self.settings)
            result = self._build_image(spec, code_dir, log, publish_to=target)
        else:
            raise BuildError(f"unknown platform {platform!r}")
        took = time.monotonic() - t0
        log(f"build {'cached' if result[1] else 'done'} in {took:.2f} s")
        return BuildResult(result[0], result[1], result[2], took)

    def _build_process(
        self, spec: FunctionSpec, code_dir: Path, log: LogFn, *, code_hash: str
    ) -> tuple[str, bool, dict[str, Any]]:
        s = spec.spec
        wheels = resolve(s.requirements, self.settings.wheels_cache, target="host", log=log)
        env = ensure_env(wheels, s.build.commands, self.settings.envs_cache, log=log)
        artifact = {"python": env.python, "build_dir": env.build_dir, "code_dir": str(code_dir)}
        # Nothing is built for the code itself: the process platform runs it in place.
        return sha256_bytes(code_hash, env.key), env.cached, artifact

    def _build_image(
        self,
        spec: FunctionSpec,
        code_dir: Path,
        log: LogFn,
        *,
        publish_to: registry.RegistryConfig | None = None,
    ) -> tuple[str, bool, dict[str, Any]]:
        engine = self.engine()
        base = spec.spec.build.base_image or self.settings.base_image
        runtime = resolve(
            image_ctx.runtime_requirements(),
            self.settings.wheels_cache,
            target="image",
            log=lambda m: log(f"runtime {m}"),
        )
        reqs = resolve(spec.spec.requirements, self.settings.wheels_cache, target="image", log=log)
        own = tickrun_wheel(self.settings.wheels_cache, log)
        plan = image_ctx.plan(spec, code_dir, base, runtime, reqs, own)
        short = plan.content_hash[:16]
        tag = f"localhost/tickrun/{spec.name}:{short}"
        artifact: dict[str, Any] = {"image": tag, "code_dir": str(code_dir)}
        no_cache = spec.spec.build.no_cache
        if publish_to is not None and not no_cache:
            # The registry is asked before the local store: an image pushed earlier (by this
            # controller, or another one since pruned) needs no build at all.
            found = registry.lookup(publish_to, spec.name, short)
            if found is not None:
                remote = publish_to.tag_ref(spec.name, short)
                digest = found.rpartition("@")[2]
                log(f"{remote} is already in the registry ({digest}); nothing to build or push")
                return plan.content_hash, True, {**artifact, "image": remote, "image_digest": found}
        cached = not no_cache and engine.image_exists(tag)
        if cached:
            log(f"image {tag} is up to date (content hash unchanged); nothing to build")
        else:
            ctx = self.settings.builds_dir / spec.name / "context"
            log(f"writing build context for {tag}")
            image_ctx.write_context(ctx, plan, code_dir, runtime, reqs, own)
            log(f"{engine.name} build {tag} (base {base})")
            engine.build(ctx, tag, log, no_cache=no_cache)
            removed = engine.prune_tags(f"localhost/tickrun/{spec.name}", keep={tag})
            if removed:
                log(f"removed {len(removed)} old image tag(s) of {spec.name}")
        if publish_to is not None:
            artifact["image"] = publish_to.tag_ref(spec.name, short)
            artifact["image_digest"] = registry.publish(
                engine, tag, publish_to, log, force=no_cache
            )
        return plan.content_hash, cached, artifact


__all__ = ["BuildResult", "Builder"]
