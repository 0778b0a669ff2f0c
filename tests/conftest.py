"""Shared test configuration.

Unit tests (``tests/unit``) need nothing running. Integration tests
(``tests/integration``) get Kafka and a MongoDB-compatible server from
``tests/integration/conftest.py``: the servers named by
``PASS_STATUS_KAFKA_BOOTSTRAP_SERVERS`` / ``PASS_STATUS_MONGODB_URI``, or the
local ones that ``scripts/services up`` starts.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
"""The repository root."""

SERVICES_SCRIPT = REPO / "scripts" / "services"
"""Starts, stops and describes the local services (see docs/local-services.md)."""

# Fixtures of tests that run the real consumer (isolated topics, database, group).
pytest_plugins = ["tests.integration.service_fixtures"]
