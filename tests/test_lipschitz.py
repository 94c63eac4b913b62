"""K(t), the Lipschitz constant in t: the pure core against formulas, measure_lipschitz against a hand loop,
the JSON / PNG result, and `diffusers-smd lipschitz` on tiny saved models (values, files, bad input)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from PIL import Image
from pipeline_testing import mixture_unet, reference_rule, tiny_unet

from diffusers_smd import SMDPipeline, SMDVectorModel, SMDVectorPipeline, cli
from diffusers_smd.lipschitz import (
    LipschitzResult,
    lipschitz_in_t,
    load_clean_samples,
    measure_lipschitz,
    noisy_samples,
)
from diffusers_smd.losses.gaussian_steps import noise_from_prediction
from diffusers_smd.schedulers import ETSDMDDPMScheduler

T = 50


# -- the pure core ------------------------------------------------------------------------------------
def test_noisy_samples_match_diffusers_add_noise():
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    clean, noise = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    for t in (0, 17, 999):
        expected = scheduler.add_noise(clean, noise, torch.full((3,), t))
        torch.testing.assert_close(noisy_samples(clean, noise, scheduler.alphas_cumprod, t), expected)


@pytest.mark.parametrize("t", [0, 30, 999])
def test_epsilon_from_v_and_x0_predictions_recovers_the_noise(t):
    """A perfect v / x0 prediction (diffusers' own get_velocity for v) converts back to the exact noise."""
    scheduler = DDPMScheduler(num_train_timesteps=1000, prediction_type="v_prediction")
    clean, noise = torch.randn(4, 3), torch.randn(4, 3)
    timesteps = torch.full((4,), t)
    x_t = scheduler.add_noise(clean, noise, timesteps)
    alpha_bar = scheduler.alphas_cumprod[t]
    velocity = scheduler.get_velocity(clean, noise, timesteps)
    torch.testing.assert_close(noise_from_prediction(velocity, x_t, alpha_bar, "v_prediction"), noise)
    torch.testing.assert_close(
        noise_from_prediction(clean, x_t, alpha_bar, "sample"),
        noise,
        atol=2e-3 if t == 0 else 1e-5,
        rtol=1e-4,
    )
    assert noise_from_prediction(noise, x_t, alpha_bar, "epsilon") is noise
    with pytest.raises(ValueError, match="prediction_type"):
        noise_from_prediction(noise, x_t, alpha_bar, "flow")


def test_lipschitz_of_a_model_with_known_t_derivative():
    """eps(x, t) = slope * t * x: K(t) = slope * E ||x_t|| exactly, for any dt."""
    alphas_cumprod = DDPMScheduler(num_train_timesteps=100).alphas_cumprod
    generator = torch.Generator().manual_seed(0)
    clean, noise = torch.randn(5, 2, 3, 3, generator=generator), torch.randn(5, 2, 3, 3, generator=generator)
    slope, timesteps = 0.3, [0, 1, 7, 50]
    for dt in (1, 3):
        values = lipschitz_in_t(lambda x, t: slope * t * x, clean, noise, alphas_cumprod, timesteps, dt)
        for t, value in zip(timesteps, values):
            a = alphas_cumprod[t]
            x_t = a.sqrt() * clean + (1 - a).sqrt() * noise
            assert value == pytest.approx(slope * x_t.flatten(1).norm(dim=1).mean().item(), rel=1e-5)


def test_lipschitz_of_a_v_model_counts_the_schedule_change():
    """v = 0 everywhere: eps_hat(x, t) = sqrt(1 - abar_t) x, so K(t) = |sqrt(1-abar_t) - sqrt(1-abar_t+dt)| E||x_t|| / dt."""
    alphas_cumprod = DDPMScheduler(num_train_timesteps=100).alphas_cumprod
    clean, noise = torch.randn(3, 4), torch.randn(3, 4)
    values = lipschitz_in_t(
        lambda x, t: torch.zeros_like(x),
        clean,
        noise,
        alphas_cumprod,
        [0, 10],
        2,
        prediction_type="v_prediction",
    )
    for t, value in zip([0, 10], values):
        x_t = alphas_cumprod[t].sqrt() * clean + (1 - alphas_cumprod[t]).sqrt() * noise
        change = (1 - alphas_cumprod[t]).sqrt() - (1 - alphas_cumprod[t + 2]).sqrt()
        assert value == pytest.approx(abs(change.item()) * x_t.norm(dim=1).mean().item() / 2, rel=1e-5)


def test_lipschitz_with_the_etsdm_condition_is_zero_inside_intervals_and_the_jump_at_edges():
    alphas_cumprod = DDPMScheduler(num_train_timesteps=100).alphas_cumprod
    clean, noise = torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)
    calls = []

    def predict(x, t):
        calls.append(t)
        return 0.5 * t * x

    def condition(t):  # 0-1 -> 0, 2-3 -> 2, ..., 10+ -> t
        return reference_rule(t, 10, 5)

    values = lipschitz_in_t(predict, clean, noise, alphas_cumprod, range(0, 12), 1, condition)
    for t, value in enumerate(values):
        jump = condition(t + 1) - condition(t)
        norm = alphas_cumprod[t].sqrt().item() * 2.0  # ||x_t|| of a 2x2 image of ones, noise 0
        assert value == pytest.approx(0.5 * jump * norm, rel=1e-5)
    assert values[0] == 0.0 and values[1] > 0 and values[2] == 0.0
    assert len(calls) == 2 * sum(1 for t in range(12) if condition(t + 1) != condition(t))
    with pytest.raises(ValueError, match="dt"):
        lipschitz_in_t(predict, clean, noise, alphas_cumprod, [0], 0)


