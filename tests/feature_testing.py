"""A tiny feature network in place of Inception, and FID / KID written out by hand, for the metric tests."""

import numpy as np
import scipy.linalg
import torch


class TinyFeatures(torch.nn.Module):
    """A stand-in for Inception: uint8 RGB (N, 3, H, W) -> (N, 6) features, fixed random weights."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.head = torch.nn.Linear(16, 6)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)

    def forward(self, images):
        assert images.dtype == torch.uint8 and images.shape[1] == 3  # what Inception is fed
        x = torch.tanh(self.conv(images.float() / 255))
        return torch.tanh(self.head(torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)))


def tiny_features_by_hand(images, network):
    """The network on [-1, 1] grey images mapped to uint8 RGB by hand (float64)."""
    pixels = ((images + 1) / 2 * 255).round().to(torch.uint8).repeat(1, 3, 1, 1)
    with torch.no_grad():
        return network(pixels).double().numpy()


def fid_by_hand(f1, f2):
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), scipy's general matrix square root."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real))


def kid_by_hand(f1, f2):
    """Unbiased MMD^2 (Binkowski et al. 2018, eq. 3) with k(x, y) = (x.y / D + 1)^3, written as double sums."""
    n, m, dim = len(f1), len(f2), f1.shape[1]

    def k(x, y):
        return (x @ y / dim + 1) ** 3

    same1 = sum(k(f1[i], f1[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    same2 = sum(k(f2[i], f2[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    cross = sum(k(f1[i], f2[j]) for i in range(n) for j in range(m)) / (n * m)
    return same1 + same2 - 2 * cross
