r"""Pre-processing of measured transmission data: flat/dark correction, negative log, ring removal, and
Poisson (pre-log) count simulation. Every function is pure and jittable (shapes and window sizes are
static) and works on one sinogram at a time; batch with `jax.vmap`.

The model of a transmission measurement (Beer-Lambert, a monochromatic source):

$$ P = (F - D)\,e^{-\mu\,y} + D, $$

$P$ the projection counts, $F$ the open-beam (flat) counts, $D$ the dark counts, $y = Ax$ the line
integral in pixel units and $\mu$ the attenuation of one pixel of unit value. Pre-processing inverts it:
$y = -\log\big((P - \bar D)/(\bar F - \bar D)\big)/\mu$ with $\bar F$, $\bar D$ the means of the flat and
dark frames.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

__all__ = [
    "flat_dark_correct",
    "negative_log",
    "normalize",
    "remove_rings",
    "simulate_counts",
    "MIN_COUNT",
]

#: The smallest corrected count the negative log reads: a corrected count below it (zero, negative or
#: NaN) is clipped to it and counted. 0.1 photons is LoDoPaB-CT's rule for a zero count
#: (`create_dataset.py` of github.com/jleuschn/lodopab_tech_ref: ``np.maximum(0.1 / PHOTONS_PER_PIXEL, data)``).
MIN_COUNT = 0.1


def _float(a: ArrayLike) -> Array:
    a = jnp.asarray(a)
    return a if jnp.issubdtype(a.dtype, jnp.floating) else a.astype(jnp.result_type(float))


def _frame_mean(frames: Array | None, d_shape, name: str, dtype) -> Array:
    """Mean over the leading frame axis: frames `(N, *d_shape)` or a single frame `d_shape`."""
    if frames is None:
        return jnp.zeros(d_shape, dtype)
    frames = jnp.asarray(frames).astype(dtype)
    if frames.shape == tuple(d_shape):
        return frames
    if frames.ndim == len(d_shape) + 1 and frames.shape[1:] == tuple(d_shape) and frames.shape[0] > 0:
        return jnp.mean(frames, axis=0)
    raise ValueError(
        f"{name} must have shape (frames, {', '.join(map(str, d_shape))}) or ({', '.join(map(str, d_shape))},) "
        f"to match the projections' detector shape {tuple(d_shape)}, got {tuple(frames.shape)}"
    )


def flat_dark_correct(
    projections: Float[ArrayLike, "angles *det"],
    flats: Float[ArrayLike, "frames *det"] | None = None,
    darks: Float[ArrayLike, "frames *det"] | None = None,
) -> tuple[Float[Array, "angles *det"], Float[Array, "*det"]]:
    r"""Dark-subtracted counts and the open-beam counts: $(P - \bar D,\ \bar F - \bar D)$.

    `projections` is `(angles, *det)` (`det` = `(detectors,)` for a sinogram, `(rows, cols)` for
    projection images); `flats`/`darks` are stacks `(frames, *det)` or single frames `det`, averaged
    over the frame axis. Without darks $\bar D = 0$; without flats an error (use `negative_log`
    on data that is already normalised). Returns float arrays; their ratio is the transmission
    $T = (P - \bar D)/(\bar F - \bar D)$, formed (with the clipping policy) by `normalize`.

    Example:
        >>> counts, open_beam = flat_dark_correct(proj, flats, darks)   # (A, D), (D,)
    """
    p = _float(projections)
    if p.ndim < 2:
        raise ValueError(f"projections must have shape (angles, detectors, ...), got {tuple(p.shape)}")
    if flats is None:
        raise ValueError("flat_dark_correct needs flats (open-beam frames); for normalised data use negative_log")
    det = p.shape[1:]
    f = _frame_mean(flats, det, "flats", p.dtype)
    d = _frame_mean(darks, det, "darks", p.dtype)
    return p - d, f - d


def negative_log(
    transmission: Float[ArrayLike, "*shape"], floor=1e-6
) -> tuple[Float[Array, "*shape"], Int[Array, ""]]:
    r"""$-\log\max(T, \text{floor})$ and the number of values clipped: `(y, clipped)`.

    Policy for non-positive (or NaN) transmission: never a silent NaN or infinity. Every value
    $T < \text{floor}$ (including $T \le 0$ and NaN) is replaced by `floor` before the logarithm and
    counted in `clipped` (an int32 scalar); report it, e.g. "37 of 16000 values clipped". `floor`
    must be positive (a scalar or an array broadcastable to `T`).

    Example:
        >>> y, clipped = negative_log(jnp.array([1.0, 0.5, 0.0, -1.0]), floor=1e-3)
        >>> y  # [0, log 2, log 1000, log 1000]; clipped == 2
    """
    t = _float(transmission)
    floor = jnp.asarray(floor, t.dtype)
    bad = ~(t >= floor)  # NaN compares False: counted as bad too
    y = -jnp.log(jnp.where(bad, floor, t))
    return y, jnp.sum(bad, dtype=jnp.int32)


def normalize(
    projections: Float[ArrayLike, "angles *det"],
    flats: Float[ArrayLike, "frames *det"],
    darks: Float[ArrayLike, "frames *det"] | None = None,
    *,
    min_count=MIN_COUNT,
    mu=1.0,
) -> tuple[Float[Array, "angles *det"], Int[Array, ""]]:
    r"""Flat/dark correction and negative log: $y = -\frac1\mu\log\frac{\max(P - \bar D,\ c_{\min})}{\bar F - \bar D}$.

    Returns `(y, clipped)`: the post-log sinogram (line integrals $\times\mu$ divided back by `mu`)
    and the number of values whose dark-subtracted count $P - \bar D$ was below `min_count` (default
    0.1 photons, LoDoPaB-CT's rule for zero counts) or NaN, or whose open beam $\bar F - \bar D$ was
    not positive (a dead detector pixel; its values are set to 0 attenuation, not NaN). `mu` scales
    the result, e.g. to pixel units; default 1.

    Checked against the NumPy formula `-np.log(np.maximum(p - d.mean(0), 0.1) / (f.mean(0) - d.mean(0)))`.

    Example:
        >>> y, clipped = jax.jit(normalize)(proj, flats, darks)
    """
    counts, open_beam = flat_dark_correct(projections, flats, darks)
    min_count = jnp.asarray(min_count, counts.dtype)
    dead = ~(open_beam > 0)  # (det,): no open-beam signal
    low = ~(counts >= min_count)
    safe_open = jnp.where(dead, 1.0, open_beam)
    t = jnp.where(low, min_count, counts) / safe_open
    y = jnp.where(dead, 0.0, -jnp.log(t)) / jnp.asarray(mu, counts.dtype)
    clipped = jnp.sum(low | dead, dtype=jnp.int32)
    return y, clipped


def _median_filter_1d(v: Array, width: int) -> Array:
    """Running median along the last axis, edges padded by repetition (scipy's mode='nearest')."""
    r = width // 2
    padded = jnp.concatenate([jnp.repeat(v[..., :1], r, -1), v, jnp.repeat(v[..., -1:], r, -1)], axis=-1)
    n = v.shape[-1]
    windows = jnp.stack([padded[..., k : k + n] for k in range(width)], axis=-1)
    return jnp.median(windows, axis=-1)


def remove_rings(sinogram: Float[ArrayLike, "angles detectors"], width: int = 9) -> Float[Array, "angles detectors"]:
    r"""Ring-artefact removal by flattening the mean detector response.

    A miscalibrated detector bin adds (nearly) the same offset to every angle: a stripe in the
    sinogram, a ring in the image. With $m_d = \frac1A\sum_a y_{a,d}$ the mean over angles and
    $\tilde m$ its running median over `width` bins (odd, static), the stripe estimate is
    $r_d = m_d - \tilde m_d$ and the result is $y_{a,d} - r_d$. Smooth structure of $m$ (the object)
    is kept; isolated bin offsets narrower than about `width`/2 bins are removed. Equal to the NumPy
    formula with `scipy.ndimage.median_filter(m, width, mode="nearest")` (tested).

    Example:
        >>> clean = remove_rings(sinogram, width=9)
    """
    y = _float(sinogram)
    if y.ndim != 2:
        raise ValueError(f"remove_rings expects a sinogram (angles, detectors), got shape {tuple(y.shape)}")
    if isinstance(width, bool) or not isinstance(width, int) or width < 3 or width % 2 == 0:
        raise ValueError(f"width must be an odd int >= 3, got {width!r}")
    m = jnp.mean(y, axis=0)
    return y - (m - _median_filter_1d(m, width))[None, :]


def simulate_counts(
    key: PRNGKeyArray,
    sinogram: Float[ArrayLike, "angles *det"],
    photons,
    mu=1.0,
    *,
    num_flats: int = 0,
    num_darks: int = 0,
    dark_level=0.0,
) -> tuple[Array, Array, Array]:
    r"""Pre-log Poisson counts of a sinogram, with flat and dark frames: `(projections, flats, darks)`.

    $P \sim \mathrm{Poisson}(N_0 e^{-\mu y}) + \mathrm{Poisson}(d)$,
    $F \sim \mathrm{Poisson}(N_0) + \mathrm{Poisson}(d)$, $D \sim \mathrm{Poisson}(d)$, with $N_0$ =
    `photons` per detector pixel before attenuation, $\mu$ = `mu` and $d$ = `dark_level`. Flats and
    darks are stacks `(num_flats, *det)`, `(num_darks, *det)` (empty when 0). Counts are returned as
    floats of the sinogram's dtype.

    LoDoPaB-CT convention (Leuschner et al., Sci. Data 8, 109 (2021); `create_dataset.py` of
    github.com/jleuschn/lodopab_tech_ref): $N_0 = 4096$, images in $[0, 1]$ scaled by
    $\mu_{\max} = 81.35858\ \mathrm{m}^{-1}$ on a 26 cm domain of 362 pixels, so for a sinogram in
    pixel units $\mu = \mu_{\max}\cdot 0.26/362$ (`jaxrecon.data.lodopab.MU_PIXEL`). `normalize`
    inverts this model (with `mu`).

    Example:
        >>> proj, flats, darks = simulate_counts(key, radon(x, geom), 4096, mu=0.0584, num_flats=10)
    """
    y = _float(sinogram)
    photons = jnp.asarray(photons, y.dtype)
    k_p, k_f, k_d, k_pd, k_fd = jax.random.split(key, 5)
    det = y.shape[1:]
    proj = jax.random.poisson(k_p, photons * jnp.exp(-jnp.asarray(mu, y.dtype) * y)).astype(y.dtype)
    flats = jax.random.poisson(k_f, jnp.broadcast_to(photons, (num_flats, *det))).astype(y.dtype)
    darks = jax.random.poisson(k_d, jnp.full((num_darks, *det), dark_level, y.dtype)).astype(y.dtype)
    level = jnp.asarray(dark_level, y.dtype)
    proj = proj + jax.random.poisson(k_pd, jnp.broadcast_to(level, proj.shape)).astype(y.dtype)
    flats = flats + jax.random.poisson(k_fd, jnp.broadcast_to(level, flats.shape)).astype(y.dtype)
    return proj, flats, darks
