r"""2D fan-beam geometries: circular orbits with flat or curved detectors, and the per-view vector form.

Coordinates are those of `ParallelBeamGeometry` (and ASTRA's 2D volume): pixel centres at
$x = \mathrm{col} - (W-1)/2$, $y = (H-1)/2 - \mathrm{row}$, unit pixels, $y$ up. A fan-beam view is a
source point $S$ and a detector; the ray of bin $d$ is the line from $S$ through the bin's centre,
and its value is the line integral of the image along it (in pixel units).

**ASTRA mapping.** `FanBeamGeometry(shape, angles, D, source_origin, origin_detector, spacing)` with a
flat detector is ASTRA's `create_proj_geom('fanflat', spacing, D, angles, source_origin,
origin_detector)` on `create_vol_geom(H, W)`, angle for angle: at angle $\beta$ the source sits at
$R(\sin\beta, -\cos\beta)$ ($R$ = `source_origin`), the detector centre at
$D_{od}(-\sin\beta, \cos\beta)$ ($D_{od}$ = `origin_detector`) and bin $d$ at
$(d - (D-1)/2)\,\Delta\,(\cos\beta, \sin\beta)$ from the centre. At $\beta = 0$ the source is below
the image and the detector above it; the orbit turns counter-clockwise as $\beta$ grows. This is the
fan-beam analogue of the parallel convention: the central ray has direction $(-\sin\beta, \cos\beta)$
and the detector axis is $(\cos\beta, \sin\beta)$, as in `ParallelBeamGeometry`.
`FanBeamVecGeometry(shape, source, detector_centre, detector_u, D)` is ASTRA's `fanflat_vec` with rows
`(srcX, srcY, dX, dY, uX, uY)` = `(source, detector_centre, detector_u)`; `FanBeamGeometry.to_vec()`
gives the same vectors as ASTRA's `geom_2vec`.

**Validity.** Every ray is the full line through the source; this equals the ray from the source
only when the source lies outside the support of the (linearly interpolated) image, the disc of radius
$\rho = \sqrt{(H+1)^2 + (W+1)^2}/2$ (the circumscribed circle plus the half-pixel interpolation margin).
The constructors raise `ValueError` for a source inside it, non-positive distances or spacings,
non-finite values, an empty angle list, a curved detector whose fan reaches $\pm 90°$, or a flat
detector parallel to a ray through the image. A detector too small to see the whole image
(its fan misses part of the circumscribed circle, radius $\sqrt{H^2+W^2}/2$) is legal (region-of-interest
data) and gives a `UserWarning` instead. Checks run on concrete values; traced values are not checked.
"""

from __future__ import annotations

import math
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._exact import madd
from .geometry import _check_angles, _check_shape, _is_concrete

__all__ = ["FanBeamGeometry", "FanBeamVecGeometry"]

DETECTORS = ("flat", "curved")


def support_radius(shape) -> float:
    """Radius of the disc holding the interpolated image: $\\sqrt{(H+1)^2 + (W+1)^2}/2$."""
    return math.hypot(shape[0] + 1, shape[1] + 1) / 2


def _check_num_detectors(num_detectors) -> int:
    if isinstance(num_detectors, bool) or not isinstance(num_detectors, (int, np.integer)):
        raise TypeError(f"num_detectors must be an int, got {num_detectors!r}")
    if num_detectors <= 0:
        raise ValueError(f"num_detectors must be positive, got {num_detectors}")
    return int(num_detectors)


def _check_taps(adjoint_taps) -> int | None:
    if adjoint_taps is None:
        return None
    if isinstance(adjoint_taps, bool) or not isinstance(adjoint_taps, (int, np.integer)) or adjoint_taps < 1:
        raise ValueError(f"adjoint_taps must be a positive int or None, got {adjoint_taps!r}")
    return int(adjoint_taps)


def _float_array(a, name, dtype=None):
    a = jnp.asarray(a) if dtype is None else jnp.asarray(a, dtype)
    if not jnp.issubdtype(a.dtype, jnp.floating):
        a = a.astype(jnp.result_type(float))
    return a


