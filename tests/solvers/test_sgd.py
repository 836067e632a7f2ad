import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxrecon.operators import MatrixOperator, ParallelBeamGeometry, RadonTransform
from jaxrecon.solvers.sgd import minibatch_gradient, sgd
from jaxrecon.solvers.tikhonov import as_matrix


def consistent_system(m=60, n=10, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, n))
    x_true = rng.standard_normal(n)
    return a, x_true, a @ x_true


@pytest.fixture(scope="module")
def small_ct():
    geom = ParallelBeamGeometry.uniform((10, 10), 12, 15, dtype=jnp.float64)
    return RadonTransform(geom)  # full column rank


def test_minibatch_gradient_of_rows_is_unbiased():
    rng = np.random.default_rng(1)
    a, y, x = rng.standard_normal((7, 4)), rng.standard_normal(7), rng.standard_normal(4)
    op = MatrixOperator(jnp.asarray(a))
    grad = jax.jit(lambda b: minibatch_gradient(op, jnp.asarray(y), jnp.asarray(x), b))
    subsets = np.array(list(itertools.combinations(range(7), 3)))  # all 35 batches of 3
    mean = np.mean([np.asarray(grad(jnp.asarray(s))) for s in subsets], axis=0)
    np.testing.assert_allclose(mean, a.T @ (a @ x - y), atol=1e-12)
    # One batch alone is not the full gradient.
    assert np.linalg.norm(np.asarray(grad(jnp.asarray(subsets[0]))) - a.T @ (a @ x - y)) > 0.1


def test_minibatch_gradient_of_angles_is_unbiased(small_ct):
    op = small_ct
    m = np.asarray(as_matrix(op))  # (12 * 15, 100)
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((10, 10)), rng.standard_normal((12, 15))
    subsets = jnp.asarray(list(itertools.combinations(range(12), 2)))  # all 66 pairs of angles
    grads = jax.vmap(lambda b: minibatch_gradient(op, jnp.asarray(y), jnp.asarray(x), b))(subsets)
    full = (m.T @ (m @ x.ravel() - y.ravel())).reshape(10, 10)
    np.testing.assert_allclose(np.mean(np.asarray(grads), axis=0), full, atol=1e-10)
    # Each pair's gradient uses only its own rows of the dense matrix, scaled by 12 / 2.
    rows = np.concatenate([np.arange(15 * a, 15 * (a + 1)) for a in (1, 7)])
    expected = 6.0 * (m[rows].T @ (m[rows] @ x.ravel() - y.ravel()[rows])).reshape(10, 10)
    np.testing.assert_allclose(grads[list(map(tuple, np.asarray(subsets))).index((1, 7))], expected, atol=1e-10)


def test_sampled_batches_give_the_full_gradient_on_average():
    # One SGD step of size 1 from x0 moves by the mini-batch gradient; averaged over many keys it is
    # the full gradient (checks the sampler, not just the scaling).
    a, _, _ = consistent_system(m=20, n=5)
    rng = np.random.default_rng(3)
    y, x0 = rng.standard_normal(20), rng.standard_normal(5)
    op = MatrixOperator(jnp.asarray(a))
    keys = jax.random.split(jax.random.PRNGKey(0), 4000)
    steps = jax.vmap(lambda k: jnp.asarray(x0) - sgd(op, jnp.asarray(y), x0=jnp.asarray(x0), batch_size=4, key=k, step=1.0, max_iter=1).x)(keys)
    steps = np.asarray(steps)
    full = a.T @ (a @ x0 - y)
    stderr = steps.std(axis=0) / np.sqrt(len(keys))
    assert np.all(np.abs(steps.mean(axis=0) - full) < 4 * stderr)


def test_sgd_converges_on_a_consistent_system():
    a, x_true, y = consistent_system()
    op = MatrixOperator(jnp.asarray(a))
    key = jax.random.PRNGKey(0)
    schedule = optax.exponential_decay(0.01, transition_steps=500, decay_rate=0.5)
    sol = sgd(op, jnp.asarray(y), batch_size=6, key=key, step=schedule, max_iter=2000,
              reference=jnp.asarray(x_true), history=True)
    err = np.asarray(sol.history["error"])
    assert err[99] < 1e-3 * err[0] and err[-1] < 1e-12 * err[0]  # measured: 2.8 -> 1.2e-7 -> 1e-16
    np.testing.assert_allclose(np.asarray(sol.history["step"])[[0, 500, 1000]], [0.01, 0.005, 0.0025], rtol=1e-12)
    # The default constant step (stable for every batch) converges too, more slowly.
    sol = sgd(op, jnp.asarray(y), batch_size=6, key=key, max_iter=2000)
    np.testing.assert_allclose(sol.x, x_true, atol=1e-8)


