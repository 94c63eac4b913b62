"""The benchmark's standard targets, each defined exactly (construction, seed, scale).

Every definition below is a fixed instance: the seed builds the target, and a benchmark seed only changes
the samplers' randomness and the exact reference samples. All are plain callables (the log density) with
``dim``, ``score``, ``sample`` (exact) and ``log_Z``.

=================  ====  =================================================================================
name               dim   definition
=================  ====  =================================================================================
``mog40_2d``       2     40 equal-weight components ``N(m_i, I)``; means uniform in ``[-40, 40]^2``
``mog40_50d``      50    the same in 50-D (means uniform in ``[-40, 40]^50``)
``funnel_10d``     10    Neal's funnel: ``v ~ N(0, 3^2)``, ``x_1..x_9 | v ~ N(0, e^v)``
``many_well_32d``  32    FAB's many-well: 16 double wells ``-x^4 + 6 x^2 + x / 2``, ``-y^2 / 2``; 65536 modes
``grid7x7_2d``     2     7x7 grid of ``N(m_i, I)``, spacing 10, weights ``1 + 9 U(0, 1)`` (seed 1000)
``ring6_2d``       2     6 components ``N(m_k, I)``, means on the circle of radius 10 at angles ``k pi / 3``,
                         weights proportional to ``k + 1`` (``k = 0..5``)
``mog10d``         10    ``K`` in 2..8 components ``N(m_i, I)``, means ``N(0, 5^2 I)``, weights ``1 + 9 U(0, 1)``
                         (seed 1000: 8 components)
``mog50d``         50    the same with means ``N(0, 3^2 I)`` (seed 1000)
=================  ====  =================================================================================

MoG-40 follows the "Beyond ELBOs" definition (Blessing et al., ICML 2024, ``GMM40``: means uniform in
``[-40, 40]^d``, unit scale, equal weights). Its means are drawn exactly as FAB's ``GMM`` draws them with
``torch.manual_seed(0)``: ``(torch.rand(40, d) - 0.5) * 2 * 40`` in float32. FAB scales its components by
``softplus(log_var_scaling)`` (0.74 or 1.31), and "Beyond ELBOs" draws its means with JAX's generator, so the
instance here equals neither codebase's; numbers are comparable in definition, not per instance.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .targets import GaussianMixture, ManyWell, NealsFunnel

__all__ = ["STANDARD_TARGETS", "UNEQUAL_WEIGHT_MIXTURES", "make_standard_target"]


def mog40(dim: int = 2) -> GaussianMixture:
    """40 equal-weight unit-covariance components, means uniform in ``[-40, 40]^dim`` (FAB's draw, seed 0)."""
    gen = torch.Generator().manual_seed(0)
    means = (torch.rand(40, dim, generator=gen) - 0.5) * 2 * 40  # float32, as FAB's GMM
    return GaussianMixture(means.double(), covariances=1.0)


def grid7x7() -> GaussianMixture:
    """7x7 grid with spacing 10 (coordinates -30..30), unit covariance, weights ``1 + 9 U(0, 1)`` (seed 1000)."""
    gen = torch.Generator().manual_seed(1000)
    axis = torch.arange(-30.0, 31.0, 10.0, dtype=torch.float64)
    means = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    return GaussianMixture(means, 1 + 9 * torch.rand(49, generator=gen, dtype=torch.float64))


def ring6() -> GaussianMixture:
    """Six unit-covariance components on the circle of radius 10 (angles ``k pi / 3``), weights ``∝ k + 1``."""
    angles = torch.arange(6, dtype=torch.float64) * math.pi / 3
    means = 10.0 * torch.stack([angles.cos(), angles.sin()], 1)
    return GaussianMixture(means, torch.arange(1, 7, dtype=torch.float64))


def random_mixture(dim: int, spread: float, seed: int = 1000) -> GaussianMixture:
    """``K ~ U{2..8}`` unit-covariance components, means ``N(0, spread^2 I)``, weights ``1 + 9 U(0, 1)``."""
    gen = torch.Generator().manual_seed(seed)
    k = int(torch.randint(2, 9, (1,), generator=gen))
    means = spread * torch.randn(k, dim, generator=gen, dtype=torch.float64)
    return GaussianMixture(means, 1 + 9 * torch.rand(k, generator=gen, dtype=torch.float64))


STANDARD_TARGETS: dict[str, Callable[[], object]] = {
    "mog40_2d": lambda: mog40(2),
    "mog40_50d": lambda: mog40(50),
    "funnel_10d": lambda: NealsFunnel(dim=10, scale=3.0),
    "many_well_32d": lambda: ManyWell(dim=32),
    "grid7x7_2d": grid7x7,
    "ring6_2d": ring6,
    "mog10d": lambda: random_mixture(10, 5.0),
    "mog50d": lambda: random_mixture(50, 3.0),
}
UNEQUAL_WEIGHT_MIXTURES = ("grid7x7_2d", "ring6_2d", "mog10d", "mog50d")


def make_standard_target(name: str):
    """Build the standard target ``name`` (one of :data:`STANDARD_TARGETS`)."""
    if name not in STANDARD_TARGETS:
        raise ValueError(f"unknown target {name!r}; choose one of {sorted(STANDARD_TARGETS)}")
    return STANDARD_TARGETS[name]()
