"""PSNR / SSIM against scikit-image, relative error and residual against numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from jaxrecon.metrics import psnr, relative_error, residual, ssim
from jaxrecon.operators.matrix import MatrixOperator


def _sk_ssim(x, ref, data_range):
    return structural_similarity(
        np.asarray(ref), np.asarray(x), data_range=data_range, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False,
    )


def _pairs():
    """(x, ref) pairs: noise, smooth + noise, blurred, shifted range, non-square, minimal size."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :40] / 40.0
    smooth = np.sin(3 * xx) * np.cos(2 * yy) + 0.5 * (xx > 0.5)
    return [
        ("noise", rng.random((32, 32)), rng.random((32, 32))),
        ("smooth+noise", smooth + 0.1 * rng.standard_normal(smooth.shape), smooth),
        ("scaled", 3.0 * smooth - 7.0, 2.5 * smooth - 7.2),
        ("blur", np.roll(smooth, 1, axis=0) * 0.5 + smooth * 0.5, smooth),
        ("minimal", rng.random((11, 13)), rng.random((11, 13))),
        ("uint8-like", np.round(255 * rng.random((20, 24))), np.round(255 * rng.random((20, 24)))),
    ]


@pytest.mark.parametrize("name,x,ref", _pairs(), ids=[p[0] for p in _pairs()])
@pytest.mark.parametrize("data_range", [None, 1.0, 255.0])
def test_psnr_ssim_match_skimage_float64(name, x, ref, data_range):
    L = ref.max() - ref.min() if data_range is None else data_range
    assert float(psnr(jnp.asarray(x), jnp.asarray(ref), data_range)) == pytest.approx(
        peak_signal_noise_ratio(ref, x, data_range=L), abs=1e-10
    )
    assert abs(float(ssim(jnp.asarray(x), jnp.asarray(ref), data_range)) - _sk_ssim(x, ref, L)) < 1e-10


@pytest.mark.parametrize("name,x,ref", _pairs(), ids=[p[0] for p in _pairs()])
def test_psnr_ssim_match_skimage_float32(name, x, ref):
    x32, r32 = x.astype(np.float32), ref.astype(np.float32)
    L = float(r32.max() - r32.min())
    p, s = psnr(jnp.asarray(x32), jnp.asarray(r32)), ssim(jnp.asarray(x32), jnp.asarray(r32))
    assert p.dtype == jnp.float32 and s.dtype == jnp.float32
    # against the float64 reference: float32 rounding only
    assert float(p) == pytest.approx(peak_signal_noise_ratio(ref, x, data_range=L), abs=1e-3)
    assert abs(float(s) - _sk_ssim(x, ref, L)) < 1e-4


def test_identical_images():
    ref = jnp.asarray(np.random.default_rng(1).random((16, 16)))
    assert float(ssim(ref, ref)) == pytest.approx(1.0, abs=1e-14)
    assert float(psnr(ref, ref)) == np.inf
    assert float(relative_error(ref, ref)) == 0.0


def test_jit_vmap_equal_stacked():
    rng = np.random.default_rng(2)
    refs = jnp.asarray(rng.random((4, 20, 18)))
    xs = refs + 0.1 * jnp.asarray(rng.standard_normal((4, 20, 18)))
    for f in (ssim, psnr, relative_error):
        batched = jax.jit(jax.vmap(f))(xs, refs)
        stacked = jnp.stack([f(x, r) for x, r in zip(xs, refs)])
        np.testing.assert_allclose(batched, stacked, rtol=1e-12)
    # data_range vmapped too
    drs = jnp.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(
        jax.vmap(ssim)(xs, refs, drs), jnp.stack([ssim(x, r, d) for x, r, d in zip(xs, refs, drs)]), rtol=1e-12
    )


def test_ssim_gradient_vs_finite_differences():
    rng = np.random.default_rng(3)
    ref = jnp.asarray(rng.random((14, 15)))
    x = ref + 0.2 * jnp.asarray(rng.standard_normal(ref.shape))
    f = lambda x: ssim(x, ref, data_range=1.0)  # noqa: E731
    g = jax.grad(f)(x)
    assert g.shape == x.shape and bool(jnp.all(jnp.isfinite(g)))
    # directional derivatives along random directions, central differences (float64)
    for k in range(3):
        v = jnp.asarray(np.random.default_rng(10 + k).standard_normal(x.shape))
        h = 1e-6
        fd = (f(x + h * v) - f(x - h * v)) / (2 * h)
        assert float(jnp.vdot(g, v)) == pytest.approx(float(fd), rel=1e-6, abs=1e-9)
    # and single pixels, including the border (which only enters through edge windows)
    for idx in [(0, 0), (7, 7), (13, 14)]:
        e = jnp.zeros(x.shape).at[idx].set(1.0)
        fd = (f(x + 1e-6 * e) - f(x - 1e-6 * e)) / 2e-6
        assert float(g[idx]) == pytest.approx(float(fd), rel=1e-5, abs=1e-9)


