"""Self-supervised losses: truth-free, SURE unbiased, Noise2Inverse's view splits, rotations, training lowers the error."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxrecon.operators import (
    IdentityOperator,
    MatrixOperator,
    XRayTransform,
    fbp,
    select_views,
)
from jaxrecon.operators.fan_geometry import FanBeamGeometry
from jaxrecon.train import CTData, Sample, batch_keys, fit
from jaxrecon.train.self_supervised import (
    _measurements,
    equivariant_imaging_loss_fn,
    noise2inverse_loss_fn,
    rotate,
    split_views,
    sure_loss_fn,
)

DATA = CTData.uniform(24, 12, noise=0.05)  # float64 (tests run with x64)
OP = DATA.operator
SAMPLE_BATCH = jax.jit(jax.vmap(DATA.sample))
TEST = SAMPLE_BATCH(batch_keys(0, "test", 0, 16))


class Smooth(eqx.Module):
    """FBP followed by a learned 5x5 convolution: cheap to compile, and linear in the data."""

    kernel: jax.Array

    def __call__(self, y, op):
        return jax.scipy.signal.convolve2d(fbp(y, op.geom, "ram-lak"), self.kernel, mode="same")


INIT = Smooth(jnp.zeros((5, 5)).at[2, 2].set(0.5))  # half the FBP: a poor start


def _losses():
    return {
        "noise2inverse": noise2inverse_loss_fn(OP),
        "noise2inverse-image-3": noise2inverse_loss_fn(OP, 3, domain="image", filter="hann"),
        "sure": sure_loss_fn(OP, 0.05),
        "robust-ei": equivariant_imaging_loss_fn(OP, 0.5, noise_level=0.05),
    }


LOSSES = _losses()


OPTIMIZER = optax.adam(1e-2)  # one instance: fits with the same loss share one compiled step


def _batch_fn(k, truth=False):
    """Training batches; without `truth` their x are NaN: a loss that read them would fail."""
    b = SAMPLE_BATCH(batch_keys(0, "train", 4 * k, 4))
    return b if truth else Sample(b.y, jnp.full_like(b.x, jnp.nan))


def _test_error(model):
    return float(jnp.mean((jax.vmap(lambda y: model(y, OP))(TEST.y) - TEST.x) ** 2))


# --------------------------------------------------------------------------------------------------
# Truth-free and deterministic
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_losses_never_read_the_truth(name):
    """One step of `fit` with the truths and one with NaN in their place: the same loss and update."""
    loss_fn = LOSSES[name]
    with_truth = fit(INIT, loss_fn, lambda k: _batch_fn(k, truth=True), OPTIMIZER, 1, progress=False)
    without = fit(INIT, loss_fn, _batch_fn, OPTIMIZER, 1, progress=False)
    assert np.isfinite(with_truth.history["loss"][0]) and with_truth.history["loss"][0] > 0
    assert without.history["loss"] == with_truth.history["loss"]  # bitwise: x is never read
    np.testing.assert_array_equal(without.model.kernel, with_truth.model.kernel)
    assert np.all(np.isfinite(without.model.kernel)) and np.any(without.model.kernel != INIT.kernel)


_value = eqx.filter_jit(lambda model, batch, loss_fn: loss_fn(model, batch))


def test_batches_without_truth_and_randomness_from_the_data():
    batch = _batch_fn(0)
    sure = LOSSES["sure"]
    value = float(_value(INIT, Sample(batch.y, None), sure))  # no truth at all
    assert np.isfinite(value)
    assert _measurements(batch.y, OP, "f") is batch.y  # a bare array of measurements is taken as well
    # the probe is a function of (seed, data): deterministic (an exact resume), different for another sample
    assert float(_value(INIT, Sample(batch.y, None), sure)) == value
    assert float(_value(INIT, Sample(batch.y.at[0, 0, 0].add(1e-9), None), sure)) != pytest.approx(value, rel=1e-6)


# --------------------------------------------------------------------------------------------------
# SURE
# --------------------------------------------------------------------------------------------------


class Linear(eqx.Module):
    w: jax.Array

    def __call__(self, y, op):
        return self.w @ y


def test_sure_is_unbiased_for_a_linear_model():
    rng = np.random.default_rng(0)
    m, n, level, count = 12, 6, 0.1, 4000
    a = MatrixOperator(jnp.asarray(rng.uniform(0.5, 1.0, (m, n))))
    x = jnp.asarray(rng.uniform(0.5, 1.0, n))  # A x in [1.5, 6]: sigma = level mean|Ax| is estimated well
    # near a projection (tr(A W) ~ 5 of 12): the divergence term matters
    model = Linear(jnp.asarray(0.8 * np.linalg.pinv(np.asarray(a.matrix)) + 0.05 * rng.standard_normal((n, m))))
    clean = a(x)
    sigma = level * jnp.mean(jnp.abs(clean))
    ys = clean + sigma * jax.random.normal(jax.random.key(1), (count, m))
    loss_fn = sure_loss_fn(a, level)
    np.testing.assert_allclose(float(loss_fn.norm2), np.linalg.norm(np.asarray(a.matrix), 2) ** 2, rtol=1e-8)
    sure = jax.jit(jax.vmap(lambda y: loss_fn(model, y[None])))(ys)
    true = jax.vmap(lambda y: jnp.sum((a(model(y, a)) - clean) ** 2))(ys) / (n * loss_fn.norm2)
    diff = np.asarray(sure - true)
    se = diff.std() / math.sqrt(count)
    assert abs(diff.mean()) < 4 * se, (diff.mean(), se)
    # the check has power: without the divergence term the estimate is off by 2 sigma^2 tr(AW) / m
    no_divergence = jax.vmap(lambda y: jnp.sum((a(model(y, a)) - y) ** 2) - m * sigma**2)(ys) / (n * loss_fn.norm2)
    assert abs(float((no_divergence - true).mean())) > 20 * se


# --------------------------------------------------------------------------------------------------
# Noise2Inverse
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_views, num_splits", [(12, 2), (12, 3), (7, 3), (5, 5)])
def test_split_views(num_views, num_splits):
    inputs, held = split_views(num_views, num_splits)
    assert inputs.shape == (num_splits, num_views)
    assert sorted(np.concatenate(held).tolist()) == list(range(num_views))  # a partition
    for k in range(num_splits):
        np.testing.assert_array_equal(held[k], np.arange(k, num_views, num_splits))
        assert not set(inputs[k].tolist()) & set(held[k].tolist())  # the input never sees the held-out views
        kept = np.setdiff1d(np.arange(num_views), held[k])
        np.testing.assert_array_equal(inputs[k][kept], kept)  # kept views stay in their slots


def test_two_splits_give_the_fbp_of_the_kept_views():
    """K = 2: every kept view fills two slots, so the full-size input's FBP is the FBP of the kept half."""
    y = TEST.y[0]
    inputs, held = split_views(12, 2)
    for k in range(1):
        kept = np.setdiff1d(np.arange(12), held[k])
        full = fbp(y[inputs[k]], select_views(OP, inputs[k]).geom, "hann")
        half = fbp(y[kept], select_views(OP, kept).geom, "hann")
        np.testing.assert_allclose(full, half, rtol=1e-10, atol=1e-12)


