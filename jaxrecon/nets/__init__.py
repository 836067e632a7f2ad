"""Networks (Equinox modules): FFT-convolution CNNs, U-Net, DnCNN, Flax adapters, and learned
reconstruction schemes that call any `jaxrecon.operators` operator: `model(y, op) -> x`."""

from .blocks import ConvStack, PReLU
from .conv import FFTConv2d, SeedCNN
from .flax import LinenModule, NNXModule, from_flax
from .learned_gradient import LearnedGradientDescent
from .postprocessing import PostProcessing
from .primal_dual import LearnedPrimalDual
from ._scheme import initial_reconstruction
from .unet import DnCNN, UNet
from .unrolled import LISTA, UnrolledPGD

__all__ = [
    "ConvStack",
    "DnCNN",
    "FFTConv2d",
    "LISTA",
    "LearnedGradientDescent",
    "LearnedPrimalDual",
    "LinenModule",
    "NNXModule",
    "PReLU",
    "PostProcessing",
    "SeedCNN",
    "UNet",
    "UnrolledPGD",
    "from_flax",
    "initial_reconstruction",
]