def test_ssim_gradient_ascent():
    # (skimage's `gradient=True` differentiates the uncropped mean, so it is not a reference for
    # the cropped mean it returns; the finite differences above are.) A small step along the
    # gradient must increase SSIM.
    rng = np.random.default_rng(4)
    ref = jnp.asarray(rng.random((24, 24)))
    x = ref + 0.3 * jnp.asarray(rng.standard_normal(ref.shape))
    g = jax.grad(lambda x: ssim(x, ref, 1.0))(x)
    assert float(ssim(x + 1e-2 * g / jnp.linalg.norm(g), ref, 1.0)) > float(ssim(x, ref, 1.0))


def test_relative_error_and_residual():
    rng = np.random.default_rng(5)
    x, ref = rng.standard_normal((5, 6)), rng.standard_normal((5, 6))
    assert float(relative_error(jnp.asarray(x), jnp.asarray(ref))) == pytest.approx(
        np.linalg.norm(x - ref) / np.linalg.norm(ref), rel=1e-13
    )
    z = rng.standard_normal(7) + 1j * rng.standard_normal(7)
    w = rng.standard_normal(7) + 1j * rng.standard_normal(7)
    assert float(relative_error(jnp.asarray(z), jnp.asarray(w))) == pytest.approx(
        np.linalg.norm(z - w) / np.linalg.norm(w), rel=1e-13
    )
    M = rng.standard_normal((4, 3))
    v, y = rng.standard_normal(3), rng.standard_normal(4)
    assert float(residual(MatrixOperator(jnp.asarray(M)), jnp.asarray(v), jnp.asarray(y))) == pytest.approx(
        np.linalg.norm(M @ v - y), rel=1e-13
    )
    assert float(residual(lambda u: 2 * u, jnp.ones(3), jnp.zeros(3))) == pytest.approx(np.sqrt(12))


def test_float32_default_for_integer_inputs():
    a = jnp.arange(144).reshape(12, 12)
    assert ssim(a, a[::-1]).dtype == jnp.float32
    assert psnr(a, a[::-1]).dtype == jnp.float32


def test_errors():
    a = jnp.zeros((16, 16))
    with pytest.raises(ValueError, match=r"same shape.*\(16, 16\).*\(16, 15\)"):
        psnr(a, jnp.zeros((16, 15)))
    with pytest.raises(ValueError, match=r"same shape.*\(16, 16\).*\(15, 16\)"):
        ssim(a, jnp.zeros((15, 16)))
    with pytest.raises(ValueError, match=r"2D images.*got shape \(4, 16, 16\)"):
        ssim(jnp.zeros((4, 16, 16)), jnp.zeros((4, 16, 16)))
    with pytest.raises(ValueError, match=r"at least 11x11.*\(10, 16\)"):
        ssim(jnp.zeros((10, 16)), jnp.zeros((10, 16)))
    with pytest.raises(TypeError, match=r"real images.*complex"):
        psnr(a.astype(jnp.complex64), a)
    with pytest.raises(TypeError, match=r"array.*list"):
        ssim([[1.0]], a)
    with pytest.raises(ValueError, match=r"data_range must be a scalar.*\(2,\)"):
        psnr(a, a, data_range=jnp.ones(2))
    with pytest.raises(ValueError, match=r"same shape.*\(3,\).*\(4,\)"):
        relative_error(jnp.ones(3), jnp.ones(4))
    with pytest.raises(ValueError, match=r"shape \(4,\) \(the shape of op\(x\)\), got \(3,\)"):
        residual(MatrixOperator(jnp.ones((4, 2))), jnp.ones(2), jnp.ones(3))


def test_skimage_keywords_mean_the_same_as_ours():
    _, x, ref = _pairs()[1]
    x, ref = jnp.asarray(x), jnp.asarray(ref)
    assert float(psnr(image_true=ref, image_test=x, data_range=2.0)) == float(psnr(x, ref, 2.0))
    assert float(psnr(image_true=ref, image_test=x)) == pytest.approx(
        peak_signal_noise_ratio(image_true=np.asarray(ref), image_test=np.asarray(x), data_range=float(ref.max() - ref.min())),
        abs=1e-10,
    )
    assert float(ssim(image_true=ref, image_test=x, data_range=2.0)) == float(ssim(x, ref, 2.0))
    for f in (psnr, ssim):
        with pytest.raises(TypeError, match="image_true"):
            f(x, image_true=ref, image_test=x)  # a mix of the two conventions
        with pytest.raises(TypeError, match="image_true"):
            f(image_test=x)


def test_constant_images_and_bad_data_range():
    c = jnp.full((16, 16), 0.3)
    assert float(psnr(c, c)) == np.inf and float(ssim(c, c)) == 1.0  # not NaN
    assert float(psnr(c + 0.1, c)) == -np.inf  # a zero peak (data_range from a constant ref)
    assert float(psnr(c + 0.1, c, data_range=1.0)) == pytest.approx(20.0)
    assert np.isfinite(float(ssim(c + 0.1, c)))
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="data_range must be positive"):
            psnr(c, c + 0.1, data_range=bad)
        with pytest.raises(ValueError, match="data_range must be positive"):
            ssim(c, c + 0.1, data_range=bad)
    g = jax.grad(lambda x: psnr(x, c + 0.1, data_range=1.0))(c)  # the inf branch does not poison gradients
    assert bool(jnp.all(jnp.isfinite(g)))