def test_noise2inverse_value():
    """A model that ignores its input: the loss is the mean over splits of the held-out residuals."""
    x = TEST.x[0]
    fixed = lambda y, op: x
    ys = TEST.y[:1]
    loss_fn = noise2inverse_loss_fn(OP, 2)
    _, held = split_views(12, 2)
    expected = np.mean([
        np.mean([(12 / len(h)) * float(jnp.sum((OP(x)[h] - y[h]) ** 2)) for y in ys]) for h in held
    ]) / (24 * 24 * float(loss_fn.norm2))
    np.testing.assert_allclose(float(loss_fn(fixed, ys)), expected, rtol=1e-10)
    image = noise2inverse_loss_fn(OP, 2, domain="image")
    expected = np.mean([
        np.mean([float(jnp.mean((x - fbp(y[h], select_views(OP, h).geom, "ram-lak")) ** 2)) for y in ys]) for h in held
    ])
    np.testing.assert_allclose(float(image(fixed, ys)), expected, rtol=1e-10)


def test_noise2inverse_accepts_a_parallel_xray_transform():
    loss_fn = noise2inverse_loss_fn(XRayTransform(OP.geom), 3)
    assert isinstance(loss_fn.op, XRayTransform) and len(loss_fn.held) == 3
    np.testing.assert_allclose(float(loss_fn.norm2), float(LOSSES["noise2inverse"].norm2), rtol=1e-6)


# --------------------------------------------------------------------------------------------------
# Equivariant imaging
# --------------------------------------------------------------------------------------------------


