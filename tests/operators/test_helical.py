"""Helical cone beam: geometry (vectors, pitch, validity), projector through `project`, exact adjoint, analytic
ellipsoid projections, transformations.

Small volumes (8-16 voxels a side), few views, float64 (tests/conftest.py) unless a test says float32.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrecon.operators import (
    ConeBeamGeometry,
    ConeBeamVecGeometry,
    HelicalConeBeamGeometry,
    XRayTransform,
    backproject,
    project,
)
from jaxrecon.phantoms import EllipsoidPhantom, ellipsoid_projections, rasterize_ellipsoids

SHAPE = (12, 8, 10)  # (Z, Y, X): taller than the detector sees in one view
DET = (6, 20)


def _geom(num_angles=6, pitch=8.0, turns=1.5, r=30.0, d=15.0, **kw):
    return HelicalConeBeamGeometry.uniform(SHAPE, num_angles, DET, r, d, pitch, turns, **kw)


# Off-centre in z, so the table feed matters.
PHANTOM = EllipsoidPhantom(
    centre=[[0.1, -0.05, 0.2], [-0.2, 0.1, -0.3]],
    axes=[[0.6, 0.45, 0.5], [0.2, 0.3, 0.35]],
    rotation=[0.4, -0.3],
    value=[1.0, 0.5],
)


# --- Geometry -------------------------------------------------------------------------------------------


def test_vectors_are_the_circular_ones_lifted_by_the_table_feed():
    angles = jnp.array([0.0, jnp.pi / 2, 5 * jnp.pi])  # two and a half turns: no degrees warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g = HelicalConeBeamGeometry((8, 8, 8), angles, (16, 16), 30.0, 10.0, pitch=4.0, det_spacing=(1.5, 2.0),
                                    z_start=-3.0)
    np.testing.assert_allclose(g.z_positions, [-3.0, -2.0, 7.0], rtol=0, atol=1e-12)
    vec = np.asarray(g.vectors())
    # ASTRA cone_vec rows: the circular orbit's (see test_cone_beam) with z_v added to source and detector.
    np.testing.assert_allclose(vec[0], [0, -30, -3, 0, 10, -3, 2, 0, 0, 0, 0, 1.5], atol=1e-12)
    np.testing.assert_allclose(vec[1], [30, 0, -2, -10, 0, -2, 0, 2, 0, 0, 0, 1.5], atol=1e-12)
    np.testing.assert_allclose(vec[2], [0, 30, 7, 0, -10, 7, -2, 0, 0, 0, 0, 1.5], atol=1e-12)


def test_uniform_centres_the_helix_and_spans_the_turns():
    g = _geom(num_angles=6, pitch=8.0, turns=1.5)
    np.testing.assert_allclose(g.angles, np.arange(6) * 2 * np.pi * 1.5 / 6, atol=1e-12)
    z = np.asarray(g.z_positions)
    np.testing.assert_allclose(z[0] + z[-1], 0.0, atol=1e-12)
    np.testing.assert_allclose(np.diff(z), 8.0 * 1.5 / 6, atol=1e-12)


@pytest.mark.slow
def test_pitch_zero_is_the_circular_geometry():
    c = ConeBeamGeometry.uniform(SHAPE, 5, (24, 20), 30.0, 15.0, det_offset=(0.5, -0.3))
    h = HelicalConeBeamGeometry(SHAPE, c.angles, (24, 20), 30.0, 15.0, 0.0, det_offset=(0.5, -0.3))
    np.testing.assert_array_equal(np.asarray(h.vectors()), np.asarray(c.vectors()))
    kx, ky = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.uniform(kx, SHAPE)
    y = jax.random.uniform(ky, c.sinogram_shape)
    np.testing.assert_array_equal(np.asarray(project(x, h)), np.asarray(project(x, c)))
    np.testing.assert_array_equal(np.asarray(backproject(y, h)), np.asarray(backproject(y, c)))


def test_z_positions_option_equals_pitch_and_to_vec_gives_the_same_projections():
    g = _geom()
    h = HelicalConeBeamGeometry(SHAPE, g.angles, DET, 30.0, 15.0, z_positions=g.z_positions)
    np.testing.assert_array_equal(np.asarray(h.vectors()), np.asarray(g.vectors()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the vector form does not warn about the helix's axial truncation
        v = g.to_vec()
    assert isinstance(v, ConeBeamVecGeometry)
    with pytest.warns(UserWarning, match="does not see the whole volume"):  # the vector form's own check
        v2 = ConeBeamVecGeometry.from_astra(SHAPE, g.vectors(), DET)  # same vectors, through ASTRA's rows
    x = jax.random.uniform(jax.random.PRNGKey(1), SHAPE)
    np.testing.assert_allclose(project(x, v), project(x, g), rtol=0, atol=1e-12)
    np.testing.assert_allclose(project(x, v2), project(x, g), rtol=0, atol=1e-12)


@pytest.mark.slow
def test_a_view_equals_the_circular_view_of_the_volume_moved_by_minus_z():
    """Integer table positions: view v of the helix sees what the circular orbit sees in a taller volume with
    the object moved down by z_v (the discrete projector, not only the vectors, follows the feed)."""
    z_pos = jnp.array([-2.0, 0.0, 1.0, 2.0])
    angles = jnp.array([0.3, 1.9, 3.7, 5.2])
    nz = 6
    h = HelicalConeBeamGeometry((nz, 8, 10), angles, (8, 20), 30.0, 15.0, z_positions=z_pos)
    x = jax.random.uniform(jax.random.PRNGKey(2), (nz, 8, 10))
    got = project(x, h)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the tall volume is truncated on this detector
        c = ConeBeamGeometry((nz + 4, 8, 10), angles, (8, 20), 30.0, 15.0)
    for i, zv in enumerate((-2, 0, 1, 2)):
        tall = jnp.zeros((nz + 4, 8, 10)).at[2 - zv:2 - zv + nz].set(x)
        np.testing.assert_allclose(got[i], project(tall, c)[i], rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"source_origin": -5.0}, "source_origin must be positive, got -5.0"),
        ({"origin_detector": 0.0}, "origin_detector must be positive, got 0.0"),
        ({"source_origin": 6.0}, r"source_origin must exceed 7.106.*got 6.0"),
        ({"det_spacing": (0.0, 1.0)}, r"det_spacing must be positive, got \[0.0, 1.0\]"),
        ({"pitch": float("inf")}, "pitch must be finite"),
        ({"pitch": None}, "give exactly one of pitch"),
        ({"z_positions": [0.0, 1.0]}, "give exactly one of pitch"),
        ({"pitch": None, "z_positions": [0.0]}, r"z_positions must have shape \(2,\), got \(1,\)"),
        ({"pitch": None, "z_positions": [0.0, float("nan")]}, "z_positions must be finite"),
        ({"angles": []}, "angles must be a non-empty 1-D array"),
        ({"shape": (8, 8, -1)}, r"shape must be a tuple of 3 positive ints, got \(8, 8, -1\)"),
    ],
)
def test_bad_geometry_is_a_clear_error(kwargs, match):
    args = {"shape": SHAPE, "angles": [0.0, 1.0], "det_shape": DET, "source_origin": 30.0, "origin_detector": 15.0,
            "pitch": 4.0}
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        HelicalConeBeamGeometry(**args)


def test_bad_uniform_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="num_angles must be a positive int, got 0"):
        HelicalConeBeamGeometry.uniform(SHAPE, 0, DET, 30.0, 15.0, 4.0)
    with pytest.raises(ValueError, match="turns must be positive and finite, got -1.0"):
        HelicalConeBeamGeometry.uniform(SHAPE, 4, DET, 30.0, 15.0, 4.0, turns=-1.0)


def test_far_travel_past_a_tall_volume_is_valid():
    """The source far above a tall volume (z = 60 at 16 from the axis) is clear of it: no error."""
    with pytest.warns(UserWarning, match="no view sees z in"):  # two views far away: nothing measured
        g = HelicalConeBeamGeometry((40, 8, 8), jnp.array([0.0, 1.0]), (8, 20), 16.0, 10.0, z_positions=[-60.0, 60.0])
    assert g.to_vec().num_angles == 2


def test_axial_truncation_is_silent_but_columns_and_coverage_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _geom()  # each view sees a slab (6 rows, 12 slices), the helix covers all of z
    with pytest.warns(UserWarning, match=r"does not see the whole volume across its columns in view 0"):
        HelicalConeBeamGeometry.uniform(SHAPE, 6, (6, 8), 30.0, 15.0, 8.0, 1.5)
    with pytest.warns(UserWarning, match=r"no view sees z in \[-6, -2\], \[2.159, 6\] on the rotation axis"):
        HelicalConeBeamGeometry(SHAPE, [0.0, 1.0], DET, 30.0, 15.0, 1.0)


# --- Projector: adjoint, analytic reference ------------------------------------------------------------


@pytest.mark.parametrize("dtype, tol", [(jnp.float64, 1e-12), (jnp.float32, 1e-5)])
def test_dot_test(dtype, tol):
    g = _geom(dtype=dtype)
    kx, ky = jax.random.split(jax.random.PRNGKey(3))
    x = jax.random.normal(kx, SHAPE, dtype)
    y = jax.random.normal(ky, g.sinogram_shape, dtype)
    ax, aty = project(x, g), backproject(y, g)
    assert ax.dtype == aty.dtype == dtype
    lhs, rhs = float(jnp.vdot(ax.astype(jnp.float64), y)), float(jnp.vdot(x, aty.astype(jnp.float64)))
    assert abs(lhs - rhs) <= tol * abs(lhs)


def test_exact_projections_follow_the_feed():
    """Exact line integrals: the helix's view v is the circular view of the phantom moved by -z_v."""
    g = _geom()
    got = ellipsoid_projections(PHANTOM, g)
    half_z = SHAPE[0] / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        c = ConeBeamGeometry(SHAPE, g.angles, DET, 30.0, 15.0)
    for i, zv in enumerate(np.asarray(g.z_positions)):
        moved = EllipsoidPhantom(PHANTOM.centre - jnp.array([0.0, 0.0, zv / half_z]), PHANTOM.axes,
                                 PHANTOM.rotation, PHANTOM.value)
        np.testing.assert_allclose(got[i], ellipsoid_projections(moved, c)[i], rtol=0, atol=1e-10)


