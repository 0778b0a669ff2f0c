"""CLI tests: the real command through a subprocess."""
