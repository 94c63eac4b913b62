"""The training script end to end, in-process: every objective with and without E-TSDM, fine-tuning."""

import json
import os

import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from pipeline_testing import tiny_unet
from training_helpers import parse_flags, tiny_flags, train_with_flags, weights

from diffusers_smd import ETSDMDDPMScheduler, SMDPipeline, SMDUNet2DModel
from diffusers_smd.training import UnconditionalImageTask


@pytest.mark.parametrize("objective", ["vanilla", "smd", "smd-mixture"])
@pytest.mark.parametrize("etsdm", [False, True])
def test_tiny_training_run_saves_a_loadable_pipeline(tmp_path, objective, etsdm):
    out = tmp_path / "run"
    flags = tiny_flags(out, "--objective", objective, "--max_train_steps", "2", "--smd_mixture_samples", "2")
    if etsdm:
        flags += ["--etsdm", "--etsdm_threshold", "10", "--etsdm_intervals", "2"]
    summary = train_with_flags(flags)

    assert summary["global_step"] == 2 and summary["objective"] == objective
    assert (
        summary["final_loss"] is not None and summary["final_loss"] == summary["final_loss"]
    )  # finite, not NaN
    written = json.loads((out / "run_summary.json").read_text())
    assert written == summary
    training_args = written["config"]
    assert training_args["objective"] == objective and training_args["max_train_steps"] == 2
    assert not any("token" in key for key in training_args)
    assert (out / "sample_grid.png").is_file()
    assert any(
        name.startswith("events.out.tfevents") for _, _, files in os.walk(out / "logs") for name in files
    )

    pipeline = SMDPipeline.from_pretrained(out)
    expected_unet = UNet2DModel if objective == "vanilla" else SMDUNet2DModel
    assert type(pipeline.unet) is expected_unet
    assert isinstance(pipeline.scheduler, ETSDMDDPMScheduler) == etsdm
    if etsdm:
        assert (
            pipeline.scheduler.config.etsdm_threshold == 10 and pipeline.scheduler.config.etsdm_intervals == 2
        )
        assert summary["etsdm"] == {"enabled": True, "threshold": 10, "intervals": 2}
    images = pipeline(
        batch_size=2, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np"
    ).images
    assert images.shape == (2, 8, 8, 1)

    # Training moved the weights away from the seeded initialisation.
    torch.manual_seed(0)
    initial = UnconditionalImageTask(parse_flags(flags)).build_model()[0].state_dict()
    trained = weights(out / "unet")
    assert max((trained[k] - initial[k]).abs().max().item() for k in trained) > 0


def test_fine_tuning_a_saved_unet_reproduces_it_at_step_zero(tmp_path):
    torch.manual_seed(1)
    base = tiny_unet()
    base.save_pretrained(tmp_path / "base_unet")
    out = tmp_path / "finetuned"
    flags = tiny_flags(
        out, "--pretrained_model_name_or_path", str(tmp_path / "base_unet"), "--max_train_steps", "0"
    )
    flags.remove("--resolution")
    flags.remove("8")
    summary = train_with_flags(flags)
    assert summary["base_model"] == str(tmp_path / "base_unet") and summary["resolution"] == 8

    smd = SMDPipeline.from_pretrained(out).unet
    assert isinstance(smd, SMDUNet2DModel)
    sample = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    timesteps = torch.tensor([0, 17, 49])
    with torch.no_grad():
        expected = base(sample, timesteps).sample
        for seed in (0, 1):  # whatever mixture noise: the zero-initialised SMD modules change nothing
            got = smd(sample, timesteps, generator=torch.Generator().manual_seed(seed)).sample
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_fine_tuning_a_pipeline_keeps_its_noise_schedule(tmp_path):
    torch.manual_seed(1)
    unet = tiny_unet()
    scheduler = DDPMScheduler(
        num_train_timesteps=40, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction"
    )
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(tmp_path / "base")
    out = tmp_path / "finetuned"
    flags = tiny_flags(
        out, "--pretrained_model_name_or_path", str(tmp_path / "base"), "--max_train_steps", "1"
    )
    train_with_flags(flags + ["--etsdm", "--etsdm_intervals", "2"])
    loaded = SMDPipeline.from_pretrained(out)
    assert isinstance(loaded.scheduler, ETSDMDDPMScheduler)
    assert loaded.scheduler.config.num_train_timesteps == 40
    assert loaded.scheduler.config.beta_schedule == "squaredcos_cap_v2"
    assert loaded.scheduler.config.prediction_type == "v_prediction"
    assert loaded.scheduler.config.etsdm_threshold == 4  # T // 10 of the pretrained schedule
