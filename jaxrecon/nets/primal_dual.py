r"""Learned primal-dual reconstruction (Adler & Öktem, IEEE TMI 2018)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ..operators.linear_operator import LinearOperator
from ._scheme import (
    as_channels,
    check_data,
    check_init,
    check_operator,
    check_positive_int,
    from_channels,
    initial_reconstruction,
    norm_of,
    out_is_complex,
    scan_blocks,
    stack_modules,
)
from .blocks import ConvStack

__all__ = ["LearnedPrimalDual"]


class LearnedPrimalDual(eqx.Module):
    r"""Learned primal-dual: $I$ unrolled primal and dual updates, each a small residual CNN.

    With $\tilde A = A/\|A\|$ and $\tilde y = y/\|A\|$ (the operator normalised to unit norm, as in
    the paper), primal memory $f \in X^{N_p}$ and dual memory $h \in Y^{N_d}$ (both zero at start,
    or $f^{(j)}_0 =$ `init` reconstruction),

    $$h_{i} = h_{i-1} + \Gamma_{\theta_i^d}\big(h_{i-1}, \tilde A f^{(2)}_{i-1}, \tilde y\big),\qquad
      f_{i} = f_{i-1} + \Lambda_{\theta_i^p}\big(f_{i-1}, \tilde A^* h^{(1)}_{i}\big),$$

    and the reconstruction is $f^{(1)}_I$. $\Gamma$ and $\Lambda$ are `ConvStack`s (three 3x3
    convolutions `hidden`-`hidden`-out with PReLU); the dual CNN convolves over the data array (for a
    sinogram: angles x detectors). The defaults are the paper's: 10 iterations, 5 primal and 5 dual
    channels, width 32: about 2.5e5 parameters. `last_scale` and `weight_init` set the `ConvStack`s'
    initialisation (`weight_init="glorot"` with `init="zero"` is the authors' code). Weights differ per
    iteration (stacked along a leading axis and iterated by `lax.scan`) unless `shared=True`.
    `primal_block` / `dual_block` (optional): factories `key -> network` replacing the `ConvStack`s,
    mapping `(N_p + 1, H, W) -> (N_p, H, W)` and
    `(N_d + 2c, *data) -> (N_d, *data)` ($c$ = 1, or 2 for complex data), e.g. Flax networks through
    `from_flax`.

    Any `LinearOperator` with real `(H, W)` images and 2D data works (Radon transform, blur,
    subsampled Fourier: complex data enter the dual CNN as real and imaginary channels). The operator
    is an argument of the call, so a trained model can be evaluated on a changed operator; its norm
    is fixed at construction (a non-trained leaf).

    Call on ONE measurement: `model(y, op) -> x` with `y: op.out_shape`, `x: op.in_shape`; batch with
    `jax.vmap(lambda y: model(y, op))(ys)`.

    Example:
        >>> op = RadonTransform(ParallelBeamGeometry.uniform((32, 32), 20))
        >>> model = LearnedPrimalDual(op, key=jax.random.key(0))
        >>> model(jnp.zeros(op.out_shape), op).shape
        (32, 32)
    """

    primal: ConvStack
    dual: ConvStack
    op_norm: Float[Array, ""]
    op_shapes: tuple = eqx.field(static=True)  # (in_shape, out_shape) of the operator it was built for
    num_iterations: int = eqx.field(static=True)
    num_primal: int = eqx.field(static=True)
    num_dual: int = eqx.field(static=True)
    complex_data: bool = eqx.field(static=True)
    shared: bool = eqx.field(static=True)
    init: str = eqx.field(static=True)
    unroll: int | bool = eqx.field(static=True)

    def __init__(
        self,
        op: LinearOperator,
        *,
        num_iterations: int = 10,
        num_primal: int = 5,
        num_dual: int = 5,
        hidden: int = 32,
        shared: bool = False,
        init: str = "zero",
        last_scale: float = 1.0,
        weight_init: str = "default",
        unroll: int | bool = True,
        primal_block=None,
        dual_block=None,
        key: PRNGKeyArray,
        dtype=None,
    ):
        name = "LearnedPrimalDual"
        check_operator(op, name)
        dtype = jnp.result_type(float) if dtype is None else jnp.dtype(dtype)
        self.num_iterations = check_positive_int(num_iterations, "num_iterations", name)
        self.num_primal = check_positive_int(num_primal, "num_primal", name)
        self.num_dual = check_positive_int(num_dual, "num_dual", name)
        self.shared, self.init = bool(shared), check_init(init, name)
        if len(op.out_shape) != 2:
            raise ValueError(f"{name} convolves over 2D data; got an operator with out_shape {op.out_shape}")
        self.complex_data = out_is_complex(op, dtype)
        c = 2 if self.complex_data else 1
        if num_dual < c or num_primal < 2:
            raise ValueError(f"{name} needs num_primal >= 2 and num_dual >= {c}, got {num_primal}, {num_dual}")
        self.op_norm = norm_of(op, dtype)
        self.op_shapes = (tuple(op.in_shape), tuple(op.out_shape))
        self.unroll = unroll
        k_primal, k_dual = jax.random.split(key)
        # dual input: h (N_d) + A f^(2) (c) + y (c); primal input: f (N_p) + A^* h^(1) (1).
        for what, b in (("primal_block", primal_block), ("dual_block", dual_block)):
            if b is not None and not callable(b):
                raise TypeError(f"{name} expects `{what}` to be a callable key -> network, got {type(b).__name__}")
        stack = dict(last_scale=last_scale, weight_init=weight_init, dtype=dtype)
        dual_block = dual_block or (lambda k: ConvStack(num_dual + 2 * c, num_dual, hidden, key=k, **stack))
        primal_block = primal_block or (lambda k: ConvStack(num_primal + 1, num_primal, hidden, key=k, **stack))
        self.dual = stack_modules(dual_block, 1 if shared else num_iterations, k_dual)
        self.primal = stack_modules(primal_block, 1 if shared else num_iterations, k_primal)
        if shared:
            self.dual, self.primal = jax.tree.map(lambda a: a[0], (self.dual, self.primal))

    def __call__(self, y: Float[Array, "*data"], op: LinearOperator) -> Float[Array, "H W"]:
        check_operator(op, "LearnedPrimalDual", self.op_shapes)
        y = check_data(y, op, "LearnedPrimalDual")
        scale = 1 / jax.lax.stop_gradient(self.op_norm)
        y = y * scale
        dtype = jnp.real(y).dtype
        x0 = initial_reconstruction(y / scale, op, self.init).astype(dtype)
        f = jnp.broadcast_to(x0, (self.num_primal, *op.in_shape))
        h = jnp.zeros((self.num_dual, *op.out_shape), dtype)
        g = as_channels(y)

        def step(blocks, _, carry):
            f, h = carry
            dual, primal = blocks
            h = h + dual(jnp.concatenate([h, as_channels(op(f[1]) * scale), g]))
            back = jnp.real(op.T(from_channels(h, self.complex_data))) * scale
            f = f + primal(jnp.concatenate([f, back[None]]))
            return f, h

        f, _ = scan_blocks(step, (f, h), (self.dual, self.primal), self.num_iterations, self.shared, self.unroll)
        return f[0]
