r"""Filtered back projection for parallel-beam and fan-beam data.

**Fan beam** (`FanBeamGeometry`, source at distance $R$, detector at $D_{sd} = R + D_{od}$ from it).
For a circular orbit the fan-beam inversion formula (Kak and Slaney, ch. 3.4) reads, for a flat
detector with coordinate $t$ and a curved one with fan angle $\gamma$:

$$ f(P) = \int w(\beta,\gamma)\, \frac{R D_{sd}}{L^2}\,
       \big[(y_\beta \cos\gamma) * h\big](t_P)\, d\beta, \qquad
   f(P) = \int w(\beta,\gamma)\, \frac{R}{L'^2}\,
       \big[(y_\beta \cos\gamma) * h_\gamma\big](\gamma_P)\, d\beta, $$

$h$ the ramp filter, $h_\gamma(\gamma) = (\gamma/\sin\gamma)^2 h(\gamma)$, $L = (P - S)\cdot c$ the
distance from the source along the central ray, $L' = |P - S|$, and $t_P$, $\gamma_P$ the detector
coordinate of the ray through $P$. The redundancy weight $w$ is $1/2$ for a full scan ($2\pi$: every
line is measured twice) and Parker's weight for a short scan ($\pi + 2\Gamma \le$ range $< 2\pi$), so
that $w$ sums to 1 over the two measurements of each line. Discretised with the band-limited ramp
of `fbp_filter` on the detector grid, the sum over views (uniform steps $\Delta\beta$) and linear
interpolation in $t$ or $\gamma$.
"""

from __future__ import annotations

import math

import numpy as np
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .fan_geometry import FanBeamGeometry, FanBeamVecGeometry
from .geometry import ParallelBeamGeometry
from .radon import backproject

__all__ = ["fbp", "fbp_filter", "redundancy_weights", "FBP_FILTERS"]

FBP_FILTERS = ("ram-lak", "shepp-logan", "cosine", "hamming", "hann")


def _padded_size(num_detectors: int) -> int:
    return max(64, 1 << int(np.ceil(np.log2(2 * num_detectors))))


