"""Plug-and-play (PGD, ADMM, HQS) and RED against the classical answers they must reduce to: with
the prox of a quadratic, closed-form Tikhonov (dense NumPy solves, HQS with the Moreau-envelope
weight); with soft thresholding, ISTA's iterates; with the TV prox (`tv_denoise`),
`tv_pdhg`'s solution; RED with a linear symmetric denoiser, (A^T A + alpha (I - W))^{-1} A^T y."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrecon.operators import (
    CircularConvolution,
    ParallelBeamGeometry,
    RadonTransform,
    gaussian_kernel,
)
from _image_matrix import ImageMatrix
from jaxrecon.phantoms import shepp_logan
from jaxrecon.solvers import (
    as_matrix,
    gs_pnp,
    ista,
    pnp_admm,
    pnp_hqs,
    pnp_pgd,
    red,
    soft_threshold,
    tv_denoise,
    tv_pdhg,
)

F64 = jnp.float64
N = 16
X = shepp_logan(N, dtype=F64)
# The 16 x 16, 12-view Radon transform as a dense matrix (the same operator, compiled faster)
A = np.asarray(as_matrix(RadonTransform(ParallelBeamGeometry.uniform((N, N), 12)), dtype=F64))
OP = ImageMatrix(jnp.asarray(A), (N, N))
Y = OP(X) + 0.05 * jax.random.normal(jax.random.PRNGKey(1), OP.out_shape, F64)
NORM2 = float(np.linalg.norm(A, 2) ** 2)
STEP = 1 / NORM2


def _rel(a, b):
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def _tikhonov(weight):
    return np.linalg.solve(A.T @ A + weight * np.eye(N * N), A.T @ np.asarray(Y)).reshape(N, N)


def test_quadratic_prox_gives_tikhonov():
    """D = prox of (c/2)||.||^2, i.e. v / (1 + c): PGD (c = s alpha) and ADMM (c = alpha / rho) solve
    Tikhonov with weight alpha; HQS (c = alpha / mu) the Moreau-envelope weight alpha mu / (alpha + mu)."""
    alpha, rho, mu = 3.0, 5.0, 4.0

    @jax.jit
    def run(y):
        return (
            pnp_pgd(OP, y, lambda v: v / (1 + STEP * alpha), step=STEP, max_iter=5000, tol=1e-12),
            pnp_admm(OP, y, lambda v: v / (1 + alpha / rho), rho=rho, max_iter=2000, cg_iter=10, tol=1e-12),
            pnp_hqs(OP, y, lambda v: v / (1 + alpha / mu), mu=mu, max_iter=2000, cg_iter=10, tol=1e-12),
        )

    pgd, admm_, hqs = run(Y)
    for sol in (pgd, admm_, hqs):
        assert bool(sol.converged) and not bool(sol.nonfinite)
    assert _rel(pgd.x, _tikhonov(alpha)) <= 1e-8
    assert _rel(admm_.x, _tikhonov(alpha)) <= 1e-8
    assert _rel(hqs.x, _tikhonov(alpha * mu / (alpha + mu))) <= 1e-8
    assert _rel(hqs.x, _tikhonov(alpha)) > 1e-2  # HQS with a fixed mu is a different problem


def test_soft_threshold_and_tv_prox_give_the_classical_solutions():
    """PnP-PGD with D = S_{s alpha} is ISTA, iterate for iterate; PnP-ADMM with D = prox of (alpha/rho) TV
    (by tv_denoise, 400 accelerated steps) reaches tv_pdhg's TV solution."""
    alpha, rho = 0.5, 2.0

    def tv_prox(v):
        return tv_denoise(v, alpha / rho, max_iter=400).x

    @jax.jit
    def run(y):
        return (
            pnp_pgd(OP, y, lambda v: soft_threshold(v, STEP * alpha), step=STEP, max_iter=300),
            ista(OP, y, alpha, step=STEP, max_iter=300),
            pnp_admm(OP, y, tv_prox, rho=rho, max_iter=400, cg_iter=10, tol=1e-9),
            tv_pdhg(OP, y, alpha, max_iter=50_000, tol=1e-13),
        )

    pgd, ref_l1, pnp_tv, ref_tv = run(Y)
    assert bool(pnp_tv.converged) and bool(ref_tv.converged)
    assert int(pgd.iterations) == 300 and _rel(pgd.x, ref_l1.x) <= 1e-12
    assert _rel(pnp_tv.x, ref_tv.x) <= 1e-4


def test_red_with_a_linear_symmetric_denoiser_is_closed_form():
    """W = Gaussian blur (circular, symmetric, spectrum in (0, 1]): (A^T A + alpha (I - W)) x = A^T y."""
    alpha = 5.0
    blur = CircularConvolution(gaussian_kernel(5, 1.0, dtype=F64), (N, N))
    w = np.asarray(as_matrix(blur, dtype=F64))
    np.testing.assert_allclose(w, w.T, atol=1e-14)
    exact = np.linalg.solve(A.T @ A + alpha * (np.eye(N * N) - w), A.T @ np.asarray(Y)).reshape(N, N)
    sol = jax.jit(lambda y: red(OP, y, blur, alpha, max_iter=20_000, tol=1e-12, history=True))(Y)
    assert bool(sol.converged) and not bool(sol.nonfinite)
    assert _rel(sol.x, exact) <= 1e-8
    assert set(sol.history) == {"residual", "change"}


