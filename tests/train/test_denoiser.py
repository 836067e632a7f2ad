"""The conditioned denoiser recipe: images of the CT stream, noise levels, training lowers the error, checkpoints, PnP."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrecon.nets import DnCNN
from jaxrecon.operators import ParallelBeamGeometry, RadonTransform
from jaxrecon.solvers import pnp_admm
from jaxrecon.train import CTData, batch_keys
from jaxrecon.train.denoiser import (
    NoisyImages,
    build_denoiser,
    clean_images,
    denoiser_config,
    denoising_loss,
    evaluate_denoiser,
    load_denoiser,
    noisy_images,
    pnp_denoiser,
    train_denoiser,
)
from jaxrecon.train.experiment import load_trained

SMALL = dict(data={"size": 24, "num_angles": 8, "num_detectors": 35}, model_options={"features": 8, "depth": 4})


def _config(steps, **train):
    return denoiser_config("quick", **SMALL, train=dict({"steps": steps, "batch_size": 4, "learning_rate": 3e-3,
                                                          "validate_every": steps, "validation_size": 4}, **train))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One short training run (float64), checkpointed: shared by the tests below."""
    directory = tmp_path_factory.mktemp("dncnn")
    config = _config(150)
    result = train_denoiser(config, directory, progress=False)
    return config, directory, result


def test_config():
    config = denoiser_config("quick")
    assert config["model"] == "dncnn" and config["data"]["size"] == 64
    assert config["model_options"] == {"features": 32, "depth": 10}
    assert config["train"]["sigma_max"] == 0.2 and config["train"]["batch_size"] == 8
    assert denoiser_config("standard")["data"]["size"] == 128
    with pytest.raises(ValueError, match=r"unknown preset 'lodopab' for a denoiser; expected one of \('quick'"):
        denoiser_config("lodopab")
    with pytest.raises(ValueError, match="unknown config entries"):
        denoiser_config("quick", optimiser={})
    with pytest.raises(ValueError, match="train.sigma_max must be a finite number > 0, got 0"):
        denoiser_config("quick", train={"sigma_max": 0})
    with pytest.raises(ValueError, match="train.steps must be an int >= 1"):
        denoiser_config("quick", train={"steps": 0})
    with pytest.raises(ValueError, match="validation_levels must be a non-empty list"):
        denoiser_config("quick", train={"validation_levels": []})


def test_images_are_the_ct_streams_truths():
    data = CTData.uniform(16, 6, 23)
    keys = batch_keys(0, "train", 0, 3)
    np.testing.assert_array_equal(clean_images(data, keys), jax.vmap(data.sample)(keys).x)
    batch = noisy_images(clean_images(data, keys), jax.random.key(1), 0.2)
    assert isinstance(batch, NoisyImages) and batch.noisy.shape == (3, 16, 16) and batch.level.shape == (3,)
    assert np.all((0 <= batch.level) & (batch.level <= 0.2))
    # the noise of image b has standard deviation level_b
    std = np.std(np.asarray(batch.noisy - batch.clean), axis=(1, 2))
    np.testing.assert_allclose(std, batch.level, rtol=0.25)
    with pytest.raises(ValueError, match=r"noisy_images expects real images of shape \(B, H, W\)"):
        noisy_images(jnp.zeros((4, 4)), jax.random.key(0), 0.1)
    with pytest.raises(ValueError, match="sigma_max > 0, got -1"):
        noisy_images(jnp.zeros((1, 4, 4)), jax.random.key(0), -1)
    with pytest.raises(TypeError, match="a NoisyImages batch, got tuple"):
        denoising_loss(build_denoiser(_config(1)), (1, 2))


@pytest.mark.slow
def test_training_lowers_the_error_at_the_trained_levels(run):
    config, _, result = run
    fresh = build_denoiser(config)
    data = CTData.uniform(24, 8, 35)
    test = clean_images(data, batch_keys(0, "test", 0, 8))
    before = evaluate_denoiser(fresh, test, [0.05, 0.1])
    after = evaluate_denoiser(result.model, test, [0.05, 0.1])
    # measured: fresh gains -2.7 and -0.7 dB (it adds its own error); after 150 steps +1.6 and +4.9 dB,
    # PSNR +4.3 and +5.6 dB: a lower MSE than the noisy input, and than before training
    assert after["gain_0.05"] > 0.8 and after["gain_0.1"] > 3.0, (before, after)
    for level in ("0.05", "0.1"):
        assert after[f"psnr_{level}"] > before[f"psnr_{level}"] + 3.0, (before, after)
    assert result.history["loss"][-1] < result.history["loss"][0]
    assert "val_psnr_mean" in result.history and "val_gain_0.05" in result.history


@pytest.mark.slow
def test_checkpoint_load_resume_and_pnp(run):
    config, directory, result = run
    net, stored = load_denoiser(directory)
    assert stored == config and isinstance(net, DnCNN) and net.conditional
    np.testing.assert_array_equal(net.first.weight, result.model.first.weight)
    with pytest.raises(ValueError, match="load a denoiser with jaxrecon.train.denoiser.load_denoiser"):
        load_trained(directory)
    # resuming a finished run does nothing; two more steps continue it
    more = train_denoiser(_config(152), directory, progress=False)
    assert more.history["step"][-1] == 151 and len(more.history["loss"]) == 152

    # the plug-and-play callable: (H, W) -> (H, W), pnp_admm runs with it
    denoise = pnp_denoiser(net, 0.05)
    x = clean_images(CTData.uniform(24, 8, 35), batch_keys(0, "test", 0, 1))[0]
    assert denoise(x).shape == (24, 24) and denoise(x.astype(jnp.float32)).dtype == jnp.float32
    np.testing.assert_allclose(denoise(x), net(x[None], 0.05)[0], rtol=1e-12)
    op = RadonTransform(ParallelBeamGeometry.uniform((24, 24), 8, 35))
    sol = eqx.filter_jit(lambda d, y: pnp_admm(op, y, d, rho=50.0, max_iter=5))(denoise, op(x))
    assert sol.x.shape == (24, 24) and np.all(np.isfinite(sol.x))
    with pytest.raises(TypeError, match="conditional DnCNN"):
        pnp_denoiser(DnCNN(features=2, depth=2, key=jax.random.key(0)), 0.05)
    with pytest.raises(ValueError, match="noise_level >= 0, got -0.1"):
        pnp_denoiser(net, -0.1)
    with pytest.raises(ValueError, match="real scalar"):
        pnp_denoiser(net, jnp.ones(2))
