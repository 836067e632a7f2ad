r"""Ellipse phantoms: a pytree of ellipses, rasterisation, exact parallel-beam sinograms, random presets.

Coordinates (contract). An image has shape `(H, W)`, row 0 at the top. Pixel centres sit at
$x = \mathrm{col} - (W-1)/2$, $y = (H-1)/2 - \mathrm{row}$ (pixel units, $y$ up). Ellipse parameters
live in normalised coordinates $u = x/(W/2)$, $v = y/(H/2)$, so $[-1, 1]^2$ is the full image
rectangle $[-W/2, W/2] \times [-H/2, H/2]$ (as in ODL's `ellipsoid_phantom` and MATLAB's `phantom`).

The phantom is the function, supported on the image rectangle $\Omega$,

$$f(u, v) = \Big(\text{scale}\sum_k \text{value}_k\,\mathbf 1_{E_k}(u, v) + \text{offset}\Big)\,
\mathbf 1_\Omega(u, v),$$

$E_k = \{p : \|\mathrm{diag}(a_k, b_k)^{-1} R_{\phi_k}^\top (p - c_k)\| \le 1\}$ with $R_\phi$ the
counter-clockwise rotation by $\phi$. `rasterize` samples $f$ at pixel centres; `ellipse_sinogram`
integrates it exactly along the rays of a `ParallelBeamGeometry`, `FanBeamGeometry` or
`FanBeamVecGeometry`.
"""

from __future__ import annotations

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from jaxrecon.operators.fan_geometry import FanBeamGeometry, FanBeamVecGeometry
from jaxrecon.operators.geometry import ParallelBeamGeometry

__all__ = [
    "EllipsePhantom",
    "rasterize",
    "ellipse_sinogram",
    "random_ellipse_phantom",
    "random_ellipses",
    "PRESETS",
]


# --------------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------------


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _is_int(n) -> bool:
    return isinstance(n, (int, np.integer)) and not isinstance(n, bool)


def _check_shape(shape, name: str = "shape") -> tuple[int, int]:
    """Validate an image shape `(H, W)` of positive ints."""
    try:
        seq = tuple(shape)
    except TypeError:
        raise TypeError(f"{name} must be a pair of positive ints (H, W), got {shape!r}") from None
    if len(seq) != 2 or not all(_is_int(n) for n in seq):
        raise TypeError(f"{name} must be a pair of positive ints (H, W), got {shape!r}")
    if min(seq) <= 0:
        raise ValueError(f"{name} must be a pair of positive ints (H, W), got {tuple(int(n) for n in seq)}")
    return (int(seq[0]), int(seq[1]))


def _check_supersample(supersample) -> int:
    if not _is_int(supersample):
        raise TypeError(f"supersample must be a positive int, got {supersample!r}")
    if supersample <= 0:
        raise ValueError(f"supersample must be a positive int, got {supersample}")
    return int(supersample)


def _check_phantom(phantom) -> None:
    """Check leaf shapes at trace time (inside `vmap` the leaves are per-example)."""
    if not isinstance(phantom, EllipsePhantom):
        raise TypeError(f"expected an EllipsePhantom, got {type(phantom).__name__}")
    n = phantom.value.shape[0] if phantom.value.ndim == 1 else None
    expected = {
        "centre": (n, 2),
        "axes": (n, 2),
        "rotation": (n,),
        "value": (n,),
        "scale": (),
        "offset": (),
    }
    got = {k: tuple(getattr(phantom, k).shape) for k in expected}
    if n is None or got != expected:
        raise ValueError(
            "EllipsePhantom leaves must have shapes centre (n, 2), axes (n, 2), rotation (n,), value (n,), "
            f"scale (), offset (); got {got}. To map over a batch of phantoms, use jax.vmap."
        )


# --------------------------------------------------------------------------------------------------
# The phantom pytree
# --------------------------------------------------------------------------------------------------


