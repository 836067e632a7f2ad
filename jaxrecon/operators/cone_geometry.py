r"""3D cone-beam geometries: circular and helical orbits with a flat detector, and the general per-view vector form.

**Coordinates** (ASTRA's 3D volume, as we read its documentation: rows along $y$, columns along $x$,
slices along $z$, the volume centred on the origin, unit voxels). A volume has shape `(Z, Y, X)`;
voxel `(k, i, j)` has its centre at

$$ x = j - \tfrac{X-1}{2},\quad y = i - \tfrac{Y-1}{2},\quad z = k - \tfrac{Z-1}{2}. $$

(Unlike the 2D geometries, whose row 0 is at the top, $y$ here grows with the row index, which is what
ASTRA's 3D volumes do as far as we know; ASTRA is not installed here, so the mapping is checked
against our own analytic projections only, not against ASTRA.)

**Views** (ASTRA's `cone_vec`). View $v$ has a source $S$, a detector centre $D$ and two detector
vectors: $u$ from pixel `(r, c)` to `(r, c + 1)` and $v$ from `(r, c)` to `(r + 1, c)` (their lengths are
the pixel spacings). Detector pixel `(r, c)` of an `(R, C)` detector has its centre at

$$ P_{rc} = D + \big(c - \tfrac{C-1}{2}\big)\,u + \big(r - \tfrac{R-1}{2}\big)\,v, $$

and projection `(v, r, c)` is the line integral (voxel units) of the volume along the line through $S$
and $P_{rc}$. An ASTRA `cone_vec` row `(srcX, srcY, srcZ, dX, dY, dZ, uX, uY, uZ, vX, vY, vZ)` is
`(S, D, u, v)`. ASTRA stores 3D projections as `(rows, views, cols)`; jaxrecon as `(views, rows, cols)`:
``ours = np.transpose(astra, (1, 0, 2))``.

**Circular orbit** (ASTRA's `cone`). At angle $\beta$ (rotation about $z$):

$$ S = R_{so}(\sin\beta, -\cos\beta, 0),\quad D = R_{od}(-\sin\beta, \cos\beta, 0) + o_c \hat u + o_r \hat v,
   \quad u = \Delta_c(\cos\beta, \sin\beta, 0),\quad v = (0, 0, \Delta_r), $$

$R_{so}$ = `source_origin`, $R_{od}$ = `origin_detector`, $(\Delta_r, \Delta_c)$ = `det_spacing`,
$(o_r, o_c)$ = `det_offset` (voxel units; ASTRA's `cone` has no offset, so with zero offset this is
`astra.create_proj_geom('cone', Δc, Δr, R, C, angles, R_so, R_od)` on
`astra.create_vol_geom(Y, X, Z)`, whose `geom_2vec` gives the same vectors). The source plane $z = 0$
is the 2D `FanBeamGeometry` orbit of the same angles: for odd `Z` and odd `rows` (zero row offset) the
central detector row of `project(x, cone)` is `project(x[Z // 2, ::-1, :], fan)` (rows flipped: 2D $y$
points up), to rounding (tested).

**Helical orbit** (`HelicalConeBeamGeometry`, ASTRA `cone_vec`). The circular orbit's vectors with the
source and the detector centre both moved along $z$ by the view's table position
$z_v = z_\text{start} + \text{pitch}\,\beta_v/(2\pi)$ (or per-view `z_positions`); pitch 0 is the
circular orbit, bit for bit (tested).

**Validity.** Each ray is the full line through $S$ and $P_{rc}$; this is the ray from the source only
if the line meets the volume's support (the box of half-sizes $(X+1)/2, (Y+1)/2, (Z+1)/2$: the voxels
plus the trilinear interpolation margin) on the detector's side of the source. The constructors raise
`ValueError` (naming the parameter and value) for non-positive distances or spacings, non-finite
values, an empty angle list, or a source not clear of the support (circular orbit: `source_origin` must
exceed $\sqrt{(X+1)^2 + (Y+1)^2}/2$; vector form: the whole box and the detector must lie ahead of the
source in the direction of the volume's centre, or of the $z$ axis (horizontally: a source far along $z$
past a tall volume), a sufficient condition checked on corners only). A detector too small to
see the whole volume (the projection of its box is not inside the detector) is legal
(region-of-interest data) and gives a `UserWarning`. Checks run on concrete values; traced values are
not checked.
"""

