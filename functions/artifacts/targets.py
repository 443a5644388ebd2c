"""Where an artifact record may point: inside one of the configured artifact stores.

A run record's artifact ``target`` is data anyone who can write the run DB chooses (a job, a
client of the controller's ``/api/runs``). Read back blindly it is a file-read primitive: a
record pointing at the controller's token or ``/etc/shadow`` made ``tickrun artifact download``
copy them out. So the API refuses such a record, and every reader checks a target that came from
a record again, on its own host, before opening it.

"Configured stores" are roots: local folders (symlinks and ``..`` resolved, so a link inside a
root that leads out of it does not count as inside) and ``s3://bucket[/prefix]`` roots on the
configured S3 endpoint. A target is allowed when it lies strictly below one of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ArtifactError
from ..settings import ARTIFACT_STORES
from .s3 import parse_s3_object_url, parse_s3_url


class ArtifactTargetError(ArtifactError):
    """An artifact target outside every configured artifact store (or not a target at all)."""

    status = 400


def _local_root(text: str) -> Path:
    raw = text[len("file://") :] if text.startswith("file://") else text
    return Path(raw).expanduser().resolve()


@dataclass(frozen=True, slots=True)
class ArtifactRoots:
    """The artifact stores a target must lie in. Build with :meth:`of`."""

    local: tuple[Path, ...] = ()
    s3: tuple[tuple[str, str], ...] = ()  # (bucket, prefix without slashes; "" = whole bucket)

    @classmethod
    def of(cls, urls: Iterable[str | Path]) -> ArtifactRoots:
        """Roots from store URLs: folders, ``file://`` paths or ``s3://bucket[/prefix]``."""
        local: list[Path] = []
        s3: list[tuple[str, str]] = []
        for url in urls:
            text = str(url).strip()
            if not text:
                continue
            if text.startswith("s3://"):
                root = parse_s3_url(text)
                if root not in s3:
                    s3.append(root)
            elif "://" in text:
                raise ArtifactError(f"artifact store {text[:100]!r} is not a folder or s3:// URL")
            else:
                path = _local_root(text)
                if path not in local:
                    local.append(path)
        return cls(tuple(local), tuple(s3))

    def plus(self, *urls: str | Path) -> ArtifactRoots:
        """These roots and ``urls`` (e.g. the store a run was explicitly given)."""
        more = ArtifactRoots.of(urls)
        return ArtifactRoots(
            self.local + tuple(p for p in more.local if p not in self.local),
            self.s3 + tuple(r for r in more.s3 if r not in self.s3),
        )

    def describe(self) -> str:
        """The roots, for error messages (paths and bucket names only, nothing secret)."""
        parts = [str(p) for p in self.local]
        parts += [f"s3://{b}" + (f"/{p}" if p else "") for b, p in self.s3]
        return ", ".join(parts) or "none"

    def check(self, target: str) -> str:
        """``target`` in canonical form (a resolved absolute path, or the ``s3://`` URL) if it
        lies in one of the roots; else :class:`ArtifactTargetError`.

        Callers read the returned form, not the original: a local path is returned with its
        symlinks resolved, so what was checked is what gets opened.
        """
        if not isinstance(target, str) or not target or "\x00" in target:
            raise ArtifactTargetError("artifact target must be a non-empty path or s3:// URL")
        if target.startswith("s3://"):
            return self._check_s3(target)
        if target.startswith("file://"):
            target = target[len("file://") :]
        elif "://" in target:
            raise ArtifactTargetError(
                f"artifact target {target[:100]!r}: only absolute paths and s3:// URLs are allowed"
            )
        if not target.startswith("/"):
            raise ArtifactTargetError(f"artifact target {target[:100]!r} must be an absolute path")
        try:
            resolved = Path(target).resolve()
        except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, an odd name
            raise ArtifactTargetError(
                f"artifact target {target[:100]!r} cannot be resolved"
            ) from exc
        for root in self.local:
            if resolved != root and resolved.is_relative_to(root):
                return str(resolved)
        raise ArtifactTargetError(
            f"artifact target {target[:100]!r} is outside the configured artifact stores "
            f"({self.describe()}); add its store to {ARTIFACT_STORES.name} to allow it"
        )

    def _check_s3(self, target: str) -> str:
        try:
            bucket, key = parse_s3_object_url(target)
        except ArtifactError as exc:
            raise ArtifactTargetError(f"artifact target: {exc.message}") from exc
        for root_bucket, prefix in self.s3:
            if bucket == root_bucket and (not prefix or key.startswith(prefix + "/")):
                return target
        raise ArtifactTargetError(
            f"artifact target {target[:100]!r} is outside the configured artifact stores "
            f"({self.describe()}); add its store to {ARTIFACT_STORES.name} to allow it"
        )
