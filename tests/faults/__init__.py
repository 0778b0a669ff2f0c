"""Fault scenarios: crashes, broker restarts, MongoDB outages, rebalances, concurrent writers."""
