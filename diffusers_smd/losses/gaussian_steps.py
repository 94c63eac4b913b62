"""Pure math of one Gaussian diffusion step (no model, no scheduler object).

Notation: ``alpha_prod_t`` is the cumulative product abar_t of the noise schedule at the current step t and
``alpha_prod_prev`` is abar_s at the previous step s < t of the sampling grid (s = t - 1 on the training
grid, s = t - T/n on an n-step grid; abar_s = 1 when t is the last step, i.e. x_s is the data itself).
All functions broadcast: pass tensors shaped like the sample (e.g. already expanded to (B, 1, ..., 1)).
"""

from __future__ import annotations

import torch

__all__ = [
    "PREDICTION_TYPES",
    "gaussian_posterior_coefficients",
    "gaussian_posterior_mean",
    "noise_from_prediction",
    "original_sample_from_prediction",
    "original_sample_error_scale",
    "scaled_mixture_nll",
]

#: The ``prediction_type`` values of diffusers' DDPM-family schedulers that these functions understand.
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def _check_prediction_type(prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def gaussian_posterior_coefficients(
    alpha_prod_t: torch.Tensor, alpha_prod_prev: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Coefficients of the forward-process posterior q(x_s | x_t, x_0) between two grid steps s < t.

    With alpha_{t|s} = abar_t / abar_s and beta_{t|s} = 1 - alpha_{t|s} (DDPM eq. 6-7, generalised to a
    jump from t to any earlier s):

        q(x_s | x_t, x_0) = N(coef_x0 * x_0 + coef_xt * x_t, variance * I)
        coef_x0  = sqrt(abar_s) * beta_{t|s} / (1 - abar_t)
        coef_xt  = sqrt(alpha_{t|s}) * (1 - abar_s) / (1 - abar_t)
        variance = (1 - abar_s) / (1 - abar_t) * beta_{t|s}

    Returns ``(coef_x0, coef_xt, variance)``. For the last step (abar_s = 1) the variance is 0 and the
    mean is x_0 itself.
    """
    alpha_t_given_s = alpha_prod_t / alpha_prod_prev
    beta_t_given_s = 1.0 - alpha_t_given_s
    coef_x0 = alpha_prod_prev.sqrt() * beta_t_given_s / (1.0 - alpha_prod_t)
    coef_xt = alpha_t_given_s.sqrt() * (1.0 - alpha_prod_prev) / (1.0 - alpha_prod_t)
    variance = (1.0 - alpha_prod_prev) / (1.0 - alpha_prod_t) * beta_t_given_s
    return coef_x0, coef_xt, variance


def gaussian_posterior_mean(
    original_sample: torch.Tensor,
    sample: torch.Tensor,
    alpha_prod_t: torch.Tensor,
    alpha_prod_prev: torch.Tensor,
) -> torch.Tensor:
    """Mean of q(x_s | x_t, x_0) = coef_x0 * x_0 + coef_xt * x_t (see `gaussian_posterior_coefficients`)."""
    coef_x0, coef_xt, _ = gaussian_posterior_coefficients(alpha_prod_t, alpha_prod_prev)
    return coef_x0 * original_sample + coef_xt * sample


def original_sample_from_prediction(
    model_output: torch.Tensor, sample: torch.Tensor, alpha_prod_t: torch.Tensor, prediction_type: str
) -> torch.Tensor:
    """x0_hat from a network prediction of any diffusers ``prediction_type`` (x_t = sqrt(abar) x0 + sqrt(1-abar) eps).

    * ``epsilon``:      x0_hat = (x_t - sqrt(1 - abar_t) * eps_hat) / sqrt(abar_t)
    * ``v_prediction``: x0_hat = sqrt(abar_t) * x_t - sqrt(1 - abar_t) * v_hat   (v = sqrt(abar) eps - sqrt(1-abar) x0)
    * ``sample``:       x0_hat = model_output
    """
    _check_prediction_type(prediction_type)
    if prediction_type == "epsilon":
        return (sample - (1.0 - alpha_prod_t).sqrt() * model_output) / alpha_prod_t.sqrt()
    if prediction_type == "v_prediction":
        return alpha_prod_t.sqrt() * sample - (1.0 - alpha_prod_t).sqrt() * model_output
    return model_output


def noise_from_prediction(
    model_output: torch.Tensor, sample: torch.Tensor, alpha_prod_t: torch.Tensor | float, prediction_type: str
) -> torch.Tensor:
    """eps_hat from a network prediction of any diffusers ``prediction_type`` (x_t = sqrt(abar) x0 + sqrt(1-abar) eps).

    * ``epsilon``:      eps_hat = model_output
    * ``v_prediction``: eps_hat = sqrt(abar_t) * v_hat + sqrt(1 - abar_t) * x_t   (Salimans & Ho 2022)
    * ``sample``:       eps_hat = (x_t - sqrt(abar_t) * x0_hat) / sqrt(1 - abar_t)
    """
    _check_prediction_type(prediction_type)
    if prediction_type == "epsilon":
        return model_output
    alpha_prod_t = torch.as_tensor(alpha_prod_t, dtype=model_output.dtype, device=model_output.device)
    if prediction_type == "v_prediction":
        return alpha_prod_t.sqrt() * model_output + (1.0 - alpha_prod_t).sqrt() * sample
    return (sample - alpha_prod_t.sqrt() * model_output) / (1.0 - alpha_prod_t).sqrt()


def original_sample_error_scale(alpha_prod_t: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """r_t with |x0_hat - x0| = r_t * |prediction - target| at fixed x_t (a linear map, see above).

    epsilon: r = sqrt(1 - abar_t) / sqrt(abar_t); v_prediction: r = sqrt(1 - abar_t); sample: r = 1.
    Dividing an x_0 error by r_t expresses it in the units of the prediction target, so a loss built on
    x_0 errors has the scale of the usual MSE on that target.
    """
    _check_prediction_type(prediction_type)
    if prediction_type == "epsilon":
        return ((1.0 - alpha_prod_t) / alpha_prod_t).sqrt()
    if prediction_type == "v_prediction":
        return (1.0 - alpha_prod_t).sqrt()
    return torch.ones_like(alpha_prod_t)


def scaled_mixture_nll(residual_sq_norms: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """-2 sigma^2 log((1/K) sum_k exp(-q_k / (2 sigma^2))): a K-component equal-weight Gaussian mixture NLL.

    ``residual_sq_norms`` q_k = ||x - mu_k||^2 has shape (B, K); ``variance`` sigma^2 has shape (B,).
    Up to the constant D sigma^2 log(2 pi sigma^2) this is 2 sigma^2 * -log((1/K) sum_k N(x; mu_k, sigma^2 I)),
    i.e. the mixture NLL multiplied by 2 sigma^2, which keeps it finite as sigma -> 0. It is a soft minimum of
    the q_k with temperature 2 sigma^2, computed with logsumexp; where sigma^2 == 0 it is the limit min_k q_k.
    """
    if residual_sq_norms.ndim != 2 or variance.shape != residual_sq_norms.shape[:1]:
        raise ValueError(
            "residual_sq_norms must have shape (B, K) and variance shape (B,), got "
            f"{tuple(residual_sq_norms.shape)} and {tuple(variance.shape)}"
        )
    num_components = residual_sq_norms.shape[1]
    positive = variance > 0
    temperature = torch.where(positive, 2.0 * variance, torch.ones_like(variance))[:, None]
    log_mean = torch.logsumexp(-residual_sq_norms / temperature, dim=1) - torch.log(
        torch.tensor(float(num_components), dtype=residual_sq_norms.dtype, device=residual_sq_norms.device)
    )
    soft = -temperature[:, 0] * log_mean
    return torch.where(positive, soft, residual_sq_norms.min(dim=1).values)
