r"""Parallel-beam Radon transform (Joseph's method, ASTRA's `linear` projector) and its exact adjoint.

**Forward (ray-driven gather).** For an angle $\theta$ the ray through detector bin $d$ is stepped
over the image lines most perpendicular to it: columns if $|\sin\theta| \ge |\cos\theta|$, else rows.
On line $k$ it crosses the other axis at the fractional index $p(d, k) = c_0 + d\beta + k\gamma$,
where the image is linearly interpolated (zero outside), and the samples are summed with the step
length $w = 1/|\sin\theta|$ (or $1/|\cos\theta|$):

$$ (Ax)_{\theta, d} = w_\theta \sum_k \big[(1 - f)\, x_k[\lfloor p\rfloor] + f\, x_k[\lfloor p\rfloor + 1]\big],
   \quad f = p - \lfloor p\rfloor. $$

**Adjoint (pixel-driven gather).** The same weights, read from the pixel's side: pixel $q$ on
line $k$ receives $w_\theta \sum_d \max(0, 1 - |q - p(d, k)|)\, y_{\theta,d}$. Since $p$ is affine
in $d$, only the bins with $|d - d^*| < 1/|\beta|$, $d^* = (q - c_0 - k\gamma)/\beta$, contribute;
there are at most $\lceil 2/\Delta s\rceil$ of them. So both directions are gathers (XLA's fast
path on CPU), and `backproject` is the exact transpose of `radon`: the dot test holds to rounding.
Both compute $p$ with the same FMA-invariant arithmetic (`_exact.py`): XLA CPU fuses some
multiply-adds into FMAs depending on the program, and a position rounded differently by one ulp
($\approx 3\cdot 10^{-5}$ at $p \approx 500$ in float32) would move the adjoint's weight by that much.

**Differentiation.** `radon` and `backproject` are two JAX primitives, each the other's transpose,
so reverse mode through either never builds a scatter, at any order and under `vmap`. Derivatives
with respect to the geometry (angles, detector spacing and offset) differentiate the interpolation
weights (the piecewise-linear interpolant's derivative, defined almost everywhere).

**Batching.** `jax.vmap` folds into the primitives' leading axis. When the geometry is not vmapped
(`jax.vmap(lambda x: radon(x, geom))(xs)`, and the gradients of such a batch), the primitives keep one
geometry for all $B$ samples and run multi-image kernels: the samples become the last axis of the padded
flat array, so the interpolation indices and weights are computed once and every gather reads a
contiguous $B$-vector (4-7x faster than per-image geometry at $B = 16$, $128^2$). Results are identical to
calling `radon`/`backproject` image by image.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._exact import madd, madd_int
from ._primitive import define, pair
from .geometry import ParallelBeamGeometry
from .linear_operator import LinearOperator

__all__ = ["radon", "backproject", "RadonTransform"]

_PAD = 2  # zero border of the image: clipped indices land on zeros


def _num_taps(geom: ParallelBeamGeometry) -> int:
    """Static bound on the detector bins that reach one pixel from one angle: ceil(2 / spacing)."""
    return max(1, math.ceil(2.0 / geom.min_detector_spacing - 1e-9))


def _angle_params(angles, spacing, offset, shape, num_detectors):
    """Per-angle affine parameters of $p(d, k) = c_0 + d\\beta + k\\gamma$, the weight and the stepping axis."""
    h, w = shape
    c, s = jnp.cos(angles), jnp.sin(angles)
    by_cols = jnp.abs(s) >= jnp.abs(c)
    denom = jnp.where(by_cols, s, c)  # |denom| >= 1/sqrt(2): never zero
    t = jnp.where(by_cols, c, s)
    sign = jnp.where(by_cols, -1.0, 1.0).astype(angles.dtype)
    centre_pos = jnp.where(by_cols, (h - 1) / 2, (w - 1) / 2).astype(angles.dtype)
    # Line coordinate u_k = a_u + b_u k (x of column k, or y of row k).
    a_u = jnp.where(by_cols, -(w - 1) / 2, (h - 1) / 2).astype(angles.dtype)
    b_u = jnp.where(by_cols, 1.0, -1.0).astype(angles.dtype)
    s_first = madd_int(offset, jnp.asarray(-(num_detectors - 1), spacing.dtype), spacing / 2)  # s of bin 0
    c0 = centre_pos + sign * madd(s_first, -a_u, t) / denom  # FMA-invariant: the same bits in both directions
    beta = sign * spacing / denom
    gamma = -sign * b_u * t / denom
    weight = 1.0 / jnp.abs(denom)
    return c0, beta, gamma, weight, by_cols


def _forward(x, angles, spacing, offset, *, shape, num_detectors, unroll, taps):
    """One image `(H, W)` -> sinogram `(A, D)`."""
    del taps  # only the adjoint needs it
    return _forward_lines(x, angles, spacing, offset, shape, num_detectors, unroll, multi=False)


def _forward_multi(xs, angles, spacing, offset, *, shape, num_detectors, unroll, taps):
    """`B` images `(B, H, W)` under ONE geometry -> sinograms `(B, A, D)`.

    The images are stored as the last axis of the padded flat array, so every gather fetches a
    contiguous `B`-vector and the index arithmetic is shared. Same operations in the same order as
    `_forward`, image by image.
    """
    del taps
    return _forward_lines(xs, angles, spacing, offset, shape, num_detectors, unroll, multi=True)


def _forward_lines(x, angles, spacing, offset, shape, num_detectors, unroll, multi):
    h, w = shape
    m = max(h, w)
    n_steps = -(-m // unroll)
    width = n_steps * unroll + 2 * _PAD  # zero border; lines beyond the image read zeros
    lead = x.shape[:-2]  # () or (B,)
    xp = jnp.pad(x, ((0, 0),) * len(lead) + ((_PAD, width - _PAD - h), (_PAD, width - _PAD - w)))
    xp = xp.reshape(lead + (-1,))
    if multi:
        xp = xp.T  # (flat, B): a gather at one flat index reads all B images
    per_image = (lambda a: a[..., None]) if multi else (lambda a: a)
    c0, beta, gamma, weight, by_cols = (a[:, None] for a in _angle_params(angles, spacing, offset, shape, num_detectors))
    d = jnp.arange(num_detectors, dtype=c0.dtype)[None, :]
    step_k = jnp.where(by_cols, 1, width)  # flat stride between lines
    step_p = jnp.where(by_cols, width, 1)  # flat stride along a line
    base = _PAD * width + _PAD
    hi = n_steps * unroll

    def body(i, acc):
        # All rays (angles x detectors) at once, `unroll` lines per step: one fused gather loop.
        for t in range(unroll):
            k = i * unroll + t
            p = madd_int(madd_int(c0, k.astype(c0.dtype), gamma), d, beta)  # (c0 + k gamma) + d beta
            p0 = jnp.floor(p)
            f = per_image((p - p0).astype(x.dtype))
            flat = base + k * step_k + jnp.clip(p0.astype(jnp.int32), -_PAD, hi) * step_p
            flat = flat.astype(jnp.uint32)  # non-negative; unsigned skips the gathers' negative-index wrap
            v0 = xp.at[flat].get(mode="promise_in_bounds")
            v1 = xp.at[flat + step_p.astype(jnp.uint32)].get(mode="promise_in_bounds")
            acc = acc + (v0 + f * (v1 - v0))
        return acc

    acc = jax.lax.fori_loop(0, n_steps, body, jnp.zeros((angles.shape[0], num_detectors) + lead, x.dtype))
    out = per_image(weight.astype(x.dtype)) * acc
    return jnp.moveaxis(out, -1, 0) if multi else out


def _adjoint(y, angles, spacing, offset, *, shape, num_detectors, unroll, taps):
    """One sinogram `(A, D)` -> image `(H, W)`."""
    return _adjoint_angles(y, angles, spacing, offset, shape, num_detectors, unroll, taps, multi=False)


def _adjoint_multi(ys, angles, spacing, offset, *, shape, num_detectors, unroll, taps):
    """`B` sinograms `(B, A, D)` under ONE geometry -> images `(B, H, W)`; the gathers return `(H, W, B)`."""
    return _adjoint_angles(ys, angles, spacing, offset, shape, num_detectors, unroll, taps, multi=True)


def _adjoint_angles(y, angles, spacing, offset, shape, num_detectors, unroll, taps, multi):
    h, w = shape
    n_angles = angles.shape[0]
    if n_angles < 4 * unroll:  # a small angle block (ART/SGD): the largest unroll that divides it, no padding
        unroll = max(u for u in range(1, unroll + 1) if n_angles % u == 0)
    n_steps = -(-n_angles // unroll)
    pad = n_steps * unroll - n_angles  # padded angles carry zero data and zero weight
    c0, beta, gamma, weight, by_cols = _angle_params(angles, spacing, offset, shape, num_detectors)
    c0, beta, gamma, by_cols = (jnp.pad(a, (0, pad), mode="edge") for a in (c0, beta, gamma, by_cols))
    weight = jnp.pad(weight, (0, pad))
    row_len = num_detectors + 2 * taps
    lead = y.shape[:-2]  # () or (B,)
    yp = jnp.pad(y, ((0, 0),) * len(lead) + ((0, pad), (taps, taps))).reshape(lead + (-1,))
    if multi:
        yp = yp.T  # (flat, B): a gather at one flat index reads all B sinograms
    per_image = (lambda a: a[..., None]) if multi else (lambda a: a)
    rows = jnp.arange(h, dtype=c0.dtype)[:, None]
    cols = jnp.arange(w, dtype=c0.dtype)[None, :]

    def body(i, acc):
        # All pixels at once, `unroll` angles per step: one fused gather loop.
        for t in range(unroll):
            a = i * unroll + t
            pos = jnp.where(by_cols[a], rows, cols)  # index along the line
            base = madd_int(c0[a], jnp.where(by_cols[a], cols, rows), gamma[a])  # c0 + k gamma
            d_lo = jnp.floor((pos - base) / beta[a] - 1.0 / jnp.abs(beta[a])) + 1
            # The window's first bin clipped once to [-taps, D]: a window past either end of the detector
            # reads only the zero padding, as it would unclipped; unsigned indices skip the negative wrap.
            first = jnp.clip(jnp.clip(d_lo, -taps - 1, num_detectors).astype(jnp.int32), -taps, num_detectors)
            first = (first + (a * row_len + taps)).astype(jnp.uint32)
            total = 0.0
            for tap in range(taps):
                dd = d_lo + tap
                tent = per_image(jnp.maximum(0.0, 1.0 - jnp.abs(pos - madd_int(base, dd, beta[a]))).astype(y.dtype))
                total = total + tent * yp.at[first + tap].get(mode="promise_in_bounds")
            acc = acc + weight[a].astype(y.dtype) * total
        return acc

    acc = jax.lax.fori_loop(0, n_steps, body, jnp.zeros((h, w) + lead, y.dtype))
    return jnp.moveaxis(acc, -1, 0) if multi else acc


def _statics(geom: ParallelBeamGeometry, unroll) -> dict:
    unroll = 4 if unroll is None else unroll
    if isinstance(unroll, bool) or not isinstance(unroll, int) or unroll < 1:
        raise ValueError(f"unroll must be a positive int, got {unroll!r}")
    return dict(shape=geom.shape, num_detectors=geom.num_detectors, unroll=unroll, taps=_num_taps(geom))


# Two primitives, each the other's transpose. Every input has a leading batch axis (vmap folds into
# it), so a gradient, a vmap, or a vmap of a gradient always runs the same gather loops. The data `v`
# has leading size B; each geometry input has leading size G in {1, B}: G = 1 is one geometry shared
# by the whole batch (vmap over images), which runs the multi-image kernels (`_primitive.py`); the
# geometry inputs are (angles, spacing, offset).


radon_p, _run_forward = define(
    "jaxrecon_radon", _forward, _forward_multi, lambda geo, st: (geo[0].shape[1], st["num_detectors"])
)
backproject_p, _run_adjoint = define(
    "jaxrecon_backproject", _adjoint, _adjoint_multi, lambda geo, st: tuple(st["shape"]))


pair(radon_p, _run_forward, backproject_p, _run_adjoint, "Radon transform")


def _prepare(geom, unroll):
    if not isinstance(geom, ParallelBeamGeometry):
        raise TypeError(f"geom must be a ParallelBeamGeometry, got {type(geom).__name__}")
    statics = _statics(geom, unroll)
    spacing = geom.detector_spacing
    if isinstance(spacing, jax.core.Tracer):
        spacing = eqx.error_if(
            spacing,
            spacing < geom.min_detector_spacing * (1 - 1e-6),
            "detector_spacing fell below the geometry's min_detector_spacing; rebuild the geometry "
            "with a smaller min_detector_spacing",
        )
    elif float(spacing) < geom.min_detector_spacing * (1 - 1e-6):
        raise ValueError(
            f"detector_spacing {float(spacing)} is below min_detector_spacing {geom.min_detector_spacing}; "
            "rebuild the geometry with a smaller min_detector_spacing"
        )
    return statics, (geom.angles, spacing, geom.detector_offset)


def _check_array(a, expected, name, what):
    a = jnp.asarray(a)
    if a.shape != tuple(expected):
        raise ValueError(
            f"{name} expects {what} of shape {tuple(expected)}, got {a.shape} (one sample; batch with jax.vmap)"
        )
    if not jnp.issubdtype(a.dtype, jnp.floating):
        raise TypeError(f"{name} expects a real floating-point {what}, got dtype {a.dtype}")
    return a


def radon(
    x: Float[Array, "H W"], geom: ParallelBeamGeometry, *, unroll: int | None = None
) -> Float[Array, "angles detectors"]:
    r"""Parallel-beam projections $Ax$ of an image: line integrals in pixel units.

    Matches ASTRA's CPU `linear` projector (Joseph's method). Jittable, vmappable over images and
    over geometries, differentiable in `x` and in the geometry's arrays; its transpose is
    `backproject` (exact). `unroll` (static, default 4) is how many image lines one loop step
    handles; it changes speed, not results. A batch of images under one (not vmapped) geometry,
    `jax.vmap(radon, (0, None))(xs, geom)`, shares the interpolation work across the batch.

    Example:
        >>> geom = ParallelBeamGeometry.uniform((64, 64), num_angles=30)
        >>> radon(jnp.ones((64, 64)), geom).shape
        (30, 91)
    """
    statics, geo = _prepare(geom, unroll)
    x = _check_array(x, geom.shape, "radon", "an image")
    geo = tuple(jnp.asarray(g, x.dtype)[None] for g in geo)
    return radon_p.bind(x[None], *geo, **statics)[0]


def backproject(
    y: Float[Array, "angles detectors"], geom: ParallelBeamGeometry, *, unroll: int | None = None
) -> Float[Array, "H W"]:
    r"""The exact adjoint $A^\top y$ of `radon` (not a filtered or weighted backprojection).

    $\langle Ax, y\rangle = \langle x, A^\top y\rangle$ to rounding. For reconstruction use `fbp`.
    Like `radon`, a batch of sinograms under one geometry (`jax.vmap(backproject, (0, None))`)
    shares the interpolation work across the batch.

    Example:
        >>> geom = ParallelBeamGeometry.uniform((64, 64), num_angles=30)
        >>> backproject(jnp.ones((30, 91)), geom).shape
        (64, 64)
    """
    statics, geo = _prepare(geom, unroll)
    y = _check_array(y, geom.sinogram_shape, "backproject", "a sinogram")
    geo = tuple(jnp.asarray(g, y.dtype)[None] for g in geo)
    return backproject_p.bind(y[None], *geo, **statics)[0]


class RadonTransform(LinearOperator):
    """The Radon transform as a `LinearOperator`: `op(x) = radon(x, geom)`, `op.T(y) = backproject(y, geom)`.

    Example:
        >>> op = RadonTransform(ParallelBeamGeometry.uniform((64, 64), 30))
        >>> op.in_shape, op.out_shape
        ((64, 64), (30, 91))
    """

    geom: ParallelBeamGeometry
    unroll: int | None = eqx.field(static=True, default=None)

    def mv(self, x):
        return radon(x, self.geom, unroll=self.unroll)

    def rmv(self, y):
        return backproject(y, self.geom, unroll=self.unroll)

    @property
    def in_shape(self):
        return self.geom.shape

    @property
    def out_shape(self):
        return self.geom.sinogram_shape
