r"""One X-ray transform for every geometry: `project`, its exact adjoint `backproject`, `XRayTransform`.

The functions dispatch on the geometry's type:

| geometry | forward | adjoint |
| --- | --- | --- |
| `ParallelBeamGeometry` | `radon` | the parallel-beam adjoint (`radon.py`) |
| `FanBeamGeometry` (flat or curved detector), `FanBeamVecGeometry` | `fan_project` | `fan_backproject` |
| `ConeBeamGeometry` (circular orbit, flat detector), `HelicalConeBeamGeometry`, `ConeBeamVecGeometry` (3D) | `cone_project` | `cone_backproject` |
| `Parallel3DGeometry` (a stack of `radon`s), `Parallel3DVecGeometry` (3D Joseph) | `parallel3d_project` | `parallel3d_backproject` |

All are line integrals in pixel (voxel) units with Joseph's linear (bilinear in 3D) interpolation,
jittable, vmappable over images and geometries and differentiable in both; `backproject` is the exact
transpose of `project`. `unroll` applies to the 2D geometries and `Parallel3DGeometry`, `batch_size`
(views per chunk) to cone beam and `Parallel3DVecGeometry`. `mesh=` (a `jax.sharding.Mesh` with an axis
`"views"` and/or `"slabs"`) computes the same on several devices, split by views and/or z-slabs
(`sharding.py`).
"""

from __future__ import annotations

import equinox as eqx
from jax.sharding import Mesh
from jaxtyping import Array, Float

from .cone_beam import cone_backproject, cone_project
from .cone_geometry import ConeBeamGeometry, ConeBeamVecGeometry, HelicalConeBeamGeometry
from .fan_beam import fan_backproject, fan_project
from .fan_geometry import FanBeamGeometry, FanBeamVecGeometry
from .geometry import ParallelBeamGeometry
from .linear_operator import LinearOperator
from .parallel3d import parallel3d_backproject, parallel3d_project
from .parallel3d_geometry import Parallel3DGeometry, Parallel3DVecGeometry
from .radon import backproject as _parallel_backproject
from .radon import radon

__all__ = ["Geometry", "XRayTransform", "backproject", "project"]

Geometry = (ParallelBeamGeometry | FanBeamGeometry | FanBeamVecGeometry | ConeBeamGeometry | HelicalConeBeamGeometry
            | ConeBeamVecGeometry | Parallel3DGeometry | Parallel3DVecGeometry)
_CONE = (ConeBeamGeometry, HelicalConeBeamGeometry, ConeBeamVecGeometry)
_PARALLEL3D = (Parallel3DGeometry, Parallel3DVecGeometry)
_GEOMETRIES = (ParallelBeamGeometry, FanBeamGeometry, FanBeamVecGeometry) + _CONE + _PARALLEL3D


def _unsupported(geom):
    return TypeError(
        "geom must be a ParallelBeamGeometry, FanBeamGeometry, FanBeamVecGeometry, ConeBeamGeometry, "
        "HelicalConeBeamGeometry, ConeBeamVecGeometry, Parallel3DGeometry or Parallel3DVecGeometry, got "
        f"{type(geom).__name__}"
    )


def _cone_options(unroll, batch_size):
    if unroll is not None:
        raise ValueError("unroll applies to the 2D geometries; cone beam takes batch_size (views per chunk)")
    return {} if batch_size is None else {"batch_size": batch_size}


def _planar_options(batch_size):
    if batch_size is not None:
        raise ValueError("batch_size applies to cone-beam geometries; the 2D geometries take unroll")