class EllipsePhantom(eqx.Module):
    r"""A sum of $n$ constant-valued ellipses, in normalised coordinates $[-1, 1]^2$.

    The image is $\text{scale}\sum_k \text{value}_k \mathbf 1_{E_k} + \text{offset}$ on the image
    rectangle (zero outside it), where ellipse $k$ has centre $c_k = (u_k, v_k)$, semi-axes
    $(a_k, b_k)$ along its own $u$ and $v$ axes before rotation, and rotation $\phi_k$ (radians,
    counter-clockwise as displayed, since $v$ points up). A slot with `value == 0` is unused, so
    phantoms with different numbers of ellipses can share one shape and be vmapped over.

    Attributes:
        centre: `(n, 2)` centres $(u, v)$.
        axes: `(n, 2)` semi-axes $(a, b)$, non-negative (checked when concrete; traced negative values
            act as $|a|$); a zero axis gives an empty ellipse.
        rotation: `(n,)` rotations in radians.
        value: `(n,)` additive intensities.
        scale, offset: scalars of the affine map applied to the sum (e.g. to normalise to [0, 1]).

    All six are array leaves (differentiable, vmappable). The constructor validates shapes; a batch
    of phantoms is built with `jax.vmap` (e.g. `jax.vmap(random_ellipse_phantom, (0, None))`) or by
    vmapping the constructor, never by passing batched arrays to it.

    Example:
        >>> disk = EllipsePhantom(centre=[[0.0, 0.0]], axes=[[0.5, 0.5]], rotation=[0.0], value=[1.0])
        >>> rasterize(disk, (8, 8)).shape
        (8, 8)
    """

    centre: Float[Array, "n 2"]
    axes: Float[Array, "n 2"]
    rotation: Float[Array, " n"]
    value: Float[Array, " n"]
    scale: Float[Array, ""]
    offset: Float[Array, ""]

    def __init__(self, centre, axes, rotation, value, scale=1.0, offset=0.0):
        leaves = [jnp.asarray(a) for a in (centre, axes, rotation, value, scale, offset)]
        for name, a in zip(("centre", "axes", "rotation", "value", "scale", "offset"), leaves):
            if not (jnp.issubdtype(a.dtype, jnp.floating) or jnp.issubdtype(a.dtype, jnp.integer)
                    or a.dtype == jnp.bool_):
                raise TypeError(f"EllipsePhantom.{name} must be real numbers, got dtype {a.dtype}")
        dtype = jnp.result_type(*leaves)
        if not jnp.issubdtype(dtype, jnp.floating):
            dtype = jnp.result_type(float)
        centre, axes, rotation, value, scale, offset = (a.astype(dtype) for a in leaves)
        if value.ndim != 1:
            raise ValueError(
                f"EllipsePhantom.value must have shape (n,), got {value.shape}; "
                "to build a batch of phantoms, vmap the constructor"
            )
        n = value.shape[0]
        for name, a, want in (("centre", centre, (n, 2)), ("axes", axes, (n, 2)), ("rotation", rotation, (n,)),
                              ("scale", scale, ()), ("offset", offset, ())):
            if a.shape != want:
                raise ValueError(f"EllipsePhantom.{name} must have shape {want} (n = {n} ellipses), got {a.shape}")
        if all(_is_concrete(a) for a in (centre, axes, rotation, value, scale, offset)):
            if not all(bool(jnp.all(jnp.isfinite(a))) for a in (centre, axes, rotation, value, scale, offset)):
                raise ValueError("EllipsePhantom parameters must be finite, got non-finite values")
            if n and float(jnp.min(axes)) < 0:
                raise ValueError(f"EllipsePhantom.axes must be non-negative, got min {float(jnp.min(axes))}")
        self.centre = centre
        self.axes = axes
        self.rotation = rotation
        self.value = value
        self.scale = scale
        self.offset = offset

    @classmethod
    def from_table(cls, table, *, degrees: bool = False, scale=1.0, offset=0.0) -> EllipsePhantom:
        r"""Build from rows `(value, a, b, u0, v0, phi)` (ODL's `ellipsoid_phantom` layout).

        `phi` is in radians, or degrees with `degrees=True`. `table` has shape `(n, 6)`.

        Example:
            >>> EllipsePhantom.from_table([[1.0, 0.5, 0.3, 0.1, 0.0, 30.0]], degrees=True).num_ellipses
            1
        """
        table = jnp.asarray(table)
        if table.ndim != 2 or table.shape[1] != 6:
            raise ValueError(f"table must have shape (n, 6) with rows (value, a, b, u0, v0, phi), got {table.shape}")
        if not jnp.issubdtype(table.dtype, jnp.floating):
            table = table.astype(jnp.result_type(float))
        rotation = jnp.deg2rad(table[:, 5]) if degrees else table[:, 5]
        return cls(table[:, 3:5], table[:, 1:3], rotation, table[:, 0], scale, offset)

    @property
    def num_ellipses(self) -> int:
        """Number of slots $n$ (including unused, zero-valued ones)."""
        return self.value.shape[-1]


