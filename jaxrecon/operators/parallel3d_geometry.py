r"""3D parallel-beam geometries: rotation about $z$ (ASTRA's `parallel3d`) and the per-view vector form
(ASTRA's `parallel3d_vec`).

**Coordinates** as in `cone_geometry.py`: a volume has shape `(Z, Y, X)`, voxel `(k, i, j)` has its
centre at $x = j - \tfrac{X-1}{2}$, $y = i - \tfrac{Y-1}{2}$, $z = k - \tfrac{Z-1}{2}$ (voxel units; $y$
grows with the row index, as in ASTRA's 3D volumes).

**Views** (ASTRA's `parallel3d_vec`). View $v$ has a ray direction $d$, a detector centre $D$ and two
detector vectors $u$ (pixel `(r, c)` to `(r, c + 1)`) and $v$ (`(r, c)` to `(r + 1, c)`), their lengths
the pixel spacings. Pixel `(r, c)` of an `(R, C)` detector is centred at
$P_{rc} = D + (c - \tfrac{C-1}{2})u + (r - \tfrac{R-1}{2})v$, and projection `(v, r, c)` is the integral
(voxel units) of the volume along the whole line $P_{rc} + t\,d$: neither $|d|$, nor its sign, nor where
the detector sits along $d$ matters. An ASTRA `parallel3d_vec` row
`(rayX, rayY, rayZ, dX, dY, dZ, uX, uY, uZ, vX, vY, vZ)` is `(d, D, u, v)`. ASTRA stores projections as
`(rows, views, cols)`, jaxrecon as `(views, rows, cols)`: ``ours = np.transpose(astra, (1, 0, 2))``.

**Rotation about $z$** (ASTRA's `parallel3d`, plus offsets). At angle $\theta$

$$ d = (\sin\theta, -\cos\theta, 0),\quad D = o_c\hat u + o_r\hat e_z,\quad
   u = \Delta_c(\cos\theta, \sin\theta, 0) = \Delta_c\hat u,\quad v = (0, 0, \Delta_r), $$

$(\Delta_r, \Delta_c)$ = `det_spacing`, $(o_r, o_c)$ = `det_offset`. With zero offsets this is
`astra.create_proj_geom('parallel3d', Δc, Δr, R, C, angles)` on `astra.create_vol_geom(Y, X, Z)` (its
`geom_2vec` gives these vectors). Pixel `(r, c)` integrates along the line
$\{x\cos\theta + y\sin\theta = s_c,\ z = z_r\}$ with $s_c = (c - \tfrac{C-1}{2})\Delta_c + o_c$ and
$z_r = (r - \tfrac{R-1}{2})\Delta_r + o_r$.

**Slices and the 2D geometry.** Row $r$ with $z_r$ on slice $k$ ($z_r = k - \tfrac{Z-1}{2}$) is the 2D
parallel-beam sinogram of that slice, rows flipped:
`radon(x[k, ::-1, :], ParallelBeamGeometry((Y, X), angles, C, Δc, o_c))` (`slice_geometry()`). The flip:
ASTRA's 2D $y$ (and `ParallelBeamGeometry`'s) points up, $y = \tfrac{H-1}{2} - \text{row}$, its 3D $y$ grows
with the row index; the detector coordinate $s = x\cos\theta + y\sin\theta$ is the same formula in both.
No flip along $z$: row $r$ grows with $z$ like the slice index. The default detector, `det_shape=None`, is
`(Z, ceil(hypot(Y, X)))` with unit spacings: one row per slice, the 2D default columns.

**Validity.** `ValueError` naming the parameter and value for an empty angle list, non-positive or
non-finite spacings, non-finite offsets; for the vector form also for a zero ray direction, parallel or
zero detector axes, or a ray direction lying in the detector plane. A detector too small to see the whole
volume in some view (the box projected along $d$ is not inside the detector) is legal and gives a
`UserWarning`. Checks run on concrete values; traced values are not checked.
"""

from __future__ import annotations

import math
import warnings

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .cone_geometry import _check_ints, _check_leaf, _view_arrays
from .fan_geometry import _user_stacklevel
from .geometry import ParallelBeamGeometry, _check_angles, _is_concrete

