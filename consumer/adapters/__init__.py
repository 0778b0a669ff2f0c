"""Thin adapters around I/O: Kafka, MongoDB, metrics and HTTP."""