def test_rotate():
    x = jnp.asarray(np.random.default_rng(2).standard_normal((6, 5)))
    np.testing.assert_allclose(rotate(x, 0.0), x, atol=1e-12)
    square = x[:5]
    np.testing.assert_allclose(rotate(square, np.pi / 2), np.rot90(square), atol=1e-12)  # counter-clockwise
    np.testing.assert_allclose(rotate(square, np.pi), np.rot90(square, 2), atol=1e-12)
    # the sinogram turns with the image: rotating a smooth blob by one view step shifts the views by one
    r, c = jnp.meshgrid(jnp.arange(24.0), jnp.arange(24.0), indexing="ij")
    blob = jnp.exp(-((r - 8) ** 2 + (c - 14) ** 2) / 18)
    turned, sino, step = OP(rotate(blob, OP.geom.angles[1])), OP(blob), float(jnp.abs(OP(blob)).max())
    assert float(jnp.abs(turned[1:] - sino[:-1]).max()) < 0.03 * step  # measured 0.020; the other way 0.42
    assert float(jnp.abs(turned[:-1] - sino[1:]).max()) > 0.2 * step
    with pytest.raises(ValueError, match=r"one \(H, W\) image, got shape \(1, 4, 4\)"):
        rotate(jnp.ones((1, 4, 4)), 0.1)


def test_equivariant_imaging_is_zero_for_an_equivariant_consistent_model():
    op = IdentityOperator((8, 8))
    identity = lambda y, op: y
    ys = jax.random.normal(jax.random.key(3), (2, 8, 8))
    assert float(equivariant_imaging_loss_fn(op)(identity, ys)) == pytest.approx(0, abs=1e-20)
    halve = lambda y, op: y / 2  # consistency fails: ||y/2 - y||^2 / (n ||A||^2) = mean(y^2)/4
    value = float(equivariant_imaging_loss_fn(op, alpha=1.0)(halve, ys))
    assert value >= float(jnp.mean(ys**2)) / 4 - 1e-12


# --------------------------------------------------------------------------------------------------
# Training without truths lowers the error against them
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["noise2inverse", "sure", "robust-ei"])
def test_training_without_truth_lowers_the_test_error(name):
    before = _test_error(INIT)
    result = fit(INIT, LOSSES[name], _batch_fn, OPTIMIZER, 60, progress=False)
    after = _test_error(result.model)
    # measured (100 steps, batch 8): start 0.0103, FBP 0.0065, supervised 0.0030; SURE 0.0034,
    # robust EI 0.0035, Noise2Inverse (measurement) 0.0036; Noise2Inverse with FBP targets 0.0096
    assert after < 0.5 * before, (before, after)


