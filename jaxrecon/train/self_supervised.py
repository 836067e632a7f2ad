r"""Self-supervised losses: train a reconstruction `model(y, op)` from noisy measurements alone.

Each factory returns `loss_fn(model, batch) -> scalar` for `fit` (an `equinox.Module`, so the
operator's arrays are traced arguments of the jitted step, as with `reconstruction_loss_fn`). The
batch is a `Sample` (or an array of measurements `(B, *op.out_shape)`); only `batch.y` is read:
the ground truth `batch.x` may be missing (`None`) or anything else. Truths are still what a model
trained this way is *evaluated* against (`evaluate`).

- `noise2inverse_loss_fn` (Hendriksen, Pelt, Batenburg 2020): split the views, reconstruct from
  some, predict the others.
- `sure_loss_fn` (Stein's unbiased risk estimate, Monte-Carlo divergence of Ramani, Blu, Unser
  2008): an unbiased estimate of the measurement-domain error $\|A f(y) - Ax\|^2$ for Gaussian
  noise of known level.
- `equivariant_imaging_loss_fn` (Chen, Tachella, Davies 2021; robust form 2022): measurement
  consistency plus invariance of the image set under rotations, which reaches the null space of $A$.

Units. Measurement-domain terms are divided by $n\|A\|^2$ ($n$ pixels; $\|A\|$ by power iteration
when the loss is built): $\|A e\|^2 / (n\|A\|^2) \le \|e\|^2/n$, so they are at most the image-domain
mean squared error of the same error $e$ (equal for $A$'s top singular vector) and comparable to
`reconstruction_loss` (the same learning rate and gradient clipping serve).

Randomness (rotation angles, synthetic noise, SURE's probe) comes from a key derived from the
measurement itself: $\text{key}_b = \text{fold\_in}(\text{key}(\text{seed}), h(y_b))$ with $h$ an
exact integer hash of $y_b$'s bits. The loss is therefore a deterministic function of (model,
batch), as `fit` requires for an exact resume, while different samples and steps get independent
draws.

Measurement noise model (`jaxrecon.operators.gaussian_noise`): $y = y_0 + \sigma\varepsilon$ with
$\sigma = \text{level}\cdot\operatorname{mean}|y_0|$. Where a loss needs $\sigma$ it estimates it from
the noisy data, $\hat\sigma = \text{level}\cdot\operatorname{mean}|y|$, which overestimates slightly
because $E|y_0 + \sigma\varepsilon| \ge |y_0|$ (by 0.8% on average, 1.4% at most, on the quick
preset's sinograms: 5% noise, 40% of the bins near zero or negative).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.ndimage import map_coordinates
from jaxtyping import Array, Float, Int, PRNGKeyArray

from jaxrecon.operators.fbp import FBP_FILTERS, fbp
from jaxrecon.operators.geometry import ParallelBeamGeometry
from jaxrecon.operators.linear_operator import LinearOperator, operator_norm
from jaxrecon.operators.radon import RadonTransform
from jaxrecon.operators.views import select_views
from jaxrecon.operators.xray import XRayTransform

from .data import Sample

__all__ = ["noise2inverse_loss_fn", "equivariant_imaging_loss_fn", "sure_loss_fn", "rotate", "split_views"]

DOMAINS = ("measurement", "image")


# --------------------------------------------------------------------------------------------------
# Shared parts
# --------------------------------------------------------------------------------------------------


def _check_op(op, fn: str) -> None:
    if not isinstance(op, LinearOperator):
        raise TypeError(f"{fn} expects op to be a jaxrecon LinearOperator, got {type(op).__name__}")


def _measurements(batch, op: LinearOperator, fn: str) -> Array:
    """`batch.y` of a `Sample` (its `x` is never read), or the array itself: `(B, *op.out_shape)`."""
    ys = batch.y if isinstance(batch, Sample) else batch
    if not hasattr(ys, "shape") or not hasattr(ys, "dtype"):
        raise TypeError(
            f"{fn} expects a Sample(y, x) (x is not read) or an array of measurements, got {type(batch).__name__}"
        )
    out_shape = tuple(op.out_shape)
    if ys.ndim != len(out_shape) + 1 or tuple(ys.shape[1:]) != out_shape:
        raise ValueError(f"{fn} expects measurements of shape (B, *{out_shape}), got {tuple(ys.shape)}")
    if not jnp.issubdtype(ys.dtype, jnp.floating):
        raise TypeError(f"{fn} expects real floating-point measurements, got dtype {ys.dtype}")
    return ys


def _reconstruct(model, y, op, fn: str) -> Array:
    x = model(y, op)
    if tuple(x.shape) != tuple(op.in_shape):
        raise ValueError(f"{fn} expects model(y, op) to return op.in_shape {tuple(op.in_shape)}, got {tuple(x.shape)}")
    return x


def _data_key(seed: int, y: Array) -> PRNGKeyArray:
    """`fold_in(key(seed), h(y))`, `h` the wrapping sum of y's 32-bit words times distinct odd numbers."""
    y = jnp.stack([y.real, y.imag]) if jnp.iscomplexobj(y) else y
    width = jnp.dtype(y.dtype).itemsize
    word = {2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[width]
    bits = jax.lax.bitcast_convert_type(y, word).ravel().astype(jnp.uint32)
    odd = 2 * jnp.arange(bits.shape[0], dtype=jnp.uint32) + 1
    return jax.random.fold_in(jax.random.key(seed), jnp.sum(bits * odd, dtype=jnp.uint32))


def _norm2(op: LinearOperator, dtype) -> Array:
    """$\\|A\\|^2$ by power iteration (once, when the loss is built), a float leaf."""
    return jnp.asarray(operator_norm(op, key=jax.random.key(0), num_iter=100), dtype) ** 2


def _dtype_of(op: LinearOperator):
    geom = getattr(op, "geom", None)
    angles = getattr(geom, "angles", None)
    if angles is not None:
        return angles.dtype
    leaves = [leaf for leaf in jax.tree.leaves(op) if eqx.is_inexact_array(leaf)]
    return jnp.finfo(leaves[0].dtype).dtype if leaves else jnp.result_type(float)


def _check_number(value, name: str, fn: str, *, positive: bool, allow_none: bool = False):
    if value is None and allow_none:
        return None
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or not (value > 0 if positive else value >= 0):
        what = ("a finite number > 0" if positive else "a finite number >= 0") + (" or None" if allow_none else "")
        raise ValueError(f"{fn} expects {name} to be {what}, got {value!r}")
    return float(value)


def _check_seed(seed, fn: str) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**63:
        raise ValueError(f"{fn} expects seed to be a non-negative int, got {seed!r}")
    return int(seed)


def _sure(op, y, x1, model, key, level, epsilon, scale, fn):
    r"""Monte-Carlo SURE of $A f(y)$ in units of `scale` per measurement (see `sure_loss_fn`)."""
    real = jnp.finfo(y.dtype).dtype
    m = y.size
    sigma = level * jnp.mean(jnp.abs(y))
    eps = epsilon * sigma
    safe = jnp.where(eps > 0, eps, 1)
    b = jax.random.normal(key, y.shape, real)
    g0 = op(x1)
    g1 = op(_reconstruct(model, y + safe * b, op, fn))
    div = jnp.where(eps > 0, jnp.sum(b * (g1 - g0)) / safe, 0)
    return scale * (jnp.sum((g0 - y) ** 2) / m - sigma**2 + 2 * sigma**2 * div / m)


def rotate(image: Float[Array, "H W"], angle) -> Float[Array, "H W"]:
    r"""Rotate an image by `angle` radians counter-clockwise about its centre (bilinear, zero outside).

    In the geometry's frame ($x$ = column, $y$ up, centre $((W-1)/2, (H-1)/2)$, see
    `ParallelBeamGeometry`) the result is $(T_\varphi u)(p) = u(R_{-\varphi}\,p)$, so for parallel
    beam the sinogram turns with it: $\mathcal R(T_\varphi u)(\theta, s) = \mathcal R u(\theta - \varphi, s)$.
    Values are interpolated bilinearly (`jax.scipy.ndimage.map_coordinates`, order 1); points that
    come from outside the image are 0. Jittable, vmappable and differentiable in the image and the angle.

    Example:
        >>> x = jnp.arange(16.0).reshape(4, 4)
        >>> bool(jnp.allclose(rotate(x, jnp.pi / 2), jnp.rot90(x)))
        True
    """
    image = jnp.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"rotate expects one (H, W) image, got shape {tuple(image.shape)}")
    h, w = image.shape
    angle = jnp.asarray(angle, jnp.finfo(image.dtype).dtype)
    rows, cols = jnp.meshgrid(jnp.arange(h, dtype=angle.dtype), jnp.arange(w, dtype=angle.dtype), indexing="ij")
    x, y = cols - (w - 1) / 2, (h - 1) / 2 - rows
    c, s = jnp.cos(angle), jnp.sin(angle)
    xs, ys = c * x + s * y, -s * x + c * y  # R_{-phi} p
    coords = [(h - 1) / 2 - ys, xs + (w - 1) / 2]
    return map_coordinates(image, coords, order=1, mode="constant", cval=0.0).astype(image.dtype)


