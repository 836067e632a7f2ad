r"""Image-to-image networks for post-processing: the FBPConvNet-style U-Net and DnCNN.

Both act on ONE image of shape `(C, H, W)` (channels first, like `eqx.nn.Conv2d`) and return an
image of the same spatial size; batch with `jax.vmap`. Neither uses batch normalisation (it
carries state across a batch); the U-Net offers stateless group normalisation instead.

- `UNet`: Jin, McCann, Froustey, Unser, "Deep convolutional neural network for inverse problems
  in imaging", IEEE TIP 2017 (FBPConvNet), after Ronneberger et al. 2015.
- `DnCNN`: Zhang, Zuo, Chen, Meng, Zhang, "Beyond a Gaussian denoiser: residual learning of deep
  CNN for image denoising", IEEE TIP 2017.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jax import lax
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .conv import FFTConv2d, _check_image, _float_dtype, _positive_int, _uniform

__all__ = ["UNet", "DnCNN"]

_PAD_MODES = {"reflect": "reflect", "zeros": "constant"}


def _eqx_conv(cls, *args, key: PRNGKeyArray, dtype, **kwargs):
    """`cls(*args, **kwargs)` (`eqx.nn.Conv2d` or `eqx.nn.ConvTranspose2d`, with bias) initialised as
    Equinox does, $U(\\pm 1/\\sqrt{\\text{fan\\_in}})$, but drawn by `_uniform` (cached compilations)."""
    conv = eqx.filter_eval_shape(cls, *args, dtype=dtype, key=key, **kwargs)  # shapes only
    lim = 1.0 / math.sqrt(math.prod(conv.weight.shape[1:]))
    wkey, bkey = jr.split(key)
    weight = _uniform(wkey, conv.weight.shape, dtype, lim)
    bias = _uniform(bkey, conv.bias.shape, dtype, lim)
    return eqx.tree_at(lambda c: (c.weight, c.bias), conv, (weight, bias))


class _DoubleConv(eqx.Module):
    """Two 3x3 zero-padded ("SAME") convolutions, each followed by (optional GroupNorm and) ReLU."""

    conv1: eqx.nn.Conv2d
    conv2: eqx.nn.Conv2d
    norm1: eqx.nn.GroupNorm | None
    norm2: eqx.nn.GroupNorm | None

    def __init__(self, cin: int, cout: int, norm_groups: int | None, dtype, key):
        k1, k2 = jr.split(key)
        self.conv1 = _eqx_conv(eqx.nn.Conv2d, cin, cout, 3, padding="SAME", dtype=dtype, key=k1)
        self.conv2 = _eqx_conv(eqx.nn.Conv2d, cout, cout, 3, padding="SAME", dtype=dtype, key=k2)
        if norm_groups is None:
            self.norm1 = self.norm2 = None
        else:
            self.norm1 = eqx.nn.GroupNorm(norm_groups, cout, dtype=dtype)
            self.norm2 = eqx.nn.GroupNorm(norm_groups, cout, dtype=dtype)

    def __call__(self, x: Array) -> Array:
        for conv, norm in ((self.conv1, self.norm1), (self.conv2, self.norm2)):
            x = conv(x)
            if norm is not None:
                x = norm(x)
            x = jax.nn.relu(x)
        return x


def _max_pool2(x: Array) -> Array:
    """2x2 max pooling with stride 2 of `(C, H, W)`, H and W even."""
    c, h, w = x.shape
    return x.reshape(c, h // 2, 2, w // 2, 2).max(axis=(2, 4))


class UNet(eqx.Module):
    r"""FBPConvNet-style U-Net (Jin et al. 2017): $x \mapsto x + U_\theta(x)$ with `residual=True`.

    Architecture with base width $c$ = `channels` and $L$ = `levels` resolutions:

    - encoder, level $l = 0, \dots, L-1$: [2x2 max pooling if $l > 0$], two 3x3 convolutions with
      zero ("SAME") padding, each followed by ReLU, $c\,2^l$ channels;
    - decoder, level $l = L-2, \dots, 0$: 2x2 transposed convolution with stride 2 from
      $c\,2^{l+1}$ to $c\,2^l$ channels followed by ReLU (FBPConvNet's up-convolution, without its
      batch norm), concatenation with the encoder features of level $l$ (skip connection), then
      two 3x3 convolutions + ReLU;
    - a final 1x1 convolution to `out_channels` (no activation).

    With `residual=True` (needs `in_channels == out_channels`) the output is $x + U_\theta(x)$,
    so the network learns the correction (the artefacts of an FBP, say). The final 1x1
    convolution keeps the standard initialisation, so at initialisation the output is not
    exactly $x$; set `final` to zero (e.g. with `eqx.tree_at`) to start from the identity.

    Any $H, W$: the image is padded up to a multiple of $2^{L-1}$ (split as evenly as possible
    between both sides, by reflection with `padding_mode="reflect"`, the default, or with zeros
    with `"zeros"`) and the output cropped back. Convolutions are `eqx.nn.Conv2d`, initialised
    as in Equinox; the input is cast to the parameters' dtype.

    Args:
        in_channels: channels of the input image.
        out_channels: channels of the output image.
        channels: base width $c$ (FBPConvNet uses 64).
        levels: number of resolutions $L \ge 1$ (FBPConvNet uses 5); $L - 1$ poolings.
        residual: add the input to the output.
        padding_mode: "reflect" or "zeros", how images are padded to a multiple of $2^{L-1}$.
        norm_groups: if an int, a GroupNorm with that many groups (must divide `channels`)
            after every 3x3 convolution, before its ReLU; None (default) for none.
        key: PRNG key for the initialisation.
        dtype: real float dtype of the parameters.

    Shapes: `(in_channels, H, W) -> (out_channels, H, W)`, one sample; batch with `jax.vmap`.

    Example:
        >>> net = UNet(channels=8, levels=3, key=jax.random.key(0))
        >>> net(jnp.ones((1, 20, 23))).shape
        (1, 20, 23)
    """

    encoder: tuple[_DoubleConv, ...]
    ups: tuple[eqx.nn.ConvTranspose2d, ...]
    decoder: tuple[_DoubleConv, ...]
    final: eqx.nn.Conv2d
    in_channels: int = eqx.field(static=True)
    out_channels: int = eqx.field(static=True)
    channels: int = eqx.field(static=True)
    levels: int = eqx.field(static=True)
    residual: bool = eqx.field(static=True)
    padding_mode: str = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: int = 32,
        levels: int = 4,
        *,
        residual: bool = True,
        padding_mode: str = "reflect",
        norm_groups: int | None = None,
        key: PRNGKeyArray,
        dtype=None,
    ):
        owner = "UNet"
        in_channels = _positive_int(in_channels, "in_channels", owner)
        out_channels = _positive_int(out_channels, "out_channels", owner)
        channels = _positive_int(channels, "channels", owner)
        levels = _positive_int(levels, "levels", owner)
        dtype = _float_dtype(dtype, owner)
        if residual and in_channels != out_channels:
            raise ValueError(
                f"UNet with residual=True expects in_channels == out_channels, "
                f"got in_channels={in_channels}, out_channels={out_channels}"
            )
        if padding_mode not in _PAD_MODES:
            raise ValueError(f"UNet expects padding_mode in {sorted(_PAD_MODES)}, got {padding_mode!r}")
        if norm_groups is not None:
            norm_groups = _positive_int(norm_groups, "norm_groups", owner)
            if channels % norm_groups:
                raise ValueError(
                    f"UNet expects norm_groups to divide channels={channels}, got norm_groups={norm_groups}"
                )
        widths = [channels * 2**l for l in range(levels)]
        kenc, kup, kdec, kfin = jr.split(key, 4)
        kenc, kup, kdec = jr.split(kenc, levels), jr.split(kup, levels), jr.split(kdec, levels)
        self.encoder = tuple(
            _DoubleConv(in_channels if l == 0 else widths[l - 1], widths[l], norm_groups, dtype, kenc[l])
            for l in range(levels)
        )
        # ups[i] and decoder[i] act at level l = levels - 2 - i (coarse to fine).
        dec_levels = range(levels - 2, -1, -1)
        self.ups = tuple(
            _eqx_conv(eqx.nn.ConvTranspose2d, widths[l + 1], widths[l], 2, stride=2, dtype=dtype, key=kup[l])
            for l in dec_levels
        )
        self.decoder = tuple(
            _DoubleConv(2 * widths[l], widths[l], norm_groups, dtype, kdec[l]) for l in dec_levels
        )
        self.final = _eqx_conv(eqx.nn.Conv2d, widths[0], out_channels, 1, dtype=dtype, key=kfin)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.channels, self.levels = channels, levels
        self.residual = bool(residual)
        self.padding_mode = padding_mode

    def __call__(
        self, x: Float[ArrayLike, "in_channels H W"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, "out_channels H W"]:
        """Apply the U-Net to one image `x` of shape `(in_channels, H, W)`; `key` is unused."""
        del key
        x = _check_image(x, self.in_channels, "UNet").astype(self.final.weight.dtype)
        H, W = x.shape[1:]
        m = 2 ** (self.levels - 1)
        if min(H, W) < m:
            raise ValueError(
                f"UNet with {self.levels} levels pools {self.levels - 1} times and needs images of at least "
                f"{m}x{m} pixels, got {H}x{W}; use levels <= {min(H, W).bit_length()}"
            )
        ph, pw = -H % m, -W % m
        pads = ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2))
        h = jnp.pad(x, pads, mode=_PAD_MODES[self.padding_mode]) if ph or pw else x
        skips = []
        for l, block in enumerate(self.encoder):
            if l > 0:
                h = _max_pool2(h)
            h = block(h)
            skips.append(h)
        skips.pop()  # the coarsest level has no skip connection
        for up, block in zip(self.ups, self.decoder):
            h = jax.nn.relu(up(h))
            h = block(jnp.concatenate([skips.pop(), h], axis=0))
        out = self.final(h)[:, pads[1][0] : pads[1][0] + H, pads[2][0] : pads[2][0] + W]
        return x + out if self.residual else out


class DnCNN(eqx.Module):
    r"""DnCNN (Zhang et al. 2017), the residual denoiser $x \mapsto x - R_\theta(x)$.

    $R_\theta$ is a plain stack of `depth` convolutions with `features` channels: conv + ReLU,
    `depth - 2` times conv + ReLU, and a last conv back to `channels`; it estimates the noise,
    which is subtracted from the input (residual learning). No batch normalisation (the paper's
    middle layers have BN; here they have a bias instead). The `depth - 2` identical middle
    layers are stored stacked (leading axis `depth - 2`) and applied with `lax.scan`; `unroll`
    (static, default True) unrolls that scan in XLA, because XLA CPU runs a convolution inside a
    while loop ~20x slower than outside one (jax 0.10.2); `unroll=1` keeps the loop (compile time
    independent of the depth, the better choice on GPU).

    Convolutions are `eqx.nn.Conv2d` with zero ("SAME") padding, or with `circular=True`
    `FFTConv2d` (periodic boundary conditions, centred kernels; the image must be at least
    `kernel_size` in each dimension). The input is cast to the parameters' dtype.

    Noise-level conditioning (`conditional=True`, as FFDNet, Zhang et al. 2018, and DRUNet, Zhang
    et al. 2021): one denoiser for a range of noise levels. The call then takes the noise standard
    deviation $\sigma$ and feeds it as an extra constant input channel,
    $x \mapsto x - R_\theta([x, \sigma\mathbf 1])$; $\sigma$ is in the units of the image (the
    absolute standard deviation of the Gaussian noise on it). Without conditioning `noise_level`
    must be left out.

    Args:
        channels: image channels (input and output).
        features: width of the hidden layers (64 in the paper).
        depth: number of convolutions, >= 2 (17 in the paper for known noise level).
        kernel_size: side of the square kernels (3 in the paper).
        circular: use FFT circular convolutions instead of zero-padded ones.
        conditional: take the noise level as an input (one more input channel to the first layer).
        unroll: `lax.scan`'s unroll of the middle layers (see above).
        key: PRNG key for the initialisation.
        dtype: real float dtype of the parameters.

    Shapes: `(channels, H, W) -> (channels, H, W)`, one sample; batch with `jax.vmap`.

    Example:
        >>> net = DnCNN(features=16, depth=5, key=jax.random.key(0))
        >>> net(jnp.ones((1, 24, 24))).shape
        (1, 24, 24)
        >>> blind = DnCNN(features=16, depth=5, conditional=True, key=jax.random.key(0))
        >>> blind(jnp.ones((1, 24, 24)), noise_level=0.05).shape
        (1, 24, 24)
    """

    first: eqx.nn.Conv2d | FFTConv2d
    middle: eqx.nn.Conv2d | FFTConv2d | None
    last: eqx.nn.Conv2d | FFTConv2d
    channels: int = eqx.field(static=True)
    features: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    circular: bool = eqx.field(static=True)
    unroll: int | bool = eqx.field(static=True)
    conditional: bool = eqx.field(static=True, default=False)

    def __init__(
        self,
        channels: int = 1,
        features: int = 64,
        depth: int = 17,
        *,
        kernel_size: int = 3,
        circular: bool = False,
        conditional: bool = False,
        unroll: int | bool = True,
        key: PRNGKeyArray,
        dtype=None,
    ):
        owner = "DnCNN"
        channels = _positive_int(channels, "channels", owner)
        features = _positive_int(features, "features", owner)
        depth = _positive_int(depth, "depth", owner)
        kernel_size = _positive_int(kernel_size, "kernel_size", owner)
        if depth < 2:
            raise ValueError(f"DnCNN expects depth >= 2, got depth={depth}")
        dtype = _float_dtype(dtype, owner)
        if not isinstance(conditional, bool):
            raise TypeError(f"DnCNN expects `conditional` to be a bool, got {conditional!r}")

        def conv(cin, cout, k):
            if circular:
                return FFTConv2d(cin, cout, kernel_size, dtype=dtype, key=k)
            return _eqx_conv(eqx.nn.Conv2d, cin, cout, kernel_size, padding="SAME", dtype=dtype, key=k)

        kfirst, kmid, klast = jr.split(key, 3)
        self.first = conv(channels + int(conditional), features, kfirst)
        if depth > 2:
            layers = [conv(features, features, k) for k in jr.split(kmid, depth - 2)]
            self.middle = jax.tree.map(lambda *a: jnp.stack(a), *layers)
        else:
            self.middle = None
        self.last = conv(features, channels, klast)
        self.channels, self.features, self.depth = channels, features, depth
        self.circular = bool(circular)
        self.unroll = unroll
        self.conditional = conditional

    def __call__(
        self,
        x: Float[ArrayLike, "channels H W"],
        noise_level: Float[ArrayLike, ""] | None = None,
        *,
        key: PRNGKeyArray | None = None,
    ) -> Float[Array, "channels H W"]:
        """Denoise one image `x` of shape `(channels, H, W)`; `noise_level` (sigma, a scalar) is
        required by a conditional DnCNN and refused by the others; `key` is unused."""
        del key
        x = _check_image(x, self.channels, "DnCNN").astype(self.first.weight.dtype)
        if self.conditional:
            if noise_level is None:
                raise TypeError("this DnCNN is conditional: call it as net(x, noise_level) with the noise's sigma")
            level = jnp.asarray(noise_level)
            if level.ndim != 0 or not jnp.issubdtype(level.dtype, jnp.number) or jnp.iscomplexobj(level):
                raise ValueError(
                    f"DnCNN expects noise_level to be a real scalar, got shape {tuple(level.shape)} and dtype {level.dtype}"
                )
            level = jnp.broadcast_to(level.astype(x.dtype), (1, *x.shape[1:]))
            h = jax.nn.relu(self.first(jnp.concatenate([x, level])))
        elif noise_level is not None:
            raise TypeError("this DnCNN takes no noise_level (build it with conditional=True for one that does)")
        else:
            h = jax.nn.relu(self.first(x))
        if self.middle is not None:
            params, static = eqx.partition(self.middle, eqx.is_array)

            def step(h, p):
                return jax.nn.relu(eqx.combine(p, static)(h)), None

            h, _ = lax.scan(step, h, params, unroll=self.unroll)
        return x - self.last(h)
