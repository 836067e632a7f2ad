import jax
import jax.numpy as jnp
import numpy as np
import pytest
import pywt
from scipy.optimize import minimize

from _image_matrix import ImageMatrix

from jaxrecon.operators import (
    IdentityOperator,
    MatrixOperator,
    SubsampledFourier,
)
from jaxrecon.solvers.ista import fista, ista
from jaxrecon.solvers.wavelets import WaveletTransform

pytestmark = pytest.mark.filterwarnings("ignore:Level value of .* is too high")


def wavelet_matrix(shape, wavelet, levels):
    """PyWavelets' packed periodic DWT as an explicit (N, N) matrix."""
    n = shape[0] * shape[1]
    cols = []
    for e in np.eye(n):
        coeffs = pywt.wavedec2(e.reshape(shape), wavelet, mode="periodization", level=levels)
        cols.append(pywt.coeffs_to_array(coeffs)[0].ravel())
    return np.stack(cols, axis=1)


def pywt_shrink(y, wavelet, levels, alpha):
    """W^T soft(W y, alpha) with PyWavelets."""
    arr, slices = pywt.coeffs_to_array(pywt.wavedec2(y, wavelet, mode="periodization", level=levels))
    coeffs = pywt.array_to_coeffs(pywt.threshold(arr, alpha, "soft"), slices, output_format="wavedec2")
    return pywt.waverec2(coeffs, wavelet, mode="periodization")


def scipy_l1(a, y, alpha, eps=0.0):
    """min 1/2||a c - y||^2 + alpha||c||_1 + eps/2||c||^2 by L-BFGS-B on c = u - v, u, v >= 0."""
    n = a.shape[1]

    def f(z):
        c = z[:n] - z[n:]
        r = a @ c - y
        g = a.T @ r + eps * c
        return 0.5 * r @ r + alpha * z.sum() + 0.5 * eps * c @ c, np.concatenate([g + alpha, -g + alpha])

    opts = {"ftol": 1e-16, "gtol": 1e-14, "maxiter": 20000, "maxcor": 50}
    res = minimize(f, np.zeros(2 * n), jac=True, method="L-BFGS-B", bounds=[(0, None)] * (2 * n), options=opts)
    return res.x[:n] - res.x[n:], res.fun


def lasso_problem(seed=0, m=30, n=60):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, n)) / np.sqrt(m)
    x = np.zeros(n)
    x[rng.choice(n, 6, replace=False)] = 2 * rng.standard_normal(6)
    return a, a @ x + 0.01 * rng.standard_normal(m)


def disc_image(n=16):
    yy, xx = np.mgrid[:n, :n]
    return ((xx - 7) ** 2 + (yy - 8) ** 2 < 25) + 0.5 * ((xx - 4) ** 2 + (yy - 4) ** 2 < 5.0)


@pytest.mark.slow
def test_identity_operator_gives_wavelet_soft_thresholding():
    y = np.random.default_rng(0).standard_normal((32, 32))
    op = IdentityOperator((32, 32))
    sol = ista(op, jnp.asarray(y), 0.3, wavelet="db2", levels=2, max_iter=3)  # default step: 1/||I||^2
    np.testing.assert_allclose(sol.x, pywt_shrink(y, "db2", 2, 0.3), atol=1e-12)
    # The elastic-net term divides by (1 + eps); an operator instance works like a name.
    db4 = WaveletTransform((32, 32), "db4", 3)
    sol = fista(op, jnp.asarray(y), 0.3, wavelet=db4, elastic_net=0.5, step=1.0, max_iter=3)
    np.testing.assert_allclose(sol.x, pywt_shrink(y, "db4", 3, 0.3) / 1.5, atol=1e-12)
    # Complex images: the modulus of each (complex) wavelet coefficient is shrunk.
    z = y + 1j * np.random.default_rng(1).standard_normal((32, 32))
    sol = ista(op, jnp.asarray(z), 0.3, wavelet="haar", levels=2, step=1.0, max_iter=3)
    assert sol.x.dtype == jnp.complex128
    np.testing.assert_allclose(sol.x, pywt_shrink(z, "haar", 2, 0.3), atol=1e-12)
    # Plain l1 with x >= 0 (W = I) is separable: max(y - alpha, 0) / (1 + eps).
    sol = fista(op, jnp.asarray(y), 0.3, nonnegative=True, elastic_net=0.5, step=1.0, max_iter=3)
    np.testing.assert_allclose(sol.x, np.maximum(y - 0.3, 0) / 1.5, atol=1e-12)


