"""Lipschitz-constrained blocks (`jaxrecon.nets.lipschitz`) against independent references: NumPy
convolution matrices and their SVDs, finite differences, the exact Frobenius norm; and the old
`jaxrecon.deq` names, which must stay the same objects."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrecon.deq
import jaxrecon.deq.schemes
from jaxrecon.nets import LipschitzCNN, SpectralConv2d, jacobian_penalty, spectral_normalise

KEY = jax.random.key(0)
F64 = jnp.float64


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


@pytest.mark.slow
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


def test_old_deq_names_are_the_moved_objects():
    for name in ("LipschitzCNN", "SpectralConv2d", "jacobian_penalty", "spectral_normalise"):
        obj = getattr(jaxrecon.nets, name)
        assert obj.__module__ == "jaxrecon.nets.lipschitz"
        assert getattr(jaxrecon.deq, name) is obj and getattr(jaxrecon.deq.schemes, name) is obj


def test_bad_input_names_expected_and_given():
    with pytest.raises(ValueError, match="bound > 0"):
        SpectralConv2d(1, 1, bound=0.0, key=KEY)
    with pytest.raises(ValueError, match="depth >= 2, got 1"):
        LipschitzCNN(1, 4, 1, key=KEY)
    with pytest.raises(ValueError, match=r"image shape \(H, W\) of positive ints, got \(8,\)"):
        spectral_normalise(LipschitzCNN(1, 4, 2, key=KEY), (8,))
