"""Learned schemes (post-processing, unrolled PGD, LISTA, learned gradient descent, learned primal-dual)
against independent references: the classical iterations at initialisation (NumPy, PyWavelets), a
Python loop over the per-iteration blocks, vmap vs separate calls, finite differences."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import pywt

from jaxrecon.nets.blocks import ConvStack, PReLU
from jaxrecon.nets.learned_gradient import LearnedGradientDescent
from jaxrecon.nets.postprocessing import PostProcessing
from jaxrecon.nets.primal_dual import LearnedPrimalDual
from jaxrecon.nets.unrolled import LISTA, UnrolledPGD
from jaxrecon.operators import (
    CircularConvolution,
    MatrixOperator,
    ParallelBeamGeometry,
    RadonTransform,
    SubsampledFourier,
    cartesian_mask,
    fbp,
    gaussian_kernel,
    operator_norm,
)
from jaxrecon.phantoms import shepp_logan
from jaxrecon.solvers import as_matrix

N = 16
OP = RadonTransform(ParallelBeamGeometry.uniform((N, N), 8))
X = shepp_logan(N, dtype=jnp.float64)
Y = OP(X) + 0.1 * jax.random.normal(jax.random.key(1), OP.out_shape)
KEY = jax.random.key(0)


def _small(cls, op=OP, **kw):
    if cls in (LearnedPrimalDual, LearnedGradientDescent):
        kw = {"num_iterations": 3, "hidden": 6, "key": KEY, "dtype": jnp.float64, **kw}
    elif cls is LISTA:  # thresholds away from 0, where |theta| has its kink
        kw = {"num_iterations": 3, "alpha": 0.1, "dtype": jnp.float64, **kw}
    else:
        kw = {"num_iterations": 3, "dtype": jnp.float64, **kw}
    return cls(op, **kw)


def _num_params(model):  # also for shape-only models from eqx.filter_eval_shape
    leaves = jax.tree.leaves(model)
    return sum(int(np.prod(a.shape)) for a in leaves if isinstance(a, jax.ShapeDtypeStruct) or eqx.is_inexact_array(a))


@eqx.filter_jit
def _call(model, y, op):
    return model(y, op)


# ------------------------------------------------------------------------------------------------
# Blocks
# ------------------------------------------------------------------------------------------------


def test_prelu_matches_definition():
    act = PReLU(3, init=0.3, dtype=jnp.float64)
    x = jax.random.normal(KEY, (3, 4, 5), jnp.float64)
    np.testing.assert_allclose(act(x), np.where(x > 0, x, 0.3 * x))
    with pytest.raises(ValueError, match="3 channels"):
        act(jnp.ones((2, 4, 5)))


@pytest.mark.slow
def test_convstack_is_the_documented_composition():
    block = ConvStack(2, 3, hidden=4, num_layers=3, key=KEY, dtype=jnp.float64)
    x = jax.random.normal(KEY, (2, 7, 9), jnp.float64)

    def conv(c, z):  # independent "SAME" cross-correlation, as torch/eqx define convolution layers
        w, b = np.asarray(c.weight), np.asarray(c.bias)
        zp = np.pad(np.asarray(z), ((0, 0), (1, 1), (1, 1)))
        out = np.zeros((w.shape[0], *z.shape[1:]))
        for o in range(w.shape[0]):
            for i in range(w.shape[1]):
                for dy in range(3):
                    for dx in range(3):
                        out[o] += w[o, i, dy, dx] * zp[i, dy : dy + z.shape[1], dx : dx + z.shape[2]]
        return out + b.reshape(-1, 1, 1)

    z = np.asarray(x)
    for layer in block.layers[:-1]:
        z = conv(layer, z)
        z = np.where(z > 0, z, 0.0)  # PReLU starts as ReLU (init 0)
    np.testing.assert_allclose(block(x), conv(block.layers[-1], z), rtol=1e-10, atol=1e-12)
    assert block(x).shape == (3, 7, 9)


def test_convstack_glorot_initialisation():
    block = ConvStack(6, 5, hidden=32, weight_init="glorot", last_scale=0.5, key=KEY, dtype=jnp.float64)
    default = ConvStack(6, 5, hidden=32, key=KEY, dtype=jnp.float64)
    for k, (layer, c_in, c_out) in enumerate(zip(block.layers, (6, 32, 32), (32, 32, 5))):
        w = np.asarray(layer.weight) / (0.5 if k == 2 else 1.0)
        limit = np.sqrt(6 / ((c_in + c_out) * 9))  # Glorot uniform: fan_in + fan_out = (c_in + c_out) * 3 * 3
        assert np.all(np.abs(w) <= limit) and np.abs(w).max() > 0.9 * limit
        assert np.var(w) == pytest.approx(limit**2 / 3, rel=0.15)  # uniform: variance limit^2 / 3
        np.testing.assert_array_equal(layer.bias, 0.0)
        assert not np.allclose(default.layers[k].bias, 0.0)  # equinox's default: nonzero biases
    with pytest.raises(ValueError, match=r"weight_init to be one of \('default', 'glorot'\), got 'xavier'"):
        ConvStack(6, 5, weight_init="xavier", key=KEY)
    lpd = LearnedPrimalDual(RadonTransform(ParallelBeamGeometry.uniform((8, 8), 4)), num_iterations=2, hidden=4,
                            weight_init="glorot", key=KEY)
    np.testing.assert_array_equal(lpd.primal.layers[0].bias, 0.0)


# ------------------------------------------------------------------------------------------------
# Learned primal-dual
# ------------------------------------------------------------------------------------------------


def test_lpd_default_size_is_the_papers():
    op = RadonTransform(ParallelBeamGeometry.uniform((32, 32), 10))
    model = eqx.filter_eval_shape(LearnedPrimalDual, op, key=KEY)  # shapes only: no compute
    per_iteration = (7 * 32 * 9 + 32) + (32 * 32 * 9 + 32) + (32 * 5 * 9 + 5) + 2 * 32  # dual block
    per_iteration += (6 * 32 * 9 + 32) + (32 * 32 * 9 + 32) + (32 * 5 * 9 + 5) + 2 * 32  # primal block
    assert _num_params(model) == 10 * per_iteration + 1  # + the (frozen) operator norm
    assert 2.4e5 < _num_params(model) < 2.6e5


def _lpd_reference(model, y, op, scale):
    """A Python loop over the per-iteration blocks (no scan), with the paper's update rule."""
    f = jnp.zeros((model.num_primal, *op.in_shape))
    h = jnp.zeros((model.num_dual, *op.out_shape))
    for i in range(model.num_iterations):
        dual = jax.tree.map(lambda a: a[i] if eqx.is_array(a) else a, model.dual)
        primal = jax.tree.map(lambda a: a[i] if eqx.is_array(a) else a, model.primal)
        h = h + dual(jnp.concatenate([h, (op(f[1]) * scale)[None], (y * scale)[None]]))
        f = f + primal(jnp.concatenate([f, (op.T(h[0]) * scale)[None]]))
    return f[0]


