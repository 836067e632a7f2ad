r"""Measurement noise models, keyed by `jax.random` (jittable, vmappable over keys and data)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Inexact, PRNGKeyArray

__all__ = ["gaussian_noise", "poisson_noise"]


def _check_positive(value, name: str, fn: str, strict: bool):
    """Raise ValueError at trace time for concrete values, `eqx.error_if` at run time for traced ones."""
    value = jnp.asarray(value)
    if value.ndim != 0:
        raise ValueError(f"{fn} expects a scalar `{name}`, got an array of shape {value.shape}")
    if jnp.iscomplexobj(value):
        raise TypeError(f"{fn} expects a real `{name}`, got dtype {value.dtype}")
    expected = "> 0" if strict else ">= 0"
    bad = ~(value > 0) if strict else ~(value >= 0)
    if isinstance(value, jax.core.Tracer):
        return eqx.error_if(value, bad, f"{fn} expects `{name}` {expected}")
    if bool(bad):
        raise ValueError(f"{fn} expects `{name}` {expected}, got {np.asarray(value).item()!r}")
    return value


def _check_data(y, fn: str):
    if not hasattr(y, "shape") or not hasattr(y, "dtype"):
        raise TypeError(f"{fn} expects `y` to be an array, got {type(y).__name__}")
    y = jnp.asarray(y)
    if not jnp.issubdtype(y.dtype, jnp.inexact):
        y = y.astype(jnp.float32)
    return y


def gaussian_noise(key: PRNGKeyArray, y: Inexact[ArrayLike, "*shape"], level) -> Inexact[Array, "*shape"]:
    r"""Additive white Gaussian noise of relative level: $y + \sigma\,\varepsilon$, $\varepsilon \sim N(0, I)$.

    $\sigma = \text{level} \cdot \operatorname{mean}|y|$ (e.g. `level=0.05` for 5% noise). For
    complex `y` the noise is circular complex, $\varepsilon = (a + ib)/\sqrt 2$, so
    $E|\varepsilon_j|^2 = 1$ as well.

    Args:
        key: a `jax.random` key.
        y: clean data, any shape, real or complex (integers become float32); the dtype is kept.
        level: relative noise level, a scalar >= 0 (checked at trace time if concrete, else
            with `eqx.error_if`).

    Example:
        >>> y_delta = gaussian_noise(jax.random.PRNGKey(0), y, 0.05)
        >>> keys = jax.random.split(jax.random.PRNGKey(0), 8)
        >>> jax.vmap(gaussian_noise, (0, None, None))(keys, y, 0.05)  # 8 noisy copies
    """
    y = _check_data(y, "gaussian_noise")
    level = _check_positive(level, "level", "gaussian_noise", strict=False)
    return _gaussian_noise(key, y, level)


@jax.jit
def _gaussian_noise(key, y, level):
    real = jnp.finfo(y.dtype).dtype
    sigma = (level * jnp.mean(jnp.abs(y))).astype(real)
    if jnp.iscomplexobj(y):
        kr, ki = jax.random.split(key)
        eps = (jax.random.normal(kr, y.shape, real) + 1j * jax.random.normal(ki, y.shape, real)) / np.sqrt(2)
        return (y + sigma * eps).astype(y.dtype)
    return y + sigma * jax.random.normal(key, y.shape, real)


def poisson_noise(
    key: PRNGKeyArray, y: Float[ArrayLike, "*shape"], photons, mu=1.0
) -> Float[Array, "*shape"]:
    r"""Post-log Poisson (photon-counting) noise for transmission CT.

    With $N_0$ = `photons` incident photons per detector bin and line integrals $y$ scaled by the
    attenuation `mu`,

    $$c \sim \operatorname{Poisson}(N_0 e^{-\mu y}),\qquad
      y^\delta = -\frac{1}{\mu}\log\frac{\max(c,\ 0.1)}{N_0}.$$

    Zero counts are clamped to 0.1 so that the logarithm stays finite (a bin with no photons then
    reads $\log(10 N_0)/\mu$). For large $N_0 e^{-\mu y}$, $y^\delta \approx y$ with variance
    $\approx 1/(\mu^2 N_0 e^{-\mu y})$.

    Args:
        key: a `jax.random` key.
        y: clean real data (e.g. a sinogram), any shape; the float dtype is kept.
        photons: $N_0 > 0$, a scalar.
        mu: $\mu > 0$, a scalar (e.g. to scale unit-pixel line integrals to attenuations).

    Example:
        >>> y_delta = poisson_noise(jax.random.PRNGKey(0), sinogram, photons=1e4, mu=0.02)
    """
    y = _check_data(y, "poisson_noise")
    if jnp.iscomplexobj(y):
        raise TypeError(f"poisson_noise expects real data, got dtype {y.dtype}")
    photons = _check_positive(photons, "photons", "poisson_noise", strict=True).astype(y.dtype)
    mu = _check_positive(mu, "mu", "poisson_noise", strict=True).astype(y.dtype)
    return _poisson_noise(key, y, photons, mu)


@jax.jit
def _poisson_noise(key, y, photons, mu):
    counts = jax.random.poisson(key, photons * jnp.exp(-mu * y)).astype(y.dtype)
    return -jnp.log(jnp.maximum(counts, 0.1) / photons) / mu
