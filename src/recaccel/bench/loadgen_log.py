"""LoadGen's own verdict, read from the logs it writes.

LoadGen writes two logs per run: `mlperf_log_summary.txt` for people and
`mlperf_log_detail.txt` for machines, one `:::MLLOG {json}` event per line. Both come from the
same numbers; this module reads the detail log, whose values are exact (the summary rounds QPS
to two decimals) and whose keys do not move with the summary's layout:

    result_validity                      VALID | INVALID
    result_perf_constraints_met          p99 (the set percentile) within the target latency
    result_min_duration_met, result_min_queries_met, early_stopping_met
    result_invalid_reason                LoadGen's own advice ("Increase expected QPS ...")
    early_stopping_result                how many more queries early stopping needs
    result_scheduled_samples_per_sec     Server: the QPS LoadGen actually scheduled
    result_completed_samples_per_sec     Server: the QPS completed — the figure that counts
    result_samples_per_second            Offline: throughput
    result_{min,max,mean}_latency_ns, result_{50.00,...,99.90}_percentile_latency_ns

Early stopping (Server, PerformanceOnly): LoadGen does not trust a p99 taken from few queries;
with none over the latency bound it needs about 460 queries before a run can be VALID, and
more for each one over. Short runs are therefore INVALID for "early stopping" alone — that is
LoadGen's statistics, not a slow server, and the reasons say so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from recaccel.errors import RecaccelError

DETAIL_LOG = "mlperf_log_detail.txt"
SUMMARY_LOG = "mlperf_log_summary.txt"
PREFIX = ":::MLLOG "
PERCENTILES = ("50.00", "90.00", "95.00", "97.00", "99.00", "99.90")
# Requirement keys and how to say each one failed.
LATENCY_NOT_MET = "latency constraint not met"
REQUIREMENTS = (
    ("result_perf_constraints_met", LATENCY_NOT_MET),
    ("result_min_duration_met", "min duration not met"),
    ("result_min_queries_met", "min query count not met"),
    ("early_stopping_met", "early stopping not satisfied"),
)


class LoadGenLogError(RecaccelError):
    """LoadGen's log is missing or lacks a result."""


@dataclass(frozen=True)
class LatencyNs:
    """LoadGen's latency statistics, in ns as it logs them; `ms` converts."""

    min: int
    mean: int
    max: int
    percentiles: Mapping[str, int]  # "50.00" -> ns, for each of PERCENTILES logged

    def ms(self, percentile: str) -> float:
        return self.percentiles[percentile] / 1e6


@dataclass(frozen=True)
class LoadGenResult:
    """One run as LoadGen judged it."""

    scenario: str  # "Server", "Offline"
    valid: bool
    reasons: tuple[str, ...]  # why INVALID (empty when VALID)
    scheduled_qps: float | None  # Server only
    completed_qps: float  # Server: completed samples/s; Offline: samples/s
    query_count: int
    overlatency_count: int | None  # Server only
    latency: LatencyNs
    early_stopping: str  # LoadGen's early-stopping verdict, whitespace-collapsed
    errors: tuple[str, ...]  # events LoadGen marked is_error


def read_events(text: str) -> dict[str, Any]:
    """The detail log's events as key -> value (the last one wins for a repeated key)."""
    events: dict[str, Any] = {}
    for line in text.splitlines():
        if not line.startswith(PREFIX):
            continue
        try:
            event = orjson.loads(line[len(PREFIX) :])
        except orjson.JSONDecodeError:
            continue  # a line cut short by a killed run; the rest still parses
        if isinstance(event, dict) and "key" in event:
            events[str(event["key"])] = event.get("value")
            if event.get("metadata", {}).get("is_error"):
                events.setdefault("__errors__", []).append(f"{event['key']}: {event['value']}")
    return events


def parse_detail_log(text: str) -> LoadGenResult:
    """LoadGen's result from the text of `mlperf_log_detail.txt`."""
    events = read_events(text)
    if "result_validity" not in events:
        raise LoadGenLogError(
            "the LoadGen log has no result_validity: the run did not finish",
            "read the log's last lines for LoadGen's error",
        )
    valid = events["result_validity"] == "VALID"
    reasons = [what for key, what in REQUIREMENTS if events.get(key) is False]
    advice = str(events.get("result_invalid_reason") or "").strip()
    if advice:
        reasons.append(advice)
    if "result_completed_samples_per_sec" in events:
        completed = float(events["result_completed_samples_per_sec"])
    else:
        completed = float(events.get("result_samples_per_second", 0.0))
    scheduled = events.get("result_scheduled_samples_per_sec")
    overlatency = events.get("result_overlatency_query_count")
    latency = LatencyNs(
        min=int(events.get("result_min_latency_ns", 0)),
        mean=int(events.get("result_mean_latency_ns", 0)),
        max=int(events.get("result_max_latency_ns", 0)),
        percentiles={
            p: int(events[f"result_{p}_percentile_latency_ns"])
            for p in PERCENTILES
            if f"result_{p}_percentile_latency_ns" in events
        },
    )
    return LoadGenResult(
        scenario=str(events.get("effective_scenario", events.get("requested_scenario", ""))),
        valid=valid,
        reasons=tuple(reasons) if not valid else (),
        scheduled_qps=None if scheduled is None else float(scheduled),
        completed_qps=completed,
        query_count=int(events.get("result_query_count", 0)),
        overlatency_count=None if overlatency is None else int(overlatency),
        latency=latency,
        early_stopping=" ".join(str(events.get("early_stopping_result", "")).split()),
        errors=tuple(events.get("__errors__", ())),
    )


def read_result(out_dir: Path) -> LoadGenResult:
    """LoadGen's result from the logs it wrote into `out_dir`."""
    path = out_dir / DETAIL_LOG
    if not path.is_file():
        raise LoadGenLogError(
            f"LoadGen wrote no {DETAIL_LOG} in {out_dir}",
            "check that the directory is writable and that the run was not interrupted",
        )
    return parse_detail_log(path.read_text(errors="replace"))
