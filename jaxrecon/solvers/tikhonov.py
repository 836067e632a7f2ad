r"""Direct and Krylov solvers for linear least squares: TSVD and Tikhonov via the SVD, CGLS, and
non-negative Tikhonov by projected gradient descent.

Spectral (direct) solvers work on a dense matrix: a `MatrixOperator`'s own, or any small operator's,
assembled column by column with `as_matrix`. With the singular value decomposition
$A = U\Sigma V^*$, $\Sigma = \operatorname{diag}(\sigma_1 \ge \sigma_2 \ge \dots)$, every
*filter method* reconstructs

$$ x = \sum_i \frac{f_i}{\sigma_i}\, \langle u_i, y\rangle\, v_i, $$

with filter factors $f_i = 1$ for $i <$ `rank` (truncated SVD) or $f_i = \sigma_i^2/(\sigma_i^2+\alpha)$
(Tikhonov). Decompose once with `decompose(op)` and pass the `SVD` instead of the operator to reuse
it along a whole regularisation path (`jax.vmap` over `alpha` or `rank`).
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from ..operators.linear_operator import LinearOperator, operator_norm
from ..operators.matrix import MatrixOperator
from .iterate import Solution, iterate, solution

__all__ = ["as_matrix", "SVD", "decompose", "svd_filter", "tsvd", "tikhonov", "cgls", "nonnegative_tikhonov"]

MAX_MATRIX_ENTRIES = 200_000_000


def _scalar(value, name, fname):
    """A non-negative scalar parameter; traced values (vmap over parameters) pass unchecked.

    Unlike `iterate.check_non_negative` this checks concrete values with NumPy, so a concrete
    `jax.Array` closed over inside `jit` is accepted (jnp ops on it would be staged into tracers).
    """
    if jnp.ndim(value) != 0:
        raise ValueError(f"{fname} expects a scalar {name} (vmap over values), got shape {jnp.shape(value)}")
    if not isinstance(value, jax.core.Tracer):
        v = np.asarray(value)
        if not (np.isfinite(v) and v >= 0):
            raise ValueError(f"{name} must be finite and non-negative, got {value!r}")
    return value


# Eager calls of a jitted power iteration compile once per operator structure (not on every call).
_operator_norm = jax.jit(operator_norm, static_argnames=("num_iter", "dtype"))


# --------------------------------------------------------------------------------------------------
# Dense matrices and the SVD
# --------------------------------------------------------------------------------------------------


def as_matrix(op: LinearOperator, *, dtype=None, max_entries: int = MAX_MATRIX_ENTRIES) -> Array:
    r"""The dense $(\prod \text{out\_shape}, \prod \text{in\_shape})$ matrix $M$ of a linear operator.

    Column $j$ is $A e_j$ (row-major flattening of the input and output arrays), computed with
    `jax.lax.map` over batches of basis vectors, so the identity is never stored. A
    `MatrixOperator` returns its own matrix. `dtype` is the basis dtype (default: float, or complex
    for operators with a complex domain). Raises `ValueError` if the matrix would have more than
    `max_entries` (default 2e8) entries.

    Example:
        >>> op = RadonTransform(ParallelBeamGeometry.uniform((8, 8), 4))
        >>> m = as_matrix(op)            # (4 * 12, 64)
        >>> x = jnp.ones((8, 8))
        >>> jnp.allclose(m @ x.ravel(), op(x).ravel())
        Array(True, dtype=bool)
    """
    if not isinstance(op, LinearOperator):
        raise TypeError(f"as_matrix expects a LinearOperator, got {type(op).__name__}")
    n, m = math.prod(op.in_shape), math.prod(op.out_shape)
    if m * n > max_entries:
        raise ValueError(
            f"as_matrix would build a {m} x {n} matrix ({m * n:.3g} entries), more than "
            f"max_entries={max_entries:.3g}; use a matrix-free solver (cgls) or raise max_entries"
        )
    if isinstance(op, MatrixOperator):
        return op.matrix if dtype is None else op.matrix.astype(dtype)
    if dtype is None:
        dtype = jnp.result_type(complex) if op.in_complex else jnp.result_type(float)
    return _assemble(op, jnp.dtype(dtype))


@partial(jax.jit, static_argnames=("dtype",))
def _assemble(op: LinearOperator, dtype) -> Array:
    """Jitted (cached per operator structure): eager calls compile once."""
    n = math.prod(op.in_shape)
    in_shape = tuple(op.in_shape)

    def column(j):
        e = jnp.zeros(n, dtype).at[j].set(1, mode="drop").reshape(in_shape)  # j >= n: a zero column
        return op.mv(e).ravel()

    # Batches of `batch` basis vectors; pad the index range to a multiple of it (one loop body).
    batch = min(n, 128)
    padded = -(-n // batch) * batch
    cols = jax.lax.map(column, jnp.arange(padded), batch_size=batch)[:n]  # (n, m)
    return cols.T


class SVD(eqx.Module):
    r"""A thin singular value decomposition $A = U \operatorname{diag}(s) V^*$ of an operator's matrix.

    Attributes:
        u: `(m, k)`, orthonormal columns, `k = min(m, n)`.
        s: `(k,)`, non-negative, descending.
        vh: `(k, n)`, $V^*$.
        in_shape, out_shape: the operator's shapes (static).
        real_domain: static; True when a real-domain operator has complex values (e.g. subsampled
            Fourier of real images): the SVD is then of the real matrix $[\operatorname{Re} M;
            \operatorname{Im} M]$, so solutions are real least-squares solutions.

    Build it with `decompose`. It is a pytree: pass it through `jit`, close over it in `vmap`.
    """

    u: Array
    s: Array
    vh: Array
    in_shape: tuple[int, ...] = eqx.field(static=True)
    out_shape: tuple[int, ...] = eqx.field(static=True)
    real_domain: bool = eqx.field(static=True, default=False)

    @property
    def rank_bound(self) -> int:
        """`k = min(m, n)`, the number of singular values (the largest valid `rank`)."""
        return self.s.shape[0]


def decompose(op: LinearOperator, *, dtype=None, max_entries: int = MAX_MATRIX_ENTRIES) -> SVD:
    r"""The thin SVD of `as_matrix(op)` (via `jnp.linalg.svd`), for reuse by `tsvd`, `tikhonov`, `svd_filter`.

    Cost $O(mn\min(m, n))$ once; each solve after it is $O((m + n)k)$.

    Example:
        >>> svd = decompose(op)
        >>> xs = jax.vmap(lambda a: tikhonov(svd, y, a))(jnp.logspace(-6, 0, 20))  # one decomposition
    """
    if isinstance(op, SVD):
        return op
    matrix = as_matrix(op, dtype=dtype, max_entries=max_entries)
    real_domain = (not op.in_complex) and jnp.iscomplexobj(matrix)
    if real_domain:
        matrix = jnp.concatenate([jnp.real(matrix), jnp.imag(matrix)], axis=0)
    u, s, vh = jnp.linalg.svd(matrix, full_matrices=False)
    return SVD(u, s, vh, tuple(op.in_shape), tuple(op.out_shape), bool(real_domain))


def _as_svd(op_or_svd, name: str) -> SVD:
    if isinstance(op_or_svd, SVD):
        return op_or_svd
    if isinstance(op_or_svd, LinearOperator):
        return decompose(op_or_svd)
    raise TypeError(f"{name} expects a LinearOperator or an SVD from decompose(op), got {type(op_or_svd).__name__}")


def _check_data(svd: SVD, y, name: str) -> Array:
    y = jnp.asarray(y)
    if y.shape != svd.out_shape:
        raise ValueError(f"{name} expects data of shape {svd.out_shape}, got {y.shape}")
    return y


def _apply(svd: SVD, y: Array, inv: Array) -> Array:
    """$V \\operatorname{diag}(\\text{inv}) U^* y$, reshaped to the operator's input shape."""
    yf = y.ravel()
    if svd.real_domain:
        yf = jnp.concatenate([jnp.real(yf), jnp.imag(yf)])
    coef = jnp.conj(svd.u).T @ yf
    x = jnp.conj(svd.vh).T @ (inv * coef)
    return x.reshape(svd.in_shape)


