r"""Row-action methods: Kaczmarz (ART) on dense matrices, block SART for the Radon transform, and SIRT (all
rows at once) for any non-negative linear operator."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from ..operators.linear_operator import LinearOperator
from ..operators.matrix import MatrixOperator
from ..operators.radon import RadonTransform, backproject, radon
from .iterate import Solution, any_of, iterate, solution
from .tikhonov import _scalar

__all__ = ["kaczmarz", "sart", "sirt"]


class _State(NamedTuple):
    x: Array
    key: Array  # PRNG key (random orders); a dummy otherwise
    change: Array  # ||x_k - x_{k-1}|| (tracked only for `tol`)
    residual: Array  # ||Ax_k - y|| (tracked only for `delta` and `history`)


def _check_relaxation(relaxation, name):
    if jnp.ndim(relaxation) != 0:
        raise ValueError(f"{name} expects a scalar relaxation (vmap over values), got shape {jnp.shape(relaxation)}")
    if not isinstance(relaxation, jax.core.Tracer):
        v = float(relaxation)
        if not 0 < v < 2:
            raise ValueError(f"{name} expects 0 < relaxation < 2 for convergence, got {v}")
    return relaxation


def _check_common(name, delta, tau, tol):
    _scalar(tau, "tau", name)
    if delta is not None:
        _scalar(delta, "delta", name)
    if tol is not None:
        _scalar(tol, "tol", name)


def _check_key(key, name, why):
    if key is None:
        raise ValueError(f"{name} with {why} needs a PRNG key, e.g. key=jax.random.PRNGKey(0); got key=None")
    return key


def _data_and_start(name, op, y, x0):
    """`(y, x0)` as arrays of the operator's shapes (x0 default zeros), with clear errors."""
    y = jnp.asarray(y)
    if y.shape != tuple(op.out_shape):
        raise ValueError(f"{name} expects data of shape {tuple(op.out_shape)} (op.out_shape), got {y.shape}")
    if not jnp.issubdtype(y.dtype, jnp.floating):
        raise TypeError(f"{name} expects real floating-point data, got dtype {y.dtype}")
    x = jnp.zeros(op.in_shape, y.dtype) if x0 is None else jnp.asarray(x0, y.dtype)
    if x.shape != tuple(op.in_shape):
        raise ValueError(f"{name} expects x0 of shape {tuple(op.in_shape)} (op.in_shape), got {x.shape}")
    return y, x


def _inverse(a):
    """1/a where a > 0, else 0 (rays that miss the image, pixels no ray sees contribute nothing)."""
    ok = a > 0
    return jnp.where(ok, 1 / jnp.where(ok, a, 1), 0)


def _run(sweep, x, key, residual_of, max_iter, *, data, delta, tau, tol, reference, history):
    """Drive `sweep(x, key) -> (x, key)` with the shared stopping rules and records."""
    need_res = delta is not None or history
    inf = jnp.asarray(jnp.inf, jnp.real(x).dtype)

    def update(s: _State) -> _State:
        x, key = sweep(s.x, s.key)
        change = jnp.linalg.norm(x - s.x) if tol is not None else s.change
        res = residual_of(x) if need_res else s.residual
        return _State(x, key, change, res)

    stop = any_of(
        delta is not None and (lambda s: s.residual <= tau * delta),
        tol is not None and (lambda s: s.change <= tol * jnp.linalg.norm(s.x)),
    )

    def record(s: _State) -> dict:
        out = {"residual": s.residual, "objective": 0.5 * s.residual**2}
        if reference is not None:
            out["error"] = jnp.linalg.norm(s.x - reference)
        return out

    init = _State(x, key, inf, residual_of(x) if need_res else inf)
    state, it, stopped, records = iterate(update, init, max_iter, stop=stop, record=record if history else None)
    return solution(state.x, it, stopped, residual_of(state.x), records, ruled=stop is not None, data=data)


