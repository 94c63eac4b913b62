"""Tiny models and folders shared by the pipeline tests."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    DDPMScheduler,
    SD3Transformer2DModel,
    UNet2DConditionModel,
    UNet2DModel,
)
from diffusers.models.unets.unet_2d import UNet2DOutput
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from diffusers_smd import SMDUNet2DModel

NUM_TRAIN_TIMESTEPS = 100


def tiny_unet(
    num_class_embeds: int | None = None, seed: int = 0, *, perturbed: bool = True, **overrides
) -> UNet2DModel:
    """The tests' one tiny UNet2DModel: 1-channel 8x8, block_out_channels (8, 16), initialised from ``seed``.

    ``overrides`` change any config key (e.g. 3 channels and attention blocks). ``perturbed`` adds small seeded
    noise to every weight, because diffusers zero-initialises some layers and a test should see every weight
    matter; ``perturbed=False`` keeps diffusers' own initialisation.
    """
    torch.manual_seed(seed)
    config = dict(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        num_class_embeds=num_class_embeds,
    )
    unet = UNet2DModel(**{**config, **overrides})
    return perturb(unet, seed) if perturbed else unet.eval()


def ddpm_scheduler() -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def perturb(model: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
    """Add small seeded noise to every parameter (zero-initialised layers then matter)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    return model.eval()


def smd_unet(num_class_embeds: int | None = None, seed: int = 0) -> SMDUNet2DModel:
    """A tiny SMDUNet2DModel around :func:`tiny_unet`, perturbed so the mixture modules change its output."""
    model = SMDUNet2DModel.from_unet(tiny_unet(num_class_embeds, seed), latent_dim=4, num_hypernet_layers=1)
    return perturb(model, seed + 1)


def mixture_unet(seed: int = 0) -> torch.nn.Module:
    """A tiny denoiser following the SMD forward convention (``mixture_noise=`` / ``generator=``)."""
    unet = tiny_unet(seed=seed)
    model = MixtureNoiseUNet.from_config(unet.config)
    model.load_state_dict(unet.state_dict())
    return model.eval()


class MixtureNoiseUNet(UNet2DModel):
    """Test double for the SMD forward convention: the UNet's output plus 0.1 * eta.

    eta is ``mixture_noise`` when given, else drawn from ``generator``; so the output reveals exactly
    which eta the pipeline supplied.
    """

    def forward(
        self, sample, timestep, class_labels=None, return_dict=True, *, mixture_noise=None, generator=None
    ):
        if mixture_noise is None:
            mixture_noise = torch.randn(sample.shape, generator=generator, dtype=sample.dtype)
        output = super().forward(sample, timestep, class_labels).sample + 0.1 * mixture_noise
        return UNet2DOutput(sample=output) if return_dict else (output,)


# ---- tiny Stable Diffusion family components (random weights, built locally, no network) ----------
CLIP_HIDDEN = 16


def tiny_clip_tokenizer(folder) -> CLIPTokenizer:
    """A character-level CLIP tokenizer (a-z) written to ``folder``; prompts are at most 8 tokens."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for letter in "abcdefghijklmnopqrstuvwxyz":
            vocab[letter + suffix] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=8)


def _clip_config(projection_dim: int = CLIP_HIDDEN) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=54,
        hidden_size=CLIP_HIDDEN,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=8,
        projection_dim=projection_dim,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )


def tiny_vae(latent_channels: int = 4, **kwargs) -> AutoencoderKL:
    """A one-block AutoencoderKL (scale factor 1: an 8x8 image has 8x8 latents)."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8,),
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
        latent_channels=latent_channels,
        norm_num_groups=4,
        sample_size=8,
        **kwargs,
    )


def tiny_sd_unet(cross_attention_dim: int = CLIP_HIDDEN, **overrides) -> UNet2DConditionModel:
    """The tests' one tiny UNet2DConditionModel (4 latent channels, 8x8, a cross-attention block)."""
    config = dict(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        norm_num_groups=4,
        attention_head_dim=2,
    )
    return UNet2DConditionModel(**{**config, **overrides})


