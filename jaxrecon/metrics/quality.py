r"""Image-quality metrics: PSNR, SSIM, relative error and the data-consistency residual.

All functions act on one sample (batch with `jax.vmap`), are jittable and differentiable, and
compute in the floating dtype of their inputs (float32 for float32 or integer inputs, float64 for
float64 inputs).
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Inexact, Real

__all__ = ["psnr", "ssim", "relative_error", "residual"]


def _real_pair(x, ref, name: str):
    """Validate a pair of real images of equal shape and cast them to a common float dtype."""
    for arg, what in ((x, "x"), (ref, "ref")):
        if not hasattr(arg, "shape") or not hasattr(arg, "dtype"):
            raise TypeError(f"{name} expects `{what}` to be an array, got {type(arg).__name__}")
        if jnp.iscomplexobj(arg):
            raise TypeError(f"{name} expects real images, got `{what}` of dtype {arg.dtype}")
    if tuple(x.shape) != tuple(ref.shape):
        raise ValueError(
            f"{name} expects `x` and `ref` of the same shape, got {tuple(x.shape)} and {tuple(ref.shape)}"
        )
    # float32 for integer/bool/float32 inputs, float64 if either input is float64.
    dtype = jnp.promote_types(jnp.result_type(x, ref), jnp.float32)
    return jnp.asarray(x, dtype), jnp.asarray(ref, dtype)


def _data_range(ref, data_range, dtype):
    if data_range is None:
        return jnp.max(ref) - jnp.min(ref)
    data_range = jnp.asarray(data_range)
    if data_range.ndim != 0:
        raise ValueError(f"data_range must be a scalar, got an array of shape {data_range.shape}")
    if not isinstance(data_range, jax.core.Tracer) and not float(data_range) > 0:
        raise ValueError(f"data_range must be positive (the peak value L), got {float(data_range)}")
    return data_range.astype(dtype)


def _skimage_names(name, x, ref, image_true, image_test):
    """Resolve scikit-image's keywords (`image_true=ref`, `image_test=x`) against ours (`x`, `ref`)."""
    if image_true is None and image_test is None:
        if x is None or ref is None:
            raise TypeError(f"{name} expects two images: {name}(x, ref) or {name}(image_true=ref, image_test=x)")
        return x, ref
    if x is not None or ref is not None or image_true is None or image_test is None:
        raise TypeError(
            f"{name}: pass either (x, ref) in jaxrecon's order or both of scikit-image's keywords "
            "image_true= (the reference) and image_test= (the image scored), not a mix"
        )
    return image_test, image_true


def psnr(
    x: Real[ArrayLike, "*shape"] | None = None,
    ref: Real[ArrayLike, "*shape"] | None = None,
    data_range=None,
    *,
    image_true: Real[ArrayLike, "*shape"] | None = None,
    image_test: Real[ArrayLike, "*shape"] | None = None,
) -> Float[Array, ""]:
    r"""Peak signal-to-noise ratio in dB, $10\log_{10}\big(L^2 / \tfrac{1}{N}\|x - \mathrm{ref}\|_2^2\big)$.

    The image scored comes first, the reference second (`psnr(x, ref)`); scikit-image's order is
    the reverse, `peak_signal_noise_ratio(image_true, image_test)`, so its keyword names are
    accepted too: `psnr(image_true=ref, image_test=x)` is `psnr(x, ref)`.

    Args:
        x: the test image, any shape (one sample).
        ref: the reference image, same shape as `x`.
        data_range: the peak value $L > 0$. If None, $L = \max(\mathrm{ref}) - \min(\mathrm{ref})$.
            (scikit-image instead guesses $L$ from the dtype, i.e. 1 or 2 for floats; pass
            `data_range` explicitly to compare with it.)
        image_true, image_test: scikit-image's names for `ref` and `x` (keywords only, both or none).

    Returns:
        A scalar in the inputs' float dtype; `inf` when `x == ref` (constant images included);
        `-inf` when `ref` is constant, `data_range` is None and `x != ref` (a zero peak). Equals
        `skimage.metrics.peak_signal_noise_ratio(ref, x, data_range=L)`.

    Example:
        >>> ref = jnp.linspace(0.0, 1.0, 64).reshape(8, 8)
        >>> psnr(ref + 0.01, ref)  # 40 dB
        >>> psnr(image_true=ref, image_test=ref + 0.01)  # the same, in scikit-image's words
    """
    x, ref = _skimage_names("psnr", x, ref, image_true, image_test)
    x, ref = _real_pair(x, ref, "psnr")
    L = _data_range(ref, data_range, x.dtype)
    mse = jnp.mean((x - ref) ** 2)
    return jnp.where(mse == 0, jnp.inf, 10 * jnp.log10(L**2 / jnp.where(mse == 0, 1, mse)))