def kaczmarz(
    op: MatrixOperator,
    y: ArrayLike,
    *,
    x0: Array | None = None,
    order: str = "cyclic",
    relaxation=1.0,
    key=None,
    max_iter: int = 100,
    delta=None,
    tau=1.0,
    tol=None,
    reference: Array | None = None,
    history: bool = False,
) -> Solution:
    r"""Kaczmarz's method (ART): project onto one equation $\langle a_i, x\rangle = y_i$ at a time.

    $$ x \leftarrow x + \omega\,\frac{y_i - \langle a_i, x\rangle}{\|a_i\|^2}\,\bar a_i, $$

    with relaxation $0 < \omega < 2$. One iteration is one sweep of $m$ row updates (a
    `lax.fori_loop` inside the iteration), so `max_iter` counts sweeps. Zero rows are skipped.

    - ``order="cyclic"``: rows $0, 1, \dots, m-1$ in every sweep. For consistent systems it
      converges to the solution nearest `x0` (from `x0 = 0`: the minimum-norm solution); for
      inconsistent ones to a limit cycle near the least-squares solution (smaller for smaller $\omega$).
    - ``order="random"``: $m$ rows per sweep drawn with replacement with probability
      $\|a_i\|^2/\|A\|_F^2$ (Strohmer-Vershynin), from `key` (required). For consistent systems
      $\mathbb{E}\|x_k - x^\dagger\|^2 \le (1 - \sigma_{\min}^2/\|A\|_F^2)^{k}\|x_0 - x^\dagger\|^2$
      after $k$ row updates ($\omega = 1$, full column rank).

    Stopping: `delta` (discrepancy principle, $\|Ax_k - y\| \le \tau\delta$), `tol`
    ($\|x_{k+1} - x_k\| \le \text{tol}\,\|x_{k+1}\|$ per sweep); neither: exactly `max_iter` sweeps
    through `lax.scan` (reverse-differentiable, e.g. in $\omega$). `history=True` records
    ``"residual"``, ``"objective"`` and, with `reference`, ``"error"`` per sweep (one extra product
    with $A$ per sweep). Jittable; vmap over `y`, `relaxation`, `key`, `delta`.

    Example:
        >>> op = MatrixOperator(jnp.array([[1.0, 1.0], [1.0, -1.0]]))
        >>> kaczmarz(op, jnp.array([3.0, 1.0]), max_iter=5).x  # [2, 1]
    """
    if not isinstance(op, MatrixOperator):
        raise TypeError(
            f"kaczmarz expects a MatrixOperator (it needs rows), got {type(op).__name__}; use "
            "MatrixOperator(as_matrix(op)) for a small operator, or sart for a RadonTransform"
        )
    a = op.matrix
    m, n = a.shape
    y = jnp.asarray(y)
    if y.shape != (m,):
        raise ValueError(f"kaczmarz expects data of shape {(m,)}, got {y.shape}")
    dtype = jnp.result_type(a.dtype, y.dtype)
    x = jnp.zeros((n,), dtype) if x0 is None else jnp.asarray(x0, dtype)
    if x.shape != (n,):
        raise ValueError(f"kaczmarz expects x0 of shape {(n,)}, got {x.shape}")
    if order not in ("cyclic", "random"):
        raise ValueError(f"kaczmarz expects order='cyclic' or 'random', got {order!r}")
    relaxation = _check_relaxation(relaxation, "kaczmarz")
    _check_common("kaczmarz", delta, tau, tol)
    a, y = a.astype(dtype), y.astype(dtype)
    norms2 = jnp.sum(jnp.abs(a) ** 2, axis=1)
    inv_norms2 = jnp.where(norms2 > 0, 1 / jnp.where(norms2 > 0, norms2, 1), 0)
    if order == "random":
        key = _check_key(key, "kaczmarz", "order='random'")
        logits = jnp.where(norms2 > 0, jnp.log(jnp.where(norms2 > 0, norms2, 1)), -jnp.inf)
    else:
        key = jax.random.PRNGKey(0) if key is None else key  # unused

    def sweep(x, key):
        if order == "random":
            key, sub = jax.random.split(key)
            rows = jax.random.categorical(sub, logits, shape=(m,))
        else:
            rows = jnp.arange(m)

        def row_step(i, x):
            j = rows[i]
            ai = a[j]
            r = y[j] - ai @ x
            return x + (relaxation * r * inv_norms2[j]) * jnp.conj(ai)

        return jax.lax.fori_loop(0, m, row_step, x), key

    return _run(
        sweep, x, key, lambda x: jnp.linalg.norm(a @ x - y), max_iter,
        data=y, delta=delta, tau=tau, tol=tol, reference=reference, history=history,
    )


