"""The object store that holds uploaded checkpoints: docker-compose's MinIO and deploy/k8s/minio/.

Checked as data, like the other manifests (no Docker engine or cluster runs on the build machines); the
S3 protocol itself is exercised against a real S3 server process in tests/api/test_checkpoints_s3.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_helpers import REPO

MINIO = REPO / "deploy" / "k8s" / "minio"
MANIFESTS = sorted(set(MINIO.glob("*.yaml")) - {MINIO / "kustomization.yaml"})


def _docs() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_minio_manifest_matches_the_kubernetes_api_schema(path: Path) -> None:
    import kubernetes_validate  # type: ignore[import-untyped]

    for resource in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(resource, "1.29", strict=True)


def test_the_store_is_in_the_kustomization_and_its_files_listed() -> None:
    top = yaml.safe_load((REPO / "deploy" / "k8s" / "kustomization.yaml").read_text())
    assert "minio" in top["resources"]
    listed = yaml.safe_load((MINIO / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in MANIFESTS)


def test_initserve_pods_reach_the_store_the_service_exposes() -> None:
    deployment = yaml.safe_load((REPO / "deploy" / "k8s" / "deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item for item in container["env"]}
    assert env["INITSERVE_STORE"]["value"].startswith("s3://")
    (service,) = [doc for doc in _docs() if doc["kind"] == "Service"]
    (port,) = service["spec"]["ports"]
    assert env["INITSERVE_STORE_ENDPOINT_URL"]["value"] == f"http://{service['metadata']['name']}:{port['port']}"
    (statefulset,) = [doc for doc in _docs() if doc["kind"] == "StatefulSet"]
    assert service["spec"]["selector"].items() <= statefulset["spec"]["template"]["metadata"]["labels"].items()
    secret = {
        ref["valueFrom"]["secretKeyRef"]["name"]
        for ref in env.values()
        if "STORE_" in ref["name"] and "valueFrom" in ref
    }
    minio_env = statefulset["spec"]["template"]["spec"]["containers"][0]["env"]
    assert secret == {item["valueFrom"]["secretKeyRef"]["name"] for item in minio_env}


def test_compose_replicas_share_the_minio_store() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    replica, minio = compose["services"]["initserve"], compose["services"]["minio"]
    assert replica["environment"]["INITSERVE_STORE"].startswith("s3://")
    assert replica["environment"]["INITSERVE_STORE_ENDPOINT_URL"] == "http://minio:9000"
    assert "9000" in minio["expose"]
    assert replica["depends_on"]["minio"]["condition"] == "service_healthy"
    assert replica["environment"]["INITSERVE_STORE_ACCESS_KEY_ID"] == minio["environment"]["MINIO_ROOT_USER"]
    assert any(volume.endswith(":/data") for volume in minio["volumes"])
