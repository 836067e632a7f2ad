"""A dense matrix acting on flattened (H, W) images: a solver test's operator that compiles fast."""

import equinox as eqx
import jax

from jaxrecon.operators import LinearOperator


class ImageMatrix(LinearOperator):
    """`y = M @ x.ravel()` for `(H, W)` images `x`; the adjoint reshapes back."""

    matrix: jax.Array
    shape: tuple = eqx.field(static=True)

    def mv(self, x):
        return self.matrix @ x.ravel()

    def rmv(self, y):
        return (self.matrix.T @ y).reshape(self.shape)

    @property
    def in_shape(self):
        return self.shape

    @property
    def out_shape(self):
        return (self.matrix.shape[0],)
