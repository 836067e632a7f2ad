# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Beyond hand-made penalties: ADMM, plug-and-play, RED, and training without truths
#
# Total variation is a prior somebody wrote down. Two newer ideas replace it with something learned
# while keeping the classical iteration: **plug-and-play** (PnP) puts a trained *denoiser* where the
# proximal map of the penalty was, and **RED** (regularisation by denoising) uses the denoiser's
# residual $x - D(x)$ as the gradient of a penalty. Neither needs paired (measurement, truth) data:
# the denoiser learns from clean images alone, and the same solver works for any operator. A third
# idea drops the truths altogether: **self-supervised losses** train a reconstruction network from
# noisy measurements only (SURE, equivariant imaging, Noise2Inverse). This notebook walks through all
# three on the quick preset's CT data, and shows that the RED solution is differentiable by the
# implicit function theorem through `jaxrecon.deq`.

# %%
import json
import os
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

if "ipykernel" not in sys.modules and not os.environ.get("DISPLAY"):
    matplotlib.use("Agg")  # a script without a display: render off-screen (in Jupyter: inline)
import matplotlib.pyplot as plt

from jaxrecon.deq import EquilibriumRegularisation
from jaxrecon.metrics import psnr
from jaxrecon.nets import LearnedPrimalDual
from jaxrecon.operators import fbp, operator_norm
from jaxrecon.solvers import admm, pnp_admm, red, tv_pdhg
from jaxrecon.train import (CTData, batch_keys, default_optimizer, fit, load_denoiser, pnp_denoiser,
                            shepp_logan_sample, sure_loss_fn)

N = int(os.environ.get("JAXRECON_NOTEBOOK_SIZE", 64))
STEPS = int(os.environ.get("JAXRECON_NOTEBOOK_STEPS", 300 if N >= 64 else 10))
FIGURES = os.environ.get("JAXRECON_NOTEBOOK_FIGURES")


def show(fig, name):
    if FIGURES:
        os.makedirs(FIGURES, exist_ok=True)
        fig.savefig(os.path.join(FIGURES, f"07_{name}.png"), dpi=80)
    plt.show() if matplotlib.get_backend().lower() != "agg" else plt.close(fig)


def db(img, ref):
    return float(psnr(img, ref, data_range=1.0))


def repository_file(relative):
    """A file of the jaxrecon repository (this notebook may run from notebooks/, the root or a copy)."""
    starts = [Path.cwd(), *Path.cwd().parents]
    if "__file__" in globals():
        starts = [Path(__file__).resolve().parent, *Path(__file__).resolve().parents, *starts]
    for root in starts:
        if (root / relative).exists():
            return root / relative
    raise FileNotFoundError(f"{relative} not found above {Path.cwd()}: run this notebook inside a jaxrecon clone")


# %% [markdown]
# ## 1. Data and the classical baseline
# Random ellipses with exact analytic sinograms, 30 views, 5% Gaussian noise (the quick preset at
# $N \times N$); four validation ellipses to compare methods on, and Shepp-Logan. TV is solved by
# primal-dual (`tv_pdhg`) with the weight the comparison benchmark chose at 64 x 64.

# %%
data = CTData.uniform(N, num_angles=30, noise=0.05)
op = data.operator
norm2 = float(operator_norm(op)) ** 2
val = jax.jit(jax.vmap(data.sample))(batch_keys(0, "validation", 0, 4))
sl = shepp_logan_sample(data)
def mean_db(recon, xs):
    return float(np.mean([db(r, x) for r, x in zip(recon, xs)]))


# The data term grows like N^3 and TV like N: the benchmark's weight 1.26 at 64 x 64, scaled by
# (N / 64)^2, then the best of three around it on these ellipses.
tv = jax.jit(jax.vmap(lambda y, a: tv_pdhg(op, y, a, max_iter=500).x, in_axes=(0, None)))
tv_scores = {a: mean_db(tv(val.y, a), val.x) for a in 1.26 * (N / 64) ** 2 * np.array([0.5, 1.0, 2.0])}
ALPHA_TV = float(max(tv_scores, key=tv_scores.get))
x_fbp = jax.vmap(lambda y: fbp(y, data.geometry, "cosine"))(val.y)
x_tv = tv(val.y, ALPHA_TV)
print(f"FBP {mean_db(x_fbp, val.x):.2f} dB, TV {mean_db(x_tv, val.x):.2f} dB (alpha {ALPHA_TV:.3g}; "
      f"mean over {len(val.x)} ellipses)")

