"""``DilationPathScheduler``: unadjusted Langevin along the dilation path, as a diffusers scheduler."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from .path import (
    SCHEDULE_SHAPES,
    SecantCurvature,
    dilation_path_score,
    lambda_schedule,
    langevin_step,
    rescale_to_target,
    typical_energy_window,
    validate_lambdas,
    within_energy_window,
)

__all__ = [
    "REWEIGHTING_INITIAL_STEP_SIZE",
    "DilationPathDivergenceError",
    "DilationPathScheduler",
    "DilationPathSchedulerOutput",
]

ADAPTATIONS = ("curvature", "none")
STEP_SIZE_SCHEDULES = ("temperature", "geometric")

#: ``initial_step_size`` for a path whose particles the mode-weight extension reweights
#: (``DilationPathPipeline(..., reweight_modes=True)``): ``T_0 = 1 / (1 - s / 2) = 4000`` instead of 50. The
#: extension corrects the modes' masses, so its path only has to visit every mode; a start that hot spreads
#: the particles about ``sqrt(T_0)`` mode widths from the origin before they cool, and reaches modes the
#: default start cannot (MoG-40 in 50-D: 38 to 39 of 40 modes instead of 1). The plain path keeps 1.96: its
#: masses are frozen from the cooling, which a hotter start shortens (measured in ``docs/dilation.md``).
REWEIGHTING_INITIAL_STEP_SIZE = 1.9995


class DilationPathDivergenceError(FloatingPointError):
    """The sampler's state became non-finite; the message names the level, the step and the step size."""


@dataclass
class DilationPathSchedulerOutput(BaseOutput):
    """Output of :meth:`DilationPathScheduler.step`.

    Args:
        prev_sample: the state after the Langevin update, ``(B, d)``.
        step_size: the step size used for each particle, in path coordinates, ``(B,)``.
    """

    prev_sample: torch.Tensor
    step_size: torch.Tensor