# --------------------------------------------------------------------------------------------------
# Rasterisation
# --------------------------------------------------------------------------------------------------


def _sample_coords(num: int, supersample: int, dtype) -> Array:
    """Normalised coordinates of the `num * supersample` sub-pixel samples along one axis.

    Sample `j` of pixel `i` sits at pixel coordinate `i - (num-1)/2 + (j + 1/2)/k - 1/2`, divided by
    `num/2`. Increasing index = increasing coordinate (the caller flips rows for `y`).
    """
    i = jnp.arange(num, dtype=dtype)[:, None]
    j = jnp.arange(supersample, dtype=dtype)[None, :]
    x = i - (num - 1) / 2 + (j + 0.5) / supersample - 0.5
    return (x / (num / 2)).reshape(-1)


@functools.partial(jax.jit, static_argnames=("shape", "supersample"))
def _rasterize(phantom: EllipsePhantom, shape: tuple[int, int], supersample: int) -> Array:
    H, W = shape
    k = supersample
    dtype = phantom.value.dtype
    u = _sample_coords(W, k, dtype)[None, :]  # (1, W k), left to right
    v = -_sample_coords(H, k, dtype)[:, None]  # (H k, 1), top to bottom: v decreasing

    def add_ellipse(img, ellipse):
        (cu, cv), (a, b), phi, val = ellipse
        du, dv = u - cu, v - cv
        cos, sin = jnp.cos(phi), jnp.sin(phi)
        p = du * cos + dv * sin  # coordinate along the ellipse's own first axis
        q = -du * sin + dv * cos  # ... and its second axis
        # (p/a)^2 + (q/b)^2 <= 1, multiplied out so that a zero axis gives an empty ellipse.
        inside = ((p * b) ** 2 + (q * a) ** 2 <= (a * b) ** 2) & (a * b != 0)
        return img + jnp.where(inside, val, jnp.zeros((), dtype)), None

    img = jnp.zeros((H * k, W * k), dtype)
    img, _ = jax.lax.scan(add_ellipse, img, (phantom.centre, phantom.axes, phantom.rotation, phantom.value))
    img = img.reshape(H, k, W, k).mean(axis=(1, 3))
    return phantom.scale * img + phantom.offset


