"""The training engine: the package's one training loop, for every task.

It follows diffusers' ``examples/unconditional_image_generation/train_unconditional.py``: an ``Accelerator``
with a ``ProjectConfiguration``, ``save_state`` / ``load_state`` with hooks that store the model through
``save_pretrained`` (``unet/``, ``unet_ema/``), ``EMAModel`` (store / copy_to / restore around sampling),
``get_scheduler``, a tqdm bar on the main process, TensorBoard logs of loss, learning rate and sample grids,
``checkpoint-<step>`` folders. It holds no model or loss math: the task (:mod:`.task`) builds the network,
noise schedule and data and turns batches into ``(clean sample, conditioning)``; the objective comes from
:data:`diffusers_smd.losses.OBJECTIVES`, bound once (:meth:`~diffusers_smd.losses.DiffusionObjective.bind`)
so the step itself does no introspection.

Reproducibility: with ``--seed`` the data order comes from accelerate's seedable sampler, the noise from
torch's global RNG (saved and restored by ``save_state`` / ``load_state``), and the data loader never draws
from the global RNG, so a resumed run continues exactly where it stopped. A checkpoint records every
setting that defines the model and the objective; resuming with different values is refused before any
step (:func:`~diffusers_smd.training.arguments.free_on_resume` lists those that may change; a `--seed` left
out keeps the run's, a different one is refused).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from typing import Any

import torch

from .arguments import config_to_dict, free_on_resume
from .checkpoints import (
    checkpoint_step,
    list_checkpoints,
    read_run_state,
    resolve_resume_checkpoint,
    save_checkpoint,
)
from .config import TrainingConfig
from .summary import RunSummary
from .task import TaskSetup, TrainingTask

__all__ = ["NonFiniteLossError", "Trainer", "check_before_training", "train"]

logger = logging.getLogger("diffusers_smd.training")


class NonFiniteLossError(RuntimeError):
    """Training stopped because the loss became NaN or infinite (the last good checkpoint is kept)."""


def _count_parameters(parameters) -> int:
    return sum(p.numel() for p in parameters)


def parameter_counts(model: torch.nn.Module, trainable: list[torch.nn.Parameter]) -> dict[str, int | None]:
    """Total parameters, those of the wrapped backbone and of the SMD modules, and the trained ones."""
    total = _count_parameters(model.parameters())
    backbone = getattr(model, "unet", None)
    if isinstance(backbone, torch.nn.Module) and backbone is not model:
        unet = _count_parameters(backbone.parameters())
        smd = total - unet
    else:
        unet, smd = total, 0
    return {"total": total, "unet": unet, "smd_modules": smd, "trainable": _count_parameters(trainable)}


def _check_logger(name: str) -> None:
    """The tracker's package must be importable before training starts (otherwise accelerate logs nothing)."""
    from accelerate.utils import is_tensorboard_available, is_wandb_available

    available = {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available}[name]
    if not available():
        raise ValueError(f"--logger {name} needs the {name} package: pip install {name}")


def _resume_identity(config: TrainingConfig) -> dict[str, Any]:
    """The settings a checkpoint records and a resumed run must repeat (everything not free on resume)."""
    free = set(free_on_resume(type(config)))
    return {name: value for name, value in config_to_dict(config).items() if name not in free}


