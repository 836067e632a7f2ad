r"""Dense matrices as linear operators."""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Inexact

from .linear_operator import LinearOperator

__all__ = ["MatrixOperator"]


class MatrixOperator(LinearOperator):
    r"""$A x = M x$ for a dense $(m, n)$ matrix $M$, with $A^* y = M^H y$ (conjugate transpose).

    Real or complex; a complex matrix makes the domain complex (`in_complex`). The matrix is a
    leaf (differentiable, vmappable). Integer matrices are cast to float32.

    Shapes: `(n,)` -> `(m,)`.

    Example:
        >>> op = MatrixOperator(jnp.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
        >>> op(jnp.ones(2)), op.T(jnp.ones(3))
        (Array([ 3.,  7., 11.], dtype=float32), Array([ 9., 12.], dtype=float32))
    """

    matrix: Inexact[Array, "m n"]

    def __init__(self, matrix: ArrayLike):
        if not hasattr(matrix, "shape") or not hasattr(matrix, "dtype"):
            raise TypeError(f"MatrixOperator expects an (m, n) array, got {type(matrix).__name__}")
        matrix = jnp.asarray(matrix)
        if matrix.ndim != 2:
            raise ValueError(f"MatrixOperator expects a 2D (m, n) matrix, got shape {tuple(matrix.shape)}")
        if not jnp.issubdtype(matrix.dtype, jnp.inexact):
            matrix = matrix.astype(jnp.float32)
        self.matrix = matrix

    def mv(self, x: Inexact[Array, " n"]) -> Inexact[Array, " m"]:
        return self.matrix @ x

    def rmv(self, y: Inexact[Array, " m"]) -> Inexact[Array, " n"]:
        return jnp.conj(self.matrix).T @ y

    @property
    def in_shape(self):
        return (self.matrix.shape[1],)

    @property
    def out_shape(self):
        return (self.matrix.shape[0],)

    @property
    def in_complex(self):
        return bool(jnp.iscomplexobj(self.matrix))
