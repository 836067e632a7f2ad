"""Noise models: statistics, dtypes, vmap over keys/data, validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrecon.operators.noise import gaussian_noise, poisson_noise


def test_gaussian_noise_statistics():
    y = jnp.asarray(np.random.default_rng(0).standard_normal((200, 200)))
    level = 0.05
    sigma = level * float(jnp.mean(jnp.abs(y)))
    n = gaussian_noise(jax.random.PRNGKey(0), y, level) - y
    assert float(jnp.mean(n)) == pytest.approx(0.0, abs=5 * sigma / 200)
    assert float(jnp.std(n)) == pytest.approx(sigma, rel=0.02)  # 40000 samples: ~0.35% std error
    assert float(jnp.max(jnp.abs(gaussian_noise(jax.random.PRNGKey(0), y, 0.0) - y))) == 0.0


def test_gaussian_noise_complex_and_dtypes():
    rng = np.random.default_rng(1)
    y = jnp.asarray(rng.standard_normal((100, 100)) + 1j * rng.standard_normal((100, 100)), jnp.complex64)
    n = gaussian_noise(jax.random.PRNGKey(1), y, 0.1) - y
    assert n.dtype == jnp.complex64
    sigma = 0.1 * float(jnp.mean(jnp.abs(y)))
    assert float(jnp.sqrt(jnp.mean(jnp.abs(n) ** 2))) == pytest.approx(sigma, rel=0.03)
    assert float(jnp.std(n.real)) == pytest.approx(sigma / np.sqrt(2), rel=0.03)
    assert gaussian_noise(jax.random.PRNGKey(0), jnp.ones(3, jnp.float32), 0.1).dtype == jnp.float32
    assert gaussian_noise(jax.random.PRNGKey(0), jnp.ones(3), 0.1).dtype == jnp.float64


@pytest.mark.slow
def test_vmap_over_keys_and_data_and_jit():
    keys = jax.random.split(jax.random.PRNGKey(2), 4)
    ys = jnp.asarray(np.random.default_rng(2).random((4, 8, 6)))
    # (poisson's sampler is a while loop and takes ~2 s to compile per trace: one vmap per function)
    for f, arg in ((gaussian_noise, 0.1), (poisson_noise, 1e3)):
        batched = jax.jit(jax.vmap(f, (0, 0, None)))(keys, ys, arg)
        np.testing.assert_allclose(batched, jnp.stack([f(k, y, arg) for k, y in zip(keys, ys)]), rtol=1e-12)
        assert not bool(jnp.all(batched[0] - ys[0] == batched[1] - ys[1]))
    over_keys = jax.vmap(gaussian_noise, (0, None, None))(keys, ys[0], 0.1)
    assert over_keys.shape == (4, 8, 6) and not bool(jnp.all(over_keys[0] == over_keys[1]))


def test_poisson_noise_statistics():
    # y = 1, N0 = 1e4: counts ~ Poisson(N0 e^-1); post-log mean ~ y, variance ~ 1/(N0 e^-1)
    y = jnp.full((300, 300), 1.0)
    photons = 1e4
    yd = poisson_noise(jax.random.PRNGKey(3), y, photons)
    assert yd.dtype == jnp.float64
    assert float(jnp.mean(yd)) == pytest.approx(1.0, abs=1e-3)
    assert float(jnp.var(yd)) == pytest.approx(np.e / photons, rel=0.03)
    # the counts themselves: mean and variance of N0 exp(-mu y) (Poisson)
    mu = 0.5
    counts = photons * jnp.exp(-mu * poisson_noise(jax.random.PRNGKey(4), y, photons, mu=mu))
    lam = photons * np.exp(-mu)
    assert float(jnp.mean(counts)) == pytest.approx(lam, rel=2e-3)
    assert float(jnp.var(counts)) == pytest.approx(lam, rel=0.03)
    assert bool(jnp.allclose(counts, jnp.round(counts), atol=1e-6))


def test_poisson_noise_clamp_and_float32():
    # N0 e^-y ~ 4.5e-5: virtually all counts are 0, clamped to 0.1
    yd = poisson_noise(jax.random.PRNGKey(5), jnp.full((10,), 10.0, jnp.float32), 1.0)
    assert yd.dtype == jnp.float32
    np.testing.assert_allclose(yd, np.full(10, np.log(10.0)), rtol=1e-6)


def test_errors():
    key, y = jax.random.PRNGKey(0), jnp.ones(4)
    with pytest.raises(ValueError, match=r"`level` >= 0, got -0.1"):
        gaussian_noise(key, y, -0.1)
    with pytest.raises(ValueError, match=r"`photons` > 0, got 0"):
        poisson_noise(key, y, 0.0)
    with pytest.raises(ValueError, match=r"`mu` > 0, got -1"):
        poisson_noise(key, y, 100.0, mu=-1.0)
    with pytest.raises(ValueError, match=r"scalar `level`, got an array of shape \(2,\)"):
        gaussian_noise(key, y, jnp.ones(2))
    with pytest.raises(TypeError, match=r"real data, got dtype complex"):
        poisson_noise(key, y.astype(jnp.complex64), 100.0)
    with pytest.raises(TypeError, match=r"`y` to be an array, got list"):
        gaussian_noise(key, [1.0], 0.1)
    # traced values are checked at run time
    with pytest.raises(Exception, match=r"`level` >= 0"):
        jax.jit(gaussian_noise)(key, y, -1.0)
    with pytest.raises(Exception, match=r"`photons` > 0"):
        jax.jit(poisson_noise)(key, y, -1.0)
