"""Sampling metrics: mode-weight total variation and sliced Wasserstein-2."""

from __future__ import annotations

import torch

__all__ = ["mode_weight_tv", "sliced_wasserstein2"]


def mode_weight_tv(estimated: torch.Tensor, true: torch.Tensor) -> float:
    """Total variation ``(1/2) sum_i |w_hat_i - w_i|`` between two weight vectors over the same modes."""
    estimated, true = (
        torch.as_tensor(estimated, dtype=torch.float64),
        torch.as_tensor(true, dtype=torch.float64),
    )
    if estimated.shape != true.shape:
        raise ValueError(
            f"weight vectors must have the same shape, got {tuple(estimated.shape)} and {tuple(true.shape)}"
        )
    return float(0.5 * (estimated - true).abs().sum())


def sliced_wasserstein2(
    x: torch.Tensor, y: torch.Tensor, num_projections: int = 256, generator: torch.Generator | None = None
) -> float:
    """Sliced Wasserstein-2: ``sqrt(E_theta W2^2(theta.x, theta.y))`` over random unit directions ``theta``;
    each 1-D ``W2`` between the empirical laws by matching quantiles (equal sizes: sorted values)."""
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(
            f"x and y must be (n, d) and (m, d) with the same d, got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    d = x.shape[1]
    theta = torch.randn(d, num_projections, generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    px, py = (x.double() @ theta).sort(0).values, (y.double() @ theta).sort(0).values
    n = max(px.shape[0], py.shape[0])
    q = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    ix = (q * px.shape[0]).long().clamp_max(px.shape[0] - 1)
    iy = (q * py.shape[0]).long().clamp_max(py.shape[0] - 1)
    return float(((px[ix] - py[iy]) ** 2).mean().sqrt())