def _cutoff(svd: SVD, rcond) -> Array:
    """Singular values treated as zero: $\\sigma_i \\le$ rcond $\\sigma_1$ (default rcond = eps max(m, n))."""
    if rcond is None:
        rcond = jnp.finfo(svd.s.dtype).eps * max(svd.u.shape[0], svd.vh.shape[1])
    return svd.s > rcond * svd.s[0]


def svd_filter(op, y: ArrayLike, filter_factors: ArrayLike, *, rcond=None) -> Array:
    r"""The filter-method solution $x = \sum_i (f_i/\sigma_i)\langle u_i, y\rangle v_i$.

    Args:
        op: a `LinearOperator` (decomposed on the spot) or an `SVD` from `decompose`.
        y: data of shape `op.out_shape`.
        filter_factors: $f_i$, shape `(k,)` with `k = min(m, n)`, in the order of the descending
            singular values. $f_i = 1$ for all $i$ gives the pseudo-inverse solution.
        rcond: singular values $\le$ `rcond` $\sigma_1$ count as zero (their terms are dropped);
            default $\varepsilon \max(m, n)$, as in `numpy.linalg.lstsq`.

    Returns the reconstruction of shape `op.in_shape` (a direct method: no `Solution`).

    Example:
        >>> svd = decompose(MatrixOperator(a))
        >>> x = svd_filter(svd, y, svd.s**2 / (svd.s**2 + 1e-2))  # = tikhonov(svd, y, 1e-2)
    """
    svd = _as_svd(op, "svd_filter")
    y = _check_data(svd, y, "svd_filter")
    f = jnp.asarray(filter_factors)
    if f.shape != svd.s.shape:
        raise ValueError(f"svd_filter expects filter_factors of shape {svd.s.shape}, got {f.shape}")
    keep = _cutoff(svd, rcond)
    inv = jnp.where(keep, f / jnp.where(keep, svd.s, 1), 0)
    return _apply(svd, y, inv)