# --------------------------------------------------------------------------------------------------
# Noise2Inverse
# --------------------------------------------------------------------------------------------------


def split_views(num_views: int, num_splits: int) -> tuple[np.ndarray, list[np.ndarray]]:
    r"""The view splits of `noise2inverse_loss_fn`: `(inputs, held_out)`.

    `held_out[k]` are the views $J_k = \{j : j \equiv k \bmod K\}$ (interleaved subsets, $K$ =
    `num_splits`). `inputs[k]` (shape `(num_views,)`) maps every view slot $j$ to a view that is kept
    when $J_k$ is held out: $j$ itself if $j \notin J_k$, otherwise the nearest kept view before it
    (cyclically). Reading the sinogram and the angles through `inputs[k]` gives a full-size
    sinogram of the kept views, each repeated over the slots it stands for.

    Example:
        >>> inputs, held = split_views(6, 2)
        >>> inputs
        array([[5, 1, 1, 3, 3, 5],
               [0, 0, 2, 2, 4, 4]])
        >>> held
        [array([0, 2, 4]), array([1, 3, 5])]
    """
    for name, value in (("num_views", num_views), ("num_splits", num_splits)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"split_views expects {name} to be an int, got {value!r}")
    if not 2 <= num_splits <= num_views:
        raise ValueError(
            f"num_splits must be an int in [2, num_views] = [2, {num_views}] (each split holds out at least one "
            f"view and keeps at least one), got {num_splits}"
        )
    held = [np.arange(k, num_views, num_splits) for k in range(num_splits)]
    inputs = np.empty((num_splits, num_views), dtype=int)
    for k in range(num_splits):
        for j in range(num_views):
            i = j
            while i % num_splits == k:  # held out: step back (cyclically) to a kept view
                i = (i - 1) % num_views
            inputs[k, j] = i
    return inputs, held


