"""On-the-fly CT data: components against NumPy references, determinism, leak-free splits, validation."""

import doctest
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrecon.operators.geometry import ParallelBeamGeometry
from jaxrecon.operators.radon import radon
from jaxrecon.phantoms.ellipses import EllipsePhantom, ellipse_sinogram, random_ellipse_phantom
from jaxrecon.phantoms.shepp_logan import MODIFIED_SHEPP_LOGAN
from jaxrecon.train.data import SPLIT_ID, CTData, Sample, batch_keys, shepp_logan_sample, split_key

# One configuration throughout (the sampler takes seconds to compile): it matches the doctests.
SIZE, ANGLES, NOISE = 16, 8, 0.05


@pytest.fixture(scope="module")
def data():
    return CTData.uniform(SIZE, num_angles=ANGLES, noise=NOISE)


def _key_bits(k):
    return np.asarray(jax.random.key_data(k))


def _numpy_pixel_average(centre, axes, rotation, value, shape, k):
    """Pixel averages of a sum of ellipses on a k x k sub-pixel grid, in NumPy (normalised coordinates)."""
    H, W = shape
    t = (np.arange(k) + 0.5) / k - 0.5  # sub-pixel offsets
    u = ((np.arange(W)[:, None] - (W - 1) / 2 + t[None, :]) / (W / 2)).reshape(-1)  # left to right
    v = (((H - 1) / 2 - np.arange(H)[:, None] - t[None, :]) / (H / 2)).reshape(-1)  # top to bottom
    uu, vv = np.meshgrid(u, v)
    fine = np.zeros_like(uu)
    for (cu, cv), (a, b), phi, val in zip(centre, axes, rotation, value):
        if val == 0 or a * b == 0:
            continue
        p = (uu - cu) * np.cos(phi) + (vv - cv) * np.sin(phi)
        q = -(uu - cu) * np.sin(phi) + (vv - cv) * np.cos(phi)
        fine += np.where((p / a) ** 2 + (q / b) ** 2 <= 1, val, 0.0)
    return fine.reshape(H, k, W, k).mean(axis=(1, 3))


def test_split_keys_are_deterministic_and_disjoint():
    assert SPLIT_ID == {"train": 0, "validation": 1, "test": 2}
    ref = jax.random.fold_in(jax.random.fold_in(jax.random.key(7), 1), 3)
    np.testing.assert_array_equal(_key_bits(split_key(7, "validation", 3)), _key_bits(ref))
    np.testing.assert_array_equal(_key_bits(split_key(7, "train", 3)), _key_bits(split_key(7, "train", 3)))
    # 3 splits x 50 indices x 2 seeds: all keys distinct
    bits = {tuple(_key_bits(split_key(seed, s, i))) for seed in (0, 1) for s in SPLIT_ID for i in range(50)}
    assert len(bits) == 300
    keys = batch_keys(7, "test", 5, 4)
    assert keys.shape == (4,)
    for j in range(4):
        np.testing.assert_array_equal(_key_bits(keys[j]), _key_bits(split_key(7, "test", 5 + j)))
    # traced indices (vmap) agree with Python ints
    traced = jax.jit(lambda i: jax.random.key_data(split_key(7, "train", i)))(jnp.asarray(3))
    np.testing.assert_array_equal(traced, _key_bits(split_key(7, "train", 3)))


def test_split_key_validation():
    with pytest.raises(ValueError, match="split must be one of"):
        split_key(0, "val", 0)
    with pytest.raises(ValueError, match="non-negative int below 2\\*\\*32, got -1"):
        split_key(0, "train", -1)
    with pytest.raises(TypeError, match="seed must be a non-negative int, got True"):
        split_key(True, "train", 0)
    with pytest.raises(ValueError, match="seed must be a non-negative int below"):
        split_key(-3, "train", 0)
    with pytest.raises(TypeError, match="index must be"):
        split_key(0, "train", 1.5)
    with pytest.raises(ValueError, match="count must be an int >= 1, got 0"):
        batch_keys(0, "train", 0, 0)


