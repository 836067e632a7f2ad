"""Centre-of-rotation estimation: sinograms with a known detector offset."""

import jax
import numpy as np
import pytest

from jaxrecon.adapt import estimate_centre, with_centre
from jaxrecon.operators import ParallelBeamGeometry, gaussian_noise, radon
from jaxrecon.phantoms import ellipse_sinogram, shepp_logan, shepp_logan_ellipses

GEOM = ParallelBeamGeometry.uniform((48, 48), 60, 75)
_estimate = jax.jit(estimate_centre)


@pytest.mark.parametrize("offset", [-2.3, 0.0, 0.3, 1.7])
def test_recovers_a_known_offset(offset):
    truth = with_centre(GEOM, offset)
    # the discrete model: measured errors <= 3e-3 px
    assert float(_estimate(radon(shepp_logan(48), truth), GEOM)) == pytest.approx(offset, abs=1e-2)
    # exact line integrals of the continuous phantom, point-sampled at the bin centres: the skull's sharp
    # edges make the centroids depend on the sampling phase (measured errors up to 0.145 px)
    y = ellipse_sinogram(shepp_logan_ellipses(), truth)
    assert float(_estimate(y, GEOM)) == pytest.approx(offset, abs=0.2)
    noisy = gaussian_noise(jax.random.key(0), y, 0.05)
    assert float(_estimate(noisy, GEOM)) == pytest.approx(offset, abs=0.25)


def test_spacing_and_errors():
    geom = ParallelBeamGeometry.uniform((32, 32), 30, 40, detector_spacing=1.25)
    y = radon(shepp_logan(32), with_centre(geom, 0.8))
    assert float(estimate_centre(y, geom)) == pytest.approx(0.8, abs=0.03)  # measured 0.783: coarser bins
    with pytest.raises(ValueError, match=r"sinogram of shape \(30, 40\)"):
        estimate_centre(np.ones((30, 41)), geom)
