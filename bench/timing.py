"""Small timing helpers: a stopwatch, bounded polling, and the statistics the figures
report (median, p99, min, max). Nothing here asserts anything about time."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


class Stopwatch:
    """`with Stopwatch() as sw: ...` then `sw.elapsed` (seconds, monotonic clock).
    Inside the block `sw.lap()` gives the seconds since the start."""

    def __init__(self) -> None:
        self.started = 0.0
        self.elapsed = 0.0

    def __enter__(self) -> Stopwatch:
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed = time.monotonic() - self.started

    def lap(self) -> float:
        return time.monotonic() - self.started


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def percentile(samples: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100): always one of the samples."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def p99(samples: Sequence[float]) -> float:
    return percentile(samples, 99)


def summary(samples: Sequence[float]) -> dict[str, float | int | list[float]]:
    """What the JSON keeps of a set of samples (seconds)."""
    return {"n": len(samples), "median": round(median(samples), 3),
            "p99": round(p99(samples), 3), "min": round(min(samples), 3),
            "max": round(max(samples), 3), "samples": [round(s, 3) for s in samples]}


def poll(fn: Callable[[], T | None], timeout: float, interval: float = 0.1,
         what: str = "condition") -> T:
    """Call `fn` until it returns something other than None or False; that value.
    Bounded: raises TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached after {timeout:.0f} s")
        time.sleep(interval)
