"""Flax adapters: outputs and gradients against Flax's own, layout against a NumPy convolution loop,
optax training, jit/vmap, lax.scan over stacked per-iteration weights, serialisation, and state."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.signal
from flax import linen, nnx

from jaxrecon.nets.flax import LinenModule, NNXModule, from_flax

H, W = 8, 12  # non-square, so a swapped H/W axis shows


class NNXCNN(nnx.Module):
    def __init__(self, rngs, cin=1, hidden=4, cout=1):
        self.c1 = nnx.Conv(cin, hidden, (3, 3), param_dtype=jnp.float64, rngs=rngs)
        self.c2 = nnx.Conv(hidden, cout, (3, 3), param_dtype=jnp.float64, rngs=rngs)

    def __call__(self, x):
        return self.c2(nnx.tanh(self.c1(x)))


class LinenCNN(linen.Module):
    hidden: int = 4
    cout: int = 1

    @linen.compact
    def __call__(self, x):
        x = linen.Conv(self.hidden, (3, 3), param_dtype=jnp.float64)(x)
        return linen.Conv(self.cout, (3, 3), param_dtype=jnp.float64)(jnp.tanh(x))


def nhwc(x):  # one (C, H, W) sample -> a Flax batch of one
    return jnp.moveaxis(x, 0, -1)[None]


def nchw(y):
    return jnp.moveaxis(y[0], -1, 0)


def conv_same_reference(x, kernel, bias):
    """Flax's Conv (cross-correlation, SAME zero padding) by SciPy: x (C, H, W), kernel (3, 3, C, O)."""
    x, kernel, bias = map(np.asarray, (x, kernel, bias))
    out = np.zeros((kernel.shape[3],) + x.shape[1:])
    for o in range(kernel.shape[3]):
        for c in range(x.shape[0]):
            out[o] += scipy.signal.correlate2d(x[c], kernel[:, :, c, o], mode="same")
        out[o] += bias[o]
    return out


def assert_trees_close(a, b, **kw):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), **kw)


@pytest.fixture(scope="module")
def x():
    return jnp.asarray(np.random.default_rng(0).standard_normal((1, H, W)))


@pytest.fixture(scope="module")
def linen_net(x):
    return from_flax(LinenCNN(), x, key=jax.random.key(1))


def mse(net, x, target):
    return jnp.mean((net(x) - target) ** 2)


# ---------------------------------------------------------------------------------------------- layout


