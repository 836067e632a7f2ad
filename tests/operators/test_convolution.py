"""circular_convolve vs the direct O(N^2) circular sum and scipy.ndimage.convolve(mode="wrap")."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage as ndi

from jaxrecon.operators.convolution import (
    CircularConvolution,
    circular_convolve,
    circular_correlate,
    gaussian_kernel,
)
from jaxrecon.operators.linear_operator import dot_test


def direct_circular_sum(f, g):
    """(f*g)_j = sum_i f_i g_{(j-i) mod N}, kernel g zero-padded to f's shape, origin at index 0."""
    N = f.shape
    gp = np.zeros(N, dtype=np.result_type(g, float))
    gp[tuple(slice(0, k) for k in g.shape)] = g
    out = np.zeros(N, dtype=np.result_type(f, gp))
    for j in itertools.product(*map(range, N)):
        for i in itertools.product(*map(range, N)):
            out[j] += f[i] * gp[tuple((jj - ii) % n for jj, ii, n in zip(j, i, N))]
    return out


def _rand(rng, shape, complex_=False):
    a = rng.standard_normal(shape)
    return a + 1j * rng.standard_normal(shape) if complex_ else a


CASES = [  # (signal shape, kernel shape, x complex, kernel complex)
    ((7,), (3,), False, False),
    ((8,), (8,), False, False),
    ((6, 5), (3, 2), False, False),
    ((4, 6), (4, 1), False, False),
    ((3, 4, 5), (2, 3, 5), False, False),
    ((5, 4), (2, 3), True, False),
    ((6,), (4,), False, True),
    ((3, 4, 3), (2, 2, 2), True, True),
]


@pytest.mark.parametrize("xs,ks,xc,kc", CASES)
def test_matches_direct_circular_sum(xs, ks, xc, kc):
    rng = np.random.default_rng(0)
    f, g = _rand(rng, xs, xc), _rand(rng, ks, kc)
    out = circular_convolve(jnp.asarray(f), jnp.asarray(g))
    assert out.shape == xs
    assert jnp.iscomplexobj(out) == (xc or kc)
    np.testing.assert_allclose(np.asarray(out), direct_circular_sum(f, g), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "xs,ks", [((9,), (3,)), ((8,), (4,)), ((10, 9), (5, 5)), ((8, 7), (4, 3)), ((6,), (6,)), ((5, 6, 7), (3, 2, 4))]
)
def test_centred_matches_scipy_wrap(xs, ks):
    rng = np.random.default_rng(1)
    f, g = rng.standard_normal(xs), rng.standard_normal(ks)
    out = circular_convolve(jnp.asarray(f), jnp.asarray(g), centred=True)
    np.testing.assert_allclose(np.asarray(out), ndi.convolve(f, g, mode="wrap"), rtol=1e-12, atol=1e-12)


def test_float32_in_float32_out():
    rng = np.random.default_rng(2)
    f, g = rng.standard_normal((12, 10)).astype(np.float32), rng.standard_normal((3, 3)).astype(np.float32)
    out = circular_convolve(jnp.asarray(f), jnp.asarray(g), centred=True)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out), ndi.convolve(f.astype(float), g.astype(float), mode="wrap"), atol=1e-5)
    assert circular_convolve(jnp.asarray(f, jnp.complex64), jnp.asarray(g)).dtype == jnp.complex64


def test_correlate_is_adjoint_and_shift_example():
    x = jnp.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_array_equal(circular_convolve(x, jnp.array([0.0, 1.0])), [4.0, 1.0, 2.0, 3.0])
    np.testing.assert_array_equal(circular_correlate(x, jnp.array([0.0, 1.0])), [2.0, 3.0, 4.0, 1.0])


@pytest.mark.parametrize("centred", [True, False])
@pytest.mark.parametrize("kc", [False, True])
def test_operator_dot_test(centred, kc):
    rng = np.random.default_rng(3)
    k = _rand(rng, (4, 3), kc)
    op = CircularConvolution(jnp.asarray(k), (9, 8), centred=centred)
    assert op.in_complex == kc
    assert float(dot_test(op, jax.random.PRNGKey(1))) < 1e-10
    op32 = CircularConvolution(jnp.asarray(k, jnp.complex64 if kc else jnp.float32), (9, 8), centred=centred)
    assert float(dot_test(op32, jax.random.PRNGKey(1), dtype=jnp.float32)) < 1e-4
    # matrix check: the adjoint is the conjugate transpose of the assembled operator
    n = 9 * 8
    eye = jnp.eye(n, dtype=jnp.complex128 if kc else jnp.float64).reshape(n, 9, 8)
    A = jax.vmap(op.mv)(eye).reshape(n, n).T
    At = jax.vmap(op.rmv)(eye).reshape(n, n).T
    np.testing.assert_allclose(np.asarray(At), np.asarray(A).conj().T, atol=1e-12)


