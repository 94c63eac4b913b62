"""The sampling module: the scheduler registry, generation through the pipeline, image conversion and grids."""

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from pipeline_testing import tiny_unet

from diffusers_smd import ETSDMDDIMScheduler, SMDPipeline
from diffusers_smd.sampling import (
    NonFiniteSamplesError,
    generate,
    image_grid,
    make_scheduler,
    max_inference_steps,
    scheduler_choices,
    to_uint8,
)


def test_to_uint8_rounds_and_clips_unit_range_values():
    values = np.array([[-0.2, 0.0, 0.5 / 255, 0.5, 1.0, 1.3]]).reshape(1, 1, 6, 1)
    assert to_uint8(values).ravel().tolist() == [0, 0, 0, 128, 255, 255]  # round half to even at 0.5
    assert to_uint8(torch.tensor(values)).dtype == np.uint8


def test_grid_places_each_image_with_a_gap_between_them():
    images = np.stack([np.full((2, 3, 1), 10 * (i + 1), dtype=np.uint8) for i in range(5)])
    grid = np.asarray(image_grid(images, columns=3, gap=1, gap_value=7))
    assert grid.shape == (2 * 2 + 1, 3 * 3 + 2)  # 2 rows, 3 columns, 1-pixel gaps
    for index in range(5):
        row, column = divmod(index, 3)
        cell = grid[row * 3 : row * 3 + 2, column * 4 : column * 4 + 3]
        assert (cell == 10 * (index + 1)).all()
    assert (grid[2, :] == 7).all() and (grid[:, 3] == 7).all()  # the gaps
    assert (grid[3:, 8:] == 7).all()  # the empty last cell
    upscaled = np.asarray(image_grid(images[:1], upscale=3))
    assert upscaled.shape == (6, 9) and (upscaled == 10).all()
    rgb = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    assert image_grid(rgb).mode == "RGB"
    with pytest.raises(ValueError, match="uint8"):
        image_grid(images.astype(np.float32))


def test_registry_names_and_etsdm_models_always_get_the_etsdm_variant():
    choices = scheduler_choices()
    assert choices[0] == "auto" and {"ddpm", "ddim", "dpmsolver++", "etsdm-ddim"} <= set(choices)
    plain = DDPMScheduler(num_train_timesteps=100).config
    scheduler, name = make_scheduler("ddim", plain)
    assert type(scheduler) is DDIMScheduler and name == "ddim"
    trained = ETSDMDDIMScheduler(num_train_timesteps=100, etsdm_threshold=20, etsdm_intervals=4).config
    scheduler, name = make_scheduler("ddim", trained)
    assert type(scheduler) is ETSDMDDIMScheduler and name == "etsdm-ddim"
    assert scheduler.config.etsdm_threshold == 20 and scheduler.config.etsdm_intervals == 4
    scheduler, name = make_scheduler("auto", plain)
    assert type(scheduler) is DPMSolverMultistepScheduler and scheduler.config.algorithm_type == "dpmsolver++"
    with pytest.raises(ValueError, match="--scheduler"):
        make_scheduler("heun2", plain)


def test_step_counts_a_solver_cannot_run_are_refused_with_the_limit():
    solver = DPMSolverMultistepScheduler(num_train_timesteps=50)
    assert max_inference_steps(solver, 49) is None
    assert max_inference_steps(solver, 50) == 49  # NaN at 50 steps (sigma 0 at the last of T steps)
    assert max_inference_steps(DDPMScheduler(num_train_timesteps=50), 60) == 50
    pipeline = SMDPipeline(unet=tiny_unet(), scheduler=DDPMScheduler(num_train_timesteps=50))
    pipeline.set_progress_bar_config(disable=True)
    with pytest.raises(ValueError, match="at most 49"):
        generate(pipeline, 2, 50, scheduler=solver)


def test_generation_is_seeded_leaves_the_global_rng_alone_and_refuses_non_finite_images():
    pipeline = SMDPipeline(unet=tiny_unet(), scheduler=DDPMScheduler(num_train_timesteps=20))
    pipeline.set_progress_bar_config(disable=True)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = generate(pipeline, 3, 4, seed=5, batch_size=2)
    assert torch.equal(torch.rand(3), expected_next)  # sampling did not consume the global stream
    assert first.dtype == np.uint8 and first.shape == (3, 8, 8, 1)
    assert np.array_equal(first, generate(pipeline, 3, 4, seed=5, batch_size=2))
    assert not np.array_equal(first, generate(pipeline, 3, 4, seed=6, batch_size=2))
    # batch k is drawn with seed + k * batch_size: a smaller batch gives the same first images
    assert np.array_equal(first[:2], generate(pipeline, 2, 4, seed=5, batch_size=2))

    pipeline.unet.conv_out.register_forward_hook(lambda module, inputs, output: output * float("nan"))
    with pytest.raises(NonFiniteSamplesError, match="3 of 3"):
        generate(pipeline, 3, 4, seed=5)
