r"""Deep equilibrium (DEQ) reconstruction schemes and contractive regularisers.

A DEQ scheme reconstructs an image as the fixed point $x^\star = T_\theta(x^\star; y, A)$ of one
learned iteration map, computed by `jaxrecon.deq.fixed_point` (forward: Anderson/Broyden/fixed-point
iteration; backward: implicit differentiation), so memory does not grow with the iterations and the
iteration can be run longer at test time. With $\tilde A = A/\|A\|$ and $\tilde y = y/\|A\|$
($\|A\|$ by power iteration at construction, a frozen leaf):

- `DEGrad` (Gilton, Ongie, Willett, "Deep equilibrium architectures for inverse problems in
  imaging", IEEE TCI 2021): $T(x) = x - \eta\,\big(\tilde A^*(\tilde A x - \tilde y) + R_\theta(x)\big)$.
- `DEProx` (same paper): $T(x) = R_\theta\big(x - \eta\,\tilde A^*(\tilde A x - \tilde y)\big)$.
- `EquilibriumRegularisation` (Obmann & Haltmeier, "Convergent regularization in inverse problems
  and linear plug-and-play denoisers" / "deep equilibrium regularisation"): the solution of
  $A^*(Ax - y) + \alpha\,G_\theta(x) = 0$, as the fixed point of
  $T(x) = x - \eta\,\big(A^*(Ax - y) + \alpha G_\theta(x)\big)/\|A\|^2$.

For complex data (subsampled Fourier) the real part of the adjoint is used, as in
`jaxrecon.nets.LearnedGradientDescent`. Every scheme is an Equinox module called on ONE
measurement, `model(y, op) -> x`; `model.solve(y, op)` also returns the solver diagnostics and
`model.iterate(y, op, K)` runs the same map a fixed number of times (unrolled comparison, "iterate
more" experiments).

**Contractivity (one approach: spectral normalisation).** The default regulariser is a
`LipschitzCNN`: a DnCNN-style stack of `SpectralConv2d` layers with ReLU, whose convolutions are
rescaled so that the network $N_\theta$ is $L$-Lipschitz by construction ($L$ = `lipschitz` < 1).
Each convolution's bound is *exact*: a zero-padded ("SAME") convolution on $H\times W$ images is a
restriction of the circular convolution on the $(H+k-1)\times(W+k-1)$ grid, whose norm is
$\max_\omega \sigma_{\max}(\hat K(\omega))$ over that grid's DFT frequencies (per-frequency SVD of
the $C_\text{out}\times C_\text{in}$ kernel spectrum). No stored power-iteration vector, no state:
the normalisation is computed from the weights, once per model call (outside the fixed-point
loop). The schemes then contract for every admissible step:

- `DEGrad` with $R_\theta(x) = x - N_\theta(x)$ (`residual=True`) and weight $\alpha \in (0, 1]$: for
  $\eta(1 + 2\alpha) \le 2$ (so for $\eta \le 2/3$), $\mathrm{Lip}(T) \le 1 - \eta\alpha(1 - L)$; the
  learned step is $\eta = \tfrac23\,\mathrm{sigmoid}(\theta_\eta)$.
- `DEProx` with $R_\theta = N_\theta$ (`residual=False`): $\|I - \eta\tilde A^*\tilde A\| \le 1$ for
  $\eta \le 2$, so $\mathrm{Lip}(T) \le 1 - \alpha(1 - L)$; $\eta = 2\,\mathrm{sigmoid}(\theta_\eta)$.
- `EquilibriumRegularisation` with $G_\theta(x) = x - N_\theta(x)$ (strongly monotone): with
  $\tilde\alpha = \alpha/\|A\|^2$ and the default $\eta = 1/(1+\tilde\alpha)$,
  $\mathrm{Lip}(T) \le 1 - \eta\tilde\alpha(1 - L)$, and the solution is unique.

Any other regulariser (e.g. `jaxrecon.nets.DnCNN`) can be passed; contractivity is then the
user's business, and `jacobian_penalty` (a Hutchinson estimate of $\|\partial T/\partial x\|_F^2$
for the training loss) is the tool to encourage it.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from ..nets._scheme import INITS, check_data, check_operator, check_positive_int, initial_reconstruction, norm_of
from ..nets.conv import _check_image, _float_dtype, _positive_int, _uniform
from ..operators.linear_operator import LinearOperator
from ..solvers.tikhonov import cgls
from .fixed_point import BACKWARD_SOLVERS, SOLVERS, FixedPointSolution, _check_method, _check_options, fixed_point

__all__ = [
    "SpectralConv2d",
    "LipschitzCNN",
    "spectral_normalise",
    "jacobian_penalty",
    "DEGrad",
    "DEProx",
    "EquilibriumRegularisation",
    "DEQ_INITS",
]

DEQ_INITS = ("cgls",) + INITS


# --------------------------------------------------------------------------------------------------
# Contractive regularisers
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# DEQ schemes
# --------------------------------------------------------------------------------------------------


def _apply(z, model, y, op):
    """The fixed-point map handed to `fixed_point`: the model is its `params`."""
    return model.update(z, y, op)


def _sigmoid_inverse(p: float) -> float:
    return math.log(p / (1 - p))


class _Equilibrium(eqx.Module):
    """The shared part of the DEQ schemes: configuration, start, solve, fixed iterations."""

    regulariser: Callable
    op_norm: Float[Array, ""]
    op_shapes: tuple = eqx.field(static=True)  # (in_shape, out_shape) of the operator it was built for
    init: str = eqx.field(static=True)
    init_iterations: int = eqx.field(static=True)
    solver: str = eqx.field(static=True)
    tol: float = eqx.field(static=True)
    max_iter: int = eqx.field(static=True)
    backward_solver: str = eqx.field(static=True)
    backward_tol: float | None = eqx.field(static=True)
    backward_max_iter: int | None = eqx.field(static=True)
    solver_options: tuple = eqx.field(static=True)
    backward_options: tuple = eqx.field(static=True)

    def _setup(self, name, op, regulariser, *, residual, lipschitz, features, depth, key, dtype, init,
               init_iterations, solver, tol, max_iter, backward_solver, backward_tol, backward_max_iter,
               solver_options, backward_options):
        check_operator(op, name)
        dtype = _float_dtype(dtype, name)
        if regulariser is None:
            if key is None:
                raise ValueError(f"{name} needs a PRNG `key` to initialise its default regulariser (or a `regulariser`)")
            if isinstance(lipschitz, (int, float)) and not isinstance(lipschitz, bool) and not 0 < lipschitz < 1:
                raise ValueError(
                    f"{name} expects 0 < lipschitz < 1 (its fixed-point map is a contraction only then), got {lipschitz!r}"
                )
            regulariser = LipschitzCNN(1, features, depth, lipschitz=lipschitz, residual=residual, key=key,
                                       dtype=dtype)
        elif not callable(regulariser):
            raise TypeError(f"{name} expects a callable regulariser (1, H, W) -> (1, H, W), got "
                            f"{type(regulariser).__name__}")
        if init not in DEQ_INITS:
            raise ValueError(f"{name} expects init to be one of {DEQ_INITS}, got {init!r}")
        for tname, value in (("tol", tol), ("backward_tol", backward_tol)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
                raise ValueError(f"{name} expects {tname} to be a float >= 0, got {value!r}")
        self.regulariser = regulariser
        self.op_norm = norm_of(op, dtype)
        self.op_shapes = (tuple(op.in_shape), tuple(op.out_shape))
        self.init = init
        self.init_iterations = check_positive_int(init_iterations, "init_iterations", name)
        self.solver = _check_method("solver", solver, SOLVERS)
        self.tol = float(tol)
        self.max_iter = check_positive_int(max_iter, "max_iter", name)
        self.backward_solver = _check_method("backward_solver", backward_solver, BACKWARD_SOLVERS)
        self.backward_tol = None if backward_tol is None else float(backward_tol)
        self.backward_max_iter = (
            None if backward_max_iter is None else check_positive_int(backward_max_iter, "backward_max_iter", name)
        )
        options = _check_options(solver, dict(solver_options or {}), "solver")
        boptions = _check_options(backward_solver, dict(backward_options or {}), "backward_solver")
        self.solver_options = tuple(sorted(options.items()))
        self.backward_options = tuple(sorted(boptions.items()))

    # -- the map ---------------------------------------------------------------------------------

    @abc.abstractmethod
    def update(self, z: Float[Array, "H W"], y: Array, op: LinearOperator) -> Float[Array, "H W"]:
        """One application of the scheme's fixed-point map $T(z; y, A)$ (same dtype as `z`)."""

    def _data_gradient(self, z, y, op):
        r"""$\tilde A^*(\tilde A z - \tilde y) = A^*(Az - y)/\|A\|^2$ (real part for complex data)."""
        scale = 1 / jax.lax.stop_gradient(self.op_norm)
        return jnp.real(op.T(op(z) - y)) * scale**2

    def _regularise(self, z):
        out = self.regulariser(z[None])
        if not hasattr(out, "shape") or tuple(out.shape) != (1, *z.shape):
            raise ValueError(
                f"{type(self).__name__} expects the regulariser to map (1, H, W) -> (1, H, W): expected "
                f"{(1, *z.shape)}, got {getattr(out, 'shape', type(out).__name__)}"
            )
        return out[0]

    # -- running it ------------------------------------------------------------------------------

    def _start(self, y, op):
        name = type(self).__name__
        check_operator(op, name, self.op_shapes)
        y = check_data(y, op, name)
        model = spectral_normalise(self, tuple(op.in_shape))
        return model, y, model.initial(y, op)

    def initial(self, y: Array, op: LinearOperator) -> Float[Array, "H W"]:
        """The starting image: `init_iterations` CGLS steps on $\\min\\|Ax - y\\|$ (`init="cgls"`) or
        `jaxrecon.nets.initial_reconstruction(y, op, init)`; no gradient flows through it."""
        dtype = self.op_norm.dtype
        if self.init == "cgls":
            x = cgls(op, y, max_iter=self.init_iterations).x
            x = jnp.real(x)
        else:
            x = initial_reconstruction(y, op, self.init)
        return jax.lax.stop_gradient(x.astype(dtype))

    def solve(self, y: Array, op: LinearOperator) -> FixedPointSolution:
        """The fixed point with its diagnostics (`z`, `iterations`, `residual_norm`, `converged`,
        `nonfinite`; see `jaxrecon.deq.fixed_point`)."""
        model, y, x0 = self._start(y, op)
        return fixed_point(
            _apply, x0, model, y, op,
            solver=self.solver, tol=self.tol, max_iter=self.max_iter,
            backward_solver=self.backward_solver, backward_tol=self.backward_tol,
            backward_max_iter=self.backward_max_iter, backward_options=dict(self.backward_options),
            **dict(self.solver_options),
        )  # fmt: skip

    def __call__(self, y: Array, op: LinearOperator) -> Float[Array, "H W"]:
        """The reconstruction $x^\\star = T(x^\\star; y, A)$ of ONE measurement `y` (shape `op.out_shape`)."""
        return self.solve(y, op).z

    def iterate(
        self, y: Array, op: LinearOperator, num_iterations: int, *, return_all: bool = False, unroll: int | bool = 1
    ) -> Float[Array, "*K H W"]:
        """Apply the map exactly `num_iterations` times from the initial image (a `lax.scan`,
        reverse-differentiable): $x_k = T(x_{k-1})$, $x_0$ = `initial(y, op)`. Returns $x_K$, or with
        `return_all=True` all of $x_1, \\dots, x_K$ stacked, shape `(K, H, W)`. `unroll` is
        `lax.scan`'s (XLA CPU runs convolutions inside a loop ~20x slower than unrolled, at a compile
        time linear in `unroll`)."""
        num_iterations = check_positive_int(num_iterations, "num_iterations", f"{type(self).__name__}.iterate")
        model, y, x0 = self._start(y, op)

        def body(z, _):
            z = model.update(z, y, op)
            return z, (z if return_all else None)

        z, zs = jax.lax.scan(body, x0, None, length=num_iterations, unroll=unroll)
        return zs if return_all else z




