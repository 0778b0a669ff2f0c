"""Store tests: MongoDB behaviour the service relies on, against the configured server."""
