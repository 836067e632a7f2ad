r"""Landweber iteration, stopped by the discrepancy principle."""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from jaxtyping import Array

from ..operators.linear_operator import LinearOperator, operator_norm
from .iterate import Solution, any_of, check_non_negative, iterate, solution

__all__ = ["landweber"]


class _State(NamedTuple):
    x: Array
    residual: Array  # Ax - y


def landweber(
    op: LinearOperator,
    y: Array,
    *,
    x0: Array | None = None,
    step=None,
    max_iter: int = 100,
    delta=None,
    tau=1.0,
    tol=None,
    reference: Array | None = None,
    history: bool = False,
) -> Solution:
    r"""Landweber iteration $x_{k+1} = x_k - \omega A^*(Ax_k - y)$.

    Converges to the minimum-norm least-squares solution for $0 < \omega < 2/\|A\|^2$ (default
    $\omega = 1/\|A\|^2$, by power iteration). With noisy data the error first falls, then rises
    (semi-convergence): the iteration number is the regulariser. Stopping rules:

    - `delta` (noise level $\|y - y^\dagger\| \le \delta$): the discrepancy principle stops at the
      first $k$ with $\|Ax_k - y\| \le \tau\delta$ ($\tau > 1$ for the convergence theory; default 1).
    - `tol`: stop when $\|x_{k+1} - x_k\| \le \text{tol}\,\|x_k\|$.
    - neither: exactly `max_iter` steps, through `lax.scan` (reverse-differentiable).

    `history=True` records ``"residual"`` ($\|Ax_k - y\|$), ``"objective"``
    ($\tfrac12\|Ax_k-y\|^2$) and, with `reference`, ``"error"`` ($\|x_k - x^\dagger\|$) per step.
    Jittable; vmap over `y`, `delta` or `step`.

    Example:
        >>> op = MatrixOperator(jnp.array([[2.0, 0.0], [0.0, 1.0]]))
        >>> landweber(op, jnp.array([2.0, 1.0]), max_iter=200).x  # ~ [1, 1]
    """
    y = jnp.asarray(y)
    if y.shape != tuple(op.out_shape):
        raise ValueError(f"landweber expects data of shape {tuple(op.out_shape)}, got {y.shape}")
    x = jnp.zeros(op.in_shape, y.dtype) if x0 is None else jnp.asarray(x0, y.dtype)
    if x.shape != tuple(op.in_shape):
        raise ValueError(f"landweber expects x0 of shape {tuple(op.in_shape)}, got {x.shape}")
    if step is None:
        step = 1.0 / operator_norm(op, dtype=y.dtype) ** 2
    check_non_negative(step, "step")
    check_non_negative(tau, "tau")
    if delta is not None:
        check_non_negative(delta, "delta")
    if tol is not None:
        check_non_negative(tol, "tol")

    def update(s: _State) -> _State:
        x = s.x - step * op.rmv(s.residual)
        return _State(x, op.mv(x) - y)

    stop = any_of(
        delta is not None and (lambda s: jnp.linalg.norm(s.residual) <= tau * delta),
        # Relative size of the next step, step * ||A^*(Ax - y)||, from the stored residual.
        tol is not None and (lambda s: step * jnp.linalg.norm(op.rmv(s.residual)) <= tol * jnp.linalg.norm(s.x)),
    )

    def record(s: _State) -> dict:
        r = jnp.linalg.norm(s.residual)
        out = {"residual": r, "objective": 0.5 * r**2}
        if reference is not None:
            out["error"] = jnp.linalg.norm(s.x - reference)
        return out

    state, it, stopped, records = iterate(
        update, _State(x, op.mv(x) - y), max_iter, stop=stop, record=record if history else None
    )
    return solution(state.x, it, stopped, jnp.linalg.norm(state.residual), records, ruled=stop is not None, data=y)
