r"""Lipschitz-constrained network blocks: spectrally normalised convolutions, a Lipschitz CNN, and a
Jacobian penalty.

`SpectralConv2d` rescales its kernel so that the zero-padded convolution has operator norm at most
`bound` on `(H, W)` images (an exact bound from the per-frequency SVD of the kernel spectrum);
`LipschitzCNN` stacks them with ReLU into a network with $\mathrm{Lip} \le L$ by construction
(or its residual $x - N(x)$, strongly monotone); `spectral_normalise` freezes the rescaling of every
such layer in a model once before a loop; `jacobian_penalty` estimates $\|\partial f/\partial z\|_F^2$
(Hutchinson) for training losses that encourage contractivity. The deep equilibrium schemes
(`jaxrecon.deq`) use them as contractive regularisers, and plug-and-play iterations as denoisers
with a known Lipschitz constant.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from ._scheme import check_positive_int
from .conv import _check_image, _float_dtype, _positive_int, _uniform

__all__ = ["SpectralConv2d", "LipschitzCNN", "spectral_normalise", "jacobian_penalty"]




class SpectralConv2d(eqx.Module):
    r"""A zero-padded ("SAME") 2D convolution layer whose operator norm is kept $\le$ `bound`.

    Computes the cross-correlation $y_o = b_o + \sum_i w_{oi} \star x_i$ (like `eqx.nn.Conv2d`) with
    the weight $w \cdot \min(1, c/\sigma(w))$, where $c$ = `bound` and

    $$ \sigma(w) = \max_{\omega} \sigma_{\max}\big(\hat w(\omega)\big), \qquad
       \hat w(\omega) \in \mathbb{C}^{C_\text{out}\times C_\text{in}},\ \omega \text{ on the }
       (H + k_h - 1)\times(W + k_w - 1) \text{ DFT grid}, $$

    an upper bound of the norm of the convolution (without bias) as a linear map on $H\times W$
    images: the zero-padded convolution is a restriction of the circular convolution on that grid
    (no wrap-around), whose singular values are those of the per-frequency matrices $\hat w(\omega)$.
    The bias does not change the Lipschitz constant. `normalised(shape)` returns a copy whose
    weight is already rescaled for `(H, W)` images (`frozen=True`: no recomputation per call);
    the schemes do this once per call via `spectral_normalise`.

    Differentiation: reverse mode (and reverse-over-reverse) only. A custom VJP computes the
    input-gradient as the correlation with the flipped, channel-swapped kernel, which XLA CPU keeps
    fast inside while loops, unlike JAX's default transpose (10 layers, forward + gradient in a loop:
    187 ms -> 27 ms, `benchmarks/xla_cpu_loops.py`); `jax.jvp` raises.

    Shapes: `(in_channels, H, W) -> (out_channels, H, W)`.

    Example:
        >>> conv = SpectralConv2d(2, 3, bound=0.5, key=jax.random.key(0))
        >>> conv(jnp.ones((2, 8, 8))).shape, conv.normalised((8, 8)).spectral_norm((8, 8)) <= 0.5
        ((3, 8, 8), Array(True, dtype=bool))
    """

    weight: Float[Array, "out in kh kw"]
    bias: Float[Array, " out"]
    bound: float = eqx.field(static=True)
    frozen: bool = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        bound: float = 1.0,
        key: PRNGKeyArray,
        dtype=None,
    ):
        owner = "SpectralConv2d"
        in_channels = _positive_int(in_channels, "in_channels", owner)
        out_channels = _positive_int(out_channels, "out_channels", owner)
        kernel_size = _positive_int(kernel_size, "kernel_size", owner)
        if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not 0 < bound < math.inf:
            raise ValueError(f"{owner} expects a finite bound > 0, got {bound!r}")
        dtype = _float_dtype(dtype, owner)
        lim = 1.0 / math.sqrt(in_channels * kernel_size**2)  # Equinox's default initialisation
        wkey, bkey = jr.split(key)
        self.weight = _uniform(wkey, (out_channels, in_channels, kernel_size, kernel_size), dtype, lim)
        self.bias = _uniform(bkey, (out_channels,), dtype, lim)
        self.bound = float(bound)
        self.frozen = False

    def spectral_norm(self, shape: tuple[int, int]) -> Float[Array, ""]:
        r"""$\sigma(w)$ for `(H, W)` images (of the current weight, before any rescaling)."""
        h, w = _check_shape(shape, "SpectralConv2d.spectral_norm")
        kh, kw = self.weight.shape[2:]
        spectrum = jnp.fft.rfft2(self.weight, s=(h + kh - 1, w + kw - 1))  # (out, in, n1, n2 // 2 + 1)
        spectrum = jnp.moveaxis(spectrum, (0, 1), (-2, -1))
        if min(spectrum.shape[-2:]) == 1:  # a row or column per frequency: its Euclidean norm
            sigma = jnp.sqrt(jnp.sum(jnp.abs(spectrum) ** 2, axis=(-2, -1)))
            return jnp.max(sigma)
        # The largest singular value at every frequency without gradient; then the SVD of the
        # maximising frequency alone, differentiated: the same value and the gradient of the max
        # (one small SVD in the backward pass instead of one per frequency: 0.9 -> 0.38 s for the
        # normalisation and gradient of a 32-feature LipschitzCNN at 64 x 64).
        flat = spectrum.reshape(-1, *spectrum.shape[-2:])
        sigmas = jnp.linalg.svd(jax.lax.stop_gradient(flat), compute_uv=False)[:, 0]
        return jnp.linalg.svd(flat[jnp.argmax(sigmas)], compute_uv=False)[0]

    def normalised(self, shape: tuple[int, int]) -> SpectralConv2d:
        """A frozen copy with the weight rescaled to operator norm $\\le$ `bound` on `(H, W)` images."""
        if self.frozen:
            return self
        sigma = self.spectral_norm(shape)
        scale = jnp.minimum(1, self.bound / jnp.maximum(sigma, jnp.finfo(sigma.dtype).tiny))
        return _replace(self, weight=self.weight * scale.astype(self.weight.dtype), frozen=True)

    def __call__(self, x: Float[Array, "in H W"]) -> Float[Array, "out H W"]:
        x = _check_image(x, self.weight.shape[1], "SpectralConv2d").astype(self.weight.dtype)
        layer = self if self.frozen else self.normalised(x.shape[1:])
        y = _same_conv(jnp.moveaxis(x, 0, -1)[None], jnp.transpose(layer.weight, (2, 3, 1, 0)))[0]
        return jnp.moveaxis(y, -1, 0) + layer.bias[:, None, None]


# Channels-last with an HWIO kernel, forward AND input-gradient: XLA CPU (jax 0.10.2) runs an NCHW
# convolution inside a while loop (the fixed-point iterations) ~20x slower than outside one, and
# JAX's own transpose of the NHWC/HWIO convolution (an HWOI kernel) much slower inside the backward
# solve's while loop (benchmarks/xla_cpu_loops.py: 10 layers, forward + gradient in a loop 187 ms,
# with this VJP 27 ms, unrolled 17 ms). The transpose of a stride-1 correlation with padding (lo, hi) is the
# correlation with the spatially flipped, channel-swapped kernel and padding (hi, lo): written so,
# the input-gradient keeps the fast path. A custom VJP: reverse mode (also reverse-over-reverse, as
# `jacobian_penalty` needs) only; `jax.jvp` through a `SpectralConv2d` raises JAX's custom_vjp error.
_NHWC = ("NHWC", "HWIO", "NHWC")


def _pads(w, transpose=False):
    """"SAME" padding of an HWIO kernel (low = (k-1)//2, high = k//2), or of its transpose."""
    return [(k // 2, (k - 1) // 2) if transpose else ((k - 1) // 2, k // 2) for k in w.shape[:2]]


@jax.custom_vjp
def _same_conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), _pads(w), dimension_numbers=_NHWC)


def _same_conv_fwd(x, w):
    return _same_conv(x, w), (x, w)


def _same_conv_bwd(residuals, g):
    x, w = residuals
    flipped = jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2)
    gx = jax.lax.conv_general_dilated(g, flipped, (1, 1), _pads(w, transpose=True), dimension_numbers=_NHWC)
    (gw,) = jax.vjp(lambda w: jax.lax.conv_general_dilated(x, w, (1, 1), _pads(w), dimension_numbers=_NHWC), w)[1](g)
    return gx, gw


