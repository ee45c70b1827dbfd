"""A soak's verdict: does a server hold a steady load for minutes without growing or slowing?

A soak offers a constant open-loop load (a fraction of the server's capacity) for a long run,
samples the server's process tree every few seconds (bench/proc_usage.py) and books every
request by when it was sent. This module is the pure part: it cuts the run into windows,
summarises each, and judges the whole against these criteria (issue 20):

1. **memory and open files do not grow.** RSS, and open fds other than sockets, are compared
   between the first window after the warm-up and the last window, each by the median of its
   samples (a single sample may catch a passing peak: a batch in flight); growth
   (last / first - 1) must be at most `max_growth` (5%). The warm-up (default: the first
   window) is left out: caches fill, pools open and the allocator settles there, and that is
   not a leak. Sockets are left out of that comparison because they follow the client: one
   per connection it holds open, and it holds more while the server is slower. In a 300 s
   soak at a steady 840 QPS (`scripts/soak.py artifacts/dlrm-heavy-optimized/02-prune-1
   --qps 840 --duration-s 300 --serve-args "--processes 2"`, 2 cores, 2026-12-04) the
   server's sockets ranged from 14 to 142 and one window's median was twice another's (26,
   52.5) as a neighbour's load slowed the server, while its other fds stayed at 90 in every
   sample. So sockets are judged where the client holds none: **after the load**, once the
   client has closed its connections, the server's fds (sockets included) must be within
   `max_growth` of what they were before the load began; a connection or file that the load
   left open shows there.
2. **p99 is stable.** Every window after the warm-up answers with p99 <= the target, and
   within `spike_factor` (2×) of the median of those windows' p99s; a p99 under a tenth of
   the target passes the second test whatever the ratio (at 3 ms, doubling is one scheduler
   hiccup on a shared machine, not drift). A window that answered nothing fails.
3. **no errors**: anything but an HTTP answer (a timeout, a reset connection), or a status
   other than 200, 429 and 503, or a 200 whose body is not a ranking; over the whole run.
4. **no refusals** (429/503, counted by the reason their body states): at 70% of capacity a
   server has no reason to shed load; over the whole run.

Example: windows of 60 s, warm-up 60 s, a 600 s run: window 0 is warm-up; RSS medians 812 MiB
in window 1 and 830 MiB in window 9 -> growth 2.2%, passes; window p99s 21, 23, 22, 48, 22 ...
ms (median 22) -> 48 > 2 × 22: window 4 fails stability.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from recaccel.defaults import DEFAULT_SLO_P99_MS
from recaccel.errors import ConfigError

OK, REFUSED, ERROR = 0, 1, 2  # how a request ended: `Answers.kind`
MIB = 1 << 20


@dataclass(frozen=True)
class SoakCriteria:
    p99_ms: float = DEFAULT_SLO_P99_MS  # every window after the warm-up within this
    max_growth: float = 0.05  # RSS and fds: over the windows after the warm-up; fds after the load
    spike_factor: float = 2.0  # a window's p99 past this × the median window's is a spike
    max_errors: int = 0
    max_refusals: int = 0

    def __post_init__(self) -> None:
        if not (self.p99_ms > 0 and self.max_growth >= 0 and self.spike_factor >= 1):
            raise ConfigError(
                f"soak criteria need p99_ms > 0, max_growth >= 0, spike_factor >= 1; got "
                f"{self.p99_ms}, {self.max_growth}, {self.spike_factor}"
            )

    @property
    def spike_floor_ms(self) -> float:
        """A window p99 below this is never a spike (see the module docstring)."""
        return self.p99_ms / 10


@dataclass(frozen=True)
class SoakLayout:
    """When things happen in a soak, in seconds from its start."""

    duration_s: float
    window_s: float = 60.0
    warmup_s: float = 60.0
    sample_s: float = 5.0

    def __post_init__(self) -> None:
        if not (self.window_s > 0 and self.sample_s > 0 and self.warmup_s >= 0):
            raise ConfigError("window_s and sample_s must be positive, warmup_s at least 0")
        if self.sample_s > self.window_s / 2:
            raise ConfigError(
                f"sample_s={self.sample_s:g} leaves under two samples per {self.window_s:g} s "
                "window",
                "sample more often, or widen the window",
            )
        if self.windows - self.warmup_windows < 2:
            raise ConfigError(
                f"a {self.duration_s:g} s soak has {self.windows} window(s) of "
                f"{self.window_s:g} s, {self.warmup_windows} of them warm-up: growth needs two "
                "after the warm-up",
                f"run at least {self.warmup_windows * self.window_s + 2 * self.window_s:g} s, "
                "or shorten the windows or the warm-up",
            )

    @property
    def windows(self) -> int:
        """Windows in the run; the last is shorter when `window_s` does not divide it."""
        return max(1, math.ceil(round(self.duration_s / self.window_s, 9)))

    @property
    def warmup_windows(self) -> int:
        """Windows that begin before the warm-up ends."""
        return math.ceil(round(self.warmup_s / self.window_s, 9))

    def window_of(self, t_s: np.ndarray) -> np.ndarray:
        """(N,) the window index of each time; times past the end fall in the last window."""
        index = np.floor(np.asarray(t_s, dtype=np.float64) / self.window_s).astype(np.int64)
        return np.clip(index, 0, self.windows - 1)


@dataclass(frozen=True)
class Answers:
    """Every request a soak sent, in the order they ended. Arrays are (N,)."""

    sent_s: np.ndarray  # float64: when it was sent, seconds from the soak's start
    latency_ms: np.ndarray  # float64: sent to answered (or failed)
    kind: np.ndarray  # uint8: OK, REFUSED or ERROR
    why: Mapping[int, str] = field(default_factory=dict)  # index -> refusal reason or error

    def __len__(self) -> int:
        return len(self.sent_s)


@dataclass(frozen=True)
class ResourceSample:
    """The server's process tree at `t_s` seconds from the soak's start."""

    t_s: float
    processes: int
    rss_bytes: int
    fds: int
    sockets: int


@dataclass(frozen=True)
class WindowSummary:
    index: int
    start_s: float
    end_s: float
    warmup: bool
    sent: int
    answered: int
    refused: int
    errors: int
    refused_by_reason: Mapping[str, int]
    errors_by_kind: Mapping[str, int]
    p50_ms: float | None  # answered requests; None when none were
    p99_ms: float | None
    samples: int
    rss_bytes: float | None  # median of the window's samples; None without samples
    fds: float | None
    sockets: float | None
    other_fds: float | None  # fds other than sockets: files, pipes, eventfds


def _median(values: Sequence[float]) -> float | None:
    return float(np.median(values)) if len(values) else None


def summarise_windows(
    answers: Answers, samples: Sequence[ResourceSample], layout: SoakLayout
) -> tuple[WindowSummary, ...]:
    """One summary per window of `layout`: requests by the window they were sent in, samples
    by the window they were taken in. Samples from `layout.duration_s` on are left out: the
    load has stopped then (a request sent a little late still counts, in the last window)."""
    samples = [s for s in samples if s.t_s < layout.duration_s]
    request_window = layout.window_of(answers.sent_s)
    sample_window = layout.window_of(np.array([s.t_s for s in samples]))
    summaries = []
    for index in range(layout.windows):
        rows = np.flatnonzero(request_window == index)
        kinds = answers.kind[rows]
        answered = answers.latency_ms[rows][kinds == OK]
        reasons: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        for row in rows[kinds != OK]:
            tally = reasons if answers.kind[row] == REFUSED else errors
            tally[answers.why.get(int(row), "unstated")] += 1
        p50, p99 = np.percentile(answered, [50, 99]) if answered.size else (None, None)
        in_window = [s for s, w in zip(samples, sample_window, strict=True) if w == index]
        summaries.append(
            WindowSummary(
                index=index,
                start_s=index * layout.window_s,
                end_s=min((index + 1) * layout.window_s, layout.duration_s),
                warmup=index < layout.warmup_windows,
                sent=len(rows),
                answered=int(answered.size),
                refused=reasons.total(),
                errors=errors.total(),
                refused_by_reason=dict(reasons.most_common()),
                errors_by_kind=dict(errors.most_common()),
                p50_ms=None if p50 is None else float(p50),
                p99_ms=None if p99 is None else float(p99),
                samples=len(in_window),
                rss_bytes=_median([s.rss_bytes for s in in_window]),
                fds=_median([s.fds for s in in_window]),
                sockets=_median([s.sockets for s in in_window]),
                other_fds=_median([s.fds - s.sockets for s in in_window]),
            )
        )
    return tuple(summaries)


@dataclass(frozen=True)
class Growth:
    """A figure's median in the first window after the warm-up and in the last window."""

    what: str
    first: float | None
    last: float | None
    unit: str = ""
    labels: tuple[str, str] = ("first", "last")  # what `first` and `last` are, for a report

    @property
    def ratio(self) -> float | None:
        """last / first - 1; None when either is missing or the first is 0."""
        if self.first is None or self.last is None or self.first == 0:
            return None
        return self.last / self.first - 1