def _check_resume_compatible(config: TrainingConfig, resume_path: str) -> None:
    """Refuse, naming each flag and both values, a resume whose model- or objective-defining settings differ."""
    state = read_run_state(resume_path)
    recorded = state.get("settings")
    step = checkpoint_step(resume_path)
    if config.max_train_steps is not None and step > config.max_train_steps:
        raise ValueError(
            f"--max_train_steps {config.max_train_steps} is below the step of {os.path.basename(resume_path)} "
            f"({step}): that run is already past it. Resume with --max_train_steps >= {step}, or train a new "
            "model into another --output_dir"
        )
    if config.seed is not None and state.get("seed") not in (None, config.seed):
        raise ValueError(
            f"cannot resume from {resume_path}: --seed {config.seed} differs from the run's seed {state['seed']} "
            "(leave --seed out to keep the run's)"
        )
    if recorded is None:
        return  # a checkpoint of an older version records only its seed
    current = _resume_identity(config)
    changed = [
        f"--{name}: {recorded[name]!r} in the checkpoint, {current[name]!r} now"
        for name in sorted(set(recorded) & set(current))
        if recorded[name] != current[name]
    ]
    if changed:
        raise ValueError(
            f"cannot resume from {resume_path}: these settings differ from the run that wrote it ("
            + "; ".join(changed)
            + "). Resume with the run's settings, or start a new run in another --output_dir. Settings that may "
            f"change on resume: {', '.join('--' + n for n in free_on_resume(type(config)))}"
        )


def _check_output_dir(config: TrainingConfig) -> None:
    """Refuse to train over a finished model or old checkpoints unless resuming or --overwrite_output_dir."""
    out = config.output_dir
    existing = []
    if os.path.isfile(os.path.join(out, "model_index.json")):
        existing.append("a saved pipeline (model_index.json)")
    checkpoints = list_checkpoints(out)
    if checkpoints:
        existing.append(f"{len(checkpoints)} checkpoint folder(s)")
    if existing and config.resume_from_checkpoint is None and not config.overwrite_output_dir:
        raise ValueError(
            f"--output_dir {out!r} already holds {' and '.join(existing)}. Pass --resume_from_checkpoint latest "
            f"to continue that run, --overwrite_output_dir to start over there, or choose another --output_dir."
        )


def check_before_training(config: TrainingConfig, task: TrainingTask) -> str | None:
    """Every check that needs no model and no data, in the order a user would fix them; returns the checkpoint
    to resume from (None: a fresh run).

    ``diffusers-smd train`` runs it in its own process before launching accelerate, and each training process
    runs it again before any work: settings, the task's files, the logger, the resume checkpoint (and whether
    its settings match), the output folder.
    """
    config.validate()
    task.check()
    _check_logger(config.logger)
    resume_path = resolve_resume_checkpoint(config.resume_from_checkpoint, config.output_dir)
    if resume_path is not None:
        _check_resume_compatible(config, resume_path)
    _check_output_dir(config)
    return resume_path