def rasterize(phantom: EllipsePhantom, shape: tuple[int, int], supersample: int = 1) -> Float[Array, "H W"]:
    r"""Sample the phantom at pixel centres: `(H, W)` image.

    Pixel `(row, col)` gets $\text{scale}\sum_k \text{value}_k \mathbf 1_{E_k}(u, v) + \text{offset}$
    at $u = (\mathrm{col} - (W-1)/2)/(W/2)$, $v = ((H-1)/2 - \mathrm{row})/(H/2)$. With
    `supersample=k` the value is the mean over a regular $k \times k$ grid of sub-pixel samples (an
    approximation of the pixel average). Points on an ellipse's boundary count as inside.

    Pure `jnp` (a `lax.scan` over ellipses, memory $O(HWk^2)$); `shape` and `supersample` are static
    under `jit`; vmappable over phantoms. The dtype is that of the phantom's leaves.

    Example:
        >>> img = rasterize(EllipsePhantom([[0.0, 0.5]], [[0.3, 0.3]], [0.0], [1.0]), (16, 16))
        >>> bool(img[3, 8] == 1.0), bool(img[12, 8] == 0.0)  # disk in the upper half
        (True, True)
    """
    shape = _check_shape(shape)
    supersample = _check_supersample(supersample)
    _check_phantom(phantom)
    return _rasterize(phantom, shape, supersample)


# --------------------------------------------------------------------------------------------------
# Exact sinograms
# --------------------------------------------------------------------------------------------------


def _safe_sqrt(x: Array) -> Array:
    """`sqrt(max(x, 0))` with gradient 0 (instead of inf/nan) where `x <= 0`."""
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1)), 0)


def _slab(p: Array, e: Array, half: float, big: float, tiny: float) -> tuple[Array, Array]:
    """Parameter interval `{t : |p + t e| <= half}` (clamped to `[-big, big]`)."""
    parallel = jnp.abs(e) <= tiny
    e_safe = jnp.where(parallel, 1, e)
    t1, t2 = (-half - p) / e_safe, (half - p) / e_safe
    lo = jnp.where(parallel, jnp.where(jnp.abs(p) <= half, -big, big), jnp.minimum(t1, t2))
    hi = jnp.where(parallel, jnp.where(jnp.abs(p) <= half, big, -big), jnp.maximum(t1, t2))
    return jnp.clip(lo, -big, big), jnp.clip(hi, -big, big)


@functools.partial(jax.jit, static_argnames=("clip_to_image",))
def _ellipse_sinogram(phantom: EllipsePhantom, geom: ParallelBeamGeometry, clip_to_image: bool) -> Array:
    dtype = jnp.result_type(phantom.value, geom.angles)
    theta = geom.angles.astype(dtype)[:, None]  # (A, 1)
    s = geom.detector_positions().astype(dtype)[None, :]  # (1, D)
    cos, sin = jnp.cos(theta), jnp.sin(theta)  # n = (cos, sin), e = (-sin, cos)
    return _line_integrals(phantom, geom.shape, cos, sin, s, clip_to_image, dtype)


@functools.partial(jax.jit, static_argnames=("clip_to_image",))
def _fan_ellipse_sinogram(phantom: EllipsePhantom, geom, clip_to_image: bool) -> Array:
    # Every fan ray is a line {z : n.z = s}: n = (e_y, -e_x) for its unit direction e (so e = (-sin, cos)
    # as in the parallel case) and s = n.S. The source lies outside the image's circumscribed circle
    # (the geometries check it), so the line integral over the image is the ray's.
    dtype = jnp.result_type(phantom.value, *jax.tree_util.tree_leaves(geom))
    src = geom.source_positions().astype(dtype)[:, None, :]  # (A, 1, 2)
    e = geom.ray_directions().astype(dtype)  # (A, D, 2)
    cos, sin = e[..., 1], -e[..., 0]
    s = cos * src[..., 0] + sin * src[..., 1]
    return _line_integrals(phantom, geom.shape, cos, sin, s, clip_to_image, dtype)


