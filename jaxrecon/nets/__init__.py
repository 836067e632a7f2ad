"""Networks (Equinox modules): FFT-convolution CNNs, U-Net, DnCNN, Lipschitz-constrained blocks
(`lipschitz`), gradient-step denoisers, Flax adapters, and learned reconstruction schemes that call
any `jaxrecon.operators` operator: `model(y, op) -> x`."""

from .blocks import ConvStack, PReLU
from .conv import FFTConv2d, SeedCNN
from .flax import LinenModule, NNXModule, from_flax
from .gradient_step import GradientStepDenoiser, hessian_norm
from .learned_gradient import LearnedGradientDescent
from .lipschitz import LipschitzCNN, SpectralConv2d, jacobian_penalty, spectral_normalise
from .postprocessing import PostProcessing
from .primal_dual import LearnedPrimalDual
from ._scheme import initial_reconstruction
from .unet import DnCNN, UNet
from .unrolled import LISTA, UnrolledPGD

__all__ = [
    "ConvStack",
    "DnCNN",
    "FFTConv2d",
    "GradientStepDenoiser",
    "LISTA",
    "LearnedGradientDescent",
    "LearnedPrimalDual",
    "LinenModule",
    "LipschitzCNN",
    "NNXModule",
    "PReLU",
    "PostProcessing",
    "SeedCNN",
    "SpectralConv2d",
    "UNet",
    "UnrolledPGD",
    "from_flax",
    "hessian_norm",
    "initial_reconstruction",
    "jacobian_penalty",
    "spectral_normalise",
]
