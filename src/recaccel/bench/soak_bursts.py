"""What the client saw around a soak's refusals and errors, a tenth of a second at a time.

A soak's windows are a minute long: a burst of refusals inside one says that it happened, not
why. The slices around it tell two stories apart: latency climbing in the slices before the
refusals (requests waited: the server, or the machine under it, paused, and the in-flight
limit shed what stood in the queue past its target) or refusals with latency flat before them
(a limit that cut with no queue behind it). Slices are by send time.

Example: refusals sent at 178.31 s and 178.42 s form one burst; with `pad_s` 1 its slices run
from 177.3 s to 179.5 s, each with the requests sent in it, how many were refused, and the
median and largest latency of those answered.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recaccel.bench.soak import OK, Answers

HEADER = "| sent at s | sent | refused or failed | p50 ms | max ms |"


@dataclass(frozen=True)
class Slice:
    start_s: float  # from the soak's start
    sent: int
    refused: int  # or failed: anything but an answer
    p50_ms: float | None  # of those answered
    max_ms: float | None


def bursts(trouble_s: np.ndarray, pad_s: float) -> list[tuple[float, float]]:
    """(first, last) send time of each run of troubled requests no more than `pad_s` apart."""
    times = np.sort(np.asarray(trouble_s, dtype=np.float64))
    found: list[tuple[float, float]] = []
    for t in times:
        if found and t - found[-1][1] <= pad_s:
            found[-1] = (found[-1][0], float(t))
        else:
            found.append((float(t), float(t)))
    return found


def around_trouble(
    answers: Answers, slice_s: float = 0.1, pad_s: float = 1.0, most: int = 5
) -> list[list[Slice]]:
    """The slices of up to `most` bursts of refusals or errors, `pad_s` either side of each."""
    troubled = answers.kind != OK
    found = []
    for first, last in bursts(answers.sent_s[troubled], pad_s)[:most]:
        edges = np.arange(
            np.floor((first - pad_s) / slice_s) * slice_s, last + pad_s + slice_s, slice_s
        )
        found.append([_slice(answers, start, start + slice_s) for start in edges[:-1]])
    return found


def _slice(answers: Answers, start: float, end: float) -> Slice:
    inside = (answers.sent_s >= start) & (answers.sent_s < end)
    ok = inside & (answers.kind == OK)
    latency = answers.latency_ms[ok]
    return Slice(
        round(float(start), 3),
        int(inside.sum()),
        int((inside & ~(answers.kind == OK)).sum()),
        float(np.median(latency)) if len(latency) else None,
        float(latency.max()) if len(latency) else None,
    )


def markdown_bursts(found: list[list[Slice]]) -> str:
    """Each burst's slices as a small table; empty when there was no trouble."""
    lines: list[str] = []
    for number, slices in enumerate(found, 1):
        lines += [
            f"burst {number}:",
            "",
            "| sent at s | sent | refused or failed | p50 ms | max ms |",
        ]
        lines.append("|---|---|---|---|---|")
        for s in slices:
            p50 = "-" if s.p50_ms is None else f"{s.p50_ms:.1f}"
            peak = "-" if s.max_ms is None else f"{s.max_ms:.1f}"
            lines.append(f"| {s.start_s:.1f} | {s.sent} | {s.refused} | {p50} | {peak} |")
        lines.append("")
    return "\n".join(lines)
