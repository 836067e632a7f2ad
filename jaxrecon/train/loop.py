r"""The training loop: one jitted optax step, validation, progress, checkpoints and exact resume.

Training minimises $L(\theta) = \mathbb{E}\,\ell(\theta; \text{batch})$ by
$\theta_{k+1} = \theta_k + \text{update}_k$, where `optimizer.update` turns $\nabla_\theta
\ell(\theta_k; \text{batch}_k)$ into the update, and $\text{batch}_k$ = `batch_fn(k)` is a pure
function of the step. Parameters are the inexact (floating) array leaves of the model
(`eqx.filter(model, eqx.is_inexact_array)`); everything else in the model is held fixed.

Because the batch of step $k$, the optimizer state and the parameters are all there is, a run
stopped after step $k$ and resumed from its checkpoint produces bitwise the same parameters as an
uninterrupted run.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array
from tqdm.auto import tqdm

from jaxrecon.operators.linear_operator import LinearOperator

from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .data import Sample
from .distributed import agree
from .sharding import BATCH_AXIS, replicate, shard_batch

__all__ = ["TrainResult", "fit", "default_optimizer", "reconstruction_loss", "reconstruction_loss_fn"]


class TrainResult(NamedTuple):
    """What `fit` returns.

    Attributes:
        model: the trained model.
        opt_state: the final optimizer state.
        history: a dict of lists (JSON-serialisable):
            `"step"`, `"loss"`, `"time"` -- per training step $k$: the loss of `batch_fn(k)` at the
            parameters after $k$ updates, and the wall-clock seconds since training started
            (cumulative over resumed runs) when it was known;
            `"val_step"` and `"val_<metric>"` -- each validation: the number of updates done and
            the values returned by `validate_fn`;
            `"compile_seconds"` -- the time to trace and compile the step, once per (re)start.
    """

    model: Any
    opt_state: Any
    history: dict


# --------------------------------------------------------------------------------------------------
# Losses and the optimizer
# --------------------------------------------------------------------------------------------------


def reconstruction_loss(model, op: LinearOperator, batch: Sample) -> Array:
    r"""Mean squared error of the reconstructions of a batch: $\frac1B\sum_b \operatorname{mean}(\,(\text{model}(y_b, A) - x_b)^2)$.

    Args:
        model: called on one sample as `model(y, op) -> x` (vmapped over the batch here).
        op: the forward operator $A$ (`op.out_shape` measurements, `op.in_shape` images).
        batch: a `Sample` with `y` of shape `(B, *op.out_shape)` and `x` of shape `(B, *op.in_shape)`.

    Example:
        >>> loss_fn = lambda model, batch: reconstruction_loss(model, op, batch)  # for `fit`
        >>> loss_fn = reconstruction_loss_fn(op)  # the same, with `op` a traced argument
    """
    if not isinstance(batch, Sample):
        raise TypeError(f"reconstruction_loss expects batch to be a Sample(y, x), got {type(batch).__name__}")
    out_shape, in_shape = tuple(op.out_shape), tuple(op.in_shape)
    if batch.y.ndim != len(out_shape) + 1 or tuple(batch.y.shape[1:]) != out_shape:
        raise ValueError(
            f"reconstruction_loss expects batch.y of shape (B, *{out_shape}), got {tuple(batch.y.shape)}"
        )
    if tuple(batch.x.shape) != (batch.y.shape[0],) + in_shape:
        raise ValueError(
            f"reconstruction_loss expects batch.x of shape {(batch.y.shape[0],) + in_shape}, got {tuple(batch.x.shape)}"
        )
    pred = jax.vmap(lambda y: model(y, op))(batch.y)
    if pred.shape != batch.x.shape:
        raise ValueError(
            f"reconstruction_loss expects model(y, op) to return op.in_shape {in_shape}, got {pred.shape[1:]}"
        )
    return jnp.mean((pred - batch.x) ** 2)


def _loss_with_op(op, model, batch):
    return reconstruction_loss(model, op, batch)


def reconstruction_loss_fn(op: LinearOperator) -> Callable:
    """`loss_fn(model, batch) = reconstruction_loss(model, op, batch)` for `fit`, as an `equinox.Partial`.

    Unlike a lambda closing over `op`, the returned pytree carries the operator's arrays (e.g. the
    geometry's angles) as leaves, so the jitted step receives them as traced arguments instead of
    baking them in as constants (which lets XLA constant-fold large index tensors).

    Example:
        >>> loss_fn = reconstruction_loss_fn(data.operator)
        >>> fit(model, loss_fn, batch_fn, optimizer, 1000)
    """
    if not isinstance(op, LinearOperator):
        raise TypeError(f"reconstruction_loss_fn expects a LinearOperator, got {type(op).__name__}")
    return eqx.Partial(_loss_with_op, op)


def default_optimizer(
    learning_rate: float = 1e-3, *, num_steps: int, clip: float | None = 1.0, warmup: int = 0, b2: float = 0.999
) -> optax.GradientTransformation:
    r"""Adam with a cosine-decayed learning rate, after clipping the gradient's global norm.

    `optax.chain(optax.clip_by_global_norm(clip), optax.adam(schedule))` with
    $\eta_k = \eta\,\tfrac12(1 + \cos(\pi k / K))$ for $K$ = `num_steps` (decaying to 0), preceded
    by a linear warm-up from 0 over `warmup` steps if `warmup > 0` (then the cosine runs over the
    remaining `num_steps - warmup` steps). `clip=None` disables clipping. `b2`: Adam's second-moment
    decay (0.999, optax's default; the authors' code of learned primal-dual used 0.99).

    Example:
        >>> opt = default_optimizer(1e-3, num_steps=1000, warmup=50)
        >>> state = opt.init({"w": jnp.zeros(3)})
    """
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) or not learning_rate > 0:
        raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r}")
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or not 0 <= warmup < num_steps:
        raise ValueError(f"warmup must be an int in [0, num_steps) = [0, {num_steps}), got {warmup!r}")
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float)) or not clip > 0):
        raise ValueError(f"clip must be a positive number or None, got {clip!r}")
    if isinstance(b2, bool) or not isinstance(b2, (int, float)) or not 0 <= b2 < 1:
        raise ValueError(f"b2 must be a number in [0, 1), got {b2!r}")
    if warmup:
        schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup, num_steps, end_value=0.0)
    else:
        schedule = optax.cosine_decay_schedule(learning_rate, num_steps)
    adam = optax.adam(schedule, b2=b2)
    return adam if clip is None else optax.chain(optax.clip_by_global_norm(clip), adam)


# --------------------------------------------------------------------------------------------------
# The step
# --------------------------------------------------------------------------------------------------


def _same_dtypes(new, old):
    """Cast the arrays of `new` to the (strong) dtypes of `old`: the step's signature never drifts."""
    return jax.tree.map(lambda n, o: n.astype(o.dtype) if eqx.is_array(o) else n, new, old)


