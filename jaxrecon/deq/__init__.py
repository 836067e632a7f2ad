"""Deep equilibrium models: fixed points with implicit differentiation (jaxopt forward solvers behind
our own `custom_vjp`), DEQ reconstruction schemes; the contractive
(spectrally normalised) regularisers live in `jaxrecon.nets.lipschitz` and are re-exported here."""

from .fixed_point import BACKWARD_SOLVERS, SOLVERS, AdjointSolution, FixedPointSolution, adjoint_solve, fixed_point
from ..nets.lipschitz import LipschitzCNN, SpectralConv2d, jacobian_penalty, spectral_normalise  # moved; old names kept
from .schemes import DEQ_INITS, DEGrad, DEProx, EquilibriumRegularisation

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
