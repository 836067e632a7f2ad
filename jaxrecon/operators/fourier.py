r"""Subsampled 2D Fourier transform (MRI-type forward model) and sampling masks.

$A x = M \odot \mathcal{F}x$ with $\mathcal{F}$ the orthonormal 2D DFT (`norm="ortho"`,
$\mathcal{F}^* = \mathcal{F}^{-1}$) and $M$ a real mask on the full `(H, W)` frequency grid, in
numpy's FFT layout (zero frequency at `[0, 0]`; view it with `jnp.fft.fftshift`). The output is
the full `(H, W)` complex grid with unsampled entries zero, so shapes are static (jittable,
vmappable over images and masks).
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Complex, Float, Inexact, PRNGKeyArray

from .linear_operator import LinearOperator

__all__ = ["SubsampledFourier", "cartesian_mask", "radial_mask"]


class SubsampledFourier(LinearOperator):
    r"""$A x = M \odot \mathrm{fft2}(x, \text{norm}=\text{"ortho"})$ on `(H, W)` images.

    Adjoint (exact for $\operatorname{Re}\langle\cdot,\cdot\rangle$):
    $A^* y = \mathrm{ifft2}(M \odot y)$ for complex images (`real_input=False`), and
    $A^* y = \operatorname{Re}\,\mathrm{ifft2}(M \odot y)$ for real images (`real_input=True`,
    the default: $A$ then maps $\mathbb{R}^{H\times W} \to \mathbb{C}^{H\times W}$).

    Args:
        mask: shape `(H, W)`, boolean or real (0/1 for sampling; general real weights also give
            a linear operator with this exact adjoint), in FFT layout (DC at `[0, 0]`). Stored as
            a float leaf (booleans become float32).
        real_input: whether the images are real.

    Shapes: `(H, W)` real (or complex) image -> `(H, W)` complex k-space, zero off the mask.

    Example:
        >>> op = SubsampledFourier(cartesian_mask(jax.random.PRNGKey(0), (64, 64), 4))
        >>> y = op(jnp.ones((64, 64)))  # complex64, (64, 64)
        >>> op.T(y).shape
        (64, 64)
    """

    mask: Float[Array, "H W"]
    real_input: bool = eqx.field(static=True)

    def __init__(self, mask: ArrayLike, real_input: bool = True):
        if not hasattr(mask, "shape") or not hasattr(mask, "dtype"):
            raise TypeError(f"SubsampledFourier expects an (H, W) array mask, got {type(mask).__name__}")
        mask = jnp.asarray(mask)
        if mask.ndim != 2:
            raise ValueError(f"SubsampledFourier expects a 2D mask of shape (H, W), got shape {tuple(mask.shape)}")
        if jnp.iscomplexobj(mask):
            raise TypeError(f"SubsampledFourier expects a boolean or real mask, got dtype {mask.dtype}")
        if not jnp.issubdtype(mask.dtype, jnp.floating):
            mask = mask.astype(jnp.float32)
        if not isinstance(mask, jax.core.Tracer) and not np.all(np.isfinite(np.asarray(mask))):
            raise ValueError("SubsampledFourier expects a finite mask (0/1, or real weights), got NaN or inf entries")
        self.mask = mask
        self.real_input = bool(real_input)

    def mv(self, x: Inexact[Array, "H W"]) -> Complex[Array, "H W"]:
        return self.mask * jnp.fft.fft2(x, norm="ortho")

    def rmv(self, y: Complex[Array, "H W"]) -> Inexact[Array, "H W"]:
        x = jnp.fft.ifft2(self.mask * y, norm="ortho")
        return jnp.real(x) if self.real_input else x

    @property
    def in_shape(self):
        return tuple(self.mask.shape)

    @property
    def out_shape(self):
        return tuple(self.mask.shape)

    @property
    def in_complex(self):
        return not self.real_input


def _centre_first(n: int) -> np.ndarray:
    """Indices 0..n-1 of an FFT axis ordered by increasing |frequency| (ties: positive first)."""
    return np.argsort(np.abs(np.fft.fftfreq(n) * n), kind="stable")


def cartesian_mask(
    key: PRNGKeyArray, shape: tuple[int, int], acceleration: float, center_fraction: float = 0.08
) -> Float[Array, "H W"]:
    r"""A random Cartesian (column) sampling mask in FFT layout, float32 0/1 of shape `(H, W)`.

    Samples exactly `round(W / acceleration)` full columns (phase-encode lines): the
    `round(W * center_fraction)` lowest frequencies always, the rest uniformly at random without
    replacement. Jittable and vmappable over keys (`shape`, `acceleration`, `center_fraction`
    are static Python numbers).

    Example:
        >>> m = cartesian_mask(jax.random.PRNGKey(0), (64, 64), acceleration=4)
        >>> int(m[0].sum())  # 16 columns
    """
    h, w = (int(n) for n in shape)
    if h < 1 or w < 1:
        raise ValueError(f"cartesian_mask expects a positive (H, W) shape, got {shape!r}")
    if not acceleration >= 1:
        raise ValueError(f"cartesian_mask expects acceleration >= 1, got {acceleration!r}")
    if not 0 <= center_fraction <= 1:
        raise ValueError(f"cartesian_mask expects center_fraction in [0, 1], got {center_fraction!r}")
    num_lines = max(1, round(w / acceleration))
    num_low = min(round(w * center_fraction), num_lines)
    return _cartesian_mask(key, h, w, num_lines, num_low)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _cartesian_mask(key, h, w, num_lines, num_low):
    low = _centre_first(w)[:num_low]
    scores = jax.random.uniform(key, (w,))
    scores = scores.at[low].set(-1.0)  # always among the lowest scores, i.e. always picked
    rank = jnp.argsort(jnp.argsort(scores))
    cols = (rank < num_lines).astype(jnp.float32)
    return jnp.broadcast_to(cols, (h, w))


def radial_mask(shape: tuple[int, int], num_lines: int) -> Float[Array, "H W"]:
    r"""A radial sampling mask in FFT layout: `num_lines` lines through the zero frequency.

    The lines have angles $k\pi/\text{num\_lines}$; each marks the nearest grid points of the
    centred (fftshifted) frequency grid at half-pixel steps. Returns float32 0/1, `(H, W)`.

    Example:
        >>> radial_mask((64, 64), 22).shape
        (64, 64)
    """
    h, w = (int(n) for n in shape)
    if h < 1 or w < 1:
        raise ValueError(f"radial_mask expects a positive (H, W) shape, got {shape!r}")
    if int(num_lines) < 1:
        raise ValueError(f"radial_mask expects num_lines >= 1, got {num_lines!r}")
    mask = np.zeros((h, w), dtype=np.float32)
    ch, cw = h // 2, w // 2  # the zero frequency after fftshift
    t = np.arange(-max(h, w), max(h, w) + 1) / 2
    for theta in np.arange(int(num_lines)) * np.pi / int(num_lines):
        rows = np.rint(ch - t * np.sin(theta)).astype(int)
        cols = np.rint(cw + t * np.cos(theta)).astype(int)
        inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
        mask[rows[inside], cols[inside]] = 1.0
    return jnp.asarray(np.fft.ifftshift(mask))
