r"""Total-variation regularisation by the primal-dual hybrid gradient method (Chambolle-Pock)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from ..operators.linear_operator import IdentityOperator, LinearOperator, operator_norm
from .gradient import FiniteDifference, finite_difference, finite_difference_adjoint
from .iterate import Solution, check_max_iter, check_non_negative, iterate, solution

__all__ = ["total_variation", "tv_pdhg", "tv_denoise"]

# tau * (sigma_data ||A||^2 + sigma_tv ||D||^2) = _SAFETY < 1 for the default step sizes.
_SAFETY = 0.99
# The power-iteration estimate of ||A|| approaches from below: inflate it by this factor.
_NORM_MARGIN = 1.01
# Default primal-dual balance s = _BALANCE * alpha / (estimated image RMS); calibrated on CT (tv_pdhg).
_BALANCE = 1.5


# --------------------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------------------


def _pixel_norm(g: Array) -> Array:
    """Pointwise 2-norm over axis 0 with a gradient that is finite (zero) where the norm is zero."""
    n2 = jnp.sum(g**2, axis=0)
    pos = n2 > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, n2, 1)), 0)


def _tv_of_gradient(g: Array, isotropic: bool) -> Array:
    return jnp.sum(_pixel_norm(g)) if isotropic else jnp.sum(jnp.abs(g))


def total_variation(x: Array, *, isotropic: bool = True) -> Array:
    r"""Discrete total variation of an image (any number of axes), forward differences, Neumann boundary.

    Isotropic: $\mathrm{TV}(x) = \sum_i \|(Dx)_i\|_2$ (the pixelwise gradient length); anisotropic:
    $\sum_i \|(Dx)_i\|_1 = \|Dx\|_1$. $D$ is `finite_difference`: the TV of
    `skimage.restoration.denoise_tv_chambolle`.

    Example:
        >>> total_variation(jnp.array([[0.0, 1.0], [0.0, 1.0]]))  # two unit jumps
        Array(2., dtype=float32)
    """
    if not isinstance(isotropic, bool):
        raise TypeError(f"isotropic must be a bool, got {isotropic!r}")
    return _tv_of_gradient(finite_difference(x), isotropic)


def _project(q: Array, alpha, isotropic: bool) -> Array:
    r"""Projection onto $\{q: \|q_i\|_2 \le \alpha\}$ (isotropic) or $\{\|q\|_\infty \le \alpha\}$."""
    if isotropic:
        n2 = jnp.sum(q**2, axis=0)
        big = n2 > alpha**2  # compare squares: no sqrt (and no NaN gradient) at q = 0
        return q * jnp.where(big, alpha / jnp.sqrt(jnp.where(big, n2, 1)), 1)
    return jnp.clip(q, -alpha, alpha)


def _is_concrete(v) -> bool:
    return not isinstance(v, jax.core.Tracer)


def _check_positive(value, name: str):
    check_non_negative(value, name)
    if _is_concrete(value) and np.any(np.asarray(value) == 0):
        raise ValueError(f"{name} must be positive, got {value!r}")
    return value


def _check_scalar(value, name: str):
    if jnp.ndim(value) != 0:
        raise ValueError(f"{name} must be a scalar (vmap to use several), got shape {jnp.shape(value)}")
    return value


def _check_bool(value, name: str):
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")


def _check_theta(theta):
    _check_scalar(theta, "theta")
    check_non_negative(theta, "theta")
    if _is_concrete(theta) and float(theta) > 1:
        raise ValueError(f"theta must be in [0, 1], got {theta!r}")


def _check_shape(a, shape, fn: str, what: str, dtype):
    if a is None:
        return None
    if not hasattr(a, "shape"):
        raise TypeError(f"{fn} expects {what} to be an array of shape {tuple(shape)}, got {type(a).__name__}")
    a = jnp.asarray(a)
    if a.shape != tuple(shape):
        raise ValueError(f"{fn} expects {what} of shape {tuple(shape)}, got {a.shape}")
    return a.astype(dtype)


def _data(y, shape, fn: str):
    if not hasattr(y, "shape") or not hasattr(y, "dtype"):
        raise TypeError(f"{fn} expects the data to be an array of shape {tuple(shape)}, got {type(y).__name__}")
    y = jnp.asarray(y)
    if y.shape != tuple(shape):
        raise ValueError(f"{fn} expects data of shape {tuple(shape)}, got {y.shape} (one sample; batch with jax.vmap)")
    if not jnp.issubdtype(y.dtype, jnp.inexact):
        y = y.astype(jnp.result_type(float))
    return y


# --------------------------------------------------------------------------------------------------
# General operators: PDHG with K = [A; D]
# --------------------------------------------------------------------------------------------------


class _State(NamedTuple):
    x: Array
    ax: Array  # A x
    x_bar: Array  # extrapolated x_k + theta (x_k - x_{k-1})
    ax_bar: Array  # A x_bar, by linearity
    p: Array  # dual variable of the data term (shape of y)
    q: Array  # dual variable of the TV term, (ndim, *shape), |q_i| <= alpha
    change: Array  # ||x_k - x_{k-1}|| (only maintained when tol is given)


def _default_balance(alpha, y, norm_a, num_pixels):
    r"""$s = 1.5\,\alpha / \hat x$, $\hat x = \|y\| / (\|A\|\sqrt{n})$ an RMS estimate of the image (see tv_pdhg)."""
    x_scale = jnp.linalg.norm(y) / (norm_a * num_pixels**0.5)
    s = _BALANCE * alpha / jnp.where(x_scale > 0, x_scale, 1)
    return jnp.where(s > 0, s, 1)


def _step_sizes(sigma, tau, balance, norm_a, norm_d):
    """(sigma_data, sigma_tv, tau) from the user's values and the block norms (see tv_pdhg)."""
    if sigma is None:
        w_a, w_d = 1 / norm_a, 1 / norm_d  # block scaling: sigma_j ~ 1/||K_j||
        if tau is None:
            return balance * w_a, balance * w_d, _SAFETY / (balance * (norm_a + norm_d))
        c = _SAFETY / (tau * (w_a * norm_a**2 + w_d * norm_d**2))
        return c * w_a, c * w_d, tau
    s_a, s_d = sigma
    if tau is None:
        tau = _SAFETY / (s_a * norm_a**2 + s_d * norm_d**2)
    return s_a, s_d, tau