class Noise2InverseLoss(eqx.Module):
    r"""The loss of `noise2inverse_loss_fn` (build it with that function); call as `loss(model, batch)`."""

    op: RadonTransform | XRayTransform
    inputs: Int[Array, "K N"]
    held: tuple
    norm2: Float[Array, ""]
    domain: str = eqx.field(static=True)
    filter: str = eqx.field(static=True)

    def __call__(self, model, batch) -> Array:
        fn = "noise2inverse_loss"
        ys = _measurements(batch, self.op, fn)
        num_views, n = self.op.out_shape[0], math.prod(self.op.in_shape)
        total = 0.0
        for k, held in enumerate(self.held):
            op_in = select_views(self.op, self.inputs[k])
            op_held = select_views(self.op, held)

            def one(y, op_in=op_in, op_held=op_held, k=k, held=held):
                x = _reconstruct(model, y[self.inputs[k]], op_in, fn)
                if self.domain == "measurement":
                    r = op_held(x) - y[held]
                    return (num_views / held.shape[0]) * jnp.sum(r**2) / (n * self.norm2)
                target = fbp(y[held], op_held.geom, self.filter)
                return jnp.mean((x - target) ** 2)

            total = total + jnp.mean(jax.vmap(one)(ys))
        return total / len(self.held)


