"""3D parallel beam: geometries (ASTRA's parallel3d and parallel3d_vec), the slice-stack projector against the 2D
`radon`, the vector (3D Joseph) projector, exact adjoints, analytic ellipsoid projections, transformations.

ASTRA's 3D projectors run on CUDA only, so there is no ASTRA comparison here; the 2D `radon` is matched to
ASTRA's CPU `linear` projector in test_radon.py. Small volumes (8-32 voxels), float64 unless a test says float32.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrecon.operators import (
    Parallel3DGeometry,
    Parallel3DVecGeometry,
    ParallelBeamGeometry,
    XRayTransform,
    backproject,
    project,
    radon,
)
from jaxrecon.operators.parallel3d import parallel3d_backproject, parallel3d_project
from jaxrecon.phantoms import (
    EllipsePhantom,
    EllipsoidPhantom,
    ellipse_sinogram,
    ellipsoid_projections,
    rasterize_ellipsoids,
)

SHAPE = (6, 10, 12)  # (Z, Y, X), deliberately not cubic
ANGLES = jnp.array([0.1, 0.5, 1.2, 2.0, 2.9])  # none at |sin| = |cos|, where the two projectors may step differently


def _geom(**kw):
    return Parallel3DGeometry(SHAPE, ANGLES, **kw)


def _tilted(shape, num_angles, det_shape, tilt=0.3, spacing=1.0):
    """Rotation about an axis tilted by `tilt` from z (laminography-like), detector perpendicular to the rays."""
    t = jnp.arange(num_angles) * (2 * jnp.pi / num_angles) + 0.1
    s, c, sa, ca = jnp.sin(t), jnp.cos(t), jnp.sin(tilt), jnp.cos(tilt)
    ray = jnp.stack([s * ca, -c * ca, jnp.full_like(t, sa)], -1)
    u = spacing * jnp.stack([c, s, jnp.zeros_like(t)], -1)
    v = spacing * jnp.stack([-s * sa, c * sa, jnp.full_like(t, ca)], -1)
    return Parallel3DVecGeometry(shape, ray, jnp.zeros_like(ray), u, v, det_shape)


PHANTOM = EllipsoidPhantom(
    centre=[[0.1, -0.05, 0.1], [-0.2, 0.15, -0.2]],
    axes=[[0.6, 0.45, 0.6], [0.2, 0.3, 0.3]],
    rotation=[0.4, -0.3],
    value=[1.0, 0.5],
)


# --- Geometry -------------------------------------------------------------------------------------------


def test_vectors_follow_astra_parallel3d_convention():
    g = Parallel3DGeometry((8, 8, 8), jnp.array([0.0, jnp.pi / 2]), (8, 16), det_spacing=(1.5, 2.0))
    vec = np.asarray(g.vectors())
    # ASTRA geom_2vec for 'parallel3d': ray (sin, -cos, 0), centre 0, u = sx (cos, sin, 0), v = (0, 0, sy).
    np.testing.assert_allclose(vec[0], [0, -1, 0, 0, 0, 0, 2, 0, 0, 0, 0, 1.5], atol=1e-12)
    np.testing.assert_allclose(vec[1], [1, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 1.5], atol=1e-12)
    with pytest.warns(UserWarning, match="does not see the whole volume"):  # the offset rows miss a slab
        off = Parallel3DGeometry((8, 8, 8), jnp.array([0.0]), (8, 16), det_offset=(0.5, -1.0))
    np.testing.assert_allclose(np.asarray(off.vectors())[0, 3:6], [-1.0, 0.0, 0.5], atol=1e-12)
    np.testing.assert_allclose(off.row_positions(), np.arange(8) - 3.5 + 0.5, atol=1e-12)


def test_defaults_one_row_per_slice_and_the_2d_columns_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g = Parallel3DGeometry.uniform(SHAPE, 7)
    assert g.det_shape == (6, 16)  # ceil(hypot(10, 12)) = 16, as ParallelBeamGeometry's default
    np.testing.assert_allclose(g.angles, np.arange(7) * np.pi / 7, atol=1e-12)
    sg = g.slice_geometry()
    assert isinstance(sg, ParallelBeamGeometry) and sg.shape == (10, 12) and sg.num_detectors == 16


def test_vec_round_trip_through_astra_rows():
    g = _geom()
    v = Parallel3DVecGeometry.from_astra(SHAPE, g.vectors(), g.det_shape)
    np.testing.assert_array_equal(np.asarray(v.vectors()), np.asarray(g.vectors()))
    assert v.to_vec() is v and g.to_vec().sinogram_shape == g.sinogram_shape == (5, 6, 16)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"det_spacing": (1.0, 0.0)}, r"det_spacing must be positive, got \[1.0, 0.0\]"),
        ({"det_spacing": (-1.0, 1.0)}, r"det_spacing must be positive, got \[-1.0, 1.0\]"),
        ({"det_offset": (0.0, float("nan"))}, "det_offset must be finite"),
        ({"angles": []}, "angles must be a non-empty 1-D array"),
        ({"det_shape": (4, 0)}, r"det_shape must be a tuple of 2 positive ints, got \(4, 0\)"),
        ({"shape": (6, 10)}, r"shape must be a tuple of 3 positive ints, got \(6, 10\)"),
        ({"min_col_spacing": 2.0}, r"min_col_spacing must be in \(0, column spacing 1.0\], got 2.0"),
    ],
)
def test_bad_geometry_is_a_clear_error(kwargs, match):
    args = {"shape": SHAPE, "angles": ANGLES}
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        Parallel3DGeometry(**args)


def test_bad_vec_geometry_is_a_clear_error():
    g = _geom().to_vec()
    ray, centre, u, v = (np.array(a) for a in (g.ray, g.detector_centre, g.detector_u, g.detector_v))
    zero = ray.copy()
    zero[1] = 0.0
    with pytest.raises(ValueError, match=r"ray must be non-zero; view 1 has ray = \[0.0, 0.0, 0.0\]"):
        Parallel3DVecGeometry(SHAPE, zero, centre, u, v, (6, 16))
    flat = ray.copy()
    flat[2] = u[2]  # along the detector's u axis: in the detector plane
    with pytest.raises(ValueError, match="the ray direction must cross the detector plane; view 2"):
        Parallel3DVecGeometry(SHAPE, flat, centre, u, v, (6, 16))
    with pytest.raises(ValueError, match="detector_u and detector_v must be non-zero and not parallel; view 0"):
        Parallel3DVecGeometry(SHAPE, ray, centre, u, u, (6, 16))
    with pytest.raises(ValueError, match="must have the same number of views"):
        Parallel3DVecGeometry(SHAPE, ray[:2], centre, u, v, (6, 16))
    with pytest.raises(ValueError, match=r"vectors must have shape \(num_angles, 12\), got \(5, 9\)"):
        Parallel3DVecGeometry.from_astra(SHAPE, np.zeros((5, 9)), (6, 16))


def test_small_detector_warns():
    with pytest.warns(UserWarning, match=r"detector \(6 x 10 pixels\) does not see the whole volume in view 0"):
        Parallel3DGeometry(SHAPE, ANGLES, (6, 10))
    with pytest.warns(UserWarning, match=r"detector \(4 x 16 pixels\) does not see the whole volume"):
        Parallel3DGeometry(SHAPE, ANGLES, (4, 16))


def test_options_for_the_wrong_geometry_are_clear_errors():
    g = _geom()
    with pytest.raises(ValueError, match="batch_size applies to Parallel3DVecGeometry"):
        project(jnp.zeros(SHAPE), g, batch_size=2)
    with pytest.raises(ValueError, match="unroll applies to Parallel3DGeometry"):
        backproject(jnp.zeros(g.sinogram_shape), g.to_vec(), unroll=2)
    with pytest.raises(ValueError, match=r"expects a volume of shape \(6, 10, 12\), got \(10, 12\)"):
        project(jnp.zeros((10, 12)), g)
    with pytest.raises(TypeError, match="geom must be a Parallel3DGeometry or Parallel3DVecGeometry"):
        parallel3d_project(jnp.zeros(SHAPE), ParallelBeamGeometry((10, 12), ANGLES))


# --- Projector: the 2D radon, the vector form, adjoints ------------------------------------------------


def test_each_row_is_the_2d_radon_of_its_slice_rows_flipped():
    """Default rows (one per slice): bit for bit the 2D parallel-beam sinogram of the slice, its rows flipped
    (2D y points up, 3D y grows with the row index); column spacing and offset as the 2D geometry's."""
    g = _geom(det_shape=(6, 20), det_spacing=(1.0, 0.8), det_offset=(0.0, 0.3))
    x = jax.random.uniform(jax.random.PRNGKey(0), SHAPE)
    p = project(x, g)
    g2 = ParallelBeamGeometry((10, 12), ANGLES, 20, 0.8, 0.3)
    for k in range(SHAPE[0]):
        np.testing.assert_array_equal(np.asarray(p[:, k, :]), np.asarray(radon(x[k, ::-1, :], g2)))


