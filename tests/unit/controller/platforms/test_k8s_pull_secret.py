"""With registry credentials, the kubernetes platform's pods pull with them: one
``kubernetes.io/dockerconfigjson`` Secret per namespace, named in every Deployment's
``imagePullSecrets``; without, the Deployment names none. (Applied against the real control plane
in tests/integration/test_k8s_registry.py.)"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from tests.unit.controller.platforms.test_k8s_manifests import NS, workload
from tickrun.controller.builder.registry import RegistryConfig, docker_config_json
from tickrun.controller.platforms.kubernetes import manifests as m


def test_docker_config_json_carries_the_credentials_for_the_host(tmp_path: Path) -> None:
    cfg = RegistryConfig("reg.example:5000/tickrun", username="ci", password="pa55")
    text = docker_config_json(cfg)
    assert text is not None
    entry = json.loads(text)["auths"]["reg.example:5000"]
    assert (entry["username"], entry["password"]) == ("ci", "pa55")
    assert base64.b64decode(entry["auth"]) == b"ci:pa55"
    # From an auth file too; none at all when there are no credentials.
    auth_file = tmp_path / "auth.json"
    auth_file.write_text(json.dumps({"auths": {"reg.example:5000": {"auth": entry["auth"]}}}))
    assert docker_config_json(RegistryConfig("reg.example:5000", auth_file=auth_file)) == text
    assert docker_config_json(RegistryConfig("reg.example:5000")) is None


def test_pull_secret_and_the_deployment_that_names_it() -> None:
    config = json.dumps({"auths": {"reg:5000": {"auth": "Y2k6cGE1NQ=="}}})
    secret = m.pull_secret(NS, config)
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    assert secret["metadata"]["name"] == m.PULL_SECRET
    assert secret["metadata"]["namespace"] == NS
    assert base64.b64decode(secret["data"][".dockerconfigjson"]).decode() == config
    # Shared by the namespace's functions: a function's delete (by its label) leaves it.
    assert m.LABEL_FUNCTION not in secret["metadata"]["labels"]
    assert "ownerReferences" not in secret["metadata"]

    pod = m.deployment(workload(), NS, pull_secret=m.PULL_SECRET)["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": m.PULL_SECRET}]
    plain = m.deployment(workload(), NS)["spec"]["template"]["spec"]
    assert "imagePullSecrets" not in plain