def sart(
    op: RadonTransform,
    y: ArrayLike,
    *,
    x0: Array | None = None,
    relaxation=1.0,
    order="sequential",
    block_size: int = 1,
    key=None,
    nonnegative: bool = False,
    max_iter: int = 20,
    delta=None,
    tau=1.0,
    tol=None,
    reference: Array | None = None,
    history: bool = False,
) -> Solution:
    r"""SART / block ART for the Radon transform: one projection block at a time.

    For each block $B$ of angles (a sub-geometry, one compile for all blocks),

    $$ x \leftarrow x + \omega\, C_B^{-1} A_B^\top R_B^{-1}(y_B - A_B x),\qquad
       R_B = A_B\mathbf 1 \text{ (ray sums)},\quad C_B = A_B^\top \mathbf 1 \text{ (pixel sums)}, $$

    with zero entries of $R_B$, $C_B$ (rays missing the image, pixels the block never sees)
    contributing nothing; then $x \leftarrow \max(x, 0)$ if `nonnegative`. One iteration is one
    sweep over all blocks. For consistent data and $0 < \omega < 2$ it converges to a solution of
    $Ax = y$; with noise, to a neighbourhood of a weighted least-squares solution (smaller $\omega$:
    closer), and early stopping regularises.

    Blocks: `order` is ``"sequential"`` (angle order), ``"random"`` (a fresh permutation every
    sweep, from `key`) or an integer array, a fixed permutation of ``range(num_angles)``. The
    ordered angles are dealt into ``num_angles // block_size`` blocks by striding (block $j$ holds
    positions $j, j + n_B, j + 2n_B, \dots$ of the order), so a block spreads over the angular
    range. `block_size` must divide the number of angles; `block_size=1` is classic SART,
    `block_size=num_angles` is SIRT.

    Stopping and records as in `kaczmarz` (`delta`, `tau`, `tol`, `history`, `reference`).
    Jittable; vmap over `y`, `relaxation`, `key`. Cost per sweep: about one forward and two
    backprojections of the full sinogram.

    Example:
        >>> op = RadonTransform(ParallelBeamGeometry.uniform((32, 32), 24))
        >>> sol = sart(op, op(x_true), max_iter=10, nonnegative=True)
    """
    if not isinstance(op, RadonTransform):
        raise TypeError(f"sart expects a RadonTransform, got {type(op).__name__}; use kaczmarz for matrices")
    geom = op.geom
    num_angles = geom.num_angles
    y, x = _data_and_start("sart", op, y, x0)
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1 or num_angles % block_size:
        raise ValueError(
            f"sart expects a block_size (int) dividing the number of angles {num_angles}, got {block_size!r}"
        )
    relaxation = _check_relaxation(relaxation, "sart")
    _check_common("sart", delta, tau, tol)
    num_blocks = num_angles // block_size
    if isinstance(order, str):
        if order not in ("sequential", "random"):
            raise ValueError(f"sart expects order 'sequential', 'random' or a permutation array, got {order!r}")
        perm = jnp.arange(num_angles)
        if order == "random":
            key = _check_key(key, "sart", "order='random'")
    else:
        perm = jnp.asarray(order)
        if perm.shape != (num_angles,) or not jnp.issubdtype(perm.dtype, jnp.integer):
            raise ValueError(
                f"sart expects order to be an integer permutation of shape ({num_angles},), "
                f"got shape {perm.shape} and dtype {perm.dtype}"
            )
        if not isinstance(perm, jax.core.Tracer) and not np.array_equal(np.sort(np.asarray(perm)), np.arange(num_angles)):
            raise ValueError(f"sart expects order to be a permutation of range({num_angles})")
    if key is None:
        key = jax.random.PRNGKey(0)  # unused
    inv_r = _inverse(op.mv(jnp.ones(op.in_shape, y.dtype)))  # 1/R for every ray; a block gathers its rows
    ones = jnp.ones((block_size, geom.num_detectors), y.dtype)

    def block_step(angle_idx, x):
        sub = geom.with_angles(geom.angles[angle_idx])
        resid = (y[angle_idx] - radon(x, sub, unroll=op.unroll)) * inv_r[angle_idx]
        # One batched backprojection of the weighted residual and of ones (the pixel sums C_B).
        back, col = jax.vmap(lambda s: backproject(s, sub, unroll=op.unroll))(jnp.stack([resid, ones]))
        ok = col > 0
        x = x + relaxation * jnp.where(ok, back / jnp.where(ok, col, 1), 0)
        return jnp.maximum(x, 0) if nonnegative else x

    def sweep(x, key):
        p = perm
        if isinstance(order, str) and order == "random":
            key, sub = jax.random.split(key)
            p = jax.random.permutation(sub, num_angles)
        blocks = p.reshape(block_size, num_blocks).T  # block j: positions j, j + num_blocks, ...
        x = jax.lax.fori_loop(0, num_blocks, lambda j, x: block_step(blocks[j], x), x)
        return x, key

    if nonnegative:
        x = jnp.maximum(x, 0)
    return _run(
        sweep, x, key, lambda x: jnp.linalg.norm(op.mv(x) - y), max_iter,
        data=y, delta=delta, tau=tau, tol=tol, reference=reference, history=history,
    )


