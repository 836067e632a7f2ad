r"""Worst-case perturbations of reconstruction methods (Antun, Renna, Poon, Adcock, Hansen, PNAS 2020).

"On instabilities of deep learning in image reconstruction and the potential costs of AI" asks how
much a small perturbation of the image, seen through the forward model, can change a
reconstruction $f$: for a measurement $y = Ax$ it searches an image-space perturbation $r$ with

$$\max_r\ \|f(y + Ar) - f(y)\|^2 - \lambda\|r\|^2 \qquad\text{or}\qquad
  \max_{\|r\| \le \varepsilon\|x\|}\ \|f(y + Ar) - f(y)\|^2 ,$$

by gradient ascent. `worst_case_perturbation` does both (penalised, or projected onto the ball);
`random_perturbation` draws a random $r$ of a given norm for comparison. `reconstruct` is any
callable `y -> x` (FBP, TV, a network: `lambda y: model(y, op)`); pass an `equinox.Module` or
`equinox.Partial` to have its arrays traced instead of compiled in as constants.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PRNGKeyArray

from ..operators.linear_operator import LinearOperator

__all__ = ["Perturbation", "worst_case_perturbation", "random_perturbation", "METHODS"]

METHODS = ("normalised", "signed", "gradient")


class Perturbation(NamedTuple):
    """A perturbation and its effect (a pytree: vmappable, e.g. over keys).

    Attributes:
        r: the image-space perturbation, shape `op.in_shape`; the data perturbation is `op(r)`.
        size: dict of scalars: `"r"` = $\\|r\\|$, `"Ar"` = $\\|Ar\\|$, `"x"` = the reference
            $\\|x\\|$, `"relative"` = $\\|r\\|/\\|x\\|$, `"relative_data"` = $\\|Ar\\|/\\|y\\|$.
        error: $\\|f(y + Ar) - f(y)\\|$ (divide by `size["x"]` for a relative error).
        history: per ascent step (arrays of shape `(steps,)`), at the iterate before the update:
            `"objective"`, `"error"` ($\\|f(y + Ar_k) - f(y)\\|$), `"norm"` ($\\|r_k\\|$). Empty for
            `random_perturbation`.
    """

    r: Array
    size: dict
    error: Array
    history: dict


def _norm(a: Array) -> Array:
    return jnp.sqrt(jnp.sum(jnp.abs(a) ** 2))


def _is_traced(x) -> bool:
    return isinstance(x, jax.core.Tracer)


def _positive_scalar(value, what: str, name: str):
    arr = jnp.asarray(value)
    if arr.ndim != 0 or not (jnp.issubdtype(arr.dtype, jnp.floating) or jnp.issubdtype(arr.dtype, jnp.integer)):
        raise TypeError(f"{name} expects {what} to be a real scalar, got {value!r}")
    if not _is_traced(arr) and not (np.isfinite(float(arr)) and float(arr) > 0):
        raise ValueError(f"{name} expects {what} > 0 (finite), got {float(arr)}")
    return arr


def _prepare(reconstruct, y, op, x_norm, key, name):
    if not callable(reconstruct):
        raise TypeError(f"{name} expects reconstruct to be callable as reconstruct(y) -> x, got {type(reconstruct).__name__}")
    if not isinstance(op, LinearOperator):
        raise TypeError(f"{name} expects `op` to be a jaxrecon LinearOperator, got {type(op).__name__}")
    if not hasattr(y, "shape") or not hasattr(y, "dtype"):
        raise TypeError(f"{name} expects y as an array of shape {tuple(op.out_shape)}, got {type(y).__name__}")
    y = jnp.asarray(y)
    if tuple(y.shape) != tuple(op.out_shape):
        raise ValueError(f"{name} expects one measurement y of shape op.out_shape = {tuple(op.out_shape)}, got {tuple(y.shape)}")
    if not jnp.issubdtype(y.dtype, jnp.inexact):
        raise TypeError(f"{name} expects floating-point data y, got dtype {y.dtype}")
    if op.in_complex:
        raise ValueError(f"{name} perturbs real images; got an operator with a complex domain ({type(op).__name__})")
    real = jnp.finfo(y.dtype).dtype
    fy = reconstruct(y)
    if x_norm is None:
        x_norm = _norm(fy)
        if not _is_traced(x_norm) and not float(x_norm) > 0:
            raise ValueError(f"{name}: reconstruct(y) is 0, so ||x|| is 0; pass x_norm (the norm of the true image)")
    else:
        x_norm = _positive_scalar(x_norm, "x_norm", name)
    key = jax.random.key(0) if key is None else key
    if not isinstance(key, jax.Array):
        raise TypeError(f"{name} expects a PRNG key (jax.random.key), got {type(key).__name__}")
    return y, fy, jnp.asarray(x_norm, real), key, real


def _sphere(key, shape, dtype, radius):
    z = jax.random.normal(key, shape, dtype)
    return z * (radius / _norm(z))


def _summary(reconstruct, y, op, fy, r, x_norm, history) -> Perturbation:
    ar = op(r)
    error = _norm(reconstruct(y + ar.astype(y.dtype)) - fy)
    size = {
        "r": _norm(r),
        "Ar": _norm(ar),
        "x": x_norm,
        "relative": _norm(r) / x_norm,
        "relative_data": _norm(ar) / _norm(y),
    }
    return Perturbation(r, size, error, history)


@eqx.filter_jit
def _ascent(reconstruct, y, op, fy, r0, lam, radius, step_size, steps, method, constrained):
    def objective(r):
        err2 = jnp.sum(jnp.abs(reconstruct(y + op(r).astype(y.dtype)) - fy) ** 2)
        value = err2 if constrained else err2 - lam * jnp.sum(r**2)
        return value, err2

    def project(r):
        if not constrained:
            return r
        n = _norm(r)
        return r * jnp.minimum(1.0, radius / jnp.where(n > 0, n, 1.0))

    def step(carry, _):
        r, best_r, best = carry
        (value, err2), g = jax.value_and_grad(objective, has_aux=True)(r)
        better = value > best
        best_r = jnp.where(better, r, best_r)
        best = jnp.where(better, value, best)
        if method == "normalised":
            gn = _norm(g)
            d = g * (step_size / jnp.where(gn > 0, gn, 1.0))
        elif method == "signed":
            d = step_size * jnp.sign(g)
        else:
            d = step_size * g
        new = project(r + d)
        return (new, best_r, best), {"objective": value, "error": jnp.sqrt(err2), "norm": _norm(r)}

    r0 = project(r0)
    (r, best_r, best), history = jax.lax.scan(step, (r0, r0, jnp.asarray(-jnp.inf, r0.dtype)), None, length=steps)
    final, _ = objective(r)  # the last iterate was not yet compared
    return jnp.where(final > best, r, best_r), history


def worst_case_perturbation(
    reconstruct: Callable[[Array], Array],
    y: Array,
    op: LinearOperator,
    *,
    lam=None,
    eps=None,
    x_norm=None,
    steps: int = 100,
    step_size=None,
    method: str = "normalised",
    key: PRNGKeyArray | None = None,
    init_scale=1e-2,
) -> Perturbation:
    r"""An image-space perturbation $r$ that changes `reconstruct` the most (Antun et al. 2020).

    Maximises, over $r$ of shape `op.in_shape` (real), either the penalised objective

    $$ Q_\lambda(r) = \|f(y + Ar) - f(y)\|^2 - \lambda\|r\|^2 \qquad (\texttt{lam} = \lambda > 0),$$

    or $\|f(y + Ar) - f(y)\|^2$ subject to $\|r\| \le \varepsilon\,\|x\|$ (`eps` $= \varepsilon$;
    projected gradient ascent, the projection onto the ball being $r \mapsto r\min(1, \rho/\|r\|)$,
    $\rho = \varepsilon\|x\|$), where $f$ = `reconstruct` and $\|x\|$ = `x_norm` (default
    $\|f(y)\|$; pass the true image's norm when known). Give exactly one of `lam` and `eps`.

    Ascent from a small random start $r_0$ ($\|r_0\|$ = `init_scale` $\rho$, or `init_scale`
    $\|x\|$ when penalised; at $r = 0$ the gradient vanishes for a linear $f$), for `steps` steps of
    `method`:

    - `"normalised"` (default): $r \mathrel{+}= s\,g/\|g\|$, a step of length $s$ in $\ell^2$;
    - `"signed"`: $r \mathrel{+}= s\,\operatorname{sign}(g)$ (FGSM-like, $\ell^\infty$ steps);
    - `"gradient"`: $r \mathrel{+}= s\,g$ (needs `step_size`);

    $g = \nabla Q(r)$, then the projection (constrained). Default $s$: $\rho/4$ (constrained) or
    $\|x\|/100$ (penalised), divided by $\sqrt n$ for `"signed"` ($n$ pixels). The best iterate
    is returned. The loop is one `lax.scan` compiled with `equinox.filter_jit`.

    For a linear $f(y) = By$ the constrained maximum is $\varepsilon\|x\|\,\|BA\|_2$ at the top right
    singular vector of $BA$ (the normalised ascent is then a power iteration); the penalised
    objective is unbounded when $\lambda < \|BA\|_2^2$ and maximal at $r = 0$ when
    $\lambda > \|BA\|_2^2$: choose $\lambda$ relative to the method's local Lipschitz constant.

    Args:
        reconstruct: `reconstruct(y) -> x`, differentiable (an `equinox.Module`/`Partial` to trace its arrays).
        y: the measurement, shape `op.out_shape` (real or complex).
        op: the forward operator $A$ (a `LinearOperator` on real images).
        lam, eps: the penalty weight or the relative radius (exactly one).
        x_norm: $\|x\|$ (default $\|f(y)\|$).
        steps: ascent steps.
        step_size: $s$ (see above).
        method: one of `METHODS`.
        key: PRNG key of the random start (default `jax.random.key(0)`).
        init_scale: relative size of the random start.

    Returns:
        A `Perturbation(r, size, error, history)`.

    Example:
        >>> op = RadonTransform(ParallelBeamGeometry.uniform((32, 32), 20))
        >>> rec = lambda y: fbp(y, op.geom)
        >>> worst = worst_case_perturbation(rec, op(x), op, eps=0.01, x_norm=jnp.linalg.norm(x))
        >>> rand = random_perturbation(rec, op(x), op, eps=0.01, x_norm=jnp.linalg.norm(x))
        >>> worst.error > rand.error
    """
    name = "worst_case_perturbation"
    if (lam is None) == (eps is None):
        raise ValueError(f"{name} expects exactly one of lam (penalised) and eps (constrained), got lam={lam!r}, eps={eps!r}")
    if method not in METHODS:
        raise ValueError(f"{name} expects method to be one of {METHODS}, got {method!r}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"{name} expects steps to be a positive int, got {steps!r}")
    y, fy, x_norm, key, real = _prepare(reconstruct, y, op, x_norm, key, name)
    constrained = eps is not None
    if constrained:
        radius = _positive_scalar(eps, "eps", name).astype(real) * x_norm
        lam = jnp.zeros((), real)
    else:
        lam = _positive_scalar(lam, "lam", name).astype(real)
        radius = jnp.asarray(jnp.inf, real)
    init_scale = _positive_scalar(init_scale, "init_scale", name).astype(real)
    scale = radius if constrained else x_norm
    n = int(np.prod(op.in_shape))
    if step_size is None:
        if method == "gradient":
            raise ValueError(f"{name} with method='gradient' needs a step_size")
        step_size = (scale / 4 if constrained else scale / 100) / (np.sqrt(n) if method == "signed" else 1.0)
    else:
        step_size = _positive_scalar(step_size, "step_size", name)
    step_size = jnp.asarray(step_size, real)
    r0 = _sphere(key, tuple(op.in_shape), real, init_scale * scale)
    r, history = _ascent(reconstruct, y, op, fy, r0, lam, radius, step_size, int(steps), method, constrained)
    return _summary(reconstruct, y, op, fy, r, x_norm, history)


def random_perturbation(
    reconstruct: Callable[[Array], Array],
    y: Array,
    op: LinearOperator,
    *,
    eps,
    x_norm=None,
    key: PRNGKeyArray | None = None,
) -> Perturbation:
    r"""A random image-space perturbation of norm $\varepsilon\|x\|$ (Gaussian direction) and its effect.

    The baseline for `worst_case_perturbation`: $r = \varepsilon\|x\|\, z/\|z\|$, $z \sim N(0, I)$
    of shape `op.in_shape`; reports $\|f(y + Ar) - f(y)\|$. `x_norm` defaults to $\|f(y)\|$.
    Vmappable over `key` for an average over draws.

    Example:
        >>> rand = jax.vmap(lambda k: random_perturbation(rec, y, op, eps=0.01, key=k).error)(
        ...     jax.random.split(jax.random.key(0), 10))
    """
    name = "random_perturbation"
    y, fy, x_norm, key, real = _prepare(reconstruct, y, op, x_norm, key, name)
    radius = _positive_scalar(eps, "eps", name).astype(real) * x_norm
    r = _sphere(key, tuple(op.in_shape), real, radius)
    return _summary(reconstruct, y, op, fy, r, x_norm, {})
