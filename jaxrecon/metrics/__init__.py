"""Image-quality metrics: PSNR, SSIM, relative error, data-consistency residual."""

from .quality import psnr, relative_error, residual, ssim

__all__ = ["psnr", "relative_error", "residual", "ssim"]
