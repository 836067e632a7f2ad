r"""ISTA and FISTA for $\ell^1$-wavelet (LASSO-type) regularisation, optionally non-negative."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from ..operators.linear_operator import LinearOperator, operator_norm
from .iterate import Solution, check_max_iter, check_non_negative, iterate, solution
from .proximal import _elastic_net
from .wavelets import WaveletTransform

__all__ = ["ista", "fista"]


class _State(NamedTuple):
    x: Array  # current iterate x_k
    x_prev: Array  # x_{k-1} (for the `tol` rule and FISTA's momentum)
    residual: Array  # A x_k - y
    z: Array  # FISTA's extrapolated point (= x for ISTA)
    z_residual: Array  # A z - y
    t: Array  # FISTA's momentum parameter t_k
    dual: Array  # inner dual variable (non-negative wavelet prox only; warm-started)
    k: Array  # updates performed


def ista(
    op: LinearOperator,
    y: Array,
    alpha,
    *,
    wavelet=None,
    levels: int | None = None,
    nonnegative: bool = False,
    elastic_net=0.0,
    step=None,
    x0: Array | None = None,
    max_iter: int = 100,
    tol=None,
    inner_iter: int = 20,
    reference: Array | None = None,
    history: bool = False,
) -> Solution:
    r"""ISTA (proximal gradient) for an $\ell^1$-wavelet penalty, optionally elastic-net and non-negative:

    $$\min_x \tfrac12\|Ax - y\|^2 + \alpha\|Wx\|_1 + \tfrac\varepsilon2\|x\|^2 \;[+\,\iota_{\{x\ge0\}}(x)].$$

    $W$ is an orthonormal wavelet transform (`wavelet`: a name from `WAVELETS` with `levels`, a
    `WaveletTransform`, any orthonormal `LinearOperator` on `op.in_shape`, or None for $W = I$,
    plain $\ell^1$); $\varepsilon$ = `elastic_net`. The iteration with step $s$ (default
    $1/\|A\|^2$ by power iteration; convergence needs $0 < s < 2/\|A\|^2$) is

    $$x_{k+1} = \operatorname{prox}_{sR}\big(x_k - s A^*(Ax_k - y)\big), \qquad
      \operatorname{prox}_{sR}(v) = W^T \frac{S_{s\alpha}(Wv)}{1 + s\varepsilon}$$

    (synthesis form $x = W^Tc$: since $W^T = W^{-1}$ this is the same problem in the coefficients
    $c$). The objective decreases monotonically and converges at rate $O(1/k)$.

    `nonnegative=True` adds the constraint $x \ge 0$. With $W = I$ the prox stays closed-form,
    $\max(v - s\alpha, 0)/(1 + s\varepsilon)$. With a wavelet it is not separable; it is computed
    by `inner_iter` steps of the fast projected gradient method on its dual (FGP, Beck & Teboulle
    2009, "Fast gradient-based algorithms for constrained total variation image denoising and
    deblurring", IEEE TIP 18(11), Sec. 4, with $W$ in place of the discrete gradient): for
    $w = v/(1+s\varepsilon)$ and $\mu = s\alpha/(1+s\varepsilon)$ the dual problem is
    $\min_{\|u\|_\infty\le\mu} \tfrac12\|\max(w - W^Tu, 0)\|^2$ (gradient Lipschitz constant 1),

    $$u \leftarrow \operatorname{clip}_{[-\mu,\mu]}\big(r + W\max(w - W^Tr, 0)\big)
      \text{ (with FISTA momentum } r\text{)}, \qquad \operatorname{prox}(v) = \max(w - W^T u, 0),$$

    warm-started from the previous outer iteration's $u$. Every iterate is feasible, and a fixed
    point of the combined iteration is the exact minimiser (this is not the heuristic of projecting
    after the wavelet shrinkage). The prox is inexact for finite `inner_iter`: ISTA converged to the
    minimiser with any `inner_iter` >= 1 in our tests (monotone objective from about 20), FISTA
    needed about 20 (with 5 it stalled at ~3e-5 relative objective error; inexact FISTA
    accumulates prox errors).

    Stopping: `tol` stops once $\|x_{k+1} - x_k\| \le \text{tol}\,\|x_{k+1}\|$ (`lax.while_loop`);
    otherwise exactly `max_iter` steps in a `lax.scan` (reverse-differentiable, e.g. in `alpha`).
    `history=True` records ``"objective"``, ``"residual"`` ($\|Ax_k - y\|$) and, with `reference`,
    ``"error"`` ($\|x_k - x^\dagger\|$). Jittable; vmap over `y`, `alpha`, `elastic_net`, `step`.
    `alpha` may be an array broadcastable to `op.in_shape` (a weight per wavelet coefficient).

    Example:
        >>> op = RadonTransform(ParallelBeamGeometry.uniform((32, 32), 16))
        >>> y = op(shepp_logan(32))
        >>> sol = ista(op, y, 0.1, wavelet="db2", levels=3, nonnegative=True, max_iter=200)
        >>> sol.x.shape, bool(sol.x.min() >= 0)
        ((32, 32), True)
    """
    return _proximal_gradient(
        "ista", op, y, alpha, wavelet, levels, nonnegative, elastic_net, step, x0, max_iter, tol, inner_iter,
        reference, history, accelerated=False,
    )  # fmt: skip


def fista(
    op: LinearOperator,
    y: Array,
    alpha,
    *,
    wavelet=None,
    levels: int | None = None,
    nonnegative: bool = False,
    elastic_net=0.0,
    step=None,
    x0: Array | None = None,
    max_iter: int = 100,
    tol=None,
    inner_iter: int = 20,
    reference: Array | None = None,
    history: bool = False,
) -> Solution:
    r"""FISTA (Beck & Teboulle 2009): `ista` with Nesterov momentum, objective error $O(1/k^2)$.

    $$x_k = \operatorname{prox}_{sR}\big(z_k - sA^*(Az_k - y)\big),\quad
      t_{k+1} = \tfrac{1 + \sqrt{1 + 4t_k^2}}{2},\quad
      z_{k+1} = x_k + \tfrac{t_k - 1}{t_{k+1}}(x_k - x_{k-1}),$$

    with $z_1 = x_0$, $t_1 = 1$. Same problem, parameters, prox (including the non-negative
    wavelet prox) and `Solution` as `ista`; the objective is not monotone. The rate needs
    $s \le 1/\|A\|^2$ (the default estimates $\|A\|$ by power iteration, from below, so it may exceed
    $1/\|A\|^2$ by the estimate's relative error).

    Example:
        >>> a = jax.random.normal(jax.random.PRNGKey(0), (20, 50)) / 4.5
        >>> y = a[:, :3] @ jnp.array([1.0, -2.0, 1.5])  # a 3-sparse x
        >>> fista(MatrixOperator(a), y, 0.01, max_iter=500).x[:5]  # ~ [1, -2, 1.5, 0, 0]
    """
    return _proximal_gradient(
        "fista", op, y, alpha, wavelet, levels, nonnegative, elastic_net, step, x0, max_iter, tol, inner_iter,
        reference, history, accelerated=True,
    )  # fmt: skip


def _resolve_wavelet(name, op, wavelet, levels) -> LinearOperator | None:
    if wavelet is None:
        if levels is not None:
            raise ValueError(f"{name}: levels={levels!r} given without a wavelet")
        return None
    shape = tuple(op.in_shape)
    if isinstance(wavelet, str):
        if len(shape) != 2:
            raise ValueError(f"{name}: a 2D wavelet needs an operator on (H, W) images, got in_shape {shape}")
        return WaveletTransform(shape, wavelet, levels)
    if isinstance(wavelet, LinearOperator):
        if levels is not None:
            raise ValueError(f"{name}: levels={levels!r} cannot be combined with a wavelet operator (it has its own)")
        if tuple(wavelet.in_shape) != shape or tuple(wavelet.out_shape) != shape:
            raise ValueError(
                f"{name}: the wavelet operator must map {shape} to {shape} (op.in_shape), got "
                f"{tuple(wavelet.in_shape)} -> {tuple(wavelet.out_shape)}"
            )
        return wavelet
    raise TypeError(
        f"{name}: wavelet must be None, a wavelet name or an orthonormal LinearOperator, got {type(wavelet).__name__}"
    )


def _proximal_gradient(
    name, op, y, alpha, wavelet, levels, nonnegative, elastic_net, step, x0, max_iter, tol, inner_iter,
    reference, history, *, accelerated,
):  # fmt: skip
    if not isinstance(op, LinearOperator):
        raise TypeError(f"{name} expects a LinearOperator, got {type(op).__name__}")
    if not hasattr(y, "shape"):
        raise TypeError(f"{name} expects array data of shape {tuple(op.out_shape)}, got {type(y).__name__}")
    y = jnp.asarray(y)
    if y.shape != tuple(op.out_shape):
        raise ValueError(f"{name} expects data of shape {tuple(op.out_shape)}, got {y.shape}")
    if not jnp.issubdtype(y.dtype, jnp.inexact):
        y = y.astype(jnp.result_type(float))
    dtype = jax.eval_shape(op.rmv, y).dtype  # the domain's dtype: real images even for complex (Fourier) data
    if not jnp.issubdtype(dtype, jnp.inexact):
        dtype = jnp.result_type(float)
    max_iter = check_max_iter(max_iter)
    if isinstance(inner_iter, bool) or not isinstance(inner_iter, int) or inner_iter < 1:
        raise ValueError(f"inner_iter must be a positive int, got {inner_iter!r}")
    if not isinstance(nonnegative, bool):
        raise TypeError(f"nonnegative must be a bool, got {nonnegative!r}")
    if nonnegative and jnp.iscomplexobj(jnp.zeros((), dtype)):
        raise TypeError(f"{name}: nonnegative=True needs a real domain, but the operator's domain is {dtype}")
    W = _resolve_wavelet(name, op, wavelet, levels)
    in_shape = tuple(op.in_shape)
    check_non_negative(alpha, "alpha")
    try:
        fits = np.broadcast_shapes(np.shape(alpha), in_shape) == in_shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"alpha must be a scalar or broadcastable to {in_shape}, got shape {np.shape(alpha)}")
    check_non_negative(elastic_net, "elastic_net")
    if tol is not None:
        check_non_negative(tol, "tol")
    x = jnp.zeros(in_shape, dtype) if x0 is None else jnp.asarray(x0, dtype)
    if x.shape != in_shape:
        raise ValueError(f"{name} expects x0 of shape {in_shape}, got {x.shape}")
    if reference is not None and jnp.shape(reference) != in_shape:
        raise ValueError(f"{name} expects a reference of shape {in_shape}, got {jnp.shape(reference)}")
    if step is None:
        step = 1.0 / operator_norm(op, dtype=jnp.finfo(dtype).dtype) ** 2
    check_non_negative(step, "step")
    real = jnp.finfo(dtype).dtype  # parameters follow the data's precision (the scan carry keeps its dtype)
    alpha, elastic_net, step = (jnp.asarray(v, real) for v in (alpha, elastic_net, step))

    fw = (lambda v: v) if W is None else W.mv  # analysis  v -> Wv
    bw = (lambda c: c) if W is None else W.rmv  # synthesis c -> W^T c = W^{-1} c
    inner = nonnegative and W is not None

    def prox(v, u):
        """prox of step * (alpha ||W.||_1 + eps/2 ||.||^2 [+ indicator x >= 0]) at v; u: warm dual."""
        if not nonnegative:
            return bw(_elastic_net(fw(v), step, alpha, elastic_net)), u
        shrink = 1 + step * elastic_net
        if W is None:
            return jnp.maximum(v - step * alpha, 0) / shrink, u
        w, mu = v / shrink, step * alpha / shrink

        def dual_step(carry, _):
            u, r, t = carry
            u_new = jnp.clip(r + fw(jnp.maximum(w - bw(r), 0)), -mu, mu)
            t_new = (1 + jnp.sqrt(1 + 4 * t**2)) / 2
            return (u_new, u_new + (t - 1) / t_new * (u_new - u), t_new), None

        (u, _, _), _ = jax.lax.scan(dual_step, (u, u, jnp.ones((), u.dtype)), None, length=inner_iter)
        return jnp.maximum(w - bw(u), 0), u

    def update(s: _State) -> _State:
        x, u = prox(s.z - step * op.rmv(s.z_residual), s.dual)
        r = op.mv(x) - y
        if accelerated:
            t = (1 + jnp.sqrt(1 + 4 * s.t**2)) / 2
            beta = (s.t - 1) / t
            z, rz = x + beta * (x - s.x), r + beta * (r - s.residual)
        else:
            t, z, rz = s.t, x, r
        return _State(x, s.x, r, z, rz, t, u, s.k + 1)

    def objective(s: _State):
        rr = jnp.linalg.norm(s.residual)
        c = jnp.abs(fw(s.x))
        return rr, 0.5 * rr**2 + jnp.sum(alpha * c) + 0.5 * elastic_net * jnp.real(jnp.vdot(s.x, s.x))

    stop = None
    if tol is not None:
        stop = lambda s: (s.k > 0) & (jnp.linalg.norm(s.x - s.x_prev) <= tol * jnp.linalg.norm(s.x))

    def record(s: _State) -> dict:
        rr, obj = objective(s)
        out = {"objective": obj, "residual": rr}
        if reference is not None:
            out["error"] = jnp.linalg.norm(s.x - reference)
        return out

    r0 = op.mv(x) - y
    dual0 = jnp.zeros(in_shape, dtype) if inner else jnp.zeros((), dtype)
    state0 = _State(x, x, r0, x, r0, jnp.ones((), real), dual0, jnp.asarray(0))
    state, it, stopped, records = iterate(update, state0, max_iter, stop=stop, record=record if history else None)
    return solution(state.x, it, stopped, jnp.linalg.norm(state.residual), records, ruled=stop is not None, data=y)
