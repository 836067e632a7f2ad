"""ADMM and linearised ADMM against independent references: the PDHG-TV solution (`tv_pdhg`),
soft thresholding and wavelet shrinkage (A = I, closed form), the LASSO solved through its dual by
SciPy's bounded least squares, and generalised Tikhonov by a dense NumPy solve."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.optimize

from jaxrecon.operators import (
    IdentityOperator,
    MatrixOperator,
    ParallelBeamGeometry,
    RadonTransform,
    SubsampledFourier,
    cartesian_mask,
)
from _image_matrix import ImageMatrix
from jaxrecon.phantoms import shepp_logan
from jaxrecon.solvers import (
    FiniteDifference,
    WaveletTransform,
    admm,
    as_matrix,
    linearised_admm,
    prox_l2_squared,
    soft_threshold,
    total_variation,
    tv_pdhg,
)

F64 = jnp.float64
N = 16
X = shepp_logan(N, dtype=F64)
# The 16 x 16, 12-view Radon transform as a dense matrix: the same operator, compiled in a fraction
# of the time of the projector inside the solvers' loops.
OP = ImageMatrix(as_matrix(RadonTransform(ParallelBeamGeometry.uniform((N, N), 12)), dtype=F64), (N, N))
Y = OP(X) + 0.05 * jax.random.normal(jax.random.PRNGKey(1), OP.out_shape, F64)
ALPHA = 0.5


def _rel(a, b):
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


@pytest.mark.parametrize("isotropic", [pytest.param(True, marks=pytest.mark.slow), False])
def test_admm_tv_reaches_the_pdhg_solution(isotropic):
    """Same TV (isotropic/anisotropic, forward differences, Neumann boundary) as tv_pdhg: the same minimiser."""

    @jax.jit
    def run(y):
        ref = tv_pdhg(OP, y, ALPHA, isotropic=isotropic, max_iter=50_000, tol=1e-13)
        a = admm(OP, y, ALPHA, isotropic=isotropic, max_iter=5000, cg_iter=10, tol=1e-10, history=True)
        b = linearised_admm(OP, y, ALPHA, isotropic=isotropic, max_iter=50_000, tol=1e-10)
        return ref, a, b

    ref, a, b = run(Y)
    assert bool(ref.converged)
    for sol, max_iter in ((a, 5000), (b, 50_000)):
        assert bool(sol.converged) and not bool(sol.nonfinite) and 0 < int(sol.iterations) < max_iter
        assert _rel(sol.x, ref.x) <= 1e-6  # measured 1.3e-10 to 5.6e-10
        np.testing.assert_allclose(sol.residual_norm, jnp.linalg.norm(OP(sol.x) - Y), rtol=1e-12)
    # the recorded objective is the TV objective, and it ends at tv_pdhg's optimum
    obj = a.history["objective"]
    assert obj.shape == (5000,) and np.all(np.asarray(obj[int(a.iterations):]) == np.asarray(obj[-1]))
    expected = 0.5 * jnp.sum((OP(ref.x) - Y) ** 2) + ALPHA * total_variation(ref.x, isotropic=isotropic)
    np.testing.assert_allclose(obj[-1], expected, rtol=1e-9)


def test_complex_data_subsampled_fourier_reaches_the_pdhg_solution():
    op = SubsampledFourier(cartesian_mask(jax.random.key(2), (N, N), 2))

    @jax.jit
    def run(y):
        return (
            tv_pdhg(op, y, 0.05, max_iter=50_000, tol=1e-13),
            admm(op, y, 0.05, max_iter=3000, tol=1e-10),
            linearised_admm(op, y, 0.05, max_iter=20_000, tol=1e-10),
        )

    ref, a, b = run(op(X))
    for sol in (a, b):
        assert bool(sol.converged) and sol.x.dtype == F64
        assert _rel(sol.x, ref.x) <= 1e-6  # measured 1.8e-10 and 3.5e-10


@pytest.mark.slow
def test_identity_operator_gives_soft_thresholding_and_wavelet_shrinkage():
    """A = I: the l1 minimiser is S_alpha(y); with K = W orthonormal, W^T S_alpha(W y) (closed forms)."""
    eye = IdentityOperator((N, N))
    y = X + 0.1 * jax.random.normal(jax.random.PRNGKey(2), (N, N), F64)
    W = WaveletTransform((N, N), "db2", 2)

    @jax.jit
    def run(y):
        return (
            admm(eye, y, 0.1, penalty="l1", rho=1.0, max_iter=500, cg_iter=1, tol=1e-12),
            linearised_admm(eye, y, 0.1, penalty="l1", rho=1.0, max_iter=2000, tol=1e-12),
            admm(eye, y, 0.1, penalty="l1", wavelet="db2", levels=2, rho=1.0, max_iter=500, cg_iter=1, tol=1e-12),
            linearised_admm(eye, y, 0.1, penalty="l1", wavelet="db2", levels=2, rho=1.0, max_iter=2000, tol=1e-12),
        )

    for sol, exact in zip(run(y), [soft_threshold(y, 0.1)] * 2 + [W.rmv(soft_threshold(W.mv(y), 0.1))] * 2):
        assert bool(sol.converged)
        np.testing.assert_allclose(sol.x, exact, atol=1e-10)


def test_lasso_matches_scipy_dual_solution():
    """min 1/2||Ax - y||^2 + alpha ||x||_1 for an injective dense A: the dual over the box |q| <= alpha
    (H = A^T A = L L^T), min ||L^{-1}(A^T y - q)||^2, solved by SciPy's bounded least squares."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((40, 20)) / 5
    x_true = np.zeros(20)
    x_true[[2, 7, 11]] = [1.0, -2.0, 0.5]
    y = a @ x_true + 0.05 * rng.standard_normal(40)
    alpha = 0.3
    chol = np.linalg.cholesky(a.T @ a)
    m = scipy.linalg.solve_triangular(chol, np.eye(20), lower=True)
    b = scipy.linalg.solve_triangular(chol, a.T @ y, lower=True)
    q = scipy.optimize.lsq_linear(-m, -b, bounds=(-alpha, alpha), method="bvls", tol=1e-15).x
    exact = np.linalg.solve(a.T @ a, a.T @ y - q)
    assert np.sum(np.abs(exact) > 1e-8) < 20  # the penalty is active: a sparse solution

    op = MatrixOperator(jnp.asarray(a))
    run = jax.jit(lambda y: (admm(op, y, alpha, penalty="l1", max_iter=3000, cg_iter=20, tol=1e-11, history=True),
                             linearised_admm(op, y, alpha, penalty="l1", max_iter=50_000, tol=1e-11)))  # fmt: skip
    for sol in run(jnp.asarray(y)):
        assert bool(sol.converged)
        np.testing.assert_allclose(sol.x, exact, atol=1e-7)
    objective = 0.5 * np.sum((a @ exact - y) ** 2) + alpha * np.sum(np.abs(exact))
    np.testing.assert_allclose(run(jnp.asarray(y))[0].history["objective"][-1], objective, rtol=1e-10)