def _analytic_error(n, supersample=4):
    """Relative L2 error of project(raster) against exact line integrals; one physical setup at n^3 voxels."""
    g = HelicalConeBeamGeometry.uniform((n, n, n), 8, (10, 24), 3.0 * n, 1.5 * n, pitch=0.5 * n, turns=2.0,
                                        det_spacing=(n / 8, n / 8))
    ref = ellipsoid_projections(PHANTOM, g)
    p = project(rasterize_ellipsoids(PHANTOM, g.shape, supersample=supersample), g)
    return float(jnp.linalg.norm(p - ref) / jnp.linalg.norm(ref))


@pytest.mark.slow
def test_projection_of_rasterised_ellipsoids_converges_to_the_analytic_projection():
    """Measured (supersample 4): 0.213 at n = 8, 0.100 at n = 16 (about first order, as the circular orbit)."""
    e8, e16 = _analytic_error(8), _analytic_error(16)
    assert e8 < 0.25
    assert e16 < 0.6 * e8


@pytest.mark.slow
def test_projection_error_keeps_falling_at_32():
    """Measured (supersample 2): 0.047 at n = 32, 0.097 at n = 16."""
    assert _analytic_error(32, supersample=2) < 0.6 * _analytic_error(16, supersample=2)


# --- Transformations -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_vmap_jit_and_grad_in_the_volume():
    g = _geom()
    xs = jax.random.uniform(jax.random.PRNGKey(4), (2,) + SHAPE)
    stacked = jnp.stack([project(x, g) for x in xs])
    np.testing.assert_allclose(jax.vmap(project, (0, None))(xs, g), stacked, rtol=0, atol=1e-12)
    np.testing.assert_allclose(jax.jit(project)(xs[0], g), stacked[0], rtol=0, atol=1e-12)
    w = jax.random.normal(jax.random.PRNGKey(5), g.sinogram_shape)
    grad = jax.jit(jax.grad(lambda x, g: jnp.vdot(project(x, g), w)))(xs[0], g)
    np.testing.assert_allclose(grad, backproject(w, g), rtol=0, atol=1e-12)
    op = XRayTransform(g)
    assert op.in_shape == SHAPE and op.out_shape == g.sinogram_shape


@pytest.mark.slow
def test_grad_wrt_pitch_matches_finite_differences():
    x = rasterize_ellipsoids(PHANTOM, SHAPE, supersample=2)
    w = jax.random.uniform(jax.random.PRNGKey(6), (6,) + DET)

    def loss(pitch):
        return jnp.vdot(project(x, _geom(pitch=pitch)), w)

    grad = float(jax.grad(loss)(8.0))
    h = 1e-5
    fd = (float(loss(8.0 + h)) - float(loss(8.0 - h))) / (2 * h)
    assert abs(grad) > 1e-3
    assert abs(grad - fd) <= 1e-5 * abs(fd)


def test_vmap_over_pitches():
    x = jax.random.uniform(jax.random.PRNGKey(7), SHAPE)
    pitches = jnp.array([7.0, 9.0])
    out = jax.vmap(lambda p: project(x, _geom(pitch=p)))(pitches)
    for i, p in enumerate((7.0, 9.0)):
        np.testing.assert_allclose(out[i], project(x, _geom(pitch=p)), rtol=0, atol=1e-12)
