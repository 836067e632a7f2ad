"""Deep equilibrium models: fixed points with implicit differentiation (jaxopt forward solvers behind
our own `custom_vjp`), DEQ reconstruction schemes and contractive (spectrally normalised) regularisers."""

from .fixed_point import BACKWARD_SOLVERS, SOLVERS, AdjointSolution, FixedPointSolution, adjoint_solve, fixed_point
from .schemes import (
    DEQ_INITS,
    DEGrad,
    DEProx,
    EquilibriumRegularisation,
    LipschitzCNN,
    SpectralConv2d,
    jacobian_penalty,
    spectral_normalise,
)

__all__ = [
    "BACKWARD_SOLVERS",
    "DEGrad",
    "DEProx",
    "DEQ_INITS",
    "AdjointSolution",
    "EquilibriumRegularisation",
    "FixedPointSolution",
    "LipschitzCNN",
    "SOLVERS",
    "SpectralConv2d",
    "adjoint_solve",
    "fixed_point",
    "jacobian_penalty",
    "spectral_normalise",
]
