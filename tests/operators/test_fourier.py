"""SubsampledFourier vs numpy.fft.fft2(norm="ortho"), exact adjoints, masks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrecon.operators.fourier import SubsampledFourier, cartesian_mask, radial_mask
from jaxrecon.operators.linear_operator import dot_test


def _mask(shape, seed=0):
    return np.random.default_rng(seed).random(shape) < 0.4


@pytest.mark.parametrize("shape", [(8, 8), (7, 10)])
def test_matches_numpy_fft(shape):
    rng = np.random.default_rng(0)
    m, x = _mask(shape), rng.standard_normal(shape)
    op = SubsampledFourier(jnp.asarray(m))
    y = op(jnp.asarray(x))
    assert y.shape == shape and y.dtype == jnp.complex128
    np.testing.assert_allclose(np.asarray(y), m * np.fft.fft2(x, norm="ortho"), atol=1e-12)
    # adjoint: real part of the orthonormal inverse FFT of the masked data
    yk = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    np.testing.assert_allclose(np.asarray(op.T(jnp.asarray(yk))), np.real(np.fft.ifft2(m * yk, norm="ortho")), atol=1e-12)
    opc = SubsampledFourier(jnp.asarray(m), real_input=False)
    np.testing.assert_allclose(np.asarray(opc.T(jnp.asarray(yk))), np.fft.ifft2(m * yk, norm="ortho"), atol=1e-12)


@pytest.mark.parametrize("real_input", [True, False])
def test_dot_test(real_input):
    m = jnp.asarray(_mask((9, 8), 1))
    op = SubsampledFourier(m, real_input=real_input)
    assert op.in_complex == (not real_input)
    assert float(dot_test(op, jax.random.PRNGKey(0))) < 1e-10
    assert float(dot_test(op, jax.random.PRNGKey(0), dtype=jnp.float32)) < 1e-4
    # real weights (not only 0/1) keep the adjoint exact
    opw = SubsampledFourier(jnp.asarray(np.random.default_rng(2).random((9, 8))), real_input=real_input)
    assert float(dot_test(opw, jax.random.PRNGKey(3))) < 1e-10
    # assembled matrix: A^* = A^H (on the real subspace, Re A^H)
    n = 72
    eye = jnp.eye(n, dtype=jnp.float64 if real_input else jnp.complex128).reshape(n, 9, 8)
    A = np.asarray(jax.vmap(op.mv)(eye).reshape(n, n).T)
    At = np.asarray(jax.vmap(op.rmv)(jnp.eye(n, dtype=jnp.complex128).reshape(n, 9, 8)).reshape(n, n).T)
    expected = np.real(A.conj().T) if real_input else A.conj().T
    np.testing.assert_allclose(At, expected, atol=1e-12)


def test_float32_and_full_mask_is_unitary():
    x = jnp.asarray(np.random.default_rng(3).standard_normal((6, 6)), jnp.float32)
    op = SubsampledFourier(jnp.ones((6, 6), bool))
    y = op(x)
    assert y.dtype == jnp.complex64 and op.mask.dtype == jnp.float32
    assert op.T(y).dtype == jnp.float32
    np.testing.assert_allclose(op.T(y), x, atol=1e-5)
    assert float(jnp.linalg.norm(y)) == pytest.approx(float(jnp.linalg.norm(x)), rel=1e-5)


def test_vmap_over_images_and_masks():
    rng = np.random.default_rng(4)
    xs = jnp.asarray(rng.standard_normal((3, 8, 8)))
    masks = jnp.asarray(rng.random((3, 8, 8)) < 0.5)
    ops = jax.vmap(SubsampledFourier)(masks)
    out = jax.jit(jax.vmap(lambda op, x: op.T(op(x))))(ops, xs)
    stacked = jnp.stack([SubsampledFourier(m).T(SubsampledFourier(m)(x)) for m, x in zip(masks, xs)])
    np.testing.assert_allclose(out, stacked, atol=1e-12)


def test_cartesian_mask():
    key = jax.random.PRNGKey(0)
    m = cartesian_mask(key, (16, 32), acceleration=4, center_fraction=0.125)
    assert m.shape == (16, 32) and m.dtype == jnp.float32
    assert bool(jnp.all(m == m[0]))  # full columns
    assert int(m[0].sum()) == 8
    # the 4 lowest frequencies (0, 1, -1, 2 in FFT layout) are always sampled
    assert bool(jnp.all(m[0, jnp.array([0, 1, 31, 2])] == 1))
    ms = jax.vmap(lambda k: cartesian_mask(k, (16, 32), 4, 0.125))(jax.random.split(key, 5))
    assert ms.shape == (5, 16, 32) and bool(jnp.all(ms[:, 0].sum(-1) == 8))
    assert not bool(jnp.all(ms[0] == ms[1]))
    with pytest.raises(ValueError, match=r"acceleration >= 1, got 0.5"):
        cartesian_mask(key, (8, 8), 0.5)


def test_radial_mask():
    m = radial_mask((32, 32), 8)
    assert m.shape == (32, 32) and float(m[0, 0]) == 1.0
    c = np.fft.fftshift(np.asarray(m))
    np.testing.assert_array_equal(c[16, :], 1)  # horizontal line through the centre
    np.testing.assert_array_equal(c[:, 16], 1)  # vertical line
    assert 0.1 < float(m.mean()) < 0.6


def test_errors():
    with pytest.raises(ValueError, match=r"2D mask of shape \(H, W\), got shape \(4,\)"):
        SubsampledFourier(jnp.ones(4))
    with pytest.raises(TypeError, match=r"boolean or real mask, got dtype complex"):
        SubsampledFourier(jnp.ones((4, 4), jnp.complex64))
    with pytest.raises(TypeError, match=r"array mask, got list"):
        SubsampledFourier([[1, 0]])
    with pytest.raises(ValueError, match="finite mask"):
        SubsampledFourier(jnp.full((4, 4), jnp.nan))
    with pytest.raises(ValueError, match=r"expects an input of shape \(4, 4\), got \(4, 5\)"):
        SubsampledFourier(jnp.ones((4, 4)))(jnp.zeros((4, 5)))
