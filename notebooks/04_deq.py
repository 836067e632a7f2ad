# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Deep equilibrium reconstruction
#
# An unrolled network applies $K$ learned iterations and is trained by backpropagating through all
# of them: memory grows with $K$, and the network is only trained to be good *after exactly $K$
# steps*. A deep equilibrium (DEQ) model instead defines the reconstruction as the fixed point
# $x^\star = T_\theta(x^\star; y)$ of one learned iteration map, computes it with any fixed-point
# solver, and differentiates it implicitly. This notebook shows, at a tiny size:
#
# 1. fixed points and their implicit gradients (`jaxrecon.deq.fixed_point`);
# 2. a DEQ for CT (`DEGrad`, Gilton, Ongie & Willett 2021) and its contractive regulariser;
# 3. implicit gradients against backpropagation through a converged unrolled loop, and their memory;
# 4. "iterate more": the same map trained unrolled vs as a DEQ, then run for more iterations.

# %%
import os
import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

if "ipykernel" not in sys.modules and not os.environ.get("DISPLAY"):
    matplotlib.use("Agg")  # a script without a display: render off-screen (in Jupyter: inline)
import matplotlib.pyplot as plt

from jaxrecon.deq import DEGrad, fixed_point
from jaxrecon.metrics import psnr
from jaxrecon.train import CTData, batch_keys, default_optimizer, fit, reconstruction_loss_fn, shepp_logan_sample

N = int(os.environ.get("JAXRECON_NOTEBOOK_SIZE", 64))
STEPS = int(os.environ.get("JAXRECON_NOTEBOOK_STEPS", 300 if N >= 64 else 30))
FIGURES = os.environ.get("JAXRECON_NOTEBOOK_FIGURES")


def show(fig, name):
    if FIGURES:
        os.makedirs(FIGURES, exist_ok=True)
        fig.savefig(os.path.join(FIGURES, f"04_{name}.png"), dpi=80)
    plt.show() if matplotlib.get_backend().lower() != "agg" else plt.close(fig)


# %% [markdown]
# ## 1. Fixed points and implicit differentiation
# For a contraction $f(z) = Wz + b$ ($\|W\| < 1$) the fixed point is $z^\star = (I - W)^{-1}b$.
# `fixed_point(f, z0, params)` finds it with jaxopt's solvers (plain iteration, Anderson
# acceleration, Broyden) inside our own loop, and reports iterations, residual and convergence.
# Its gradient never differentiates the loop: by the implicit function theorem,
# $\partial\ell/\partial\theta = u^\top \partial f/\partial\theta$ with $(I - \partial f/\partial z)^\top u = \partial\ell/\partial z^\star$,
# one linear solve at the fixed point. For $\ell = \sum_i z^\star_i$ and $\theta = b$: $u = (I - W)^{-\top}\mathbf 1$.

# %%
n = 20
a = jax.random.normal(jax.random.key(0), (n, n))
w = 0.9 * a / jnp.linalg.norm(a, 2)  # spectral norm 0.9
b = jax.random.normal(jax.random.key(1), (n,))
f = lambda z, p: p[0] @ z + p[1]  # noqa: E731
exact = jnp.linalg.solve(jnp.eye(n) - w, b)
for solver in ("fixed_point", "anderson", "broyden"):
    sol = fixed_point(f, jnp.zeros(n), (w, b), solver=solver, tol=1e-6, max_iter=500)
    err = float(jnp.linalg.norm(sol.z - exact) / jnp.linalg.norm(exact))
    print(f"{solver:12s}: {int(sol.iterations):3d} iterations, converged {bool(sol.converged)}, error {err:.1e}")

grad_b = jax.grad(lambda b: fixed_point(f, jnp.zeros(n), (w, b), tol=1e-6).z.sum())(b)
grad_exact = jnp.linalg.solve((jnp.eye(n) - w).T, jnp.ones(n))
print("implicit gradient vs (I - W)^-T 1, relative error:",
      float(jnp.linalg.norm(grad_b - grad_exact) / jnp.linalg.norm(grad_exact)))

