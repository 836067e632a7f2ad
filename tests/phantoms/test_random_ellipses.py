"""Random ellipse presets: vmap/determinism, normalisation, distributions, validation, doctests."""

import doctest
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxrecon.phantoms import EllipsePhantom, random_ellipse_phantom, random_ellipses, rasterize

NUM_KEYS = 200
STAT_SHAPE = (16, 16)


@pytest.fixture(scope="module")
def batches():
    """200 phantoms per preset, drawn with one vmap each."""
    keys = jax.random.split(jax.random.key(2024), NUM_KEYS)
    return {
        preset: jax.vmap(lambda k, p=preset: random_ellipse_phantom(k, STAT_SHAPE, p))(keys)
        for preset in ("adler2018", "dival")
    } | {"keys": keys}


def _item(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


@pytest.fixture(scope="module")
def images64():
    """`jax.vmap(lambda k: random_ellipses(k, (64, 64), preset))(keys)` for 3 keys, per preset."""
    keys = jax.random.split(jax.random.key(1), 3)
    return {p: jax.vmap(lambda k, p=p: random_ellipses(k, (64, 64), p))(keys) for p in ("adler2018", "dival")} | {
        "keys": keys
    }


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["adler2018", "dival"])
def test_vmap_over_keys_equals_separate_calls(images64, preset):
    imgs, keys = images64[preset], images64["keys"]
    assert imgs.shape == (3, 64, 64)
    for i in range(3):
        np.testing.assert_allclose(imgs[i], random_ellipses(keys[i], (64, 64), preset), rtol=1e-12, atol=1e-12)
    assert not np.allclose(imgs[0], imgs[1])


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["adler2018", "dival"])
def test_phantom_batch_matches_separate_calls(batches, preset):
    for i in (0, 7):
        single = random_ellipse_phantom(batches["keys"][i], STAT_SHAPE, preset)
        for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(_item(batches[preset], i))):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_deterministic_and_key_types():
    a = random_ellipses(jax.random.key(3), (24, 20))
    b = random_ellipses(jax.random.key(3), (24, 20))
    np.testing.assert_array_equal(a, b)
    # a raw uint32 key with the same seed gives the same phantom as a typed key
    np.testing.assert_array_equal(a, random_ellipses(jax.random.PRNGKey(3), (24, 20)))
    assert not np.array_equal(a, random_ellipses(jax.random.key(4), (24, 20)))


def test_random_ellipses_is_rasterize_of_phantom():
    key = jax.random.key(8)
    for preset in ("adler2018", "dival"):
        ph = random_ellipse_phantom(key, (20, 28), preset)
        # (dival: equal up to rounding, see random_ellipses)
        np.testing.assert_allclose(random_ellipses(key, (20, 28), preset), rasterize(ph, (20, 28)), rtol=0, atol=1e-12)


def test_adler_parameters_do_not_depend_on_shape():
    key = jax.random.key(9)
    a, b = random_ellipse_phantom(key, (16, 16)), random_ellipse_phantom(key, (40, 24))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    assert float(a.scale) == 1.0 and float(a.offset) == 0.0


def test_dival_normalised_to_unit_range(batches, images64):
    imgs = jax.vmap(lambda p: rasterize(p, STAT_SHAPE))(batches["dival"])
    mins, maxs = np.asarray(imgs.min(axis=(1, 2))), np.asarray(imgs.max(axis=(1, 2)))
    np.testing.assert_allclose(mins, 0.0, rtol=0, atol=1e-12)  # scale * min + offset, up to rounding
    np.testing.assert_allclose(maxs, 1.0, rtol=0, atol=1e-12)
    # random_ellipses spans [0, 1] exactly
    img = np.asarray(images64["dival"])
    np.testing.assert_array_equal(img.min(axis=(1, 2)), 0.0)
    np.testing.assert_array_equal(img.max(axis=(1, 2)), 1.0)


def test_dival_constant_image_guard():
    # an empty draw (all values 0) must give a finite, all-zero image rather than 0/0
    from jaxrecon.phantoms.ellipses import _normalise

    ph = EllipsePhantom(jnp.zeros((4, 2)), jnp.full((4, 2), 0.3), jnp.zeros(4), jnp.zeros(4))
    img = rasterize(_normalise(ph, (8, 8)), (8, 8))
    np.testing.assert_array_equal(img, 0.0)


