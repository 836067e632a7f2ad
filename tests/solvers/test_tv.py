import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from skimage.restoration import denoise_tv_chambolle

from jaxrecon.metrics import psnr
from jaxrecon.operators import (
    IdentityOperator,
    MatrixOperator,
    ParallelBeamGeometry,
    RadonTransform,
    SubsampledFourier,
    dot_test,
    fbp,
    gaussian_noise,
)
from _image_matrix import ImageMatrix
from jaxrecon.phantoms import shepp_logan
from jaxrecon.solvers.gradient import FiniteDifference, finite_difference, finite_difference_adjoint
from jaxrecon.solvers.landweber import landweber
from jaxrecon.solvers.tv import total_variation, tv_denoise, tv_pdhg


def difference_matrix(shape):
    """The dense matrix of finite_difference, with its always-zero rows dropped (NumPy)."""
    n = int(np.prod(shape))
    rows = []
    for a in range(len(shape)):
        for i in range(n):
            idx = np.unravel_index(i, shape)
            if idx[a] + 1 < shape[a]:
                r = np.zeros(n)
                r[i] = -1
                nxt = list(idx)
                nxt[a] += 1
                r[np.ravel_multi_index(nxt, shape)] = 1
                rows.append(r)
    return np.array(rows)


def noisy_phantom(n=32, sigma=0.1, seed=0):
    f = np.asarray(shepp_logan(n), float) + sigma * np.random.default_rng(seed).standard_normal((n, n))
    return f


def objective(x, f_or_y, alpha, isotropic=True, a=None):
    x = np.asarray(x)
    r = (x - f_or_y) if a is None else (a @ x.ravel() - f_or_y)
    return 0.5 * np.sum(np.abs(r) ** 2) + alpha * float(total_variation(jnp.asarray(x), isotropic=isotropic))


# ------------------------------------------------------------------------------------------------
# Finite differences
# ------------------------------------------------------------------------------------------------


def test_finite_difference_matches_numpy_and_is_exactly_adjoint():
    x = np.random.default_rng(0).standard_normal((6, 9))
    g = np.asarray(finite_difference(jnp.asarray(x)))
    assert g.shape == (2, 6, 9)
    np.testing.assert_array_equal(g[0, :-1], np.diff(x, axis=0))
    np.testing.assert_array_equal(g[1, :, :-1], np.diff(x, axis=1))
    assert np.all(g[0, -1] == 0) and np.all(g[1, :, -1] == 0)  # Neumann: last difference zero
    # The adjoint is minus the divergence (backward differences with p[-1] = 0, p[n-1] ignored).
    p = np.random.default_rng(1).standard_normal((2, 6, 9))
    div = np.zeros((6, 9))
    for a in range(2):
        q = np.moveaxis(p[a].copy(), a, 0)
        q[-1] = 0
        d = q - np.concatenate([np.zeros_like(q[:1]), q[:-1]])
        div += np.moveaxis(d, 0, a)
    np.testing.assert_allclose(finite_difference_adjoint(jnp.asarray(p)), -div, atol=1e-14)
    assert float(dot_test(FiniteDifference((6, 9)), dtype=jnp.float64)) < 1e-14
    rng = np.random.default_rng(2)
    for shape in [(17,), (3, 4, 5), (1, 8)]:
        op, u = FiniteDifference(shape), rng.standard_normal(shape)
        v = rng.standard_normal(op.out_shape)
        np.testing.assert_allclose(np.vdot(op.mv(jnp.asarray(u)), v), np.vdot(u, op.rmv(jnp.asarray(v))), rtol=1e-13)


def test_finite_difference_norm():
    shape = (7, 10)
    D = FiniteDifference(shape)
    m = np.asarray(jax.jacobian(D.mv)(jnp.zeros(shape))).reshape(2 * 70, 70)
    np.testing.assert_array_equal(m[np.any(m != 0, axis=1)], difference_matrix(shape))
    norm2 = np.linalg.norm(m, 2) ** 2
    exact = sum(4 * np.sin(np.pi * (n - 1) / (2 * n)) ** 2 for n in shape)
    np.testing.assert_allclose(norm2, exact, rtol=1e-12)
    assert norm2 <= 8 and D.norm_bound == pytest.approx(8**0.5, rel=1e-15)