def project(x: Float[Array, "H W"], geom: Geometry, *, unroll: int | None = None,
            batch_size: int | None = None, mesh: Mesh | None = None) -> Float[Array, "angles detectors"]:
    r"""Projections $Ax$ of an image `(H, W)` for any geometry: a sinogram `(num_angles, num_detectors)`.

    `ParallelBeamGeometry` runs `radon`; fan-beam geometries run `fan_project`; cone-beam geometries
    (circular, helical, vector) run `cone_project` and 3D parallel geometries `parallel3d_project`, on a
    volume `(Z, Y, X)`, giving `(views, rows, cols)`. `unroll` (static; 2D and `Parallel3DGeometry`) and
    `batch_size` (static; cone beam and `Parallel3DVecGeometry`: views per chunk, default 8) change speed
    and memory, not results. `mesh` (static): compute on its devices, split over its axes `"views"`
    and/or `"slabs"` (cone beam), equal to the single-device result to rounding (`sharded_project`).

    Example:
        >>> geom = FanBeamGeometry.uniform((64, 64), 60, source_origin=100.0, origin_detector=60.0)
        >>> project(jnp.ones((64, 64)), geom).shape
        (60, 163)
        >>> project(jnp.ones((64, 64)), geom, mesh=projection_mesh()).shape  # on all devices
        (60, 163)
    """
    if mesh is not None:
        from .sharding import sharded_project

        return sharded_project(x, geom, mesh, unroll=unroll, batch_size=batch_size)
    if isinstance(geom, _CONE):
        return cone_project(x, geom, **_cone_options(unroll, batch_size))
    if isinstance(geom, _PARALLEL3D):
        return parallel3d_project(x, geom, unroll=unroll, batch_size=batch_size)
    if isinstance(geom, ParallelBeamGeometry):
        _planar_options(batch_size)
        return radon(x, geom, unroll=unroll)
    if isinstance(geom, (FanBeamGeometry, FanBeamVecGeometry)):
        _planar_options(batch_size)
        return fan_project(x, geom, unroll=unroll)
    raise _unsupported(geom)


def backproject(y: Float[Array, "angles detectors"], geom: Geometry, *, unroll: int | None = None,
                batch_size: int | None = None, mesh: Mesh | None = None) -> Float[Array, "H W"]:
    r"""The exact adjoint $A^\top y$ of `project` for any geometry (not a filtered backprojection: see `fbp`).

    `mesh`: on its devices, the partial backprojections of the views summed (`sharded_backproject`).

    Example:
        >>> geom = ParallelBeamGeometry.uniform((64, 64), num_angles=30)
        >>> backproject(jnp.ones((30, 91)), geom).shape
        (64, 64)
    """
    if mesh is not None:
        from .sharding import sharded_backproject

        return sharded_backproject(y, geom, mesh, unroll=unroll, batch_size=batch_size)
    if isinstance(geom, _CONE):
        return cone_backproject(y, geom, **_cone_options(unroll, batch_size))
    if isinstance(geom, _PARALLEL3D):
        return parallel3d_backproject(y, geom, unroll=unroll, batch_size=batch_size)
    if isinstance(geom, ParallelBeamGeometry):
        _planar_options(batch_size)
        return _parallel_backproject(y, geom, unroll=unroll)
    if isinstance(geom, (FanBeamGeometry, FanBeamVecGeometry)):
        _planar_options(batch_size)
        return fan_backproject(y, geom, unroll=unroll)
    raise _unsupported(geom)


class XRayTransform(LinearOperator):
    """The X-ray transform of a geometry as a `LinearOperator`: `op(x) = project(x, geom)`, `op.T(y) = backproject(y, geom)`.

    For a `ParallelBeamGeometry` it computes what `RadonTransform` does. `mesh` (static, a
    `jax.sharding.Mesh` with an axis `"views"` and/or `"slabs"`): both directions run on its devices
    (`sharded_project`, `sharded_backproject`), the same operator to rounding.

    Example:
        >>> op = XRayTransform(FanBeamGeometry.uniform((64, 64), 30, 100.0, 60.0))
        >>> op.in_shape, op.out_shape
        ((64, 64), (30, 163))
        >>> sharded = XRayTransform(op.geom, mesh=projection_mesh())  # split by views over all devices
    """

    geom: Geometry
    unroll: int | None = eqx.field(static=True, default=None)
    batch_size: int | None = eqx.field(static=True, default=None)
    mesh: Mesh | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        if not isinstance(self.geom, _GEOMETRIES):
            raise _unsupported(self.geom)
        if self.mesh is not None and not isinstance(self.mesh, Mesh):
            raise TypeError(f"mesh must be a jax.sharding.Mesh or None, got {type(self.mesh).__name__}")

    def mv(self, x):
        return project(x, self.geom, unroll=self.unroll, batch_size=self.batch_size, mesh=self.mesh)

    def rmv(self, y):
        return backproject(y, self.geom, unroll=self.unroll, batch_size=self.batch_size, mesh=self.mesh)

    @property
    def in_shape(self):
        return self.geom.shape

    @property
    def out_shape(self):
        return self.geom.sinogram_shape
