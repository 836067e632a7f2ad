"""Forward models: geometries (parallel, fan and cone beam), X-ray transforms and their exact adjoints, FBP, FDK,
convolution, Fourier, matrices, noise."""

from .cone_geometry import ConeBeamGeometry, ConeBeamVecGeometry
from .convolution import (
    CircularConvolution,
    circular_convolve,
    circular_correlate,
    gaussian_kernel,
)
from .fan_geometry import FanBeamGeometry, FanBeamVecGeometry
from .fbp import fbp, fbp_filter
from .fdk import fdk, fdk_central_fan
from .fourier import SubsampledFourier, cartesian_mask, radial_mask
from .geometry import ParallelBeamGeometry
from .linear_operator import IdentityOperator, LinearOperator, dot_test, operator_norm
from .matrix import MatrixOperator
from .noise import gaussian_noise, poisson_noise
from .radon import RadonTransform, radon
from .views import select_views
from .xray import XRayTransform, backproject, project

__all__ = [
    "CircularConvolution",
    "ConeBeamGeometry",
    "ConeBeamVecGeometry",
    "FanBeamGeometry",
    "FanBeamVecGeometry",
    "IdentityOperator",
    "LinearOperator",
    "MatrixOperator",
    "ParallelBeamGeometry",
    "RadonTransform",
    "SubsampledFourier",
    "XRayTransform",
    "backproject",
    "cartesian_mask",
    "circular_convolve",
    "circular_correlate",
    "dot_test",
    "fbp",
    "fbp_filter",
    "fdk",
    "fdk_central_fan",
    "gaussian_kernel",
    "gaussian_noise",
    "operator_norm",
    "poisson_noise",
    "project",
    "radial_mask",
    "radon",
    "select_views",
]
