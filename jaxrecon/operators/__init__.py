"""Forward models: geometry, Radon transform and its exact adjoint, FBP, convolution, Fourier, matrices, noise."""

from .convolution import CircularConvolution, circular_convolve, circular_correlate, gaussian_kernel
from .fbp import fbp, fbp_filter
from .fourier import SubsampledFourier, cartesian_mask, radial_mask
from .geometry import ParallelBeamGeometry
from .linear_operator import IdentityOperator, LinearOperator, dot_test, operator_norm
from .matrix import MatrixOperator
from .noise import gaussian_noise, poisson_noise
from .radon import RadonTransform, backproject, radon

__all__ = [
    "CircularConvolution",
    "IdentityOperator",
    "LinearOperator",
    "MatrixOperator",
    "ParallelBeamGeometry",
    "RadonTransform",
    "SubsampledFourier",
    "backproject",
    "cartesian_mask",
    "circular_convolve",
    "circular_correlate",
    "dot_test",
    "fbp",
    "fbp_filter",
    "gaussian_kernel",
    "gaussian_noise",
    "operator_norm",
    "poisson_noise",
    "radial_mask",
    "radon",
]