def tsvd(op, y: ArrayLike, rank, *, rcond=None) -> Array:
    r"""Truncated SVD: $x_r = \sum_{i < r} \sigma_i^{-1}\langle u_i, y\rangle v_i$ (filter factors $[i < r]$).

    `rank` is an int in $[0, \min(m, n)]$; it may be traced (the truncation is a mask, not a
    slice), so `jax.vmap(lambda r: tsvd(svd, y, r))(jnp.arange(k + 1))` gives the whole path.
    `op` is a `LinearOperator` or an `SVD` from `decompose`; see `svd_filter` for `rcond`.

    Example:
        >>> tsvd(MatrixOperator(jnp.diag(jnp.array([2.0, 1e-8]))), jnp.array([2.0, 1.0]), 1)  # [1, 0]
    """
    svd = _as_svd(op, "tsvd")
    y = _check_data(svd, y, "tsvd")
    k = svd.rank_bound
    if isinstance(rank, bool) or not (
        isinstance(rank, int) or (hasattr(rank, "dtype") and jnp.issubdtype(rank.dtype, jnp.integer))
    ):
        raise TypeError(f"tsvd expects an integer rank, got {rank!r}")
    if jnp.ndim(rank) != 0:
        raise ValueError(f"tsvd expects a scalar rank (vmap over ranks), got shape {jnp.shape(rank)}")
    if not isinstance(rank, jax.core.Tracer) and not 0 <= int(rank) <= k:
        raise ValueError(f"tsvd expects 0 <= rank <= min(m, n) = {k}, got {int(rank)}")
    keep = (jnp.arange(k) < rank) & _cutoff(svd, rcond)
    inv = jnp.where(keep, 1 / jnp.where(keep, svd.s, 1), 0)
    return _apply(svd, y, inv)


def tikhonov(op, y: ArrayLike, alpha, *, rcond=None) -> Array:
    r"""Tikhonov regularisation $x_\alpha = \arg\min_x \|Ax - y\|^2 + \alpha\|x\|^2 = (A^*A + \alpha I)^{-1}A^*y$.

    Exact, via the SVD: $x_\alpha = \sum_i \frac{\sigma_i}{\sigma_i^2 + \alpha}\langle u_i, y\rangle v_i$
    (filter factors $\sigma_i^2/(\sigma_i^2 + \alpha)$). $\alpha \ge 0$ may be traced: vmap over
    it, differentiate with respect to it. $\alpha = 0$ gives the minimum-norm least-squares
    solution. `op` is a `LinearOperator` or an `SVD` from `decompose` (reuse it along a path).
    For operators too large for a dense SVD use `cgls(op, y, alpha=alpha)`.

    Example:
        >>> svd = decompose(MatrixOperator(a))
        >>> path = jax.vmap(lambda al: tikhonov(svd, y, al))(jnp.logspace(-8, 1, 30))
    """
    svd = _as_svd(op, "tikhonov")
    y = _check_data(svd, y, "tikhonov")
    alpha = _scalar(alpha, "alpha", "tikhonov")
    s = svd.s
    den = s**2 + alpha
    keep = _cutoff(svd, rcond) & (den > 0)
    inv = jnp.where(keep, s / jnp.where(keep, den, 1), 0)
    return _apply(svd, y, inv)


