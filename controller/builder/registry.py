"""Publishing a function image to a registry, so a cluster's nodes can pull it by digest.

The remote tag is ``<registry>/<function>:<hash16>``, the local tag's content hash. The registry
is asked first (HTTP API v2, ``HEAD /v2/<repo>/manifests/<tag>``, with the credentials, Basic or
Bearer as the registry's challenge says): a tag it already has is reused with its
``Docker-Content-Digest`` and nothing is pushed. Otherwise the engine pushes (``podman push
--digestfile``). Either way the result is ``<registry>/<function>@sha256:…``.

Credentials come from TICKRUN_REGISTRY_USERNAME/PASSWORD (written to a 0600 auth file for the
push, never a command-line argument) or TICKRUN_REGISTRY_AUTH_FILE (a containers auth.json or
docker config.json, read here for the lookup and handed to the engine for the push). Nothing
here logs or raises a credential.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import re
import shutil
import ssl
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tickrun.functions.errors import BuildError
from tickrun.functions.settings import (
    CONTAINER_ENGINE,
    REGISTRY_AUTH_FILE,
    REGISTRY_PASSWORD,
    REGISTRY_TLS_VERIFY,
    REGISTRY_USERNAME,
)

from ..settings import Settings
from .engine import Engine
from .wheels import LogFn, run_logged

logger = logging.getLogger(__name__)

# Everything an engine may have pushed: a HEAD that accepts fewer types can get a 404 for an
# image that is there.
MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
)
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
LOOKUP_TIMEOUT_S = 30.0
PUSH_TIMEOUT_S = 1800.0
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class RegistryConfig:
    """Where images go and how to log in. Constructor does no I/O."""

    registry: str  # host[:port][/path], no scheme
    auth_file: Path | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls_verify: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> RegistryConfig | None:
        if not settings.registry:
            return None
        password = settings.registry_password
        return cls(
            registry=settings.registry,
            auth_file=settings.registry_auth_file,
            username=settings.registry_username,
            password=password.get_secret_value() if password is not None else None,
            tls_verify=settings.registry_tls_verify,
        )

    @property
    def host(self) -> str:
        return self.registry.partition("/")[0]

    def repository(self, function: str) -> str:
        """The repository's name inside the registry (the path after the host)."""
        path = self.registry.partition("/")[2]
        return f"{path}/{function}" if path else function

    def tag_ref(self, function: str, tag: str) -> str:
        return f"{self.registry}/{function}:{tag}"

    def digest_ref(self, function: str, digest: str) -> str:
        return f"{self.registry}/{function}@{digest}"