def test_rows_between_slices_interpolate_linearly_and_match_the_vector_form():
    g = _geom(det_shape=(10, 16), det_spacing=(0.7, 1.0), det_offset=(0.4, -0.2))
    x = jax.random.uniform(jax.random.PRNGKey(1), SHAPE)
    p = project(x, g)
    s = np.stack([np.asarray(radon(x[k, ::-1, :], g.slice_geometry())) for k in range(SHAPE[0])])
    s = np.concatenate([np.zeros_like(s[:1]), s, np.zeros_like(s[:2])])  # zero slices outside the volume
    z = (np.arange(10) - 4.5) * 0.7 + 0.4 + (SHAPE[0] - 1) / 2  # fractional slice index of each row
    k0 = np.floor(z).astype(int)
    w = z - k0
    assert k0.min() == -1 and k0.max() == SHAPE[0]  # the lowest and the highest row lie partly outside
    expected = (1 - w)[:, None, None] * s[k0 + 1] + w[:, None, None] * s[k0 + 2]
    np.testing.assert_allclose(p, np.transpose(expected, (1, 0, 2)), rtol=0, atol=1e-12)
    # The 3D Joseph projector of the vector form gives the same numbers (bilinear = linear in z of linear).
    np.testing.assert_allclose(project(x, g.to_vec()), p, rtol=0, atol=1e-12)


