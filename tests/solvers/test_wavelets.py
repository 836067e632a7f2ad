import jax
import jax.numpy as jnp
import numpy as np
import pytest
import pywt

from jaxrecon.operators import dot_test
from jaxrecon.solvers.wavelets import WAVELETS, WaveletTransform, max_level, wavedec2, wavelet_filters, waverec2

NAMES = ["haar", "db2", "db3", "db4"]
# PyWavelets warns when the coarsest level is shorter than the filter; periodization is still exact.
pytestmark = pytest.mark.filterwarnings("ignore:Level value of .* is too high")


def pywt_packed(x, wavelet, levels):
    coeffs = pywt.wavedec2(np.asarray(x), wavelet, mode="periodization", level=levels)
    return pywt.coeffs_to_array(coeffs)


@pytest.mark.parametrize("name", WAVELETS)
def test_filters_match_pywavelets(name):
    lo, hi = wavelet_filters(name)
    np.testing.assert_allclose(lo, pywt.Wavelet(name).dec_lo, rtol=0, atol=1e-15)
    np.testing.assert_allclose(hi, pywt.Wavelet(name).dec_hi, rtol=0, atol=1e-15)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("levels", [1, 2, 3])
def test_coefficients_match_pywavelets(name, levels):
    # Non-square, not a power of two; at 3 levels the coarsest band (3 x 5) is shorter than db3/db4.
    x = np.random.default_rng(levels).standard_normal((24, 40))
    ref, _ = pywt_packed(x, name, levels)
    c = jax.jit(wavedec2, static_argnums=(1, 2))(jnp.asarray(x), name, levels)
    np.testing.assert_allclose(c, ref, rtol=0, atol=1e-13)


@pytest.mark.parametrize("name", NAMES)
def test_inverse_matches_pywavelets_on_random_coefficients(name):
    c = np.random.default_rng(0).standard_normal((32, 16))
    _, slices = pywt_packed(np.zeros((32, 16)), name, 2)
    coeffs = pywt.array_to_coeffs(c, slices, output_format="wavedec2")
    ref = pywt.waverec2(coeffs, name, mode="periodization")
    np.testing.assert_allclose(waverec2(jnp.asarray(c), name, 2), ref, rtol=0, atol=1e-13)


@pytest.mark.parametrize("name", ["haar", "db4"])  # db2/db3: both directions equal PyWavelets' above
def test_perfect_reconstruction_and_orthonormality(name):
    op = WaveletTransform((32, 32), name, levels=3)
    x = jax.random.normal(jax.random.PRNGKey(1), (32, 32))
    c = op(x)
    np.testing.assert_allclose(op.T(c), x, rtol=0, atol=1e-13)  # W^T W = I
    np.testing.assert_allclose(op(op.T(x)), x, rtol=0, atol=1e-13)  # W W^T = I
    np.testing.assert_allclose(jnp.linalg.norm(c), jnp.linalg.norm(x), rtol=1e-14)
    assert float(dot_test(op)) < 1e-14


def test_constant_image_has_only_approximation_coefficients():
    c = wavedec2(jnp.ones((16, 16)), "db4", 2)
    np.testing.assert_allclose(c[:4, :4], 4.0, rtol=1e-14)  # each level multiplies a constant by 2
    assert float(jnp.max(jnp.abs(c.at[:4, :4].set(0)))) < 1e-14


def test_vmap_and_float32():
    xs = jax.random.normal(jax.random.PRNGKey(0), (3, 16, 8), jnp.float32)
    batched = jax.vmap(lambda x: wavedec2(x, "db2", 1))(xs)
    assert batched.dtype == jnp.float32
    for i in range(3):
        np.testing.assert_allclose(batched[i], wavedec2(xs[i], "db2", 1), rtol=0, atol=0)
        np.testing.assert_allclose(batched[i], pywt_packed(xs[i].astype(np.float64), "db2", 1)[0], atol=1e-5)


def test_default_levels():
    assert max_level((64, 64), "db2") == pywt.dwt_max_level(64, 4) == 4
    assert max_level((48, 64), "haar") == 4  # 48 = 3 * 16: divisibility limits it
    assert WaveletTransform((64, 64), "db2").levels == 4
    np.testing.assert_allclose(wavedec2(jnp.ones((64, 64)), "db2"), wavedec2(jnp.ones((64, 64)), "db2", 4))


def test_bad_input():
    with pytest.raises(ValueError, match=r"divisible by 2\^1 = 2, got shape \(15, 16\)"):
        wavedec2(jnp.ones((15, 16)), "haar", 1)
    with pytest.raises(ValueError, match=r"divisible by 2\^3 = 8, got shape \(16, 20\)"):
        WaveletTransform((16, 20), "db2", levels=3)
    with pytest.raises(ValueError, match=r"divisible by 2\^2 = 4, got shape \(16, 18\)"):
        waverec2(jnp.ones((16, 18)), "db2", 2)
    with pytest.raises(ValueError, match="unknown wavelet 'db9'"):
        wavedec2(jnp.ones((16, 16)), "db9", 1)
    with pytest.raises(TypeError, match="wavelet must be a name"):
        wavedec2(jnp.ones((16, 16)), 2, 1)
    with pytest.raises(ValueError, match=r"expects an \(H, W\) image .* got shape \(2, 16, 16\)"):
        wavedec2(jnp.ones((2, 16, 16)), "haar", 1)
    with pytest.raises(ValueError, match="levels must be a positive int, got 0"):
        wavedec2(jnp.ones((16, 16)), "haar", 0)
    with pytest.raises(ValueError, match=r"shape \(16, 16\), got \(8, 8\)"):
        WaveletTransform((16, 16), "haar", 1)(jnp.ones((8, 8)))
