"""Gradient-step denoisers and GS-PnP: against dense linear algebra for a linear network (D, the
Hessian norm, the closed-form minimiser), and the convergence condition tau * lambda * L < 1 for a
random nonlinear potential whose gradient's Lipschitz constant L is bounded by construction."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrecon.nets import GradientStepDenoiser, SpectralConv2d, hessian_norm
from jaxrecon.operators import CircularConvolution, gaussian_kernel
from jaxrecon.phantoms import shepp_logan
from jaxrecon.solvers import as_matrix, gs_pnp

F64 = jnp.float64
N = 16
X = shepp_logan(N, dtype=F64)
BLUR = CircularConvolution(gaussian_kernel(5, 1.0, dtype=F64), (N, N))
Y = BLUR(X) + 0.02 * jax.random.normal(jax.random.PRNGKey(0), (N, N), F64)
RNG = np.random.default_rng(0)
W = 0.5 * np.eye(N * N) + 0.3 * RNG.standard_normal((N * N, N * N)) / N  # a random linear "network"


def _linear(x):
    return (jnp.asarray(W) @ x.ravel()).reshape(x.shape)


def test_linear_network_denoiser_hessian_and_gs_pnp_minimiser():
    """N(x) = W x: g = 1/2||(I - W)x||^2, D(x) = x - (I - W)^T (I - W) x, L = ||I - W||^2, and GS-PnP's
    fixed point is (A^T A + lam (I - W)^T (I - W))^{-1} A^T y."""
    gsd = GradientStepDenoiser(lambda x: _linear(x[0])[None])
    m = np.eye(N * N) - W
    hess = m.T @ m
    big_l = np.linalg.eigvalsh(hess)[-1]
    x = np.asarray(X)[None]
    np.testing.assert_allclose(gsd(jnp.asarray(x))[0], (x[0].ravel() - hess @ x[0].ravel()).reshape(N, N), atol=1e-12)
    estimate = jax.jit(lambda x: gsd.hessian_norm(x, jax.random.key(1), num_iter=200))(jnp.asarray(x))
    assert estimate <= big_l * (1 + 1e-12) and estimate >= 0.99 * big_l

    lam = 0.5
    tau = 0.9 / (lam * big_l)  # tau * lam * L = 0.9 < 1
    a = np.asarray(as_matrix(BLUR, dtype=F64))
    exact = np.linalg.solve(a.T @ a + lam * hess, a.T @ np.asarray(Y).ravel()).reshape(N, N)
    sol = jax.jit(lambda y: gs_pnp(BLUR, y, lambda v: gsd.potential(v[None]), lam, step=tau, max_iter=3000,
                                   cg_iter=20, tol=1e-13, history=True))(Y)  # fmt: skip
    assert bool(sol.converged) and not bool(sol.nonfinite)
    np.testing.assert_allclose(sol.x, exact, rtol=0, atol=1e-9 * np.abs(exact).max())
    obj = np.asarray(sol.history["objective"])
    assert np.all(np.diff(obj) <= 1e-12 * abs(obj[0]))


def _logcosh(v):
    return jnp.logaddexp(v, -v) - jnp.log(2.0)


def test_gs_pnp_converges_when_tau_lam_l_below_one():
    """g(x) = sum_c a_c logcosh(C x + b)_c with C a spectrally normalised convolution (||C|| <= c) and
    0 <= a_c <= a_max: the Hessian C^T diag(a sech^2) C has norm <= a_max c^2 =: L everywhere. With
    tau * lam * L = 0.95 the objective F = f + lam g decreases monotonically and the iterates settle on
    a stationary point (A^T(Ax - y) + lam grad g(x) = 0). Far outside the condition (8 instead of
    0.95) the same iteration raises the objective and does not settle."""
    key1, key2, key3 = jax.random.split(jax.random.key(4), 3)
    c = 1.5
    conv = SpectralConv2d(1, 6, 3, bound=c, key=key1, dtype=F64)
    conv = eqx.tree_at(lambda m: m.weight, conv, 4 * conv.weight).normalised((N, N))  # at its bound
    weights = jax.random.uniform(key2, (6, 1, 1), F64, 0.2, 1.0)
    shift = 0.3 * jax.random.normal(key3, (6, 1, 1), F64)
    big_l = float(jnp.max(weights)) * c**2
    assert float(conv.spectral_norm((N, N))) == pytest.approx(c, rel=1e-12)

    def potential(x):
        return jnp.sum(weights * _logcosh(conv(x[None]) + shift))

    lam = 2.0

    @jax.jit
    def run(y, tau):
        sol = gs_pnp(BLUR, y, potential, lam, step=tau, max_iter=400, cg_iter=20, history=True)
        stationarity = BLUR.rmv(BLUR.mv(sol.x) - y) + lam * jax.grad(potential)(sol.x)
        local_l = hessian_norm(potential, sol.x, jax.random.key(5), num_iter=50)
        return sol, jnp.linalg.norm(stationarity) / jnp.linalg.norm(BLUR.rmv(y)), local_l

    sol, stationarity, local_l = run(Y, 0.95 / (lam * big_l))
    assert local_l <= big_l * (1 + 1e-12)  # the bound holds where the iteration ended
    obj = np.asarray(sol.history["objective"])
    change = np.asarray(sol.history["change"])
    assert not bool(sol.nonfinite) and np.all(np.isfinite(obj))
    assert np.all(np.diff(obj) <= 1e-12 * abs(obj[0]))  # monotone (CG to ~machine precision)
    assert obj[-1] < obj[0]
    assert change[-1] <= 1e-8 * change[0]
    assert stationarity <= 1e-8

    bad, _, _ = run(Y, 8.0 / (lam * big_l))
    bad_obj, bad_change = np.asarray(bad.history["objective"]), np.asarray(bad.history["change"])
    assert np.max(np.diff(bad_obj)) > 1.0 and bad_change[-1] > bad_change[0]


def test_bad_input_names_expected_and_given():
    with pytest.raises(TypeError, match="callable network, got int"):
        GradientStepDenoiser(3)
    with pytest.raises(ValueError, match=r"map its input shape to itself, got \(1, 16, 16\) -> \(16, 16\)"):
        GradientStepDenoiser(lambda x: x[0]).potential(jnp.zeros((1, N, N)))
    with pytest.raises(ValueError, match=r"potential to map \(16, 16\) images to a scalar, got shape \(16, 16\)"):
        gs_pnp(BLUR, Y, lambda x: x, 1.0)
    with pytest.raises(ValueError, match="lam must be positive, got 0"):
        gs_pnp(BLUR, Y, lambda x: jnp.sum(x**2), 0.0)
