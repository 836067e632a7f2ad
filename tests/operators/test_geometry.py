import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrecon.operators import ParallelBeamGeometry


def test_uniform():
    geom = ParallelBeamGeometry.uniform((128, 128), 30, 183)
    np.testing.assert_allclose(geom.angles, np.arange(30) * np.pi / 30, rtol=1e-6)
    assert geom.sinogram_shape == (30, 183) and geom.shape == (128, 128)
    assert ParallelBeamGeometry.uniform((128, 128), 30).num_detectors == 182  # ceil(sqrt(2) * 128)


def test_detector_positions_are_centred():
    s = ParallelBeamGeometry.uniform((8, 8), 4, 5, detector_spacing=0.5, detector_offset=1.0).detector_positions()
    np.testing.assert_allclose(s, [0.0, 0.5, 1.0, 1.5, 2.0])


def test_vmapped_construction_batches_angles():
    geoms = jax.vmap(lambda a: ParallelBeamGeometry((8, 8), a, 12))(jnp.zeros((3, 5)))
    assert geoms.angles.shape == (3, 5) and geoms.num_detectors == 12


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(shape=(0, 8), angles=jnp.zeros(3)), ValueError, "shape must be positive"),
        (dict(shape=(8,), angles=jnp.zeros(3)), TypeError, r"pair of ints \(H, W\)"),
        (dict(shape=(8, 8.0), angles=jnp.zeros(3)), TypeError, r"pair of ints"),
        (dict(shape=(8, 8), angles=jnp.zeros((2, 3))), ValueError, r"1-D array .* got shape \(2, 3\)"),
        (dict(shape=(8, 8), angles=jnp.zeros(0)), ValueError, "non-empty"),
        (dict(shape=(8, 8), angles=jnp.array([0.0, jnp.nan])), ValueError, "finite"),
        (dict(shape=(8, 8), angles="0 1 2"), TypeError, "angles must be a 1-D array of numbers"),
        (dict(shape=(8, 8), angles=np.array(["0", "1"])), TypeError, "angles must be a 1-D array of numbers"),
        (dict(shape=(8, 8), angles=jnp.zeros(3, jnp.complex64)), TypeError, "angles must be real"),
        (dict(shape=(8, 8), angles=jnp.zeros(3), num_detectors=0), ValueError, "num_detectors must be positive"),
        (dict(shape=(8, 8), angles=jnp.zeros(3), num_detectors=3.5), TypeError, "num_detectors must be an int"),
        (dict(shape=(8, 8), angles=jnp.zeros(3), detector_spacing=-1.0), ValueError, "detector_spacing must be positive"),
        (dict(shape=(8, 8), angles=jnp.zeros(3), detector_spacing=1.0, min_detector_spacing=2.0), ValueError, "min_detector_spacing"),
    ],
)
def test_bad_input(kwargs, error, message):
    with pytest.raises(error, match=message):
        ParallelBeamGeometry(**kwargs)


def test_angles_that_look_like_degrees_warn():
    with pytest.warns(UserWarning, match="look like degrees"):
        ParallelBeamGeometry((8, 8), np.arange(0.0, 180.0, 6.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ParallelBeamGeometry((8, 8), np.linspace(0, 2 * np.pi, 30))  # one full turn in radians: no warning
        ParallelBeamGeometry((8, 8), -np.linspace(0, np.pi, 30))


def test_uniform_rejects_bad_counts():
    with pytest.raises(ValueError, match="num_angles must be a positive int, got 0"):
        ParallelBeamGeometry.uniform((8, 8), 0)


def test_constructing_a_geometry_inside_jit_from_constants():
    # jnp operations on closed-over constants inside a jit trace give tracers on jax 0.10: the
    # finiteness check must not call bool() on them
    import numpy as np

    from jaxrecon.operators import radon

    angles = np.linspace(0, np.pi, 10, endpoint=False)
    base = ParallelBeamGeometry.uniform((16, 16), 10)
    f = jax.jit(lambda x: radon(x, ParallelBeamGeometry((16, 16), jnp.asarray(angles) + 0.1, 23)))
    g = jax.jit(lambda x: radon(x, base.with_angles(base.angles + 0.1)))
    x = jnp.ones((16, 16))
    assert f(x).shape == (10, 23) and g(x).shape == (10, base.num_detectors)
