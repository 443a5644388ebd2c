"""Real peers for tickrun's tests: Apache Kafka, MinIO and podman.

The binaries and images come from ``deploy/peers/ensure.sh``; these helpers only start, probe and
stop them. Every helper raises ``PeerUnavailable`` (naming the ensure.sh command to run) when its
peer is missing, so callers can fail loudly instead of skipping.
"""

from __future__ import annotations

from ._util import PeerUnavailable, peers_cache, versions
from .kafka import KafkaBroker
from .minio import MinioServer
from .podman import base_image, podman, podman_env, require_base_image

__all__ = [
    "KafkaBroker",
    "MinioServer",
    "PeerUnavailable",
    "base_image",
    "peers_cache",
    "podman",
    "podman_env",
    "require_base_image",
    "versions",
]