def _line_integrals(phantom: EllipsePhantom, shape, cos, sin, s, clip_to_image: bool, dtype) -> Array:
    """Integrals of the phantom along the lines {z : z.(cos, sin) = s} (broadcastable arrays), pixel units."""
    H, W = shape
    # The ray z(t) = s n + t e against the image rectangle [-W/2, W/2] x [-H/2, H/2].
    big = float(H + W)  # longer than any chord through the rectangle
    tiny = float(jnp.finfo(dtype).eps) * 1e-2
    xlo, xhi = _slab(s * cos, -sin, W / 2, big, tiny)
    ylo, yhi = _slab(s * sin, cos, H / 2, big, tiny)
    r_lo, r_hi = jnp.maximum(xlo, ylo), jnp.minimum(xhi, yhi)  # (A, D)
    rect_chord = jnp.maximum(r_hi - r_lo, 0)

    half_w, half_h = W / 2, H / 2

    def add_ellipse(sino, ellipse):
        (cu, cv), (a, b), phi, val = ellipse
        a, b = jnp.abs(a), jnp.abs(b)
        cx, cy = cu * half_w, cv * half_h  # centre in pixel units
        # In pixel units the ellipse is {z : (z - c)^T M^{-1} (z - c) <= 1}, M = S R diag(a^2, b^2) R^T S,
        # S = diag(W/2, H/2), area pi * sqrt(det M) = pi * a b W H / 4. Columns of S R diag(a, b) are
        # its conjugate semi-diameters g1, g2, and M = g1 g1^T + g2 g2^T.
        cphi, sphi = jnp.cos(phi), jnp.sin(phi)
        g1x, g1y = a * cphi * half_w, a * sphi * half_h
        g2x, g2y = -b * sphi * half_w, b * cphi * half_h
        root_det = a * b * half_w * half_h
        # h^2 = n^T M n (squared support function), g = e^T M n, both (A, 1).
        n_g1, n_g2 = cos * g1x + sin * g1y, cos * g2x + sin * g2y
        e_g1, e_g2 = -sin * g1x + cos * g1y, -sin * g2x + cos * g2y
        h2 = n_g1**2 + n_g2**2
        g = e_g1 * n_g1 + e_g2 * n_g2
        h2_safe = jnp.where(h2 > 0, h2, 1)
        # Along the ray, with s' = s - n.c: chord 2 sqrt(det M) sqrt(h^2 - s'^2) / h^2, centred at
        # t_c = e.c + s' g / h^2 (the chord midpoints lie on the conjugate diameter through c along M n).
        # This equals 2 sqrt(beta^2 - alpha gamma) / alpha for alpha t^2 + 2 beta t + gamma = 0, the
        # quadratic form of the ellipse along the ray.
        sp = s - (cos * cx + sin * cy)
        half_chord = root_det * _safe_sqrt(h2 - sp**2) / h2_safe  # (A, D)
        t_c = (-sin * cx + cos * cy) + sp * g / h2_safe
        if clip_to_image:
            length = jnp.maximum(jnp.minimum(t_c + half_chord, r_hi) - jnp.maximum(t_c - half_chord, r_lo), 0)
        else:
            length = 2 * half_chord
        return sino + val * length, None

    sino = jnp.zeros(jnp.broadcast_shapes(cos.shape, s.shape), dtype)
    sino, _ = jax.lax.scan(add_ellipse, sino, (phantom.centre, phantom.axes, phantom.rotation, phantom.value))
    return phantom.scale * sino + phantom.offset * rect_chord


