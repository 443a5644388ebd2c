"""The container platform: each replica is a podman/docker container of the function's image.

Host networking (each replica binds its own loopback port), ``--init`` so SIGTERM reaches the
processor, resource limits from the spec, and labels that name the controller, function and
replica: that is how a restarted controller finds its containers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from tickrun.functions.errors import PlatformError
from tickrun.functions.processor.exitcodes import ExitStatus
from tickrun.functions.replica import replica_command
from tickrun.functions.settings import FUNCTION, REPLICA_ID

from ..builder.engine import Engine
from .base import (
    AdoptResult,
    Launched,
    LaunchSpec,
    Liveness,
    Platform,
    ReplicaRef,
)

LABEL_CONTROLLER = "tickrun.controller"
MAX_LOG_BYTES = 16 * 1024 * 1024
REPLICA_USER = "65534:65534"  # nobody:nogroup
LABEL_FUNCTION = "tickrun.function"
LABEL_REPLICA = "tickrun.replica"


def container_name(function: str, replica_id: str) -> str:
    return f"tickrun-{function}-{replica_id}"[:200]


class ContainerPlatform(Platform):
    name = "container"

    # `podman ps` costs ~0.1 s of CPU: exits are noticed within this, not on every pass.
    LIST_EVERY_S = 1.0

    def __init__(self, engine: Engine, controller_id: str = "") -> None:
        self.engine = engine
        self.controller_id = controller_id
        self._listed: tuple[float, list[dict[str, Any]]] | None = None

    def isolation(self) -> dict[str, Any]:
        # Own mount and pid namespaces; the environment is the image's plus the spec's.
        return {"mechanism": "container", "engine": self.engine.name}

    async def _run(
        self, *args: str, timeout_s: float = 60.0, check: bool = True
    ) -> tuple[int, str, str]:
        # Output goes to files, not pipes: `run -d` leaves conmon holding the engine's stdout,
        # so reading a pipe to EOF would wait for the container to exit.
        with tempfile.TemporaryFile() as out_f, tempfile.TemporaryFile() as err_f:
            proc = await asyncio.create_subprocess_exec(
                self.engine.binary(),
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out_f,
                stderr=err_f,
                env=self.engine.env(),
            )
            try:
                await asyncio.wait_for(proc.wait(), timeout_s)
            except TimeoutError as exc:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
                raise PlatformError(f"`{self.engine.name} {args[0]}` timed out") from exc
            out_f.seek(0)
            err_f.seek(0)
            stdout = out_f.read().decode(errors="replace")
            stderr = err_f.read().decode(errors="replace")
        code = proc.returncode or 0
        if check and code != 0:
            last = (stderr.strip().splitlines() or [""])[-1][:300]
            raise PlatformError(f"`{self.engine.name} {args[0]}` failed (exit {code}): {last}")
        return code, stdout, stderr

    async def start(self, launch: LaunchSpec) -> Launched:
        if not self.engine.can_run:
            raise PlatformError(f"{self.engine.name} cannot run containers; install podman")
        name = container_name(launch.function, launch.replica_id)
        # A container left from an interrupted start under the same name would block the run.
        await self._run("rm", "-f", name, check=False)
        args = [
            "run",
            "-d",
            "--name",
            name,
            "--init",
            "--network",
            "host",
            "--label",
            f"{LABEL_CONTROLLER}={self.controller_id}",
            "--label",
            f"{LABEL_FUNCTION}={launch.function}",
            "--label",
            f"{LABEL_REPLICA}={launch.replica_id}",
            "--label",
            f"tickrun.revision={launch.revision}",
            # An unprivileged user without capabilities: the image's files are read-only to it.
            "--user",
            REPLICA_USER,
            "--cap-drop",
            "all",
            "--security-opt",
            "no-new-privileges",
            "-e",
            "HOME=/tmp",
            "-e",
            f"PORT={launch.port}",
            "-e",
            f"{FUNCTION.name}={launch.function}",
            "-e",
            f"{REPLICA_ID.name}={launch.replica_id}",
        ]
        # Through a 0600 file, not the command line: env values (secrets among them) would
        # show in any host user's `ps`. A multi-line value cannot go in an env file.
        env_lines = []
        for key, value in launch.env.items():
            if "\n" in value:
                args += ["-e", f"{key}={value}"]
            else:
                env_lines.append(f"{key}={value}\n")
        for folder in launch.mounts:  # bound models (bindings.py): read-only, same path
            args += ["-v", f"{folder}:{folder}:ro"]
        # k8s-file and json-file logs are capped by the engine while the container runs.
        args += ["--log-opt", f"max-size={MAX_LOG_BYTES}"]
        if launch.cpus:
            args += ["--cpus", f"{launch.cpus:g}"]
        if launch.memory_bytes:
            args += ["--memory", str(launch.memory_bytes)]
        args += [
            launch.artifact["image"],
            *replica_command("/opt/tickrun/function", launch.port, launch.workers, python="python"),
        ]
        with tempfile.NamedTemporaryFile("w", prefix="tickrun-env-", encoding="utf-8") as env_file:
            env_file.writelines(env_lines)
            env_file.flush()
            image_at = args.index(launch.artifact["image"])
            args[image_at:image_at] = ["--env-file", env_file.name]
            _, out, _ = await self._run(*args, timeout_s=120)
        self._listed = None
        return Launched(container=out.strip().splitlines()[-1][:128] if out.strip() else name)

    async def _list(self) -> list[dict[str, Any]]:
        if self.engine.name == "docker":
            _, out, _ = await self._run(
                "ps",
                "-a",
                "--filter",
                f"label={LABEL_CONTROLLER}={self.controller_id}",
                "--format",
                "{{json .}}",
            )
            rows = []
            for line in out.splitlines():
                if not line.strip():
                    continue
                raw = json.loads(line)
                pairs = raw.get("Labels", "").split(",")
                labels = dict(kv.split("=", 1) for kv in pairs if "=" in kv)
                status = raw.get("Status", "")
                code = None
                if status.startswith("Exited ("):
                    code = int(status[8 : status.index(")")])
                rows.append(
                    {
                        "Id": raw.get("ID"),
                        "Labels": labels,
                        "State": raw.get("State"),
                        "ExitCode": code,
                        "Names": [raw.get("Names")],
                    }
                )
            return rows
        _, out, _ = await self._run(
            "ps",
            "-a",
            "--filter",
            f"label={LABEL_CONTROLLER}={self.controller_id}",
            "--format",
            "json",
        )
        data = json.loads(out or "[]")
        return data if isinstance(data, list) else []

    async def inspect(self, refs: Sequence[ReplicaRef]) -> dict[str, Liveness]:
        if not refs:
            return {}
        now = time.monotonic()
        if self._listed is None or now - self._listed[0] > self.LIST_EVERY_S:
            self._listed = (now, await self._list())
        by_replica: dict[str, dict[str, Any]] = {}
        for row in self._listed[1]:
            rid = (row.get("Labels") or {}).get(LABEL_REPLICA)
            if rid:
                by_replica[rid] = row
        out: dict[str, Liveness] = {}
        for ref in refs:
            found = by_replica.get(ref.id)
            if found is None:
                out[ref.id] = Liveness(False, None, "container is gone")
            elif found.get("State") in ("running", "created", "configured", "initialized"):
                out[ref.id] = Liveness(True)
            else:
                code = found.get("ExitCode")
                out[ref.id] = Liveness(
                    False, code, f"container {found.get('State')} (exit code {code})"
                )
        return out

    async def stop(self, ref: ReplicaRef, timeout_s: float) -> None:
        target = ref.container or container_name(ref.function, ref.id)
        await self._run(
            "stop", "-t", str(max(1, int(timeout_s))), target, timeout_s=timeout_s + 30, check=False
        )
        await self._run("rm", "-f", target, timeout_s=60, check=False)
        self._listed = None

    async def adopt(self, refs: Sequence[ReplicaRef], controller_id: str) -> AdoptResult:
        result = AdoptResult()
        known = {r.id for r in refs}
        for row in await self._list():
            labels = row.get("Labels") or {}
            rid = labels.get(LABEL_REPLICA, "")
            running = row.get("State") == "running"
            if rid in known and running:
                result.alive.add(rid)
                continue
            if rid not in known:
                target = str(row.get("Id") or (row.get("Names") or [""])[0])
                await self._run("rm", "-f", target, check=False)
                result.removed_orphans.append(f"{rid or '?'} ({target[:12]})")
        return result

    async def logs(self, ref: ReplicaRef, tail: int) -> list[str]:
        target = ref.container or container_name(ref.function, ref.id)
        code, out, err = await self._run("logs", "--tail", str(tail), target, check=False)
        if code != 0:
            return []
        # Container logs interleave stdout and stderr; the processor logs to stderr.
        return (out + err).splitlines()[-tail:]

    async def exit_status(self, ref: ReplicaRef) -> ExitStatus | None:
        # The engine keeps the container's stdout, where the processor's status line is the
        # last it writes (the log messages go to stderr).
        target = ref.container or container_name(ref.function, ref.id)
        code, out, _ = await self._run("logs", "--tail", "20", target, check=False)
        return ExitStatus.last_in(out.splitlines()) if code == 0 else None