def _concrete(*arrays) -> bool:
    return all(_is_concrete(a) for a in arrays)


def _check_scalar(a, name, positive):
    if a.ndim != 0:
        raise ValueError(f"{name} must be a scalar, got shape {a.shape}")
    if _is_concrete(a):
        v = float(a)
        if not math.isfinite(v):
            raise ValueError(f"{name} must be finite, got {v}")
        if positive and not v > 0:
            raise ValueError(f"{name} must be positive, got {v}")


# --- Adjoint tap bound --------------------------------------------------------------------------------
#
# The exact adjoint (fan_beam.py) gathers, for every pixel and view, the detector bins whose rays pass
# within one pixel of the pixel's centre along the ray's stepping axis. Their bin coordinates lie within
# max|grad t| of the bin coordinate t of the ray through the centre, t the detector coordinate (in bins)
# as a function of the point. For a point P, B = P - S:
#   flat:   t = cross(A, B) / cross(B, U),   |grad t| = |cross(A, U)| / (|B| |U|^2 sin^2 angle(B, U))
#   curved: t = (atan2(B.A_perp, B.A) - offset) / spacing,   |grad t| = 1 / (spacing |B|)
# We bound it over the support disc (radius rho): for a direction phi from the source, the nearest
# support point is at |B|_min(phi) = R cos(phi - phi0) - sqrt(rho^2 - R^2 sin^2(phi - phi0)).


def _tap_bound(src, a_vec, u_vec, curved: bool, shape) -> int:
    """Static number of detector bins one pixel gathers per view (NumPy, concrete values)."""
    src, a_vec, u_vec = (np.asarray(v, np.float64).reshape(-1, 2) for v in (src, a_vec, u_vec))
    rho = support_radius(shape)
    r = np.hypot(src[:, 0], src[:, 1])[:, None]
    alpha = np.arcsin(np.minimum(rho / r, 1.0))
    phi0 = np.arctan2(-src[:, 1], -src[:, 0])[:, None]
    rel = alpha * np.linspace(-1.0, 1.0, 1025)[None, :]
    b_min = r * np.cos(rel) - np.sqrt(np.maximum(rho**2 - (r * np.sin(rel)) ** 2, 0.0))
    b_min = np.maximum(b_min, 1e-12)
    if curved:
        rate = 1.0 / (np.abs(u_vec[:, :1]) * b_min)
    else:
        phi = phi0 + rel
        psi = np.arctan2(u_vec[:, 1], u_vec[:, 0])[:, None]
        cross_au = np.abs(a_vec[:, :1] * u_vec[:, 1:] - a_vec[:, 1:] * u_vec[:, :1])
        u2 = (u_vec**2).sum(1, keepdims=True)
        rate = cross_au / (b_min * u2 * np.maximum(np.sin(phi - psi) ** 2, 1e-300))
    width = 2.0 * float(np.max(rate)) * 1.01 + 1e-9
    return max(1, math.ceil(width))


def _tap_bound_jnp(src, a_vec, u_vec, curved: bool, shape) -> Array:
    """`_tap_bound` as a traceable jnp expression (for `eqx.error_if` checks on traced geometries)."""
    rho = support_radius(shape)
    r = jnp.hypot(src[:, 0], src[:, 1])[:, None]
    alpha = jnp.arcsin(jnp.minimum(rho / r, 1.0))
    phi0 = jnp.arctan2(-src[:, 1], -src[:, 0])[:, None]
    rel = alpha * jnp.linspace(-1.0, 1.0, 257, dtype=src.dtype)[None, :]
    b_min = jnp.maximum(r * jnp.cos(rel) - jnp.sqrt(jnp.maximum(rho**2 - (r * jnp.sin(rel)) ** 2, 0.0)), 1e-12)
    if curved:
        rate = 1.0 / (jnp.abs(u_vec[:, :1]) * b_min)
    else:
        psi = jnp.arctan2(u_vec[:, 1], u_vec[:, 0])[:, None]
        cross_au = jnp.abs(a_vec[:, :1] * u_vec[:, 1:] - a_vec[:, 1:] * u_vec[:, :1])
        u2 = jnp.sum(u_vec**2, 1, keepdims=True)
        rate = cross_au / (b_min * u2 * jnp.maximum(jnp.sin(phi0 + rel - psi) ** 2, 1e-30))
    return 2.0 * jnp.max(rate)