# %% [markdown]
# ## 2. ADMM: the same TV problem, another splitting
# `admm` splits $\min_x \tfrac12\|Ax-y\|^2 + \alpha\,\|\nabla x\|_{2,1}$ as $z = \nabla x$ and alternates
# a conjugate-gradient solve in $x$, the prox of the penalty in $z$, and a dual update. It reaches
# the primal-dual solution (the tests check 1e-3 relative difference at convergence).

# %%
x_admm = jax.jit(jax.vmap(lambda y: admm(op, y, ALPHA_TV, penalty="tv", max_iter=200).x))(val.y)
rel = float(jnp.linalg.norm(x_admm - x_tv) / jnp.linalg.norm(x_tv))
print(f"ADMM-TV {mean_db(x_admm, val.x):.2f} dB; relative difference to PDHG-TV {rel:.1e}")

# %% [markdown]
# ## 3. Plug-and-play ADMM with a trained denoiser
# Replace the prox of the penalty by a denoiser $D_\sigma$: $x$-update as before, $z = D_\sigma(x + u)$,
# $u \leftarrow u + x - z$. The denoiser here is the conditional DnCNN that `benchmarks/priors.py`
# trained on clean random-ellipse images with Gaussian noise of random level (`train_denoiser`; the
# checkpoint ships in `benchmarks/checkpoints/dncnn_quick`). Its noise level $\sigma$ and the ADMM
# penalty $\rho$ are the two knobs ($\sigma^2$ plays the role of $\alpha/\rho$): a small sweep.
# The denoiser saw 64 x 64 images; at another size the ellipses' edges look different to it.

# %%
net, _ = load_denoiser(repository_file("benchmarks/checkpoints/dncnn_quick"))


@eqx.filter_jit
def pnp(net, ys, sigma, rho):
    den = pnp_denoiser(net, sigma)
    return jax.vmap(lambda y: pnp_admm(op, y, den, rho=rho * norm2, max_iter=50).x)(ys)


scores = {s: mean_db(pnp(net, val.y, s, 0.01), val.x) for s in (0.03, 0.05, 0.08)}
best_sigma = max(scores, key=scores.get)
print("PnP-ADMM, rho = 0.01 ||A||^2: " + ", ".join(f"sigma {s:g}: {v:.2f} dB" for s, v in scores.items()))
x_pnp = pnp(net, val.y, best_sigma, 0.01)

# %% [markdown]
# ## 4. RED
# RED runs gradient descent on $\tfrac12\|Ax-y\|^2 + \tfrac\alpha2 x^\top(x - D(x))$, whose gradient (for a
# denoiser with symmetric Jacobian) is $A^*(Ax-y) + \alpha(x - D(x))$: the denoiser's residual is the
# penalty's gradient.

# %%
x_red = jax.jit(jax.vmap(lambda y: red(op, y, pnp_denoiser(net, 0.03), 0.03 * norm2, max_iter=100).x))(val.y)
print(f"RED (sigma 0.03, alpha 0.03 ||A||^2) {mean_db(x_red, val.x):.2f} dB")

fig, axes = plt.subplots(1, 5, figsize=(13, 2.9))
for ax, (name, img) in zip(axes, [("truth", val.x[0]), ("FBP", x_fbp[0]), ("TV", x_tv[0]),
                                   (f"PnP-ADMM (sigma {best_sigma:g})", x_pnp[0]), ("RED", x_red[0])]):
    ax.imshow(img, cmap="gray", vmin=0, vmax=1)
    ax.set_title(name if name == "truth" else f"{name}\n{db(img, val.x[0]):.1f} dB", fontsize=9)
    ax.axis("off")
show(fig, "reconstructions")