@pytest.mark.slow
@pytest.mark.parametrize("unroll", [True, 1])
def test_lpd_scan_equals_loop_over_blocks(unroll):
    model = _small(LearnedPrimalDual, unroll=unroll)
    np.testing.assert_allclose(_call(model, Y, OP), eqx.filter_jit(_lpd_reference)(model, Y, OP, 1 / operator_norm(OP, key=jax.random.key(0), num_iter=100)), rtol=1e-9, atol=1e-12)


@pytest.mark.slow
def test_lpd_shared_weights():
    model = _small(LearnedPrimalDual, shared=True, num_iterations=4)
    stacked = eqx.filter_eval_shape(_small, LearnedPrimalDual, num_iterations=4)
    assert _num_params(model) == (_num_params(stacked) - 1) // 4 + 1
    assert _call(model, Y, OP).shape == (N, N)


@pytest.mark.slow
@pytest.mark.parametrize("cls", [LearnedPrimalDual, LearnedGradientDescent, UnrolledPGD, LISTA])
def test_vmap_equals_separate_calls(cls):
    model = _small(cls)
    ys = jnp.stack([Y, 2 * Y, Y[::-1]])
    batched = eqx.filter_jit(jax.vmap(lambda y: model(y, OP)))(ys)
    np.testing.assert_allclose(batched, jnp.stack([_call(model, y, OP) for y in ys]), rtol=1e-9, atol=1e-11)


# ------------------------------------------------------------------------------------------------
# Learned gradient descent
# ------------------------------------------------------------------------------------------------