__all__ = ["Parallel3DGeometry", "Parallel3DVecGeometry"]


def _check_parallel_views(shape, det_shape, ray, centre, u, v, name):
    """Raise for degenerate views; warn when the detector misses part of the volume's box (NumPy, float64)."""
    for what, a in (("ray", ray), ("detector_centre", centre), ("detector_u", u), ("detector_v", v)):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name}: {what} must be finite, got non-finite values")
    cross = np.cross(u, v)
    norm = np.linalg.norm(cross, axis=1)
    bad = np.flatnonzero(~(norm > 0))
    if bad.size:
        raise ValueError(
            f"{name}: detector_u and detector_v must be non-zero and not parallel; view {int(bad[0])} has "
            f"u = {u[bad[0]].tolist()}, v = {v[bad[0]].tolist()}"
        )
    length = np.linalg.norm(ray, axis=1)
    bad = np.flatnonzero(~(length > 0))
    if bad.size:
        raise ValueError(f"{name}: ray must be non-zero; view {int(bad[0])} has ray = {ray[bad[0]].tolist()}")
    cos = np.abs(np.sum(ray * cross, axis=1)) / (length * norm)
    bad = np.flatnonzero(~(cos > 1e-6))
    if bad.size:
        raise ValueError(
            f"{name}: the ray direction must cross the detector plane; view {int(bad[0])} has ray = "
            f"{ray[bad[0]].tolist()} in the plane of u = {u[bad[0]].tolist()}, v = {v[bad[0]].tolist()}"
        )
    # Truncation: move the 8 corners of the voxel box along d onto each detector plane.
    nz, ny, nx = shape
    rows, cols = det_shape
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], np.float64)
    corners = corners * np.array([nx, ny, nz], np.float64) / 2
    n = cross / norm[:, None]
    t = np.sum((centre[:, None, :] - corners[None]) * n[:, None, :], -1) / np.sum(ray * n, 1)[:, None]
    q = corners[None] + t[..., None] * ray[:, None, :] - centre[:, None, :]  # (V, 8, 3), relative to D
    gram = np.stack([np.stack([np.sum(u * u, 1), np.sum(u * v, 1)], -1),
                     np.stack([np.sum(u * v, 1), np.sum(v * v, 1)], -1)], -2)
    rhs = np.stack([np.sum(q * u[:, None, :], -1), np.sum(q * v[:, None, :], -1)], -1)
    coords = np.linalg.solve(gram[:, None], rhs[..., None])[..., 0]  # (col, row) offsets in pixels
    out = np.abs(coords) > np.array([cols / 2, rows / 2]) * (1 + 1e-9)
    if out.any():
        view = int(np.argwhere(out.any(axis=(1, 2)))[0][0])
        need = np.ceil(2 * np.abs(coords[view]).max(0)).astype(int)
        warnings.warn(
            f"{name}: the detector ({rows} x {cols} pixels) does not see the whole volume in view {view} "
            f"(its box needs about {need[1]} x {need[0]} pixels there): projections are truncated",
            UserWarning,
            stacklevel=_user_stacklevel(),
        )


