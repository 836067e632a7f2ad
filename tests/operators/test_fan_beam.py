"""Fan-beam project/backproject: ASTRA's CPU fan projectors, analytic sinograms, dot tests, derivatives, vmap.

Convention alignment with ASTRA (see jaxrecon/operators/fan_geometry.py): ASTRA's `fanflat` with
(det_width, det_count, angles, source_origin, origin_det) on `create_vol_geom(H, W)` is
`FanBeamGeometry(shape, angles, det_count, source_origin, origin_det, det_width)`, angle for angle, and
`fanflat_vec` rows are `(source, detector_centre, detector_u)`. ASTRA's CPU fan kernels are `line_fanflat`
(intersection lengths) and `strip_fanflat` (areas), not Joseph's interpolation, so they agree with ours
to discretisation error (~1% on a smooth phantom), not to rounding as the parallel `linear` does.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from skimage.data import shepp_logan_phantom
from skimage.transform import resize

from jaxrecon.operators import (
    FanBeamGeometry,
    FanBeamVecGeometry,
    ParallelBeamGeometry,
    RadonTransform,
    XRayTransform,
    backproject,
    dot_test,
    project,
    radon,
)
from jaxrecon.operators.radon import backproject as parallel_backproject

# Geometry as a traced argument: one compilation per (shape, detector count, views, detector kind).
fwd = jax.jit(lambda x, g: project(x, g))
adj = jax.jit(lambda y, g: backproject(y, g))


def rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


def phantom(shape, sigma=1.0):
    """Anti-aliased Shepp-Logan with an asymmetric block (a flipped axis cannot pass), Gaussian-smoothed."""
    x = resize(shepp_logan_phantom(), shape, anti_aliasing=True)
    x = x + 0.5 * (np.arange(shape[1])[None, :] > 0.6 * shape[1]) * (np.arange(shape[0])[:, None] < shape[0] // 3)
    return gaussian_filter(x, sigma).astype(np.float32)


def astra_fp_bp(x, y, proj_geom, shape, projector):
    import astra

    vg = astra.create_vol_geom(*shape)
    pid = astra.create_projector(projector, proj_geom, vg)
    sid, sino = astra.create_sino(np.asarray(x, np.float32), pid)
    bid, bp = astra.create_backprojection(np.asarray(y, np.float32), pid)
    astra.data2d.delete([sid, bid])
    astra.projector.delete(pid)
    return sino, bp


# --- ASTRA --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, r, d_od, spacing, views", [((64, 64), 96.0, 64.0, 1.5, 40), ((48, 80), 120.0, 40.0, 1.0, 37)]
)
def test_matches_astra_fanflat(shape, r, d_od, spacing, views, astra):
    x = phantom(shape)
    geom = FanBeamGeometry(shape, jnp.arange(views) * 2 * jnp.pi / views + 0.05, None, r, d_od, spacing)
    pg = astra.create_proj_geom("fanflat", spacing, geom.num_detectors, np.asarray(geom.angles), r, d_od)
    ours = fwd(jnp.asarray(x, jnp.float64), geom)
    line, _ = astra_fp_bp(x, ours, pg, shape, "line_fanflat")
    strip, strip_bp = astra_fp_bp(x, ours, pg, shape, "strip_fanflat")
    assert rel(ours, line) < 0.01  # measured 0.0074 / 0.0071
    assert rel(ours, strip) < 0.01  # measured 0.0058 / 0.0034
    # Backprojections of a smooth sinogram: kernels differ more here (ASTRA's own parallel `line` and `linear`
    # backprojections differ by 1-6%); a flipped axis or a scale error would be O(1).
    assert rel(adj(ours, geom), strip_bp) < 0.02  # measured 0.013 / 0.009


@pytest.mark.filterwarnings("ignore:.*truncated")
def test_vector_geometry_matches_astra_fanflat_vec(astra):
    shape = (48, 56)
    base = FanBeamGeometry.uniform(shape, 24, 90.0, 50.0, num_detectors=110, detector_spacing=1.2).to_vec()
    rng = np.random.default_rng(0)
    # Per-view source and detector wobble, detector tilt and bin-spacing changes.
    tilt = rng.uniform(-0.2, 0.2, 24)
    c, s = np.cos(tilt), np.sin(tilt)
    u = np.asarray(base.detector_u) * rng.uniform(0.9, 1.1, (24, 1))
    u = np.stack([c * u[:, 0] - s * u[:, 1], s * u[:, 0] + c * u[:, 1]], 1)
    geom = FanBeamVecGeometry(shape, np.asarray(base.source) + rng.normal(0, 3, (24, 2)),
                              np.asarray(base.detector_centre) + rng.normal(0, 3, (24, 2)), u, 110)
    pg = astra.create_proj_geom("fanflat_vec", 110, np.asarray(geom.astra_vectors(), np.float64))
    x = phantom(shape)
    ours = fwd(jnp.asarray(x, jnp.float64), geom)
    line, _ = astra_fp_bp(x, ours, pg, shape, "line_fanflat")
    assert rel(ours, line) < 0.01


def test_to_vec_projects_identically():
    geom = FanBeamGeometry.uniform((24, 32), 12, 50.0, 30.0, detector_spacing=1.3, detector_offset=1.7)
    x = jnp.asarray(phantom((24, 32)), jnp.float64)
    y = jax.random.normal(jax.random.PRNGKey(0), geom.sinogram_shape, jnp.float64)
    vec = geom.to_vec()
    np.testing.assert_allclose(project(x, vec), project(x, geom), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(backproject(y, vec), backproject(y, geom), rtol=1e-12, atol=1e-11)


# --- Analytic sinograms ----------------------------------------------------------------------------------


def _refined(n, detector):
    """The same physical scan at every resolution: distances and flat spacing scale with n (pixel units)."""
    spacing = 2.0 * n / 64 if detector == "flat" else 0.012
    angles = jnp.linspace(0.05, 2 * jnp.pi, 23, endpoint=False, dtype=jnp.float64)
    return FanBeamGeometry((n, n), angles, 65, 1.5 * n, 1.0 * n, spacing, detector=detector)


@pytest.mark.filterwarnings("ignore:.*truncated")  # the same 65-bin detector at every resolution
@pytest.mark.parametrize("detector", ["flat", "curved"])
def test_second_order_convergence_on_a_smooth_phantom(detector):
    # An off-centre Gaussian: its integral along the line {n.z = s} is sqrt(2 pi) sigma exp(-(s - n.c)^2 / 2 sigma^2).
    x0, y0, sigma = 0.23, -0.17, 0.15
    errors = []
    for n in (32, 64, 128):
        h = n / 2
        cols, rows = (jnp.arange(n) - (n - 1) / 2) / h, ((n - 1) / 2 - jnp.arange(n)) / h
        img = jnp.exp(-((cols[None, :] - x0) ** 2 + (rows[:, None] - y0) ** 2) / (2 * sigma**2))
        geom = _refined(n, detector)
        e = geom.ray_directions()
        normal = jnp.stack([e[..., 1], -e[..., 0]], -1)
        s = jnp.einsum("vdk,vk->vd", normal, geom.source_positions()) / h
        s0 = normal[..., 0] * x0 + normal[..., 1] * y0
        exact = jnp.sqrt(2 * jnp.pi) * sigma * jnp.exp(-((s - s0) ** 2) / (2 * sigma**2)) * h
        errors.append(rel(fwd(img, geom), exact))
    rates = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all(rates > 1.9), (errors, rates)
    assert errors[-1] < 1e-3


@pytest.mark.filterwarnings("ignore:.*truncated")
# flat: also checked against ASTRA (astra marker); curved: its only analytic reference stays in the default run
@pytest.mark.parametrize("detector", [pytest.param("flat", marks=pytest.mark.slow), "curved"])
def test_converges_to_the_analytic_ellipse_sinogram(detector):
    from jaxrecon.phantoms import ellipse_sinogram, random_ellipse_phantom, rasterize, shepp_logan_ellipses

    for ph in (shepp_logan_ellipses(jnp.float64), random_ellipse_phantom(jax.random.PRNGKey(3), (64, 64), "dival")):
        errors = []
        for n in (32, 64, 128):
            geom = _refined(n, detector)
            errors.append(rel(fwd(rasterize(ph, (n, n), supersample=2), geom), ellipse_sinogram(ph, geom)))
        assert errors[0] > errors[1] > errors[2], errors
        assert errors[2] < errors[0] / 3 and errors[2] < 0.05, errors  # first order: edges


# --- Adjoint ----------------------------------------------------------------------------------------------


def _perturbed_vec(shape, views, num_det, dtype):
    base = FanBeamGeometry.uniform(shape, views, 45.0, 35.0, num_detectors=num_det, detector_spacing=1.1,
                                   dtype=dtype).to_vec()
    noise = jax.random.normal(jax.random.PRNGKey(7), (3, views, 2), dtype)
    return FanBeamVecGeometry(shape, base.source + 2 * noise[0], base.detector_centre + 2 * noise[1],
                              base.detector_u * (1 + 0.1 * noise[2]), num_det)


def _dot_geometries(dtype):
    angles = jax.random.uniform(jax.random.PRNGKey(1), (17,), dtype, 0, 2 * jnp.pi)
    return {
        "flat": FanBeamGeometry((32, 32), angles, None, 50.0, 30.0, 1.3, 0.7),
        "flat-dense": FanBeamGeometry((24, 40), angles[:9], None, 34.0, 60.0, 0.6, -1.1),  # rays denser than pixels
        "curved": FanBeamGeometry((33, 20), angles[:10], None, 40.0, 25.0, 0.02, 0.01, detector="curved"),
        "vec": _perturbed_vec((20, 28), 11, 90, dtype),
    }


@pytest.mark.parametrize("dtype, tol", [(jnp.float32, 1e-5), (jnp.float64, 1e-12)])
@pytest.mark.parametrize("kind", ["flat", "flat-dense", "curved", "vec"])
def test_dot_test(dtype, tol, kind):
    geom = _dot_geometries(dtype)[kind]
    assert float(dot_test(XRayTransform(geom), jax.random.PRNGKey(2), dtype=dtype)) < tol


def test_adjoint_weights_match_in_float32():
    # A sparse probe: <A e_j, s> against (A^T s)_j for one pixel j and random signs s on the bins its rays
    # touch, relative to sum_i |A_ij|. Positions are computed FMA-invariantly (jaxrecon/operators/_exact.py),
    # so the float32 forward and adjoint weights agree to the rounding of the sums: measured 2e-9 to 9e-9.
    # With XLA free to fuse the geometry's multiply-adds into FMAs differently in the two programs it was
    # 4e-9 to 2.9e-7 (and 3e-7 to 1e-6 at 256 x 256): weights differing by ~ulp(position).
    geom = FanBeamGeometry.uniform((64, 64), 64, 96.0, 64.0, detector_spacing=1.5, dtype=jnp.float32)
    rng = np.random.default_rng(0)
    for r, c in ((5, 44), (32, 31), (60, 2), (21, 12)):
        x = jnp.zeros((64, 64), jnp.float32).at[r, c].set(1.0)
        col = np.asarray(fwd(x, geom), np.float64)
        signs = rng.choice([-1.0, 1.0], col.shape) * (col != 0)
        lhs = float((col * signs).sum())
        rhs = float(adj(jnp.asarray(signs, jnp.float32), geom)[r, c])
        assert abs(lhs - rhs) < 3e-8 * np.abs(col).sum(), (lhs, rhs, np.abs(col).sum())


@pytest.mark.slow
def test_transpose_and_grad_use_the_exact_adjoint():
    geom = FanBeamGeometry.uniform((24, 24), 10, 40.0, 30.0, detector="curved")
    x = jax.random.normal(jax.random.PRNGKey(0), (24, 24), jnp.float64)
    y = jax.random.normal(jax.random.PRNGKey(1), geom.sinogram_shape, jnp.float64)
    bp = backproject(y, geom)
    np.testing.assert_allclose(jax.linear_transpose(lambda v: project(v, geom), x)(y)[0], bp, atol=1e-12)
    np.testing.assert_allclose(jax.grad(lambda v: jnp.vdot(project(v, geom), y))(x), bp, atol=1e-12)
    np.testing.assert_allclose(jax.grad(lambda w: jnp.vdot(backproject(w, geom), x))(y), project(x, geom), atol=1e-12)


def test_no_scatter_in_gradient():
    geom = FanBeamGeometry.uniform((32, 32), 8, 50.0, 30.0, dtype=jnp.float32)
    hlo = jax.jit(jax.grad(lambda x, g: jnp.sum(project(x, g) ** 2))).lower(jnp.ones((32, 32)), geom).as_text()
    assert "scatter" not in hlo.replace("/scatter", "")


# --- Geometry derivatives ---------------------------------------------------------------------------------


def _fd(f, a, i, eps=1e-6):
    e = jnp.zeros_like(a).at[i].set(eps)
    return (f(a + e) - f(a - e)) / (2 * eps)


@pytest.mark.parametrize("detector", ["flat", "curved"])
def test_grad_wrt_distances_spacing_offset_vs_finite_differences(detector):
    shape = (20, 24)
    angles = jnp.linspace(0.1, 6.0, 7, dtype=jnp.float64)
    x = jax.random.normal(jax.random.PRNGKey(0), shape, jnp.float64)
    y = jax.random.normal(jax.random.PRNGKey(1), (7, 45), jnp.float64)
    scale = 1.0 if detector == "flat" else 0.02  # curved spacing/offset are angles

    def f(p):  # p = (source_origin, origin_detector, spacing, offset)
        geom = FanBeamGeometry(shape, angles, 45, p[0], p[1], p[2] * scale, p[3] * scale, detector=detector)
        return jnp.vdot(project(x, geom, unroll=1), y)

    p = jnp.array([41.3, 27.1, 1.07, 0.31])
    g = jax.jit(jax.grad(f))(p)
    f_jit = jax.jit(f)
    for i in range(4):
        np.testing.assert_allclose(g[i], _fd(f_jit, p, i), rtol=1e-6, atol=1e-8 * float(jnp.abs(g).max()))


@pytest.mark.parametrize("which", ["project", "backproject"])
def test_grad_wrt_angles_vs_finite_differences(which):
    shape = (20, 18)
    x = jax.random.normal(jax.random.PRNGKey(0), shape, jnp.float64)
    y = jax.random.normal(jax.random.PRNGKey(1), (6, 52), jnp.float64)
    taps = FanBeamGeometry(shape, jnp.zeros(1), 52, 35.0, 25.0).adjoint_taps

    def f(a):
        geom = FanBeamGeometry(shape, a, 52, 35.0, 25.0, adjoint_taps=taps)
        if which == "project":
            return jnp.vdot(project(x, geom, unroll=1), y)
        return jnp.vdot(backproject(y, geom, unroll=1), x)

    angles = jnp.linspace(0.15, 5.9, 6, dtype=jnp.float64)
    g = jax.jit(jax.grad(f))(angles)
    f_jit = jax.jit(f)
    for i in range(6):
        np.testing.assert_allclose(g[i], _fd(f_jit, angles, i), rtol=1e-6, atol=1e-6 * float(jnp.abs(g).max()))


def test_jvp_wrt_vector_geometry():
    geom = _perturbed_vec((16, 20), 5, 72, jnp.float64)
    x = jax.random.normal(jax.random.PRNGKey(0), geom.shape, jnp.float64)
    d_src = jax.random.normal(jax.random.PRNGKey(1), geom.source.shape, jnp.float64)

    def f(src):
        return project(x, FanBeamVecGeometry(geom.shape, src, geom.detector_centre, geom.detector_u, 72,
                                             adjoint_taps=geom.adjoint_taps), unroll=1)

    f_jit = jax.jit(f)
    tangent = jax.jit(lambda s: jax.jvp(f, (s,), (d_src,))[1])(geom.source)
    fd = (f_jit(geom.source + 1e-6 * d_src) - f_jit(geom.source - 1e-6 * d_src)) / 2e-6
    np.testing.assert_allclose(tangent, fd, rtol=1e-5, atol=1e-6 * float(jnp.abs(fd).max()))


# --- vmap -------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_vmap_over_images_and_geometries_equals_stacking():
    shape = (20, 20)
    geom = FanBeamGeometry.uniform(shape, 9, 35.0, 25.0)
    xs = jax.random.normal(jax.random.PRNGKey(0), (3,) + shape, jnp.float64)
    ys = jax.random.normal(jax.random.PRNGKey(1), (3,) + geom.sinogram_shape, jnp.float64)
    # One shared geometry: the multi-image kernels.
    np.testing.assert_allclose(jax.vmap(fwd, (0, None))(xs, geom), np.stack([fwd(x, geom) for x in xs]),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(jax.vmap(adj, (0, None))(ys, geom), np.stack([adj(y, geom) for y in ys]),
                               rtol=1e-12, atol=1e-12)
    # A batch of geometries (angles and distances), built by vmapping the constructor.
    angle_sets = jnp.stack([geom.angles, geom.angles + 0.3, geom.angles * 0.5])
    dists = jnp.array([35.0, 41.0, 38.0])
    make = lambda a, r: FanBeamGeometry(shape, a, geom.num_detectors, r, 25.0, adjoint_taps=geom.adjoint_taps)
    geoms = jax.vmap(make)(angle_sets, dists)
    singles = [make(a, r) for a, r in zip(angle_sets, dists)]
    np.testing.assert_allclose(jax.vmap(fwd, (None, 0))(xs[0], geoms), np.stack([fwd(xs[0], g) for g in singles]),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(jax.vmap(adj)(ys, geoms), np.stack([adj(y, g) for y, g in zip(ys, singles)]),
                               rtol=1e-12, atol=1e-12)
    # Per-sample gradients under vmap.
    loss = lambda x: jnp.sum(project(x, geom) ** 2)
    np.testing.assert_allclose(jax.jit(jax.vmap(jax.grad(loss)))(xs), np.stack([jax.grad(loss)(x) for x in xs]),
                               rtol=1e-10, atol=1e-10)


def test_float32_batched_matches_single():
    geom = FanBeamGeometry.uniform((16, 24), 7, 30.0, 20.0, detector="curved", dtype=jnp.float32)
    xs = jax.random.normal(jax.random.PRNGKey(0), (4, 16, 24), jnp.float32)
    np.testing.assert_allclose(jax.vmap(fwd, (0, None))(xs, geom), np.stack([fwd(x, geom) for x in xs]),
                               rtol=1e-5, atol=1e-5)


# --- Traced geometries, taps ------------------------------------------------------------------------------


def test_traced_distances_need_adjoint_taps_for_the_adjoint():
    shape = (16, 16)
    x = jnp.ones(shape, jnp.float64)
    angles = jnp.linspace(0, 6, 5)
    project_r = jax.jit(lambda r: project(x, FanBeamGeometry(shape, angles, 40, r, 20.0)))
    assert project_r(35.0).shape == (5, 40)
    with pytest.raises(ValueError, match="adjoint_taps"):
        jax.jit(lambda r: backproject(jnp.ones((5, 40)), FanBeamGeometry(shape, angles, 40, r, 20.0)))(35.0)
    with pytest.raises(ValueError, match="adjoint_taps"):
        jax.jit(jax.grad(lambda v, r: jnp.sum(project(v, FanBeamGeometry(shape, angles, 40, r, 20.0)))))(x, 35.0)
    taps = FanBeamGeometry(shape, angles, 40, 35.0, 20.0).adjoint_taps
    ok = jax.jit(lambda r: backproject(jnp.ones((5, 40)), FanBeamGeometry(shape, angles, 40, r, 20.0, adjoint_taps=taps)))
    np.testing.assert_allclose(ok(35.0), backproject(jnp.ones((5, 40)), FanBeamGeometry(shape, angles, 40, 35.0, 20.0)),
                               rtol=1e-12)
    # A source moved closer needs more taps than the geometry carries: refused, eagerly or under jit.
    closer = eqx.tree_at(lambda g: g.source_origin, FanBeamGeometry(shape, angles, 40, 60.0, 20.0), jnp.asarray(13.0))
    with pytest.raises(ValueError, match="more adjoint taps"):
        backproject(jnp.ones((5, 40)), closer)
    with pytest.raises(Exception, match="more adjoint taps"):
        jax.jit(lambda g: backproject(jnp.ones((5, 40)), g))(closer).block_until_ready()


# --- Dispatch, operator, errors ---------------------------------------------------------------------------


def test_parallel_dispatch_is_radon():
    geom = ParallelBeamGeometry.uniform((16, 20), 7, dtype=jnp.float64)
    x = jax.random.normal(jax.random.PRNGKey(0), (16, 20), jnp.float64)
    y = jax.random.normal(jax.random.PRNGKey(1), geom.sinogram_shape, jnp.float64)
    np.testing.assert_array_equal(project(x, geom), radon(x, geom))
    np.testing.assert_array_equal(backproject(y, geom), parallel_backproject(y, geom))
    op, ref = XRayTransform(geom), RadonTransform(geom)
    np.testing.assert_array_equal(op(x), ref(x))
    np.testing.assert_array_equal(op.T(y), ref.T(y))


def test_operator_shapes_and_errors():
    geom = FanBeamGeometry.uniform((30, 20), 7, 40.0, 30.0)
    op = XRayTransform(geom)
    assert op.in_shape == (30, 20) and op.out_shape == geom.sinogram_shape
    assert op(jnp.ones((30, 20))).shape == geom.sinogram_shape and op.T(jnp.ones(op.out_shape)).shape == (30, 20)
    with pytest.raises(ValueError, match=r"expects an image of shape \(30, 20\), got \(20, 30\)"):
        project(jnp.ones((20, 30)), geom)
    with pytest.raises(ValueError, match=r"expects a sinogram of shape \(7, \d+\), got \(7, 3\)"):
        backproject(jnp.ones((7, 3)), geom)
    with pytest.raises(TypeError, match="floating-point"):
        project(jnp.ones((30, 20), jnp.int32), geom)
    with pytest.raises(TypeError, match="ParallelBeamGeometry, FanBeamGeometry, FanBeamVecGeometry, ConeBeamGeometry, "
                       "HelicalConeBeamGeometry, ConeBeamVecGeometry, Parallel3DGeometry or Parallel3DVecGeometry, got tuple"):
        project(jnp.ones((30, 20)), (30, 20))
    with pytest.raises(TypeError, match="got tuple"):
        backproject(jnp.ones((7, 3)), (30, 20))
    with pytest.raises(TypeError, match="got dict"):
        XRayTransform({})
