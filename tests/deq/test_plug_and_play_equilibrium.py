"""Plug-and-play fixed points through `jaxrecon.deq`: `DEProx` with `weight=None` is PnP-PGD and
`EquilibriumRegularisation` with G = I - D is RED. Checked against the explicit solvers of
`jaxrecon.solvers` (same fixed point) and against reverse-mode gradients through a long unrolled
`pnp_pgd` / `red` run (the implicit gradient must equal the limit of the unrolled one)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _image_matrix import ImageMatrix
from jaxrecon.deq import DEProx, EquilibriumRegularisation, spectral_normalise
from jaxrecon.nets import LipschitzCNN
from jaxrecon.operators import ParallelBeamGeometry, RadonTransform
from jaxrecon.phantoms import shepp_logan
from jaxrecon.solvers import as_matrix, pnp_pgd, red

F64 = jnp.float64
N = 12
X = shepp_logan(N, dtype=F64)
A = np.asarray(as_matrix(RadonTransform(ParallelBeamGeometry.uniform((N, N), 8)), dtype=F64))


OP = ImageMatrix(jnp.asarray(A), (N, N))
Y = OP(X) + 0.02 * jax.random.normal(jax.random.key(1), OP.out_shape, F64)
# A 0.8-Lipschitz CNN denoiser: PnP-PGD contracts for s < 2/||A||^2. The schemes normalise its raw
# weights once per call; the explicit solvers get `spectral_normalise(net)`, the same function of them.
NET = LipschitzCNN(1, 3, 2, lipschitz=0.8, residual=False, key=jax.random.key(0), dtype=F64)


def _as_image_map(net):  # the normalised (1, H, W) network as the solvers' (H, W) -> (H, W) denoiser
    return eqx.Partial(lambda n, v: n(v[None])[0], spectral_normalise(net, (N, N)))


@pytest.mark.slow  # ~10 s idle, 30 s under load: the RED test below keeps the idea in the default run
def test_deprox_is_pnp_pgd_and_its_implicit_gradient_is_the_unrolled_limit():
    model = DEProx(OP, NET, weight=None, step=1.0, init="zero", tol=1e-13, max_iter=400, backward_tol=1e-13)
    step = float(model.step) / float(model.op_norm) ** 2  # the same PnP step in the solver's units

    @eqx.filter_jit
    def implicit(net, y):
        m = eqx.tree_at(lambda m: m.regulariser, model, net)
        return jnp.sum((m(y, OP) - X) ** 2), m.solve(y, OP)

    @eqx.filter_jit
    def unrolled(net, y):  # 300 plain iterations from zero (a lax.scan): contraction 0.8^300 ~ 1e-29
        sol = pnp_pgd(OP, y, _as_image_map(net), step=step, x0=jnp.zeros((N, N), F64), max_iter=300)
        return jnp.sum((sol.x - X) ** 2), sol

    (v_imp, sol_imp), g_imp = eqx.filter_value_and_grad(implicit, has_aux=True)(NET, Y)
    (v_unr, sol_unr), g_unr = eqx.filter_value_and_grad(unrolled, has_aux=True)(NET, Y)
    assert bool(sol_imp.converged) and int(sol_imp.iterations) < 400
    np.testing.assert_allclose(sol_imp.z, sol_unr.x, rtol=0, atol=1e-11 * float(jnp.abs(sol_unr.x).max()))
    np.testing.assert_allclose(v_imp, v_unr, rtol=1e-10)
    leaves_imp, leaves_unr = jax.tree.leaves(g_imp), jax.tree.leaves(g_unr)
    assert len(leaves_imp) == len(leaves_unr) > 0
    for a, b in zip(leaves_imp, leaves_unr):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9 * float(jnp.abs(b).max()))
    # and with respect to the data
    gy_imp = jax.grad(lambda y: implicit(NET, y)[0])(Y)
    gy_unr = jax.grad(lambda y: unrolled(NET, y)[0])(Y)
    np.testing.assert_allclose(gy_imp, gy_unr, rtol=1e-7, atol=1e-9 * float(jnp.abs(gy_unr).max()))


@pytest.mark.slow
def test_equilibrium_regularisation_with_residual_denoiser_is_red():
    """RED's stationarity A^T(Ax - y) + alpha (x - D(x)) = 0 is the equation EquilibriumRegularisation
    solves with G(x) = x - D(x); D 0.8-Lipschitz makes G strongly monotone (unique solution)."""
    alpha = 3.0
    residual = eqx.Partial(lambda n, v: v - n(v), NET)  # G = I - D on (1, H, W)
    model = EquilibriumRegularisation(OP, residual, alpha=alpha, init="zero", tol=1e-13, max_iter=2000,
                                      backward_tol=1e-13)
    sol = eqx.filter_jit(lambda m, y: m.solve(y, OP))(model, Y)
    assert bool(sol.converged)
    reference = jax.jit(lambda y: red(OP, y, _as_image_map(NET), alpha, max_iter=20_000, tol=1e-14))(Y)
    assert bool(reference.converged)
    np.testing.assert_allclose(sol.z, reference.x, rtol=0, atol=1e-9 * float(jnp.abs(reference.x).max()))
    # the equation itself, written out
    x = sol.z
    lhs = (A.T @ (A @ np.ravel(x) - np.asarray(Y))).reshape(N, N) + alpha * (x - _as_image_map(NET)(x))
    assert float(jnp.linalg.norm(lhs)) <= 1e-8 * float(jnp.linalg.norm(A.T @ np.asarray(Y)))
