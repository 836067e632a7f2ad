# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Forward operators
#
# This tutorial tours `jaxrecon.operators` and `jaxrecon.phantoms`: the parallel-beam geometry and
# its conventions, the Radon transform and its exact adjoint, derivatives with respect to the
# geometry, filtered back projection, circular convolution (the blur operator), the subsampled
# Fourier transform (MRI), the ellipse phantoms with their exact sinograms, and noise models.
#
# Everything is a pure JAX function of arrays: jittable, vmappable, differentiable.
#
# The image size is `N` (default 128); set the environment variable `JAXRECON_NOTEBOOK_SIZE` to
# change it (the tests run this notebook at 32). Run it as a notebook (`jupytext --to ipynb`) or as
# a plain script; set `JAXRECON_NOTEBOOK_FIGURES=<dir>` to also save every figure as a PNG.

# %%
import os
import sys

import matplotlib

if (
    "ipykernel" not in sys.modules
    and not os.environ.get("MPLBACKEND")
    and sys.platform.startswith("linux")
    and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
):
    matplotlib.use("Agg")  # no display: render off-screen

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from jaxrecon.metrics import psnr, relative_error, ssim
from jaxrecon.operators import (
    CircularConvolution,
    ParallelBeamGeometry,
    RadonTransform,
    SubsampledFourier,
    backproject,
    cartesian_mask,
    circular_convolve,
    dot_test,
    fbp,
    fbp_filter,
    gaussian_kernel,
    gaussian_noise,
    operator_norm,
    poisson_noise,
    radial_mask,
    radon,
)
from jaxrecon.phantoms import (
    ellipse_sinogram,
    random_ellipse_phantom,
    random_ellipses,
    shepp_logan,
    shepp_logan_ellipses,
)

