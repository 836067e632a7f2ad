r"""Model adaptation: re-fit a learned reconstructor to a changed forward operator without ground truth.

After Gilton, Ongie and Willett, "Model adaptation for inverse problems in imaging" (IEEE TCI 2021).
A reconstructor $f(y; \theta, A)$ (a `model(y, op) -> x`, e.g. `jaxrecon.nets.UnrolledPGD`) was
trained, at parameters $\theta_0$, for an operator $A_0$; the data now come from $A_1 \ne A_0$.

- `naive`: use the model as it is with the new operator, $f(y; \theta_0, A_1)$.
- `adapt_to_measurement`: $A_1$ known, one measurement $y$ (Gilton et al.'s per-measurement
  adaptation): $\theta_1 = \arg\min_\theta \|y - A_1 f(y; \theta, A_1)\|^2 + \mu\|\theta - \theta_0\|^2$.
- `calibrate_operator`: $A_1 = A_\varphi$ unknown within a family (`jaxrecon.adapt.operators`):
  estimate $\varphi$ from measurements alone with a classical regularised solver.
- `adapt_to_dataset`: calibrate $\varphi$, then adapt $\theta$ on a set of measurements (optionally
  refining both together).
- `reuse_and_regularise`: keep $\theta_0$ and use the network, in the setting it was trained for, as
  the regulariser of a variational reconstruction under $A_1$ (after Gilton et al.'s "reuse and
  regularize"): $\hat x = \arg\min_x \|y - A_1 x\|^2 + \lambda\|x - f(A_0 x; \theta_0, A_0)\|^2$.

All loops are `lax.scan`s of one optax step, compiled once (`equinox.filter_jit`); the
parameters are the model's inexact array leaves (`eqx.filter(model, eqx.is_inexact_array)`).
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray, PyTree
from tqdm.auto import tqdm

from ..operators.linear_operator import LinearOperator
from ..solvers.tikhonov import cgls
from .operators import OperatorFamily

__all__ = [
    "naive",
    "adapt_to_measurement",
    "calibrate_operator",
    "adapt_to_dataset",
    "reuse_and_regularise",
    "TikhonovSolver",
]


# --------------------------------------------------------------------------------------------------
# Checks and the shared scan driver
# --------------------------------------------------------------------------------------------------


def _is_traced(x) -> bool:
    return isinstance(x, jax.core.Tracer)


def _check_model(model, name: str) -> None:
    if not callable(model):
        raise TypeError(f"{name} expects a model callable as model(y, op), got {type(model).__name__}")


def _check_op(op, name: str) -> LinearOperator:
    if not isinstance(op, LinearOperator):
        raise TypeError(f"{name} expects `op` to be a jaxrecon LinearOperator, got {type(op).__name__}")
    return op


def _check_steps(steps, what: str, name: str) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"{name} expects {what} to be a positive int, got {steps!r}")
    return int(steps)


def _check_mu(mu, name: str, dtype, what: str = "mu") -> Array:
    mu_arr = jnp.asarray(mu)
    if mu_arr.ndim != 0 or not (jnp.issubdtype(mu_arr.dtype, jnp.floating) or jnp.issubdtype(mu_arr.dtype, jnp.integer)):
        raise TypeError(f"{name} expects {what} to be a real scalar, got {mu!r}")
    if not _is_traced(mu_arr) and not (np.isfinite(float(mu_arr)) and float(mu_arr) >= 0):
        raise ValueError(f"{name} expects {what} >= 0 (finite), got {float(mu_arr)}")
    return mu_arr.astype(dtype)


def _check_optimizer(optimizer, default_lr: float, name: str, what: str = "optimizer"):
    if optimizer is None:
        return optax.adam(default_lr)
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"{name} expects {what} to be an optax.GradientTransformation, got {type(optimizer).__name__}")
    return optimizer


def _check_data(y, shape, name: str, what: str = "one measurement") -> Array:
    if not hasattr(y, "shape") or not hasattr(y, "dtype"):
        raise TypeError(f"{name} expects {what} as an array of shape {tuple(shape)}, got {type(y).__name__}")
    y = jnp.asarray(y)
    if tuple(y.shape) != tuple(shape):
        raise ValueError(f"{name} expects {what} of shape {tuple(shape)}, got shape {tuple(y.shape)}")
    if not jnp.issubdtype(y.dtype, jnp.inexact):
        raise TypeError(f"{name} expects floating-point data, got dtype {y.dtype}")
    return y


def _partition(model, filter_spec, name: str):
    params, static = eqx.partition(model, filter_spec)
    if not jax.tree.leaves(params):
        raise ValueError(f"{name} expects a model with at least one floating-point array to adapt, got none")
    return params, static


def _squared_distance(a: PyTree, b: PyTree) -> Array:
    """$\\|a - b\\|^2$ summed over all array leaves."""
    terms = [jnp.sum(jnp.abs(u - v) ** 2) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b))]
    return sum(terms[1:], terms[0])


def _sum_squares(r: Array) -> Array:
    return jnp.sum(jnp.abs(r) ** 2)


@eqx.filter_jit
def _scan(step: Callable, carry, xs, data):
    """`lax.scan(step(., ., data))` compiled once per (step, shapes, static data)."""
    return jax.lax.scan(lambda c, x: step(c, x, data), carry, xs)


def _drive(step: Callable, carry, num_steps: int, data, *, progress: bool, desc: str):
    """Run `num_steps` steps of `step(carry, k, data) -> (carry, record)`: one scan, or ~20 chunks with tqdm."""
    ks = jnp.arange(num_steps)
    if not progress:
        return _scan(step, carry, ks, data)
    # ~20 equal chunks (a divisor of num_steps): one chunk length, one compilation.
    chunk = max(d for d in range(1, -(-num_steps // 20) + 1) if num_steps % d == 0)
    records = []
    with tqdm(total=num_steps, desc=desc, file=sys.stderr, dynamic_ncols=True) as bar:
        for start in range(0, num_steps, chunk):
            carry, rec = _scan(step, carry, ks[start : start + chunk], data)
            records.append(rec)
            bar.update(chunk)
            loss = rec.get("loss", rec.get("data_fit"))
            if loss is not None and not _is_traced(loss):
                bar.set_postfix(loss=f"{float(loss[-1]):.4g}", refresh=False)
    return carry, jax.tree.map(lambda *a: jnp.concatenate(a), *records)


# --------------------------------------------------------------------------------------------------
# The naive baseline and per-measurement adaptation
# --------------------------------------------------------------------------------------------------


def naive(model: Callable, y: Array, op: LinearOperator) -> Array:
    r"""The unadapted reconstruction $f(y; \theta_0, A_1)$: `model(y, op)` with the new operator.

    Gilton et al.'s baseline: a learned scheme that uses the operator (unrolled, learned gradient,
    primal-dual) is simply given the new $A_1$; nothing is re-fitted. Post-processing networks
    see the change only through their initial reconstruction.

    Example:
        >>> x = naive(model, y, RadonTransform(geom.with_angles(geom.angles + 0.05)))
    """
    _check_model(model, "naive")
    _check_op(op, "naive")
    return model(y, op)


def _measurement_loss(params, static, theta0, y, op, mu):
    model = eqx.combine(params, static)
    fit = _sum_squares(y - op(model(y, op)))
    penalty = _squared_distance(params, theta0)
    return fit + mu * penalty, (fit, penalty)


def _measurement_step(carry, _, data):
    params, opt_state = carry
    static, theta0, y, op, mu, optimizer = data
    (loss, (fit, penalty)), grads = jax.value_and_grad(_measurement_loss, has_aux=True)(
        params, static, theta0, y, op, mu
    )
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return (params, opt_state), {"loss": loss, "data_fit": fit, "penalty": penalty}


def adapt_to_measurement(
    model: eqx.Module,
    y: Array,
    op: LinearOperator,
    *,
    mu=1.0,
    steps: int = 100,
    optimizer: optax.GradientTransformation | None = None,
    filter_spec: Any = eqx.is_inexact_array,
    progress: bool = False,
) -> tuple[eqx.Module, dict]:
    r"""Adapt a learned reconstructor to a known new operator $A_1$ using one measurement $y$.

    Gilton et al.'s per-measurement model adaptation:

    $$\theta_1 = \arg\min_\theta\ \|y - A_1 f(y; \theta, A_1)\|^2 + \mu\,\|\theta - \theta_0\|^2,$$

    where $\theta$ are the model's inexact array leaves (`filter_spec`, as in `equinox.partition`),
    $\theta_0$ their values in `model`, and the norms are plain sums of squares over all entries
    (complex data: $|\cdot|^2$). The data-fit term alone can be driven to 0 by a reconstruction that
    fits the noise (or, for $A_1$ with a null space, anything); $\mu$ keeps $\theta$ near the
    trained $\theta_0$, whose learned prior fills in what the data do not determine. Its scale
    depends on that of the data; tune it (and `steps`) on simulated pairs.

    `steps` optimizer steps (default `optax.adam(1e-3)`) run in one `lax.scan`, compiled once
    (`equinox.filter_jit`). The function is pure: `jax.vmap(lambda y: adapt_to_measurement(model, y,
    op)[0])(ys)` adapts one model per measurement (`eqx.filter_vmap` for models with non-array leaves).

    Args:
        model: an `equinox.Module` called as `model(y, op) -> x`.
        y: one measurement, shape `op.out_shape`.
        op: the new forward operator $A_1$ (a `LinearOperator`; passed traced, not baked in).
        mu: the weight $\mu \ge 0$ of the proximity penalty.
        steps: the number of optimizer steps.
        optimizer: an optax `GradientTransformation`.
        filter_spec: which leaves to adapt (default: all inexact arrays).
        progress: a tqdm bar on stderr (the scan then runs in equal chunks, compiled once).

    Returns:
        `(adapted_model, history)`; `history["data_fit"]`, `["penalty"]` and `["loss"]` are arrays of
        shape `(steps,)`: $\|y - A_1 f(y;\theta_k, A_1)\|^2$, $\|\theta_k - \theta_0\|^2$ and the
        objective at the parameters $\theta_k$ before update $k$.

    Example:
        >>> op1 = RadonTransform(geom.with_angles(geom.angles + 0.05))
        >>> adapted, hist = adapt_to_measurement(model, y, op1, mu=0.1, steps=50,
        ...                                      optimizer=optax.adam(1e-3))
        >>> x = adapted(y, op1)
    """
    name = "adapt_to_measurement"
    _check_model(model, name)
    _check_op(op, name)
    y = _check_data(y, op.out_shape, name)
    steps = _check_steps(steps, "steps", name)
    optimizer = _check_optimizer(optimizer, 1e-3, name)
    params, static = _partition(model, filter_spec, name)
    mu = _check_mu(mu, name, jnp.finfo(y.dtype).dtype)
    carry = (params, optimizer.init(params))
    data = (static, params, y, op, mu, optimizer)
    (params, _), history = _drive(_measurement_step, carry, steps, data, progress=progress, desc="adapting")
    return eqx.combine(params, static), history


# --------------------------------------------------------------------------------------------------
# Calibrating the operator from measurements alone
# --------------------------------------------------------------------------------------------------


class TikhonovSolver(eqx.Module):
    r"""$x(A, y) \approx \arg\min_x \tfrac12\|Ax - y\|^2 + \tfrac\alpha2\|x\|^2$: `iterations` CGLS steps from 0.

    The default inner solver of `calibrate_operator`. A Module (hashable, with `alpha` a leaf), so a
    compiled calibration is reused for equal settings. Called as `solver(op, y) -> x`.
    """

    alpha: Float[Array, "..."]
    iterations: int = eqx.field(static=True)

    def __init__(self, alpha=1e-2, iterations: int = 50):
        alpha_arr = jnp.asarray(alpha)
        if alpha_arr.ndim != 0 or (not _is_traced(alpha_arr) and not float(alpha_arr) >= 0):
            raise ValueError(f"TikhonovSolver expects a scalar alpha >= 0, got {alpha!r}")
        self.alpha = alpha_arr.astype(jnp.result_type(float))
        self.iterations = _check_steps(iterations, "iterations", "TikhonovSolver")

    def __call__(self, op: LinearOperator, y: Array) -> Array:
        return cgls(op, y, alpha=self.alpha.astype(jnp.finfo(y.dtype).dtype), max_iter=self.iterations).x


def _batch_indices(key, k, num: int, batch_size: int):
    if batch_size >= num:
        return jnp.arange(num)
    return jax.random.choice(jax.random.fold_in(key, k), num, (batch_size,), replace=False)


def _calibration_loss(phi, family, solver, ys):
    op = family.operator(phi)

    def one(y):
        x = jax.lax.stop_gradient(solver(op, y))  # Danskin: the minimiser held fixed
        return 0.5 * _sum_squares(op(x) - y)

    return jnp.mean(jax.vmap(one)(ys))


def _calibration_step(carry, k, data):
    phi, opt_state = carry
    family, solver, ys, key, batch_size, optimizer = data
    batch = ys[_batch_indices(key, k, ys.shape[0], batch_size)]
    fit, grads = jax.value_and_grad(_calibration_loss)(phi, family, solver, batch)
    updates, opt_state = optimizer.update(grads, opt_state, phi)
    return (optax.apply_updates(phi, updates), opt_state), {"data_fit": fit, "phi": phi}


def _prepare_family(ys, family, phi0, name):
    if not isinstance(family, OperatorFamily):
        raise TypeError(f"{name} expects an OperatorFamily (e.g. AngleOffset(geom)), got {type(family).__name__}")
    initial = family.initial
    phi0 = initial if phi0 is None else phi0
    if jax.tree.structure(phi0) != jax.tree.structure(initial):
        raise ValueError(
            f"{name} expects phi0 structured like family.initial ({jax.tree.structure(initial)}), "
            f"got {jax.tree.structure(phi0)}"
        )
    phi0 = jax.tree.map(lambda p, i: jnp.asarray(p, i.dtype), phi0, initial)
    for p, i in zip(jax.tree.leaves(phi0), jax.tree.leaves(initial)):
        if p.shape != i.shape:
            raise ValueError(f"{name} expects phi0 leaves shaped like family.initial ({i.shape}), got {p.shape}")
    out_shape = tuple(family.operator(phi0).out_shape)
    if not hasattr(ys, "shape") or not hasattr(ys, "dtype"):
        raise TypeError(f"{name} expects ys as an array of shape (N, *{out_shape}), got {type(ys).__name__}")
    ys = jnp.asarray(ys)
    if ys.ndim != len(out_shape) + 1 or tuple(ys.shape[1:]) != out_shape or ys.shape[0] == 0:
        raise ValueError(f"{name} expects measurements ys of shape (N, *{out_shape}) with N >= 1, got {tuple(ys.shape)}")
    if not jnp.issubdtype(ys.dtype, jnp.inexact):
        raise TypeError(f"{name} expects floating-point measurements, got dtype {ys.dtype}")
    return ys, phi0


def _check_batch(batch_size, num: int, name: str) -> int:
    if batch_size is None:
        return num
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or not 1 <= batch_size <= num:
        raise ValueError(f"{name} expects batch_size to be an int in [1, N = {num}] or None, got {batch_size!r}")
    return int(batch_size)


def _check_key(key, name: str):
    if key is None:
        return jax.random.key(0)
    if not isinstance(key, jax.Array):
        raise TypeError(f"{name} expects a PRNG key (jax.random.key), got {type(key).__name__}")
    return key


def _check_solver(solver, alpha, iterations, name):
    if solver is None:
        return TikhonovSolver(alpha, iterations)
    if not callable(solver):
        raise TypeError(f"{name} expects solver to be callable as solver(op, y) -> x, got {type(solver).__name__}")
    return solver


def calibrate_operator(
    ys: Float[Array, "..."],
    family: OperatorFamily,
    phi0: PyTree | None = None,
    *,
    steps: int = 200,
    batch_size: int | None = None,
    optimizer: optax.GradientTransformation | None = None,
    solver: Callable[[LinearOperator, Array], Array] | None = None,
    alpha=1e-2,
    solver_iterations: int = 50,
    key: PRNGKeyArray | None = None,
    progress: bool = False,
) -> tuple[PyTree, dict]:
    r"""Estimate the operator parameter $\varphi$ of a family from measurements alone (no ground truth).

    Minimises the value function of a classical variational reconstruction,

    $$ V(\varphi) = \frac1N\sum_i \min_x \Big[\tfrac12\|A_\varphi x - y_i\|^2 + R(x)\Big], $$

    by gradient steps (optax, default `optax.adam(1e-2)`) from `phi0` (default `family.initial`),
    on mini-batches of `batch_size` measurements (all by default). The inner minimiser $x_i(\varphi)$
    comes from `solver(op, y)` (default `TikhonovSolver(alpha, solver_iterations)`: CGLS for
    $R = \tfrac\alpha2\|x\|^2$; e.g. `lambda op, y: tv_pdhg(op, y, 0.1, max_iter=100).x` for TV).
    By Danskin's theorem $\nabla V(\varphi) = \frac1N\sum_i \nabla_\varphi \tfrac12\|A_\varphi x_i - y_i\|^2$
    at the minimisers held fixed, so the solver is not differentiated (`stop_gradient`): that is
    exact at an exact minimiser, needs no memory for the solver's iterations, and works for
    non-differentiable solvers. (Back-propagating through the solver instead is fragile: through
    30 CGLS steps on a 16x16 CT problem, a change of 1e-9 pixel in the centre shift moved the
    reconstruction by 0.07, so the gradient was noise.)

    **What identifies $\varphi$.** $V(\varphi)$ is small when the data are explained by a simple
    image under $A_\varphi$. With more data than unknowns a wrong $\varphi$ leaves data
    inconsistent with every image (the residual term grows); with fewer, the regulariser carries
    the identification (a wrong operator needs a more irregular image). The data-fit of a
    *learned* reconstruction, used jointly with $\varphi$ (Gilton et al.'s joint objective), has
    no such anchor: the network and $\varphi$ can trade off, and a reconstruction that fits any
    data makes the loss flat in $\varphi$; hence `adapt_to_dataset` calibrates with this classical
    value function first. A centre-of-rotation shift is well identified (consistency of opposite
    views). A *global* angle offset is equivalent to rotating the object, so it is identified only
    by what breaks rotation invariance: the square pixel grid and field of view (inverse-crime
    data on a 16x16 grid recover it to a few %), the object's support, or a prior that knows the
    orientation; with real data expect it to be weakly determined.

    Args:
        ys: measurements, shape `(N, *family.operator(phi0).out_shape)`, all from one unknown $A_\varphi$.
        family: an `OperatorFamily` (`AngleOffset`, `CentreShift`, `Combined`, ...).
        phi0: the starting parameter, structured like `family.initial`.
        steps: optimizer steps.
        batch_size: measurements per step, drawn without replacement by `key` (None: all).
        optimizer: an optax transformation for $\varphi$ (Adam adapts to each parameter's scale).
        solver: `solver(op, y) -> x`, an approximate minimiser of the inner problem.
        alpha, solver_iterations: the default solver's Tikhonov weight and CGLS iterations.
        key: PRNG key for the mini-batches (default `jax.random.key(0)`).
        progress: a tqdm bar on stderr.

    Returns:
        `(phi, history)`: the estimate and `history["data_fit"]` (shape `(steps,)`, the mean
        $\tfrac12\|A_{\varphi_k} x_i - y_i\|^2$ of the batch at step $k$) and `history["phi"]` (the
        iterates $\varphi_k$ before each update, leaves stacked along a leading axis).

    Example:
        >>> family = Combined({"angle": AngleOffset(geom), "shift": CentreShift(geom)})
        >>> phi, hist = calibrate_operator(ys, family, steps=150, optimizer=optax.adam(0.02))
    """
    name = "calibrate_operator"
    ys, phi0 = _prepare_family(ys, family, phi0, name)
    steps = _check_steps(steps, "steps", name)
    batch_size = _check_batch(batch_size, ys.shape[0], name)
    optimizer = _check_optimizer(optimizer, 1e-2, name)
    solver = _check_solver(solver, alpha, solver_iterations, name)
    key = _check_key(key, name)
    carry = (phi0, optimizer.init(phi0))
    data = (family, solver, ys, key, batch_size, optimizer)
    (phi, _), history = _drive(_calibration_step, carry, steps, data, progress=progress, desc="calibrating")
    return phi, history


# --------------------------------------------------------------------------------------------------
# Adapting to a data set under an unknown operator
# --------------------------------------------------------------------------------------------------


def _dataset_loss(trainable, static, theta0, phi_fixed, family, ys, mu, joint):
    params, phi = trainable if joint else (trainable, phi_fixed)
    model = eqx.combine(params, static)
    op = family.operator(phi)
    fit = jnp.mean(jax.vmap(lambda y: _sum_squares(y - op(model(y, op))))(ys))
    penalty = _squared_distance(params, theta0)
    return fit + mu * penalty, (fit, penalty)


def _dataset_step(carry, k, data):
    trainable, opt_state = carry
    static, theta0, phi_fixed, family, ys, key, batch_size, mu, joint, optimizer = data
    batch = ys[_batch_indices(key, k, ys.shape[0], batch_size)]
    (loss, (fit, penalty)), grads = jax.value_and_grad(_dataset_loss, has_aux=True)(
        trainable, static, theta0, phi_fixed, family, batch, mu, joint
    )
    updates, opt_state = optimizer.update(grads, opt_state, trainable)
    record = {"loss": loss, "data_fit": fit, "penalty": penalty}
    if joint:
        record["phi"] = trainable[1]
    return (optax.apply_updates(trainable, updates), opt_state), record


def adapt_to_dataset(
    model: eqx.Module,
    ys: Float[Array, "..."],
    family: OperatorFamily,
    phi0: PyTree | None = None,
    *,
    mu=1.0,
    steps: int = 100,
    batch_size: int | None = None,
    optimizer: optax.GradientTransformation | None = None,
    learn_operator: bool = True,
    joint: bool = False,
    calibration_steps: int = 200,
    calibration_optimizer: optax.GradientTransformation | None = None,
    solver: Callable[[LinearOperator, Array], Array] | None = None,
    alpha=1e-2,
    solver_iterations: int = 50,
    filter_spec: Any = eqx.is_inexact_array,
    key: PRNGKeyArray | None = None,
    progress: bool = False,
) -> tuple[eqx.Module, PyTree, dict]:
    r"""Adapt a learned reconstructor to measurements `ys` from an unknown operator $A_\varphi$ of a family.

    Gilton et al.'s adaptation without ground truth, made robust by calibrating $\varphi$ first:

    1. (`learn_operator=True`) $\hat\varphi$ = `calibrate_operator(ys, family, phi0, ...)`: the
       minimiser of a classical variational value function $\frac1N\sum_i\min_x \tfrac12\|A_\varphi x
       - y_i\|^2 + R(x)$. Otherwise $\hat\varphi$ = `phi0` (the operator is known).
    2. $\theta$ by mini-batch gradient steps on

       $$ L(\theta) = \frac1{|B|}\sum_{i\in B} \|y_i - A_{\hat\varphi} f(y_i; \theta, A_{\hat\varphi})\|^2
          + \mu\,\|\theta - \theta_0\|^2. $$

       With `joint=True` $\varphi$ is refined in this step too, $\min_{\theta,\varphi} L(\theta, \varphi)$
       (Gilton et al.'s joint objective), starting from $\hat\varphi$.

    Why not the joint loss alone: its data fit is that of the network's reconstruction under the
    operator it is also given, and a flexible network can fit the data under a wrong operator
    about as well (the loss is nearly flat, or degenerate, in $\varphi$; e.g. for a blur width, a
    network that sharpens more compensates a wider kernel). A fixed classical reconstructor cannot
    compensate, so its value function identifies $\varphi$; see `calibrate_operator` for what does
    (and, for a global angle offset, what hardly does) identify it. Use `joint` only to refine.

    Args:
        model: an `equinox.Module` called as `model(y, op) -> x`, trained for the nominal operator.
        ys: measurements, shape `(N, *out_shape)`.
        family: the `OperatorFamily` of candidate operators.
        phi0: the nominal parameter (default `family.initial`), the calibration's start.
        mu: the proximity weight $\mu \ge 0$.
        steps: optimizer steps of stage 2.
        batch_size: measurements per step of both stages (None: all), drawn without replacement by `key`.
        optimizer: optax transformation of stage 2 (default `optax.adam(1e-3)`).
        learn_operator: run stage 1; if False the operator is `family.operator(phi0)`.
        joint: also update $\varphi$ in stage 2.
        calibration_steps, calibration_optimizer, solver, alpha, solver_iterations: stage 1, see
            `calibrate_operator` (default optimizer `optax.adam(1e-2)`).
        filter_spec: which model leaves to adapt (default: all inexact arrays).
        key: PRNG key for the mini-batches (default `jax.random.key(0)`).
        progress: tqdm bars on stderr.

    Returns:
        `(adapted_model, phi, history)`. `history` has, per stage-2 step (shape `(steps,)`),
        `"loss"`, `"data_fit"` (the batch mean of $\|y_i - A f(y_i)\|^2$) and `"penalty"`
        ($\|\theta_k - \theta_0\|^2$), before each update; with `joint`, `"phi"` (the iterates); with
        `learn_operator`, `"calibration"`: the history of `calibrate_operator`.

    Example:
        >>> family = Combined({"angle": AngleOffset(geom), "shift": CentreShift(geom)})
        >>> adapted, phi, hist = adapt_to_dataset(model, ys, family, mu=0.1, steps=200, batch_size=8,
        ...                                       calibration_optimizer=optax.adam(0.02))
        >>> x = adapted(ys[0], family.operator(phi))
    """
    name = "adapt_to_dataset"
    _check_model(model, name)
    ys, phi0 = _prepare_family(ys, family, phi0, name)
    steps = _check_steps(steps, "steps", name)
    batch_size = _check_batch(batch_size, ys.shape[0], name)
    optimizer = _check_optimizer(optimizer, 1e-3, name)
    for flag, what in ((learn_operator, "learn_operator"), (joint, "joint")):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} expects {what} to be a bool, got {flag!r}")
    key = _check_key(key, name)
    params, static = _partition(model, filter_spec, name)
    mu = _check_mu(mu, name, jnp.finfo(ys.dtype).dtype)
    history = {}
    phi = phi0
    if learn_operator:
        phi, history["calibration"] = calibrate_operator(
            ys, family, phi0, steps=_check_steps(calibration_steps, "calibration_steps", name),
            batch_size=batch_size, optimizer=_check_optimizer(calibration_optimizer, 1e-2, name, "calibration_optimizer"),
            solver=solver, alpha=alpha, solver_iterations=solver_iterations, key=jax.random.fold_in(key, 1),
            progress=progress,
        )
    trainable = (params, phi) if joint else params
    carry = (trainable, optimizer.init(trainable))
    data = (static, params, phi, family, ys, key, batch_size, mu, joint, optimizer)
    (trainable, _), records = _drive(_dataset_step, carry, steps, data, progress=progress, desc="adapting")
    params, phi = trainable if joint else (trainable, phi)
    return eqx.combine(params, static), phi, {**records, **history}


# --------------------------------------------------------------------------------------------------
# Reusing the trained network as a regulariser
# --------------------------------------------------------------------------------------------------


def _rr_loss(x, model, y, op, op0, lam):
    fit = _sum_squares(y - op(x))
    penalty = _sum_squares(x - model(op0(x), op0))
    return fit + lam * penalty, (fit, penalty)


def _rr_step(carry, _, data):
    x, opt_state = carry
    model, y, op, op0, lam, optimizer = data
    (loss, (fit, penalty)), grad = jax.value_and_grad(_rr_loss, has_aux=True)(x, model, y, op, op0, lam)
    updates, opt_state = optimizer.update(grad, opt_state, x)
    return (optax.apply_updates(x, updates), opt_state), {"loss": loss, "data_fit": fit, "penalty": penalty}


def reuse_and_regularise(
    model: Callable,
    y: Array,
    op: LinearOperator,
    op0: LinearOperator,
    *,
    lam=1.0,
    steps: int = 50,
    optimizer: optax.GradientTransformation | None = None,
    x0: Array | None = None,
    progress: bool = False,
) -> tuple[Array, dict]:
    r"""Reconstruct under a new operator $A_1$ with the trained network as the regulariser; $\theta_0$ is kept.

    After Gilton, Ongie and Willett's second strategy ("reuse and regularize"), in this form:

    $$\hat x = \arg\min_x\ \|y - A_1 x\|^2 + \lambda\,\|x - f(A_0 x; \theta_0, A_0)\|^2 .$$

    $f(\cdot; \theta_0, A_0)$ is the network in the setting it was trained for: the penalty is small
    for images that it maps to themselves from their (noise-free) measurements under $A_0$, i.e.
    images like those it learned to produce; the data term brings in the new operator. Unlike
    `adapt_to_measurement`, the weights are not touched, and the network is only ever called with
    $A_0$ (apart from the default start `model(y, op)`: pass `x0` for a model that cannot take $A_1$).

    `steps` optimizer steps on $x$ (default `optax.adam(3e-3)`, sized for images of unit range)
    from `x0` (default: the naive reconstruction `model(y, op)`), in one `lax.scan` compiled once
    (`equinox.filter_jit`); gradients go through the network (reverse mode). Pure and vmappable:
    `jax.vmap(lambda y: reuse_and_regularise(model, y, op, op0, lam=lam)[0])(ys)`. The weight
    $\lambda \ge 0$ balances the two sums of squares (its scale is that of $\|A_1\|^2$, the data
    term's curvature; `benchmarks/adaptation.py` chose $0.03\|A_1\|^2$ for 20 views at 5% noise);
    choose it on simulated pairs. $\lambda = 0$ is plain least squares from `x0`.

    Args:
        model: the trained reconstructor, called as `model(y0, op0) -> x`.
        y: one measurement under the new operator, shape `op.out_shape`.
        op: the new forward operator $A_1$ (known or calibrated, e.g. `family.operator(phi)`).
        op0: the operator the model was trained for, $A_0$, with `op0.in_shape == op.in_shape`.
        lam: the penalty weight $\lambda \ge 0$.
        steps: optimizer steps on $x$.
        optimizer: an optax `GradientTransformation` acting on the image.
        x0: the starting image, shape `op.in_shape` (default `model(y, op)`).
        progress: a tqdm bar on stderr.

    Returns:
        `(x, history)`; `history["data_fit"]`, `["penalty"]` and `["loss"]` have shape `(steps,)`:
        $\|y - A_1x_k\|^2$, $\|x_k - f(A_0x_k)\|^2$ and the objective at the iterate before update $k$.

    Example:
        >>> op0 = RadonTransform(ParallelBeamGeometry.uniform((64, 64), 30, 91))  # what the model was trained for
        >>> op1 = RadonTransform(ParallelBeamGeometry.uniform((64, 64), 20, 91))  # what the data come from
        >>> x, hist = reuse_and_regularise(model, y, op1, op0, lam=0.1 * float(operator_norm(op1)) ** 2)
    """
    name = "reuse_and_regularise"
    _check_model(model, name)
    _check_op(op, name)
    _check_op(op0, f"{name} (op0)")
    if tuple(op0.in_shape) != tuple(op.in_shape):
        raise ValueError(f"{name} expects op0 with the images of op, in_shape {tuple(op.in_shape)}, "
                         f"got op0.in_shape {tuple(op0.in_shape)}")
    y = _check_data(y, op.out_shape, name)
    steps = _check_steps(steps, "steps", name)
    optimizer = _check_optimizer(optimizer, 3e-3, name)
    dtype = jnp.finfo(y.dtype).dtype
    lam = _check_mu(lam, name, dtype, "lam")
    x = model(y, op) if x0 is None else _check_data(x0, op.in_shape, name, "x0, an image")
    if tuple(x.shape) != tuple(op.in_shape):
        raise ValueError(f"{name} expects model(y, op) to return an image of shape {tuple(op.in_shape)}, "
                         f"got {tuple(x.shape)}")
    x = jnp.real(x).astype(dtype)
    carry = (x, optimizer.init(x))
    (x, _), history = _drive(_rr_step, carry, steps, (model, y, op, op0, lam, optimizer), progress=progress,
                             desc="reuse and regularise")
    return x, history
