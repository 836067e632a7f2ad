import jax
import jax.numpy as jnp
import numpy as np
import pytest
import pywt
from scipy.optimize import minimize_scalar

from jaxrecon.solvers.proximal import (
    prox_elastic_net,
    prox_l1,
    prox_l2_squared,
    prox_nonnegative_l1,
    project_nonnegative,
    soft_threshold,
)

V = np.array([-3.0, -1.2, -0.4, 0.0, 0.3, 0.9, 2.5, 7.0])


def argmin_1d(f, v, lower=-10.0):
    """Numerical prox: minimise 1/2 (x - v)^2 + f(x) over [lower, 10] per entry (bounded Brent)."""
    opts = {"xatol": 1e-12}
    objective = lambda vi: lambda x: 0.5 * (x - vi) ** 2 + f(x)
    return np.array([minimize_scalar(objective(vi), bounds=(lower, 10), method="bounded", options=opts).x for vi in v])


def test_soft_threshold_matches_pywavelets():
    x = np.random.default_rng(0).standard_normal(50) * 2
    np.testing.assert_allclose(soft_threshold(jnp.asarray(x), 0.7), pywt.threshold(x, 0.7, "soft"), atol=1e-15)
    np.testing.assert_allclose(prox_l1(jnp.asarray(x), 0.7), pywt.threshold(x, 0.7, "soft"), atol=1e-15)
    z = x[:25] + 1j * x[25:]  # complex: shrink the modulus, keep the phase
    np.testing.assert_allclose(soft_threshold(jnp.asarray(z), 0.7), pywt.threshold(z, 0.7, "soft"), atol=1e-15)
    assert complex(soft_threshold(jnp.asarray(0j), 1.0)) == 0.0  # no 0/0 at the origin


@pytest.mark.parametrize(
    "prox, penalty, lower",
    [
        (lambda v: soft_threshold(v, 0.8), lambda x: 0.8 * abs(x), -10.0),
        (lambda v: prox_nonnegative_l1(v, 0.8), lambda x: 0.8 * x, 0.0),
        (lambda v: project_nonnegative(v), lambda x: 0.0, 0.0),
        (lambda v: prox_l2_squared(v, 0.6), lambda x: 0.3 * x**2, -10.0),
        (lambda v: prox_elastic_net(v, 0.5, 1.4, 0.6), lambda x: 0.5 * (1.4 * abs(x) + 0.3 * x**2), -10.0),
    ],
)
def test_prox_is_the_numerical_argmin(prox, penalty, lower):
    np.testing.assert_allclose(prox(jnp.asarray(V)), argmin_1d(penalty, V, lower), atol=1e-7)


def test_traced_thresholds_under_jit_and_vmap():
    ts = jnp.array([0.01, 0.5, 1.0, 3.0])  # (pywt.threshold gives nan at x = t = 0)
    batched = jax.vmap(lambda t: prox_elastic_net(jnp.asarray(V), 1.0, t, t))(ts)
    for i, t in enumerate(np.asarray(ts)):
        np.testing.assert_allclose(batched[i], pywt.threshold(V, t, "soft") / (1 + t), atol=1e-15)
    # Concrete thresholds inside jit (Python floats and closed-over arrays) must not break the checks.
    f = jax.jit(lambda v: soft_threshold(v, 0.5) + prox_elastic_net(v, 1.0, jnp.asarray(0.2), 0.1))
    np.testing.assert_allclose(f(jnp.asarray(V)), pywt.threshold(V, 0.5, "soft") + pywt.threshold(V, 0.2, "soft") / 1.1)
    # Elementwise thresholds broadcast against x; the gradient in t is -sign(x) where |x| > t.
    t = np.linspace(0.1, 2.0, V.size)
    ref = [pywt.threshold(V[i : i + 1], t[i], "soft")[0] for i in range(V.size)]
    np.testing.assert_allclose(soft_threshold(jnp.asarray(V), jnp.asarray(t)), ref, atol=1e-15)
    g = jax.grad(lambda t: jnp.sum(soft_threshold(jnp.asarray(V), t)))(0.5)
    assert float(g) == -float(np.sum(np.sign(V) * (np.abs(V) > 0.5)))


def test_dtype_is_kept():
    x = jnp.asarray(V, jnp.float32)
    for out in (soft_threshold(x, 0.5), prox_elastic_net(x, 1.0, 0.5, 0.5), project_nonnegative(x)):
        assert out.dtype == jnp.float32
    assert soft_threshold(jnp.arange(3), 1).dtype == jnp.result_type(float)


def test_bad_input():
    with pytest.raises(ValueError, match="threshold t must be finite and non-negative, got -1.0"):
        soft_threshold(jnp.asarray(V), -1.0)
    with pytest.raises(ValueError, match="beta must be finite and non-negative"):
        prox_elastic_net(jnp.asarray(V), 1.0, 1.0, float("nan"))
    with pytest.raises(TypeError, match="expected a real array, got dtype complex"):
        project_nonnegative(jnp.asarray([1j]))
    with pytest.raises(TypeError, match="expects an array, got str"):
        soft_threshold("x", 1.0)
