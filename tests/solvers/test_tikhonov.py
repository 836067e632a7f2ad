import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import nnls

from jaxrecon.operators import MatrixOperator, ParallelBeamGeometry, RadonTransform, SubsampledFourier
from jaxrecon.solvers.tikhonov import (
    SVD,
    as_matrix,
    cgls,
    decompose,
    nonnegative_tikhonov,
    svd_filter,
    tikhonov,
    tsvd,
)


def ill_conditioned(m=30, n=20, seed=0, smin=1e-6):
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((m, n)))
    v, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return u @ np.diag(np.logspace(0, np.log10(smin), n)) @ v.T


def well_conditioned(m=30, n=20, seed=0):
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((m, n)))
    v, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return u @ np.diag(np.linspace(1.0, 3.0, n)) @ v.T


@pytest.fixture(scope="module")
def radon16():
    geom = ParallelBeamGeometry.uniform((12, 12), 10, 17, dtype=jnp.float64)
    return RadonTransform(geom)


# ---------------------------------------------------------------- as_matrix


def test_as_matrix_of_radon_matches_the_operator_and_its_adjoint(radon16):
    op = radon16
    m = np.asarray(as_matrix(op))
    assert m.shape == (10 * 17, 144) and m.dtype == np.float64
    x = np.random.default_rng(0).standard_normal((12, 12))
    np.testing.assert_allclose(m @ x.ravel(), np.asarray(op(jnp.asarray(x))).ravel(), atol=1e-12)
    np.testing.assert_allclose(np.asarray(as_matrix(op.T)), m.T, atol=1e-12)
    a = jnp.asarray(ill_conditioned())
    assert as_matrix(MatrixOperator(a)) is a


def test_as_matrix_refuses_huge_matrices():
    op = RadonTransform(ParallelBeamGeometry.uniform((64, 64), 60))
    with pytest.raises(ValueError, match=r"5460 x 4096 matrix \(2.24e\+07 entries\), more than max_entries=1e\+07"):
        as_matrix(op, max_entries=10_000_000)
    with pytest.raises(TypeError, match="as_matrix expects a LinearOperator, got ndarray"):
        as_matrix(np.eye(3))


# ---------------------------------------------------------------- SVD filter methods


def test_tsvd_and_tikhonov_match_numpy_svd():
    a = ill_conditioned()
    y = np.random.default_rng(1).standard_normal(30)
    u, s, vt = np.linalg.svd(a, full_matrices=False)
    op, yj = MatrixOperator(jnp.asarray(a)), jnp.asarray(y)
    for rank in (0, 1, 7, 20):
        expected = vt[:rank].T @ ((u[:, :rank].T @ y) / s[:rank])
        np.testing.assert_allclose(tsvd(op, yj, rank), expected, rtol=1e-9, atol=1e-9)
    for alpha in (1e-8, 1e-3, 1.0):
        expected = vt.T @ (s / (s**2 + alpha) * (u.T @ y))
        np.testing.assert_allclose(tikhonov(op, yj, alpha), expected, rtol=1e-9, atol=1e-9)
        if alpha >= 1e-3:  # the normal equations are accurate enough to compare with here
            expected = np.linalg.solve(a.T @ a + alpha * np.eye(20), a.T @ y)
            np.testing.assert_allclose(tikhonov(op, yj, alpha), expected, rtol=1e-9, atol=1e-9)


def test_alpha_zero_is_the_minimum_norm_least_squares_solution():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((15, 6)) @ rng.standard_normal((6, 10))  # rank 6, underdetermined rows
    y = rng.standard_normal(15)
    expected = np.linalg.lstsq(a, y, rcond=None)[0]
    svd = decompose(MatrixOperator(jnp.asarray(a)))
    np.testing.assert_allclose(tikhonov(svd, jnp.asarray(y), 0.0), expected, atol=1e-12)
    np.testing.assert_allclose(tsvd(svd, jnp.asarray(y), 10), expected, atol=1e-12)  # rank beyond 6: cut off
    np.testing.assert_allclose(svd_filter(svd, jnp.asarray(y), jnp.ones(10)), expected, atol=1e-12)


