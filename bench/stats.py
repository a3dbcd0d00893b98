"""Latency summaries shared by every benchmark, so all sections report alike."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Linear-interpolated percentile; with few samples p99 is close to the max, not a guess."""
    if not sorted_values:
        return math.nan
    position = (len(sorted_values) - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


@dataclasses.dataclass(frozen=True)
class Latency:
    """Percentiles of a list of durations, kept in milliseconds for the report."""

    n: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> "Latency":
        values = sorted(s * 1000.0 for s in seconds)
        if not values:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan)
        return cls(
            n=len(values),
            p50_ms=percentile(values, 0.50),
            p90_ms=percentile(values, 0.90),
            p99_ms=percentile(values, 0.99),
            mean_ms=sum(values) / len(values),
            max_ms=values[-1],
        )

    def row(self) -> str:
        """The columns of the report's latency table."""
        return f"{self.p50_ms:.2f} | {self.p90_ms:.2f} | {self.p99_ms:.2f} | {self.mean_ms:.2f} | {self.n}"
