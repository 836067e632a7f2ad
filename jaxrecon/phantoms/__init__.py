"""Phantoms: ellipse phantoms (modified Shepp-Logan, random ellipses) and their exact sinograms; ellipsoid
phantoms and their exact cone-beam and 3D parallel-beam projections."""

from .ellipses import (
    EllipsePhantom,
    ellipse_sinogram,
    random_ellipse_phantom,
    random_ellipses,
    rasterize,
)
from .ellipsoids import (
    EllipsoidPhantom,
    ellipsoid_projections,
    rasterize_ellipsoids,
    shepp_logan_ellipsoids,
)
from .shepp_logan import shepp_logan, shepp_logan_ellipses

__all__ = [
    "EllipsePhantom",
    "EllipsoidPhantom",
    "ellipse_sinogram",
    "ellipsoid_projections",
    "random_ellipse_phantom",
    "random_ellipses",
    "rasterize",
    "rasterize_ellipsoids",
    "shepp_logan",
    "shepp_logan_ellipses",
    "shepp_logan_ellipsoids",
]