def test_any_prox_with_a_transform_is_generalised_tikhonov():
    """penalty = prox of t/2||.||^2, K = D: min 1/2||Ax - y||^2 + alpha/2 ||Dx||^2, a dense NumPy solve."""
    alpha = 2.0
    D = FiniteDifference((N, N))
    a, d = np.asarray(as_matrix(OP, dtype=F64)), np.asarray(as_matrix(D, dtype=F64))
    exact = np.linalg.solve(a.T @ a + alpha * d.T @ d, a.T @ np.asarray(Y).ravel()).reshape(N, N)
    run = jax.jit(lambda y: (
        admm(OP, y, alpha, penalty=prox_l2_squared, transform=D, rho=1.0, max_iter=2000, cg_iter=10, tol=1e-12),
        linearised_admm(OP, y, alpha, penalty=prox_l2_squared, transform=D, rho=1.0, max_iter=50_000, tol=1e-12),
    ))  # fmt: skip
    for sol in run(Y):
        assert bool(sol.converged) and not bool(sol.nonfinite)
        assert _rel(sol.x, jnp.asarray(exact)) <= 1e-8


def test_result_codes_and_nonfinite_guard():
    eye = IdentityOperator((N, N))

    def blow_up(v, t):  # not a prox: expansive; linearised ADMM overflows to inf after ~20 steps
        return 1e10 * v

    def nan(v, t):
        return v * jnp.nan

    @jax.jit
    def run(x):
        return (
            admm(OP, OP(x), ALPHA, max_iter=7),  # fixed iterations: never "converged"
            linearised_admm(eye, x, 0.1, penalty=blow_up, rho=1.0, max_iter=100),  # lax.scan
            linearised_admm(eye, x, 0.1, penalty=blow_up, rho=1.0, max_iter=100, tol=1e-8),  # lax.while_loop
            admm(eye, x, 0.1, penalty=nan, rho=1.0, max_iter=100, cg_iter=1, tol=1e-8, x0=x),
        )

    fixed, scan, loop, first = run(X)
    assert int(fixed.iterations) == 7 and not bool(fixed.converged) and not bool(fixed.nonfinite)
    for sol in (scan, loop, first):
        assert bool(sol.nonfinite) and not bool(sol.converged)
        assert bool(jnp.all(jnp.isfinite(sol.x))) and bool(jnp.isfinite(sol.residual_norm))
    assert 5 < int(scan.iterations) == int(loop.iterations) < 100  # both stop counting at the same step
    np.testing.assert_array_equal(scan.x, loop.x)
    assert int(first.iterations) == 0 and bool(jnp.all(first.x == X))  # the last finite iterate: x0


