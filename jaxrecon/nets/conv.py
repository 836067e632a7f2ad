r"""Multi-channel circular convolution layers computed by FFT, and the lecture notes' small CNN.

A convolutional layer with $C_\text{in}$ input and $C_\text{out}$ output channels on images of
size $H \times W$ computes

$$y_i = b_i + \sum_{j=1}^{C_\text{in}} w_{ij} * x_j, \qquad i = 1, \dots, C_\text{out},$$

where $*$ is the 2D circular (periodic) convolution
$(f * g)_n = \sum_m f_m\, g_{(n - m) \bmod (H, W)}$ with the $k_h \times k_w$ kernel $w_{ij}$
zero-padded to $H \times W$ and its centre (index $k // 2$) at the origin -- the convention of
`jaxrecon.operators.circular_convolve(x, kernel, centred=True)` and of
`scipy.ndimage.convolve(x, kernel, mode="wrap")`. By the convolution theorem
$\hat y_i = \hat b_i + \sum_j \hat w_{ij} \hat x_j$, so the layer costs
$O(C_\text{in} C_\text{out} HW + (C_\text{in} + C_\text{out}) HW \log HW)$ however large the kernel.

Note: `eqx.nn.Conv2d` (like every deep-learning library) computes a cross-correlation with zero
padding; `FFTConv2d` computes a true convolution with periodic boundary conditions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ..operators.convolution import _padded_kernel

__all__ = ["FFTConv2d", "SeedCNN"]


def _positive_int(value, name: str, owner: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner} expects `{name}` to be a positive int, got {value!r}")
    return value


def _kernel_size_pair(kernel_size, owner: str) -> tuple[int, int]:
    if isinstance(kernel_size, Sequence) and not isinstance(kernel_size, str):
        if len(kernel_size) != 2:
            raise ValueError(
                f"{owner} expects `kernel_size` to be an int or a pair (kh, kw), got {kernel_size!r}"
            )
        return tuple(_positive_int(k, "kernel_size", owner) for k in kernel_size)  # type: ignore[return-value]
    k = _positive_int(kernel_size, "kernel_size", owner)
    return (k, k)


def _float_dtype(dtype, owner: str):
    dtype = jnp.dtype(jnp.zeros(()).dtype if dtype is None else dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{owner} expects a real floating `dtype`, got {dtype}")
    return dtype


def _uniform(key: PRNGKeyArray, shape: tuple[int, ...], dtype, lim: float) -> Array:
    """IID uniform on $[-\\text{lim}, \\text{lim}]$ of `shape`.

    Drawn as a vector whose length is the next power of two and cut to size, so that eager
    initialisation compiles the random kernels once per size bucket rather than once per
    shape (each compilation takes 0.1-1 s on CPU, which dominated building a small U-Net).
    """
    n = math.prod(shape)
    m = 1 << max(n - 1, 0).bit_length()
    return jr.uniform(key, (m,), dtype, -lim, lim)[:n].reshape(shape)


def _check_image(x, channels: int, owner: str) -> Array:
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{owner} expects an array of shape (channels, H, W), got {type(x).__name__}")
    x = jnp.asarray(x)
    if x.ndim != 3:
        raise ValueError(
            f"{owner} expects one sample of shape (channels={channels}, H, W) (batch with jax.vmap), "
            f"got shape {tuple(x.shape)}"
        )
    if x.shape[0] != channels:
        raise ValueError(f"{owner} expects {channels} input channels, got shape {tuple(x.shape)}")
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        raise TypeError(f"{owner} expects a real input, got dtype {x.dtype}")
    return x


class FFTConv2d(eqx.Module):
    r"""Multi-channel 2D circular convolution by FFT: $y_i = b_i + \sum_j w_{ij} * x_j$.

    $*$ is the periodic convolution $(f * g)_n = \sum_m f_m\, g_{(n - m) \bmod (H, W)}$ with each
    kernel $w_{ij}$ ($k_h \times k_w$) zero-padded to the image and its index $(k_h//2, k_w//2)$
    at the origin: for one channel this is
    `circular_convolve(x[0], weight[0, 0], centred=True) + bias[0]`. Computed in Fourier space
    (`rfft2` of the inputs once, `rfft2` of the padded kernels, a sum over input channels,
    `irfft2`), so the cost does not grow with the kernel size. Any kernel size up to the image
    size works, even sizes included; a kernel larger than the image raises `ValueError`.

    Initialisation as `eqx.nn.Conv2d` (PyTorch's default, Kaiming-uniform with $a=\sqrt5$):
    weight and bias uniform on $[-1/\sqrt{\text{fan\_in}}, 1/\sqrt{\text{fan\_in}}]$ with
    $\text{fan\_in} = C_\text{in} k_h k_w$.

    Args:
        in_channels: $C_\text{in}$.
        out_channels: $C_\text{out}$.
        kernel_size: $k$ or $(k_h, k_w)$.
        use_bias: add the bias $b$.
        dtype: real float dtype of the parameters (default: float32, or float64 with x64 on).
        key: PRNG key for the initialisation.

    Attributes:
        weight: `(out_channels, in_channels, kh, kw)`.
        bias: `(out_channels,)`, or None without bias.

    Shapes: `(in_channels, H, W) -> (out_channels, H, W)`, one sample; batch with `jax.vmap`.
    The output dtype is the promoted dtype of the input and the parameters.

    Example:
        >>> conv = FFTConv2d(1, 4, 5, key=jax.random.key(0))
        >>> conv(jnp.ones((1, 32, 32))).shape
        (4, 32, 32)
    """

    weight: Float[Array, "out_channels in_channels kh kw"]
    bias: Float[Array, " out_channels"] | None
    in_channels: int = eqx.field(static=True)
    out_channels: int = eqx.field(static=True)
    kernel_size: tuple[int, int] = eqx.field(static=True)
    use_bias: bool = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        *,
        use_bias: bool = True,
        dtype=None,
        key: PRNGKeyArray,
    ):
        owner = "FFTConv2d"
        self.in_channels = _positive_int(in_channels, "in_channels", owner)
        self.out_channels = _positive_int(out_channels, "out_channels", owner)
        self.kernel_size = _kernel_size_pair(kernel_size, owner)
        self.use_bias = bool(use_bias)
        dtype = _float_dtype(dtype, owner)
        kh, kw = self.kernel_size
        lim = 1.0 / math.sqrt(in_channels * kh * kw)
        wkey, bkey = jr.split(key)
        self.weight = _uniform(wkey, (out_channels, in_channels, kh, kw), dtype, lim)
        self.bias = _uniform(bkey, (out_channels,), dtype, lim) if use_bias else None

    def __call__(
        self, x: Float[ArrayLike, "in_channels H W"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, "out_channels H W"]:
        """Apply the layer to one image `x` of shape `(in_channels, H, W)`; `key` is unused."""
        del key
        x = _check_image(x, self.in_channels, "FFTConv2d")
        H, W = x.shape[1:]
        kh, kw = self.kernel_size
        if kh > H or kw > W:
            raise ValueError(
                f"FFTConv2d expects a kernel no larger than the image: kernel {(kh, kw)}, "
                f"got image size {(H, W)}"
            )
        dtype = jnp.promote_types(jnp.result_type(x, self.weight), jnp.float32)
        x, w = x.astype(dtype), self.weight.astype(dtype)
        g = jax.vmap(jax.vmap(lambda k: _padded_kernel(k, (H, W), True)))(w)  # (out, in, H, W)
        gh = jnp.fft.rfft2(g, axes=(-2, -1))
        xh = jnp.fft.rfft2(x, axes=(-2, -1))
        yh = jnp.einsum("oihw,ihw->ohw", gh, xh, precision=jax.lax.Precision.HIGHEST)
        y = jnp.fft.irfft2(yh, s=(H, W), axes=(-2, -1)).astype(dtype)
        if self.bias is not None:
            y = y + self.bias.astype(dtype)[:, None, None]
        return y


class SeedCNN(eqx.Module):
    r"""The lecture notes' small fully convolutional CNN of circular (FFT) convolutions.

    With channel widths $c_0, \dots, c_L$ (default $1 \to 2 \to 4 \to 2 \to 1$), layer $l$ computes

    $$x^{l}_i = \sigma\Big(b^l_i + \sum_{j=1}^{c_{l-1}} w^l_{ij} * x^{l-1}_j\Big), \qquad i = 1, \dots, c_l,$$

    with $\sigma = \mathrm{ReLU}$ and $*$ the centred circular convolution of `FFTConv2d`. As in
    the notes, the ReLU is applied after every layer including the last,
    $x_o = \sigma(b^L_1 + \sum_j w^L_{1j} * x^{L-1}_j)$, so the output is non-negative;
    `final_activation=False` drops the last ReLU (a linear output layer).

    Args:
        channels: the widths $(c_0, \dots, c_L)$, at least two positive ints.
        kernel_size: $k$ or $(k_h, k_w)$, the same for every layer.
        final_activation: apply the ReLU after the last layer too.
        key: PRNG key for the initialisation.
        dtype: real float dtype of the parameters.

    Shapes: `(c_0, H, W) -> (c_L, H, W)`, one sample; batch with `jax.vmap`.
    Parameters: $\sum_l c_l (c_{l-1} k_h k_w + 1)$, i.e. 189 for the defaults.

    Example:
        >>> net = SeedCNN(key=jax.random.key(0))
        >>> net(jnp.ones((1, 16, 16))).shape
        (1, 16, 16)
    """

    layers: tuple[FFTConv2d, ...]
    channels: tuple[int, ...] = eqx.field(static=True)
    final_activation: bool = eqx.field(static=True)

    def __init__(
        self,
        channels: Sequence[int] = (1, 2, 4, 2, 1),
        kernel_size: int | tuple[int, int] = 3,
        *,
        final_activation: bool = True,
        key: PRNGKeyArray,
        dtype=None,
    ):
        if isinstance(channels, (str, bytes)) or not isinstance(channels, Sequence) or len(channels) < 2:
            raise ValueError(
                f"SeedCNN expects `channels` to be a sequence of at least two widths, got {channels!r}"
            )
        channels = tuple(_positive_int(c, "channels", "SeedCNN") for c in channels)
        keys = jr.split(key, len(channels) - 1)
        self.layers = tuple(
            FFTConv2d(cin, cout, kernel_size, dtype=dtype, key=k)
            for cin, cout, k in zip(channels[:-1], channels[1:], keys)
        )
        self.channels = channels
        self.final_activation = bool(final_activation)

    def __call__(
        self, x: Float[ArrayLike, "c_in H W"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, "c_out H W"]:
        """Apply the network to one image `x` of shape `(channels[0], H, W)`; `key` is unused."""
        del key
        x = _check_image(x, self.channels[0], "SeedCNN")
        last = len(self.layers) - 1
        for l, layer in enumerate(self.layers):
            x = layer(x)
            if l < last or self.final_activation:
                x = jax.nn.relu(x)
        return x