def test_total_variation_values():
    x = np.random.default_rng(0).standard_normal((5, 7))
    gx, gy = np.diff(x, axis=0), np.diff(x, axis=1)
    iso = np.sum(np.sqrt(np.pad(gx, ((0, 1), (0, 0))) ** 2 + np.pad(gy, ((0, 0), (0, 1))) ** 2))
    np.testing.assert_allclose(total_variation(jnp.asarray(x)), iso, rtol=1e-13)
    np.testing.assert_allclose(
        total_variation(jnp.asarray(x), isotropic=False), np.abs(gx).sum() + np.abs(gy).sum(), rtol=1e-13
    )


# ------------------------------------------------------------------------------------------------
# Against reference solvers
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def skimage_rof():
    # skimage's denoise_tv_chambolle (Chambolle 2004) minimises 1/2||u - f||^2 + weight * TV_iso(u) with
    # the same forward differences and Neumann boundary (see _denoise_tv_chambolle_nd): weight = alpha.
    # Run it far past its default stopping rule so it is a reference.
    f, alpha = noisy_phantom(), 0.1
    ref = denoise_tv_chambolle(f, weight=alpha, eps=1e-14, max_num_iter=20_000)
    return f, alpha, ref


def test_tv_denoise_matches_skimage(skimage_rof):
    f, alpha, ref = skimage_rof
    sol = tv_denoise(jnp.asarray(f), alpha, max_iter=1000)
    assert objective(sol.x, f, alpha) <= objective(ref, f, alpha) + 1e-7 * objective(ref, f, alpha)
    assert np.linalg.norm(sol.x - ref) / np.linalg.norm(ref) < 1e-4


def test_tv_pdhg_identity_matches_skimage(skimage_rof):
    f, alpha, ref = skimage_rof
    sol = tv_pdhg(IdentityOperator(f.shape), jnp.asarray(f), alpha, max_iter=2000)
    assert objective(sol.x, f, alpha) <= objective(ref, f, alpha) * (1 + 1e-5)
    assert np.linalg.norm(sol.x - ref) / np.linalg.norm(ref) < 1e-3
    np.testing.assert_allclose(sol.residual_norm, np.linalg.norm(sol.x - f), rtol=1e-12)


def test_subsampled_fourier_with_full_mask_is_denoising(skimage_rof):
    # With every frequency sampled, ||F x - y||^2 = ||x - Re F^* y||^2 + const for real x, so TV
    # reconstruction from complex k-space data is ROF denoising of Re F^* y.
    f, alpha, ref = skimage_rof
    op = SubsampledFourier(jnp.ones(f.shape))
    y = jnp.fft.fft2(jnp.asarray(f), norm="ortho") + 0.01j  # an imaginary offset Re F^* removes
    sol = tv_pdhg(op, y, alpha, max_iter=2000)
    assert sol.x.dtype == jnp.float64
    assert np.linalg.norm(sol.x - ref) / np.linalg.norm(ref) < 1e-3


def test_anisotropic_step_has_the_known_solution():
    # 1D TV denoising of a step a|b at k: for small alpha both plateaus move towards each other,
    # by alpha/k and alpha/(n-k), and stay flat.
    n, k, a, b, alpha = 24, 9, 0.2, 1.0, 0.6
    f = np.where(np.arange(n) < k, a, b)[None, :]
    exact = np.where(np.arange(n) < k, a + alpha / k, b - alpha / (n - k))[None, :]
    den = tv_denoise(jnp.asarray(f), alpha, isotropic=False, max_iter=1000)
    np.testing.assert_allclose(den.x, exact, atol=1e-8)
    pd = tv_pdhg(IdentityOperator(f.shape), jnp.asarray(f), alpha, isotropic=False, max_iter=2000)
    np.testing.assert_allclose(pd.x, exact, atol=1e-8)