def test_lgd_matches_update_rule():
    model = _small(LearnedGradientDescent)
    scale = 1 / float(operator_norm(OP, key=jax.random.key(0), num_iter=100))

    @eqx.filter_jit
    def reference(model):
        x = fbp(Y, OP.geom, "hann")
        s = jnp.zeros((model.num_memory, N, N))
        for i in range(model.num_iterations):
            block = jax.tree.map(lambda a: a[i] if eqx.is_array(a) else a, model.blocks)
            grad = OP.T(OP(x) - Y) * scale**2
            u = block(jnp.concatenate([x[None], grad[None], s]))
            x, s = x + u[0], jnp.maximum(u[1:], 0)
        return x

    np.testing.assert_allclose(_call(model, Y, OP), reference(model), rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# Unrolled PGD and LISTA at initialisation are the classical iterations
# ------------------------------------------------------------------------------------------------


def test_unrolled_pgd_at_init_is_projected_gradient_descent():
    alpha, k = 0.3, 4
    model = UnrolledPGD(OP, num_iterations=k, alpha=alpha, init="zero", dtype=jnp.float64)
    a = np.asarray(as_matrix(OP))
    lam = 1 / np.linalg.norm(a, 2) ** 2
    x = np.zeros(N * N)
    y = np.asarray(Y).ravel()
    for _ in range(k):
        x = np.maximum(x - lam * (a.T @ (a @ x - y) + alpha * x), 0)
    np.testing.assert_allclose(_call(model, Y, OP).ravel(), x, rtol=1e-6, atol=1e-8)


def test_lista_at_init_is_ista_with_pywavelets():
    alpha, k = 0.5, 3
    model = LISTA(OP, num_iterations=k, alpha=alpha, wavelet="db2", levels=2, init="zero", dtype=jnp.float64)
    a = np.asarray(as_matrix(OP))
    lam = 1 / np.linalg.norm(a, 2) ** 2
    y = np.asarray(Y).ravel()
    x = np.zeros((N, N))
    for _ in range(k):
        z = x - lam * (a.T @ (a @ x.ravel() - y)).reshape(N, N)
        coeffs = pywt.wavedec2(z, "db2", mode="periodization", level=2)
        soft = lambda c: np.sign(c) * np.maximum(np.abs(c) - lam * alpha, 0)
        coeffs = [coeffs[0]] + [tuple(soft(d) for d in details) for details in coeffs[1:]]
        x = pywt.waverec2(coeffs, "db2", mode="periodization")
    # the operator norm is a 100-step power iteration (LISTA) vs NumPy's exact norm: ~1e-6 apart
    np.testing.assert_allclose(_call(model, Y, OP), x, rtol=1e-5, atol=1e-6)


def test_learned_filter_enters_as_a_circular_convolution():
    # one step from x0 = A^T y: a kernel that shifts by one column adds exactly roll(x0, 1, axis=1)
    model = UnrolledPGD(OP, num_iterations=1, nonnegative=False, init="adjoint", dtype=jnp.float64)
    kernel = jnp.zeros((5, 5)).at[2, 3].set(1.0)
    moved = eqx.tree_at(lambda m: m.params.kernel, model, model.params.kernel.at[0].set(kernel))
    np.testing.assert_allclose(_call(moved, Y, OP) - _call(model, Y, OP), jnp.roll(OP.T(Y), 1, axis=1), rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------------------------------------
# Gradients, other operators, post-processing, errors
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("cls", [LearnedPrimalDual, LearnedGradientDescent, UnrolledPGD, LISTA])
def test_gradient_matches_finite_differences(cls):
    model = _small(cls)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    direction = jax.tree.map(lambda a: jax.random.normal(jax.random.key(a.size), a.shape, a.dtype), params)
    direction = eqx.tree_at(lambda p: p.op_norm, direction, jnp.zeros(()))  # frozen leaf

    @jax.jit
    def loss(p):
        return jnp.sum((eqx.combine(p, static)(Y, OP) - X) ** 2)

    grad = jax.jit(jax.grad(loss))(params)
    eps = 1e-6
    plus = jax.tree.map(lambda p, d: p + eps * d, params, direction)
    minus = jax.tree.map(lambda p, d: p - eps * d, params, direction)
    fd = (loss(plus) - loss(minus)) / (2 * eps)
    analytic = sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grad), jax.tree.leaves(direction)))
    np.testing.assert_allclose(analytic, fd, rtol=1e-6)
    assert float(jnp.abs(grad.op_norm)) == 0.0


@pytest.mark.slow
def test_other_operators_blur_and_fourier():
    blur = CircularConvolution(gaussian_kernel((5, 5), 1.0, dtype=jnp.float64), (N, N))
    mask = cartesian_mask(jax.random.key(2), (N, N), 6)
    fourier = SubsampledFourier(mask)
    for op in (blur, fourier):
        y = op(X)
        for cls in (LearnedPrimalDual, LearnedGradientDescent, UnrolledPGD, LISTA):
            out = _call(_small(cls, op=op), y, op)
            assert out.shape == (N, N) and out.dtype == jnp.float64 and bool(jnp.all(jnp.isfinite(out)))
    lpd = _small(LearnedPrimalDual, op=fourier)
    assert lpd.complex_data and not _small(LearnedPrimalDual, op=blur).complex_data
    # complex data enter as (real, imag) channels: the dual block's first layer sees 2 + 2 extra channels
    assert lpd.dual.layers[0].weight.shape[2] == lpd.num_dual + 4