def test_lasso_matches_scipy():
    a, y = lasso_problem()
    x_ref, f_ref = scipy_l1(a, y, 0.05)
    op = MatrixOperator(jnp.asarray(a))
    for solver, iters in ((ista, 3000), (fista, 1000)):
        sol = solver(op, jnp.asarray(y), 0.05, max_iter=iters, history=True)
        assert abs(float(sol.history["objective"][-1]) - f_ref) <= 1e-8 * f_ref
        np.testing.assert_allclose(sol.x, x_ref, atol=1e-6)


def test_wavelet_elastic_net_on_images_matches_scipy():
    n, rng = 16, np.random.default_rng(1)
    a = rng.standard_normal((120, n * n)) / np.sqrt(120)  # underdetermined: 120 data, 256 unknowns
    y = a @ disc_image(n).ravel() + 0.05 * rng.standard_normal(120)
    w = wavelet_matrix((n, n), "db2", 2)
    c_ref, f_ref = scipy_l1(a @ w.T, y, 0.1, eps=0.05)  # synthesis form, x = W^T c
    op = ImageMatrix(jnp.asarray(a), (n, n))
    sol = fista(op, jnp.asarray(y), 0.1, wavelet="db2", levels=2, elastic_net=0.05, max_iter=2000, history=True)
    assert abs(float(sol.history["objective"][-1]) - f_ref) <= 1e-8 * f_ref
    np.testing.assert_allclose(sol.x.ravel(), w.T @ c_ref, atol=1e-6)


def admm_nonnegative_wavelet_l1(a, w, y, alpha, iters=10000, rho=1.0):
    """Reference: ADMM for min 1/2||a x - y||^2 + alpha||c||_1 s.t. c = W x, x = z >= 0."""
    n = a.shape[1]
    inv = np.linalg.inv(a.T @ a + 2 * rho * np.eye(n))
    x, c, z, u1, u2 = (np.zeros(n) for _ in range(5))
    for _ in range(iters):
        x = inv @ (a.T @ y + rho * w.T @ (c - u1) + rho * (z - u2))
        wx = w @ x
        c = pywt.threshold(wx + u1, alpha / rho, "soft")
        z = np.maximum(x + u2, 0)
        u1, u2 = u1 + wx - c, u2 + x - z
    r = a @ z - y
    return z, 0.5 * r @ r + alpha * np.abs(w @ z).sum()


def test_nonnegative_wavelet_matches_admm():
    n, rng = 16, np.random.default_rng(2)
    a = rng.standard_normal((100, n * n)) / 10  # 100 data, 256 unknowns
    y = a @ disc_image(n).ravel() + 0.5 * rng.standard_normal(100)
    w = wavelet_matrix((n, n), "haar", 2)
    x_ref, f_ref = admm_nonnegative_wavelet_l1(a, w, y, 1.0, iters=3000)
    c_free, _ = scipy_l1(a @ w.T, y, 1.0)
    assert np.min(w.T @ c_free) < -0.1  # the constraint is active: the unconstrained minimiser goes negative
    op = ImageMatrix(jnp.asarray(a), (n, n))
    for solver, iters in ((ista, 500), (fista, 300)):
        sol = solver(op, jnp.asarray(y), 1.0, wavelet="haar", levels=2, nonnegative=True, max_iter=iters, history=True)
        assert float(jnp.min(sol.x)) >= 0
        assert abs(float(sol.history["objective"][-1]) - f_ref) <= 1e-8 * f_ref
        np.testing.assert_allclose(sol.x.ravel(), x_ref, atol=1e-6)


