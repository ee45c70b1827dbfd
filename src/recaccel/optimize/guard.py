"""The accuracy guard: does an optimization step keep the original model's accuracy?

It judges on the validation split only — the test split is for reporting, never for a
decision — against the original model (the recipe's input), not the step's parent, so small
losses cannot compound step after step under the budget.
"""

from __future__ import annotations

from dataclasses import dataclass

from recaccel.errors import ConfigError

# MLPerf's high-accuracy target: 99.9% of the reference (`dlrm-99.9`).
DEFAULT_RELATIVE_BUDGET = 0.001


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
            "0.001 allows 0.1% relative AUC loss",
        )
    floor = original_auc * (1 - relative_budget)
    accepted = candidate_auc >= floor
    relation = ">=" if accepted else "<"
    reason = (
        f"validation AUC {candidate_auc:.4f} {relation} floor {floor:.4f} "
        f"(original {original_auc:.4f} − {relative_budget:.2%})"
    )
    return Verdict(accepted, original_auc, candidate_auc, floor, reason)