def growth_of(
    what: str,
    windows: Sequence[WindowSummary],
    value: Callable[[WindowSummary], float | None],
    unit: str = "",
) -> Growth:
    judged = [w for w in windows if not w.warmup]
    if not judged:
        return Growth(what, None, None, unit)
    return Growth(what, value(judged[0]), value(judged[-1]), unit)


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Verdict:
    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def failed(self) -> tuple[str, ...]:
        return tuple(check.name for check in self.checks if not check.passed)


def growth_check(growth: Growth, criteria: SoakCriteria, name: str = "") -> Check:
    name = name or f"{growth.what} growth"
    ratio = growth.ratio
    (first_label, last_label), values = growth.labels, (growth.first, growth.last)
    if ratio is None:
        return Check(name, False, f"{growth.what} not measured: {values}")
    first, last = (f"{value:,.1f}{growth.unit}" for value in values)
    detail = f"{growth.what} {ratio:+.1%} ({first_label} {first}, {last_label} {last})"
    limit = f"{criteria.max_growth:.0%}"
    passed = ratio <= criteria.max_growth
    return Check(name, passed, f"{detail} {'<=' if passed else '>'} {limit}")


def p99_check(windows: Sequence[WindowSummary], criteria: SoakCriteria) -> Check:
    """Criterion 2 of the module docstring, over the windows after the warm-up."""
    judged = [w for w in windows if not w.warmup]
    silent = [w.index for w in judged if w.p99_ms is None]
    if not judged or silent:
        return Check("p99 stable", False, f"windows {silent or 'none'} answered nothing")
    p99s = [w.p99_ms for w in judged if w.p99_ms is not None]
    median = float(np.median(p99s))
    allowed = max(criteria.spike_factor * median, criteria.spike_floor_ms)
    over_target = [w.index for w in judged if (w.p99_ms or 0) > criteria.p99_ms]
    spikes = [w.index for w in judged if (w.p99_ms or 0) > allowed]
    detail = (
        f"window p99 {min(p99s):.1f}-{max(p99s):.1f} ms, median {median:.1f}; "
        f"each must be <= {criteria.p99_ms:g} ms and <= {allowed:.1f} ms"
    )
    if over_target:
        detail += f"; over the target: windows {over_target}"
    if spikes:
        detail += f"; spikes: windows {spikes}"
    return Check("p99 stable", not over_target and not spikes, detail)


