r"""X-ray transforms split over devices: by views, by z-slabs of the volume, or both.

A `jax.sharding.Mesh` with an axis named `"views"` and/or `"slabs"` says how to split
$A = \begin{pmatrix} A_1 \\ \vdots \\ A_n \end{pmatrix}$ (views) and $A = (B_1 \cdots B_m)$ (slabs):

- **views** (every geometry): device $i$ holds the views $V_i$ of the geometry and the whole
  (replicated) image, and computes $y_{V_i} = A_{V_i} x$; the sinogram comes out split by views.
  The adjoint sums the partial backprojections: $A^\top y = \sum_i A_{V_i}^\top y_{V_i}$ (a `psum`).
  A view count that the axis does not divide is padded with copies of the last view (their
  projections are dropped, their backprojections get zero data), so any count works.
- **slabs** (cone beam): device $j$ holds the z-slab $x_j$ = `x[j*nz:(j+1)*nz]` and the geometry
  moved by the slab's centre, and computes $B_j x_j$; the projections are their sum (a `psum`), and
  the adjoint gives each device its slab $B_j^\top y$. A depth `Z` that the axis does not divide is
  padded with zero slices at the end.

With both axes the mesh is a grid: device $(i, j)$ computes $A_{V_i} B_j$'s part. Each device runs
the ordinary single-device projector (`jax.shard_map`), so the result equals the single-device one
to rounding: the views split is the same arithmetic per view, and only the sums (`psum`) run in
another order; a slab sees its interpolation partners across the cut as zeros, which adds up to
the same bilinear weights (float64: ~1e-15 relative; a ray whose dominant axis is a tie, to the last
bit, may pick the other axis on a slab). Mesh axes with other names replicate the work.

It is the same operator: exact adjoint pair, jittable, differentiable in the image and the
geometry. Usually reached through `project(x, geom, mesh=mesh)`, `backproject(y, geom, mesh=mesh)`
or `XRayTransform(geom, mesh=mesh)`.

Example:
    >>> mesh = projection_mesh()                          # all devices on the "views" axis
    >>> y = project(x, geom, mesh=mesh)                   # == project(x, geom), split by views
    >>> mesh = projection_mesh(slabs=2)                   # a (n/2, 2) grid: views x z-slabs
    >>> op = XRayTransform(cone_geom, mesh=mesh)          # op(x), op.T(y) on all devices
"""

from __future__ import annotations

import warnings
from functools import partial

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from .cone_geometry import ConeBeamGeometry, ConeBeamVecGeometry, HelicalConeBeamGeometry
from .fan_geometry import FanBeamGeometry, FanBeamVecGeometry
from .geometry import ParallelBeamGeometry
from .parallel3d_geometry import Parallel3DGeometry, Parallel3DVecGeometry

__all__ = ["SLABS_AXIS", "VIEWS_AXIS", "projection_mesh", "sharded_backproject", "sharded_project"]

#: The mesh axis the views are split over.
VIEWS_AXIS = "views"
#: The mesh axis the z-slabs of a cone-beam volume are split over.
SLABS_AXIS = "slabs"

# The array fields of each geometry that carry one entry per view (leading axis).
_VIEW_FIELDS = {
    ParallelBeamGeometry: ("angles",),
    FanBeamGeometry: ("angles",),
    FanBeamVecGeometry: ("source", "detector_centre", "detector_u"),
    ConeBeamGeometry: ("angles",),
    ConeBeamVecGeometry: ("source", "detector_centre", "detector_u", "detector_v"),
    HelicalConeBeamGeometry: ("angles", "z_positions"),
    Parallel3DGeometry: ("angles",),
    Parallel3DVecGeometry: ("ray", "detector_centre", "detector_u", "detector_v"),
}
_CONE = (ConeBeamGeometry, ConeBeamVecGeometry, HelicalConeBeamGeometry)  # the geometries "slabs" can split


