"""scripts/release.py (make release; CI): the chart packaged with the package version, a
CycloneDX SBOM of the locked runtime dependencies, and one version everywhere."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from consumer.adapters import metrics

from tests.conftest import REPO
from tests.unit.test_chart import _tool

SCRIPT = REPO / "scripts" / "release.py"
UNPINNED_BASE = """FROM python:3.11.14-slim-bookworm AS builder
RUN true
FROM python:3.11.14-slim-bookworm
ARG VERSION=0.1.0
"""


def release_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("release_script", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def locked_versions() -> dict[str, str]:
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    return {p["name"]: p["version"] for p in lock["package"] if "version" in p}


def test_dockerfile_base_is_pinned_by_digest_with_its_tag() -> None:
    """Defect (issue 21): the base image was a tag only, so a rebuild could pull other bits.
    Every stage must start from one ``BASE_IMAGE`` pinned as ``<tag>@sha256:<digest>``."""
    release = release_module()
    version = release.pyproject_version()
    assert release.dockerfile_problems((REPO / "Dockerfile").read_text(), version) == []
    refused = release.dockerfile_problems(UNPINNED_BASE, version)
    assert any("not pinned by digest" in p for p in refused)
    assert any("FROM ${BASE_IMAGE}" in p for p in refused)


def test_version_sources_agree_with_the_package_version() -> None:
    release = release_module()
    version = release.pyproject_version()
    assert release.build_info_version() == version
    assert release.version_problems("9.9.9", {"Chart.yaml appVersion": version}) == [
        f"Chart.yaml appVersion: {version!r}, want '9.9.9'"
    ]


def test_release_packages_the_chart_and_an_sbom_that_agree(tmp_path: Path) -> None:
    helm = _tool("helm")  # built once by scripts/services tools, as for the chart tests
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PATH": f"{Path(helm).parent}{os.pathsep}{os.environ['PATH']}"},
    )
    assert done.returncode == 0, done.stderr
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    manifest = json.loads((tmp_path / "release.json").read_text())
    assert manifest["version"] == version
    assert manifest["image"].endswith(f":{version}")
    assert "@sha256:" in manifest["base_image"]

    with tarfile.open(tmp_path / f"pass-status-{version}.tgz") as package:
        member = package.extractfile("pass-status/Chart.yaml")
        assert member is not None
        chart = yaml.safe_load(member.read())
    assert (chart["version"], chart["appVersion"]) == (version, version)

    bom = json.loads((tmp_path / f"pass-status-{version}.cdx.json").read_text())
    assert bom["bomFormat"] == "CycloneDX"
    assert bom["metadata"]["component"]["version"] == version
    components = {c["name"]: c["version"] for c in bom["components"]}
    locked = locked_versions()
    for name in ("aiokafka", "pymongo", "orjson", "prometheus-client", "fastjsonschema"):
        assert components[name] == locked[name], name
    assert "pytest" not in components  # dev tools are not in the image
    assert "matplotlib" not in components
    assert all(c["purl"].startswith("pkg:pypi/") for c in bom["components"])


def test_release_refuses_a_chart_whose_app_version_disagrees(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = release_module()
    chart = tmp_path / "chart"
    shutil.copytree(REPO / "helm" / "pass-status", chart)
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    meta["appVersion"] = "0.0.9"
    (chart / "Chart.yaml").write_text(yaml.safe_dump(meta))
    monkeypatch.setattr(release, "CHART", chart)
    with pytest.raises(release.ReleaseError, match=r"Chart.yaml appVersion: '0.0.9', want"):
        release.release(tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing packaged


def test_release_refuses_a_build_info_that_disagrees(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = release_module()
    monkeypatch.setattr(metrics, "__version__", "0.0.9")
    with pytest.raises(release.ReleaseError, match=r"pass_status_build_info\{version\}: '0.0.9'"):
        release.release(tmp_path / "out")


def test_ci_and_make_run_the_release() -> None:
    assert "scripts/release.py" in (REPO / ".ci" / "run").read_text()
    assert "scripts/release.py" in (REPO / "Makefile").read_text()
