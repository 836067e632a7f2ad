r"""Small convolutional blocks for unrolled schemes: PReLU and a plain stack of convolutions.

Both act on ONE sample with channels first, `(C, *spatial)`; batch with `jax.vmap`.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .conv2d import conv2d

__all__ = ["PReLU", "ConvStack"]

WEIGHT_INITS = ("default", "glorot")


def _default_dtype(dtype):
    return jnp.result_type(float) if dtype is None else jnp.dtype(dtype)


class PReLU(eqx.Module):
    r"""Parametric ReLU with one learned slope per channel: $\max(x, 0) + a_c \min(x, 0)$.

    `init=0.0` (Adler & Öktem's choice) starts as a ReLU.

    Example:
        >>> PReLU(2, init=0.5)(-jnp.ones((2, 3, 3)))[0, 0, 0]  # -0.5
    """

    slope: Float[Array, " C"]

    def __init__(self, num_channels: int = 1, init: float = 0.0, *, dtype=None):
        if not isinstance(num_channels, int) or num_channels < 1:
            raise ValueError(f"PReLU expects num_channels to be a positive int, got {num_channels!r}")
        self.slope = jnp.full((num_channels,), init, _default_dtype(dtype))

    def __call__(self, x: Float[Array, "C *spatial"]) -> Float[Array, "C *spatial"]:
        if x.ndim < 1 or x.shape[0] != self.slope.shape[0]:
            raise ValueError(
                f"PReLU expects an input with {self.slope.shape[0]} channels first, got shape {x.shape}"
            )
        slope = self.slope.reshape((-1,) + (1,) * (x.ndim - 1))
        return jnp.where(x >= 0, x, slope * x)


class ConvStack(eqx.Module):
    r"""`num_layers` "SAME"-padded convolutions `in -> hidden -> ... -> hidden -> out`, PReLU in between.

    The block of learned gradient descent and learned primal-dual (Adler & Öktem 2017, 2018): three
    3x3 convolutions 32-32-out, PReLU after all but the last layer. `(in, *spatial) -> (out, *spatial)`,
    `num_spatial_dims` 1, 2 or 3. The last layer's weights are multiplied by `last_scale` at
    initialisation (a small value starts an unrolled scheme close to its classical iteration).

    `weight_init`: `"default"` (equinox's, as PyTorch's: weights and biases uniform in
    $\pm 1/\sqrt{\text{fan}_\text{in}}$) or `"glorot"` (Glorot/Xavier uniform weights in
    $\pm\sqrt{6/(\text{fan}_\text{in} + \text{fan}_\text{out})}$, zero biases: TensorFlow's default, which
    the authors' code of learned primal-dual used), with $\text{fan} = $ channels $\times$ kernel size.

    Example:
        >>> block = ConvStack(6, 5, key=jax.random.key(0))
        >>> block(jnp.zeros((6, 16, 16))).shape
        (5, 16, 16)
    """

    layers: tuple[eqx.nn.Conv, ...]
    activations: tuple[PReLU, ...]

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden: int = 32,
        num_layers: int = 3,
        kernel_size: int = 3,
        *,
        num_spatial_dims: int = 2,
        last_scale: float = 1.0,
        weight_init: str = "default",
        key: PRNGKeyArray,
        dtype=None,
    ):
        if weight_init not in WEIGHT_INITS:
            raise ValueError(f"ConvStack expects weight_init to be one of {WEIGHT_INITS}, got {weight_init!r}")
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("hidden", hidden)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ConvStack expects {name} to be a positive int, got {value!r}")
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"ConvStack expects num_layers >= 1, got {num_layers!r}")
        dtype = _default_dtype(dtype)
        widths = [in_channels] + [hidden] * (num_layers - 1) + [out_channels]
        keys = jax.random.split(key, num_layers)
        layers = [
            eqx.nn.Conv(num_spatial_dims, c_in, c_out, kernel_size, padding="SAME", key=k, dtype=dtype)
            for c_in, c_out, k in zip(widths[:-1], widths[1:], keys)
        ]
        if weight_init == "glorot":
            glorot_keys = jax.random.split(jax.random.fold_in(key, 1), num_layers)
            layers = [_glorot(layer, k) for layer, k in zip(layers, glorot_keys)]
        layers[-1] = eqx.tree_at(lambda c: (c.weight, c.bias), layers[-1], replace_fn=lambda a: a * last_scale)
        self.layers = tuple(layers)
        self.activations = tuple(PReLU(hidden, dtype=dtype) for _ in range(num_layers - 1))

    def __call__(self, x: Float[Array, "C *spatial"]) -> Float[Array, "C_out *spatial"]:
        if self.layers[0].num_spatial_dims != 2:
            for layer, activation in zip(self.layers[:-1], self.activations):
                x = activation(layer(x))
            return self.layers[-1](x)
        # 2D: channels last inside, through `conv2d` (same values; a gradient on XLA CPU's fast paths)
        x = jnp.moveaxis(x, 0, -1)
        for k, layer in enumerate(self.layers):
            x = conv2d(x, layer.weight.transpose(2, 3, 1, 0)) + layer.bias[:, 0, 0]
            if k < len(self.activations):
                x = jnp.where(x >= 0, x, self.activations[k].slope * x)
        return jnp.moveaxis(x, -1, 0)


def _glorot(conv: eqx.nn.Conv, key) -> eqx.nn.Conv:
    """`conv` with Glorot-uniform weights and zero biases."""
    c_out, c_in, *kernel = conv.weight.shape
    limit = (6 / ((c_in + c_out) * math.prod(kernel))) ** 0.5  # fan_in + fan_out = (c_in + c_out) * kernel size
    weight = jax.random.uniform(key, conv.weight.shape, conv.weight.dtype, -limit, limit)
    return eqx.tree_at(lambda c: (c.weight, c.bias), conv, (weight, jnp.zeros_like(conv.bias)))
