"""Fault scenarios use the integration services (PASS_STATUS_KAFKA_BOOTSTRAP_SERVERS,
PASS_STATUS_MONGODB_URI, or those ``scripts/services up`` starts) and, for the scenarios
that stop a server, servers of their own started in a temporary state directory."""

from __future__ import annotations

import os

import pytest

from tests.integration.conftest import (  # re-exported fixtures
    kafka_bootstrap,
    mongodb_uri,
    service_addresses,
    unique_name,
)

__all__ = ["kafka_bootstrap", "mongodb_uri", "service_addresses", "unique_name"]


CLUSTER_SWITCH = "PASS_STATUS_FAULTS_CLUSTER"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The scenarios on a three-broker cluster (marker ``cluster``: four more JVMs, ~6
    minutes) run only when PASS_STATUS_FAULTS_CLUSTER=1 (``make test-faults-cluster``);
    otherwise they are deselected, not skipped."""
    if os.environ.get(CLUSTER_SWITCH) == "1":
        return
    cluster = [item for item in items if item.get_closest_marker("cluster") is not None]
    if cluster:
        config.hook.pytest_deselected(items=cluster)
        items[:] = [item for item in items if item.get_closest_marker("cluster") is None]
