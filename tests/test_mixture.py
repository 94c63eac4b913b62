import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diffusers_smd.mixture import MixtureHypernetwork, rank_one_plus_identity_product
from diffusers_smd.models import accepts_mixture_noise


def explicit_hypernetwork(net: MixtureHypernetwork, features: torch.Tensor, latent: torch.Tensor):
    """The paper's formula with every W_k built as an explicit L x L matrix, one position at a time."""
    h = features.movedim(1, -1).reshape(-1, net.channels)
    z = latent.movedim(1, -1).reshape(-1, net.latent_dim)
    eye = torch.eye(net.latent_dim, dtype=features.dtype)
    out = []
    for h_p, z_p in zip(h, z):
        v = net.proj_in.weight @ h_p + net.proj_in.bias
        for layer, s in zip(net.latent_to_u, net.scale_logits):
            u = layer.weight @ z_p + layer.bias
            w = torch.outer(u, u) + F.softplus(s) * eye
            v = w @ v
        out.append(h_p + net.proj_out.weight @ v + net.proj_out.bias)
    shape = (features.shape[0], *features.shape[2:], net.channels)
    return torch.stack(out).reshape(shape).movedim(-1, 1)


def randomise_(net: nn.Module, seed: int = 0) -> None:
    """Overwrite every parameter (including the zero-initialised P_out) with random values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)


def test_rank_one_plus_identity_product_matches_the_explicit_matrix():
    gen = torch.Generator().manual_seed(1)
    u, v = torch.randn(5, 7, generator=gen), torch.randn(5, 7, generator=gen)
    s = torch.tensor(-0.4)
    expected = torch.stack(
        [(torch.outer(a, a) + math.log1p(math.exp(-0.4)) * torch.eye(7)) @ b for a, b in zip(u, v)]
    )
    torch.testing.assert_close(rank_one_plus_identity_product(u, s, v), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spatial", [(), (3,), (4, 5)])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_hypernetwork_matches_the_explicit_matrix_formula(spatial, num_layers):
    net = MixtureHypernetwork(channels=6, latent_dim=9, num_layers=num_layers).double()
    randomise_(net, seed=num_layers)
    gen = torch.Generator().manual_seed(2)
    features = torch.randn(2, 6, *spatial, generator=gen, dtype=torch.float64)
    latent = torch.randn(2, 9, *spatial, generator=gen, dtype=torch.float64)
    # float64: the two evaluation orders agree to round-off (float32 drifts by ~1e-5 relative with 3 layers)
    torch.testing.assert_close(
        net(features, latent), explicit_hypernetwork(net, features, latent), rtol=1e-10, atol=1e-10
    )


def test_fresh_hypernetwork_is_exactly_the_identity():
    net = MixtureHypernetwork(channels=4, latent_dim=5)
    features = torch.randn(3, 4, 6, 6)
    assert torch.equal(net(features, torch.randn(3, 5, 6, 6)), features)


def test_parameter_count_is_linear_maps_only():
    c, latent_dim, k = 6, 9, 2
    net = MixtureHypernetwork(channels=c, latent_dim=latent_dim, num_layers=k)
    expected = (
        (c * latent_dim + latent_dim) + k * (latent_dim * latent_dim + latent_dim) + k + (latent_dim * c + c)
    )
    assert sum(p.numel() for p in net.parameters()) == expected


def test_gradient_reaches_every_parameter_once_p_out_is_nonzero():
    net = MixtureHypernetwork(channels=3, latent_dim=4)
    nn.init.normal_(net.proj_out.weight)
    latent = torch.randn(2, 4, 5, requires_grad=True)
    net(torch.randn(2, 3, 5), latent).square().sum().backward()
    assert latent.grad.abs().sum() > 0
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"channels": 0, "latent_dim": 4}, "channels"),
        ({"channels": 3, "latent_dim": 0}, "latent_dim"),
        ({"channels": 3, "latent_dim": -2}, "latent_dim"),
        ({"channels": 3, "latent_dim": 2.5}, "latent_dim"),
        ({"channels": 3, "latent_dim": 4, "num_layers": 0}, "num_layers"),
    ],
)
def test_bad_construction_arguments_are_named(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        MixtureHypernetwork(**kwargs)


def test_mismatched_inputs_are_named():
    net = MixtureHypernetwork(channels=3, latent_dim=4)
    with pytest.raises(ValueError, match="`features`"):
        net(torch.randn(2, 5, 6), torch.randn(2, 4, 6))
    with pytest.raises(ValueError, match="`latent`"):
        net(torch.randn(2, 3, 6), torch.randn(2, 4, 7))
    with pytest.raises(ValueError, match="`latent`"):
        net(torch.randn(2, 3, 6), torch.randn(2, 5, 6))


def test_accepts_mixture_noise_reads_the_forward_signature():
    class Plain(nn.Module):
        def forward(self, sample, timestep):
            return sample

    class Mixture(nn.Module):
        def forward(self, sample, timestep, *, mixture_noise=None, generator=None):
            return sample

    assert not accepts_mixture_noise(Plain())
    assert accepts_mixture_noise(Mixture())
    assert accepts_mixture_noise(nn.DataParallel(Mixture()))
    assert not accepts_mixture_noise(nn.DataParallel(Plain()))