from __future__ import annotations

import math
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .fan_geometry import _tap_bound, _tap_bound_jnp, _user_stacklevel
from .geometry import _check_angles, _is_concrete

__all__ = ["ConeBeamGeometry", "ConeBeamVecGeometry", "HelicalConeBeamGeometry"]

_MAX_TAPS = 64  # beyond this (a source almost touching the volume) the scatter adjoint is used


def _check_ints(value, name, n) -> tuple[int, ...]:
    try:
        value = tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be a tuple of {n} positive ints, got {value!r}") from None
    if len(value) != n or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in value):
        raise TypeError(f"{name} must be a tuple of {n} positive ints, got {value!r}")
    if any(v <= 0 for v in value):
        raise ValueError(f"{name} must be a tuple of {n} positive ints, got {value!r}")
    return tuple(int(v) for v in value)


def _view_arrays(**arrays) -> dict:
    """Per-view `(V, 3)` float arrays of one dtype (the first's, or the default float), checked."""
    first = jnp.asarray(next(iter(arrays.values())))
    dtype = first.dtype if jnp.issubdtype(first.dtype, jnp.floating) else jnp.result_type(float)
    arrays = {name: jnp.asarray(a, dtype) for name, a in arrays.items()}
    for name, a in arrays.items():
        if a.ndim != 2 or a.shape[1] != 3 or a.shape[0] == 0:
            raise ValueError(
                f"{name} must have shape (num_angles, 3) with num_angles > 0, got {a.shape}; "
                "to batch geometries, vmap the constructor"
            )
    if len({a.shape for a in arrays.values()}) != 1:
        raise ValueError(
            ", ".join(arrays) + " must have the same number of views, got "
            + ", ".join(f"{k} {a.shape}" for k, a in arrays.items())
        )
    return arrays


def _check_leaf(a, name, shape, positive, dtype):
    a = jnp.asarray(a, dtype)
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    if _is_concrete(a):
        v = np.asarray(a)
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{name} must be finite, got {v.tolist()}")
        if positive and not np.all(v > 0):
            raise ValueError(f"{name} must be positive, got {v.tolist()}")
    return a


def _support_half_sizes(shape) -> np.ndarray:
    """Half-sizes (x, y, z) of the box holding the interpolated volume: voxels plus half a voxel."""
    z, y, x = shape
    return np.array([x + 1, y + 1, z + 1], np.float64) / 2


def _pixel_centres(det_shape, centre, u, v):
    """Detector pixel centres `(V, R, C, 3)` (NumPy)."""
    rows, cols = det_shape
    tc = np.arange(cols) - (cols - 1) / 2
    tr = np.arange(rows) - (rows - 1) / 2
    return (centre[:, None, None, :] + tc[None, None, :, None] * u[:, None, None, :]
            + tr[None, :, None, None] * v[:, None, None, :])


