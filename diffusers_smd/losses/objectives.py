"""Training objectives: callables ``objective(model, noise_scheduler, clean_batch, conditioning, *, generator)``.

Each returns the per-example loss, shape (B,), so a training loop can weight, mask or average it and does not
need to know which objective it runs. ``noise_scheduler`` is a DDPM-family diffusers scheduler (it needs
``alphas_cumprod``, ``add_noise`` and, for v-prediction, ``get_velocity``); its ``config.prediction_type``
picks the target. With an E-TSDM scheduler the network is conditioned on ``condition_timesteps(t)`` while
x_t and the target use the real t.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, ClassVar

import torch
from diffusers.training_utils import compute_snr
from diffusers.utils.torch_utils import randn_tensor

from ..models.introspection import accepts_mixture_noise
from .gaussian_steps import (
    PREDICTION_TYPES,
    gaussian_posterior_coefficients,
    original_sample_error_scale,
    original_sample_from_prediction,
    scaled_mixture_nll,
)

__all__ = [
    "OBJECTIVES",
    "OBJECTIVE_NAMES",
    "BoundObjective",
    "DiffusionObjective",
    "SMDMixtureObjective",
    "SMDObjective",
    "VanillaObjective",
    "build_objective",
    "check_training_batch",
    "training_timestep_grid",
]

_RESERVED_CONDITIONING_KEYS = ("sample", "timestep", "return_dict", "mixture_noise", "generator")


def training_timestep_grid(
    noise_scheduler: Any, num_inference_steps: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The (timesteps, previous_timesteps) pairs an objective trains on, both descending long tensors.

    ``num_inference_steps=None``: every training timestep t = T-1, ..., 0 with previous step t - 1 (the
    training grid). ``num_inference_steps=n``: only the n timesteps that ``noise_scheduler.set_timesteps(n)``
    samples with (on a copy, so the caller's scheduler is untouched), each paired with the next grid step
    (t - T/n for the default "leading" spacing). The last step's previous timestep is -1 (x_{-1} = x_0).
    """
    num_train_timesteps = int(noise_scheduler.config.num_train_timesteps)
    if num_inference_steps is None:
        timesteps = torch.arange(num_train_timesteps - 1, -1, -1, dtype=torch.long)
    else:
        grid_scheduler = type(noise_scheduler).from_config(noise_scheduler.config)
        grid_scheduler.set_timesteps(num_inference_steps)
        # E-TSDM schedulers expose condition timesteps as `timesteps` and the real grid as `true_timesteps`
        real_grid = getattr(grid_scheduler, "true_timesteps", grid_scheduler.timesteps)
        timesteps = torch.as_tensor(real_grid, dtype=torch.long).flatten()
        if timesteps.numel() == 0 or bool((timesteps[1:] >= timesteps[:-1]).any()):
            raise ValueError(
                f"num_inference_steps={num_inference_steps} gives a timestep grid that is not strictly "
                f"decreasing for {type(noise_scheduler).__name__}: {timesteps.tolist()}"
            )
    previous = torch.cat([timesteps[1:], torch.tensor([-1], dtype=torch.long)])
    return timesteps, previous


