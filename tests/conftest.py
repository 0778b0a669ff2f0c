"""Shared test configuration.

Unit tests (``tests/unit``) need nothing running. Integration tests
(``tests/integration``) get Kafka and a MongoDB-compatible server from
``tests/integration/conftest.py``: the servers named by
``PASS_STATUS_KAFKA_BOOTSTRAP_SERVERS`` / ``PASS_STATUS_MONGODB_URI``, or the
local ones that ``scripts/services up`` starts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
"""The repository root."""

SERVICES_SCRIPT = REPO / "scripts" / "services"
"""Starts, stops and describes the local services (see docs/local-services.md)."""

# Fixtures of tests that run the real consumer (isolated topics, database, group).
pytest_plugins = ["tests.integration.service_fixtures"]

OFFLINE_DIRS = (REPO / "tests" / "unit", REPO / "tests" / "cli")
"""Where tests need no services: with no ``tools`` marker, they are ``offline`` (run first by
``scripts/run_tests`` while helm, promtool and the services are being prepared)."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark ``offline`` every test under tests/unit or tests/cli not marked ``tools``."""
    for item in items:
        in_offline_dir = any(item.path.is_relative_to(d) for d in OFFLINE_DIRS)
        if in_offline_dir and item.get_closest_marker("tools") is None:
            item.add_marker(pytest.mark.offline)
