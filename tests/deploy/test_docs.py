"""The deployment documentation stays true: the settings table matches the Settings class, the
variables the manifests set exist, and the README's and deployment guide's links resolve."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_helpers import REPO
from initserve.api.settings import Settings

DEPLOYMENT = REPO / "docs" / "deployment.md"
_ROW = re.compile(r"^\| `(INITSERVE_[A-Z_]+)` \| ([^|]*) \|", re.MULTILINE)
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _table() -> dict[str, str]:
    """variable -> default column of the settings table."""
    return {name: default.strip() for name, default in _ROW.findall(DEPLOYMENT.read_text())}


def _documented_default(value: Any) -> str:
    """How the table spells a default: empty lists 'empty', None 'unset', booleans lower case."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list) and not value:
        return "empty"
    return str(value)


def test_settings_table_lists_exactly_the_settings_fields() -> None:
    fields = {f"INITSERVE_{name.upper()}" for name in Settings.model_fields}
    assert set(_table()) == fields


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_settings_table_states_each_default(name: str) -> None:
    field = Settings.model_fields[name]
    default = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
    cell = _table()[f"INITSERVE_{name.upper()}"]
    assert cell.split(" ")[0].strip("`") == _documented_default(default), cell


def _manifest_env() -> set[str]:
    names = set(yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["initserve"]["environment"])
    deployment = yaml.safe_load((REPO / "deploy" / "k8s" / "deployment.yaml").read_text())
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        names |= {entry["name"] for entry in container.get("env", [])}
    return names


def test_manifests_set_only_real_settings() -> None:
    fields = {f"INITSERVE_{name.upper()}" for name in Settings.model_fields}
    assert _manifest_env() <= fields, _manifest_env() - fields


@pytest.mark.parametrize("doc", ["README.md", "docs/deployment.md"])
def test_relative_links_resolve(doc: str) -> None:
    path = REPO / doc
    links = [link for link in _LINK.findall(path.read_text()) if "://" not in link and not link.startswith("#")]
    assert links
    missing = [link for link in links if not (path.parent / link.split("#")[0]).exists()]
    assert not missing, f"{doc} links to missing files: {missing}"


def test_deployment_guide_names_the_files_it_describes() -> None:
    text = DEPLOYMENT.read_text()
    for described in (
        "Dockerfile",
        "docker-compose.yml",
        "deploy/nginx/initserve.conf.template",
        "deploy/k8s/deployment.yaml",
        "deploy/k8s/service.yaml",
        "deploy/k8s/hpa.yaml",
    ):
        assert Path(REPO / described).exists()
        assert described.split("/")[-1] in text, described