# -- measure_lipschitz on saved-pipeline objects ---------------------------------------------------------
def _pipeline(unet, etsdm: bool = False, prediction_type: str = "epsilon") -> SMDPipeline:
    settings = {"etsdm_threshold": 10, "etsdm_intervals": 2} if etsdm else {}
    scheduler_class = ETSDMDDPMScheduler if etsdm else DDPMScheduler
    pipeline = SMDPipeline(unet=unet, scheduler=scheduler_class(num_train_timesteps=T, prediction_type=prediction_type,
                                                                **settings))  # fmt: skip
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _hand_k(
    model, clean, t_values, dt, seed, condition=lambda t: t, with_eta=False, prediction_type="epsilon"
):
    """The definition, written out: same x_t (diffusers add_noise at the real t), network at c(t) and c(t + dt)."""
    scheduler = DDPMScheduler(num_train_timesteps=T)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(clean.shape, generator=generator)
    eta = torch.randn(clean.shape, generator=generator)
    kwargs = {"mixture_noise": eta} if with_eta else {}
    values = []
    with torch.no_grad():
        for t in t_values:
            x_t = scheduler.add_noise(clean, noise, torch.full((len(clean),), t))
            out = [model(x_t, torch.tensor(condition(s)), **kwargs).sample for s in (t, t + dt)]
            if prediction_type == "v_prediction":
                abar = scheduler.alphas_cumprod
                out = [abar[s].sqrt() * o + (1 - abar[s]).sqrt() * x_t for o, s in zip(out, (t, t + dt))]
            values.append(((out[0] - out[1]).flatten(1).norm(dim=1).mean() / dt).item())
    return values


def test_measure_lipschitz_equals_the_definition_written_by_hand():
    unet = tiny_unet()
    clean = torch.rand(6, 1, 8, 8) * 2 - 1
    result = measure_lipschitz(
        _pipeline(unet), clean, t_min=3, t_max=12, dt=2, t_stride=3, seed=5, batch_size=4
    )
    assert result.timesteps == [3, 6, 9, 12] and result.num_samples == 6 and result.etsdm is None
    np.testing.assert_allclose(result.values, _hand_k(unet, clean, [3, 6, 9, 12], 2, seed=5), rtol=1e-4)
    # a v-prediction model: its output converted to epsilon with the real t
    v_result = measure_lipschitz(_pipeline(unet, prediction_type="v_prediction"), clean, t_max=4, seed=1)
    expected = _hand_k(unet, clean, range(5), 1, seed=1, prediction_type="v_prediction")
    np.testing.assert_allclose(v_result.values, expected, rtol=1e-4)


def test_measure_lipschitz_queries_an_etsdm_model_at_the_shared_condition():
    unet = tiny_unet(seed=1)
    clean = torch.rand(3, 1, 8, 8) * 2 - 1
    result = measure_lipschitz(_pipeline(unet, etsdm=True), clean, t_max=12, seed=0)
    assert result.etsdm == {"threshold": 10, "intervals": 2}
    expected = _hand_k(unet, clean, range(13), 1, seed=0, condition=lambda t: reference_rule(t, 10, 2))
    np.testing.assert_allclose(result.values, expected, rtol=1e-4, atol=1e-7)
    assert [t for t, k in zip(result.timesteps, result.values) if k > 0] == [
        4,
        9,
        10,
        11,
        12,
    ]  # edges 4|5, 9|10


