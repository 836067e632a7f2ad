r""""SAME" 2D convolution, channels last, with a gradient that stays on XLA CPU's fast paths.

`conv2d(x, w)` is the cross-correlation of `lax.conv_general_dilated` with "SAME" padding,

$$y_{p,o} = \sum_{i,j,c} x_{p + (i - l_h,\, j - l_w),\,c}\; w_{i,j,c,o},\qquad
l = \lfloor (k - 1)/2 \rfloor,$$

on ONE sample `x: (H, W, C)` with an HWIO kernel `w: (kh, kw, C, O)` (zero outside the image);
batch with `jax.vmap`. The value is XLA's convolution; only the reverse-mode rule is ours
(`jax.custom_vjp`), for speed on XLA CPU, with the same gradient to float rounding:

- input gradient: the correlation of $\bar y$ with the flipped, channel-swapped kernel (HWIO, the
  layout XLA CPU keeps fast, also inside `while` loops; JAX's own transpose uses HWOI, which falls
  off that path);
- weight gradient, when there are fewer output than input channels (the last layer of a block,
  e.g. 32 -> 5): one matrix product $x^\top [\bar y_{\text{shift}(1)}, \dots, \bar y_{\text{shift}(k_hk_w)}]$
  of shape $(C, HW) \times (HW, k_hk_wO)$, 3-4x faster than XLA CPU's weight-gradient convolution
  with a small output depth (`benchmarks/training_speed.py`); otherwise XLA's own.

Forward-mode differentiation (`jax.jvp`) of `conv2d` is not available (a `custom_vjp` limitation).

Example:
    >>> x, w = jnp.ones((16, 16, 6)), jnp.ones((3, 3, 6, 5))
    >>> conv2d(x, w).shape
    (16, 16, 5)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = ["conv2d"]

_NHWC = ("NHWC", "HWIO", "NHWC")


def _pads(w, transpose: bool = False):
    """"SAME" padding of an HWIO kernel (low = (k-1)//2, high = k//2), or of its transpose."""
    return [(k // 2, (k - 1) // 2) if transpose else ((k - 1) // 2, k // 2) for k in w.shape[:2]]


def _conv(x, w, pads):
    return jax.lax.conv_general_dilated(x[None], w, (1, 1), pads, dimension_numbers=_NHWC)[0]


@jax.custom_vjp
def _conv2d_narrow(x, w):
    return _conv(x, w, _pads(w))


def _fwd(x, w):
    return _conv2d_narrow(x, w), (x, w)


def _bwd(residuals, g):
    x, w = residuals
    kh, kw, c, o = w.shape
    h, w_ = x.shape[:2]
    (lh, hh), (lw, hw) = ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2)
    gx = _conv(g, jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2), _pads(w, transpose=True))
    # dW[i, j, c, o] = sum_q x[q, c] g[q - (i - l_h, j - l_w), o]: shift g (O is small), one product
    gp = jnp.pad(g, ((hh, lh), (hw, lw), (0, 0)))
    shifted = jnp.concatenate([gp[kh - 1 - i:kh - 1 - i + h, kw - 1 - j:kw - 1 - j + w_]
                               for i in range(kh) for j in range(kw)], axis=-1)
    gw = (x.reshape(h * w_, c).T @ shifted.reshape(h * w_, kh * kw * o)).reshape(c, kh, kw, o)
    return gx, gw.transpose(1, 2, 0, 3).astype(w.dtype)


_conv2d_narrow.defvjp(_fwd, _bwd)

#: Output depth up to which (when below the input depth) the weight gradient is one matrix product.
NARROW = 8


def conv2d(x: Float[Array, "H W C"], w: Float[Array, "kh kw C O"]) -> Float[Array, "H W O"]:
    """"SAME" cross-correlation of one channels-last image with an HWIO kernel (see the module)."""
    if x.ndim != 3 or w.ndim != 4 or x.shape[-1] != w.shape[2]:
        raise ValueError(
            f"conv2d expects x of shape (H, W, C) and w of shape (kh, kw, C, O) with the same C, "
            f"got {tuple(x.shape)} and {tuple(w.shape)}"
        )
    c, o = w.shape[2:]
    return _conv2d_narrow(x, w) if o < c and o <= NARROW else _conv(x, w, _pads(w))
