"""Targets with exact log densities, scores, samplers and normalising constants, for tests and benchmarks.

Each target is a plain callable log density with its ``dim``: ``target(x) == target.log_prob(x) -> (B,)``,
``score(x) -> (B, d)`` (closed form), ``sample(n, generator) -> (n, d)`` (exact) and ``log_Z``, the log of
the normalising constant of ``exp(log_prob)`` (0 for the normalised ones). Computations follow the dtype
of ``x``. The benchmark's standard instances (seeds, scales) are in :mod:`.standard_targets`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["GaussianMixture", "ManyWell", "NealsFunnel", "Rings"]

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
        self.log_Z = 0.0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_prob(x)

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
        return self._score_from(x, *self._component_log_probs(x))

    def log_prob_and_score(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both at once: one pass over the components and one exponential (``logsumexp`` and the
        responsibilities share ``exp(comp - max)``)."""
        comp, z = self._component_log_probs(x)
        top = comp.amax(1, keepdim=True).detach()
        top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))  # all -inf: log density -inf
        e = torch.exp(comp - top)
        total = e.sum(1, keepdim=True)
        return (top + total.log()).squeeze(1), self._score_from(x, comp, z, e / total)

    def _score_from(
        self, x: torch.Tensor, comp: torch.Tensor, z: torch.Tensor | None, r: torch.Tensor | None = None
    ) -> torch.Tensor:
        r = torch.softmax(comp, dim=1) if r is None else r
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
        self.log_Z = 0.0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_prob(x)

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
        self.log_Z = 0.0
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

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_prob(x)

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


class ManyWell:
    """The many-well target of FAB (Midgley et al., ICLR 2023, ``ManyWellEnergy``): ``dim / 2`` independent
    copies of the double well

        log p~(x1, x2) = -(a x1 + b x1^2 + c x1^4) - x2^2 / 2,    a = -0.5, b = -6, c = 1 (FAB's values),

    on the coordinate pairs ``(x_0, x_1), (x_2, x_3), ...``; ``2^(dim / 2)`` modes. ``log_prob`` is
    unnormalised, as in FAB; ``log_Z = (dim / 2) (log Z_1 + log(2 pi) / 2)`` with ``Z_1`` the integral of
    ``exp(-(a x + b x^2 + c x^4))`` by adaptive quadrature (FAB's constant: 11784.50927). Exact samples: each
    ``x1`` by rejection from a two-Gaussian envelope whose bound is computed on a dense grid with a margin.
    """

    def __init__(self, dim: int = 32, a: float = -0.5, b: float = -6.0, c: float = 1.0):
        from scipy.integrate import quad  # scipy comes with scikit-learn, a core dependency

        if not isinstance(dim, int) or dim < 2 or dim % 2:
            raise ValueError(f"dim must be an even integer >= 2 for the many-well target, got {dim!r}")
        if not c > 0:
            raise ValueError(f"c must be positive (the quartic term confines the wells), got {c}")
        self.dim, self.a, self.b, self.c = dim, float(a), float(b), float(c)
        self.num_wells = dim // 2
        # the 1-D double well, normalised around its maximum for the quadrature
        grid = torch.linspace(-8.0, 8.0, 160001, dtype=torch.float64)
        log_f = self._log_f(grid)
        self._log_f_max = float(log_f.max())
        f = lambda t: math.exp(-(self.a * t + self.b * t * t + self.c * t**4) - self._log_f_max)  # noqa: E731
        z_left = quad(f, -math.inf, 0.0, limit=200)[0]
        z_right = quad(f, 0.0, math.inf, limit=200)[0]
        self.log_Z1 = math.log(z_left + z_right) + self._log_f_max
        self.right_well_weight = z_right / (z_left + z_right)  # P(x1 > 0), per well
        self.log_Z = self.num_wells * (self.log_Z1 + 0.5 * LOG_2PI)
        # rejection envelope: one Gaussian per well (at its maximum, twice its Laplace width, its mass) and a
        # broad one (5 %) that covers the barrier and the tails
        left, right = grid < 0, grid > 0
        peaks = [float(grid[left][log_f[left].argmax()]), float(grid[right][log_f[right].argmax()])]
        curvatures = [max(2 * self.b + 12 * self.c * m * m, 1e-3) for m in peaks]
        spread = float(grid.abs().max())
        self._env_means = torch.tensor([*peaks, 0.0], dtype=torch.float64)
        self._env_stds = torch.tensor(
            [2 / math.sqrt(k) for k in curvatures] + [spread / 4], dtype=torch.float64
        )
        w_right = 0.95 * self.right_well_weight
        self._env_weights = torch.tensor([0.95 - w_right, w_right, 0.05], dtype=torch.float64)
        log_ratio = self._log_f(grid) - self._log_envelope(grid)
        self._log_bound = float(log_ratio.max()) + math.log(1.05)

    def _log_f(self, t: torch.Tensor) -> torch.Tensor:
        return -(self.a * t + self.b * t * t + self.c * t**4)

    def _log_envelope(self, t: torch.Tensor) -> torch.Tensor:
        z = (t[:, None] - self._env_means) / self._env_stds
        comp = self._env_weights.log() - 0.5 * z * z - self._env_stds.log() - 0.5 * LOG_2PI
        return torch.logsumexp(comp, dim=1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_prob(x)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x[:, 0::2], x[:, 1::2]
        return self._log_f(x1).sum(1) - 0.5 * (x2 * x2).sum(1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x[:, 0::2], x[:, 1::2]
        out = torch.empty_like(x)
        out[:, 0::2] = -(self.a + 2 * self.b * x1 + 4 * self.c * x1**3)
        out[:, 1::2] = -x2
        return out

    def well_weights_of(self, x: torch.Tensor) -> torch.Tensor:
        """Fraction of the rows of ``x`` in the right-hand well (``x1 > 0``), for each of the wells, ``(d/2,)``."""
        return (x[:, 0::2] > 0).double().mean(0)

    def _sample_x1(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        out = torch.empty(n, dtype=torch.float64)
        todo = torch.arange(n)
        while todo.numel():
            m = todo.numel()
            comp = torch.multinomial(self._env_weights, m, replacement=True, generator=generator)
            t = self._env_means[comp] + self._env_stds[comp] * torch.randn(
                m, generator=generator, dtype=torch.float64
            )
            log_u = torch.rand(m, generator=generator, dtype=torch.float64).log()
            ok = log_u < self._log_f(t) - self._log_envelope(t) - self._log_bound
            out[todo[ok]] = t[ok]
            todo = todo[~ok]
        return out

    def sample(self, n: int, generator: torch.Generator | None = None, dtype=torch.float64) -> torch.Tensor:
        x = torch.empty(n, self.dim, dtype=torch.float64)
        x[:, 0::2] = self._sample_x1(n * self.num_wells, generator).reshape(n, self.num_wells)
        x[:, 1::2] = torch.randn(n, self.num_wells, generator=generator, dtype=torch.float64)
        return x.to(dtype)