def _gaussian_window(sigma: float, truncate: float, dtype) -> Array:
    """The normalised 1D Gaussian of `scipy.ndimage.gaussian_filter`, radius `int(truncate*sigma+0.5)`."""
    radius = int(truncate * sigma + 0.5)
    t = jnp.arange(-radius, radius + 1, dtype=dtype)
    w = jnp.exp(-0.5 * (t / jnp.asarray(sigma, dtype)) ** 2)
    return w / jnp.sum(w)


def _valid_filter(images: Array, w: Array) -> Array:
    """Separable 'valid' correlation of `(..., H, W)` images with the 1D window `w` on both axes."""
    k = w.shape[0]
    h, wd = images.shape[-2:]
    rows = sum(w[i] * images[..., i : h - k + 1 + i, :] for i in range(k))
    return sum(w[i] * rows[..., :, i : wd - k + 1 + i] for i in range(k))


def ssim(
    x: Real[ArrayLike, "H W"] | None = None,
    ref: Real[ArrayLike, "H W"] | None = None,
    data_range=None,
    *,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    image_true: Real[ArrayLike, "H W"] | None = None,
    image_test: Real[ArrayLike, "H W"] | None = None,
) -> Float[Array, ""]:
    r"""Mean structural similarity (Wang et al. 2004) of a 2D image `x` against `ref`.

    With Gaussian-weighted local statistics ($\sigma = 1.5$, truncated at $3.5\sigma$: an
    11-tap window $w$) $\mu_x = w * x$, $\sigma_x^2 = w * x^2 - \mu_x^2$,
    $\sigma_{xy} = w * (x\,\mathrm{ref}) - \mu_x\mu_{\mathrm{ref}}$ (population covariances),

    $$\mathrm{SSIM} = \operatorname{mean}\frac{(2\mu_x\mu_r + C_1)(2\sigma_{xr} + C_2)}
      {(\mu_x^2 + \mu_r^2 + C_1)(\sigma_x^2 + \sigma_r^2 + C_2)},\quad C_1 = (k_1L)^2,\ C_2 = (k_2L)^2,$$

    the mean taken over the pixels at least the window radius away from the border. This equals
    `skimage.metrics.structural_similarity(ref, x, data_range=L, gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False)`: skimage filters with reflecting boundaries and then
    crops the radius, so only 'valid' windows (entirely inside the image) enter the mean, and this
    implementation computes exactly those (separably, in plain `jnp`: jittable, vmappable and
    differentiable, e.g. as a training loss).

    Args:
        x: the test image, shape `(H, W)` with `H, W >= 2*radius + 1` (11 for the default sigma).
        ref: the reference image, same shape.
        data_range: $L$. If None, $L = \max(\mathrm{ref}) - \min(\mathrm{ref})$ (skimage
            requires it for float images).
        sigma, k1, k2: the window width and the stabilising constants (static Python floats).
        image_true, image_test: scikit-image's names for `ref` and `x` (keywords only, both or none;
            scikit-image's positional order is `(image_true, image_test)`, the reverse of ours).

    Returns:
        A scalar in the inputs' float dtype, 1 for `x == ref`. With a zero peak ($L = 0$: a
        constant `ref` and `data_range=None`) a window where both the numerator and the denominator
        of a factor vanish counts that factor as 1 (equal constant windows score 1, not NaN).

    Example:
        >>> ref = jnp.outer(jnp.hanning(32), jnp.hanning(32))
        >>> ssim(ref, ref)  # 1.0 (up to rounding)
        >>> jax.grad(lambda x: 1 - ssim(x, ref, data_range=1.0))(ref + 0.1).shape  # (32, 32)
    """
    x, ref = _skimage_names("ssim", x, ref, image_true, image_test)
    x, ref = _real_pair(x, ref, "ssim")
    if x.ndim != 2:
        raise ValueError(f"ssim expects 2D images of shape (H, W), got shape {tuple(x.shape)}")
    for name, value in (("sigma", sigma), ("k1", k1), ("k2", k2)):
        if not isinstance(value, (int, float)) or value < 0 or (name == "sigma" and value == 0):
            raise ValueError(f"ssim expects `{name}` to be a positive Python number, got {value!r}")
    w = _gaussian_window(float(sigma), 3.5, x.dtype)
    if min(x.shape) < w.shape[0]:
        raise ValueError(
            f"ssim expects images of at least {w.shape[0]}x{w.shape[0]} pixels (the Gaussian window "
            f"for sigma={sigma}), got shape {tuple(x.shape)}"
        )
    L = _data_range(ref, data_range, x.dtype)
    return _ssim(x, ref, L, w, float(k1), float(k2))


