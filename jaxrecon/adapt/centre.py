r"""Centre-of-rotation estimation for parallel-beam data, in one call.

For a parallel-beam sinogram the centroid of each projection follows a sinusoid: with bin centres
$s_d = (d - \tfrac{D-1}{2})\Delta + s_0$ (ASTRA's convention, `ParallelBeamGeometry`) and an image of
centroid $(\bar x, \bar y)$, the centroid of projection $\theta$ is
$\bar s(\theta) = \sum_d s_d\,y_{\theta,d}/\sum_d y_{\theta,d} = \bar x\cos\theta + \bar y\sin\theta$,
because every ray integral of a non-negative image keeps its mass. So with $u(\theta)$ the centroid
in detector coordinates *without* offset, $u(\theta) = \bar x\cos\theta + \bar y\sin\theta - s_0$: a
least-squares fit of $a\cos\theta + b\sin\theta + c$ to $u$ gives $s_0 = -c$. Exact for noise-free
data of an object that stays inside the field of view (no truncation) and a non-negative sinogram;
needs at least three angles that do not all differ by multiples of $\pi$. Measured (48 x 48 Shepp-Logan,
60 angles, tests/adapt/test_centre.py): errors <= 0.003 px on projector data, <= 0.15 px on exact line
integrals point-sampled at the bin centres (the skull's sharp edges), also with 5% noise.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from jaxrecon.operators import ParallelBeamGeometry

__all__ = ["estimate_centre", "with_centre"]


def estimate_centre(sinogram: Float[ArrayLike, "angles detectors"], geom: ParallelBeamGeometry) -> Float[Array, ""]:
    r"""The detector offset $s_0$ (pixel units) that centres `sinogram` on the rotation axis.

    `geom` gives the angles, the bin spacing and the number of bins (its own `detector_offset` is
    ignored). Use the result as `ParallelBeamGeometry(..., detector_offset=s0)` or `with_centre(geom, s0)`.
    Sign: a rotation axis that projects onto the bin at position $u_c$ (pixel units from the detector
    centre) gives $s_0 = -u_c$. Jittable, vmappable over sinograms.

    Example:
        >>> s0 = estimate_centre(y, geom)
        >>> rec = fbp(y, with_centre(geom, s0))
    """
    if not isinstance(geom, ParallelBeamGeometry):
        raise TypeError(f"estimate_centre expects a ParallelBeamGeometry, got {type(geom).__name__}")
    y = jnp.asarray(sinogram)
    if y.shape != tuple(geom.sinogram_shape):
        raise ValueError(f"estimate_centre expects a sinogram of shape {tuple(geom.sinogram_shape)}, got {y.shape}")
    if geom.num_angles < 3:
        raise ValueError(f"estimate_centre needs at least 3 angles, got {geom.num_angles}")
    dtype = jnp.result_type(y.dtype, geom.angles.dtype, jnp.float32)
    y = jnp.maximum(y.astype(dtype), 0)  # noise can make small negatives; they carry no mass
    d = jnp.arange(geom.num_detectors, dtype=dtype)
    u = (d - (geom.num_detectors - 1) / 2) * geom.detector_spacing.astype(dtype)
    mass = jnp.sum(y, axis=1)
    centroid = jnp.sum(y * u, axis=1) / jnp.where(mass > 0, mass, 1)
    w = (mass > 0).astype(dtype)  # empty projections carry no information
    t = geom.angles.astype(dtype)
    design = jnp.stack([jnp.cos(t), jnp.sin(t), jnp.ones_like(t)], axis=1) * w[:, None]
    coef, *_ = jnp.linalg.lstsq(design, centroid * w)
    return -coef[2]


def with_centre(geom: ParallelBeamGeometry, offset) -> ParallelBeamGeometry:
    """`geom` with `detector_offset` replaced by `offset` (traceable)."""
    return eqx.tree_at(lambda g: g.detector_offset, geom, jnp.asarray(offset, geom.detector_offset.dtype))
