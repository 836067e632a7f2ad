"""Learned schemes on a fan-beam `XRayTransform`, unchanged: the FBP initialisation dispatches on the
geometry, the schemes run, vmap equals stacking, and a few training steps lower the loss."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrecon.nets import LearnedGradientDescent, LearnedPrimalDual, PostProcessing, initial_reconstruction
from jaxrecon.operators import (
    CircularConvolution,
    FanBeamGeometry,
    ParallelBeamGeometry,
    RadonTransform,
    XRayTransform,
    fbp,
    gaussian_kernel,
)
from jaxrecon.phantoms import ellipse_sinogram
from jaxrecon.phantoms.shepp_logan import shepp_logan_ellipses
from jaxrecon.train import CTData, batch_keys, default_optimizer, fit, reconstruction_loss_fn

N = 16
KEY = jax.random.key(0)


def _fan(detector="flat", num_angles=12):
    return FanBeamGeometry.uniform((N, N), num_angles, 40.0, 30.0, detector=detector, dtype=jnp.float64)


def _data(geom):
    y = ellipse_sinogram(shepp_logan_ellipses(jnp.float64), geom)
    return y + 0.05 * jnp.mean(jnp.abs(y)) * jax.random.normal(jax.random.key(1), y.shape, y.dtype)


# ------------------------------------------------------------------------------------------------
# initial_reconstruction dispatches on the geometry
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("detector", ["flat", "curved"])
@pytest.mark.parametrize("init", ["fbp", "auto"])
def test_fbp_init_on_fan_beam_is_fan_fbp(detector, init):
    geom = _fan(detector)
    op, y = XRayTransform(geom), _data(geom)
    np.testing.assert_array_equal(initial_reconstruction(y, op, init, "hamming"), fbp(y, geom, "hamming"))
    # The operator as a traced argument (the geometry's arrays traced): the same image.
    jitted = eqx.filter_jit(lambda op, y: initial_reconstruction(y, op, init, "hamming"))(op, y)
    np.testing.assert_allclose(jitted, fbp(y, geom, "hamming"), rtol=1e-12, atol=1e-12)


def test_fbp_init_on_parallel_xray_transform_equals_radon_transform():
    geom = ParallelBeamGeometry.uniform((N, N), 10, dtype=jnp.float64)
    y = _data(geom)
    for init in ("fbp", "auto"):
        np.testing.assert_array_equal(
            initial_reconstruction(y, XRayTransform(geom), init), initial_reconstruction(y, RadonTransform(geom), init)
        )


def test_fbp_init_on_vector_geometry_is_a_clear_error_and_auto_uses_the_adjoint():
    op = XRayTransform(_fan().to_vec())
    y = _data(op.geom)
    with pytest.raises(ValueError, match=r"init='fbp' needs a circular-orbit geometry.*FanBeamVecGeometry.*'adjoint'"):
        initial_reconstruction(y, op, "fbp")
    np.testing.assert_array_equal(initial_reconstruction(y, op, "auto"), op.T(y))


def test_fbp_init_on_other_operators_keeps_its_message():
    blur = CircularConvolution(gaussian_kernel((3, 3), 1.0), (N, N))
    with pytest.raises(ValueError, match="init='fbp' needs a RadonTransform.*got CircularConvolution"):
        initial_reconstruction(jnp.zeros((N, N)), blur, "fbp")
    np.testing.assert_array_equal(initial_reconstruction(jnp.ones((N, N)), blur, "auto"), blur.T(jnp.ones((N, N))))


@pytest.mark.slow
def test_postprocessing_on_fan_beam_uses_fan_fbp():
    geom = _fan("curved")
    op, y = XRayTransform(geom), _data(geom)
    model = PostProcessing(lambda z: 2 * z, init="auto", filter="cosine")
    np.testing.assert_allclose(model(y, op), 2 * fbp(y, geom, "cosine"), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# Learned primal-dual and learned gradient descent on a fan-beam operator
# ------------------------------------------------------------------------------------------------


def _model(cls, op, init):
    return cls(op, num_iterations=2, hidden=4, init=init, last_scale=0.1, key=KEY, dtype=jnp.float64)


@pytest.mark.parametrize(
    "cls, detector, init",
    [(LearnedPrimalDual, "curved", "fbp"), (LearnedGradientDescent, "vec", "auto")],
)
@pytest.mark.slow
def test_vmap_over_a_batch_equals_stacking(cls, detector, init):
    geom = _fan().to_vec() if detector == "vec" else _fan(detector)
    op = XRayTransform(geom)
    model = _model(cls, op, init)
    y = _data(geom)
    ys = jnp.stack([y, 0.5 * y, y[::-1]])
    call = eqx.filter_jit(lambda m, y, op: m(y, op))
    batched = eqx.filter_jit(lambda m, ys, op: jax.vmap(lambda y: m(y, op))(ys))(model, ys, op)
    assert batched.shape == (3, N, N) and bool(jnp.all(jnp.isfinite(batched)))
    np.testing.assert_allclose(batched, jnp.stack([call(model, y, op) for y in ys]), rtol=1e-9, atol=1e-11)


@pytest.mark.slow
@pytest.mark.parametrize("cls", [LearnedPrimalDual, LearnedGradientDescent])
def test_a_few_training_steps_lower_the_loss(cls):
    data = CTData(_fan(), noise=0.05, supersample=2)
    op = data.operator
    assert isinstance(op, XRayTransform)
    model = _model(cls, op, "fbp")  # the fan-beam FBP inside the differentiated model
    batch = jax.jit(jax.vmap(data.sample))(batch_keys(0, "train", 0, 4))
    steps = 10
    # The same batch at every step, Adam at a near-constant 1e-3 (the cosine decay spans 1000 steps).
    # Measured (float64): the loss falls to 0.984 (LPD) and 0.947 (LGD) of its first value.
    optimizer = default_optimizer(1e-3, num_steps=1000)
    result = fit(model, reconstruction_loss_fn(op), lambda k: batch, optimizer, steps, progress=False)
    loss = result.history["loss"]
    assert len(loss) == steps and all(np.isfinite(loss))
    assert loss[-1] < 0.99 * loss[0], loss
