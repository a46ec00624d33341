"""Statistics of repeated measurements, and the order in which a figure and its baseline are taken.

Pure: no clock, no engine. A figure is measured alternately with its baseline (A B A B ...) so that
a slow minute on a shared machine lands on both, and reported as a median with its min and max.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    """The median of ``n`` samples, with their min and max (the spread a reader must see)."""

    median: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> Summary:
        if not samples:
            raise ValueError("no samples to summarise")
        return cls(statistics.median(samples), min(samples), max(samples), len(samples))

    @classmethod
    def single(cls, value: float) -> Summary:
        """A value computed once from other figures (a difference, a throughput over a whole run)."""
        return cls(value, value, value, 1)

    def as_json(self) -> dict[str, float | int]:
        return {"median": self.median, "min": self.min, "max": self.max, "n": self.n}


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by nearest rank: a value that was actually observed."""
    if not samples:
        raise ValueError("no samples")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is not within 0..100")
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def alternate(measures: Sequence[Callable[[], float]], repeat: int) -> list[list[float]]:
    """Run each of ``measures`` ``repeat`` times, interleaved (round r runs all of them in turn,
    starting one further along each round so no measure always goes first); samples per measure."""
    if repeat < 1:
        raise ValueError("repeat must be at least 1")
    samples: list[list[float]] = [[] for _ in measures]
    count = len(measures)
    for round_ in range(repeat):
        for step in range(count):
            index = (round_ + step) % count
            samples[index].append(measures[index]())
    return samples