# --- Circular orbit ------------------------------------------------------------------------------------


class FanBeamGeometry(eqx.Module):
    r"""2D fan beam on a circular orbit, flat or curved (equiangular) detector.

    At angle $\beta$ the source is at $S = R(\sin\beta, -\cos\beta)$, $R$ = `source_origin`; the central
    ray has direction $c = (-\sin\beta, \cos\beta)$ and the detector axis is $u = (\cos\beta, \sin\beta)$.

    - `detector="flat"` (ASTRA `fanflat`): bin $d$ has centre
      $D_{od} c + \big((d - \tfrac{D-1}{2})\Delta + o\big) u$, $D_{od}$ = `origin_detector`, $\Delta$ =
      `detector_spacing` and $o$ = `detector_offset` in pixel units.
    - `detector="curved"`: the detector is an arc of radius $R + D_{od}$ about the source (equiangular
      bins); the ray of bin $d$ leaves the source at fan angle $\gamma_d = (d - \tfrac{D-1}{2})\Delta + o$
      from the central ray, direction $\cos\gamma_d\, c + \sin\gamma_d\, u$. Here **`detector_spacing`
      and `detector_offset` are angles in radians** (default spacing: $1/(R + D_{od})$, one pixel of arc).

    The flat bin at $t = (d - \tfrac{D-1}{2})\Delta + o$ has fan angle $\arctan(t/(R + D_{od}))$ in the
    same sense. `angles`, `source_origin`, `origin_detector`, `detector_spacing` and `detector_offset`
    are array leaves (traceable, vmappable, differentiable); `shape`, `num_detectors`, `detector` and
    `adjoint_taps` are static. `adjoint_taps` (computed from concrete distances; pass it when building
    the geometry from traced distances) bounds how many bins one pixel reads per view in the exact
    adjoint: about $2/(\text{ray spacing at the pixel nearest the source})$, so it grows as the source
    approaches the image (256 x 256, $\Delta = 1$: 7 for $R = 400, D_{od} = 300$; 73 for $R = 200$,
    just outside the image) and the adjoint's cost with it. It does not depend on the angles.

    `num_detectors` (may be `None`) defaults to the fewest bins that see the image's circumscribed circle.

    Example:
        >>> geom = FanBeamGeometry.uniform((64, 64), 90, source_origin=100.0, origin_detector=50.0)
        >>> geom.sinogram_shape
        (90, 153)
    """

    angles: Float[Array, " angles"]
    source_origin: Float[Array, ""]
    origin_detector: Float[Array, ""]
    detector_spacing: Float[Array, ""]
    detector_offset: Float[Array, ""]
    shape: tuple[int, int] = eqx.field(static=True)
    num_detectors: int = eqx.field(static=True)
    detector: str = eqx.field(static=True)
    adjoint_taps: int | None = eqx.field(static=True)

    def __init__(
        self,
        shape: tuple[int, int],
        angles,
        num_detectors: int | None,
        source_origin,
        origin_detector,
        detector_spacing=None,
        detector_offset=0.0,
        detector: str = "flat",
        adjoint_taps: int | None = None,
    ):
        shape = _check_shape(shape)
        if detector not in DETECTORS:
            raise ValueError(f"detector must be one of {DETECTORS}, got {detector!r}")
        angles = _check_angles(angles)
        dtype = angles.dtype
        source_origin = jnp.asarray(source_origin, dtype)
        origin_detector = jnp.asarray(origin_detector, dtype)
        _check_scalar(source_origin, "source_origin", positive=True)
        _check_scalar(origin_detector, "origin_detector", positive=True)
        if detector_spacing is None:
            detector_spacing = 1.0 if detector == "flat" else 1.0 / (source_origin + origin_detector)
        detector_spacing = jnp.asarray(detector_spacing, dtype)
        detector_offset = jnp.asarray(detector_offset, dtype)
        _check_scalar(detector_spacing, "detector_spacing", positive=True)
        _check_scalar(detector_offset, "detector_offset", positive=False)
        rho = support_radius(shape)
        distances_known = _concrete(source_origin, origin_detector, detector_spacing, detector_offset)
        if _is_concrete(source_origin) and not float(source_origin) > rho:
            raise ValueError(
                f"source_origin must exceed {rho:.4g}, the radius sqrt((H+1)^2+(W+1)^2)/2 of the disc holding "
                f"the {shape} image (its circumscribed circle plus the half-pixel interpolation margin); "
                f"got {float(source_origin)}"
            )
        if num_detectors is None:
            if not distances_known:
                raise ValueError("num_detectors must be given when the distances or spacing are traced")
            num_detectors = _default_num_detectors(
                shape, float(source_origin), float(origin_detector), float(detector_spacing),
                float(detector_offset), detector,
            )
        num_detectors = _check_num_detectors(num_detectors)
        self.angles = angles
        self.source_origin = source_origin
        self.origin_detector = origin_detector
        self.detector_spacing = detector_spacing
        self.detector_offset = detector_offset
        self.shape = shape
        self.num_detectors = num_detectors
        self.detector = detector
        adjoint_taps = _check_taps(adjoint_taps)
        if distances_known:
            gammas = np.asarray(self._fan_angles_np())
            edge = np.abs(gammas).max() + (0.0 if detector == "flat" else 0.5 * float(detector_spacing))
            if detector == "curved" and edge >= math.pi / 2:
                raise ValueError(
                    f"a curved detector's fan must stay within +-90 degrees of the central ray, got bins "
                    f"out to {math.degrees(edge):.1f} degrees"
                )
            _warn_if_truncated(shape, float(source_origin), self._fan_edges_np(), "FanBeamGeometry")
            if adjoint_taps is None:
                adjoint_taps = _tap_bound(*self._probe_vectors(), detector == "curved", shape)
        self.adjoint_taps = adjoint_taps

    @classmethod
    def uniform(
        cls,
        shape: tuple[int, int],
        num_angles: int,
        source_origin,
        origin_detector,
        num_detectors: int | None = None,
        detector_spacing=None,
        detector_offset=0.0,
        detector: str = "flat",
        scan: str = "full",
        dtype=None,
    ) -> FanBeamGeometry:
        r"""Equally spaced angles $\beta_k = k\,L/\text{num\_angles}$, $k = 0, \dots, \text{num\_angles}-1$.

        `scan="full"`: $L = 2\pi$. `scan="short"`: $L = \pi + 2\Gamma$, $\Gamma$ the half fan angle of
        the detector (to the outer edge of its outermost bin), the minimal range for exact
        reconstruction; `fbp` then applies Parker weights. Distances must be concrete for a short scan.

        Example:
            >>> g = FanBeamGeometry.uniform((32, 32), 60, 60.0, 40.0, scan="short")
            >>> bool(g.angles[-1] < jnp.pi + 2 * g.half_fan_angle())
            True
        """
        if isinstance(num_angles, bool) or not isinstance(num_angles, (int, np.integer)) or num_angles <= 0:
            raise ValueError(f"num_angles must be a positive int, got {num_angles!r}")
        if scan not in ("full", "short"):
            raise ValueError(f"scan must be 'full' or 'short', got {scan!r}")
        dtype = jnp.result_type(float) if dtype is None else dtype
        angles = jnp.arange(num_angles, dtype=dtype) * (2 * jnp.pi / num_angles)
        geom = cls(shape, angles, num_detectors, source_origin, origin_detector, detector_spacing,
                   detector_offset, detector)
        if scan == "short":
            if not _concrete(geom.source_origin, geom.origin_detector, geom.detector_spacing, geom.detector_offset):
                raise ValueError("scan='short' needs concrete distances and spacing (the range depends on them)")
            span = math.pi + 2 * float(geom.half_fan_angle())
            geom = geom.with_angles(jnp.arange(num_angles, dtype=dtype) * (span / num_angles))
        return geom

    def with_angles(self, angles) -> FanBeamGeometry:
        """The same source, detector and image with other angles (traceable)."""
        return FanBeamGeometry(
            self.shape, angles, self.num_detectors, self.source_origin, self.origin_detector,
            self.detector_spacing, self.detector_offset, self.detector, self.adjoint_taps,
        )

    @property
    def num_angles(self) -> int:
        return self.angles.shape[-1]

    @property
    def sinogram_shape(self) -> tuple[int, int]:
        return (self.num_angles, self.num_detectors)

    @property
    def source_detector(self) -> Array:
        """$R + D_{od}$, the source-to-detector distance along the central ray."""
        return self.source_origin + self.origin_detector

    def detector_coordinates(self) -> Float[Array, " detectors"]:
        r"""Bin centres along the detector: $(d - \tfrac{D-1}{2})\Delta + o$ (pixel units, or radians if curved)."""
        d = jnp.arange(self.num_detectors, dtype=self.angles.dtype)
        return (d - (self.num_detectors - 1) / 2) * self.detector_spacing + self.detector_offset

    def fan_angles(self) -> Float[Array, " detectors"]:
        r"""Fan angle $\gamma_d$ of each bin's ray from the central ray (radians, positive towards $u$)."""
        t = self.detector_coordinates()
        return t if self.detector == "curved" else jnp.arctan2(t, self.source_detector)

    def half_fan_angle(self) -> Array:
        r"""$\Gamma$: the largest $|\gamma|$ reached by the detector, out to its outermost bin's outer edge."""
        lo, hi = self._fan_edges()
        return jnp.maximum(jnp.abs(lo), jnp.abs(hi))

    def _fan_edges(self):
        half = self.num_detectors / 2
        t_lo = -half * self.detector_spacing + self.detector_offset
        t_hi = half * self.detector_spacing + self.detector_offset
        if self.detector == "curved":
            return t_lo, t_hi
        return jnp.arctan2(t_lo, self.source_detector), jnp.arctan2(t_hi, self.source_detector)

    def _fan_angles_np(self):
        return np.asarray(self.fan_angles())

    def _fan_edges_np(self):
        lo, hi = self._fan_edges()
        return float(lo), float(hi)

    def source_positions(self) -> Float[Array, "angles 2"]:
        r"""Source points $S_\beta = R(\sin\beta, -\cos\beta)$, shape `(num_angles, 2)`."""
        return self.source_origin * jnp.stack([jnp.sin(self.angles), -jnp.cos(self.angles)], -1)

    def ray_directions(self) -> Float[Array, "angles detectors 2"]:
        r"""Unit direction of every ray, $\cos\gamma_d\, c_\beta + \sin\gamma_d\, u_\beta$: `(num_angles, num_detectors, 2)`."""
        g = self.fan_angles()[None, :]
        b = self.angles[:, None]
        cg, sg = jnp.cos(g), jnp.sin(g)
        c = jnp.stack([-jnp.sin(b), jnp.cos(b)], -1)
        u = jnp.stack([jnp.cos(b), jnp.sin(b)], -1)
        return cg[..., None] * c + sg[..., None] * u

    def to_vec(self) -> FanBeamVecGeometry:
        """The flat-detector geometry as a `FanBeamVecGeometry` (ASTRA's `geom_2vec`, plus the offset).

        Raises `ValueError` for a curved detector, which has no flat vector form.
        """
        if self.detector != "flat":
            raise ValueError("to_vec needs a flat detector; a curved (equiangular) detector has no fanflat_vec form")
        src, a_vec, u_vec = self._kernel_vectors(self.angles)
        return FanBeamVecGeometry(self.shape, src, src + a_vec, u_vec, self.num_detectors,
                                  adjoint_taps=self.adjoint_taps)

    def _probe_vectors(self):
        """`_kernel_vectors` at angle 0, `(1, 2)` each: the adjoint's tap bound does not depend on the angle.

        NumPy when the distances are concrete (also inside `vmap`), jnp otherwise.
        """
        leaves = (self.source_origin, self.origin_detector, self.detector_spacing, self.detector_offset)
        xp = np if _concrete(*leaves) else jnp
        r, d_od, spacing, offset = (xp.asarray(v) for v in leaves)
        zero = xp.zeros_like(r)
        src = xp.stack([zero, -r])[None]
        if self.detector == "curved":
            return src, xp.stack([zero, zero + 1])[None], xp.stack([spacing, offset])[None]
        return src, xp.stack([offset, r + d_od])[None], xp.stack([spacing, zero])[None]

    def _kernel_vectors(self, angles):
        """Per-view `(source, A, U)` for the projector kernels (see `fan_beam.py`), each `(V, 2)`.

        Flat: A = detector centre - source, U = the vector from one bin to the next.
        Curved: A = the central ray's unit direction, U = (spacing, offset) in radians on every row.
        """
        # Products through `madd` (exact partial products): the kernels' positions are then computed with
        # the same bits in the forward and the adjoint program, whatever XLA fuses into FMAs (_exact.py).
        s, c = jnp.sin(angles), jnp.cos(angles)
        central = jnp.stack([-s, c], -1)
        axis = jnp.stack([c, s], -1)
        zero = jnp.zeros_like(axis)
        src = madd(zero, self.source_origin, jnp.stack([s, -c], -1))
        if self.detector == "curved":
            u_vec = jnp.broadcast_to(jnp.stack([self.detector_spacing, self.detector_offset]), src.shape)
            return src, central, u_vec
        a_vec = madd(madd(zero, self.source_detector, central), self.detector_offset, axis)
        return src, a_vec, self.detector_spacing * axis