def _check_views(shape, det_shape, src, centre, u, v, name, warn_rows=True):
    """Raise for rays meeting the support behind the source; warn when the detector misses part of the box.

    `warn_rows=False` warns only when the box's transaxial extent misses the detector's columns (helical
    orbits, where axial truncation is part of the design)."""
    for what, a in (("source", src), ("detector_centre", centre), ("detector_u", u), ("detector_v", v)):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name}: {what} must be finite, got non-finite values")
    cross = np.cross(u, v)
    bad = np.flatnonzero(~(np.linalg.norm(cross, axis=1) > 0))
    if bad.size:
        raise ValueError(
            f"{name}: detector_u and detector_v must be non-zero and not parallel; view {int(bad[0])} has "
            f"u = {u[bad[0]].tolist()}, v = {v[bad[0]].tolist()}"
        )
    half = _support_half_sizes(shape)
    # Every ray must meet the support box only in front of the source. Sufficient, and cheap (corners
    # only, not every pixel): for some unit vector n, all 8 box corners and all 4 detector corner pixels
    # lie strictly ahead of the source along n (a plane through the source separates it from both).
    # Candidates for n: towards the volume's centre, and towards the z axis (horizontally; this one
    # certifies helical orbits whose source has moved far along z past a tall volume).
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], np.float64)
    dist = np.linalg.norm(src, axis=1)
    flat = src * np.array([1.0, 1.0, 0.0])
    flat_dist = np.linalg.norm(flat, axis=1)
    candidates = (-src / np.maximum(dist, 1e-300)[:, None], -flat / np.maximum(flat_dist, 1e-300)[:, None])
    rows, cols = det_shape
    det_corners = np.array([[-1, -1], [-1, 1], [1, -1], [1, 1]], np.float64)
    pix = (centre[:, None, :] + det_corners[None, :, 1:2] * (cols - 1) / 2 * u[:, None, :]
           + det_corners[None, :, 0:1] * (rows - 1) / 2 * v[:, None, :])
    box_ok = np.zeros(len(src), bool)
    both_ok = np.zeros(len(src), bool)
    for n, valid in zip(candidates, (dist > 0, flat_dist > 0)):
        box = valid & (np.einsum("vkc,vc->vk", corners[None] * half - src[:, None, :], n).min(axis=1) > 0)
        det = np.einsum("vkc,vc->vk", pix - src[:, None, :], n).min(axis=1) > 0
        box_ok |= box
        both_ok |= box & det
    bad = np.flatnonzero(~box_ok)
    if bad.size:
        view = int(bad[0])
        raise ValueError(
            f"{name}: the source must lie outside the volume's support (the box of half-sizes (x, y, z) = "
            f"{tuple(half.tolist())}, voxels plus the interpolation margin), with the whole box ahead of it "
            f"(towards the centre or the z axis); view {view} has its source at {src[view].tolist()} (distance "
            f"{dist[view]:.4g} from the centre)"
        )
    bad = np.flatnonzero(~both_ok)
    if bad.size:
        raise ValueError(
            f"{name}: the detector must face the volume: in view {int(bad[0])} some detector pixels are not "
            "ahead of the source on the volume's side"
        )
    # Truncation: project the 8 corners of the voxel box onto each detector plane.
    corners = corners * (half - 0.5)
    n = cross / np.linalg.norm(cross, axis=1, keepdims=True)
    a = corners[None, :, :] - src[:, None, :]  # (V, 8, 3)
    t = np.sum((centre - src) * n, axis=1)[:, None] / np.sum(a * n[:, None, :], axis=2)
    q = src[:, None, :] + t[..., None] * a - centre[:, None, :]  # hits relative to the centre
    gram = np.stack([np.stack([np.sum(u * u, 1), np.sum(u * v, 1)], -1),
                     np.stack([np.sum(u * v, 1), np.sum(v * v, 1)], -1)], -2)  # (V, 2, 2)
    rhs = np.stack([np.sum(q * u[:, None, :], -1), np.sum(q * v[:, None, :], -1)], -1)  # (V, 8, 2)
    coords = np.linalg.solve(gram[:, None], rhs[..., None])[..., 0]  # (col, row) offsets in pixels
    limit = np.array([cols / 2, rows / 2])
    out = np.abs(coords) > limit * (1 + 1e-9)
    if not warn_rows:
        out[..., 1] = False
    if out.any():
        view = int(np.argwhere(out.any(axis=(1, 2)))[0][0])
        need = np.ceil(2 * np.abs(coords[view]).max(0)).astype(int)
        what = (f"does not see the whole volume in view {view} (its box needs about {need[1]} x {need[0]} pixels "
                "there)" if warn_rows else
                f"does not see the whole volume across its columns in view {view} (its box needs about {need[0]} "
                "columns there)")
        warnings.warn(
            f"{name}: the detector ({rows} x {cols} pixels) {what}: projections are truncated",
            UserWarning,
            stacklevel=_user_stacklevel(),
        )