# %% [markdown]
# ## 2. A DEQ for CT: deep equilibrium gradient descent
# `DEGrad` iterates $T(x) = x - \eta\big(\tilde A^*(\tilde Ax - \tilde y) + R_\theta(x)\big)$ with
# $R_\theta(x) = x - N_\theta(x)$ and $N_\theta$ a `LipschitzCNN`: its convolutions are spectrally
# normalised so that $\mathrm{Lip}(N_\theta) \le L < 1$ *by construction* (exact per-frequency SVD
# bound of each zero-padded convolution), which makes $T$ a contraction for every admissible step
# $\eta \le 2/3$: the fixed point exists, is unique, and every solver finds it. The data are random
# ellipses, 30 views, 5% noise, exact analytic sinograms; the test image is Shepp-Logan.

# %%
data = CTData.uniform(N, num_angles=30, noise=0.05)
op = data.operator
sl = shepp_logan_sample(data)
sample = jax.jit(jax.vmap(data.sample))
deq = DEGrad(op, features=8, depth=3, tol=1e-5, max_iter=100, key=jax.random.key(0))

sol = eqx.filter_jit(lambda m, y: m.solve(y, op))(deq, sl.y)
print(f"untrained DEGrad: {int(sol.iterations)} Anderson iterations, relative residual "
      f"{float(sol.residual_norm):.1e}, converged {bool(sol.converged)}")
xs = eqx.filter_jit(lambda m, y: m.iterate(y, op, 60, return_all=True))(deq, sl.y)
steps = jnp.linalg.norm((xs[1:] - xs[:-1]).reshape(59, -1), axis=1) / jnp.linalg.norm(xs[1:].reshape(59, -1), axis=1)
fig, ax = plt.subplots(figsize=(4.5, 3))
ax.semilogy(np.arange(2, 61), np.asarray(steps))
ax.set(xlabel="iteration k", ylabel=r"$\|x_k - x_{k-1}\| / \|x_k\|$", title="plain iteration of the DEQ map")
ax.grid(True, which="both", alpha=0.3)
fig.tight_layout()
show(fig, "contraction")

# %% [markdown]
# The plain iteration converges linearly (a contraction); Anderson acceleration gets there in far
# fewer evaluations of $T$.
#
# ## 3. Implicit gradients vs backpropagation through a converged loop
# If the unrolled loop $x_K = T^K(x_0)$ has converged, backpropagating through it approximates the
# implicit gradient, but it stores the activations of all $K$ iterations. The implicit gradient
# needs only the fixed point. XLA's buffer assignment of the compiled gradient shows the memory
# (`jax.jit(...).lower(...).compile().memory_analysis()`).

# %%
batch = sample(batch_keys(0, "train", 0, 2))


def mse(x_fn, model):
    return jnp.mean((jax.vmap(lambda y: x_fn(model, y))(batch.y) - batch.x) ** 2)


def implicit(model, y):
    return model(y, op)


def unrolled(k):
    return lambda model, y: model.iterate(y, op, k)


def grad_and_memory(x_fn):
    params, static = eqx.partition(deq, eqx.is_array)

    def loss(params):
        return mse(x_fn, eqx.combine(params, static))

    compiled = jax.jit(jax.grad(loss)).lower(params).compile()
    mem = compiled.memory_analysis()
    temp = getattr(mem, "temp_size_in_bytes", None) if mem is not None else None
    return compiled(params), temp


def flat(tree):
    return jnp.concatenate([a.ravel() for a in jax.tree.leaves(tree)])