def ellipse_sinogram(
    phantom: EllipsePhantom,
    geom: ParallelBeamGeometry | FanBeamGeometry | FanBeamVecGeometry,
    *,
    clip_to_image: bool = True,
) -> Float[Array, "angles detectors"]:
    r"""Exact line integrals of an ellipse phantom along the rays of a geometry: `(num_angles, num_detectors)`.

    For angle $\theta$ and detector position $s$ (`geom.angles`, `geom.detector_positions()`) the
    ray is $z(t) = s\,n + t\,e$, $n = (\cos\theta, \sin\theta)$, $e = (-\sin\theta, \cos\theta)$, in
    pixel coordinates of the image `geom.shape = (H, W)` (ASTRA's convention, unit pixel length).
    Each ellipse, mapped to pixel units, is $\{z : (z - c)^\top Q (z - c) \le 1\}$; along the ray this
    is $\alpha t^2 + 2\beta t + \gamma \le 0$, a chord of length $2\sqrt{\beta^2 - \alpha\gamma}/\alpha$
    (0 if negative), computed in the equivalent closed form
    $2\sqrt{\det Q^{-1}}\,\sqrt{h^2 - s'^2}/h^2$, $h^2 = n^\top Q^{-1} n$, $s' = s - n\cdot c$,
    which also handles zero axes. The result is

    $$p(\theta, s) = \text{scale}\sum_k \text{value}_k\,|\text{ray} \cap E_k \cap \Omega|
    + \text{offset}\,|\text{ray} \cap \Omega|,$$

    $\Omega = [-W/2, W/2] \times [-H/2, H/2]$ the image rectangle, i.e. the exact Radon transform of
    the function that `rasterize` samples (no inverse crime). With `clip_to_image=False` the ellipse
    chords are not clipped to $\Omega$ (the projection of the full ellipses; identical when every
    ellipse lies inside the image). The offset term is always clipped.

    **Fan beam** (`FanBeamGeometry`, flat or curved, and `FanBeamVecGeometry`): every ray, from the
    source through a bin centre, is the line $n\cdot z = s$ with $n = (e_y, -e_x)$ for its unit
    direction $e$ and $s = n\cdot S$; the same closed form gives its exact integral (the geometries keep
    the source outside the image's circumscribed circle, so the line and the ray agree on the image).

    Differentiable in `phantom` and in the geometry's array leaves (`angles`, `detector_spacing`,
    `detector_offset`, and the fan distances or vectors); a safe square root keeps gradients finite at
    tangent rays. Vmappable over phantoms and over geometries. dtype: the promotion of the phantom's
    and the geometry's dtypes.

    Example:
        >>> geom = ParallelBeamGeometry.uniform((32, 32), num_angles=4, num_detectors=45)
        >>> disk = EllipsePhantom([[0.0, 0.0]], [[0.5, 0.5]], [0.0], [1.0])  # radius 8 pixels
        >>> sino = ellipse_sinogram(disk, geom)
        >>> sino.shape, round(float(sino[0, 22]), 4)  # central ray: the diameter
        ((4, 45), 16.0)
    """
    _check_phantom(phantom)
    if not isinstance(geom, (ParallelBeamGeometry, FanBeamGeometry, FanBeamVecGeometry)):
        raise TypeError(
            f"geom must be a ParallelBeamGeometry, got {type(geom).__name__} "
            "(or a fan-beam FanBeamGeometry or FanBeamVecGeometry)"
        )
    if isinstance(geom, FanBeamVecGeometry):
        if geom.source.ndim != 2:
            raise ValueError(
                f"geom.source must have shape (num_angles, 2), got {geom.source.shape}; "
                "to map over a batch of geometries, use jax.vmap"
            )
    elif geom.angles.ndim != 1:
        raise ValueError(
            f"geom.angles must have shape (num_angles,), got {geom.angles.shape}; "
            "to map over a batch of geometries, use jax.vmap"
        )
    if not isinstance(clip_to_image, bool):
        raise TypeError(f"clip_to_image must be a bool, got {clip_to_image!r}")
    if isinstance(geom, ParallelBeamGeometry):
        return _ellipse_sinogram(phantom, geom, clip_to_image)
    return _fan_ellipse_sinogram(phantom, geom, clip_to_image)


# --------------------------------------------------------------------------------------------------
# Random presets
# --------------------------------------------------------------------------------------------------