def test_regularisation_path_by_vmap_reuses_one_decomposition():
    a = ill_conditioned()
    y = jax.random.normal(jax.random.PRNGKey(0), (30,))
    svd = decompose(MatrixOperator(jnp.asarray(a)))
    assert isinstance(svd, SVD) and svd.s.shape == (20,)
    alphas = jnp.logspace(-8, 0, 6)
    path = jax.jit(jax.vmap(lambda al: tikhonov(svd, y, al)))(alphas)
    for i, al in enumerate(alphas):
        np.testing.assert_allclose(path[i], tikhonov(MatrixOperator(jnp.asarray(a)), y, float(al)), atol=1e-10)
    ranks = jnp.arange(21)
    tpath = jax.jit(jax.vmap(lambda r: tsvd(svd, y, r)))(ranks)  # rank traced: a mask, not a slice
    for r in (0, 5, 20):
        np.testing.assert_allclose(tpath[r], tsvd(svd, y, r), atol=1e-10)
    # The discrepancy ||A x_alpha - y|| grows with alpha (a standard parameter-choice ingredient).
    res = np.linalg.norm(np.asarray(path) @ a.T - np.asarray(y), axis=1)
    assert np.all(np.diff(res) > 0)


def test_svd_filter_on_a_matrix_free_operator_and_real_domain_fourier(radon16):
    x = jnp.asarray(np.random.default_rng(3).random((12, 12)))
    y = radon16(x)
    m = np.asarray(as_matrix(radon16))
    expected = np.linalg.solve(m.T @ m + 0.1 * np.eye(144), m.T @ np.asarray(y).ravel()).reshape(12, 12)
    svd = decompose(radon16)
    np.testing.assert_allclose(tikhonov(svd, y, 0.1), expected, atol=1e-10)
    np.testing.assert_allclose(svd_filter(svd, y, svd.s**2 / (svd.s**2 + 0.1)), expected, atol=1e-10)
    # Real images, complex k-space: the real least-squares normal equations Re(M^H M) x = Re(M^H y).
    mask = np.random.default_rng(4).random((8, 8)) < 0.5
    op = SubsampledFourier(jnp.asarray(mask, jnp.float64))
    xr = jnp.asarray(np.random.default_rng(5).standard_normal((8, 8)))
    yk = op(xr) + 0.1 * jnp.asarray(np.random.default_rng(6).standard_normal((8, 8)), jnp.complex128)
    mm = np.asarray(as_matrix(op))
    assert np.iscomplexobj(mm) and mm.shape == (64, 64)
    expected = np.linalg.solve(np.real(mm.conj().T @ mm) + 0.05 * np.eye(64), np.real(mm.conj().T @ np.asarray(yk).ravel()))
    got = tikhonov(op, yk, 0.05)
    assert got.dtype == jnp.float64 and got.shape == (8, 8)
    np.testing.assert_allclose(got.ravel(), expected, atol=1e-10)


def test_complex_matrices():
    rng = np.random.default_rng(7)
    a = rng.standard_normal((12, 8)) + 1j * rng.standard_normal((12, 8))
    y = rng.standard_normal(12) + 1j * rng.standard_normal(12)
    op, yj = MatrixOperator(jnp.asarray(a)), jnp.asarray(y)
    expected = np.linalg.solve(a.conj().T @ a + 0.3 * np.eye(8), a.conj().T @ y)
    np.testing.assert_allclose(tikhonov(op, yj, 0.3), expected, atol=1e-12)
    sol = cgls(op, yj, alpha=0.3, max_iter=50, tol=1e-13)
    assert sol.x.dtype == jnp.complex128 and bool(sol.converged)
    np.testing.assert_allclose(sol.x, expected, atol=1e-11)
    np.testing.assert_allclose(tsvd(op, yj, 8), np.linalg.lstsq(a, y, rcond=None)[0], atol=1e-12)


def test_tikhonov_is_differentiable_in_alpha():
    a = jnp.asarray(ill_conditioned(smin=1e-2))
    y = jax.random.normal(jax.random.PRNGKey(0), (30,))
    svd = decompose(MatrixOperator(a))
    f = jax.jit(lambda al: jnp.sum(tikhonov(svd, y, al) ** 2))
    np.testing.assert_allclose(jax.grad(f)(0.01), (f(0.01 + 1e-7) - f(0.01 - 1e-7)) / 2e-7, rtol=1e-6)


