"""Where an SMD model's mixture noise eta comes from when the caller does not supply it.

SMD draws ``eta ~ N(0, I)`` (shape of ``x_t``) at every backward step and feeds ``z = g_xi(x_t, eta, t)`` to
the denoiser. Stock diffusers pipelines (``StableDiffusionPipeline``, ``DDPMPipeline``, ...) call the model as
``unet(latents, t, ...)`` and never pass their ``generator``, so an eta drawn from torch's global random state
would make the same ``generator`` seed give different images. Here eta is derived instead from exactly what
the identifier sees, the sample x_t and the timestep t, which the pipeline's generator fixes. For each row b:

    x     = x_t[b] flattened (C order) as float64 on the CPU; n = its length
    D     = 16 x n directions: float64 N(0, 1) from torch.Generator("cpu").manual_seed(0), rows scaled to unit norm
    c     = sqrt(n) * D x / |x|                   (0 when x = 0; each entry ~ N(0, 1) for a generic x)
    key   = floor(c * 64) as 16 little-endian int64          (buckets of width w = 1/64)
    seed  = BLAKE2b(digest_size=8, person=b"diffusers-smd") of
            b"mixture-noise/v1|" + repr(row shape) + float64(t_b) (little-endian) + key, read little-endian
    eta_b = torch.randn(row shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=float32)

then cast to the sample's device and dtype. The hash acts as a random function of (key, t), so:

* the same inputs give the same eta on every device: the same seed, the same images;
* rows with the same x_t and t share eta: classifier-free guidance's conditional and unconditional halves;
* another timestep, or another image (other latents), gives an independent N(0, I) draw;
* a change of x_t of relative size e (|dx| / |x|) moves each entry of c by about N(0, e^2), so it crosses
  about 16 * 0.8 * e / w ~ 820 e bucket boundaries. A denoising step (e of a few percent at 20-100 steps, still
  0.2-0.5 % per step at 1000 steps) gives a fresh eta even when the timestep repeats (E-TSDM's shared
  conditions); a rounding-level difference (e ~ 1e-6 in float32: another batch size or attention kernel, GPU
  non-determinism) keeps eta except with probability ~ 1e-3 per call, where an exact hash of the bytes would
  change it always. In float16 (e ~ 3e-4) about one call in five draws anew.

The recipe is part of what a seed means: changing it needs a new version tag. :func:`resolve_mixture_noise`
is the one rule every SMD UNet applies.
"""

from __future__ import annotations

import functools
import hashlib
import math
import struct
from collections.abc import Sequence

import torch
from diffusers.utils.torch_utils import randn_tensor

__all__ = [
    "MIXTURE_NOISE_VERSION",
    "derived_mixture_noise",
    "mixture_noise_keys",
    "mixture_noise_seeds",
    "resolve_mixture_noise",
]

#: Version tag hashed into every seed; bump it whenever the derivation changes.
MIXTURE_NOISE_VERSION = b"mixture-noise/v1"
#: Directions of the key, and the width of one bucket along each (in units of the row's own scale).
NUM_KEY_DIRECTIONS = 16
KEY_BUCKET_WIDTH = 1.0 / 64
_DIRECTIONS_SEED = 0
_PERSON = b"diffusers-smd"


@functools.lru_cache(maxsize=8)
def _key_directions(length: int) -> torch.Tensor:
    """D: (NUM_KEY_DIRECTIONS, length) float64 unit vectors, the same on every machine."""
    generator = torch.Generator("cpu").manual_seed(_DIRECTIONS_SEED)
    directions = torch.randn(NUM_KEY_DIRECTIONS, length, generator=generator, dtype=torch.float64)
    return directions / directions.norm(dim=1, keepdim=True)


def _row_timesteps(timestep: torch.Tensor | float | int, batch_size: int) -> list[float]:
    """The timestep of each row as a Python float: a scalar (or one-element tensor) is shared by every row."""
    values = torch.as_tensor(timestep).detach().to("cpu", torch.float64).reshape(-1)
    if values.numel() == 1:
        return [float(values[0])] * batch_size
    if values.numel() != batch_size:
        raise ValueError(
            f"`timestep` must be a scalar or hold one value per example ({batch_size}), got "
            f"{values.numel()} values."
        )
    return values.tolist()