def _uniforms(key: PRNGKeyArray, lam: float, max_n: int, dtype) -> tuple[Array, Array]:
    """A count ~ Poisson(lam) clipped to [0, max_n], and a (max_n, 7) array of U[0, 1) draws.

    One `uniform` call for all parameters (instead of one per parameter) keeps compile time down.
    """
    k_count, k_params = jax.random.split(key)
    count = jnp.clip(jax.random.poisson(k_count, lam), 0, max_n)
    return count, jax.random.uniform(k_params, (max_n, 7), dtype)


def _exponential(u: Array) -> Array:
    """Exp(1) by inversion, `-log(1 - U)` (as `jax.random.exponential`)."""
    return -jnp.log1p(-u)


def _adler2018(key: PRNGKeyArray, dtype) -> EllipsePhantom:
    """Adler & Öktem (2017/2018): Poisson(50) ellipses, value (U - 1/2) Exp(0.4), axes 0.2 Exp(1)."""
    max_n = 100
    count, u = _uniforms(key, 50.0, max_n, dtype)
    value = (u[:, 0] - 0.5) * (0.4 * _exponential(u[:, 1]))
    axes = 0.2 * _exponential(u[:, 2:4])
    centre = 2 * u[:, 4:6] - 1
    rotation = 2 * math.pi * u[:, 6]
    value = jnp.where(jnp.arange(max_n) < count, value, 0)
    return EllipsePhantom(centre, axes, rotation, value)


def _dival(key: PRNGKeyArray, dtype) -> EllipsePhantom:
    """DIVal's `EllipsesDataset`: min(Poisson(40), 70) ellipses, value U(-0.4, 1), axes 0.2 Exp(1)."""
    max_n = 70
    count, u = _uniforms(key, 40.0, max_n, dtype)
    value = 1.4 * u[:, 0] - 0.4
    axes = 0.2 * _exponential(u[:, 2:4])
    centre = 1.8 * u[:, 4:6] - 0.9
    rotation = 2 * math.pi * u[:, 6]
    value = jnp.where(jnp.arange(max_n) < count, value, 0)
    return EllipsePhantom(centre, axes, rotation, value)


def _normalise(phantom: EllipsePhantom, shape: tuple[int, int]) -> EllipsePhantom:
    """Set scale/offset so the pixel-centre rasterisation at `shape` spans exactly [0, 1]."""
    img = _rasterize(phantom, shape, 1)
    lo, hi = jnp.min(img), jnp.max(img)
    spread = hi - lo
    scale = jnp.where(spread > 0, 1 / jnp.where(spread > 0, spread, 1), 1)
    return eqx.tree_at(lambda p: (p.scale, p.offset), phantom, (scale, -lo * scale))


#: Preset name -> (sampler, maximum number of ellipses, whether normalised to [0, 1]).
PRESETS = {
    "adler2018": (_adler2018, 100, False),
    "dival": (_dival, 70, True),
}


def _check_key(key) -> None:
    if not hasattr(key, "dtype") or not hasattr(key, "shape"):
        raise TypeError(f"key must be a JAX PRNG key (jax.random.key or jax.random.PRNGKey), got {type(key).__name__}")
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        ok = key.shape == ()
    else:
        ok = key.dtype == jnp.uint32 and key.ndim == 1
    if not ok:
        raise ValueError(
            "key must be a single PRNG key (a typed key of shape () or a raw uint32 key of shape (2,)), "
            f"got dtype {key.dtype} and shape {key.shape}; to draw a batch, jax.vmap over keys"
        )