def _split_sigma(sigma):
    if sigma is None:
        return None
    if isinstance(sigma, (tuple, list)):
        if len(sigma) != 2:
            raise ValueError(f"sigma must be a scalar or a pair (sigma_data, sigma_tv), got {len(sigma)} values")
        s_a, s_d = sigma
    else:
        s_a = s_d = sigma
    for v, name in ((s_a, "sigma"), (s_d, "sigma")):
        _check_scalar(v, name)
        _check_positive(v, name)
    return s_a, s_d


def tv_pdhg(
    op: LinearOperator,
    y: Array,
    alpha,
    *,
    isotropic: bool = True,
    nonnegative: bool = False,
    x0: Array | None = None,
    max_iter: int = 500,
    tol=None,
    reference: Array | None = None,
    history: bool = False,
    sigma=None,
    tau=None,
    theta=1.0,
    balance=None,
    op_norm=None,
) -> Solution:
    r"""Total-variation regularisation $\min_x \tfrac12\|Ax - y\|^2 + \alpha\,\mathrm{TV}(x)\ [+\ \iota_{x\ge0}]$.

    $\mathrm{TV}$ is isotropic ($\sum_i\|(Dx)_i\|_2$) or anisotropic ($\|Dx\|_1$), $D$ the forward
    differences of `FiniteDifference`. Chambolle-Pock (PDHG) with $K = [A; D]$, dual variables $p$
    (data) and $q$ (TV):

    $$\begin{aligned}
    p_{k+1} &= \big(p_k + \sigma_A(A\bar x_k - y)\big)/(1 + \sigma_A),\qquad
    q_{k+1} = \Pi_{\alpha}\big(q_k + \sigma_D D\bar x_k\big),\\
    x_{k+1} &= \mathrm{prox}_{\tau G}\big(x_k - \tau(A^*p_{k+1} + D^\top q_{k+1})\big),\quad
      \bar x_{k+1} = x_{k+1} + \theta(x_{k+1} - x_k),
    \end{aligned}$$

    $\mathrm{prox}_{\tau G}$ the identity or $\max(\cdot, 0)$, $\Pi_\alpha$ the projection onto the
    pixelwise $\ell^2$-balls (isotropic) or the $\ell^\infty$-box (anisotropic) of radius $\alpha$.
    $\bar x_0 = x_0$ (default 0); $A\bar x$ is formed from $Ax_{k+1}$ and $Ax_k$, so a step costs one $A$ and one $A^*$.
    Converges for $\theta = 1$ when $\tau(\sigma_A\|A\|^2 + \sigma_D\|D\|^2) < 1$.

    Step sizes (block-scaled, after Pock & Chambolle 2011): by default
    $\sigma_A = s/\|A\|$, $\sigma_D = s/\|D\|$, $\tau = 0.99/(s(\|A\| + \|D\|))$, which meets the
    condition, with $\|D\| \le \sqrt{4\,\text{ndim}}$ (a bound) and $\|A\|$ by power iteration
    (`operator_norm`, inflated by 1%) unless `op_norm` is given. Against plain Chambolle-Pock
    ($\sigma_A = \sigma_D = s/\|K\|$, $\tau = 0.99/(s\|K\|)$) this moves the TV dual
    $\|A\|/\|D\|$ times faster; on CT (Shepp-Logan 128, 30 angles, $\|A\| \approx 61$, 5% noise)
    it reached a relative objective error of 1e-3 in 268 instead of 1372 iterations ($\alpha = 1$)
    and 410 instead of 2718 ($\alpha = 3$), plain taken at its best $s$.
    The balance $s$ trades primal against dual steps; its best value grew like $\alpha$ divided by
    the image magnitude in every problem measured, so the default is
    $s = 1.5\,\alpha\,\|A\|\sqrt n/\|y\|$ ($n$ pixels; $\|y\|/(\|A\|\sqrt n)$ estimates the image's
    RMS; $s = 1$ if that is 0), calibrated on CT, where it needed at most 5% more iterations than
    the best $s$ for $\alpha$ from 0.3 to 10 (for denoising, 2-5x more: use `tv_denoise`); set
    `balance` to override it. `sigma` may instead be given as a scalar
    (the same for both blocks: plain Chambolle-Pock) or a pair `(sigma_data, sigma_tv)`; a missing
    `tau` is then set to meet the condition, and a `tau` given without `sigma` rescales the
    block-scaled sigmas to meet it. Values given for both are used as they are.

    Stopping: `tol` stops when $\|x_{k+1} - x_k\| \le \text{tol}\,\|x_{k+1}\|$ (`converged`);
    without it exactly `max_iter` steps run through `lax.scan` (reverse-differentiable, e.g. with
    respect to `alpha`). `history=True` records ``"objective"`` (the primal objective),
    ``"residual"`` ($\|Ax_k - y\|$), with `reference` ``"error"`` ($\|x_k - x^\dagger\|$) and, when
    `op` is an `IdentityOperator`, ``"gap"`` (the duality gap of `tv_denoise`'s dual at $q_k$).

    Real images only; the data may be complex (e.g. `SubsampledFourier`). dtype: the real dtype of
    `y`. Jittable; vmap over `y`, `alpha` (a traced scalar), `x0`.

    Example:
        >>> geom = ParallelBeamGeometry.uniform((64, 64), 30)
        >>> op = RadonTransform(geom)
        >>> y = gaussian_noise(jax.random.PRNGKey(0), op(shepp_logan(64)), 0.05)
        >>> sol = tv_pdhg(op, y, 0.5, nonnegative=True, max_iter=300)
        >>> sol.x.shape, sol.residual_norm
    """
    if not isinstance(op, LinearOperator):
        raise TypeError(f"tv_pdhg expects a LinearOperator, got {type(op).__name__}")
    if op.in_complex:
        raise TypeError(f"tv_pdhg needs an operator on real images; {type(op).__name__} has a complex domain")
    y = _data(y, op.out_shape, "tv_pdhg")
    real = jnp.finfo(y.dtype).dtype
    shape = tuple(op.in_shape)
    if len(shape) < 1:
        raise ValueError(f"tv_pdhg needs images with at least one axis, the operator's input shape is {shape}")
    _check_bool(isotropic, "isotropic")
    _check_bool(nonnegative, "nonnegative")
    check_max_iter(max_iter)
    _check_scalar(alpha, "alpha")
    check_non_negative(alpha, "alpha")
    _check_theta(theta)
    if tol is not None:
        check_non_negative(tol, "tol")
    sig = _split_sigma(sigma)
    if tau is not None:
        _check_scalar(tau, "tau")
        _check_positive(tau, "tau")
    if op_norm is not None:
        _check_scalar(op_norm, "op_norm")
        _check_positive(op_norm, "op_norm")
    if balance is not None:
        if sigma is not None or tau is not None:
            raise ValueError("give either balance or sigma/tau, not both (balance sets sigma and tau)")
        _check_scalar(balance, "balance")
        _check_positive(balance, "balance")
    x = jnp.zeros(shape, real) if x0 is None else _check_shape(x0, shape, "tv_pdhg", "x0", real)
    reference = _check_shape(reference, shape, "tv_pdhg", "reference", real)
    alpha = jnp.asarray(alpha, real)
    theta = jnp.asarray(theta, real)

    D = FiniteDifference(shape)
    if sig is not None and tau is not None:
        s_a, s_d = sig
    else:
        if op_norm is None:
            op_norm = _NORM_MARGIN * operator_norm(op, dtype=real)
        norm_a = jnp.asarray(op_norm, real)
        if sig is None and tau is None and balance is None:
            balance = _default_balance(alpha, y, norm_a, D.num_pixels)
        s_a, s_d, tau = _step_sizes(sig, tau, balance, norm_a, jnp.asarray(D.norm_bound, real))
    s_a, s_d, tau = (jnp.asarray(v, real) for v in (s_a, s_d, tau))

    def update(s: _State) -> _State:
        p = (s.p + s_a * (s.ax_bar - y)) / (1 + s_a)
        q = _project(s.q + s_d * finite_difference(s.x_bar), alpha, isotropic)
        x = s.x - tau * (op.rmv(p) + finite_difference_adjoint(q)).astype(real)
        if nonnegative:
            x = jnp.maximum(x, 0)
        ax = op.mv(x).astype(s.ax.dtype)
        x_bar = x + theta * (x - s.x)
        ax_bar = ax + theta * (ax - s.ax)
        change = jnp.linalg.norm(x - s.x) if tol is not None else s.change
        return _State(x, ax, x_bar, ax_bar, p, q, change)

    ax = op.mv(x)
    ax = ax.astype(jnp.result_type(ax.dtype, y.dtype))
    state = _State(
        x, ax, x, ax, jnp.zeros_like(ax), jnp.zeros((len(shape), *shape), real), jnp.asarray(jnp.inf, real)
    )
    stop = (lambda s: s.change <= tol * jnp.linalg.norm(s.x)) if tol is not None else None
    identity = isinstance(op, IdentityOperator)

    def record(s: _State) -> dict:
        r = jnp.linalg.norm(s.ax - y)
        objective = 0.5 * r**2 + alpha * total_variation(s.x, isotropic=isotropic)
        out = {"objective": objective, "residual": r}
        if reference is not None:
            out["error"] = jnp.linalg.norm(s.x - reference)
        if identity:
            out["gap"] = objective - _denoise_dual(s.q, y, nonnegative)
        return out

    state, it, stopped, records = iterate(update, state, max_iter, stop=stop, record=record if history else None)
    return solution(state.x, it, stopped, jnp.linalg.norm(state.ax - y), records, ruled=stop is not None, data=y)


