r"""Plug-and-play (PGD, ADMM, HQS), RED and gradient-step PnP: classical splittings with a denoiser.

Every function takes the denoiser as a callable $D$: arrays of `op.in_shape` to the same shape and
dtype. A network is passed as it is when it maps images to images, or wrapped: a
`jaxrecon.nets.DnCNN`/`UNet` on `(1, H, W)` as ``lambda x: net(x[None])[0]``, a Flax model through
`jaxrecon.nets.from_flax` likewise. An Equinox module closed over or passed through
`equinox.filter_jit` stays a pytree (jit, vmap over the data, gradients to its weights through a
fixed-iteration run). This module never imports `jaxrecon.nets` (layering: solvers sit below nets).

With $D = \operatorname{prox}_{\gamma g}$ each scheme is its classical counterpart, which is what
the tests check: PnP-PGD is ISTA / proximal gradient, PnP-ADMM is ADMM with $K = I$, PnP-HQS is
alternating minimisation of $\tfrac12\|Ax-y\|^2 + \tfrac\mu2\|x - z\|^2 + g(z)$ ($\gamma = 1/\mu$), and
RED with a linear symmetric $D = W$ solves $(A^*A + \alpha(I - W))x = A^*y$. `gs_pnp` takes the
potential $g$ of a gradient-step denoiser $D = I - \nabla g$ instead and is proximal gradient
descent on $\tfrac12\|Ax-y\|^2 + \lambda g$.

**Implicitly differentiable fixed points.** These solvers run the iteration itself; to differentiate
a *converged* PnP solution without storing the iterations, use the deep equilibrium schemes of
`jaxrecon.deq` (Anderson forward, implicit function theorem backward): `DEProx(op, D, weight=None)`
on a `(1, H, W)` denoiser $D$ is the PnP-PGD fixed point $x = D(x - s A^*(Ax - y))$ with
$s = \eta/\|A\|^2$, and `EquilibriumRegularisation(op, G, alpha=alpha)` with $G(x) = x - D(x)$ solves
RED's equation (both checked against these solvers in `tests/deq/test_plug_and_play_equilibrium.py`).

All return a `Solution` (`x`, `iterations`, `converged`, `residual_norm` $= \|Ax - y\|$,
`history`, `nonfinite`) with the conventions of `admm`: `tol` stops on the relative change
$\|x_{k+1} - x_k\| \le \text{tol}\,\|x_{k+1}\|$ (plus the splitting's own residual where it has
one); without it exactly `max_iter` steps run in a `lax.scan` (reverse-differentiable, e.g. to
train the denoiser through the unrolled iteration); a non-finite step is rejected and reported
by `nonfinite=True`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array

from ..operators.linear_operator import LinearOperator, operator_norm
from .admm import _adjoint, _cg, _guarded, _positive_int, _run, _setup
from .iterate import Solution, check_non_negative, solution
from .tv import _NORM_MARGIN, _check_bool, _check_positive, _check_scalar

__all__ = ["pnp_pgd", "pnp_admm", "pnp_hqs", "red", "gs_pnp"]


class _State(NamedTuple):
    x: Array
    ax: Array  # A x
    z: Array  # the denoised variable (PGD, RED: = x)
    u: Array  # scaled dual variable (ADMM only; a zero otherwise)
    change: Array  # ||x_{k+1} - x_k||
    gap: Array  # ||x - z|| (ADMM, HQS)
    k: Array
    bad: Array


def _check_denoiser(fn: str, denoiser, shape, real):
    if not callable(denoiser):
        raise TypeError(f"{fn} expects denoiser to be a callable (H, W) -> (H, W), got {type(denoiser).__name__}")
    try:
        out = jax.eval_shape(denoiser, jax.ShapeDtypeStruct(shape, real))
    except Exception as e:  # the denoiser's own complaint, with the shape it was given
        raise ValueError(
            f"{fn}: denoiser failed on an array of shape {shape} (op.in_shape); a network on (1, H, W) "
            f"needs wrapping, e.g. lambda x: net(x[None])[0]. The error was: {e}"
        ) from e
    if getattr(out, "shape", None) != tuple(shape) or not jnp.issubdtype(out.dtype, jnp.floating):
        got = f"{getattr(out, 'shape', None)} {getattr(out, 'dtype', type(out).__name__)}"
        raise ValueError(f"{fn} expects denoiser to map {tuple(shape)} real arrays to the same shape, got {got}")


def _parameter(value, name):
    _check_scalar(value, name)
    _check_positive(value, name)
    return value


def _common(fn, op, y, denoiser, x0, max_iter, tol, reference, history):
    y, real, shape, x, reference = _setup(fn, op, y, x0, reference, tol, max_iter)
    _check_bool(history, "history")
    _check_denoiser(fn, denoiser, shape, real)
    return y, real, x, reference


def _solve(op, y, real, x, reference, max_iter, tol, history, update, *, dual=False, gap=None, objective=None):
    """Run `update` from x0 (z0 = x0, u0 = 0 when `dual`); `gap`: None, "record" or "stop" (also a stopping
    test); `objective(state)`, if given, is recorded in the history."""
    ax = op.mv(x)
    ax = ax.astype(jnp.result_type(ax.dtype, y.dtype))
    inf = jnp.asarray(jnp.inf, real)
    zero = jnp.zeros((), real)
    state = _State(x, ax, x, jnp.zeros_like(x) if dual else zero, inf, zero, jnp.asarray(0), jnp.asarray(False))

    def converged(s):
        scale = tol * jnp.linalg.norm(s.x)
        done = (s.k > 0) & (s.change <= scale)
        return done & (s.gap <= scale) if gap == "stop" else done

    def record(s):
        out = {"residual": jnp.linalg.norm(s.ax - y), "change": s.change}
        if gap is not None:
            out["gap"] = s.gap
        if objective is not None:
            out["objective"] = objective(s)
        if reference is not None:
            out["error"] = jnp.linalg.norm(s.x - reference)
        return out

    state, it, done, bad, records = _run(
        _guarded(update), state, max_iter, None if tol is None else converged, record if history else None
    )
    return solution(state.x, it, done, jnp.linalg.norm(state.ax - y), records, ruled=tol is not None, data=y,
                    nonfinite=bad)


def _step_from_norm(op, op_norm, real, extra=0.0):
    if op_norm is None:
        norm = _NORM_MARGIN * operator_norm(op, dtype=real)
    else:
        norm = jnp.asarray(_parameter(op_norm, "op_norm"), real)
    return 1 / (norm**2 + extra)


def pnp_pgd(
    op: LinearOperator,
    y: Array,
    denoiser: Callable,
    *,
    step=None,
    x0: Array | None = None,
    max_iter: int = 100,
    tol=None,
    reference: Array | None = None,
    history: bool = False,
    op_norm=None,
) -> Solution:
    r"""Plug-and-play proximal gradient: $x_{k+1} = D\big(x_k - s\,A^*(Ax_k - y)\big)$.

    With $D = \operatorname{prox}_{s\alpha g}$ this is ISTA for $\tfrac12\|Ax-y\|^2 + \alpha g(x)$
    (so $D$'s strength must be matched to the step: $s\alpha$). Step $s$ (`step`) defaults to
    $1/\|A\|^2$ ($\|A\|$ by power iteration, inflated by 1%, unless `op_norm` is given). The iteration
    is a fixed-point iteration of $T = D\circ(I - sA^*(A\cdot - y))$: it converges when $T$ is a
    contraction or averaged (e.g. $D$ firmly non-expansive and $s < 2/\|A\|^2$); for a learned $D$
    that is the user's business (see `jaxrecon.nets.lipschitz`). `history` records ``"residual"``,
    ``"change"`` ($\|x_{k+1} - x_k\|$) and with `reference` ``"error"``.

    Example:
        >>> op = RadonTransform(ParallelBeamGeometry.uniform((32, 32), 16))
        >>> D = lambda v: tv_denoise(v, 0.1 / operator_norm(op) ** 2, max_iter=50).x
        >>> pnp_pgd(op, op(shepp_logan(32)), D, max_iter=100).x.shape
        (32, 32)
    """
    fn = "pnp_pgd"
    y, real, x, reference = _common(fn, op, y, denoiser, x0, max_iter, tol, reference, history)
    s = _step_from_norm(op, op_norm, real) if step is None else jnp.asarray(_parameter(step, "step"), real)

    def update(st: _State) -> _State:
        x = denoiser(st.x - s * _adjoint(op, st.ax - y, real)).astype(real)
        return st._replace(x=x, ax=op.mv(x).astype(st.ax.dtype), z=x, change=jnp.linalg.norm(x - st.x))

    return _solve(op, y, real, x, reference, max_iter, tol, history, update)


def pnp_admm(
    op: LinearOperator,
    y: Array,
    denoiser: Callable,
    *,
    rho,
    x0: Array | None = None,
    max_iter: int = 100,
    cg_iter: int = 10,
    tol=None,
    reference: Array | None = None,
    history: bool = False,
) -> Solution:
    r"""Plug-and-play ADMM (Venkatakrishnan, Bouman, Wohlberg 2013): `admm` with $K = I$ and the prox replaced by $D$.

    $$x_{k+1} = (A^*A + \rho I)^{-1}\big(A^*y + \rho(z_k - u_k)\big),\quad
      z_{k+1} = D(x_{k+1} + u_k),\quad u_{k+1} = u_k + x_{k+1} - z_{k+1},$$

    the linear solve by `cg_iter` conjugate-gradient steps warm-started at $x_k$. With
    $D = \operatorname{prox}_{(\alpha/\rho) g}$ it is ADMM for $\tfrac12\|Ax-y\|^2 + \alpha g(x)$. $\rho$
    (required: with a denoiser of fixed strength it sets the balance, there is no neutral default)
    is a positive scalar. Returns $x$ (`z` agrees with it at convergence); `tol` also requires
    $\|x - z\| \le \text{tol}\,\|x\|$; `history` adds ``"gap"`` ($\|x_k - z_k\|$).

    Example:
        >>> op = RadonTransform(ParallelBeamGeometry.uniform((32, 32), 16))
        >>> D = lambda v: tv_denoise(v, 0.05, max_iter=50).x
        >>> pnp_admm(op, op(shepp_logan(32)), D, rho=1.0, max_iter=50).x.shape
        (32, 32)
    """
    fn = "pnp_admm"
    y, real, x, reference = _common(fn, op, y, denoiser, x0, max_iter, tol, reference, history)
    _positive_int(cg_iter, "cg_iter")
    rho = jnp.asarray(_parameter(rho, "rho"), real)
    aty = _adjoint(op, y, real)

    def normal(v):
        return _adjoint(op, op.mv(v), real) + rho * v

    def update(st: _State) -> _State:
        x = _cg(normal, aty + rho * (st.z - st.u), st.x, cg_iter)
        z = denoiser(x + st.u).astype(real)
        u = st.u + x - z
        return st._replace(
            x=x, ax=op.mv(x).astype(st.ax.dtype), z=z, u=u, change=jnp.linalg.norm(x - st.x), gap=jnp.linalg.norm(x - z)
        )

    return _solve(op, y, real, x, reference, max_iter, tol, history, update, dual=True, gap="stop")


def pnp_hqs(
    op: LinearOperator,
    y: Array,
    denoiser: Callable,
    *,
    mu,
    x0: Array | None = None,
    max_iter: int = 100,
    cg_iter: int = 10,
    tol=None,
    reference: Array | None = None,
    history: bool = False,
) -> Solution:
    r"""Plug-and-play half-quadratic splitting: alternate $x$ and $z = D(x)$ on the coupled objective.

    $$x_{k+1} = (A^*A + \mu I)^{-1}\big(A^*y + \mu z_k\big),\qquad z_{k+1} = D(x_{k+1}),$$

    the linear solve by `cg_iter` conjugate-gradient steps warm-started at $x_k$, $z_0 = x_0$. With
    $D = \operatorname{prox}_{(\alpha/\mu) g}$ this is alternating minimisation of
    $\tfrac12\|Ax - y\|^2 + \tfrac\mu2\|x - z\|^2 + \alpha g(z)$, whose minimiser solves
    $\min_x \tfrac12\|Ax-y\|^2 + \alpha\, e_{\alpha/\mu}g(x)$ ($e$ the Moreau envelope): for fixed $\mu$
    HQS is *not* the problem with $\alpha g$ itself (e.g. $g = \tfrac12\|\cdot\|^2$ gives Tikhonov with
    weight $\alpha\mu/(\alpha+\mu)$); it approaches it as $\mu \to \infty$. Returns $x$; `tol`
    and `history` (with ``"gap"`` $= \|x_k - z_k\|$) as in `pnp_admm`, except that the gap need
    not vanish here: `tol` stops on the change alone.

    Example:
        >>> op = RadonTransform(ParallelBeamGeometry.uniform((32, 32), 16))
        >>> D = lambda v: tv_denoise(v, 0.05, max_iter=50).x
        >>> pnp_hqs(op, op(shepp_logan(32)), D, mu=1.0, max_iter=50).x.shape
        (32, 32)
    """
    fn = "pnp_hqs"
    y, real, x, reference = _common(fn, op, y, denoiser, x0, max_iter, tol, reference, history)
    _positive_int(cg_iter, "cg_iter")
    mu = jnp.asarray(_parameter(mu, "mu"), real)
    aty = _adjoint(op, y, real)

    def normal(v):
        return _adjoint(op, op.mv(v), real) + mu * v

    def update(st: _State) -> _State:
        x = _cg(normal, aty + mu * st.z, st.x, cg_iter)
        z = denoiser(x).astype(real)
        return st._replace(x=x, ax=op.mv(x).astype(st.ax.dtype), z=z, change=jnp.linalg.norm(x - st.x),
                           gap=jnp.linalg.norm(x - z))  # fmt: skip

    return _solve(op, y, real, x, reference, max_iter, tol, history, update, gap="record")


def red(
    op: LinearOperator,
    y: Array,
    denoiser: Callable,
    alpha,
    *,
    step=None,
    x0: Array | None = None,
    max_iter: int = 200,
    tol=None,
    reference: Array | None = None,
    history: bool = False,
    op_norm=None,
) -> Solution:
    r"""Regularisation by denoising (Romano, Elad, Milanfar 2017), steepest descent:

    $$x_{k+1} = x_k - s\big(A^*(Ax_k - y) + \alpha\,(x_k - D(x_k))\big).$$

    A fixed point solves $A^*(Ax - y) + \alpha(x - D(x)) = 0$. When $D$ is locally homogeneous with
    a symmetric Jacobian, $x - D(x)$ is the gradient of $\rho(x) = \tfrac12 x^\top(x - D(x))$ and
    this is gradient descent on $\tfrac12\|Ax - y\|^2 + \alpha\rho(x)$; for a linear symmetric
    $D = W$ the solution is $(A^*A + \alpha(I - W))^{-1}A^*y$ (tested). The step $s$ defaults to
    $1/(\|A\|^2 + 2\alpha)$, safe when $\|I - D'\| \le 2$ (any non-expansive $D$; for $W$ symmetric
    with spectrum in $[0, 1]$, $\|I - W\| \le 1$), $\|A\|$ by power iteration (inflated by 1%)
    unless `op_norm` is given. `alpha` is a non-negative scalar (traced: vmap over it).
    `history` records ``"residual"``, ``"change"`` and with `reference` ``"error"``.

    Example:
        >>> op = RadonTransform(ParallelBeamGeometry.uniform((32, 32), 16))
        >>> D = lambda v: tv_denoise(v, 0.05, max_iter=50).x
        >>> red(op, op(shepp_logan(32)), D, 1.0, max_iter=100).x.shape
        (32, 32)
    """
    fn = "red"
    y, real, x, reference = _common(fn, op, y, denoiser, x0, max_iter, tol, reference, history)
    _check_scalar(alpha, "alpha")
    check_non_negative(alpha, "alpha")
    alpha = jnp.asarray(alpha, real)
    if step is None:
        s = _step_from_norm(op, op_norm, real, extra=2 * alpha)
    else:
        s = jnp.asarray(_parameter(step, "step"), real)

    def update(st: _State) -> _State:
        grad = _adjoint(op, st.ax - y, real) + alpha * (st.x - denoiser(st.x).astype(real))
        x = st.x - s * grad
        return st._replace(x=x, ax=op.mv(x).astype(st.ax.dtype), z=x, change=jnp.linalg.norm(x - st.x))

    return _solve(op, y, real, x, reference, max_iter, tol, history, update)


def gs_pnp(
    op: LinearOperator,
    y: Array,
    potential: Callable,
    lam,
    *,
    step=None,
    x0: Array | None = None,
    max_iter: int = 200,
    cg_iter: int = 10,
    tol=None,
    reference: Array | None = None,
    history: bool = False,
) -> Solution:
    r"""Gradient-step plug-and-play (Hurault, Leclaire, Papadakis, ICLR 2022): proximal gradient descent on
    $F(x) = \tfrac12\|Ax - y\|^2 + \lambda\,g(x)$ with the denoiser $D = I - \nabla g$:

    $$z_k = x_k - \tau\lambda\nabla g(x_k) = (1 - \tau\lambda)\,x_k + \tau\lambda\,D(x_k),\qquad
      x_{k+1} = \operatorname{prox}_{\tau f}(z_k) = (I + \tau A^*A)^{-1}(z_k + \tau A^*y),$$

    the prox by `cg_iter` conjugate-gradient steps warm-started at $x_k$. `potential` is the scalar
    $g$ on `op.in_shape` images (e.g. ``lambda x: gsd.potential(x[None])`` for a
    `jaxrecon.nets.GradientStepDenoiser` on `(1, H, W)`); $\nabla g$ by `jax.grad`.

    **Convergence:** if $\nabla g$ is $L$-Lipschitz, $g$ is bounded below and $\tau\lambda L < 1$,
    $F(x_k)$ is non-increasing, $\|x_{k+1} - x_k\| \to 0$ and cluster points are stationary points of
    $F$ (exact prox; with a finite `cg_iter` up to the CG error; the monotone decrease alone holds up
    to $\tau\lambda L < 2$, see `jaxrecon.nets.gradient_step`). `step` $\tau$ defaults to
    $1/\lambda$ (so $z_k = D(x_k)$, as in the paper's code), for which the condition reads $L < 1$.
    `lam` is a positive scalar. `history` records ``"objective"`` ($F(x_k)$), ``"residual"``,
    ``"change"`` and with `reference` ``"error"``.

    Example:
        >>> op = CircularConvolution(gaussian_kernel(5, 1.0), (32, 32))
        >>> g = lambda x: 0.25 * jnp.sum(jnp.log(jnp.cosh(x - 0.5)))  # smooth, L = 0.25
        >>> gs_pnp(op, op(shepp_logan(32)), g, 2.0, max_iter=50).x.shape
        (32, 32)
    """
    fn = "gs_pnp"
    y, real, shape, x, reference = _setup(fn, op, y, x0, reference, tol, max_iter)
    _check_bool(history, "history")
    _positive_int(cg_iter, "cg_iter")
    if not callable(potential):
        raise TypeError(f"{fn} expects potential to be a callable image -> scalar, got {type(potential).__name__}")
    out = jax.eval_shape(potential, jax.ShapeDtypeStruct(shape, real))
    if getattr(out, "shape", None) != ():
        raise ValueError(
            f"{fn} expects potential to map {shape} images to a scalar, got shape {getattr(out, 'shape', None)}"
        )
    lam = jnp.asarray(_parameter(lam, "lam"), real)
    tau = 1 / lam if step is None else jnp.asarray(_parameter(step, "step"), real)
    aty = _adjoint(op, y, real)
    grad = jax.grad(lambda v: potential(v).astype(real))

    def normal(v):
        return v + tau * _adjoint(op, op.mv(v), real)

    def update(st: _State) -> _State:
        z = st.x - tau * lam * grad(st.x)
        x = _cg(normal, z + tau * aty, st.x, cg_iter)
        return st._replace(x=x, ax=op.mv(x).astype(st.ax.dtype), z=z, change=jnp.linalg.norm(x - st.x))

    objective = None
    if history:
        objective = lambda s: 0.5 * jnp.sum(jnp.abs(s.ax - y) ** 2) + lam * potential(s.x)  # noqa: E731
    return _solve(op, y, real, x, reference, max_iter, tol, history, update, objective=objective)
