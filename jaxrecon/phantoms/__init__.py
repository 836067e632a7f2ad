"""Phantoms: ellipse phantoms (modified Shepp-Logan, random ellipses) and their exact sinograms."""

from .ellipses import EllipsePhantom, ellipse_sinogram, random_ellipse_phantom, random_ellipses, rasterize
from .shepp_logan import shepp_logan, shepp_logan_ellipses

__all__ = [
    "EllipsePhantom",
    "ellipse_sinogram",
    "random_ellipse_phantom",
    "random_ellipses",
    "rasterize",
    "shepp_logan",
    "shepp_logan_ellipses",
]
