"""The soak's pure parts (windows, growth, p99 stability, the verdict), its /proc reading, its
request booking and its workload from bodies. The soak itself runs in tests/e2e/test_soak.py."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import orjson
import pytest

from recaccel.bench.proc_usage import TreeUsage, process_usage, tree_usage
from recaccel.bench.soak import (
    ERROR,
    MIB,
    OK,
    REFUSED,
    Answers,
    ResourceSample,
    SoakCriteria,
    SoakLayout,
    Verdict,
    WindowSummary,
    judge,
    markdown_report,
    p99_check,
    summarise_windows,
)
from recaccel.bench.soak_run import AnswerRecorder, RecordingTransport
from recaccel.bench.workload import RankWorkload
from recaccel.errors import ConfigError

# Five windows of 10 s; the first is warm-up.
LAYOUT = SoakLayout(duration_s=50, window_s=10, warmup_s=10, sample_s=2)
CRITERIA = SoakCriteria(p99_ms=50)


def window(
    index: int,
    p99_ms: float | None = 10.0,
    rss: float = 800 * MIB,
    fds: float = 100,
    sockets: float = 10,
    refused: dict[str, int] | None = None,
    errors: dict[str, int] | None = None,
) -> WindowSummary:
    refused, errors = refused or {}, errors or {}
    return WindowSummary(
        index=index,
        start_s=10.0 * index,
        end_s=10.0 * index + 10,
        warmup=index == 0,
        sent=1000,
        answered=1000 - sum(refused.values()) - sum(errors.values()),
        refused=sum(refused.values()),
        errors=sum(errors.values()),
        refused_by_reason=refused,
        errors_by_kind=errors,
        p50_ms=None if p99_ms is None else p99_ms / 2,
        p99_ms=p99_ms,
        samples=5,
        rss_bytes=rss,
        fds=fds,
        sockets=sockets,
        other_fds=fds - sockets,
    )


def windows(
    p99s: Sequence[float | None] = (10,) * 5,
    rss: Sequence[float] = (800 * MIB,) * 5,
    fds: Sequence[float] = (100,) * 5,
    sockets: Sequence[float] = (10,) * 5,
) -> list[WindowSummary]:
    rows = zip(p99s, rss, fds, sockets, strict=True)
    return [window(i, p, r, f, s) for i, (p, r, f, s) in enumerate(rows)]


BEFORE = ResourceSample(0.0, 3, 800 * MIB, 100, 10)
AFTER = ResourceSample(52.0, 3, 800 * MIB, 102, 10)


def judged(soaked: Sequence[WindowSummary], after: ResourceSample | None = AFTER) -> Verdict:
    return judge(soaked, CRITERIA, BEFORE, after)


def check(verdict: Verdict, name: str) -> tuple[bool, str]:
    found = next(c for c in verdict.checks if c.name == name)
    return found.passed, found.detail


# --- the layout ---------------------------------------------------------------------------------


def test_layout_counts_windows_and_the_warm_up_ones() -> None:
    assert (LAYOUT.windows, LAYOUT.warmup_windows) == (5, 1)
    assert SoakLayout(600).windows == 10 and SoakLayout(600).warmup_windows == 1
    assert SoakLayout(95, window_s=10, warmup_s=15, sample_s=1).windows == 10  # last one short
    assert SoakLayout(95, window_s=10, warmup_s=15, sample_s=1).warmup_windows == 2
    assert LAYOUT.window_of(np.array([0, 9.99, 10, 49.9, 50.2])).tolist() == [0, 0, 1, 4, 4]


@pytest.mark.parametrize(
    ("layout", "match"),
    [
        (dict(duration_s=20, window_s=10, warmup_s=10, sample_s=2), "growth needs two"),
        (dict(duration_s=120, window_s=60, warmup_s=60, sample_s=5), "growth needs two"),
        (dict(duration_s=60, window_s=10, warmup_s=10, sample_s=6), "under two samples"),
        (dict(duration_s=60, window_s=0, warmup_s=10, sample_s=1), "must be positive"),
    ],
)
def test_a_layout_that_cannot_be_judged_is_refused(layout: dict[str, float], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SoakLayout(**layout)


# --- windows ------------------------------------------------------------------------------------


def test_requests_and_samples_are_summarised_by_the_window_they_fall_in() -> None:
    answers = Answers(
        sent_s=np.array([1.0, 2.0, 3.0, 11.0, 12.0, 13.0, 14.0, 49.0, 50.5]),
        latency_ms=np.array([5.0, 7.0, 1.0, 4.0, 4.0, 2.0, 90.0, 6.0, 8.0]),
        kind=np.array([OK, OK, REFUSED, OK, OK, REFUSED, ERROR, OK, OK], dtype=np.uint8),
        why={2: "queue_full", 5: "queue_full", 6: "TimeoutError"},
    )
    samples = [
        ResourceSample(t, 3, int(rss * MIB), fds, 4)
        for t, rss, fds in [
            (0, 100, 50),
            (2, 110, 52),
            (4, 120, 54),
            (10, 200, 60),
            (12, 220, 62),
            (48, 300, 70),
            (50, 999, 999),
        ]
    ]
    summary = summarise_windows(answers, samples, LAYOUT)
    assert len(summary) == 5 and [w.warmup for w in summary] == [True] + [False] * 4
    first, second, last = summary[0], summary[1], summary[4]
    assert (first.sent, first.answered, first.refused, first.errors) == (3, 2, 1, 0)
    assert first.refused_by_reason == {"queue_full": 1} and first.p99_ms == pytest.approx(6.98)
    assert (second.sent, second.answered, second.refused, second.errors) == (4, 2, 1, 1)
    assert second.errors_by_kind == {"TimeoutError": 1} and second.p50_ms == 4.0
    assert last.sent == 2  # sent a little past the end: still the last window's
    assert (summary[2].sent, summary[2].p99_ms, summary[2].samples) == (0, None, 0)
    # Medians of each window's samples; the sample at the very end (load stopped) left out.
    assert (first.samples, first.rss_bytes, first.fds) == (3, 110 * MIB, 52)
    assert (first.sockets, first.other_fds) == (4, 48)
    assert (second.rss_bytes, second.fds, last.rss_bytes, last.samples) == (
        210 * MIB,
        61,
        300 * MIB,
        1,
    )


# --- growth -------------------------------------------------------------------------------------


def test_flat_memory_and_fds_pass_even_after_a_warm_up_that_grew() -> None:
    rss = [500 * MIB, 800 * MIB, 805 * MIB, 798 * MIB, 810 * MIB]  # +1.25%
    verdict = judged(windows(rss=rss, fds=(60, 100, 101, 99, 102)))
    assert verdict.passed, verdict
    passed, detail = check(verdict, "RSS growth")
    assert passed and "RSS +1.2% (first 800.0 MiB, last 810.0 MiB) <= 5%" in detail


def test_growing_memory_fails_and_says_by_how_much() -> None:
    rss = [800 * MIB, 800 * MIB, 820 * MIB, 840 * MIB, 860 * MIB]  # +7.5% after the warm-up
    verdict = judged(windows(rss=rss))
    assert not verdict.passed and verdict.failed == ("RSS growth",)
    _, detail = check(verdict, "RSS growth")
    assert "+7.5%" in detail and "> 5%" in detail


def test_leaking_file_descriptors_fail() -> None:
    verdict = judged(windows(fds=(100, 100, 103, 106, 110)))
    assert verdict.failed == ("fds growth",)
    assert (
        "fds other than sockets +11.1% (first 90.0, last 100.0)" in check(verdict, "fds growth")[1]
    )


def test_sockets_that_follow_the_load_are_not_a_leak_but_sockets_left_open_are() -> None:
    # A slower last window: the client holds 40 more connections, so 40 more server sockets.
    busy = windows(fds=(100, 100, 105, 120, 140), sockets=(10, 10, 15, 30, 50))
    assert judged(busy).passed
    verdict = judged(busy, after=ResourceSample(52.0, 3, 800 * MIB, 140, 50))
    assert verdict.failed == ("fds after the load",)
    assert (
        "fds +40.0% (before the load 100.0, after 140.0) > 5%"
        in check(verdict, "fds after the load")[1]
    )
    unread = judged(busy, after=None)  # the server had exited
    assert unread.failed == ("fds after the load",)


def test_growth_without_samples_is_not_a_pass() -> None:
    unsampled = [dataclasses.replace(w, rss_bytes=None, other_fds=None) for w in windows()]
    verdict = judged(unsampled)
    assert set(verdict.failed) == {"RSS growth", "fds growth"}
    assert "RSS not measured: (None, None)" in check(verdict, "RSS growth")[1]


# --- p99 stability ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("p99s", "stable", "named"),
    [
        ((30, 20, 22, 21, 23), True, ""),  # the warm-up's 30 is not judged
        ((99, 20, 22, 21, 23), True, ""),  # not even past the target
        ((10, 20, 22, 48, 23), False, "spikes: windows [3]"),  # 48 > 2 × 22.5
        ((10, 30, 35, 52, 33), False, "over the target: windows [3]"),  # within 2×, not 50 ms
        ((1, 2.0, 2.1, 4.9, 2.0), True, ""),  # 4.9 > 2 × 2.05, but under a tenth of 50 ms
        ((1, 2.0, 2.1, 5.1, 2.0), False, "spikes: windows [3]"),  # and now past it
        ((10, 20, None, 21, 23), False, "[2] answered nothing"),
    ],
)
def test_p99_is_stable_when_every_window_after_the_warm_up_is_near_the_median_and_on_target(
    p99s: Sequence[float | None], stable: bool, named: str
) -> None:
    result = p99_check(windows(p99s=p99s), CRITERIA)
    assert result.passed is stable, result.detail
    assert named in result.detail


# --- errors and refusals ------------------------------------------------------------------------


def test_one_error_or_one_refusal_anywhere_fails_the_soak_warm_up_included() -> None:
    soaked = windows()
    soaked[0] = window(0, refused={"queue_full": 1})
    soaked[3] = window(3, errors={"HTTP 500": 2})
    verdict = judged(soaked)
    assert verdict.failed == ("errors", "refusals")
    assert "{'HTTP 500': 2}" in check(verdict, "errors")[1]
    assert "{'queue_full': 1}" in check(verdict, "refusals")[1]


def test_the_report_has_a_row_per_window_and_names_what_failed() -> None:
    soaked = windows(rss=(800 * MIB, 800 * MIB, 800 * MIB, 800 * MIB, 900 * MIB))
    text = markdown_report(soaked, judged(soaked))
    rows = [line for line in text.splitlines() if line.startswith("| ") and "window" not in line]
    assert len(rows) == 5 and rows[0].startswith("| 0 (warm-up) | 0-10 | 1000 |")
    assert "| 800.0 |" in rows[1]
    assert "- FAIL: RSS growth: RSS +12.5%" in text
    assert text.endswith("verdict: FAIL (RSS growth)")


# --- booking each request -----------------------------------------------------------------------


class CannedTransport:
    def __init__(self, answers: list[tuple[int, bytes] | Exception]) -> None:
        self._answers = answers

    async def post(self, body: bytes) -> tuple[int, bytes]:
        answer = self._answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def close(self) -> None:
        pass


def test_the_recording_transport_books_every_outcome_and_hides_none() -> None:
    ranking = orjson.dumps({"items": [{"item_id": 3, "score": 0.5}], "server_ms": 1.0})
    canned: list[tuple[int, bytes] | Exception] = [
        (200, ranking),
        (429, b'{"reason": "queue_full"}'),
        (503, b"busy"),
        (500, b"oops"),
        (200, b"not json"),
        TimeoutError(),
    ]
    recorder = AnswerRecorder(start_s=0.0)
    transport = RecordingTransport(CannedTransport(list(canned)), recorder)

    async def send_all() -> list[object]:
        return await asyncio.gather(
            *(transport.post(b"{}") for _ in range(6)), return_exceptions=True
        )

    results = asyncio.run(send_all())
    assert results[:5] == canned[:5] and isinstance(results[5], TimeoutError)
    answers = recorder.answers()
    assert answers.kind.tolist() == [OK, REFUSED, REFUSED, ERROR, ERROR, ERROR]
    assert recorder.counts == [1, 2, 3]
    assert answers.why == {
        1: "queue_full",
        2: "unstated",
        3: "HTTP 500",
        4: "bad 200 body: JSONDecodeError",
        5: "TimeoutError",
    }
    assert (answers.latency_ms >= 0).all() and (answers.sent_s > 0).all()


# --- /proc ----------------------------------------------------------------------------------------


def fake_process(proc: Path, pid: int, ppid: int, rss_pages: int, links: list[str]) -> None:
    entry = proc / str(pid)
    (entry / "fd").mkdir(parents=True)
    (entry / "stat").write_text(f"{pid} (x) S {ppid} 1 1 0 -1 0 0 0 0 0 1 1 0 0 20 0")
    (entry / "statm").write_text(f"9999 {rss_pages} 10 1 0 50 0\n")
    for fd, target in enumerate(links):
        (entry / "fd" / str(fd)).symlink_to(target)


def test_a_process_tree_is_summed_over_its_members_only(tmp_path: Path) -> None:
    fake_process(tmp_path, 10, 1, 100, ["/dev/null", "socket:[1]", "pipe:[2]"])
    fake_process(tmp_path, 11, 10, 50, ["socket:[3]", "socket:[4]"])
    fake_process(tmp_path, 12, 11, 25, ["anon_inode:[eventpoll]"])
    fake_process(tmp_path, 20, 1, 1000, ["socket:[5]"])  # not the server's
    assert tree_usage(10, tmp_path, page_bytes=4096) == TreeUsage(3, 175 * 4096, 6, 3)
    assert tree_usage(11, tmp_path, page_bytes=4096) == TreeUsage(2, 75 * 4096, 3, 2)
    assert process_usage(99, tmp_path, page_bytes=4096) == TreeUsage(0, 0, 0, 0)  # exited
    with pytest.raises(ConfigError, match="no process 99"):
        tree_usage(99, tmp_path)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's /proc")
def test_this_process_has_memory_and_open_files() -> None:
    usage = tree_usage(os.getpid())
    assert usage.processes >= 1 and usage.rss_bytes > 10 * MIB and usage.fds >= 3


# --- requests from bodies -----------------------------------------------------------------------


def test_a_workload_from_bodies_sends_them_as_they_are() -> None:
    bodies = [
        b'{"user_id": 3, "candidates": [1, 2, 5]}',
        b'{"user_id": 4, "candidates": [7], "k": 1}',
    ]
    workload = RankWorkload.from_bodies(bodies)
    assert workload.bodies == tuple(bodies) and len(workload) == 2
    assert workload.user_ids.tolist() == [3, 4] and workload.sizes.tolist() == [3, 1]
    assert workload.stats().max == 3


@pytest.mark.parametrize("bad", [b"not json", b"[1, 2]", b'{"user_id": 1}', b'{"candidates": []}'])
def test_a_body_that_is_not_a_rank_request_is_named(bad: bytes) -> None:
    with pytest.raises(ConfigError, match=r"request 2 of log\.jsonl is not a /v1/rank body"):
        RankWorkload.from_bodies([b'{"user_id": 1, "candidates": [1]}', bad], "log.jsonl")
    with pytest.raises(ConfigError, match="hold no requests"):
        RankWorkload.from_bodies([])
