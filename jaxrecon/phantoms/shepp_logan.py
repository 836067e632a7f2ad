r"""The modified Shepp-Logan phantom (Toft's higher-contrast variant), as ellipses and as an image."""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

from .ellipses import EllipsePhantom, _check_supersample, _is_int, rasterize

__all__ = ["shepp_logan", "shepp_logan_ellipses", "MODIFIED_SHEPP_LOGAN"]

#: Rows (value, a, b, u0, v0, phi in degrees): semi-axis a along u, b along v, phi counter-clockwise.
#: P. Toft, "The Radon Transform: Theory and Implementation", PhD thesis, DTU, 1996 (the table used by
#: MATLAB's ``phantom('Modified Shepp-Logan')``, ODL and scikit-image).
MODIFIED_SHEPP_LOGAN = (
    (1.0, 0.69, 0.92, 0.0, 0.0, 0.0),
    (-0.8, 0.6624, 0.874, 0.0, -0.0184, 0.0),
    (-0.2, 0.11, 0.31, 0.22, 0.0, -18.0),
    (-0.2, 0.16, 0.41, -0.22, 0.0, 18.0),
    (0.1, 0.21, 0.25, 0.0, 0.35, 0.0),
    (0.1, 0.046, 0.046, 0.0, 0.1, 0.0),
    (0.1, 0.046, 0.046, 0.0, -0.1, 0.0),
    (0.1, 0.046, 0.023, -0.08, -0.605, 0.0),
    (0.1, 0.023, 0.023, 0.0, -0.606, 0.0),
    (0.1, 0.023, 0.046, 0.06, -0.605, 0.0),
)


def shepp_logan_ellipses(dtype=None) -> EllipsePhantom:
    r"""The 10 ellipses of the modified Shepp-Logan phantom as an `EllipsePhantom` (scale 1, offset 0).

    Normalised coordinates $[-1, 1]^2$ ($v$ up): the skull is the ellipse with semi-axes
    $(0.69, 0.92)$; the two dark ellipses sit at $u = \pm 0.22$ (the smaller, tilted one at
    $u = +0.22$, i.e. on the right); the three small ellipses near $v = -0.605$ at the bottom. Every
    point value lies in $\{0, 0.1, 0.2, 0.3, 0.4, 1\}$ (0 outside the skull), so images lie in $[0, 1]$
    (up to float rounding: $1 - 0.8 - 0.2 \ne 0$ in floating point).
    Use it with `ellipse_sinogram` for an exact sinogram.

    Example:
        >>> shepp_logan_ellipses().num_ellipses
        10
    """
    dtype = jnp.result_type(float) if dtype is None else jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"dtype must be a real floating dtype, got {dtype}")
    return EllipsePhantom.from_table(jnp.asarray(MODIFIED_SHEPP_LOGAN, dtype), degrees=True)


def _check_size(n) -> tuple[int, int]:
    if _is_int(n):
        shape = (n, n)
    elif isinstance(n, (tuple, list)) and len(n) == 2 and all(_is_int(m) for m in n):
        shape = tuple(n)
    else:
        raise TypeError(f"n must be a positive int or a pair of positive ints (H, W), got {n!r}")
    if min(shape) <= 0:
        raise ValueError(f"n must be a positive int or a pair of positive ints (H, W), got {n!r}")
    return (int(shape[0]), int(shape[1]))


def shepp_logan(n: int | tuple[int, int], supersample: int = 1, dtype=None) -> Float[Array, "H W"]:
    r"""The modified Shepp-Logan phantom as an image with values in $[0, 1]$.

    `n` is the size of a square image or a pair `(H, W)` (the ellipses are stretched with the image
    rectangle, as in ODL). The image is `rasterize(shepp_logan_ellipses(), (H, W), supersample)`:
    pixel-centre samples, or the mean of a `supersample x supersample` sub-pixel grid (values in
    between the levels at edges), clipped to $[0, 1]$ to remove float rounding (in floating point
    $1 - 0.8 - 0.2 = -5.6 \cdot 10^{-17}$). Row 0 is the top of the head. At 400 x 400 it agrees with
    `skimage.data.shepp_logan_phantom()` (same table) on all but about 0.5 % of pixels (edges).

    Example:
        >>> img = shepp_logan(64)
        >>> img.shape, float(img.min()), float(img.max())
        ((64, 64), 0.0, 1.0)
    """
    shape = _check_size(n)
    supersample = _check_supersample(supersample)
    return jnp.clip(rasterize(shepp_logan_ellipses(dtype), shape, supersample), 0, 1)


