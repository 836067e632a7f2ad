r"""One X-ray transform for every geometry: `project`, its exact adjoint `backproject`, `XRayTransform`.

The functions dispatch on the geometry's type:

| geometry | forward | adjoint |
| --- | --- | --- |
| `ParallelBeamGeometry` | `radon` | the parallel-beam adjoint (`radon.py`) |
| `FanBeamGeometry` (flat or curved detector), `FanBeamVecGeometry` | `fan_project` | `fan_backproject` |

All are line integrals in pixel units with Joseph's linear interpolation, jittable, vmappable over
images and geometries and differentiable in both; `backproject` is the exact transpose of `project`.
"""

from __future__ import annotations

import equinox as eqx
from jaxtyping import Array, Float

from .radon import backproject as _parallel_backproject
from .radon import radon
from .fan_beam import fan_backproject, fan_project
from .fan_geometry import FanBeamGeometry, FanBeamVecGeometry
from .geometry import ParallelBeamGeometry
from .linear_operator import LinearOperator

__all__ = ["project", "backproject", "XRayTransform", "Geometry"]

Geometry = ParallelBeamGeometry | FanBeamGeometry | FanBeamVecGeometry


def _unsupported(geom):
    return TypeError(
        "geom must be a ParallelBeamGeometry, FanBeamGeometry or FanBeamVecGeometry, "
        f"got {type(geom).__name__}"
    )


def project(x: Float[Array, "H W"], geom: Geometry, *, unroll: int | None = None) -> Float[Array, "angles detectors"]:
    r"""Projections $Ax$ of an image `(H, W)` for any geometry: a sinogram `(num_angles, num_detectors)`.

    `ParallelBeamGeometry` runs `radon`; fan-beam geometries run `fan_project`. `unroll` (static)
    changes speed, not results.

    Example:
        >>> geom = FanBeamGeometry.uniform((64, 64), 60, source_origin=100.0, origin_detector=60.0)
        >>> project(jnp.ones((64, 64)), geom).shape
        (60, 163)
    """
    if isinstance(geom, ParallelBeamGeometry):
        return radon(x, geom, unroll=unroll)
    if isinstance(geom, (FanBeamGeometry, FanBeamVecGeometry)):
        return fan_project(x, geom, unroll=unroll)
    raise _unsupported(geom)


def backproject(y: Float[Array, "angles detectors"], geom: Geometry, *, unroll: int | None = None) -> Float[Array, "H W"]:
    r"""The exact adjoint $A^\top y$ of `project` for any geometry (not a filtered backprojection: see `fbp`).

    Example:
        >>> geom = ParallelBeamGeometry.uniform((64, 64), num_angles=30)
        >>> backproject(jnp.ones((30, 91)), geom).shape
        (64, 64)
    """
    if isinstance(geom, ParallelBeamGeometry):
        return _parallel_backproject(y, geom, unroll=unroll)
    if isinstance(geom, (FanBeamGeometry, FanBeamVecGeometry)):
        return fan_backproject(y, geom, unroll=unroll)
    raise _unsupported(geom)


class XRayTransform(LinearOperator):
    """The X-ray transform of a geometry as a `LinearOperator`: `op(x) = project(x, geom)`, `op.T(y) = backproject(y, geom)`.

    For a `ParallelBeamGeometry` it computes what `RadonTransform` does.

    Example:
        >>> op = XRayTransform(FanBeamGeometry.uniform((64, 64), 30, 100.0, 60.0))
        >>> op.in_shape, op.out_shape
        ((64, 64), (30, 163))
    """

    geom: Geometry
    unroll: int | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        if not isinstance(self.geom, (ParallelBeamGeometry, FanBeamGeometry, FanBeamVecGeometry)):
            raise _unsupported(self.geom)

    def mv(self, x):
        return project(x, self.geom, unroll=self.unroll)

    def rmv(self, y):
        return backproject(y, self.geom, unroll=self.unroll)

    @property
    def in_shape(self):
        return self.geom.shape

    @property
    def out_shape(self):
        return self.geom.sinogram_shape
