r"""Unrolled classical iterations with learned parameters: projected gradient descent and LISTA.

Both start from the classical algorithm (at initialisation they ARE K steps of it) and learn, per
iteration, a step size, a regularisation weight or thresholds, and a filtering correction: a
`kernel_size`-square circular convolution $w_k *$ (zero at initialisation), following the lecture
notes' observation that one iteration $x \mapsto P(Wx + b(y))$ is a CNN layer.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ..operators.convolution import circular_convolve
from ..operators.linear_operator import LinearOperator
from ..solvers.proximal import soft_threshold
from ..solvers.wavelets import _check_levels, _check_wavelet, max_level, wavedec2, waverec2
from ._scheme import check_data, check_init, check_operator, check_positive_int, initial_reconstruction, norm_of

__all__ = ["UnrolledPGD", "LISTA"]


def _check_kernel_size(kernel_size, name):
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"{name} expects kernel_size to be a positive odd int, got {kernel_size!r}")
    return kernel_size


def _filter(x, kernel):
    return circular_convolve(x, kernel, centred=True)


class _Iterations(eqx.Module):
    """Per-iteration parameters, stacked along axis 0 (length K)."""

    step: Float[Array, " K"]  # step relative to 1/||A||^2
    weight: Float[Array, "K ..."]  # PGD: Tikhonov alpha_k; LISTA: thresholds per sub-band
    kernel: Float[Array, "K k k"]  # learned filtering correction w_k
    bias: Float[Array, " K"]


def _iterations(num, weight, kernel_size, dtype):
    return _Iterations(
        step=jnp.ones((num,), dtype),
        weight=jnp.broadcast_to(jnp.asarray(weight, dtype), (num, *jnp.shape(weight))),
        kernel=jnp.zeros((num, kernel_size, kernel_size), dtype),
        bias=jnp.zeros((num,), dtype),
    )


class UnrolledPGD(eqx.Module):
    r"""Unrolled projected gradient descent for non-negative Tikhonov, with learned filtering and bias.

    The lecture notes' gradient unrolling: projected gradient descent on
    $\tfrac12\|Ax - y\|^2 + \tfrac{\alpha}{2}\|x\|^2$, $x \ge 0$, reads
    $x_{k+1} = P_{\ge 0}(W x_k + b(y))$ with $W = (1 - \lambda\alpha) - \lambda A^*A$ and
    $b(y) = \lambda A^* y$. Here, for $k < K$,

    $$x_{k+1} = P_{\ge 0}\big((1 - \lambda_k\alpha_k)x_k - \lambda_k A^*(A x_k - y) + w_k * x_k + \beta_k\big),
      \qquad \lambda_k = t_k/\|A\|^2,$$

    with learned $t_k$ (init 1), $\alpha_k$ (init `alpha`), filter $w_k$ (init 0) and bias
    $\beta_k$ (init 0): at initialisation exactly $K$ steps of the classical method. $x_0$ = `init`
    reconstruction. Any `LinearOperator` with real `(H, W)` images. `model(y, op) -> x`.

    Example:
        >>> op = RadonTransform(ParallelBeamGeometry.uniform((32, 32), 20))
        >>> model = UnrolledPGD(op, num_iterations=5)
        >>> model(jnp.zeros(op.out_shape), op).shape
        (32, 32)
    """

    params: _Iterations
    op_norm: Float[Array, ""]
    op_shapes: tuple = eqx.field(static=True)  # (in_shape, out_shape) of the operator it was built for
    nonnegative: bool = eqx.field(static=True)
    init: str = eqx.field(static=True)

    def __init__(
        self,
        op: LinearOperator,
        *,
        num_iterations: int = 10,
        alpha: float = 0.0,
        kernel_size: int = 5,
        nonnegative: bool = True,
        init: str = "auto",
        key: PRNGKeyArray | None = None,
        dtype=None,
    ):
        del key  # deterministic initialisation (the classical method); accepted for a uniform API
        name = "UnrolledPGD"
        check_operator(op, name)
        dtype = jnp.result_type(float) if dtype is None else jnp.dtype(dtype)
        check_positive_int(num_iterations, "num_iterations", name)
        if not alpha >= 0:
            raise ValueError(f"{name} expects alpha >= 0, got {alpha!r}")
        self.params = _iterations(num_iterations, alpha, _check_kernel_size(kernel_size, name), dtype)
        self.op_norm = norm_of(op, dtype)
        self.op_shapes = (tuple(op.in_shape), tuple(op.out_shape))
        self.nonnegative, self.init = bool(nonnegative), check_init(init, name)

    def __call__(self, y: Float[Array, "*data"], op: LinearOperator) -> Float[Array, "H W"]:
        check_operator(op, "UnrolledPGD", self.op_shapes)
        y = check_data(y, op, "UnrolledPGD")
        inv_norm2 = 1 / jax.lax.stop_gradient(self.op_norm) ** 2
        x = initial_reconstruction(y, op, self.init).astype(jnp.real(y).dtype)

        def body(x, p):
            lam = p.step * inv_norm2
            z = (1 - lam * p.weight) * x - lam * jnp.real(op.T(op(x) - y)) + _filter(x, p.kernel) + p.bias
            return (jax.nn.relu(z) if self.nonnegative else z), None

        x, _ = jax.lax.scan(body, x, self.params)
        return x


def _subbands(shape: tuple[int, int], levels: int) -> np.ndarray:
    """Index of the sub-band of each coefficient in `wavedec2`'s packed layout: 0 = approximation,
    then 3 per level (horizontal, vertical, diagonal details), coarsest level first."""
    h, w = shape
    band = np.zeros(shape, np.int32)
    hl, wl = h >> levels, w >> levels
    for level in range(levels):
        band[:hl, wl : 2 * wl] = 1 + 3 * level
        band[hl : 2 * hl, :wl] = 2 + 3 * level
        band[hl : 2 * hl, wl : 2 * wl] = 3 + 3 * level
        hl, wl = 2 * hl, 2 * wl
    return band


class LISTA(eqx.Module):
    r"""Learned ISTA: unrolled wavelet-sparse ISTA with learned steps, thresholds and filtering.

    ISTA for $\tfrac12\|Ax - y\|^2 + \alpha\|Wx\|_1$ ($W$ an orthonormal wavelet, `wavedec2`) is
    $x_{k+1} = W^{-1} S_{\lambda\alpha}\big(W(x_k - \lambda A^*(A x_k - y))\big)$, equivalently the
    lecture notes' $a_{k+1} = S_\mu((I - \lambda W A^*A W^{-1}) a_k + \lambda W A^* y)$. LISTA learns,
    per iteration $k < K$, the step $\lambda_k = t_k/\|A\|^2$ (init 1), one threshold per wavelet
    detail sub-band $\theta_{k,b}$ (init $\alpha/\|A\|^2$; the approximation is not thresholded), a filter
    $w_k$ (init 0) and a bias $\beta_k$ (init 0):

    $$x_{k+1} = W^{-1} S_{|\theta_k|}\big(W(x_k - \lambda_k A^*(A x_k - y) + w_k * x_k + \beta_k)\big).$$

    At initialisation this is exactly $K$ ISTA steps. Image sides must be divisible by
    $2^{\text{levels}}$. `model(y, op) -> x`.

    Example:
        >>> op = RadonTransform(ParallelBeamGeometry.uniform((32, 32), 20))
        >>> model = LISTA(op, num_iterations=5, alpha=1e-2)
        >>> model(jnp.zeros(op.out_shape), op).shape
        (32, 32)
    """

    params: _Iterations
    op_norm: Float[Array, ""]
    op_shapes: tuple = eqx.field(static=True)  # (in_shape, out_shape) of the operator it was built for
    wavelet: str = eqx.field(static=True)
    levels: int = eqx.field(static=True)
    init: str = eqx.field(static=True)

    def __init__(
        self,
        op: LinearOperator,
        *,
        num_iterations: int = 10,
        alpha: float = 0.0,
        wavelet: str = "haar",
        levels: int | None = None,
        kernel_size: int = 5,
        init: str = "auto",
        key: PRNGKeyArray | None = None,
        dtype=None,
    ):
        del key  # deterministic initialisation (ISTA itself)
        name = "LISTA"
        check_operator(op, name)
        dtype = jnp.result_type(float) if dtype is None else jnp.dtype(dtype)
        check_positive_int(num_iterations, "num_iterations", name)
        if not alpha >= 0:
            raise ValueError(f"{name} expects alpha >= 0, got {alpha!r}")
        self.wavelet = _check_wavelet(wavelet)
        levels = max_level(op.in_shape, self.wavelet) if levels is None else levels
        self.levels = _check_levels(op.in_shape, self.wavelet, levels)
        self.op_norm = norm_of(op, dtype)
        self.op_shapes = (tuple(op.in_shape), tuple(op.out_shape))
        thresholds = np.full(3 * self.levels, alpha / float(self.op_norm) ** 2)  # detail bands only
        self.params = _iterations(num_iterations, thresholds, _check_kernel_size(kernel_size, name), dtype)
        self.init = check_init(init, name)

    def __call__(self, y: Float[Array, "*data"], op: LinearOperator) -> Float[Array, "H W"]:
        check_operator(op, "LISTA", self.op_shapes)
        y = check_data(y, op, "LISTA")
        _check_levels(op.in_shape, self.wavelet, self.levels)
        inv_norm2 = 1 / jax.lax.stop_gradient(self.op_norm) ** 2
        band = jnp.asarray(_subbands(op.in_shape, self.levels))
        x = initial_reconstruction(y, op, self.init).astype(jnp.real(y).dtype)

        def body(x, p):
            z = x - p.step * inv_norm2 * jnp.real(op.T(op(x) - y)) + _filter(x, p.kernel) + p.bias
            thresholds = jnp.concatenate([jnp.zeros((1,), p.weight.dtype), jnp.abs(p.weight)])
            c = soft_threshold(wavedec2(z, self.wavelet, self.levels), thresholds[band])
            return waverec2(c, self.wavelet, self.levels), None

        x, _ = jax.lax.scan(body, x, self.params)
        return x