def fbp_filter(num_detectors: int, filter: str = "ram-lak") -> np.ndarray:
    r"""Frequency response of the FBP filter on the zero-padded detector grid (for `numpy.fft.rfft`).

    The ramp is the DFT of the band-limited spatial ramp (Kak and Slaney, eq. 61):
    $h_0 = 1/4$, $h_n = -1/(\pi n)^2$ for odd $n$, $0$ for even $n$, which avoids the DC bias of a
    sampled $|\omega|$. Windows as in scikit-image: shepp-logan $\operatorname{sinc}$, cosine,
    hamming, hann. Returns a float64 array of length `n // 2 + 1`, `n` the padded size
    ($\ge 64$, a power of two $\ge 2D$).
    """
    if filter not in FBP_FILTERS:
        raise ValueError(f"filter must be one of {FBP_FILTERS}, got {filter!r}")
    n = _padded_size(num_detectors)
    k = np.arange(n)
    dist = np.minimum(k, n - k)  # circular distance
    h = np.where(dist % 2 == 1, -1.0 / (np.pi * np.maximum(dist, 1)) ** 2, 0.0)
    h[0] = 0.25
    ramp = np.real(np.fft.fft(h))
    freq = np.fft.fftfreq(n)  # cycles per sample, in [-1/2, 1/2)
    if filter == "shepp-logan":
        window = np.sinc(freq)  # sin(pi f) / (pi f)
    elif filter == "cosine":
        window = np.cos(np.pi * freq)
    elif filter == "hamming":
        window = np.fft.fftshift(np.hamming(n))
    elif filter == "hann":
        window = np.fft.fftshift(np.hanning(n))
    else:
        window = np.ones(n)
    return (ramp * window)[: n // 2 + 1]


def fbp(
    y: Float[Array, "angles detectors"], geom: ParallelBeamGeometry | FanBeamGeometry, filter: str = "ram-lak"
) -> Float[Array, "H W"]:
    r"""Filtered back projection $\hat x = \frac{\pi}{A} A^\top (h * y)$ (parallel beam; fan beam below).

    Each projection is zero-padded, convolved with the band-limited ramp `fbp_filter` (times a
    window) by FFT, and back-projected with the exact adjoint `backproject`, whose interpolation
    weights integrate to $1/\Delta s$, which cancels the filter's $1/\Delta s$. The $\pi/A$ weight
    assumes angles spread uniformly over $[0, \pi)$. Jittable, vmappable, differentiable.

    For a `FanBeamGeometry` (flat or curved detector) it is the fan-beam formula in this module's
    docstring: cosine pre-weighting, redundancy weights (1/2 for a $2\pi$ scan, Parker's for a short
    scan, see `redundancy_weights`), the same filters, and a distance-weighted pixel-driven
    backprojection (a different function from the exact adjoint `backproject`). Angles must be
    equally spaced and increasing or decreasing; the scan is short when they cover less than $2\pi$.

    Example:
        >>> geom = ParallelBeamGeometry.uniform((64, 64), num_angles=60)
        >>> x = shepp_logan(64)
        >>> fbp(radon(x, geom), geom, filter="hann").shape
        (64, 64)
    """
    if isinstance(geom, FanBeamGeometry):
        return _fan_fbp(y, geom, filter)
    if isinstance(geom, FanBeamVecGeometry):
        raise TypeError("fbp needs a circular orbit: use a FanBeamGeometry, not a FanBeamVecGeometry")
    if not isinstance(geom, ParallelBeamGeometry):
        raise TypeError(f"geom must be a ParallelBeamGeometry or FanBeamGeometry, got {type(geom).__name__}")
    y = jnp.asarray(y)
    if y.shape != geom.sinogram_shape:
        raise ValueError(
            f"fbp expects a sinogram of shape {geom.sinogram_shape}, got {y.shape} (one sample; batch with jax.vmap)"
        )
    if not jnp.issubdtype(y.dtype, jnp.floating):
        raise TypeError(f"fbp expects a real floating-point sinogram, got dtype {y.dtype}")
    response = jnp.asarray(fbp_filter(geom.num_detectors, filter), y.dtype)
    n = 2 * (response.shape[0] - 1)
    filtered = jnp.fft.irfft(jnp.fft.rfft(y, n=n, axis=-1) * response, n=n, axis=-1)[:, : geom.num_detectors]
    return backproject(filtered.astype(y.dtype), geom) * (jnp.pi / geom.num_angles)


# --- Fan beam -----------------------------------------------------------------------------------------


def _scan(geom: FanBeamGeometry):
    """(angular step, covered range, direction sign) of equally spaced angles."""
    a = geom.angles
    if a.shape[0] < 2:
        raise ValueError(f"fbp needs at least 2 angles, got {a.shape[0]}")
    step = (a[-1] - a[0]) / (a.shape[0] - 1)
    return jnp.abs(step), jnp.abs(step) * a.shape[0], jnp.where(step < 0, -1.0, 1.0).astype(a.dtype)


def redundancy_weights(geom: FanBeamGeometry) -> Float[Array, "angles detectors"]:
    r"""Fan-beam redundancy weights $w(\beta, \gamma)$, `(num_angles, num_detectors)`: they sum to 1 over the
    two measurements of every line.

    A full scan (angles covering $2\pi$) gets $1/2$ everywhere. A short scan covering
    $\pi + 2\Gamma' < 2\pi$ gets Parker's weights (Parker 1982) with $\Gamma'$ in place of the half fan
    angle (Silver's generalisation; $\Gamma' \ge \max|\gamma|$ is needed). With our orientation the line
    of $(\beta, \gamma)$ is measured again at $(\beta + \pi - 2\gamma, -\gamma)$, so, with
    $b = \beta - \beta_0$:

    $$ w = \sin^2\!\Big(\frac{\pi}{4}\frac{b}{\Gamma' + \gamma}\Big) \ (b < 2\Gamma' + 2\gamma), \quad
       1 \ (\text{up to } \pi + 2\gamma), \quad
       \sin^2\!\Big(\frac{\pi}{4}\frac{\pi + 2\Gamma' - b}{\Gamma' - \gamma}\Big) \ (\text{up to } \pi + 2\Gamma'). $$

    Decreasing angles mirror the scan ($b \to -b$, $\gamma \to -\gamma$). Traceable.

    Example:
        >>> g = FanBeamGeometry.uniform((32, 32), 40, 60.0, 40.0, scan="short")
        >>> redundancy_weights(g).shape
        (40, 82)
    """
    if not isinstance(geom, FanBeamGeometry):
        raise TypeError(f"geom must be a FanBeamGeometry, got {type(geom).__name__}")
    step, covered, sign = _scan(geom)
    gamma = geom.fan_angles()
    if not any(isinstance(v, jax.core.Tracer) for v in (covered, gamma)):
        need = math.pi + 2 * float(jnp.max(jnp.abs(gamma)))
        if float(covered) < need * (1 - 1e-6):
            raise ValueError(
                f"the angles cover {float(covered):.6g} rad; fan-beam FBP needs a full scan (2 pi) or a short scan "
                f"of at least pi + 2 * (largest fan angle) = {need:.6g} rad"
            )
    b = sign * (geom.angles - geom.angles[0])[:, None]
    g = sign * gamma[None, :]
    big_gamma = (covered - jnp.pi) / 2
    up = jnp.sin(jnp.pi / 4 * b / jnp.maximum(big_gamma + g, 1e-12)) ** 2
    down = jnp.sin(jnp.pi / 4 * (jnp.pi + 2 * big_gamma - b) / jnp.maximum(big_gamma - g, 1e-12)) ** 2
    parker = jnp.where(b < 2 * big_gamma + 2 * g, up, jnp.where(b <= jnp.pi + 2 * g, 1.0, down))
    parker = jnp.where(b <= jnp.pi + 2 * big_gamma, parker, 0.0)
    full = covered >= 2 * jnp.pi * (1 - 1e-4)
    return jnp.where(full, jnp.full_like(parker, 0.5), parker)


def _fan_fbp(y, geom: FanBeamGeometry, filter: str):
    y = jnp.asarray(y)
    if y.shape != geom.sinogram_shape:
        raise ValueError(
            f"fbp expects a sinogram of shape {geom.sinogram_shape}, got {y.shape} (one sample; batch with jax.vmap)"
        )
    if not jnp.issubdtype(y.dtype, jnp.floating):
        raise TypeError(f"fbp expects a real floating-point sinogram, got dtype {y.dtype}")
    dtype = y.dtype
    geom = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), geom)
    num_det = geom.num_detectors
    response = jnp.asarray(fbp_filter(num_det, filter), dtype)
    n = 2 * (response.shape[0] - 1)
    spacing = geom.detector_spacing
    curved = geom.detector == "curved"
    if curved:
        # h_gamma(n) = h(n) (n dg / sin(n dg))^2 on the circular grid; lags >= num_det never reach the
        # first num_det outputs (the data are zero-padded to n >= 2 num_det), so they are dropped.
        kernel = jnp.fft.irfft(response, n=n)
        lag = np.minimum(np.arange(n), n - np.arange(n))
        angle = jnp.asarray(lag, dtype) * spacing
        ratio = jnp.where(lag == 0, 1.0, angle / jnp.sin(jnp.where(lag == 0, 1.0, angle)))
        kernel = jnp.where(lag < num_det, kernel * ratio**2, 0.0)
        response = jnp.fft.rfft(kernel).real.astype(dtype)
        scale = geom.source_origin / spacing
    else:
        scale = 1.0 / spacing
    weighted = y * jnp.cos(geom.fan_angles())[None, :] * redundancy_weights(geom).astype(dtype)
    filtered = jnp.fft.irfft(jnp.fft.rfft(weighted, n=n, axis=-1) * response, n=n, axis=-1)[:, :num_det]
    step, _, _ = _scan(geom)
    return _fan_weighted_backprojection((filtered * scale * step).astype(dtype), geom)


