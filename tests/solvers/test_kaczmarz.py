import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrecon.operators import MatrixOperator, ParallelBeamGeometry, RadonTransform
from jaxrecon.solvers.kaczmarz import kaczmarz, sart, sirt
from jaxrecon.solvers.tikhonov import as_matrix


def numpy_kaczmarz(a, y, sweeps, relaxation=1.0, x=None):
    """The textbook recursion, row by row."""
    x = np.zeros(a.shape[1]) if x is None else x.copy()
    for _ in range(sweeps):
        for i in range(a.shape[0]):
            x = x + relaxation * (y[i] - a[i] @ x) / (a[i] @ a[i]) * a[i]
    return x


def numpy_sart(m, y, num_angles, blocks, sweeps, relaxation, nonnegative=False):
    """SART on the dense matrix: rows [a D, (a + 1) D) belong to angle a."""
    d = m.shape[0] // num_angles
    x, y = np.zeros(m.shape[1]), y.ravel()
    for _ in range(sweeps):
        for block in blocks:
            rows = np.concatenate([np.arange(a * d, (a + 1) * d) for a in block])
            mb = m[rows]
            r_sum, c_sum = mb.sum(1), mb.sum(0)
            w = np.divide(1.0, r_sum, out=np.zeros_like(r_sum), where=r_sum > 0)
            back = mb.T @ (w * (y[rows] - mb @ x))
            x = x + relaxation * np.divide(back, c_sum, out=np.zeros_like(back), where=c_sum > 0)
            if nonnegative:
                x = np.maximum(x, 0)
    return x


def disc_phantom(n):
    yy, xx = np.mgrid[:n, :n]
    return ((xx - 0.45 * n) ** 2 + (yy - 0.55 * n) ** 2 < (0.3 * n) ** 2) + 0.5 * ((xx - 0.35 * n) ** 2 + (yy - 0.4 * n) ** 2 < (0.12 * n) ** 2)


# ---------------------------------------------------------------- Kaczmarz


def test_cyclic_kaczmarz_solves_consistent_systems():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((30, 20))
    x_true = rng.standard_normal(20)
    op, y = MatrixOperator(jnp.asarray(a)), jnp.asarray(a @ x_true)
    sol = kaczmarz(op, y, max_iter=500, tol=1e-13)
    assert bool(sol.converged) and int(sol.iterations) < 500
    np.testing.assert_allclose(sol.x, np.linalg.solve(a[:20], a[:20] @ x_true), atol=1e-10)
    assert float(sol.residual_norm) < 1e-10
    # Underdetermined (10 equations, 20 unknowns): from x0 = 0, the minimum-norm solution.
    b = rng.standard_normal((10, 20))
    yb = b @ rng.standard_normal(20)
    sol = kaczmarz(MatrixOperator(jnp.asarray(b)), jnp.asarray(yb), max_iter=300)
    np.testing.assert_allclose(sol.x, np.linalg.lstsq(b, yb, rcond=None)[0], atol=1e-10)


def test_cyclic_kaczmarz_equals_the_row_by_row_recursion():
    rng = np.random.default_rng(1)
    a, y = rng.standard_normal((12, 8)), rng.standard_normal(12)  # inconsistent
    x0 = rng.standard_normal(8)
    sol = kaczmarz(MatrixOperator(jnp.asarray(a)), jnp.asarray(y), x0=jnp.asarray(x0), relaxation=0.7, max_iter=3)
    np.testing.assert_allclose(sol.x, numpy_kaczmarz(a, y, 3, 0.7, x0), atol=1e-12)
    assert int(sol.iterations) == 3 and not bool(sol.converged)


def test_randomised_kaczmarz_meets_the_strohmer_vershynin_bound():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((40, 10)) * rng.uniform(0.2, 3.0, (40, 1))  # unequal row norms
    x_true = rng.standard_normal(10)
    op, y = MatrixOperator(jnp.asarray(a)), jnp.asarray(a @ x_true)
    keys = jax.random.split(jax.random.PRNGKey(0), 32)
    run = jax.vmap(
        lambda k: kaczmarz(op, y, order="random", key=k, max_iter=6, reference=jnp.asarray(x_true), history=True)
    )
    sols = run(keys)
    err2 = np.mean(np.asarray(sols.history["error"]) ** 2, axis=0)  # mean over keys, per sweep
    sv = np.linalg.svd(a, compute_uv=False)
    rate = 1 - sv[-1] ** 2 / np.sum(sv**2)  # expected contraction per row update
    bound = rate ** (40 * np.arange(1, 7)) * np.sum(x_true**2)
    assert np.all(np.diff(err2) < 0) and err2[-1] < 1e-3 * np.sum(x_true**2)
    assert np.all(err2 <= bound)
    # Different keys draw different rows: the runs differ.
    assert float(jnp.max(jnp.abs(sols.x[0] - sols.x[1]))) > 0


