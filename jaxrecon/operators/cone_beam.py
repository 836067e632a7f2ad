r"""Cone-beam projection (3D Joseph method along each ray) and its exact adjoint, for circular
(`ConeBeamGeometry`), helical (`HelicalConeBeamGeometry`) and free (`ConeBeamVecGeometry`) views.

**Rays.** Pixel `(r, c)` of view $v$ is the line $S + t\,\rho$, $\rho = D - S + (c - \tfrac{C-1}{2})u
+ (r - \tfrac{R-1}{2})v$ (`cone_geometry.py`). Each ray steps over the voxel planes most perpendicular to
it: along its dominant axis $a = \arg\max_i |\rho_i|$ (one of $z, y, x$). Plane $k$ of that axis
(coordinate $k - \tfrac{N_a - 1}{2}$) is crossed at the fractional voxel indices

$$ p_b(k) = S_b + \tfrac{N_b - 1}{2} + \big(k - \tfrac{N_a - 1}{2} - S_a\big)\,\rho_b/\rho_a $$

on the two other axes $b$, where the plane is interpolated bilinearly (zero outside the volume), and

$$ (Ax)_{v,r,c} = \frac{\|\rho\|}{|\rho_a|} \sum_k \mathrm{bilinear}(x_{a=k};\, p_{b_1}(k), p_{b_2}(k)), $$

$\|\rho\|/|\rho_a|$ being the length of the ray between two planes (voxel units). This is the 3D form
of the 2D Joseph projectors (`fan_beam.py`).

**Adjoint.** `cone_backproject` is `jax.linear_transpose` of `cone_project`: the exact transpose by
construction (the dot test holds to rounding, float64 and float32), with the geometry's derivatives
(it is differentiable in the geometry as well). XLA turns each gather of the forward into a scatter-add:
slower than the forward on CPU (`benchmarks/cone_beam.py`, shared 2-core CPU, float32: 1.7-4.7x at 32^3
and 3.3-9.7x at 64^3, the larger `batch_size=32` at the low end). No matched gather-based adjoint yet.

**Memory.** Views run in chunks of `batch_size` through `lax.map`; inside a chunk, a loop over the
$\max(Z, Y, X)$ planes keeps working arrays of size `batch_size x rows x cols`. The loop bodies are
`jax.checkpoint`ed, so the transpose (and reverse-mode gradients) recompute each plane's indices and
weights instead of storing them for every plane and view: XLA's scratch memory for the adjoint is the
same for 32 and 128 views (2.5 MB at 32^3, 51 x 51 detector, `batch_size=8`, float32; 72 MB for
32 views without the checkpoint) and grows with `batch_size`.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .cone_geometry import ConeBeamGeometry, ConeBeamVecGeometry, HelicalConeBeamGeometry

__all__ = ["cone_backproject", "cone_project"]

_PAD = 2  # zero border: clipped indices land on zeros


def _check_batch_size(batch_size):
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")


def _view_projection(xp, src, centre, u, v, shape, det_shape):
    """One view: `(rows, cols)` Joseph line integrals through the padded flat volume `xp`."""
    rows, cols = det_shape
    dtype = xp.dtype
    # Vectors in (z, y, x) order to match the volume axes.
    src, centre, u, v = (jnp.asarray(w, dtype)[::-1] for w in (src, centre, u, v))
    tc = (jnp.arange(cols, dtype=dtype) - (cols - 1) / 2)[None, :, None]
    tr = (jnp.arange(rows, dtype=dtype) - (rows - 1) / 2)[:, None, None]
    ray = (centre - src) + tc * u + tr * v  # (R, C, 3)
    return _joseph(xp, src, ray, shape, det_shape)


def _joseph(xp, src, ray, shape, det_shape):
    """Joseph line integrals `(rows, cols)` along the lines `src + t ray` through the padded flat volume `xp`.

    `ray` `(R, C, 3)`, `src` `(3,)` (a common point: cone beam) or `(R, C, 3)` (one point per line:
    parallel beam), both in (z, y, x) order and voxel units."""
    nz, ny, nx = shape
    dtype = xp.dtype
    sizes = (nz, ny, nx)
    padded = (nz + 2 * _PAD, ny + 2 * _PAD, nx + 2 * _PAD)
    strides = (padded[1] * padded[2], padded[2], 1)
    mag = jnp.abs(ray)
    dom = jnp.argmax(mag, axis=-1)  # (R, C): 0 = z, 1 = y, 2 = x
    # The two other axes, in increasing order.
    b1 = jnp.where(dom == 0, 1, 0)
    b2 = jnp.where(dom == 2, 1, 2)
    take = lambda vec, ax: jnp.take_along_axis(vec, ax[..., None], axis=-1)[..., 0]
    src_b = jnp.broadcast_to(src, ray.shape)
    half = (jnp.asarray(sizes, dtype) - 1) / 2
    half_b = jnp.broadcast_to(half, ray.shape)
    r_a = take(ray, dom)
    s_a = take(src_b, dom)
    starts, slopes = [], []
    for b in (b1, b2):
        g = take(ray, b) / r_a
        slopes.append(g)
        starts.append(take(src_b, b) + take(half_b, b) - (take(half_b, dom) + s_a) * g)
    weight = jnp.sqrt(jnp.sum(ray * ray, axis=-1)) / jnp.abs(r_a)
    st = jnp.asarray(strides, jnp.int32)
    size = jnp.asarray(sizes, jnp.int32)
    st_a, st_1, st_2 = st[dom], st[b1], st[b2]
    n_a, n_1, n_2 = size[dom], size[b1], size[b2]
    base = _PAD * (strides[0] + strides[1] + strides[2])

    def body(k, acc):
        kk = jnp.minimum(k, n_a)  # planes past the end land on the zero border
        p1 = starts[0] + k.astype(dtype) * slopes[0]
        p2 = starts[1] + k.astype(dtype) * slopes[1]
        f1, f2 = jnp.floor(p1), jnp.floor(p2)
        w1, w2 = p1 - f1, p2 - f2
        i1 = jnp.clip(jnp.clip(f1, -_PAD, n_1.astype(dtype)).astype(jnp.int32), -_PAD, n_1)
        i2 = jnp.clip(jnp.clip(f2, -_PAD, n_2.astype(dtype)).astype(jnp.int32), -_PAD, n_2)
        flat = base + kk * st_a + i1 * st_1 + i2 * st_2
        g = lambda idx: xp.at[idx].get(mode="promise_in_bounds")
        v00, v01 = g(flat), g(flat + st_2)
        v10, v11 = g(flat + st_1), g(flat + st_1 + st_2)
        lo = v00 + w2 * (v01 - v00)
        hi = v10 + w2 * (v11 - v10)
        return acc + (lo + w1 * (hi - lo))

    # checkpoint: transposes and gradients recompute each plane's indices and weights instead of storing
    # them for every plane and view (which would take views x rows x cols x planes memory).
    body = jax.checkpoint(body, prevent_cse=False)
    acc = jax.lax.fori_loop(0, max(sizes), body, jnp.zeros(det_shape, dtype))
    return weight * acc


def _prepare(geom):
    if not isinstance(geom, (ConeBeamGeometry, ConeBeamVecGeometry, HelicalConeBeamGeometry)):
        raise TypeError(
            "geom must be a ConeBeamGeometry, HelicalConeBeamGeometry or ConeBeamVecGeometry, got "
            f"{type(geom).__name__}"
        )
    return geom._vectors()


def _check_array(a, expected, name, what):
    a = jnp.asarray(a)
    if a.shape != tuple(expected):
        raise ValueError(
            f"{name} expects {what} of shape {tuple(expected)}, got {a.shape} (one sample; batch with jax.vmap)"
        )
    if not jnp.issubdtype(a.dtype, jnp.floating):
        raise TypeError(f"{name} expects a real floating-point {what}, got dtype {a.dtype}")
    return a


@partial(jax.jit, static_argnums=(2, 3, 4))  # eager calls compile once per shape
def _project(x, vectors, shape, det_shape, batch_size):
    xp = jnp.pad(x, _PAD).reshape(-1)
    view = jax.checkpoint(lambda w: _view_projection(xp, *w, shape, det_shape), prevent_cse=False)
    return jax.lax.map(view, vectors, batch_size=batch_size)


@partial(jax.jit, static_argnums=(2, 3, 4))
def _backproject(y, vectors, shape, det_shape, batch_size):
    primal = jax.ShapeDtypeStruct(shape, y.dtype)
    transpose = jax.linear_transpose(lambda x: _project(x, vectors, shape, det_shape, batch_size), primal)
    return transpose(y)[0]


def cone_project(
    x: Float[Array, "Z Y X"], geom: ConeBeamGeometry | HelicalConeBeamGeometry | ConeBeamVecGeometry, *, batch_size: int = 8
) -> Float[Array, "views rows cols"]:
    r"""Cone-beam projections $Ax$ of a volume `(Z, Y, X)`: line integrals (voxel units), `(views, rows, cols)`.

    Jittable, vmappable over volumes and geometries, differentiable in `x` and in the geometry's arrays.
    `batch_size` (static) views are computed at once (memory grows with it, not with the views).
    Usually called through `project`.

    Example:
        >>> g = ConeBeamGeometry.uniform((8, 8, 8), 4, (16, 16), 30.0, 10.0)
        >>> cone_project(jnp.ones((8, 8, 8)), g).shape
        (4, 16, 16)
    """
    _check_batch_size(batch_size)
    vectors = _prepare(geom)
    x = _check_array(x, geom.shape, "project", "a volume")
    return _project(x, vectors, geom.shape, geom.det_shape, batch_size)


def cone_backproject(
    y: Float[Array, "views rows cols"], geom: ConeBeamGeometry | HelicalConeBeamGeometry | ConeBeamVecGeometry, *, batch_size: int = 8
) -> Float[Array, "Z Y X"]:
    r"""The exact adjoint $A^\top y$ of `cone_project` (`jax.linear_transpose`; not an FDK reconstruction).

    $\langle Ax, y\rangle = \langle x, A^\top y\rangle$ to rounding. Usually called through `backproject`.

    Example:
        >>> g = ConeBeamGeometry.uniform((8, 8, 8), 4, (16, 16), 30.0, 10.0)
        >>> cone_backproject(jnp.ones((4, 16, 16)), g).shape
        (8, 8, 8)
    """
    _check_batch_size(batch_size)
    vectors = _prepare(geom)
    y = _check_array(y, geom.sinogram_shape, "backproject", "projections")
    return _backproject(y, vectors, geom.shape, geom.det_shape, batch_size)
