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
`LipschitzCNN` (`jaxrecon.nets.lipschitz`, re-exported here and from `jaxrecon.deq` under the old
names): a DnCNN-style stack of `SpectralConv2d` layers with ReLU, whose convolutions are rescaled
so that the network $N_\theta$ is $L$-Lipschitz by construction ($L$ = `lipschitz` < 1). Each
convolution's bound is *exact*: a zero-padded ("SAME") convolution on $H\times W$ images is a
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

**Plug-and-play and RED as equilibria.** With a denoiser $D$ as the regulariser, `DEProx(op, D,
weight=None)` is the fixed point of PnP proximal gradient (`jaxrecon.solvers.pnp_pgd` with step
$\eta/\|A\|^2$), and `EquilibriumRegularisation(op, G, alpha=alpha)` with $G(x) = x - D(x)$ solves RED's
equation $A^*(Ax - y) + \alpha(x - D(x)) = 0$ (`jaxrecon.solvers.red`): the same solutions, now with
implicit gradients with respect to the denoiser's weights, its noise level and the data.

Any other regulariser (e.g. `jaxrecon.nets.DnCNN`) can be passed; contractivity is then the
user's business, and `jacobian_penalty` (a Hutchinson estimate of $\|\partial T/\partial x\|_F^2$
for the training loss) is the tool to encourage it.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ..nets._scheme import INITS, check_data, check_operator, check_positive_int, initial_reconstruction, norm_of
from ..nets.conv import _float_dtype
from ..nets.lipschitz import LipschitzCNN, SpectralConv2d, jacobian_penalty, spectral_normalise
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