def _used(phantom):
    mask = np.asarray(phantom.value) != 0
    return mask, mask.sum(axis=1)


@pytest.mark.parametrize("preset, mean, max_slots", [("adler2018", 50, 100), ("dival", 40, 70)])
def test_count_statistics(batches, preset, mean, max_slots):
    ph = batches[preset]
    assert ph.value.shape == (NUM_KEYS, max_slots)
    mask, counts = _used(ph)
    # slots are filled in order: used slots first, unused (value exactly 0) after
    assert np.all(mask == (np.arange(max_slots)[None] < counts[:, None]))
    assert abs(counts.mean() - mean) < 2.5  # 5 sigma for a mean of 200 Poisson draws
    assert 0.6 * mean < counts.var(ddof=1) < 1.5 * mean  # Poisson: variance = mean
    # against scipy's Poisson distribution (a chi-square-free check: the KS test on a discrete law
    # is conservative, so a p-value threshold of 1e-3 is safe)
    assert stats.kstest(counts, stats.poisson(mean).cdf).pvalue > 1e-3


def test_adler2018_distributions(batches):
    ph = batches["adler2018"]
    mask, _ = _used(ph)
    value = np.asarray(ph.value)[mask]
    axes = np.asarray(ph.axes)[mask]
    centre = np.asarray(ph.centre)[mask]
    rotation = np.asarray(ph.rotation)[mask]
    # value (U - 1/2) * Exp(scale 0.4), compared with NumPy draws made as in Adler's code
    rng = np.random.default_rng(0)
    ref = (rng.random(20000) - 0.5) * rng.exponential(0.4, 20000)
    assert stats.ks_2samp(value, ref).pvalue > 1e-3
    assert abs(value.var() - 2 * 0.4**2 / 12) < 0.1 * 2 * 0.4**2 / 12
    assert stats.kstest(axes.ravel(), stats.expon(scale=0.2).cdf).pvalue > 1e-3
    assert stats.kstest(centre.ravel(), stats.uniform(-1, 2).cdf).pvalue > 1e-3
    assert stats.kstest(rotation, stats.uniform(0, 2 * np.pi).cdf).pvalue > 1e-3
    assert np.all(ph.scale == 1.0) and np.all(ph.offset == 0.0)


def test_dival_distributions(batches):
    ph = batches["dival"]
    mask, _ = _used(ph)
    assert stats.kstest(np.asarray(ph.value)[mask], stats.uniform(-0.4, 1.4).cdf).pvalue > 1e-3
    assert stats.kstest(np.asarray(ph.axes)[mask].ravel(), stats.expon(scale=0.2).cdf).pvalue > 1e-3
    assert stats.kstest(np.asarray(ph.centre)[mask].ravel(), stats.uniform(-0.9, 1.8).cdf).pvalue > 1e-3
    assert stats.kstest(np.asarray(ph.rotation)[mask], stats.uniform(0, 2 * np.pi).cdf).pvalue > 1e-3


def test_dtype():
    ph = random_ellipse_phantom(jax.random.key(0), (8, 8), "dival", dtype=jnp.float32)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(ph))
    assert random_ellipses(jax.random.key(0), (8, 8), "dival", dtype=jnp.float32).dtype == jnp.float32
    with pytest.raises(TypeError, match="floating dtype"):
        random_ellipse_phantom(jax.random.key(0), (8, 8), dtype=jnp.int32)


def test_errors():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"unknown preset 'shepp'; expected one of \['adler2018', 'dival'\]"):
        random_ellipses(key, (8, 8), preset="shepp")
    with pytest.raises(ValueError, match=r"single PRNG key.*got dtype key<fry> and shape \(3,\).*vmap"):
        random_ellipses(jax.random.split(key, 3), (8, 8))
    with pytest.raises(ValueError, match=r"shape \(3, 2\)"):
        random_ellipse_phantom(jax.random.split(jax.random.PRNGKey(0), 3), (8, 8))
    with pytest.raises(TypeError, match="key must be a JAX PRNG key"):
        random_ellipses(0, (8, 8))
    with pytest.raises(ValueError, match=r"positive ints \(H, W\), got \(8, 0\)"):
        random_ellipses(key, (8, 0))
    with pytest.raises(TypeError, match=r"pair of positive ints \(H, W\), got 8"):
        random_ellipses(key, 8)