class _LearnedStep(_Equilibrium):
    """A scheme with a learned step $\\eta = \\eta_{\\max}\\,\\mathrm{sigmoid}(\\theta_\\eta) \\in (0, \\eta_{\\max})$
    and a learned regulariser weight $\\alpha = \\mathrm{sigmoid}(\\theta_\\alpha) \\in (0, 1)$ (or
    $\\alpha \\equiv 1$, no parameter, when built with `weight=None`)."""

    step_param: Float[Array, ""]
    weight_param: Float[Array, ""] | None
    max_step: float = eqx.field(static=True)

    @property
    def step(self) -> Float[Array, ""]:
        """$\\eta = \\eta_{\\max}\\,\\mathrm{sigmoid}(\\theta_\\eta)$."""
        return self.max_step * jax.nn.sigmoid(self.step_param)

    @property
    def weight(self) -> Float[Array, ""]:
        """$\\alpha = \\mathrm{sigmoid}(\\theta_\\alpha)$, or 1 without a weight parameter."""
        if self.weight_param is None:
            return jnp.ones((), self.step_param.dtype)
        return jax.nn.sigmoid(self.weight_param)

    def _learned(self, name, step, max_step, weight):
        self.max_step, self.step_param = _step_parameter(name, step, max_step, self.op_norm.dtype)
        if weight is None:
            self.weight_param = None
        elif isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight < 1:
            raise ValueError(f"{name} expects 0 < weight < 1 or None, got weight={weight!r}")
        else:
            self.weight_param = jnp.asarray(_sigmoid_inverse(weight), self.op_norm.dtype)