def test_measure_lipschitz_holds_the_mixture_noise_fixed_for_smd_models():
    model = mixture_unet()  # output = UNet + 0.1 * eta: a fresh eta per call would add ~0.1 * sqrt(64) to K
    clean = torch.rand(4, 1, 8, 8) * 2 - 1
    result = measure_lipschitz(_pipeline(model), clean, t_max=3, seed=2, batch_size=3)
    assert result.fixed_mixture_noise
    np.testing.assert_allclose(
        result.values, _hand_k(model, clean, range(4), 1, seed=2, with_eta=True), rtol=1e-4
    )


def test_measure_lipschitz_refuses_bad_settings():
    pipeline, clean = _pipeline(tiny_unet()), torch.zeros(2, 1, 8, 8)
    with pytest.raises(ValueError, match="t_max \\+ dt must be at most num_train_timesteps - 1 = 49"):
        measure_lipschitz(pipeline, clean, t_max=48, dt=2)
    with pytest.raises(ValueError, match="t_min"):
        measure_lipschitz(pipeline, clean, t_min=5, t_max=4)
    with pytest.raises(ValueError, match="num_samples=3 exceeds"):
        measure_lipschitz(pipeline, clean, t_max=4, num_samples=3)
    with pytest.raises(ValueError, match="clean samples"):
        measure_lipschitz(pipeline, torch.zeros(2, 1, 8, 8, dtype=torch.long), t_max=4)


def test_result_round_trips_through_json_and_summarises(tmp_path):
    result = LipschitzResult(timesteps=[0, 1, 2, 3], values=[4.0, 2.0, 0.0, 1.0], dt=1, num_samples=8, seed=0,
                             prediction_type="epsilon", num_train_timesteps=10, etsdm={"threshold": 2, "intervals": 1})  # fmt: skip
    result.save(tmp_path / "k.json")
    assert LipschitzResult.load(tmp_path / "k.json") == result
    assert json.loads((tmp_path / "k.json").read_text())["values"] == [4.0, 2.0, 0.0, 1.0]
    assert result.mean(t_max=2) == 3.0 and result.mean(t_min=2) == 0.5 and result.peak() == (0, 4.0)
    result.plot(tmp_path / "k.png")  # zeros cannot be drawn on a log axis: markers instead of a line
    assert Image.open(tmp_path / "k.png").format == "PNG"


# -- clean samples ------------------------------------------------------------------------------------
def test_load_clean_samples_from_tensor_files_digits_and_an_image_folder(tmp_path):
    array = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", array)
    torch.testing.assert_close(
        load_clean_samples(str(tmp_path / "x.npy"), (3,), num_samples=4), torch.from_numpy(array[:4])
    )
    from safetensors.torch import save_file

    save_file({"x": torch.from_numpy(array)}, str(tmp_path / "x.safetensors"))
    torch.testing.assert_close(
        load_clean_samples(str(tmp_path / "x.safetensors"), (3,)), torch.from_numpy(array)
    )

    from diffusers_smd.digits import load_digits_images

    digits = load_clean_samples("digits", (1, 8, 8), num_samples=7)
    torch.testing.assert_close(digits, load_digits_images("train", resolution=8)[0][:7])

    folder = tmp_path / "images"
    folder.mkdir()
    for i, value in enumerate((0, 255)):
        Image.fromarray(np.full((4, 4), value, dtype=np.uint8)).save(folder / f"{i}.png")
    images = load_clean_samples(str(folder), (1, 4, 4))
    assert sorted(images.flatten(1).mean(1).tolist()) == [-1.0, 1.0]