def gather_adjoint_taps(src, centre, u, v, shape, det_shape, xp=np):
    r"""Static tap counts `(rows, cols)` of the gather-based cone-beam adjoint (`cone_beam.py`), or `None`.

    The adjoint applies when every view's detector rows run along $z$ ($v = (0, 0, \Delta_r)$) and its
    columns horizontally ($u_z = 0$: circular and helical orbits), and no ray steps over $z$ planes
    ($|\rho_z| < \max(|\rho_x|, |\rho_y|)$ for every ray, a cone half-angle below ~35-45 degrees). A voxel
    then reads the rows within $1/(t\Delta_r)$ of the ray through it, $t = |P - S|/|\rho|$ the fraction
    of the source-detector path at which a ray enters the support prism (`rows` = 2/(min t Delta_r), with
    1% margin), and the columns of the fan-beam bound of the horizontal geometry (`cols`). `xp=jnp`
    returns the two bounds and the structure test as arrays (for `eqx.error_if` on traced geometries)."""
    rows, cols = det_shape
    d = centre - src
    tc = xp.arange(cols) - (cols - 1) / 2
    rx, ry = d[:, :1] + tc * u[:, :1], d[:, 1:2] + tc * u[:, 1:2]  # (V, C)
    rz = xp.abs(d[:, 2]) + (rows - 1) / 2 * xp.abs(v[:, 2])  # (V,): the largest |rho_z| of each view
    ok = (xp.all(v[:, :2] == 0) & xp.all(u[:, 2] == 0)
          & xp.all(xp.maximum(xp.abs(rx), xp.abs(ry)) > rz[:, None] * (1 + 1e-6)))
    if xp is np and not ok:
        return None
    half = ((shape[2] + 1) / 2, (shape[1] + 1) / 2)
    entry, leave = xp.zeros_like(rx), xp.full_like(rx, xp.inf)
    for r, s, h in ((rx, src[:, :1], half[0]), (ry, src[:, 1:2], half[1])):
        safe = xp.where(r == 0, 1.0, r)
        lo, hi = (-h - s) / safe, (h - s) / safe
        inside = xp.abs(s) < h
        entry = xp.maximum(entry, xp.where(r == 0, xp.where(inside, 0.0, xp.inf), xp.minimum(lo, hi)))
        leave = xp.minimum(leave, xp.where(r == 0, xp.where(inside, xp.inf, -xp.inf), xp.maximum(lo, hi)))
    t = xp.where(entry < leave, entry, xp.inf) * xp.abs(v[:, 2:3])  # rays missing the prism: no bound
    row_bound = 2.0 / xp.maximum(xp.min(t), 1e-300) * 1.01
    if xp is np:
        if not row_bound < _MAX_TAPS:
            return None
        col_taps = _tap_bound(src[:, :2], d[:, :2], u[:, :2], False, shape[1:])
        if col_taps > _MAX_TAPS:
            return None
        return max(1, math.ceil(row_bound + 1e-9)), col_taps
    return row_bound, _tap_bound_jnp(src[:, :2], d[:, :2], u[:, :2], False, shape[1:]), ok


def _circular_vectors(g):
    """Source, detector centre, u, v `(V, 3)` of the circular orbit (module docstring) of a geometry's leaves."""
    b = g.angles
    s, c = jnp.sin(b), jnp.cos(b)
    zero, one = jnp.zeros_like(b), jnp.ones_like(b)
    u_hat = jnp.stack([c, s, zero], -1)
    v_hat = jnp.stack([zero, zero, one], -1)
    src = g.source_origin * jnp.stack([s, -c, zero], -1)
    centre = g.origin_detector * jnp.stack([-s, c, zero], -1) + g.det_offset[1] * u_hat + g.det_offset[0] * v_hat
    return src, centre, g.det_spacing[1] * u_hat, g.det_spacing[0] * v_hat


