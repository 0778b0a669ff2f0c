"""Build the release artefacts that need no container engine, and check that they agree.

    uv run python scripts/release.py [--out dist]      (make release; CI: .ci/run)

From the package version in pyproject.toml (V), into --out:

- ``pass-status-V.tgz``: the Helm chart, packaged with chart version and appVersion V;
- ``pass-status-V.cdx.json``: a CycloneDX 1.5 SBOM of the locked runtime dependencies
  (``uv export --format cyclonedx1.5`` from uv.lock, offline; no dev or bench group);
- ``release.json``: the version, the image reference, the base image, the files' sha256.

It fails (exit 1, one line per problem) unless these agree: V; ``consumer.__version__``, the
``version`` label of ``pass_status_build_info``; the installed distribution's version; the
Dockerfile's ``VERSION`` default; the repository's Chart.yaml version and appVersion; the
packaged chart's; and the image every rendered container runs (``<repository>:V``, the tag the
image must be pushed with). The Dockerfile's base image must be pinned by digest with its tag
beside it (docs/release.md says how to refresh it). The image itself is built elsewhere:
``docker build`` needs a container engine (the command is printed).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "pass-status"
K8S_VERSION = "1.31.0"
# ARG BASE_IMAGE=<name>:<tag>@sha256:<64 hex>: the tag for people, the digest for the builder.
BASE_IMAGE_ARG = re.compile(
    r"^ARG BASE_IMAGE=(?P<ref>[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64})$", re.MULTILINE
)


class ReleaseError(Exception):
    """The release cannot be made; the message lists every problem."""


def pyproject_version(root: Path = ROOT) -> str:
    version: str = tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
    return version


def build_info_version() -> str:
    """The ``version`` label the service exports in ``pass_status_build_info``."""
    from consumer.adapters.metrics import Metrics  # noqa: PLC0415 - after the version checks
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    metrics = Metrics(CollectorRegistry())
    (sample,) = [s for m in metrics.build_info.collect() for s in m.samples]
    return sample.labels["version"]


def dockerfile_problems(text: str, version: str) -> list[str]:
    """The Dockerfile's base pin and version default."""
    problems = []
    pinned = BASE_IMAGE_ARG.search(text)
    if not pinned:
        problems.append(
            "Dockerfile: no `ARG BASE_IMAGE=<image>:<tag>@sha256:<digest>` (base not pinned by "
            "digest with its tag; docs/release.md)"
        )
    froms = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    if not froms or any(f != "${BASE_IMAGE}" for f in froms):
        problems.append(f"Dockerfile: every stage must be FROM ${{BASE_IMAGE}}, found {froms}")
    defaults = re.findall(r"^ARG VERSION=(\S+)$", text, re.MULTILINE)
    if defaults != [version]:
        problems.append(f"Dockerfile: ARG VERSION default {defaults}, want [{version!r}]")
    return problems


def version_problems(version: str, found: dict[str, str]) -> list[str]:
    """One line for each source that does not say ``version``."""
    return [
        f"{where}: {value!r}, want {version!r}"
        for where, value in found.items()
        if value != version
    ]