@functools.partial(jax.jit, static_argnums=(4, 5))
def _ssim(x, ref, L, w, k1, k2):
    # jitted so that eager calls compile one fused program instead of dispatching ~50 small ops.
    c1, c2 = (k1 * L) ** 2, (k2 * L) ** 2
    mx, mr, mxx, mrr, mxr = _valid_filter(jnp.stack([x, ref, x * x, ref * ref, x * ref]), w)
    vx, vr, vxr = mxx - mx * mx, mrr - mr * mr, mxr - mx * mr
    # A zero peak means a constant ref: its variance and covariance are exactly 0 (not rounding
    # noise), and x's variance below rounding level is 0 too, so equal constant windows score 1.
    flat = L == 0
    tiny = 64 * jnp.finfo(x.dtype).eps * mxx
    vr, vxr = jnp.where(flat, 0, vr), jnp.where(flat, 0, vxr)
    vx = jnp.where(flat & (vx <= tiny), 0, vx)
    s = _ratio(2 * mx * mr + c1, mx**2 + mr**2 + c1) * _ratio(2 * vxr + c2, vx + vr + c2)
    return jnp.mean(s)


def _ratio(num, den):
    """`num / den`, and 1 where both vanish (only possible with a zero peak, `c1 = c2 = 0`)."""
    zero = (den == 0) & (num == 0)
    return jnp.where(zero, 1, num / jnp.where(zero, 1, den))


def relative_error(x: Inexact[ArrayLike, "*shape"], ref: Inexact[ArrayLike, "*shape"]) -> Float[Array, ""]:
    r"""Relative error $\|x - \mathrm{ref}\|_2 / \|\mathrm{ref}\|_2$ (Frobenius norm over all axes).

    Real or complex arrays of equal shape; `inf`/`nan` when `ref` is zero.

    Example:
        >>> relative_error(jnp.array([1.0, 1.1]), jnp.array([1.0, 1.0]))  # 0.0707
    """
    if not hasattr(x, "shape") or not hasattr(ref, "shape"):
        raise TypeError(
            f"relative_error expects arrays, got {type(x).__name__} and {type(ref).__name__}"
        )
    if tuple(x.shape) != tuple(ref.shape):
        raise ValueError(
            f"relative_error expects `x` and `ref` of the same shape, got {tuple(x.shape)} and "
            f"{tuple(ref.shape)}"
        )
    dtype = jnp.promote_types(jnp.result_type(x, ref), jnp.float32)
    x, ref = jnp.asarray(x, dtype), jnp.asarray(ref, dtype)
    return jnp.linalg.norm((x - ref).ravel()) / jnp.linalg.norm(ref.ravel())


def residual(op: Callable[[Array], Array], x: Inexact[ArrayLike, "*in_shape"], y: Inexact[ArrayLike, "*out_shape"]) -> Float[Array, ""]:
    r"""Data-consistency residual $\|A x - y\|_2$ (Frobenius norm over all axes).

    Args:
        op: the forward operator $A$ (a `LinearOperator` or any function of one sample).
        x: a reconstruction, `op.in_shape`.
        y: the data, shape of `op(x)`.

    Example:
        >>> residual(MatrixOperator(2 * jnp.eye(2)), jnp.ones(2), jnp.array([2.0, 1.0]))  # 1.0
    """
    if not callable(op):
        raise TypeError(f"residual expects a callable operator, got {type(op).__name__}")
    if not hasattr(y, "shape"):
        raise TypeError(f"residual expects `y` to be an array, got {type(y).__name__}")
    ax = op(x)
    if tuple(ax.shape) != tuple(y.shape):
        raise ValueError(f"residual expects `y` of shape {tuple(ax.shape)} (the shape of op(x)), got {tuple(y.shape)}")
    return jnp.linalg.norm((ax - y).ravel())
