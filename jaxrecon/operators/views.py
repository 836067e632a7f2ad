r"""Subsets of the views of a tomography operator: the operator of some rows of its sinogram.

For an operator $A$ with views (angles) $\theta_0, \dots, \theta_{N-1}$ and an index array
$v = (v_0, \dots, v_{M-1})$, `select_views(op, v)` is $A_v$, the same image and detector seen from
the angles $\theta_{v_0}, \dots, \theta_{v_{M-1}}$:

$$(A_v x)_i = (A x)_{v_i},\qquad\text{i.e.}\qquad A_v x = (Ax)[v],$$

computed directly from the sub-geometry (only $M$ views are projected). Indices may repeat (a view
counted twice) and need not be sorted. $A_v^*$ is the exact adjoint, as for every operator here.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, Int

from .fan_geometry import FanBeamGeometry
from .geometry import ParallelBeamGeometry
from .radon import RadonTransform
from .xray import XRayTransform

__all__ = ["select_views"]


def select_views(op: RadonTransform | XRayTransform, views: Int[ArrayLike, " M"]) -> RadonTransform | XRayTransform:
    r"""The operator of the views `views` of `op`: $A_v x = (Ax)[v]$, out_shape `(M, num_detectors)`.

    Args:
        op: a `RadonTransform`, or an `XRayTransform` of a `ParallelBeamGeometry` or `FanBeamGeometry`
            (the geometries with one angle per view).
        views: a non-empty 1-D integer array of view indices in `[0, num_angles)`; repeats allowed.
            Concrete indices are range-checked; traced ones (under `jit`) are not.

    Returns:
        An operator of the same type, with the geometry's `with_angles(angles[views])` (and the same
        `unroll` / `batch_size` / `mesh` settings).

    Example:
        >>> op = RadonTransform(ParallelBeamGeometry.uniform((32, 32), 12))
        >>> even = select_views(op, jnp.arange(0, 12, 2))
        >>> even.out_shape
        (6, 46)
        >>> bool(jnp.allclose(even(x), op(x)[::2]))
        True
    """
    if isinstance(op, RadonTransform):
        geom = op.geom
    elif isinstance(op, XRayTransform) and isinstance(op.geom, (ParallelBeamGeometry, FanBeamGeometry)):
        geom = op.geom
    else:
        what = f"an XRayTransform of a {type(op.geom).__name__}" if isinstance(op, XRayTransform) else type(op).__name__
        raise TypeError(
            "select_views expects a RadonTransform or an XRayTransform of a ParallelBeamGeometry or FanBeamGeometry "
            f"(one angle per view), got {what}"
        )
    if not hasattr(views, "shape") and not isinstance(views, (list, tuple, range)):
        raise TypeError(f"select_views expects views to be a 1-D integer array, got {type(views).__name__}")
    views = jnp.asarray(views) if not isinstance(views, np.ndarray) else views
    if views.ndim != 1 or views.shape[0] == 0 or not jnp.issubdtype(views.dtype, jnp.integer):
        raise ValueError(
            f"select_views expects a non-empty 1-D integer array of view indices, got shape {tuple(views.shape)} "
            f"and dtype {views.dtype}"
        )
    n = geom.num_angles
    try:
        concrete = np.asarray(views)
    except Exception:  # a tracer: no range check
        concrete = None
    if concrete is not None and (concrete.min() < 0 or concrete.max() >= n):
        raise ValueError(
            f"select_views expects view indices in [0, {n}) (the operator has {n} views), got indices from "
            f"{int(concrete.min())} to {int(concrete.max())}"
        )
    sub = geom.with_angles(geom.angles[jnp.asarray(views)])
    if isinstance(op, RadonTransform):
        return RadonTransform(sub, unroll=op.unroll)
    return XRayTransform(sub, unroll=op.unroll, batch_size=op.batch_size, mesh=op.mesh)