def test_phantom_and_rasterize_errors():
    with pytest.raises(ValueError, match=r"centre must have shape \(2, 2\) \(n = 2 ellipses\), got \(2,\)"):
        EllipsePhantom([0.0, 0.0], [[0.1, 0.1]] * 2, [0.0, 0.0], [1.0, 1.0])
    with pytest.raises(ValueError, match=r"value must have shape \(n,\), got \(2, 3\); .*vmap"):
        EllipsePhantom(jnp.zeros((3, 2)), jnp.ones((3, 2)), jnp.zeros(3), jnp.ones((2, 3)))
    with pytest.raises(ValueError, match=r"scale must have shape \(\)"):
        EllipsePhantom([[0.0, 0.0]], [[0.1, 0.1]], [0.0], [1.0], scale=[1.0, 2.0])
    with pytest.raises(ValueError, match="axes must be non-negative"):
        EllipsePhantom([[0.0, 0.0]], [[-0.1, 0.1]], [0.0], [1.0])
    with pytest.raises(ValueError, match="finite"):
        EllipsePhantom([[0.0, np.nan]], [[0.1, 0.1]], [0.0], [1.0])
    with pytest.raises(TypeError, match="real numbers, got dtype complex"):
        EllipsePhantom([[0.0, 0.0]], [[0.1, 0.1]], [0.0], [1.0j])
    with pytest.raises(ValueError, match=r"table must have shape \(n, 6\).*got \(2, 5\)"):
        EllipsePhantom.from_table(np.zeros((2, 5)))
    ph = EllipsePhantom([[0.0, 0.0]], [[0.5, 0.5]], [0.0], [1.0])
    with pytest.raises(ValueError, match=r"positive ints \(H, W\), got \(0, 4\)"):
        rasterize(ph, (0, 4))
    with pytest.raises(TypeError, match=r"pair of positive ints \(H, W\), got \(4, 4, 4\)"):
        rasterize(ph, (4, 4, 4))
    with pytest.raises(ValueError, match="supersample must be a positive int, got -1"):
        rasterize(ph, (4, 4), supersample=-1)
    with pytest.raises(TypeError, match="expected an EllipsePhantom, got dict"):
        rasterize({"centre": 0}, (4, 4))


def test_rasterize_basics():
    # a disk of radius 0.5 (normalised) in an 8x8 image covers the pixel centres with u^2 + v^2 <= 1/4
    ph = EllipsePhantom([[0.0, 0.0]], [[0.5, 0.5]], [0.0], [2.0], scale=0.5, offset=0.25)
    img = np.asarray(rasterize(ph, (8, 8)))
    c = (np.arange(8) - 3.5) / 4
    inside = c[None, :] ** 2 + c[:, None] ** 2 <= 0.25
    np.testing.assert_array_equal(img, np.where(inside, 1.25, 0.25))
    # supersampling approximates the covered area fraction
    fine = np.asarray(rasterize(EllipsePhantom([[0.0, 0.0]], [[0.5, 0.5]], [0.0], [1.0]), (8, 8), supersample=64))
    assert abs(fine.sum() - np.pi * 2**2) < 0.01  # radius 2 pixels
    # zero axes give an empty ellipse (no division by zero)
    empty = EllipsePhantom([[0.0, 0.0]], [[0.0, 0.5]], [0.0], [1.0])
    np.testing.assert_array_equal(rasterize(empty, (8, 8)), 0.0)
    # jit with static shape/supersample, vmap over phantoms
    f = jax.jit(rasterize, static_argnums=(1, 2))
    np.testing.assert_array_equal(f(ph, (8, 8), 1), img)


@pytest.mark.parametrize("name", ["ellipses", "shepp_logan"])
def test_docstring_examples(name):
    # sys.modules: the package attribute `jaxrecon.phantoms.shepp_logan` is the function, not the module
    module = sys.modules[f"jaxrecon.phantoms.{name}"]
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