class ConeBeamGeometry(eqx.Module):
    r"""3D cone beam on a circular orbit about the $z$ axis, flat detector (ASTRA's `cone`, plus an offset).

    See the module docstring for the coordinates and the exact vectors. `angles` `(V,)`, `source_origin`,
    `origin_detector`, `det_spacing` `(2,)` = (row, col) spacing and `det_offset` `(2,)` = (row, col)
    offset of the detector centre (voxel units) are array leaves: traceable, vmappable, differentiable.
    `shape = (Z, Y, X)` and `det_shape = (rows, cols)` are static. Projections have shape
    `(V, rows, cols)` (`sinogram_shape`).

    Example:
        >>> g = ConeBeamGeometry.uniform((16, 16, 16), 8, (32, 32), source_origin=40.0, origin_detector=20.0)
        >>> g.sinogram_shape, g.vectors().shape
        ((8, 32, 32), (8, 12))
    """

    angles: Float[Array, " angles"]
    source_origin: Float[Array, ""]
    origin_detector: Float[Array, ""]
    det_spacing: Float[Array, 2]
    det_offset: Float[Array, 2]
    shape: tuple[int, int, int] = eqx.field(static=True)
    det_shape: tuple[int, int] = eqx.field(static=True)
    adjoint_taps: tuple[int, int] | None = eqx.field(static=True)

    def __init__(self, shape, angles, det_shape, source_origin, origin_detector, det_spacing=(1.0, 1.0),
                 det_offset=(0.0, 0.0)):
        shape = _check_ints(shape, "shape", 3)
        det_shape = _check_ints(det_shape, "det_shape", 2)
        angles = _check_angles(angles)
        dtype = angles.dtype
        self.angles = angles
        self.source_origin = _check_leaf(source_origin, "source_origin", (), True, dtype)
        self.origin_detector = _check_leaf(origin_detector, "origin_detector", (), True, dtype)
        self.det_spacing = _check_leaf(det_spacing, "det_spacing", (2,), True, dtype)
        self.det_offset = _check_leaf(det_offset, "det_offset", (2,), False, dtype)
        self.shape = shape
        self.det_shape = det_shape
        rho = math.hypot(shape[2] + 1, shape[1] + 1) / 2
        if _is_concrete(self.source_origin) and not float(self.source_origin) > rho:
            raise ValueError(
                f"source_origin must exceed {rho:.4g}, the radius sqrt((X+1)^2+(Y+1)^2)/2 of the cylinder holding "
                f"the {shape} volume (plus the half-voxel interpolation margin); got {float(self.source_origin)}"
            )
        leaves = (self.angles, self.source_origin, self.origin_detector, self.det_spacing, self.det_offset)
        self.adjoint_taps = None
        if all(_is_concrete(a) for a in leaves):
            vectors = tuple(np.asarray(a, np.float64) for a in self._vectors())
            _check_views(shape, det_shape, *vectors, "ConeBeamGeometry")
            self.adjoint_taps = gather_adjoint_taps(*vectors, shape, det_shape)

    @classmethod
    def uniform(cls, shape, num_angles: int, det_shape, source_origin, origin_detector, det_spacing=(1.0, 1.0),
                det_offset=(0.0, 0.0), dtype=None) -> ConeBeamGeometry:
        r"""A full turn of equally spaced angles $\beta_k = 2\pi k/\text{num\_angles}$.

        Example:
            >>> ConeBeamGeometry.uniform((8, 8, 8), 4, (16, 16), 30.0, 10.0).angles.shape
            (4,)
        """
        if isinstance(num_angles, bool) or not isinstance(num_angles, (int, np.integer)) or num_angles <= 0:
            raise ValueError(f"num_angles must be a positive int, got {num_angles!r}")
        dtype = jnp.result_type(float) if dtype is None else dtype
        angles = jnp.arange(num_angles, dtype=dtype) * (2 * jnp.pi / num_angles)
        return cls(shape, angles, det_shape, source_origin, origin_detector, det_spacing, det_offset)

    @property
    def num_angles(self) -> int:
        return self.angles.shape[-1]

    @property
    def sinogram_shape(self) -> tuple[int, int, int]:
        """Projection shape `(views, rows, cols)`."""
        return (self.num_angles,) + self.det_shape

    def _vectors(self):
        return _circular_vectors(self)

    def vectors(self) -> Float[Array, "angles 12"]:
        """ASTRA `cone_vec` rows `(srcX, srcY, srcZ, dX, dY, dZ, uX, uY, uZ, vX, vY, vZ)`, shape `(V, 12)`."""
        return jnp.concatenate(self._vectors(), axis=-1)

    def to_vec(self) -> ConeBeamVecGeometry:
        """The same views as a `ConeBeamVecGeometry` (projections agree to rounding)."""
        return ConeBeamVecGeometry(self.shape, *self._vectors(), self.det_shape)