def _default_num_detectors(shape, r, d_od, spacing, offset, detector) -> int:
    """Fewest bins whose fan covers the image's circumscribed circle (the detector shifted by `offset`)."""
    alpha = math.asin(min(1.0, math.hypot(*shape) / 2 / r))
    half = alpha if detector == "curved" else (r + d_od) * math.tan(alpha)
    return max(1, math.ceil(2 * (half + abs(offset)) / spacing))


def _user_stacklevel() -> int:
    """The `warnings.warn` stacklevel of the first caller outside jaxrecon.operators and equinox."""
    import sys

    frame, level = sys._getframe(1), 1
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if not (name.startswith("jaxrecon.operators") or name.startswith("equinox")):
            return level
        frame, level = frame.f_back, level + 1
    return 1


def _warn_if_truncated(shape, r, edges, name, view=None):
    alpha = math.asin(min(1.0, math.hypot(*shape) / 2 / r))
    lo, hi = edges
    if lo > -alpha * (1 - 1e-9) or hi < alpha * (1 - 1e-9):
        where = "" if view is None else f" in view {view}"
        warnings.warn(
            f"{name}: the detector covers fan angles [{math.degrees(lo):.2f}, {math.degrees(hi):.2f}] degrees"
            f"{where}, but the image's circumscribed circle needs [-{math.degrees(alpha):.2f}, "
            f"{math.degrees(alpha):.2f}]: projections are truncated",
            UserWarning,
            stacklevel=_user_stacklevel(),
        )


