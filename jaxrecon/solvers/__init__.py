"""Classical regularisation: iterative and direct solvers for linear inverse problems."""

from .iterate import Solution, iterate
from .landweber import landweber

__all__ = ["Solution", "iterate", "landweber"]
