r"""Learned gradient descent (Adler & Öktem, Inverse Problems 2017)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ..operators.linear_operator import LinearOperator
from ._scheme import (
    check_data,
    check_init,
    check_operator,
    check_positive_int,
    initial_reconstruction,
    norm_of,
    scan_blocks,
    stack_modules,
)
from .blocks import ConvStack

__all__ = ["LearnedGradientDescent"]


class LearnedGradientDescent(eqx.Module):
    r"""Learned gradient descent: a per-iterate CNN fed the iterate, the data-fit gradient and a memory.

    With $\tilde A = A/\|A\|$, $\tilde y = y/\|A\|$, $x_0$ = `init` reconstruction, $s_0 = 0$
    ($N_m$ memory channels),

    $$(\Delta x, \Delta s) = \Lambda_{\theta_k}\big(x_k,\ \tilde A^*(\tilde A x_k - \tilde y),\ s_k\big),
      \qquad x_{k+1} = x_k + \Delta x,\quad s_{k+1} = \mathrm{ReLU}(\Delta s),$$

    for $k < K$; returns $x_K$. $\Lambda$ is a `ConvStack` (three 3x3 convolutions
    `hidden`-`hidden`-(1+$N_m$), PReLU). Defaults follow the paper: 10 iterations, 5 memory channels,
    width 32; `last_scale` and `weight_init` set the `ConvStack`'s initialisation. `block` (optional): a
    factory `key -> network` mapping `(2 + N_m, H, W) -> (1 + N_m, H, W)` used instead of the `ConvStack`
    (any Equinox module, e.g. a Flax network wrapped by `from_flax`).
    Per-iteration weights (stacked, `lax.scan`) unless `shared=True`. Any `LinearOperator`
    with real `(H, W)` images (Radon, blur, subsampled Fourier). Call on ONE measurement:
    `model(y, op) -> x`.

    Example:
        >>> op = RadonTransform(ParallelBeamGeometry.uniform((32, 32), 20))
        >>> model = LearnedGradientDescent(op, key=jax.random.key(0))
        >>> model(jnp.zeros(op.out_shape), op).shape
        (32, 32)
    """

    blocks: ConvStack
    op_norm: Float[Array, ""]
    op_shapes: tuple = eqx.field(static=True)  # (in_shape, out_shape) of the operator it was built for
    num_iterations: int = eqx.field(static=True)
    num_memory: int = eqx.field(static=True)
    shared: bool = eqx.field(static=True)
    init: str = eqx.field(static=True)
    unroll: int | bool = eqx.field(static=True)

    def __init__(
        self,
        op: LinearOperator,
        *,
        num_iterations: int = 10,
        num_memory: int = 5,
        hidden: int = 32,
        shared: bool = False,
        init: str = "auto",
        last_scale: float = 1.0,
        weight_init: str = "default",
        unroll: int | bool = True,
        block=None,
        key: PRNGKeyArray,
        dtype=None,
    ):
        name = "LearnedGradientDescent"
        check_operator(op, name)
        dtype = jnp.result_type(float) if dtype is None else jnp.dtype(dtype)
        self.num_iterations = check_positive_int(num_iterations, "num_iterations", name)
        if not isinstance(num_memory, int) or num_memory < 0:
            raise ValueError(f"{name} expects num_memory to be an int >= 0, got {num_memory!r}")
        self.num_memory, self.shared, self.init = num_memory, bool(shared), check_init(init, name)
        self.op_norm = norm_of(op, dtype)
        self.op_shapes = (tuple(op.in_shape), tuple(op.out_shape))
        self.unroll = unroll

        if block is not None and not callable(block):  # a user network, e.g. a Flax module via `from_flax`
            raise TypeError(f"{name} expects `block` to be a callable key -> network, got {type(block).__name__}")

        def make(k):
            if block is not None:
                return block(k)
            return ConvStack(2 + num_memory, 1 + num_memory, hidden, last_scale=last_scale, weight_init=weight_init,
                             key=k, dtype=dtype)

        self.blocks = make(key) if shared else stack_modules(make, num_iterations, key)

    def __call__(self, y: Float[Array, "*data"], op: LinearOperator) -> Float[Array, "H W"]:
        check_operator(op, "LearnedGradientDescent", self.op_shapes)
        y = check_data(y, op, "LearnedGradientDescent")
        scale = 1 / jax.lax.stop_gradient(self.op_norm)
        dtype = jnp.real(y).dtype
        x = initial_reconstruction(y, op, self.init).astype(dtype)
        s = jnp.zeros((self.num_memory, *op.in_shape), dtype)

        def step(block, _, carry):
            x, s = carry
            grad = jnp.real(op.T(op(x) - y)) * scale**2
            update = block(jnp.concatenate([x[None], grad[None], s]))
            return x + update[0], jax.nn.relu(update[1:])

        x, _ = scan_blocks(step, (x, s), self.blocks, self.num_iterations, self.shared, self.unroll)
        return x