def credentials(config: RegistryConfig) -> tuple[str, str] | None:
    """(user, password) for the registry's host: the settings' pair, else the auth file's
    entry for the host (``auth`` = base64 of user:password), else None (anonymous)."""
    if config.username is not None and config.password is not None:
        return config.username, config.password
    if config.auth_file is None:
        return None
    try:
        data = json.loads(config.auth_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        # The parser's message could quote the file's content: name only the file.
        raise BuildError(
            f"cannot read the registry auth file {config.auth_file} ({type(exc).__name__})"
        ) from None
    auths = data.get("auths") if isinstance(data, dict) else None
    if not isinstance(auths, dict):
        return None
    host = config.host
    # containers-auth.json(5): the most specific key wins; docker writes https://host too.
    keys = [config.registry, host, f"https://{host}", f"http://{host}", f"https://{host}/v1/"]
    for key in keys:
        entry = auths.get(key)
        if not isinstance(entry, dict) or not isinstance(entry.get("auth"), str):
            continue
        try:
            user, sep, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except ValueError:
            raise BuildError(
                f"the registry auth file {config.auth_file} has an undecodable entry for {key}"
            ) from None
        if sep:
            return user, password
    return None


def docker_config_json(config: RegistryConfig) -> str | None:
    """A ``.dockerconfigjson`` with the registry's credentials (for the cluster's image pull
    Secret), None when there are none."""
    creds = credentials(config)
    if creds is None:
        return None
    user, password = creds
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    entry = {"username": user, "password": password, "auth": auth}
    return json.dumps({"auths": {config.host: entry}})


@contextlib.contextmanager
def engine_authfile(config: RegistryConfig) -> Iterator[Path | None]:
    """The auth file the engine logs in with: the configured one, or the settings' user and
    password in a private temp file (0600 in a 0700 folder) removed afterwards."""
    if config.username is None or config.password is None:
        yield config.auth_file
        return
    folder = Path(tempfile.mkdtemp(prefix="tickrun-registry-auth-"))
    try:
        path = folder / "auth.json"
        token = base64.b64encode(f"{config.username}:{config.password}".encode()).decode()
        with path.open("x", encoding="utf-8") as f:
            path.chmod(0o600)
            json.dump({"auths": {config.host: {"auth": token}}}, f)
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --- the registry HTTP API ------------------------------------------------------------------


class _Client:
    """Just enough of the distribution API for a manifest HEAD behind Basic or Bearer auth."""

    def __init__(self, config: RegistryConfig) -> None:
        self.config = config
        self.creds = credentials(config)
        ctx = ssl.create_default_context()
        if not config.tls_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        self.opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx))
        self.scheme = "https"

    def _open(self, request: urllib.request.Request) -> Any:
        return self.opener.open(request, timeout=LOOKUP_TIMEOUT_S)

    def head(self, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
        """(status, headers) of ``HEAD <scheme>://<host><path>``; without TLS verification a
        plain-http registry is accepted too (podman's --tls-verify=false does the same)."""
        while True:
            url = f"{self.scheme}://{self.config.host}{path}"
            request = urllib.request.Request(url, method="HEAD", headers=headers)  # noqa: S310
            try:
                with self._open(request) as resp:
                    return resp.status, dict(resp.headers.items())
            except urllib.error.HTTPError as exc:
                return exc.code, dict(exc.headers.items())
            except urllib.error.URLError as exc:
                if (
                    self.scheme == "https"
                    and not self.config.tls_verify
                    and isinstance(exc.reason, ssl.SSLError)
                ):
                    self.scheme = "http"
                    continue
                hint = ""
                if isinstance(exc.reason, ssl.SSLError):
                    hint = f" (a plain-http registry needs {REGISTRY_TLS_VERIFY.name}=false)"
                raise BuildError(
                    f"registry {self.config.host} is unreachable: {exc.reason}{hint}"
                ) from exc
            except OSError as exc:
                raise BuildError(
                    f"registry {self.config.host} is unreachable: {type(exc).__name__}"
                ) from exc

    def _basic(self) -> str:
        assert self.creds is not None
        return "Basic " + base64.b64encode(":".join(self.creds).encode()).decode()

    def _bearer(self, challenge: str) -> str:
        url = token_url(challenge)
        if url is None:
            raise BuildError(f"registry {self.config.host} sent a token realm tickrun cannot use")
        headers = {"Authorization": self._basic()} if self.creds else {}
        request = urllib.request.Request(url, headers=headers)  # noqa: S310
        try:
            with self._open(request) as resp:
                body = json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raise BuildError(
                f"registry {self.config.host}: the token service refused the credentials "
                f"(HTTP {exc.code})"
            ) from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise BuildError(
                f"registry {self.config.host}: no token from its token service "
                f"({type(exc).__name__})"
            ) from exc
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise BuildError(f"registry {self.config.host}: the token service sent no token")
        return f"Bearer {token}"

    def manifest_digest(self, repository: str, tag: str) -> str | None:
        path = f"/v2/{repository}/manifests/{tag}"
        headers = {"Accept": MANIFEST_TYPES}
        status, answer = self.head(path, headers)
        if status == 401:
            challenge = _header(answer, "WWW-Authenticate")
            if challenge.lower().startswith("bearer"):
                headers["Authorization"] = self._bearer(challenge)
            elif self.creds is not None:
                headers["Authorization"] = self._basic()
            else:
                raise BuildError(
                    f"registry {self.config.host} wants credentials: set "
                    f"{REGISTRY_USERNAME.name} and {REGISTRY_PASSWORD.name}, or "
                    f"{REGISTRY_AUTH_FILE.name}"
                )
            status, answer = self.head(path, headers)
        if status == 404:
            return None
        if status in (401, 403):
            raise BuildError(
                f"registry {self.config.host} refused the credentials for {repository} "
                f"(HTTP {status})"
            )
        if status != 200:
            raise BuildError(f"registry {self.config.host}: HEAD {path} answered HTTP {status}")
        digest = _header(answer, "Docker-Content-Digest")
        if not DIGEST.match(digest):
            raise BuildError(f"registry {self.config.host} sent no usable manifest digest")
        return digest


def token_url(challenge: str) -> str | None:
    """Where a ``Bearer realm="…",service="…",scope="…"`` challenge says to get a token (the
    docker token protocol: the realm with the other parameters as the query), None when the
    realm is not an http(s) URL."""
    params: dict[str, str] = dict(_CHALLENGE_PARAM.findall(challenge))
    realm = params.pop("realm", "")
    if not realm.startswith(("https://", "http://")):
        return None
    return realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(params)


def _header(headers: dict[str, str], name: str) -> str:
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), "").strip()


