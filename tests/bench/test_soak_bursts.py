"""The slices around a soak's refusals (bench/soak_bursts.py): bursts found, and latency before
them shown, so a stall that was shed reads apart from a refusal with no queue behind it."""

from __future__ import annotations

import numpy as np

from recaccel.bench.soak import OK, REFUSED, Answers
from recaccel.bench.soak_bursts import around_trouble, bursts, markdown_bursts


def test_troubled_requests_close_together_are_one_burst() -> None:
    assert bursts(np.array([5.0, 1.0, 1.4, 9.0]), pad_s=1.0) == [(1.0, 1.4), (5.0, 5.0), (9.0, 9.0)]


def test_no_trouble_no_slices() -> None:
    answers = Answers(np.arange(10.0), np.ones(10), np.full(10, OK, np.uint8))
    assert around_trouble(answers) == []
    assert markdown_bursts([]) == ""


def test_the_slices_before_a_burst_show_the_latency_that_built_up() -> None:
    # 10 requests a slice from 0 to 3 s; those sent in 1.0-1.2 s waited 150 ms, and two sent
    # at 1.25 s were refused.
    sent = np.repeat(np.arange(0, 3, 0.1), 10) + np.tile(np.arange(10) / 100, 30)
    latency = np.where((sent >= 1.0) & (sent < 1.2), 150.0, 2.0)
    kind = np.full(len(sent), OK, np.uint8)
    refused = np.flatnonzero(np.isclose(sent, 1.25))
    kind[refused] = REFUSED
    [burst] = around_trouble(Answers(sent, latency, kind), slice_s=0.1, pad_s=0.5)
    starts = [s.start_s for s in burst]
    assert starts[0] == 0.7 and starts[-1] == 1.7
    by_start = {s.start_s: s for s in burst}
    assert by_start[1.0].max_ms == 150.0 and by_start[0.9].max_ms == 2.0
    assert by_start[1.2].refused == len(refused) and by_start[1.2].sent == 10
    assert sum(s.refused for s in burst) == len(refused)
    assert "| 1.2 | 10 | 1 | 2.0 | 2.0 |" in markdown_bursts([burst])