def tiny_sd_components(folder, seed: int = 0) -> dict:
    """Components of ``StableDiffusionPipeline`` (and img2img / inpaint with a 4-channel UNet), scheduler excluded."""
    torch.manual_seed(seed)
    return {
        "vae": tiny_vae(),
        "text_encoder": CLIPTextModel(_clip_config()).eval(),
        "tokenizer": tiny_clip_tokenizer(folder),
        "unet": perturb(tiny_sd_unet(), seed),
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
    }


def tiny_controlnet(unet: UNet2DConditionModel, seed: int = 0) -> ControlNetModel:
    """A ControlNet copied from ``unet`` whose zero-initialised convolutions are perturbed (so it matters)."""
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8,))
    return perturb(controlnet, seed + 1)


def tiny_sdxl_components(folder, seed: int = 0) -> dict:
    """Components of ``StableDiffusionXLPipeline`` (two CLIP encoders, text-time UNet), scheduler excluded."""
    torch.manual_seed(seed)
    unet = tiny_sd_unet(
        cross_attention_dim=2 * CLIP_HIDDEN,
        addition_embed_type="text_time",
        addition_time_embed_dim=4,
        projection_class_embeddings_input_dim=CLIP_HIDDEN + 6 * 4,
    )
    tokenizer = tiny_clip_tokenizer(folder)
    return {
        "vae": tiny_vae(),
        "text_encoder": CLIPTextModel(_clip_config()).eval(),
        "text_encoder_2": CLIPTextModelWithProjection(_clip_config()).eval(),
        "tokenizer": tokenizer,
        "tokenizer_2": tokenizer,
        "unet": perturb(unet, seed),
        "add_watermarker": False,
    }


def tiny_sd3_components(folder, seed: int = 0) -> dict:
    """Components of ``StableDiffusion3Pipeline`` without T5 (``text_encoder_3=None``), scheduler excluded."""
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=8,
        patch_size=1,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        caption_projection_dim=16,
        joint_attention_dim=2 * CLIP_HIDDEN,
        pooled_projection_dim=2 * CLIP_HIDDEN,
        out_channels=4,
    )
    tokenizer = tiny_clip_tokenizer(folder)
    return {
        "transformer": perturb(transformer, seed),
        "vae": tiny_vae(
            shift_factor=0.0609, scaling_factor=1.5035, use_quant_conv=False, use_post_quant_conv=False
        ),
        "text_encoder": CLIPTextModelWithProjection(_clip_config()).eval(),
        "text_encoder_2": CLIPTextModelWithProjection(_clip_config()).eval(),
        "text_encoder_3": None,
        "tokenizer": tokenizer,
        "tokenizer_2": tokenizer,
        "tokenizer_3": None,
    }


# ---- the E-TSDM rule written independently, and the hook that feeds it to a network ------------------
def reference_rule(t, threshold, intervals):
    """f(t) for one Python number: t above the threshold, else the left end of its sub-interval.

    Integer timesteps get the first integer of the sub-interval (ceil of the left end).
    """
    if t >= threshold:
        return t
    width = Fraction(threshold) / intervals
    left = math.floor(Fraction(t) / width) * width
    return math.ceil(left) if isinstance(t, int) else float(left)


def reference_condition(timestep, threshold, intervals):
    """Apply :func:`reference_rule` to a timestep as a network receives it (number or tensor of any shape)."""
    if not isinstance(timestep, torch.Tensor):
        return reference_rule(timestep, threshold, intervals)
    values = [reference_rule(v, threshold, intervals) for v in timestep.flatten().tolist()]
    return torch.tensor(values, dtype=timestep.dtype, device=timestep.device).reshape(timestep.shape)


def condition_hook(module: torch.nn.Module, threshold=None, intervals=None):
    """Record the timestep every call of ``module`` receives; with a threshold, first replace it by f(t).

    A forward pre-hook (the independent E-TSDM reference): the timestep is the second positional argument or
    the ``timestep`` keyword, as diffusers pipelines pass it. Returns ``(seen, handle)``.
    """
    seen = []

    def hook(_, args, kwargs):
        args = list(args)
        positional = len(args) > 1
        timestep = args[1] if positional else kwargs["timestep"]
        if threshold is not None:
            timestep = reference_condition(timestep, threshold, intervals)
            if positional:
                args[1] = timestep
            else:
                kwargs["timestep"] = timestep
        seen.append(timestep.tolist() if isinstance(timestep, torch.Tensor) else timestep)
        return tuple(args), kwargs

    return seen, module.register_forward_pre_hook(hook, with_kwargs=True)