# --------------------------------------------------------------------------------------------------
# Matrix-free: CGLS and projected gradient
# --------------------------------------------------------------------------------------------------


def _inner(a, b):
    return jnp.real(jnp.vdot(a, b))


def _prepare(op, y, x0, name):
    if not isinstance(op, LinearOperator):
        raise TypeError(f"{name} expects a LinearOperator, got {type(op).__name__}")
    y = jnp.asarray(y)
    if y.shape != tuple(op.out_shape):
        raise ValueError(f"{name} expects data of shape {tuple(op.out_shape)}, got {y.shape}")
    dtype = jax.eval_shape(op.rmv, y).dtype
    x = jnp.zeros(op.in_shape, dtype) if x0 is None else jnp.asarray(x0, dtype)
    if x.shape != tuple(op.in_shape):
        raise ValueError(f"{name} expects x0 of shape {tuple(op.in_shape)}, got {x.shape}")
    return y, x


class _CGLSState(NamedTuple):
    x: Array
    r: Array  # y - Ax
    s: Array  # A^*r - alpha x, the normal-equation residual
    p: Array
    gamma: Array  # ||s||^2


def cgls(
    op: LinearOperator,
    y: ArrayLike,
    *,
    alpha=0.0,
    x0: Array | None = None,
    max_iter: int = 100,
    tol=None,
    reference: Array | None = None,
    history: bool = False,
) -> Solution:
    r"""CGLS: conjugate gradients on the normal equations $(A^*A + \alpha I)x = A^*y$.

    Minimises $\|Ax - y\|^2 + \alpha\|x\|^2$ matrix-free (one $A$ and one $A^*$ per iteration),
    in the numerically stable CGLS form (Björck): with $r = y - Ax$, $s = A^*r - \alpha x$,

    $$ q = Ap,\quad a = \frac{\|s\|^2}{\|q\|^2 + \alpha\|p\|^2},\quad x \mathrel{+}= a p,\quad
       r \mathrel{-}= a q,\quad s^+ = A^*r - \alpha x,\quad p = s^+ + \frac{\|s^+\|^2}{\|s\|^2}\, p. $$

    $\alpha = 0$: least squares (the minimum-norm solution from `x0 = 0`); with few iterations it
    also regularises (semi-convergence). $\alpha > 0$: matrix-free Tikhonov. In exact arithmetic
    it terminates in at most $n$ steps.

    Stopping: `tol` stops when $\|A^*(y - Ax) - \alpha x\| \le \text{tol}\,\|A^*y\|$ (the relative
    normal-equation residual; `converged` reports it, and also roundoff, $\|s\| \le 10\,\varepsilon
    \|s_0\|$, where the iteration stops moving); without it, exactly `max_iter` steps through
    `lax.scan` (reverse-differentiable; past roundoff the iterate stays put). `history=True`
    records ``"residual"`` ($\|Ax_k - y\|$), ``"normal_residual"``, ``"objective"``
    ($\tfrac12\|Ax_k-y\|^2 + \tfrac\alpha2\|x_k\|^2$) and, with `reference`, ``"error"``.
    Jittable; vmap over `y` and `alpha`.

    Example:
        >>> op = MatrixOperator(jnp.array([[2.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
        >>> cgls(op, jnp.array([2.0, 1.0, 5.0]), max_iter=2).x  # [1, 1]
    """
    y, x = _prepare(op, y, x0, "cgls")
    alpha = _scalar(alpha, "alpha", "cgls")
    if tol is not None:
        tol = _scalar(tol, "tol", "cgls")
    r = y - op.mv(x)
    s = op.rmv(r) - alpha * x
    gamma = _inner(s, s)
    # At roundoff (||s|| <= 10 eps ||s_0||) the iteration stops moving: continuing in float32 made
    # the residual grow again without bound (1e-3 -> 1e6 in 80 further steps on a 128 x 128 CT).
    floor = (10 * jnp.finfo(gamma.dtype).eps) ** 2 * gamma

    def update(st: _CGLSState) -> _CGLSState:
        q = op.mv(st.p)
        delta = _inner(q, q) + alpha * _inner(st.p, st.p)
        ok = (delta > 0) & (st.gamma > floor)
        a = jnp.where(ok, st.gamma / jnp.where(ok, delta, 1), 0).astype(st.gamma.dtype)
        x = st.x + a * st.p
        r = st.r - a * q
        s = op.rmv(r) - alpha * x
        gamma = _inner(s, s)
        ok = st.gamma > 0
        beta = jnp.where(ok, gamma / jnp.where(ok, st.gamma, 1), 0)
        return _CGLSState(x, r, s, s + beta * st.p, gamma)

    stop = None
    if tol is not None:
        bound = tol * jnp.linalg.norm(op.rmv(y))
        stop = lambda st: (jnp.sqrt(st.gamma) <= bound) | (st.gamma <= floor)  # roundoff: as close as it gets

    def record(st: _CGLSState) -> dict:
        res = jnp.linalg.norm(st.r)
        out = {
            "residual": res,
            "normal_residual": jnp.sqrt(st.gamma),
            "objective": 0.5 * res**2 + 0.5 * alpha * _inner(st.x, st.x),
        }
        if reference is not None:
            out["error"] = jnp.linalg.norm(st.x - reference)
        return out

    state, it, stopped, records = iterate(
        update, _CGLSState(x, r, s, s, gamma), max_iter, stop=stop, record=record if history else None
    )
    return solution(state.x, it, stopped, jnp.linalg.norm(op.mv(state.x) - y), records, ruled=stop is not None, data=y)


