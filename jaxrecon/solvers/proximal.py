r"""Proximal maps $\operatorname{prox}_{tf}(v) = \arg\min_x \tfrac12\|x - v\|^2 + t f(x)$ of simple penalties.

All are elementwise (separable) closed forms: jittable, differentiable almost everywhere, and the
thresholds may be traced scalars or arrays broadcastable against `x` (vmap over them). Concrete
thresholds are checked to be finite and non-negative.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

from .iterate import check_non_negative

__all__ = [
    "soft_threshold",
    "prox_l1",
    "project_nonnegative",
    "prox_nonnegative_l1",
    "prox_l2_squared",
    "prox_elastic_net",
]


def _as_inexact(x, name):
    if not hasattr(x, "shape") and not isinstance(x, (int, float, complex)):
        raise TypeError(f"{name} expects an array, got {type(x).__name__}")
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        x = x.astype(jnp.result_type(float))
    return x


def _real(x):
    if jnp.iscomplexobj(x):
        raise TypeError(f"expected a real array, got dtype {x.dtype}")
    return x


def soft_threshold(x: ArrayLike, t: ArrayLike) -> Array:
    r"""Soft thresholding $S_t(x) = \operatorname{sign}(x)\max(|x| - t, 0)$, the prox of $t\|x\|_1$.

    For complex `x`: $S_t(x) = x\max(1 - t/|x|, 0)$ (shrinks the modulus, keeps the phase).

    Example:
        >>> soft_threshold(jnp.array([-2.0, 0.5, 3.0]), 1.0)  # [-1, 0, 2]
    """
    x = _as_inexact(x, "soft_threshold")
    check_non_negative(t, "threshold t")
    return _soft(x, t)


def _soft(x, t):
    if jnp.iscomplexobj(x):
        mag = jnp.abs(x)
        safe = jnp.where(mag > 0, mag, 1)
        return x * jnp.maximum(1 - t / safe, 0)
    return jnp.sign(x) * jnp.maximum(jnp.abs(x) - t, 0)


def prox_l1(x: ArrayLike, t: ArrayLike) -> Array:
    r"""$\operatorname{prox}_{t\|\cdot\|_1}(x)$: the same as `soft_threshold`."""
    return soft_threshold(x, t)


def project_nonnegative(x: ArrayLike) -> Array:
    r"""Projection onto $\{x \ge 0\}$: $\max(x, 0)$ (the prox of its indicator). Real input only.

    Example:
        >>> project_nonnegative(jnp.array([-1.0, 2.0]))  # [0, 2]
    """
    return jnp.maximum(_real(_as_inexact(x, "project_nonnegative")), 0)


def prox_nonnegative_l1(x: ArrayLike, t: ArrayLike) -> Array:
    r"""prox of $t\|x\|_1 + \iota_{\{x \ge 0\}}$: $\max(x - t, 0)$. Real input only.

    Example:
        >>> prox_nonnegative_l1(jnp.array([-2.0, 0.5, 3.0]), 1.0)  # [0, 0, 2]
    """
    x = _real(_as_inexact(x, "prox_nonnegative_l1"))
    check_non_negative(t, "threshold t")
    return jnp.maximum(x - t, 0)


def prox_l2_squared(x: ArrayLike, t: ArrayLike) -> Array:
    r"""prox of $\tfrac t2\|x\|_2^2$: $x / (1 + t)$.

    Example:
        >>> prox_l2_squared(jnp.array([2.0, -4.0]), 1.0)  # [1, -2]
    """
    x = _as_inexact(x, "prox_l2_squared")
    check_non_negative(t, "t")
    return x / (1 + t)


def prox_elastic_net(x: ArrayLike, t: ArrayLike, alpha: ArrayLike, beta: ArrayLike) -> Array:
    r"""prox of $t\,(\alpha\|x\|_1 + \tfrac\beta2\|x\|_2^2)$: $S_{t\alpha}(x) / (1 + t\beta)$.

    (Set the derivative $x - v + t\alpha\,\partial|x| + t\beta x$ to zero.)

    Example:
        >>> prox_elastic_net(jnp.array([3.0, -0.5]), 1.0, 1.0, 1.0)  # [1, 0]
    """
    x = _as_inexact(x, "prox_elastic_net")
    check_non_negative(t, "t")
    check_non_negative(alpha, "alpha")
    check_non_negative(beta, "beta")
    return _elastic_net(x, t, alpha, beta)


def _elastic_net(x, t, alpha, beta):
    return _soft(x, t * alpha) / (1 + t * beta)
