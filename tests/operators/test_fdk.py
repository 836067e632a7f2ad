"""FDK for circular cone beam: analytic (no inverse crime) reconstructions of ellipsoids, the central slice
against the fan-beam FBP, scaling, short scans (Parker), detector offsets, transformations, bad input.

float64 (tests/conftest.py) unless a test says float32; volumes 9-48 voxels a side.
"""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrecon.operators import (
    ConeBeamGeometry,
    FanBeamGeometry,
    fbp,
    fdk,
    fdk_central_fan,
    project,
)
from jaxrecon.phantoms import (
    EllipsoidPhantom,
    ellipsoid_projections,
    rasterize_ellipsoids,
)

PHANTOM = EllipsoidPhantom(
    centre=[[0.0, 0.0, 0.0], [0.15, -0.1, 0.05], [-0.25, 0.2, -0.1], [0.1, 0.3, 0.2]],
    axes=[[0.7, 0.6, 0.65], [0.25, 0.35, 0.3], [0.2, 0.15, 0.25], [0.12, 0.1, 0.15]],
    rotation=[0.3, -0.4, 0.8, 0.0],
    value=[1.0, 0.5, -0.4, 0.6],
)
BALL = EllipsoidPhantom([[0.0, 0.0, 0.0]], [[0.6, 0.6, 0.6]], [0.0], [1.0])


def _scaled_geometry(n, num_angles=None, angles=None, det_offset=(0.0, 0.0), extra=0):
    """The same physical setup at n^3 voxels: distances 2n, pixels of 2 voxels (one voxel at the isocentre)."""
    det = (int(1.7 * n) + 1 + extra, int(1.7 * n) + 1 + extra)
    if angles is None:
        angles = jnp.arange(num_angles or 2 * n) * (2 * jnp.pi / (num_angles or 2 * n))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the detector must see the whole volume
        return ConeBeamGeometry((n, n, n), angles, det, 2.0 * n, 2.0 * n, (2.0, 2.0), det_offset)


def _short_angles(geom, num_angles, start=0.0, sign=1.0):
    span = math.pi + 2 * float(fdk_central_fan(geom).half_fan_angle())
    return start + sign * jnp.arange(num_angles) * (span / num_angles)


def _inner(n, radius):
    zz, yy, xx = np.mgrid[:n, :n, :n] - (n - 1) / 2
    return np.sqrt(xx**2 + yy**2 + zz**2) / (n / 2) < radius


# --- Accuracy against analytic data ------------------------------------------------------------------------


@pytest.mark.slow
def test_central_slice_error_falls_as_the_resolution_grows():
    """Exact ellipsoid projections of the same physical object at 24^3 and 48^3 (views 2n); the relative L2
    error of the central slice (z = +1/2 voxel) against the rasterised phantom. Measured: 0.092, 0.059."""
    errors = []
    for n in (24, 48):
        geom = _scaled_geometry(n)
        rec = fdk(ellipsoid_projections(PHANTOM, geom), geom)
        truth = rasterize_ellipsoids(PHANTOM, geom.shape, supersample=4)
        c = n // 2
        errors.append(float(jnp.linalg.norm(rec[c] - truth[c]) / jnp.linalg.norm(truth[c])))
    assert errors[0] < 0.11
    assert errors[1] < 0.75 * errors[0]


@pytest.mark.parametrize("scan", ["full", "short", "short-decreasing"])
def test_uniform_ball_is_reconstructed_at_its_value(scan):
    """The quantitative check of every weight (cosine, filter scale, angular step, redundancy, distance):
    inside a ball of value 1 the central slice is 1 (measured: mean 1.0003, std 0.0025 for all three scans),
    and the whole inner ball within the cone-beam approximation (measured: mean 0.995, range 0.983-1.007)."""
    n = 32
    geom = _scaled_geometry(n, 64)
    if scan != "full":
        sign = -1.0 if scan == "short-decreasing" else 1.0
        geom = _scaled_geometry(n, angles=_short_angles(geom, 64, start=1.0, sign=sign))
    rec = np.asarray(fdk(ellipsoid_projections(BALL, geom), geom))
    inner = _inner(n, 0.45)
    c = n // 2
    central = rec[c][inner[c]]
    assert abs(central.mean() - 1) < 2e-3 and central.std() < 5e-3
    assert abs(rec[inner].mean() - 1) < 1e-2 and np.abs(rec[inner] - 1).max() < 3e-2