class DEGrad(_LearnedStep):
    r"""Deep equilibrium gradient descent (Gilton, Ongie & Willett 2021):
    $x^\star = T(x^\star)$ with

    $$ T(x) = x - \eta\,\big(\tilde A^*(\tilde A x - \tilde y) + \alpha R_\theta(x)\big),\qquad
       \eta = \eta_{\max}\,\mathrm{sigmoid}(\theta_\eta) \in (0, \eta_{\max}),\quad
       \alpha = \mathrm{sigmoid}(\theta_\alpha) \in (0, 1), $$

    $\tilde A = A/\|A\|$, $\tilde y = y/\|A\|$, $R_\theta$ the learned regulariser gradient (default
    $x - N_\theta(x)$, $N_\theta$ $L$-Lipschitz: a contraction for $\eta_{\max} = 2/3$, see the module
    docstring). `step` is the initial $\eta$, `weight` the initial $\alpha$ (`None`: $\alpha \equiv 1$,
    Gilton et al.'s map). The weight matters with a contractive $N_\theta$: $x - N_\theta(x)$ vanishes
    at ONE image only (the fixed point of $N_\theta$), so with $\alpha = 1$ the equilibrium is pulled
    strongly towards it (measured, 300 quick-preset training steps, Shepp-Logan PSNR: 16.8 dB with
    $\alpha \equiv 1$, 21.9 dB from $\alpha = 0.1$, 23.0 dB from $\alpha = 0.02$, the default).

    Args:
        op: the forward operator (real `(H, W)` images; any `jaxrecon.operators` operator). Its norm
            is computed once here and stored as a frozen leaf.
        regulariser: a callable module `(1, H, W) -> (1, H, W)`; default a `LipschitzCNN(1,
            features, depth, lipschitz=lipschitz, residual=True)` built with `key`.
        init: the starting image, `"cgls"` (`init_iterations` CGLS steps, default 5) or one of
            `jaxrecon.nets.initial_reconstruction`'s (`"auto"`, `"fbp"`, `"adjoint"`, `"zero"`).
        solver, tol, max_iter, backward_solver, backward_tol, backward_max_iter, solver_options, backward_options:
            passed to `jaxrecon.deq.fixed_point` (relative residual $\|T(x) - x\| \le$ `tol` $\|x\|$).
        weight: the initial regulariser weight $\alpha \in (0, 1)$ (learned), or None for $\alpha \equiv 1$.
        key: PRNG key of the default regulariser; dtype: its float dtype and the iterate's.

    Example:
        >>> op = RadonTransform(ParallelBeamGeometry.uniform((16, 16), 8))
        >>> model = DEGrad(op, features=8, depth=3, key=jax.random.key(0))
        >>> x = model(jnp.zeros(op.out_shape), op)          # (16, 16)
        >>> xs = model.iterate(jnp.zeros(op.out_shape), op, 10, return_all=True)   # (10, 16, 16)
    """


    def __init__(
        self,
        op: LinearOperator,
        regulariser: Callable | None = None,
        *,
        step: float = 1 / 3,
        max_step: float = 2 / 3,
        weight: float | None = 0.02,
        features: int = 32,
        depth: int = 4,
        lipschitz: float = 0.9,
        init: str = "cgls",
        init_iterations: int = 5,
        solver: str = "anderson",
        tol: float = 1e-4,
        max_iter: int = 50,
        backward_solver: str = "anderson",
        backward_tol: float | None = None,
        backward_max_iter: int | None = None,
        solver_options: dict | None = None,
        backward_options: dict | None = None,
        key: PRNGKeyArray | None = None,
        dtype=None,
    ):
        self._setup("DEGrad", op, regulariser, residual=True, lipschitz=lipschitz, features=features, depth=depth,
                    key=key, dtype=dtype, init=init, init_iterations=init_iterations, solver=solver, tol=tol,
                    max_iter=max_iter, backward_solver=backward_solver, backward_tol=backward_tol,
                    backward_max_iter=backward_max_iter, solver_options=solver_options,
                    backward_options=backward_options)
        self._learned("DEGrad", step, max_step, weight)


    def update(self, z, y, op):
        return (z - self.step * (self._data_gradient(z, y, op) + self.weight * self._regularise(z))).astype(z.dtype)