def test_fista_needs_fewer_iterations_than_ista():
    a, y = lasso_problem(seed=3)
    _, f_ref = scipy_l1(a, y, 0.05)
    op = MatrixOperator(jnp.asarray(a))

    def iterations_to(solver, rel):
        obj = np.asarray(solver(op, jnp.asarray(y), 0.05, max_iter=3000, history=True).history["objective"])
        assert obj[-1] - f_ref <= rel * f_ref, (solver.__name__, rel)  # reached within max_iter
        return int(np.argmax(obj - f_ref <= rel * f_ref)) + 1

    for rel in (1e-3, 1e-6):  # measured: ISTA 1474 and 2692 steps, FISTA 97 and 270
        k_ista, k_fista = iterations_to(ista, rel), iterations_to(fista, rel)
        assert k_fista < k_ista / 5, (rel, k_ista, k_fista)


def test_ista_objective_decreases_monotonically():
    a, y = lasso_problem(seed=4)
    sol = ista(MatrixOperator(jnp.asarray(a)), jnp.asarray(y), 0.05, max_iter=300, history=True)
    obj = np.asarray(sol.history["objective"])
    assert np.all(np.diff(obj) <= 1e-13 * obj[0]) and obj[-1] < 0.5 * obj[0]
    op = ImageMatrix(jnp.asarray(np.random.default_rng(5).standard_normal((100, 256)) / 10), (16, 16))
    y = op.mv(jnp.asarray(disc_image(), float))
    obj = np.asarray(ista(op, y, 0.05, wavelet="haar", levels=3, max_iter=300, history=True).history["objective"])
    assert np.all(np.diff(obj) <= 1e-13 * obj[0]) and obj[-1] < 0.5 * obj[0]


@pytest.mark.slow
def test_vmap_over_alpha_and_data_equals_separate_calls():
    op = ImageMatrix(jnp.asarray(np.random.default_rng(6).standard_normal((100, 256)) / 10), (16, 16))
    ys = op.mv(jnp.asarray(disc_image(), float)) + 0.1 * jax.random.normal(jax.random.PRNGKey(0), (3, 100))
    alphas = jnp.array([0.01, 0.1, 0.5])
    a, y = lasso_problem(seed=11)
    lasso_ys = jnp.asarray(y) + 0.1 * jax.random.normal(jax.random.PRNGKey(1), (3, 30))
    runs = [
        # FISTA with the inner dual iteration (non-negative wavelet prox), and plain ISTA on a LASSO
        (lambda y, al: fista(op, y, al, wavelet="haar", levels=2, nonnegative=True, max_iter=50, inner_iter=5), ys),
        (lambda y, al: ista(MatrixOperator(jnp.asarray(a)), y, al, max_iter=50), lasso_ys),
    ]
    for run, data in runs:
        batched = jax.jit(jax.vmap(run))(data, alphas)
        single_run = jax.jit(run)
        for i in range(3):
            single = single_run(data[i], alphas[i])
            np.testing.assert_allclose(batched.x[i], single.x, atol=1e-12)
            np.testing.assert_allclose(batched.residual_norm[i], single.residual_norm, rtol=1e-12)
        assert not np.allclose(batched.x[0], batched.x[2])


def central_difference_check(f, at, eps=1e-6, rtol=1e-6):
    """jax.grad against a central difference, both from one compiled value_and_grad."""
    vg = jax.jit(jax.value_and_grad(f))
    (_, g), (fp, _), (fm, _) = vg(at), vg(at + eps), vg(at - eps)
    np.testing.assert_allclose(g, (fp - fm) / (2 * eps), rtol=rtol)


