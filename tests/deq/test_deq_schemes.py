"""DEQ schemes and contractive regularisers against independent references: NumPy convolution
matrices and their SVDs, the fixed-point equations written out by hand, closed-form Tikhonov,
finite differences, a Python loop over the map, the exact Frobenius norm."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrecon.deq.schemes import (
    DEGrad,
    DEProx,
    EquilibriumRegularisation,
    LipschitzCNN,
    SpectralConv2d,
    jacobian_penalty,
    spectral_normalise,
)
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


def _xcorr_same(w, x):
    """NumPy 'SAME' zero-padded cross-correlation (odd kernels): y_o = sum_i w_oi (star) x_i."""
    o, i, k, _ = w.shape
    p = k // 2
    xp = np.pad(x, ((0, 0), (p, p), (p, p)))
    h, wd = x.shape[1:]
    y = np.zeros((o, h, wd))
    for a in range(k):
        for b in range(k):
            y += np.einsum("oi,ihw->ohw", w[:, :, a, b], xp[:, a : a + h, b : b + wd])
    return y


def _matrix(apply, in_shape):
    n = int(np.prod(in_shape))
    return np.stack([apply(np.eye(n)[j].reshape(in_shape)).ravel() for j in range(n)], axis=1)


# ------------------------------------------------------------------------------------------------
# Spectral normalisation and the Lipschitz CNN
# ------------------------------------------------------------------------------------------------


def test_spectral_normalisation_bounds_the_convolution_norm():
    shape, bound = (5, 6), 0.7
    conv = SpectralConv2d(2, 3, 3, bound=bound, key=KEY, dtype=F64)
    conv = eqx.tree_at(lambda c: c.weight, conv, 5 * conv.weight)  # well above the bound
    w = np.asarray(conv.weight)

    # sigma(w): the norm of the circular cross-correlation on the (H+2) x (W+2) grid (NumPy matrix)
    n1, n2 = shape[0] + 2, shape[1] + 2

    def circular(x):
        y = np.zeros((3, n1, n2))
        for a in range(3):
            for b in range(3):
                y += np.einsum("oi,ihw->ohw", w[:, :, a, b], np.roll(x, (-(a - 1), -(b - 1)), axis=(1, 2)))
        return y

    sigma_ref = np.linalg.svd(_matrix(circular, (2, n1, n2)), compute_uv=False)[0]
    np.testing.assert_allclose(conv.spectral_norm(shape), sigma_ref, rtol=1e-10)
    raw_norm = np.linalg.svd(_matrix(lambda x: _xcorr_same(w, x), (2, *shape)), compute_uv=False)[0]
    assert raw_norm > bound and raw_norm <= sigma_ref * (1 + 1e-12)  # sigma is an upper bound

    # the layer computes the SAME cross-correlation with the rescaled weight, norm <= bound
    frozen = conv.normalised(shape)
    wn = np.asarray(frozen.weight)
    np.testing.assert_allclose(wn, w * bound / sigma_ref, rtol=1e-10)
    x = np.random.default_rng(0).normal(size=(2, *shape))
    expected = _xcorr_same(wn, x) + np.asarray(conv.bias)[:, None, None]
    np.testing.assert_allclose(conv(jnp.asarray(x)), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(frozen(jnp.asarray(x)), expected, rtol=1e-10, atol=1e-12)
    norm = np.linalg.svd(_matrix(lambda x: _xcorr_same(wn, x), (2, *shape)), compute_uv=False)[0]
    assert norm <= bound * (1 + 1e-12) and norm > 0.5 * bound
    # below the bound nothing changes
    small = eqx.tree_at(lambda c: c.weight, conv, w * 0.1 * bound / sigma_ref)
    np.testing.assert_array_equal(small.normalised(shape).weight, small.weight)


def test_spectral_norm_gradient_matches_finite_differences():
    conv = SpectralConv2d(3, 4, 3, key=KEY, dtype=F64)
    d = np.random.default_rng(1).normal(size=conv.weight.shape)
    norm = lambda w: eqx.tree_at(lambda c: c.weight, conv, w).spectral_norm((6, 7))  # noqa: E731
    eps = 1e-6
    fd = (norm(conv.weight + eps * d) - norm(conv.weight - eps * d)) / (2 * eps)
    np.testing.assert_allclose(jnp.vdot(jax.grad(norm)(conv.weight), d), fd, rtol=1e-7)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_convolution_gradients_are_the_transpose(k):
    """The layer's custom VJP (fast input-gradient) vs NumPy: the input-gradient is the transpose of
    the layer's matrix, the weight-gradient that of w -> layer(x); also reverse-over-reverse (the
    gradient of `jacobian_penalty`, a VJP inside a gradient) vs central differences."""
    conv = SpectralConv2d(2, 3, k, bound=10.0, key=KEY, dtype=F64).normalised((5, 6))  # odd and even kernels
    rng = np.random.default_rng(k)
    x, g = rng.normal(size=(2, 5, 6)), rng.normal(size=(3, 5, 6))
    lin = lambda x: np.asarray(conv(jnp.asarray(x)) - conv.bias[:, None, None])  # noqa: E731
    matrix = _matrix(lin, (2, 5, 6))
    if k % 2:  # odd kernels: also the NumPy SAME correlation itself
        np.testing.assert_allclose(lin(x), _xcorr_same(np.asarray(conv.weight), x), rtol=1e-10, atol=1e-12)
    gx, gw = jax.grad(lambda x, w: jnp.vdot(g, eqx.tree_at(lambda c: c.weight, conv, w)(x)), (0, 1))(
        jnp.asarray(x), conv.weight)
    np.testing.assert_allclose(gx, (matrix.T @ g.ravel()).reshape(x.shape), rtol=1e-10, atol=1e-12)
    w_matrix = _matrix(lambda w: np.asarray(eqx.tree_at(lambda c: c.weight, conv, jnp.asarray(w))(jnp.asarray(x))
                                            - conv.bias[:, None, None]), conv.weight.shape)
    np.testing.assert_allclose(gw, (w_matrix.T @ g.ravel()).reshape(gw.shape), rtol=1e-10, atol=1e-12)

    def penalty(w):  # a VJP of the layer inside, differentiated w.r.t. the weight
        layer = eqx.tree_at(lambda c: c.weight, conv, w)
        return jacobian_penalty(lambda z: jnp.tanh(layer(z)), jnp.asarray(x), KEY, num_samples=3)

    d = rng.normal(size=conv.weight.shape)
    eps = 1e-6
    fd = (penalty(conv.weight + eps * d) - penalty(conv.weight - eps * d)) / (2 * eps)
    np.testing.assert_allclose(jnp.vdot(jax.grad(penalty)(conv.weight), d), fd, rtol=1e-6)


def test_lipschitz_cnn_is_lipschitz_and_residual():
    net = LipschitzCNN(1, 4, 3, lipschitz=0.6, residual=False, key=KEY, dtype=F64)
    net = jax.tree.map(lambda a: 10 * a if eqx.is_inexact_array(a) else a, net)  # force the normalisation
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 6, 1, 9, 9))
    diff = eqx.filter_jit(lambda net, u, v: jnp.linalg.norm(net(u) - net(v)))
    ratios = [float(diff(net, jnp.asarray(u), jnp.asarray(v))) / np.linalg.norm(u - v) for u, v in zip(a, b)]
    assert max(ratios) <= 0.6 and max(ratios) > 0.01
    # residual=True is x - N(x); normalising first (as the schemes do) changes nothing
    res = LipschitzCNN(1, 4, 3, lipschitz=0.6, residual=True, key=KEY, dtype=F64)
    res = eqx.tree_at(lambda n: n.layers, res, net.layers)
    x = jnp.asarray(a[0])
    frozen = spectral_normalise(res, (9, 9))
    assert all(layer.frozen for layer in frozen.layers) and not any(layer.frozen for layer in res.layers)
    outs = eqx.filter_jit(lambda res, frozen, net, x: (res(x), x - net(x), frozen(x)))(res, frozen, net, x)
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(outs[2], outs[0], rtol=1e-12, atol=1e-12)


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


def test_jacobian_penalty_estimates_frobenius_norm():
    m = jnp.asarray(np.random.default_rng(6).normal(size=(5, 4)))

    @jax.jit
    def run(m):
        estimate = jacobian_penalty(lambda z: jnp.tanh(m @ z), jnp.zeros(4), KEY, num_samples=5000)
        # differentiable: d/ds ||s M||_F^2 = 2 s ||M||_F^2 (same samples)
        pen = lambda s: jacobian_penalty(lambda z: s * (m @ z), jnp.zeros(4), KEY, num_samples=50)  # noqa: E731
        return estimate, jax.grad(pen)(2.0), pen(1.0)

    estimate, d, e = run(m)
    np.testing.assert_allclose(estimate, np.sum(np.asarray(m) ** 2), rtol=0.08)  # tanh'(0) = 1
    np.testing.assert_allclose(d, 4 * e, rtol=1e-12)


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
    with pytest.raises(ValueError, match="bound > 0"):
        SpectralConv2d(1, 1, bound=0.0, key=KEY)