# ---- a tiny "pretrained" text-to-image pipeline folder (for the text-to-image training tests) --------
def save_tiny_text_to_image_pipeline(folder, sdxl: bool = False, seed: int = 0) -> Path:
    """Save a tiny Stable Diffusion (``sdxl=False``) or SDXL pipeline folder that plays a pretrained model.

    The VAE has two stages (scale factor 2) and the UNet two (factor 2), so its native resolution is
    8 px (latents 4x4, ``sample_size`` 4) and a training resolution must be a multiple of 4. Schedulers as
    the real models ship them: SD 1.5's PNDM (no E-TSDM variant) and SDXL's Euler (leading spacing).
    """
    import tempfile

    from diffusers import (
        EulerDiscreteScheduler,
        PNDMScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
    )

    folder = Path(folder)
    betas = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "steps_offset": 1}
    with tempfile.TemporaryDirectory() as tokenizer_folder:
        components = (tiny_sdxl_components if sdxl else tiny_sd_components)(tokenizer_folder, seed)
    torch.manual_seed(seed)
    components["vae"] = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 8),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=8,
    ).eval()
    components["unet"].register_to_config(sample_size=4)
    if sdxl:
        scheduler = EulerDiscreteScheduler(timestep_spacing="leading", **betas)
        pipeline = StableDiffusionXLPipeline(scheduler=scheduler, **components)
    else:
        scheduler = PNDMScheduler(skip_prk_steps=True, set_alpha_to_one=False, **betas)
        pipeline = StableDiffusionPipeline(scheduler=scheduler, **components)
    pipeline.save_pretrained(folder)
    return folder


CAPTIONS = ("a red cat", "a blue dog", "a green tree")


def captioned_images(count: int = 6, seed: int = 0) -> tuple[list, list]:
    """``count`` small random RGB images of mixed sizes and their captions."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    sizes = [(8, 8), (12, 10), (10, 16)]
    images = [Image.fromarray(rng.integers(0, 256, (*sizes[i % 3], 3), dtype=np.uint8)) for i in range(count)]
    return images, [CAPTIONS[i % len(CAPTIONS)] for i in range(count)]


def save_captioned_image_folder(folder, count: int = 6, seed: int = 0) -> Path:
    """An image folder with a ``metadata.jsonl`` of captions, as diffusers' train_text_to_image.py reads one."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images, captions = captioned_images(count, seed)
    lines = []
    for index, (image, caption) in enumerate(zip(images, captions)):
        image.save(folder / f"{index:03d}.png")
        lines.append(json.dumps({"file_name": f"{index:03d}.png", "text": caption}))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def captioned_dataset(count: int = 6, seed: int = 0):
    """The same images as a ``datasets.Dataset``: an Image column ``image`` and ``text`` holding two captions per
    image (training draws one of them, as diffusers' scripts do with lists of captions)."""
    import datasets

    images, captions = captioned_images(count, seed)
    texts = [[caption, caption.replace("a ", "one ")] for caption in captions]
    return datasets.Dataset.from_dict({"image": images, "text": texts}).cast_column("image", datasets.Image())


def text_to_image_flags(pretrained, output_dir, *extra: str) -> list[str]:
    """Flags of a tiny, fast text-to-image fine-tune of :func:`save_tiny_text_to_image_pipeline`'s model."""
    return [
        "--pretrained_model_name_or_path", str(pretrained),
        "--output_dir", str(output_dir),
        "--resolution", "8",
        "--train_batch_size", "2",
        "--max_train_steps", "2",
        "--smd_latent_dim", "4",
        "--smd_mixture_samples", "2",
        "--learning_rate", "1e-3",
        "--lr_warmup_steps", "0",
        "--validation_num_inference_steps", "2",
        "--seed", "0",
        *extra,
    ]  # fmt: skip
