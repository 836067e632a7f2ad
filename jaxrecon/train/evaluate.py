r"""Evaluate a learned reconstructor on a set of samples: PSNR, SSIM and time per reconstruction."""

from __future__ import annotations

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from jaxrecon.metrics.quality import psnr, ssim
from jaxrecon.operators.linear_operator import LinearOperator

from .data import Sample

__all__ = ["evaluate", "reconstruct"]


@eqx.filter_jit
def _reconstruct(model, op, ys, batch_size):
    one = lambda y: model(y, op)  # noqa: E731
    if batch_size is None:
        return jax.vmap(one)(ys)
    return jax.lax.map(one, ys, batch_size=batch_size)


def reconstruct(model, op: LinearOperator, ys, *, batch_size: int | None = None):
    """`model(y, op)` for every `y` in `ys` (leading axis): vmapped, or `lax.map` in chunks of `batch_size`.

    Jitted (`equinox.filter_jit`; the operator's arrays are traced arguments). `batch_size` bounds
    the memory: `lax.map(..., batch_size=b)` vmaps over `b` samples at a time.

    Example:
        >>> xs = reconstruct(model, op, samples.y, batch_size=8)  # (N, *op.in_shape)
    """
    if not isinstance(op, LinearOperator):
        raise TypeError(f"reconstruct expects op to be a LinearOperator, got {type(op).__name__}")
    if not hasattr(ys, "shape") or tuple(ys.shape[1:]) != tuple(op.out_shape) or ys.ndim != len(op.out_shape) + 1:
        got = tuple(ys.shape) if hasattr(ys, "shape") else type(ys).__name__
        raise ValueError(f"reconstruct expects measurements of shape (N, *{tuple(op.out_shape)}), got {got}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    return _reconstruct(model, op, ys, batch_size)


@jax.jit
def _metrics(xs, refs):
    # data_range=None: the range max - min of each reference image
    return jax.vmap(psnr)(xs, refs), jax.vmap(ssim)(xs, refs)


def evaluate(model, op: LinearOperator, samples: Sample, *, batch_size: int | None = None, timed: bool = True) -> dict:
    r"""Mean and standard deviation of PSNR and SSIM of `model`'s reconstructions, and their speed.

    For each sample $b$, $\hat x_b$ = `model(y_b, op)` is compared with $x_b$ by `psnr` and `ssim`
    (`jaxrecon.metrics`) with `data_range` $= \max x_b - \min x_b$, the range of that reference.
    The reconstructions run jitted and vmapped over the samples (in `lax.map` chunks of
    `batch_size` if given). With `timed=True` a warm-up run (compilation) precedes the timed one,
    and `seconds_per_reconstruction` is its wall time divided by the number of samples.

    Args:
        model: `model(y, op) -> x` for one sample.
        op: the forward operator.
        samples: a `Sample` with `y` `(N, *op.out_shape)` and `x` `(N, H, W)` (2D images, at least
            11 x 11 for SSIM's window).
        batch_size: reconstruct at most this many samples at once (memory), or None for all.
        timed: measure the time per reconstruction (one extra run).

    Returns:
        A dict of Python floats: `psnr_mean`, `psnr_std`, `ssim_mean`, `ssim_std` (population
        standard deviation over the samples), and `seconds_per_reconstruction` if `timed`. Usable as `fit`'s
        `validate_fn`: `lambda m: evaluate(m, op, val_samples, timed=False)`.

    Example:
        >>> data = CTData.uniform(32, num_angles=16)
        >>> val = data.batch(split_key(0, "validation", 0), 8)
        >>> evaluate(model, data.operator, val)["psnr_mean"]
    """
    if not isinstance(samples, Sample):
        raise TypeError(f"evaluate expects samples to be a Sample(y, x), got {type(samples).__name__}")
    if not isinstance(op, LinearOperator):
        raise TypeError(f"evaluate expects op to be a LinearOperator, got {type(op).__name__}")
    n = samples.y.shape[0] if samples.y.ndim else 0
    if n == 0 or tuple(samples.x.shape) != (n,) + tuple(op.in_shape) or len(op.in_shape) != 2:
        raise ValueError(
            f"evaluate expects samples.x of shape (N, H, W) = (N, *{tuple(op.in_shape)}) with N = samples.y.shape[0] "
            f">= 1, got x {tuple(samples.x.shape)} and y {tuple(samples.y.shape)}"
        )
    xs = reconstruct(model, op, samples.y, batch_size=batch_size)
    if timed:
        jax.block_until_ready(xs)  # the warm-up (compilation) run
        t = time.perf_counter()
        xs = jax.block_until_ready(reconstruct(model, op, samples.y, batch_size=batch_size))
        seconds = (time.perf_counter() - t) / n
    if xs.shape != samples.x.shape:
        raise ValueError(f"evaluate expects model(y, op) of shape {tuple(op.in_shape)}, got {tuple(xs.shape[1:])}")
    p, s = (np.asarray(v, dtype=np.float64) for v in _metrics(xs, jnp.asarray(samples.x, xs.dtype)))
    out = {
        "psnr_mean": float(p.mean()),
        "psnr_std": float(p.std()),
        "ssim_mean": float(s.mean()),
        "ssim_std": float(s.std()),
    }
    if timed:
        out["seconds_per_reconstruction"] = seconds
    return out