class Parallel3DGeometry(eqx.Module):
    r"""3D parallel beam rotating about the $z$ axis, detector rows along $z$ (ASTRA's `parallel3d`, plus offsets).

    See the module docstring for the vectors. Leaves (traceable, vmappable, differentiable): `angles`
    `(V,)`, `det_spacing` `(2,)` = (row, col) spacing, `det_offset` `(2,)` = (row, col) offset of the
    detector centre (voxel units). Static: `shape = (Z, Y, X)`, `det_shape = (rows, cols)` (default
    `(Z, ceil(hypot(Y, X)))`), and `min_col_spacing`, a lower bound for a learned column spacing (as
    `ParallelBeamGeometry.min_detector_spacing`). Projections have shape `(V, rows, cols)`.

    `project` runs the exact 2D `radon` on every $z$ slice (`slice_geometry()`) and interpolates the
    rows linearly between slices (exact when every row lies on a slice, as by default); `backproject` is
    its exact adjoint. Any row spacing and offsets are supported; tilted axes need `Parallel3DVecGeometry`.

    Example:
        >>> g = Parallel3DGeometry.uniform((8, 16, 16), 10)
        >>> g.sinogram_shape, g.vectors().shape
        ((10, 8, 23), (10, 12))
    """

    angles: Float[Array, " angles"]
    det_spacing: Float[Array, 2]
    det_offset: Float[Array, 2]
    shape: tuple[int, int, int] = eqx.field(static=True)
    det_shape: tuple[int, int] = eqx.field(static=True)
    min_col_spacing: float = eqx.field(static=True)

    def __init__(self, shape, angles, det_shape=None, det_spacing=(1.0, 1.0), det_offset=(0.0, 0.0),
                 min_col_spacing: float | None = None):
        shape = _check_ints(shape, "shape", 3)
        if det_shape is None:
            det_shape = (shape[0], math.ceil(math.hypot(shape[1], shape[2])))
        det_shape = _check_ints(det_shape, "det_shape", 2)
        angles = _check_angles(angles)
        dtype = angles.dtype
        self.angles = angles
        self.det_spacing = _check_leaf(det_spacing, "det_spacing", (2,), True, dtype)
        self.det_offset = _check_leaf(det_offset, "det_offset", (2,), False, dtype)
        self.shape = shape
        self.det_shape = det_shape
        col_spacing = self.det_spacing[1]
        if min_col_spacing is None:
            min_col_spacing = float(col_spacing) if _is_concrete(col_spacing) else 0.5
        upper = float(col_spacing) if _is_concrete(col_spacing) else math.inf
        if not 0 < float(min_col_spacing) <= upper:
            raise ValueError(f"min_col_spacing must be in (0, column spacing {upper}], got {min_col_spacing}")
        self.min_col_spacing = float(min_col_spacing)
        if all(_is_concrete(a) for a in (self.angles, self.det_spacing, self.det_offset)):
            vec = (np.asarray(a, np.float64) for a in self._vectors())
            _check_parallel_views(shape, det_shape, *vec, "Parallel3DGeometry")

    @classmethod
    def uniform(cls, shape, num_angles: int, det_shape=None, det_spacing=(1.0, 1.0), det_offset=(0.0, 0.0),
                dtype=None) -> Parallel3DGeometry:
        r"""Half a turn of equally spaced angles $\theta_k = k\pi/\text{num\_angles}$ (as `ParallelBeamGeometry.uniform`).

        Example:
            >>> Parallel3DGeometry.uniform((4, 8, 8), 6).angles.shape
            (6,)
        """
        if isinstance(num_angles, bool) or not isinstance(num_angles, (int, np.integer)) or num_angles <= 0:
            raise ValueError(f"num_angles must be a positive int, got {num_angles!r}")
        dtype = jnp.result_type(float) if dtype is None else dtype
        angles = jnp.arange(num_angles, dtype=dtype) * (jnp.pi / num_angles)
        return cls(shape, angles, det_shape, det_spacing, det_offset)

    @property
    def num_angles(self) -> int:
        return self.angles.shape[-1]

    @property
    def sinogram_shape(self) -> tuple[int, int, int]:
        """Projection shape `(views, rows, cols)`."""
        return (self.num_angles,) + self.det_shape

    def slice_geometry(self) -> ParallelBeamGeometry:
        """The 2D geometry of one $z$ slice (rows flipped: see the module docstring): angles, columns, column
        spacing and offset."""
        return ParallelBeamGeometry(self.shape[1:], self.angles, self.det_shape[1], self.det_spacing[1],
                                    self.det_offset[1], min_detector_spacing=self.min_col_spacing)

    def row_positions(self) -> Float[Array, " rows"]:
        r"""Heights $z_r = (r - \tfrac{R-1}{2})\Delta_r + o_r$ of the detector rows, voxel units, `(rows,)`."""
        r = jnp.arange(self.det_shape[0], dtype=self.angles.dtype)
        return (r - (self.det_shape[0] - 1) / 2) * self.det_spacing[0] + self.det_offset[0]

    def _vectors(self):
        t = self.angles
        s, c = jnp.sin(t), jnp.cos(t)
        zero, one = jnp.zeros_like(t), jnp.ones_like(t)
        u_hat = jnp.stack([c, s, zero], -1)
        v_hat = jnp.stack([zero, zero, one], -1)
        centre = self.det_offset[1] * u_hat + self.det_offset[0] * v_hat
        return jnp.stack([s, -c, zero], -1), centre, self.det_spacing[1] * u_hat, self.det_spacing[0] * v_hat

    def vectors(self) -> Float[Array, "angles 12"]:
        """ASTRA `parallel3d_vec` rows `(rayX, rayY, rayZ, dX, dY, dZ, uX, uY, uZ, vX, vY, vZ)`, shape `(V, 12)`."""
        return jnp.concatenate(self._vectors(), axis=-1)

    def to_vec(self) -> Parallel3DVecGeometry:
        """The same views as a `Parallel3DVecGeometry` (its 3D Joseph projector gives the same projections to
        rounding, except at angles where $|\\sin\\theta| = |\\cos\\theta|$, whose rays the two step over
        different planes)."""
        return Parallel3DVecGeometry(self.shape, *self._vectors(), self.det_shape)


