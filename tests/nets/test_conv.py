"""FFTConv2d vs the direct circular sum (NumPy, np.roll) and circular_convolve; SeedCNN vs a NumPy reference."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrecon.nets.conv import FFTConv2d, SeedCNN
from jaxrecon.operators.convolution import circular_convolve


def direct_conv(x, w, b=None):
    """y_i[n] = b_i + sum_j sum_m w_ij[m] x_j[(n - (m - c)) mod N], c = k // 2 (centred kernel)."""
    cout, cin, kh, kw = w.shape
    y = np.zeros((cout,) + x.shape[1:])
    for i in range(cout):
        for j in range(cin):
            for a in range(kh):
                for c in range(kw):
                    y[i] += w[i, j, a, c] * np.roll(x[j], (a - kh // 2, c - kw // 2), axis=(0, 1))
        if b is not None:
            y[i] += b[i]
    return y


def params(m):
    return sum(a.size for a in jax.tree.leaves(m) if hasattr(a, "shape"))


CASES = [  # (in, out, kernel_size, H, W)
    (1, 1, 3, 8, 8),
    (2, 3, (4, 3), 9, 7),  # even kernel height, non-square image
    (3, 2, 2, 6, 10),
    (2, 2, (8, 5), 8, 5),  # kernel as large as the image
    (1, 2, 1, 5, 6),
]


@pytest.mark.parametrize("cin,cout,k,H,W", CASES)
def test_fftconv_matches_direct_circular_sum(cin, cout, k, H, W):
    rng = np.random.default_rng(0)
    conv = FFTConv2d(cin, cout, k, key=jax.random.key(1))
    kk = (k, k) if isinstance(k, int) else k
    assert conv.weight.shape == (cout, cin) + kk and conv.bias.shape == (cout,)
    x = rng.standard_normal((cin, H, W))
    y = conv(jnp.asarray(x))
    assert y.shape == (cout, H, W) and y.dtype == jnp.float64
    ref = direct_conv(x, np.asarray(conv.weight), np.asarray(conv.bias))
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-12, atol=1e-12)


def test_fftconv_no_bias_and_one_channel_equals_circular_convolve():
    rng = np.random.default_rng(2)
    conv = FFTConv2d(1, 1, (5, 4), use_bias=False, key=jax.random.key(0))
    assert conv.bias is None
    x = rng.standard_normal((11, 9))
    y = conv(jnp.asarray(x[None]))[0]
    np.testing.assert_allclose(
        np.asarray(y), np.asarray(circular_convolve(x, conv.weight[0, 0], centred=True)), rtol=1e-12, atol=1e-12
    )
    # a delta kernel at the centre is the identity; off-centre it is a circular shift
    w = np.zeros((1, 1, 3, 3))
    w[0, 0, 1, 1] = 1.0
    ident = eqx.tree_at(lambda m: m.weight, FFTConv2d(1, 1, 3, use_bias=False, key=jax.random.key(0)), jnp.asarray(w))
    np.testing.assert_allclose(np.asarray(ident(x[None]))[0], x, atol=1e-13)
    w[0, 0, 1, 1], w[0, 0, 2, 1] = 0.0, 1.0  # g at offset (+1, 0): y[n] = x[n - 1]
    shift = eqx.tree_at(lambda m: m.weight, ident, jnp.asarray(w))
    np.testing.assert_allclose(np.asarray(shift(x[None]))[0], np.roll(x, 1, axis=0), atol=1e-13)


def test_fftconv_gradient_matches_finite_differences():
    rng = np.random.default_rng(3)
    conv = FFTConv2d(2, 3, (3, 2), key=jax.random.key(4))
    x = jnp.asarray(rng.standard_normal((2, 7, 6)))
    r = jnp.asarray(rng.standard_normal((3, 7, 6)))

    def loss(m, x):
        return jnp.sum(jnp.sin(m(x)) * r)

    gm, gx = jax.grad(loss, argnums=(0, 1))(conv, x)
    h = 1e-6
    for name in ("weight", "bias"):
        v = jnp.asarray(rng.standard_normal(getattr(conv, name).shape))
        p = eqx.tree_at(lambda m: getattr(m, name), conv, getattr(conv, name) + h * v)
        q = eqx.tree_at(lambda m: getattr(m, name), conv, getattr(conv, name) - h * v)
        fd = (loss(p, x) - loss(q, x)) / (2 * h)
        np.testing.assert_allclose(float(jnp.vdot(getattr(gm, name), v)), float(fd), rtol=1e-7)
    v = jnp.asarray(rng.standard_normal(x.shape))
    fd = (loss(conv, x + h * v) - loss(conv, x - h * v)) / (2 * h)
    np.testing.assert_allclose(float(jnp.vdot(gx, v)), float(fd), rtol=1e-7)


def test_fftconv_init_dtype_vmap_jit():
    conv = FFTConv2d(3, 4, 3, dtype=jnp.float32, key=jax.random.key(5))
    assert conv.weight.dtype == jnp.float32 and conv.bias.dtype == jnp.float32
    lim = 1 / np.sqrt(3 * 9)
    w = np.asarray(conv.weight)
    assert np.abs(w).max() <= lim and np.abs(w).max() > 0.5 * lim and abs(w.mean()) < 0.3 * lim
    assert np.abs(np.asarray(conv.bias)).max() <= lim
    xs = jnp.asarray(np.random.default_rng(6).standard_normal((2, 3, 8, 9)), jnp.float32)
    ys = eqx.filter_jit(lambda m, xs: jax.vmap(m)(xs))(conv, xs)
    assert ys.dtype == jnp.float32 and ys.shape == (2, 4, 8, 9)
    ref = np.stack([direct_conv(np.asarray(x, float), w.astype(float), np.asarray(conv.bias, float)) for x in xs])
    np.testing.assert_allclose(np.asarray(ys), ref, atol=2e-5)
    np.testing.assert_allclose(np.asarray(ys[1]), np.asarray(eqx.filter_jit(conv)(xs[1])), atol=1e-6)


def test_fftconv_bad_inputs():
    conv = FFTConv2d(2, 1, (3, 5), key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"2 input channels.*\(3, 8, 8\)"):
        conv(jnp.ones((3, 8, 8)))
    with pytest.raises(ValueError, match=r"\(channels=2, H, W\).*\(8, 8\)"):
        conv(jnp.ones((8, 8)))
    with pytest.raises(ValueError, match=r"no larger than the image.*\(3, 5\).*\(8, 4\)"):
        conv(jnp.ones((2, 8, 4)))
    with pytest.raises(TypeError, match="real input"):
        conv(jnp.ones((2, 8, 8), jnp.complex128))
    with pytest.raises(TypeError, match="list"):
        conv([[[1.0]]])
    with pytest.raises(ValueError, match="kernel_size"):
        FFTConv2d(1, 1, 0, key=jax.random.key(0))
    with pytest.raises(ValueError, match="kernel_size"):
        FFTConv2d(1, 1, (3, 3, 3), key=jax.random.key(0))
    with pytest.raises(ValueError, match="in_channels"):
        FFTConv2d(0, 1, key=jax.random.key(0))
    with pytest.raises(TypeError, match="dtype"):
        FFTConv2d(1, 1, dtype=jnp.int32, key=jax.random.key(0))


def test_seedcnn_structure_and_parameter_count():
    net = eqx.filter_eval_shape(SeedCNN, key=jax.random.key(0))  # shapes only: no compilation
    assert [(c.in_channels, c.out_channels) for c in net.layers] == [(1, 2), (2, 4), (4, 2), (2, 1)]
    # 2*(1*9+1) + 4*(2*9+1) + 2*(4*9+1) + 1*(2*9+1) = 20 + 76 + 74 + 19
    assert params(net) == 189
    # (2 -> 3 -> 1), 5x5 kernels: 3*(2*25+1) + 1*(3*25+1)
    assert params(eqx.filter_eval_shape(SeedCNN, (2, 3, 1), 5, key=jax.random.key(0))) == 229


@pytest.mark.parametrize("final_activation", [True, False])
def test_seedcnn_matches_numpy_reference(final_activation):
    net = SeedCNN(key=jax.random.key(7), final_activation=final_activation)
    x = np.random.default_rng(8).standard_normal((1, 12, 10))
    # centre every channel's pre-activation (bias -= its median) so that each ReLU cuts about half
    h, biases = x, []
    for c in net.layers:
        pre = direct_conv(h, np.asarray(c.weight), np.asarray(c.bias))
        med = np.median(pre, axis=(1, 2))
        biases.append(np.asarray(c.bias) - med)
        h = np.maximum(pre - med[:, None, None], 0)
    net = eqx.tree_at(lambda n: [c.bias for c in n.layers], net, [jnp.asarray(b) for b in biases])
    y = np.asarray(net(jnp.asarray(x)))
    h = x
    for l, c in enumerate(net.layers):
        h = direct_conv(h, np.asarray(c.weight), np.asarray(c.bias))
        if l < 3 or final_activation:
            h = np.maximum(h, 0)
    assert y.shape == (1, 12, 10)
    np.testing.assert_allclose(y, h, rtol=1e-12, atol=1e-12)
    if final_activation:
        assert y.min() == 0 and y.max() > 0
    else:
        assert y.min() < 0 < y.max()


def test_seedcnn_bad_inputs():
    net = SeedCNN(key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"SeedCNN expects one sample.*\(12, 12\)"):
        net(jnp.ones((12, 12)))
    with pytest.raises(ValueError, match=r"SeedCNN expects 1 input channels.*\(2, 12, 12\)"):
        net(jnp.ones((2, 12, 12)))
    with pytest.raises(ValueError, match="at least two"):
        SeedCNN((1,), key=jax.random.key(0))
    with pytest.raises(ValueError, match="channels"):
        SeedCNN((1, 0, 1), key=jax.random.key(0))
