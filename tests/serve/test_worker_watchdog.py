"""The watchdog's decision (workers.hung_for): a worker holding a batch past its timeout is hung."""

from __future__ import annotations

import pytest

from recaccel.serve.workers import hung_for


def test_a_worker_holding_nothing_is_never_hung() -> None:
    assert hung_for([], now=100.0, timeout_s=2.0) == (False, 2.0)


def test_the_oldest_batch_decides() -> None:
    assert hung_for([99.5, 97.9], now=100.0, timeout_s=2.0) == (True, 0.0)


def test_a_batch_held_under_the_timeout_is_looked_at_again_when_it_would_be_hung() -> None:
    hung, wait_s = hung_for([99.5, 99.0], now=100.0, timeout_s=2.0)
    assert not hung
    assert wait_s == pytest.approx(1.0)