def test_an_object_constant_along_z_gives_the_same_slice_at_every_height():
    """FDK is exact for objects that do not vary along z (Feldkamp et al. 1984): here two elliptic cylinders
    (ellipsoids 100 volumes tall), so every slice must equal the central one. This checks the off-plane
    weights (the cosine of the ray's full 3D angle, the rows each voxel reads) that the source plane does
    not see. Measured: at most 1.8e-4 relative difference; with the fan's cos(gamma) in place of the 3D
    cosine, 2.9% at the top and bottom slices."""
    n = 24
    geom = _scaled_geometry(n)
    cylinders = EllipsoidPhantom([[0.1, -0.05, 0.0], [-0.2, 0.15, 0.0]], [[0.7, 0.55, 100.0], [0.2, 0.3, 100.0]],
                                 [0.3, -0.5], [1.0, 0.5])
    rec = np.asarray(fdk(ellipsoid_projections(cylinders, geom), geom))
    central = rec[n // 2]
    worst = max(np.linalg.norm(s - central) for s in rec) / np.linalg.norm(central)
    assert worst < 2e-3


def test_short_scan_reconstructs_the_phantom_as_well_as_the_full_scan():
    n = 24
    full = _scaled_geometry(n)
    short = _scaled_geometry(n, angles=_short_angles(full, 2 * n, start=0.4))
    truth = rasterize_ellipsoids(PHANTOM, full.shape, supersample=4)[n // 2]
    errors = [float(jnp.linalg.norm(fdk(ellipsoid_projections(PHANTOM, g), g)[n // 2] - truth) / jnp.linalg.norm(truth))
              for g in (full, short)]
    # measured: 0.092 (full), 0.090 (short)
    assert errors[1] < 1.1 * errors[0]


def test_central_slice_is_the_fan_beam_fbp_of_the_central_row():
    """Odd Z and rows, no row offset: the central row's cosine weight is the fan's cos(gamma) and its voxels
    project onto that row exactly, so FDK's central slice is `fbp` of the central row (any data, a column
    offset, full and short scans), rows flipped (2D y points up). Measured: 3e-15 relative."""
    z, n, rows = 9, 20, 17
    geom = ConeBeamGeometry.uniform((z, n, n), 40, (rows, 41), 50.0, 30.0, det_spacing=(1.3, 1.5),
                                    det_offset=(0.0, 0.7))
    short = ConeBeamGeometry((z, n, n), _short_angles(geom, 40, start=2.0), geom.det_shape, 50.0, 30.0,
                             (1.3, 1.5), (0.0, 0.7))
    y = jax.random.normal(jax.random.PRNGKey(0), geom.sinogram_shape)
    for g in (geom, short):
        fan = fdk_central_fan(g)
        assert isinstance(fan, FanBeamGeometry) and fan.sinogram_shape == (40, 41)
        ref = jax.jit(fbp, static_argnums=2)(y[:, rows // 2, :], fan, "hann")
        np.testing.assert_allclose(fdk(y, g, "hann")[z // 2, ::-1], ref, rtol=0, atol=1e-12 * float(jnp.abs(ref).max()))


def test_detector_offsets_are_handled():
    """A detector shifted by (row, col) = (1.5, -2.25) voxels (0.75 and 1.125 pixels; large enough to see the
    volume) reconstructs the phantom as well as the centred one; the same data read as if the detector were
    centred do not. Relative L2 error of the whole volume, measured: centred 0.104, shifted 0.094, offset
    ignored 0.315 (column offset alone ignored 0.271, row offset alone 0.236)."""
    n = 24
    truth = rasterize_ellipsoids(PHANTOM, (n, n, n), supersample=4)

    def error(y, geom):
        return float(jnp.linalg.norm(fdk(y, geom) - truth) / jnp.linalg.norm(truth))

    centred = _scaled_geometry(n, extra=4)
    shifted = _scaled_geometry(n, det_offset=(1.5, -2.25), extra=4)
    y = ellipsoid_projections(PHANTOM, shifted)
    reference = error(ellipsoid_projections(PHANTOM, centred), centred)
    assert error(y, shifted) < 1.05 * reference
    assert error(y, centred) > 2 * reference


# --- Transformations, dtypes, memory ------------------------------------------------------------------------


def _small():
    return ConeBeamGeometry.uniform((9, 12, 10), 10, (21, 29), 30.0, 20.0)


def test_jit_with_traced_geometry_vmap_and_batch_size():
    g = _small()
    ys = jax.random.normal(jax.random.PRNGKey(1), (3,) + g.sinogram_shape)
    eager = jnp.stack([fdk(y, g) for y in ys])
    np.testing.assert_allclose(jax.vmap(fdk, (0, None))(ys, g), eager, rtol=0, atol=1e-12)
    jitted = jax.jit(fdk, static_argnames=("filter", "batch_size"))
    np.testing.assert_allclose(jitted(ys[0], g), eager[0], rtol=0, atol=1e-12)
    # 10 views in chunks of 5 instead of 8 (the last chunk padded with zero views).
    np.testing.assert_allclose(fdk(ys[0], g, batch_size=5), eager[0], rtol=0, atol=1e-12)
    # vmap over geometries (the source distance) too.
    rs = jnp.array([30.0, 33.0])
    out = jax.vmap(lambda r: fdk(ys[0], ConeBeamGeometry(g.shape, g.angles, g.det_shape, r, 20.0)))(rs)
    np.testing.assert_allclose(out[0], eager[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(out[1], fdk(ys[0], ConeBeamGeometry(g.shape, g.angles, g.det_shape, 33.0, 20.0)),
                               rtol=0, atol=1e-12)


def test_gradient_in_y_is_the_transpose():
    g = _small()
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(2), 3)
    y, y2 = (jax.random.normal(k, g.sinogram_shape) for k in (k1, k2))
    w = jax.random.normal(k3, g.shape)
    grad = jax.grad(lambda y: jnp.vdot(fdk(y, g), w))(y)
    # fdk is linear, so the gradient of <fdk(y), w> is fdk^T w: <fdk(y2), w> = <y2, fdk^T w>.
    lhs, rhs = float(jnp.vdot(fdk(y2, g), w)), float(jnp.vdot(y2, grad))
    assert abs(lhs - rhs) <= 1e-12 * abs(lhs)


@pytest.mark.slow
def test_gradient_in_the_source_distance_matches_finite_differences():
    g = _small()
    k1, k2 = jax.random.split(jax.random.PRNGKey(2))
    y = jax.random.normal(k1, g.sinogram_shape)
    w = jax.random.normal(k2, g.shape)

    def loss(r):
        return jnp.vdot(fdk(y, ConeBeamGeometry(g.shape, g.angles, g.det_shape, r, 20.0)), w)

    d = float(jax.grad(loss)(30.0))
    h = 1e-6
    fd = (float(loss(30.0 + h)) - float(loss(30.0 - h))) / (2 * h)
    assert abs(d) > 1e-6 and abs(d - fd) <= 1e-5 * abs(fd)


def test_float32():
    g = _small()
    g32 = ConeBeamGeometry.uniform(g.shape, 10, g.det_shape, 30.0, 20.0, dtype=jnp.float32)
    y = jax.random.normal(jax.random.PRNGKey(3), g.sinogram_shape)
    ref = fdk(y, g)
    for geom in (g, g32):
        out = fdk(y.astype(jnp.float32), geom)
        assert out.dtype == jnp.float32
        assert float(jnp.linalg.norm(out - ref) / jnp.linalg.norm(ref)) < 1e-5


def test_memory_does_not_grow_with_the_views():
    """Views are weighted, filtered and backprojected one chunk at a time: XLA's scratch memory grows with
    the views only by arrays of (views, cols) (the redundancy weights), not with views x volume or
    views x detector, also for the gradient (checkpointed chunks). Measured (16^3, 37 x 37 detector,
    float64, batch_size=4): 0.32 MB for 8 views, 0.36 MB for 128 (gradient: 0.82, 0.85 MB), a difference
    of exactly 120 x 37 x 8 bytes; 120 more views of the detector are 1.3 MB, of the volume 3.9 MB."""
    sizes = {}
    for views in (8, 128):
        g = ConeBeamGeometry.uniform((16, 16, 16), views, (37, 37), 40.0, 20.0)
        spec = jax.ShapeDtypeStruct(g.sinogram_shape, jnp.float64)
        for name, f in (("fdk", lambda y, g=g: fdk(y, g, batch_size=4)),
                        ("grad", lambda y, g=g: jax.grad(lambda y: jnp.sum(fdk(y, g, batch_size=4) ** 2))(y))):
            stats = jax.jit(f).lower(spec).compile().memory_analysis()
            if stats is None:
                pytest.skip("this backend reports no memory analysis")
            sizes[name, views] = stats.temp_size_in_bytes
    for name in ("fdk", "grad"):
        assert sizes[name, 128] - sizes[name, 8] <= 2 * 120 * 37 * 8, sizes


# --- Bad input -----------------------------------------------------------------------------------------------


def test_bad_input_is_a_clear_error():
    g = _small()
    y = jnp.zeros(g.sinogram_shape)
    with pytest.raises(ValueError, match=r"fdk expects projections of shape \(10, 21, 29\), got \(10, 29\)"):
        fdk(jnp.zeros((10, 29)), g)
    with pytest.raises(TypeError, match="fdk expects a real floating-point projections, got dtype int"):
        fdk(jnp.zeros(g.sinogram_shape, jnp.int32), g)
    with pytest.raises(ValueError, match=r"filter must be one of \('ram-lak'.*got 'ramp'"):
        fdk(y, g, "ramp")
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        fdk(y, g, batch_size=0)
    with pytest.raises(TypeError, match=r"fdk needs a circular cone-beam orbit with a flat detector "
                                        r"\(a ConeBeamGeometry\), got ConeBeamVecGeometry; reconstruct other"):
        fdk(y, g.to_vec())
    fan = FanBeamGeometry.uniform((12, 10), 10, 30.0, 20.0)
    with pytest.raises(TypeError, match="for a 2D FanBeamGeometry use fbp"):
        fdk(jnp.zeros(fan.sinogram_shape), fan)
    with pytest.raises(TypeError, match=r"\(a ConeBeamGeometry\), got str"):
        fdk(y, "cone")


@pytest.mark.parametrize(
    "angles, match",
    [
        ([0.5], "fdk needs at least 2 angles, got 1"),
        ([0.0, 0.1, 0.3, 0.4], r"fdk needs equally spaced angles .* got steps from 0.1 to 0.2 rad"),
        (np.linspace(0, 3.0, 10), r"the angles cover 3.33333 rad; fdk needs a full scan \(2 pi\) or a short scan"),
        (np.arange(12) * (2 * np.pi / 10), r"the angles cover 7.53982 rad, more than one turn"),
    ],
)
@pytest.mark.filterwarnings("ignore:angles are in radians")
def test_bad_angles_are_a_clear_error(angles, match):
    g = ConeBeamGeometry(_small().shape, angles, (21, 29), 30.0, 20.0)
    with pytest.raises(ValueError, match=match):
        fdk(jnp.zeros(g.sinogram_shape), g)


def test_projections_of_a_rasterised_volume_reconstruct_it():
    """The discrete `project` of a smooth volume (no analytic data) comes back through FDK: relative
    error in the central slice 0.042 (measured), the Joseph model and the interpolations agreeing."""
    n = 24
    geom = _scaled_geometry(n)
    x = rasterize_ellipsoids(EllipsoidPhantom([[0.05, 0.0, 0.0]], [[0.6, 0.5, 0.55]], [0.2], [1.0]), geom.shape, 4)
    x = jax.scipy.signal.convolve(x, jnp.ones((3, 3, 3)) / 27, mode="same")  # smooth edges
    rec = fdk(project(x, geom), geom)
    c = n // 2
    assert float(jnp.linalg.norm(rec[c] - x[c]) / jnp.linalg.norm(x[c])) < 0.06
