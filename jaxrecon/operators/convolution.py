r"""Circular (periodic) convolution by FFT, its exact adjoint, and a Gaussian blur kernel.

For a signal $f$ on the grid $\mathbb{Z}_{N_1} \times \dots \times \mathbb{Z}_{N_d}$ and a kernel $g$
zero-padded to the same grid,

$$(f * g)_j = \sum_i f_i\, g_{(j - i) \bmod N},$$

computed in $O(N \log N)$ as $\mathcal{F}^{-1}(\hat f \hat g)$ (`rfftn` when both are real,
`fftn` otherwise). The adjoint (for $\operatorname{Re}\langle\cdot,\cdot\rangle$) is circular
correlation, $\mathcal{F}^{-1}(\overline{\hat g}\,\hat y)$.
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Inexact

from .linear_operator import LinearOperator

__all__ = ["circular_convolve", "circular_correlate", "CircularConvolution", "gaussian_kernel"]


def _as_array(a, name: str, what: str) -> Array:
    if not hasattr(a, "shape") or not hasattr(a, "dtype"):
        raise TypeError(f"{name} expects `{what}` to be an array, got {type(a).__name__}")
    return jnp.asarray(a)


def _check_kernel(kernel_shape, shape, name: str) -> None:
    if len(kernel_shape) != len(shape):
        raise ValueError(
            f"{name} expects a kernel with the same number of dimensions as the signal "
            f"({len(shape)}, signal shape {tuple(shape)}), got kernel shape {tuple(kernel_shape)}"
        )
    if len(shape) == 0:
        raise ValueError(f"{name} expects at least 1-dimensional signals, got a scalar")
    if any(k > n or k < 1 for k, n in zip(kernel_shape, shape)):
        raise ValueError(
            f"{name} expects a non-empty kernel no larger than the signal in every dimension: "
            f"signal shape {tuple(shape)}, got kernel shape {tuple(kernel_shape)}"
        )


def _padded_kernel(kernel: Array, shape: tuple[int, ...], centred: bool) -> Array:
    """Zero-pad `kernel` to `shape` with index 0 (or, if `centred`, index k//2) at the origin."""
    padded = jnp.pad(kernel, [(0, n - k) for k, n in zip(kernel.shape, shape)])
    if centred:
        padded = jnp.roll(padded, [-(k // 2) for k in kernel.shape], axis=tuple(range(len(shape))))
    return padded


@functools.partial(jax.jit, static_argnums=(2, 3))
def _fft_filter(x: Array, kernel: Array, centred: bool, adjoint: bool) -> Array:
    """$\\mathcal{F}^{-1}(\\hat x \\hat g)$, or with $\\overline{\\hat g}$ if `adjoint`."""
    dtype = jnp.promote_types(jnp.result_type(x, kernel), jnp.float32)
    x, kernel = x.astype(dtype), kernel.astype(dtype)
    shape = x.shape
    g = _padded_kernel(kernel, shape, centred)
    axes = tuple(range(x.ndim))
    if jnp.issubdtype(dtype, jnp.complexfloating):
        gh = jnp.fft.fftn(g, axes=axes)
        gh = jnp.conj(gh) if adjoint else gh
        return jnp.fft.ifftn(jnp.fft.fftn(x, axes=axes) * gh, axes=axes).astype(dtype)
    gh = jnp.fft.rfftn(g, axes=axes)
    gh = jnp.conj(gh) if adjoint else gh
    return jnp.fft.irfftn(jnp.fft.rfftn(x, axes=axes) * gh, s=shape, axes=axes).astype(dtype)


def circular_convolve(
    x: Inexact[ArrayLike, "*shape"], kernel: Inexact[ArrayLike, "*kshape"], *, centred: bool = False
) -> Inexact[Array, "*shape"]:
    r"""Circular convolution $(x * g)_j = \sum_i x_i\, g_{(j - i) \bmod N}$ in every dimension of `x`.

    The kernel (same number of dimensions as `x`, each no longer than `x`'s) is zero-padded to
    `x.shape` with its index 0 at the origin. With `centred=True` its centre, index `k // 2` in
    each dimension, sits at the origin instead; this equals
    `scipy.ndimage.convolve(x, kernel, mode="wrap")`. Computed by FFT in $O(N\log N)$: `rfftn`
    when both inputs are real (result real), `fftn` when either is complex (result complex).

    Args:
        x: the signal, any shape with at least one dimension (one sample; batch with `jax.vmap`).
        kernel: the kernel $g$, `kernel.ndim == x.ndim`, `kernel.shape[d] <= x.shape[d]`.
        centred: put the kernel's centre rather than its first entry at the origin.

    Returns:
        An array of `x.shape` in the promoted dtype of `x` and `kernel` (float32 at least).

    Example:
        >>> circular_convolve(jnp.array([1.0, 2.0, 3.0, 4.0]), jnp.array([0.0, 1.0]))  # a shift
        Array([4., 1., 2., 3.], dtype=float32)
    """
    x = _as_array(x, "circular_convolve", "x")
    kernel = _as_array(kernel, "circular_convolve", "kernel")
    _check_kernel(kernel.shape, x.shape, "circular_convolve")
    return _fft_filter(x, kernel, centred, adjoint=False)


def circular_correlate(
    y: Inexact[ArrayLike, "*shape"], kernel: Inexact[ArrayLike, "*kshape"], *, centred: bool = False
) -> Inexact[Array, "*shape"]:
    r"""The adjoint of `circular_convolve(., kernel)`: $(g \star y)_i = \sum_j \overline{g_{(j - i) \bmod N}}\, y_j$.

    Same arguments and conventions as `circular_convolve`; exact adjoint for
    $\operatorname{Re}\langle\cdot,\cdot\rangle$ (and for the complex inner product).

    Example:
        >>> circular_correlate(jnp.array([1.0, 2.0, 3.0, 4.0]), jnp.array([0.0, 1.0]))  # shift back
        Array([2., 3., 4., 1.], dtype=float32)
    """
    y = _as_array(y, "circular_correlate", "y")
    kernel = _as_array(kernel, "circular_correlate", "kernel")
    _check_kernel(kernel.shape, y.shape, "circular_correlate")
    return _fft_filter(y, kernel, centred, adjoint=True)


class CircularConvolution(LinearOperator):
    r"""The blur $A x = x * g$ (circular convolution) on arrays of a fixed `shape`, with exact adjoint.

    $A^* y$ is circular correlation with $g$. The kernel is a leaf: it can be learned,
    differentiated or vmapped over. A complex kernel makes the domain complex (`in_complex`).

    Args:
        kernel: $g$, `kernel.ndim == len(shape)`, no longer than `shape` in any dimension.
        shape: the signal shape, e.g. `(H, W)`.
        centred: put the kernel's centre (index `k // 2`) at the origin (default), so a
            symmetric kernel blurs without shifting; as `scipy.ndimage.convolve(mode="wrap")`.

    Example:
        >>> op = CircularConvolution(gaussian_kernel(7, 1.5), (64, 64))
        >>> op(jnp.ones((64, 64))).shape, op.T(jnp.ones((64, 64))).shape
        ((64, 64), (64, 64))
    """

    kernel: Array
    shape: tuple[int, ...] = eqx.field(static=True)
    centred: bool = eqx.field(static=True)

    def __init__(self, kernel: Inexact[ArrayLike, "*kshape"], shape, centred: bool = True):
        kernel = _as_array(kernel, "CircularConvolution", "kernel")
        shape = tuple(int(n) for n in shape)
        _check_kernel(kernel.shape, shape, "CircularConvolution")
        if not jnp.issubdtype(kernel.dtype, jnp.inexact):
            kernel = kernel.astype(jnp.float32)
        self.kernel = kernel
        self.shape = shape
        self.centred = bool(centred)

    def mv(self, x):
        return _fft_filter(x, self.kernel, self.centred, adjoint=False)

    def rmv(self, y):
        return _fft_filter(y, self.kernel, self.centred, adjoint=True)

    @property
    def in_shape(self):
        return self.shape

    @property
    def out_shape(self):
        return self.shape

    @property
    def in_complex(self):
        return bool(jnp.iscomplexobj(self.kernel))


def gaussian_kernel(size, sigma: float, *, ndim: int = 2, dtype=jnp.float32) -> Float[Array, "*kshape"]:
    r"""A normalised Gaussian kernel $g_i \propto \exp(-\|i - c\|^2 / 2\sigma^2)$, $\sum_i g_i = 1$.

    The centre is $c = (k - 1)/2$ in each dimension, so an odd `size` is centred on index
    `k // 2` (what `CircularConvolution(..., centred=True)` expects).

    Args:
        size: side length (int, used for all `ndim` dimensions) or a tuple of side lengths.
        sigma: the standard deviation in pixels, > 0.
        ndim: number of dimensions when `size` is an int.
        dtype: a float dtype.

    Example:
        >>> gaussian_kernel(5, 1.0).shape
        (5, 5)
    """
    sizes = (int(size),) * ndim if np.ndim(size) == 0 else tuple(int(s) for s in size)
    if not sizes or any(s < 1 for s in sizes):
        raise ValueError(f"gaussian_kernel expects positive sizes, got {size!r}")
    if not isinstance(sigma, (int, float, np.floating, np.integer)) or not sigma > 0:
        raise ValueError(f"gaussian_kernel expects a positive number sigma, got {sigma!r}")
    grids = np.meshgrid(*[np.arange(s) - (s - 1) / 2 for s in sizes], indexing="ij")
    g = np.exp(-sum(t**2 for t in grids) / (2 * float(sigma) ** 2))
    return jnp.asarray(g / g.sum(), dtype=dtype)