def count_check(name: str, total: int, by: Mapping[str, int], limit: int) -> Check:
    detail = f"{total}" + (f" {dict(by)}" if by else "") + f" (at most {limit})"
    return Check(name, total <= limit, detail)


def _rss_mib(window: WindowSummary) -> float | None:
    return None if window.rss_bytes is None else window.rss_bytes / MIB


def judge(
    windows: Sequence[WindowSummary],
    criteria: SoakCriteria,
    before: ResourceSample | None,
    after: ResourceSample | None,
) -> Verdict:
    """The criteria of the module docstring, in order. `before` and `after`: the server's tree
    before the load began and once it had ended (None: not measured, which fails)."""
    left_open = Growth(
        "fds",
        None if before is None else before.fds,
        None if after is None else after.fds,
        labels=("before the load", "after"),
    )
    refusals: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for w in windows:
        refusals.update(w.refused_by_reason)
        errors.update(w.errors_by_kind)
    return Verdict(
        (
            growth_check(growth_of("RSS", windows, _rss_mib, " MiB"), criteria),
            growth_check(
                growth_of("fds other than sockets", windows, lambda w: w.other_fds),
                criteria,
                "fds growth",
            ),
            growth_check(left_open, criteria, "fds after the load"),
            p99_check(windows, criteria),
            count_check("errors", errors.total(), errors, criteria.max_errors),
            count_check("refusals", refusals.total(), refusals, criteria.max_refusals),
        )
    )


def _cell(value: float | None, scale: float = 1, digits: int = 0) -> str:
    return "-" if value is None else f"{value / scale:,.{digits}f}"


def markdown_report(windows: Sequence[WindowSummary], verdict: Verdict) -> str:
    """The windows as a markdown table, then the verdict's checks."""
    lines = [
        "| window | s | sent | answered | refused | errors | p50 ms | p99 ms "
        "| RSS MiB | fds | of which sockets | samples |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for w in windows:
        lines.append(
            f"| {w.index}{' (warm-up)' if w.warmup else ''} | {w.start_s:g}-{w.end_s:g} "
            f"| {w.sent} | {w.answered} | {w.refused} | {w.errors} "
            f"| {_cell(w.p50_ms, digits=2)} | {_cell(w.p99_ms, digits=2)} "
            f"| {_cell(w.rss_bytes, MIB, 1)} | {_cell(w.fds)} | {_cell(w.sockets)} "
            f"| {w.samples} |"
        )
    lines.append("")
    for check in verdict.checks:
        lines.append(f"- {'pass' if check.passed else 'FAIL'}: {check.name}: {check.detail}")
    outcome = "PASS" if verdict.passed else f"FAIL ({', '.join(verdict.failed)})"
    lines.append(f"\nverdict: {outcome}")
    return "\n".join(lines)
