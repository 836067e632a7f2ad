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

**Differentiation.** `radon` and `backproject` are linear in the image/sinogram with a custom
transpose (`jax.custom_derivatives.linear_call`), so reverse mode through either never builds a
scatter; derivatives with respect to the geometry (angles, detector spacing and offset) come from
differentiating the interpolation weights (the piecewise-linear interpolant's derivative).
"""

from __future__ import annotations

import math
from functools import partial

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.custom_derivatives import linear_call
from jaxtyping import Array, Float

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
    s_first = offset - (num_detectors - 1) / 2 * spacing  # s of bin 0
    c0 = centre_pos + sign * (s_first - a_u * t) / denom
    beta = sign * spacing / denom
    gamma = -sign * b_u * t / denom
    weight = 1.0 / jnp.abs(denom)
    return c0, beta, gamma, weight, by_cols


def _forward(x, angles, spacing, offset, *, shape, num_detectors, unroll):
    h, w = shape
    m = max(h, w)
    n_steps = -(-m // unroll)
    width = n_steps * unroll + 2 * _PAD  # zero border; lines beyond the image read zeros
    xp = jnp.zeros((width, width), x.dtype).at[_PAD : _PAD + h, _PAD : _PAD + w].set(x).ravel()
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
            p = (c0 + k.astype(c0.dtype) * gamma) + d * beta
            p0 = jnp.floor(p)
            f = (p - p0).astype(x.dtype)
            flat = base + k * step_k + jnp.clip(p0.astype(jnp.int32), -_PAD, hi) * step_p
            v0 = xp.at[flat].get(mode="promise_in_bounds")
            v1 = xp.at[flat + step_p].get(mode="promise_in_bounds")
            acc = acc + (v0 + f * (v1 - v0))
        return acc

    acc = jax.lax.fori_loop(0, n_steps, body, jnp.zeros((angles.shape[0], num_detectors), x.dtype))
    return weight.astype(x.dtype) * acc


def _adjoint(y, angles, spacing, offset, *, shape, num_detectors, unroll, taps):
    h, w = shape
    n_angles = angles.shape[0]
    n_steps = -(-n_angles // unroll)
    pad = n_steps * unroll - n_angles  # padded angles carry zero data and zero weight
    c0, beta, gamma, weight, by_cols = _angle_params(angles, spacing, offset, shape, num_detectors)
    c0, beta, gamma, by_cols = (jnp.pad(a, (0, pad), mode="edge") for a in (c0, beta, gamma, by_cols))
    weight = jnp.pad(weight, (0, pad))
    row_len = num_detectors + 2 * taps
    yp = jnp.pad(y, ((0, pad), (taps, taps))).ravel()
    rows = jnp.arange(h, dtype=c0.dtype)[:, None]
    cols = jnp.arange(w, dtype=c0.dtype)[None, :]

    def body(i, acc):
        # All pixels at once, `unroll` angles per step: one fused gather loop.
        for t in range(unroll):
            a = i * unroll + t
            pos = jnp.where(by_cols[a], rows, cols)  # index along the line
            base = c0[a] + jnp.where(by_cols[a], cols, rows) * gamma[a]  # + k * gamma
            d_lo = jnp.floor((pos - base) / beta[a] - 1.0 / jnp.abs(beta[a])) + 1
            total = 0.0
            for tap in range(taps):
                dd = d_lo + tap
                tent = jnp.maximum(0.0, 1.0 - jnp.abs(pos - (base + dd * beta[a]))).astype(y.dtype)
                idx = a * row_len + taps + jnp.clip(dd.astype(jnp.int32), -taps, num_detectors + taps - 1)
                total = total + tent * yp.at[idx].get(mode="promise_in_bounds")
            acc = acc + weight[a].astype(y.dtype) * total
        return acc

    return jax.lax.fori_loop(0, n_steps, body, jnp.zeros((h, w), y.dtype))


def _statics(geom: ParallelBeamGeometry, unroll):
    unroll = 4 if unroll is None else unroll
    if isinstance(unroll, bool) or not isinstance(unroll, int) or unroll < 1:
        raise ValueError(f"unroll must be a positive int, got {unroll!r}")
    return dict(shape=geom.shape, num_detectors=geom.num_detectors, unroll=unroll)


@partial(jax.custom_jvp, nondiff_argnums=(4,))
def _radon(x, angles, spacing, offset, statics):
    return _forward(x, angles, spacing, offset, **statics[0])


@partial(jax.custom_jvp, nondiff_argnums=(4,))
def _backproject(y, angles, spacing, offset, statics):
    return _adjoint(y, angles, spacing, offset, **statics[0], taps=statics[1])


def _fwd_lin(statics, geo, x):
    return _radon(x, *geo, statics)


def _adj_lin(statics, geo, y):
    return _backproject(y, *geo, statics)


@_radon.defjvp
def _radon_jvp(statics, primals, tangents):
    x, *geo = primals
    dx, *dgeo = tangents
    out = _radon(x, *geo, statics)
    dout = linear_call(partial(_fwd_lin, statics), partial(_adj_lin, statics), tuple(geo), dx)
    _, dgeo_out = jax.jvp(lambda *g: _forward(x, *g, **statics[0]), tuple(geo), tuple(dgeo))
    return out, dout + dgeo_out


@_backproject.defjvp
def _backproject_jvp(statics, primals, tangents):
    y, *geo = primals
    dy, *dgeo = tangents
    out = _backproject(y, *geo, statics)
    dout = linear_call(partial(_adj_lin, statics), partial(_fwd_lin, statics), tuple(geo), dy)
    _, dgeo_out = jax.jvp(lambda *g: _adjoint(y, *g, **statics[0], taps=statics[1]), tuple(geo), tuple(dgeo))
    return out, dout + dgeo_out


class _Statics(tuple):
    """Hashable static configuration passed through custom_jvp's nondiff_argnums."""

    def __hash__(self):
        return hash((tuple(sorted(self[0].items())), self[1]))


def _prepare(geom, unroll):
    if not isinstance(geom, ParallelBeamGeometry):
        raise TypeError(f"geom must be a ParallelBeamGeometry, got {type(geom).__name__}")
    statics = _Statics((_statics(geom, unroll), _num_taps(geom)))
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
    `backproject` (exact). `unroll` (static) sets how many angles are processed together.

    Example:
        >>> geom = ParallelBeamGeometry.uniform((64, 64), num_angles=30)
        >>> radon(jnp.ones((64, 64)), geom).shape
        (30, 91)
    """
    statics, geo = _prepare(geom, unroll)
    x = _check_array(x, geom.shape, "radon", "an image")
    geo = tuple(jnp.asarray(g, x.dtype) for g in geo)
    return _radon(x, *geo, statics)


def backproject(
    y: Float[Array, "angles detectors"], geom: ParallelBeamGeometry, *, unroll: int | None = None
) -> Float[Array, "H W"]:
    r"""The exact adjoint $A^\top y$ of `radon` (not a filtered or weighted backprojection).

    $\langle Ax, y\rangle = \langle x, A^\top y\rangle$ to rounding. For reconstruction use `fbp`.

    Example:
        >>> geom = ParallelBeamGeometry.uniform((64, 64), num_angles=30)
        >>> backproject(jnp.ones((30, 91)), geom).shape
        (64, 64)
    """
    statics, geo = _prepare(geom, unroll)
    y = _check_array(y, geom.sinogram_shape, "backproject", "a sinogram")
    geo = tuple(jnp.asarray(g, y.dtype) for g in geo)
    return _backproject(y, *geo, statics)


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
