"""The specification files: ``test/crud/unified/*.json`` of PyMongo's source distribution
on PyPI, at the version the project pins (``uv.lock``), downloaded once, checked against
its SHA-256 and kept under ``$PASS_STATUS_CACHE`` (``~/.cache/pass-status``), as the
Kafka jars are."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import urllib.request
from pathlib import Path

PYMONGO_VERSION = "4.20.0"
SDIST_URL = (
    "https://files.pythonhosted.org/packages/8b/a6/a1ae45c0469af85f2c6793961b5d14de05176ce6"
    f"265a909a90a0a81aea18/pymongo-{PYMONGO_VERSION}.tar.gz"
)
SDIST_SHA256 = "f773b0aec28687587cdeda490463a82debc4566a4a3620dcc8dada9d2c0a1acd"
MEMBER_PREFIX = f"pymongo-{PYMONGO_VERSION}/test/crud/unified/"
DOWNLOAD_TIMEOUT_S = 120


def cache_dir() -> Path:
    root = os.environ.get("PASS_STATUS_CACHE") or str(Path.home() / ".cache" / "pass-status")
    return Path(root) / f"pymongo-{PYMONGO_VERSION}-spec" / "crud-unified"


def crud_unified_files() -> list[Path]:
    """The CRUD unified-format files, downloading and extracting them the first time."""
    target = cache_dir()
    done = target / ".complete"
    if not done.exists():
        _extract(_download(), target)
        done.write_text(SDIST_SHA256 + "\n")
    return sorted(target.glob("*.json"))


def _download() -> bytes:
    with urllib.request.urlopen(SDIST_URL, timeout=DOWNLOAD_TIMEOUT_S) as response:  # noqa: S310 - a pinned https URL
        data: bytes = response.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SDIST_SHA256:
        msg = f"{SDIST_URL}: sha256 {digest}, expected {SDIST_SHA256}"
        raise RuntimeError(msg)
    return data


def _extract(sdist: bytes, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(sdist), mode="r:gz") as tar:
        for member in tar.getmembers():
            name = member.name
            if member.isfile() and name.startswith(MEMBER_PREFIX) and name.endswith(".json"):
                extracted = tar.extractfile(member)
                if extracted is not None:
                    (target / Path(name).name).write_bytes(extracted.read())