class _PGState(NamedTuple):
    x: Array
    change: Array  # ||x_k - x_{k-1}||


def nonnegative_tikhonov(
    op: LinearOperator,
    y: ArrayLike,
    alpha,
    *,
    step=None,
    x0: Array | None = None,
    max_iter: int = 500,
    tol=None,
    reference: Array | None = None,
    history: bool = False,
) -> Solution:
    r"""Non-negative Tikhonov: $\min_{x \ge 0} \tfrac12\|Ax - y\|^2 + \tfrac\alpha2\|x\|^2$ by projected gradient descent.

    $$ x_{k+1} = \max\big(0,\; x_k - \lambda\,[(A^*A + \alpha I)x_k - A^*y]\big), $$

    convergent for $0 < \lambda < 2/(\|A\|^2 + \alpha)$; default $\lambda = 1/(\|A\|^2 + \alpha)$
    ($\|A\|$ by power iteration). Linear rate $1 - \lambda\alpha$ per step for $\alpha > 0$.
    `tol` stops when $\|x_{k+1} - x_k\| \le \text{tol}\,\|x_{k+1}\|$; without it, exactly `max_iter`
    steps through `lax.scan` (reverse-differentiable). `history=True` records ``"residual"``,
    ``"objective"`` and, with `reference`, ``"error"``. The start `x0` is projected first.
    Jittable; vmap over `y`, `alpha`, `step`. Real operators only.

    Example:
        >>> op = MatrixOperator(jnp.eye(2))
        >>> nonnegative_tikhonov(op, jnp.array([2.0, -1.0]), 1.0).x  # [1, 0]
    """
    y, x = _prepare(op, y, x0, "nonnegative_tikhonov")
    if jnp.iscomplexobj(x):
        raise TypeError(f"nonnegative_tikhonov needs a real domain, got dtype {x.dtype}")
    alpha = _scalar(alpha, "alpha", "nonnegative_tikhonov")
    if step is None:
        step = 1.0 / (_operator_norm(op, dtype=x.dtype) ** 2 + alpha)
    step = _scalar(step, "step", "nonnegative_tikhonov")
    if tol is not None:
        tol = _scalar(tol, "tol", "nonnegative_tikhonov")
    aty = op.rmv(y)

    def update(st: _PGState) -> _PGState:
        grad = op.rmv(op.mv(st.x)) + alpha * st.x - aty
        x = jnp.maximum(st.x - step * grad, 0)
        # The change is only tracked for `tol` (norm's gradient at 0 is NaN: keep it out of scans).
        change = st.change if tol is None else jnp.linalg.norm(x - st.x)
        return _PGState(x, change)

    stop = None if tol is None else (lambda st: st.change <= tol * jnp.linalg.norm(st.x))

    def record(st: _PGState) -> dict:
        res = jnp.linalg.norm(op.mv(st.x) - y)
        out = {"residual": res, "objective": 0.5 * res**2 + 0.5 * alpha * jnp.sum(st.x**2)}
        if reference is not None:
            out["error"] = jnp.linalg.norm(st.x - reference)
        return out

    x = jnp.maximum(x, 0)
    state, it, stopped, records = iterate(
        update, _PGState(x, jnp.asarray(jnp.inf, x.dtype)), max_iter, stop=stop, record=record if history else None
    )
    return solution(state.x, it, stopped, jnp.linalg.norm(op.mv(state.x) - y), records, ruled=stop is not None, data=y)
