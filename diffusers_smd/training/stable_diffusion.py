"""The pretrained latent text-to-image models text-to-image fine-tuning accepts: Stable Diffusion 1.x / 2.x and SDXL.

:func:`read_pretrained_layout` reads only config files (``model_index.json``, ``unet/``, ``vae/``,
``scheduler/``), so every incompatibility is named before any weight is loaded: a pixel-space model, an SDXL
refiner, an inpainting or class-conditional UNet, a UNet whose inputs do not match the VAE, an SD / SDXL mix-up.
:func:`resolve_resolution` checks ``--resolution`` against the VAE's and the UNet's downsampling factors.
:func:`load_pretrained_pipeline` loads the pipeline itself and checks the text encoders against the UNet.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from .task import check_denoiser_config

__all__ = ["PretrainedLayout", "load_pretrained_pipeline", "read_pretrained_layout", "resolve_resolution"]

FLAG = "--pretrained_model_name_or_path"


@dataclass(frozen=True)
class PretrainedLayout:
    """What the config files of a pretrained Stable Diffusion (XL) pipeline say."""

    source: str
    #: ``model_index.json``.
    model_index: dict
    #: ``UNet2DConditionModel`` or ``SMDUNet2DConditionModel``.
    unet_class_name: str
    #: The config of the UNet2DConditionModel (the wrapped one of an SMD UNet).
    unet_config: dict
    vae_config: dict
    scheduler_config: dict
    is_sdxl: bool

    @property
    def pipeline_class(self) -> type:
        """``StableDiffusionXLPipeline`` (two text encoders) or ``StableDiffusionPipeline``."""
        import diffusers

        return diffusers.StableDiffusionXLPipeline if self.is_sdxl else diffusers.StableDiffusionPipeline

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent along each side, as diffusers' pipelines compute it."""
        return 2 ** (len(self.vae_config["block_out_channels"]) - 1)

    @property
    def unet_downsampling_factor(self) -> int:
        """How many times the UNet halves its input: every down block but the last downsamples."""
        return 2 ** (len(self.unet_config["down_block_types"]) - 1)

    @property
    def native_resolution(self) -> int:
        """The pixel size the model was made for: the UNet's sample_size times the VAE scale factor."""
        size = self.unet_config.get("sample_size") or 64
        size = size[0] if isinstance(size, (list, tuple)) else size
        return int(size) * self.vae_scale_factor


def _load_config(loader: Any, source: str, subfolder: str | None, revision, cache_dir) -> dict | None:
    try:
        return dict(loader.load_config(source, subfolder=subfolder, revision=revision, cache_dir=cache_dir))
    except (OSError, ValueError):
        return None


def _components(model_index: dict) -> dict[str, str]:
    """Component name -> class name of the components the index names (``[null, null]`` ones left out)."""
    return {
        name: entry[1]
        for name, entry in model_index.items()
        if not name.startswith("_") and isinstance(entry, (list, tuple)) and len(entry) == 2 and entry[1]
    }


def read_pretrained_layout(
    source: str, revision: str | None = None, cache_dir: str | None = None
) -> PretrainedLayout:
    """Read and check the config files of the pipeline ``source`` (a folder or Hub repo id).

    Raises ValueError naming ``--pretrained_model_name_or_path`` for anything but a Stable Diffusion 1.x / 2.x
    (UNet2DConditionModel + AutoencoderKL + one CLIP text encoder) or SDXL base (two text encoders, text-time
    UNet) text-to-image pipeline, or the same with an SMD UNet.
    """
    from diffusers import AutoencoderKL, DDPMScheduler, DiffusionPipeline, UNet2DConditionModel

    flag = f"{FLAG} {source!r}"
    if source.startswith(("/", ".", "~")) and not os.path.exists(os.path.expanduser(source)):
        raise ValueError(f"{flag}: no such folder")
    index = _load_config(DiffusionPipeline, source, None, revision, cache_dir)
    if index is None:
        single = _load_config(UNet2DConditionModel, source, None, revision, cache_dir)
        if single is not None and single.get("_class_name"):
            raise ValueError(
                f"{flag} holds a single {single['_class_name']} model, not a pipeline; this script needs a text-to-"
                "image pipeline folder or repo (model_index.json with unet/, vae/, text_encoder/, tokenizer/)"
            )
        offline = " (offline: HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise ValueError(
            f"{flag}: found no pipeline model_index.json; give a Stable Diffusion 1.x / 2.x or SDXL pipeline folder "
            f"or Hub repo id (a Hub repo id needs the network or the local Hub cache{offline})"
        )
    name = index.get("_class_name")
    name = name[-1] if isinstance(name, (list, tuple)) else name
    components = _components(index)
    if "vae" not in components or "unet" not in components:
        raise ValueError(
            f"{flag} is a {name} without a VAE: a pixel-space model. This script fine-tunes latent text-to-image "
            "models (Stable Diffusion 1.x / 2.x, SDXL); train pixel-space UNets with training/train_smd.py "
            "(`diffusers-smd train`)"
        )
    if "text_encoder" not in components or "tokenizer" not in components:
        kind = (
            "an SDXL refiner (no first text encoder)"
            if "text_encoder_2" in components
            else "without a text encoder"
        )
        raise ValueError(
            f"{flag} is {kind}; this script fine-tunes text-to-image base models (Stable Diffusion 1.x / 2.x, SDXL)"
        )
    is_sdxl = "text_encoder_2" in components
    if is_sdxl and "tokenizer_2" not in components:
        raise ValueError(f"{flag} has a second text encoder but no tokenizer_2")
    unet_config = _load_config(UNet2DConditionModel, source, "unet", revision, cache_dir) or {}
    unet_class_name = unet_config.get("_class_name")
    if unet_class_name == "SMDUNet2DConditionModel":
        unet_config = dict(unet_config.get("unet_config") or {})
    elif unet_class_name != "UNet2DConditionModel":
        raise ValueError(
            f"{flag}: incompatible model: its UNet is a {unet_class_name!r}; this script fine-tunes "
            "UNet2DConditionModel (and SMDUNet2DConditionModel) text-to-image UNets"
        )
    vae_config = _load_config(AutoencoderKL, source, "vae", revision, cache_dir) or {}
    if vae_config.get("_class_name") != "AutoencoderKL":
        raise ValueError(
            f"{flag}: its VAE is a {vae_config.get('_class_name')!r}; Stable Diffusion fine-tuning needs an AutoencoderKL"
        )
    _check_unet(flag, unet_config, vae_config, is_sdxl)
    scheduler_config = _load_config(DDPMScheduler, source, "scheduler", revision, cache_dir)
    if scheduler_config is None:
        raise ValueError(f"{flag} has no scheduler/scheduler_config.json (its noise schedule)")
    return PretrainedLayout(
        source, index, unet_class_name, unet_config, vae_config, scheduler_config, is_sdxl
    )