def test_load_clean_samples_names_bad_input(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((5, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="--data .*shape \\(3,\\), but the model takes \\(4,\\)"):
        load_clean_samples(str(tmp_path / "x.npy"), (4,))
    with pytest.raises(ValueError, match="--num_samples 9 exceeds the 5"):
        load_clean_samples(str(tmp_path / "x.npy"), (3,), num_samples=9)
    with pytest.raises(ValueError, match="no such file"):
        load_clean_samples(str(tmp_path / "missing.npy"), (3,))
    with pytest.raises(ValueError, match="names images"):
        load_clean_samples("digits", (3,))


# -- the command ----------------------------------------------------------------------------------------
def _saved(tmp_path, pipeline, name="model"):
    folder = tmp_path / name
    pipeline.save_pretrained(folder)
    return str(folder)


def test_cli_writes_json_and_png_with_the_values_of_the_definition(tmp_path, capsys):
    unet = tiny_unet(seed=2)
    folder = _saved(tmp_path, _pipeline(unet, etsdm=True))
    clean = (torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1).numpy()
    np.save(tmp_path / "clean.npy", clean)
    out, png = tmp_path / "K.json", tmp_path / "K.png"
    argv = ["lipschitz", folder, "--data", str(tmp_path / "clean.npy"), "--t_max", "12", "--num_samples", "5",
            "--seed", "3", "--output", str(out), "--plot", str(png), "--device", "cpu"]  # fmt: skip
    assert cli.main(argv) == 0
    saved = json.loads(out.read_text())
    expected = _hand_k(
        unet, torch.from_numpy(clean), range(13), 1, seed=3, condition=lambda t: reference_rule(t, 10, 2)
    )
    np.testing.assert_allclose(saved["values"], expected, rtol=1e-4, atol=1e-7)
    assert saved["etsdm"] == {"threshold": 10, "intervals": 2} and saved["timesteps"] == list(range(13))
    assert Image.open(png).format == "PNG"
    assert "mean K for t < 10" in capsys.readouterr().out
    assert cli.main(argv) == 2  # the outputs exist: refused without --overwrite
    assert "--output" in capsys.readouterr().err
    assert cli.main([*argv, "--overwrite"]) == 0


def test_cli_measures_a_vector_model_and_the_builtin_digits(tmp_path):
    torch.manual_seed(0)
    vector = SMDVectorPipeline(unet=SMDVectorModel(data_dim=3, hidden_dim=16, num_layers=1, latent_dim=4),
                               scheduler=DDPMScheduler(num_train_timesteps=T))  # fmt: skip
    np.save(tmp_path / "v.npy", np.ones((4, 3), dtype=np.float32))
    out = tmp_path / "v.json"
    assert cli.main(["lipschitz", _saved(tmp_path, vector, "vector"), "--data", str(tmp_path / "v.npy"),
                     "--t_max", "3", "--num_samples", "4", "--output", str(out)]) == 0  # fmt: skip
    saved = json.loads(out.read_text())
    assert saved["fixed_mixture_noise"] and len(saved["values"]) == 4 and all(v > 0 for v in saved["values"])
    out = tmp_path / "d.json"
    assert cli.main(["lipschitz", _saved(tmp_path, _pipeline(tiny_unet())), "--t_max", "2", "--num_samples", "3",
                     "--output", str(out)]) == 0  # fmt: skip
    assert json.loads(out.read_text())["data"] == "digits"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--t_max", "49"], "--t_max 49 \\+ --dt 1 must be at most 49"),
        (["--t_min", "9", "--t_max", "3"], "--t_min 9 must not exceed --t_max 3"),
        (["--data", "WRONG_SHAPE"], "--data .*shape \\(3,\\), but the model takes \\(1, 8, 8\\)"),
        (["--plot", "k.jpg"], "--plot .*png"),
        (["--data", "MISSING"], "--data .*missing.npy.*no such file"),
        (["--num_samples", "500", "--data", "GOOD"], "--num_samples 500 exceeds the 4 samples"),
    ],
)
def test_cli_names_bad_input(tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    folder = _saved(tmp_path, _pipeline(tiny_unet()))
    np.save(tmp_path / "wrong.npy", np.zeros((4, 3), dtype=np.float32))
    np.save(tmp_path / "good.npy", np.zeros((4, 1, 8, 8), dtype=np.float32))
    files = {
        "WRONG_SHAPE": str(tmp_path / "wrong.npy"),
        "MISSING": str(tmp_path / "missing.npy"),
        "GOOD": str(tmp_path / "good.npy"),
    }
    extra = [files.get(item, item) for item in extra]
    defaults = [] if "--t_max" in extra else ["--t_max", "5"]
    assert cli.main(["lipschitz", folder, "--output", str(tmp_path / "k.json"), *defaults, *extra]) == 2
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert last_line.startswith("diffusers-smd lipschitz: error:")
    assert re.search(message, last_line), last_line
    assert not (tmp_path / "k.json").exists()


def test_cli_refuses_a_folder_that_is_not_a_pipeline(tmp_path, capsys):
    assert cli.main(["lipschitz", str(tmp_path), "--output", str(tmp_path / "k.json")]) == 2
    assert "model_index.json" in capsys.readouterr().err.strip().splitlines()[-1]
