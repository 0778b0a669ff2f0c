"""House rules that keep the design honest: a pure core, one settings reader, small modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "consumer"
IO_MODULES = ("aiokafka", "pymongo", "bson", "motor", "prometheus_client", "asyncio", "socket")
SHELL_PACKAGES = ("consumer.adapters", "consumer.service", "consumer.app", "consumer.commands")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted((PACKAGE / "domain").glob("*.py")), ids=lambda p: p.name)
def test_domain_modules_do_no_io(path: Path) -> None:
    for name in imported_modules(path):
        assert not name.startswith(IO_MODULES), f"{path.name} imports {name}"
        assert not name.startswith(SHELL_PACKAGES), f"{path.name} imports the shell: {name}"


def test_only_the_settings_entry_point_reads_the_environment() -> None:
    readers = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "os.environ" in path.read_text() or "getenv" in path.read_text()
    )
    assert readers == ["commands.py"]


@pytest.mark.parametrize(
    "path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_modules_stay_small(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= 400