# --------------------------------------------------------------------------------------------------
# Denoising: PDHG with K = D and the strongly convex G = 1/2||x - f||^2, accelerated
# --------------------------------------------------------------------------------------------------


def _denoise_dual(q, f, nonnegative):
    r"""$\min_x \tfrac12\|x - f\|^2 + \langle D^\top q, x\rangle\ [x \ge 0]$: the dual objective at $q$."""
    z = finite_difference_adjoint(q)
    x = f - z
    if nonnegative:
        x = jnp.maximum(x, 0)
    return 0.5 * jnp.sum((x - f) ** 2) + jnp.vdot(z, x)


class _DenoiseState(NamedTuple):
    x: Array
    x_bar: Array
    q: Array
    tau: Array
    sigma: Array
    change: Array


def tv_denoise(
    f: Array,
    alpha,
    *,
    isotropic: bool = True,
    nonnegative: bool = False,
    x0: Array | None = None,
    max_iter: int = 200,
    tol=None,
    reference: Array | None = None,
    history: bool = False,
    tau=None,
    gamma=0.1,
) -> Solution:
    r"""Total-variation denoising (ROF) $\min_x \tfrac12\|x - f\|^2 + \alpha\,\mathrm{TV}(x)\ [+\ \iota_{x\ge0}]$.

    The same problem as ``tv_pdhg(IdentityOperator(f.shape), f, alpha)``, solved faster: the data
    term is the strongly convex $G$ (its prox is $(v + \tau f)/(1+\tau)$, clipped at 0 with
    `nonnegative`), $K = D$, and Chambolle-Pock's accelerated Algorithm 2 (2011) updates
    $\theta_k = 1/\sqrt{1 + 2\gamma\tau_k}$, $\tau_{k+1} = \theta_k\tau_k$,
    $\sigma_{k+1} = \sigma_k/\theta_k$, which gives $O(1/k^2)$ instead of $O(1/k)$. $\gamma \le 1$
    (the modulus of $G$ is 1). The defaults $\gamma = 0.1$, $\tau_0$ = `tau` = 0.3 were the most
    robust of a grid ($\gamma$ 0-0.35, $\tau_0$ 0.1-1) on Shepp-Logan 64 at three weights and on a
    1D step: a larger $\gamma$ shrinks $\tau_k$ too fast where plain PDHG converges linearly, and
    $\gamma = 0$ loses the $O(1/k^2)$ rate. The iterates are invariant to scaling $f$ and $\alpha$
    together. $\sigma_0 = 1/(4\,\text{ndim}\,\tau_0)$, so $\sigma_k\tau_k\|D\|^2 \le 1$ ($\|D\|^2 \le 8$ for images).
    Starts from $x_0 = f$ unless `x0` is given.

    Matches `skimage.restoration.denoise_tv_chambolle(f, weight=alpha)` (same objective: isotropic,
    Neumann boundary, no scaling of the weight), to the accuracy at which that stops.

    `tol`, `reference`, `history` as in `tv_pdhg`; the history also has ``"gap"``, the duality
    gap $P(x_k) - \min_x[\tfrac12\|x-f\|^2 + \langle D^\top q_k, x\rangle]$, an upper bound on
    $P(x_k) - P(x^*)$. `residual_norm` is $\|x - f\|$. Jittable; vmap over `f`, `alpha`.

    Example:
        >>> f = shepp_logan(64) + 0.1 * jax.random.normal(jax.random.PRNGKey(0), (64, 64))
        >>> tv_denoise(f, 0.1, max_iter=100).x.shape
        (64, 64)
    """
    f = _data(f, getattr(f, "shape", ()), "tv_denoise")
    if not jnp.issubdtype(f.dtype, jnp.floating):
        raise TypeError(f"tv_denoise expects a real image, got dtype {f.dtype}")
    if f.ndim < 1:
        raise ValueError("tv_denoise expects an image with at least one axis, got a scalar")
    real = f.dtype
    shape = f.shape
    _check_bool(isotropic, "isotropic")
    _check_bool(nonnegative, "nonnegative")
    check_max_iter(max_iter)
    _check_scalar(alpha, "alpha")
    check_non_negative(alpha, "alpha")
    if tol is not None:
        check_non_negative(tol, "tol")
    tau = 0.3 if tau is None else tau
    _check_scalar(tau, "tau")
    _check_positive(tau, "tau")
    _check_scalar(gamma, "gamma")
    check_non_negative(gamma, "gamma")
    if _is_concrete(gamma) and float(gamma) > 1:
        raise ValueError(f"gamma must be in [0, 1] (the strong-convexity modulus of 1/2||x - f||^2), got {gamma!r}")
    x = f if x0 is None else _check_shape(x0, shape, "tv_denoise", "x0", real)
    reference = _check_shape(reference, shape, "tv_denoise", "reference", real)
    alpha = jnp.asarray(alpha, real)
    tau = jnp.asarray(tau, real)
    gamma = jnp.asarray(gamma, real)
    sigma = 1 / (4 * len(shape) * tau)

    def update(s: _DenoiseState) -> _DenoiseState:
        q = _project(s.q + s.sigma * finite_difference(s.x_bar), alpha, isotropic)
        x = (s.x - s.tau * finite_difference_adjoint(q) + s.tau * f) / (1 + s.tau)
        if nonnegative:
            x = jnp.maximum(x, 0)
        theta = 1 / jnp.sqrt(1 + 2 * gamma * s.tau)
        x_bar = x + theta * (x - s.x)
        change = jnp.linalg.norm(x - s.x) if tol is not None else s.change
        return _DenoiseState(x, x_bar, q, theta * s.tau, s.sigma / theta, change)

    state = _DenoiseState(
        x, x, jnp.zeros((len(shape), *shape), real), tau, sigma, jnp.asarray(jnp.inf, real)
    )
    stop = (lambda s: s.change <= tol * jnp.linalg.norm(s.x)) if tol is not None else None

    def record(s: _DenoiseState) -> dict:
        r = jnp.linalg.norm(s.x - f)
        objective = 0.5 * r**2 + alpha * total_variation(s.x, isotropic=isotropic)
        out = {"objective": objective, "residual": r, "gap": objective - _denoise_dual(s.q, f, nonnegative)}
        if reference is not None:
            out["error"] = jnp.linalg.norm(s.x - reference)
        return out

    state, it, stopped, records = iterate(update, state, max_iter, stop=stop, record=record if history else None)
    return solution(state.x, it, stopped, jnp.linalg.norm(state.x - f), records, ruled=stop is not None, data=f)