def test_anisotropic_1d_random_signal_vs_bounded_least_squares():
    # Dual of min 1/2||x - f||^2 + alpha ||Dx||_1: min_{|q| <= alpha} ||D^T q - f||^2, x = f - D^T q,
    # solved exactly by SciPy's bounded-variable least squares.
    rng = np.random.default_rng(3)
    n, alpha = 40, 0.3
    f = np.repeat(rng.standard_normal(8), 5) + 0.2 * rng.standard_normal(n)
    dmat = difference_matrix((n,))
    q = scipy.optimize.lsq_linear(dmat.T, f, bounds=(-alpha, alpha), method="bvls", tol=1e-14).x
    exact = f - dmat.T @ q
    sol = tv_denoise(jnp.asarray(f), alpha, isotropic=False, max_iter=1000)
    np.testing.assert_allclose(sol.x, exact, atol=1e-7)


@pytest.fixture(scope="module")
def matrix_problem():
    rng = np.random.default_rng(4)
    shape = (6, 6)
    a = rng.standard_normal((50, 36)) / 6
    x_true = np.zeros(shape)
    x_true[1:4, 2:5] = 1.0
    x_true[4:, :2] = -0.5
    y = a @ x_true.ravel() + 0.05 * rng.standard_normal(50)
    # Dual for injective A (H = A^T A = L L^T): min over the dual ball of ||L^{-1}(A^T y - D^T q)||^2,
    # then x = H^{-1}(A^T y - D^T q).
    dmat = difference_matrix(shape)
    chol = np.linalg.cholesky(a.T @ a)
    m = scipy.linalg.solve_triangular(chol, dmat.T, lower=True)
    b = scipy.linalg.solve_triangular(chol, a.T @ y, lower=True)
    return a, y, dmat, m, b, shape


def primal_from_dual(a, y, dmat, q, shape):
    return np.linalg.solve(a.T @ a, a.T @ y - dmat.T @ q).reshape(shape)


def test_anisotropic_with_matrix_vs_bounded_least_squares(matrix_problem):
    a, y, dmat, m, b, shape = matrix_problem
    alpha = 0.2
    q = scipy.optimize.lsq_linear(m, b, bounds=(-alpha, alpha), method="bvls", tol=1e-14).x
    exact = primal_from_dual(a, y, dmat, q, shape)
    sol = tv_pdhg(ImageMatrix(jnp.asarray(a), shape), jnp.asarray(y), alpha, isotropic=False, max_iter=3000)
    np.testing.assert_allclose(sol.x, exact, atol=1e-6)
    assert objective(sol.x, y, alpha, False, a) <= objective(exact, y, alpha, False, a) + 1e-10


def test_isotropic_with_matrix_vs_scipy_slsqp(matrix_problem):
    # The same dual with pixelwise 2-norm balls |q_i| <= alpha (a second-order cone): SciPy's SLSQP.
    a, y, dmat, m, b, shape = matrix_problem
    alpha = 0.2
    n = np.prod(shape)
    # Pair each pixel's vertical and horizontal difference rows (a pixel on the last row or column has one).
    keys = [tuple(np.flatnonzero(r == -1)) for r in dmat]
    pixel = np.array([k[0] for k in keys])

    def fun(q):
        r = m @ q - b
        return 0.5 * r @ r, m.T @ r

    def cons(q):
        return alpha**2 - np.bincount(pixel, q**2, minlength=n)

    def cons_jac(q):
        jac = np.zeros((n, q.size))
        jac[pixel, np.arange(q.size)] = -2 * q
        return jac

    res = scipy.optimize.minimize(
        fun, np.zeros(m.shape[1]), jac=True, method="SLSQP",
        constraints={"type": "ineq", "fun": cons, "jac": cons_jac}, options={"ftol": 1e-12, "maxiter": 1000},
    )
    assert res.success
    exact = primal_from_dual(a, y, dmat, res.x, shape)
    sol = tv_pdhg(ImageMatrix(jnp.asarray(a), shape), jnp.asarray(y), alpha, max_iter=3000)
    np.testing.assert_allclose(sol.x, exact, atol=1e-5)
    assert objective(sol.x, y, alpha, True, a) <= objective(exact, y, alpha, True, a) + 1e-9


