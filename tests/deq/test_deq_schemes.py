"""DEQ schemes against independent references: the fixed-point equations written out by hand,
closed-form Tikhonov, finite differences, a Python loop over the map. (The contractive
regularisers' own tests are in tests/nets/test_lipschitz.py.)"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrecon.deq.schemes import DEGrad, DEProx, EquilibriumRegularisation
from jaxrecon.operators import (
    CircularConvolution,
    ParallelBeamGeometry,
    RadonTransform,
    SubsampledFourier,
    cartesian_mask,
    gaussian_kernel,
)
from jaxrecon.phantoms import shepp_logan
from jaxrecon.solvers import as_matrix

KEY = jax.random.key(0)
F64 = jnp.float64
SMALL = dict(features=3, depth=2, dtype=F64)


def _matrix(apply, in_shape):
    n = int(np.prod(in_shape))
    return np.stack([apply(np.eye(n)[j].reshape(in_shape)).ravel() for j in range(n)], axis=1)


# ------------------------------------------------------------------------------------------------
# Schemes
# ------------------------------------------------------------------------------------------------

N = 16
X = shepp_logan(N, dtype=F64)
RADON = RadonTransform(ParallelBeamGeometry.uniform((N, N), 8))
BLUR = CircularConvolution(gaussian_kernel(5, 1.0, dtype=F64), (N, N))
FOURIER = SubsampledFourier(cartesian_mask(jax.random.key(2), (N, N), 2))


@eqx.filter_jit
def _solve(model, y, op):
    return model.solve(y, op)


@eqx.filter_jit
def _by_hand(model, x, y, op):
    """The scheme's map T(x), written out from its documented formula (raw, unfrozen regulariser)."""
    n2 = model.op_norm**2
    grad = jnp.real(op.T(op(x) - y)) / n2
    reg = lambda z: model.regulariser(z[None])[0]  # noqa: E731
    if isinstance(model, DEGrad):
        return x - model.step * (grad + model.weight * reg(x))
    if isinstance(model, DEProx):
        v = x - model.step * grad
        return (1 - model.weight) * v + model.weight * reg(v)
    alpha = model.alpha / n2
    return x - (grad + alpha * reg(x)) / (1 + alpha)


@pytest.mark.parametrize(
    "cls, op, kw",
    [(DEGrad, RADON, {}), (DEProx, BLUR, {"solver": "broyden"}), (DEProx, BLUR, {"weight": None}),
     (EquilibriumRegularisation, FOURIER, {"alpha": 1.0})],
    ids=["degrad-radon", "deprox-blur", "deprox-unweighted", "equilibrium-fourier"],
)
@pytest.mark.slow
def test_schemes_reach_their_fixed_point(cls, op, kw):
    model = cls(op, key=KEY, tol=1e-8, max_iter=300, **SMALL, **kw)
    y = op(X) + 0.01 * jax.random.normal(jax.random.key(3), op.out_shape, F64)
    sol = _solve(model, y, op)
    x = np.asarray(sol.z)
    assert x.shape == (N, N) and x.dtype == np.float64 and np.all(np.isfinite(x))
    assert bool(sol.converged) and float(sol.residual_norm) <= 1e-8
    t = np.asarray(_by_hand(model, sol.z, y, op))
    assert np.linalg.norm(t - x) <= 2e-8 * np.linalg.norm(x)
    delta = 1e-2 * np.random.default_rng(7).normal(size=(N, N))  # T is not (nearly) constant:
    assert np.linalg.norm(t - np.asarray(_by_hand(model, t + delta, y, op))) > 1e-2 * np.linalg.norm(delta)


@pytest.mark.slow
def test_equilibrium_regularisation_with_quadratic_is_tikhonov():
    op = RadonTransform(ParallelBeamGeometry.uniform((8, 8), 5))
    a = np.asarray(as_matrix(op, dtype=F64))
    y = np.asarray(op(shepp_logan(8, dtype=F64)))
    y = y + 0.05 * np.random.default_rng(4).normal(size=y.shape)
    alpha = 0.2 * np.linalg.norm(a, 2) ** 2
    model = EquilibriumRegularisation(op, lambda x: x, alpha=alpha, init="zero", tol=1e-11, max_iter=500, dtype=F64)
    x = _solve(model, jnp.asarray(y), op).z
    ref = np.linalg.solve(a.T @ a + alpha * np.eye(64), a.T @ y.ravel()).reshape(8, 8)
    np.testing.assert_allclose(x, ref, rtol=1e-8, atol=1e-9 * np.abs(ref).max())