def random_ellipse_phantom(
    key: PRNGKeyArray, shape: tuple[int, int], preset: str = "adler2018", *, dtype=None
) -> EllipsePhantom:
    r"""Draw one random ellipse phantom (parameters in normalised coordinates).

    Presets (a fixed maximum number of slots; unused slots have value 0; $U$ uniform on $[0, 1]$):

    - `"adler2018"` (Adler & Öktem, learned primal-dual / learned gradient schemes): $N \sim
      \mathrm{Poisson}(50)$ clipped to 100 slots, value $(U - 1/2)\,X$, $X \sim \mathrm{Exp}$ with
      scale 0.4, semi-axes $0.2\,\mathrm{Exp}(1)$ each, centre $U(-1, 1)^2$, rotation
      $U(0, 2\pi)$; scale 1, offset 0.
    - `"dival"` (DIVal's `EllipsesDataset`): $N = \min(\mathrm{Poisson}(40), 70)$, value
      $U(-0.4, 1)$, semi-axes $0.2\,\mathrm{Exp}(1)$, centre $U(-0.9, 0.9)^2$, rotation
      $U(0, 2\pi)$; then affinely normalised so that `rasterize(p, shape)` spans exactly $[0, 1]$
      (`scale = 1/(max - min)`, `offset = -min/(max - min)`; scale 1 and offset $-\min$ if the image is
      constant). Note: DIVal shifts only the non-zero pixels (keeping the background at 0), which is
      not an affine map of the ellipse sum and has no exact sinogram; here the background becomes
      `offset`, which is 0 whenever the unnormalised image has no negative pixels.

    `shape = (H, W)` only enters through the `"dival"` normalisation (and validation): the same key
    gives the same ellipses at every resolution. Deterministic given the key; vmap over keys for a
    batch. `dtype` defaults to JAX's default float dtype.

    Example:
        >>> keys = jax.random.split(jax.random.key(0), 3)
        >>> batch = jax.vmap(lambda k: random_ellipse_phantom(k, (64, 64)))(keys)
        >>> batch.value.shape
        (3, 100)
    """
    shape = _check_shape(shape)
    _check_key(key)
    if not isinstance(preset, str) or preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    dtype = jnp.result_type(float) if dtype is None else jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"dtype must be a real floating dtype, got {dtype}")
    normalised = PRESETS[preset][2]
    # `shape` only matters for normalised presets: don't recompile per shape for the others.
    return _random_ellipse_phantom(key, shape if normalised else None, preset, dtype)


@functools.partial(jax.jit, static_argnames=("shape", "preset", "dtype"))
def _random_ellipse_phantom(key: PRNGKeyArray, shape: tuple[int, int] | None, preset: str, dtype) -> EllipsePhantom:
    sampler, _, normalised = PRESETS[preset]
    phantom = sampler(key, dtype)
    if normalised:
        phantom = _normalise(phantom, shape)
    return phantom


def random_ellipses(
    key: PRNGKeyArray, shape: tuple[int, int], preset: str = "adler2018", *, dtype=None
) -> Float[Array, "H W"]:
    r"""One random ellipse image: `rasterize(random_ellipse_phantom(key, shape, preset), shape)`.

    See `random_ellipse_phantom` for the presets. Pixel-centre sampling (`supersample=1`); for a
    supersampled image or the exact sinogram, draw the phantom and call `rasterize` /
    `ellipse_sinogram` on it. For the normalised `"dival"` preset the min-max map is re-applied to
    the rasterised image (a change of a few ulps: `scale * img + offset` hits 0 and 1 only up to
    rounding), so its minimum is exactly 0 and its maximum exactly 1. Vmappable over keys.

    Example:
        >>> img = random_ellipses(jax.random.key(0), (64, 64), "dival")
        >>> img.shape, float(img.min()), float(img.max())
        ((64, 64), 0.0, 1.0)
    """
    shape = _check_shape(shape)
    img = rasterize(random_ellipse_phantom(key, shape, preset, dtype=dtype), shape)
    if PRESETS[preset][2]:
        # scale * img + offset spans [0, 1] only up to rounding (XLA may fuse it into an FMA);
        # re-apply the min-max map to the image so that its min is exactly 0 and its max exactly 1.
        lo, hi = jnp.min(img), jnp.max(img)
        spread = hi - lo
        img = (img - lo) / jnp.where(spread > 0, spread, 1)
    return img
