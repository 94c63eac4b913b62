"""SMDPipeline: unconditional or class-conditional image generation with any diffusers scheduler."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from numbers import Integral
from typing import Any

import torch
from diffusers import DiffusionPipeline, ModelMixin, SchedulerMixin, UNet2DModel
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.image_processor import VaeImageProcessor
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.utils import logging
from diffusers.utils.torch_utils import randn_tensor

from ..models import SMDUNet2DModel, accepts_mixture_noise
from ..schedulers import ETSDM_CONFIG_KEYS, ETSDMSchedulerMixin, convert_to_etsdm, etsdm_settings_from_config
from .loading import write_loading_shims

logger = logging.get_logger(__name__)

OUTPUT_TYPES = ("pil", "np", "pt")
# The denoisers SMDPipeline drives: diffusers' UNet2DModel and the SMD wrapper around it.
SUPPORTED_UNETS = (UNet2DModel, SMDUNet2DModel)


def _accepted_parameters(function: Callable) -> set[str]:
    return set(inspect.signature(function).parameters)


class SMDPipeline(DiffusionPipeline):
    r"""Pipeline for unconditional (or class-conditional) image generation with an SMD or plain UNet.

    Runs the reverse process of DDPM (Ho et al., 2020, Algorithm 2) through the scheduler's ``step``:
    any diffusers scheduler (DDPM, DDIM, DPM-Solver(++), UniPC, Euler, ...) or an E-TSDM scheduler.
    With an SMD UNet (Li et al., 2024, "Soft Mixture Denoising"), a fresh mixture noise eta ~ N(0, I)
    of the sample's shape is drawn at every step from the call's ``generator``, so one seed fixes the
    whole run. E-TSDM schedulers expose the condition timesteps ``f(t)`` in ``timesteps`` and step on
    the real grid by index, so the loop is the stock one: ``unet(x, t)``, ``scheduler.step(out, t, x)``.

    A model trained with E-TSDM is never sampled at the wrong time condition: the pipeline remembers the
    E-TSDM settings its scheduler config records (an E-TSDM scheduler, or a stock one built with
    ``from_config`` from such a config), keeps that record in any scheduler assigned later (so
    ``save_pretrained`` writes it), and at call time converts a stock scheduler to its E-TSDM variant with
    those settings (logging a warning), or refuses one that has no variant.

    Args:
        unet ([`UNet2DModel`] or [`SMDUNet2DModel`]): the denoiser.
        scheduler ([`SchedulerMixin`]): the sampler that turns model outputs into the next sample.
    """

    model_cpu_offload_seq = "unet"
    _callback_tensor_inputs = ["latents"]

    def __init__(self, unet: ModelMixin, scheduler: SchedulerMixin):
        super().__init__()
        self._check_components(unet, scheduler)
        self.register_modules(unet=unet, scheduler=scheduler)
        self.image_processor = VaeImageProcessor(do_resize=False, do_normalize=True)

    #: The denoisers this pipeline drives, and the ``output_type`` values it returns.
    supported_denoisers: tuple[type, ...] = SUPPORTED_UNETS
    output_types: tuple[str, ...] = OUTPUT_TYPES

    @classmethod
    def _check_components(cls, unet: Any, scheduler: Any) -> None:
        names = " or ".join(denoiser.__name__ for denoiser in cls.supported_denoisers)
        if unet is None:
            raise ValueError(f"`unet` is missing: {cls.__name__} needs a denoiser ({names}).")
        if not isinstance(unet, cls.supported_denoisers):
            raise ValueError(f"`unet` must be a {names}; got {type(unet).__name__}.")
        if scheduler is None:
            raise ValueError(
                f"`scheduler` is missing: {cls.__name__} needs a diffusers scheduler (e.g. DDPMScheduler)."
            )
        if not isinstance(scheduler, SchedulerMixin):
            raise ValueError(
                f"`scheduler` must be a diffusers scheduler (a SchedulerMixin such as DDPMScheduler, "
                f"DDIMScheduler, DPMSolverMultistepScheduler or an E-TSDM scheduler); got {type(scheduler).__name__}."
            )

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "scheduler" and isinstance(value, SchedulerMixin):
            self._remember_etsdm(value)
        super().__setattr__(name, value)

    def _remember_etsdm(self, scheduler: SchedulerMixin) -> None:
        """Keep how the model was trained (its E-TSDM settings) across scheduler swaps.

        A scheduler that records E-TSDM settings (switched on or off) replaces the record; one that records
        none (e.g. ``EulerDiscreteScheduler()``) gets the remembered settings as config keys, the way
        ``from_config`` keeps them, so a saved pipeline still records them.
        """
        if isinstance(scheduler, ETSDMSchedulerMixin) or any(
            key in scheduler.config for key in ETSDM_CONFIG_KEYS
        ):
            self.__dict__["_etsdm_training"] = etsdm_settings_from_config(scheduler)
        elif self.__dict__.get("_etsdm_training") is not None:
            scheduler.register_to_config(**self._etsdm_training.to_config())

    def _use_etsdm_scheduler(self) -> None:
        """Convert a stock scheduler to its E-TSDM variant when the model was trained with E-TSDM (else refuse it)."""
        settings = self.__dict__.get("_etsdm_training")
        scheduler = self.scheduler
        if settings is None or isinstance(scheduler, ETSDMSchedulerMixin):
            return
        name = type(scheduler).__name__
        trained = f"this model was trained with E-TSDM (etsdm_threshold={settings.threshold}, etsdm_intervals={settings.intervals})"
        try:
            converted = convert_to_etsdm(scheduler, settings)
        except ValueError as error:
            raise ValueError(
                f"`scheduler`: {trained}, so {name} would query the network at the wrong time condition, and {error}"
            ) from error
        variant = type(converted).__name__
        logger.warning(
            f"SMDPipeline: {trained}; sampling with {variant} instead of {name} so the network sees the shared "
            f"timesteps it was trained with. To sample without E-TSDM on purpose, assign "
            f"{variant}.from_config(pipe.scheduler.config, etsdm_intervals=0)."
        )
        self.scheduler = converted

    def save_config(self, save_directory: str, push_to_hub: bool = False, **kwargs: Any) -> None:
        """Write ``model_index.json`` and the loader shims that let diffusers find this package's classes."""
        super().save_config(save_directory, push_to_hub=push_to_hub, **kwargs)
        write_loading_shims(save_directory)

    @property
    def _denoiser_config(self):
        """Config of the network that fixes the sample shape and class embedding (the wrapped UNet for SMD)."""
        inner = getattr(self.unet, "unet", None)
        return inner.config if isinstance(inner, UNet2DModel) else self.unet.config

    @property
    def num_classes(self) -> int | None:
        """Number of classes of the UNet's class-embedding table, or None when it has none."""
        return self._denoiser_config.get("num_class_embeds")

    def _sample_shape(self, batch_size: int) -> tuple[int, ...]:
        config = self._denoiser_config
        size = config.sample_size
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        return (batch_size, config.in_channels, height, width)

    def check_inputs(
        self,
        batch_size: Any,
        num_inference_steps: Any,
        generator: Any,
        eta: Any,
        class_labels: Any,
        output_type: Any,
        callback_on_step_end_tensor_inputs: Sequence[str],
    ) -> None:
        """Raise a ValueError naming the first bad argument, before any work starts."""
        # numbers.Integral: numpy integers are accepted wherever Python ints are
        if isinstance(batch_size, bool) or not isinstance(batch_size, Integral) or batch_size < 1:
            raise ValueError(f"`batch_size` must be an integer >= 1; got {batch_size!r}.")
        if (
            isinstance(num_inference_steps, bool)
            or not isinstance(num_inference_steps, Integral)
            or num_inference_steps < 1
        ):
            raise ValueError(f"`num_inference_steps` must be an integer >= 1; got {num_inference_steps!r}.")
        if isinstance(generator, list):
            if len(generator) != batch_size:
                raise ValueError(
                    f"`generator` is a list of {len(generator)} generators but `batch_size` is {batch_size}: "
                    "pass one generator per example, or a single generator."
                )
            if not all(isinstance(g, torch.Generator) for g in generator):
                raise ValueError("`generator` must be a torch.Generator or a list of torch.Generator.")
        elif generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(
                f"`generator` must be a torch.Generator or a list of them; got {type(generator).__name__}."
            )
        if eta is not None and "eta" not in _accepted_parameters(self.scheduler.step):
            raise ValueError(
                f"`eta` is only used by schedulers whose step takes it (e.g. DDIMScheduler); "
                f"{type(self.scheduler).__name__} does not. Leave `eta` unset."
            )
        if output_type not in self.output_types:
            raise ValueError(f"`output_type` must be one of {self.output_types}; got {output_type!r}.")
        unknown = [
            name for name in callback_on_step_end_tensor_inputs if name not in self._callback_tensor_inputs
        ]
        if unknown:
            raise ValueError(
                f"`callback_on_step_end_tensor_inputs` may only name {self._callback_tensor_inputs}; got {unknown}."
            )
        self._check_class_labels(class_labels, batch_size)

    @property
    def is_class_conditional(self) -> bool:
        """Whether the UNet has a class embedding (and so needs ``class_labels``)."""
        config = self._denoiser_config
        return config.get("class_embed_type") is not None or config.get("num_class_embeds") is not None

    def _check_class_labels(self, class_labels: Any, batch_size: int) -> None:
        if not self.is_class_conditional:
            if class_labels is not None:
                raise ValueError(
                    "`class_labels` was given but the UNet is unconditional (it has no class embedding)."
                )
            return
        num_classes = self.num_classes
        if class_labels is None:
            counted = f" ({num_classes} classes)" if num_classes is not None else ""
            raise ValueError(
                f"`class_labels` is required: the UNet is class-conditional{counted}. "
                "Pass an int or one label per example."
            )
        if num_classes is None:  # timestep / identity class embeddings take arbitrary tensors
            return
        try:
            labels = torch.as_tensor(class_labels)
        except (TypeError, ValueError, RuntimeError) as error:
            raise ValueError(
                f"`class_labels` must be an int, or a list / 1-D tensor of ints; got {class_labels!r}."
            ) from error
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool or labels.ndim > 1:
            raise ValueError("`class_labels` must be an int, or a list / 1-D tensor of ints.")
        if labels.ndim == 1 and labels.numel() != batch_size:
            raise ValueError(f"`class_labels` has {labels.numel()} labels but `batch_size` is {batch_size}.")
        if (labels < 0).any() or (labels >= num_classes).any():
            raise ValueError(f"`class_labels` must lie in [0, {num_classes - 1}]; got {labels.tolist()}.")

    def _prepare_class_labels(
        self, class_labels: Any, batch_size: int, device: torch.device
    ) -> torch.Tensor | None:
        if class_labels is None:
            return None
        if self.num_classes is None:
            return torch.as_tensor(class_labels, device=device)
        labels = torch.as_tensor(class_labels, dtype=torch.long, device=device)
        return labels.expand(batch_size) if labels.ndim == 0 else labels

    def _step_kwargs(self, generator: Any, eta: float | None) -> dict[str, Any]:
        accepted = _accepted_parameters(self.scheduler.step)
        kwargs: dict[str, Any] = {}
        if eta is not None:
            kwargs["eta"] = eta
        if "generator" in accepted:
            kwargs["generator"] = generator
        return kwargs

    def _postprocess(self, latents: torch.Tensor, output_type: str):
        """Final samples -> images in [0, 1] (``pil``, ``np`` NHWC or ``pt`` NCHW)."""
        return self.image_processor.postprocess(latents, output_type=output_type)

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        num_inference_steps: int = 50,
        generator: torch.Generator | list[torch.Generator] | None = None,
        eta: float | None = None,
        class_labels: int | list[int] | torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable | PipelineCallback | MultiPipelineCallbacks | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> ImagePipelineOutput | tuple:
        r"""Generate images.

        Args:
            batch_size: number of images.
            num_inference_steps: number of denoising steps (>= 1).
            generator: a torch.Generator, or one per example; fixes the initial noise, the SMD mixture
                noise and any scheduler noise, so a seed fixes the whole run.
            eta: DDIM's eta, passed only to schedulers whose ``step`` takes it (an error otherwise).
            class_labels: an int or one label per example, for a class-conditional UNet.
            output_type: "pil", "np" (NHWC float in [0, 1]) or "pt" (NCHW float in [0, 1]).
            return_dict: return an [`ImagePipelineOutput`] instead of a tuple.
            callback_on_step_end: called as ``callback(pipe, step, timestep, callback_kwargs)`` after each step;
                it may return a dict that replaces the named tensors (e.g. ``{"latents": ...}``).
            callback_on_step_end_tensor_inputs: tensors passed in ``callback_kwargs`` (only "latents").

        Returns:
            [`ImagePipelineOutput`] with ``.images``, or ``(images,)`` when ``return_dict`` is False.
        """
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        self.check_inputs(
            batch_size,
            num_inference_steps,
            generator,
            eta,
            class_labels,
            output_type,
            callback_on_step_end_tensor_inputs,
        )
        self._use_etsdm_scheduler()
        batch_size, num_inference_steps = int(batch_size), int(num_inference_steps)  # numpy ints too
        device = self._execution_device
        dtype = self.unet.dtype
        labels = self._prepare_class_labels(class_labels, batch_size, device)
        takes_mixture_noise = accepts_mixture_noise(self.unet)

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        latents = randn_tensor(
            self._sample_shape(batch_size), generator=generator, device=device, dtype=dtype
        )
        latents = latents * self.scheduler.init_noise_sigma
        step_kwargs = self._step_kwargs(generator, eta)

        self._num_timesteps = len(timesteps)
        num_warmup_steps = len(timesteps) - num_inference_steps * self.scheduler.order
        with self.progress_bar(total=num_inference_steps) as progress_bar:
            for i, t in enumerate(timesteps):
                model_input = self.scheduler.scale_model_input(latents, t)
                model_kwargs: dict[str, Any] = {}
                if labels is not None:
                    model_kwargs["class_labels"] = labels
                if takes_mixture_noise:
                    # eta has the sample's shape; drawing it here (not in the model) makes a generator
                    # list give each example its own stream, exactly as a batch of one would.
                    model_kwargs["mixture_noise"] = randn_tensor(
                        model_input.shape, generator=generator, device=device, dtype=model_input.dtype
                    )
                model_output = self.unet(model_input, t, **model_kwargs).sample
                latents = self.scheduler.step(model_output, t, latents, **step_kwargs).prev_sample

                if callback_on_step_end is not None:
                    available = {"latents": latents}
                    callback_kwargs = {name: available[name] for name in callback_on_step_end_tensor_inputs}
                    callback_outputs = callback_on_step_end(self, i, t, callback_kwargs)
                    if not isinstance(callback_outputs, dict):
                        raise TypeError(
                            "`callback_on_step_end` must return a dict of the tensors it changes (e.g. "
                            f"`return callback_kwargs`, or `{{}}` to change nothing); it returned {callback_outputs!r}"
                        )
                    latents = callback_outputs.pop("latents", latents)

                if i == len(timesteps) - 1 or (
                    (i + 1) > num_warmup_steps and (i + 1) % self.scheduler.order == 0
                ):
                    progress_bar.update()

        images = self._postprocess(latents, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)