@eqx.filter_jit
def _train_step(model, opt_state, batch, loss_fn, optimizer, replicated):
    loss, grads = eqx.filter_value_and_grad(loss_fn)(model, batch)
    updates, new_opt_state = optimizer.update(grads, opt_state, eqx.filter(model, eqx.is_inexact_array))
    model = _same_dtypes(eqx.apply_updates(model, updates), model)
    opt_state = _same_dtypes(new_opt_state, opt_state)
    if replicated is not None:  # data parallel: keep parameters and optimizer state replicated
        params, static = eqx.partition((model, opt_state), eqx.is_array)
        (model, opt_state) = eqx.combine(jax.lax.with_sharding_constraint(params, replicated), static)
    return model, opt_state, loss


# --------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------


def _check_int(value, name: str, low: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        what = f"an int >= {low}" + (" or None" if allow_none else "")
        raise ValueError(f"{name} must be {what}, got {value!r}")


def _check_same_start(start: int, directory) -> None:
    """Every process resumes from the same step (their checkpoint folder must be one shared filesystem)."""
    from jax.experimental import multihost_utils

    starts = np.asarray(multihost_utils.process_allgather(np.asarray(start, np.int32))).ravel().tolist()
    if len(set(starts)) > 1:
        raise ValueError(
            f"the {len(starts)} processes found different checkpoints in {str(directory)!r} (resuming from steps "
            f"{starts}, by process); the checkpoint directory must be on a filesystem shared by all processes"
        )


def _new_history() -> dict:
    return {"step": [], "loss": [], "time": [], "val_step": [], "compile_seconds": []}


def fit(
    model,
    loss_fn: Callable,
    batch_fn: Callable[[int], Any],
    optimizer: optax.GradientTransformation,
    num_steps: int,
    *,
    validate_fn: Callable[[Any], dict] | None = None,
    validate_every: int = 100,
    checkpoint_dir=None,
    checkpoint_every: int | None = None,
    config: dict | None = None,
    resume: bool = True,
    progress: bool = True,
    mesh: jax.sharding.Mesh | None = None,
    time_limit: float | None = None,
) -> TrainResult:
    """Train `model` for `num_steps` optimizer steps (counting steps done before a resume).

    Each step $k$ = `start, ..., num_steps - 1` evaluates `loss_fn(model, batch_fn(k))` and its
    gradient with respect to the model's floating-point arrays and applies `optimizer`, in one
    `equinox.filter_jit` function that is compiled once (at the first step; its time is recorded
    as `compile_seconds`) and reused: batches must keep their shapes and dtypes. A
    `KeyboardInterrupt` (Ctrl-C) during training checkpoints the steps done so far (with
    `checkpoint_dir`) before it propagates, so that the run resumes from there.

    Args:
        model: a pytree (typically an `equinox.Module`); its inexact array leaves are trained.
        loss_fn: `loss_fn(model, batch) -> scalar`, the mean over the batch (e.g.
            `reconstruction_loss_fn(op)`). Passed to the jitted step as an argument: arrays in an
            `equinox.Partial` or `Module` are traced, a plain closure's are constants.
        batch_fn: `batch_fn(k) -> batch pytree`, deterministic in the step `k` (e.g.
            `lambda k: data.batch(split_key(seed, "train", k), 8)`), so that resuming is exact.
        optimizer: an `optax.GradientTransformation` (e.g. `default_optimizer(num_steps=...)`).
        num_steps: total number of steps (>= 0).
        validate_fn: optional `validate_fn(model) -> dict[str, float]` (e.g. PSNR on a validation
            set), called every `validate_every` steps and after the last step; recorded as
            `history["val_<name>"]`.
        checkpoint_dir: if given, checkpoints are saved there every `checkpoint_every` steps (if
            given) and after the last step, with `config` (a JSON dict) and the history.
        resume: continue from the latest checkpoint in `checkpoint_dir` if there is one (its
            model, optimizer state, step and history replace the given ones; the given model and a
            fresh `optimizer.init` serve as templates).
        progress: show a tqdm progress bar on stderr (loss, last validation PSNR).
        mesh: a `data_parallel_mesh()`: parameters and optimizer state are replicated over it and
            each batch is split along its leading axis (`shard_batch`); the step is the same. With
            several processes (`initialize_distributed`) `batch_fn(k)` gives this process's rows of
            batch `k` (`process_rows`, `local_part`); process 0 writes the checkpoints, which all
            processes must see (a shared filesystem), and a `time_limit` stops all at process 0's step.
        time_limit: stop after the first step that ends this many wall-clock seconds after the call
            began (compilation included), checkpointing there (with `checkpoint_dir`): a long run
            in bounded sessions. Calling `fit` again with the same arguments resumes it exactly;
            `history["step"][-1] + 1 < num_steps` tells that a run stopped early.

    Returns:
        `TrainResult(model, opt_state, history)`; see `TrainResult` for the history's keys.

    Example:
        >>> data = CTData.uniform(64, num_angles=30, noise=0.05)
        >>> result = fit(model, reconstruction_loss_fn(data.operator),
        ...              lambda k: data.batch(split_key(0, "train", k), 8),
        ...              default_optimizer(1e-3, num_steps=2000), 2000,
        ...              checkpoint_dir="runs/a", checkpoint_every=500, config={"model": "unet"})
    """
    if not callable(loss_fn) or not callable(batch_fn):
        raise TypeError(
            f"fit expects callables loss_fn(model, batch) and batch_fn(step), got {type(loss_fn).__name__} "
            f"and {type(batch_fn).__name__}"
        )
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"optimizer must be an optax.GradientTransformation, got {type(optimizer).__name__}")
    _check_int(num_steps, "num_steps", 0)
    _check_int(validate_every, "validate_every", 1)
    _check_int(checkpoint_every, "checkpoint_every", 1, allow_none=True)
    if time_limit is not None and (isinstance(time_limit, bool) or not isinstance(time_limit, (int, float))
                                   or not time_limit > 0):
        raise ValueError(f"time_limit must be a positive number of seconds or None, got {time_limit!r}")
    if validate_fn is not None and not callable(validate_fn):
        raise TypeError(f"validate_fn must be callable or None, got {type(validate_fn).__name__}")
    if config is not None and not isinstance(config, dict):
        raise TypeError(f"config must be a dict or None, got {type(config).__name__}")
    if mesh is not None and (not isinstance(mesh, jax.sharding.Mesh) or BATCH_AXIS not in mesh.axis_names):
        raise TypeError(f"mesh must be a jax.sharding.Mesh with an axis {BATCH_AXIS!r} (data_parallel_mesh()), got {mesh!r}")
    if not jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array)):
        raise ValueError("fit expects a model with at least one floating-point array to train, got none")

    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    history, start = _new_history(), 0
    if checkpoint_dir is not None and resume and latest_checkpoint(checkpoint_dir) is not None:
        model, opt_state, start, _, saved = load_checkpoint(checkpoint_dir, model_like=model, opt_state_like=opt_state)
        history = _new_history() | (saved or {})
    multi = jax.process_count() > 1
    if multi and checkpoint_dir is not None:
        _check_same_start(start, checkpoint_dir)
    model, opt_state = _same_dtypes((model, opt_state), (model, opt_state))  # no weak types: one signature
    is_main = jax.process_index() == 0
    replicated = None
    if mesh is not None:
        model, opt_state = replicate((model, opt_state), mesh)
        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

    time_offset = history["time"][-1] if history["time"] else 0.0
    t0 = time.perf_counter()
    compiled = False
    pending = None  # (step, loss array): read one step late, so the host never idles the device

    def record(item):
        k, loss = item
        history["step"].append(k)
        history["loss"].append(float(loss))
        history["time"].append(time_offset + time.perf_counter() - t0)
        bar.set_postfix(postfix(), refresh=False)

    def postfix():
        out = {"loss": f"{history['loss'][-1]:.4g}"} if history["loss"] else {}
        psnr = next((k for k in history if k.startswith("val_") and "psnr" in k), None)
        if psnr and history[psnr]:
            out["psnr"] = f"{history[psnr][-1]:.2f}"
        return out

    def validate(done):
        bar.set_description_str("validating", refresh=True)  # the first validation also compiles
        metrics = validate_fn(model)
        bar.set_description_str("training", refresh=False)
        if not isinstance(metrics, dict):
            raise TypeError(f"validate_fn must return a dict of floats, got {type(metrics).__name__}")
        metrics = {name: float(value) for name, value in metrics.items()}  # all computed before any is recorded
        history["val_step"].append(done)
        for name, value in metrics.items():
            history.setdefault(f"val_{name}", []).append(value)

    def checkpoint(done, barrier=True):
        if is_main:
            save_checkpoint(checkpoint_dir, model=model, opt_state=opt_state, step=done, config=config or {},
                            history=history)
        if multi and barrier:  # no process runs ahead (e.g. into a resume) before the checkpoint is written
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"jaxrecon checkpoint {done}")

    completed = saved = start  # the steps whose updates are in `model`; the newest checkpointed step
    with tqdm(total=num_steps, initial=min(start, num_steps), disable=not (progress and is_main), file=sys.stderr,
              desc="training", dynamic_ncols=True) as bar:
        try:
            for k in range(start, num_steps):
                batch = batch_fn(k)
                if mesh is not None:
                    batch = shard_batch(batch, mesh)
                if not compiled:  # trace and compile once, timed on its own (the calls below reuse it)
                    bar.set_description_str("compiling the training step", refresh=True)
                    tc = time.perf_counter()
                    _train_step.lower(model, opt_state, batch, loss_fn, optimizer, replicated).compile()
                    history["compile_seconds"].append(time.perf_counter() - tc)
                    compiled = True
                    bar.unpause()  # the rate and the time left count training steps, not compilation
                    bar.set_description_str("training", refresh=False)
                    if progress and is_main:
                        bar.write(f"compiled the training step in {history['compile_seconds'][-1]:.1f} s")
                model, opt_state, loss = _train_step(model, opt_state, batch, loss_fn, optimizer, replicated)
                completed = done = k + 1
                if pending is not None:
                    record(pending)
                pending = (k, loss)
                out_of_time = time_limit is not None and time.perf_counter() - t0 >= time_limit
                if multi and time_limit is not None:  # every process stops at process 0's step
                    out_of_time = agree(out_of_time)
                last = done == num_steps or out_of_time
                do_val = validate_fn is not None and (done % validate_every == 0 or done == num_steps)
                do_ckpt = checkpoint_dir is not None and (last or (checkpoint_every and done % checkpoint_every == 0))
                if do_val or do_ckpt:
                    record(pending)
                    pending = None
                if do_val:
                    validate(done)
                    bar.set_postfix(postfix(), refresh=False)
                if do_ckpt:
                    checkpoint(done)
                    saved = done
                bar.update(1)
                if out_of_time:
                    break
        except KeyboardInterrupt:  # Ctrl-C (or SIGTERM turned into it by the CLI): keep what is done
            if checkpoint_dir is not None and completed > saved:
                if pending is not None:
                    record(pending)
                checkpoint(completed, barrier=False)  # the other processes may be elsewhere: no collective
            raise
        if pending is not None:
            record(pending)
    return TrainResult(model, opt_state, history)
