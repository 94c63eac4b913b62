"""The methods compared, each run at an equal budget of target evaluations per sample.

Every entry maps ``(target, num_samples, budget, generator, reference_scale)`` to a :class:`Run`. The budget
counts gradient evaluations and log-density-only evaluations alike (a log density at the same point as a
gradient is free). ULA, MALA and the annealed geometric path run at their defaults (start ``N(0, I)``), as
the dilation path needs no scale either; SMC, AIS and PT need a reference distribution and get the oracle
``N(0, s^2 I)``, ``s`` the target's root-mean-square coordinate standard deviation (:func:`reference_scale`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from diffusers_smd.dilation import (
    REWEIGHTING_INITIAL_STEP_SIZE,
    DilationPathPipeline,
    DilationPathScheduler,
    annealed_geometric_langevin,
    annealed_importance_sampling,
    mala,
    parallel_tempering,
    sequential_monte_carlo,
    ula,
)

STEPS_PER_LEVEL = 10
METROPOLIS_STEPS = 20  # evaluations per sample of the extension's MALA phase at lambda = 1
IMPORTANCE_PER_SAMPLE = 10  # log-density evaluations per sample of the extension's proposals
DTYPE = torch.float64


@dataclass
class Run:
    samples: torch.Tensor
    evaluations: int  # gradient + log-density-only evaluations, all samples together
    log_Z: float | None = None
    effective_sample_size: float | None = None  # out of the importance draws / particles
    extra: dict = field(default_factory=dict)


def reference_scale(target, num_samples: int = 20000) -> float:
    """Root-mean-square coordinate standard deviation of the target, from exact samples (seed 0)."""
    x = target.sample(num_samples, torch.Generator().manual_seed(0))
    return float(x.var(0).mean().sqrt())


def _from_output(out) -> Run:
    return Run(
        out.samples,
        out.num_gradient_evaluations + out.num_log_density_evaluations,
        out.log_Z,
        out.effective_sample_size,
    )


def dilation(target, n, budget, gen, reweight: bool, **scheduler_config) -> Run:
    """Plain path: the scheduler's defaults, ``budget // 10`` levels of 10 steps. Extension: the hot start
    :data:`~diffusers_smd.dilation.REWEIGHTING_INITIAL_STEP_SIZE` and a shorter path, so that the path, the MALA
    phase and the proposals fit the budget. ``scheduler_config`` overrides the scheduler's settings (the ring
    study's sweep)."""
    spare = METROPOLIS_STEPS + IMPORTANCE_PER_SAMPLE if reweight else 0
    levels = max(1, (budget - spare) // STEPS_PER_LEVEL)
    config = {"initial_step_size": REWEIGHTING_INITIAL_STEP_SIZE} if reweight else {}
    config.update(scheduler_config)
    scheduler = DilationPathScheduler(langevin_steps_per_level=STEPS_PER_LEVEL, **config)
    pipe = DilationPathPipeline(scheduler)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        target,
        n,
        levels,
        gen,
        dtype=DTYPE,
        reweight_modes=reweight,
        metropolis_steps=METROPOLIS_STEPS if reweight else 0,
        num_importance_samples=IMPORTANCE_PER_SAMPLE * n,
    )
    run = Run(out.samples, out.num_gradient_evaluations + out.num_log_density_evaluations)
    if reweight:
        run.log_Z = out.log_Z
        run.effective_sample_size = out.effective_sample_size
        run.extra = {"num_modes_proposed": int(out.mode_weights.numel())}
    return run


def _baseline(fn, uses_reference: bool):
    def run(target, n, budget, gen, scale):
        kwargs = {"initial_scale": scale} if uses_reference else {}
        return _from_output(fn(target, n, budget, gen, dtype=DTYPE, **kwargs))

    return run


METHODS = {
    "ULA": _baseline(ula, False),
    "MALA": _baseline(mala, False),
    "annealed Langevin": _baseline(annealed_geometric_langevin, False),
    "SMC": _baseline(sequential_monte_carlo, True),
    "AIS": _baseline(annealed_importance_sampling, True),
    "PT": _baseline(parallel_tempering, True),
    "dilation (plain)": lambda t, n, b, g, s: dilation(t, n, b, g, reweight=False),
    "dilation + reweighting": lambda t, n, b, g, s: dilation(t, n, b, g, reweight=True),
}
DILATION = ("dilation (plain)", "dilation + reweighting")
BASELINES = tuple(m for m in METHODS if m not in DILATION)
