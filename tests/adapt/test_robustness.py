"""Worst-case perturbations (Antun et al.): for a linear reconstructor f(y) = B y the constrained worst
case is known in closed form (eps ||x|| ||B A||_2 at the top right singular vector of B A, from NumPy's
SVD); a learned (nonlinear) scheme on CT: worse than random perturbations of the same norm."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrecon.adapt.robustness import Perturbation, random_perturbation, worst_case_perturbation
from jaxrecon.nets.unrolled import UnrolledPGD
from jaxrecon.operators import MatrixOperator, ParallelBeamGeometry, RadonTransform
from jaxrecon.phantoms import shepp_logan

RNG = np.random.default_rng(0)
A = RNG.standard_normal((12, 8))
B = RNG.standard_normal((8, 12))
OP = MatrixOperator(jnp.asarray(A))
X = RNG.standard_normal(8)
Y = OP(jnp.asarray(X))
X_NORM = float(np.linalg.norm(X))
_, S, VT = np.linalg.svd(B @ A)


def linear(y):
    return jnp.asarray(B) @ y


def _cos(r, v):
    return abs(float(np.dot(np.asarray(r), v))) / float(np.linalg.norm(np.asarray(r)) * np.linalg.norm(v))


def test_constrained_worst_case_of_a_linear_reconstructor_is_the_top_singular_vector():
    eps = 0.1
    w = worst_case_perturbation(linear, Y, OP, eps=eps, x_norm=X_NORM, steps=100)
    assert isinstance(w, Perturbation)
    np.testing.assert_allclose(float(w.error), eps * X_NORM * S[0], rtol=1e-6)
    assert _cos(w.r, VT[0]) > 1 - 1e-6
    np.testing.assert_allclose(float(w.size["r"]), eps * X_NORM, rtol=1e-10)
    np.testing.assert_allclose(float(w.size["relative"]), eps, rtol=1e-10)
    np.testing.assert_allclose(float(w.size["Ar"]), np.linalg.norm(A @ np.asarray(w.r)), rtol=1e-10)
    np.testing.assert_allclose(float(w.size["relative_data"]), float(w.size["Ar"]) / np.linalg.norm(np.asarray(Y)), rtol=1e-10)
    assert w.history["error"].shape == (100,)
    assert float(jnp.max(w.history["norm"])) <= eps * X_NORM * (1 + 1e-12)  # stays in the ball
    # a random perturbation of the same norm does less harm; it is Gaussian on the sphere
    rand = jax.vmap(lambda k: random_perturbation(linear, Y, OP, eps=eps, x_norm=X_NORM, key=k))(
        jax.random.split(jax.random.key(1), 20)
    )
    np.testing.assert_allclose(rand.size["r"], eps * X_NORM, rtol=1e-10)
    np.testing.assert_allclose(rand.error, np.linalg.norm(B @ A @ np.asarray(rand.r).T, axis=0), rtol=1e-10)
    assert float(jnp.max(rand.error)) < float(w.error)


def test_signed_steps_and_the_default_norm():
    w = worst_case_perturbation(linear, Y, OP, eps=0.1, steps=100, method="signed")
    x_norm = np.linalg.norm(B @ np.asarray(Y))  # default ||x|| = ||f(y)||
    np.testing.assert_allclose(float(w.size["x"]), x_norm, rtol=1e-12)
    assert float(w.size["r"]) <= 0.1 * x_norm * (1 + 1e-12)
    assert float(w.error) > 0.75 * 0.1 * x_norm * S[0]  # l-infinity steps: cruder in the l2 ball (81% here)


def test_penalised_worst_case_grows_along_the_top_singular_vector():
    lam = 0.5 * S[0] ** 2  # below ||BA||^2: the objective grows without bound along v_1
    w = worst_case_perturbation(linear, Y, OP, lam=lam, x_norm=X_NORM, steps=100)
    assert _cos(w.r, VT[0]) > 0.999
    r = np.asarray(w.r)
    objective = np.sum((B @ A @ r) ** 2) - lam * np.sum(r**2)
    assert objective > 0 and float(w.history["objective"][-1]) > float(w.history["objective"][0])
    # above ||BA||^2 the best perturbation is ~0: the returned objective is never below the start's
    w = worst_case_perturbation(linear, Y, OP, lam=2 * S[0] ** 2, x_norm=X_NORM, steps=20)
    assert float(jnp.max(w.history["objective"])) <= 1e-12


@pytest.mark.slow
def test_learned_scheme_on_ct_is_hurt_more_by_the_worst_case_than_by_random_noise():
    op = RadonTransform(ParallelBeamGeometry.uniform((16, 16), 8))
    model = UnrolledPGD(op, num_iterations=2, dtype=jnp.float64)
    x = shepp_logan(16, dtype=jnp.float64)
    y = op(x)
    rec = lambda y: model(y, op)
    w = worst_case_perturbation(rec, y, op, eps=0.02, x_norm=jnp.linalg.norm(x), steps=20)
    rand = random_perturbation(rec, y, op, eps=0.02, x_norm=jnp.linalg.norm(x), key=jax.random.key(3))
    assert float(w.size["r"]) <= 0.02 * float(jnp.linalg.norm(x)) * (1 + 1e-12)
    np.testing.assert_allclose(float(w.error), float(jnp.linalg.norm(rec(y + op(w.r)) - rec(y))), rtol=1e-10)
    assert float(w.error) > 2 * float(rand.error)


def test_bad_input():
    with pytest.raises(ValueError, match="exactly one of lam"):
        worst_case_perturbation(linear, Y, OP)
    with pytest.raises(ValueError, match="exactly one of lam"):
        worst_case_perturbation(linear, Y, OP, lam=1.0, eps=0.1)
    with pytest.raises(TypeError, match="callable"):
        worst_case_perturbation("fbp", Y, OP, eps=0.1)
    with pytest.raises(ValueError, match=r"shape op.out_shape = \(12,\)"):
        worst_case_perturbation(linear, Y[:5], OP, eps=0.1)
    with pytest.raises(ValueError, match="method"):
        worst_case_perturbation(linear, Y, OP, eps=0.1, method="adam")
    with pytest.raises(ValueError, match="step_size"):
        worst_case_perturbation(linear, Y, OP, eps=0.1, method="gradient")
    with pytest.raises(ValueError, match="eps > 0"):
        random_perturbation(linear, Y, OP, eps=-0.1)
    with pytest.raises(ValueError, match="x_norm"):
        worst_case_perturbation(lambda y: jnp.zeros(8), Y, OP, eps=0.1)
