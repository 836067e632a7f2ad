"""fixed_point / adjoint_solve against independent references: the closed-form fixed point and
gradients of an affine map (NumPy), finite differences, backpropagation through a long unrolled
`lax.scan` iteration; vmap vs separate calls; non-contractive maps; bad input."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrecon.deq.fixed_point import BACKWARD_SOLVERS, SOLVERS, adjoint_solve, fixed_point

N = 6
RNG = np.random.default_rng(0)
W = RNG.normal(size=(N, N))
W *= 0.8 / np.linalg.norm(W, 2)  # a contraction
B = RNG.normal(size=N)
Z_REF = np.linalg.solve(np.eye(N) - W, B)
TIGHT = dict(tol=1e-13, max_iter=400, backward_tol=1e-13, backward_max_iter=400)
PLAIN = dict(solver="fixed_point", backward_solver="fixed_point")  # cheapest to compile


def affine(z, p):
    w, b = p
    return w @ z + b


def tanh_map(z, p):  # non-linear, contractive (|tanh'| <= 1, ||W|| = 0.8)
    w, b = p
    return jnp.tanh(w @ z + b)


def test_forward_converges_to_affine_fixed_point():
    iterations = {}
    for solver in SOLVERS:
        run = jax.jit(lambda w, b: fixed_point(affine, jnp.zeros(N), (w, b), solver=solver, tol=1e-12, max_iter=500))
        sol = run(W, B)
        np.testing.assert_allclose(sol.z, Z_REF, rtol=0, atol=1e-10, err_msg=solver)
        assert bool(sol.converged) and not bool(sol.nonfinite), solver
        iterations[solver] = int(sol.iterations)
        # the reported residual is ||f(z) - z|| / ||z|| at the returned z
        expected = np.linalg.norm(W @ np.asarray(sol.z) + B - sol.z) / np.linalg.norm(sol.z)
        np.testing.assert_allclose(sol.residual_norm, expected, rtol=1e-3, atol=1e-15)
        assert float(sol.residual_norm) <= 1e-12
    assert 0 < iterations["anderson"] < iterations["fixed_point"] < 500, iterations
    assert 0 < iterations["broyden"] < iterations["fixed_point"], iterations


@pytest.mark.parametrize("backward_solver", BACKWARD_SOLVERS)
def test_gradient_matches_closed_form(backward_solver):
    # l = sum(sin(z*)), z* = (I - W)^{-1} b:  u = (I - W)^{-T} cos(z*), dl/db = u, dl/dW = u z*^T
    def loss(w, b):
        sol = fixed_point(affine, jnp.zeros(N), (w, b), backward_solver=backward_solver, **TIGHT)
        return jnp.sum(jnp.sin(sol.z))

    gw, gb = jax.jit(jax.grad(loss, argnums=(0, 1)))(W, B)
    u = np.linalg.solve((np.eye(N) - W).T, np.cos(Z_REF))
    np.testing.assert_allclose(gb, u, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(gw, np.outer(u, Z_REF), rtol=1e-9, atol=1e-11)


def _nonlinear_loss(w, b, **kw):
    z = fixed_point(tanh_map, jnp.zeros(N), (w, b), **{**TIGHT, **kw}).z
    return jnp.sum(z**3) + jnp.sum(jnp.arange(N) * z)


def test_gradient_matches_finite_differences_and_unrolled_scan():
    grad = jax.jit(jax.grad(_nonlinear_loss, argnums=(0, 1)))(W, B)

    # finite differences of the solver's own forward pass, along random directions
    loss = jax.jit(_nonlinear_loss)
    eps = 1e-5
    for k in range(2):
        dw, db = RNG.normal(size=(N, N)), RNG.normal(size=N)
        norm = np.sqrt(np.sum(dw**2) + np.sum(db**2))
        dw, db = dw / norm, db / norm
        fd = (loss(W + eps * dw, B + eps * db) - loss(W - eps * dw, B - eps * db)) / (2 * eps)
        directional = np.sum(grad[0] * dw) + np.sum(grad[1] * db)
        np.testing.assert_allclose(directional, fd, rtol=1e-6)

    # backprop through 300 plain iterations (||W|| = 0.8: converged to ~1e-29)
    def unrolled(w, b):
        z, _ = jax.lax.scan(lambda z, _: (tanh_map(z, (w, b)), None), jnp.zeros(N), None, length=300)
        return jnp.sum(z**3) + jnp.sum(jnp.arange(N) * z)

    ref = jax.jit(jax.grad(unrolled, argnums=(0, 1)))(W, B)
    np.testing.assert_allclose(grad[0], ref[0], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(grad[1], ref[1], rtol=1e-9, atol=1e-12)


class Layer(eqx.Module):
    weight: jax.Array
    bias: jax.Array
    activation: callable = eqx.field(static=True)
    scale: float  # a non-array leaf

    def __call__(self, z):
        return self.activation(self.scale * (self.weight @ z) + self.bias)


def test_params_as_equinox_module_and_args_and_closure():
    layer = Layer(jnp.asarray(W), jnp.asarray(B), jnp.tanh, 1.0)
    shift = jnp.linspace(-0.1, 0.1, N)

    def f(z, module, x):  # x: an extra argument
        return module(z) + 0.1 * x

    def loss(module, x):
        return jnp.sum(fixed_point(f, jnp.zeros(N), module, x, **TIGHT, **PLAIN).z ** 2)

    g_module, g_x = eqx.filter_jit(eqx.filter_grad(lambda mx: loss(*mx)))((layer, shift))

    def unrolled(module, x):
        z, _ = jax.lax.scan(lambda z, _: (f(z, module, x), None), jnp.zeros(N), None, length=300)
        return jnp.sum(z**2)

    ref_module, ref_x = eqx.filter_jit(eqx.filter_grad(lambda mx: unrolled(*mx)))((layer, shift))
    np.testing.assert_allclose(g_module.weight, ref_module.weight, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(g_module.bias, ref_module.bias, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(g_x, ref_x, rtol=1e-9, atol=1e-12)

    # an array f closes over (traced under grad) is differentiated too
    def closed(b):
        return jnp.sum(fixed_point(lambda z, w: affine(z, (w, b)), jnp.zeros(N), jnp.asarray(W), **TIGHT, **PLAIN).z)

    u = np.linalg.solve((np.eye(N) - W).T, np.ones(N))
    np.testing.assert_allclose(jax.grad(closed)(jnp.asarray(B)), u, rtol=1e-9)


def test_pytree_iterate_and_float32():
    # z = (a, c) with a = 0.5 a + 1, c = 0.25 c + mean(a)  ->  a = 2, c = 8/3
    def f(z, p):
        a, c = z
        return (p * a + 1.0, 0.5 * p * c + jnp.mean(a))

    sol = fixed_point(f, (jnp.zeros(2), jnp.zeros(3)), jnp.asarray(0.5), tol=1e-12, solver="broyden")
    np.testing.assert_allclose(sol.z[0], 2.0, rtol=1e-10)
    np.testing.assert_allclose(sol.z[1], 8 / 3, rtol=1e-10)
    # float32 iterates with x64 enabled: Anderson's float64 Gram matrix must not leak into z
    sol32 = fixed_point(affine, jnp.zeros(N, jnp.float32), (jnp.asarray(W, jnp.float32), jnp.asarray(B, jnp.float32)))
    assert sol32.z.dtype == jnp.float32 and bool(sol32.converged)
    np.testing.assert_allclose(sol32.z, Z_REF, rtol=1e-4, atol=1e-4)


def test_vmap_equals_separate_calls():
    bs = jnp.asarray(RNG.normal(size=(3, N)) * np.array([[0.1], [1.0], [10.0]]))

    def solve(b):
        sol = fixed_point(tanh_map, jnp.zeros(N), (jnp.asarray(W), b), tol=1e-10, **PLAIN)
        grad = jax.grad(lambda b: jnp.sum(fixed_point(tanh_map, jnp.zeros(N), (W, b), **PLAIN).z))(b)
        return sol.z, sol.iterations, grad

    fn = jax.jit(solve)
    batched = jax.jit(jax.vmap(solve))(bs)
    for i in range(3):
        single = fn(bs[i])
        for got, want in zip(batched, single):
            np.testing.assert_allclose(got[i], want, rtol=1e-12, atol=1e-14)


def test_non_contractive_maps_are_reported_not_nan():
    # spectral radius 1.5: plain iteration blows up; stopped at the last finite iterate
    w = W * 1.5 / np.max(np.abs(np.linalg.eigvals(W)))
    params = (jnp.asarray(w), jnp.asarray(B))
    sol = fixed_point(affine, jnp.ones(N), params, solver="fixed_point", max_iter=5000)
    assert not bool(sol.converged) and bool(sol.nonfinite) and int(sol.iterations) < 5000
    assert np.all(np.isfinite(sol.z))
    # Anderson and Broyden may find the (repelling) fixed point: then it must really be one
    for solver in ("anderson", "broyden"):
        sol = fixed_point(affine, jnp.ones(N), params, solver=solver, tol=1e-8, max_iter=500)
        assert np.all(np.isfinite(sol.z)) and not bool(sol.nonfinite)
        if bool(sol.converged):
            z = np.asarray(sol.z)
            assert np.linalg.norm(w @ z + B - z) <= 1e-8 * np.linalg.norm(z)

    # no fixed point at all (f(z) - z >= 0.9 in every entry): reported, finite
    def shift(z, p):
        return z + p + 0.1 * jnp.sin(z)

    sol = fixed_point(shift, jnp.zeros(N), jnp.asarray(1.0), solver="fixed_point", max_iter=200)
    assert not bool(sol.converged) and np.all(np.isfinite(sol.z)) and int(sol.iterations) == 200
    assert float(sol.residual_norm) > 1e-3


def test_adjoint_solve_reports_backward_residual():
    g = jnp.asarray(RNG.normal(size=N))
    z = jnp.asarray(Z_REF)
    u_ref = np.linalg.solve((np.eye(N) - W).T, g)
    for solver in BACKWARD_SOLVERS:
        adj = adjoint_solve(affine, z, (W, B), g=g, solver=solver, tol=1e-12, max_iter=400)
        np.testing.assert_allclose(adj.u, u_ref, rtol=1e-10, atol=1e-12)
        assert bool(adj.converged)
        true_res = np.linalg.norm(g - (adj.u - W.T @ np.asarray(adj.u))) / np.linalg.norm(g)
        np.testing.assert_allclose(adj.residual_norm, true_res, rtol=1e-3, atol=1e-15)
    # a budget too small to converge is reported
    adj = adjoint_solve(affine, z, (W, B), g=g, solver="fixed_point", tol=1e-12, max_iter=3)
    assert not bool(adj.converged) and int(adj.iterations) == 3 and float(adj.residual_norm) > 1e-6


def test_anderson_breakdown_restarts_and_backward_check():
    # collinear residuals and no ridge: Anderson's bordered system is singular; it restarts, converges
    w, b = 0.5 * jnp.eye(3), jnp.ones(3)
    sol = fixed_point(affine, jnp.zeros(3), (w, b), tol=1e-12, ridge=0.0)
    assert bool(sol.converged) and not bool(sol.nonfinite)
    np.testing.assert_allclose(sol.z, 2.0, rtol=1e-11)
    # an unconverged backward solve: silent by default, an error with backward_check=True
    kw = dict(backward_solver="fixed_point", backward_max_iter=2)

    def loss(b, check):
        return jnp.sum(fixed_point(affine, jnp.zeros(N), (W, b), backward_check=check, **kw).z)

    assert np.all(np.isfinite(jax.grad(loss)(jnp.asarray(B), False)))
    with pytest.raises(Exception, match="backward .*did not converge"):
        jax.block_until_ready(jax.grad(loss)(jnp.asarray(B), True))


def test_bad_input_names_expected_and_given():
    with pytest.raises(ValueError, match="solver must be one of"):
        fixed_point(affine, jnp.zeros(N), (W, B), solver="newton")
    with pytest.raises(ValueError, match="backward_solver must be one of"):
        fixed_point(affine, jnp.zeros(N), (W, B), backward_solver="lu")
    with pytest.raises(ValueError, match=r"expected .*float64\[6\].*got .*float64\[5\]"):
        fixed_point(lambda z, p: z[:5], jnp.zeros(N), None)
    with pytest.raises(TypeError, match="floating-point"):
        fixed_point(affine, jnp.zeros(N, jnp.int32), (W, B))
    with pytest.raises(TypeError, match="unknown \\['history'\\]"):
        fixed_point(affine, jnp.zeros(N), (W, B), history=3)
    with pytest.raises(ValueError, match="max_iter must be a positive int"):
        fixed_point(affine, jnp.zeros(N), (W, B), max_iter=0)
    with pytest.raises(ValueError, match="tol must be finite and non-negative"):
        fixed_point(affine, jnp.zeros(N), (W, B), tol=-1.0)
    with pytest.raises(TypeError, match="complex iterates need solver"):
        fixed_point(affine, jnp.zeros(N, jnp.complex128), (W, B))
    with pytest.raises(ValueError, match="g shaped like z_star"):
        adjoint_solve(affine, jnp.zeros(N), (W, B), g=jnp.zeros(N + 1))