def test_gradient_with_respect_to_alpha_through_fixed_iterations():
    a, y = lasso_problem(seed=7)
    op = MatrixOperator(jnp.asarray(a))
    f = lambda alpha: jnp.sum(fista(op, jnp.asarray(y), alpha, step=0.5, max_iter=30).x ** 2)
    central_difference_check(f, 0.05)
    op = ImageMatrix(jnp.asarray(np.random.default_rng(8).standard_normal((100, 256)) / 10), (16, 16))
    y = op.mv(jnp.asarray(disc_image(), float))
    f = lambda alpha: jnp.sum(
        ista(op, y, alpha, wavelet="haar", levels=2, nonnegative=True, step=0.5, max_iter=10).x ** 2
    )
    central_difference_check(f, 0.05)


def test_tol_stops_early_and_reports_convergence():
    a, y = lasso_problem(seed=9)
    op = MatrixOperator(jnp.asarray(a))
    x_ref, _ = scipy_l1(a, y, 0.05)
    sol = jax.jit(lambda y: fista(op, y, 0.05, max_iter=5000, tol=1e-12))(jnp.asarray(y))
    assert bool(sol.converged) and 10 < int(sol.iterations) < 5000
    np.testing.assert_allclose(sol.x, x_ref, atol=1e-8)
    np.testing.assert_allclose(sol.residual_norm, np.linalg.norm(a @ np.asarray(sol.x) - y), rtol=1e-12)
    sol = ista(op, jnp.asarray(y), 0.05, max_iter=20)
    assert int(sol.iterations) == 20 and not bool(sol.converged)


def test_float32_and_reference_error_history():
    a, y = lasso_problem(seed=10)
    x_ref, _ = scipy_l1(a, y, 0.05)
    sol = fista(MatrixOperator(jnp.asarray(a, jnp.float32)), jnp.asarray(y, jnp.float32), 0.05, max_iter=300,
                reference=jnp.asarray(x_ref), history=True)  # fmt: skip
    assert sol.x.dtype == jnp.float32 and sol.history["objective"].dtype == jnp.float32
    assert float(sol.history["error"][-1]) < 1e-4 < float(sol.history["error"][0])


def test_bad_input():
    op = MatrixOperator(jnp.ones((3, 2)))
    with pytest.raises(ValueError, match=r"ista expects data of shape \(3,\), got \(2,\)"):
        ista(op, jnp.ones(2), 0.1)
    with pytest.raises(ValueError, match="alpha must be finite and non-negative, got -0.1"):
        fista(op, jnp.ones(3), -0.1)
    with pytest.raises(ValueError, match=r"alpha must be a scalar or broadcastable to \(2,\), got shape \(3,\)"):
        ista(op, jnp.ones(3), jnp.ones(3))
    with pytest.raises(ValueError, match=r"a 2D wavelet needs an operator on \(H, W\) images, got in_shape \(2,\)"):
        ista(op, jnp.ones(3), 0.1, wavelet="db2")
    with pytest.raises(ValueError, match="levels=2 given without a wavelet"):
        ista(op, jnp.ones(3), 0.1, levels=2)
    img = IdentityOperator((16, 16))
    with pytest.raises(ValueError, match=r"must map \(16, 16\) to \(16, 16\)"):
        ista(img, jnp.ones((16, 16)), 0.1, wavelet=WaveletTransform((8, 8), "haar", 1))
    with pytest.raises(ValueError, match=r"divisible by 2\^5 = 32"):
        fista(img, jnp.ones((16, 16)), 0.1, wavelet="haar", levels=5)
    with pytest.raises(ValueError, match="inner_iter must be a positive int, got 0"):
        ista(img, jnp.ones((16, 16)), 0.1, wavelet="haar", nonnegative=True, inner_iter=0)
    with pytest.raises(ValueError, match="max_iter must be a positive int"):
        ista(img, jnp.ones((16, 16)), 0.1, max_iter=0)
    with pytest.raises(TypeError, match="nonnegative=True needs a real domain"):
        fourier = SubsampledFourier(jnp.ones((8, 8)), real_input=False)
        ista(fourier, jnp.ones((8, 8), jnp.complex128), 0.1, nonnegative=True)
