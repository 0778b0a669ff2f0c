"""The consumer-level bad-input test uses the integration services and fixtures."""

from __future__ import annotations

from tests.integration.conftest import (  # re-exported fixtures
    kafka_bootstrap,
    mongodb_uri,
    service_addresses,
    unique_name,
)

__all__ = ["kafka_bootstrap", "mongodb_uri", "service_addresses", "unique_name"]
