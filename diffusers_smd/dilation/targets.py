"""Targets with exact log densities, scores and samplers, for tests and benchmarks.

Each target has ``dim``, ``log_prob(x) -> (B,)`` (normalised), ``score(x) -> (B, d)`` (closed form)
and ``sample(n, generator) -> (n, d)`` (exact). Computations follow the dtype of ``x``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["GaussianMixture", "NealsFunnel", "Rings"]

LOG_2PI = math.log(2.0 * math.pi)


def mode_histogram(modes: torch.Tensor, num_modes: int) -> torch.Tensor:
    """Fraction of the entries of ``modes`` (integer mode indices) equal to each of ``0..num_modes-1``."""
    counts = torch.bincount(modes, minlength=num_modes)
    return counts.to(torch.float64) / max(modes.numel(), 1)


class GaussianMixture:
    """``pi(x) = sum_i w_i N(x; m_i, S_i)`` in any dimension.

    Args:
        means: ``(K, d)``.
        weights: ``(K,)`` positive, normalised here; equal weights when omitted.
        covariances: ``(K, d, d)`` symmetric positive definite, or ``(K,)`` / a float for ``s^2 I``;
            identity when omitted.
    """

    def __init__(
        self,
        means: torch.Tensor | Sequence,
        weights: torch.Tensor | Sequence | None = None,
        covariances: torch.Tensor | Sequence | float | None = None,
    ):
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.ndim != 2:
            raise ValueError(f"means must have shape (K, d), got {tuple(means.shape)}")
        k, d = means.shape
        if weights is None:
            weights = torch.full((k,), 1.0 / k, dtype=torch.float64)
        weights = torch.as_tensor(weights, dtype=torch.float64)
        if weights.shape != (k,) or not (weights > 0).all():
            raise ValueError(f"weights must be {k} positive numbers, got {weights.tolist()}")
        if covariances is None:
            covariances = 1.0
        cov = torch.as_tensor(covariances, dtype=torch.float64)
        if cov.ndim == 0:
            cov = cov.expand(k)
        if cov.ndim == 1:
            cov = cov[:, None, None] * torch.eye(d, dtype=torch.float64)
        if cov.shape != (k, d, d):
            raise ValueError(f"covariances must have shape ({k}, {d}, {d}), (K,) or be a float")
        self.means = means
        self.weights = weights / weights.sum()
        self.covariances = cov
        self.cholesky = torch.linalg.cholesky(cov)
        eye = torch.eye(d, dtype=torch.float64).expand(k, d, d)
        self._whitening = torch.linalg.solve_triangular(self.cholesky, eye, upper=False)  # L^{-1}
        self._log_det = self.cholesky.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        variances = cov.diagonal(dim1=-2, dim2=-1).mean(-1)
        # isotropic components s_i^2 I take a matrix-product fast path
        self._isotropic_variances = variances if torch.allclose(cov, variances[:, None, None] * eye) else None
        self.dim = d
        self.num_modes = k

    def dilated(self, lam: float) -> GaussianMixture:
        """The dilation path at ``lambda``: ``sum_i w_i N(sqrt(lambda) m_i, lambda S_i)``."""
        return GaussianMixture(math.sqrt(lam) * self.means, self.weights, lam * self.covariances)

    def _component_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """``log w_i + log N(x; m_i, S_i)``, shape ``(B, K)``, and the whitened residuals (``None`` on the
        isotropic fast path)."""
        if self._isotropic_variances is not None:
            var, m = self._isotropic_variances.to(x.dtype), self.means.to(x.dtype)
            sq = (x * x).sum(1, keepdim=True) - 2 * x @ m.T + (m * m).sum(1)[None]
            log_n = -0.5 * sq.clamp_min(0) / var - self._log_det.to(x.dtype) - 0.5 * self.dim * LOG_2PI
            return self.weights.to(x.dtype).log() + log_n, None
        diff = x[:, None, :] - self.means.to(x.dtype)[None]  # (B, K, d)
        z = torch.einsum("bkd,ked->bke", diff, self._whitening.to(x.dtype))  # L^{-1} (x - m)
        log_n = -0.5 * (z * z).sum(-1) - self._log_det.to(x.dtype) - 0.5 * self.dim * LOG_2PI
        return self.weights.to(x.dtype).log() + log_n, z

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(self._component_log_probs(x)[0], dim=1)

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior probability of each component, ``(B, K)``."""
        return torch.softmax(self._component_log_probs(x)[0], dim=1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """``sum_i r_i(x) (-S_i^{-1} (x - m_i))``."""
        comp, z = self._component_log_probs(x)
        r = torch.softmax(comp, dim=1)
        if z is None:  # isotropic: sum_i r_i (m_i - x) / s_i^2
            r = r / self._isotropic_variances.to(x.dtype)
            return r @ self.means.to(x.dtype) - r.sum(1, keepdim=True) * x
        prec_diff = torch.einsum("bke,ked->bkd", z, self._whitening.to(x.dtype))  # S^{-1} (x - m) = L^{-T} z
        return -(r[..., None] * prec_diff).sum(1)

    def assign_modes(self, x: torch.Tensor) -> torch.Tensor:
        """Index of the most responsible component of each row (the mode a sample belongs to)."""
        return self._component_log_probs(x)[0].argmax(1)

    def mode_weights_of(self, x: torch.Tensor) -> torch.Tensor:
        """Fraction of the rows of ``x`` assigned to each mode, ``(K,)``."""
        return mode_histogram(self.assign_modes(x), self.num_modes)

    def sample(self, n: int, generator: torch.Generator | None = None, dtype=torch.float64) -> torch.Tensor:
        idx = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        x = self.means[idx] + (self.cholesky[idx] @ eps[..., None])[..., 0]
        return x.to(dtype)


class NealsFunnel:
    """Neal's funnel: ``v ~ N(0, scale^2)``, ``x_j | v ~ N(0, exp(v))`` for ``j = 1..d-1``; ``x = (v, x_1..)``."""

    def __init__(self, dim: int = 10, scale: float = 3.0):
        if dim < 2:
            raise ValueError(f"dim must be >= 2 for the funnel, got {dim}")
        self.dim = dim
        self.scale = float(scale)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        v, rest = x[:, 0], x[:, 1:]
        n = self.dim - 1
        log_v = -0.5 * (v / self.scale) ** 2 - math.log(self.scale) - 0.5 * LOG_2PI
        log_rest = -0.5 * (rest**2).sum(1) * torch.exp(-v) - 0.5 * n * v - 0.5 * n * LOG_2PI
        return log_v + log_rest

    def score(self, x: torch.Tensor) -> torch.Tensor:
        v, rest = x[:, :1], x[:, 1:]
        n = self.dim - 1
        dv = -v / self.scale**2 + 0.5 * (rest**2).sum(1, keepdim=True) * torch.exp(-v) - 0.5 * n
        return torch.cat([dv, -rest * torch.exp(-v)], dim=1)

    def sample(self, n: int, generator: torch.Generator | None = None, dtype=torch.float64) -> torch.Tensor:
        v = self.scale * torch.randn(n, 1, generator=generator, dtype=torch.float64)
        rest = torch.exp(0.5 * v) * torch.randn(n, self.dim - 1, generator=generator, dtype=torch.float64)
        return torch.cat([v, rest], 1).to(dtype)


class Rings:
    """Concentric rings in 2-D: ``pi(x) = sum_k w_k exp(-(|x| - r_k)^2 / (2 s^2)) / Z_k``.

    ``Z_k = 2 pi s [s exp(-r_k^2 / 2 s^2) + r_k sqrt(pi / 2) (1 + erf(r_k / (s sqrt 2)))]`` normalises each
    ring exactly; samples are exact (rejection on the radius, see :meth:`sample`).
    """

    def __init__(
        self,
        radii: Sequence[float] = (2.0, 5.0, 8.0),
        width: float = 0.3,
        weights: Sequence[float] | None = None,
    ):
        self.radii = torch.as_tensor(radii, dtype=torch.float64)
        k = self.radii.numel()
        w = torch.full((k,), 1.0 / k, dtype=torch.float64) if weights is None else torch.as_tensor(weights)
        self.weights = w.to(torch.float64) / w.sum()
        self.width = float(width)
        self.dim = 2
        self.num_modes = k
        s, r = self.width, self.radii
        self.log_norm = torch.log(
            2
            * math.pi
            * s
            * (
                s * torch.exp(-(r**2) / (2 * s**2))
                + r * math.sqrt(math.pi / 2) * (1 + torch.erf(r / (s * math.sqrt(2))))
            )
        )

    def _component_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        radius = x.norm(dim=1, keepdim=True)
        r, s = self.radii.to(x.dtype), self.width
        return self.weights.to(x.dtype).log() - (radius - r) ** 2 / (2 * s**2) - self.log_norm.to(x.dtype)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(self._component_log_probs(x), dim=1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        radius = x.norm(dim=1, keepdim=True)
        resp = torch.softmax(self._component_log_probs(x), dim=1)
        d_radius = -(resp * (radius - self.radii.to(x.dtype))).sum(1, keepdim=True) / self.width**2
        return d_radius * x / radius.clamp_min(torch.finfo(x.dtype).tiny)

    def assign_modes(self, x: torch.Tensor) -> torch.Tensor:
        return self._component_log_probs(x).argmax(1)

    def mode_weights_of(self, x: torch.Tensor) -> torch.Tensor:
        """Fraction of the rows of ``x`` assigned to each ring, ``(K,)``."""
        return mode_histogram(self.assign_modes(x), self.num_modes)

    def sample(self, n: int, generator: torch.Generator | None = None, dtype=torch.float64) -> torch.Tensor:
        """Exact: ring ``k ~ w``; radius ``r_k + s z`` with ``z`` from the density ``(r_k + s z) phi(z)``
        on ``z > -r_k / s``, by rejection from the envelope ``(r_k + s |z|) phi(z)`` (a two-part mixture of
        ``phi`` and a signed Rayleigh law), accepting with probability ``(r_k + s z) / (r_k + s |z|)``."""
        s = self.width
        ring = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        out = torch.empty(n, dtype=torch.float64)
        todo = torch.arange(n)
        while todo.numel():
            m = todo.numel()
            rk = self.radii[ring[todo]]
            p_normal = rk / (rk + s * math.sqrt(2 / math.pi))  # mass of r_k phi vs s |z| phi
            u = torch.rand(m, generator=generator, dtype=torch.float64)
            normal = torch.randn(m, generator=generator, dtype=torch.float64)
            rayleigh = torch.sqrt(-2 * torch.log1p(-torch.rand(m, generator=generator, dtype=torch.float64)))
            sign = torch.where(torch.rand(m, generator=generator, dtype=torch.float64) < 0.5, -1.0, 1.0)
            z = torch.where(u < p_normal, normal, sign * rayleigh)
            accept_p = ((rk + s * z) / (rk + s * z.abs())).clamp_min(0.0)
            ok = torch.rand(m, generator=generator, dtype=torch.float64) < accept_p
            out[todo[ok]] = rk[ok] + s * z[ok]
            todo = todo[~ok]
        angle = 2 * math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
        return torch.stack([out * angle.cos(), out * angle.sin()], 1).to(dtype)