def test_resume_is_exact(tmp_path):
    loss_fn = LOSSES["sure"]
    straight = fit(INIT, loss_fn, _batch_fn, OPTIMIZER, 4, progress=False)
    fit(INIT, loss_fn, _batch_fn, OPTIMIZER, 2, progress=False, checkpoint_dir=tmp_path)
    resumed = fit(INIT, loss_fn, _batch_fn, OPTIMIZER, 4, progress=False, checkpoint_dir=tmp_path)
    np.testing.assert_array_equal(resumed.model.kernel, straight.model.kernel)


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build, error, message",
    [
        (lambda: noise2inverse_loss_fn(OP, 1), ValueError, r"num_splits must be an int in \[2, num_views\] = \[2, 12\] \(each split.*got 1"),
        (lambda: noise2inverse_loss_fn(OP, 13), ValueError, r"\[2, 12\] \(each.*got 13"),
        (lambda: noise2inverse_loss_fn(OP, 2.0), ValueError, r"num_splits must be an int"),
        (lambda: noise2inverse_loss_fn(OP, domain="sinogram"), ValueError, r"domain to be one of \('measurement', 'image'\)"),
        (lambda: noise2inverse_loss_fn(OP, filter="box"), ValueError, "filter to be one of"),
        (lambda: noise2inverse_loss_fn(MatrixOperator(jnp.eye(3))), TypeError, "got MatrixOperator"),
        (lambda: noise2inverse_loss_fn(XRayTransform(FanBeamGeometry.uniform((8, 8), 8, 40.0, 30.0))), TypeError,
         "got an XRayTransform of a FanBeamGeometry"),
        (lambda: sure_loss_fn(OP, 0.0), ValueError, "noise_level to be a finite number > 0, got 0.0"),
        (lambda: sure_loss_fn(OP, -0.1), ValueError, "noise_level to be a finite number > 0"),
        (lambda: sure_loss_fn(OP, None), ValueError, "noise_level to be a finite number > 0, got None"),
        (lambda: sure_loss_fn(OP, 0.05, epsilon=0), ValueError, "epsilon to be a finite number > 0"),
        (lambda: sure_loss_fn("op", 0.05), TypeError, "LinearOperator, got str"),
        (lambda: sure_loss_fn(OP, 0.05, seed=-1), ValueError, "seed to be a non-negative int"),
        (lambda: equivariant_imaging_loss_fn(OP, alpha=0), ValueError, "alpha to be a finite number > 0, got 0"),
        (lambda: equivariant_imaging_loss_fn(OP, noise_level=0), ValueError, "noise_level to be a finite number > 0 or None"),
        (lambda: equivariant_imaging_loss_fn(MatrixOperator(jnp.eye(3))), ValueError, r"rotates real \(H, W\) images"),
        (lambda: split_views(4, 2.5), ValueError, "num_splits to be an int"),
    ],
)
def test_bad_arguments(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_bad_batches_and_models():
    loss_fn = LOSSES["sure"]
    with pytest.raises(ValueError, match=r"measurements of shape \(B, \*\(12, 34\)\), got \(12, 34\)"):
        loss_fn(INIT, TEST.y[0])
    with pytest.raises(TypeError, match="a Sample\\(y, x\\) \\(x is not read\\) or an array of measurements, got list"):
        loss_fn(INIT, [1, 2])
    with pytest.raises(TypeError, match="real floating-point measurements, got dtype int"):
        loss_fn(INIT, jnp.zeros((1, 12, 34), int))
    with pytest.raises(ValueError, match=r"model\(y, op\) to return op.in_shape \(24, 24\), got \(24,\)"):
        LOSSES["noise2inverse"](lambda y, op: jnp.zeros(24), TEST.y[:1])


# --------------------------------------------------------------------------------------------------
# Experiments: config entries, training and resuming without truths
# --------------------------------------------------------------------------------------------------


def test_experiment_configs_record_the_loss():
    from jaxrecon.train.experiment import LOSSES, experiment_config

    assert LOSSES == ("supervised", "noise2inverse", "ei", "sure")
    assert experiment_config("lpd")["train"]["loss"] == "supervised"
    assert experiment_config("lpd", train={"loss": "sure"})["train"]["loss_options"] == {"noise_level": 0.05, "epsilon": 0.01}
    ei = experiment_config("unet", "quick15", train={"loss": "ei", "loss_options": {"alpha": 0.5}})
    assert ei["train"]["loss_options"] == {"alpha": 0.5, "noise_level": 0.05, "epsilon": 0.01}
    n2i = experiment_config("lgd", train={"loss": "noise2inverse"})["train"]["loss_options"]
    assert n2i == {"num_splits": 2, "domain": "measurement", "filter": "ram-lak"}
    with pytest.raises(ValueError, match=r"unknown loss 'n2n' in config train.loss; expected one of \('supervised'"):
        experiment_config("lpd", train={"loss": "n2n"})
    with pytest.raises(ValueError, match=r"unknown options \['alpha'\] for the sure loss"):
        experiment_config("lpd", train={"loss": "sure", "loss_options": {"alpha": 1}})
    lodopab = {"source": "lodopab", "path": "nowhere", "shape": [8, 8], "num_angles": 4, "num_detectors": 5}
    with pytest.raises(ValueError, match="the sure loss needs the data's Gaussian noise level"):
        experiment_config("lpd", data=lodopab, train={"loss": "sure"})


@pytest.mark.slow
def test_experiment_trains_without_truths(monkeypatch):
    """`train` hands `fit` the configured loss, batches without truth, and the config (checkpointed with them)."""
    from jaxrecon.train import experiment

    config = experiment.experiment_config(
        "pgd", "quick", data={"size": 16, "num_angles": 6, "num_detectors": 23}, model_options={"num_iterations": 2},
        train={"steps": 2, "validate_every": 2, "validation_size": 1, "loss": "noise2inverse"},
    )
    seen = {}

    def spy(model, loss_fn, batch_fn, optimizer, num_steps, **kwargs):
        seen.update(loss=loss_fn, batch=batch_fn(1), config=kwargs["config"], steps=num_steps)
        return "trained"

    monkeypatch.setattr(experiment, "fit", spy)
    assert experiment.train(config, None, progress=False) == "trained"
    assert isinstance(seen["loss"], type(LOSSES["noise2inverse"])) and seen["loss"].domain == "measurement"
    assert seen["batch"].x is None and seen["batch"].y.shape == (4, 6, 23)  # no truth reaches the step
    assert seen["config"] == config and seen["config"]["train"]["loss"] == "noise2inverse" and seen["steps"] == 2


def test_ei_default_weight_is_the_authors_balance_in_our_units():
    """alpha = 100 m / (n ||A||^2): weight 100 on per-element means (the EI authors' CT code) in units where
    the measurement term is divided by n ||A||^2; an explicit alpha is kept as given."""
    from jaxrecon.operators import operator_norm

    m, n = math.prod(OP.out_shape), math.prod(OP.in_shape)
    expected = 100 * m / (n * float(operator_norm(OP)) ** 2)
    np.testing.assert_allclose(equivariant_imaging_loss_fn(OP).alpha, expected, rtol=1e-3)
    assert equivariant_imaging_loss_fn(OP, alpha=0.5).alpha == 0.5
