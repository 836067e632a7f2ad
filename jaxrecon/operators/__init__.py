"""Forward models: geometry, Radon transform and its exact adjoint, FBP, convolution, Fourier, matrices, noise."""

from .geometry import ParallelBeamGeometry
from .linear_operator import IdentityOperator, LinearOperator, dot_test, operator_norm

__all__ = ["IdentityOperator", "LinearOperator", "ParallelBeamGeometry", "dot_test", "operator_norm"]
