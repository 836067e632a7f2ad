r"""ADMM and linearised ADMM for $\min_x \tfrac12\|Ax - y\|^2 + \alpha\,g(Kx)$ (TV, $\ell^1$, any prox)."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from ..operators.linear_operator import IdentityOperator, LinearOperator, operator_norm
from .gradient import FiniteDifference
from .iterate import Solution, check_max_iter, check_non_negative, iterate, solution
from .proximal import _soft
from .tv import _NORM_MARGIN, _check_bool, _check_positive, _check_scalar, _check_shape, _data, _tv_of_gradient
from .wavelets import WaveletTransform

__all__ = ["admm", "linearised_admm", "PENALTIES"]

PENALTIES = ("tv", "l1")
# The linearised step: tau (||A||^2 + rho ||K||^2) = _SAFETY < 1.
_SAFETY = 0.99
# Default rho = _RHO_SCALE * alpha / (estimated image RMS); calibrated on CT (see admm).
_RHO_SCALE = 10.0


# --------------------------------------------------------------------------------------------------
# Shared pieces (also used by plug_and_play)
# --------------------------------------------------------------------------------------------------


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _finite(*arrays) -> Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in arrays]))


def _cg(normal: Callable, b: Array, x: Array, num_iter: int) -> Array:
    r"""`num_iter` conjugate-gradient steps on $Nx = b$ ($N$ symmetric positive semidefinite) from `x`.

    A `lax.scan` of fixed length (reverse-differentiable); a step whose residual is already zero
    changes nothing (no 0/0)."""
    r = b - normal(x)
    rr = jnp.vdot(r, r).real

    def step(carry, _):
        x, r, p, rr = carry
        q = normal(p)
        pq = jnp.vdot(p, q).real
        a = jnp.where(pq > 0, rr / jnp.where(pq > 0, pq, 1), 0)
        x, r = x + a * p, r - a * q
        rr_new = jnp.vdot(r, r).real
        beta = jnp.where(rr > 0, rr_new / jnp.where(rr > 0, rr, 1), 0)
        return (x, r, r + beta * p, rr_new), None

    (x, _, _, _), _ = jax.lax.scan(step, (x, r, r, rr), None, length=num_iter)
    return x


def _setup(fn: str, op, y, x0, reference, tol, max_iter):
    """Check the common arguments; return (y, real dtype, image shape, x0, reference)."""
    if not isinstance(op, LinearOperator):
        raise TypeError(f"{fn} expects op to be a LinearOperator, got {type(op).__name__}")
    if op.in_complex:
        raise TypeError(f"{fn} needs an operator on real images; {type(op).__name__} has a complex domain")
    y = _data(y, op.out_shape, fn)
    real = jnp.finfo(y.dtype).dtype
    shape = tuple(op.in_shape)
    check_max_iter(max_iter)
    if tol is not None:
        _check_scalar(tol, "tol")
        check_non_negative(tol, "tol")
    x = jnp.zeros(shape, real) if x0 is None else _check_shape(x0, shape, fn, "x0", real)
    reference = _check_shape(reference, shape, fn, "reference", real)
    return y, real, shape, x, reference


def _adjoint(op: LinearOperator, v, real):
    return op.rmv(v).astype(real)


def _guarded(step: Callable) -> Callable:
    """Wrap ``step`` so that a non-finite update keeps the previous state and sets ``bad`` (sticky)."""

    def update(s):
        new = step(s)
        ok = ~s.bad & _finite(*[a for a in jax.tree.leaves(new) if jnp.issubdtype(a.dtype, jnp.inexact)])
        new = new._replace(k=s.k + 1, bad=jnp.asarray(False))
        kept = s._replace(bad=jnp.asarray(True))
        return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, kept)

    return update


def _run(update, state, max_iter, converged, record):
    """Drive a guarded update: stop at convergence (when a rule is given) or at a non-finite step.

    Returns (state, Solution fields: iterations, converged, nonfinite, records)."""
    if converged is None:
        stop = None
    else:
        stop = lambda s: converged(s) | s.bad  # noqa: E731
    state, _, _, records = iterate(update, state, max_iter, stop=stop, record=record)
    done = jnp.asarray(False) if converged is None else converged(state) & ~state.bad
    return state, state.k, done, state.bad, records


# --------------------------------------------------------------------------------------------------
# Penalties
# --------------------------------------------------------------------------------------------------


def _group_shrink(v, t):
    """prox of $t\\sum_i\\|v_i\\|_2$ over axis 0 (isotropic TV's pixelwise gradients)."""
    n2 = jnp.sum(v**2, axis=0)
    pos = n2 > t**2
    return v * jnp.where(pos, 1 - t / jnp.sqrt(jnp.where(pos, n2, 1)), 0)


def _penalty(fn, shape, penalty, transform, isotropic, wavelet, levels, real):
    """Return (K, prox(v, t), value(Kx) or None, a bound on ||K|| or None)."""
    _check_bool(isotropic, "isotropic")
    if transform is not None and not isinstance(transform, LinearOperator):
        raise TypeError(f"{fn} expects transform to be a LinearOperator or None, got {type(transform).__name__}")
    if transform is not None and tuple(transform.in_shape) != shape:
        raise ValueError(f"{fn} expects transform.in_shape == op.in_shape = {shape}, got {tuple(transform.in_shape)}")
    if penalty != "l1" and (wavelet is not None or levels is not None):
        raise ValueError(f"{fn}: wavelet/levels only apply to penalty='l1', got penalty={penalty!r}")
    if isinstance(penalty, str):
        if penalty not in PENALTIES:
            raise ValueError(f"{fn} expects penalty to be one of {PENALTIES} or a prox callable, got {penalty!r}")
        if penalty == "tv":
            if transform is not None:
                raise ValueError(f"{fn}: penalty='tv' fixes K to the finite differences; got a transform too")
            if len(shape) < 1:
                raise ValueError(f"{fn}: TV needs images with at least one axis, got in_shape {shape}")
            K = FiniteDifference(shape)
            prox = _group_shrink if isotropic else _soft
            return K, prox, lambda kx: _tv_of_gradient(kx, isotropic), K.norm_bound
        if wavelet is not None:
            if transform is not None:
                raise ValueError(f"{fn}: give a wavelet or a transform, not both")
            if len(shape) != 2:
                raise ValueError(f"{fn}: a 2D wavelet needs an operator on (H, W) images, got in_shape {shape}")
            return WaveletTransform(shape, wavelet, levels), _soft, lambda c: jnp.sum(jnp.abs(c)), 1.0
        if levels is not None:
            raise ValueError(f"{fn}: levels={levels!r} given without a wavelet")
        K = IdentityOperator(shape) if transform is None else transform
        return K, _soft, lambda c: jnp.sum(jnp.abs(c)), 1.0 if transform is None else None
    if not callable(penalty):
        raise TypeError(f"{fn} expects penalty to be one of {PENALTIES} or a prox callable, got {penalty!r}")
    K = IdentityOperator(shape) if transform is None else transform
    kx = jax.ShapeDtypeStruct(tuple(K.out_shape), real)
    out = jax.eval_shape(penalty, kx, jax.ShapeDtypeStruct((), real))
    if getattr(out, "shape", None) != tuple(K.out_shape):
        raise ValueError(
            f"{fn} expects the prox callable penalty(v, t) to return the shape of Kx, {tuple(K.out_shape)}, "
            f"got {getattr(out, 'shape', type(out).__name__)}"
        )
    return K, penalty, None, 1.0 if transform is None else None


def _default_rho(alpha, y, norm_a, num_pixels):
    r"""$\rho = 10\,\alpha/\hat x$ with $\hat x = \|y\|/(\|A\|\sqrt n)$, an RMS estimate of the image."""
    x_scale = jnp.linalg.norm(y) / (norm_a * num_pixels**0.5)
    rho = _RHO_SCALE * alpha / jnp.where(x_scale > 0, x_scale, 1)
    return jnp.where(rho > 0, rho, 1)


# --------------------------------------------------------------------------------------------------
# ADMM
# --------------------------------------------------------------------------------------------------


class _State(NamedTuple):
    x: Array
    ax: Array  # A x
    kx: Array  # K x
    z: Array  # the split variable, ~ Kx
    u: Array  # the scaled dual variable
    primal: Array  # ||Kx - z||
    dual: Array  # rho ||K^*(z - z_prev)||
    k: Array  # updates performed
    bad: Array  # a non-finite update was rejected


def admm(
    op: LinearOperator,
    y: Array,
    alpha,
    *,
    penalty: str | Callable = "tv",
    transform: LinearOperator | None = None,
    isotropic: bool = True,
    wavelet=None,
    levels: int | None = None,
    rho=None,
    x0: Array | None = None,
    max_iter: int = 200,
    cg_iter: int = 10,
    tol=None,
    reference: Array | None = None,
    history: bool = False,
    op_norm=None,
) -> Solution:
    r"""ADMM for $\min_x \tfrac12\|Ax - y\|^2 + \alpha\,g(Kx)$, the $x$-update by conjugate gradients.

    Split $z = Kx$; with the scaled dual variable $u$ and penalty parameter $\rho > 0$:

    $$\begin{aligned}
    x_{k+1} &= \arg\min_x \tfrac12\|Ax - y\|^2 + \tfrac\rho2\|Kx - z_k + u_k\|^2
      \;\Leftrightarrow\; (A^*A + \rho K^*K)\,x = A^*y + \rho K^*(z_k - u_k),\\
    z_{k+1} &= \operatorname{prox}_{(\alpha/\rho) g}(Kx_{k+1} + u_k),\qquad
    u_{k+1} = u_k + Kx_{k+1} - z_{k+1}.
    \end{aligned}$$

    The linear system is solved matrix-free by `cg_iter` conjugate-gradient steps warm-started at
    $x_k$ (a fixed count: the whole iteration stays a `lax` loop). The $x$-updates are then inexact;
    with the warm start the iteration still reached `tv_pdhg`'s solution to a relative 3e-10 with
    `cg_iter` = 10 on 16 x 16 CT (tests/solvers/test_admm.py); raise it for an ill-conditioned
    $A^*A + \rho K^*K$.

    `penalty`:
    - ``"tv"``: $K = D$ (`FiniteDifference`: forward differences, Neumann boundary) and
      $g = \sum_i\|\cdot_i\|_2$ (`isotropic=True`) or $\|\cdot\|_1$: the TV of `tv_pdhg`, same minimiser.
    - ``"l1"``: $g = \|\cdot\|_1$ with $K = I$, $K = W$ (`wavelet` and `levels`, as in `ista`) or
      $K$ = `transform`.
    - a callable ``prox(v, t)`` returning $\operatorname{prox}_{t g}(v)$ for arrays of shape
      `K.out_shape`, with $K$ = `transform` (default $I$). E.g. ``prox_l2_squared`` gives
      $\tfrac\alpha2\|Kx\|^2$; a non-convex or inexact prox runs, without guarantees.

    $\rho$: by default $10\,\alpha/\hat x$ with $\hat x = \|y\|/(\|A\|\sqrt n)$ an RMS estimate of
    the image ($n$ pixels; the threshold $\alpha/\rho$ is then a tenth of the image's scale),
    $\|A\|$ by power iteration unless `op_norm` is given. ADMM converges for every $\rho > 0$
    (convex $g$, exact $x$-updates); $\rho$ sets the speed. The factor 10 was the best of
    0.1-300 for isotropic TV on 32 x 32 CT (16 views, 5% noise) at $\alpha$ = 0.3, 1, 3: 1132-1312
    iterations to `tol` = 1e-6, where 1x and 30x mostly hit the 3000-iteration cap
    (`linearised_admm`: 2715-5351 iterations, best at 3-10x). It is no universal optimum: for
    anisotropic TV on 16 x 16 CT (the tests) 1x took 434 iterations to `tol` = 1e-10, 10x 1652.
    Set `rho` for other problems.

    Stopping (Boyd et al. 2011, Sec. 3.3, relative form): with the primal residual
    $r = \|Kx_{k+1} - z_{k+1}\|$ and the dual residual $s = \rho\|K^*(z_{k+1} - z_k)\|$, `tol` stops
    once $r \le \text{tol}\max(\|Kx\|, \|z\|)$ and $s \le \text{tol}\,\rho\|K^*u\|$ (`converged`);
    without it exactly `max_iter` steps run in a `lax.scan` (reverse-differentiable). A step that
    produces a non-finite value is rejected: the loop stops with the last finite iterate and
    `nonfinite=True`. Result: `converged`; not converged and not `nonfinite`: `max_iter` reached.
    `history=True` records ``"objective"`` (built-in penalties only), ``"residual"``
    ($\|Ax_k - y\|$), ``"primal"`` ($r$), ``"dual"`` ($s$) and with `reference` ``"error"``.

    Real images; the data may be complex (`SubsampledFourier`). Jittable; vmap over `y`, `alpha`,
    `rho`, `x0`.

    Example:
        >>> op = RadonTransform(ParallelBeamGeometry.uniform((32, 32), 16))
        >>> y = op(shepp_logan(32))
        >>> sol = admm(op, y, 1.0, penalty="tv", max_iter=1000, tol=1e-4)
        >>> sol.x.shape, bool(sol.converged), int(sol.iterations), bool(sol.nonfinite)
        ((32, 32), True, 548, False)
    """
    return _admm("admm", op, y, alpha, penalty, transform, isotropic, wavelet, levels, rho, x0, max_iter, tol,
                 reference, history, op_norm, cg_iter=cg_iter)  # fmt: skip


def linearised_admm(
    op: LinearOperator,
    y: Array,
    alpha,
    *,
    penalty: str | Callable = "tv",
    transform: LinearOperator | None = None,
    isotropic: bool = True,
    wavelet=None,
    levels: int | None = None,
    rho=None,
    step=None,
    x0: Array | None = None,
    max_iter: int = 500,
    tol=None,
    reference: Array | None = None,
    history: bool = False,
    op_norm=None,
    transform_norm=None,
) -> Solution:
    r"""Linearised ADMM: `admm` with the $x$-update replaced by one gradient step of the augmented Lagrangian.

    $$x_{k+1} = x_k - \tau\big(A^*(Ax_k - y) + \rho K^*(Kx_k - z_k + u_k)\big),$$

    then the same $z$- and $u$-updates as `admm`. This is proximal ADMM (Fazel, Pong, Sun, Tseng
    2013) with the proximal term $\tfrac12\|x - x_k\|_P^2$, $P = I/\tau - A^*A - \rho K^*K$, which
    converges for $P \succeq 0$, i.e. $\tau \le 1/(\|A\|^2 + \rho\|K\|^2)$. One $A$, one $A^*$ and
    no inner solve per step, more steps than `admm`.

    `step` $\tau$ defaults to $0.99/(\|A\|^2 + \rho\|K\|^2)$ with $\|A\|$ by power iteration
    (inflated by 1%) unless `op_norm` is given, and $\|K\|$ the bound $\sqrt{4\,\text{ndim}}$ for TV,
    1 for $I$ and wavelets, and a power-iteration estimate (inflated by 1%) of a `transform`
    unless `transform_norm` is given. Everything else (penalties, $\rho$, stopping, `nonfinite`,
    history) as in `admm`.

    Example:
        >>> op = RadonTransform(ParallelBeamGeometry.uniform((32, 32), 16))
        >>> sol = linearised_admm(op, op(shepp_logan(32)), 0.1, penalty="l1", wavelet="haar", max_iter=500)
    """
    if step is not None:
        _check_scalar(step, "step")
        _check_positive(step, "step")
    if transform_norm is not None:
        _check_scalar(transform_norm, "transform_norm")
        _check_positive(transform_norm, "transform_norm")
    return _admm("linearised_admm", op, y, alpha, penalty, transform, isotropic, wavelet, levels, rho, x0, max_iter,
                 tol, reference, history, op_norm, step=step, transform_norm=transform_norm)  # fmt: skip


def _admm(
    fn, op, y, alpha, penalty, transform, isotropic, wavelet, levels, rho, x0, max_iter, tol, reference, history,
    op_norm, *, cg_iter=None, step=None, transform_norm=None,
):  # fmt: skip
    y, real, shape, x, reference = _setup(fn, op, y, x0, reference, tol, max_iter)
    _check_bool(history, "history")
    _check_scalar(alpha, "alpha")
    check_non_negative(alpha, "alpha")
    linearised = cg_iter is None
    if not linearised:
        _positive_int(cg_iter, "cg_iter")
    if rho is not None:
        _check_scalar(rho, "rho")
        _check_positive(rho, "rho")
    if op_norm is not None:
        _check_scalar(op_norm, "op_norm")
        _check_positive(op_norm, "op_norm")
    K, prox, value, norm_k = _penalty(fn, shape, penalty, transform, isotropic, wavelet, levels, real)
    alpha = jnp.asarray(alpha, real)
    need_norm = rho is None or (linearised and step is None)
    norm_a = None
    if need_norm:
        norm_a = jnp.asarray(_NORM_MARGIN * operator_norm(op, dtype=real) if op_norm is None else op_norm, real)
    rho = _default_rho(alpha, y, norm_a, int(np.prod(shape))) if rho is None else jnp.asarray(rho, real)
    if linearised:
        if step is None:
            if transform_norm is not None:
                norm_k = transform_norm
            elif norm_k is None:
                norm_k = _NORM_MARGIN * operator_norm(K, dtype=real)
            step = _SAFETY / (norm_a**2 + rho * jnp.asarray(norm_k, real) ** 2)
        step = jnp.asarray(step, real)

    aty = _adjoint(op, y, real)

    def normal(v):
        return _adjoint(op, op.mv(v), real) + rho * K.rmv(K.mv(v)).astype(real)

    def update(s: _State) -> _State:
        if linearised:
            grad = _adjoint(op, s.ax - y, real) + rho * K.rmv(s.kx - s.z + s.u).astype(real)
            x = s.x - step * grad
        else:
            x = _cg(normal, aty + rho * K.rmv(s.z - s.u).astype(real), s.x, cg_iter)
        kx = K.mv(x).astype(real)
        z = prox(kx + s.u, alpha / rho).astype(real)
        u = s.u + kx - z
        primal = jnp.linalg.norm(kx - z)
        dual = rho * jnp.linalg.norm(K.rmv(z - s.z))
        return _State(x, op.mv(x).astype(s.ax.dtype), kx, z, u, primal, dual, s.k, s.bad)

    def converged(s: _State):
        scale_p = jnp.maximum(jnp.linalg.norm(s.kx), jnp.linalg.norm(s.z))
        return (s.k > 0) & (s.primal <= tol * scale_p) & (s.dual <= tol * rho * jnp.linalg.norm(K.rmv(s.u)))

    def record(s: _State) -> dict:
        r = jnp.linalg.norm(s.ax - y)
        out = {"residual": r, "primal": s.primal, "dual": s.dual}
        if value is not None:
            out["objective"] = 0.5 * r**2 + alpha * value(s.kx)
        if reference is not None:
            out["error"] = jnp.linalg.norm(s.x - reference)
        return out

    ax = op.mv(x)
    ax = ax.astype(jnp.result_type(ax.dtype, y.dtype))
    kx = K.mv(x).astype(real)
    inf = jnp.asarray(jnp.inf, real)
    state = _State(x, ax, kx, kx, jnp.zeros_like(kx), inf, inf, jnp.asarray(0), jnp.asarray(False))
    state, it, done, bad, records = _run(
        _guarded(update), state, max_iter, None if tol is None else converged, record if history else None
    )
    return solution(state.x, it, done, jnp.linalg.norm(state.ax - y), records, ruled=tol is not None, data=y,
                    nonfinite=bad)
