"""The iteration driver every iterative solver shares, and the result it returns."""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

__all__ = ["Solution", "any_of", "iterate", "check_max_iter", "check_non_negative"]


RESULTS = ("converged", "max_iterations", "fixed_iterations", "nonfinite", "diverged")
"""The names of `Solution.result`'s codes, by code: `RESULTS[int(solution.result)]`.

- `converged` (0): the stopping rule was met (`tol`, the discrepancy principle, ...).
- `max_iterations` (1): a stopping rule was given and not met within `max_iter`.
- `fixed_iterations` (2): no stopping rule was given; exactly `max_iter` steps ran.
- `nonfinite` (3): the reconstruction or its residual holds NaN or inf (non-finite data,
  or an iteration that overflowed). Takes precedence over every other code.
- `diverged` (4): finite, but the residual ended more than 10x the norm of the data, i.e. 10x
  worse than the zero image (a step size above the stability limit, for example).
"""


class Solution(NamedTuple):
    """What an iterative solver returns (a pytree: it can be vmapped and jitted).

    Attributes:
        x: the reconstruction.
        iterations: int scalar, the updates performed.
        converged: bool scalar, whether the solver's stopping rule was met (`tol` or the
            discrepancy principle). Always False when no rule was given (fixed iterations).
        residual_norm: $\\|Ax - y\\|$ at the returned `x`.
        history: dict of per-iteration arrays of length `max_iter` (e.g. ``"objective"``,
            ``"residual"``, ``"error"`` against a reference), or None. Entries after the stop repeat the
            final value.
        result: int32 scalar, a code of `RESULTS` (`solution.status` names it): how the solve
            ended, including the failures (`nonfinite`, `diverged`) that `converged=False` alone
            does not tell apart from running out of iterations.
    """

    x: Array
    iterations: Array
    converged: Array
    residual_norm: Array
    history: dict | None = None
    result: Array | None = None

    @property
    def nonfinite(self):
        """`result == nonfinite` (bool array): NaN/inf in the data or in an update."""
        return None if self.result is None else self.result == RESULTS.index("nonfinite")

    @property
    def status(self):
        """`RESULTS[result]`: a name, or a nested list of names for a vmapped batch of solutions."""
        if self.result is None:
            return None
        codes = np.asarray(self.result)
        return RESULTS[int(codes)] if codes.ndim == 0 else np.vectorize(RESULTS.__getitem__)(codes).tolist()


def solution(x, iterations, stopped, residual_norm, history=None, *, ruled: bool, data, nonfinite=None) -> Solution:
    """A `Solution` with its `result` code (see `RESULTS`).

    Args:
        ruled: whether a stopping rule was given (else the run had a fixed number of steps).
        data: the data `y` the residual is measured against (its norm sets the divergence scale).
        nonfinite: from solvers that guard their updates (ADMM, plug-and-play, RED): True when an
            update went non-finite and the solver stopped at the last finite iterate `x`.
    """
    finite = jnp.all(jnp.isfinite(x)) & jnp.isfinite(residual_norm)
    if nonfinite is not None:
        finite = finite & ~nonfinite
    code = jnp.where(stopped, 0, 1 if ruled else 2)
    code = jnp.where(residual_norm > 10 * jnp.linalg.norm(jnp.ravel(data)), 4, code)
    code = jnp.where(finite, code, 3).astype(jnp.int32)
    return Solution(x, iterations, stopped, residual_norm, history, code)


def check_max_iter(max_iter) -> int:
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive int, got {max_iter!r}")
    return max_iter


def check_non_negative(value, name: str):
    """Raise for a negative concrete parameter; traced values (vmap over parameters) pass through."""
    if not isinstance(value, jax.core.Tracer):  # NumPy, not jnp: jnp ops are traced inside jit
        v = np.asarray(value)
        if v.size and (not np.all(np.isfinite(v)) or np.any(v < 0)):
            raise ValueError(f"{name} must be finite and non-negative, got {value!r}")
    return value


def any_of(*rules) -> Callable | None:
    """Combine optional stopping rules (None or False entries are skipped): stop once any holds.

    Returns None when no rule is given, so `iterate` runs a fixed number of steps.
    """
    rules = [r for r in rules if r]
    if not rules:
        return None
    return lambda state: jnp.any(jnp.stack([r(state) for r in rules]))


def iterate(
    step: Callable,
    state,
    max_iter: int,
    *,
    stop: Callable | None = None,
    record: Callable | None = None,
):
    """Apply ``state = step(state)`` up to `max_iter` times.

    - No `stop` and no `record`: a `lax.scan` of exactly `max_iter` steps (reverse-differentiable:
      unrolled schemes differentiate through it).
    - `stop` without `record`: a `lax.while_loop` that ends once ``stop(state)`` is True (checked
      before the first step too, so a rule met by the initial guess takes 0 steps). Not
      reverse-differentiable; forward and vmap are fine.
    - `record`: a `lax.scan` that stores ``record(state)`` (a dict of scalars) after each step and
      freezes the state once `stop` is met.

    Returns ``(state, iterations, stopped, records)``.
    """
    max_iter = check_max_iter(max_iter)
    if stop is None and record is None:
        state, _ = jax.lax.scan(lambda s, _: (step(s), None), state, None, length=max_iter)
        return state, jnp.asarray(max_iter), jnp.asarray(False), None
    stop = (lambda s: jnp.asarray(False)) if stop is None else stop
    if record is None:

        def cond(carry):
            it, done, _ = carry
            return (it < max_iter) & ~done

        def body(carry):
            it, _, s = carry
            s = step(s)
            return it + 1, stop(s), s

        it, done, state = jax.lax.while_loop(cond, body, (jnp.asarray(0), stop(state), state))
        return state, it, done, None

    def body(carry, _):
        it, done, s = carry
        new = step(s)
        s = jax.tree.map(lambda old, nw: jnp.where(done, old, nw), s, new)
        it = it + jnp.where(done, 0, 1)
        done = done | stop(s)
        return (it, done, s), record(s)

    (it, done, state), records = jax.lax.scan(body, (jnp.asarray(0), stop(state), state), None, length=max_iter)
    return state, it, done, records