def test_sgd_needs_a_decaying_step_on_noisy_data():
    # Inconsistent data: a constant step stalls at a noise floor around the least-squares solution,
    # a decaying step converges to it.
    a, x_true, y = consistent_system()
    y = y + 0.3 * np.random.default_rng(5).standard_normal(60)
    x_ls = jnp.asarray(np.linalg.lstsq(a, y, rcond=None)[0])
    op, key = MatrixOperator(jnp.asarray(a)), jax.random.PRNGKey(0)
    run = lambda step: np.asarray(
        sgd(op, jnp.asarray(y), batch_size=6, key=key, step=step, max_iter=3000, reference=x_ls, history=True).history["error"]
    )
    constant, decaying = run(0.005), run(optax.exponential_decay(0.01, 300, 0.5))
    assert constant[-1] > 0.02 * constant[0]  # measured: 2.6 -> 0.2
    assert decaying[-1] < 0.005 * decaying[0] and decaying[-1] < 0.1 * constant[-1]  # measured: 2.8 -> 0.005


@pytest.mark.slow
def test_sgd_on_angles_reduces_the_error(small_ct):
    op = small_ct  # full column rank: x_true is the least-squares solution
    yy, xx = np.mgrid[:10, :10]
    x_true = ((xx - 4.5) ** 2 + (yy - 5) ** 2 < 12).astype(float)
    y = op(jnp.asarray(x_true))
    sol = sgd(op, y, batch_size=2, key=jax.random.PRNGKey(1), max_iter=600, reference=jnp.asarray(x_true), history=True)
    err, res = np.asarray(sol.history["error"]), np.asarray(sol.history["residual"])
    # Measured: error 4.5 -> 0.72, residual 30 -> 0.2 (slow along the smallest singular values).
    assert err[-1] < 0.2 * np.linalg.norm(x_true) and res[-1] < 0.01 * float(jnp.linalg.norm(y))
    assert err[-1] < 0.8 * err[99] and res[-1] < 0.5 * res[99]


def test_sgd_vmap_over_data_and_keys():
    a, _, _ = consistent_system()
    op = MatrixOperator(jnp.asarray(a))
    ys = jax.random.normal(jax.random.PRNGKey(0), (3, 60))
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    run = lambda y, k: sgd(op, y, batch_size=5, key=k, step=1e-3, max_iter=200)
    batched = jax.jit(jax.vmap(run))(ys, keys)
    for i in range(3):
        single = jax.jit(run)(ys[i], keys[i])
        np.testing.assert_allclose(batched.x[i], single.x, atol=1e-12)
        np.testing.assert_allclose(batched.residual_norm[i], single.residual_norm, rtol=1e-12)


def test_sgd_gradient_through_fixed_iterations_and_stopping():
    a, _, y = consistent_system()
    op, key = MatrixOperator(jnp.asarray(a)), jax.random.PRNGKey(0)
    f = jax.jit(lambda s: jnp.sum(sgd(op, jnp.asarray(y), batch_size=5, key=key, step=s, max_iter=20).x ** 2))
    np.testing.assert_allclose(jax.grad(f)(2e-3), (f(2e-3 + 1e-8) - f(2e-3 - 1e-8)) / 2e-8, rtol=1e-6)
    delta = 1e-2 * float(np.linalg.norm(y))
    sol = sgd(op, jnp.asarray(y), batch_size=5, key=key, step=2e-3, max_iter=2000, delta=delta)
    assert bool(sol.converged) and 0 < int(sol.iterations) < 2000 and float(sol.residual_norm) <= delta


def test_sgd_bad_input(small_ct):
    op = MatrixOperator(jnp.ones((6, 2)))
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match=r"batch_size in \[1, 6\] \(the number of rows\), got 7"):
        sgd(op, jnp.ones(6), batch_size=7, key=key)
    with pytest.raises(ValueError, match=r"batch_size in \[1, 12\] \(the number of angles\), got 0"):
        sgd(small_ct, jnp.ones((12, 15)), batch_size=0, key=key)
    with pytest.raises(ValueError, match="needs a PRNG key"):
        sgd(op, jnp.ones(6), batch_size=2, key=None)
    with pytest.raises(ValueError, match=r"sgd expects data of shape \(6,\), got \(5,\)"):
        sgd(op, jnp.ones(5), batch_size=2, key=key)
    with pytest.raises(ValueError, match="step must be finite and non-negative"):
        sgd(op, jnp.ones(6), batch_size=2, key=key, step=-1.0)
    with pytest.raises(TypeError, match="sgd expects a MatrixOperator or a RadonTransform, got IdentityOperator"):
        from jaxrecon.operators import IdentityOperator

        sgd(IdentityOperator((3,)), jnp.ones(3), batch_size=1, key=key)