def test_layout_matches_numpy_convolution_loop():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((2, H, W)))
    conv = nnx.Conv(2, 3, (3, 3), param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    conv.bias[...] = jnp.asarray(rng.standard_normal(3))
    ref = conv_same_reference(x, conv.kernel[...], conv.bias[...])
    np.testing.assert_allclose(np.asarray(from_flax(conv)(x)), ref, rtol=1e-12, atol=1e-12)

    lconv = linen.Conv(3, (3, 3), param_dtype=jnp.float64)
    net = from_flax(lconv, x, key=jax.random.key(2))
    p = net.params
    ref = conv_same_reference(x, p["kernel"], p["bias"])
    assert net(x).shape == (3, H, W)
    np.testing.assert_allclose(np.asarray(net(x)), ref, rtol=1e-12, atol=1e-12)


def test_layout_none_passes_through():
    lin = nnx.Linear(5, 3, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    v = jnp.arange(5.0)
    net = from_flax(lin, layout=None)
    np.testing.assert_allclose(net(v), v @ lin.kernel[...] + lin.bias[...], rtol=1e-12)
    lnet = from_flax(linen.Dense(3), v, key=jax.random.key(0), layout=None)
    np.testing.assert_allclose(lnet(v), v @ lnet.params["kernel"] + lnet.params["bias"], rtol=1e-6)


# ---------------------------------------------------------------------------------------------- outputs, grads


def test_nnx_output_and_gradient_match_flax(x):
    m = NNXCNN(nnx.Rngs(0))
    net = from_flax(m)
    assert isinstance(net, NNXModule)
    assert all(eqx.is_inexact_array(a) for a in jax.tree.leaves(net.params))
    y = net(x)
    assert y.shape == (1, H, W)
    np.testing.assert_allclose(y, nchw(m(nhwc(x))), rtol=1e-13, atol=1e-13)

    target = jnp.sin(x)
    g = eqx.filter_grad(mse)(net, x, target)
    g_flax = nnx.grad(lambda mod: jnp.mean((nchw(mod(nhwc(x))) - target) ** 2))(m)
    assert_trees_close(g.params, nnx.to_pure_dict(g_flax), rtol=1e-10, atol=1e-13)
    assert any(float(jnp.abs(a).max()) > 1e-6 for a in jax.tree.leaves(g.params))


def test_linen_output_and_gradient_match_flax(x, linen_net):
    net, mod = linen_net, LinenCNN()
    assert isinstance(net, LinenModule) and net.state == {}
    np.testing.assert_allclose(net(x), nchw(mod.apply(net.variables, nhwc(x))), rtol=1e-13, atol=1e-13)

    target = jnp.sin(x)
    g = eqx.filter_grad(mse)(net, x, target)
    g_flax = jax.grad(lambda p: jnp.mean((nchw(mod.apply({"params": p}, nhwc(x))) - target) ** 2))(net.params)
    assert_trees_close(g.params, g_flax, rtol=1e-10, atol=1e-13)


def test_gradient_matches_finite_differences(x, linen_net):
    target = jnp.cos(x)
    g = eqx.filter_grad(mse)(linen_net, x, target)
    path = ("Conv_0", "kernel")
    d = jnp.zeros_like(linen_net.params[path[0]][path[1]]).at[1, 2, 0, 3].set(1.0)
    eps = 1e-6
    shifted = [
        eqx.tree_at(lambda n: n.params[path[0]][path[1]], linen_net, linen_net.params[path[0]][path[1]] + s * eps * d)
        for s in (1, -1)
    ]
    fd = (mse(shifted[0], x, target) - mse(shifted[1], x, target)) / (2 * eps)
    np.testing.assert_allclose(g.params[path[0]][path[1]][1, 2, 0, 3], fd, rtol=1e-6)


# ---------------------------------------------------------------------------------------------- training


@pytest.mark.parametrize("kind", ["nnx", "linen"])
def test_optax_adam_steps_change_params_and_decrease_loss(kind, x, linen_net):
    net = from_flax(NNXCNN(nnx.Rngs(3))) if kind == "nnx" else linen_net
    target = 0.5 * x
    opt = optax.adam(1e-2)
    opt_state = opt.init(eqx.filter(net, eqx.is_inexact_array))

    @eqx.filter_jit
    def step(net, opt_state):
        loss, g = eqx.filter_value_and_grad(mse)(net, x, target)
        updates, opt_state = opt.update(g, opt_state, eqx.filter(net, eqx.is_inexact_array))
        return eqx.apply_updates(net, updates), opt_state, loss

    new, losses = net, []
    for _ in range(5):
        new, opt_state, loss = step(new, opt_state)
        losses.append(float(loss))
    assert float(mse(new, x, target)) < losses[0]
    assert all(b < a for a, b in zip(losses, losses[1:]))
    for a, b in zip(jax.tree.leaves(net.params), jax.tree.leaves(new.params)):
        assert not np.allclose(a, b)
    # the trained weights go back into Flax
    if kind == "nnx":
        np.testing.assert_allclose(nchw(new.to_nnx()(nhwc(x))), new(x), rtol=1e-13)
    else:
        np.testing.assert_allclose(nchw(LinenCNN().apply(new.variables, nhwc(x))), new(x), rtol=1e-13)


# ---------------------------------------------------------------------------------------------- jit, vmap


@pytest.mark.parametrize("kind", ["nnx", "linen"])
def test_jit_and_vmap_match_flax_batch(kind, linen_net):
    xs = jnp.asarray(np.random.default_rng(4).standard_normal((3, 1, H, W)))
    if kind == "nnx":
        m = NNXCNN(nnx.Rngs(5))
        net, flax_batch = from_flax(m), m(jnp.moveaxis(xs, 1, -1))
    else:
        net = linen_net
        flax_batch = LinenCNN().apply(net.variables, jnp.moveaxis(xs, 1, -1))
    batched = eqx.filter_jit(eqx.filter_vmap(lambda n, x: n(x), in_axes=(None, 0)))(net, xs)
    np.testing.assert_allclose(batched, jnp.moveaxis(flax_batch, -1, 1), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(batched, jnp.stack([net(x) for x in xs]), rtol=1e-12, atol=1e-13)


# ---------------------------------------------------------------------------------------------- unrolled scan


def unrolled_scan(stacked, x0, y, step=0.5):
    """x_{k+1} = x_k - step (x_k - y) + net_k(x_k), k = 0..K-1, nets stacked along axis 0."""
    params, static = eqx.partition(stacked, eqx.is_array)

    def body(x, p):
        return x - step * (x - y) + eqx.combine(p, static)(x), None

    return jax.lax.scan(body, x0, params)[0]


def unrolled_loop(nets, x0, y, step=0.5):
    x = x0
    for net in nets:
        x = x - step * (x - y) + net(x)
    return x


def _check_scan_equals_loop(stacked, nets, x):
    y = jnp.cos(x)
    np.testing.assert_allclose(
        eqx.filter_jit(unrolled_scan)(stacked, x, y), unrolled_loop(nets, x, y), rtol=1e-12, atol=1e-13
    )
    # the per-iteration weights really differ, and the scan's gradient is the stacked loop gradient
    assert not np.allclose(nets[0](x), nets[1](x))
    g_scan = eqx.filter_grad(lambda s: jnp.sum(unrolled_scan(s, x, y) ** 2))(stacked)
    g_loop = eqx.filter_grad(lambda ns: jnp.sum(unrolled_loop(ns, x, y) ** 2))(nets)
    assert_trees_close(g_scan.params, jax.tree.map(lambda *a: jnp.stack(a), *[g.params for g in g_loop]),
                       rtol=1e-10, atol=1e-13)


@pytest.mark.slow
def test_nnx_stacked_by_filter_vmap_in_scan_equals_loop(x):
    keys = jax.random.split(jax.random.key(7), 3)
    stacked = eqx.filter_vmap(lambda k: from_flax(NNXCNN(nnx.Rngs(k))))(keys)
    assert stacked.params["c1"]["kernel"].shape == (3, 3, 3, 1, 4)
    nets = [from_flax(NNXCNN(nnx.Rngs(k))) for k in keys]
    for i, net in enumerate(nets):  # construction under vmap gives the same weights as one at a time
        assert_trees_close(jax.tree.map(lambda a: a[i], stacked.params), net.params, rtol=1e-12, atol=1e-15)
    _check_scan_equals_loop(stacked, nets, x)


def test_linen_stacked_by_tree_map_in_scan_equals_loop(x):
    nets = [from_flax(LinenCNN(), x, key=k) for k in jax.random.split(jax.random.key(8), 3)]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *nets)
    assert isinstance(stacked, LinenModule) and stacked.params["Conv_1"]["bias"].shape == (3, 1)
    _check_scan_equals_loop(stacked, nets, x)


# ---------------------------------------------------------------------------------------------- serialisation


class WithDropout(nnx.Module):  # holds an RNG stream (typed key + counter) as non-parameter state
    def __init__(self, rngs):
        self.conv = nnx.Conv(1, 2, (3, 3), param_dtype=jnp.float64, rngs=rngs)
        self.drop = nnx.Dropout(0.5, deterministic=True, rngs=rngs)

    def __call__(self, x):
        return self.drop(self.conv(x))


@pytest.mark.parametrize("kind", ["nnx", "nnx-rngs", "linen"])
def test_serialise_round_trip(kind, x, tmp_path):
    if kind == "nnx":
        net, like = from_flax(NNXCNN(nnx.Rngs(0))), from_flax(NNXCNN(nnx.Rngs(1)))
    elif kind == "nnx-rngs":
        net, like = from_flax(WithDropout(nnx.Rngs(0))), from_flax(WithDropout(nnx.Rngs(1)))
        assert net.state["drop"]["rngs"]["key"].dtype == jnp.uint32  # stored as raw key data
    else:
        net, like = from_flax(LinenCNN(), x, key=jax.random.key(0)), from_flax(LinenCNN(), x, key=jax.random.key(1))
    assert not np.allclose(net(x), like(x))
    path = tmp_path / "net.eqx"
    eqx.tree_serialise_leaves(path, net)
    back = eqx.tree_deserialise_leaves(path, like)
    assert_trees_close((back.params, back.state), (net.params, net.state), rtol=0, atol=0)
    np.testing.assert_array_equal(back(x), net(x))
    if kind == "nnx-rngs":
        restored = back.to_nnx()
        assert jax.random.key_data(restored.drop.rngs.key[...]).tolist() == \
            jax.random.key_data(WithDropout(nnx.Rngs(0)).drop.rngs.key[...]).tolist()


# ---------------------------------------------------------------------------------------------- state


class NNXBatchNormNet(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(1, 2, (3, 3), param_dtype=jnp.float64, rngs=rngs)
        self.bn = nnx.BatchNorm(2, param_dtype=jnp.float64, rngs=rngs)

    def __call__(self, x):
        return self.bn(self.conv(x))


# flax's own BatchNorm keeps float32 statistics and scatters float64 batch means into them
@pytest.mark.filterwarnings("ignore:scatter inputs have incompatible types:FutureWarning")
def test_nnx_stateful_module_rejected_by_call_and_handled_by_call_with_state(x):
    m = NNXBatchNormNet(nnx.Rngs(0))
    net = from_flax(m)
    with pytest.raises(ValueError, match=r"\['state'\]\['bn'\]\['mean'\].*call_with_state"):
        net(x)
    y, new = net.call_with_state(x)
    y_flax = nchw(m(nhwc(x)))  # mutates m's batch statistics in place
    np.testing.assert_allclose(y, y_flax, rtol=1e-12, atol=1e-13)
    assert_trees_close(new.state, nnx.to_pure_dict(nnx.state(m, nnx.BatchStat)), rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(net.state["bn"]["mean"], 0.0)  # the adapter itself is untouched
    assert not np.allclose(new.state["bn"]["mean"], 0.0)

    m.eval()  # running averages: a pure call, state read but not differentiated
    ev = from_flax(m)
    np.testing.assert_allclose(ev(x), nchw(m(nhwc(x))), rtol=1e-12, atol=1e-13)
    g = eqx.filter_grad(lambda n: jnp.sum(n(x) ** 2))(ev)
    assert all(np.all(np.asarray(a) == 0) for a in jax.tree.leaves(g.state))
    spec = ev.trainable()
    assert jax.tree.leaves(spec.params) == [True] * 4 and jax.tree.leaves(spec.state) == [False] * 2
    trainable, frozen = eqx.partition(ev, spec)
    assert jax.tree.leaves(trainable.state) == [] and len(jax.tree.leaves(frozen.state)) == 2
    assert eqx.tree_equal(eqx.combine(trainable, frozen), ev)


class LinenBN(linen.Module):
    @linen.compact
    def __call__(self, x, train: bool):
        x = linen.Conv(2, (3, 3), param_dtype=jnp.float64)(x)
        return linen.BatchNorm(use_running_average=not train, param_dtype=jnp.float64)(x)


def test_linen_batch_stats(x):
    net = from_flax(LinenBN(), x, key=jax.random.key(0), train=False)
    assert set(net.state) == {"batch_stats"}
    np.testing.assert_allclose(net(x, train=False), nchw(LinenBN().apply(net.variables, nhwc(x), train=False)),
                               rtol=1e-12)
    with pytest.raises(ValueError, match="call_with_state"):
        net(x, train=True)
    y, new = net.call_with_state(x, train=True)
    y_flax, upd = LinenBN().apply(net.variables, nhwc(x), train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(y, nchw(y_flax), rtol=1e-12, atol=1e-13)
    assert_trees_close(new.state, dict(upd), rtol=1e-12, atol=1e-15)
    assert not np.allclose(new.state["batch_stats"]["BatchNorm_0"]["mean"], 0.0)


# ---------------------------------------------------------------------------------------------- errors


def test_bad_input(x):
    m = NNXCNN(nnx.Rngs(0))
    with pytest.raises(TypeError, match="nnx.Module or a flax.linen.Module, got function"):
        from_flax(lambda v: v)
    with pytest.raises(TypeError, match="got also variables"):
        from_flax(m, variables={})
    with pytest.raises(TypeError, match="either `variables=` or an `example_input` and a `key`"):
        from_flax(LinenCNN(), x)
    with pytest.raises(TypeError, match="got both"):
        from_flax(LinenCNN(), x, key=jax.random.key(0), variables={"params": {}})
    with pytest.raises(ValueError, match=r"layout to be one of .* got 'NHWC'"):
        from_flax(m, layout="NHWC")
    with pytest.raises(TypeError, match="mapping of collection names"):
        LinenModule(LinenCNN(), [1, 2])
    with pytest.raises(TypeError, match="flax.nnx.Module, got LinenCNN"):
        NNXModule(LinenCNN())
    net = from_flax(m)
    with pytest.raises(ValueError, match=r"\(C, H, W\).*got shape \(8,\)"):
        net(jnp.ones(8))
    with pytest.raises(TypeError, match="expects `x` to be an array, got list"):
        net([[1.0]])
    with pytest.raises(ValueError, match=r"\(1, \*spatial, C_out\), got shape \(96,\)"):
        from_flax(Flatten())(x)
    with pytest.raises(TypeError, match="return one array, got tuple"):
        from_flax(Flatten(pair=True))(x)


class Flatten(nnx.Module):
    def __init__(self, pair=False):
        self.pair = pair

    def __call__(self, x):
        return (x, x) if self.pair else x.reshape(-1)