def test_randomised_kaczmarz_samples_rows_by_squared_norm():
    # Orthogonal rows c_i e_i: a step on row i sets x_i = y_i / c_i, so after one sweep (4 draws)
    # x_i != 0 iff row i was drawn, which happens with probability 1 - (1 - p_i)^4.
    c2 = np.array([1.0, 2.0, 3.0, 4.0])
    op = MatrixOperator(jnp.asarray(np.diag(np.sqrt(c2))))
    keys = jax.random.split(jax.random.PRNGKey(3), 4000)
    x = jax.vmap(lambda k: kaczmarz(op, jnp.ones(4), order="random", key=k, max_iter=1).x)(keys)
    drawn = np.mean(np.asarray(x) != 0, axis=0)
    expected = 1 - (1 - c2 / c2.sum()) ** 4  # [0.34, 0.59, 0.76, 0.87]; uniform sampling: 0.68 each
    np.testing.assert_allclose(drawn, expected, atol=0.03)  # ~4 standard errors


def test_kaczmarz_discrepancy_principle():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((30, 20))
    noise = rng.standard_normal(30)
    delta, tau = 0.5, 1.5
    y = a @ rng.standard_normal(20) + delta * noise / np.linalg.norm(noise)
    sol = kaczmarz(MatrixOperator(jnp.asarray(a)), jnp.asarray(y), max_iter=100, delta=delta, tau=tau)
    x, k = np.zeros(20), 0
    while np.linalg.norm(a @ x - y) > tau * delta:
        x, k = numpy_kaczmarz(a, y, 1, x=x), k + 1
    assert bool(sol.converged) and int(sol.iterations) == k > 0
    np.testing.assert_allclose(sol.x, x, atol=1e-10)


def test_kaczmarz_vmap_over_data_and_relaxation_and_gradient():
    rng = np.random.default_rng(4)
    op = MatrixOperator(jnp.asarray(rng.standard_normal((15, 10))))
    ys = jnp.asarray(rng.standard_normal((3, 15)))
    rel = jnp.array([0.5, 1.0, 1.5])
    run = lambda y, w: kaczmarz(op, y, relaxation=w, max_iter=4).x
    batched = jax.jit(jax.vmap(run))(ys, rel)
    single = jax.jit(run)
    for i in range(3):
        np.testing.assert_allclose(batched[i], single(ys[i], rel[i]), atol=1e-12)
    f = jax.jit(lambda w: jnp.sum(run(ys[0], w) ** 2))
    np.testing.assert_allclose(jax.grad(f)(0.8), (f(0.8 + 1e-6) - f(0.8 - 1e-6)) / 2e-6, rtol=1e-6)


def test_kaczmarz_bad_input():
    op = MatrixOperator(jnp.ones((3, 2)))
    with pytest.raises(ValueError, match=r"kaczmarz expects data of shape \(3,\), got \(2,\)"):
        kaczmarz(op, jnp.ones(2))
    with pytest.raises(ValueError, match="0 < relaxation < 2 for convergence, got 2.5"):
        kaczmarz(op, jnp.ones(3), relaxation=2.5)
    with pytest.raises(ValueError, match="order='cyclic' or 'random', got 'sorted'"):
        kaczmarz(op, jnp.ones(3), order="sorted")
    with pytest.raises(ValueError, match="needs a PRNG key"):
        kaczmarz(op, jnp.ones(3), order="random")
    with pytest.raises(TypeError, match="kaczmarz expects a MatrixOperator .* got RadonTransform"):
        kaczmarz(RadonTransform(ParallelBeamGeometry.uniform((8, 8), 4)), jnp.ones((4, 12)))


# ---------------------------------------------------------------- SART


@pytest.fixture(scope="module")
def small_ct():
    geom = ParallelBeamGeometry.uniform((12, 12), 12, 17, dtype=jnp.float64)
    op = RadonTransform(geom)
    return op, np.asarray(as_matrix(op))


