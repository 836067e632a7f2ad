"""Forward models: geometries (2D parallel and fan beam; 3D parallel, cone and helical cone beam), X-ray
transforms and their exact adjoints, FBP, FDK, sharding over devices, convolution, Fourier, matrices, noise."""

from .cone_geometry import ConeBeamGeometry, ConeBeamVecGeometry, HelicalConeBeamGeometry
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
from .parallel3d_geometry import Parallel3DGeometry, Parallel3DVecGeometry
from .radon import RadonTransform, radon
from .sharding import SLABS_AXIS, VIEWS_AXIS, projection_mesh, sharded_backproject, sharded_project
from .views import select_views
from .xray import XRayTransform, backproject, project

__all__ = [
    "CircularConvolution",
    "ConeBeamGeometry",
    "ConeBeamVecGeometry",
    "FanBeamGeometry",
    "FanBeamVecGeometry",
    "HelicalConeBeamGeometry",
    "IdentityOperator",
    "LinearOperator",
    "MatrixOperator",
    "Parallel3DGeometry",
    "Parallel3DVecGeometry",
    "ParallelBeamGeometry",
    "RadonTransform",
    "SLABS_AXIS",
    "SubsampledFourier",
    "VIEWS_AXIS",
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
    "projection_mesh",
    "radial_mask",
    "radon",
    "select_views",
    "sharded_backproject",
    "sharded_project",
]