def test_operator_matches_function_and_scipy():
    rng = np.random.default_rng(4)
    k, x = gaussian_kernel(5, 1.0, dtype=jnp.float64), rng.standard_normal((16, 12))
    op = CircularConvolution(k, (16, 12))
    np.testing.assert_allclose(np.asarray(op(jnp.asarray(x))), ndi.convolve(x, np.asarray(k), mode="wrap"), atol=1e-12)
    # symmetric kernel, centred: the blur is self-adjoint
    np.testing.assert_allclose(np.asarray(op.T(jnp.asarray(x))), np.asarray(op(jnp.asarray(x))), atol=1e-12)


def test_vmap_equals_stacked_and_kernel_is_leaf():
    rng = np.random.default_rng(5)
    xs, ks = jnp.asarray(rng.standard_normal((3, 10, 10))), jnp.asarray(rng.standard_normal((3, 3, 3)))
    batched = jax.jit(jax.vmap(lambda x, k: circular_convolve(x, k, centred=True)))(xs, ks)
    np.testing.assert_allclose(batched, jnp.stack([circular_convolve(x, k, centred=True) for x, k in zip(xs, ks)]), atol=1e-12)
    # vmap over operators (batched kernel leaves)
    ops = jax.vmap(lambda k: CircularConvolution(k, (10, 10)))(ks)
    out = jax.vmap(lambda op, x: op.T(x))(ops, xs)
    np.testing.assert_allclose(out, jnp.stack([CircularConvolution(k, (10, 10)).T(x) for k, x in zip(ks, xs)]), atol=1e-12)


def test_gradient_wrt_kernel():
    rng = np.random.default_rng(6)
    x, y = jnp.asarray(rng.standard_normal((8, 8))), jnp.asarray(rng.standard_normal((8, 8)))
    k = jnp.asarray(rng.standard_normal((3, 3)))
    loss = lambda k: jnp.sum((CircularConvolution(k, (8, 8))(x) - y) ** 2)  # noqa: E731
    g = jax.grad(loss)(k)
    e = jnp.zeros((3, 3)).at[1, 2].set(1.0)
    fd = (loss(k + 1e-6 * e) - loss(k - 1e-6 * e)) / 2e-6
    assert float(g[1, 2]) == pytest.approx(float(fd), rel=1e-6)


def test_gaussian_kernel():
    k = gaussian_kernel(7, 1.5)
    assert k.shape == (7, 7) and k.dtype == jnp.float32
    assert float(k.sum()) == pytest.approx(1.0, abs=1e-6)
    assert int(jnp.argmax(k)) == 3 * 7 + 3
    np.testing.assert_allclose(k, k.T)
    assert gaussian_kernel((3, 5, 4), 1.0).shape == (3, 5, 4)
    # separable 1D profile = normalised exp(-t^2/2 sigma^2)
    t = np.arange(5) - 2.0
    np.testing.assert_allclose(gaussian_kernel(5, 1.2, ndim=1), np.exp(-(t**2) / 2.88) / np.exp(-(t**2) / 2.88).sum(), rtol=1e-6)


def test_errors():
    with pytest.raises(ValueError, match=r"same number of dimensions.*\(8, 8\).*got kernel shape \(3,\)"):
        circular_convolve(jnp.zeros((8, 8)), jnp.ones(3))
    with pytest.raises(ValueError, match=r"no larger than the signal.*\(8, 4\).*got kernel shape \(3, 5\)"):
        circular_convolve(jnp.zeros((8, 4)), jnp.ones((3, 5)))
    with pytest.raises(TypeError, match=r"`x` to be an array, got list"):
        circular_convolve([1.0, 2.0], jnp.ones(1))
    with pytest.raises(ValueError, match=r"no larger than the signal.*\(4, 4\).*\(5, 5\)"):
        CircularConvolution(jnp.ones((5, 5)), (4, 4))
    op = CircularConvolution(jnp.ones((3, 3)), (8, 8))
    with pytest.raises(ValueError, match=r"expects an input of shape \(8, 8\), got \(8, 7\)"):
        op(jnp.zeros((8, 7)))
    with pytest.raises(ValueError, match=r"positive number sigma, got -1"):
        gaussian_kernel(5, -1.0)
