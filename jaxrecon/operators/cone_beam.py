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

**Rows along $z$ (circular and helical views): column tables and a gather adjoint.** When every view's
detector rows run along $z$ and its columns horizontally, and no ray steps over $z$ planes (the
geometry's static `adjoint_taps` is not `None`; see `cone_geometry.gather_adjoint_taps`), a ray's
stepping axis $a \in \{y, x\}$ and its in-plane index $p_\perp(c, k)$ depend on its column $c$ only, and
its height index on plane $k$ is affine in the row: $p_z = P_{c,k} + r\,B_{c,k}$ with
$B_{c,k} = t_{c,k}\Delta_r$, $t_{c,k} = (k - \tfrac{N_a-1}{2} - S_a)/\rho_a(c)$ the fraction of the ray's
path at the plane. The forward computes positions this way (per column and plane, then per row), and the
transpose splits into two gathers per view:

$$ a_{k,c,q_z} = \sum_r \Lambda(q_z - p_z(r, c, k))\, w_{rc}\, y_{rc}, \qquad
   (A^\top y)_{q} = \sum_c \Lambda(q_\perp - p_\perp(c, q_a))\, a_{q_a, c, q_z}, $$

$\Lambda(d) = \max(0, 1 - |d|)$ the bilinear tent: the first over the `adjoint_taps[0]` rows nearest the
ray through height $q_z$ (a $(\max(Y, X), C, Z)$ array per view), the second over the
`adjoint_taps[1]` columns nearest the ray through the voxel's $(x, y)$ (as the fan-beam adjoint),
reading whole $z$ columns. Both directions compute every position from the same column tables with the
same arithmetic (`_exact.madd_parts`: exact products, so XLA's FMA contraction cannot round them
differently), so `cone_backproject` is the exact transpose of `cone_project`: the dot test holds to
rounding in float32 too. Both are primitives (`_primitive.py`): each is the other's transpose, `vmap`
folds into a batch axis, and the geometry derivatives differentiate the kernels' weights. Views run one
at a time in the adjoint: its scratch is one view's $(\max(Y, X), C, Z)$ array plus the volume. At
128^3 with a 192^2 detector this adjoint takes about as long as the forward (8.1 and 9.0 ms per view on
2 CPU cores, `python benchmarks/geometries.py`, which compares both with mbirjax).

**Other views.** Tilted detectors (`ConeBeamVecGeometry` in general), rays steeper than the diagonal
along $z$, or a geometry built from traced values (no static `adjoint_taps`) run the per-ray Joseph
kernel above, with `jax.linear_transpose` of it as the adjoint: exact too, but XLA turns each gather
into a scatter-add, several times slower on CPU.

**Memory.** Forward views run in chunks of `batch_size` through `lax.map`; inside a chunk, a loop over the
planes keeps working arrays of size `batch_size x rows x cols`. The loop bodies are
`jax.checkpoint`ed, so the scatter transpose (and reverse-mode gradients in the geometry) recompute each
plane's indices and weights instead of storing them for every plane and view: XLA's scratch memory for
that adjoint is the same for 32 and 128 views (2.5 MB at 32^3, 51 x 51 detector, `batch_size=8`,
float32; 72 MB for 32 views without the checkpoint) and grows with `batch_size`.
"""

from __future__ import annotations

from functools import partial

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._exact import int_parts, madd, madd_int, madd_parts
from ._primitive import define, pair
from .cone_geometry import ConeBeamGeometry, ConeBeamVecGeometry, HelicalConeBeamGeometry, gather_adjoint_taps
from .geometry import _is_concrete

__all__ = ["cone_backproject", "cone_project"]

_PAD = 2  # zero border: clipped indices land on zeros


def _check_batch_size(batch_size):
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")


# --- Per-ray tables, shared by the forward and the gather adjoint ----------------------------------------


def _rays(src, centre, u, v, det_shape, dtype):
    """The source `(3,)` and ray directions `(R, C, 3)` of one view, (z, y, x) order, FMA-invariant."""
    rows, cols = det_shape
    src, centre, u, v = (jnp.asarray(w, dtype)[::-1] for w in (src, centre, u, v))
    # 2t is an integer: t u = (2t)(u/2) exactly, so madd_int stays exact for even sizes (half-integer t).
    two_c = (2 * jnp.arange(cols) - (cols - 1)).astype(dtype)[None, :, None]
    two_r = (2 * jnp.arange(rows) - (rows - 1)).astype(dtype)[:, None, None]
    base = jnp.broadcast_to(centre - src, (rows, cols, 3))
    return src, madd_int(madd_int(base, two_c, u / 2), two_r, v / 2)


def _ray_table(src, ray, shape):
    """Per ray: dominant axis, the two other axes, their (start, slope parts) and the step length."""
    dtype = ray.dtype
    dom = jnp.argmax(jnp.abs(ray), axis=-1)  # (R, C): 0 = z, 1 = y, 2 = x
    # The two other axes, in increasing order.
    b1 = jnp.where(dom == 0, 1, 0)
    b2 = jnp.where(dom == 2, 1, 2)
    take = lambda vec, ax: jnp.take_along_axis(vec, ax[..., None], axis=-1)[..., 0]
    src_b = jnp.broadcast_to(src, ray.shape)
    half_b = jnp.broadcast_to((jnp.asarray(shape, dtype) - 1) / 2, ray.shape)
    r_a = take(ray, dom)
    s_a = take(src_b, dom)
    starts, slopes = [], []
    for b in (b1, b2):
        g = take(ray, b) / r_a
        slopes.append(int_parts(g, max(shape)))
        starts.append(madd(take(src_b, b) + take(half_b, b), -(take(half_b, dom) + s_a), g))
    weight = jnp.sqrt(jnp.sum(ray * ray, axis=-1)) / jnp.abs(r_a)
    return dom, (b1, b2), starts, slopes, weight


# --- Forward ---------------------------------------------------------------------------------------------


def _joseph(xp, src, ray, shape, det_shape):
    """Joseph line integrals `(rows, cols)` along the lines `src + t ray` through the padded flat volume `xp`.

    `ray` `(R, C, 3)`, `src` `(3,)` (a common point: cone beam) or `(R, C, 3)` (one point per line:
    parallel beam), both in (z, y, x) order and voxel units."""
    nz, ny, nx = shape
    dtype = xp.dtype
    sizes = (nz, ny, nx)
    padded = (nz + 2 * _PAD, ny + 2 * _PAD, nx + 2 * _PAD)
    strides = (padded[1] * padded[2], padded[2], 1)
    dom, (b1, b2), starts, slopes, weight = _ray_table(src, ray, shape)
    st = jnp.asarray(strides, jnp.int32)
    size = jnp.asarray(sizes, jnp.int32)
    st_a, st_1, st_2 = st[dom], st[b1], st[b2]
    n_a, n_1, n_2 = size[dom], size[b1], size[b2]
    base = _PAD * (strides[0] + strides[1] + strides[2])

    def body(k, acc):
        kk = jnp.minimum(k, n_a)  # planes past the end land on the zero border
        kf = k.astype(dtype)
        p1, p2 = madd_parts(starts[0], kf, slopes[0]), madd_parts(starts[1], kf, slopes[1])
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


def _project(x, src, centre, u, v, shape, det_shape, batch_size):
    """Projections `(V, R, C)` of one volume; vectors `(V, 3)` each, (x, y, z) order."""
    xp = jnp.pad(x, _PAD).reshape(-1)

    def view(w):
        s, ray = _rays(*w, det_shape, x.dtype)
        return _joseph(xp, s, ray, shape, det_shape)

    view = jax.checkpoint(view, prevent_cse=False)
    return jax.lax.map(view, (src, centre, u, v), batch_size=batch_size)


# --- Rows along z (circular and helical views): forward and gather adjoint (module docstring) -------------


def _columns(src_xyz, centre, u, v, shape, det_shape, dtype):
    """Per-column tables of a view whose rows run along z, columns horizontally, no ray along z.

    Column c steps over the planes of axis `axis[c]` (1: y, 2: x), crossing plane k at the in-plane index
    `madd_parts(start_in, k, parts_in)` (the other horizontal axis) and at height index
    `madd_parts(P0, r, B)` on row r (`_plane`); `weight` `(R, C)` is each ray's step length."""
    src, ray = _rays(src_xyz, centre, u, v, det_shape, dtype)  # (z, y, x) order
    half = (jnp.asarray(shape, dtype) - 1) / 2
    row = ray[0]  # (C, 3): x and y are the same on every row
    axis = jnp.where(jnp.abs(row[:, 1]) >= jnp.abs(row[:, 2]), 1, 2)
    other = 3 - axis
    rho_a = jnp.take_along_axis(row, axis[:, None], axis=-1)[:, 0]
    rho_b = jnp.take_along_axis(row, other[:, None], axis=-1)[:, 0]
    g = rho_b / rho_a
    start_in = madd(src[other] + half[other], -(half[axis] + src[axis]), g)
    weight = jnp.sqrt(jnp.sum(ray * ray, axis=-1)) / jnp.abs(rho_a)
    return dict(src=src, half=half, axis=axis, rho_a=rho_a, rho_z0=row[0, 0], dr=v[2].astype(dtype),
                start_in=start_in, parts_in=int_parts(g, max(shape) + 64), weight=weight)


def _plane(col, k, rows):
    """Plane `k` of every column: height index `P0 + r B` on row r (as `(P0, parts of B)`), and the
    in-plane index. The ray is at the fraction t = (k - half_a - S_a) / rho_a of its path there."""
    src, half = col["src"], col["half"]
    t = (k - half[col["axis"]] - src[col["axis"]]) / col["rho_a"]
    p0 = madd(src[0] + half[0], t, col["rho_z0"])
    slope = int_parts(t * col["dr"], rows + 64)
    return p0, slope, madd_parts(col["start_in"], k, col["parts_in"])


def _project_view(xp, src_xyz, centre, u, v, shape, det_shape):
    """One view `(R, C)` through the padded flat volume `xp` (Joseph, as `_joseph`, column tables)."""
    nz, ny, nx = shape
    rows, cols = det_shape
    dtype = xp.dtype
    col = _columns(src_xyz, centre, u, v, shape, det_shape, dtype)
    strides = ((ny + 2 * _PAD) * (nx + 2 * _PAD), nx + 2 * _PAD, 1)
    by_y = col["axis"] == 1
    st_a, st_b = jnp.where(by_y, strides[1], 1), jnp.where(by_y, 1, strides[1])
    n_a, n_b = jnp.where(by_y, ny, nx), jnp.where(by_y, nx, ny)
    base = _PAD * sum(strides)
    r = jnp.arange(rows, dtype=dtype)[:, None]

    def body(k, acc):
        kf = k.astype(dtype)
        p0, slope, p_in = _plane(col, kf, rows)
        pz = madd_parts(p0, r, slope)  # (R, C)
        fz, fb = jnp.floor(pz), jnp.floor(p_in)
        wz, wb = pz - fz, p_in - fb
        iz = jnp.clip(jnp.clip(fz, -_PAD, nz).astype(jnp.int32), -_PAD, nz)
        ib = jnp.clip(jnp.clip(fb, -_PAD, n_b.astype(dtype)).astype(jnp.int32), -_PAD, n_b)
        flat = base + jnp.minimum(k, n_a) * st_a + ib * st_b + iz * strides[0]  # planes past the end: zeros
        # non-negative: unsigned indices skip the gathers' negative-index wrap
        flat, st_b_u, st_z = flat.astype(jnp.uint32), st_b.astype(jnp.uint32), jnp.uint32(strides[0])
        g = lambda idx: xp.at[idx].get(mode="promise_in_bounds")
        v00, v01 = g(flat), g(flat + st_b_u)
        v10, v11 = g(flat + st_z), g(flat + st_z + st_b_u)
        lo = v00 + wb * (v01 - v00)
        hi = v10 + wb * (v11 - v10)
        return acc + (lo + wz * (hi - lo))

    body = jax.checkpoint(body, prevent_cse=False)
    acc = jax.lax.fori_loop(0, max(ny, nx), body, jnp.zeros(det_shape, dtype))
    return col["weight"] * acc


def _project_columns(x, src, centre, u, v, shape, det_shape, batch_size):
    xp = jnp.pad(x, _PAD).reshape(-1)
    view = jax.checkpoint(lambda w: _project_view(xp, *w, shape, det_shape), prevent_cse=False)
    return jax.lax.map(view, (src, centre, u, v), batch_size=batch_size)


def _tent(d):
    return jnp.maximum(0.0, 1.0 - jnp.abs(d))


def _adjoint_view(y, src_xyz, centre, u, v, shape, det_shape, taps):
    """One view's share of the exact adjoint of `_project_view`, `(Y, X, Z)`."""
    nz, ny, nx = shape
    rows, cols = det_shape
    t_r, t_c = taps
    dtype = y.dtype
    get = lambda a, i: a.at[i].get(mode="promise_in_bounds")
    col = _columns(src_xyz, centre, u, v, shape, det_shape, dtype)
    src, half = col["src"], col["half"]

    # Step 1: a[k, c, q_z] = sum over the t_r rows nearest the ray through height q_z of
    # tent(q_z - p_z(r, c, k)) w y, with p_z = P0 + r B as in the forward (padded rows hold zero data).
    row_len = rows + 2 * t_r
    wy = jnp.pad((col["weight"] * y).T, ((0, 0), (t_r, t_r))).reshape(-1)  # (C * row_len,)
    col_base = (jnp.arange(cols) * row_len + t_r)[:, None]
    qz = jnp.arange(nz, dtype=dtype)[None, :]

    def plane(k):
        p0, slope, _ = _plane(col, k.astype(dtype), rows)
        p0 = p0[:, None]
        slope = tuple(s[:, None] for s in slope)
        r_mid = (qz - p0) / sum(slope)  # (C, Z): the row through height q_z
        first = (jnp.floor(jnp.clip(r_mid - t_r / 2, -t_r - 1, rows + t_r)) + 1).astype(jnp.int32)
        acc = jnp.zeros((cols, nz), dtype)
        for tap in range(t_r):
            r = jnp.clip(first + tap, -t_r, rows + t_r - 1)
            acc = acc + _tent(qz - madd_parts(p0, r.astype(dtype), slope)) * get(wy, (col_base + r).astype(jnp.uint32))
        return acc

    a = jax.lax.map(plane, jnp.arange(max(ny, nx))).reshape(-1, nz)  # (planes * C, Z)

    # Step 2: voxel (q_y, q_x) reads the t_c columns nearest the ray through its (x, y) position: column
    # c steps over plane k = q_x (x planes) or q_y (y planes) and crosses it at p_in (as in the forward).
    qy, qx = jnp.arange(ny)[:, None], jnp.arange(nx)[None, :]
    py = qy.astype(dtype) - half[1] - src[1]
    px = qx.astype(dtype) - half[2] - src[2]
    dy, dx = centre[1] - src_xyz[1], centre[0] - src_xyz[0]
    c_mid = (cols - 1) / 2 - (px * dy - py * dx) / (px * u[1] - py * u[0])  # the column through (x, y)
    first = (jnp.floor(jnp.clip(c_mid - t_c / 2, -t_c - 1, cols + t_c)) + 1).astype(jnp.int32)
    out = jnp.zeros((ny, nx, nz), dtype)
    for tap in range(t_c):
        c = first + tap
        inside = (c >= 0) & (c < cols)
        c = jnp.clip(c, 0, cols - 1).astype(jnp.uint32)  # unsigned: no negative-index wrap in the gathers
        along_x = get(col["axis"], c) == 2
        k = jnp.where(along_x, qx, qy)
        p = madd_parts(get(col["start_in"], c), k.astype(dtype), tuple(get(s, c) for s in col["parts_in"]))
        w = jnp.where(inside, _tent(jnp.where(along_x, qy, qx).astype(dtype) - p), 0)
        out = out + w[..., None] * get(a, k.astype(jnp.uint32) * cols + c)
    return out


def _adjoint_columns(y, src, centre, u, v, shape, det_shape, taps):
    """The adjoint `(Z, Y, X)` of one set of projections `(V, R, C)`, view by view."""
    nz, ny, nx = shape

    def body(i, acc):
        return acc + _adjoint_view(y[i], src[i], centre[i], u[i], v[i], shape, det_shape, taps)

    acc = jax.lax.fori_loop(0, y.shape[0], body, jnp.zeros((ny, nx, nz), y.dtype))
    return jnp.transpose(acc, (2, 0, 1))


# --- Primitives (`_primitive.py`), with four per-view geometry inputs: source, detector centre, u, v -----


def _forward(x, src, centre, u, v, *, shape, det_shape, batch_size, taps):
    del taps
    return _project_columns(x, src, centre, u, v, shape, det_shape, batch_size)


def _adjoint(y, src, centre, u, v, *, shape, det_shape, batch_size, taps):
    del batch_size
    return _adjoint_columns(y, src, centre, u, v, shape, det_shape, taps)


def _shared(raw):
    """Several samples under one geometry: the kernel vmapped over the data only."""
    return lambda vs, *geo, **statics: jax.vmap(lambda w: raw(w, *geo, **statics))(vs)


cone_project_p, _run_forward = define(
    "jaxrecon_cone_project", _forward, _shared(_forward),
    lambda geo, st: (geo[0].shape[1],) + tuple(st["det_shape"]),
)
cone_backproject_p, _run_adjoint = define(
    "jaxrecon_cone_backproject", _adjoint, _shared(_adjoint), lambda geo, st: tuple(st["shape"])
)


pair(cone_project_p, _run_forward, cone_backproject_p, _run_adjoint, "cone-beam transform")


# --- Scatter adjoint (any view) ----------------------------------------------------------------------------


@partial(jax.jit, static_argnums=(2, 3, 4))  # eager calls compile once per shape
def _project_any(x, vectors, shape, det_shape, batch_size):
    return _project(x, *vectors, shape, det_shape, batch_size)


@partial(jax.jit, static_argnums=(2, 3, 4))
def _backproject_any(y, vectors, shape, det_shape, batch_size):
    primal = jax.ShapeDtypeStruct(shape, y.dtype)
    transpose = jax.linear_transpose(lambda x: _project(x, *vectors, shape, det_shape, batch_size), primal)
    return transpose(y)[0]


# --- Public functions --------------------------------------------------------------------------------------


def _prepare(geom):
    """The geometry's vectors and the gather adjoint's taps (`None`: the scatter adjoint)."""
    if not isinstance(geom, (ConeBeamGeometry, ConeBeamVecGeometry, HelicalConeBeamGeometry)):
        raise TypeError(
            "geom must be a ConeBeamGeometry, HelicalConeBeamGeometry or ConeBeamVecGeometry, got "
            f"{type(geom).__name__}"
        )
    if all(_is_concrete(a) for a in jax.tree_util.tree_leaves(geom)):
        with jax.ensure_compile_time_eval():  # concrete vectors even inside jit
            vectors = geom._vectors()
        taps = gather_adjoint_taps(*(np.asarray(a, np.float64) for a in vectors), geom.shape, geom.det_shape)
        return vectors, taps
    vectors = geom._vectors()
    taps = geom.adjoint_taps
    if taps is not None:  # traced values, taps from the concrete ones at construction: still enough?
        rows, cols, ok = gather_adjoint_taps(*vectors, geom.shape, geom.det_shape, xp=jnp)
        bad = ~ok | (rows > taps[0]) | (cols > taps[1])
        vectors = (eqx.error_if(vectors[0], bad, (
            f"the cone-beam geometry needs more adjoint taps than its adjoint_taps {taps}, or no longer has "
            "detector rows along z: it was changed after construction; build it from the new values")),) + tuple(vectors[1:])
    return vectors, taps


def _check_array(a, expected, name, what):
    a = jnp.asarray(a)
    if a.shape != tuple(expected):
        raise ValueError(
            f"{name} expects {what} of shape {tuple(expected)}, got {a.shape} (one sample; batch with jax.vmap)"
        )
    if not jnp.issubdtype(a.dtype, jnp.floating):
        raise TypeError(f"{name} expects a real floating-point {what}, got dtype {a.dtype}")
    return a


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
    vectors, taps = _prepare(geom)
    x = _check_array(x, geom.shape, "project", "a volume")
    if taps is None:
        return _project_any(x, vectors, geom.shape, geom.det_shape, batch_size)
    geo = tuple(jnp.asarray(a, x.dtype)[None] for a in vectors)
    return cone_project_p.bind(x[None], *geo, shape=geom.shape, det_shape=geom.det_shape, batch_size=batch_size,
                               taps=taps)[0]


def cone_backproject(
    y: Float[Array, "views rows cols"], geom: ConeBeamGeometry | HelicalConeBeamGeometry | ConeBeamVecGeometry, *, batch_size: int = 8
) -> Float[Array, "Z Y X"]:
    r"""The exact adjoint $A^\top y$ of `cone_project` (not an FDK reconstruction).

    $\langle Ax, y\rangle = \langle x, A^\top y\rangle$ to rounding. Gathers for circular and helical views
    (static `geom.adjoint_taps`), else `jax.linear_transpose` (module docstring); `batch_size` is the
    latter's view chunk. Usually called through `backproject`.

    Example:
        >>> g = ConeBeamGeometry.uniform((8, 8, 8), 4, (16, 16), 30.0, 10.0)
        >>> cone_backproject(jnp.ones((4, 16, 16)), g).shape
        (8, 8, 8)
    """
    _check_batch_size(batch_size)
    vectors, taps = _prepare(geom)
    y = _check_array(y, geom.sinogram_shape, "backproject", "projections")
    if taps is None:
        return _backproject_any(y, vectors, geom.shape, geom.det_shape, batch_size)
    geo = tuple(jnp.asarray(a, y.dtype)[None] for a in vectors)
    return cone_backproject_p.bind(y[None], *geo, shape=geom.shape, det_shape=geom.det_shape,
                                   batch_size=batch_size, taps=taps)[0]