# --- General per-view geometry --------------------------------------------------------------------------


class FanBeamVecGeometry(eqx.Module):
    r"""2D fan beam with a flat detector placed freely in every view (ASTRA's `fanflat_vec`).

    View $v$ has its source at `source[v]`, its detector centre at `detector_centre[v]` and bin $d$ at
    `detector_centre[v] + (d - (D-1)/2) * detector_u[v]` (`detector_u`: the vector from one bin to the
    next, its length the bin spacing). Each ray is the line from the source through a bin centre. All
    three are `(num_angles, 2)` array leaves in pixel units; `shape`, `num_detectors` and
    `adjoint_taps` (see `FanBeamGeometry`) are static. The rows `(source, detector_centre, detector_u)`
    are ASTRA's `fanflat_vec` rows `(srcX, srcY, dX, dY, uX, uY)`.

    Example:
        >>> g = FanBeamGeometry.uniform((32, 32), 8, 60.0, 40.0).to_vec()
        >>> g.source.shape, g.sinogram_shape
        ((8, 2), (8, 82))
    """

    source: Float[Array, "angles 2"]
    detector_centre: Float[Array, "angles 2"]
    detector_u: Float[Array, "angles 2"]
    shape: tuple[int, int] = eqx.field(static=True)
    num_detectors: int = eqx.field(static=True)
    adjoint_taps: int | None = eqx.field(static=True)

    def __init__(self, shape, source, detector_centre, detector_u, num_detectors: int, adjoint_taps: int | None = None):
        shape = _check_shape(shape)
        num_detectors = _check_num_detectors(num_detectors)
        source = _float_array(source, "source")
        dtype = source.dtype
        detector_centre = jnp.asarray(detector_centre, dtype)
        detector_u = jnp.asarray(detector_u, dtype)
        for name, a in (("source", source), ("detector_centre", detector_centre), ("detector_u", detector_u)):
            if a.ndim != 2 or a.shape[1] != 2 or a.shape[0] == 0:
                raise ValueError(
                    f"{name} must have shape (num_angles, 2) with num_angles > 0, got {a.shape}; "
                    "to batch geometries, vmap the constructor"
                )
        if not source.shape == detector_centre.shape == detector_u.shape:
            raise ValueError(
                "source, detector_centre and detector_u must have the same number of views, got shapes "
                f"{source.shape}, {detector_centre.shape}, {detector_u.shape}"
            )
        adjoint_taps = _check_taps(adjoint_taps)
        if _concrete(source, detector_centre, detector_u):
            _check_vec_views(shape, np.asarray(source, np.float64), np.asarray(detector_centre, np.float64),
                             np.asarray(detector_u, np.float64), num_detectors)
            if adjoint_taps is None:
                adjoint_taps = _tap_bound(source, detector_centre - source, detector_u, False, shape)
        self.source = source
        self.detector_centre = detector_centre
        self.detector_u = detector_u
        self.shape = shape
        self.num_detectors = num_detectors
        self.adjoint_taps = adjoint_taps

    @classmethod
    def from_astra(cls, shape, vectors, num_detectors: int) -> FanBeamVecGeometry:
        """From ASTRA `fanflat_vec` vectors, shape `(num_angles, 6)`: `(srcX, srcY, dX, dY, uX, uY)` per row."""
        vectors = _float_array(vectors, "vectors")
        if vectors.ndim != 2 or vectors.shape[1] != 6:
            raise ValueError(f"vectors must have shape (num_angles, 6), got {vectors.shape}")
        return cls(shape, vectors[:, 0:2], vectors[:, 2:4], vectors[:, 4:6], num_detectors)

    def astra_vectors(self) -> Float[Array, "angles 6"]:
        """ASTRA `fanflat_vec` vectors `(srcX, srcY, dX, dY, uX, uY)`, shape `(num_angles, 6)`."""
        return jnp.concatenate([self.source, self.detector_centre, self.detector_u], axis=-1)

    @property
    def num_angles(self) -> int:
        return self.source.shape[-2]

    @property
    def sinogram_shape(self) -> tuple[int, int]:
        return (self.num_angles, self.num_detectors)

    def source_positions(self) -> Float[Array, "angles 2"]:
        return self.source

    def ray_directions(self) -> Float[Array, "angles detectors 2"]:
        """Unit direction of every ray, source to bin centre: `(num_angles, num_detectors, 2)`."""
        t = jnp.arange(self.num_detectors, dtype=self.source.dtype) - (self.num_detectors - 1) / 2
        r = (self.detector_centre - self.source)[:, None, :] + t[None, :, None] * self.detector_u[:, None, :]
        return r / jnp.linalg.norm(r, axis=-1, keepdims=True)

    def _kernel_vectors(self):
        return self.source, self.detector_centre - self.source, self.detector_u


