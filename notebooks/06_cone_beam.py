# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Cone beam: geometry, exact projections, FDK, CGLS and SIRT
#
# A cone-beam scanner has a point source and a flat 2D detector turning together on a circle around
# the object; every ray starts at the source, so each view is a 2D projection `(rows, cols)` and the
# data are `(views, rows, cols)`. `jaxrecon` models the circular orbit with `ConeBeamGeometry` (ASTRA's
# `cone`, plus a detector offset) and any per-view source and detector with `ConeBeamVecGeometry`
# (ASTRA's `cone_vec`). `project`/`backproject` and `XRayTransform` work exactly as for the 2D
# geometries, so the iterative solvers run unchanged; `fdk` is the analytic reconstruction
# (Feldkamp-Davis-Kress), the cone-beam counterpart of `fbp`. This notebook reconstructs a 3D
# Shepp-Logan phantom from exact, noisy projections with all three.

# %%
import os
import sys
import time

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

if "ipykernel" not in sys.modules and not os.environ.get("DISPLAY"):
    matplotlib.use("Agg")  # a script without a display: render off-screen (in Jupyter: inline)
import matplotlib.pyplot as plt

from jaxrecon.metrics import psnr
from jaxrecon.operators import (
    ConeBeamGeometry,
    XRayTransform,
    fdk,
    fdk_central_fan,
    gaussian_noise,
)
from jaxrecon.phantoms import (
    ellipsoid_projections,
    rasterize_ellipsoids,
    shepp_logan_ellipsoids,
)
from jaxrecon.solvers import cgls, sirt

N = int(os.environ.get("JAXRECON_NOTEBOOK_SIZE", "48"))
FIGURES = os.environ.get("JAXRECON_NOTEBOOK_FIGURES")


def show(fig, name):
    if FIGURES:
        os.makedirs(FIGURES, exist_ok=True)
        fig.savefig(os.path.join(FIGURES, f"06_{name}.png"), dpi=80)
    plt.show() if matplotlib.get_backend().lower() != "agg" else plt.close(fig)


def db(vol, ref):
    return float(psnr(vol, ref, data_range=1.0))


# %% [markdown]
# ## 1. The geometry and its ASTRA mapping
# Volumes are `(Z, Y, X)` with voxel `(k, i, j)` centred at $x = j - \tfrac{X-1}{2}$,
# $y = i - \tfrac{Y-1}{2}$, $z = k - \tfrac{Z-1}{2}$ (unit voxels; unlike the 2D images, $y$ grows with
# the row index, as in ASTRA's 3D volumes). At angle $\beta$ the source is at
# $R_{so}(\sin\beta, -\cos\beta, 0)$ and the detector's centre at $R_{od}(-\sin\beta, \cos\beta, 0)$;
# its columns step along $(\cos\beta, \sin\beta, 0)$ and its rows along $z$. The source plane $z = 0$ is
# the orbit of `FanBeamGeometry`. Here the source and the detector are $2N$ from the centre, so the
# magnification is 2 and detector pixels of 2 voxels are one voxel wide at the centre.

# %%
R = 2.0 * N
views = 3 * N // 2
det = (int(1.7 * N) + 1, int(1.7 * N) + 1)
geom = ConeBeamGeometry.uniform((N, N, N), views, det, R, R, det_spacing=(2.0, 2.0))
cone_angle = 2 * np.degrees(np.arctan(det[0] / 2 * 2.0 / (2 * R)))
print(f"volume {geom.shape}, projections {geom.sinogram_shape}, full cone angle {cone_angle:.1f} deg, "
      f"fan angle {2 * np.degrees(float(fdk_central_fan(geom).half_fan_angle())):.1f} deg")
print("cone_vec row of view 0 (source, detector centre, u, v):", np.round(np.asarray(geom.vectors()[0]), 2))

# %% [markdown]
# ## 2. Exact projections with noise
# `ellipsoid_projections` integrates an ellipsoid phantom exactly along every ray, so the data do not
# come from the discrete projector (no inverse crime). `shepp_logan_ellipsoids` is the 3D modified
# Shepp-Logan phantom; its slice $z = 0$ is the 2D one (rows flipped). We add 5% Gaussian noise.

