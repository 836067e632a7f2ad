r"""Fixed points with implicit differentiation: the engine of deep equilibrium (DEQ) models.

For a map $f(z, \theta)$ that is a contraction in $z$, `fixed_point` returns $z^\star = f(z^\star, \theta)$.

**Forward.** One of jaxopt's solvers, driven step by step (`init_state`/`update`) by our own
`lax.while_loop` so that the stopping rule, the iteration count and the guard against non-finite
iterates are ours: `"fixed_point"` ($z \leftarrow f(z)$), `"anderson"` (Anderson acceleration) or
`"broyden"` (limited-memory Broyden on $F(z) = z - f(z) = 0$; this sign makes jaxopt's initial
inverse Jacobian $+I$ start with the step $z \leftarrow f(z)$, the same root as $f(z) - z$).
Anderson and Broyden need real iterates; complex ones work with `"fixed_point"` (forward and
backward) and `"gmres"` (backward). jaxopt runs with `implicit_diff=False` and nothing is ever
differentiated through it (the DESIGN rule: never reverse-differentiate a while loop). jaxopt is
unmaintained: it is only used in this module, so another backend (e.g. optimistix) can be swapped
in here.

Stopping: after each update the solver's own residual $e_k$ ($\|f(\tilde z) - \tilde z\|$ at the point
$\tilde z$ it last evaluated $f$ at; $\|F(z_k)\|$ for Broyden) is compared with
$\text{tol}\,\|z_k\| + \text{atol}$. The reported `residual_norm` is then measured exactly at the
returned point with one more evaluation of $f$:

$$ r = \frac{\|f(z) - z\|}{\|z\|}\quad (\text{Euclidean norm over all leaves}),\qquad
   \text{converged} \iff \|f(z) - z\| \le \text{tol}\,\|z\| + \text{atol}. $$

If an iterate (or the solver's residual) becomes non-finite, the loop stops and returns the last
finite iterate with `nonfinite=True` and `converged=False`: a diverging map is reported, never
silently turned into NaN.

**Backward** (a `custom_vjp`, via `equinox.filter_custom_vjp`). With $J = \partial f/\partial z$ at
$z^\star$ and the incoming cotangent $g = \partial\ell/\partial z^\star$, the implicit function theorem
gives

$$ \frac{\partial \ell}{\partial \theta} = u^\top \frac{\partial f}{\partial \theta}(z^\star, \theta),
   \qquad (I - J^\top)\, u = g, $$

solved matrix-free with `jax.vjp` of $f$ at $z^\star$ ($u \mapsto J^\top u$) by `"fixed_point"`
($u \leftarrow g + J^\top u$), `"anderson"`, `"broyden"` (jaxopt, on the same linear map) or
`"gmres"` (`jax.scipy.sparse.linalg.gmres` on $u \mapsto u - J^\top u$), to the relative residual
$\|g - (I - J^\top)u\| \le \text{backward\_tol}\,\|g\|$. The starting point `z0` gets a zero
cotangent (the fixed point does not depend on it); the diagnostics (`iterations`,
`residual_norm`, ...) carry no gradient. Cotangents are only computed for the leaves of `params`
and `args` that are actually differentiated. Arrays that `f` closes over are hoisted with
`equinox.filter_closure_convert` and differentiated too. Reverse mode only: no `jax.jvp`, no
second derivatives.

A backward pass cannot return diagnostics: call `adjoint_solve` with the same arguments and a
cotangent to see how well the adjoint system is solved (`backward_check=True` instead makes a
failed backward solve a runtime error via `equinox.error_if`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PyTree

from ..solvers.iterate import check_max_iter, check_non_negative

__all__ = ["SOLVERS", "BACKWARD_SOLVERS", "FixedPointSolution", "AdjointSolution", "fixed_point", "adjoint_solve"]

SOLVERS = ("fixed_point", "anderson", "broyden")
BACKWARD_SOLVERS = ("fixed_point", "anderson", "broyden", "gmres")
# Default relative ridge of Anderson's least-squares problem: max(1e-8, 100 eps) (see `fixed_point`).
ANDERSON_RIDGE = 1e-8


class FixedPointSolution(NamedTuple):
    """What `fixed_point` returns (a pytree: jit, vmap).

    Attributes:
        z: the fixed point, same structure, shapes and dtypes as `z0`.
        iterations: int scalar, the solver updates performed (one evaluation of `f` each for
            `"fixed_point"`, `"anderson"` and `"broyden"` without line search; a failed Anderson
            extrapolation counts).
        residual_norm: $\\|f(z) - z\\| / \\|z\\|$ at the returned `z` (Euclidean norm over all leaves).
        converged: bool scalar, $\\|f(z) - z\\| \\le \\text{tol}\\,\\|z\\| + \\text{atol}$.
        nonfinite: bool scalar, True when an iterate became non-finite; `z` is then the last
            finite iterate (and `converged` is False).
    """

    z: PyTree
    iterations: Int[Array, ""]
    residual_norm: Float[Array, ""]
    converged: Bool[Array, ""]
    nonfinite: Bool[Array, ""]


class AdjointSolution(NamedTuple):
    """What `adjoint_solve` returns: the solution $u$ of $(I - J^\\top)u = g$ and diagnostics.

    Attributes:
        u: same structure as the fixed point.
        iterations: int scalar, solver updates (one $J^\\top$ product each); -1 for `"gmres"`,
            whose iteration count JAX does not report.
        residual_norm: $\\|g - (I - J^\\top)u\\| / \\|g\\|$ (0 when $g = 0$).
        converged: bool scalar, $\\|g - (I - J^\\top)u\\| \\le \\text{tol}\\,\\|g\\|$.
        nonfinite: bool scalar, True when the iteration produced non-finite values (`u` is then the
            last finite iterate).
    """

    u: PyTree
    iterations: Int[Array, ""]
    residual_norm: Float[Array, ""]
    converged: Bool[Array, ""]
    nonfinite: Bool[Array, ""]


# --------------------------------------------------------------------------------------------------
# Tree helpers
# --------------------------------------------------------------------------------------------------


def _norm(tree) -> Array:
    leaves = jax.tree.leaves(tree)
    return jnp.sqrt(sum(jnp.sum(jnp.abs(a) ** 2) for a in leaves))


def _sub(a, b):
    return jax.tree.map(lambda x, y: x - y, a, b)


def _all_finite(tree) -> Array:
    leaves = jax.tree.leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in leaves])) if leaves else jnp.asarray(True)


def _select(pred, on_true, on_false):
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def _strong(tree):
    """Concrete dtypes, no weak types: the while-loop carry keeps its type across iterations."""
    return jax.tree.map(lambda a: jnp.array(a, dtype=jnp.asarray(a).dtype), tree)


def _like(new, old):
    return jax.tree.map(lambda n, o: jnp.asarray(n, dtype=o.dtype), new, old)


def _relative(num, den):
    """num/den, with 0/0 = 0 and x/0 = inf."""
    safe = jnp.where(den > 0, den, 1)
    return jnp.where(den > 0, num / safe, jnp.where(num > 0, jnp.inf, 0.0))


def _describe(tree) -> str:
    return str(jax.tree.map(lambda a: f"{jnp.dtype(a.dtype).name}{list(a.shape)}", tree))


# --------------------------------------------------------------------------------------------------
# The jaxopt backend
# --------------------------------------------------------------------------------------------------

_FIXED = ("fixed_point_fun", "fun", "maxiter", "tol", "implicit_diff", "implicit_diff_solve", "jit", "unroll",
          "has_aux", "verbose")


def _jaxopt_class(method: str):
    import jaxopt  # imported here: only this module depends on the (unmaintained) backend

    return {"fixed_point": jaxopt.FixedPointIteration, "anderson": jaxopt.AndersonAcceleration,
            "broyden": jaxopt.Broyden}[method]


def _check_options(method: str, options: dict, what: str) -> dict:
    if method == "gmres":
        allowed = {"restart", "solve_method", "M"}
    else:
        allowed = {f.name for f in dataclasses.fields(_jaxopt_class(method))} - set(_FIXED)
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(f"{what} {method!r} accepts the options {sorted(allowed)}, got unknown {unknown}")
    return dict(options)


def _make_solver(method: str, fmap: Callable, max_iter: int, options: dict, state=None):
    common = dict(maxiter=max_iter, tol=0.0, implicit_diff=False, jit=True, unroll=False)
    cls = _jaxopt_class(method)
    if method == "broyden":
        # Classical Broyden steps by default (a line search would differentiate f at every step).
        return cls(fun=lambda z: _sub(z, fmap(z)), **{"stepsize": 1.0, **common, **options})
    if method == "anderson":
        # `ridge` relative to the mean squared residual of the history (jaxopt's is absolute: once
        # the residuals are small it dominates the Gram matrix and Anderson stalls).
        options = dict(options)
        ridge = options.pop("ridge", None)
        if state is not None:
            gram = state.residual_gram
            if ridge is None:  # 100 eps keeps the bordered system solvable when residuals are collinear
                ridge = max(ANDERSON_RIDGE, 100 * float(jnp.finfo(gram.dtype).eps))
            ridge = ridge * jnp.trace(gram) / gram.shape[0] + jnp.finfo(gram.dtype).tiny
        options["ridge"] = ridge
    return cls(fixed_point_fun=fmap, **common, **options)


def _iterate(fmap: Callable, z0, method: str, tol, atol, max_iter: int, options: dict, scale: Callable):
    """Run a jaxopt solver on the fixed point of `fmap` from `z0` in our own while loop.

    Stops when the solver's residual is <= tol * scale(z) + atol, after `max_iter` updates, or when
    an iterate is non-finite (keeping the last finite one). A non-finite Anderson *extrapolation*
    (a breakdown of its small least-squares problem) instead restarts Anderson from the current
    iterate (its first `history_size` steps are plain iterations). Returns (z, iterations, nonfinite)."""
    z_in = z0
    if method == "anderson":
        # jaxopt's Anderson keeps its Gram matrix in the default float dtype: iterate in the
        # promotion of z's dtype with it (float32 problems under jax_enable_x64), evaluate f in z's.
        wide = jnp.result_type(float)
        z0 = jax.tree.map(lambda a: a.astype(jnp.promote_types(a.dtype, wide)), z0)
        fmap_in = fmap
        fmap = lambda z: _like(fmap_in(_like(z, z_in)), z)  # noqa: E731
    state0 = _strong(_make_solver(method, fmap, max_iter, options).init_state(z0))

    def cond(carry):
        k, _, _, done, bad = carry
        return (k < max_iter) & ~done & ~bad

    def body(carry):
        k, z, state, _, _ = carry
        z_new, state_new = _make_solver(method, fmap, max_iter, options, state).update(z, state)
        z_new, state_new = _like(z_new, z), _like(state_new, state)
        error = state_new.error
        ok = _all_finite(z_new) & jnp.isfinite(error)
        done = ok & (error <= tol * scale(z_new) + atol)
        bad = ~ok
        if method == "anderson":
            solver = _make_solver(method, fmap, max_iter, options)
            extrapolated = (state.iter_num % solver.mixing_frequency == 0) & (state.iter_num >= solver.history_size)
            fresh = _like(_strong(solver.init_state(z)), state)  # its f evaluation (aux) is dead code
            state = _select(ok | ~extrapolated, state, fresh)
            bad = bad & ~extrapolated
        z, state = _select(ok, (z_new, state_new), (z, state))
        return k + (~bad).astype(k.dtype), z, state, done, bad

    init = (jnp.asarray(0, jnp.int32), z0, state0, jnp.asarray(False), jnp.asarray(False))
    k, z, _, _, bad = jax.lax.while_loop(cond, body, init)
    return _like(z, z_in), k, bad


# --------------------------------------------------------------------------------------------------
# Forward and adjoint solves
# --------------------------------------------------------------------------------------------------


class _Config(NamedTuple):
    solver: str
    tol: Any
    atol: Any
    max_iter: int
    options: tuple
    backward_solver: str
    backward_tol: Any
    backward_max_iter: int
    backward_options: tuple
    backward_check: bool


def _forward(fn, z0, params, args, cfg: _Config) -> FixedPointSolution:
    params, args, z0 = jax.tree.map(lambda a: jax.lax.stop_gradient(a) if eqx.is_array(a) else a, (params, args, z0))

    def fmap(z):
        return fn(z, params, *args)

    z, k, bad = _iterate(fmap, z0, cfg.solver, cfg.tol, cfg.atol, cfg.max_iter, dict(cfg.options), _norm)
    r = _norm(_sub(fmap(z), z))
    zn = _norm(z)
    converged = ~bad & (r <= cfg.tol * zn + cfg.atol)
    return FixedPointSolution(z, k, _relative(r, zn), converged, bad)


def _adjoint(vjp_z: Callable, g, method: str, tol, max_iter: int, options: dict) -> AdjointSolution:
    """Solve (I - J^T) u = g with u -> J^T u given by `vjp_z`."""
    gn = _norm(g)

    def apply(u):  # (I - J^T) u
        return _sub(u, vjp_z(u))

    if method == "gmres":
        restart = int(options.pop("restart", 20))
        cycles = max(1, math.ceil(max_iter / restart))
        u, _ = jax.scipy.sparse.linalg.gmres(apply, g, x0=g, tol=tol, atol=0.0, restart=restart, maxiter=cycles,
                                             **options)
        bad = ~_all_finite(u)
        u = _select(bad, g, u)
        k = jnp.asarray(-1, jnp.int32)
    else:
        u, k, bad = _iterate(lambda u: jax.tree.map(jnp.add, g, vjp_z(u)), g, method, tol, 0.0, max_iter, options,
                             lambda _: gn)
    r = _norm(_sub(g, apply(u)))
    converged = ~bad & (r <= tol * gn)
    return AdjointSolution(u, k, _relative(r, gn), converged, bad)


@eqx.filter_custom_vjp
def _solve(vjp_arg, z0, cfg):
    fn, params, args = vjp_arg
    return _forward(fn, z0, params, args, cfg)


@_solve.def_fwd
def _solve_fwd(perturbed, vjp_arg, z0, cfg):
    del perturbed
    fn, params, args = vjp_arg
    sol = _forward(fn, z0, params, args, cfg)
    return sol, sol.z


@_solve.def_bwd
def _solve_bwd(z_star, grad_obj, perturbed, vjp_arg, z0, cfg):
    del z0
    g = grad_obj.z
    none = jax.tree.map(lambda _: None, vjp_arg)
    if g is None or all(leaf is None for leaf in jax.tree.leaves(g, is_leaf=lambda x: x is None)):
        return none
    g = jax.tree.map(lambda c, z: jnp.zeros_like(z) if c is None else c, g, z_star, is_leaf=lambda x: x is None)
    diff, nondiff = eqx.partition(vjp_arg, perturbed)

    def f_of(z, d):
        fn, params, args = eqx.combine(d, nondiff)
        return fn(z, params, *args)

    _, vjp_z = jax.vjp(lambda z: f_of(z, diff), z_star)
    adj = _adjoint(lambda u: vjp_z(u)[0], g, cfg.backward_solver, cfg.backward_tol, cfg.backward_max_iter,
                   dict(cfg.backward_options))
    u = adj.u
    if cfg.backward_check:
        u = eqx.error_if(u, ~adj.converged, "fixed_point: the backward (adjoint) solve did not converge; "
                         "call adjoint_solve to diagnose, raise backward_max_iter or change backward_solver")
    _, vjp_d = jax.vjp(lambda d: f_of(z_star, d), diff)
    (grad,) = vjp_d(u)
    return grad


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def _check_method(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def _check_tree(z0, fname: str):
    leaves = jax.tree.leaves(z0)
    if not leaves:
        raise ValueError(f"{fname} expects z0 to be an array or a pytree of arrays, got {z0!r}")
    for a in leaves:
        if not hasattr(a, "dtype") or not jnp.issubdtype(jnp.asarray(a).dtype, jnp.inexact):
            got = getattr(a, "dtype", type(a).__name__)
            raise TypeError(f"{fname} expects floating-point (or complex) arrays in z0, got a leaf of type {got}")
    return jax.tree.map(jnp.asarray, z0)


def _check_real(z0, solver: str, backward_solver: str, fname: str):
    if any(jnp.iscomplexobj(a) for a in jax.tree.leaves(z0)):
        for name, value, ok in (("solver", solver, ("fixed_point",)),
                                ("backward_solver", backward_solver, ("fixed_point", "gmres"))):
            if value not in ok:
                raise TypeError(
                    f"{fname}: complex iterates need {name} in {ok} (jaxopt's Anderson and Broyden assume "
                    f"real arrays), got {name}={value!r}"
                )


def _check_map(f, z0, params, args, fname: str, what: str = "z0"):
    if not callable(f):
        raise TypeError(f"{fname} expects f to be callable as f(z, params, *args), got {type(f).__name__}")
    out = eqx.filter_eval_shape(f, z0, params, *args)
    ok = jax.tree.structure(out) == jax.tree.structure(z0) and all(
        hasattr(o, "shape") and tuple(o.shape) == tuple(a.shape) and o.dtype == a.dtype
        for o, a in zip(jax.tree.leaves(out), jax.tree.leaves(z0))
    )
    if not ok:
        raise ValueError(
            f"{fname} expects f(z, params, *args) to return the structure, shapes and dtypes of {what}: "
            f"expected {_describe(z0)}, got {_describe(out) if jax.tree.leaves(out) else out!r}"
        )


def _check_tol(tol, name):
    if jnp.ndim(tol) != 0:
        raise ValueError(f"{name} must be a scalar, got shape {jnp.shape(tol)}")
    return check_non_negative(tol, name)


def fixed_point(
    f: Callable,
    z0: PyTree,
    params: PyTree,
    *args,
    solver: str = "anderson",
    tol=1e-5,
    atol=0.0,
    max_iter: int = 100,
    backward_solver: str = "anderson",
    backward_tol=None,
    backward_max_iter: int | None = None,
    backward_options: dict | None = None,
    backward_check: bool = False,
    **solver_options,
) -> FixedPointSolution:
    r"""The fixed point $z^\star = f(z^\star, \theta, \dots)$, differentiable by the implicit function theorem.

    Args:
        f: `f(z, params, *args) -> z`, same pytree structure, shapes and dtypes as `z0` (checked at
            trace time). Should be a contraction in `z` near the fixed point.
        z0: starting point, an array or pytree of floating arrays (it gets a zero cotangent).
        params: any pytree (an Equinox module, a tuple of arrays, ...); its floating arrays are
            differentiated. Non-array leaves are treated as static.
        *args: further arguments of `f`, differentiated like `params` (data, an operator, ...).
        solver: `"anderson"` (default), `"fixed_point"` or `"broyden"` (see the module docstring).
        tol, atol: stop when $\|f(z) - z\| \le \text{tol}\,\|z\| + \text{atol}$.
        max_iter: at most this many solver updates.
        backward_solver: `"anderson"` (default), `"fixed_point"`, `"broyden"` or `"gmres"`, for
            $(I - J^\top)u = g$.
        backward_tol: relative tolerance $\|g - (I - J^\top)u\| \le$ `backward_tol` $\|g\|$; default
            `tol` (the gradient error is bounded by both the forward and the backward accuracy, so
            tightening only one of them buys little).
        backward_max_iter: default `max_iter` (for GMRES: the total Krylov budget).
        backward_options: options of the backward solver (jaxopt's, e.g. `history_size`; for
            GMRES `restart`, `solve_method`).
        backward_check: make an unconverged backward solve a runtime error (`equinox.error_if`)
            instead of returning the gradient of the last adjoint iterate.
        **solver_options: options of the forward jaxopt solver, e.g. `history_size` (5), `beta`,
            `ridge` for Anderson; `history_size`, `stepsize` (default 1.0; 0 enables jaxopt's line
            search, which differentiates `f`) for Broyden. Anderson's `ridge` is taken *relative*
            to the mean squared residual norm of its history (default $\max(10^{-8}, 100\varepsilon)$):
            jaxopt's absolute ridge (1e-5) dominates the Gram matrix once residuals are small, and
            Anderson then stalls (measured: 96 iterations instead of 25 to 1e-12 on a 5x5
            contraction). Should its extrapolation still break down (non-finite), Anderson restarts
            from the current iterate instead of stopping.

    Returns a `FixedPointSolution(z, iterations, residual_norm, converged, nonfinite)`. Jittable
    and vmappable; under `vmap` each sample stops on its own criterion (results equal separate
    calls). `f` is traced (no Python control flow on values).

    Caveat of any relative criterion: a map *without* a fixed point whose iterates run off to
    infinity can meet it (Anderson and Broyden extrapolate far quickly); look at the size of `z`,
    or set `atol`, when the map may not be contractive.

    Example:
        >>> w, b = 0.5 * jnp.eye(3), jnp.ones(3)
        >>> f = lambda z, p: p[0] @ z + p[1]
        >>> fixed_point(f, jnp.zeros(3), (w, b), tol=1e-8).z              # (I - W)^{-1} b = [2, 2, 2]
        >>> jax.grad(lambda b: fixed_point(f, jnp.zeros(3), (w, b)).z.sum())(b)   # [2, 2, 2]
    """
    fname = "fixed_point"
    _check_method("solver", solver, SOLVERS)
    _check_method("backward_solver", backward_solver, BACKWARD_SOLVERS)
    max_iter = check_max_iter(max_iter)
    backward_max_iter = max_iter if backward_max_iter is None else check_max_iter(backward_max_iter)
    tol = _check_tol(tol, "tol")
    atol = _check_tol(atol, "atol")
    backward_tol = tol if backward_tol is None else _check_tol(backward_tol, "backward_tol")
    options = _check_options(solver, solver_options, "solver")
    boptions = _check_options(backward_solver, dict(backward_options or {}), "backward_solver")
    z0 = _check_tree(z0, fname)
    _check_real(z0, solver, backward_solver, fname)
    _check_map(f, z0, params, args, fname)
    z0 = jax.lax.stop_gradient(z0)
    fn = eqx.filter_closure_convert(f, z0, params, *args)
    cfg = _Config(solver, tol, atol, max_iter, tuple(sorted(options.items())), backward_solver, backward_tol,
                  backward_max_iter, tuple(sorted(boptions.items())), bool(backward_check))
    return _solve((fn, params, args), z0, cfg)


def adjoint_solve(
    f: Callable,
    z_star: PyTree,
    params: PyTree,
    *args,
    g: PyTree,
    solver: str = "anderson",
    tol=1e-5,
    max_iter: int = 100,
    **options,
) -> AdjointSolution:
    r"""Solve the adjoint system $(I - J^\top)u = g$, $J = \partial_z f(z^\star, \text{params}, \dots)$, as
    `fixed_point`'s backward pass does, and report how well it is solved.

    The gradient `fixed_point` returns for the cotangent $g$ is $u^\top \partial f/\partial\theta$ with this
    $u$ (for the same `backward_solver`, `backward_tol`, `backward_max_iter`, `backward_options`):
    use it to check a backward solve, e.g. `adjoint_solve(f, sol.z, params, g=jnp.ones_like(sol.z))`.
    `solver` is one of `BACKWARD_SOLVERS`; `g` has the structure of `z_star`.

    Example:
        >>> f = lambda z, w: w @ z + 1.0
        >>> w = 0.5 * jnp.eye(2)
        >>> adjoint_solve(f, jnp.full(2, 2.0), w, g=jnp.ones(2), tol=1e-10).u   # (I - W^T)^{-1} g = [2, 2]
    """
    fname = "adjoint_solve"
    _check_method("solver", solver, BACKWARD_SOLVERS)
    max_iter = check_max_iter(max_iter)
    tol = _check_tol(tol, "tol")
    options = _check_options(solver, options, "solver")
    z_star = _check_tree(z_star, fname)
    _check_real(z_star, "fixed_point", solver, fname)
    _check_map(f, z_star, params, args, fname, "z_star")
    g = _check_tree(g, fname)
    if jax.tree.structure(g) != jax.tree.structure(z_star) or any(
        a.shape != b.shape for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(z_star))
    ):
        raise ValueError(f"{fname} expects g shaped like z_star: expected {_describe(z_star)}, got {_describe(g)}")
    g = _like(g, z_star)
    _, vjp_z = jax.vjp(lambda z: f(z, params, *args), z_star)
    return _adjoint(lambda u: vjp_z(u)[0], g, solver, tol, max_iter, options)
