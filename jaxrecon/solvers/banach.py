r"""Landweber iteration in the Banach space $\ell^p$, $1 < p \le 2$ (sparsity-promoting), with duality maps."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from ..operators.linear_operator import LinearOperator, operator_norm
from .iterate import Solution, any_of, check_max_iter, check_non_negative, iterate, solution

__all__ = ["banach_landweber", "duality_map"]


def duality_map(x: Array, p) -> Array:
    r"""The duality map of $\ell^p$ with gauge $t^{p-1}$: $J_p(x) = |x|^{p-1}\operatorname{sign}(x)$, elementwise.

    $J_p = \nabla \tfrac1p\|x\|_p^p$; it satisfies $\langle J_p(x), x\rangle = \|x\|_p^p$ and
    $\|J_p(x)\|_{p^*} = \|x\|_p^{p-1}$, and its inverse is $J_{p^*}$ with $p^* = p/(p-1)$.

    Example:
        >>> duality_map(jnp.array([-4.0, 0.0, 9.0]), 1.5)  # [-2, 0, 3]
    """
    x = jnp.asarray(x)
    return jnp.sign(x) * jnp.abs(x) ** (p - 1)


_SPLITS = (1 / 16, 1 / 4, 1.0, 4.0)


class _State(NamedTuple):
    x_dual: Array  # x*_k = J_p(x_k), in l^{p*}
    x: Array
    x_prev: Array
    residual: Array  # A x_k - y
    k: Array


def banach_landweber(
    op: LinearOperator,
    y: Array,
    p,
    *,
    x0: Array | None = None,
    step=None,
    relaxation=1.0,
    op_norm=None,
    max_iter: int = 100,
    delta=None,
    tau=1.0,
    tol=None,
    reference: Array | None = None,
    history: bool = False,
) -> Solution:
    r"""Landweber iteration with $x \in \ell^p$ (Schöpfer, Louis & Schuster 2006), data in $\ell^2$.

    F. Schöpfer, A. K. Louis, T. Schuster, "Nonlinear iterative methods for linear ill-posed
    problems in Banach spaces", Inverse Problems 22 (2006) 311-329. The iteration runs in the dual
    space $\ell^{p^*}$, $p^* = p/(p-1)$:

    $$x^*_{k+1} = x^*_k - \mu_k A^*(Ax_k - y), \qquad x_{k+1} = J_{p^*}(x^*_{k+1}), \qquad
      x^*_0 = J_p(x_0),$$

    with the duality maps $J_p(x) = |x|^{p-1}\operatorname{sign}x$ (see `duality_map`). Started
    from $x_0 = 0$ (or any $x_0$ with $J_p(x_0)$ in the range of $A^*$), exact data, it converges
    to the minimum-$\ell^p$-norm solution of $Ax = y$; for $p$ near 1 that solution is sparse.
    $p = 2$ is ordinary `landweber` (identical iterates with the default steps).

    Step rule (default, `step=None`): the Bregman distance
    $D_k = \tfrac1p\|x^\dagger\|_p^p - \tfrac1p\|x_k\|_p^p - \langle x^*_k, x^\dagger - x_k\rangle$
    to any solution satisfies (the identity behind the convergence proofs of SLS 2006)
    $D_{k+1} - D_k = D^*(x^*_{k+1}, x^*_k) - \mu_k\langle Ax_k - y, A(x_k - x^\dagger)\rangle$, where
    $D^*$ is the Bregman distance of $\tfrac1{p^*}\|\cdot\|_{p^*}^{p^*}$. Instead of their modulus
    of smoothness we bound $D^*$ by Taylor's theorem componentwise ($p^* \ge 2$):
    $D^*(x^* + h, x^*) \le \tfrac{p^*-1}2(\|x^*\|_\infty + \|h\|_\infty)^{p^*-2}\|h\|_2^2$. With
    $h = -\mu_k g_k$, $g_k = A^*(Ax_k - y)$, $\|g_k\|_2^2 \le \|A\|^2\|Ax_k - y\|^2$, any step with
    $(p^*-1)\|A\|^2(\|x^*_k\|_\infty + \mu_k\|g_k\|_\infty)^{p^*-2}\mu_k \le \theta$ will do. We take

    $$\mu_k = \max_{c \in \{1/16, 1/4, 1, 4\}} \min\Big(
      \frac{\theta}{(p^*-1)\|A\|^2((1+c)\|x^*_k\|_\infty)^{p^*-2}},\;
      \Big(\frac{\theta}{(p^*-1)\|A\|^2((1+1/c)\|g_k\|_\infty)^{p^*-2}}\Big)^{1/(p^*-1)}\Big)$$

    (each $c$ covers the cases $\mu_k\|g_k\|_\infty \le c\|x^*_k\|_\infty$ and $>$), which, with
    `relaxation` $\theta \in (0, 2)$ (default 1), guarantees
    $D_{k+1} \le D_k - \mu_k(1 - \theta/2 - \delta/\|Ax_k - y\|)\|Ax_k - y\|^2$ for data with
    $\|y - Ax^\dagger\| \le \delta$: the Bregman distance to every solution decreases
    monotonically while $\|Ax_k - y\| > \tau\delta$ with $\tau > 2/(2-\theta)$, and $\mu_k$ stays
    bounded below on the (bounded) iterates, so the residual tends to zero with exact data and the
    discrepancy principle stops after finitely many steps. For $p = 2$ the rule is
    $\mu = \theta/\|A\|^2$. $\|A\|$ is `op_norm` or a power-iteration estimate. A number `step`
    instead uses the constant $\mu_k = $ `step` (no guarantee for $p < 2$).

    Stopping: `delta` (noise level) stops at the first $k$ with $\|Ax_k - y\| \le \tau\delta$
    (the default $\tau = 1$ matches `landweber`; the theory above asks $\tau > 2/(2-\theta)$);
    `tol` once $\|x_{k+1} - x_k\| \le \text{tol}\,\|x_{k+1}\|$; neither: exactly `max_iter`
    steps in a `lax.scan` (reverse-differentiable). `history=True` records ``"residual"``,
    ``"objective"`` ($\tfrac12\|Ax_k - y\|^2$), ``"norm"`` ($\|x_k\|_p$) and, with `reference`
    $x^\dagger$, ``"error"`` ($\|x_k - x^\dagger\|_2$) and ``"bregman"`` ($D_k$ above).
    Jittable; vmap over `y`, `delta`, `step`, `relaxation` (and `p`, which may be traced).

    Example:
        >>> a = jax.random.normal(jax.random.PRNGKey(0), (20, 50)) / 4.5
        >>> y = a[:, :3] @ jnp.array([1.0, -2.0, 1.5])  # a 3-sparse x, underdetermined system
        >>> banach_landweber(MatrixOperator(a), y, 1.2, max_iter=3000).x[:5]  # ~ [1, -2, 1.5, 0, 0]
    """
    if not isinstance(op, LinearOperator):
        raise TypeError(f"banach_landweber expects a LinearOperator, got {type(op).__name__}")
    if op.in_complex:
        raise TypeError("banach_landweber needs a real domain (the l^p duality maps are real), got a complex one")
    if not hasattr(y, "shape"):
        raise TypeError(f"banach_landweber expects array data of shape {tuple(op.out_shape)}, got {type(y).__name__}")
    y = jnp.asarray(y)
    if y.shape != tuple(op.out_shape):
        raise ValueError(f"banach_landweber expects data of shape {tuple(op.out_shape)}, got {y.shape}")
    if jnp.iscomplexobj(y):
        raise TypeError(f"banach_landweber needs real data (Y = l^2 real), got dtype {y.dtype}")
    if not jnp.issubdtype(y.dtype, jnp.floating):
        y = y.astype(jnp.result_type(float))
    dtype = y.dtype
    if not isinstance(p, jax.core.Tracer):
        pv = np.asarray(p)
        if pv.shape != () or not np.isfinite(pv) or not (1 < pv <= 2):
            raise ValueError(f"p must be a scalar with 1 < p <= 2, got {p!r}")
    hilbert = not isinstance(p, jax.core.Tracer) and float(p) == 2.0
    max_iter = check_max_iter(max_iter)
    check_non_negative(tau, "tau")
    for value, name in ((delta, "delta"), (tol, "tol"), (step, "step"), (op_norm, "op_norm")):
        if value is not None:
            check_non_negative(value, name)
    if not isinstance(relaxation, jax.core.Tracer):
        rv = np.asarray(relaxation)
        if rv.shape != () or not (0 < rv < 2):
            raise ValueError(f"relaxation must be a scalar in (0, 2), got {relaxation!r}")
    in_shape = tuple(op.in_shape)
    x = jnp.zeros(in_shape, dtype) if x0 is None else jnp.asarray(x0, dtype)
    if x.shape != in_shape:
        raise ValueError(f"banach_landweber expects x0 of shape {in_shape}, got {x.shape}")
    if reference is not None and jnp.shape(reference) != in_shape:
        raise ValueError(f"banach_landweber expects a reference of shape {in_shape}, got {jnp.shape(reference)}")

    p = jnp.asarray(p, dtype)
    q = p / (p - 1)
    if hilbert:
        to_dual = to_primal = lambda v: v
    else:
        to_dual, to_primal = (lambda v: duality_map(v, p)), (lambda v: duality_map(v, q))
    if step is None:
        norm = operator_norm(op, dtype=dtype) if op_norm is None else jnp.asarray(op_norm, dtype)
        base = jnp.asarray(relaxation, dtype) / ((q - 1) * norm**2)

        def step_size(x_dual, g):
            if hilbert:
                return base
            # mu (p*-1)|A|^2 (B + mu G)^(p*-2) <= theta holds if, for some c > 0, both
            # mu <= base / ((1+c) B)^(p*-2) and mu^(p*-1) <= base / ((1+1/c) G)^(p*-2): take the
            # best of a few c. Safe powers: a zero B or G imposes no bound (+inf).
            b, m = jnp.max(jnp.abs(x_dual)), jnp.max(jnp.abs(g))
            mu = jnp.zeros((), dtype)
            for c in _SPLITS:
                bb, mm = (1 + c) * b, (1 + 1 / c) * m
                mu1 = jnp.where(bb > 0, base / jnp.where(bb > 0, bb, 1) ** (q - 2), jnp.inf)
                mu2 = jnp.where(mm > 0, (base / jnp.where(mm > 0, mm, 1) ** (q - 2)) ** (1 / (q - 1)), jnp.inf)
                mu = jnp.maximum(mu, jnp.minimum(mu1, mu2))
            return jnp.where(jnp.isfinite(mu), mu, 0)  # both infinite only when g = 0: no update

    else:
        constant = jnp.asarray(step, dtype)
        step_size = lambda x_dual, g: constant

    def update(s: _State) -> _State:
        g = op.rmv(s.residual)
        x_dual = s.x_dual - step_size(s.x_dual, g) * g
        x = to_primal(x_dual)
        return _State(x_dual, x, s.x, op.mv(x) - y, s.k + 1)

    stop = any_of(
        delta is not None and (lambda s: jnp.linalg.norm(s.residual) <= tau * delta),
        tol is not None and (lambda s: (s.k > 0) & (jnp.linalg.norm(s.x - s.x_prev) <= tol * jnp.linalg.norm(s.x))),
    )

    def record(s: _State) -> dict:
        r = jnp.linalg.norm(s.residual)
        norm_p = jnp.sum(jnp.abs(s.x) ** p) ** (1 / p)
        out = {"residual": r, "objective": 0.5 * r**2, "norm": norm_p}
        if reference is not None:
            ref = jnp.asarray(reference, dtype)
            out["error"] = jnp.linalg.norm(s.x - ref)
            out["bregman"] = (jnp.sum(jnp.abs(ref) ** p) - norm_p**p) / p - jnp.vdot(s.x_dual, ref - s.x)
        return out

    state0 = _State(to_dual(x), x, x, op.mv(x) - y, jnp.asarray(0))
    state, it, stopped, records = iterate(update, state0, max_iter, stop=stop, record=record if history else None)
    return solution(state.x, it, stopped, jnp.linalg.norm(state.residual), records, ruled=stop is not None, data=y)