def noise2inverse_loss_fn(
    op: RadonTransform | XRayTransform, num_splits: int = 2, *, domain: str = "measurement", filter: str = "ram-lak"
) -> Noise2InverseLoss:
    r"""Noise2Inverse (Hendriksen, Pelt & Batenburg, IEEE TCI 2020) for a reconstruction `model(y, op)`.

    The views are split into $K$ = `num_splits` interleaved subsets $J_k = \{k, k+K, \dots\}$
    (`split_views`). For each $k$ the model reconstructs from the other views only, and is scored
    on the held-out ones, whose noise is independent of its input's:

    - `domain="measurement"` (default): $L_k = \frac{N}{|J_k|}\,\|A_{J_k} f(\tilde y_k, \tilde A_k) - y_{J_k}\|^2 / (n\|A\|^2)$,
      held-out data predicted from the rest (as SSDU, Yaman et al. 2020, for MRI). Its minimiser
      satisfies $A_{J_k} f = A_{J_k} E[x \mid \tilde y_k]$: an unbiased target, whatever the number of views.
    - `domain="image"`: $L_k = \frac1n\|f(\tilde y_k, \tilde A_k) - \mathrm{FBP}_{J_k}(y_{J_k})\|^2$,
      Hendriksen et al.'s loss (FBP with `filter` of the held-out views as the target). Its minimiser
      is $\mathrm{FBP}_{J_k}(A_{J_k} E[x \mid \tilde y_k])$, which carries the streaks of an FBP from the
      $|J_k|$ held-out views: sound for hundreds of views, biased at our sparse 30 (15 per half).

    The loss is $\frac1K\sum_k L_k$ averaged over the batch ($K$ model calls per sample: all splits,
    no randomness). $A_{J}$ is `select_views(op, J)`, $n$ the number of pixels, $N$ of views.

    The model's input. Learned iterative schemes (`LearnedPrimalDual`, `LearnedGradientDescent`) are
    built for one sinogram shape: their convolutions run over (views, detectors) and the operator
    scaling $1/\|A\|$ is fixed. So instead of the sub-sinogram of the kept views with its own operator,
    the model gets a full-size one: $\tilde y_k = y[\pi_k]$ with $\tilde A_k$ = `select_views(op, \pi_k)`,
    where $\pi_k$ (`split_views`' `inputs[k]`) replaces each held-out view by the nearest kept view
    before it, data and angle both. $\tilde y_k = \tilde A_k x + $ noise exactly (the measurement
    model holds), FBP of $\tilde y_k$ is the FBP of the kept views (for $K = 2$ exactly; for $K > 2$
    with a left-endpoint angular quadrature), and $\tilde A_k^*\tilde A_k \approx A^*A$, so the
    operator scaling learned iterative schemes rely on stays right.

    Consequence: the model is trained on the information of $(K-1)/K$ of the views (with the
    correlated noise of the repeated ones) and applied to all of them. It learns to reconstruct
    from half the views for $K = 2$, and at test time gets twice the data it was trained on; its
    prior is tuned for that harder problem (a mild over-regularisation is to be expected). Larger
    $K$ narrows the gap at $K$ model calls per sample.

    Args:
        op: a `RadonTransform` or an `XRayTransform` of a `ParallelBeamGeometry`.
        num_splits: $K$, an int in `[2, num_views]`.
        domain: `"measurement"` or `"image"` (see above).
        filter: the FBP filter of the image-domain target (`jaxrecon.operators.fbp`'s filters).

    Example:
        >>> data = CTData.uniform(64, num_angles=30)
        >>> loss_fn = noise2inverse_loss_fn(data.operator, num_splits=2)
        >>> fit(model, loss_fn, lambda k: data.batch(split_key(0, "train", k), 4), optimizer, 1000)
    """
    fn = "noise2inverse_loss_fn"
    if not (isinstance(op, RadonTransform) or (isinstance(op, XRayTransform) and isinstance(op.geom, ParallelBeamGeometry))):
        what = f"an XRayTransform of a {type(op.geom).__name__}" if isinstance(op, XRayTransform) else type(op).__name__
        raise TypeError(f"{fn} expects a RadonTransform or an XRayTransform of a ParallelBeamGeometry, got {what}")
    if domain not in DOMAINS:
        raise ValueError(f"{fn} expects domain to be one of {DOMAINS}, got {domain!r}")
    if filter not in FBP_FILTERS:
        raise ValueError(f"{fn} expects filter to be one of {sorted(FBP_FILTERS)}, got {filter!r}")
    num_views = op.out_shape[0]
    if isinstance(num_splits, bool) or not isinstance(num_splits, (int, np.integer)):
        raise ValueError(f"num_splits must be an int in [2, num_views] = [2, {num_views}], got {num_splits!r}")
    inputs, held = split_views(num_views, int(num_splits))
    return Noise2InverseLoss(
        op, jnp.asarray(inputs), tuple(jnp.asarray(h) for h in held), _norm2(op, _dtype_of(op)), domain, filter
    )


# --------------------------------------------------------------------------------------------------
# SURE
# --------------------------------------------------------------------------------------------------


