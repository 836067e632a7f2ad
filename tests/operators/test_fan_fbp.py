"""Fan-beam FBP: analytic (no inverse crime) reconstructions for flat/curved detectors, full/short (Parker) scans."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrecon.metrics import psnr
from jaxrecon.operators import FanBeamGeometry, fbp
from jaxrecon.operators.fbp import redundancy_weights
from jaxrecon.phantoms import EllipsePhantom, ellipse_sinogram, rasterize, shepp_logan_ellipses

N = 64


def _geometry(detector, scan, num_angles=180, **kwargs):
    spacing = 1.5 if detector == "flat" else None  # curved default: one pixel of arc at the detector
    return FanBeamGeometry.uniform((N, N), num_angles, 1.5 * N, 1.0 * N, detector_spacing=spacing,
                                   detector=detector, scan=scan, **kwargs)


reconstruct = jax.jit(lambda y, g: fbp(y, g, "ram-lak"))


@pytest.mark.parametrize("detector", ["flat", "curved"])
@pytest.mark.parametrize("scan", ["full", "short"])
def test_reconstructs_the_phantom_from_its_analytic_sinogram(detector, scan):
    ph = shepp_logan_ellipses(jnp.float64)
    truth = rasterize(ph, (N, N), supersample=4)
    geom = _geometry(detector, scan)
    rec = reconstruct(ellipse_sinogram(ph, geom), geom)
    # measured: flat 27.6 (full) / 27.9 (short) dB, curved 29.2 / 30.4 dB
    assert float(psnr(rec, truth, data_range=1.0)) > 26.5


@pytest.mark.parametrize("detector", ["flat", "curved"])
@pytest.mark.parametrize("scan", ["full", "short", "short-decreasing"])
def test_uniform_ellipse_is_reconstructed_at_its_value(detector, scan):
    # The quantitative check of the weights (cosine, distance, Parker, filter scale): away from the edges
    # FBP of an exact sinogram returns the ellipse's value.
    disk = EllipsePhantom([[0.1, -0.05]], [[0.7, 0.6]], [0.3], [1.0])
    geom = _geometry(detector, scan.split("-")[0])
    if scan == "short-decreasing":  # the orbit turning the other way: Parker's weights mirror
        geom = geom.with_angles(3.0 - geom.angles)
    rec = np.asarray(reconstruct(ellipse_sinogram(disk, geom), geom))
    yy, xx = np.mgrid[:N, :N]
    u, v = (xx - (N - 1) / 2) / (N / 2), ((N - 1) / 2 - yy) / (N / 2)
    inner = np.hypot(u - 0.1, v + 0.05) < 0.45
    assert abs(rec[inner].mean() - 1) < 1e-3 and rec[inner].std() < 1e-3


def test_parker_weights_sum_to_one_over_conjugate_rays():
    geom = FanBeamGeometry.uniform((N, N), 4000, 1.5 * N, 1.0 * N, num_detectors=59, detector_spacing=3.0,
                                   scan="short")
    w = np.asarray(redundancy_weights(geom))
    beta, gamma = np.asarray(geom.angles), np.asarray(geom.fan_angles())
    assert w.min() >= 0 and w.max() <= 1
    # (beta, gamma) and (beta + pi - 2 gamma, -gamma) are the same line; the detector is symmetric, so
    # -gamma_d = gamma_{D-1-d}.
    for d in (0, 7, 29, 45, 58):
        conj = np.interp(beta + np.pi - 2 * gamma[d], beta, w[:, -1 - d], left=0.0, right=0.0)
        inside = beta + np.pi - 2 * gamma[d] <= beta[-1]
        np.testing.assert_allclose((w[:, d] + conj)[inside], 1.0, atol=2e-3)
    full = FanBeamGeometry.uniform((N, N), 90, 1.5 * N, 1.0 * N)
    np.testing.assert_array_equal(redundancy_weights(full), 0.5)


@pytest.mark.slow
def test_vmap_and_grad():
    geom = FanBeamGeometry.uniform((24, 24), 24, 40.0, 30.0)
    ys = jax.random.normal(jax.random.PRNGKey(0), (3,) + geom.sinogram_shape)
    np.testing.assert_allclose(jax.vmap(fbp, (0, None))(ys, geom), jnp.stack([fbp(y, geom) for y in ys]),
                               rtol=1e-10, atol=1e-10)
    assert jnp.all(jnp.isfinite(jax.grad(lambda y: jnp.sum(fbp(y, geom) ** 2))(ys[0])))
    # Differentiable in the geometry too.
    g = jax.grad(lambda r: jnp.sum(fbp(ys[0], FanBeamGeometry((24, 24), geom.angles, geom.num_detectors, r, 30.0))))(40.0)
    assert jnp.isfinite(g)


def test_bad_input():
    geom = _geometry("flat", "full", num_angles=10)
    with pytest.raises(ValueError, match=r"expects a sinogram of shape \(10, \d+\), got \(10, 3\)"):
        fbp(jnp.ones((10, 3)), geom)
    with pytest.raises(ValueError, match="filter must be one of"):
        fbp(jnp.ones(geom.sinogram_shape), geom, "ramp")
    with pytest.raises(TypeError, match="circular orbit"):
        fbp(jnp.ones(geom.sinogram_shape), geom.to_vec())
    too_short = geom.with_angles(jnp.linspace(0, 3.0, 10))
    with pytest.raises(ValueError, match=r"needs a full scan \(2 pi\) or a short scan"):
        fbp(jnp.ones(geom.sinogram_shape), too_short)