# --- the builder's calls --------------------------------------------------------------------


def lookup(config: RegistryConfig, function: str, tag: str) -> str | None:
    """``<registry>/<function>@sha256:…`` when the registry has ``<function>:<tag>``."""
    digest = _Client(config).manifest_digest(config.repository(function), tag)
    return config.digest_ref(function, digest) if digest else None


def publish(
    engine: Engine, local_tag: str, config: RegistryConfig, log: LogFn, *, force: bool = False
) -> str:
    """Push ``local_tag`` (``…/<function>:<tag>``) unless the registry already has the tag
    (``force``: push anyway, e.g. a ``noCache`` rebuild); return the digest reference the pods
    pull."""
    function, tag = _name_and_tag(local_tag)
    remote = config.tag_ref(function, tag)
    found = None if force else lookup(config, function, tag)
    if found is not None:
        log(f"{remote} is already in the registry ({found.rpartition('@')[2]}); not pushed")
        return found
    digest = push(engine, local_tag, remote, config, log)
    log(f"pushed {remote} ({digest})")
    return config.digest_ref(function, digest)


def push(engine: Engine, local_tag: str, remote: str, config: RegistryConfig, log: LogFn) -> str:
    """``<engine> push`` with a digest file; the manifest digest the registry stored."""
    if engine.name not in ("podman", "buildah"):
        raise BuildError(
            f"pushing to a registry needs podman or buildah (the engine is {engine.name}); "
            f"set {CONTAINER_ENGINE.name}=podman"
        )
    with (
        tempfile.TemporaryDirectory(prefix="tickrun-push-") as tmp,
        engine_authfile(config) as authfile,
    ):
        digest_file = Path(tmp) / "digest"
        cmd = [engine.binary(), "push", "--digestfile", str(digest_file)]
        if authfile is not None:
            cmd += ["--authfile", str(authfile)]
        if not config.tls_verify:
            cmd.append("--tls-verify=false")
        cmd += [local_tag, f"docker://{remote}"]
        log(f"{engine.name} push {local_tag} → {remote}")
        run_logged(cmd, log, env=engine.env(), timeout_s=PUSH_TIMEOUT_S, what=f"{engine.name} push")
        try:
            digest = digest_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise BuildError(f"{engine.name} push wrote no digest file") from exc
    if not DIGEST.match(digest):
        raise BuildError(f"{engine.name} push wrote an unusable digest {digest[:80]!r}")
    return digest


def _name_and_tag(local_tag: str) -> tuple[str, str]:
    repo, sep, tag = local_tag.rpartition(":")
    if not sep or "/" in tag:
        raise BuildError(f"image {local_tag!r} has no tag to publish")
    return repo.rsplit("/", 1)[-1], tag


__all__ = [
    "RegistryConfig",
    "credentials",
    "docker_config_json",
    "engine_authfile",
    "lookup",
    "publish",
    "push",
    "token_url",
]