@pytest.mark.slow
def test_sart_equals_the_dense_block_recursion(small_ct):
    op, m = small_ct
    rng = np.random.default_rng(5)
    y = np.asarray(op(jnp.asarray(disc_phantom(12)))) + 0.05 * rng.standard_normal((12, 17))
    perm = rng.permutation(12)
    # Per-angle SART in a fixed permuted order.
    sol = sart(op, jnp.asarray(y), order=jnp.asarray(perm), relaxation=0.8, max_iter=2)
    expected = numpy_sart(m, y, 12, [[a] for a in perm], 2, 0.8)
    np.testing.assert_allclose(np.asarray(sol.x).ravel(), expected, atol=1e-11)
    # Blocks of 3 angles dealt by striding (block j: angles j, j + 4, j + 8), non-negative.
    sol = sart(op, jnp.asarray(y), block_size=3, relaxation=1.2, nonnegative=True, max_iter=2)
    expected = numpy_sart(m, y, 12, [[j, j + 4, j + 8] for j in range(4)], 2, 1.2, nonnegative=True)
    np.testing.assert_allclose(np.asarray(sol.x).ravel(), expected, atol=1e-11)
    assert np.all(np.asarray(sol.x) >= 0)


def test_sart_converges_on_a_consistent_phantom():
    n = 16
    geom = ParallelBeamGeometry.uniform((n, n), 24, 23, dtype=jnp.float64)
    op = RadonTransform(geom)
    x_true = disc_phantom(n).astype(float)  # full column rank here: x_true is the least-squares solution
    y = op(jnp.asarray(x_true))
    sol = sart(op, y, max_iter=100, reference=jnp.asarray(x_true), history=True)
    res, err = np.asarray(sol.history["residual"]), np.asarray(sol.history["error"])
    y_norm, x_norm = float(jnp.linalg.norm(y)), np.linalg.norm(x_true)
    # Measured: residual 127 -> 0.12, error 9.3 -> 0.55 (what remains is high-frequency error at the
    # disc edges, along the smallest singular values).
    assert res[-1] < 2e-3 * y_norm and err[-1] < 0.08 * x_norm
    assert res[-1] < 0.5 * res[29] and err[-1] < 0.8 * err[29]  # still converging, not stalled
    assert np.all(np.diff(res) <= 0) and np.all(np.diff(err) <= 0)
    np.testing.assert_allclose(sol.residual_norm, res[-1], rtol=1e-12)


@pytest.mark.slow
def test_sart_vmap_over_data_and_keys_and_stopping(small_ct):
    # The operator is a jit argument (traced angles in the sub-geometries); blocks of 2 angles in a
    # fresh random order every sweep; stopped by `tol`.
    op, _ = small_ct
    x = jnp.asarray(disc_phantom(12), jnp.float64)
    ys = jnp.stack([op(x), op(2 * x)])
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    run = jax.jit(lambda op, y, k: sart(op, y, order="random", key=k, block_size=2, max_iter=30, tol=1e-2))
    batched = jax.vmap(run, in_axes=(None, 0, 0))(op, ys, keys)
    for i in range(2):
        single = run(op, ys[i], keys[i])
        np.testing.assert_allclose(batched.x[i], single.x, atol=1e-12)
        assert int(batched.iterations[i]) == int(single.iterations) and bool(single.converged)
        assert 1 < int(single.iterations) < 30  # (reported)
        assert float(single.residual_norm) < 0.05 * float(jnp.linalg.norm(ys[i]))
    other = run(op, ys[0], jax.random.PRNGKey(7))  # another key, another block order
    assert float(jnp.max(jnp.abs(other.x - batched.x[0]))) > 1e-6


def test_sart_bad_input(small_ct):
    op, _ = small_ct
    y = jnp.zeros((12, 17))
    with pytest.raises(ValueError, match=r"sart expects data of shape \(12, 17\) \(op.out_shape\), got \(12, 16\)"):
        sart(op, jnp.zeros((12, 16)))
    with pytest.raises(ValueError, match="block_size .* dividing the number of angles 12, got 5"):
        sart(op, y, block_size=5)
    with pytest.raises(ValueError, match="0 < relaxation < 2 for convergence, got 0.0"):
        sart(op, y, relaxation=0.0)
    with pytest.raises(ValueError, match=r"permutation of range\(12\)"):
        sart(op, y, order=jnp.zeros(12, jnp.int32))
    with pytest.raises(ValueError, match="needs a PRNG key"):
        sart(op, y, order="random")
    with pytest.raises(TypeError, match="sart expects a RadonTransform, got MatrixOperator"):
        sart(MatrixOperator(jnp.ones((3, 2))), jnp.ones(3))


