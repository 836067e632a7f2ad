"""Exact fan-beam sinograms of ellipse phantoms (flat and curved detectors, vector geometries)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrecon.operators import FanBeamGeometry, ParallelBeamGeometry
from jaxrecon.phantoms import EllipsePhantom, ellipse_sinogram, random_ellipse_phantom


@pytest.mark.parametrize("detector", ["flat", "curved"])
def test_centred_disk_chords(detector):
    # A disk of radius 10 px at the centre of a 40 x 40 image: a ray at distance q from the centre has chord
    # 2 sqrt(100 - q^2); q = R |sin(gamma)| for fan angle gamma.
    disk = EllipsePhantom([[0.0, 0.0]], [[0.5, 0.5]], [0.0], [1.0])
    spacing = 1.0 if detector == "flat" else 0.01
    geom = FanBeamGeometry.uniform((40, 40), 5, 60.0, 40.0, detector_spacing=spacing, detector=detector)
    q = 60.0 * np.abs(np.sin(np.asarray(geom.fan_angles())))
    expected = 2 * np.sqrt(np.maximum(100 - q**2, 0))
    np.testing.assert_allclose(ellipse_sinogram(disk, geom), np.broadcast_to(expected, geom.sinogram_shape), atol=1e-9)


@pytest.mark.parametrize("detector", ["flat", "curved"])
def test_each_fan_ray_is_the_parallel_ray_with_its_normal_and_offset(detector):
    ph = random_ellipse_phantom(jax.random.PRNGKey(0), (32, 48), "dival", dtype=jnp.float64)
    spacing = 1.3 if detector == "flat" else 0.015
    geom = FanBeamGeometry.uniform((32, 48), 6, 70.0, 30.0, num_detectors=74 if detector == "flat" else 62,
                                   detector_spacing=spacing, detector_offset=0.3 * spacing, detector=detector)
    fan = np.asarray(ellipse_sinogram(ph, geom))
    e, src = geom.ray_directions(), geom.source_positions()
    for v, d in ((0, 3), (2, 40), (5, 61), (3, 30)):
        normal = jnp.array([e[v, d, 1], -e[v, d, 0]])  # the parallel convention: e = (-sin, cos), n = (cos, sin)
        theta = jnp.arctan2(normal[1], normal[0])
        s = normal @ src[v]
        par = ParallelBeamGeometry((32, 48), theta[None], 1, detector_offset=s)
        np.testing.assert_allclose(fan[v, d], ellipse_sinogram(ph, par)[0, 0], rtol=1e-10, atol=1e-10)


@pytest.mark.slow
def test_vector_geometry_and_vmap_and_grad():
    ph = random_ellipse_phantom(jax.random.PRNGKey(1), (32, 32), "adler2018", dtype=jnp.float64)
    geom = FanBeamGeometry.uniform((32, 32), 8, 50.0, 30.0, detector_spacing=1.2)
    np.testing.assert_allclose(ellipse_sinogram(ph, geom.to_vec()), ellipse_sinogram(ph, geom), rtol=1e-10, atol=1e-10)
    angle_sets = jnp.stack([geom.angles, geom.angles + 0.2])
    geoms = jax.vmap(lambda a: geom.with_angles(a))(angle_sets)
    np.testing.assert_allclose(jax.vmap(ellipse_sinogram, (None, 0))(ph, geoms),
                               np.stack([ellipse_sinogram(ph, geom.with_angles(a)) for a in angle_sets]), rtol=1e-12)
    f = lambda r: jnp.sum(ellipse_sinogram(ph, FanBeamGeometry((32, 32), geom.angles, geom.num_detectors, r, 30.0, 1.2)) ** 2)
    g = jax.grad(f)(50.0)
    np.testing.assert_allclose(g, (f(50.0 + 1e-5) - f(50.0 - 1e-5)) / 2e-5, rtol=1e-5)


def test_errors():
    ph = EllipsePhantom([[0.0, 0.0]], [[0.5, 0.5]], [0.0], [1.0])
    geoms = jax.vmap(lambda a: FanBeamGeometry((16, 16), a, 40, 40.0, 20.0))(jnp.ones((2, 3)))
    with pytest.raises(ValueError, match=r"geom.angles must have shape \(num_angles,\), got \(2, 3\)"):
        ellipse_sinogram(ph, geoms)
    with pytest.raises(TypeError, match="FanBeamGeometry or FanBeamVecGeometry"):
        ellipse_sinogram(ph, "fan")
