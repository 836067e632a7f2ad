"""Parametric operator families: the nominal parameter gives the base operator, the parameter lands in the
right place of the geometry (checked against operators built independently), derivatives in the
parameter against central finite differences, scipy's wrap-around convolution for the blur."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage as ndi

from jaxrecon.adapt.operators import (
    AngleOffset,
    BlurWidth,
    CentreShift,
    Combined,
    DetectorSpacing,
    gaussian_kernel_jax,
)
from jaxrecon.operators import ParallelBeamGeometry, RadonTransform, gaussian_kernel
from jaxrecon.phantoms import shepp_logan

N = 16
GEOM = ParallelBeamGeometry.uniform((N, N), 6)
X = shepp_logan(N, dtype=jnp.float64) + 0.1 * jax.random.normal(jax.random.key(3), (N, N))
W = jax.random.normal(jax.random.key(4), GEOM.sinogram_shape)


def _fd(f, p, direction, h=1e-6):
    return (f(p + h * direction) - f(p - h * direction)) / (2 * h)


def _close(a, b, rtol):
    a, b = np.asarray(a), np.asarray(b)
    assert np.linalg.norm(a - b) <= rtol * np.linalg.norm(b), (np.linalg.norm(a - b), np.linalg.norm(b))


@pytest.mark.parametrize(
    "family",
    [AngleOffset(GEOM), AngleOffset(GEOM, per_angle=True), CentreShift(GEOM), DetectorSpacing(GEOM)],
    ids=["angle", "angle-per-view", "shift", "spacing"],
)
@pytest.mark.slow
def test_initial_is_base_and_derivative_matches_fd(family):
    base = RadonTransform(GEOM)
    np.testing.assert_array_equal(family.operator(family.initial)(X), base(X))
    np.testing.assert_array_equal(family.operator(family.initial).T(W), base.T(W))
    rng = np.random.default_rng(0)
    p = family.initial + 0.03 + 0.01 * rng.standard_normal(family.initial.shape)  # generic, off the kinks
    v = jnp.asarray(rng.standard_normal(family.initial.shape))
    fwd = jax.jit(lambda p: family.operator(p)(X))
    _, jv = jax.jvp(fwd, (p,), (v,))
    _close(jv, _fd(fwd, p, v), 1e-5)
    # reverse mode (what calibration uses) agrees with forward mode
    g = jax.grad(lambda p: jnp.vdot(W, fwd(p)))(p)
    np.testing.assert_allclose(jnp.vdot(g, v), jnp.vdot(W, jv), rtol=1e-10)


def test_parameters_land_in_the_geometry():
    ang = AngleOffset(GEOM).operator(0.1)
    shifted = ParallelBeamGeometry((N, N), GEOM.angles + 0.1, GEOM.num_detectors)
    np.testing.assert_allclose(ang(X), RadonTransform(shifted)(X), rtol=1e-13, atol=1e-13)
    sh = CentreShift(GEOM).operator(0.7)
    ref = ParallelBeamGeometry((N, N), GEOM.angles, GEOM.num_detectors, detector_offset=0.7)
    np.testing.assert_allclose(sh(X), RadonTransform(ref)(X), rtol=1e-13, atol=1e-13)
    sp = DetectorSpacing(GEOM).operator(0.25)
    ref = ParallelBeamGeometry((N, N), GEOM.angles, GEOM.num_detectors, detector_spacing=1.25)
    np.testing.assert_allclose(sp(X), RadonTransform(ref)(X), rtol=1e-13, atol=1e-13)


def test_integer_centre_shift_moves_the_sinogram_by_whole_bins():
    # bin d with offset 1 sits where bin d + 1 sat with offset 0 (unit spacing): an independent check
    y0, y1 = RadonTransform(GEOM)(X), CentreShift(GEOM).operator(1.0)(X)
    np.testing.assert_allclose(y1[:, :-1], y0[:, 1:], atol=1e-12)


def test_detector_spacing_is_clipped_at_its_lower_bound():
    fam = DetectorSpacing(GEOM, min_spacing=0.6)
    assert float(fam.operator(-0.9).geom.detector_spacing) == pytest.approx(0.6)
    assert fam.base_geometry.min_detector_spacing == pytest.approx(0.6)
    assert float(jax.grad(lambda p: jnp.sum(fam.operator(p)(X)))(jnp.asarray(-0.9))) == 0.0
    with pytest.raises(ValueError, match="min_spacing"):
        DetectorSpacing(GEOM, min_spacing=1.5)


def test_blur_width_matches_scipy_and_fd():
    fam = BlurWidth((N, N), 5, sigma=1.2)
    np.testing.assert_allclose(fam.kernel(1.2), gaussian_kernel(5, 1.2, dtype=jnp.float64), rtol=1e-12)
    np.testing.assert_allclose(
        fam.operator(fam.initial)(X), ndi.convolve(np.asarray(X), np.asarray(gaussian_kernel(5, 1.2, dtype=jnp.float64)), mode="wrap"),
        atol=1e-12,
    )
    f = jax.jit(lambda s: fam.operator(s)(X))
    _, jv = jax.jvp(f, (jnp.asarray(0.9),), (jnp.asarray(1.0),))
    _close(jv, _fd(f, jnp.asarray(0.9), 1.0), 1e-7)
    # tiny widths tend to the identity, without NaN
    k = gaussian_kernel_jax(jnp.asarray(0.0), (5, 5))
    assert np.isfinite(np.asarray(k)).all() and float(k[2, 2]) == 1.0


def test_combined_equals_the_composition_and_its_gradient_matches_fd():
    blur = BlurWidth((N, N), 3, sigma=0.8)
    fam = Combined({"shift": CentreShift(GEOM), "angle": AngleOffset(GEOM), "blur": blur})
    assert set(fam.initial) == {"shift", "angle", "blur"}
    p = {"angle": jnp.asarray(0.05), "shift": jnp.asarray(-0.4), "blur": jnp.asarray(1.1)}
    ref_geom = ParallelBeamGeometry((N, N), GEOM.angles + 0.05, GEOM.num_detectors, detector_offset=-0.4)
    np.testing.assert_allclose(
        fam.operator(p)(X), RadonTransform(ref_geom)(blur.operator(1.1)(X)), rtol=1e-12, atol=1e-12
    )
    loss = jax.jit(lambda p: jnp.vdot(W, fam.operator(p)(X)))
    g = jax.grad(loss)(p)
    for name in p:
        e = {k: jnp.asarray(float(k == name)) for k in p}
        fd = (loss(jax.tree.map(lambda a, b: a + 1e-6 * b, p, e)) - loss(jax.tree.map(lambda a, b: a - 1e-6 * b, p, e))) / 2e-6
        np.testing.assert_allclose(g[name], fd, rtol=1e-5)


def test_families_are_pytrees_traced_under_jit():
    fam = CentreShift(GEOM)
    f = jax.jit(lambda fam, p: fam.operator(p)(X))
    np.testing.assert_allclose(f(fam, 0.5), fam.operator(0.5)(X), rtol=1e-13)


def test_bad_input():
    with pytest.raises(TypeError, match="ParallelBeamGeometry"):
        AngleOffset("geometry")
    with pytest.raises(ValueError, match=r"shape \(\)"):
        CentreShift(GEOM).operator(jnp.zeros(3))
    with pytest.raises(ValueError, match=r"shape \(6,\)"):
        AngleOffset(GEOM, per_angle=True).operator(0.1)
    with pytest.raises(TypeError, match="array"):
        CentreShift(GEOM).operator({"shift": 1.0})
    with pytest.raises(ValueError, match="sigma > 0"):
        BlurWidth((N, N), 5, sigma=0.0)
    with pytest.raises(ValueError, match="kernel_size"):
        BlurWidth((N, N), 17)
    with pytest.raises(ValueError, match="keys"):
        Combined({"a": CentreShift(GEOM)}).operator({"b": 0.0})
    other = ParallelBeamGeometry.uniform((N, N), 5)
    with pytest.raises(ValueError, match="share one base geometry"):
        Combined({"a": CentreShift(GEOM), "b": AngleOffset(other)})
    with pytest.raises(ValueError, match="blurs on images of shape"):
        Combined({"a": CentreShift(GEOM), "b": BlurWidth((8, 8), 3)})
