"""Scores of one run against exact samples, and the statistics over seeds (means with 95 % intervals)."""

from __future__ import annotations

import math
import statistics

import torch

from diffusers_smd.dilation import (
    count_modes_found,
    entropic_wasserstein2,
    maximum_mean_discrepancy,
    mode_weight_tv,
    sliced_ks_distance,
)

# metric -> (label in the tables, True if higher is better)
METRICS = {
    "entropic_w2": ("entropic W2", False),
    "mmd": ("MMD", False),
    "sliced_ks": ("sliced KS", False),
    "mode_weight_tv": ("mode-weight TV", False),
    "modes_found": ("modes found", True),
    "log_z_error": ("abs. log Z error", False),
    "effective_sample_size": ("ESS", True),
}


def score_samples(target, samples: torch.Tensor, exact: torch.Tensor, seed: int, full: bool = True) -> dict:
    """Every metric that applies to ``target`` for ``samples`` against ``exact`` samples of it (``full=False``:
    only the entropic W2 and the mode weights, for the error-against-budget curve).

    Mixtures: mode-weight TV (samples assigned to their most responsible component) and modes found.
    Many-well: the mode-weight TV per well, ``|fraction with x1 > 0 - P(x1 > 0)|``, averaged over the wells.
    """
    finite = torch.isfinite(samples).all(1)
    row = {"non_finite_samples": int((~finite).sum())}
    samples = samples[finite].double()
    row["entropic_w2"] = entropic_wasserstein2(samples, exact)
    if full:
        row["mmd"] = maximum_mean_discrepancy(samples, exact)
        row["sliced_ks"] = sliced_ks_distance(samples, exact, generator=torch.Generator().manual_seed(seed))
    if hasattr(target, "mode_weights_of"):
        weights = target.mode_weights_of(samples)
        row["mode_weight_tv"] = mode_weight_tv(weights, target.weights)
        row["modes_found"] = count_modes_found(weights)
    elif hasattr(target, "well_weights_of"):
        row["mode_weight_tv"] = float(
            (target.well_weights_of(samples) - target.right_well_weight).abs().mean()
        )
    return row


def mean_ci(values: list[float]) -> dict | None:
    """Mean and the half-width of its 95 % Student-t interval (``t_{0.975, n-1} s / sqrt(n)``); ``None``
    when no value is finite."""
    values = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None
    n = len(values)
    mean = statistics.fmean(values)
    if n == 1:
        return {"mean": mean, "ci95": None, "n": 1}
    from scipy.stats import t as student_t

    t = float(student_t.ppf(0.975, n - 1))
    return {"mean": mean, "ci95": t * statistics.stdev(values) / math.sqrt(n), "n": n}