@pytest.mark.slow
def test_gradient_matches_finite_differences():
    op = CircularConvolution(gaussian_kernel(3, 1.0, dtype=F64), (8, 8))
    x_true = shepp_logan(8, dtype=F64)
    y = op(x_true)
    model = DEGrad(op, key=KEY, tol=1e-13, max_iter=400, backward_tol=1e-13, **SMALL)

    @eqx.filter_jit
    def loss(model):
        return jnp.sum((model(y, op) - x_true) ** 2)

    grad = eqx.filter_jit(eqx.filter_grad(loss))(model)
    assert float(jnp.abs(grad.step_param)) > 0 and float(grad.op_norm) == 0.0  # the norm is frozen
    params, static = eqx.partition(model, eqx.is_inexact_array)
    rng = np.random.default_rng(5)
    direction = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape)), params)
    direction = eqx.tree_at(lambda d: d.op_norm, direction, jnp.zeros(()))
    norm = np.sqrt(sum(float(jnp.sum(d**2)) for d in jax.tree.leaves(direction)))
    direction = jax.tree.map(lambda d: d / norm, direction)
    eps = 1e-5

    def shifted(sign):
        return eqx.combine(jax.tree.map(lambda p, d: p + sign * eps * d, params, direction), static)

    fd = (loss(shifted(1)) - loss(shifted(-1))) / (2 * eps)
    directional = sum(float(jnp.sum(g * d)) for g, d in zip(jax.tree.leaves(grad), jax.tree.leaves(direction)))
    np.testing.assert_allclose(directional, fd, rtol=1e-6)


@pytest.mark.slow
def test_iterate_runs_the_same_map_and_approaches_the_fixed_point():
    model = DEProx(BLUR, key=KEY, lipschitz=0.5, weight=None, tol=1e-10, max_iter=200, **SMALL)
    y = BLUR(X)
    xs = eqx.filter_jit(lambda m, y: m.iterate(y, BLUR, 60, return_all=True))(model, y)
    assert xs.shape == (60, N, N)
    z = model.initial(y, BLUR)
    for k in range(3):  # a Python loop over the documented map
        z = _by_hand(model, z, y, BLUR)
        np.testing.assert_allclose(xs[k], z, rtol=1e-10, atol=1e-12)
    # Lip(T) <= 0.5: 60 steps are within 0.5^60 of the fixed point
    np.testing.assert_allclose(xs[-1], _solve(model, y, BLUR).z, rtol=0, atol=1e-8)


def test_bad_input_names_expected_and_given():
    model = DEProx(BLUR, key=KEY, **SMALL)
    with pytest.raises(ValueError, match=r"op.out_shape = \(16, 16\), got shape \(8, 8\)"):
        model(jnp.zeros((8, 8)), BLUR)
    with pytest.raises(TypeError, match="LinearOperator"):
        model(jnp.zeros((N, N)), np.eye(3))
    with pytest.raises(ValueError, match="init to be one of"):
        DEGrad(BLUR, key=KEY, init="tv", **SMALL)
    with pytest.raises(ValueError, match="0 < step < max_step"):
        DEGrad(BLUR, key=KEY, step=1.0, **SMALL)
    with pytest.raises(ValueError, match="0 < weight < 1 or None, got weight=1.5"):
        DEProx(BLUR, key=KEY, weight=1.5, **SMALL)
    with pytest.raises(ValueError, match="needs a PRNG `key`"):
        DEGrad(BLUR)
    with pytest.raises(ValueError, match="0 < lipschitz < 1"):
        DEGrad(BLUR, key=KEY, **{**SMALL, "lipschitz": 1.5})  # no longer a contraction
    with pytest.raises(ValueError, match="solver must be one of"):
        DEGrad(BLUR, key=KEY, solver="newton", **SMALL)
    with pytest.raises(ValueError, match="alpha > 0"):
        EquilibriumRegularisation(BLUR, key=KEY, alpha=-1.0, **SMALL)
    with pytest.raises(ValueError, match=r"\(1, H, W\) -> \(1, H, W\): expected \(1, 16, 16\)"):
        DEGrad(BLUR, lambda x: x[0], dtype=F64)(jnp.zeros((N, N)), BLUR)
