"""Shared parts of the unrolled schemes: input checks, the initial reconstruction, operator scaling,
per-iteration weights stacked along a leading axis and iterated by `lax.scan`."""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray

from ..operators.fan_geometry import FanBeamGeometry, FanBeamVecGeometry
from ..operators.fbp import fbp
from ..operators.geometry import ParallelBeamGeometry
from ..operators.linear_operator import LinearOperator, operator_norm
from ..operators.radon import RadonTransform
from ..operators.xray import XRayTransform

__all__ = ["INITS", "initial_reconstruction"]

INITS = ("auto", "fbp", "adjoint", "zero")


def check_operator(op, scheme: str, shapes: tuple | None = None) -> None:
    """`op` is a real-domain 2D LinearOperator; with `shapes`, the `(in_shape, out_shape)` a model was built for."""
    if not isinstance(op, LinearOperator):
        raise TypeError(f"{scheme} expects `op` to be a jaxrecon LinearOperator, got {type(op).__name__}")
    if op.in_complex:
        raise ValueError(f"{scheme} reconstructs real images; got an operator with a complex domain ({op!r})")
    if len(op.in_shape) != 2:
        raise ValueError(f"{scheme} reconstructs (H, W) images; got an operator with in_shape {op.in_shape}")
    if shapes is not None and (tuple(op.in_shape), tuple(op.out_shape)) != tuple(shapes):
        raise ValueError(
            f"{scheme} was built for an operator from {shapes[0]} to {shapes[1]}, got one from "
            f"{tuple(op.in_shape)} to {tuple(op.out_shape)}: its weights and its operator-norm scaling belong to "
            "that size; build (and train) a model for this operator"
        )


def check_data(y, op: LinearOperator, scheme: str) -> Array:
    if not hasattr(y, "shape"):
        raise TypeError(f"{scheme} expects `y` to be an array, got {type(y).__name__}")
    if tuple(y.shape) != tuple(op.out_shape):
        raise ValueError(
            f"{scheme} expects one measurement of shape op.out_shape = {tuple(op.out_shape)}, got shape "
            f"{tuple(y.shape)}; for a batch use jax.vmap(lambda y: model(y, op))(ys)"
        )
    return jnp.asarray(y)


def check_init(init: str, scheme: str) -> str:
    if init not in INITS:
        raise ValueError(f"{scheme} expects init to be one of {INITS}, got {init!r}")
    return init


def fbp_geometry(op: LinearOperator):
    """The geometry `fbp` reconstructs `op`'s data with, or `None`.

    A `RadonTransform`, or an `XRayTransform` of a `ParallelBeamGeometry` or `FanBeamGeometry` (a
    circular orbit, flat or curved detector). Other operators, including an `XRayTransform` of a
    `FanBeamVecGeometry` (no circular orbit), give `None`.
    """
    if isinstance(op, (RadonTransform, XRayTransform)) and isinstance(op.geom, (ParallelBeamGeometry, FanBeamGeometry)):
        return op.geom
    return None


def initial_reconstruction(y: Array, op: LinearOperator, init: str = "auto", filter: str = "hann") -> Array:
    r"""The starting image of a learned scheme: `"fbp"` (filtered back projection `fbp(y, op.geom, filter)`,
    for a `RadonTransform` or an `XRayTransform` of a parallel-beam or circular fan-beam geometry),
    `"adjoint"` ($A^* y$, e.g. the zero-filled inverse FFT of subsampled Fourier data, or the blurred
    image for a blur), `"zero"`, or `"auto"`: FBP where `fbp` supports the operator, else the adjoint.

    A fan-beam FBP needs angles covering a full ($2\pi$) or short ($\pi + 2\Gamma$) scan; `fbp` raises
    for less when the angles are concrete. An `XRayTransform` of a `FanBeamVecGeometry` has no FBP:
    `init="fbp"` raises a `ValueError` and `"auto"` uses the adjoint.

    Example:
        >>> op = RadonTransform(ParallelBeamGeometry.uniform((32, 32), 20))
        >>> initial_reconstruction(jnp.zeros(op.out_shape), op).shape
        (32, 32)
        >>> fan = XRayTransform(FanBeamGeometry.uniform((32, 32), 24, 60.0, 40.0))
        >>> initial_reconstruction(jnp.zeros(fan.out_shape), fan, "fbp").shape
        (32, 32)
    """
    check_init(init, "initial_reconstruction")
    geom = fbp_geometry(op)
    if init == "auto":
        init = "fbp" if geom is not None else "adjoint"
    if init == "fbp":
        if geom is None:
            if isinstance(op, XRayTransform):
                raise ValueError(
                    "init='fbp' needs a circular-orbit geometry (ParallelBeamGeometry or FanBeamGeometry), got "
                    f"an XRayTransform of a {type(op.geom).__name__}; use init='adjoint' or 'zero'"
                )
            raise ValueError(
                f"init='fbp' needs a RadonTransform or an XRayTransform, got {type(op).__name__}; "
                "use init='adjoint' or 'zero'"
            )
        return fbp(y, geom, filter)
    if init == "adjoint":
        return jnp.real(op.T(y)) if jnp.iscomplexobj(y) and not op.in_complex else op.T(y)
    return jnp.zeros(op.in_shape, jnp.real(y).dtype)


def norm_of(op: LinearOperator, dtype=None) -> Array:
    """$\\|A\\|$ by power iteration, as a concrete float array (used once, at construction)."""
    return jnp.asarray(operator_norm(op, key=jax.random.key(0), num_iter=100), dtype)


def stack_modules(make: Callable[[PRNGKeyArray], eqx.Module], num: int, key: PRNGKeyArray) -> eqx.Module:
    """`num` independently initialised modules with their array leaves stacked along axis 0."""
    return eqx.filter_vmap(make)(jax.random.split(key, num))


def scan_blocks(step, carry, blocks, num_iterations: int, shared: bool, unroll: int | bool = True):
    """Iterate `carry <- step(block_k, k, carry)` with `lax.scan` over stacked (or shared) blocks.

    `unroll=True` (the default of the schemes) unrolls the scan in XLA: on XLA CPU a convolution
    inside a while loop runs ~20x slower than the same convolution outside one (measured on jax
    0.10.2: 10 3x3 convolutions 32->32 at 64x64, forward and gradient), while unrolling keeps `scan`'s
    semantics (stacked weights, one traced body) at a compile time linear in the depth."""
    params, static = eqx.partition(blocks, eqx.is_array)

    def body(carry, xs):
        k, p = xs
        return step(eqx.combine(params if shared else p, static), k, carry), None

    ks = jnp.arange(num_iterations)
    carry, _ = jax.lax.scan(body, carry, (ks, None if shared else params), unroll=unroll)
    return carry


def as_channels(z: Array) -> Array:
    """`(*s)` real or complex -> `(1 or 2, *s)` real channels (real, imaginary)."""
    return jnp.stack([z.real, z.imag]) if jnp.iscomplexobj(z) else z[None]


def from_channels(c: Array, complex_: bool) -> Array:
    """Inverse of `as_channels` on the leading 1 or 2 channels."""
    return jax.lax.complex(c[0], c[1]) if complex_ else c[0]


def out_is_complex(op: LinearOperator, dtype) -> bool:
    return jnp.iscomplexobj(jax.eval_shape(op.mv, jax.ShapeDtypeStruct(op.in_shape, dtype)))


def check_positive_int(value, name: str, scheme: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{scheme} expects {name} to be a positive int, got {value!r}")
    return value