def _check_unet(flag: str, unet: dict, vae: dict, is_sdxl: bool) -> None:
    in_channels, latent_channels = unet.get("in_channels"), vae.get("latent_channels")
    if in_channels != latent_channels:
        raise ValueError(
            f"{flag}: incompatible model: its UNet takes {in_channels} input channels but the VAE makes "
            f"{latent_channels}-channel latents (an inpainting, depth or upscaling model?); only text-to-image "
            "UNets are supported"
        )
    check_denoiser_config(unet, flag, "not a text-to-image UNet")
    addition = unet.get("addition_embed_type")
    if is_sdxl and addition != "text_time":
        raise ValueError(
            f"{flag}: incompatible model: two text encoders (SDXL) but the UNet's addition_embed_type is "
            f"{addition!r}, not 'text_time'"
        )
    if not is_sdxl and addition is not None:
        raise ValueError(
            f"{flag}: incompatible model: the UNet expects added conditions ({addition!r}) that a one-encoder "
            "Stable Diffusion pipeline does not make"
        )


def resolve_resolution(layout: PretrainedLayout, resolution: int | None) -> int:
    """``--resolution`` (default: the model's own), checked to be a multiple of what the VAE and UNet divide by."""
    factor = layout.vae_scale_factor * layout.unet_downsampling_factor
    value = layout.native_resolution if resolution is None else resolution
    if value % factor:
        raise ValueError(
            f"--resolution {value} is not a size this model can handle: its VAE downsamples by "
            f"{layout.vae_scale_factor} and its UNet by {layout.unet_downsampling_factor}, so the size must be a "
            f"multiple of {factor} (the model's own resolution is {layout.native_resolution})"
        )
    return value


def load_pretrained_pipeline(layout: PretrainedLayout, revision=None, variant=None, cache_dir=None) -> Any:
    """The pretrained pipeline (as stored, on the CPU, no safety checker), its text encoders checked against the UNet."""
    kwargs: dict[str, Any] = {"revision": revision, "variant": variant, "cache_dir": cache_dir}
    if "safety_checker" in layout.model_index:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    pipeline = layout.pipeline_class.from_pretrained(layout.source, **kwargs)
    pipeline.set_progress_bar_config(disable=True)
    unet = layout.unet_config
    encoders = [pipeline.text_encoder] + ([pipeline.text_encoder_2] if layout.is_sdxl else [])
    hidden = sum(int(encoder.config.hidden_size) for encoder in encoders)
    if hidden != unet.get("cross_attention_dim"):
        raise ValueError(
            f"{FLAG} {layout.source!r}: incompatible model: the text encoder(s) give {hidden} features but the "
            f"UNet's cross_attention_dim is {unet.get('cross_attention_dim')}"
        )
    if layout.is_sdxl:
        expected = int(pipeline.text_encoder_2.config.projection_dim) + 6 * int(
            unet["addition_time_embed_dim"]
        )
        if unet.get("projection_class_embeddings_input_dim") != expected:
            raise ValueError(
                f"{FLAG} {layout.source!r}: incompatible model: the UNet's projection_class_embeddings_input_dim "
                f"{unet.get('projection_class_embeddings_input_dim')} is not the pooled text embedding plus 6 time ids "
                f"({expected}); an SDXL refiner or a different conditioning?"
            )
    return pipeline
