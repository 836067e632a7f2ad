import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrecon.operators import MatrixOperator, ParallelBeamGeometry, RadonTransform, operator_norm
from jaxrecon.solvers import landweber


def well_conditioned(m=30, n=20, seed=0):
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((m, n)))
    v, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return u @ np.diag(np.linspace(1.0, 3.0, n)) @ v.T


def test_converges_to_least_squares():
    a = well_conditioned()
    y = np.random.default_rng(1).standard_normal(30)
    sol = landweber(MatrixOperator(jnp.asarray(a)), jnp.asarray(y), max_iter=400)
    np.testing.assert_allclose(sol.x, np.linalg.lstsq(a, y, rcond=None)[0], atol=1e-10)
    assert int(sol.iterations) == 400 and not bool(sol.converged)


def test_tol_stops_early_and_reports_convergence():
    a = well_conditioned()
    y = np.random.default_rng(1).standard_normal(30)
    sol = landweber(MatrixOperator(jnp.asarray(a)), jnp.asarray(y), max_iter=10_000, tol=1e-12)
    assert bool(sol.converged) and 10 < int(sol.iterations) < 10_000
    np.testing.assert_allclose(sol.x, np.linalg.lstsq(a, y, rcond=None)[0], atol=1e-9)


def test_discrepancy_principle_stops_at_the_first_iterate_below_tau_delta():
    a = well_conditioned()
    rng = np.random.default_rng(2)
    x_true = rng.standard_normal(20)
    noise = rng.standard_normal(30)
    delta = 0.5
    y = a @ x_true + delta * noise / np.linalg.norm(noise)
    op, tau = MatrixOperator(jnp.asarray(a)), 1.2
    sol = landweber(op, jnp.asarray(y), max_iter=500, delta=delta, tau=tau)
    # Reference: run the plain recursion in NumPy and find the first k with ||A x_k - y|| <= tau delta.
    step = 1.0 / float(operator_norm(op)) ** 2
    x, k = np.zeros(20), 0
    while np.linalg.norm(a @ x - y) > tau * delta:
        x, k = x - step * a.T @ (a @ x - y), k + 1
    assert bool(sol.converged) and int(sol.iterations) == k
    np.testing.assert_allclose(sol.x, x, atol=1e-10)
    assert float(sol.residual_norm) <= tau * delta


@pytest.mark.slow
def test_semi_convergence_is_visible_in_the_history():
    n = 32
    geom = ParallelBeamGeometry.uniform((n, n), 12, 46, dtype=jnp.float64)
    op = RadonTransform(geom)
    yy, xx = np.mgrid[:n, :n]
    x_true = ((xx - 15) ** 2 + (yy - 17) ** 2 < 90).astype(float)
    clean = op(jnp.asarray(x_true))
    y = clean + 0.15 * jnp.mean(jnp.abs(clean)) * jax.random.normal(jax.random.PRNGKey(0), clean.shape)
    sol = landweber(op, y, max_iter=400, reference=jnp.asarray(x_true), history=True)
    err = np.asarray(sol.history["error"])
    best = int(np.argmin(err))
    assert 0 < best < 399 and err[-1] > 1.05 * err[best]  # error falls, then rises
    assert np.all(np.diff(np.asarray(sol.history["residual"])) <= 1e-9)  # the residual never rises


def test_vmap_over_data_and_delta():
    op = MatrixOperator(jnp.asarray(well_conditioned()))
    ys = jax.random.normal(jax.random.PRNGKey(0), (4, 30))
    deltas = jnp.array([0.1, 0.5, 1.0, 2.0])
    run = lambda y, d: landweber(op, y, max_iter=300, delta=d)
    batched = jax.vmap(run)(ys, deltas)
    for i in range(4):
        single = run(ys[i], deltas[i])
        np.testing.assert_allclose(batched.x[i], single.x, atol=1e-12)
        assert int(batched.iterations[i]) == int(single.iterations)


def test_gradient_through_fixed_iterations():
    a = jnp.asarray(well_conditioned())
    y = jax.random.normal(jax.random.PRNGKey(0), (30,))
    f = lambda s: jnp.sum(landweber(MatrixOperator(a), y, step=s, max_iter=20).x ** 2)
    g = jax.grad(f)(0.05)
    np.testing.assert_allclose(g, (f(0.05 + 1e-6) - f(0.05 - 1e-6)) / 2e-6, rtol=1e-6)


def test_bad_input():
    op = MatrixOperator(jnp.ones((3, 2)))
    with pytest.raises(ValueError, match=r"data of shape \(3,\), got \(2,\)"):
        landweber(op, jnp.ones(2))
    with pytest.raises(ValueError, match="max_iter must be a positive int, got 0"):
        landweber(op, jnp.ones(3), max_iter=0)
    with pytest.raises(ValueError, match="delta must be finite and non-negative"):
        landweber(op, jnp.ones(3), delta=-1.0)


def test_jit_with_default_parameters():
    # Parameter checks must not call bool() on jnp values: jnp ops are traced inside jit.
    op = MatrixOperator(jnp.asarray(well_conditioned()))
    y = jax.random.normal(jax.random.PRNGKey(0), (30,))
    np.testing.assert_allclose(jax.jit(lambda y: landweber(op, y, delta=0.1, tol=1e-9).x)(y),
                               landweber(op, y, delta=0.1, tol=1e-9).x, atol=1e-12)