_same_conv.defvjp(_same_conv_fwd, _same_conv_bwd)


def _replace(module: eqx.Module, **changes) -> eqx.Module:
    """A copy of `module` with some fields (static ones too) replaced, as pytree unflattening builds it."""
    new = object.__new__(type(module))
    for field in dataclasses.fields(module):
        object.__setattr__(new, field.name, changes.get(field.name, getattr(module, field.name)))
    return new


def _check_shape(shape, owner: str) -> tuple[int, int]:
    if not isinstance(shape, (tuple, list)) or len(shape) != 2 or not all(isinstance(n, int) and n > 0 for n in shape):
        raise ValueError(f"{owner} expects an image shape (H, W) of positive ints, got {shape!r}")
    return int(shape[0]), int(shape[1])


def spectral_normalise(tree, shape: tuple[int, int]):
    """Replace every `SpectralConv2d` in a pytree (a model) by its `normalised(shape)` copy.

    Call it once before a loop that applies the model many times (the schemes do): the per-layer
    SVDs are then computed once, and gradients still flow to the raw weights through the rescaling.
    Other leaves are returned unchanged.

    Example:
        >>> net = spectral_normalise(LipschitzCNN(key=jax.random.key(0)), (32, 32))
    """
    _check_shape(tuple(shape), "spectral_normalise")

    def is_conv(node):
        return isinstance(node, SpectralConv2d)

    return jax.tree.map(lambda n: n.normalised(tuple(shape)) if is_conv(n) else n, tree, is_leaf=is_conv)