@pytest.mark.parametrize("vec", [False, True])
@pytest.mark.parametrize("dtype, tol", [(jnp.float64, 1e-12), (jnp.float32, 1e-5)])
def test_dot_test(vec, dtype, tol):
    if vec:
        g = _tilted(SHAPE, 5, (14, 18))
        g = Parallel3DVecGeometry(SHAPE, *(a.astype(dtype) for a in g._vectors()), g.det_shape)
    else:
        g = Parallel3DGeometry(SHAPE, ANGLES.astype(dtype), (8, 16), det_spacing=(0.9, 1.0), det_offset=(0.3, 0.1))
    kx, ky = jax.random.split(jax.random.PRNGKey(2))
    x = jax.random.normal(kx, SHAPE, dtype)
    y = jax.random.normal(ky, g.sinogram_shape, dtype)
    ax, aty = project(x, g), backproject(y, g)
    assert ax.dtype == aty.dtype == dtype
    lhs, rhs = float(jnp.vdot(ax.astype(jnp.float64), y)), float(jnp.vdot(x, aty.astype(jnp.float64)))
    assert abs(lhs - rhs) <= tol * abs(lhs)


# --- Analytic references ---------------------------------------------------------------------------------


def test_exact_ellipsoid_rows_are_exact_ellipse_sinograms_of_the_cross_sections():
    """Independent check of the parallel ellipsoid line integrals and of the flip: the row at height z sees the
    ellipse cut from each ellipsoid (semi-axes scaled by sqrt(1 - ((z - c_z)/c)^2)), whose exact 2D sinogram in
    the slice geometry (2D v = 3D y / (Y/2), the same numbers after the row flip) is `ellipse_sinogram`."""
    g = _geom(det_shape=(6, 20), det_spacing=(1.1, 0.9), det_offset=(0.2, 0.4))
    got = ellipsoid_projections(PHANTOM, g)
    half_z = SHAPE[0] / 2
    for r, z in enumerate(np.asarray(g.row_positions())):
        t = (z / half_z - np.asarray(PHANTOM.centre[:, 2])) / np.asarray(PHANTOM.axes[:, 2])
        scale = np.sqrt(np.clip(1 - t**2, 0, None))
        cut = EllipsePhantom(PHANTOM.centre[:, :2], PHANTOM.axes[:, :2] * scale[:, None], PHANTOM.rotation,
                             PHANTOM.value)
        ref = ellipse_sinogram(cut, g.slice_geometry(), clip_to_image=False)
        np.testing.assert_allclose(got[:, r, :], ref, rtol=0, atol=1e-10)
    assert float(jnp.abs(got).max()) > 1.0


def _analytic_error(n, vec=False, supersample=4):
    """Relative L2 error of project(raster) against exact line integrals; one physical setup at n^3 voxels."""
    if vec:
        g = _tilted((n, n, n), 6, (12, 16), spacing=n / 8)
    else:
        g = Parallel3DGeometry.uniform((n, n, n), 6, (12, 16), det_spacing=(n / 8, n / 8), det_offset=(0.1 * n, 0.0))
    ref = ellipsoid_projections(PHANTOM, g)
    p = project(rasterize_ellipsoids(PHANTOM, g.shape, supersample=supersample), g)
    return float(jnp.linalg.norm(p - ref) / jnp.linalg.norm(ref))


