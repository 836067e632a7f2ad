"""The LinearOperator algebra, operator_norm and dot_test, checked against dense numpy matrices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrecon.operators.linear_operator import IdentityOperator, LinearOperator, dot_test, operator_norm
from jaxrecon.operators.matrix import MatrixOperator


def _dense(op):
    """Assemble the matrix of `op` (on flattened inputs) column by column."""
    n = int(np.prod(op.in_shape))
    dtype = jnp.complex128 if op.in_complex else jnp.float64
    cols = jax.vmap(op.mv)(jnp.eye(n, dtype=dtype).reshape((n, *op.in_shape)))
    return np.asarray(cols.reshape(n, -1).T)


def _rand(rng, shape, complex_=False):
    a = rng.standard_normal(shape)
    return a + 1j * rng.standard_normal(shape) if complex_ else a


@pytest.fixture
def mats():
    rng = np.random.default_rng(0)
    return rng.standard_normal((4, 3)), rng.standard_normal((3, 5)), rng.standard_normal((4, 3))


def test_algebra_matches_dense(mats):
    A, B, C = mats
    opA, opB, opC = (MatrixOperator(jnp.asarray(m)) for m in mats)
    cases = {
        "compose": (opA @ opB, A @ B),
        "scale": (2.5 * opA, 2.5 * A),
        "rscale": (opA * -3.0, -3.0 * A),
        "div": (opA / 4.0, A / 4.0),
        "neg": (-opA, -A),
        "sum": (opA + opC, A + C),
        "diff": (opA - opC, A - C),
        "adjoint": (opA.T, A.T),
        "combo": ((opA + 2.0 * opC) @ opB - opA @ opB, (A + 2 * C) @ B - A @ B),
        "adjoint of composition": ((opA @ opB).T, (A @ B).T),
        "identity": (IdentityOperator((4,)) @ opA, A),
    }
    for name, (op, dense) in cases.items():
        assert op.in_shape == (dense.shape[1],) and op.out_shape == (dense.shape[0],), name
        np.testing.assert_allclose(_dense(op), dense, atol=1e-13, err_msg=name)
        np.testing.assert_allclose(_dense(op.T), dense.T, atol=1e-13, err_msg=name)
        assert float(dot_test(op, jax.random.PRNGKey(1))) < 1e-12, name


def test_adjoint_of_adjoint_is_the_operator(mats):
    opA = MatrixOperator(jnp.asarray(mats[0]))
    assert opA.T.T is opA
    x = jnp.ones(3)
    np.testing.assert_allclose(opA.T.T(x), opA(x))


def test_complex_algebra():
    rng = np.random.default_rng(1)
    A, B = _rand(rng, (3, 4), True), _rand(rng, (4, 2), True)
    opA, opB = MatrixOperator(jnp.asarray(A)), MatrixOperator(jnp.asarray(B))
    op = 0.5 * (opA @ opB) + opA @ opB
    assert op.in_complex and op.T.in_complex
    np.testing.assert_allclose(_dense(op), 1.5 * A @ B, atol=1e-13)
    np.testing.assert_allclose(_dense(op.T), 1.5 * (A @ B).conj().T, atol=1e-13)
    assert float(dot_test(op, jax.random.PRNGKey(2))) < 1e-12


def test_operators_are_jittable_pytrees(mats):
    opA, opB = MatrixOperator(jnp.asarray(mats[0])), MatrixOperator(jnp.asarray(mats[1]))
    op = 2.0 * opA @ opB
    x = jnp.asarray(np.random.default_rng(3).standard_normal(5))
    np.testing.assert_allclose(jax.jit(lambda op, x: op(x))(op, x), op(x), rtol=1e-13)
    # gradient w.r.t. the scalar leaf of a scaled operator
    g = jax.grad(lambda op: jnp.sum(op(x))).__call__(op)
    assert isinstance(g, LinearOperator)


def test_float32_stays_float32(mats):
    opA = MatrixOperator(jnp.asarray(mats[0], jnp.float32))
    x = jnp.ones(3, jnp.float32)
    for op in (opA, 2.0 * opA, -opA, opA / 3, opA + opA, opA - opA, IdentityOperator((4,)) @ opA):
        assert op(x).dtype == jnp.float32
        assert op.T(jnp.ones(4, jnp.float32)).dtype == jnp.float32


@pytest.mark.parametrize("complex_", [False, True])
def test_operator_norm_vs_numpy(complex_):
    rng = np.random.default_rng(4)
    M = _rand(rng, (6, 4), complex_)
    op = MatrixOperator(jnp.asarray(M))
    est = float(operator_norm(op, jax.random.PRNGKey(0), num_iter=200))
    assert est == pytest.approx(np.linalg.norm(M, 2), rel=1e-6)
    assert float(operator_norm(op.T, num_iter=200)) == pytest.approx(np.linalg.norm(M, 2), rel=1e-6)
    # composition and scaling
    assert float(operator_norm(3.0 * op, num_iter=200)) == pytest.approx(3 * np.linalg.norm(M, 2), rel=1e-6)
    assert float(operator_norm(MatrixOperator(jnp.diag(jnp.array([3.0, 1.0]))))) == pytest.approx(3.0, rel=1e-6)
    with pytest.raises(ValueError, match=r"num_iter must be a positive int, got 0"):
        operator_norm(op, num_iter=0)


@pytest.mark.parametrize("complex_", [False, True])
def test_dot_test_detects_wrong_adjoint(complex_):
    rng = np.random.default_rng(5)
    M = _rand(rng, (5, 4), complex_)
    op = MatrixOperator(jnp.asarray(M))
    assert float(dot_test(op, jax.random.PRNGKey(0))) < 1e-12
    assert float(dot_test(op, jax.random.PRNGKey(0), dtype=jnp.float32)) < 1e-4

    class WrongAdjoint(MatrixOperator):
        def rmv(self, y):  # transpose without conjugation / scaled: not the adjoint
            return (self.matrix.T @ y) * (1.0 if complex_ else 1.1)

    assert float(dot_test(WrongAdjoint(jnp.asarray(M)), jax.random.PRNGKey(0))) > 1e-3


def test_shape_errors(mats):
    opA, opB = MatrixOperator(jnp.asarray(mats[0])), MatrixOperator(jnp.asarray(mats[1]))
    with pytest.raises(ValueError, match=r"cannot compose MatrixOperator \(input \(3,\)\).*\(output \(4,\)\)"):
        opA @ opA
    with pytest.raises(ValueError, match=r"cannot add operators of shapes \(3,\)->\(4,\) and \(5,\)->\(3,\)"):
        opA + opB
    with pytest.raises(ValueError, match=r"scaled by a scalar, got shape \(2,\)"):
        jnp.ones(2) * opA if False else opA * jnp.ones(2)
    with pytest.raises(ValueError, match=r"expects an input of shape \(3,\), got \(4,\)"):
        opA(jnp.ones(4))
    with pytest.raises(ValueError, match=r"AdjointOperator expects an input of shape \(4,\), got \(3,\)"):
        opA.T(jnp.ones(3))
    with pytest.raises(TypeError, match=r"expects an array input of shape \(3,\), got list"):
        opA([1.0, 2.0, 3.0])
    with pytest.raises(TypeError):
        opA @ jnp.ones(3)  # operators compose with operators; apply with op(x)
