r"""3D parallel-beam projection and its exact adjoint: a stack of 2D Radon transforms (`Parallel3DGeometry`) or
the 3D Joseph method along each line (`Parallel3DVecGeometry`).

**Rotation about $z$** (`Parallel3DGeometry`). Every $z$ slice $k$ is projected by the 2D `radon` of the
slice geometry (rows flipped, `parallel3d_geometry.py`), $s_{k} = \mathcal R(x_k)$, `(Z, views, cols)`, one
shared geometry for all slices (`jax.vmap`, so `radon`'s multi-image kernels run). Detector row $r$ at
height $z_r$ lies at the fractional slice index $p_r = z_r + \tfrac{Z-1}{2}$ and reads

$$ (Ax)_{v,r,c} = (1 - w_r)\,s_{\lfloor p_r\rfloor, v, c} + w_r\, s_{\lfloor p_r\rfloor + 1, v, c},
   \qquad w_r = p_r - \lfloor p_r\rfloor, $$

slices outside the volume being zero. That is exactly what the 3D Joseph method (bilinear interpolation
on the planes a ray steps over) gives for rays in the planes $z$ = const, and with the default detector
(one row per slice) $w_r = 0$: row $r$ is slice $r$'s sinogram, bit for bit. `backproject` is the exact
adjoint: the transpose of the row interpolation (`jax.linear_transpose`, a scatter-add over the rows),
then `radon`'s exact gather-based adjoint slice by slice, so the dot test holds to rounding. Both are
differentiable in the volume and in the geometry's leaves (angles, spacings, offsets).

**Vector form** (`Parallel3DVecGeometry`). The lines $P_{rc} + t\,d$ run through the cone-beam Joseph
kernel (`cone_beam.py`) with one point per line instead of a common source; the adjoint is its
`jax.linear_transpose` (exact; a scatter on CPU, slower than the forward), views in chunks of
`batch_size` (`lax.map`). For the vectors of a `Parallel3DGeometry` both give the same projections to
rounding (tested), except at angles with $|\sin\theta| = |\cos\theta|$, where the two may step the rays
over different planes.

ASTRA's 3D projectors (`parallel3d`, `parallel3d_vec`, `cone`, `cone_vec`) run on CUDA only, so none
of this is compared with ASTRA here; the tests compare with the 2D `radon` (itself matched to ASTRA's
CPU `linear` projector) and with exact line integrals of ellipsoids.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .cone_beam import _PAD, _check_array, _check_batch_size, _joseph
from .parallel3d_geometry import Parallel3DGeometry, Parallel3DVecGeometry
from .radon import backproject as _radon_backproject
from .radon import radon

__all__ = ["parallel3d_backproject", "parallel3d_project"]


def _row_weights(geom, dtype):
    """Slice indices `(k0, k1)` (clipped) and weights `(w0, w1)` (zero outside the volume) of every row."""
    nz = geom.shape[0]
    p = geom.row_positions().astype(dtype) + (nz - 1) / 2
    f = jnp.floor(p)
    w = p - f
    k0 = f.astype(jnp.int32)
    k1 = k0 + 1
    w0 = jnp.where((k0 >= 0) & (k0 < nz), 1 - w, 0)
    w1 = jnp.where((k1 >= 0) & (k1 < nz), w, 0)
    return jnp.clip(k0, 0, nz - 1), jnp.clip(k1, 0, nz - 1), w0, w1


def _rows_from_slices(s, geom):
    """`(Z, V, C)` slice sinograms -> `(V, R, C)` projections (linear interpolation along z)."""
    k0, k1, w0, w1 = _row_weights(geom, s.dtype)
    rows = w0[:, None, None] * s[k0] + w1[:, None, None] * s[k1]  # (R, V, C)
    return jnp.swapaxes(rows, 0, 1)


def _stack_project(x, geom, unroll):
    g2 = geom.slice_geometry()
    s = jax.vmap(lambda img: radon(img, g2, unroll=unroll))(x[:, ::-1, :])
    return _rows_from_slices(s, geom)


def _stack_backproject(y, geom, unroll):
    g2 = geom.slice_geometry()
    nz = geom.shape[0]
    slices = jax.ShapeDtypeStruct((nz,) + geom.sinogram_shape[::2], y.dtype)  # (Z, V, C)
    (s,) = jax.linear_transpose(lambda t: _rows_from_slices(t, geom), slices)(y)
    return jax.vmap(lambda t: _radon_backproject(t, g2, unroll=unroll))(s)[:, ::-1, :]


def _parallel_view(xp, ray, centre, u, v, shape, det_shape):
    """One view: `(rows, cols)` Joseph line integrals along the lines `P_rc + t ray`."""
    rows, cols = det_shape
    dtype = xp.dtype
    ray, centre, u, v = (jnp.asarray(w, dtype)[::-1] for w in (ray, centre, u, v))  # (z, y, x) order
    tc = (jnp.arange(cols, dtype=dtype) - (cols - 1) / 2)[None, :, None]
    tr = (jnp.arange(rows, dtype=dtype) - (rows - 1) / 2)[:, None, None]
    points = centre + tc * u + tr * v  # (R, C, 3)
    return _joseph(xp, points, jnp.broadcast_to(ray, points.shape), shape, det_shape)


@partial(jax.jit, static_argnums=(2, 3, 4))  # eager calls compile once per shape
def _vec_project(x, vectors, shape, det_shape, batch_size):
    xp = jnp.pad(x, _PAD).reshape(-1)
    view = jax.checkpoint(lambda w: _parallel_view(xp, *w, shape, det_shape), prevent_cse=False)
    return jax.lax.map(view, vectors, batch_size=batch_size)


@partial(jax.jit, static_argnums=(2, 3, 4))
def _vec_backproject(y, vectors, shape, det_shape, batch_size):
    primal = jax.ShapeDtypeStruct(shape, y.dtype)
    transpose = jax.linear_transpose(lambda x: _vec_project(x, vectors, shape, det_shape, batch_size), primal)
    return transpose(y)[0]


def _options(geom, unroll, batch_size):
    if isinstance(geom, Parallel3DGeometry):
        if batch_size is not None:
            raise ValueError("batch_size applies to Parallel3DVecGeometry; Parallel3DGeometry takes unroll (radon's)")
        return unroll, None
    if isinstance(geom, Parallel3DVecGeometry):
        if unroll is not None:
            raise ValueError("unroll applies to Parallel3DGeometry; Parallel3DVecGeometry takes batch_size")
        batch_size = 8 if batch_size is None else batch_size
        _check_batch_size(batch_size)
        return None, batch_size
    raise TypeError(f"geom must be a Parallel3DGeometry or Parallel3DVecGeometry, got {type(geom).__name__}")


def parallel3d_project(
    x: Float[Array, "Z Y X"], geom: Parallel3DGeometry | Parallel3DVecGeometry, *, unroll: int | None = None,
    batch_size: int | None = None,
) -> Float[Array, "views rows cols"]:
    r"""3D parallel-beam projections $Ax$ of a volume `(Z, Y, X)`: line integrals (voxel units), `(views, rows, cols)`.

    Jittable, vmappable over volumes and geometries, differentiable in `x` and in the geometry's arrays.
    `unroll` (static, `Parallel3DGeometry`: `radon`'s) and `batch_size` (static, `Parallel3DVecGeometry`:
    views per chunk, default 8) change speed and memory, not results. Usually called through `project`.

    Example:
        >>> g = Parallel3DGeometry.uniform((4, 8, 8), 6)
        >>> parallel3d_project(jnp.ones((4, 8, 8)), g).shape
        (6, 4, 12)
    """
    unroll, batch_size = _options(geom, unroll, batch_size)
    x = _check_array(x, geom.shape, "project", "a volume")
    if isinstance(geom, Parallel3DGeometry):
        return _stack_project(x, geom, unroll)
    return _vec_project(x, geom._vectors(), geom.shape, geom.det_shape, batch_size)


def parallel3d_backproject(
    y: Float[Array, "views rows cols"], geom: Parallel3DGeometry | Parallel3DVecGeometry, *,
    unroll: int | None = None, batch_size: int | None = None,
) -> Float[Array, "Z Y X"]:
    r"""The exact adjoint $A^\top y$ of `parallel3d_project` (not a filtered backprojection).

    $\langle Ax, y\rangle = \langle x, A^\top y\rangle$ to rounding. Usually called through `backproject`.

    Example:
        >>> g = Parallel3DGeometry.uniform((4, 8, 8), 6)
        >>> parallel3d_backproject(jnp.ones((6, 4, 12)), g).shape
        (4, 8, 8)
    """
    unroll, batch_size = _options(geom, unroll, batch_size)
    y = _check_array(y, geom.sinogram_shape, "backproject", "projections")
    if isinstance(geom, Parallel3DGeometry):
        return _stack_backproject(y, geom, unroll)
    return _vec_backproject(y, geom._vectors(), geom.shape, geom.det_shape, batch_size)
