"""The linear-operator protocol, its algebra, power iteration and the dot test."""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray

__all__ = ["LinearOperator", "IdentityOperator", "operator_norm", "dot_test"]


class LinearOperator(eqx.Module):
    r"""A linear map $A: \mathbb{R}^{\text{in\_shape}} \to \mathbb{K}^{\text{out\_shape}}$ with its adjoint.

    Subclasses implement `mv` ($x \mapsto Ax$), `rmv` ($y \mapsto A^* y$, the exact adjoint for
    the real inner product $\operatorname{Re}\langle\cdot,\cdot\rangle$) and the static
    `in_shape`/`out_shape`. Operators are pytrees (equinox Modules): their arrays are leaves, so
    operators can be passed through `jit`, vmapped over and differentiated.

    Algebra: `op(x)`, `op.T(y)`, `A @ B` (composition), `c * A`, `A + B`, `A - B`, `-A`.

    Example:
        >>> op = 2.0 * MatrixOperator(jnp.eye(3)) @ MatrixOperator(jnp.ones((3, 2)))
        >>> op(jnp.ones(2)).shape, op.T(jnp.ones(3)).shape
        ((3,), (2,))
    """

    @abc.abstractmethod
    def mv(self, x: Array) -> Array:
        """$Ax$."""

    @abc.abstractmethod
    def rmv(self, y: Array) -> Array:
        """$A^* y$, the exact adjoint."""

    @property
    @abc.abstractmethod
    def in_shape(self) -> tuple[int, ...]: ...

    @property
    @abc.abstractmethod
    def out_shape(self) -> tuple[int, ...]: ...

    @property
    def in_complex(self) -> bool:
        """Whether the domain is complex (the dot test then draws complex inputs)."""
        return False

    def __call__(self, x: Array) -> Array:
        _check_input(x, self.in_shape, type(self).__name__, "input")
        return self.mv(x)

    @property
    def T(self) -> LinearOperator:
        """The adjoint operator $A^*$ (for real operators, the transpose)."""
        return AdjointOperator(self)

    def __matmul__(self, other: LinearOperator) -> LinearOperator:
        if not isinstance(other, LinearOperator):
            return NotImplemented
        if tuple(self.in_shape) != tuple(other.out_shape):
            raise ValueError(
                f"cannot compose {type(self).__name__} (input {self.in_shape}) with "
                f"{type(other).__name__} (output {other.out_shape})"
            )
        return ComposedOperator(self, other)

    def __mul__(self, scalar) -> LinearOperator:
        if isinstance(scalar, LinearOperator):
            return NotImplemented
        scalar = jnp.asarray(scalar)
        if scalar.ndim != 0:
            raise ValueError(f"an operator can only be scaled by a scalar, got shape {scalar.shape}")
        return ScaledOperator(self, scalar)

    __rmul__ = __mul__

    def __truediv__(self, scalar) -> LinearOperator:
        return self * (1 / jnp.asarray(scalar))

    def __neg__(self) -> LinearOperator:
        return ScaledOperator(self, jnp.asarray(-1.0))

    def __add__(self, other: LinearOperator) -> LinearOperator:
        if not isinstance(other, LinearOperator):
            return NotImplemented
        if (tuple(self.in_shape), tuple(self.out_shape)) != (tuple(other.in_shape), tuple(other.out_shape)):
            raise ValueError(
                f"cannot add operators of shapes {self.in_shape}->{self.out_shape} and "
                f"{other.in_shape}->{other.out_shape}"
            )
        return SumOperator(self, other)

    def __sub__(self, other: LinearOperator) -> LinearOperator:
        return self + (-other)


def _check_input(x, shape, name, what):
    if not hasattr(x, "shape"):
        raise TypeError(f"{name} expects an array {what} of shape {tuple(shape)}, got {type(x).__name__}")
    if tuple(x.shape) != tuple(shape):
        raise ValueError(
            f"{name} expects an {what} of shape {tuple(shape)}, got {tuple(x.shape)} "
            "(operators act on one sample; batch with jax.vmap)"
        )


class AdjointOperator(LinearOperator):
    """$A^*$ of a wrapped operator; `AdjointOperator(A).T` is `A` again."""

    op: LinearOperator

    def mv(self, x):
        return self.op.rmv(x)

    def rmv(self, y):
        return self.op.mv(y)

    @property
    def in_shape(self):
        return self.op.out_shape

    @property
    def out_shape(self):
        return self.op.in_shape

    @property
    def in_complex(self):
        return _out_is_complex(self.op)

    @property
    def T(self):
        return self.op


class ComposedOperator(LinearOperator):
    """$AB$: apply `second` first, then `first`."""

    first: LinearOperator
    second: LinearOperator

    def mv(self, x):
        return self.first.mv(self.second.mv(x))

    def rmv(self, y):
        return self.second.rmv(self.first.rmv(y))

    @property
    def in_shape(self):
        return self.second.in_shape

    @property
    def out_shape(self):
        return self.first.out_shape

    @property
    def in_complex(self):
        return self.second.in_complex