@pytest.mark.slow
def test_sample_against_numpy_reference(data):
    key = split_key(3, "train", 0)
    s = data.sample(key)
    assert isinstance(s, Sample) and s.y.shape == (ANGLES, 23) and s.x.shape == (SIZE, SIZE)
    assert s.x.dtype == s.y.dtype == jnp.float64
    # the sampler's own draws: phantom from the first half of split(key), noise from the second
    k_phantom, _ = jax.random.split(key)
    ph = random_ellipse_phantom(k_phantom, (SIZE, SIZE), "adler2018")
    used = np.asarray(ph.value) != 0
    ref = _numpy_pixel_average(*(np.asarray(a)[used] for a in (ph.centre, ph.axes, ph.rotation, ph.value)),
                               (SIZE, SIZE), 4)
    np.testing.assert_allclose(s.x, ref, atol=1e-12)
    # y = exact sinogram + Gaussian noise of std NOISE * mean|clean|
    clean = np.asarray(ellipse_sinogram(ph, data.geometry))
    resid = np.asarray(s.y) - clean
    sigma = NOISE * np.mean(np.abs(clean))
    assert 0.7 * sigma < resid.std() < 1.3 * sigma  # 184 samples: ~5% standard error
    assert abs(resid.mean()) < 4 * sigma / np.sqrt(resid.size)
    # no inverse crime, but the same geometry: the discrete projector of x is close to the exact data
    disc = np.asarray(radon(s.x, data.geometry))
    assert np.linalg.norm(disc - clean) / np.linalg.norm(clean) < 0.25  # 12% at 16 x 16 (tiny ellipses)


