r"""Post-processing: a CNN applied to a classical reconstruction (FBPConvNet, Jin et al. 2017)."""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
from jaxtyping import Array, Float

from ..operators.fbp import FBP_FILTERS
from ..operators.linear_operator import LinearOperator
from ._scheme import check_data, check_init, check_operator, initial_reconstruction

__all__ = ["PostProcessing"]


class PostProcessing(eqx.Module):
    r"""$x = f_\theta(x_0)$ with $x_0$ a classical reconstruction: FBP (`init="fbp"`, filter `filter`)
    for a `RadonTransform` or an `XRayTransform` of a parallel or circular fan-beam geometry, or $A^* y$
    (`init="adjoint"`); `"auto"` picks FBP where it applies (see `initial_reconstruction`).

    `net` maps `(1, H, W) -> (1, H, W)`, e.g. `UNet(residual=True)` (FBPConvNet: output = input +
    U-Net(input)) or `DnCNN`. Call on ONE measurement: `model(y, op) -> x`; batch with `jax.vmap`.

    Example:
        >>> op = RadonTransform(ParallelBeamGeometry.uniform((32, 32), 20))
        >>> model = PostProcessing(UNet(levels=2, channels=8, key=jax.random.key(0)))
        >>> model(jnp.zeros(op.out_shape), op).shape
        (32, 32)
    """

    net: Callable[[Array], Array]
    init: str = eqx.field(static=True, default="auto")
    filter: str = eqx.field(static=True, default="hann")

    def __check_init__(self):
        check_init(self.init, "PostProcessing")
        if self.filter not in FBP_FILTERS:
            raise ValueError(f"PostProcessing expects filter to be one of {sorted(FBP_FILTERS)}, got {self.filter!r}")

    def __call__(self, y: Float[Array, "*data"], op: LinearOperator) -> Float[Array, "H W"]:
        check_operator(op, "PostProcessing")
        y = check_data(y, op, "PostProcessing")
        x0 = initial_reconstruction(y, op, self.init, self.filter)
        return self.net(x0[None])[0]
