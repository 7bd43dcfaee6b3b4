"""docker-compose.yml and deploy/k8s/: they parse and carry the fields the deployment depends on.

Neither Docker nor a cluster runs on the build machines, so the files are checked as data (PyYAML);
the nginx config they mount is exercised for real by test_nginx_cluster.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_helpers import NGINX_TEMPLATE, REPO, render_template

K8S = REPO / "deploy" / "k8s"


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _k8s(kind: str) -> dict[str, Any]:
    docs = [doc for path in sorted(K8S.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]
    (found,) = [doc for doc in docs if doc.get("kind") == kind]
    assert isinstance(found, dict)
    return found


# ---- docker-compose ---------------------------------------------------------------------------------


def test_compose_file_matches_the_compose_spec_schema() -> None:
    """The Compose Specification's JSON schema (vendored by check-jsonschema, so no network)."""
    tool = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
    assert tool, "check-jsonschema is not installed (dev extra)"
    result = subprocess.run(
        [tool, "--builtin-schema", "vendor.compose-spec", str(REPO / "docker-compose.yml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_at_least_two_healthchecked_replicas() -> None:
    service = _load(REPO / "docker-compose.yml")["services"]["initserve"]
    assert service["build"] == "."
    assert service["deploy"]["replicas"] >= 2
    probe = service["healthcheck"]["test"]
    assert probe[0] == "CMD" and "/healthz" in " ".join(probe)
    assert "ports" not in service, "replicas are reached through the proxy only"
    assert service["environment"]["INITSERVE_HOST"] == "0.0.0.0"


def test_compose_proxy_mounts_the_template_and_fills_every_placeholder() -> None:
    compose = _load(REPO / "docker-compose.yml")
    proxy = compose["services"]["proxy"]
    assert proxy["image"].startswith("nginx:")
    mounts = [v.split(":") for v in proxy["volumes"]]
    template_mount = [m for m in mounts if Path(m[0]).name == NGINX_TEMPLATE.name]
    assert template_mount, mounts
    assert (REPO / template_mount[0][0]).resolve() == NGINX_TEMPLATE
    assert template_mount[0][1].startswith("/etc/nginx/templates/") and template_mount[0][1].endswith(".template")
    # The same rendering the nginx image does: every ${PROXY_*} gets a value from the environment.
    rendered = render_template(NGINX_TEMPLATE.read_text(), proxy["environment"])
    assert "server initserve:8000" in rendered
    assert re.search(r"max_fails=\d+", proxy["environment"]["PROXY_UPSTREAMS"])
    assert proxy["depends_on"]["initserve"]["condition"] == "service_healthy"


def test_replica_keepalive_outlasts_the_proxy_keepalive() -> None:
    """uvicorn must keep idle connections open longer than nginx reuses them (else sporadic 502s)."""
    from initserve.api.settings import Settings

    nginx_keepalive = int(re.search(r"keepalive_timeout\s+(\d+)s;", NGINX_TEMPLATE.read_text())[1])  # type: ignore[index]
    compose_env = _load(REPO / "docker-compose.yml")["services"]["initserve"]["environment"]
    for seconds in (Settings().timeout_keep_alive, int(compose_env["INITSERVE_TIMEOUT_KEEP_ALIVE"])):
        assert seconds > nginx_keepalive


def test_proxy_body_limit_is_the_service_default() -> None:
    from initserve.api.settings import Settings

    limit = re.search(r"client_max_body_size\s+(\d+)([km]?);", NGINX_TEMPLATE.read_text())
    assert limit
    factor = {"": 1, "k": 1 << 10, "m": 1 << 20}[limit[2]]
    assert int(limit[1]) * factor == Settings().max_body_bytes


# ---- kubernetes -------------------------------------------------------------------------------------

# The oldest Kubernetes release the manifests promise to work with (autoscaling/v2 is GA since 1.23).
K8S_VERSION = "1.29"


# kustomization.yaml is read by kubectl -k, not sent to the API server.
API_MANIFESTS = sorted(set(K8S.glob("*.yaml")) - {K8S / "kustomization.yaml"})


@pytest.mark.parametrize("path", API_MANIFESTS, ids=lambda p: p.name)
def test_manifest_matches_the_kubernetes_api_schema(path: Path) -> None:
    """Strict validation (unknown fields are errors) against the API schemas bundled in kubernetes-validate."""
    import kubernetes_validate  # type: ignore[import-untyped]

    for resource in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(resource, K8S_VERSION, strict=True)  # raises ValidationError


def test_deployment_probes_resources_and_security() -> None:
    deployment = _k8s("Deployment")
    assert deployment["apiVersion"] == "apps/v1"
    pod = deployment["spec"]["template"]["spec"]
    assert (
        deployment["spec"]["selector"]["matchLabels"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= container["resources"][kind].keys()
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    # A read-only root still needs a writable /tmp.
    assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"])
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["readinessProbe"]["httpGet"]["port"] in port_names
    assert "--host" in container["args"] and "0.0.0.0" in container["args"]


def test_dockerfile_user_matches_the_pod_security_context() -> None:
    pod = _k8s("Deployment")["spec"]["template"]["spec"]
    user = re.search(r"^USER (\d+)", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    assert user and int(user[1]) == pod["securityContext"]["runAsUser"]


def test_service_targets_the_deployment_pods() -> None:
    service, deployment = _k8s("Service"), _k8s("Deployment")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    named = {p["name"] for p in container["ports"]}
    assert all(p["targetPort"] in named for p in service["spec"]["ports"])


def test_hpa_scales_the_deployment_on_cpu() -> None:
    hpa, deployment = _k8s("HorizontalPodAutoscaler"), _k8s("Deployment")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"


@pytest.mark.parametrize("path", API_MANIFESTS, ids=lambda p: p.name)
def test_every_manifest_is_listed_in_the_kustomization(path: Path) -> None:
    assert path.name in _load(K8S / "kustomization.yaml")["resources"]
