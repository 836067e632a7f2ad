"""MatrixOperator vs numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrecon.operators.linear_operator import dot_test
from jaxrecon.operators.matrix import MatrixOperator


@pytest.mark.parametrize("complex_", [False, True])
def test_matches_numpy(complex_):
    rng = np.random.default_rng(0)
    M = rng.standard_normal((5, 3)) + (1j * rng.standard_normal((5, 3)) if complex_ else 0)
    x = rng.standard_normal(3) + (1j * rng.standard_normal(3) if complex_ else 0)
    y = rng.standard_normal(5) + 1j * rng.standard_normal(5)
    op = MatrixOperator(jnp.asarray(M))
    assert op.in_shape == (3,) and op.out_shape == (5,) and op.in_complex == complex_
    np.testing.assert_allclose(np.asarray(op(jnp.asarray(x))), M @ x, rtol=1e-13)
    np.testing.assert_allclose(np.asarray(op.T(jnp.asarray(y))), M.conj().T @ y, rtol=1e-13)
    assert float(dot_test(op, jax.random.PRNGKey(1))) < 1e-10
    op32 = MatrixOperator(jnp.asarray(M, jnp.complex64 if complex_ else jnp.float32))
    assert float(dot_test(op32, jax.random.PRNGKey(1), dtype=jnp.float32)) < 1e-4
    assert op32(jnp.ones(3, jnp.float32)).dtype == (jnp.complex64 if complex_ else jnp.float32)


def test_integer_matrix_and_vmap():
    op = MatrixOperator(np.arange(6).reshape(2, 3))
    assert op.matrix.dtype == jnp.float32
    ms = jnp.asarray(np.random.default_rng(1).standard_normal((4, 2, 3)))
    xs = jnp.asarray(np.random.default_rng(2).standard_normal((4, 3)))
    out = jax.vmap(lambda m, x: MatrixOperator(m)(x))(ms, xs)
    np.testing.assert_allclose(out, jnp.stack([MatrixOperator(m)(x) for m, x in zip(ms, xs)]), rtol=1e-13)


def test_errors():
    with pytest.raises(ValueError, match=r"2D \(m, n\) matrix, got shape \(3,\)"):
        MatrixOperator(jnp.ones(3))
    with pytest.raises(TypeError, match=r"\(m, n\) array, got list"):
        MatrixOperator([[1.0]])
    with pytest.raises(ValueError, match=r"expects an input of shape \(3,\), got \(2,\)"):
        MatrixOperator(jnp.ones((2, 3)))(jnp.ones(2))