class LipschitzCNN(eqx.Module):
    r"""A DnCNN-style CNN that is Lipschitz by construction: $N_\theta = C_d \circ \mathrm{ReLU} \circ
    \dots \circ \mathrm{ReLU} \circ C_1$, or $x \mapsto x - N_\theta(x)$ with `residual=True`.

    $C_1$: `channels` $\to$ `features`, $C_2..C_{d-1}$: `features` $\to$ `features`, $C_d$:
    `features` $\to$ `channels`, all `SpectralConv2d` with bound $L^{1/d}$, so
    $\mathrm{Lip}(N_\theta) \le L$ = `lipschitz` (ReLU is 1-Lipschitz). `residual=True` gives the DnCNN
    form $x - N_\theta(x)$ (Lipschitz $\le 1 + L$, strongly monotone with constant $1 - L$); see the
    module docstring for what each scheme needs.

    Shapes: `(channels, H, W) -> (channels, H, W)`, one sample; batch with `jax.vmap`.

    Example:
        >>> net = LipschitzCNN(features=8, depth=3, lipschitz=0.5, key=jax.random.key(0))
        >>> net(jnp.ones((1, 16, 16))).shape
        (1, 16, 16)
    """

    layers: tuple[SpectralConv2d, ...]
    channels: int = eqx.field(static=True)
    lipschitz: float = eqx.field(static=True)
    residual: bool = eqx.field(static=True)

    def __init__(
        self,
        channels: int = 1,
        features: int = 32,
        depth: int = 4,
        *,
        lipschitz: float = 0.9,
        residual: bool = True,
        kernel_size: int = 3,
        key: PRNGKeyArray,
        dtype=None,
    ):
        owner = "LipschitzCNN"
        channels = _positive_int(channels, "channels", owner)
        features = _positive_int(features, "features", owner)
        depth = _positive_int(depth, "depth", owner)
        if depth < 2:
            raise ValueError(f"{owner} expects depth >= 2, got {depth}")
        if isinstance(lipschitz, bool) or not isinstance(lipschitz, (int, float)) or not 0 < lipschitz < math.inf:
            raise ValueError(f"{owner} expects a finite lipschitz > 0, got {lipschitz!r}")
        widths = [channels] + [features] * (depth - 1) + [channels]
        bound = float(lipschitz) ** (1.0 / depth)
        self.layers = tuple(
            SpectralConv2d(cin, cout, kernel_size, bound=bound, key=k, dtype=dtype)
            for cin, cout, k in zip(widths[:-1], widths[1:], jr.split(key, depth))
        )
        self.channels, self.lipschitz, self.residual = channels, float(lipschitz), bool(residual)

    def __call__(self, x: Float[Array, "channels H W"]) -> Float[Array, "channels H W"]:
        x = _check_image(x, self.channels, "LipschitzCNN").astype(self.layers[0].weight.dtype)
        layers = spectral_normalise(self.layers, x.shape[1:])  # a no-op for frozen layers
        h = x
        for layer in layers[:-1]:
            h = jax.nn.relu(layer(h))
        h = layers[-1](h)
        return x - h if self.residual else h


def jacobian_penalty(f: Callable, z: Array, key: PRNGKeyArray, *, num_samples: int = 1) -> Float[Array, ""]:
    r"""Hutchinson estimate of $\|J\|_F^2$, $J = \partial f/\partial z$ at `z`: the mean of $\|v^\top J\|^2$ over
    `num_samples` Gaussian $v \sim \mathcal N(0, I)$ (unbiased: $E\,\|J^\top v\|^2 = \operatorname{tr}(JJ^\top)$).

    A penalty for the training loss that pushes a fixed-point map towards contractivity (Bai,
    Koltun, Kolter 2021 add $\gamma\,\|J\|_F^2/\dim z$ at the fixed point). One `jax.vjp` per
    sample; differentiable with respect to anything `f` closes over. `z` is an array.

    Example:
        >>> m = jnp.array([[1.0, 2.0], [0.0, 3.0]])
        >>> jacobian_penalty(lambda z: m @ z, jnp.zeros(2), jax.random.key(0), num_samples=10_000)  # ~14
    """
    if not hasattr(z, "shape") or not jnp.issubdtype(jnp.asarray(z).dtype, jnp.floating):
        raise TypeError(f"jacobian_penalty expects a real floating array z, got {getattr(z, 'dtype', type(z))}")
    num_samples = check_positive_int(num_samples, "num_samples", "jacobian_penalty")
    z = jnp.asarray(z)
    _, vjp = jax.vjp(f, z)
    out = jax.eval_shape(f, z)
    vs = jr.normal(key, (num_samples, *out.shape), out.dtype)
    return jnp.mean(jax.vmap(lambda v: jnp.sum(jnp.abs(vjp(v)[0]) ** 2))(vs))