def _alpha_prod(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """abar_t for each timestep (float32), with abar = 1 for t < 0 (the data itself)."""
    values = alphas_cumprod[timesteps.clamp(min=0)]
    return torch.where(timesteps >= 0, values, torch.ones_like(values))


def _expand_like(values: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    return values.reshape(values.shape[0], *([1] * (reference.ndim - 1)))


def _per_example_mean(values: torch.Tensor) -> torch.Tensor:
    return values.reshape(values.shape[0], -1).mean(dim=1)


def _repeat_examples(value: Any, k: int, batch: int) -> Any:
    """``value`` with every per-example tensor (first dim ``batch``) repeated ``k`` times along it; dicts
    (e.g. SDXL's ``added_cond_kwargs``) recursively, anything else unchanged."""
    if isinstance(value, dict):
        return {key: _repeat_examples(item, k, batch) for key, item in value.items()}
    if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == batch:
        return torch.cat([value] * k)
    return value


def _check_model_and_scheduler(model: Any, noise_scheduler: Any) -> None:
    if not callable(model):
        raise TypeError(f"model must be a callable torch module, got {type(model).__name__}")
    for attribute in ("alphas_cumprod", "add_noise", "config"):
        if not hasattr(noise_scheduler, attribute):
            raise TypeError(
                f"noise_scheduler must be a DDPM-family diffusers scheduler with `{attribute}` "
                f"(e.g. DDPMScheduler), got {type(noise_scheduler).__name__}"
            )
    prediction_type = noise_scheduler.config.prediction_type
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"noise_scheduler.config.prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}"
        )


def check_training_batch(clean_batch: Any, conditioning: Any) -> None:
    """Raise unless ``clean_batch`` is a float (B, ...) tensor and ``conditioning`` a dict of extra model arguments.

    Training loops call it once, on their first batch; :meth:`DiffusionObjective.__call__` on every call.
    """
    if (
        not isinstance(clean_batch, torch.Tensor)
        or clean_batch.ndim < 2
        or not clean_batch.is_floating_point()
    ):
        raise TypeError("clean_batch must be a floating-point tensor of shape (B, ...) with B >= 1")
    if clean_batch.shape[0] < 1:
        raise ValueError("clean_batch must hold at least one example")
    if conditioning is not None:
        if not isinstance(conditioning, dict):
            raise TypeError(
                f"conditioning must be a dict of extra model arguments or None, got {type(conditioning).__name__}"
            )
        reserved = sorted(set(conditioning) & set(_RESERVED_CONDITIONING_KEYS))
        if reserved:
            raise ValueError(f"conditioning must not contain {reserved}; the objective sets these itself")


class BoundObjective:
    """An objective bound to one model and one noise scheduler: every check and lookup is done once, here.

    Calling it, ``bound(clean_batch, conditioning=None, *, generator=None)``, runs only the loss: the
    timestep grid, its E-TSDM condition timesteps f(t), abar_t and whether the model takes SMD mixture
    noise are computed at binding time. Training loops bind once before the first step.
    """

    def __init__(self, objective: DiffusionObjective, model: Any, noise_scheduler: Any):
        _check_model_and_scheduler(model, noise_scheduler)
        objective._check_model(model)
        self.objective = objective
        self.model = model
        self.noise_scheduler = noise_scheduler
        self.prediction_type = noise_scheduler.config.prediction_type
        self.timesteps, self.previous = training_timestep_grid(noise_scheduler, objective.num_inference_steps)
        # E-TSDM: the network is conditioned on f(t); the rule is applied to the whole grid once.
        condition = getattr(noise_scheduler, "condition_timesteps", None)
        self.condition_timesteps = (
            torch.as_tensor(condition(self.timesteps)) if condition is not None else self.timesteps
        )
        self.alphas_cumprod = noise_scheduler.alphas_cumprod.to(dtype=torch.float32)
        self.takes_mixture_noise = accepts_mixture_noise(model)
        self._devices: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    def _on_device(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        if device not in self._devices:
            self._devices[device] = (
                self.timesteps.to(device),
                self.previous.to(device),
                self.condition_timesteps.to(device),
                self.alphas_cumprod.to(device),
            )
        return self._devices[device]

    def __call__(
        self,
        clean_batch: torch.Tensor,
        conditioning: dict | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Per-example loss, shape (B,)."""
        objective = self.objective
        timesteps_grid, previous_grid, condition_grid, alphas_cumprod = self._on_device(clean_batch.device)
        generator_device = generator.device if generator is not None else torch.device("cpu")
        index = torch.randint(
            0, timesteps_grid.numel(), (clean_batch.shape[0],), generator=generator, device=generator_device
        ).to(clean_batch.device)
        timesteps, previous = timesteps_grid[index], previous_grid[index]
        model_timesteps = condition_grid[index]
        noise = randn_tensor(
            clean_batch.shape, generator=generator, device=clean_batch.device, dtype=clean_batch.dtype
        )
        if objective.noise_offset:
            # Offset noise (Guttenberg 2023), as diffusers' training examples add it: a per-channel constant.
            noise = noise + objective.noise_offset * randn_tensor(
                (*clean_batch.shape[:2], *([1] * (clean_batch.ndim - 2))),
                generator=generator,
                device=clean_batch.device,
                dtype=clean_batch.dtype,
            )
        noisy = self.noise_scheduler.add_noise(clean_batch, noise, timesteps)
        mixture_kwargs = (
            {"generator": generator} if generator is not None and self.takes_mixture_noise else {}
        )
        draws = _Draws(timesteps, previous, model_timesteps, noise, noisy, alphas_cumprod, mixture_kwargs)
        loss = objective._loss(self, clean_batch, conditioning, generator, draws)
        if objective.snr_gamma is None:
            return loss
        return loss * objective._snr_weight(self.noise_scheduler, timesteps).to(loss.dtype)

    # -- pieces the objectives share --------------------------------------------------------------------
    def predict(self, noisy: torch.Tensor, model_timesteps: torch.Tensor, conditioning, mixture_kwargs):
        output = self.model(noisy, model_timesteps, **(conditioning or {}), **mixture_kwargs)
        prediction = output.sample if hasattr(output, "sample") else output[0]
        if prediction.shape != noisy.shape:
            raise ValueError(
                f"the model's output has shape {tuple(prediction.shape)} but the objective needs the shape of "
                f"the noisy input {tuple(noisy.shape)} (learned-variance outputs are not supported)"
            )
        return prediction

    def target(self, clean_batch: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "v_prediction":
            return self.noise_scheduler.get_velocity(clean_batch, noise, timesteps)
        return clean_batch


@dataclass(frozen=True)
class _Draws:
    """What one call drew: timesteps t, previous grid steps s, condition f(t), eps, x_t, abar, SMD kwargs."""

    timesteps: torch.Tensor
    previous: torch.Tensor
    model_timesteps: torch.Tensor
    noise: torch.Tensor
    noisy: torch.Tensor
    alphas_cumprod: torch.Tensor
    mixture_kwargs: dict


class DiffusionObjective:
    """Shared steps of every objective: draw t (and the previous grid step), noise, x_t; call the model.

    Class attributes declare what an objective is: ``name`` (its registry key), ``needs_mixture_model``
    (True: the model must be an SMD model taking ``mixture_noise``) and ``description`` (one line for help
    texts and model cards).

    Args:
        snr_gamma: if set, min-SNR-gamma weighting (Hang et al. 2023) of the per-example loss, computed with
            `diffusers.training_utils.compute_snr` exactly as diffusers' training examples do:
            weight = min(snr, gamma) / snr (epsilon), / (snr + 1) (v_prediction), unchanged (sample).
        num_inference_steps: draw t only from the n-step sampling grid (see `training_timestep_grid`);
            None draws from all training timesteps.
        noise_offset: offset noise: eps + noise_offset * n with n ~ N(0, 1) per example and channel
            (constant over the other dimensions), as ``--noise_offset`` of diffusers' training examples;
            0 draws plain eps.
    """

    name: ClassVar[str] = "base"
    needs_mixture_model: ClassVar[bool] = False
    #: Whether min-SNR weighting (``snr_gamma``) applies to this objective's loss.
    supports_snr_gamma: ClassVar[bool] = True
    description: ClassVar[str] = ""

    def __init__(
        self,
        snr_gamma: float | None = None,
        num_inference_steps: int | None = None,
        noise_offset: float = 0.0,
    ):
        if (
            isinstance(noise_offset, bool)
            or not isinstance(noise_offset, Real)
            or not 0 <= noise_offset < math.inf
        ):
            raise ValueError(f"noise_offset must be a finite number >= 0, got {noise_offset!r}")
        self.noise_offset = float(noise_offset)
        if snr_gamma is not None and (isinstance(snr_gamma, bool) or not float(snr_gamma) > 0):
            raise ValueError(f"snr_gamma must be None or a positive number, got {snr_gamma!r}")
        if snr_gamma is not None and not self.supports_snr_gamma:
            raise ValueError(
                f"snr_gamma does not apply to objective {self.name!r} (min-SNR weighting is for MSE losses)"
            )
        if num_inference_steps is not None and (
            isinstance(num_inference_steps, bool)
            or not isinstance(num_inference_steps, Integral)
            or num_inference_steps < 1
        ):
            raise ValueError(f"num_inference_steps must be None or an int >= 1, got {num_inference_steps!r}")
        self.snr_gamma = None if snr_gamma is None else float(snr_gamma)
        self.num_inference_steps = None if num_inference_steps is None else int(num_inference_steps)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(snr_gamma={self.snr_gamma}, num_inference_steps={self.num_inference_steps})"

    def bind(self, model: Any, noise_scheduler: Any) -> BoundObjective:
        """Check ``model`` and ``noise_scheduler`` once and return the fast per-step callable."""
        return BoundObjective(self, model, noise_scheduler)

    def __call__(
        self,
        model: Any,
        noise_scheduler: Any,
        clean_batch: torch.Tensor,
        conditioning: dict | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Per-example loss of one batch, shape (B,); checks everything (training loops use :meth:`bind`)."""
        bound = self.bind(model, noise_scheduler)
        check_training_batch(clean_batch, conditioning)
        return bound(clean_batch, conditioning, generator=generator)

    def _check_model(self, model: Any) -> None:
        if self.needs_mixture_model and not accepts_mixture_noise(model):
            raise TypeError(
                f"objective {self.name!r} needs an SMD model whose forward accepts `mixture_noise` and "
                f"`generator` (SMDUNet2DModel, SMDUNet2DConditionModel, SMDVectorModel), got {type(model).__name__}"
            )

    def _snr_weight(self, noise_scheduler, timesteps: torch.Tensor) -> torch.Tensor:
        snr = compute_snr(noise_scheduler, timesteps)
        weight = torch.clamp(snr, max=self.snr_gamma)
        prediction_type = noise_scheduler.config.prediction_type
        if prediction_type == "epsilon":
            weight = weight / snr
        elif prediction_type == "v_prediction":
            weight = weight / (snr + 1)
        return weight

    def _loss(
        self, bound: BoundObjective, clean_batch, conditioning, generator, draws: _Draws
    ) -> torch.Tensor:
        raise NotImplementedError


class VanillaObjective(DiffusionObjective):
    """The standard diffusers objective: per-example MSE(model(x_t, t), target).

    target = eps (``epsilon``), v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 (``v_prediction``, via
    ``scheduler.get_velocity``) or x_0 (``sample``), per ``noise_scheduler.config.prediction_type``; optional
    min-SNR weighting (``snr_gamma``). On an SMD model it calls the model like a plain UNet, which draws a
    fresh eta per example: that is exactly the reference SMD objective (see `SMDObjective`).
    """

    name = "vanilla"
    description = "the standard DDPM objective: MSE between the network's prediction and its target"

    def _loss(
        self, bound: BoundObjective, clean_batch, conditioning, generator, draws: _Draws
    ) -> torch.Tensor:
        prediction = bound.predict(draws.noisy, draws.model_timesteps, conditioning, draws.mixture_kwargs)
        target = bound.target(clean_batch, draws.noise, draws.timesteps)
        return _per_example_mean((prediction.float() - target.float()) ** 2)


class SMDObjective(VanillaObjective):
    """The reference SMD objective (Li et al., ICLR 2024): MSE through the identifier with one eta per example.

    loss = || model(x_t, t; z = g_xi(x_t, eta, t)) - target ||^2 / D, eta ~ N(0, I) drawn once per example
    (by the model, from ``generator`` when given). By Jensen this upper-bounds the mixture NLL; note that its
    optimum makes every component the ordinary posterior mean (see the notes), so it cannot learn a real
    mixture. Needs a model whose forward takes ``mixture_noise``/``generator`` (an SMD model).
    """

    name = "smd"
    needs_mixture_model = True
    description = "the Soft Mixture Denoising (SMD) objective: the MSE through the mixture identifier, one eta per example"


class SMDMixtureObjective(SMDObjective):
    r"""K-sample mixture likelihood of the backward step, whose optimum is a real mixture.

    For a training pair (t, s) of the step grid (s = previous grid step, see `training_timestep_grid`;
    s = -1 means the last step, whose target is x_0 itself), K components share x_t and differ in eta_k:

        x0_hat_k = x_0 prediction of model(x_t, t; eta_k),    mu_k = c_t x0_hat_k + d_t x_t
        x_s      = c_t x_0 + d_t x_t + sigma_t xi,  xi ~ N(0, I)     (a draw of q(x_s | x_t, x_0))
        NLL      = -log( (1/K) sum_k N(x_s; mu_k, sigma_t^2 I) )                     (eq. 1)

    with c_t, d_t, sigma_t^2 the posterior coefficients of `gaussian_posterior_coefficients` (so
    x_s - mu_k = c_t (x_0 - x0_hat_k) + sigma_t xi: a soft minimum over components of their x_0 errors with
    temperature 2 sigma_t^2 / c_t^2). The returned per-example loss is eq. 1 rescaled to the units of the
    usual MSE on the prediction target (r_t from `original_sample_error_scale`, D = numel per example):

        loss = [ 2 sigma_t^2 (NLL - const) - sigma_t^2 ||xi||^2 ] / (D c_t^2 r_t^2)               (eq. 2)

    where 2 sigma_t^2 (NLL - const) = `scaled_mixture_nll`. Multiplying by the constant 2 sigma_t^2 / (D c_t^2 r_t^2)
    and subtracting the theta-free sigma_t^2 ||xi||^2 term change no gradient direction per t; they make the
    K = 1 case equal, in expectation over xi, the vanilla MSE on the target, and keep the loss finite on the
    last step, where sigma_t = 0 and eq. 2 becomes its limit min_k ||x0_hat_k - x_0||^2 / (D r_t^2): the
    best of K components reconstructs x_0 (winner-takes-all). With small K that term rewards some hedging
    between modes (a sample between two modes is never far from either), and on fine grids the sampled xi
    makes the gradient much noisier than the MSE (sigma_t / c_t is large for small jumps); the mixture toy
    benchmark measures both effects.

    Step grid: with few-step sampling, train on the grid you sample with: either a scheduler with
    num_train_timesteps = n (previous step t - 1), or ``num_inference_steps=n`` with a fine training schedule
    (previous step t - T/n). The mixture must model the jump the sampler makes, and q(x_s | x_t) is far from
    Gaussian only for large jumps.

    ``posterior_noise=False`` replaces the draw x_s by its mean c_t x_0 + d_t x_t (xi = 0): eq. 2 is then the
    deterministic soft minimum over components of ||x0_hat_k - x_0||^2 / (D r_t^2) with temperature
    2 sigma_t^2 / (c_t^2 r_t^2), no longer the exact bound, but with far less gradient noise on fine grids.

    Args:
        num_mixture_samples: K, the number of eta draws per example (the model runs on a K*B batch).
        posterior_noise: draw x_s from q(x_s | x_t, x_0) (True, eq. 1 exactly) or use its mean (False).
        snr_gamma, num_inference_steps, noise_offset: as in `DiffusionObjective`.
    """

    name = "smd-mixture"
    supports_snr_gamma = False  # its per-step likelihood already weights each step; see the class docstring
    description = (
        "the K-sample mixture likelihood of each backward step (smd-mixture), whose optimum is a real mixture"
    )

    def __init__(
        self,
        num_mixture_samples: int = 4,
        posterior_noise: bool = True,
        snr_gamma: float | None = None,
        num_inference_steps: int | None = None,
        noise_offset: float = 0.0,
    ):
        super().__init__(
            snr_gamma=snr_gamma, num_inference_steps=num_inference_steps, noise_offset=noise_offset
        )
        if not isinstance(posterior_noise, bool):
            raise TypeError(f"posterior_noise must be True or False, got {posterior_noise!r}")
        self.posterior_noise = posterior_noise
        if (
            isinstance(num_mixture_samples, bool)
            or not isinstance(num_mixture_samples, int)
            or num_mixture_samples < 1
        ):
            raise ValueError(f"num_mixture_samples must be an int >= 1, got {num_mixture_samples!r}")
        self.num_mixture_samples = num_mixture_samples

    def __repr__(self) -> str:
        return (
            f"{super().__repr__()[:-1]}, num_mixture_samples={self.num_mixture_samples}, "
            f"posterior_noise={self.posterior_noise})"
        )

    def _loss(
        self, bound: BoundObjective, clean_batch, conditioning, generator, draws: _Draws
    ) -> torch.Tensor:
        k, batch = self.num_mixture_samples, clean_batch.shape[0]
        repeated_conditioning = _repeat_examples(conditioning or {}, k, batch)
        predictions = bound.predict(
            torch.cat([draws.noisy] * k), torch.cat([draws.model_timesteps.reshape(-1).expand(batch)] * k),
            repeated_conditioning, draws.mixture_kwargs,
        ).float().reshape(k, *clean_batch.shape)  # fmt: skip

        prediction_type = bound.prediction_type
        alpha_prod_t = _expand_like(_alpha_prod(draws.alphas_cumprod, draws.timesteps), clean_batch)
        alpha_prod_prev = _expand_like(_alpha_prod(draws.alphas_cumprod, draws.previous), clean_batch)
        coef_x0, _, variance = gaussian_posterior_coefficients(alpha_prod_t, alpha_prod_prev)
        original = original_sample_from_prediction(
            predictions, draws.noisy.float(), alpha_prod_t, prediction_type
        )
        if self.posterior_noise:
            posterior_noise = randn_tensor(
                clean_batch.shape, generator=generator, device=clean_batch.device, dtype=torch.float32
            )
        else:
            posterior_noise = torch.zeros(clean_batch.shape, device=clean_batch.device, dtype=torch.float32)
        # x_s - mu_k = c_t (x_0 - x0_hat_k) + sigma_t xi  (the d_t x_t terms cancel)
        residuals = coef_x0 * (clean_batch.float() - original) + variance.sqrt() * posterior_noise
        residual_sq_norms = residuals.reshape(k, batch, -1).pow(2).sum(dim=2).transpose(0, 1)  # (B, K)
        variance_b = variance.reshape(batch)
        baseline = variance_b * posterior_noise.reshape(batch, -1).pow(2).sum(dim=1)
        num_dims = residuals[0, 0].numel()
        scale = (coef_x0 * original_sample_error_scale(alpha_prod_t, prediction_type)).reshape(
            batch
        ) ** 2 * num_dims
        return (scaled_mixture_nll(residual_sq_norms, variance_b) - baseline) / scale


#: The objective registry: name -> class. The ONE list of objective names; the CLI's choices, the training
#: configuration and the model card read it from here.
OBJECTIVES: dict[str, type[DiffusionObjective]] = {
    cls.name: cls for cls in (VanillaObjective, SMDObjective, SMDMixtureObjective)
}
OBJECTIVE_NAMES: tuple[str, ...] = tuple(OBJECTIVES)


def build_objective(name: str, **kwargs: Any) -> DiffusionObjective:
    """The objective called ``name`` (one of :data:`OBJECTIVE_NAMES`), built with ``kwargs``.

    kwargs: ``snr_gamma`` and ``num_inference_steps`` (all three); ``num_mixture_samples`` (smd-mixture,
    default 4) and ``posterior_noise`` (smd-mixture, default True). Unknown names raise ValueError; arguments an
    objective does not take raise TypeError.
    """
    if name not in OBJECTIVES:
        raise ValueError(f"objective name must be one of {OBJECTIVE_NAMES}, got {name!r}")
    objective_class = OBJECTIVES[name]
    accepted = set(inspect.signature(objective_class.__init__).parameters) - {"self"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise TypeError(f"objective {name!r} does not take {unknown}; it accepts {sorted(accepted)}")
    return objective_class(**kwargs)
