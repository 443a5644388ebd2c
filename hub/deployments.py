"""Deployment handles of a serving hub item: a local replica, or a function on a controller.

``HubFunction.deploy()`` returns one of these; both offer ``url``, ``invoke()`` and ``stop()``
and leave with a ``with`` block. The controller is reached through the client class registered
below the hub (``tickrun.controller_clients``), so the hub does not import the controller.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tickrun.functions.errors import HubError, TickrunError
from tickrun.functions.replica import replica_command
from tickrun.functions.runs.plugins import ControllerApi, controller_client_class
from tickrun.functions.settings import CONTROLLER_URL, TOKEN
from tickrun.functions.spec import load_spec

logger = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def controller_client(controller: bool | str | None = None) -> ControllerApi | None:
    """The controller client ``deploy()`` goes through, or None for a local replica.

    None: ``$TICKRUN_CONTROLLER_URL`` decides (the setting runs and the CLI use too); True: the
    configured controller, else the local one's state files; a URL: that controller; False:
    never (local replica).
    """
    if controller is False:
        return None
    url = controller if isinstance(controller, str) else CONTROLLER_URL.get()
    if controller is None and not url:
        return None
    try:
        client_class = controller_client_class()
    except TickrunError as exc:
        raise HubError(
            f"deploying through a controller: {exc.message}; pass controller=False for a "
            "local replica"
        ) from exc
    if isinstance(controller, str):
        return client_class(controller, TOKEN.get())
    return client_class.from_env()


class ControllerDeployment:
    """A serving item deployed through the controller's API. Constructor does no I/O."""

    def __init__(self, client: ControllerApi, name: str, *, port: int | None = None) -> None:
        self.client = client
        self.name = name
        self.port = port

    @classmethod
    def create(
        cls,
        client: ControllerApi,
        folder: Path,
        *,
        platform: str | None = None,
        ready_timeout_s: float = 60.0,
    ) -> ControllerDeployment:
        """Upload ``folder`` (code + function.yaml), wait for the build and a ready replica."""
        result = client.deploy(load_spec(folder / "function.yaml"), folder, platform=platform)
        fn, build = result["function"], result["build"]
        name = str(fn["name"])
        logger.info(
            "hub deploy through the controller",
            extra={"function": name, "controller": client.url, "build": build["id"]},
        )
        for line in client.follow_build(build["id"]):
            logger.debug("build", extra={"function": name, "line": line})
        final = client.get_build(build["id"])
        if final["state"] != "succeeded":
            raise HubError(
                f"the controller's build of {name} ended {final['state']}: "
                f"{final.get('message') or 'see `tickrun logs ' + name + '`'}"
            )
        ready = client.wait_ready(name, version=fn["version"], timeout_s=ready_timeout_s)
        return cls(client, name, port=ready.get("port"))

    @property
    def url(self) -> str:
        """The function's URL behind the controller's gateway."""
        return f"{self.client.url}/fn/{self.name}"

    def invoke(self, body: Any = None, *, path: str = "/", timeout_s: float = 30.0) -> Any:
        reply = self.client.invoke(
            self.name,
            path=path,
            method="POST",
            body=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            timeout_s=timeout_s,
        )
        if reply.status >= 400:
            raise HubError(f"POST {path} answered {reply.status}: {reply.body[:500]!r}")
        return decode_reply(reply.body, reply.headers.get("content-type", ""))

    def stop(self) -> None:
        """Delete the function from the controller (what leaving a ``with`` block does)."""
        self.client.delete_function(self.name)

    def __enter__(self) -> ControllerDeployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def decode_reply(body: bytes, content_type: str) -> Any:
    """A handler's reply as Python: JSON decoded, text as str, None for an empty body (a handler
    that returned None, e.g. a streaming step with nothing to emit yet), else the bytes."""
    if not body:
        return None
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        return json.loads(body)
    if media.startswith("text/"):
        return body.decode("utf-8", errors="replace")
    try:
        return json.loads(body)  # a handler that answers JSON without saying so
    except ValueError:
        return body


class LocalDeployment:
    """A serving item running as a local replica. Constructor does no I/O."""

    def __init__(self, directory: Path, *, port: int, host: str = "127.0.0.1") -> None:
        self.directory = directory
        self.host = host
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, *, ready_timeout_s: float = 60.0) -> None:
        log = (self.directory / "replica.log").open("wb")
        cmd = replica_command(str(self.directory), self.port, 0, host=self.host)
        self.process = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        log.close()
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = (self.directory / "replica.log").read_text(errors="replace")[-2000:]
                raise HubError(f"the replica exited with {self.process.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as r:  # noqa: S310
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise HubError(f"the replica was not ready within {ready_timeout_s:.0f}s")

    def invoke(self, body: Any = None, *, path: str = "/", timeout_s: float = 30.0) -> Any:
        data = json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - self.url is http://host:port
            f"{self.url}{path}",
            data=data,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as r:  # noqa: S310
                return decode_reply(r.read(), r.headers.get("Content-Type", ""))
        except urllib.error.HTTPError as exc:
            raise HubError(f"POST {path} answered {exc.code}: {exc.read()[:500]!r}") from exc

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> LocalDeployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
