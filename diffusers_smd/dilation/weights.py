"""Mode-weight recovery: importance resampling from a mixture proposal built on the modes found.

The dilation path finds modes but not their masses: ``p_lambda`` is an exact scaled copy of ``pi``, and
a Langevin run that has not mixed between modes leaves particles spread by basin, not by mass. This
extension corrects the masses with the unnormalised log density only:

1. cluster the particles by mode: a Newton step with each particle's curvature estimate,
   ``z = y + grad log pi(y) / c`` (exactly the mode's mean for an isotropic Gaussian mode), then single
   linkage of the ``z`` within ``merge_radius / sqrt(median c)``;
2. fit one Gaussian per cluster (mean; covariance shrunk towards isotropic, inflated by
   ``proposal_inflation``) and form the defensive proposal ``q = (1 / J) sum_j N(mu_j, S_j)``
   (equal component weights, so a mode found by few particles is proposed as often as a big one);
3. draw ``M`` points from ``q``, weight them by ``w = pi~(z) / q(z)`` and resample ``B`` of them
   (systematic resampling over the draws ordered by the cluster that proposed them most likely, so that
   each cluster receives its estimated mass in samples to within one). Self-normalised importance sampling is consistent for ``pi`` restricted to
   the support ``q`` covers, whatever the particles' spread over modes was; each cluster's mass is
   ``sum of w over the draws that q attributes to it / sum of w``;
4. the normalising constant: ``log Z_hat = log((1 / M) sum_m pi~(z_m) / q(z_m))``, unbiased for the mass
   of ``pi~`` on the region ``q`` covers (so it is low by the mass of the modes no particle found), with the
   weights' effective sample size ``(sum w)^2 / sum w^2`` as its diagnostic.

Cost: ``M`` log-density evaluations, plus ``B`` gradient evaluations for the scores at the particles
(free when the pipeline's Metropolis-adjusted final phase, ``metropolis_steps``, ran and left them). It
cannot give mass to a mode that no particle found.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .evaluator import TargetEvaluator
from .kernels import log_mean_exp, systematic_resample

__all__ = ["ModeReweighting", "cluster_modes", "importance_resample"]


@dataclass
class ModeReweighting:
    """Result of :func:`importance_resample`.

    Args:
        samples: resampled points ``(B, d)``.
        cluster_means: ``(J, d)`` centres of the modes found.
        cluster_weights: ``(J,)`` estimated mass of each mode.
        effective_sample_size: of the importance weights (out of ``num_proposals``).
        log_Z: the importance-sampling estimate of the log normalising constant (step 4).
    """

    samples: torch.Tensor
    cluster_means: torch.Tensor
    cluster_weights: torch.Tensor
    effective_sample_size: float
    log_Z: float


def newton_mode_estimates(
    points: torch.Tensor, scores: torch.Tensor, curvature: torch.Tensor
) -> torch.Tensor:
    """One Newton step towards each particle's mode with its curvature estimate: ``y + grad log pi(y) / c``
    (the mode's mean exactly on an isotropic Gaussian mode)."""
    return points + scores / curvature[:, None]


def cluster_modes(
    points: torch.Tensor, scores: torch.Tensor, curvature: torch.Tensor, merge_radius: float
) -> torch.Tensor:
    """Cluster labels ``(B,)`` in ``0..J-1``: single linkage of Newton-step mode estimates ``y + s / c``."""
    from scipy.cluster.hierarchy import fcluster, linkage  # scipy comes with scikit-learn, a core dependency

    z = newton_mode_estimates(points, scores, curvature)
    if points.shape[0] == 1:
        return torch.zeros(1, dtype=torch.long)
    scale = 1.0 / curvature.median().clamp_min(1e-12).sqrt()
    tree = linkage(z.double().cpu().numpy(), method="single")
    labels = fcluster(tree, t=float(merge_radius * scale), criterion="distance") - 1
    return torch.as_tensor(labels, dtype=torch.long)


def ledoit_wolf_covariance(x: torch.Tensor) -> torch.Tensor:
    """Ledoit-Wolf shrinkage ``(1 - a) S + a (tr S / d) I`` of the sample covariance of the rows of ``x``,
    with the estimated optimal ``a`` (Ledoit and Wolf 2004); well conditioned even when ``n < d``."""
    n, d = x.shape
    xc = x - x.mean(0)
    s = xc.T @ xc / n
    mu = s.trace() / d
    target = mu * torch.eye(d, dtype=x.dtype)
    delta2 = ((s - target) ** 2).sum()
    # sum_i ||x_i x_i^T - S||_F^2 = sum_i |x_i|^4 - 2 sum_i x_i^T S x_i + n ||S||_F^2
    beta2 = ((xc * xc).sum(1) ** 2).sum() - 2 * ((xc @ s) * xc).sum() + n * (s * s).sum()
    beta2 = torch.minimum(beta2 / n**2, delta2)
    a = float(beta2 / delta2.clamp_min(1e-300))
    return (1 - a) * s + a * target


class _MixtureProposal:
    """``q = (1 / J) sum_j N(mu_j, S_j)`` with a Cholesky factor for the full components and a scalar
    variance for the isotropic ones (which may be many: evaluated together as squared distances)."""

    def __init__(self, means: torch.Tensor, variances: torch.Tensor, chols: dict[int, torch.Tensor]):
        self.means, self.variances, self.chols = means, variances, chols  # variances: NaN for full ones
        self.isotropic = torch.isnan(variances).logical_not()

    def sample(self, comp: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        z = self.means[comp] + eps * self.variances.nan_to_num(0.0).sqrt()[comp, None]
        for j, chol in self.chols.items():
            rows = comp == j
            z[rows] = self.means[j] + eps[rows] @ chol.T
        return z

    def log_components(self, z: torch.Tensor) -> torch.Tensor:
        """``log N(z; mu_j, S_j) - log J`` for each draw and component, ``(M, J)``."""
        m, d = z.shape
        j_all = self.means.shape[0]
        out = torch.empty(m, j_all, dtype=torch.float64)
        const = 0.5 * d * np.log(2 * np.pi) + np.log(j_all)
        iso = self.isotropic
        if iso.any():
            var = self.variances[iso]
            sq = torch.cdist(z, self.means[iso]).pow(2)
            out[:, iso] = -0.5 * sq / var - 0.5 * d * var.log() - const
        for j, chol in self.chols.items():
            white = torch.linalg.solve_triangular(chol, (z - self.means[j]).T, upper=False)
            out[:, j] = -0.5 * (white * white).sum(0) - chol.diagonal().log().sum() - const
        return out


def _cluster_gaussians(
    points: torch.Tensor,
    newton: torch.Tensor,
    labels: torch.Tensor,
    curvature: torch.Tensor,
    inflation: float,
) -> _MixtureProposal:
    """One Gaussian per cluster. A cluster with more particles than dimensions gets their mean and
    Ledoit-Wolf covariance; a smaller one the mean of its Newton-step mode estimates ``y + s / c`` (exact on a
    Gaussian mode, while the mean of a few particles is off by ``sigma sqrt(d / n)``) and the curvature's
    isotropic covariance ``I / c``. Covariances are inflated by ``inflation``."""
    d = points.shape[1]
    num = int(labels.max()) + 1
    means = torch.empty(num, d, dtype=torch.float64)
    variances = torch.full((num,), float("nan"), dtype=torch.float64)
    chols = {}
    eye = torch.eye(d, dtype=torch.float64)
    for j in range(num):
        member = points[labels == j].double()
        iso = (1.0 / curvature[labels == j].double().median()).item()
        if member.shape[0] > d:
            means[j] = member.mean(0)
            chols[j] = torch.linalg.cholesky(inflation * (ledoit_wolf_covariance(member) + 1e-6 * iso * eye))
        else:
            means[j] = newton[labels == j].mean(0)
            variances[j] = inflation * iso
    return _MixtureProposal(means, variances, chols)


def importance_resample(
    evaluator: TargetEvaluator,
    points: torch.Tensor,
    scores: torch.Tensor,
    curvature: torch.Tensor,
    num_proposals: int,
    generator: torch.Generator | None = None,
    merge_radius: float = 3.0,
    proposal_inflation: float = 1.1,
) -> ModeReweighting:
    """Steps 1-4 of the module docstring. ``points`` are in target coordinates with their ``scores``
    and per-particle ``curvature``; returns as many resampled points as ``points`` has rows."""
    if num_proposals < 1:
        raise ValueError(f"num_proposals must be a positive integer, got {num_proposals}")
    labels = cluster_modes(points.double(), scores.double(), curvature.double(), merge_radius)
    newton = newton_mode_estimates(points.double(), scores.double(), curvature.double())
    proposal = _cluster_gaussians(points, newton, labels, curvature, proposal_inflation)
    means = proposal.means
    j, d = means.shape
    comp = torch.randint(0, j, (num_proposals,), generator=generator)
    eps = torch.randn(num_proposals, d, generator=generator, dtype=torch.float64)
    z = proposal.sample(comp, eps)
    log_q_parts = proposal.log_components(z)
    log_q = torch.logsumexp(log_q_parts, 1)
    log_pi = evaluator.log_prob(z.to(points.dtype))
    evaluator.check(z, log_pi, None, "at the extension's proposal draws", proposal=True)
    log_pi = log_pi.double()
    log_w = torch.where(torch.isfinite(log_pi), log_pi - log_q, torch.full_like(log_q, -torch.inf))
    w = torch.softmax(log_w, 0)
    ess = float(1.0 / (w**2).sum())
    owner = log_q_parts.argmax(1)
    cluster_weights = torch.zeros(j, dtype=torch.float64).index_add_(0, owner, w)
    # systematic resampling over the draws grouped by cluster: each cluster then gets its estimated mass in
    # samples to within one (over randomly ordered draws the counts per mode would be as noisy as multinomial)
    order = torch.argsort(owner, stable=True)
    idx = order[systematic_resample(w[order], points.shape[0], generator)]
    perm = torch.randperm(points.shape[0], generator=generator)
    return ModeReweighting(
        samples=z[idx][perm].to(points.dtype),
        cluster_means=means.to(points.dtype),
        cluster_weights=cluster_weights,
        effective_sample_size=ess,
        log_Z=log_mean_exp(log_w),
    )
