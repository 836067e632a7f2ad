r"""Stochastic gradient descent on $\tfrac12\|Ax - y\|^2$ with mini-batches of rows or of projection angles."""

from __future__ import annotations

from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

from ..operators.matrix import MatrixOperator
from ..operators.radon import RadonTransform, backproject, radon
from .iterate import Solution, any_of, iterate, solution
from .kaczmarz import _check_common
from .tikhonov import _operator_norm, _scalar

__all__ = ["sgd", "minibatch_gradient"]


def _num_blocks(op) -> int:
    """m: rows of a matrix, angles of a Radon transform."""
    return op.matrix.shape[0] if isinstance(op, MatrixOperator) else op.geom.num_angles


def minibatch_gradient(op: MatrixOperator | RadonTransform, y: Array, x: Array, batch: Array) -> Array:
    r"""The unbiased mini-batch gradient $\frac{m}{b} A_S^*(A_S x - y_S)$ of $\tfrac12\|Ax - y\|^2$.

    `batch` is an integer array of $b$ row indices (`MatrixOperator`, $m$ rows) or angle indices
    (`RadonTransform`, $m$ angles; $A_S$ is the Radon transform of the sub-geometry with those
    angles). For $S$ drawn uniformly among the $b$-subsets, $\mathbb{E}_S$ of this is the full
    gradient $A^*(Ax - y)$. Jittable with a traced `batch` (its length is static).
    """
    batch = jnp.asarray(batch)
    if batch.ndim != 1 or batch.shape[0] == 0 or not jnp.issubdtype(batch.dtype, jnp.integer):
        raise ValueError(
            f"minibatch_gradient expects a non-empty 1-D integer index array, got shape {batch.shape} "
            f"and dtype {batch.dtype}"
        )
    b = batch.shape[0]
    scale = _num_blocks(op) / b
    if isinstance(op, MatrixOperator):
        a = op.matrix[batch]
        return scale * (jnp.conj(a).T @ (a @ x - y[batch]))
    sub = op.geom.with_angles(op.geom.angles[batch])
    r = radon(x, sub, unroll=op.unroll) - y[batch]
    return scale * backproject(r, sub, unroll=op.unroll)


@partial(jax.jit, static_argnums=(1, 2))
def _default_step(op, batch_size, dtype):
    r"""$1/\min(m \max_i L_i, \frac{m}{b}\|A\|^2)$, $L_i \ge \|A_i\|^2$: bounds every mini-batch Hessian norm.

    $\|\tfrac mb A_S^*A_S\| \le \tfrac mb \sum_{i \in S}\|A_i\|^2 \le m\max_i\|A_i\|^2$ and
    $\le \tfrac mb\|A\|^2$. Rows: $L_i = \|a_i\|^2$ exactly. Angles: the Schur bound
    $\|A_\theta\|^2 \le \max(A_\theta\mathbf 1)\max(A_\theta^\top\mathbf 1)$ (non-negative entries;
    within 1.3x of the true norm on the geometries tried). $\|A\|$ by power iteration.
    """
    m = _num_blocks(op)
    if isinstance(op, MatrixOperator):
        block_norm2 = jnp.max(jnp.sum(jnp.abs(op.matrix) ** 2, axis=1)).astype(dtype)
    else:
        geom = op.geom
        row_sums = op.mv(jnp.ones(op.in_shape, dtype))  # (angles, detectors)
        ones = jnp.ones((1, geom.num_detectors), dtype)

        def max_column_sum(angle):
            return jnp.max(backproject(ones, geom.with_angles(angle[None]), unroll=1))

        col_max = jax.lax.map(max_column_sum, geom.angles.astype(dtype))
        block_norm2 = jnp.max(jnp.max(row_sums, axis=1) * col_max)
    full_norm2 = _operator_norm(op, dtype=dtype) ** 2
    return 1.0 / jnp.minimum(m * block_norm2, (m / batch_size) * full_norm2)


class _State(NamedTuple):
    x: Array
    key: Array
    count: Array  # steps taken (the schedule's argument)
    change: Array  # ||x_k - x_{k-1}|| (tracked only for `tol`)
    residual: Array  # ||Ax_k - y|| (tracked only for `delta` and `history`)


