"""FanBeamGeometry / FanBeamVecGeometry: conventions (ASTRA's fanflat), short scans, vector form, errors."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrecon.operators import FanBeamGeometry, FanBeamVecGeometry


def test_uniform_full_and_short_scans():
    full = FanBeamGeometry.uniform((32, 32), 40, 60.0, 40.0)
    np.testing.assert_allclose(full.angles, np.arange(40) * 2 * np.pi / 40, rtol=1e-12)
    short = FanBeamGeometry.uniform((32, 32), 40, 60.0, 40.0, scan="short")
    span = np.pi + 2 * float(short.half_fan_angle())
    np.testing.assert_allclose(short.angles, np.arange(40) * span / 40, rtol=1e-12)
    # The half fan angle reaches the outer edge of the outermost bin: tan(G) = (D/2) spacing / (R + D_od).
    np.testing.assert_allclose(float(short.half_fan_angle()), np.arctan(short.num_detectors / 2 / 100.0), rtol=1e-12)
    assert short.half_fan_angle() > jnp.max(jnp.abs(short.fan_angles()))


def test_default_detector_sees_the_image_without_warning():
    for detector in ("flat", "curved"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            g = FanBeamGeometry.uniform((40, 24), 8, 50.0, 30.0, detector=detector)
        alpha = np.arcsin(np.hypot(40, 24) / 2 / 50.0)
        lo, hi = (float(v) for v in g._fan_edges())
        assert lo <= -alpha and hi >= alpha
    assert FanBeamGeometry.uniform((40, 24), 8, 50.0, 30.0, detector="curved").detector_spacing == pytest.approx(1 / 80)


def test_to_vec_matches_astra_geom_2vec(astra):
    angles = np.array([0.0, 0.3, 2.0, 4.5])
    geom = FanBeamGeometry((32, 32), angles, 70, 60.0, 40.0, detector_spacing=1.3)
    pg = astra.create_proj_geom("fanflat", 1.3, 70, angles, 60.0, 40.0)
    np.testing.assert_allclose(geom.to_vec().astra_vectors(), astra.geom_2vec(pg)["Vectors"], atol=1e-12)
    # The offset moves the detector along its axis u = (cos, sin).
    shifted = FanBeamGeometry((32, 32), angles, 70, 60.0, 40.0, detector_spacing=1.3, detector_offset=2.5).to_vec()
    u = np.stack([np.cos(angles), np.sin(angles)], 1)
    np.testing.assert_allclose(shifted.detector_centre - geom.to_vec().detector_centre, 2.5 * u, atol=1e-12)
    back = FanBeamVecGeometry.from_astra((32, 32), astra.geom_2vec(pg)["Vectors"], 70)
    np.testing.assert_allclose(back.source, geom.to_vec().source, atol=1e-12)


@pytest.mark.filterwarnings("ignore:.*truncated")  # 5 bins: a small detector on purpose
def test_curved_fan_angles_and_rays():
    g = FanBeamGeometry((16, 16), jnp.array([0.0, 1.0]), 5, 40.0, 20.0, detector_spacing=0.02, detector_offset=0.01,
                        detector="curved")
    np.testing.assert_allclose(g.fan_angles(), 0.01 + 0.02 * np.arange(-2, 3), rtol=1e-12)
    e = g.ray_directions()
    central = np.array([[-np.sin(b), np.cos(b)] for b in (0.0, 1.0)])
    np.testing.assert_allclose(np.einsum("vdk,vk->vd", e, central), np.cos(g.fan_angles())[None].repeat(2, 0), rtol=1e-12)
    # A flat bin's ray has fan angle arctan(t / (R + D_od)) in the same sense.
    flat = FanBeamGeometry((16, 16), jnp.array([0.7]), 5, 40.0, 20.0, detector_spacing=2.0)
    vec = flat.to_vec()
    t = (np.arange(5) - 2) * 2.0
    expected = vec.detector_centre[0] + t[:, None] * vec.detector_u[0] / 2.0 - vec.source[0]
    np.testing.assert_allclose(flat.ray_directions()[0], expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-12)
    with pytest.raises(ValueError, match="flat detector"):
        g.to_vec()


def test_vmapped_construction_and_with_angles():
    geoms = jax.vmap(lambda a: FanBeamGeometry((16, 16), a, 40, 40.0, 20.0))(jnp.zeros((3, 5)))
    assert geoms.angles.shape == (3, 5) and geoms.adjoint_taps is not None  # the taps need the distances only
    g = FanBeamGeometry.uniform((16, 16), 6, 40.0, 20.0)
    h = g.with_angles(g.angles[:2])
    assert h.sinogram_shape == (2, g.num_detectors) and h.adjoint_taps == g.adjoint_taps


def test_traced_distances_leave_adjoint_taps_unknown():
    seen = []

    def build(r):
        seen.append(FanBeamGeometry((16, 16), jnp.zeros(3), 40, r, 20.0).adjoint_taps)
        return r

    jax.jit(build)(40.0)
    assert seen == [None]
    assert FanBeamGeometry((16, 16), jnp.zeros(3), 40, 40.0, 20.0).adjoint_taps >= 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(source_origin=-5.0), "source_origin must be positive, got -5.0"),
        (dict(source_origin=12.0), r"source_origin must exceed 12.02.* got 12.0"),
        (dict(origin_detector=0.0), "origin_detector must be positive, got 0.0"),
        (dict(detector_spacing=-1.0), "detector_spacing must be positive, got -1.0"),
        (dict(detector_offset=np.inf), "detector_offset must be finite, got inf"),
        (dict(source_origin=np.nan), "source_origin must be finite, got nan"),
        (dict(angles=jnp.zeros(0)), "non-empty"),
        (dict(angles=jnp.array([0.0, jnp.nan])), "angles must be finite"),
        (dict(detector="round"), r"detector must be one of \('flat', 'curved'\), got 'round'"),
        (dict(num_detectors=0), "num_detectors must be positive, got 0"),
        (dict(detector="curved", detector_spacing=0.1, num_detectors=40), "within \\+-90 degrees"),
    ],
)
def test_bad_geometry(kwargs, message):
    args = dict(shape=(16, 16), angles=jnp.zeros(3), num_detectors=40, source_origin=40.0, origin_detector=20.0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        FanBeamGeometry(**args)


def test_small_detector_warns():
    with pytest.warns(UserWarning, match="projections are truncated"):
        FanBeamGeometry((32, 32), jnp.zeros(3), 10, 60.0, 40.0)
    src = jnp.array([[0.0, -60.0]])
    with pytest.warns(UserWarning, match="view 0 .* truncated"):
        FanBeamVecGeometry((32, 32), src, jnp.array([[0.0, 40.0]]), jnp.array([[1.0, 0.0]]), 10)


def test_bad_vector_geometry():
    src, centre, u = jnp.array([[0.0, -60.0]]), jnp.array([[0.0, 40.0]]), jnp.array([[1.0, 0.0]])
    ok = FanBeamVecGeometry((32, 32), src, centre, u, 100)
    assert ok.sinogram_shape == (1, 100) and ok.adjoint_taps >= 1
    with pytest.raises(ValueError, match="view 0 has its source at distance 20"):
        FanBeamVecGeometry((32, 32), jnp.array([[0.0, -20.0]]), centre, u, 100)
    with pytest.raises(ValueError, match="parallel to a ray through the image"):
        FanBeamVecGeometry((32, 32), src, centre, jnp.array([[0.0, 1.0]]), 100)
    with pytest.raises(ValueError, match="face the image"):
        FanBeamVecGeometry((32, 32), src, jnp.array([[0.0, -100.0]]), u, 100)
    with pytest.raises(ValueError, match="must be finite"):
        FanBeamVecGeometry((32, 32), src.at[0, 0].set(jnp.inf), centre, u, 100)
    with pytest.raises(ValueError, match=r"shape \(num_angles, 2\)"):
        FanBeamVecGeometry((32, 32), src[0], centre, u, 100)
    with pytest.raises(ValueError, match="detector_u must be non-zero"):
        FanBeamVecGeometry((32, 32), src, centre, jnp.zeros((1, 2)), 100)


def test_uniform_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_angles must be a positive int, got 0"):
        FanBeamGeometry.uniform((8, 8), 0, 40.0, 20.0)
    with pytest.raises(ValueError, match="scan must be 'full' or 'short', got 'half'"):
        FanBeamGeometry.uniform((8, 8), 4, 40.0, 20.0, scan="half")