@pytest.mark.slow
def test_batch_is_vmapped_samples_and_splits_never_coincide(data):
    key = split_key(0, "train", 0)
    b = data.batch(key, 4)
    assert b.y.shape == (4, ANGLES, 23) and b.x.shape == (4, SIZE, SIZE)
    for i, k in enumerate(jax.random.split(key, 4)):
        s = data.sample(k)
        np.testing.assert_allclose(b.x[i], s.x, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(b.y[i], s.y, rtol=1e-10, atol=1e-12)
    # same (seed, split, index): identical, bit for bit; other split or index: different phantoms
    again = data.batch(split_key(0, "train", 0), 4)
    np.testing.assert_array_equal(again.x, b.x)
    np.testing.assert_array_equal(again.y, b.y)
    others = [data.batch(split_key(0, split, i), 4).x for split, i in (("validation", 0), ("test", 0), ("train", 1))]
    for other in others:
        for i in range(4):
            for j in range(4):
                assert not np.allclose(other[i], b.x[j])
    # a validation set drawn sample by sample from its own stream
    val = [data.sample(k).x for k in batch_keys(0, "validation", 0, 2)]
    np.testing.assert_array_equal(val[1], data.sample(split_key(0, "validation", 1)).x)
    assert not np.allclose(val[0], val[1])


def test_shepp_logan_sample(data):
    s = shepp_logan_sample(data)
    again = shepp_logan_sample(data)
    np.testing.assert_array_equal(s.y, again.y)  # fixed key
    # x: pixel averages of the Shepp-Logan table (NumPy reference), clipped to [0, 1]
    table = np.asarray(MODIFIED_SHEPP_LOGAN)
    ref = _numpy_pixel_average(table[:, 3:5], table[:, 1:3], np.deg2rad(table[:, 5]), table[:, 0], (SIZE, SIZE), 4)
    np.testing.assert_allclose(s.x, np.clip(ref, 0, 1), atol=1e-12)
    # y: exact line integrals (close to the projector applied to x) plus noise of the right level
    exact = np.asarray(ellipse_sinogram(EllipsePhantom.from_table(table, degrees=True), data.geometry))
    assert np.linalg.norm(np.asarray(radon(s.x, data.geometry)) - exact) / np.linalg.norm(exact) < 0.25  # 15% at 16 x 16
    resid = np.asarray(s.y) - exact
    assert 0.7 < resid.std() / (NOISE * np.mean(np.abs(exact))) < 1.3
    other = shepp_logan_sample(data, key=jax.random.key(1))
    assert not np.allclose(other.y, s.y)


def test_float32_and_uniform_arguments():
    data = CTData.uniform((SIZE, SIZE + 2), num_angles=4, num_detectors=20, noise=0.0, supersample=1,
                          dtype=jnp.float32)
    assert data.geometry.shape == (SIZE, SIZE + 2) and data.geometry.num_detectors == 20
    assert data.operator.in_shape == (SIZE, SIZE + 2) and data.operator.out_shape == (4, 20)
    s = shepp_logan_sample(data)
    assert s.x.dtype == s.y.dtype == jnp.float32
    # noise 0: y is the exact sinogram
    from jaxrecon.phantoms.shepp_logan import shepp_logan_ellipses

    np.testing.assert_array_equal(s.y, ellipse_sinogram(shepp_logan_ellipses(jnp.float32), data.geometry))


def test_validation_errors(data):
    geom = ParallelBeamGeometry.uniform((8, 8), 4)
    with pytest.raises(TypeError, match="geometry must be a ParallelBeamGeometry, got tuple"):
        CTData((8, 8), 0.1)
    with pytest.raises(ValueError, match="noise must be a finite non-negative float.*got -0.1"):
        CTData(geom, -0.1)
    with pytest.raises(TypeError, match="noise must be"):
        CTData(geom, "0.1")
    with pytest.raises(ValueError, match="preset must be one of.*got 'shepp'"):
        CTData(geom, 0.1, preset="shepp")
    with pytest.raises(ValueError, match="supersample must be a positive int, got 0"):
        CTData(geom, 0.1, supersample=0)
    with pytest.raises(TypeError, match="size must be"):
        CTData.uniform(8.0, 4)
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        data.batch(jax.random.key(0), 0)
    with pytest.raises(ValueError, match="single PRNG key.*shape \\(2,\\)"):
        data.sample(jax.random.split(jax.random.key(0), 2))
    with pytest.raises(TypeError, match="expects a JAX PRNG key"):
        data.sample(3)
    with pytest.raises(TypeError, match="expects a CTData"):
        shepp_logan_sample(geom)
    # CTData is a pytree with the geometry as its only leaves (statics: noise, preset, supersample)
    assert len(jax.tree.leaves(data)) == len(jax.tree.leaves(data.geometry))


def test_docstring_examples():
    result = doctest.testmod(sys.modules["jaxrecon.train.data"], optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.slow
@pytest.mark.parametrize("vec", [False, True])
def test_fan_beam_data_use_the_fan_geometry(vec):
    from jaxrecon.operators import FanBeamGeometry, XRayTransform
    from jaxrecon.phantoms.shepp_logan import shepp_logan_ellipses

    geom = FanBeamGeometry.uniform((8, 8), 6, 20.0, 15.0, dtype=jnp.float64)
    geom = geom.to_vec() if vec else geom
    data = CTData(geom, 0.0, supersample=2)
    assert isinstance(data.operator, XRayTransform) and data.operator.geom is geom
    s = data.sample(split_key(0, "train", 0))
    assert s.y.shape == geom.sinogram_shape and s.x.shape == (8, 8) and s.y.dtype == jnp.float64
    phantom = random_ellipse_phantom(jax.random.split(split_key(0, "train", 0))[0], (8, 8), dtype=jnp.float64)
    np.testing.assert_allclose(s.y, ellipse_sinogram(phantom, geom), rtol=1e-12, atol=1e-12)
    sl = shepp_logan_sample(data)
    np.testing.assert_array_equal(sl.y, ellipse_sinogram(shepp_logan_ellipses(jnp.float64), geom))