class ScaledOperator(LinearOperator):
    """$cA$ for a real scalar $c$ (a leaf: it can be learned or vmapped over)."""

    op: LinearOperator
    scalar: Array

    def mv(self, x):
        return self.scalar * self.op.mv(x)

    def rmv(self, y):
        return jnp.conj(self.scalar) * self.op.rmv(y)

    @property
    def in_shape(self):
        return self.op.in_shape

    @property
    def out_shape(self):
        return self.op.out_shape

    @property
    def in_complex(self):
        return self.op.in_complex


class SumOperator(LinearOperator):
    """$A + B$."""

    left: LinearOperator
    right: LinearOperator

    def mv(self, x):
        return self.left.mv(x) + self.right.mv(x)

    def rmv(self, y):
        return self.left.rmv(y) + self.right.rmv(y)

    @property
    def in_shape(self):
        return self.left.in_shape

    @property
    def out_shape(self):
        return self.left.out_shape

    @property
    def in_complex(self):
        return self.left.in_complex or self.right.in_complex


class IdentityOperator(LinearOperator):
    """The identity on arrays of a given shape (denoising: $A = I$)."""

    shape: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, shape):
        self.shape = tuple(int(n) for n in shape)

    def mv(self, x):
        return x

    def rmv(self, y):
        return y

    @property
    def in_shape(self):
        return self.shape

    @property
    def out_shape(self):
        return self.shape


def _random_like(key, shape, dtype, complex_):
    if complex_:
        kr, ki = jax.random.split(key)
        real = jnp.finfo(dtype).dtype
        return (jax.random.normal(kr, shape, real) + 1j * jax.random.normal(ki, shape, real)).astype(
            jnp.result_type(real, jnp.complex64)
        )
    return jax.random.normal(key, shape, dtype)


def _out_is_complex(op: LinearOperator) -> bool:
    x = jax.ShapeDtypeStruct(op.in_shape, jnp.complex64 if op.in_complex else jnp.float32)
    return jnp.iscomplexobj(jax.eval_shape(op.mv, x))


def _inner(a, b):
    """Real inner product $\\operatorname{Re}\\langle a, b\\rangle$."""
    return jnp.real(jnp.vdot(a, b))


def operator_norm(op: LinearOperator, key: PRNGKeyArray | None = None, num_iter: int = 50, dtype=None) -> Array:
    r"""Estimate $\|A\|_2$ by `num_iter` power iterations on $A^*A$.

    The estimate increases monotonically towards $\|A\|$ from below; 50 iterations give a few
    digits for the operators here. Jittable (`num_iter` is static).

    Example:
        >>> operator_norm(MatrixOperator(jnp.diag(jnp.array([3.0, 1.0]))))  # ~ 3.0
    """
    if isinstance(num_iter, bool) or not isinstance(num_iter, int) or num_iter < 1:
        raise ValueError(f"num_iter must be a positive int, got {num_iter!r}")
    key = jax.random.PRNGKey(0) if key is None else key
    dtype = jnp.dtype(jnp.result_type(float) if dtype is None else dtype)
    return _power_iteration(op, key, num_iter, dtype)


@eqx.filter_jit  # compiled once per operator structure (an eager scan recompiles every call)
def _power_iteration(op, key, num_iter, dtype):
    x = _random_like(key, op.in_shape, dtype, op.in_complex)
    x = x / jnp.linalg.norm(x)

    def step(x, _):
        z = op.rmv(op.mv(x))
        n = jnp.linalg.norm(z)
        return z / jnp.where(n > 0, n, 1), n

    _, norms = jax.lax.scan(step, x, None, length=num_iter)
    return jnp.sqrt(norms[-1])


def dot_test(op: LinearOperator, key: PRNGKeyArray | None = None, dtype=None) -> Array:
    r"""Relative adjoint mismatch $|\langle Ax, y\rangle - \langle x, A^*y\rangle| / (\|Ax\|\|y\|)$.

    With random Gaussian $x$ and $y$ (complex where the operator's spaces are). An exact adjoint
    gives a value at rounding level: ~1e-7 in float32, ~1e-15 in float64.
    """
    key = jax.random.PRNGKey(0) if key is None else key
    dtype = jnp.result_type(float) if dtype is None else dtype
    kx, ky = jax.random.split(key)
    x = _random_like(kx, op.in_shape, dtype, op.in_complex)
    ax = op.mv(x)
    y = _random_like(ky, op.out_shape, dtype, jnp.iscomplexobj(ax))
    aty = op.rmv(y)
    lhs, rhs = _inner(ax, y), _inner(x, aty)
    return jnp.abs(lhs - rhs) / (jnp.linalg.norm(ax) * jnp.linalg.norm(y))
