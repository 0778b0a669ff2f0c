"""MongoDB's driver specification tests (CRUD, unified format) run against the store
under test: an independent check that the store answers as MongoDB does.

``uv run python -m tests.store.spec`` prints the table; ``tests/store/test_crud_spec.py``
fails if a specification test of an operation the service uses fails.
"""
