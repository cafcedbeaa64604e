"""The Helm chart rendered with Helm's own engine (helm-python-sdk bundles it) for the value sets operators use, every
manifest validated against strict Kubernetes schemas of two versions, and ``helm lint --strict`` clean."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from tests.helpers import ROOT

CHART = ROOT / "helm" / "hubproxy"
KUBERNETES = ("1.30.0", "1.35.0")
EXAMPLE = {  # the README's worked example
    "replicaCount": 2, "secrets": {"databaseUrl": "postgresql://hubproxy:secret@postgres:5432/hubproxy",
                                   "upstreamToken": "hf_xxx", "awsAccessKeyId": "minio",
                                   "awsSecretAccessKey": "minio123"},
    "store": {"s3": {"bucket": "models", "endpointUrl": "http://minio:9000", "pathStyle": True}},
    "hubproxy": {"cacheMaxBytes": "2T"}, "serviceMonitor": {"enabled": True},
    "image": {"repository": "registry.example.com/hubproxy"},
}
VALUE_SETS = {
    "readme-example": EXAMPLE,
    "local-single": {"replicaCount": 1, "store": {"type": "local"}},
    "s3-pod-identity": {"secrets": {"existingSecret": "hubproxy-db"}, "store": {"s3": {"bucket": "models"}},
                        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/hub"}}},
    "autoscaling": {**EXAMPLE, "autoscaling": {"enabled": True}},
    "ingress": {**EXAMPLE, "ingress": {"enabled": True, "className": "nginx", "hosts": ["hub.example.com"],
                                       "tls": [{"hosts": ["hub.example.com"], "secretName": "hub-tls"}]}},
}


def render(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The chart's objects, by kind."""
    out = helm.Chart.load(str(CHART)).render(values, name="hub", namespace="models", is_install=True)
    objects = [doc for path, text in out.items() if path.endswith(".yaml") for doc in yaml.safe_load_all(text) if doc]
    kinds = [o["kind"] for o in objects]
    assert len(kinds) == len(set(kinds))
    return {o["kind"]: o for o in objects}


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_manifest_is_valid(name: str) -> None:
    objects = render(VALUE_SETS[name])
    for kind, obj in objects.items():
        if kind == "ServiceMonitor":  # a custom resource: no Kubernetes schema
            continue
        for version in KUBERNETES:
            kubernetes_validate.validate(obj, version, strict=True)
    report = helm.lint(str(CHART), VALUE_SETS[name], strict=True)
    assert report["errors"] == [] and all(m["severity"] < 2 for m in report["messages"]), report


def test_pods_meet_the_restricted_pod_security_standard() -> None:
    pod = render(EXAMPLE)["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    container = pod["containers"][0]["securityContext"]
    assert container["allowPrivilegeEscalation"] is False and container["capabilities"]["drop"] == ["ALL"]
    assert container["seccompProfile"]["type"] == "RuntimeDefault" and container["readOnlyRootFilesystem"]
    assert not pod["automountServiceAccountToken"]


def test_operational_findings_are_fixed() -> None:
    example = render(EXAMPLE)
    pod = example["Deployment"]["spec"]["template"]
    assert pod["spec"]["containers"][0]["startupProbe"]["httpGet"]["path"] == "/health"  # migrations may take a while
    assert {"checksum/config", "checksum/secret"} <= set(pod["metadata"]["annotations"])  # new credentials roll pods
    assert pod["spec"]["serviceAccountName"] == example["ServiceAccount"]["metadata"]["name"]
    assert "PodDisruptionBudget" in example
    single = render(VALUE_SETS["local-single"])
    assert single["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert "PodDisruptionBudget" not in single  # it would block every node drain
    scaled = render(VALUE_SETS["autoscaling"])
    assert "replicas" not in scaled["Deployment"]["spec"] and "HorizontalPodAutoscaler" in scaled
    identity = render(VALUE_SETS["s3-pod-identity"])["ServiceAccount"]
    assert identity["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/hub"}
    ingress = render(VALUE_SETS["ingress"])["Ingress"]["spec"]
    assert ingress["rules"][0]["host"] == "hub.example.com" and ingress["ingressClassName"] == "nginx"
    assert not yaml.safe_load((CHART / "values.yaml").read_text())["image"]["repository"].startswith("ghcr.io")


def test_settings_that_cannot_work_are_refused() -> None:
    with pytest.raises(helm.HelmError, match="shared database"):
        render({"replicaCount": 3, "store": {"s3": {"bucket": "b"}}})
