# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Learned reconstruction: from the lecture notes' CNN to learned primal-dual
#
# A CNN layer is $x_{i+1} = \sigma(b + w * x_i)$; an iteration of projected gradient descent,
# $x_{k+1} = P_{\ge 0}(W x_k + b(y))$, has the same shape. This notebook walks from one to the
# other at a tiny size: FFT convolutions, a post-processing U-Net, unrolled PGD, learned gradient
# descent and learned primal-dual, all trained here on random ellipses for a few steps, then the
# learned primal-dual shipped with the package (trained with `benchmarks/comparison.py --preset quick`).
#
# Every learned scheme is an Equinox module called on ONE measurement as `model(y, op)`; the operator
# is an argument, so the same code serves CT, deblurring and MRI. Batch with `jax.vmap`.

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

from jaxrecon.metrics import psnr
from jaxrecon.nets import (
    FFTConv2d,
    LearnedGradientDescent,
    LearnedPrimalDual,
    PostProcessing,
    SeedCNN,
    UNet,
    UnrolledPGD,
)
from jaxrecon.operators import circular_convolve, fbp
from jaxrecon.train import CTData, batch_keys, default_optimizer, fit, reconstruction_loss_fn, shepp_logan_sample

N = int(os.environ.get("JAXRECON_NOTEBOOK_SIZE", 64))
STEPS = int(os.environ.get("JAXRECON_NOTEBOOK_STEPS", 300 if N >= 64 else 10))
FIGURES = os.environ.get("JAXRECON_NOTEBOOK_FIGURES")


def show(fig, name):
    if FIGURES:
        os.makedirs(FIGURES, exist_ok=True)
        fig.savefig(os.path.join(FIGURES, f"03_{name}.png"), dpi=80)
    plt.show() if matplotlib.get_backend().lower() != "agg" else plt.close(fig)


# %% [markdown]
# ## 1. A convolution layer computed by FFT
# `FFTConv2d` computes $y_i = b_i + \sum_j w_{ij} * x_j$ with the circular convolution
# $(f * g)_j = \sum_i f_i\, g_{(j - i) \bmod N}$ in $O(N \log N)$; with one channel it is exactly
# `circular_convolve`.

# %%
key = jax.random.key(0)
layer = FFTConv2d(1, 1, kernel_size=5, use_bias=False, key=key)
x = jax.random.normal(jax.random.key(1), (1, N, N))
direct = circular_convolve(x[0], layer.weight[0, 0], centred=True)
print("FFT layer vs circular_convolve, max difference:", float(jnp.max(jnp.abs(layer(x)[0] - direct))))

# The lecture notes' small CNN: 1 -> 2 -> 4 -> 2 -> 1 channels, ReLU after every layer.
cnn = SeedCNN(key=key)
print("SeedCNN parameters:", sum(a.size for a in jax.tree.leaves(eqx.filter(cnn, eqx.is_inexact_array))))

# %% [markdown]
# ## 2. The problem and the training data
# Random ellipses (Adler & Öktem's distribution) generated on the fly, 30 views, 5% noise, exact
# analytic sinograms; the test image is Shepp-Logan, never seen in training. Training, validation
# and test draw from disjoint key streams.

# %%
data = CTData.uniform(N, num_angles=30, noise=0.05)
op = data.operator
sl = shepp_logan_sample(data)
val = jax.jit(jax.vmap(data.sample))(batch_keys(0, "validation", 0, 8))
sample = jax.jit(jax.vmap(data.sample))


def batch_fn(k, batch_size=4):
    return sample(batch_keys(0, "train", k * batch_size, batch_size))


def train(model, steps=STEPS, lr=1e-3):
    t0 = time.perf_counter()
    result = fit(model, reconstruction_loss_fn(op), batch_fn, default_optimizer(lr, num_steps=steps), steps,
                 progress=False)
    return result.model, time.perf_counter() - t0


def score(model):
    return float(psnr(eqx.filter_jit(lambda m, y: m(y, op))(model, sl.y), sl.x, data_range=1.0))


results = {"FBP": float(psnr(fbp(sl.y, data.geometry, "hann"), sl.x, data_range=1.0))}
print(f"FBP on Shepp-Logan: {results['FBP']:.2f} dB")