def test_nonnegative_1d_vs_scipy_qp():
    # min 1/2||x - f||^2 + alpha sum t  s.t. -t <= Dx <= t, x >= 0: a QP for SciPy's SLSQP.
    rng = np.random.default_rng(5)
    n, alpha = 16, 0.15
    f = np.repeat([0.5, -0.4, 0.8, 0.1], 4) + 0.1 * rng.standard_normal(n)
    dmat = difference_matrix((n,))
    k = dmat.shape[0]

    def fun(z):
        x, t = z[:n], z[n:]
        return 0.5 * np.sum((x - f) ** 2) + alpha * t.sum(), np.concatenate([x - f, alpha * np.ones(k)])

    g = np.block([[-dmat, np.eye(k)], [dmat, np.eye(k)]])  # t - Dx >= 0, t + Dx >= 0
    res = scipy.optimize.minimize(
        fun, np.concatenate([np.maximum(f, 0), np.abs(dmat @ f)]), jac=True, method="SLSQP",
        bounds=[(0, None)] * n + [(None, None)] * k,
        constraints={"type": "ineq", "fun": lambda z: g @ z, "jac": lambda z: g},
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    # At this tolerance SLSQP may stop at the rounding limit (status 8, "positive directional derivative
    # for linesearch") depending on the CPU and BLAS, with the optimum reached: the comparison checks the point.
    assert res.success or res.status == 8, res.message
    exact = res.x[:n]
    assert exact.min() < 1e-8 and f.min() < -0.2  # the constraint is active
    den = tv_denoise(jnp.asarray(f), alpha, nonnegative=True, max_iter=1000)
    pd = tv_pdhg(IdentityOperator((n,)), jnp.asarray(f), alpha, nonnegative=True, max_iter=4000)
    for x in (den.x, pd.x):
        assert float(jnp.min(x)) >= 0
        np.testing.assert_allclose(x, exact, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Convergence behaviour
# ------------------------------------------------------------------------------------------------


def test_objective_decreases_and_gap_shrinks(skimage_rof):
    f, alpha, _ = skimage_rof
    for sol in (
        tv_denoise(jnp.asarray(f), alpha, max_iter=300, history=True),
        tv_pdhg(IdentityOperator(f.shape), jnp.asarray(f), alpha, max_iter=300, history=True),
    ):
        obj, gap = np.asarray(sol.history["objective"]), np.asarray(sol.history["gap"])
        assert np.all(gap >= -1e-10)  # weak duality: the gap bounds the objective's error
        assert gap[-1] < 1e-3 * gap[0] and gap[-1] < 1e-3 * obj[-1]
        tail = obj[len(obj) // 10 :]
        assert np.all(np.diff(tail) <= 1e-12 * tail[0])  # eventually monotone
        assert obj[-1] < obj[0]


@pytest.mark.slow
def test_ct_objective_history_and_psnr_beats_fbp_and_landweber():
    n = 32
    geom = ParallelBeamGeometry.uniform((n, n), 12, 46, dtype=jnp.float64)
    op = RadonTransform(geom)
    yy, xx = np.mgrid[:n, :n]
    x_true = 0.5 * ((xx - 15) ** 2 + (yy - 17) ** 2 < 100) + 0.5 * ((abs(xx - 12) < 4) & (abs(yy - 14) < 3))
    x_true = jnp.asarray(x_true)
    y = gaussian_noise(jax.random.PRNGKey(0), op(x_true), 0.05)
    sol = tv_pdhg(op, y, 1.0, nonnegative=True, max_iter=500, reference=x_true, history=True)
    obj = np.asarray(sol.history["objective"])
    assert np.all(np.diff(obj[100:]) <= 1e-9 * obj[0]) and obj[-1] < 0.05 * obj[0]
    np.testing.assert_allclose(sol.history["residual"][-1], sol.residual_norm, rtol=1e-12)
    np.testing.assert_allclose(sol.history["error"][-1], jnp.linalg.norm(sol.x - x_true), rtol=1e-12)
    p_tv = float(psnr(sol.x, x_true))
    p_fbp = float(psnr(fbp(y, geom, filter="hann"), x_true))
    lw = landweber(op, y, max_iter=300, reference=x_true, history=True)
    best_lw = float(20 * jnp.log10(n / jnp.min(lw.history["error"])))  # Landweber at its best stopping index
    assert p_tv > p_fbp + 5 and p_tv > best_lw + 3, (p_tv, p_fbp, best_lw)


@pytest.mark.slow
def test_nonnegativity_is_respected():
    n = 16
    geom = ParallelBeamGeometry.uniform((n, n), 8, 23, dtype=jnp.float64)
    op = RadonTransform(geom)
    x_true = jnp.zeros((n, n)).at[4:12, 4:12].set(1.0).at[6:10, 6:10].set(-0.5)
    y = op(x_true)
    free = tv_pdhg(op, y, 0.1, max_iter=300)
    pos = tv_pdhg(op, y, 0.1, nonnegative=True, max_iter=300)
    assert float(jnp.min(free.x)) < -0.1 and float(jnp.min(pos.x)) >= 0
    obj = lambda x: 0.5 * float(jnp.sum((op(x) - y) ** 2)) + 0.1 * float(total_variation(x))
    assert obj(pos.x) <= obj(jnp.maximum(free.x, 0))  # better than the clipped unconstrained solution


def test_tol_stops_early_and_reports_convergence(skimage_rof):
    f, alpha, ref = skimage_rof
    for solver in (
        lambda **kw: tv_denoise(jnp.asarray(f), alpha, **kw),
        lambda **kw: tv_pdhg(IdentityOperator(f.shape), jnp.asarray(f), alpha, **kw),
    ):
        sol = solver(max_iter=5000, tol=1e-7)
        assert bool(sol.converged) and 10 < int(sol.iterations) < 5000
        np.testing.assert_allclose(sol.x, ref, atol=5e-4)  # measured: 2e-5 (tv_denoise), 2e-4 (tv_pdhg)
        fixed = solver(max_iter=int(sol.iterations))
        np.testing.assert_allclose(fixed.x, sol.x, atol=1e-12)  # the same iterates, stopped at the same step
        capped = solver(max_iter=5, tol=1e-7)
        assert not bool(capped.converged) and int(capped.iterations) == 5


# ------------------------------------------------------------------------------------------------
# Transformations and dtypes
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_vmap_over_alpha_and_data():
    rng = np.random.default_rng(6)
    fs = jnp.asarray(np.asarray(shepp_logan(16), float) + 0.1 * rng.standard_normal((3, 16, 16)))
    alphas = jnp.array([0.0, 0.05, 0.2])
    op = IdentityOperator((16, 16))
    runs = {
        "denoise": lambda f, a: tv_denoise(f, a, max_iter=500, tol=1e-6),
        "pdhg": lambda f, a: tv_pdhg(op, f, a, max_iter=500, tol=1e-6, isotropic=False),
    }
    for name, run in runs.items():
        batched = jax.vmap(run)(fs, alphas)
        for i in range(3):
            single = run(fs[i], float(alphas[i]))
            np.testing.assert_allclose(batched.x[i], single.x, atol=1e-12, err_msg=name)
            assert int(batched.iterations[i]) == int(single.iterations), name
        assert len(set(np.asarray(batched.iterations).tolist())) > 1  # the stopping index differs per alpha
    np.testing.assert_allclose(jax.vmap(runs["denoise"])(fs, alphas).x[0], fs[0], atol=1e-12)  # alpha = 0


@pytest.mark.slow
def test_gradient_through_fixed_iterations_matches_finite_differences():
    rng = np.random.default_rng(7)
    f = jnp.asarray(rng.standard_normal((8, 8)))
    w = jnp.asarray(rng.standard_normal((8, 8)))
    a = jnp.asarray(rng.standard_normal((40, 64)) / 8)
    op = ImageMatrix(a, (8, 8))
    y = op(f)
    losses = {
        "denoise": lambda al: jnp.vdot(w, tv_denoise(f, al, max_iter=30).x),
        "pdhg-iso": lambda al: jnp.vdot(w, tv_pdhg(op, y, al, max_iter=30, nonnegative=True).x),
        "pdhg-aniso": lambda al: jnp.vdot(w, tv_pdhg(op, y, al, max_iter=30, isotropic=False, balance=1.0).x),
    }
    for name, loss in losses.items():
        g = jax.jit(jax.grad(loss))(0.3)
        loss = jax.jit(loss)
        fd = (loss(0.3 + 1e-6) - loss(0.3 - 1e-6)) / 2e-6
        assert np.isfinite(g) and abs(g) > 1e-3, name
        np.testing.assert_allclose(g, fd, rtol=1e-5, err_msg=name)
    g = jax.grad(lambda yy: jnp.vdot(w, tv_pdhg(op, yy, 0.3, max_iter=30).x))(y)
    assert np.all(np.isfinite(g))


def test_jit_and_dtypes():
    f = shepp_logan(16, dtype=jnp.float32)
    op = IdentityOperator((16, 16))
    assert jax.jit(lambda f: tv_pdhg(op, f, 0.1, max_iter=20))(f).x.dtype == jnp.float32
    assert jax.jit(lambda f: tv_denoise(f, 0.1, max_iter=20, history=True))(f).history["gap"].dtype == jnp.float32
    x32 = tv_denoise(f, 0.1, max_iter=200).x
    x64 = tv_denoise(f.astype(jnp.float64), 0.1, max_iter=200).x
    assert x32.dtype == jnp.float32 and float(jnp.max(jnp.abs(x32 - x64))) < 1e-5


def test_bad_input():
    op = IdentityOperator((4, 4))
    y = jnp.ones((4, 4))
    with pytest.raises(TypeError, match="expects a LinearOperator, got ndarray"):
        tv_pdhg(np.eye(4), y, 0.1)
    with pytest.raises(ValueError, match=r"data of shape \(4, 4\), got \(4, 5\)"):
        tv_pdhg(op, jnp.ones((4, 5)), 0.1)
    with pytest.raises(ValueError, match="alpha must be finite and non-negative"):
        tv_pdhg(op, y, -0.1)
    with pytest.raises(ValueError, match=r"alpha must be a scalar .* got shape \(2,\)"):
        tv_denoise(y, jnp.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="theta must be in"):
        tv_pdhg(op, y, 0.1, theta=1.5)
    with pytest.raises(TypeError, match="isotropic must be a bool"):
        tv_pdhg(op, y, 0.1, isotropic="yes")
    with pytest.raises(ValueError, match=r"x0 of shape \(4, 4\), got \(3, 3\)"):
        tv_pdhg(op, y, 0.1, x0=jnp.zeros((3, 3)))
    with pytest.raises(ValueError, match="max_iter must be a positive int"):
        tv_denoise(y, 0.1, max_iter=0)
    with pytest.raises(ValueError, match="sigma must be a scalar or a pair"):
        tv_pdhg(op, y, 0.1, sigma=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="either balance or sigma/tau"):
        tv_pdhg(op, y, 0.1, balance=1.0, tau=0.1)
    with pytest.raises(ValueError, match="tau must be positive"):
        tv_pdhg(op, y, 0.1, tau=0.0)
    with pytest.raises(ValueError, match="gamma must be in"):
        tv_denoise(y, 0.1, gamma=2.0)
    with pytest.raises(TypeError, match="complex domain"):
        tv_pdhg(SubsampledFourier(jnp.ones((4, 4)), real_input=False), y.astype(jnp.complex128), 0.1)
    with pytest.raises(TypeError, match="real image"):
        tv_denoise(y.astype(jnp.complex128), 0.1)
    with pytest.raises(ValueError, match="positive ints"):
        FiniteDifference((4, 0))
    with pytest.raises(ValueError, match=r"shape \(ndim, \*shape\)"):
        finite_difference_adjoint(jnp.ones((3, 4, 4)))