class Parallel3DVecGeometry(eqx.Module):
    r"""3D parallel beam with the ray direction and a flat detector placed freely in every view (ASTRA's
    `parallel3d_vec`): tilted rotation axes, laminography, per-view detector shifts.

    `ray`, `detector_centre`, `detector_u`, `detector_v`: `(V, 3)` array leaves, $(x, y, z)$ in voxel units
    (module docstring). `shape = (Z, Y, X)` and `det_shape = (rows, cols)` are static. `project` runs the
    3D Joseph method along each line (bilinear interpolation on the voxel planes most perpendicular to
    the rays, as cone beam does); `backproject` is its exact transpose.

    Example:
        >>> g = Parallel3DVecGeometry.from_astra((8, 8, 8), Parallel3DGeometry.uniform((8, 8, 8), 4).vectors(), (8, 12))
        >>> g.sinogram_shape
        (4, 8, 12)
    """

    ray: Float[Array, "angles 3"]
    detector_centre: Float[Array, "angles 3"]
    detector_u: Float[Array, "angles 3"]
    detector_v: Float[Array, "angles 3"]
    shape: tuple[int, int, int] = eqx.field(static=True)
    det_shape: tuple[int, int] = eqx.field(static=True)

    def __init__(self, shape, ray, detector_centre, detector_u, detector_v, det_shape):
        shape = _check_ints(shape, "shape", 3)
        det_shape = _check_ints(det_shape, "det_shape", 2)
        arrays = _view_arrays(ray=ray, detector_centre=detector_centre, detector_u=detector_u, detector_v=detector_v)
        if all(_is_concrete(a) for a in arrays.values()):
            _check_parallel_views(shape, det_shape, *(np.asarray(a, np.float64) for a in arrays.values()),
                                  "Parallel3DVecGeometry")
        self.ray = arrays["ray"]
        self.detector_centre = arrays["detector_centre"]
        self.detector_u = arrays["detector_u"]
        self.detector_v = arrays["detector_v"]
        self.shape = shape
        self.det_shape = det_shape

    @classmethod
    def from_astra(cls, shape, vectors, det_shape) -> Parallel3DVecGeometry:
        """From ASTRA `parallel3d_vec` vectors `(V, 12)`: `(rayX, rayY, rayZ, dX, dY, dZ, uX, uY, uZ, vX, vY, vZ)`."""
        vectors = jnp.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[1] != 12:
            raise ValueError(f"vectors must have shape (num_angles, 12), got {vectors.shape}")
        return cls(shape, vectors[:, 0:3], vectors[:, 3:6], vectors[:, 6:9], vectors[:, 9:12], det_shape)

    @property
    def num_angles(self) -> int:
        return self.ray.shape[-2]

    @property
    def sinogram_shape(self) -> tuple[int, int, int]:
        return (self.num_angles,) + self.det_shape

    def _vectors(self):
        return self.ray, self.detector_centre, self.detector_u, self.detector_v

    def vectors(self) -> Float[Array, "angles 12"]:
        """ASTRA `parallel3d_vec` rows, shape `(V, 12)`."""
        return jnp.concatenate(self._vectors(), axis=-1)

    def to_vec(self) -> Parallel3DVecGeometry:
        return self