# %% [markdown]
# ## 3. Post-processing: FBP + U-Net (FBPConvNet)
# A residual U-Net cleans the FBP image: $x = x_0 + \mathrm{UNet}(x_0)$, $x_0 = \mathrm{FBP}(y)$.

# %%
unet = PostProcessing(UNet(channels=8, levels=3, key=key), init="fbp")
unet, t = train(unet)
results["FBP + U-Net"] = score(unet)
print(f"FBP + U-Net after {STEPS} steps ({t:.0f} s): {results['FBP + U-Net']:.2f} dB")

# %% [markdown]
# ## 4. Unrolling: projected gradient descent with learned steps, filters and biases
# At initialisation `UnrolledPGD` *is* $K$ steps of non-negative Tikhonov by projected gradient
# descent, $x_{k+1} = P_{\ge 0}((1 - \lambda\alpha)x_k - \lambda A^*(Ax_k - y))$; training learns
# per-iteration steps $\lambda_k$, weights $\alpha_k$, filters $w_k$ and biases $\beta_k$.

# %%
pgd = UnrolledPGD(op, num_iterations=10)
results["PGD (10 classical steps)"] = score(pgd)
pgd, t = train(pgd, lr=1e-2)
results["Unrolled PGD"] = score(pgd)
print(f"unrolled PGD: {results['PGD (10 classical steps)']:.2f} dB untrained -> {results['Unrolled PGD']:.2f} dB")

# %% [markdown]
# ## 5. Learned gradient descent and learned primal-dual
# LGD feeds a CNN the iterate, the gradient $A^*(Ax - y)$ and a memory; LPD also learns in the data
# space (dual CNNs on the sinogram). Here: small widths and 5 iterations, so it trains in seconds.

# %%
lgd = LearnedGradientDescent(op, num_iterations=5, hidden=16, init="fbp", last_scale=0.1, key=key)
lgd, t_lgd = train(lgd)
lpd = LearnedPrimalDual(op, num_iterations=5, hidden=16, init="fbp", last_scale=0.1, key=key)
lpd, t_lpd = train(lpd)
results["LGD"], results["LPD"] = score(lgd), score(lpd)
print(f"LGD: {results['LGD']:.2f} dB ({t_lgd:.0f} s), LPD: {results['LPD']:.2f} dB ({t_lpd:.0f} s)")

# %%
recons = {
    "FBP": fbp(sl.y, data.geometry, "hann"),
    "FBP + U-Net": unet(sl.y, op),
    "Unrolled PGD": pgd(sl.y, op),
    "LGD": lgd(sl.y, op),
    "LPD": lpd(sl.y, op),
}
fig, axes = plt.subplots(1, len(recons) + 1, figsize=(2.6 * (len(recons) + 1), 3))
axes[0].imshow(np.asarray(sl.x), cmap="gray", vmin=0, vmax=1)
axes[0].set_title("Shepp-Logan")
for ax, (name, img) in zip(axes[1:], recons.items()):
    ax.imshow(np.asarray(img), cmap="gray", vmin=0, vmax=1)
    ax.set_title(f"{name}\n{results[name]:.1f} dB", fontsize=9)
for ax in axes:
    ax.axis("off")
fig.tight_layout()
show(fig, "learned")

# %% [markdown]
# With a few hundred steps the ordering of the papers starts to appear; the real comparison (with
# TV, LISTA and full training) is `benchmarks/comparison.py`, quoted in the README.
#
# ## 6. The shipped learned primal-dual
# Trained by the quick preset of the comparison (64 x 64, 30 views, 5% noise, 2500 steps). The
# package stores its weights and JSON config; `load_pretrained` rebuilds it.

# %%
from jaxrecon.train.experiment import load_pretrained

shipped, shipped_data = load_pretrained("lpd_quick")
s = shepp_logan_sample(shipped_data)
x = eqx.filter_jit(lambda m, y: m(y, shipped_data.operator))(shipped, s.y)
print(f"shipped LPD on Shepp-Logan 64x64: {float(psnr(x, s.x, data_range=1.0)):.2f} dB")