g_deq, mem_deq = grad_and_memory(implicit)
for k in (30, 120):
    g_k, mem_k = grad_and_memory(unrolled(k))
    diff = float(jnp.linalg.norm(flat(g_k) - flat(g_deq)) / jnp.linalg.norm(flat(g_deq)))
    mb = "n/a" if mem_k is None else f"{mem_k / 2**20:.2f} MB"
    print(f"backprop through {k:3d} iterations: relative difference to the implicit gradient {diff:.1e}, "
          f"XLA temp memory {mb}")
print("implicit (DEQ) gradient: XLA temp memory", "n/a" if mem_deq is None else f"{mem_deq / 2**20:.2f} MB")

# %% [markdown]
# The two gradients agree to the accuracy of the fixed point, while only backpropagation's memory
# grows with the number of iterations (`benchmarks/deq_memory.py` measures this at 64 x 64 for
# 1 to 100 iterations).
#
# ## 4. Iterate more
# Train the *same* map two ways for a few steps: unrolled (backprop through $K = 5$ applications)
# and as a DEQ (at its fixed point). Then run both maps for more iterations than they were trained
# for. The unrolled network is trained to be good after exactly $K$ steps, with nothing asking its
# later iterates to stay good; the DEQ is trained at the point that further iterations converge to.

# %%
K = 5


class Unrolled(eqx.Module):
    deq: DEGrad

    def __call__(self, y, op):
        return self.deq.iterate(y, op, K, unroll=True)


def batch_fn(k, batch_size=4):
    return sample(batch_keys(0, "train", k * batch_size, batch_size))


def train(model, lr=1e-2):
    t0 = time.perf_counter()
    result = fit(model, reconstruction_loss_fn(op), batch_fn, default_optimizer(lr, num_steps=STEPS), STEPS,
                 progress=False)
    return result.model, time.perf_counter() - t0


trained_unrolled, t_unrolled = train(Unrolled(deq))
trained_deq, t_deq = train(deq)
print(f"trained {STEPS} steps: unrolled {t_unrolled:.0f} s, DEQ {t_deq:.0f} s")

num = 6 * K
run = eqx.filter_jit(lambda m, y: m.iterate(y, op, num, return_all=True))
curves = {}
for name, model in (("unrolled (K = 5)", trained_unrolled.deq), ("DEQ", trained_deq)):
    its = run(model, sl.y)
    curves[name] = np.array([float(psnr(x, sl.x, data_range=1.0)) for x in its])
    print(f"{name:16s} PSNR at k = 1, {K}, {num}: " + ", ".join(f"{curves[name][k - 1]:.2f}" for k in (1, K, num)))
x_star = eqx.filter_jit(lambda m, y: m(y, op))(trained_deq, sl.y)
print(f"DEQ fixed point (Anderson): {float(psnr(x_star, sl.x, data_range=1.0)):.2f} dB")

fig, ax = plt.subplots(figsize=(5, 3.2))
for name, c in curves.items():
    ax.plot(np.arange(1, num + 1), c, label=name)
ax.axvline(K, color="gray", ls="--", lw=0.8)
ax.set(xlabel="iterations k", ylabel="PSNR (dB)", title="Shepp-Logan, iterating past training")
ax.legend()
ax.grid(True, alpha=0.3)
fig.tight_layout()
show(fig, "iterate_more")

# %% [markdown]
# The DEQ's curve ends at its Anderson fixed point: iterating more changes nothing once the map has
# converged, which is what it was trained for. The unrolled map is only asked to be good at
# $k = K$. After so few training steps (here `STEPS`; the regulariser has barely learned anything)
# both maps still lead from the starting image (5 CGLS steps) to a worse fixed point, and the two
# curves are close. The full-size experiment, `benchmarks/iterate_more.py` (64 x 64, learned
# gradient descent with shared weights vs DEGrad, 1000 training steps each), measures how far an
# unrolled network degrades past its training depth and how stable the DEQ stays. Related: `EquilibriumRegularisation` solves
# $A^*(Ax - y) + \alpha G_\theta(x) = 0$, a convergent regularisation method for strongly monotone
# $G_\theta$ (`benchmarks/equilibrium_convergence.py`).