class SURELoss(eqx.Module):
    r"""The loss of `sure_loss_fn` (build it with that function); call as `loss(model, batch)`."""

    op: LinearOperator
    norm2: Float[Array, ""]
    noise_level: float = eqx.field(static=True)
    epsilon: float = eqx.field(static=True)
    seed: int = eqx.field(static=True)

    def __call__(self, model, batch) -> Array:
        fn = "sure_loss"
        ys = _measurements(batch, self.op, fn)
        n = math.prod(self.op.in_shape)

        def one(y):
            x1 = _reconstruct(model, y, self.op, fn)
            scale = y.size / (n * self.norm2)
            return _sure(self.op, y, x1, model, _data_key(self.seed, y), self.noise_level, self.epsilon, scale, fn)

        return jnp.mean(jax.vmap(one)(ys))


def sure_loss_fn(op: LinearOperator, noise_level: float, *, epsilon: float = 1e-2, seed: int = 0) -> SURELoss:
    r"""Stein's unbiased risk estimate of the measurement-domain error, for Gaussian noise of a known level.

    For $y = Ax + \sigma\varepsilon$, $\varepsilon \sim N(0, I_m)$ and a weakly differentiable $g(y) = A f(y)$,

    $$\mathrm{SURE}(y) = \tfrac1m\|g(y) - y\|^2 - \sigma^2 + \tfrac{2\sigma^2}{m}\,\operatorname{div} g(y),
    \qquad E\,\mathrm{SURE} = E\,\tfrac1m\|A f(y) - Ax\|^2 ,$$

    with the divergence by one Monte-Carlo probe (Ramani, Blu & Unser, IEEE TIP 2008),
    $\operatorname{div} g(y) \approx b^\top\big(g(y + \epsilon b) - g(y)\big)/\epsilon$, $b \sim N(0, I_m)$
    (exact in expectation over $b$ for a linear $g$). Here $\sigma = $ `noise_level` $\cdot\operatorname{mean}|y|$
    (the noise model of `gaussian_noise`, estimated from the noisy data: see the module docstring),
    $\epsilon$ = `epsilon` $\cdot\,\sigma$, and the loss is $\frac{m}{n\|A\|^2}\,\mathrm{SURE}$ averaged over
    the batch (module docstring: units). Two model calls per sample. SURE sees only $A f$: alone it says
    nothing about the null space of $A$ (see `equivariant_imaging_loss_fn` for that).

    Args:
        op: the forward operator $A$.
        noise_level: the relative noise level of the data (> 0), e.g. 0.05.
        epsilon: the probe's step relative to $\sigma$ (> 0).
        seed: folded into the per-sample key of the probe $b$ (module docstring: randomness).

    Example:
        >>> loss_fn = sure_loss_fn(data.operator, noise_level=data.noise)
        >>> loss_fn(model, data.batch(split_key(0, "train", 0), 4))  # never reads batch.x
    """
    fn = "sure_loss_fn"
    _check_op(op, fn)
    noise_level = _check_number(noise_level, "noise_level", fn, positive=True)
    epsilon = _check_number(epsilon, "epsilon", fn, positive=True)
    return SURELoss(op, _norm2(op, _dtype_of(op)), noise_level, epsilon, _check_seed(seed, fn))


# --------------------------------------------------------------------------------------------------
# Equivariant imaging
# --------------------------------------------------------------------------------------------------


class EquivariantImagingLoss(eqx.Module):
    r"""The loss of `equivariant_imaging_loss_fn` (build it with that function); call as `loss(model, batch)`."""

    op: LinearOperator
    norm2: Float[Array, ""]
    alpha: float = eqx.field(static=True)
    noise_level: float | None = eqx.field(static=True)
    epsilon: float = eqx.field(static=True)
    seed: int = eqx.field(static=True)

    def __call__(self, model, batch) -> Array:
        fn = "equivariant_imaging_loss"
        ys = _measurements(batch, self.op, fn)
        n = math.prod(self.op.in_shape)

        def one(y):
            k_angle, k_noise, k_probe = jax.random.split(_data_key(self.seed, y), 3)
            x1 = _reconstruct(model, y, self.op, fn)
            scale = y.size / (n * self.norm2)
            if self.noise_level is None:
                consistency = scale * jnp.mean((self.op(x1) - y) ** 2)
            else:
                consistency = _sure(self.op, y, x1, model, k_probe, self.noise_level, self.epsilon, scale, fn)
            real = jnp.finfo(x1.dtype).dtype
            x_rot = rotate(x1, jax.random.uniform(k_angle, (), real, 0, 2 * jnp.pi))
            y_rot = self.op(x_rot)
            if self.noise_level is not None:
                sigma = jax.lax.stop_gradient(self.noise_level * jnp.mean(jnp.abs(y_rot)))
                y_rot = y_rot + sigma * jax.random.normal(k_noise, y_rot.shape, real)
            x2 = _reconstruct(model, y_rot, self.op, fn)
            return consistency + self.alpha * jnp.mean((x_rot - x2) ** 2)

        return jnp.mean(jax.vmap(one)(ys))