N = int(os.environ.get("JAXRECON_NOTEBOOK_SIZE", 128))
NUM_ANGLES = max(N // 4, 8)  # a sparse-view setting: 32 views at N = 128
FIGURES = os.environ.get("JAXRECON_NOTEBOOK_FIGURES")


def show(name: str) -> None:
    """Display the current figure (and save it when JAXRECON_NOTEBOOK_FIGURES is set)."""
    if FIGURES:
        os.makedirs(FIGURES, exist_ok=True)
        plt.savefig(os.path.join(FIGURES, f"01_{name}.png"), dpi=80)
    plt.show()
    plt.close("all")


print(f"jax {jax.__version__} on {jax.devices()[0]}; N = {N}, {NUM_ANGLES} views")

# %% [markdown]
# ## 1. Geometry and conventions
#
# Images are `(H, W)` arrays with row 0 at the top; sinograms are `(num_angles, num_detectors)`.
# We follow **ASTRA's** parallel-beam convention. Pixel centres have coordinates
#
# $$x = \mathrm{col} - \tfrac{W-1}{2}, \qquad y = \tfrac{H-1}{2} - \mathrm{row}\quad(y \text{ up}),$$
#
# and the ray at angle $\theta$ and detector position $s$ is the line
# $\{x\cos\theta + y\sin\theta = s\}$, with detector bin $d$ at $s_d = d - \tfrac{D-1}{2}$
# (unit pixels and bins). `ParallelBeamGeometry.uniform` uses the angles $k\pi/A$ and, by default,
# $D = \lceil\sqrt{H^2 + W^2}\rceil$ bins so that every ray through the image is measured.

# %%
geom = ParallelBeamGeometry.uniform((N, N), num_angles=NUM_ANGLES)
s = geom.detector_positions()
print("image", geom.shape, "-> sinogram", geom.sinogram_shape)
print(f"angles: {float(geom.angles[0]):.3f} ... {float(geom.angles[-1]):.3f} rad")
print(f"detector positions s: {float(s[0])} ... {float(s[-1])}")

# %% [markdown]
# A small blob centred at $(x_0, y_0)$ traces the sine curve $s(\theta) = x_0\cos\theta + y_0\sin\theta$
# in the sinogram. We check this (on the centre of mass of each projection) and draw the ray through
# the blob's centre at one angle.

# %%
row, col = N // 4, 3 * N // 4  # upper right
x0, y0 = col - (N - 1) / 2, (N - 1) / 2 - row
rows, cols = jnp.mgrid[:N, :N]
dot = jnp.exp(-((rows - row) ** 2 + (cols - col) ** 2) / (2 * 1.5**2))  # a Gaussian blob, sigma 1.5 pixels
sino_dot = radon(dot, geom)

theta = np.asarray(geom.angles)
predicted = x0 * np.cos(theta) + y0 * np.sin(theta)
measured = np.asarray(jnp.sum(sino_dot * s, axis=1) / jnp.sum(sino_dot, axis=1))  # centre of mass
print("largest deviation from s(theta) = x0 cos(theta) + y0 sin(theta):", np.abs(measured - predicted).max(), "bins")
assert np.abs(measured - predicted).max() < 0.05

k = NUM_ANGLES // 6  # draw the ray at this angle
t = np.linspace(-N, N, 2)
fig, ax = plt.subplots(1, 2, figsize=(10, 4.2))
ax[0].imshow(dot, cmap="gray_r", extent=(-N / 2, N / 2, -N / 2, N / 2))
normal, along = np.array([np.cos(theta[k]), np.sin(theta[k])]), np.array([-np.sin(theta[k]), np.cos(theta[k])])
ray = predicted[k] * normal[:, None] + along[:, None] * t  # the points s n + t e of the ray
ax[0].plot(ray[0], ray[1], "r-")
ax[0].annotate("", xy=tuple(0.35 * N * normal), xytext=(0, 0),
               arrowprops=dict(arrowstyle="->", color="b"))
ax[0].set(xlim=(-N / 2, N / 2), ylim=(-N / 2, N / 2), xlabel="x", ylabel="y",
          title=f"blob at (x, y) = ({x0:g}, {y0:g}); ray at θ = {np.rad2deg(theta[k]):.0f}°, normal in blue")
ax[1].imshow(sino_dot, cmap="gray_r", aspect="auto",
             extent=(float(s[0]) - 0.5, float(s[-1]) + 0.5, np.rad2deg(theta[-1]), np.rad2deg(theta[0])))
ax[1].plot(predicted, np.rad2deg(theta), "r:", label="x0 cos θ + y0 sin θ")
ax[1].set(xlabel="detector position s", ylabel="angle θ (degrees)", title="its sinogram (rows = angles)")
ax[1].legend(loc="lower right")
fig.tight_layout()
show("geometry")

# %% [markdown]
# **Mapping to `skimage.transform.radon`.** scikit-image takes the angles in *degrees*, returns the
# sinogram *transposed*, as `(detectors, angles)`, and rotates about the pixel `(N//2, N//2)` with the
# detector centred at bin `N//2` (we use the geometric centre $(N-1)/2$). So
# `skimage.transform.radon(x, np.rad2deg(angles), circle=True).T` matches `radon(x, geom)` with
# `num_detectors=N` for **odd** `N` (up to interpolation: skimage rotates the image bilinearly, we
# use Joseph's method as ASTRA's `linear` projector does); for even `N` the two differ by a half-pixel,
# angle-dependent shift of the detector coordinate.

# %%
try:
    from skimage.transform import radon as skimage_radon
except ImportError:  # scikit-image is optional
    skimage_radon = None

if skimage_radon is not None:
    M = N + 1 - N % 2  # odd
    img = np.array(shepp_logan(M))  # a writable copy (skimage rejects read-only views of JAX arrays)
    geom_odd = ParallelBeamGeometry.uniform((M, M), NUM_ANGLES, num_detectors=M)
    ours = np.asarray(radon(jnp.asarray(img), geom_odd))
    theirs = skimage_radon(img, np.rad2deg(np.asarray(geom_odd.angles)), circle=True).T
    err = float(np.linalg.norm(ours - theirs) / np.linalg.norm(theirs))
    print(f"N = {M}: ours {ours.shape}, skimage (transposed) {theirs.shape}, relative difference {err:.3%}")
    assert err < 0.05

# %% [markdown]
# ## 2. The Radon transform and its exact adjoint
#
# `radon(x, geom)` computes line integrals (in pixel units) by Joseph's method; `backproject(y, geom)`
# is its **exact** adjoint $A^\top$, not an approximate filtered backprojection. `RadonTransform(geom)`
# wraps the pair as a linear operator: `op(x)`, `op.T(y)`, `op.in_shape`, `op.out_shape`.
#
# The *dot test* $|\langle Ax, y\rangle - \langle x, A^\top y\rangle| / (\|Ax\|\|y\|)$ for random $x, y$
# is at rounding level (~1e-7 in float32). The power method estimates $\|A\|$.

# %%
phantom = shepp_logan(N)
op = RadonTransform(geom)
sino = op(phantom)
print("in_shape", op.in_shape, "out_shape", op.out_shape)
mismatch = float(dot_test(op, jax.random.key(0), dtype=jnp.float32))
print(f"dot test (float32): {mismatch:.2e}")
assert mismatch < 1e-5
print(f"||A|| ~ {float(operator_norm(op, jax.random.key(1))):.2f}")

# %% [markdown]
# Since `radon` and `backproject` are each other's transpose *as JAX primitives*, `jax.linear_transpose`
# and reverse-mode autodiff of `radon` give `backproject` itself (a gather, never a scatter).
# Batches go through `jax.vmap`.

# %%
y = jax.random.normal(jax.random.key(2), geom.sinogram_shape)
(via_transpose,) = jax.linear_transpose(lambda x: radon(x, geom), phantom)(y)
print("linear_transpose == backproject:", bool(jnp.allclose(via_transpose, backproject(y, geom), atol=1e-4)))

batch = jnp.stack([phantom, phantom.T, phantom[::-1]])
batched = jax.jit(jax.vmap(radon, in_axes=(0, None)))(batch, geom)
print("vmap over 3 images:", batched.shape, "equal to one at a time:",
      bool(jnp.allclose(batched[1], radon(phantom.T, geom), atol=1e-4)))

fig, ax = plt.subplots(1, 3, figsize=(12, 3.8))
ax[0].imshow(phantom, cmap="gray")
ax[0].set_title("x")
ax[1].imshow(sino, cmap="gray", aspect="auto")
ax[1].set(title="A x", xlabel="detector", ylabel="angle index")
ax[2].imshow(op.T(sino), cmap="gray")
ax[2].set_title("A^T A x (unfiltered: blurred)")
fig.tight_layout()
show("radon")

# %% [markdown]
# ## 3. Differentiating with respect to the geometry
#
# The geometry's `angles`, `detector_spacing` and `detector_offset` are array leaves, so the forward
# model is differentiable in them. Here the scanner's angles are all off by an unknown constant
# $\delta$; we recover it from the data by Gauss-Newton, with the Jacobian-vector product from
# `jax.jvp` (forward mode) and check `jax.grad` (reverse mode) against a finite difference.

# %%
nominal = geom.angles
true_delta = 0.03  # radians, about 1.7 degrees
true_geom = ParallelBeamGeometry((N, N), nominal + true_delta)
measured_sino = gaussian_noise(jax.random.key(3), radon(phantom, true_geom), 0.01)


def model(delta):
    return radon(phantom, ParallelBeamGeometry((N, N), nominal + delta))


def misfit(delta):
    return 0.5 * jnp.sum((model(delta) - measured_sino) ** 2)


g = jax.grad(misfit)(0.0)
eps = 1e-3
fd = (misfit(eps) - misfit(-eps)) / (2 * eps)
print(f"d misfit / d delta at 0: autodiff {float(g):.5g}, central difference {float(fd):.5g}")


@jax.jit
def gauss_newton_step(delta):
    r, j = jax.jvp(model, (delta,), (jnp.ones_like(delta),))
    return delta - jnp.vdot(j, r - measured_sino) / jnp.vdot(j, j)


delta = jnp.asarray(0.0)
history = [float(delta)]
for _ in range(8):
    delta = gauss_newton_step(delta)
    history.append(float(delta))
print(f"estimated delta {history[-1]:.5f} (true {true_delta})")
assert abs(history[-1] - true_delta) < 2e-3

# The gradient with respect to every angle separately, in one reverse pass:
def misfit_of_angles(angles):
    return 0.5 * jnp.sum((radon(phantom, ParallelBeamGeometry((N, N), angles)) - measured_sino) ** 2)


per_angle = jax.grad(misfit_of_angles)(nominal)

fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
ax[0].plot(history, "o-")
ax[0].axhline(true_delta, color="k", ls=":")
ax[0].set(xlabel="Gauss-Newton iteration", ylabel="δ (rad)", title="recovering an angular offset")
ax[1].plot(np.rad2deg(nominal), per_angle, ".-")
ax[1].set(xlabel="angle (degrees)", ylabel="∂ misfit / ∂ θ_k", title="gradient w.r.t. each angle at δ = 0")
fig.tight_layout()
show("angles")

# %% [markdown]
# ## 4. Filtered back projection
#
# `fbp(y, geom, filter)` filters each projection with the band-limited ramp times a window
# (`ram-lak` = no window, `shepp-logan`, `cosine`, `hamming`, `hann`) and back-projects. To avoid the
# *inverse crime* we simulate the data with the exact line integrals of the continuous phantom
# (`ellipse_sinogram`, section 7), not with `radon` of the pixel image, and add 3% noise. The
# smoother windows trade resolution for noise.

# %%
exact = ellipse_sinogram(shepp_logan_ellipses(), geom)
noisy = gaussian_noise(jax.random.key(4), exact, 0.03)
filters = ("ram-lak", "shepp-logan", "cosine", "hamming", "hann")

fig, ax = plt.subplots(1, len(filters) + 1, figsize=(3.2 * (len(filters) + 1), 3.6))
freq = np.linspace(0, 0.5, len(fbp_filter(geom.num_detectors)))
for i, name in enumerate(filters):
    rec = fbp(noisy, geom, filter=name)
    p, q = float(psnr(rec, phantom, data_range=1.0)), float(ssim(rec, phantom, data_range=1.0))
    print(f"{name:12s} PSNR {p:5.2f} dB  SSIM {q:.3f}")
    ax[i].imshow(rec, cmap="gray", vmin=0, vmax=1)
    ax[i].set_title(f"{name}\n{p:.1f} dB, SSIM {q:.2f}", fontsize=9)
    ax[i].axis("off")
    ax[-1].plot(freq, fbp_filter(geom.num_detectors, name), label=name)
ax[-1].set(xlabel="frequency (cycles / bin)", title="filter responses")
ax[-1].legend(fontsize=7)
fig.tight_layout()
show("fbp")

# %% [markdown]
# ## 5. Circular convolution and the blur operator
#
# `circular_convolve(x, g)` computes $(x * g)_j = \sum_i x_i\, g_{(j-i) \bmod n}$ in every dimension by
# FFT, in $O(n\log n)$. Compare with the direct $O(n^2)$ sum:

# %%
rng = np.random.default_rng(0)
f = rng.standard_normal(16).astype(np.float32)
kern = rng.standard_normal(5).astype(np.float32)
n = len(f)
direct = np.array([sum(f[i] * np.pad(kern, (0, n - len(kern)))[(j - i) % n] for i in range(n)) for j in range(n)])
fast = circular_convolve(jnp.asarray(f), jnp.asarray(kern))
print("1D: max |FFT - direct sum| =", float(np.abs(fast - direct).max()))
assert np.allclose(fast, direct, atol=1e-4)

# In 2D, with the kernel's centre at the origin (`centred=True`): a sum of shifted copies of x.
x_small = rng.standard_normal((12, 10)).astype(np.float32)
k2 = rng.standard_normal((3, 3)).astype(np.float32)
direct2 = sum(k2[a, b] * np.roll(x_small, (a - 1, b - 1), axis=(0, 1)) for a in range(3) for b in range(3))
fast2 = circular_convolve(jnp.asarray(x_small), jnp.asarray(k2), centred=True)
print("2D: max |FFT - direct sum| =", float(np.abs(fast2 - direct2).max()))
assert np.allclose(fast2, direct2, atol=1e-4)

# %% [markdown]
# `CircularConvolution(kernel, shape)` is the blur operator (adjoint: circular correlation). Its
# singular values are $|\hat g_k|$, the magnitudes of the kernel's DFT: a Gaussian blur damps high
# frequencies by many orders of magnitude, which makes deblurring ill-posed.

# %%
blur = CircularConvolution(gaussian_kernel(9, 2.0), (N, N))
print(f"blur dot test (float32): {float(dot_test(blur, jax.random.key(5), dtype=jnp.float32)):.2e}")
blurred = gaussian_noise(jax.random.key(6), blur(phantom), 0.02)
padded = jnp.zeros((N, N)).at[:9, :9].set(blur.kernel)
singular_values = jnp.sort(jnp.abs(jnp.fft.fft2(padded)).ravel())[::-1]

fig, ax = plt.subplots(1, 3, figsize=(12, 3.6))
ax[0].imshow(blurred, cmap="gray", vmin=0, vmax=1)
ax[0].set_title(f"blurred + 2% noise, PSNR {float(psnr(blurred, phantom, data_range=1.0)):.1f} dB")
ax[1].imshow(blur.T(blurred), cmap="gray", vmin=0, vmax=1)
ax[1].set_title("adjoint applied (blurred twice)")
ax[2].semilogy(singular_values)
ax[2].set(xlabel="index", title="singular values |ĝ_k| of the blur")
fig.tight_layout()
show("blur")

# %% [markdown]
# ## 6. Subsampled Fourier (MRI)
#
# `SubsampledFourier(mask)` is $Ax = M \odot \mathcal F x$ with the orthonormal 2D DFT, the mask in
# numpy's FFT layout (zero frequency at `[0, 0]`). Its adjoint of the data, the *zero-filled*
# reconstruction, shows the aliasing of each sampling pattern.

# %%
masks = {
    "Cartesian, 4x": cartesian_mask(jax.random.key(7), (N, N), acceleration=4),
    f"radial, {max(N // 6, 4)} lines": radial_mask((N, N), max(N // 6, 4)),
}
fig, ax = plt.subplots(2, len(masks), figsize=(4 * len(masks), 7.6))
for i, (name, mask) in enumerate(masks.items()):
    mri = SubsampledFourier(mask)
    zero_filled = mri.T(mri(phantom))
    mism = float(dot_test(mri, jax.random.key(8), dtype=jnp.float32))
    print(f"{name}: {float(mask.mean()):.0%} of k-space, dot test {mism:.1e}, zero-filled PSNR "
          f"{float(psnr(zero_filled, phantom, data_range=1.0)):.1f} dB")
    ax[0, i].imshow(jnp.fft.fftshift(mask), cmap="gray")
    ax[0, i].set_title(f"{name} (fftshifted)")
    ax[1, i].imshow(zero_filled, cmap="gray", vmin=0, vmax=1)
    ax[1, i].set_title("zero-filled A* y")
for a in ax.ravel():
    a.axis("off")
fig.tight_layout()
show("fourier")

# %% [markdown]
# ## 7. Phantoms
#
# `shepp_logan(n)` is the modified Shepp-Logan phantom (values in [0, 1], row 0 the top of the head, the
# three small ellipses at the bottom). `random_ellipses(key, shape, preset)` draws one random
# ellipse image; a batch is a `jax.vmap` over keys. Both are rasterised from an `EllipsePhantom`
# (`shepp_logan_ellipses()`, `random_ellipse_phantom(key, shape, preset)`) whose exact sinogram
# `ellipse_sinogram` gives: the line integrals of the continuous phantom, i.e. data without the inverse crime.

# %%
keys = jax.random.split(jax.random.key(9), 4)
adler = jax.vmap(lambda k: random_ellipses(k, (N, N)))(keys)  # preset "adler2018"
dival = jax.vmap(lambda k: random_ellipses(k, (N, N), "dival"))(keys)
print("random_ellipses batches:", adler.shape, dival.shape)

fig, ax = plt.subplots(2, 5, figsize=(15, 6))
ax[0, 0].imshow(shepp_logan(N), cmap="gray")
ax[0, 0].set_title("shepp_logan")
ax[1, 0].imshow(shepp_logan(N, supersample=4), cmap="gray")
ax[1, 0].set_title("supersample=4")
for i in range(4):
    ax[0, i + 1].imshow(adler[i], cmap="gray")
    ax[0, i + 1].set_title("adler2018")
    ax[1, i + 1].imshow(dival[i], cmap="gray", vmin=0, vmax=1)
    ax[1, i + 1].set_title("dival")
for a in ax.ravel():
    a.axis("off")
fig.tight_layout()
show("phantoms")

# %% [markdown]
# The analytic sinogram against `radon` of the rasterised image: the difference (discretisation
# error: pixelated edges, interpolation) is the model error that the inverse crime would hide.
# Supersampling the raster shrinks it.

# %%
analytic = ellipse_sinogram(shepp_logan_ellipses(), geom)
for k in (1, 4):
    print(f"supersample={k}: relative difference radon(raster) vs analytic "
          f"{float(relative_error(radon(shepp_logan(N, supersample=k), geom), analytic)):.2%}")

one = random_ellipse_phantom(keys[0], (N, N), "dival")  # the ellipses behind dival[0]
print(f"random dival phantom: relative difference "
      f"{float(relative_error(radon(dival[0], geom), ellipse_sinogram(one, geom))):.2%}")

fig, ax = plt.subplots(1, 3, figsize=(13, 3.8))
for a, img, title in zip(ax, (analytic, radon(phantom, geom), radon(phantom, geom) - analytic),
                         ("ellipse_sinogram (exact)", "radon(shepp_logan(N))", "difference")):
    im = a.imshow(img, cmap="gray", aspect="auto")
    a.set(title=title, xlabel="detector", ylabel="angle index")
    fig.colorbar(im, ax=a)
fig.tight_layout()
show("analytic")

# %% [markdown]
# ## 8. Noise
#
# `gaussian_noise(key, y, level)` adds white noise with $\sigma = \text{level}\cdot\operatorname{mean}|y|$
# (relative noise). `poisson_noise(key, y, photons, mu)` simulates photon counting in transmission CT:
# counts $c \sim \mathrm{Poisson}(N_0 e^{-\mu y})$, data $-\log(c/N_0)/\mu$, so low-dose (small $N_0$)
# and highly attenuating rays are noisier. Both are keyed and vmappable over keys.

# %%
row_index = NUM_ANGLES // 2
mu = 2.0 / float(analytic.max())  # the most attenuating ray transmits e^-2 ~ 14%
variants = {
    "gaussian 5%": gaussian_noise(jax.random.key(10), analytic, 0.05),
    "poisson, 1e4 photons": poisson_noise(jax.random.key(11), analytic, 1e4, mu),
    "poisson, 1e3 photons": poisson_noise(jax.random.key(12), analytic, 1e3, mu),
}
copies = jax.vmap(gaussian_noise, (0, None, None))(jax.random.split(jax.random.key(13), 64), analytic, 0.05)
print(f"64 noisy copies via vmap: empirical sigma {float(jnp.std(copies - analytic)):.3f}, "
      f"expected {0.05 * float(jnp.mean(jnp.abs(analytic))):.3f}")

fig, ax = plt.subplots(1, 2, figsize=(12, 3.8))
for name, data in variants.items():
    ax[0].plot(s, data[row_index], lw=0.8, label=name)
    rec = fbp(data, geom, filter="hann")
    print(f"{name:22s} relative data error {float(relative_error(data, analytic)):.3f}, "
          f"FBP PSNR {float(psnr(rec, phantom, data_range=1.0)):.2f} dB")
ax[0].plot(s, analytic[row_index], "k", lw=1, label="exact")
ax[0].set(xlabel="detector position s", title=f"one projection (θ = {np.rad2deg(float(geom.angles[row_index])):.0f}°)")
ax[0].legend(fontsize=8)
ax[1].imshow(fbp(variants["poisson, 1e3 photons"], geom, filter="hann"), cmap="gray", vmin=0, vmax=1)
ax[1].set_title("FBP (hann) of the 1e3-photon data")
ax[1].axis("off")
fig.tight_layout()
show("noise")
