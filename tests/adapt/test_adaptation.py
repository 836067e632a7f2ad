"""Model adaptation (Gilton et al. 2021): the scanned optax loop against a plain Python loop over the
same objective written out independently, vmap over measurements against separate calls, the effect
of the proximity weight, calibration of an unknown angle offset and centre shift from
measurements simulated with the shifted operator, and reuse-and-regularise against its objective."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxrecon.adapt.adaptation import (
    TikhonovSolver,
    adapt_to_dataset,
    adapt_to_measurement,
    calibrate_operator,
    naive,
    reuse_and_regularise,
)
from jaxrecon.adapt.operators import AngleOffset, BlurWidth, CentreShift, Combined
from jaxrecon.nets.unrolled import UnrolledPGD
from jaxrecon.operators import ParallelBeamGeometry, RadonTransform
from jaxrecon.phantoms import random_ellipses

N = 16
GEOM = ParallelBeamGeometry.uniform((N, N), 12)
FAMILY = Combined({"angle": AngleOffset(GEOM), "shift": CentreShift(GEOM)})
TRUE = {"angle": jnp.asarray(0.1), "shift": jnp.asarray(1.5)}
OP1 = FAMILY.operator(TRUE)  # the changed operator
XS = jax.vmap(lambda k: random_ellipses(k, (N, N)))(jax.random.split(jax.random.key(0), 4)).astype(jnp.float64)
YS = jax.vmap(OP1)(XS)
OPT = optax.adam(3e-3)  # one object: compiled loops are reused across calls


class Tiny(eqx.Module):
    """A two-parameter learned scheme (cheap to compile): a scaled backprojection, then one Landweber step."""

    w: jax.Array

    def __call__(self, y, op):
        x = self.w[0] * op.T(y) / 100
        return x - self.w[1] * op.T(op(x) - y) / 400


MODEL = Tiny(jnp.asarray([1.0, 1.0]))


def _params(model):
    return eqx.filter(model, eqx.is_inexact_array)


def _reference_loss(params, static, theta0, y, op, mu):
    """||y - A f(y; theta, A)||^2 + mu ||theta - theta0||^2, written out independently."""
    x = eqx.combine(params, static)(y, op)
    fit = jnp.sum((y - op(x)) ** 2)
    pen = sum(jnp.sum((a - b) ** 2) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(theta0)))
    return fit + mu * pen


def _assert_trees_close(a, b, rtol=1e-9, atol=1e-12):
    for u, v in zip(jax.tree.leaves(_params(a)), jax.tree.leaves(_params(b)), strict=True):
        np.testing.assert_allclose(u, v, rtol=rtol, atol=atol)


def test_naive_is_the_model_with_the_new_operator():
    np.testing.assert_array_equal(naive(MODEL, YS[0], OP1), MODEL(YS[0], OP1))


@pytest.mark.slow
def test_adapt_to_measurement_matches_a_python_loop():
    steps, mu = 3, 0.5
    model = UnrolledPGD(RadonTransform(GEOM), num_iterations=2, dtype=jnp.float64)
    adapted, hist = adapt_to_measurement(model, YS[0], OP1, mu=mu, steps=steps, optimizer=OPT)
    # reference: eager Python loop over optax steps
    params, static = eqx.partition(model, eqx.is_inexact_array)
    theta0, state = params, OPT.init(params)
    value_and_grad = jax.jit(jax.value_and_grad(_reference_loss))
    losses = []
    for _ in range(steps):
        loss, g = value_and_grad(params, static, theta0, YS[0], OP1, mu)
        losses.append(float(loss))
        updates, state = OPT.update(g, state, params)
        params = optax.apply_updates(params, updates)
    _assert_trees_close(adapted, eqx.combine(params, static))
    np.testing.assert_allclose(hist["loss"], losses, rtol=1e-10)
    np.testing.assert_allclose(hist["loss"], hist["data_fit"] + mu * hist["penalty"], rtol=1e-12)
    assert hist["penalty"][0] == 0.0 and hist["data_fit"][-1] < hist["data_fit"][0]


@pytest.mark.slow
def test_adapt_to_measurement_vmaps_over_measurements():
    steps, mu = 5, 0.5
    batched, bh = jax.vmap(lambda y: adapt_to_measurement(MODEL, y, OP1, mu=mu, steps=steps, optimizer=OPT))(YS[:2])
    for i in range(2):
        single, sh = adapt_to_measurement(MODEL, YS[i], OP1, mu=mu, steps=steps, optimizer=OPT)
        _assert_trees_close(jax.tree.map(lambda a: a[i], batched), single)
        np.testing.assert_allclose(bh["data_fit"][i], sh["data_fit"], rtol=1e-9)
    assert not np.allclose(batched.w[0], batched.w[1])  # each measurement got its own model


@pytest.mark.slow
def test_proximity_weight_and_progress(capsys):
    steps = 40
    free, hf = adapt_to_measurement(MODEL, YS[0], OP1, mu=0.0, steps=steps, optimizer=OPT, progress=True)
    tied, ht = adapt_to_measurement(MODEL, YS[0], OP1, mu=1e4, steps=steps, optimizer=OPT)
    assert "adapting" in capsys.readouterr().err
    dist = lambda m: sum(float(jnp.sum((a - b) ** 2)) for a, b in zip(jax.tree.leaves(_params(m)), jax.tree.leaves(_params(MODEL))))
    assert dist(tied) < 0.1 * dist(free)
    # the chunked (progress) run computes the same as a single scan
    plain, hp = adapt_to_measurement(MODEL, YS[0], OP1, mu=0.0, steps=steps, optimizer=OPT)
    _assert_trees_close(free, plain)
    np.testing.assert_allclose(hf["loss"], hp["loss"], rtol=1e-10)


@pytest.mark.slow
def test_adapt_to_dataset_recovers_angle_offset_and_centre_shift():
    adapted, phi, hist = adapt_to_dataset(
        MODEL, YS, FAMILY, mu=0.1, steps=8, optimizer=OPT, calibration_steps=150,
        calibration_optimizer=optax.adam(0.02),
    )
    assert abs(float(phi["angle"]) - 0.1) < 0.01, phi
    assert abs(float(phi["shift"]) - 1.5) < 0.15, phi
    cal = hist["calibration"]
    assert cal["data_fit"].shape == (150,) and cal["phi"]["angle"].shape == (150,)
    assert cal["data_fit"][-1] < 1e-2 * cal["data_fit"][0]
    assert hist["data_fit"].shape == (8,)
    # the adapted model fits the data better under the calibrated operator than the original one
    op = FAMILY.operator(phi)
    fit = lambda m: float(jnp.mean(jax.vmap(lambda y: jnp.sum((y - op(m(y, op))) ** 2))(YS)))
    assert fit(adapted) < fit(MODEL)


def test_adapt_to_dataset_with_one_measurement_is_adapt_to_measurement():
    family = BlurWidth((N, N), 5, sigma=1.0)  # any family; a blur compiles fast
    op = family.operator(1.5)
    y = op(XS[0])[None]
    a, phi, hist = adapt_to_dataset(MODEL, y, family, 1.5, mu=0.5, steps=3, optimizer=OPT, learn_operator=False)
    b, hb = adapt_to_measurement(MODEL, y[0], op, mu=0.5, steps=3, optimizer=OPT)
    assert float(phi) == 1.5 and "calibration" not in hist
    _assert_trees_close(a, b)
    np.testing.assert_allclose(hist["loss"], hb["loss"], rtol=1e-10)


def test_joint_refinement_moves_the_operator_parameter():
    family = BlurWidth((N, N), 5, sigma=1.0)
    ys = jax.vmap(family.operator(1.5))(XS[:2])
    _, phi, hist = adapt_to_dataset(
        MODEL, ys, family, 1.3, mu=0.1, steps=5, batch_size=1, optimizer=OPT, learn_operator=False, joint=True,
        key=jax.random.key(2),
    )
    assert hist["phi"].shape == (5,) and float(hist["phi"][0]) == pytest.approx(1.3)
    assert np.isfinite(float(phi)) and float(phi) != pytest.approx(1.3, abs=1e-4)


OP0 = RadonTransform(GEOM)  # the operator MODEL is "trained" for


def _rr_reference(x, y, op, op0, lam):
    """||y - A1 x||^2 + lam ||x - f(A0 x)||^2, written out independently."""
    return jnp.sum((op(x) - y) ** 2) + lam * jnp.sum((MODEL(op0(x), op0) - x) ** 2)


@pytest.mark.slow
def test_reuse_and_regularise_matches_a_python_loop():
    steps, lam = 4, 30.0
    x, hist = reuse_and_regularise(MODEL, YS[0], OP1, OP0, lam=lam, steps=steps, optimizer=OPT)
    ref = MODEL(YS[0], OP1)  # default start: the naive reconstruction
    state = OPT.init(ref)
    value_and_grad = jax.jit(jax.value_and_grad(_rr_reference))
    losses = []
    for _ in range(steps):
        loss, g = value_and_grad(ref, YS[0], OP1, OP0, lam)
        losses.append(float(loss))
        updates, state = OPT.update(g, state, ref)
        ref = optax.apply_updates(ref, updates)
    np.testing.assert_allclose(x, ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(hist["loss"], losses, rtol=1e-10)
    np.testing.assert_allclose(hist["loss"], hist["data_fit"] + lam * hist["penalty"], rtol=1e-12)


@pytest.mark.slow
def test_reuse_and_regularise_minimises_its_objective_and_vmaps():
    steps, lam = 60, 30.0
    opt = optax.adam(1e-2)
    xs, hist = jax.vmap(lambda y: reuse_and_regularise(MODEL, y, OP1, OP0, lam=lam, steps=steps, optimizer=opt))(YS[:2])
    assert np.all(hist["loss"][:, -1] < 0.5 * hist["loss"][:, 0])
    for i in range(2):
        x, h = reuse_and_regularise(MODEL, YS[i], OP1, OP0, lam=lam, steps=steps, optimizer=opt)
        np.testing.assert_allclose(xs[i], x, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(hist["loss"][i], h["loss"], rtol=1e-9)
    # lam = 0 from x0 = 0 is least squares: the data misfit falls; a huge lam fits the penalty instead
    zero = jnp.zeros((N, N))
    _, free = reuse_and_regularise(MODEL, YS[0], OP1, OP0, lam=0.0, steps=steps, optimizer=opt, x0=zero)
    assert free["data_fit"][-1] < 0.1 * free["data_fit"][0] and np.all(free["loss"] == free["data_fit"])
    _, tied = reuse_and_regularise(MODEL, YS[0], OP1, OP0, lam=1e6, steps=steps, optimizer=opt)
    assert tied["penalty"][-1] < 0.1 * tied["penalty"][0]


def test_bad_input():
    with pytest.raises(TypeError, match="LinearOperator"):
        adapt_to_measurement(MODEL, YS[0], "op")
    with pytest.raises(ValueError, match=r"shape \(12, 23\)"):
        adapt_to_measurement(MODEL, YS[:2], OP1)
    with pytest.raises(ValueError, match="mu >= 0"):
        adapt_to_measurement(MODEL, YS[0], OP1, mu=-1.0)
    with pytest.raises(ValueError, match="steps"):
        adapt_to_measurement(MODEL, YS[0], OP1, steps=0)
    with pytest.raises(TypeError, match="optax"):
        adapt_to_measurement(MODEL, YS[0], OP1, optimizer="adam")
    with pytest.raises(ValueError, match="floating-point array"):
        adapt_to_measurement(lambda y, op: op.T(y), YS[0], OP1)
    with pytest.raises(TypeError, match="OperatorFamily"):
        calibrate_operator(YS, OP1)
    with pytest.raises(ValueError, match=r"\(N, \*\(12, 23\)\)"):
        calibrate_operator(YS[0], FAMILY)
    with pytest.raises(ValueError, match="structured like"):
        calibrate_operator(YS, FAMILY, 0.0)
    with pytest.raises(ValueError, match="batch_size"):
        adapt_to_dataset(MODEL, YS, FAMILY, batch_size=5)
    with pytest.raises(ValueError, match="alpha"):
        TikhonovSolver(-1.0)
    with pytest.raises(TypeError, match="op0"):
        reuse_and_regularise(MODEL, YS[0], OP1, None)
    with pytest.raises(ValueError, match=r"op0 with the images of op, in_shape \(16, 16\)"):
        reuse_and_regularise(MODEL, YS[0], OP1, RadonTransform(ParallelBeamGeometry.uniform((8, 8), 4)))
    with pytest.raises(ValueError, match="lam >= 0"):
        reuse_and_regularise(MODEL, YS[0], OP1, OP0, lam=-1.0)
    with pytest.raises(ValueError, match=r"x0, an image of shape \(16, 16\)"):
        reuse_and_regularise(MODEL, YS[0], OP1, OP0, x0=jnp.zeros((4, 4)))