@pytest.mark.parametrize("vec", [pytest.param(False, marks=pytest.mark.slow), True])
def test_projection_of_rasterised_ellipsoids_converges_to_the_analytic_projection(vec):
    """Measured (supersample 4): slice stack 0.184 at n = 8, 0.097 at 16; tilted vector form 0.179, 0.100."""
    e8, e16 = _analytic_error(8, vec), _analytic_error(16, vec)
    assert e8 < 0.2
    assert e16 < 0.6 * e8


@pytest.mark.slow
def test_projection_error_keeps_falling_at_32():
    """Measured (supersample 2): slice stack 0.057 at n = 32, 0.094 at 16 (ratio 0.61; 0.53 from 8 to 16: the
    projections' edges, where the ellipsoids' chords have square-root profiles, converge slower than first order).
    With supersample 4: 0.059 at 32; the tilted vector form 0.051 at 32."""
    assert _analytic_error(32, supersample=2) < 0.7 * _analytic_error(16, supersample=2)


# --- Transformations -------------------------------------------------------------------------------------


@pytest.mark.parametrize("vec", [pytest.param(False, marks=pytest.mark.slow), True])
def test_vmap_over_volumes_equals_stacking(vec):
    g = _geom().to_vec() if vec else _geom()
    xs = jax.random.uniform(jax.random.PRNGKey(3), (2,) + SHAPE)
    stacked = jnp.stack([project(x, g) for x in xs])
    np.testing.assert_allclose(jax.vmap(project, (0, None))(xs, g), stacked, rtol=0, atol=1e-12)
    ys = jax.random.normal(jax.random.PRNGKey(4), (2,) + g.sinogram_shape)
    np.testing.assert_allclose(
        jax.vmap(backproject, (0, None))(ys, g), jnp.stack([backproject(y, g) for y in ys]), rtol=0, atol=1e-12
    )


@pytest.mark.parametrize("vec", [False, True])
def test_jit_and_grad_in_the_volume(vec):
    g = _geom().to_vec() if vec else _geom()
    x = jax.random.uniform(jax.random.PRNGKey(3), SHAPE)
    ys = jax.random.normal(jax.random.PRNGKey(4), (1,) + g.sinogram_shape)
    np.testing.assert_allclose(jax.jit(project)(x, g), project(x, g), rtol=0, atol=1e-12)
    grad = jax.jit(jax.grad(lambda x, g: jnp.vdot(project(x, g), ys[0])))(x, g)
    np.testing.assert_allclose(grad, backproject(ys[0], g), rtol=0, atol=1e-12)
    op = XRayTransform(g)
    assert op.in_shape == SHAPE and op.out_shape == g.sinogram_shape
    np.testing.assert_allclose(op.T(ys[0]), parallel3d_backproject(ys[0], g), rtol=0, atol=1e-12)


def test_grad_wrt_detector_offsets_matches_finite_differences():
    x = rasterize_ellipsoids(PHANTOM, SHAPE, supersample=2)
    w = jax.random.uniform(jax.random.PRNGKey(5), (5, 9, 16))

    @jax.jit
    def loss(offset):
        return jnp.vdot(project(x, _geom(det_shape=(9, 16), det_spacing=(0.8, 1.0), det_offset=offset)), w)

    o = jnp.array([0.23, 0.31])
    grad = np.asarray(jax.jit(jax.grad(loss))(o))
    h = 1e-6
    for i in range(2):
        e = jnp.zeros(2).at[i].set(h)
        fd = (float(loss(o + e)) - float(loss(o - e))) / (2 * h)
        assert abs(grad[i]) > 1e-2
        assert abs(grad[i] - fd) <= 1e-5 * abs(fd)


def test_vmap_over_geometries():
    x = jax.random.uniform(jax.random.PRNGKey(6), SHAPE)
    shifts = jnp.array([0.0, 0.05])
    out = jax.vmap(lambda a: project(x, Parallel3DGeometry(SHAPE, ANGLES + a)))(shifts)
    for i, a in enumerate((0.0, 0.05)):
        np.testing.assert_allclose(out[i], project(x, Parallel3DGeometry(SHAPE, ANGLES + a)), rtol=0, atol=1e-12)
