"""Classical regularisation: iterative and direct solvers for linear inverse problems."""

from .iterate import Solution, iterate
from .kaczmarz import kaczmarz, sart
from .landweber import landweber
from .sgd import minibatch_gradient, sgd
from .tikhonov import SVD, as_matrix, cgls, decompose, nonnegative_tikhonov, svd_filter, tikhonov, tsvd

__all__ = [
    "SVD",
    "Solution",
    "as_matrix",
    "cgls",
    "decompose",
    "iterate",
    "kaczmarz",
    "landweber",
    "minibatch_gradient",
    "nonnegative_tikhonov",
    "sart",
    "sgd",
    "svd_filter",
    "tikhonov",
    "tsvd",
]