def test_postprocessing_identity_net_is_fbp():
    model = PostProcessing(lambda z: z, init="fbp", filter="hamming")
    np.testing.assert_allclose(model(Y, OP), fbp(Y, OP.geom, "hamming"))
    blur = CircularConvolution(gaussian_kernel((3, 3), 1.0, dtype=jnp.float64), (N, N))
    np.testing.assert_allclose(PostProcessing(lambda z: z)(blur(X), blur), blur.T(blur(X)))


def test_bad_inputs_raise_clear_errors():
    model = _small(UnrolledPGD)
    with pytest.raises(ValueError, match=r"op.out_shape = \(8, 23\).*got shape \(8, 22\)"):
        model(jnp.zeros((8, 22)), OP)
    with pytest.raises(TypeError, match="LinearOperator"):
        model(Y, lambda x: x)
    with pytest.raises(ValueError, match="init"):
        UnrolledPGD(OP, init="pinv")
    blur = CircularConvolution(gaussian_kernel((3, 3), 1.0), (N, N))
    with pytest.raises(ValueError, match="needs a RadonTransform"):
        UnrolledPGD(blur, init="fbp")(blur(X), blur)
    with pytest.raises(ValueError, match="kernel_size"):
        UnrolledPGD(OP, kernel_size=4)
    with pytest.raises(ValueError, match="num_iterations"):
        LearnedPrimalDual(OP, num_iterations=0, key=KEY)
    with pytest.raises(ValueError, match="alpha"):
        LISTA(OP, alpha=-1.0)
    with pytest.raises(ValueError, match=r"\(H, W\) images|2D data"):
        LearnedPrimalDual(MatrixOperator(jnp.ones((5, N * N))), key=KEY)
    with pytest.raises(ValueError, match="divisible|levels"):
        LISTA(RadonTransform(ParallelBeamGeometry.uniform((18, 18), 4)), levels=3)
    bigger = RadonTransform(ParallelBeamGeometry.uniform((2 * N, 2 * N), 8))
    for m in (model, LearnedPrimalDual(OP, num_iterations=1, hidden=2, key=KEY)):
        with pytest.raises(ValueError, match=r"was built for an operator from \(16, 16\)"):
            m(jnp.zeros(bigger.out_shape), bigger)  # a model used on an operator of another size


@pytest.mark.slow
def test_flax_network_inside_learned_gradient_descent():
    """A Flax NNX CNN (through `from_flax`) as LGD's per-iteration block: stacked, scanned, trainable."""
    import optax
    from flax import nnx

    from jaxrecon.nets import from_flax

    class Block(nnx.Module):
        def __init__(self, rngs):
            self.c1 = nnx.Conv(2 + 2, 4, (3, 3), rngs=rngs, param_dtype=jnp.float64)
            self.c2 = nnx.Conv(4, 1 + 2, (3, 3), rngs=rngs, param_dtype=jnp.float64)

        def __call__(self, x):
            return self.c2(nnx.relu(self.c1(x)))

    make = lambda k: from_flax(Block(nnx.Rngs(params=k)))
    model = _small(LearnedGradientDescent, num_memory=2, block=make)
    # the scan over stacked Flax weights equals a Python loop over the three Flax networks
    scale = 1 / float(operator_norm(OP, key=jax.random.key(0), num_iter=100))
    nets = [make(k) for k in jax.random.split(KEY, 3)]
    x, s = fbp(Y, OP.geom, "hann"), jnp.zeros((2, N, N))
    for net in nets:
        u = net(jnp.concatenate([x[None], (OP.T(OP(x) - Y) * scale**2)[None], s]))
        x, s = x + u[0], jnp.maximum(u[1:], 0)
    np.testing.assert_allclose(_call(model, Y, OP), x, rtol=1e-9, atol=1e-12)
    # one Adam step on the Flax weights lowers the loss
    loss = eqx.filter_jit(lambda m: jnp.mean((m(Y, OP) - X) ** 2))
    opt = optax.adam(1e-3)
    state = opt.init(eqx.filter(model, eqx.is_inexact_array))
    grads = eqx.filter_jit(eqx.filter_grad(loss))(model)
    updates, _ = opt.update(grads, state, eqx.filter(model, eqx.is_inexact_array))
    assert float(loss(eqx.apply_updates(model, updates))) < float(loss(model))