# %% [markdown]
# ## 5. The RED solution, differentiated implicitly
# The iterations above are unrolled loops. To differentiate a *converged* solution, e.g. to tune the
# denoiser's noise level $\sigma$ or its weights on training pairs, without storing the iterations, the
# deep equilibrium schemes of `jaxrecon.deq` compute the same fixed points with Anderson acceleration
# forward and the implicit function theorem backward: `EquilibriumRegularisation(op, G, alpha=alpha)`
# with $G(x) = x - D_\sigma(x)$ solves RED's equation $A^*(Ax - y) + \alpha(x - D_\sigma(x)) = 0$, and
# `DEProx(op, D_\sigma, weight=None)` is the PnP proximal-gradient fixed point $x = D_\sigma(x - sA^*(Ax-y))$.
# Below, the gradient of the error with respect to $\sigma$ against a central difference.
#
# Convergence is guaranteed only for contractive maps (a `LipschitzCNN` denoiser, or a gradient-step
# denoiser under the condition of `gs_pnp`). This DnCNN is not constrained: measured at 32 x 32, the
# RED equation converges in 35-85 Anderson iterations, while the PnP-PGD fixed point did not converge
# within 200 for $\sigma$ in 0.005-0.02 (the solver says so: `converged=False`).

# %%
def residual_at(sigma):  # G(x) = x - D_sigma(x) on (1, H, W); sigma is a leaf, so it gets a gradient
    return eqx.Partial(lambda n, s, v: v - n(v, s).astype(v.dtype), net, jnp.asarray(sigma, jnp.float32))


def red_error(sigma, y, x_true):
    model = EquilibriumRegularisation(op, residual_at(sigma), alpha=0.03 * norm2, init="fbp", tol=1e-5,
                                      max_iter=150)
    sol = model.solve(y, op)
    return jnp.mean((sol.z - x_true) ** 2), sol


run = eqx.filter_jit(jax.value_and_grad(red_error, has_aux=True))
(err, sol), grad = run(0.03, val.y[0], val.x[0])
eps = 5e-3
central = (run(0.03 + eps, val.y[0], val.x[0])[0][0] - run(0.03 - eps, val.y[0], val.x[0])[0][0]) / (2 * eps)
print(f"RED equilibrium: {int(sol.iterations)} Anderson iterations, converged {bool(sol.converged)}, "
      f"{db(sol.z, val.x[0]):.2f} dB (the 100 plain RED steps of section 4, stopped long before the "
      f"solution: {db(x_red[0], val.x[0]):.2f} dB on this image)")
print(f"d MSE / d sigma at sigma = 0.03: implicit {float(grad):.4e}, central difference {float(central):.4e}")

# %% [markdown]
# ## 6. Training without truths
# `jaxrecon.train` has three losses that read only the measurements $y$ (the truth is used to *score*
# the model, never to train it):
#
# - `sure_loss_fn`: Stein's unbiased estimate of $\|A f(y) - Ax\|^2$ for Gaussian noise of known level
#   (one Monte-Carlo probe for the divergence). It sees only $Af$: nothing about the null space of $A$.
# - `equivariant_imaging_loss_fn`: SURE plus $\|T_g f(y) - f(A T_g f(y) + \text{noise})\|^2$ for random
#   rotations $T_g$; rotated images are measured through other null spaces.
# - `noise2inverse_loss_fn`: split the views, reconstruct from some, predict the others.
#
# A learned primal-dual trained with SURE for a few steps (`jaxrecon train --loss sure` does the same
# from the command line):

# %%
sample = jax.jit(jax.vmap(data.sample))
model = LearnedPrimalDual(op, key=jax.random.key(0))
t0 = time.perf_counter()
result = fit(model, sure_loss_fn(op, noise_level=0.05), lambda k: sample(batch_keys(0, "train", 4 * k, 4)),
             default_optimizer(1e-3, num_steps=STEPS), STEPS, progress=False)
x_sure = jax.vmap(lambda y: result.model(y, op))(val.y)
print(f"LPD trained with SURE for {STEPS} steps ({time.perf_counter() - t0:.0f} s): {mean_db(x_sure, val.x):.2f} dB")

# %% [markdown]
# A few steps show the workings, not what the methods reach. `benchmarks/priors.py` trained and tuned
# everything at 64 x 64 on the comparison's data; its table (16 test ellipses and Shepp-Logan):

# %%
table = json.loads(repository_file("benchmarks/results/priors_quick.json").read_text())
for row in table["rows"]:
    print(f"{row['method']:36s} test {row['test'][0]:6.2f} dB   Shepp-Logan {row['shepp_logan'][0]:6.2f} dB")
