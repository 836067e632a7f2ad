"""Model adaptation to a changed forward operator (Gilton, Ongie, Willett 2021), parametric operator
families for calibration, centre-of-rotation estimation, and worst-case perturbations of reconstruction methods (Antun et al. 2020)."""

from .adaptation import (
    TikhonovSolver,
    adapt_to_dataset,
    adapt_to_measurement,
    calibrate_operator,
    naive,
    reuse_and_regularise,
)
from .centre import estimate_centre, with_centre
from .operators import (
    AngleOffset,
    BlurWidth,
    CentreShift,
    Combined,
    DetectorSpacing,
    GeometryFamily,
    OperatorFamily,
    gaussian_kernel_jax,
)
from .robustness import METHODS, Perturbation, random_perturbation, worst_case_perturbation

__all__ = [
    "AngleOffset",
    "BlurWidth",
    "CentreShift",
    "Combined",
    "DetectorSpacing",
    "GeometryFamily",
    "METHODS",
    "OperatorFamily",
    "Perturbation",
    "TikhonovSolver",
    "adapt_to_dataset",
    "adapt_to_measurement",
    "calibrate_operator",
    "estimate_centre",
    "gaussian_kernel_jax",
    "naive",
    "random_perturbation",
    "reuse_and_regularise",
    "with_centre",
    "worst_case_perturbation",
]
