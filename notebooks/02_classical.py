# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Classical regularisation
#
# The review half of the field, in code: Landweber's semi-convergence and the discrepancy principle,
# TSVD and Tikhonov as spectral filters, sparsity by ISTA/FISTA in a wavelet basis, Banach-space
# Landweber, and total variation by primal-dual. Every solver is a pure function of
# (operator, data, parameters) returning a `Solution` (x, iterations, converged, residual_norm,
# history), jittable and vmappable over data and parameters.

# %%
import os
import sys

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

if "ipykernel" not in sys.modules and not os.environ.get("DISPLAY"):
    matplotlib.use("Agg")  # a script without a display: render off-screen (in Jupyter: inline)
import matplotlib.pyplot as plt

from jaxrecon import solvers as S
from jaxrecon.metrics import psnr
from jaxrecon.operators import ParallelBeamGeometry, RadonTransform, fbp, gaussian_noise, operator_norm
from jaxrecon.phantoms import ellipse_sinogram, rasterize, shepp_logan_ellipses

N = int(os.environ.get("JAXRECON_NOTEBOOK_SIZE", 128))
FIGURES = os.environ.get("JAXRECON_NOTEBOOK_FIGURES")


def show(fig, name):
    if FIGURES:
        os.makedirs(FIGURES, exist_ok=True)
        fig.savefig(os.path.join(FIGURES, f"02_{name}.png"), dpi=80)
    plt.show() if matplotlib.get_backend().lower() != "agg" else plt.close(fig)


# %% [markdown]
# ## The problem: 30 views, 5% noise, no inverse crime
# Data are exact line integrals of the continuous phantom plus noise; the truth image is the pixel
# average of the phantom.

# %%
phantom = shepp_logan_ellipses(jnp.float32)
geom = ParallelBeamGeometry.uniform((N, N), 30, int(np.ceil(1.43 * N)), dtype=jnp.float32)
op = RadonTransform(geom)
x_true = rasterize(phantom, (N, N), supersample=4)
exact = ellipse_sinogram(phantom, geom)
y = gaussian_noise(jax.random.PRNGKey(0), exact, 0.05)
delta = jnp.linalg.norm(y - exact)
norm_a = operator_norm(op)
print(f"||A|| = {float(norm_a):.2f}, noise level delta = {float(delta):.2f}")

# %% [markdown]
# ## Landweber: semi-convergence and the discrepancy principle
# The error falls, then rises as the iteration starts fitting noise. The discrepancy principle
# stops at the first iterate with $\|Ax_k - y\| \le \tau\delta$.

# %%
run = S.landweber(op, y, step=1 / norm_a**2, max_iter=600, reference=x_true, history=True)
stopped = S.landweber(op, y, step=1 / norm_a**2, max_iter=600, delta=delta, tau=1.0)
err = np.asarray(run.history["error"]) / float(jnp.linalg.norm(x_true))
print(f"best iteration {err.argmin() + 1}; discrepancy principle: {int(stopped.iterations)} iterations, "
      f"met: {bool(stopped.converged)} (at small N the discretisation error alone can exceed delta)")
fig, ax = plt.subplots(figsize=(5, 3))
ax.semilogx(np.arange(1, len(err) + 1), err, label="relative error")
ax.axvline(int(stopped.iterations), color="k", ls="--", label="discrepancy principle")
ax.set_xlabel("iteration")
ax.legend()
show(fig, "semiconvergence")

# %% [markdown]
# ## TSVD and Tikhonov: filter factors
# Both act on the singular value decomposition $A = U\Sigma V^\top$: TSVD keeps the first $k$
# components, Tikhonov damps them by $s_i^2/(s_i^2 + \alpha)$. A small version of the problem keeps
# the dense matrix small; `decompose` computes the SVD once for a whole regularisation path.

# %%
n_small = 32
geom_s = ParallelBeamGeometry.uniform((n_small, n_small), 30, 46, dtype=jnp.float32)
op_s = RadonTransform(geom_s)
x_s = rasterize(phantom, (n_small, n_small), supersample=4)
y_s = gaussian_noise(jax.random.PRNGKey(1), ellipse_sinogram(phantom, geom_s), 0.05)
svd = S.decompose(op_s)
alphas = jnp.logspace(-1, 3, 9) * 1.0
ranks = jnp.arange(50, 900, 100)
tik_path = jax.vmap(lambda a: S.tikhonov(svd, y_s, a))(alphas)
tsvd_path = jax.vmap(lambda r: S.tsvd(svd, y_s, r))(ranks)
print("Tikhonov PSNR over alpha:", np.round([float(psnr(x, x_s, data_range=1.0)) for x in tik_path], 1))
print("TSVD PSNR over rank:     ", np.round([float(psnr(x, x_s, data_range=1.0)) for x in tsvd_path], 1))
s = np.asarray(svd.s)
fig, ax = plt.subplots(figsize=(5, 3))
ax.semilogy(s, label="singular values")
ax.plot(s**2 / (s**2 + 10.0), label="Tikhonov filter, alpha = 10")
ax.plot((np.arange(len(s)) < 300).astype(float), label="TSVD filter, k = 300")
ax.set_xlabel("index i")
ax.legend()
show(fig, "filters")

# %% [markdown]
# ## Sparsity: FISTA in a wavelet basis, and Banach-space Landweber
# $\min_x \tfrac12\|Ax-y\|^2 + \alpha\|Wx\|_1$ with an orthonormal Daubechies wavelet $W$; and
# Landweber with $\ell^p$ duality maps, $p = 1.5$, stopped by the discrepancy principle.

# %%
alpha = 0.02 * float(norm_a) ** 2
levels = min(3, S.max_level((N, N), "db2"))
sparse = S.fista(op, y, alpha, wavelet="db2", levels=levels, step=1 / norm_a**2, max_iter=150)
banach = S.banach_landweber(op, y, 1.5, op_norm=norm_a, max_iter=1500, delta=delta)
coeffs = S.wavedec2(sparse.x, "db2", levels)
print(f"FISTA: {float(jnp.mean(jnp.abs(coeffs) < 1e-3)):.0%} of wavelet coefficients are ~0")

# %% [markdown]
# ## Total variation by primal-dual (Chambolle-Pock)

# %%
tv = S.tv_pdhg(op, y, 2.0, nonnegative=True, op_norm=norm_a, max_iter=300)
recons = {
    "FBP (Hann)": fbp(y, geom, "hann"),
    "Landweber + DP": stopped.x,
    "FISTA (db2)": sparse.x,
    "Banach p = 1.5": banach.x,
    "TV": tv.x,
}
fig, axes = plt.subplots(1, len(recons) + 1, figsize=(3 * (len(recons) + 1), 3))
axes[0].imshow(x_true, cmap="gray", vmin=0, vmax=1)
axes[0].set_title("truth")
for ax, (name, x) in zip(axes[1:], recons.items()):
    ax.imshow(x, cmap="gray", vmin=0, vmax=1)
    ax.set_title(f"{name}\n{float(psnr(x, x_true, data_range=1.0)):.1f} dB", fontsize=9)
for ax in axes:
    ax.axis("off")
show(fig, "reconstructions")
for name, x in recons.items():
    print(f"{name:16s} PSNR {float(psnr(x, x_true, data_range=1.0)):.2f} dB")
assert float(psnr(tv.x, x_true, data_range=1.0)) > float(psnr(recons["FBP (Hann)"], x_true, data_range=1.0))