def sgd(
    op: MatrixOperator | RadonTransform,
    y: ArrayLike,
    *,
    batch_size: int,
    key,
    step: float | Array | Callable | None = None,
    x0: Array | None = None,
    max_iter: int = 1000,
    delta=None,
    tau=1.0,
    tol=None,
    reference: Array | None = None,
    history: bool = False,
) -> Solution:
    r"""Stochastic gradient descent on $\tfrac12\|Ax - y\|^2$ with random mini-batches.

    $$ x_{k+1} = x_k - \eta_k\, \tfrac{m}{b}\, A_{S_k}^*(A_{S_k}x_k - y_{S_k}), $$

    $S_k$ a uniformly random $b$-subset (without replacement) of the $m$ rows of a
    `MatrixOperator` or of the $m$ angles of a `RadonTransform` (then $A_{S_k}$ is the
    sub-geometry's transform; `batch_size` is static, so one compile). The factor $m/b$ makes the
    mini-batch gradient unbiased (see `minibatch_gradient`). One iteration is one mini-batch step.

    `step` $\eta$: a scalar (may be traced: vmap over it) or a schedule, any callable from the
    step count $k$ to a scalar, e.g. ``optax.exponential_decay(1e-2, 100, 0.5)`` or
    ``optax.polynomial_schedule``. For convergence with noisy (inconsistent) data the step must
    decay ($\sum\eta_k = \infty$, $\sum\eta_k^2 < \infty$); for consistent data a constant step
    converges. Default: $1/\min(m\max_i\|A_i\|^2,\ \tfrac mb\|A\|^2)$ ($A_i$ a row, or a
    single-angle block with its norm bounded by the Schur test; $\|A\|$ by power iteration),
    which bounds the Hessian of every mini-batch objective, so each step is stable.

    Stopping: `delta` (discrepancy principle $\|Ax_k - y\| \le \tau\delta$: one full forward
    product per step), `tol` ($\|x_{k+1} - x_k\| \le \text{tol}\|x_{k+1}\|$); neither: exactly
    `max_iter` steps through `lax.scan` (reverse-differentiable, e.g. in `step`). `history=True`
    records ``"residual"``, ``"objective"``, ``"step"`` and, with `reference`, ``"error"``.
    Jittable; vmap over `y`, `key`, a scalar `step`.

    Example:
        >>> op = MatrixOperator(a)  # (200, 20)
        >>> sol = sgd(op, y, batch_size=10, key=jax.random.PRNGKey(0), max_iter=2000,
        ...           step=optax.exponential_decay(1e-3, 500, 0.5))
    """
    if not isinstance(op, (MatrixOperator, RadonTransform)):
        raise TypeError(f"sgd expects a MatrixOperator or a RadonTransform, got {type(op).__name__}")
    m = _num_blocks(op)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= m:
        what = "rows" if isinstance(op, MatrixOperator) else "angles"
        raise ValueError(f"sgd expects an int batch_size in [1, {m}] (the number of {what}), got {batch_size!r}")
    if key is None:
        raise ValueError("sgd needs a PRNG key for the mini-batches, e.g. key=jax.random.PRNGKey(0); got key=None")
    y = jnp.asarray(y)
    if y.shape != tuple(op.out_shape):
        raise ValueError(f"sgd expects data of shape {tuple(op.out_shape)}, got {y.shape}")
    dtype = jax.eval_shape(op.rmv, y).dtype
    x = jnp.zeros(op.in_shape, dtype) if x0 is None else jnp.asarray(x0, dtype)
    if x.shape != tuple(op.in_shape):
        raise ValueError(f"sgd expects x0 of shape {tuple(op.in_shape)}, got {x.shape}")
    if step is None:
        step = _default_step(op, batch_size, jnp.real(x).dtype)
    if callable(step):
        schedule = step
    else:
        _scalar(step, "step", "sgd")
        schedule = lambda count: step
    _check_common("sgd", delta, tau, tol)
    need_res = delta is not None or history
    residual_of = lambda x: jnp.linalg.norm(op.mv(x) - y)

    def update(s: _State) -> _State:
        key, sub = jax.random.split(s.key)
        batch = jax.random.choice(sub, m, (batch_size,), replace=False)
        x = s.x - schedule(s.count) * minibatch_gradient(op, y, s.x, batch)
        change = jnp.linalg.norm(x - s.x) if tol is not None else s.change
        res = residual_of(x) if need_res else s.residual
        return _State(x, key, s.count + 1, change, res)

    stop = any_of(
        delta is not None and (lambda s: s.residual <= tau * delta),
        tol is not None and (lambda s: s.change <= tol * jnp.linalg.norm(s.x)),
    )

    def record(s: _State) -> dict:
        out = {"residual": s.residual, "objective": 0.5 * s.residual**2, "step": jnp.asarray(schedule(s.count - 1))}
        if reference is not None:
            out["error"] = jnp.linalg.norm(s.x - reference)
        return out

    inf = jnp.asarray(jnp.inf, jnp.real(x).dtype)
    init = _State(x, key, jnp.asarray(0), inf, residual_of(x) if need_res else inf)
    state, it, stopped, records = iterate(update, init, max_iter, stop=stop, record=record if history else None)
    return solution(state.x, it, stopped, residual_of(state.x), records, ruled=stop is not None, data=y)
