"""LoRA fine-tuning of a (SMD) UNet2DConditionModel, saved as standard diffusers LoRA weights.

As diffusers' ``examples/text_to_image/train_text_to_image_lora.py``: adapters are added with
``unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
target_modules=["to_k", "to_q", "to_v", "to_out.0"]))`` (peft), their weights are read with
``get_peft_model_state_dict`` and written by ``StableDiffusionPipeline.save_lora_weights`` (or the SDXL
pipeline's) as ``pytorch_lora_weights.safetensors``, which a stock pipeline loads with
``pipe.load_lora_weights(folder)``.

With an SMD model the adapters go into the wrapped UNet (``model.unet``), so the LoRA file is exactly what the
plain base UNet takes, and the SMD modules (identifier g_xi, hypernetworks f_phi), which the base model does not
have, are trained in full and saved next to it:

    <folder>/pytorch_lora_weights.safetensors     the LoRA layers of the UNet (standard diffusers format)
    <folder>/smd_modules/config.json              the SMD sizes (latent_dim, hypernetwork layers, identifier)
    <folder>/smd_modules/smd_modules.safetensors  identifier.*, hypernet_in.*, hypernet_out.* in full
    <folder>/scheduler/scheduler_config.json      the sampling scheduler to use (E-TSDM variant with --etsdm)

:func:`load_lora_fine_tune` puts all three into a stock pipeline of the base model.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch

__all__ = [
    "LORA_TARGET_MODULES",
    "LORA_WEIGHT_NAME",
    "SMD_MODULES_FOLDER",
    "add_lora_adapters",
    "load_lora_fine_tune",
    "load_lora_folder_into",
    "save_lora_folder",
]

#: The attention projections diffusers' train_text_to_image_lora.py adapts.
LORA_TARGET_MODULES = ("to_k", "to_q", "to_v", "to_out.0")
#: diffusers' file name for LoRA weights in safetensors (``LORA_WEIGHT_NAME_SAFE``).
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
SMD_MODULES_FOLDER = "smd_modules"
SMD_MODULES_WEIGHTS = "smd_modules.safetensors"
SCHEDULER_FOLDER = "scheduler"
#: The SMD wrapper's settings that rebuild its modules around a base UNet (``SMDUNet2DConditionModel.from_unet``).
SMD_SETTINGS = (
    "latent_dim",
    "num_hypernet_layers",
    "identifier_block_out_channels",
    "identifier_layers_per_block",
    "identifier_norm_num_groups",
)


def base_unet(model: torch.nn.Module) -> torch.nn.Module:
    """The UNet2DConditionModel that carries the LoRA layers: the wrapped one of an SMD model, else ``model``."""
    from ..models import SMDUNet2DConditionModel

    return model.unet if isinstance(model, SMDUNet2DConditionModel) else model


def _smd_module_names(model: torch.nn.Module) -> list[str]:
    from ..models import SMDUNet2DConditionModel

    if not isinstance(model, SMDUNet2DConditionModel):
        return []
    return [name for name, _ in model.named_children() if name != "unet"]


def add_lora_adapters(model: torch.nn.Module, rank: int) -> list[torch.nn.Parameter]:
    """Freeze the UNet, add LoRA adapters of ``rank`` to its attention projections, keep SMD modules trainable.

    Returns the parameters to train: the adapters' (and, for an SMD model, every SMD module's), in fp32
    (``diffusers.training_utils.cast_training_params``) whatever the frozen weights' dtype.
    """
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig

    model.requires_grad_(False)
    base_unet(model).add_adapter(
        LoraConfig(
            r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=list(LORA_TARGET_MODULES)
        )
    )
    for name in _smd_module_names(model):
        getattr(model, name).requires_grad_(True)
    cast_training_params(model, dtype=torch.float32)
    return [p for p in model.parameters() if p.requires_grad]


def lora_layers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The LoRA weights in diffusers' format (``convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))``)."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    return convert_state_dict_to_diffusers(get_peft_model_state_dict(base_unet(model)))


def save_lora_folder(
    folder: str, model: torch.nn.Module, pipeline_class: type, scheduler: Any | None = None
) -> None:
    """Write the LoRA weights (``pipeline_class.save_lora_weights``), the SMD modules and ``scheduler`` to ``folder``."""
    from safetensors.torch import save_file

    from ..atomic import write_json

    unet = base_unet(model)
    pipeline_class.save_lora_weights(
        folder,
        unet_lora_layers=lora_layers(model),
        unet_lora_adapter_metadata=unet.peft_config["default"].to_dict(),
        safe_serialization=True,
    )
    names = _smd_module_names(model)
    if names:
        smd_folder = os.path.join(folder, SMD_MODULES_FOLDER)
        os.makedirs(smd_folder, exist_ok=True)
        weights = {
            key: value.detach().to("cpu", torch.float32).contiguous()
            for key, value in model.state_dict().items()
            if key.split(".")[0] in names
        }
        save_file(weights, os.path.join(smd_folder, SMD_MODULES_WEIGHTS))
        settings = {name: model.config[name] for name in SMD_SETTINGS}
        write_json(os.path.join(smd_folder, "config.json"), {"_class_name": type(model).__name__, **settings})
    if scheduler is not None:
        scheduler.save_pretrained(os.path.join(folder, SCHEDULER_FOLDER))


def _read_lora_layers(folder: str) -> dict[str, torch.Tensor]:
    """The UNet's LoRA weights of ``folder`` in peft's format (the keys ``set_peft_model_state_dict`` takes)."""
    from diffusers.utils import convert_unet_state_dict_to_peft
    from safetensors.torch import load_file

    state = load_file(os.path.join(folder, LORA_WEIGHT_NAME))
    unet_state = {key.removeprefix("unet."): value for key, value in state.items() if key.startswith("unet.")}
    return convert_unet_state_dict_to_peft(unet_state)


def _load_smd_modules(model: torch.nn.Module, folder: str) -> None:
    from safetensors.torch import load_file

    weights = load_file(os.path.join(folder, SMD_MODULES_FOLDER, SMD_MODULES_WEIGHTS))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [key for key in missing if key.split(".")[0] in _smd_module_names(model)]
    if missing or unexpected:
        raise ValueError(
            f"{folder}/{SMD_MODULES_FOLDER} does not match this SMD model (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]})"
        )


def load_lora_folder_into(model: torch.nn.Module, folder: str) -> None:
    """Load what :func:`save_lora_folder` wrote into a model that already has the same adapters (resuming)."""
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(base_unet(model), _read_lora_layers(folder), adapter_name="default")
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise ValueError(f"{folder}/{LORA_WEIGHT_NAME} holds LoRA weights this model lacks: {unexpected[:3]}")
    if _smd_module_names(model):
        _load_smd_modules(model, folder)


def load_lora_fine_tune(pipeline: Any, folder: str | os.PathLike, adapter_name: str | None = None) -> Any:
    """Load a ``--lora`` fine-tune of ``train_text_to_image_smd.py`` into a stock pipeline of its base model.

    1. With SMD (``smd_modules/`` in ``folder``): ``pipeline.unet`` becomes
       ``SMDUNet2DConditionModel.from_unet(pipeline.unet, **smd_modules/config.json)`` and the trained SMD
       modules are loaded into it;
    2. ``pipeline.load_lora_weights(folder)`` adds the LoRA layers (diffusers' own loader, into the UNet);
    3. ``pipeline.scheduler`` becomes the saved sampling scheduler (``scheduler/``: the E-TSDM variant for an
       E-TSDM fine-tune, so the network is queried at the shared early timesteps it was trained with).

    Returns ``pipeline`` (changed in place). Without SMD and E-TSDM, step 2 alone is the whole of it.
    """
    import diffusers_smd

    from ..models import SMDUNet2DConditionModel

    folder = os.fspath(folder)
    if not os.path.isfile(os.path.join(folder, LORA_WEIGHT_NAME)):
        raise ValueError(f"{folder!r} holds no {LORA_WEIGHT_NAME} (not the output of a --lora fine-tune)")
    smd_config_path = os.path.join(folder, SMD_MODULES_FOLDER, "config.json")
    if os.path.isfile(smd_config_path):
        with open(smd_config_path, encoding="utf-8") as handle:
            settings = {k: v for k, v in json.load(handle).items() if k in SMD_SETTINGS}
        unet = pipeline.unet
        if not isinstance(unet, SMDUNet2DConditionModel):
            unet = SMDUNet2DConditionModel.from_unet(unet, **settings)
        _load_smd_modules(unet, folder)
        pipeline.unet = unet
    pipeline.load_lora_weights(folder, adapter_name=adapter_name)
    scheduler_config = os.path.join(folder, SCHEDULER_FOLDER, "scheduler_config.json")
    if os.path.isfile(scheduler_config):
        with open(scheduler_config, encoding="utf-8") as handle:
            class_name = json.load(handle)["_class_name"]
        import diffusers

        scheduler_class = getattr(diffusers_smd, class_name, None) or getattr(diffusers, class_name)
        pipeline.scheduler = scheduler_class.from_pretrained(folder, subfolder=SCHEDULER_FOLDER)
    return pipeline
