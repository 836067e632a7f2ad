"""The iteration driver every iterative solver shares, and the result it returns."""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

__all__ = ["Solution", "any_of", "iterate", "check_max_iter", "check_non_negative"]


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
        nonfinite: bool scalar from solvers that guard against non-finite updates (ADMM, plug-and-play,
            RED): True when an update produced a non-finite value; the solver then stopped and `x` is
            the last finite iterate (`converged` is False). None from solvers without the guard.
            Outcome: `converged`; else `nonfinite`; else the iteration limit was reached.
    """

    x: Array
    iterations: Array
    converged: Array
    residual_norm: Array
    history: dict | None = None
    nonfinite: Array | None = None


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
