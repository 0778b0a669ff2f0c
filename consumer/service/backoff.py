"""Exponential back-off with full jitter."""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, initial: float, maximum: float) -> None:
        self._initial = initial
        self._maximum = maximum
        self.attempt = 0

    def next_delay(self) -> float:
        """The next delay: a random fraction of ``initial * 2**attempt``, capped."""
        ceiling = min(self._maximum, self._initial * 2.0**self.attempt)
        self.attempt += 1
        return float(ceiling * random.uniform(0.5, 1.0))

    def reset(self) -> None:
        self.attempt = 0