# ---------------------------------------------------------------- SIRT


def test_sirt_is_the_dense_recursion_and_sart_with_one_block(small_ct):
    op, m = small_ct
    rng = np.random.default_rng(7)
    y = np.asarray(op(jnp.asarray(disc_phantom(12)))) + 0.05 * rng.standard_normal((12, 17))
    sol = sirt(op, jnp.asarray(y), relaxation=0.9, max_iter=3)
    np.testing.assert_allclose(np.asarray(sol.x).ravel(), numpy_sart(m, y, 12, [list(range(12))], 3, 0.9),
                               atol=1e-11)
    one_block = sart(op, jnp.asarray(y), block_size=12, relaxation=0.9, max_iter=3)
    np.testing.assert_allclose(sol.x, one_block.x, atol=1e-11)
    sol = sirt(op, jnp.asarray(y), relaxation=1.5, nonnegative=True, max_iter=2)
    expected = numpy_sart(m, y, 12, [list(range(12))], 2, 1.5, nonnegative=True)
    np.testing.assert_allclose(np.asarray(sol.x).ravel(), expected, atol=1e-11)
    assert np.all(np.asarray(sol.x) >= 0) and int(sol.iterations) == 2


def test_sirt_solves_a_consistent_matrix_system_and_vmaps():
    rng = np.random.default_rng(3)
    a = rng.uniform(0, 1, (40, 8)) * (rng.uniform(size=(40, 8)) < 0.6)  # non-negative, some zeros
    a[5] = 0.0  # a ray that misses everything: contributes nothing
    x_true = rng.uniform(0.5, 1.5, 8)
    op, y = MatrixOperator(jnp.asarray(a)), jnp.asarray(a @ x_true)
    sol = jax.jit(lambda y: sirt(op, y, max_iter=4000, tol=1e-13))(y)
    assert bool(sol.converged)
    np.testing.assert_allclose(sol.x, x_true, rtol=1e-9)
    run = jax.jit(jax.vmap(lambda y, w: sirt(op, y, relaxation=w, max_iter=5).x))
    many = run(jnp.stack([y, 2 * y]), jnp.array([0.5, 1.0]))
    np.testing.assert_allclose(many[1], sirt(op, 2 * y, relaxation=1.0, max_iter=5).x, rtol=1e-12)


def test_sirt_on_a_cone_beam_volume():
    from jaxrecon.operators import ConeBeamGeometry, XRayTransform

    geom = ConeBeamGeometry.uniform((8, 8, 8), 16, (20, 20), 24.0, 12.0)
    op = XRayTransform(geom)
    x_true = jnp.zeros((8, 8, 8)).at[2:6, 3:6, 2:5].set(1.0)
    sol = jax.jit(lambda y: sirt(op, y, nonnegative=True, max_iter=60, history=True, reference=x_true))(op(x_true))
    residual, error = np.asarray(sol.history["residual"]), np.asarray(sol.history["error"])
    assert residual[-1] < 0.05 * residual[0] and error[-1] < 0.5 * error[0]
    assert float(sol.x.min()) >= 0


def test_sirt_bad_input(small_ct):
    op, _ = small_ct
    y = jnp.zeros(op.out_shape)
    with pytest.raises(TypeError, match="expects a LinearOperator"):
        sirt(np.eye(3), jnp.zeros(3))
    with pytest.raises(ValueError, match=r"data of shape \(12, 17\) \(op.out_shape\), got \(12, 16\)"):
        sirt(op, jnp.zeros((12, 16)))
    with pytest.raises(ValueError, match=r"x0 of shape \(12, 12\)"):
        sirt(op, y, x0=jnp.zeros((11, 12)))
    with pytest.raises(ValueError, match="0 < relaxation < 2"):
        sirt(op, y, relaxation=2.0)
    with pytest.raises(TypeError, match="real floating-point data"):
        sirt(op, jnp.zeros(op.out_shape, jnp.int32))