# %%
phantom = shepp_logan_ellipsoids()
x_true = rasterize_ellipsoids(phantom, geom.shape, supersample=2)
y_clean = ellipsoid_projections(phantom, geom)
y = gaussian_noise(jax.random.PRNGKey(0), y_clean, 0.05)
op = XRayTransform(geom)
rel = float(jnp.linalg.norm(op(x_true) - y_clean) / jnp.linalg.norm(y_clean))
print(f"|project(x) - exact| / |exact| = {rel:.3f} (discretisation of the phantom and the projector)")

# %% [markdown]
# ## 3. FDK
# `fdk(y, geom, filter)` weights each detector pixel by the cosine of its ray's angle to the central
# ray, $D_{sd}/\sqrt{D_{sd}^2 + a^2 + b^2}$, filters each detector row with a ramp (here with
# the Shepp-Logan window), and backprojects voxel by voxel with the distance weight
# $R_{so} D_{sd}/U^2$. It is exact in the source plane (where it is the fan-beam FBP of the central
# detector row) and approximate away from it. A short scan ($\pi$ plus the fan angle) works too:
# Parker's weights are applied when the angles cover less than $2\pi$.

# %%
recon_fdk = jax.jit(fdk, static_argnums=2)
t0 = time.perf_counter()
recons = {"FDK": recon_fdk(y, geom, "shepp-logan").block_until_ready()}
times = {"FDK": time.perf_counter() - t0}

# %% [markdown]
# ## 4. CGLS and SIRT with the same operator
# `XRayTransform(geom)` is a `LinearOperator`, so `cgls` runs on it as on a 2D transform. SIRT,
#
# $$ x \leftarrow x + C^{-1} A^\top R^{-1}(y - Ax), \qquad R = A\mathbf 1,\ C = A^\top \mathbf 1, $$
#
# (`jaxrecon.solvers.sirt`, for any non-negative operator) is Landweber's iteration with step 1 on the
# row- and column-scaled operator $R^{-1/2} A C^{-1/2}$, whose norm is at most 1. Both stop early, which
# regularises (semi-convergence): at 32^3 the error against the phantom is smallest after about 6 CGLS
# and 30 SIRT iterations (measured with `cgls(..., reference=x_true, history=True)`), which we use.

# %%
t0 = time.perf_counter()
recons["CGLS"] = jax.jit(lambda y: cgls(op, y, max_iter=6).x)(y).block_until_ready()
times["CGLS"] = time.perf_counter() - t0

t0 = time.perf_counter()
sirt_ = jax.jit(lambda y: sirt(op, y, max_iter=30).x)
recons["SIRT"] = sirt_(y).block_until_ready()
times["SIRT"] = time.perf_counter() - t0

c = N // 2
for name, vol in recons.items():
    print(f"{name:5s} PSNR {db(vol, x_true):5.2f} dB (volume), {db(vol[c], x_true[c]):5.2f} dB (central slice), "
          f"{times[name]:5.1f} s with compilation")

# %% [markdown]
# ## 5. Slices
# The axial slice through the source plane (top; $y$ up, as the 2D phantom is shown) and a vertical
# slice through the centre (bottom; $z$ up). Away from the source plane FDK is an approximation whose
# errors grow with the cone angle (about 46 degrees here); the iterative methods fit the 3D data as a
# whole, and after so few iterations show their own artefacts (CGLS rings at the skull's edges).

# %%
panels = {"phantom": x_true, **recons}
fig, axes = plt.subplots(2, len(panels), figsize=(2.4 * len(panels), 5.0))
for col, (name, vol) in enumerate(panels.items()):
    vol = np.asarray(vol)
    axes[0, col].imshow(vol[c, ::-1], cmap="gray", vmin=0, vmax=0.5)
    axes[1, col].imshow(vol[::-1, :, N // 2], cmap="gray", vmin=0, vmax=0.5)
    title = name if name == "phantom" else f"{name}\n{db(vol, x_true):.1f} dB"
    axes[0, col].set_title(title, fontsize=9)
    for ax in axes[:, col]:
        ax.axis("off")
fig.tight_layout()
show(fig, "cone_beam")

# %% [markdown]
# The display window is $[0, 0.5]$, so that the soft-tissue ellipsoids of the Shepp-Logan phantom are
# visible. A few iterations of CGLS or SIRT at this size are a demonstration, not a benchmark. Every
# iteration costs one projection and one backprojection (the exact adjoint, slower than the projection
# on a CPU), while FDK costs about one backprojection in all; a regulariser such as `tv_pdhg` takes the
# same `XRayTransform`.