class DilationPathScheduler(SchedulerMixin, ConfigMixin):
    """Unadjusted Langevin along the dilation path ``p_lambda = law of sqrt(lambda) X``, ``X ~ pi``.

    ``set_timesteps(K)`` builds levels ``lambda_min = lambda_0 < ... < lambda_{K-1} = 1``;
    ``timesteps`` lists each level ``langevin_steps_per_level`` times (one entry per Langevin step).
    The caller evaluates the target's score at :meth:`scale_model_input` ``= x / sqrt(lambda)`` and
    passes it to :meth:`step`, which applies

        x <- x + h * grad log p_lambda(x) + sqrt(2 h) xi,
        grad log p_lambda(x) = lambda^(-1/2) grad log pi(x / sqrt(lambda))     (path score, exact)

    Step size rule (``step_size_adaptation="curvature"``, per particle):

        h = lambda * min(s(lambda) / c, max_step_size)

    * ``lambda`` (level adaptation): the path's score is ``(L / lambda)``-Lipschitz when the target's is
      ``L``-Lipschitz, so a stable explicit step must shrink like ``lambda / L``.
    * ``c`` (target adaptation): a running estimate of the target's local curvature ``L`` at the
      particle, from the secant of consecutive score evaluations
      (:class:`~diffusers_smd.dilation.path.SecantCurvature`: rises at once, relaxes slowly). It costs no
      extra gradient evaluations, equals ``1 / sigma^2`` on a Gaussian mode and ignores repelling
      directions (between modes), which do not limit stability; so the step is stable on any locally
      quadratic mode whatever its scale, and particles in flat regions take long steps (capped at
      ``max_step_size`` target units) instead of crawling.
    * ``s(lambda)``, the dimensionless step, anneals a temperature. On a Gaussian mode, Langevin with
      ``h = s / c`` has the stationary variance ``T sigma^2`` with ``T = 1 / (1 - s / 2)``: the step sets a
      temperature, from ``T = 1`` (``s -> 0``) to ``T -> inf`` (``s -> 2``, the stability limit). With
      ``step_size_schedule="temperature"`` (default), ``T`` goes geometrically in ``log lambda`` (so,
      on a geometric schedule, geometrically in the level index: simulated annealing's cooling) from
      ``T_0 = 1 / (1 - initial_step_size / 2)`` at ``lambda_min`` (50 at the default 1.96) to
      ``T_1 = 1 / (1 - step_size / 2)`` at ``lambda = 1`` (4/3 at 0.5), and ``s = 2 (1 - 1 / T)``.
      ``"geometric"`` interpolates ``s`` itself geometrically instead, which cools much faster at first.
      ``initial_step_size=None``: constant ``step_size``. With ``reweight_modes=True`` in the pipeline, use
      :data:`REWEIGHTING_INITIAL_STEP_SIZE` (``T_0 = 4000``): the extension needs every mode visited, not
      even masses.

    Why a hot start: in the rescaled coordinate ``y = x / sqrt(lambda)``, Langevin with ``h ∝ lambda`` is
    Langevin on ``pi`` itself, plus the contraction ``y -> sqrt(lambda_k / lambda_{k+1}) y`` at each level
    change; relative to the modes' widths the path alone adds no mixing (the dilation is a change of
    scale). What the path gives is the start at the Dirac at 0 and the levels on which to cool. A hot
    Langevin chain crosses the barriers between modes, which a cold one cannot; its mass per mode is then
    close to that of ``pi^(1 / T)``, which tends to ``pi``'s as ``T`` falls, until the barriers freeze the
    particles in their basins. Cooling slowly (geometrically in ``T``) keeps the chain near that
    equilibrium for longer than cooling ``s``, so the frozen masses are nearer the true weights (measured
    in ``docs/dilation.md``). The final ``s`` leaves the usual ``O(s)`` Langevin bias inside the modes
    (variance x ``T_1``); masses of modes separated by high barriers stay tilted towards equal, which the
    energy window below counters (``reweight_modes`` in the pipeline corrects them exactly).

    The energy window (``energy_window``, default 2; ``None`` turns it off). Annealing alone cannot give the
    true masses: they freeze at about ``w_i^(1/T)`` for the temperature ``T`` at which the barriers stop
    the particles, which at a fixed budget stays well above 1 (on the benchmark's 6-mode ring, half of
    ULA's mode-weight TV needs ``T`` below 1.85, where MALA moves 6 % of the particles to another mode in
    the whole budget, so the masses stay tilted towards equal). So once the path is past the fraction
    ``energy_window_start`` (default 0.3, geometric in ``lambda``, see :meth:`path_fraction`), a particle
    is *cold* and takes the final ``step_size`` (temperature ``T_1``) when both of these hold:

        log pi(y) > M - W       and       |grad log pi(y)|^2 / (2 c) < W,      W = d / 2 + k sqrt(d / 2)

    ``M`` is the highest target log density seen on the path so far, and ``k = energy_window``. ``W`` is the
    mean plus ``k`` standard deviations of a Gaussian mode's own energy below its top (``chi^2_d / 2`` nats
    whatever its covariance; :func:`~diffusers_smd.dilation.path.typical_energy_window`). The second
    condition (on a quadratic mode, ``|grad log pi|^2 / (2 c)`` is the particle's energy below its own
    mode's top) keeps particles that are not yet at a mode hot, including the first steps, when every
    particle is at the origin. Every other particle keeps the level's annealed step. Inside the window the chain samples ``pi`` itself; a particle
    leaves it only by climbing ``W`` nats above the best mode's top. From a lighter mode, whose top lies
    ``log(w_max / w_i)`` nats lower, that climb is shorter, so its particles escape more often, and in 2-D
    a mode's residence time grows like ``exp(W - log(w_max / w_i)) ∝ w_i``. Particles that escape move
    hot and land again. The masses then follow the weights, not ``w^(1/T)``. It costs no evaluation: the
    pipeline passes the log density it evaluates with the score. Targets given only by their score, and
    the mode-weight extension (which corrects the masses by importance weights), run without the window.
    Measured in ``docs/dilation.md`` (ring: mode-weight TV 0.046 against 0.157 without the window).

    With ``step_size_adaptation="none"``, ``c = 1``.

    Args:
        lambda_min: first level, in (0, 1).
        schedule: shape of the levels, one of ``"geometric"``, ``"linear"``, ``"quadratic"``.
        langevin_steps_per_level: Langevin steps at each level.
        step_size: ``h * c / lambda`` at ``lambda = 1`` (dimensionless, in (0, 2) for stability on
            quadratic modes).
        initial_step_size: ``h * c / lambda`` at ``lambda_min`` (``None``: constant ``step_size``); in (0, 2)
            with the temperature schedule.
        step_size_schedule: ``"temperature"`` or ``"geometric"``, how ``s`` goes from ``initial_step_size``
            to ``step_size``.
        step_size_adaptation: ``"curvature"`` or ``"none"``.
        max_step_size: cap of ``h / lambda`` (target units).
        initial_curvature, min_curvature, curvature_momentum: of the running curvature estimate.
        energy_window: ``k`` of the window ``d / 2 + k sqrt(d / 2)`` nats (``None``: no window).
        energy_window_start: path fraction in [0, 1] from which the window applies.
    """

    order = 1

    @register_to_config
    def __init__(
        self,
        lambda_min: float = 1e-2,
        schedule: str = "geometric",
        langevin_steps_per_level: int = 10,
        step_size: float = 0.5,
        step_size_adaptation: str = "curvature",
        max_step_size: float = 4.0,
        initial_curvature: float = 1.0,
        min_curvature: float = 1e-3,
        curvature_momentum: float = 0.9,
        initial_step_size: float | None = 1.96,
        step_size_schedule: str = "temperature",
        energy_window: float | None = 2.0,
        energy_window_start: float = 0.3,
    ):
        if not (0.0 < lambda_min < 1.0):
            raise ValueError(f"lambda_min must lie in (0, 1), got {lambda_min}")
        if schedule not in SCHEDULE_SHAPES:
            raise ValueError(f"schedule must be one of {SCHEDULE_SHAPES}, got {schedule!r}")
        if not isinstance(langevin_steps_per_level, int) or langevin_steps_per_level < 1:
            raise ValueError(
                f"langevin_steps_per_level must be a positive integer, got {langevin_steps_per_level!r}"
            )
        for name, value in (
            ("step_size", step_size),
            ("max_step_size", max_step_size),
            ("initial_curvature", initial_curvature),
            ("min_curvature", min_curvature),
        ):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        if initial_step_size is not None and not (math.isfinite(initial_step_size) and initial_step_size > 0):
            raise ValueError(
                f"initial_step_size must be a positive finite number or None, got {initial_step_size!r}"
            )
        if step_size_schedule not in STEP_SIZE_SCHEDULES:
            raise ValueError(
                f"step_size_schedule must be one of {STEP_SIZE_SCHEDULES}, got {step_size_schedule!r}"
            )
        if step_size_schedule == "temperature":
            for name, value in (("step_size", step_size), ("initial_step_size", initial_step_size)):
                if value is not None and not value < 2:
                    raise ValueError(
                        f"{name} must be below 2 (the stability limit) with step_size_schedule='temperature', "
                        f"got {value!r}"
                    )
        if step_size_adaptation not in ADAPTATIONS:
            raise ValueError(
                f"step_size_adaptation must be one of {ADAPTATIONS}, got {step_size_adaptation!r}"
            )
        if not (0.0 <= curvature_momentum < 1.0):
            raise ValueError(f"curvature_momentum must lie in [0, 1), got {curvature_momentum}")
        if energy_window is not None and not (
            isinstance(energy_window, (int, float)) and math.isfinite(energy_window) and energy_window >= 0
        ):
            raise ValueError(
                f"energy_window must be a non-negative finite number or None, got {energy_window!r}"
            )
        if not (isinstance(energy_window_start, (int, float)) and 0.0 <= energy_window_start <= 1.0):
            raise ValueError(f"energy_window_start must lie in [0, 1], got {energy_window_start!r}")
        self.lambdas: torch.Tensor | None = None
        self.timesteps: torch.Tensor | None = None
        self.num_inference_steps: int | None = None
        self._curvature = SecantCurvature(initial_curvature, min_curvature, curvature_momentum)
        self._last_step: torch.Tensor | None = None
        self._best_log_density: torch.Tensor | None = None
        self._log_density: torch.Tensor | None = None
        self._step_index = 0

    @property
    def step_index(self) -> int:
        """Index of the next Langevin step in ``timesteps``."""
        return self._step_index

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        lambdas: list[float] | torch.Tensor | None = None,
    ) -> None:
        """Build the levels: ``num_inference_steps`` levels of the configured shape, or custom ``lambdas``
        (strictly increasing in (0, 1], ending at 1). Resets the step-size adaptation."""
        if lambdas is not None:
            if num_inference_steps is not None:
                raise ValueError("pass either num_inference_steps or lambdas, not both")
            lam = validate_lambdas(lambdas)
        else:
            if num_inference_steps is None:
                raise ValueError("set_timesteps needs num_inference_steps (the number of levels) or lambdas")
            lam = lambda_schedule(num_inference_steps, self.config.lambda_min, self.config.schedule)
        self.lambdas = lam.to(device=device)
        self.num_inference_steps = lam.numel()
        self.timesteps = lam.repeat_interleave(self.config.langevin_steps_per_level).to(device=device)
        self._curvature.reset()
        self._last_step: torch.Tensor | None = None
        self._best_log_density = None
        self._log_density = None
        self._step_index = 0

    def scale_model_input(
        self, sample: torch.Tensor, timestep: float | torch.Tensor | None = None
    ) -> torch.Tensor:
        """The rescaled point ``x / sqrt(lambda)`` at which the caller evaluates the target's score."""
        lam = self._level(timestep)
        return rescale_to_target(sample, lam)

    def _level(self, timestep: float | torch.Tensor | None) -> float:
        if timestep is None:
            if self.timesteps is None:
                raise ValueError("call set_timesteps before sampling")
            timestep = self.timesteps[min(self._step_index, len(self.timesteps) - 1)]
        lam = float(timestep)
        if not (0.0 < lam <= 1.0):
            raise ValueError(f"timestep is the level lambda and must lie in (0, 1], got {lam}")
        return lam

    def path_fraction(self, lam: float) -> float:
        """Where ``lam`` lies on the path, geometrically: ``u = log(lambda / lambda_min) / log(1 / lambda_min)``,
        clipped to [0, 1] (0 at ``lambda_min``, 1 at ``lambda = 1``)."""
        lam_min = self.config.lambda_min
        return min(1.0, max(0.0, math.log(lam / lam_min) / math.log(1.0 / lam_min)))

    def level_step_size(self, lam: float) -> float:
        """The dimensionless step ``s = h c / lambda`` at level ``lam``: ``step_size``, or, with
        ``initial_step_size``, the interpolation from it (at ``lambda_min``) to ``step_size`` (at 1) that is
        geometric in ``log lambda`` for the temperature ``T = 1 / (1 - s / 2)`` (``"temperature"``) or for
        ``s`` itself (``"geometric"``)."""
        cfg = self.config
        if cfg.initial_step_size is None:
            return cfg.step_size
        u = self.path_fraction(lam)
        if cfg.step_size_schedule == "geometric":
            return cfg.initial_step_size ** (1.0 - u) * cfg.step_size**u
        t0, t1 = 1.0 / (1.0 - cfg.initial_step_size / 2), 1.0 / (1.0 - cfg.step_size / 2)
        return 2.0 * (1.0 - 1.0 / (t0 ** (1.0 - u) * t1**u))

    def update_curvature(self, point: torch.Tensor, target_score: torch.Tensor) -> torch.Tensor:
        """Feed the target's score at ``point`` (target coordinates) to the running curvature estimate;
        returns the per-particle estimate ``(B,)``."""
        return self._curvature.update(point, target_score)

    def _adapt(
        self,
        sample: torch.Tensor,
        target_score: torch.Tensor,
        lam: float,
        log_density: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The step rule: per-particle step sizes (path coordinates) for the current level, after updating the
        curvature estimate; a particle whose last move was unstable (``h c > 2`` along it, see
        :class:`~diffusers_smd.dilation.path.SecantCurvature`) goes back to its previous point and score. With
        ``energy_window`` and the target's ``log_density``, particles within the window of the best log
        density seen on this path take the final ``step_size`` instead of the level's."""
        cfg = self.config
        base = self.level_step_size(lam)
        c = None
        if cfg.step_size_adaptation != "none":
            c = self._curvature.update(rescale_to_target(sample, lam), target_score, self._last_step)
            unstable = self._curvature.unstable
            if unstable.any():
                back = unstable[:, None]
                sample = torch.where(back, self._curvature.point * math.sqrt(lam), sample)
                target_score = torch.where(back, self._curvature.score, target_score)
                if log_density is not None and self._log_density is not None:
                    log_density = torch.where(unstable, self._log_density, log_density)

        def target_step(dimensionless: float) -> torch.Tensor:
            """``h / lambda`` for the dimensionless step: ``min(s / c, max_step_size)``, or ``s`` without ``c``."""
            if c is None:
                return torch.full((sample.shape[0],), dimensionless, dtype=sample.dtype)
            return (dimensionless / c).clamp_max(cfg.max_step_size)

        h_target = target_step(base)
        if (
            cfg.energy_window is not None
            and log_density is not None
            and self.path_fraction(lam) >= cfg.energy_window_start
        ):
            self._log_density = log_density = log_density.to(sample.dtype)
            top = log_density.max()
            best = top if self._best_log_density is None else torch.maximum(self._best_log_density, top)
            self._best_log_density = best
            window = typical_energy_window(sample[0].numel(), cfg.energy_window)
            curvature = torch.ones_like(h_target) if c is None else c
            own_energy = (target_score.flatten(1) ** 2).sum(1) / (2 * curvature)
            cold = within_energy_window(log_density, best, window) & (own_energy < window)
            h_target = torch.where(cold, target_step(min(base, cfg.step_size)), h_target)
        self._last_step = h_target
        return sample, target_score, lam * h_target

    def step_sizes(
        self,
        sample: torch.Tensor,
        target_score: torch.Tensor,
        lam: float,
        log_density: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-particle step sizes (path coordinates) for the current level; updates the curvature estimate
        (and, with ``log_density``, the best log density seen)."""
        return self._adapt(sample, target_score, lam, log_density)[2]

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
        log_density: torch.Tensor | None = None,
    ) -> DilationPathSchedulerOutput | tuple:
        """One Langevin step on ``p_lambda`` (``lambda = timestep``).

        ``model_output`` is the TARGET's score ``grad log pi`` at ``x / sqrt(lambda)`` (see
        :meth:`scale_model_input`), shape ``(B, d)``; ``log_density`` (optional, ``(B,)``) is the target's log
        density at the same points, which the ``energy_window`` rule needs (without it, every particle takes
        the level's step). Raises :class:`DilationPathDivergenceError` if the state becomes non-finite.
        """
        lam = self._level(timestep)
        if model_output.shape != sample.shape:
            raise ValueError(
                f"model_output (the target's score) must have shape {tuple(sample.shape)}, got {tuple(model_output.shape)}"
            )
        if log_density is not None and log_density.shape != sample.shape[:1]:
            raise ValueError(
                f"log_density must have shape {tuple(sample.shape[:1])}, got {tuple(log_density.shape)}"
            )
        sample, model_output, h = self._adapt(sample, model_output, lam, log_density)
        noise = randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
        new = langevin_step(sample, dilation_path_score(model_output, lam), h, noise)
        if not torch.isfinite(new).all():
            bad = ~torch.isfinite(new).all(dim=1)
            k = self.config.langevin_steps_per_level
            reason = (
                "the target's score was NaN/inf"
                if not torch.isfinite(model_output).all()
                else "the update overflowed"
            )
            raise DilationPathDivergenceError(
                f"dilation path diverged at level {self._step_index // k} (lambda={lam:.4g}), Langevin step "
                f"{self._step_index % k} of that level, step size {h[bad].max().item():.4g} "
                f"({int(bad.sum())} of {sample.shape[0]} particles non-finite; {reason}). "
                "Lower step_size or max_step_size, or check the target."
            )
        self._step_index += 1
        if not return_dict:
            return (new, h)
        return DilationPathSchedulerOutput(prev_sample=new, step_size=h)

    def __len__(self) -> int:
        return 0 if self.timesteps is None else len(self.timesteps)
