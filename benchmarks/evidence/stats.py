"""Paired comparisons over seeds: the mean difference, its 95 % confidence interval, and the verdict rule.

For a cell, seed i gives the model's value m_i and the baseline's value b_i from the same seed (same data
order, initialisation and sampling noise), so d_i = m_i - b_i are paired differences. With n seeds:

    mean  = (1/n) sum_i d_i,   sd = sqrt( sum_i (d_i - mean)^2 / (n - 1) )
    CI_95 = mean -/+ t_{0.975, n-1} * sd / sqrt(n)                         (Student's t interval)

The verdict rule: a claim is **reproduced** when the interval excludes zero in the claimed direction,
**contradicted** when it excludes zero in the other direction, and **undecided** otherwise. For a claim
"at least / at most a threshold" (``reference`` != 0) the interval is compared with that threshold instead.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass

__all__ = ["DIRECTIONS", "VERDICTS", "PairedComparison", "paired_comparison", "student_t_975", "verdict"]

#: "lower": the claim says the model's value is below the baseline's (distances, K); "higher": above.
DIRECTIONS = ("lower", "higher")
VERDICTS = ("reproduced", "contradicted", "undecided")


def student_t_975(degrees_of_freedom: int) -> float:
    """The 97.5 % quantile of Student's t distribution (two-sided 95 % interval)."""
    if degrees_of_freedom < 1:
        raise ValueError(f"degrees_of_freedom must be >= 1, got {degrees_of_freedom}")
    from scipy.stats import t

    return float(t.ppf(0.975, degrees_of_freedom))


def verdict(low: float, high: float, direction: str, reference: float = 0.0) -> str:
    """The verdict rule for an interval [low, high] and a claimed direction against ``reference``."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if low > high:
        raise ValueError(f"low must not exceed high, got [{low}, {high}]")
    below, above = high < reference, low > reference
    if (direction == "lower" and below) or (direction == "higher" and above):
        return "reproduced"
    if below or above:
        return "contradicted"
    return "undecided"


@dataclass(frozen=True)
class PairedComparison:
    """The paired comparison of one cell; ``relative_*`` divide by the baseline's mean (None if it is 0)."""

    num_seeds: int
    model_mean: float
    baseline_mean: float
    mean_difference: float
    ci_low: float
    ci_high: float
    direction: str
    verdict: str
    reference: float = 0.0

    @property
    def relative_difference(self) -> float | None:
        return self.mean_difference / self.baseline_mean if self.baseline_mean else None

    @property
    def relative_ci(self) -> tuple[float, float] | None:
        if not self.baseline_mean:
            return None
        return self.ci_low / self.baseline_mean, self.ci_high / self.baseline_mean

    def to_dict(self) -> dict:
        data = asdict(self)
        data["relative_difference"] = self.relative_difference
        data["relative_ci"] = list(self.relative_ci) if self.relative_ci else None
        return data


def paired_comparison(
    model: Sequence[float], baseline: Sequence[float], direction: str, reference: float = 0.0
) -> PairedComparison:
    """Mean paired difference ``model - baseline`` over seeds, its 95 % t interval and the verdict.

    ``baseline`` may be all zeros (a one-sample interval for the model's own value, e.g. a spread that a
    single Gaussian does not have), compared with ``reference``.
    """
    if len(model) != len(baseline):
        raise ValueError(
            f"model and baseline need one value per seed each, got {len(model)} and {len(baseline)}"
        )
    if len(model) < 2:
        raise ValueError(f"a confidence interval needs at least 2 seeds, got {len(model)}")
    differences = [m - b for m, b in zip(model, baseline)]
    mean = statistics.fmean(differences)
    half_width = (
        student_t_975(len(differences) - 1) * statistics.stdev(differences) / math.sqrt(len(differences))
    )
    low, high = mean - half_width, mean + half_width
    return PairedComparison(
        num_seeds=len(differences),
        model_mean=statistics.fmean(model),
        baseline_mean=statistics.fmean(baseline),
        mean_difference=mean,
        ci_low=low,
        ci_high=high,
        direction=direction,
        verdict=verdict(low, high, direction, reference),
        reference=reference,
    )
