r"""Gradient-step denoisers $D = I - \nabla g_\theta$ (Hurault, Leclaire, Papadakis, ICLR 2022).

A gradient-step denoiser is one explicit gradient-descent step on a learned scalar potential
$g_\theta$, so a plug-and-play scheme built on it is an optimisation method for an explicit
objective. With the data term $f(x) = \tfrac12\|Ax - y\|^2$ and a weight $\lambda > 0$,
`jaxrecon.solvers.gs_pnp` runs proximal gradient descent on $F = f + \lambda g_\theta$:

$$x_{k+1} = \operatorname{prox}_{\tau f}\big((1 - \tau\lambda)\,x_k + \tau\lambda\,D(x_k)\big)
          = \operatorname{prox}_{\tau f}\big(x_k - \tau\lambda\nabla g_\theta(x_k)\big).$$

**Convergence condition.** If $\nabla g_\theta$ is $L$-Lipschitz, $g_\theta$ is bounded below and
$\tau\lambda L < 1$, then $F(x_k)$ is non-increasing, $\|x_{k+1} - x_k\| \to 0$ and every cluster
point is a stationary point of $F$. (With $f$ convex the descent lemma gives
$F(x_{k+1}) \le F(x_k) - (\tfrac1\tau - \tfrac{\lambda L}{2})\|x_{k+1} - x_k\|^2$, so the decrease
itself holds up to $\tau\lambda L < 2$; we state and test the stricter $\tau\lambda L < 1$. The
update is the one in Hurault et al.'s GS-PnP code, `z = (1 - lamb*tau) x + lamb*tau D(x)`, then the
prox of the data term.) $L$ is the largest $\|\nabla^2 g_\theta\|$: `GradientStepDenoiser.hessian_norm`
estimates it at a point by power iteration (a local estimate, not a bound).
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._scheme import check_positive_int

__all__ = ["GradientStepDenoiser", "hessian_norm"]


def hessian_norm(
    potential: Callable, x: Array, key: PRNGKeyArray, *, num_iter: int = 20
) -> Float[Array, ""]:
    r"""Estimate $\|\nabla^2 g(x)\|_2$ for a scalar `potential` $g$ by `num_iter` power iterations.

    Hessian-vector products by reverse-over-reverse differentiation
    ($v \mapsto \nabla_x\langle\nabla g(x), v\rangle$), so it works with custom-VJP layers such as
    `SpectralConv2d`. The estimate approaches the largest $|$eigenvalue$|$ from below (the Hessian
    is symmetric); a local Lipschitz constant of $\nabla g$ at `x`, not a global bound.

    Example:
        >>> hessian_norm(lambda x: 2.0 * jnp.sum(x**2), jnp.ones(3), jax.random.key(0))  # ~4
    """
    num_iter = check_positive_int(num_iter, "num_iter", "hessian_norm")
    x = jnp.asarray(x)
    grad = jax.grad(potential)

    def hvp(v):
        return jax.grad(lambda z: jnp.vdot(grad(z), v))(x)

    v = jax.random.normal(key, x.shape, x.dtype)
    v = v / jnp.linalg.norm(v)

    def step(v, _):
        w = hvp(v)
        n = jnp.linalg.norm(w)
        return w / jnp.where(n > 0, n, 1), n

    _, norms = jax.lax.scan(step, v, None, length=num_iter)
    return norms[-1]


class GradientStepDenoiser(eqx.Module):
    r"""$D(x) = x - \nabla g_\theta(x)$ with Hurault et al.'s potential $g_\theta(x) = \tfrac12\|x - N_\theta(x)\|^2$.

    `network` is any callable (an Equinox module: `DnCNN`, `UNet`, a `from_flax` adapter, ...) on
    images of the denoiser's shape, e.g. `(1, H, W)`. $\nabla g_\theta$ is computed by `jax.grad`,
    so $D$ costs a forward and a backward pass of $N_\theta$; training $D$ differentiates through
    that gradient (reverse over reverse), and the network should be smooth (e.g. ELU, softplus,
    tanh activations: with ReLU, $\nabla g_\theta$ is discontinuous and has no Lipschitz constant).
    `potential` gives $g_\theta$ for `jaxrecon.solvers.gs_pnp` and `hessian_norm` an estimate of
    its local smoothness $L$ (see the module docstring for the condition $\tau\lambda L < 1$).

    Shapes: those of `network`'s input, e.g. `(1, H, W) -> (1, H, W)`; one sample, batch with `jax.vmap`.

    Example:
        >>> net = DnCNN(features=8, depth=3, key=jax.random.key(0))
        >>> D = GradientStepDenoiser(net)
        >>> D(jnp.ones((1, 16, 16))).shape, D.potential(jnp.ones((1, 16, 16))).shape
        ((1, 16, 16), ())
    """

    network: Callable

    def __init__(self, network: Callable):
        if not callable(network):
            raise TypeError(f"GradientStepDenoiser expects a callable network, got {type(network).__name__}")
        self.network = network

    def potential(self, x: Array) -> Float[Array, ""]:
        r"""$g_\theta(x) = \tfrac12\|x - N_\theta(x)\|^2$ (a scalar, $\ge 0$)."""
        x = jnp.asarray(x)
        out = self.network(x)
        if jnp.shape(out) != x.shape:
            raise ValueError(
                f"GradientStepDenoiser: the network must map its input shape to itself, got {x.shape} -> "
                f"{jnp.shape(out)}"
            )
        return 0.5 * jnp.sum((x - out) ** 2)

    def __call__(self, x: Array) -> Array:
        x = jnp.asarray(x)
        return x - jax.grad(self.potential)(x)

    def hessian_norm(self, x: Array, key: PRNGKeyArray, *, num_iter: int = 20) -> Float[Array, ""]:
        """`hessian_norm` of `potential` at `x`: a local estimate of the Lipschitz constant of $\\nabla g_\\theta$."""
        return hessian_norm(self.potential, x, key, num_iter=num_iter)
