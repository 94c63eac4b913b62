"""``DilationPathPipeline``: sample an unnormalised density along the dilation path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput

from .baselines import metropolis_adjusted_langevin, positive_int
from .evaluator import NonFiniteTargetError, TargetEvaluator
from .scheduler import DilationPathDivergenceError, DilationPathScheduler
from .weights import importance_resample

__all__ = ["DilationPathPipeline", "DilationPathPipelineOutput"]


@dataclass
class DilationPathPipelineOutput(BaseOutput):
    """Samples and diagnostics of :class:`DilationPathPipeline`.

    Args:
        samples: ``(num_samples, d)`` samples of the target.
        lambdas: the levels used.
        step_sizes: ``(num_steps,)`` median step size (path coordinates) of each Langevin step.
        num_gradient_evaluations: target-score evaluations spent (per point, all particles).
        num_log_density_evaluations: log-density-only evaluations spent.
        mode_weights: with ``reweight_modes=True``, the estimated mass of each mode found, else ``None``.
        mode_centers: with ``reweight_modes=True``, the centre of each mode found, else ``None``.
        effective_sample_size: of the importance weights (``reweight_modes=True``), else ``None``.
        log_Z: with ``reweight_modes=True``, the importance-sampling estimate of the log normalising constant
            of ``exp(log_prob)`` (low by the mass of modes the path never found); the plain path gives none.
    """

    samples: torch.Tensor
    lambdas: torch.Tensor
    step_sizes: torch.Tensor
    num_gradient_evaluations: int
    num_log_density_evaluations: int
    mode_weights: torch.Tensor | None = None
    mode_centers: torch.Tensor | None = None
    effective_sample_size: float | None = None
    log_Z: float | None = None


class DilationPathPipeline(DiffusionPipeline):
    """Langevin sampling along the dilation path ``p_lambda(x) = lambda^(-d/2) pi(x / sqrt(lambda))``.

    No model is trained: the only component is a :class:`DilationPathScheduler`; the target is passed
    at call time. Particles start at the path's origin (the Dirac at 0) and follow unadjusted Langevin
    steps at each level, using ``grad log p_lambda(x) = lambda^(-1/2) grad log pi(x / sqrt(lambda))``.

    ``reweight_modes=True`` adds the mode-weight extension (:mod:`diffusers_smd.dilation.weights`):
    importance resampling from a Gaussian-mixture proposal fitted to the modes the path found, which
    corrects the modes' masses; ``metropolis_steps`` adds a Metropolis-adjusted (MALA) final phase at
    ``lambda = 1`` before it. The plain path (the defaults) is the faithful method.
    """

    model_cpu_offload_seq = ""

    def __init__(self, scheduler: DilationPathScheduler):
        super().__init__()
        self.register_modules(scheduler=scheduler)

    @torch.no_grad()
    def __call__(
        self,
        target: Any,
        num_samples: int = 1000,
        num_inference_steps: int = 50,
        generator: torch.Generator | None = None,
        dim: int | None = None,
        dtype: torch.dtype = torch.float32,
        lambdas: list[float] | torch.Tensor | None = None,
        reweight_modes: bool = False,
        metropolis_steps: int = 0,
        num_importance_samples: int | None = None,
        merge_radius: float = 3.0,
        proposal_inflation: float = 1.1,
        return_dict: bool = True,
    ) -> DilationPathPipelineOutput | tuple:
        """Draw ``num_samples`` samples of ``target``.

        Args:
            target: a callable log density (function or ``torch.nn.Module``, score by autograd), or an
                object with ``log_prob`` and/or ``score``; batched ``(B, d) -> (B,)`` / ``(B, d)``.
            num_samples: number of particles.
            num_inference_steps: number of levels (``scheduler.config.langevin_steps_per_level`` Langevin
                steps each); ignored when ``lambdas`` is given.
            generator: for reproducibility.
            dim: dimension (defaults to ``target.dim``).
            dtype: ``torch.float32`` or ``torch.float64``.
            lambdas: custom levels, strictly increasing in (0, 1], ending at 1.
            reweight_modes: apply the mode-weight extension after the path.
            metropolis_steps: target evaluations of a Metropolis-adjusted (MALA) final phase at ``lambda = 1``
                after the path, which removes the Langevin bias inside the modes (0: none, the plain method).
            num_importance_samples: proposal draws of the extension (default ``20 * num_samples``).
            merge_radius, proposal_inflation: of the extension (see ``importance_resample``).
        """
        num_samples = positive_int("num_samples", num_samples)
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        evaluator = TargetEvaluator(target, dim)
        if reweight_modes and not evaluator.has_log_prob:
            raise ValueError("reweight_modes=True needs the target's log density (log_prob or a callable)")
        num_importance = 20 * num_samples if num_importance_samples is None else num_importance_samples
        if reweight_modes:
            num_importance = positive_int("num_importance_samples", num_importance)
        if metropolis_steps != 0:
            try:
                metropolis_steps = positive_int("metropolis_steps", metropolis_steps)
            except ValueError:
                raise ValueError(
                    f"metropolis_steps must be a non-negative integer, got {metropolis_steps!r}"
                ) from None
        if metropolis_steps and not evaluator.has_log_prob:
            raise ValueError("metropolis_steps > 0 needs the target's log density (log_prob or a callable)")
        scheduler = self.scheduler
        if lambdas is not None:
            scheduler.set_timesteps(lambdas=lambdas)
        else:
            scheduler.set_timesteps(num_inference_steps)

        x = torch.zeros(num_samples, evaluator.dim, dtype=dtype)  # the path starts at the Dirac at 0
        step_sizes = []
        per_level = scheduler.config.langevin_steps_per_level
        for i, t in enumerate(self.progress_bar(scheduler.timesteps)):
            y = scheduler.scale_model_input(x, t)
            # every value is checked: a NaN/inf log density or score anywhere on the path raises
            where = (
                f"at level {i // per_level} of {scheduler.num_inference_steps} (lambda={float(t):.4g}), "
                f"Langevin step {i % per_level}"
            )
            lp, score = evaluator.log_prob_and_score(y)
            try:
                evaluator.check(y, lp, score, where)
            except NonFiniteTargetError as err:
                if err.only_zero_density and step_sizes:  # particles stepped out of the support: divergence
                    bad = int((lp == -torch.inf).sum())
                    raise DilationPathDivergenceError(
                        f"dilation path diverged {where} (previous median step size {float(step_sizes[-1]):.4g}):"
                        f" {bad} of {num_samples} particles reached points where the target's log density is "
                        "-inf. Lower step_size or max_step_size, or check the target's support."
                    ) from err
                raise
            # the energy window corrects the plain path's masses; the extension corrects them by reweighting
            out = scheduler.step(score, t, x, generator=generator, log_density=None if reweight_modes else lp)
            x = out.prev_sample
            step_sizes.append(out.step_size.median())

        result = dict(
            samples=x,
            lambdas=scheduler.lambdas.clone(),
            step_sizes=torch.stack(step_sizes),
            mode_weights=None,
            mode_centers=None,
            effective_sample_size=None,
            log_Z=None,
        )
        score = None
        if metropolis_steps:
            # start each chain at the step the path ended with, h * c / lambda = step_size at lambda = 1
            x, score, mala_sizes, _ = metropolis_adjusted_langevin(
                evaluator, x, metropolis_steps, generator, out.step_size
            )
            result.update(samples=x, step_sizes=torch.cat([result["step_sizes"], mala_sizes]))
        if reweight_modes:
            score = evaluator.checked_score(x, "at the path's end") if score is None else score
            curvature = scheduler.update_curvature(x, score)
            rw = importance_resample(
                evaluator, x, score, curvature, num_importance, generator, merge_radius, proposal_inflation
            )
            result.update(
                samples=rw.samples,
                mode_weights=rw.cluster_weights,
                mode_centers=rw.cluster_means,
                effective_sample_size=rw.effective_sample_size,
                log_Z=rw.log_Z,
            )
        result.update(
            num_gradient_evaluations=evaluator.num_gradient_evaluations,
            num_log_density_evaluations=evaluator.num_log_density_evaluations,
        )
        self.maybe_free_model_hooks()
        if not return_dict:
            return (result["samples"],)
        return DilationPathPipelineOutput(**result)
