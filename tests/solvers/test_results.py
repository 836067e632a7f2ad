"""Every iterative solver reports how it ended: `Solution.result` codes (`RESULTS`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrecon.operators import MatrixOperator, ParallelBeamGeometry, RadonTransform
from jaxrecon.solvers import (
    RESULTS,
    banach_landweber,
    cgls,
    fista,
    ista,
    kaczmarz,
    landweber,
    nonnegative_tikhonov,
    sgd,
    tv_denoise,
    tv_pdhg,
)

A = np.random.default_rng(0).standard_normal((24, 16)) / 4
OP = MatrixOperator(jnp.asarray(A))
Y = jnp.asarray(A @ np.linspace(0, 1, 16))
RADON = RadonTransform(ParallelBeamGeometry.uniform((8, 8), 6, 12))  # 2D images for TV
Y_IMAGE = RADON(jnp.asarray(np.random.default_rng(2).random((8, 8))))


def _solvers(**rule):
    """(name, f(y)) for every solver, with the stopping rule `rule` (tol=...) or none."""
    return [
        ("landweber", lambda y: landweber(OP, y, max_iter=50, **rule)),
        ("cgls", lambda y: cgls(OP, y, max_iter=50, **rule)),
        ("banach_landweber", lambda y: banach_landweber(OP, y, 1.5, max_iter=50, **rule)),
        ("kaczmarz", lambda y: kaczmarz(OP, y, max_iter=20, **rule)),
        ("sgd", lambda y: sgd(OP, y, batch_size=4, key=jax.random.PRNGKey(0), max_iter=50, **rule)),
        ("ista", lambda y: ista(OP, y, 0.01, max_iter=50, **rule)),
        ("fista", lambda y: fista(OP, y, 0.01, max_iter=50, **rule)),
        ("nonnegative_tikhonov", lambda y: nonnegative_tikhonov(OP, y, 0.1, max_iter=50, **rule)),
        ("tv_pdhg", lambda y: tv_pdhg(RADON, Y_IMAGE.ravel().at[: y.size].set(y).reshape(6, 12), 0.01,
                                     max_iter=50, **rule)),
    ]


@pytest.mark.slow
@pytest.mark.parametrize("name, solve", _solvers(), ids=[n for n, _ in _solvers()])
def test_fixed_iterations_and_nonfinite_data(name, solve):
    assert solve(Y).status == "fixed_iterations"
    bad = Y.at[3].set(jnp.nan)
    s = solve(bad)
    assert s.status == "nonfinite" and not bool(s.converged), name
    assert solve(Y.at[0].set(jnp.inf)).status == "nonfinite", name


@pytest.mark.parametrize("name, solve", _solvers(tol=1e-3), ids=[n for n, _ in _solvers()])
def test_converged_or_max_iterations_with_a_rule(name, solve):
    s = solve(Y)
    assert s.status == ("converged" if bool(s.converged) else "max_iterations"), name
    assert int(s.result) == RESULTS.index(s.status)


def test_converged_and_max_iterations_are_told_apart():
    assert cgls(OP, Y, tol=1e-6, max_iter=100).status == "converged"
    assert landweber(OP, Y, tol=1e-12, max_iter=3).status == "max_iterations"


def test_diverged_landweber_step_above_the_stability_limit():
    norm = float(np.linalg.norm(A, 2))
    s = landweber(OP, Y, step=3.0 / norm**2, max_iter=40)  # > 2/||A||^2: grows geometrically
    assert s.status == "diverged" and bool(jnp.all(jnp.isfinite(s.x)))
    assert landweber(OP, Y, step=3.0 / norm**2, max_iter=3000).status == "nonfinite"  # overflowed


def test_tv_denoise_and_vmapped_status():
    f = jnp.asarray(np.random.default_rng(1).random((8, 8)))
    assert tv_denoise(f, 0.1, max_iter=20).status == "fixed_iterations"
    assert tv_denoise(f.at[2, 2].set(jnp.nan), 0.1, max_iter=20).status == "nonfinite"
    ys = jnp.stack([Y, Y.at[1].set(jnp.nan)])
    batch = jax.vmap(lambda y: cgls(OP, y, max_iter=10))(ys)
    assert batch.status == ["fixed_iterations", "nonfinite"]