def projection_mesh(slabs: int = 1, devices=None) -> Mesh:
    """A `Mesh` of `devices` (default: all, `jax.devices()`) with axes `("views", "slabs")`.

    The shape is `(len(devices) // slabs, slabs)`; `slabs=1` splits by views only.

    Example:
        >>> projection_mesh().axis_names
        ('views', 'slabs')
    """
    devices = jax.devices() if devices is None else list(devices)
    if not devices or not all(isinstance(d, jax.Device) for d in devices):
        raise TypeError(f"devices must be a non-empty sequence of jax devices, got {devices!r}")
    if len(set(devices)) != len(devices):
        raise ValueError(f"devices must be distinct, got {devices!r}")
    if isinstance(slabs, bool) or not isinstance(slabs, (int, np.integer)) or slabs < 1 or len(devices) % slabs:
        raise ValueError(f"slabs must be a positive int dividing the {len(devices)} devices, got {slabs!r}")
    grid = np.asarray(devices, dtype=object).reshape(len(devices) // slabs, slabs)
    return Mesh(grid, (VIEWS_AXIS, SLABS_AXIS))


def _axes(mesh, geom, fn: str):
    """`(views, slabs)`: the number of devices along each axis (1 if the mesh lacks it)."""
    if not isinstance(mesh, Mesh):
        raise TypeError(f"{fn} expects mesh to be a jax.sharding.Mesh (see projection_mesh), got {type(mesh).__name__}")
    if type(geom) not in _VIEW_FIELDS:
        raise TypeError(f"{fn} expects one of {', '.join(t.__name__ for t in _VIEW_FIELDS)}, got {type(geom).__name__}")
    names = mesh.axis_names
    if VIEWS_AXIS not in names and SLABS_AXIS not in names:
        raise ValueError(f"{fn} expects a mesh with an axis {VIEWS_AXIS!r} and/or {SLABS_AXIS!r}, got axes {names}")
    slabs = mesh.shape[SLABS_AXIS] if SLABS_AXIS in names else 1
    if slabs > 1 and not isinstance(geom, _CONE):
        raise ValueError(
            f"{fn}: the {SLABS_AXIS!r} axis splits the z-slabs of a cone-beam volume; a {type(geom).__name__} has "
            f"none (split it by {VIEWS_AXIS!r} only), got a mesh with {slabs} devices along {SLABS_AXIS!r}"
        )
    return (mesh.shape[VIEWS_AXIS] if VIEWS_AXIS in names else 1), slabs


def _prepared(geom, views: int, slabs: int):
    """The geometry padded to a multiple of `views` views (cone beam with slabs: in vector form).

    Returns `(geometry, leaves, treedef, leaf specs)`: per-view leaves split over `"views"`, others replicated.
    """
    if slabs > 1 and isinstance(geom, (ConeBeamGeometry, HelicalConeBeamGeometry)):
        with warnings.catch_warnings():  # its truncation warning was given when `geom` was built
            warnings.simplefilter("ignore", UserWarning)
            geom = geom.to_vec()
    fields = _VIEW_FIELDS[type(geom)]
    pad = -geom.num_angles % views
    for name in fields:
        a = getattr(geom, name)
        if a.ndim != (1 if name == "angles" else 2):
            raise ValueError(
                f"sharded projections expect one geometry, got {name} of shape {a.shape} (a batch of geometries?)"
            )
    if pad:
        grow = lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)])
        geom = eqx.tree_at(lambda g: [getattr(g, f) for f in fields], geom, [grow(getattr(geom, f)) for f in fields])
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(geom)
    spec = PartitionSpec(VIEWS_AXIS) if views > 1 else PartitionSpec()
    specs = tuple(spec if getattr(path[0], "name", None) in fields else PartitionSpec() for path, _ in with_paths)
    return geom, [a for _, a in with_paths], treedef, specs


def _slab(geom: ConeBeamVecGeometry, depth: int, nz: int) -> ConeBeamVecGeometry:
    """Slab `axis_index("slabs")` (`nz` slices) of a `(depth, Y, X)` volume, as its own centred geometry."""
    dtype = geom.source.dtype
    j = jax.lax.axis_index(SLABS_AXIS).astype(dtype)
    centre = j * nz + (nz - 1) / 2 - (depth - 1) / 2  # the slab's centre, z relative to the volume's
    shift = jnp.stack([jnp.zeros((), dtype), jnp.zeros((), dtype), centre])
    _, ny, nx = geom.shape
    return ConeBeamVecGeometry((nz, ny, nx), geom.source - shift, geom.detector_centre - shift, geom.detector_u,
                               geom.detector_v, geom.det_shape)


@partial(jax.jit, static_argnames=("treedef", "specs", "mesh", "views", "slabs", "depth", "unroll", "batch_size"))
def _project(x, leaves, *, treedef, specs, mesh, views, slabs, depth, unroll, batch_size):
    from .xray import project

    nz = x.shape[0] // slabs

    def local(x, leaves):
        geom = jax.tree.unflatten(treedef, leaves)
        if slabs > 1:
            y = project(x, _slab(geom, depth, nz), unroll=unroll, batch_size=batch_size)
            return jax.lax.psum(y, SLABS_AXIS)
        return project(x, geom, unroll=unroll, batch_size=batch_size)

    x_spec = PartitionSpec(SLABS_AXIS) if slabs > 1 else PartitionSpec()
    y_spec = PartitionSpec(VIEWS_AXIS) if views > 1 else PartitionSpec()
    # check_vma=False: the projectors' own primitives carry no varying-axis types. Its autodiff rules are
    # exact here: cotangents of inputs replicated over an axis are summed over it (psum), those of outputs
    # replicated over an axis are divided by its size, and psum transposes to psum (tested on gradients).
    run = jax.shard_map(local, mesh=mesh, in_specs=(x_spec, list(specs)), out_specs=y_spec, check_vma=False)
    return run(x, list(leaves))


