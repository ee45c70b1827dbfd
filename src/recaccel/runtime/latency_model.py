"""The latency model: how long one executor takes to score a batch of any size.

`recaccel profile` measures each configuration at a few batch sizes (1, 16, 64, 256, 1024
rows); everything that plans against time — the selector, the serving batcher's dispatch
deadline, routing, admission — asks this model instead of timing anything itself:

    model = LatencyModel.from_points(entry.points)
    model.predict_ms(300)                # p99 of a 300-row batch
    model.max_rows_within(20.0)          # the largest batch whose p99 fits in 20 ms

Between measured sizes it interpolates linearly in rows; past the largest it extends the last
segment, at no less than the average per-row cost over all points. A batch's cost is close to
affine in its rows (a fixed per-call overhead plus a per-row cost), so the linear pieces are
accurate where the points are dense. Below the smallest measured size it returns
that size's time: a batch never costs less than a smaller one was measured to.

Predictions are monotone in rows (measured medians are made non-decreasing first: a larger
batch measured a little faster than a smaller one is timing noise, and a scheduler that
believed it would prefer bigger batches for the wrong reason).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from recaccel.errors import ConfigError

Statistic = Literal["median", "p99"]


@dataclass(frozen=True)
class LatencyPoint:
    """One measured batch size of one configuration."""

    batch: int
    median_ms: float
    p99_ms: float
    repeats: int

    @property
    def rows_per_second(self) -> float:
        """Throughput of back-to-back batches of this size."""
        return self.batch / (self.median_ms / 1e3)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rows_per_second": round(self.rows_per_second, 1)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyPoint:
        return cls(
            batch=int(data["batch"]),
            median_ms=float(data["median_ms"]),
            p99_ms=float(data["p99_ms"]),
            repeats=int(data["repeats"]),
        )


def _running_max(values: list[float]) -> list[float]:
    out: list[float] = []
    for value in values:
        out.append(max(value, out[-1]) if out else value)
    return out


@dataclass(frozen=True)
class LatencyModel:
    """Piecewise-linear latency in rows, per statistic (see the module docstring)."""

    batches: tuple[int, ...]
    median_ms: tuple[float, ...]
    p99_ms: tuple[float, ...]

    @classmethod
    def from_points(cls, points: Iterable[LatencyPoint]) -> LatencyModel:
        ordered = sorted(points, key=lambda p: p.batch)
        if not ordered:
            raise ConfigError("a latency model needs at least one measured batch size")
        batches = [p.batch for p in ordered]
        if len(set(batches)) != len(batches) or batches[0] < 1:
            raise ConfigError(f"measured batch sizes {batches} must be distinct and >= 1")
        median = _running_max([p.median_ms for p in ordered])
        # p99 is never below the median of the same batch.
        p99 = _running_max([max(p.p99_ms, m) for p, m in zip(ordered, median, strict=True)])
        return cls(tuple(batches), tuple(median), tuple(p99))

    def _series(self, statistic: Statistic) -> tuple[float, ...]:
        return self.median_ms if statistic == "median" else self.p99_ms

    def predict_ms(self, rows: int, statistic: Statistic = "p99") -> float:
        """Predicted latency of one batch of `rows` rows."""
        if rows < 1:
            raise ConfigError(f"a batch has at least one row, not {rows}")
        times, batches = self._series(statistic), self.batches
        if rows <= batches[0] or len(batches) == 1:
            if len(batches) == 1 and rows > batches[0]:
                return times[0] * rows / batches[0]  # one point: assume cost ∝ rows
            return times[0]
        if rows > batches[-1]:
            # Past the last point: the last segment's per-row cost, but never less than the
            # average over all points — a flat last segment (noise) must not predict that
            # any batch, however large, costs the same.
            last = (times[-1] - times[-2]) / (batches[-1] - batches[-2])
            average = (times[-1] - times[0]) / (batches[-1] - batches[0])
            return times[-1] + max(last, average) * (rows - batches[-1])
        right = bisect.bisect_left(batches, rows)
        left = right - 1
        slope = (times[right] - times[left]) / (batches[right] - batches[left])
        return times[left] + slope * (rows - batches[left])

    def max_rows_within(self, budget_ms: float, statistic: Statistic = "p99") -> int:
        """The largest batch predicted to finish within `budget_ms`; 0 if not even one row."""
        if self.predict_ms(1, statistic) > budget_ms:
            return 0
        low, high = 1, 1
        while self.predict_ms(high, statistic) <= budget_ms and high < 1 << 24:
            low, high = high, high * 2
        while low + 1 < high:  # predict_ms is non-decreasing: bisect
            middle = (low + high) // 2
            if self.predict_ms(middle, statistic) <= budget_ms:
                low = middle
            else:
                high = middle
        return low