class DEProx(_LearnedStep):
    r"""Deep equilibrium proximal gradient (Gilton, Ongie & Willett 2021): $x^\star = T(x^\star)$ with

    $$ T(x) = (1 - \alpha)\,v + \alpha R_\theta(v),\quad v = x - \eta\,\tilde A^*(\tilde A x - \tilde y),\qquad
       \eta = \eta_{\max}\,\mathrm{sigmoid}(\theta_\eta) \in (0, \eta_{\max}),\quad
       \alpha = \mathrm{sigmoid}(\theta_\alpha) \in (0, 1), $$

    $R_\theta$ a learned proximal map/denoiser (default $N_\theta$, $L$-Lipschitz: a contraction for
    $\eta_{\max} = 2$, see the module docstring), relaxed by the learned weight $\alpha$ (a map that
    is $L$-Lipschitz with $L < 1$ cannot be the identity, so $R_\theta$ alone would bias every
    image; the relaxed map is $(1 - \alpha(1 - L))$-Lipschitz). `step` is the initial $\eta$,
    `weight` the initial $\alpha$ (`None`: $\alpha \equiv 1$, $T(x) = R_\theta(v)$, Gilton et al.'s map).

    Args:
        op: the forward operator (real `(H, W)` images; any `jaxrecon.operators` operator). Its norm
            is computed once here and stored as a frozen leaf.
        regulariser: a callable module `(1, H, W) -> (1, H, W)`; default a `LipschitzCNN(1,
            features, depth, lipschitz=lipschitz, residual=False)` built with `key`.
        init: the starting image, `"cgls"` (`init_iterations` CGLS steps, default 5) or one of
            `jaxrecon.nets.initial_reconstruction`'s (`"auto"`, `"fbp"`, `"adjoint"`, `"zero"`).
        solver, tol, max_iter, backward_solver, backward_tol, backward_max_iter, solver_options, backward_options:
            passed to `jaxrecon.deq.fixed_point` (relative residual $\|T(x) - x\| \le$ `tol` $\|x\|$).
        weight: the initial relaxation $\alpha \in (0, 1)$ (learned), or None for $\alpha \equiv 1$.
        key: PRNG key of the default regulariser; dtype: its float dtype and the iterate's.

    Example:
        >>> op = CircularConvolution(gaussian_kernel(5, 1.0), (16, 16))
        >>> model = DEProx(op, features=8, depth=3, key=jax.random.key(0))
        >>> model.solve(jnp.zeros(op.out_shape), op).converged
    """


    def __init__(
        self,
        op: LinearOperator,
        regulariser: Callable | None = None,
        *,
        step: float = 1.0,
        max_step: float = 2.0,
        weight: float | None = 0.02,
        features: int = 32,
        depth: int = 4,
        lipschitz: float = 0.9,
        init: str = "cgls",
        init_iterations: int = 5,
        solver: str = "anderson",
        tol: float = 1e-4,
        max_iter: int = 50,
        backward_solver: str = "anderson",
        backward_tol: float | None = None,
        backward_max_iter: int | None = None,
        solver_options: dict | None = None,
        backward_options: dict | None = None,
        key: PRNGKeyArray | None = None,
        dtype=None,
    ):
        self._setup("DEProx", op, regulariser, residual=False, lipschitz=lipschitz, features=features, depth=depth,
                    key=key, dtype=dtype, init=init, init_iterations=init_iterations, solver=solver, tol=tol,
                    max_iter=max_iter, backward_solver=backward_solver, backward_tol=backward_tol,
                    backward_max_iter=backward_max_iter, solver_options=solver_options,
                    backward_options=backward_options)
        self._learned("DEProx", step, max_step, weight)


    def update(self, z, y, op):
        v = z - self.step * self._data_gradient(z, y, op)
        return ((1 - self.weight) * v + self.weight * self._regularise(v)).astype(z.dtype)