def test_vmap_over_data_and_alpha_equals_stacking():
    ys = jnp.stack([Y, 1.5 * Y, Y + 0.1])
    alphas = jnp.array([0.2, 0.5, 1.0])
    one = jax.jit(lambda y, a: admm(OP, y, a, rho=2.0, max_iter=30).x)
    many = jax.jit(jax.vmap(lambda y, a: admm(OP, y, a, rho=2.0, max_iter=30).x))(ys, alphas)
    stacked = jnp.stack([one(y, a) for y, a in zip(ys, alphas)])
    np.testing.assert_allclose(many, stacked, rtol=1e-10, atol=1e-12)


def test_bad_input_names_expected_and_given():
    with pytest.raises(TypeError, match="op to be a LinearOperator, got ndarray"):
        admm(np.eye(3), jnp.zeros(3), 1.0)
    with pytest.raises(ValueError, match=r"expects data of shape \(276,\), got \(3,\)"):
        admm(OP, jnp.zeros(3), 1.0)
    with pytest.raises(ValueError, match=r"penalty to be one of \('tv', 'l1'\) or a prox callable, got 'l2'"):
        admm(OP, Y, 1.0, penalty="l2")
    with pytest.raises(ValueError, match="cg_iter must be a positive int, got 0"):
        admm(OP, Y, 1.0, cg_iter=0)
    with pytest.raises(ValueError, match="rho must be finite and non-negative, got -1"):
        linearised_admm(OP, Y, 1.0, rho=-1.0)
    with pytest.raises(ValueError, match="penalty='tv' fixes K"):
        admm(OP, Y, 1.0, transform=FiniteDifference((N, N)))
    with pytest.raises(ValueError, match="wavelet/levels only apply to penalty='l1'"):
        admm(OP, Y, 1.0, wavelet="haar")
    with pytest.raises(ValueError, match=r"return the shape of Kx, \(16, 16\), got \(16,\)"):
        admm(OP, Y, 1.0, penalty=lambda v, t: v[0])
    with pytest.raises(ValueError, match="alpha must be a scalar"):
        admm(OP, Y, jnp.ones(2))