def _check_vec_views(shape, src, centre, u_vec, num_detectors):
    if not (np.all(np.isfinite(src)) and np.all(np.isfinite(centre)) and np.all(np.isfinite(u_vec))):
        raise ValueError("source, detector_centre and detector_u must be finite, got non-finite values")
    rho = support_radius(shape)
    r = np.hypot(src[:, 0], src[:, 1])
    bad = np.flatnonzero(r <= rho)
    if bad.size:
        v = int(bad[0])
        raise ValueError(
            f"every source must lie outside the disc of radius {rho:.4g} holding the {shape} image "
            f"(sqrt((H+1)^2+(W+1)^2)/2); view {v} has its source at distance {r[v]:.4g} from the centre"
        )
    u_len = np.hypot(u_vec[:, 0], u_vec[:, 1])
    bad = np.flatnonzero(~(u_len > 0))
    if bad.size:
        raise ValueError(f"detector_u must be non-zero (the bin spacing), got zero in view {int(bad[0])}")
    a_vec = centre - src
    bad = np.flatnonzero(np.sum(a_vec * -src, axis=1) <= 0)
    if bad.size:
        raise ValueError(
            f"the detector must face the image: in view {int(bad[0])} the detector centre is not on the image's "
            "side of the source"
        )
    # The detector line must not be parallel to any ray through the image: the angle between detector_u
    # and the direction to the centre must exceed the image's half-angle seen from the source.
    alpha = np.arcsin(np.minimum(rho / r, 1.0))
    cos_u = np.abs(np.sum(u_vec * -src, axis=1)) / (u_len * r)
    delta = np.arccos(np.clip(cos_u, 0.0, 1.0))  # angle between the detector line and the direction to the centre
    bad = np.flatnonzero(delta <= alpha)
    if bad.size:
        v = int(bad[0])
        raise ValueError(
            f"detector_u in view {v} is parallel to a ray through the image (angle to the central direction "
            f"{math.degrees(delta[v]):.2f} degrees, image half-angle {math.degrees(alpha[v]):.2f})"
        )
    # Truncation: the bin coordinates of the rays tangent to the circumscribed circle.
    r0 = math.hypot(*shape) / 2
    alpha0 = np.arcsin(np.minimum(r0 / r, 1.0))
    phi0 = np.arctan2(-src[:, 1], -src[:, 0])
    half = num_detectors / 2
    for v in range(src.shape[0]):
        ts = []
        for sign in (-1.0, 1.0):
            b = np.array([np.cos(phi0[v] + sign * alpha0[v]), np.sin(phi0[v] + sign * alpha0[v])])
            cr = b[0] * u_vec[v, 1] - b[1] * u_vec[v, 0]
            ts.append((a_vec[v, 0] * b[1] - a_vec[v, 1] * b[0]) / cr)
        if min(ts) < -half * (1 + 1e-9) or max(ts) > half * (1 + 1e-9):
            warnings.warn(
                f"FanBeamVecGeometry: in view {v} the image's circumscribed circle projects onto bins "
                f"[{min(ts) + (num_detectors - 1) / 2:.1f}, {max(ts) + (num_detectors - 1) / 2:.1f}] of a "
                f"{num_detectors}-bin detector: projections are truncated",
                UserWarning,
                stacklevel=_user_stacklevel(),
            )
            break