def test_svd_methods_bad_input():
    op = MatrixOperator(jnp.ones((3, 2)))
    with pytest.raises(ValueError, match=r"tikhonov expects data of shape \(3,\), got \(2,\)"):
        tikhonov(op, jnp.ones(2), 1.0)
    with pytest.raises(ValueError, match="alpha must be finite and non-negative"):
        tikhonov(op, jnp.ones(3), -1.0)
    with pytest.raises(ValueError, match=r"tsvd expects 0 <= rank <= min\(m, n\) = 2, got 3"):
        tsvd(op, jnp.ones(3), 3)
    with pytest.raises(TypeError, match="tsvd expects an integer rank, got 1.5"):
        tsvd(op, jnp.ones(3), 1.5)
    with pytest.raises(ValueError, match=r"filter_factors of shape \(2,\), got \(3,\)"):
        svd_filter(op, jnp.ones(3), jnp.ones(3))
    with pytest.raises(TypeError, match="a LinearOperator or an SVD"):
        tikhonov(np.ones((3, 2)), jnp.ones(3), 1.0)


# ---------------------------------------------------------------- CGLS


def test_cgls_matches_lstsq_and_the_regularised_normal_equations():
    a = well_conditioned()
    y = np.random.default_rng(1).standard_normal(30)
    op = MatrixOperator(jnp.asarray(a))
    sol = cgls(op, jnp.asarray(y), max_iter=100, tol=1e-12)
    assert bool(sol.converged) and int(sol.iterations) <= 20  # at most n steps, up to rounding
    x_ls = np.linalg.lstsq(a, y, rcond=None)[0]
    np.testing.assert_allclose(sol.x, x_ls, atol=1e-10)
    np.testing.assert_allclose(sol.residual_norm, np.linalg.norm(a @ x_ls - y), rtol=1e-10)
    for alpha in (0.01, 3.0):
        sol = cgls(op, jnp.asarray(y), alpha=alpha, max_iter=100, tol=1e-12)
        assert bool(sol.converged)
        np.testing.assert_allclose(sol.x, np.linalg.solve(a.T @ a + alpha * np.eye(20), a.T @ y), atol=1e-10)


def test_cgls_is_matrix_free_tikhonov_on_the_radon_transform(radon16):
    x = jnp.asarray(np.random.default_rng(3).random((12, 12)))
    y = radon16(x)
    m = np.asarray(as_matrix(radon16))
    expected = np.linalg.solve(m.T @ m + 0.5 * np.eye(144), m.T @ np.asarray(y).ravel()).reshape(12, 12)
    sol = cgls(radon16, y, alpha=0.5, max_iter=200, tol=1e-10)
    assert bool(sol.converged), int(sol.iterations)
    np.testing.assert_allclose(sol.x, expected, atol=1e-8)


def test_cgls_history_is_monotone():
    # CG theory: ||x_k - x*|| and ||A x_k - y|| both decrease monotonically.
    a = ill_conditioned(smin=1e-3)
    y = np.random.default_rng(1).standard_normal(30)
    x_ls = np.linalg.lstsq(a, y, rcond=None)[0]
    sol = cgls(MatrixOperator(jnp.asarray(a)), jnp.asarray(y), max_iter=15, reference=jnp.asarray(x_ls), history=True)
    err, res = np.asarray(sol.history["error"]), np.asarray(sol.history["residual"])
    assert np.all(np.diff(err) < 0) and np.all(np.diff(res) <= 1e-12)
    np.testing.assert_allclose(sol.history["objective"], 0.5 * res**2)


def test_cgls_vmap_over_data_and_alpha_and_float32():
    op = MatrixOperator(jnp.asarray(well_conditioned()))
    ys = jax.random.normal(jax.random.PRNGKey(0), (4, 30))
    alphas = jnp.array([0.0, 0.1, 1.0, 10.0])
    run = lambda y, al: cgls(op, y, alpha=al, max_iter=100, tol=1e-10)
    batched = jax.vmap(run)(ys, alphas)
    for i in range(4):
        single = jax.jit(run)(ys[i], alphas[i])
        np.testing.assert_allclose(batched.x[i], single.x, atol=1e-12)
        assert int(batched.iterations[i]) == int(single.iterations)
    op32 = MatrixOperator(jnp.asarray(well_conditioned(), jnp.float32))
    sol = jax.jit(lambda y: cgls(op32, y, alpha=jnp.asarray(0.1), max_iter=30))(ys[0].astype(jnp.float32))
    assert sol.x.dtype == jnp.float32 and sol.residual_norm.dtype == jnp.float32


