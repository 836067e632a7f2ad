"""UNet and DnCNN: shapes for odd sizes, padding convention, residual forms, SciPy references, vmap/jit/grad."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage as ndi

from jaxrecon.nets.unet import DnCNN, UNet

apply = eqx.filter_jit(lambda m, x: m(x))


def params(m):
    return sum(a.size for a in jax.tree.leaves(m) if hasattr(a, "shape"))


def conv_ref(x, w, b, circular=False):
    """Zero-padded cross-correlation (eqx.nn.Conv2d, "SAME") or centred circular convolution (FFTConv2d)."""
    w, b = np.asarray(w), np.asarray(b).reshape(-1)
    y = np.zeros((w.shape[0],) + x.shape[1:])
    for o in range(w.shape[0]):
        for c in range(w.shape[1]):
            if circular:
                y[o] += ndi.convolve(x[c], w[o, c], mode="wrap")
            else:
                y[o] += ndi.correlate(x[c], w[o, c], mode="constant", cval=0.0)
        y[o] += b[o]
    return y


def group_norm_ref(x, groups, eps=1e-5):
    c = x.shape[0]
    g = x.reshape(groups, -1)
    g = (g - g.mean(1, keepdims=True)) / np.sqrt(g.var(1, keepdims=True) + eps)
    return g.reshape(c, *x.shape[1:])


@pytest.fixture(scope="module")
def unet():
    return UNet(channels=4, levels=3, key=jax.random.key(0))


def test_unet_parameter_count_and_structure():
    net = eqx.filter_eval_shape(UNet, channels=4, levels=3, key=jax.random.key(0))
    # encoder: (1->4, 4->4), (4->8, 8->8), (8->16, 16->16) 3x3 convs: 40+148+296+584+1168+2320 = 4556
    # ups: 2x2 transposed 16->8, 8->4: 520+132 = 652; decoder: (16->8, 8->8), (8->4, 4->4): 1160+584+292+148 = 2184
    # final 1x1: 4->1: 5
    assert params(net) == 4556 + 652 + 2184 + 5
    assert [(u.in_channels, u.out_channels, u.stride) for u in net.ups] == [(16, 8, (2, 2)), (8, 4, (2, 2))]
    fbp = eqx.filter_eval_shape(UNet, channels=64, levels=5, key=jax.random.key(0))
    assert 3.1e7 < params(fbp) < 3.2e7  # FBPConvNet without batch norm: ~31 M parameters


@pytest.mark.slow
def test_unet_odd_sizes_and_reflect_padding(unet):
    rng = np.random.default_rng(0)
    for H, W, pads in [(13, 23, ((0, 0), (1, 2), (0, 1)))]:  # to 16 x 24
        x = rng.standard_normal((1, H, W))
        y = np.asarray(apply(unet, jnp.asarray(x)))
        assert y.shape == (1, H, W) and np.all(np.isfinite(y))
        # the network pads by reflection to a multiple of 4 (split evenly, extra at the end) and crops
        xp = np.pad(x, pads, mode="reflect")
        assert xp.shape[1] % 4 == 0 and xp.shape[2] % 4 == 0
        yp = np.asarray(apply(unet, jnp.asarray(xp))) - xp
        crop = yp[:, pads[1][0] : pads[1][0] + H, pads[2][0] : pads[2][0] + W]
        np.testing.assert_allclose(y - x, crop, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_unet_zero_padding_mode_and_shapes():
    rng = np.random.default_rng(1)
    # same architecture as the fixture: the initialisation reuses its compiled random draws
    net = UNet(channels=4, levels=3, residual=False, padding_mode="zeros", key=jax.random.key(1))
    x = rng.standard_normal((1, 7, 6))
    y = np.asarray(apply(net, jnp.asarray(x)))
    assert y.shape == (1, 7, 6)
    xp = np.pad(x, ((0, 0), (0, 1), (1, 1)))  # to 8 x 8 with zeros
    np.testing.assert_allclose(y, np.asarray(apply(net, jnp.asarray(xp)))[:, :7, 1:7], rtol=1e-12, atol=1e-12)
    out = eqx.filter_eval_shape(
        lambda x: UNet(2, 3, channels=4, levels=3, residual=False, key=jax.random.key(0))(x), jnp.ones((2, 11, 5))
    )
    assert out.shape == (3, 11, 5)


def test_unet_residual_identity(unet):
    x = jnp.asarray(np.random.default_rng(2).standard_normal((1, 12, 10)))
    zero = eqx.tree_at(lambda m: (m.final.weight, m.final.bias), unet, replace_fn=jnp.zeros_like)
    np.testing.assert_array_equal(np.asarray(apply(zero, x)), np.asarray(x))
    assert not np.allclose(np.asarray(apply(unet, x)), np.asarray(x))


def test_unet_vmap_equals_stacking(unet):
    xs = jnp.asarray(np.random.default_rng(3).standard_normal((3, 1, 12, 10)))
    ys = eqx.filter_jit(lambda m, xs: jax.vmap(m)(xs))(unet, xs)
    ref = np.stack([np.asarray(apply(unet, x)) for x in xs])
    np.testing.assert_allclose(np.asarray(ys), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_unet_gradients(unet):
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.standard_normal((1, 12, 10)))
    r = jnp.asarray(rng.standard_normal((1, 12, 10)))

    def loss(m, x):
        return jnp.sum(jnp.tanh(m(x)) * r)

    gm, gx = eqx.filter_jit(eqx.filter_grad(lambda mx: loss(*mx)))((unet, x))  # one compilation
    leaves = jax.tree.leaves(eqx.filter(gm, eqx.is_array))
    assert len(leaves) == 2 * (6 + 2 + 4 + 1)
    assert all(np.all(np.isfinite(g)) for g in leaves)
    assert all(np.any(g != 0) for g in leaves)
    v = jnp.asarray(rng.standard_normal(x.shape))
    h = 1e-6
    f = eqx.filter_jit(loss)
    fd = (f(unet, x + h * v) - f(unet, x - h * v)) / (2 * h)
    np.testing.assert_allclose(float(jnp.vdot(gx, v)), float(fd), rtol=1e-6)


@pytest.mark.parametrize("norm_groups", [None, 2])
def test_unet_one_level_matches_scipy(norm_groups):
    """levels=1: two 3x3 convs (+ GroupNorm) + ReLU, then the 1x1 conv, plus the input."""
    net = UNet(2, 2, channels=4, levels=1, norm_groups=norm_groups, key=jax.random.key(5))
    x = np.random.default_rng(5).standard_normal((2, 7, 5))
    h = x
    for conv in (net.encoder[0].conv1, net.encoder[0].conv2):
        h = conv_ref(h, conv.weight, conv.bias)
        if norm_groups:
            h = group_norm_ref(h, norm_groups)
        h = np.maximum(h, 0)
    ref = x + conv_ref(h, net.final.weight, net.final.bias)
    np.testing.assert_allclose(np.asarray(apply(net, jnp.asarray(x))), ref, rtol=1e-12, atol=1e-12)


def test_unet_bad_inputs(unet):
    with pytest.raises(ValueError, match=r"UNet expects 1 input channels.*\(2, 8, 8\)"):
        unet(jnp.ones((2, 8, 8)))
    with pytest.raises(ValueError, match=r"UNet expects one sample.*\(4, 1, 8, 8\)"):
        unet(jnp.ones((4, 1, 8, 8)))
    with pytest.raises(ValueError, match="in_channels == out_channels.*in_channels=1, out_channels=2"):
        UNet(1, 2, key=jax.random.key(0))
    with pytest.raises(ValueError, match="padding_mode"):
        UNet(padding_mode="wrap", key=jax.random.key(0))
    with pytest.raises(ValueError, match="norm_groups"):
        UNet(channels=6, norm_groups=4, key=jax.random.key(0))
    with pytest.raises(ValueError, match="levels"):
        UNet(levels=0, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"3 levels pools 2 times and needs images of at least 4x4 pixels, got 3x8"):
        unet(jnp.ones((1, 3, 8)))


@pytest.mark.parametrize("circular", [False, True])
def test_dncnn_matches_scipy_reference(circular):
    net = DnCNN(2, features=3, depth=4, circular=circular, key=jax.random.key(6))
    assert net.middle.weight.shape[:3] == (2, 3, 3)  # the depth-2 middle layers, stacked
    x = np.random.default_rng(6).standard_normal((2, 9, 8))
    h = np.maximum(conv_ref(x, net.first.weight, net.first.bias, circular), 0)
    for k in range(2):
        h = np.maximum(conv_ref(h, net.middle.weight[k], net.middle.bias[k], circular), 0)
    ref = x - conv_ref(h, net.last.weight, net.last.bias, circular)
    y = np.asarray(apply(net, jnp.asarray(x)))
    assert y.shape == (2, 9, 8)
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)


def test_dncnn_parameter_count_residual_form_vmap():
    # first 1->64: 640; 15 middle 64->64: 15 * 36928; last 64->1: 577 (3x3 kernels, biases)
    assert params(eqx.filter_eval_shape(DnCNN, key=jax.random.key(0))) == 640 + 15 * 36928 + 577
    net = DnCNN(features=4, depth=2, key=jax.random.key(7))
    assert net.middle is None and params(net) == (4 * 9 + 4) + (4 * 9 + 1)
    xs = jnp.asarray(np.random.default_rng(7).standard_normal((3, 1, 10, 11)))
    zero = eqx.tree_at(lambda m: m.last.weight, net, replace_fn=jnp.zeros_like)
    np.testing.assert_allclose(np.asarray(apply(zero, xs[0])), np.asarray(xs[0] - net.last.bias), atol=1e-15)
    ys = eqx.filter_jit(lambda m, xs: jax.vmap(m)(xs))(net, xs)
    ref = np.stack([np.asarray(apply(net, x)) for x in xs])
    np.testing.assert_allclose(np.asarray(ys), ref, rtol=1e-12, atol=1e-12)


def test_dncnn_bad_inputs():
    net = DnCNN(features=2, depth=3, circular=True, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"DnCNN expects 1 input channels.*\(3, 8, 8\)"):
        net(jnp.ones((3, 8, 8)))
    with pytest.raises(ValueError, match=r"DnCNN expects one sample.*\(8, 8\)"):
        net(jnp.ones((8, 8)))
    with pytest.raises(ValueError, match=r"no larger than the image.*\(3, 3\).*\(2, 8\)"):
        net(jnp.ones((1, 2, 8)))
    with pytest.raises(ValueError, match="depth >= 2.*depth=1"):
        DnCNN(depth=1, key=jax.random.key(0))


def test_conditional_dncnn_takes_the_noise_level_as_a_channel():
    net = DnCNN(features=3, depth=3, conditional=True, key=jax.random.key(8))
    assert net.first.weight.shape[:2] == (3, 2)  # image + noise-level channel
    x = np.random.default_rng(8).standard_normal((1, 9, 8))
    h = np.maximum(conv_ref(np.concatenate([x, np.full_like(x, 0.3)]), net.first.weight, net.first.bias, False), 0)
    h = np.maximum(conv_ref(h, net.middle.weight[0], net.middle.bias[0], False), 0)
    ref = x - conv_ref(h, net.last.weight, net.last.bias, False)
    np.testing.assert_allclose(np.asarray(net(jnp.asarray(x), 0.3)), ref, rtol=1e-12, atol=1e-12)
    # vmapped over images and levels; the level is differentiable (a traced input)
    xs, levels = jnp.stack([x[None], x[None]])[:, 0], jnp.array([0.0, 0.3])
    ys = jax.vmap(net)(xs, levels)
    np.testing.assert_allclose(np.asarray(ys[1]), ref, rtol=1e-12, atol=1e-12)
    assert np.isfinite(float(jax.grad(lambda s: net(jnp.asarray(x), s).sum())(0.1)))
    with pytest.raises(TypeError, match=r"conditional: call it as net\(x, noise_level\)"):
        net(jnp.asarray(x))
    with pytest.raises(ValueError, match=r"noise_level to be a real scalar, got shape \(2,\)"):
        net(jnp.asarray(x), jnp.ones(2))
    with pytest.raises(TypeError, match="takes no noise_level"):
        DnCNN(features=3, depth=3, key=jax.random.key(0))(jnp.asarray(x), 0.1)
    with pytest.raises(TypeError, match="conditional` to be a bool"):
        DnCNN(conditional=1, key=jax.random.key(0))
