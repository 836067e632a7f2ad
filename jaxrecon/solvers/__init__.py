"""Classical regularisation: iterative and direct solvers for linear inverse problems, and the
plug-and-play / RED iterations that take any denoiser as a callable."""

from .admm import PENALTIES, admm, linearised_admm
from .banach import banach_landweber, duality_map
from .ista import fista, ista
from .iterate import RESULTS, Solution, any_of, iterate, solution
from .kaczmarz import kaczmarz, sart, sirt
from .landweber import landweber
from .plug_and_play import gs_pnp, pnp_admm, pnp_hqs, pnp_pgd, red
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
    "PENALTIES",
    "SVD",
    "Solution",
    "WAVELETS",
    "WaveletTransform",
    "admm",
    "any_of",
    "as_matrix",
    "banach_landweber",
    "cgls",
    "decompose",
    "duality_map",
    "finite_difference",
    "finite_difference_adjoint",
    "fista",
    "gs_pnp",
    "ista",
    "iterate",
    "kaczmarz",
    "landweber",
    "linearised_admm",
    "max_level",
    "minibatch_gradient",
    "nonnegative_tikhonov",
    "pnp_admm",
    "pnp_hqs",
    "pnp_pgd",
    "project_nonnegative",
    "prox_elastic_net",
    "prox_l1",
    "prox_l2_squared",
    "prox_nonnegative_l1",
    "red",
    "sart",
    "sgd",
    "sirt",
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
