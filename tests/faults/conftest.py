"""Fault scenarios use the integration services (PASS_STATUS_KAFKA_BOOTSTRAP_SERVERS,
PASS_STATUS_MONGODB_URI, or those ``scripts/services up`` starts) and, for the scenarios
that stop a server, servers of their own started in a temporary state directory."""

from __future__ import annotations

from tests.integration.conftest import (  # re-exported fixtures
    kafka_bootstrap,
    mongodb_uri,
    service_addresses,
    unique_name,
)

__all__ = ["kafka_bootstrap", "mongodb_uri", "service_addresses", "unique_name"]
