"""The SMD hypernetwork f_phi (Li et al., "Soft Mixture Denoising", ICLR 2024).

f_phi turns a per-position latent ``z`` into per-position linear maps and applies them, as a
residual, to a feature map ``h``:

    u_k = A_k z + b_k,   W_k = u_k u_k^T + softplus(s_k) I        (k = 1..K)
    h  <- h + P_out( W_K ... W_1 P_in(h) )

Every W_k is rank-one plus a multiple of the identity, so ``W_k v = u_k (u_k . v) + softplus(s_k) v``
costs O(L) per position; the L x L matrices are never built.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MixtureHypernetwork", "rank_one_plus_identity_product"]


def rank_one_plus_identity_product(
    u: torch.Tensor, scale_logit: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """Return ``W v`` for ``W = u u^T + softplus(scale_logit) I`` without building ``W``.

    Implements ``W v = u (u . v) + softplus(s) v`` along the last dimension; ``u`` and ``v`` have the
    same shape ``(..., L)`` and ``scale_logit`` is a scalar tensor (the learned ``s``).
    """
    return torch.addcmul(F.softplus(scale_logit) * v, u, torch.linalg.vecdot(u, v).unsqueeze(-1))


def _check_positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")


class MixtureHypernetwork(nn.Module):
    """The SMD hypernetwork f_phi: ``features + P_out(W_K ... W_1 P_in(features))``.

    ``features`` is ``(B, channels, *spatial)`` and ``latent`` is ``(B, latent_dim, *spatial)`` with
    the same spatial dims (possibly none, for vectors). P_in, P_out and the A_k act per position
    (as 1x1 convolutions would). P_out starts at zero, so a fresh hypernetwork is the identity map.

    Initialisation: A_k has weights N(0, 1/latent_dim^2) and zero bias, so ``|u_k|^2`` is about 1 for a
    latent with unit-scale entries, and ``s_k`` starts at ``log(e - 1)`` (``softplus(s_k) = 1``); a fresh
    W_k is then close to the identity plus a rank-one term of norm about one.
    """

    def __init__(self, channels: int, latent_dim: int, num_layers: int = 2):
        super().__init__()
        _check_positive_int("channels", channels)
        _check_positive_int("latent_dim", latent_dim)
        _check_positive_int("num_layers", num_layers)
        self.channels = channels
        self.latent_dim = latent_dim
        self.num_layers = num_layers
        self.proj_in = nn.Linear(channels, latent_dim)
        self.latent_to_u = nn.ModuleList(nn.Linear(latent_dim, latent_dim) for _ in range(num_layers))
        self.scale_logits = nn.Parameter(torch.full((num_layers,), math.log(math.e - 1.0)))
        self.proj_out = nn.Linear(latent_dim, channels)
        for layer in self.latent_to_u:
            nn.init.normal_(layer.weight, std=1.0 / latent_dim)
            nn.init.zeros_(layer.bias)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def _check_inputs(self, features: torch.Tensor, latent: torch.Tensor) -> None:
        if features.dim() < 2 or features.shape[1] != self.channels:
            raise ValueError(
                f"`features` must have shape (batch, {self.channels}, *spatial), got {tuple(features.shape)}."
            )
        expected = (features.shape[0], self.latent_dim, *features.shape[2:])
        if tuple(latent.shape) != expected:
            raise ValueError(f"`latent` must have shape {expected}, got {tuple(latent.shape)}.")

    def mixture_maps(self, hidden: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """Apply ``W_K ... W_1`` to channel-last ``hidden`` (..., L) with channel-last ``latent`` (..., L)."""
        # All u_k = A_k z + b_k in one matrix product, then K cheap rank-one-plus-identity products.
        weight = torch.cat([layer.weight for layer in self.latent_to_u])
        bias = torch.cat([layer.bias for layer in self.latent_to_u])
        all_u = F.linear(latent, weight, bias).split(self.latent_dim, dim=-1)
        for u, scale_logit in zip(all_u, self.scale_logits):
            hidden = rank_one_plus_identity_product(u, scale_logit, hidden)
        return hidden

    def forward(self, features: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        self._check_inputs(features, latent)
        latent = latent.to(features.dtype)
        hidden = self.proj_in(features.movedim(1, -1))
        hidden = self.mixture_maps(hidden, latent.movedim(1, -1))
        return features + self.proj_out(hidden).movedim(-1, 1)
