"""The chart's Kafka and registry values: ``kafka.brokers`` → TICKRUN_KAFKA_BROKERS, ``registry.*``
→ TICKRUN_REGISTRY, TICKRUN_REGISTRY_TLS_VERIFY and the credentials by secretKeyRef (never plain
values); the controller's Settings parse what the pod would get, and the Deployment passes the
real API server's strict dry-run. (test_helm_chart.py covers the other values.)
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client
from kubernetes.dynamic import DynamicClient

from tests.integration.helmchart import CHART, Helm, helm, new_namespace
from tests.peers.k8s import KubeControlPlane
from tickrun.controller.settings import IN_CLUSTER_ENV, Settings
from tickrun.functions import settings

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(300)]

__all__ = ["helm"]  # the fixture, re-exported so pytest finds it here

BROKERS = ["kafka-0.kafka.data:9092", "kafka-1.kafka.data:9092"]
REGISTRY = "registry.example:5000/tickrun"
FLAGS = [
    *("--set", f"kafka.brokers={{{','.join(BROKERS)}}}"),
    *("--set", f"registry.url={REGISTRY}", "--set", "registry.existingSecret=reg-cred"),
    *("--set", "registry.tlsVerify=false"),
]


def _deployment(objs: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = [o for o in objs if o["kind"] == "Deployment"]
    return deployment


def _env(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    (container,) = _deployment(objs)["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e for e in container["env"]}


def test_kafka_and_registry_values_become_the_controllers_env(helm: Helm) -> None:
    objs = helm.render("tickrun", FLAGS)
    env = _env(objs)
    assert env[settings.KAFKA_BROKERS.name] == {
        "name": settings.KAFKA_BROKERS.name,
        "value": ",".join(BROKERS),
    }
    assert env[settings.REGISTRY_URL.name]["value"] == REGISTRY
    assert env[settings.REGISTRY_TLS_VERIFY.name]["value"] == "false"
    for setting, key in ((settings.REGISTRY_USERNAME, "username"),
                         (settings.REGISTRY_PASSWORD, "password")):  # fmt: skip
        assert env[setting.name] == {
            "name": setting.name,
            "valueFrom": {"secretKeyRef": {"name": "reg-cred", "key": key}},
        }, "registry credentials come from the user's Secret, never as a plain value"
    assert not [o for o in objs if o["kind"] == "Secret" and "reg" in o["metadata"]["name"]]

    # What the pod would hold, as the controller's Settings read it.
    resolved = {IN_CLUSTER_ENV: "10.96.0.1", "TICKRUN_TOKEN": "t" * 40}
    for name, item in env.items():
        if "value" in item:
            resolved[name] = item["value"]
        elif "secretKeyRef" in item["valueFrom"]:
            resolved[name] = f"from-{item['valueFrom']['secretKeyRef']['key']}"
    controller = Settings.from_env(resolved)
    assert controller.kafka_brokers == tuple(BROKERS)
    assert controller.registry == REGISTRY
    assert controller.registry_tls_verify is False
    assert controller.registry_username == "from-username"
    password = controller.registry_password
    assert password is not None and password.get_secret_value() == "from-password"


def test_a_broker_string_and_custom_secret_keys_render_too(helm: Helm) -> None:
    env = _env(
        helm.render(
            "tickrun",
            [
                *("--set-string", "kafka.brokers=kafka:9092"),
                *("--set", f"registry.url={REGISTRY}", "--set", "registry.existingSecret=c"),
                *("--set", "registry.usernameKey=user", "--set", "registry.passwordKey=token"),
            ],
        )
    )
    assert env[settings.KAFKA_BROKERS.name]["value"] == "kafka:9092"
    assert env[settings.REGISTRY_TLS_VERIFY.name]["value"] == "true"
    refs = {n: env[n]["valueFrom"]["secretKeyRef"]["key"] for n in
            (settings.REGISTRY_USERNAME.name, settings.REGISTRY_PASSWORD.name)}  # fmt: skip
    assert refs == {"TICKRUN_REGISTRY_USERNAME": "user", "TICKRUN_REGISTRY_PASSWORD": "token"}


def test_by_default_no_kafka_or_registry_is_set(helm: Helm) -> None:
    env = _env(helm.render("tickrun", []))
    assert not [n for n in env if n.startswith(("TICKRUN_KAFKA", "TICKRUN_REGISTRY"))]
    # Credentials without a registry to use them for are refused, saying why.
    done = helm("template", "rel", str(CHART), "--set", "registry.existingSecret=c", check=False)
    assert done.returncode != 0
    assert "registry.existingSecret needs registry.url" in done.stderr


def test_helm_lint_strict_passes_with_kafka_and_registry(helm: Helm) -> None:
    done = helm("lint", "--strict", str(CHART), *FLAGS)
    assert "0 chart(s) failed" in done.stdout


def test_the_deployment_passes_a_strict_server_side_dry_run(
    kube: KubeControlPlane, helm: Helm
) -> None:
    with kube.admin_client() as api:
        core = client.CoreV1Api(api)
        namespace = new_namespace(core, "chart-kr")
        try:
            deployment = _deployment(helm.render(namespace, FLAGS))
            dyn = DynamicClient(api)  # type: ignore[no-untyped-call]
            resource = dyn.resources.get(api_version="apps/v1", kind="Deployment")
            created = dyn.create(  # type: ignore[no-untyped-call]
                resource,
                body=deployment,
                namespace=namespace,
                dry_run="All",
                query_params=[("fieldValidation", "Strict")],
            )
            env = {e["name"]: e for e in created.to_dict()["spec"]["template"]["spec"]
                   ["containers"][0]["env"]}  # fmt: skip
            assert env["TICKRUN_KAFKA_BROKERS"]["value"] == ",".join(BROKERS)
            ref = env["TICKRUN_REGISTRY_PASSWORD"]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": "reg-cred", "key": "password"}
        finally:
            core.delete_namespace(namespace)