def mixture_noise_keys(sample: torch.Tensor) -> torch.Tensor:
    """The bucket key of each row, ``floor(sqrt(n) D x / |x| / KEY_BUCKET_WIDTH)``: (batch, 16) int64."""
    if not isinstance(sample, torch.Tensor) or sample.dim() < 1:
        raise ValueError("`sample` must be a tensor with a batch dimension.")
    rows = sample.detach().to("cpu", torch.float64).reshape(sample.shape[0], -1)
    length = rows.shape[1]
    norms = rows.norm(dim=1, keepdim=True)
    coordinates = math.sqrt(length) * (rows @ _key_directions(length).T) / norms.clamp_min(1e-300)
    coordinates = torch.nan_to_num(coordinates, nan=0.0, posinf=0.0, neginf=0.0)
    return torch.floor(coordinates / KEY_BUCKET_WIDTH).to(torch.int64)


def mixture_noise_seeds(sample: torch.Tensor, timestep: torch.Tensor | float | int) -> list[int]:
    """One 64-bit seed per row of ``sample``: BLAKE2b of the row shape, its timestep and its key."""
    keys = mixture_noise_keys(sample)
    times = _row_timesteps(timestep, sample.shape[0])
    header = MIXTURE_NOISE_VERSION + b"|" + repr(tuple(sample.shape[1:])).encode()
    seeds = []
    for key, t in zip(keys, times):
        digest = hashlib.blake2b(header, digest_size=8, person=_PERSON)
        digest.update(struct.pack("<d", t))
        digest.update(struct.pack(f"<{NUM_KEY_DIRECTIONS}q", *key.tolist()))
        seeds.append(int.from_bytes(digest.digest(), "little"))
    return seeds


def derived_mixture_noise(sample: torch.Tensor, timestep: torch.Tensor | float | int) -> torch.Tensor:
    """eta shaped like ``sample``, each row drawn from a CPU generator seeded by :func:`mixture_noise_seeds`.

    Drawn in float32 on the CPU and then moved, so identical inputs give identical eta on every device.
    """
    seeds = mixture_noise_seeds(sample, timestep)
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
    eta = randn_tensor(
        tuple(sample.shape), generator=generators, device=torch.device("cpu"), dtype=torch.float32
    )
    return eta.to(device=sample.device, dtype=sample.dtype)


def resolve_mixture_noise(
    sample: torch.Tensor,
    timestep: torch.Tensor | float | int,
    mixture_noise: torch.Tensor | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
) -> torch.Tensor:
    """The eta an SMD model uses for one forward call:

    1. ``mixture_noise`` when given (checked to have the shape of ``sample``);
    2. else, with a ``generator`` (or a list, one per example), ``randn_tensor(sample.shape, generator)``;
    3. else, when autograd is recording (training), a fresh draw from torch's global random state, whose
       state the training engine checkpoints; this keeps several copies of one x_t in a batch (the
       ``smd-mixture`` objective's K samples) independent;
    4. else (under ``torch.no_grad()`` / ``torch.inference_mode()``, as every diffusers pipeline call runs):
       :func:`derived_mixture_noise` of ``(sample, timestep)``, reproducible from the pipeline's generator.

    Cases 1-3 are what SMD models did before case 4 existed, bit for bit.
    """
    if mixture_noise is not None:
        if not isinstance(mixture_noise, torch.Tensor) or mixture_noise.shape != sample.shape:
            shape = (
                tuple(mixture_noise.shape) if isinstance(mixture_noise, torch.Tensor) else type(mixture_noise)
            )
            raise ValueError(
                f"`mixture_noise` must be a tensor shaped like `sample` {tuple(sample.shape)}, got {shape}."
            )
        return mixture_noise.to(sample.device)
    if generator is not None or torch.is_grad_enabled():
        return randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
    return derived_mixture_noise(sample, timestep)