@partial(jax.jit, static_argnames=("treedef", "specs", "mesh", "views", "slabs", "depth", "unroll", "batch_size"))
def _backproject(y, leaves, *, treedef, specs, mesh, views, slabs, depth, unroll, batch_size):
    from .xray import backproject

    def local(y, leaves):
        geom = jax.tree.unflatten(treedef, leaves)
        if slabs > 1:
            geom = _slab(geom, depth, -(-depth // slabs))
        x = backproject(y, geom, unroll=unroll, batch_size=batch_size)
        return jax.lax.psum(x, VIEWS_AXIS) if views > 1 else x

    x_spec = PartitionSpec(SLABS_AXIS) if slabs > 1 else PartitionSpec()
    y_spec = PartitionSpec(VIEWS_AXIS) if views > 1 else PartitionSpec()
    run = jax.shard_map(local, mesh=mesh, in_specs=(y_spec, list(specs)), out_specs=x_spec, check_vma=False)
    return run(y, list(leaves))


def _check(a, expected, fn, what):
    a = jnp.asarray(a)
    if a.shape != tuple(expected):
        raise ValueError(f"{fn} expects {what} of shape {tuple(expected)}, got {a.shape} (one sample; batch with jax.vmap)")
    if not jnp.issubdtype(a.dtype, jnp.floating):
        raise TypeError(f"{fn} expects a real floating-point {what}, got dtype {a.dtype}")
    return a


def sharded_project(x, geom, mesh: Mesh, *, unroll: int | None = None, batch_size: int | None = None):
    r"""`project(x, geom)` computed on the devices of `mesh`, split by views and/or z-slabs (module docstring).

    Args:
        x: the image `(H, W)` or volume `(Z, Y, X)` (`geom.shape`).
        geom: any geometry of `project`; `"slabs"` needs a cone-beam one.
        mesh: a `Mesh` with an axis `"views"` and/or `"slabs"` (e.g. `projection_mesh()`).
        unroll, batch_size: as for `project`.

    Returns:
        The projections `geom.sinogram_shape`, split over `"views"` when every device has the same
        number of views (otherwise the padded views are cut off and XLA picks the layout).

    Example:
        >>> y = sharded_project(x, geom, projection_mesh())
        >>> bool(jnp.allclose(y, project(x, geom)))
        True
    """
    views, slabs = _axes(mesh, geom, "sharded_project")
    x = _check(x, geom.shape, "sharded_project", "an image" if len(geom.shape) == 2 else "a volume")
    num = geom.num_angles
    geom, leaves, treedef, specs = _prepared(geom, views, slabs)
    depth = x.shape[0]
    if slabs > 1 and depth % slabs:
        x = jnp.pad(x, [(0, -depth % slabs)] + [(0, 0)] * (x.ndim - 1))
    y = _project(x, leaves, treedef=treedef, specs=specs, mesh=mesh, views=views, slabs=slabs, depth=depth,
                 unroll=unroll, batch_size=batch_size)
    return y if y.shape[0] == num else y[:num]


def sharded_backproject(y, geom, mesh: Mesh, *, unroll: int | None = None, batch_size: int | None = None):
    r"""`backproject(y, geom)`, the exact adjoint of `sharded_project`, on the devices of `mesh`.

    With `"views"`, each device backprojects its views and the partial images are summed (`psum`);
    with `"slabs"`, each device computes its z-slab of the volume (the result is split over `"slabs"`).

    Example:
        >>> x = sharded_backproject(y, geom, projection_mesh())
        >>> bool(jnp.allclose(x, backproject(y, geom)))
        True
    """
    views, slabs = _axes(mesh, geom, "sharded_backproject")
    y = _check(y, geom.sinogram_shape, "sharded_backproject", "projections")
    num = geom.num_angles
    geom, leaves, treedef, specs = _prepared(geom, views, slabs)
    if geom.num_angles != num:
        y = jnp.pad(y, [(0, geom.num_angles - num)] + [(0, 0)] * (y.ndim - 1))
    depth = geom.shape[0]
    x = _backproject(y, leaves, treedef=treedef, specs=specs, mesh=mesh, views=views, slabs=slabs, depth=depth,
                     unroll=unroll, batch_size=batch_size)
    return x if x.shape[0] == depth else x[:depth]