def _fan_weighted_backprojection(q, geom: FanBeamGeometry, unroll: int = 4):
    r"""$\sum_v \omega_v(P)\, q_v(\text{bin of the ray through } P)$ with linear interpolation along the detector.

    $\omega = R D_{sd}/L^2$ (flat) or $1/L'^2$ (curved). A gather over views (not the adjoint of `project`).
    """
    h, w = geom.shape
    num_det = geom.num_detectors
    dtype = q.dtype
    n_views = q.shape[0]
    unroll = max(u for u in range(1, unroll + 1) if n_views % u == 0)
    cols = jnp.arange(w, dtype=dtype)[None, :] - (w - 1) / 2
    rows = (h - 1) / 2 - jnp.arange(h, dtype=dtype)[:, None]
    px, py = jnp.broadcast_to(cols, (h, w)), jnp.broadcast_to(rows, (h, w))
    qp = jnp.pad(q, ((0, 0), (1, 2))).reshape(-1)  # zero beyond both ends of the detector
    row_len = num_det + 3
    r, sdd = geom.source_origin, geom.source_detector
    spacing, offset = geom.detector_spacing, geom.detector_offset
    sin, cos = jnp.sin(geom.angles), jnp.cos(geom.angles)

    def body(i, acc):
        for t in range(unroll):
            v = i * unroll + t
            # B = P - S in the view's frame: along the central ray c = (-sin, cos) and the detector axis u = (cos, sin).
            bx, by = px - r * sin[v], py + r * cos[v]
            along = -bx * sin[v] + by * cos[v]
            across = bx * cos[v] + by * sin[v]
            if geom.detector == "curved":
                coord = jnp.arctan2(across, along)
                weight = 1.0 / (along * along + across * across)
            else:
                coord = sdd * across / along
                weight = r * sdd / (along * along)
            d = jnp.clip((coord - offset) / spacing + (num_det - 1) / 2, -1.0, num_det)
            d0 = jnp.floor(d)
            f = d - d0
            idx = v * row_len + 1 + jnp.clip(d0.astype(jnp.int32), -1, num_det)
            v0 = qp.at[idx].get(mode="promise_in_bounds")
            v1 = qp.at[idx + 1].get(mode="promise_in_bounds")
            acc = acc + weight * (v0 + f * (v1 - v0))
        return acc

    return jax.lax.fori_loop(0, n_views // unroll, body, jnp.zeros((h, w), dtype))
