"""Benchmarks of the pass-status consumer: ``uv run --group bench python -m bench``.

See ``docs/benchmarks.md`` for what is measured and the latest figures.
"""