def rendered_images(helm: str, chart: Path) -> list[str]:
    """The images of every container the chart renders (CronJobs included)."""
    out = subprocess.run(
        [helm, "template", "pass-status", str(chart), "--kube-version", K8S_VERSION],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    images: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in {"containers", "initContainers"} and isinstance(value, list):
                    images.extend(str(c.get("image")) for c in value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for doc in yaml.safe_load_all(out):
        walk(doc)
    return images


def find_helm() -> str:
    cache = Path(os.environ.get("PASS_STATUS_CACHE", str(Path.home() / ".cache" / "pass-status")))
    cached = cache / "bin" / "helm"
    found = str(cached) if cached.is_file() else shutil.which("helm")
    if not found:
        raise ReleaseError("helm not found: run `scripts/services tools` (or make tools)")
    return found


def find_uv() -> str:
    """uv on PATH, else the one scripts/ensure_uv finds or installs (as the Makefile does)."""
    return (
        shutil.which("uv")
        or subprocess.run(
            [str(ROOT / "scripts" / "ensure_uv")], check=True, capture_output=True, text=True
        ).stdout.strip()
    )


def sbom(out: Path, version: str) -> dict[str, Any]:
    """Write the CycloneDX SBOM of the locked runtime dependencies; return it."""
    subprocess.run(
        [find_uv(), "export", "--frozen", "--no-dev", "--no-default-groups", "--format",
         "cyclonedx1.5", "--preview-features", "sbom-export", "--output-file", str(out)],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )  # fmt: skip
    document: dict[str, Any] = json.loads(out.read_text())
    component = document["metadata"]["component"]
    if document.get("bomFormat") != "CycloneDX" or component.get("version") != version:
        raise ReleaseError(f"{out.name}: not a CycloneDX SBOM of pass-status {version}")
    return document


def locked_runtime_packages() -> set[str]:
    """``name==version`` of every locked runtime dependency (what the image installs)."""
    text = subprocess.run(
        [find_uv(), "export", "--frozen", "--no-dev", "--no-default-groups", "--no-hashes",
         "--no-emit-project", "--format", "requirements.txt"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return {line.split(";")[0].strip() for line in text.splitlines() if "==" in line}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def release(out: Path) -> dict[str, Any]:
    version = pyproject_version()
    import consumer  # noqa: PLC0415 - the checkout's package

    chart_meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    problems = version_problems(
        version,
        {
            "consumer.__version__": consumer.__version__,
            "pass_status_build_info{version}": build_info_version(),
            "installed distribution pass-status": importlib.metadata.version("pass-status"),
            "helm/pass-status/Chart.yaml version": str(chart_meta["version"]),
            "helm/pass-status/Chart.yaml appVersion": str(chart_meta["appVersion"]),
        },
    )
    dockerfile = (ROOT / "Dockerfile").read_text()
    problems += dockerfile_problems(dockerfile, version)
    if problems:
        raise ReleaseError("\n".join(problems))

    helm = find_helm()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "HELM_CACHE_HOME": home, "HELM_CONFIG_HOME": home}
        subprocess.run(
            [helm, "package", str(CHART), "--version", version, "--app-version", version,
             "--destination", str(out)],
            check=True, capture_output=True, text=True, env={**env, "HELM_DATA_HOME": home},
        )  # fmt: skip
    package = out / f"pass-status-{version}.tgz"
    shown = yaml.safe_load(
        subprocess.run(
            [helm, "show", "chart", str(package)], check=True, capture_output=True, text=True
        ).stdout
    )
    images = rendered_images(helm, package)
    repository = yaml.safe_load((CHART / "values.yaml").read_text())["image"]["repository"]
    image = f"{repository}:{version}"
    problems = version_problems(
        version,
        {
            f"{package.name} version": str(shown["version"]),
            f"{package.name} appVersion": str(shown["appVersion"]),
        },
    )
    problems += [
        f"{package.name}: a container runs {i}, want {image}"
        for i in sorted(set(images))
        if i != image
    ]
    if not images:
        problems.append(f"{package.name}: renders no container image")

    bom_path = out / f"pass-status-{version}.cdx.json"
    bom = sbom(bom_path, version)
    in_bom = {f"{c['name']}=={c['version']}" for c in bom.get("components", [])}
    problems += [f"{bom_path.name}: lacks {p}" for p in sorted(locked_runtime_packages() - in_bom)]
    if problems:
        raise ReleaseError("\n".join(problems))

    pinned = BASE_IMAGE_ARG.search(dockerfile)
    if pinned is None:  # checked above; kept for the type checker
        raise ReleaseError("Dockerfile: base image not pinned")
    manifest = {
        "version": version,
        "image": image,
        "base_image": pinned["ref"],
        "chart": {"file": package.name, "sha256": sha256(package)},
        "sbom": {"file": bom_path.name, "sha256": sha256(bom_path), "components": len(in_bom)},
    }
    (out / "release.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="output directory")
    args = parser.parse_args(argv)
    try:
        manifest = release(args.out)
    except ReleaseError as exc:
        for line in str(exc).splitlines():
            print(f"release: {line}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as exc:
        print(f"release: {' '.join(map(str, exc.cmd[:3]))} failed: {exc.stderr}", file=sys.stderr)
        return 1
    print(json.dumps(manifest, indent=2))
    print(
        f"image (needs a container engine): docker build -t {manifest['image']} "
        f"--build-arg VERSION={manifest['version']} --build-arg REVISION=$(git rev-parse HEAD) ."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