def test_cgls_gradient_through_fixed_iterations():
    a = jnp.asarray(well_conditioned())
    y = jax.random.normal(jax.random.PRNGKey(0), (30,))
    f = jax.jit(lambda al: jnp.sum(cgls(MatrixOperator(a), y, alpha=al, max_iter=8).x ** 2))
    np.testing.assert_allclose(jax.grad(f)(0.3), (f(0.3 + 1e-6) - f(0.3 - 1e-6)) / 2e-6, rtol=1e-6)


def test_cgls_bad_input():
    op = MatrixOperator(jnp.ones((3, 2)))
    with pytest.raises(ValueError, match=r"cgls expects data of shape \(3,\), got \(2,\)"):
        cgls(op, jnp.ones(2))
    with pytest.raises(ValueError, match=r"cgls expects x0 of shape \(2,\), got \(3,\)"):
        cgls(op, jnp.ones(3), x0=jnp.ones(3))
    with pytest.raises(ValueError, match="alpha must be finite and non-negative"):
        cgls(op, jnp.ones(3), alpha=-0.1)
    with pytest.raises(ValueError, match="max_iter must be a positive int, got 0"):
        cgls(op, jnp.ones(3), max_iter=0)


# ---------------------------------------------------------------- non-negative Tikhonov


def test_nonnegative_tikhonov_matches_scipy_nnls():
    rng = np.random.default_rng(4)
    a = well_conditioned(seed=4)
    y = a @ rng.standard_normal(20) + 0.1 * rng.standard_normal(30)  # about half the entries clip
    for alpha in (0.0, 0.5):
        sol = nonnegative_tikhonov(MatrixOperator(jnp.asarray(a)), jnp.asarray(y), alpha, max_iter=5000, tol=1e-14)
        stacked = np.vstack([a, np.sqrt(alpha) * np.eye(20)])
        expected = nnls(stacked, np.concatenate([y, np.zeros(20)]))[0]
        assert bool(sol.converged) and np.all(np.asarray(sol.x) >= 0)
        assert 0 < np.sum(expected == 0) < 20  # the constraint is active somewhere
        np.testing.assert_allclose(sol.x, expected, atol=1e-10)


def test_nonnegative_tikhonov_vmap_over_alpha_and_gradient():
    a = jnp.asarray(well_conditioned())
    y = jax.random.normal(jax.random.PRNGKey(0), (30,))
    op = MatrixOperator(a)
    alphas = jnp.array([0.0, 0.5, 2.0])
    run = lambda al: nonnegative_tikhonov(op, y, al, max_iter=200).x
    batched = jax.vmap(run)(alphas)
    for i in range(3):
        np.testing.assert_allclose(batched[i], jax.jit(run)(alphas[i]), atol=1e-12)
    f = jax.jit(lambda al: jnp.sum(nonnegative_tikhonov(op, y, al, step=0.05, max_iter=30).x ** 2))
    np.testing.assert_allclose(jax.grad(f)(0.7), (f(0.7 + 1e-6) - f(0.7 - 1e-6)) / 2e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="step must be finite and non-negative"):
        nonnegative_tikhonov(op, y, 1.0, step=-1.0)
    with pytest.raises(ValueError, match=r"nonnegative_tikhonov expects data of shape \(30,\), got \(3,\)"):
        nonnegative_tikhonov(op, jnp.ones(3), 1.0)


@pytest.mark.slow
def test_cgls_float32_stays_at_the_solution_long_past_convergence():
    """Regression: in float32 the residual used to grow again after reaching roundoff (relative
    error 1e2 after 100 steps, 1e15 after 300, on this problem); now the iteration stops moving."""
    from jaxrecon.operators import operator_norm
    from jaxrecon.phantoms import shepp_logan

    op = RadonTransform(ParallelBeamGeometry.uniform((32, 32), 30, dtype=jnp.float32))
    y = op(shepp_logan(32, dtype=jnp.float32)) + 0.1 * jax.random.normal(jax.random.key(0), op.out_shape)
    alpha = 0.1 * float(operator_norm(op)) ** 2
    converged = cgls(op, y, alpha=alpha, max_iter=60, tol=1e-5)
    assert bool(converged.converged)
    for k in (100, 300):
        x = cgls(op, y, alpha=alpha, max_iter=k).x
        assert float(jnp.linalg.norm(x - converged.x) / jnp.linalg.norm(converged.x)) < 1e-3