class EquilibriumRegularisation(_Equilibrium):
    r"""Equilibrium regularisation (Obmann & Haltmeier): $x^\star$ solves

    $$ A^*(Ax - y) + \alpha\,G_\theta(x) = 0, $$

    computed as the fixed point of $T(x) = x - \eta\,\big(\tilde A^*(\tilde A x - \tilde y)
    + \tilde\alpha\,G_\theta(x)\big)$, $\tilde\alpha = \alpha/\|A\|^2$ (the same equation divided by
    $\|A\|^2$). $G_\theta$ defaults to $x - N_\theta(x)$ with $N_\theta$ $L$-Lipschitz (strongly monotone:
    unique solution, and $T$ contracts with the default $\eta = 1/(1 + \tilde\alpha)$, factor
    $\le 1 - \eta\tilde\alpha(1 - L)$). With $G(x) = x$ the solution is Tikhonov's
    $(A^*A + \alpha I)^{-1}A^*y$.

    `alpha` > 0 (in the units of $A^*A$) is stored as a leaf `log_alpha`; it is a fixed
    hyper-parameter (`stop_gradient`) unless `learn_alpha=True`. `step` overrides $\eta$ (a float
    in $(0, 2/(1 + 2\tilde\alpha)]$ keeps $T$ a contraction for strongly monotone $G$).

    Args:
        op: the forward operator (real `(H, W)` images; any `jaxrecon.operators` operator). Its norm
            is computed once here and stored as a frozen leaf.
        regulariser: a callable module `(1, H, W) -> (1, H, W)`; default a `LipschitzCNN(1,
            features, depth, lipschitz=lipschitz, residual=True)` built with `key`.
        init: the starting image, `"cgls"` (`init_iterations` CGLS steps, default 5) or one of
            `jaxrecon.nets.initial_reconstruction`'s (`"auto"`, `"fbp"`, `"adjoint"`, `"zero"`).
        solver, tol, max_iter, backward_solver, backward_tol, backward_max_iter, solver_options, backward_options:
            passed to `jaxrecon.deq.fixed_point` (relative residual $\|T(x) - x\| \le$ `tol` $\|x\|$).
        key: PRNG key of the default regulariser; dtype: its float dtype and the iterate's.

    Example:
        >>> op = CircularConvolution(gaussian_kernel(5, 1.0), (16, 16))
        >>> model = EquilibriumRegularisation(op, alpha=0.05, features=8, depth=3, key=jax.random.key(0))
        >>> model(jnp.zeros(op.out_shape), op).shape
        (16, 16)
    """

    log_alpha: Float[Array, ""]
    learn_alpha: bool = eqx.field(static=True)
    fixed_step: float | None = eqx.field(static=True)

    def __init__(
        self,
        op: LinearOperator,
        regulariser: Callable | None = None,
        *,
        alpha: float,
        learn_alpha: bool = False,
        step: float | None = None,
        features: int = 32,
        depth: int = 4,
        lipschitz: float = 0.9,
        init: str = "cgls",
        init_iterations: int = 5,
        solver: str = "anderson",
        tol: float = 1e-4,
        max_iter: int = 100,
        backward_solver: str = "anderson",
        backward_tol: float | None = None,
        backward_max_iter: int | None = None,
        solver_options: dict | None = None,
        backward_options: dict | None = None,
        key: PRNGKeyArray | None = None,
        dtype=None,
    ):
        name = "EquilibriumRegularisation"
        self._setup(name, op, regulariser, residual=True, lipschitz=lipschitz, features=features, depth=depth,
                    key=key, dtype=dtype, init=init, init_iterations=init_iterations, solver=solver, tol=tol,
                    max_iter=max_iter, backward_solver=backward_solver, backward_tol=backward_tol,
                    backward_max_iter=backward_max_iter, solver_options=solver_options,
                    backward_options=backward_options)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < math.inf:
            raise ValueError(f"{name} expects a finite alpha > 0, got {alpha!r}")
        if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float)) or not step > 0):
            raise ValueError(f"{name} expects step to be None or a float > 0, got {step!r}")
        self.log_alpha = jnp.asarray(math.log(alpha), self.op_norm.dtype)
        self.learn_alpha = bool(learn_alpha)
        self.fixed_step = None if step is None else float(step)

    @property
    def alpha(self) -> Float[Array, ""]:
        """$\\alpha = \\exp(\\text{log\\_alpha})$ (no gradient unless `learn_alpha`)."""
        log_alpha = self.log_alpha if self.learn_alpha else jax.lax.stop_gradient(self.log_alpha)
        return jnp.exp(log_alpha)

    def update(self, z, y, op):
        alpha = self.alpha / jax.lax.stop_gradient(self.op_norm) ** 2
        step = 1 / (1 + alpha) if self.fixed_step is None else self.fixed_step
        return (z - step * (self._data_gradient(z, y, op) + alpha * self._regularise(z))).astype(z.dtype)


def _step_parameter(name: str, step, max_step, dtype):
    if isinstance(max_step, bool) or not isinstance(max_step, (int, float)) or not 0 < max_step < math.inf:
        raise ValueError(f"{name} expects a finite max_step > 0, got {max_step!r}")
    if isinstance(step, bool) or not isinstance(step, (int, float)) or not 0 < step < max_step:
        raise ValueError(f"{name} expects 0 < step < max_step = {max_step}, got step={step!r}")
    return float(max_step), jnp.asarray(_sigmoid_inverse(step / max_step), dtype)