class ConeBeamVecGeometry(eqx.Module):
    r"""3D cone beam with the source and a flat detector placed freely in every view (ASTRA's `cone_vec`).

    `source`, `detector_centre`, `detector_u`, `detector_v`: `(V, 3)` array leaves, $(x, y, z)$ in voxel
    units (see the module docstring: pixel `(r, c)` sits at
    `detector_centre + (c - (C-1)/2) detector_u + (r - (R-1)/2) detector_v`). `shape = (Z, Y, X)` and
    `det_shape = (rows, cols)` are static.

    Example:
        >>> g = ConeBeamVecGeometry.from_astra((8, 8, 8), ConeBeamGeometry.uniform((8, 8, 8), 4, (16, 16), 30.0, 10.0).vectors(), (16, 16))
        >>> g.sinogram_shape
        (4, 16, 16)
    """

    source: Float[Array, "angles 3"]
    detector_centre: Float[Array, "angles 3"]
    detector_u: Float[Array, "angles 3"]
    detector_v: Float[Array, "angles 3"]
    shape: tuple[int, int, int] = eqx.field(static=True)
    det_shape: tuple[int, int] = eqx.field(static=True)
    adjoint_taps: tuple[int, int] | None = eqx.field(static=True)

    def __init__(self, shape, source, detector_centre, detector_u, detector_v, det_shape):
        shape = _check_ints(shape, "shape", 3)
        det_shape = _check_ints(det_shape, "det_shape", 2)
        arrays = _view_arrays(source=source, detector_centre=detector_centre, detector_u=detector_u,
                              detector_v=detector_v)
        self.adjoint_taps = None
        if all(_is_concrete(a) for a in arrays.values()):
            vectors = tuple(np.asarray(a, np.float64) for a in arrays.values())
            _check_views(shape, det_shape, *vectors, "ConeBeamVecGeometry")
            self.adjoint_taps = gather_adjoint_taps(*vectors, shape, det_shape)
        self.source = arrays["source"]
        self.detector_centre = arrays["detector_centre"]
        self.detector_u = arrays["detector_u"]
        self.detector_v = arrays["detector_v"]
        self.shape = shape
        self.det_shape = det_shape

    @classmethod
    def from_astra(cls, shape, vectors, det_shape) -> ConeBeamVecGeometry:
        """From ASTRA `cone_vec` vectors `(V, 12)`: `(srcX, srcY, srcZ, dX, dY, dZ, uX, uY, uZ, vX, vY, vZ)`."""
        vectors = jnp.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[1] != 12:
            raise ValueError(f"vectors must have shape (num_angles, 12), got {vectors.shape}")
        return cls(shape, vectors[:, 0:3], vectors[:, 3:6], vectors[:, 6:9], vectors[:, 9:12], det_shape)

    @property
    def num_angles(self) -> int:
        return self.source.shape[-2]

    @property
    def sinogram_shape(self) -> tuple[int, int, int]:
        return (self.num_angles,) + self.det_shape

    def _vectors(self):
        return self.source, self.detector_centre, self.detector_u, self.detector_v

    def vectors(self) -> Float[Array, "angles 12"]:
        """ASTRA `cone_vec` rows, shape `(V, 12)`."""
        return jnp.concatenate(self._vectors(), axis=-1)

    def to_vec(self) -> ConeBeamVecGeometry:
        return self


def _axial_coverage_gaps(z_lo, z_hi, extent):
    """Parts of `[-extent, extent]` outside the union of the intervals `[z_lo[v], z_hi[v]]` (a list of pairs)."""
    order = np.argsort(z_lo)
    gaps, reach = [], -extent
    for lo, hi in zip(z_lo[order], z_hi[order]):
        if lo > reach:
            gaps.append((reach, min(lo, extent)))
        reach = max(reach, hi)
        if reach >= extent:
            break
    if reach < extent:
        gaps.append((reach, extent))
    return [(a, b) for a, b in gaps if b > a]


