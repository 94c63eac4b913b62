"""Tempering baselines on the geometric path ``pi_beta ∝ rho^(1 - beta) pi~^beta`` from the reference
``rho = N(0, initial_scale^2 I)`` to the target: SMC with adaptive tempering, AIS, parallel tempering.

Same signature and budget as :mod:`.baselines`: ``num_steps`` target-gradient evaluations per sample. All
moves are MALA transitions (:func:`~.kernels.mala_transition`, one evaluation each) whose step size is
tuned towards an acceptance rate of 0.574 at each temperature.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .baselines import SamplerOutput, check_common, positive_int
from .evaluator import TargetEvaluator
from .kernels import (
    TARGET_ACCEPTANCE,
    GaussianReference,
    log_mean_exp,
    mala_transition,
    needs_log_prob,
    next_temperature,
    systematic_resample,
)
from .metrics import effective_sample_size

__all__ = ["annealed_importance_sampling", "parallel_tempering", "sequential_monte_carlo"]


def _adapt(log_h: torch.Tensor | float, accept: torch.Tensor, rate: float = 0.5):
    """Robbins-Monro step on ``log h`` towards the target acceptance (scalar: mean over rows)."""
    return log_h + rate * (accept.double().mean() - TARGET_ACCEPTANCE)


def _fraction(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and 0.0 < value < 1.0):
        raise ValueError(f"{name} must lie in (0, 1), got {value!r}")
    return float(value)


@torch.no_grad()
def sequential_monte_carlo(
    target: Any,
    num_samples: int,
    num_steps: int,
    generator: torch.Generator | None = None,
    dim: int | None = None,
    dtype: torch.dtype = torch.float32,
    initial_scale: float = 1.0,
    ess_fraction: float = 0.9,
    resample_fraction: float = 0.5,
    num_mcmc_steps: int | None = None,
    step_size: float = 0.5,
) -> SamplerOutput:
    """SMC sampler with adaptive tempering and adaptive resampling (Del Moral, Doucet and Jasra 2006; Zhou,
    Johansen and Aston 2016).

    ``num_samples`` particles from ``rho``. At each level the next temperature is the largest ``beta'`` that
    keeps the conditional ESS of the incremental weights ``exp((beta' - beta) l)``, ``l = log pi~ - log rho``,
    at ``ess_fraction * num_samples`` (:func:`~.kernels.next_temperature`); the particles are reweighted,
    resampled (systematic) when their ESS falls below ``resample_fraction * num_samples``, and moved by
    ``num_mcmc_steps`` MALA transitions for ``pi_beta'``. ``log_Z`` is the sum over levels of
    ``log sum_i W_i exp((beta' - beta) l_i)``. Budget: when the evaluations left allow only one more level,
    that level goes to ``beta' = 1``; evaluations left at ``beta = 1`` go to MALA moves there. The returned
    particles are resampled to equal weights. ``num_mcmc_steps`` defaults to ``max(1, num_steps // 100)``.
    """
    num_samples, num_steps = check_common(num_samples, num_steps, step_size)
    ess_fraction = _fraction("ess_fraction", ess_fraction)
    resample_fraction = _fraction("resample_fraction", resample_fraction)
    default_moves = max(1, num_steps // 100)
    moves = positive_int("num_mcmc_steps", default_moves if num_mcmc_steps is None else num_mcmc_steps)
    ev = TargetEvaluator(target, dim)
    needs_log_prob(ev, "SMC")
    ref = GaussianReference(ev.dim, initial_scale)
    budget = num_samples * num_steps
    x = ref.sample(num_samples, generator, dtype)
    lp, s = ev.evaluate(x, "at the SMC particles drawn from the reference")
    log_weights = torch.full((num_samples,), -math.log(num_samples), dtype=torch.float64)
    beta, log_z, log_h, level = 0.0, 0.0, math.log(step_size), 0
    sizes, accepted = [], []

    def move(x, lp, s, log_h, beta, where):
        x, lp, s, acc = mala_transition(ev, x, lp, s, math.exp(log_h), generator, beta, ref, where)
        sizes.append(math.exp(log_h))
        accepted.append(float(acc.double().mean()))
        return x, lp, s, float(_adapt(log_h, acc))

    while beta < 1.0:
        l_ratio = (lp - ref.log_prob(x)).double()
        last = budget - ev.num_gradient_evaluations < 2 * moves * num_samples
        new_beta = 1.0 if last else next_temperature(l_ratio, beta, ess_fraction, log_weights)
        increment = log_weights + (new_beta - beta) * l_ratio
        log_z += float(torch.logsumexp(increment, 0))
        log_weights = torch.log_softmax(increment, 0)
        beta, level = new_beta, level + 1
        if effective_sample_size(log_weights) < resample_fraction * num_samples:
            idx = systematic_resample(log_weights.exp(), num_samples, generator)
            x, lp, s = x[idx], lp[idx], s[idx]
            log_weights = torch.full_like(log_weights, -math.log(num_samples))
        for k in range(moves):
            if budget - ev.num_gradient_evaluations < num_samples:
                break
            x, lp, s, log_h = move(
                x, lp, s, log_h, beta, f"at SMC level {level} (beta={beta:.4g}), MALA step {k}"
            )
    ess = effective_sample_size(log_weights)
    idx = systematic_resample(log_weights.exp(), num_samples, generator)
    x, lp, s = x[idx], lp[idx], s[idx]
    k = 0
    while budget - ev.num_gradient_evaluations >= num_samples:  # leftover budget: MALA at beta = 1
        x, lp, s, log_h = move(x, lp, s, log_h, 1.0, f"at SMC final MALA step {k}")
        k += 1
    return SamplerOutput(
        samples=x,
        step_sizes=torch.tensor(sizes, dtype=torch.float64),
        num_gradient_evaluations=ev.num_gradient_evaluations,
        num_log_density_evaluations=ev.num_log_density_evaluations,
        acceptance_rate=sum(accepted) / len(accepted) if accepted else None,
        log_Z=log_z,
        effective_sample_size=ess,
    )


@torch.no_grad()
def annealed_importance_sampling(
    target: Any,
    num_samples: int,
    num_steps: int,
    generator: torch.Generator | None = None,
    dim: int | None = None,
    dtype: torch.dtype = torch.float32,
    initial_scale: float = 1.0,
    schedule_power: float = 4.0,
    step_size: float = 0.5,
) -> SamplerOutput:
    """Annealed importance sampling (Neal 2001): ``K = num_steps - 1`` temperatures
    ``beta_k = (k / K)^schedule_power``, one MALA transition for ``pi_beta_k`` after each reweighting by
    ``exp((beta_k - beta_{k-1}) l)``. ``log_Z`` is ``log mean exp`` of the final log weights; the returned
    samples are those weighted particles resampled (systematic) to equal weights."""
    num_samples, num_steps = check_common(num_samples, num_steps, step_size)
    if not (isinstance(schedule_power, (int, float)) and schedule_power > 0):
        raise ValueError(f"schedule_power must be positive, got {schedule_power!r}")
    ev = TargetEvaluator(target, dim)
    needs_log_prob(ev, "AIS")
    ref = GaussianReference(ev.dim, initial_scale)
    x = ref.sample(num_samples, generator, dtype)
    lp, s = ev.evaluate(x, "at the AIS particles drawn from the reference")
    num_levels = num_steps - 1
    betas = (torch.arange(num_levels + 1, dtype=torch.float64) / max(num_levels, 1)) ** schedule_power
    betas[-1] = 1.0
    log_w = torch.zeros(num_samples, dtype=torch.float64)
    log_h, sizes, accepted = math.log(step_size), [], []
    for k in range(1, num_levels + 1):
        beta = float(betas[k])
        log_w += (beta - float(betas[k - 1])) * (lp - ref.log_prob(x)).double()
        where = f"at AIS level {k} (beta={beta:.4g})"
        x, lp, s, acc = mala_transition(ev, x, lp, s, math.exp(log_h), generator, beta, ref, where)
        log_h = float(_adapt(log_h, acc))
        sizes.append(math.exp(log_h))
        accepted.append(float(acc.double().mean()))
    if num_levels == 0:  # one evaluation: plain importance sampling from the reference
        log_w = (lp - ref.log_prob(x)).double()
    idx = systematic_resample(torch.softmax(log_w, 0), num_samples, generator)
    return SamplerOutput(
        samples=x[idx],
        step_sizes=torch.tensor(sizes, dtype=torch.float64),
        num_gradient_evaluations=ev.num_gradient_evaluations,
        num_log_density_evaluations=ev.num_log_density_evaluations,
        acceptance_rate=sum(accepted) / len(accepted) if accepted else None,
        log_Z=log_mean_exp(log_w),
        effective_sample_size=effective_sample_size(log_w),
    )


def communication_barrier_schedule(betas: torch.Tensor, rejection: torch.Tensor) -> torch.Tensor:
    """Syed et al. (2022), Algorithm 4: new temperatures equally spaced in the cumulative swap rejection
    ``Lambda(beta)`` (piecewise linear through ``(beta_i, sum_{j < i} r_j)``); keeps ``beta_0 = 0`` and 1."""
    cumulative = torch.cat(
        [torch.zeros(1, dtype=torch.float64), rejection.double().clamp_min(1e-6).cumsum(0)]
    )
    levels = torch.linspace(0.0, float(cumulative[-1]), betas.numel(), dtype=torch.float64)
    idx = torch.searchsorted(cumulative, levels).clamp(1, betas.numel() - 1)
    lo, hi = cumulative[idx - 1], cumulative[idx]
    frac = ((levels - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1)
    new = betas[idx - 1] + frac * (betas[idx] - betas[idx - 1])
    new[0], new[-1] = 0.0, 1.0
    return torch.cummax(new, 0).values


@torch.no_grad()
def parallel_tempering(
    target: Any,
    num_samples: int,
    num_steps: int,
    generator: torch.Generator | None = None,
    dim: int | None = None,
    dtype: torch.dtype = torch.float32,
    initial_scale: float = 1.0,
    num_replicas: int = 10,
    num_chains: int | None = None,
    burn_in: float = 0.5,
    step_size: float = 0.5,
) -> SamplerOutput:
    """Non-reversible parallel tempering (Syed, Bouchard-Côté, Deligiannidis and Doucet, JRSS-B 2022).

    ``num_chains`` independent PT systems, each with ``num_replicas`` temperatures ``0 = beta_0 < ... <
    beta_{R-1} = 1`` on the geometric path. Each round: the ``beta = 0`` replica is a fresh exact draw from
    ``rho`` (one log-density evaluation), every other replica makes one MALA transition for its ``pi_beta``
    (one gradient evaluation), then adjacent replicas propose to swap states, even pairs on even rounds and
    odd pairs on odd rounds (deterministic even-odd scheme), accepted with probability
    ``min(1, exp((beta_{i+1} - beta_i)(l(x_i) - l(x_{i+1}))))``. During the first ``burn_in`` fraction of the
    rounds, the temperatures are re-spaced after rounds 2, 4, 8, ... to equalise the swap rejection rates
    (:func:`communication_barrier_schedule`) and each replica's MALA step adapts to 0.574 acceptance. The
    samples are the ``beta = 1`` states of the remaining rounds, evenly thinned to ``num_samples``.

    Budget: ``rounds = (num_samples * num_steps - C (R - 1)) // (C R)`` with ``C = num_chains``, ``R =
    num_replicas`` (the first term pays for the starting points); the exact reference draws
    are counted in ``num_log_density_evaluations``, so gradient plus log-density evaluations stay within
    ``num_samples * num_steps``. ``num_chains`` defaults to ``max(1, num_samples // num_replicas)``.
    """
    num_samples, num_steps = check_common(num_samples, num_steps, step_size)
    num_replicas = positive_int("num_replicas", num_replicas)
    if num_replicas < 2:
        raise ValueError(
            f"num_replicas must be at least 2 (the reference and the target), got {num_replicas}"
        )
    chains = positive_int(
        "num_chains", num_chains if num_chains is not None else max(1, num_samples // num_replicas)
    )
    burn_in = float(burn_in)
    if not 0.0 <= burn_in < 1.0:
        raise ValueError(f"burn_in must lie in [0, 1), got {burn_in!r}")
    ev = TargetEvaluator(target, dim)
    needs_log_prob(ev, "parallel tempering")
    ref = GaussianReference(ev.dim, initial_scale)
    # the first evaluation of the chains' starting points, then chains * replicas evaluations per round
    rounds = (num_samples * num_steps - chains * (num_replicas - 1)) // (chains * num_replicas)
    burn_rounds = int(burn_in * rounds)
    if rounds - burn_rounds < 1:
        raise ValueError(
            f"num_steps={num_steps} leaves no round to collect samples with {chains} chains x {num_replicas} "
            "replicas; raise num_steps or lower num_chains"
        )
    r = num_replicas
    betas = torch.logspace(-3, 0, r - 1, dtype=torch.float64)
    betas = torch.cat([torch.zeros(1, dtype=torch.float64), betas])
    # states: (chains, replicas, d); replica 0 is refreshed from rho every round
    x = ref.sample(chains * r, generator, dtype).reshape(chains, r, ev.dim)
    lp, s = ev.evaluate(x[:, 1:].reshape(-1, ev.dim), "at the PT starting points")
    lp_all = torch.empty(chains, r, dtype=dtype)
    s_all = torch.zeros(chains, r, ev.dim, dtype=dtype)
    lp_all[:, 1:], s_all[:, 1:] = lp.reshape(chains, r - 1), s.reshape(chains, r - 1, ev.dim)
    log_h = torch.full((r - 1,), math.log(step_size), dtype=torch.float64)
    swaps_tried = torch.zeros(r - 1, dtype=torch.float64)
    swaps_rejected = torch.zeros(r - 1, dtype=torch.float64)
    kept, sizes, accepted = [], [], []
    next_adapt = 2
    for t in range(rounds):
        fresh = ref.sample(chains, generator, dtype)
        x[:, 0] = fresh
        lp_all[:, 0] = ev.log_prob(fresh)
        ev.check(fresh, lp_all[:, 0], None, f"at the PT reference draws of round {t}", proposal=True)
        hot = x[:, 1:].reshape(-1, ev.dim)
        beta_rows = betas[1:].repeat(chains).to(dtype)
        h_rows = log_h.exp().repeat(chains).to(dtype)
        hot, lp_hot, s_hot, acc = mala_transition(
            ev,
            hot,
            lp_all[:, 1:].reshape(-1),
            s_all[:, 1:].reshape(-1, ev.dim),
            h_rows,
            generator,
            beta_rows,
            ref,
            f"at PT round {t}",
        )
        x[:, 1:] = hot.reshape(chains, r - 1, ev.dim)
        lp_all[:, 1:], s_all[:, 1:] = lp_hot.reshape(chains, r - 1), s_hot.reshape(chains, r - 1, ev.dim)
        acc = acc.reshape(chains, r - 1).double().mean(0)
        accepted.append(float(acc.mean()))
        # deterministic even-odd swaps between replicas i and i + 1
        l_ratio = (lp_all - ref.log_prob(x.reshape(-1, ev.dim)).reshape(chains, r)).double()
        pairs = torch.arange(t % 2, r - 1, 2)
        if pairs.numel():
            log_alpha = (betas[pairs + 1] - betas[pairs]) * (l_ratio[:, pairs] - l_ratio[:, pairs + 1])
            log_alpha = torch.nan_to_num(log_alpha, nan=-torch.inf)
            swap = torch.rand(log_alpha.shape, generator=generator, dtype=torch.float64).log() < log_alpha
            swaps_tried[pairs] += chains
            swaps_rejected[pairs] += (1.0 - log_alpha.clamp_max(0).exp()).sum(0)
            i, j = pairs, pairs + 1
            for tensor in (x, lp_all, s_all):
                a, b = tensor[:, i].clone(), tensor[:, j].clone()
                mask = swap.reshape(chains, -1, *([1] * (tensor.ndim - 2)))
                tensor[:, i] = torch.where(mask, b, a)
                tensor[:, j] = torch.where(mask, a, b)
        if t < burn_rounds:
            log_h += 0.5 * (acc - TARGET_ACCEPTANCE) / (1 + t) ** 0.3
            if t + 1 == next_adapt and (swaps_tried > 0).all():
                betas = communication_barrier_schedule(betas, swaps_rejected / swaps_tried)
                swaps_tried.zero_()
                swaps_rejected.zero_()
                next_adapt *= 2
        else:
            kept.append(x[:, -1].clone())
        sizes.append(float(log_h[-1].exp()))
    states = torch.stack(kept, 1)  # (chains, kept rounds, d)
    per_chain = math.ceil(num_samples / chains)
    pick = torch.linspace(0, states.shape[1] - 1, min(per_chain, states.shape[1])).round().long()
    samples = states[:, pick].reshape(-1, ev.dim)
    if samples.shape[0] < num_samples:  # too few rounds kept: repeat the last ones (reported by the counts)
        samples = samples.repeat(math.ceil(num_samples / samples.shape[0]), 1)
    samples = samples[torch.randperm(samples.shape[0], generator=generator)[:num_samples]]
    return SamplerOutput(
        samples=samples,
        step_sizes=torch.tensor(sizes, dtype=torch.float64),
        num_gradient_evaluations=ev.num_gradient_evaluations,
        num_log_density_evaluations=ev.num_log_density_evaluations,
        acceptance_rate=sum(accepted) / len(accepted) if accepted else None,
    )