def equivariant_imaging_loss_fn(
    op: LinearOperator, alpha: float | None = None, *, noise_level: float | None = None, epsilon: float = 1e-2,
    seed: int = 0
) -> EquivariantImagingLoss:
    r"""Equivariant imaging (Chen, Tachella & Davies, ICCV 2021; robust form, CVPR 2022) with random rotations.

    Measurements $y = Ax$ only see $x$ modulo the null space of $A$. If the set of images is invariant
    under rotations $T_g$, then $y_g = A T_g x = (A T_g) x$ are measurements of $x$ through other
    operators $A T_g$, whose null spaces differ; asking the model to be equivariant reaches what
    $A$ alone misses. With $x_1 = f(y)$ and one random angle $g \sim U[0, 2\pi)$ per sample,

    $$L = \frac{\|A x_1 - y\|^2}{n\|A\|^2} + \alpha\,\frac1n\,\|T_g x_1 - f(A T_g x_1)\|^2 .$$

    With `noise_level` (noisy data; robust EI) the first term becomes the SURE estimate of
    `sure_loss_fn` (the plain residual would fit the noise) and the synthetic measurement gets noise of
    that level, $f(A T_g x_1 + \sigma_g\varepsilon)$ with $\sigma_g$ = `noise_level` $\cdot\operatorname{mean}|A T_g x_1|$,
    so the model is trained on inputs like the real ones. Three model calls per sample (two without
    `noise_level`); gradients flow through both $x_1$ and the second call.

    Why continuous angles: $T_g$ is `rotate` (bilinear). For $N$ equally spaced views over $\pi$,
    a rotation by a multiple of $\pi/N$ only permutes (and mirrors) the views, so $A T_g$ has the
    same null space as $A$ and the EI term teaches nothing; multiples of 90 degrees are such
    rotations whenever $N$ is even (the quick preset: 30 views). Random continuous angles give new
    null spaces; the price is the slight blur of bilinear interpolation in $T_g x_1$ and zeros
    rotated into the corners (the model learns such images as well; the data's ellipses fill the square).

    Args:
        op: the forward operator $A$ (real `(H, W)` images).
        alpha: the weight of the equivariance term (> 0). Default: $100\,m/(n\|A\|^2)$ ($m$ measurements,
            $n$ pixels), the balance of the authors' CT code (weight 100 on per-element mean squared errors
            of both terms) in this loss's units (0.036 on the quick preset). Measured on the quick preset
            (learned primal-dual, 250 steps): validation PSNR 31.00 dB with it, 30.12 dB with `alpha=1`.
        noise_level: the data's relative noise level (robust EI), or None for noise-free EI.
        epsilon: SURE's probe step relative to $\sigma$ (with `noise_level`).
        seed: folded into the per-sample key of the angle, the noise and the probe (module docstring).

    Example:
        >>> loss_fn = equivariant_imaging_loss_fn(data.operator, noise_level=data.noise)
        >>> fit(model, loss_fn, batch_fn, optimizer, 1000)
    """
    fn = "equivariant_imaging_loss_fn"
    _check_op(op, fn)
    if len(op.in_shape) != 2 or op.in_complex:
        raise ValueError(f"{fn} rotates real (H, W) images; got an operator with in_shape {tuple(op.in_shape)}")
    norm2 = _norm2(op, _dtype_of(op))
    if alpha is None:
        alpha = 100 * math.prod(op.out_shape) / (math.prod(op.in_shape) * float(norm2))
    alpha = _check_number(alpha, "alpha", fn, positive=True)
    noise_level = _check_number(noise_level, "noise_level", fn, positive=True, allow_none=True)
    epsilon = _check_number(epsilon, "epsilon", fn, positive=True)
    return EquivariantImagingLoss(op, norm2, alpha, noise_level, epsilon, _check_seed(seed, fn))