class HelicalConeBeamGeometry(eqx.Module):
    r"""3D cone beam on a helical orbit: the circular `ConeBeamGeometry` plus a per-view shift along $z$.

    View $v$ at angle $\beta_v$ has the circular orbit's vectors (module docstring) with the source and
    the detector centre both moved by $z_v$ along $z$ (the table feed; the object moves by $-z_v$):

    $$ S_v = R_{so}(\sin\beta_v, -\cos\beta_v, 0) + z_v\hat e_z, \quad
       D_v = R_{od}(-\sin\beta_v, \cos\beta_v, 0) + o_c\hat u + o_r\hat v + z_v\hat e_z, $$

    $u$, $v$ unchanged. Give either `pitch` (the $z$ travel per turn, voxel units; any finite value: zero
    is the circular orbit, negative a descending helix), with $z_v = z_\text{start} + \text{pitch}\,\beta_v/(2\pi)$,
    or `z_positions` `(V,)` directly (e.g. measured table positions). The vectors are ASTRA `cone_vec`
    rows (`vectors()`, `to_vec()`); ASTRA has no helical `cone` type.

    Leaves (traceable, vmappable, differentiable): `angles`, `source_origin`, `origin_detector`,
    `det_spacing` `(2,)`, `det_offset` `(2,)` (row, col), `z_positions` `(V,)`; `pitch` and `z_start` are
    only constructor arguments (differentiate through the constructor). Static: `shape = (Z, Y, X)`,
    `det_shape = (rows, cols)`. Angles may span several turns (no degrees warning).

    **Validity.** As `ConeBeamGeometry` (positive distances and spacings, finite values, the source
    outside the cylinder holding the volume in every view: `ValueError` naming the parameter). A detector
    whose columns miss part of the volume's transaxial extent warns (`UserWarning`), as the circular orbit
    does; its rows seeing only a slab of the volume in a view is legal and silent (helical data is axially
    truncated by design). A `UserWarning` also flags parts of the volume's $z$ range that no view sees on
    the rotation axis (where the detector's rows, scaled to the axis by $R_{so}/(R_{so} + R_{od})$, cover
    $z_v + [o_r - R\Delta_r/2, o_r + R\Delta_r/2]\,R_{so}/(R_{so}+R_{od})$).

    Why a class of its own rather than a `pitch` option on `ConeBeamGeometry` (ODL's choice): the
    circular class is ASTRA's `cone` and the orbit that analytic methods for circular data (FDK, the
    central-slice fan-beam identity) need; with a separate type they can dispatch, or refuse a helix,
    statically, even under `jit`, where a traced pitch could not be inspected.

    Example:
        >>> g = HelicalConeBeamGeometry.uniform((16, 8, 8), 24, (8, 20), 30.0, 15.0, pitch=4.0, turns=3.0)
        >>> g.sinogram_shape, g.vectors().shape
        ((24, 8, 20), (24, 12))
    """

    angles: Float[Array, " angles"]
    source_origin: Float[Array, ""]
    origin_detector: Float[Array, ""]
    det_spacing: Float[Array, 2]
    det_offset: Float[Array, 2]
    z_positions: Float[Array, " angles"]
    shape: tuple[int, int, int] = eqx.field(static=True)
    det_shape: tuple[int, int] = eqx.field(static=True)
    adjoint_taps: tuple[int, int] | None = eqx.field(static=True)

    def __init__(self, shape, angles, det_shape, source_origin, origin_detector, pitch=None, det_spacing=(1.0, 1.0),
                 det_offset=(0.0, 0.0), *, z_start=0.0, z_positions=None):
        shape = _check_ints(shape, "shape", 3)
        det_shape = _check_ints(det_shape, "det_shape", 2)
        angles = _check_angles(angles, warn_degrees=False)
        dtype = angles.dtype
        self.angles = angles
        self.source_origin = _check_leaf(source_origin, "source_origin", (), True, dtype)
        self.origin_detector = _check_leaf(origin_detector, "origin_detector", (), True, dtype)
        self.det_spacing = _check_leaf(det_spacing, "det_spacing", (2,), True, dtype)
        self.det_offset = _check_leaf(det_offset, "det_offset", (2,), False, dtype)
        if (pitch is None) == (z_positions is None):
            raise ValueError("give exactly one of pitch (z travel per turn) and z_positions (one z per view)")
        if pitch is not None:
            pitch = _check_leaf(pitch, "pitch", (), False, dtype)
            z_start = _check_leaf(z_start, "z_start", (), False, dtype)
            z_positions = z_start + pitch * angles / (2 * jnp.pi)
        self.z_positions = _check_leaf(z_positions, "z_positions", angles.shape, False, dtype)
        self.shape = shape
        self.det_shape = det_shape
        rho = math.hypot(shape[2] + 1, shape[1] + 1) / 2
        if _is_concrete(self.source_origin) and not float(self.source_origin) > rho:
            raise ValueError(
                f"source_origin must exceed {rho:.4g}, the radius sqrt((X+1)^2+(Y+1)^2)/2 of the cylinder holding "
                f"the {shape} volume (plus the half-voxel interpolation margin); got {float(self.source_origin)}"
            )
        self.adjoint_taps = None
        if all(_is_concrete(a) for a in jax.tree_util.tree_leaves(self)):
            vectors = tuple(np.asarray(a, np.float64) for a in self._vectors())
            _check_views(shape, det_shape, *vectors, "HelicalConeBeamGeometry", warn_rows=False)
            self._warn_axial_gaps()
            self.adjoint_taps = gather_adjoint_taps(*vectors, shape, det_shape)

    def _warn_axial_gaps(self):
        r_so, r_od = float(self.source_origin), float(self.origin_detector)
        scale = r_so / (r_so + r_od)
        o_r, d_r = float(self.det_offset[0]), float(self.det_spacing[0])
        z = np.asarray(self.z_positions, np.float64)
        half_height = self.det_shape[0] * d_r / 2
        gaps = _axial_coverage_gaps(z + (o_r - half_height) * scale, z + (o_r + half_height) * scale,
                                    self.shape[0] / 2)
        if gaps:
            text = ", ".join(f"[{a:.4g}, {b:.4g}]" for a, b in gaps[:3]) + (" ..." if len(gaps) > 3 else "")
            warnings.warn(
                f"HelicalConeBeamGeometry: no view sees z in {text} on the rotation axis (the volume spans "
                f"z in [{-self.shape[0] / 2:.4g}, {self.shape[0] / 2:.4g}]; views cover z_positions + "
                f"[{(o_r - half_height) * scale:.4g}, {(o_r + half_height) * scale:.4g}] there): more turns, a "
                "smaller pitch or a taller detector would measure it",
                UserWarning,
                stacklevel=_user_stacklevel(),
            )

    @classmethod
    def uniform(cls, shape, num_angles: int, det_shape, source_origin, origin_detector, pitch, turns=1.0,
                det_spacing=(1.0, 1.0), det_offset=(0.0, 0.0), z_start=None, dtype=None) -> HelicalConeBeamGeometry:
        r"""`num_angles` equally spaced angles over `turns` turns, $\beta_k = 2\pi\,\text{turns}\,k/\text{num\_angles}$.

        `z_start=None` centres the helix on the volume: $z_0 + z_{V-1} = 0$.

        Example:
            >>> float(HelicalConeBeamGeometry.uniform((8, 8, 8), 8, (16, 16), 30.0, 10.0, pitch=4.0).z_positions[0])
            -1.75
        """
        if isinstance(num_angles, bool) or not isinstance(num_angles, (int, np.integer)) or num_angles <= 0:
            raise ValueError(f"num_angles must be a positive int, got {num_angles!r}")
        if isinstance(turns, (int, float, np.number)) and not (math.isfinite(turns) and turns > 0):
            raise ValueError(f"turns must be positive and finite, got {turns!r}")
        dtype = jnp.result_type(float) if dtype is None else dtype
        angles = jnp.arange(num_angles, dtype=dtype) * (2 * jnp.pi * jnp.asarray(turns, dtype) / num_angles)
        if z_start is None:
            z_start = -jnp.asarray(pitch, dtype) * angles[-1] / (4 * jnp.pi)
        return cls(shape, angles, det_shape, source_origin, origin_detector, pitch, det_spacing, det_offset,
                   z_start=z_start)

    @property
    def num_angles(self) -> int:
        return self.angles.shape[-1]

    @property
    def sinogram_shape(self) -> tuple[int, int, int]:
        """Projection shape `(views, rows, cols)`."""
        return (self.num_angles,) + self.det_shape

    def _vectors(self):
        src, centre, u, v = _circular_vectors(self)
        lift = jnp.stack([jnp.zeros_like(self.z_positions)] * 2 + [self.z_positions], -1)
        return src + lift, centre + lift, u, v

    def vectors(self) -> Float[Array, "angles 12"]:
        """ASTRA `cone_vec` rows `(srcX, srcY, srcZ, dX, dY, dZ, uX, uY, uZ, vX, vY, vZ)`, shape `(V, 12)`."""
        return jnp.concatenate(self._vectors(), axis=-1)

    def to_vec(self) -> ConeBeamVecGeometry:
        """The same views as a `ConeBeamVecGeometry` (projections agree to rounding; its warning about views
        that see only a slab of the volume is silenced, since that is what a helix does)."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*does not see the whole volume", category=UserWarning)
            return ConeBeamVecGeometry(self.shape, *self._vectors(), self.det_shape)