def sirt(
    op: LinearOperator,
    y: ArrayLike,
    *,
    x0: Array | None = None,
    relaxation=1.0,
    nonnegative: bool = False,
    max_iter: int = 50,
    delta=None,
    tau=1.0,
    tol=None,
    reference: Array | None = None,
    history: bool = False,
) -> Solution:
    r"""SIRT (simultaneous iterative reconstruction) for any non-negative linear operator:

    $$ x \leftarrow x + \omega\, C^{-1} A^\top R^{-1}(y - Ax),\qquad
       R = A\mathbf 1 \text{ (ray sums)},\quad C = A^\top \mathbf 1 \text{ (pixel sums)}, $$

    all rays at once; zero entries of $R$, $C$ (rays that miss the volume, voxels no ray sees)
    contribute nothing; then $x \leftarrow \max(x, 0)$ if `nonnegative`. It is Landweber's iteration
    with step $\omega$ on $R^{-1/2} A C^{-1/2}$ (norm $\le 1$ for $A \ge 0$), so for $0 < \omega < 2$ it
    converges to the least-squares solution of $\|R^{-1/2}(Ax - y)\|$ in the $C$-norm, and stopping
    early regularises (semi-convergence). Any geometry's `XRayTransform` (fan, cone, helical, 3D
    parallel) or a `RadonTransform` (where it equals `sart(op, y, block_size=num_angles)`), or a
    non-negative `MatrixOperator`. Cost per iteration: one projection and one backprojection ($R$ and
    $C$ once, before the loop).

    Stopping and records as in `kaczmarz` (`delta`, `tau`, `tol`, `history`, `reference`). Jittable;
    vmap over `y` and `relaxation`.

    Example:
        >>> op = XRayTransform(ConeBeamGeometry.uniform((32, 32, 32), 64, (48, 48), 96.0, 48.0))
        >>> sirt(op, op(x_true), max_iter=30, nonnegative=True).x.shape
        (32, 32, 32)
    """
    if not isinstance(op, LinearOperator):
        raise TypeError(f"sirt expects a LinearOperator (e.g. XRayTransform(geom)), got {type(op).__name__}")
    if op.in_complex:
        raise TypeError("sirt expects a real operator (non-negative weights), got one with complex images")
    y, x = _data_and_start("sirt", op, y, x0)
    relaxation = _check_relaxation(relaxation, "sirt")
    _check_common("sirt", delta, tau, tol)

    inv_r = _inverse(op.mv(jnp.ones(op.in_shape, y.dtype)))
    inv_c = _inverse(op.rmv(jnp.ones(op.out_shape, y.dtype)))

    def sweep(x, key):
        x = x + relaxation * inv_c * op.rmv(inv_r * (y - op.mv(x)))
        return (jnp.maximum(x, 0) if nonnegative else x), key

    if nonnegative:
        x = jnp.maximum(x, 0)
    return _run(
        sweep, x, jax.random.PRNGKey(0), lambda x: jnp.linalg.norm(op.mv(x) - y), max_iter,
        data=y, delta=delta, tau=tau, tol=tol, reference=reference, history=history,
    )
