"""The accuracy guard: does an optimization step keep the original model's accuracy?

It judges on the validation split only — the test split is for reporting, never for a
decision — against the original model (the recipe's input), not the step's parent, so small
losses cannot compound step after step under the budget.
"""

from __future__ import annotations

from dataclasses import dataclass

from recaccel.defaults import DEFAULT_RELATIVE_BUDGET
from recaccel.errors import ConfigError

# What a budget means, for the hints of errors about one.
BUDGET_HINT = f"{DEFAULT_RELATIVE_BUDGET:g} allows {DEFAULT_RELATIVE_BUDGET:.1%} relative AUC loss"


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    original_auc: float
    candidate_auc: float
    floor: float  # the lowest validation AUC the budget allows
    reason: str

    @property
    def drop(self) -> float:
        """Validation AUC lost (negative: gained)."""
        return self.original_auc - self.candidate_auc


def judge(
    original_auc: float, candidate_auc: float, relative_budget: float = DEFAULT_RELATIVE_BUDGET
) -> Verdict:
    """Accept a candidate whose validation AUC is at least (1 − budget) × the original's.

    >>> judge(0.80, 0.7995).accepted, judge(0.80, 0.7990).accepted
    (True, False)
    """
    if not 0 <= relative_budget < 1:
        raise ConfigError(
            f"accuracy budget {relative_budget} is not a fraction in [0, 1)",
            BUDGET_HINT,
        )
    floor = original_auc * (1 - relative_budget)
    accepted = candidate_auc >= floor
    relation = ">=" if accepted else "<"
    reason = (
        f"validation AUC {candidate_auc:.4f} {relation} floor {floor:.4f} "
        f"(original {original_auc:.4f} − {relative_budget:.2%})"
    )
    return Verdict(accepted, original_auc, candidate_auc, floor, reason)


# Two timings of the same model differ by a few percent here; a change smaller than this is
# read as "no change", not as a gain or a loss.
LATENCY_NOISE = 0.05
# How much latency a step may add for the bytes it saves. Latency is what a ranking service
# is judged on, so the default allows only timing noise: a step that shrinks the model but
# slows it (INT8 on an MLP too small to amortise quantizing its input) is rejected. Raise it in
# a recipe where memory is the binding constraint.
MAX_SLOWDOWN = 1.05


@dataclass(frozen=True)
class CostVerdict:
    accepted: bool
    size_ratio: float  # parent bytes / candidate bytes (> 1: smaller)
    speedup: float  # parent latency / candidate latency (> 1: faster)
    reason: str


def judge_cost(
    parent_bytes: int,
    candidate_bytes: int,
    parent_ms: float,
    candidate_ms: float,
    noise: float = LATENCY_NOISE,
    max_slowdown: float = MAX_SLOWDOWN,
) -> CostVerdict:
    """Accept a step that buys something — fewer bytes, or less latency beyond noise — without
    costing more than `max_slowdown` in latency. Latencies come from the same interleaved run.

    >>> judge_cost(100, 50, 1.0, 1.0).accepted, judge_cost(100, 100, 1.0, 0.99).accepted
    (True, False)
    >>> judge_cost(100, 50, 1.0, 1.5).accepted, judge_cost(100, 100, 1.0, 0.5).accepted
    (False, True)
    >>> judge_cost(100, 50, 1.0, 1.2).accepted, judge_cost(100, 50, 1.0, 1.2, 0.05, 1.25).accepted
    (False, True)
    """
    size_ratio = parent_bytes / max(candidate_bytes, 1)
    speedup = parent_ms / candidate_ms if candidate_ms > 0 else float("inf")
    smaller = candidate_bytes < parent_bytes
    faster = speedup > 1 + noise
    too_slow = speedup < 1 / max_slowdown
    accepted = (smaller or faster) and not too_slow
    facts = f"{size_ratio:.2f}x smaller, {speedup:.2f}x faster than its parent"
    if too_slow:
        reason = f"{facts}: slower than the {max_slowdown:.2f}x allowed"
    elif not accepted:
        reason = f"{facts}: buys neither size nor speed"
    else:
        reason = facts
    return CostVerdict(accepted, size_ratio, speedup, reason)