class Trainer:
    """One training run: everything is checked and built in ``__init__``; :meth:`train` runs the loop.

    :meth:`step` is one optimisation micro-step (objective, backward, clipping, optimiser, learning-rate
    schedule); the loop and the train-step benchmark both call it.
    """

    def __init__(self, config: TrainingConfig, task: TrainingTask | None = None):
        from accelerate import Accelerator
        from accelerate.utils import (
            DataLoaderConfiguration,
            ProjectConfiguration,
            broadcast_object_list,
            set_seed,
        )
        from diffusers.optimization import get_scheduler
        from diffusers.training_utils import EMAModel

        from ..losses import build_objective

        self.started = time.time()
        if task is None:
            from .unconditional import UnconditionalImageTask

            task = UnconditionalImageTask(config)
        self.config, self.task = config, task
        # Errors about settings come first, before processes, models or data are touched.
        self.resume_path = check_before_training(config, task)

        self.accelerator = accelerator = Accelerator(
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            mixed_precision=config.mixed_precision,
            log_with=config.logger,
            project_config=ProjectConfiguration(
                project_dir=config.output_dir, logging_dir=os.path.join(config.output_dir, config.logging_dir)
            ),
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        )
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
        if accelerator.is_main_process:
            os.makedirs(config.output_dir, exist_ok=True)
            if config.overwrite_output_dir and config.resume_from_checkpoint is None:
                for path in list_checkpoints(config.output_dir):
                    shutil.rmtree(path)
        accelerator.wait_for_everyone()

        # One seed on every process: the same initial weights and the same data order everywhere.
        seed = config.seed
        if seed is None and self.resume_path is not None:
            seed = read_run_state(self.resume_path).get("seed")
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, ()).item())
        self.seed = seed = broadcast_object_list([seed])[0]
        set_seed(seed)
        task.seed = seed
        self.setup: TaskSetup = task.setup(accelerator)
        model, self.noise_scheduler = self.setup.model, self.setup.noise_scheduler
        trainable = self.setup.parameters_to_train()
        logger.info(
            "data: %s (%d examples); model: %s (%s parameters)",
            self.setup.dataset_name,
            len(self.setup.dataset),
            type(model).__name__,
            _count_parameters(model.parameters()),
        )
        self.objective = build_objective(config.objective, **config.objective_kwargs())

        self.ema_model = None
        if config.use_ema:
            self.ema_model = EMAModel(
                trainable,
                decay=config.ema_max_decay,
                use_ema_warmup=True,
                inv_gamma=config.ema_inv_gamma,
                power=config.ema_power,
                model_cls=type(model),
                model_config=model.config,
            )
        from accelerate.utils import DistributedType

        self.fsdp = accelerator.distributed_type == DistributedType.FSDP
        if self.fsdp and (config.use_ema or config.save_images_steps):
            raise ValueError(
                "--use_ema and --save_images_steps are not supported under FSDP "
                "(training/accelerate_configs/fsdp.yaml); sample the saved pipeline with `diffusers-smd sample`"
            )
        if not self.fsdp:
            accelerator.register_save_state_pre_hook(self._save_model_hook)
            accelerator.register_load_state_pre_hook(self._load_model_hook)

        #: The optimiser's base learning rate (the task may scale --learning_rate, e.g. --scale_lr).
        self.learning_rate = self.setup.learning_rate or config.learning_rate
        self.optimizer = torch.optim.AdamW(
            trainable,
            lr=self.learning_rate,
            betas=(config.adam_beta1, config.adam_beta2),
            weight_decay=config.adam_weight_decay,
            eps=config.adam_epsilon,
        )
        dataloader = torch.utils.data.DataLoader(
            self.setup.dataset,
            batch_size=config.train_batch_size,
            shuffle=True,
            num_workers=config.dataloader_num_workers,
            # Its own generator: creating an iterator must not consume the global RNG (exact resume).
            generator=torch.Generator().manual_seed(seed),
        )
        steps_per_epoch = math.ceil(
            math.ceil(len(self.setup.dataset) / (config.train_batch_size * accelerator.num_processes))
            / config.gradient_accumulation_steps
        )
        self.max_train_steps = config.max_train_steps
        if self.max_train_steps is None:
            self.max_train_steps = config.num_epochs * steps_per_epoch
        if self.resume_path is not None and checkpoint_step(self.resume_path) > self.max_train_steps:
            raise ValueError(
                f"--num_epochs {config.num_epochs} gives {self.max_train_steps} steps, below the step of "
                f"{os.path.basename(self.resume_path)}; resume with more epochs or --max_train_steps"
            )
        self.lr_scheduler = get_scheduler(
            config.lr_scheduler,
            optimizer=self.optimizer,
            num_warmup_steps=config.lr_warmup_steps * accelerator.num_processes,
            num_training_steps=self.max_train_steps * accelerator.num_processes,
        )
        self.model, self.optimizer, self.dataloader, self.lr_scheduler = accelerator.prepare(
            model, self.optimizer, dataloader, self.lr_scheduler
        )
        self.unwrapped = accelerator.unwrap_model(self.model)
        if self.ema_model is not None:
            self.ema_model.to(accelerator.device)
        # The sampler took its data seed from torch.initial_seed() == seed; now give each process its own noise.
        set_seed(seed, device_specific=True)
        self.trainable = trainable
        self.loss_fn = self.objective.bind(self.model, self.noise_scheduler)
        self.steps_per_epoch = math.ceil(len(self.dataloader) / config.gradient_accumulation_steps)
        self.total_batch_size = (
            config.train_batch_size * accelerator.num_processes * config.gradient_accumulation_steps
        )
        self.global_step = 0
        self.epoch = 0

    # -- checkpoint hooks ---------------------------------------------------------------------------------
    def _save_model_hook(self, models, weights, output_dir) -> None:
        if self.accelerator.is_main_process:
            if self.ema_model is not None:
                self.ema_model.save_pretrained(os.path.join(output_dir, "unet_ema"))
            for saved in models:
                self.task.save_model(saved, output_dir)
                weights.pop()

    def _load_model_hook(self, models, input_dir) -> None:
        from diffusers.training_utils import EMAModel

        if self.ema_model is not None:
            loaded = EMAModel.from_pretrained(os.path.join(input_dir, "unet_ema"), type(self.unwrapped))
            self.ema_model.load_state_dict(loaded.state_dict())
            self.ema_model.to(self.accelerator.device)
        while models:
            self.task.load_model(models.pop(), input_dir)

    # -- the step -----------------------------------------------------------------------------------------
    def step(self, batch: Any) -> torch.Tensor:
        """One micro-batch: loss, backward, clipping, optimiser and learning-rate step. Returns the mean loss
        over processes (detached); raises :class:`NonFiniteLossError` before the update when it is not finite."""
        accelerator = self.accelerator
        clean, conditioning = self.task.batch_inputs(batch)
        with accelerator.accumulate(self.model):
            loss = self.loss_fn(clean, conditioning).mean()
            mean_loss = accelerator.reduce(loss.detach().clone(), reduction="mean")
            if not torch.isfinite(mean_loss):
                accelerator.end_training()
                raise NonFiniteLossError(self._non_finite_message(f"the loss became {mean_loss.item()}"))
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(self.trainable, self.config.max_grad_norm)
            self.optimizer.step()
            self.lr_scheduler.step()
            self.optimizer.zero_grad()
        return mean_loss

    def _non_finite_message(self, what: str) -> str:
        config = self.config
        kept = list_checkpoints(config.output_dir)
        advice = f"Lower --learning_rate (now {config.learning_rate})"
        if config.mixed_precision in ("fp16", "bf16"):
            advice += f" or use --mixed_precision no (now {config.mixed_precision})"
        return (
            f"{what} at step {self.global_step + 1} (epoch {self.epoch}); training stopped without saving anything of this step. "
            f"The last good checkpoint is {kept[-1] if kept else 'none (no checkpoint was written yet)'}. "
            f"{advice}, then resume with --resume_from_checkpoint latest."
        )

    # -- pieces of the loop ---------------------------------------------------------------------------------
    def _with_ema_weights(self, action) -> Any:
        """Run ``action()`` with the EMA weights in the model (when EMA is on), then put the trained ones back."""
        if self.ema_model is None:
            return action()
        self.ema_model.store(self.trainable)
        self.ema_model.copy_to(self.trainable)
        try:
            return action()
        finally:
            self.ema_model.restore(self.trainable)

    def _sample_grid(self, name: str) -> None:
        from ..sampling import save_grid

        images = self._with_ema_weights(
            lambda: self.task.sample_images(self.unwrapped, self.noise_scheduler, self.config.eval_batch_size)
        )
        if images is None:
            return
        save_grid(images, os.path.join(self.config.output_dir, name))
        tag = self.task.sample_tag
        if self.config.logger == "tensorboard":
            self.accelerator.get_tracker("tensorboard", unwrap=True).add_images(
                tag, images.transpose(0, 3, 1, 2), self.global_step
            )
        elif self.config.logger == "wandb":
            import wandb

            captions = self.task.sample_captions() or [None] * len(images)
            logged = [wandb.Image(image, caption=caption) for image, caption in zip(images, captions)]
            self.accelerator.get_tracker("wandb").log({tag: logged}, step=self.global_step)

    def _save_pipeline(self, with_grid: bool) -> None:
        self._with_ema_weights(
            lambda: self.task.save_final(self.config.output_dir, self.unwrapped, self.noise_scheduler)
        )
        if with_grid:
            self._sample_grid("sample_grid.png")

    def _resume(self) -> None:
        accelerator = self.accelerator
        accelerator.print(f"Resuming from checkpoint {self.resume_path}")
        accelerator.load_state(self.resume_path)
        self.global_step = checkpoint_step(self.resume_path)
        recorded_lr = read_run_state(self.resume_path).get("learning_rate")
        learning_rate = self.learning_rate
        if recorded_lr is not None and recorded_lr != learning_rate:
            # The schedule's base rate is part of the restored state: apply the new --learning_rate.
            scheduler = getattr(self.lr_scheduler, "scheduler", self.lr_scheduler)
            scheduler.base_lrs = [learning_rate] * len(scheduler.base_lrs)
            factors = [factor(scheduler.last_epoch) for factor in scheduler.lr_lambdas]
            for group, factor in zip(self.optimizer.param_groups, factors):
                group["initial_lr"], group["lr"] = learning_rate, learning_rate * factor
            logger.info("learning rate changed on resume: %s -> %s", recorded_lr, learning_rate)

    # -- the loop -------------------------------------------------------------------------------------------
    def train(self) -> RunSummary:
        """Run the loop to ``max_train_steps``, save the final pipeline, write and return the run summary."""
        from tqdm.auto import tqdm

        accelerator, config = self.accelerator, self.config
        if accelerator.is_main_process:
            accelerator.init_trackers(
                os.path.basename(os.path.normpath(config.output_dir)) or "train_smd",
                config={
                    k: v if isinstance(v, (int, float, str, bool)) else str(v)
                    for k, v in config_to_dict(config).items()
                },
            )
        logger.info(
            "***** Running training: %d examples, batch %d per device (%d total), %d optimisation steps *****",
            len(self.setup.dataset),
            config.train_batch_size,
            self.total_batch_size,
            self.max_train_steps,
        )
        if config.resume_from_checkpoint is not None and self.resume_path is None:
            accelerator.print("Checkpoint 'latest' does not exist. Starting a new training run.")
        first_epoch, resume_batches = 0, 0
        if self.resume_path is not None:
            self._resume()
            first_epoch = self.global_step // self.steps_per_epoch
            resume_batches = (self.global_step * config.gradient_accumulation_steps) % (
                self.steps_per_epoch * config.gradient_accumulation_steps
            )
        num_epochs = math.ceil(self.max_train_steps / self.steps_per_epoch) if self.max_train_steps else 0
        progress_bar = tqdm(
            total=self.max_train_steps,
            initial=self.global_step,
            disable=not accelerator.is_local_main_process,
            desc="Steps",
        )
        last_loss = None
        losses_since_log: list[float] = []
        run_state = {
            "seed": self.seed,
            "learning_rate": self.learning_rate,
            "settings": _resume_identity(config),
        }
        for epoch in range(first_epoch, num_epochs):
            if self.global_step >= self.max_train_steps:
                break
            self.epoch = epoch
            self.model.train()
            self.dataloader.set_epoch(epoch)
            if hasattr(self.setup.dataset, "set_epoch"):
                self.setup.dataset.set_epoch(epoch)
            batches = self.dataloader
            if epoch == first_epoch and resume_batches > 0:
                batches = accelerator.skip_first_batches(self.dataloader, resume_batches)
            progress_bar.set_description(f"Epoch {epoch}")
            for batch in batches:
                if self.global_step >= self.max_train_steps:
                    break
                losses_since_log.append(self.step(batch).item())
                if not accelerator.sync_gradients:
                    continue
                if self.ema_model is not None:
                    self.ema_model.step(self.trainable)
                self.global_step += 1
                progress_bar.update(1)
                last_loss = sum(losses_since_log) / len(losses_since_log)
                losses_since_log = []
                logs = {"loss": last_loss, "lr": self.lr_scheduler.get_last_lr()[0], "step": self.global_step}
                if self.ema_model is not None:
                    logs["ema_decay"] = self.ema_model.cur_decay_value
                progress_bar.set_postfix(loss=f"{last_loss:.4f}")
                accelerator.log(logs, step=self.global_step)
                if self.global_step % config.checkpointing_steps == 0:
                    if not all(torch.isfinite(p).all() for p in self.trainable):
                        accelerator.end_training()
                        raise NonFiniteLossError(self._non_finite_message("the weights are no longer finite"))
                    path = save_checkpoint(
                        accelerator,
                        config.output_dir,
                        self.global_step,
                        config.checkpoints_total_limit,
                        run_state,
                    )
                    logger.info("Saved state to %s", path)
                if (
                    config.save_images_steps
                    and self.global_step % config.save_images_steps == 0
                    and accelerator.is_main_process
                    and not self.fsdp
                ):
                    self._sample_grid(os.path.join("samples", f"step-{self.global_step}.png"))
            if accelerator.is_main_process and not self.fsdp:
                last_epoch = epoch == num_epochs - 1 or self.global_step >= self.max_train_steps
                if (epoch + 1) % config.save_images_epochs == 0 and not last_epoch:
                    self._sample_grid(os.path.join("samples", f"epoch-{epoch}.png"))
                if (epoch + 1) % config.save_model_epochs == 0 and not last_epoch:
                    self._save_pipeline(with_grid=False)
        progress_bar.close()
        return self._finish(last_loss)

    def _finish(self, last_loss: float | None) -> RunSummary:
        accelerator, config = self.accelerator, self.config
        accelerator.wait_for_everyone()
        if self.fsdp:
            # Sharded parameters: gather a full state dict (every process takes part) into a plain copy.
            full_state = accelerator.get_state_dict(self.model)
            if accelerator.is_main_process:
                self.unwrapped = type(self.unwrapped).from_config(self.unwrapped.config)
                self.unwrapped.load_state_dict(full_state)
        summary = None
        if accelerator.is_main_process:
            self._save_pipeline(with_grid=not self.fsdp)
            summary = self.summary(last_loss)
            summary.write(config.output_dir)
            if config.push_to_hub:
                from ..hub import publish

                publish(config.output_dir, config.hub_model_id, private=config.hub_private_repo)
        accelerator.wait_for_everyone()
        accelerator.end_training()
        return summary

    def summary(self, last_loss: float | None) -> RunSummary:
        """The run's facts (see :class:`RunSummary`)."""
        from .. import __version__
        from ..schedulers import etsdm_settings_from_config

        scheduler_config = self.noise_scheduler.config
        settings = etsdm_settings_from_config(scheduler_config)
        return RunSummary(
            task=self.task.name,
            model_class=type(self.unwrapped).__name__,
            noise_scheduler=type(self.noise_scheduler).__name__,
            objective=self.config.objective,
            prediction_type=scheduler_config.prediction_type,
            num_train_timesteps=int(scheduler_config.num_train_timesteps),
            etsdm={
                "enabled": settings is not None,
                "threshold": settings.threshold if settings else None,
                "intervals": settings.intervals if settings else None,
            },
            dataset=self.setup.dataset_name,
            dataset_kind=self.setup.dataset_kind,
            dataset_size=len(self.setup.dataset),
            resolution=self.setup.resolution,
            num_channels=self.setup.num_channels,
            base_model=self.setup.base_model,
            global_step=self.global_step,
            max_train_steps=self.max_train_steps,
            total_batch_size=self.total_batch_size,
            num_processes=self.accelerator.num_processes,
            use_ema=bool(self.config.use_ema),
            seed=self.seed,
            final_loss=last_loss,
            wall_clock_seconds=round(time.time() - self.started, 3),
            parameter_counts=parameter_counts(self.unwrapped, self.trainable),
            resumed_from=os.path.basename(self.resume_path) if self.resume_path else None,
            package_version=__version__,
            config=config_to_dict(self.config),
        )


def train(config: TrainingConfig, task: TrainingTask | None = None) -> RunSummary:
    """Train as ``config`` says (with ``task``, default the unconditional image task); return the run summary."""
    return Trainer(config, task).train()
