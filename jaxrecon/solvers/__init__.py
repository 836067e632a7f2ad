"""Classical regularisation: iterative and direct solvers for linear inverse problems."""

from .banach import banach_landweber, duality_map
from .ista import fista, ista
from .iterate import RESULTS, Solution, any_of, iterate, solution
from .kaczmarz import kaczmarz, sart
from .landweber import landweber
from .proximal import (
    project_nonnegative,
    prox_elastic_net,
    prox_l1,
    prox_l2_squared,
    prox_nonnegative_l1,
    soft_threshold,
)
from .gradient import FiniteDifference, finite_difference, finite_difference_adjoint
from .sgd import minibatch_gradient, sgd
from .tikhonov import SVD, as_matrix, cgls, decompose, nonnegative_tikhonov, svd_filter, tikhonov, tsvd
from .tv import total_variation, tv_denoise, tv_pdhg
from .wavelets import WAVELETS, WaveletTransform, max_level, wavedec2, wavelet_filters, waverec2

__all__ = [
    "RESULTS",
    "FiniteDifference",
    "SVD",
    "Solution",
    "WAVELETS",
    "WaveletTransform",
    "any_of",
    "as_matrix",
    "banach_landweber",
    "cgls",
    "decompose",
    "duality_map",
    "finite_difference",
    "finite_difference_adjoint",
    "fista",
    "ista",
    "iterate",
    "kaczmarz",
    "landweber",
    "max_level",
    "minibatch_gradient",
    "nonnegative_tikhonov",
    "project_nonnegative",
    "prox_elastic_net",
    "prox_l1",
    "prox_l2_squared",
    "prox_nonnegative_l1",
    "sart",
    "sgd",
    "soft_threshold",
    "solution",
    "svd_filter",
    "tikhonov",
    "total_variation",
    "tsvd",
    "tv_denoise",
    "tv_pdhg",
    "wavedec2",
    "wavelet_filters",
    "waverec2",
]