@pytest.mark.slow
def test_vmap_over_data_equals_stacking():
    ys = jnp.stack([Y, 1.5 * Y, Y + 0.1])

    def denoise(v):  # nonlinear and cheap to compile
        return soft_threshold(v, 0.01)

    def solve(y):
        return jnp.stack([
            pnp_pgd(OP, y, denoise, step=STEP, max_iter=10).x,
            pnp_admm(OP, y, denoise, rho=1.0, max_iter=10).x,
            pnp_hqs(OP, y, denoise, mu=1.0, max_iter=10).x,
            red(OP, y, denoise, 1.0, max_iter=10).x,
            gs_pnp(OP, y, lambda v: jnp.sum(jnp.log(jnp.cosh(v))), 1.0, max_iter=10).x,
        ])  # fmt: skip

    many = jax.jit(jax.vmap(solve))(ys)
    one = jax.jit(solve)
    # batched matrix products sum in another order; CG amplifies that rounding to ~1e-11
    np.testing.assert_allclose(many, jnp.stack([one(y) for y in ys]), rtol=1e-8, atol=1e-10)


@pytest.mark.slow
def test_network_denoiser_jits_and_differentiates():
    """Our DnCNN as the denoiser, wrapped from (1, H, W) to (H, W); the gradient with respect to its
    weights through a fixed-iteration PnP-PGD run matches central differences."""
    from jaxrecon.nets import DnCNN

    def loss(net, y):
        sol = pnp_pgd(OP, y, lambda v: net(v[None])[0], step=STEP, max_iter=5)
        return jnp.sum((sol.x - X) ** 2), sol

    net = DnCNN(features=4, depth=3, key=jax.random.key(0), dtype=F64)
    run = eqx.filter_jit(eqx.filter_value_and_grad(loss, has_aux=True))
    (value, sol), grads = run(net, Y)
    assert int(sol.iterations) == 5 and not bool(sol.nonfinite) and bool(jnp.isfinite(value))
    # the directional derivative along a random direction in weight space vs central differences
    params, static = eqx.partition(net, eqx.is_inexact_array)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(3), len(leaves))
    direction = jax.tree.unflatten(treedef, [jax.random.normal(k, a.shape, a.dtype) for k, a in zip(keys, leaves)])
    moved = lambda e: eqx.combine(jax.tree.map(lambda p, d: p + e * d, params, direction), static)  # noqa: E731
    eps = 1e-6
    fd = (run(moved(eps), Y)[0][0] - run(moved(-eps), Y)[0][0]) / (2 * eps)  # same structure: no recompilation
    g = sum(jnp.vdot(a, d) for a, d in zip(jax.tree.leaves(grads), jax.tree.leaves(direction)))
    np.testing.assert_allclose(g, fd, rtol=1e-6)


def test_nonfinite_denoiser_is_reported():
    sol = jax.jit(lambda y: pnp_pgd(OP, y, lambda v: 1e30 * v, step=STEP, max_iter=50))(Y)
    assert bool(sol.nonfinite) and not bool(sol.converged) and 0 < int(sol.iterations) < 50
    assert bool(jnp.all(jnp.isfinite(sol.x)))


def test_bad_input_names_expected_and_given():
    with pytest.raises(TypeError, match="denoiser to be a callable"):
        pnp_pgd(OP, Y, "dncnn")
    with pytest.raises(ValueError, match=r"to map \(16, 16\) real arrays to the same shape, got \(1, 16, 16\)"):
        pnp_pgd(OP, Y, lambda v: v[None])
    with pytest.raises(ValueError, match=r"denoiser failed on an array of shape \(16, 16\).*x\[None\]\)\[0\]"):
        pnp_admm(OP, Y, lambda v: v.reshape(1, 1, 16, 16) @ jnp.ones((3, 3)), rho=1.0)
    with pytest.raises(TypeError, match="missing 1 required keyword-only argument: 'rho'"):
        pnp_admm(OP, Y, lambda v: v)
    with pytest.raises(ValueError, match="mu must be positive, got 0"):
        pnp_hqs(OP, Y, lambda v: v, mu=0.0)
    with pytest.raises(ValueError, match="alpha must be finite and non-negative"):
        red(OP, Y, lambda v: v, -1.0)


@pytest.mark.slow
def test_flax_denoiser_through_from_flax_equals_the_same_convolution_by_hand():
    """A Flax NNX convolution wrapped by `from_flax` as the PnP-ADMM denoiser gives the iterates, loss
    and kernel gradient of the same 3x3 correlation written with `jax.scipy.signal.correlate2d`."""
    from flax import nnx

    from jaxrecon.nets import from_flax

    net = from_flax(nnx.Conv(1, 1, (3, 3), param_dtype=F64, rngs=nnx.Rngs(0)))

    def loss(denoiser, y):
        sol = pnp_admm(OP, y, denoiser, rho=1.0, max_iter=6)
        return jnp.sum((sol.x - X) ** 2), sol.x

    def flax_loss(net, y):
        return loss(eqx.Partial(lambda n, v: n(v[None])[0], net), y)

    def hand_loss(kb, y):
        kernel, bias = kb
        return loss(lambda v: jax.scipy.signal.correlate2d(v, kernel, mode="same") + bias, y)

    (v_flax, x_flax), g_flax = eqx.filter_jit(eqx.filter_value_and_grad(flax_loss, has_aux=True))(net, Y)
    kb = (net.params["kernel"][:, :, 0, 0], net.params["bias"][0])
    (v_hand, x_hand), g_hand = jax.jit(jax.value_and_grad(hand_loss, has_aux=True))(kb, Y)
    assert float(jnp.abs(kb[0]).min()) > 0 and float(jnp.abs(g_hand[0]).min()) > 0  # a real kernel, a real gradient
    np.testing.assert_allclose(x_flax, x_hand, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(v_flax, v_hand, rtol=1e-10)
    np.testing.assert_allclose(g_flax.params["kernel"][:, :, 0, 0], g_hand[0], rtol=1e-8)
    np.testing.assert_allclose(g_flax.params["bias"][0], g_hand[1], rtol=1e-8)
