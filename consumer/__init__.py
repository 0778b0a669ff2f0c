"""pass-status: keeps cached Bytemark pass statuses true in near real time."""

__version__ = "0.1.0"
