"""Modified Shepp-Logan phantom: against scikit-image's image, orientation, range, validation."""

import jax.numpy as jnp
import numpy as np
import pytest
from skimage.data import shepp_logan_phantom

from jaxrecon.phantoms import EllipsePhantom, rasterize, shepp_logan, shepp_logan_ellipses


def _pixel(n, u, v):
    """(row, col) of the pixel containing normalised point (u, v) in an n x n image."""
    return int(round((n - 1) / 2 - v * n / 2)), int(round(u * n / 2 + (n - 1) / 2))


def test_matches_skimage_phantom():
    # skimage's 400x400 PNG uses the same modified (Toft) table; values are quantised to 8 bits.
    ref = shepp_logan_phantom()
    img = np.asarray(shepp_logan(400))
    assert img.shape == ref.shape == (400, 400)
    differ = np.abs(img - ref) > 0.02
    assert differ.mean() < 0.01  # measured 0.55 %, all on ellipse edges
    # the orientation matters: mirrored images disagree on many more pixels
    assert (np.abs(img[::-1] - ref) > 0.02).mean() > 0.1
    assert (np.abs(img[:, ::-1] - ref) > 0.02).mean() > 0.03


def test_matches_skimage_phantom_exactly_on_its_grid():
    # skimage's image samples the ellipses on the grid linspace(-1, 1, 400) (pixel centres at +-1),
    # whereas our contract puts the image *edges* at +-1 (centres at +-(1 - 1/400)). Shrinking the
    # ellipses by 399/400 maps one convention onto the other: then every pixel agrees up to the
    # 8-bit quantisation of skimage's PNG (0.1 -> 25/255 etc.).
    ph = shepp_logan_ellipses()
    k = 399 / 400
    ph = EllipsePhantom(ph.centre * k, ph.axes * k, ph.rotation, ph.value)
    img = np.clip(np.asarray(rasterize(ph, (400, 400))), 0, 1)
    np.testing.assert_allclose(img, shepp_logan_phantom(), atol=0.003)


def test_orientation():
    n = 128
    img = np.asarray(shepp_logan(n))
    # the small ellipses at v = -0.605 are at the bottom (value 0.2 + 0.1); their mirror image is not
    assert img[_pixel(n, 0.0, -0.606)] == pytest.approx(0.3)
    assert img[_pixel(n, 0.0, 0.606)] == pytest.approx(0.2)
    # the dark ellipse centred at u = +0.22 (rotated -18 deg, i.e. clockwise) is on the right half;
    # its tilted major axis points up and to the right
    assert img[_pixel(n, 0.22, 0.0)] == pytest.approx(0.0, abs=1e-12)
    d = 0.25
    up_right = (0.22 + d * np.sin(np.deg2rad(18)), d * np.cos(np.deg2rad(18)))
    up_left = (0.22 - d * np.sin(np.deg2rad(18)), d * np.cos(np.deg2rad(18)))
    assert img[_pixel(n, *up_right)] == pytest.approx(0.0, abs=1e-12)
    assert img[_pixel(n, *up_left)] > 0.15
    # top of the head is in row 0's half: the bright skull crosses the centre column near the top
    col = img[:, n // 2]
    assert np.argmax(col == 1.0) < n // 2


@pytest.mark.parametrize("n", [1, 2, 17, 64, (16, 40), (40, 16)])
@pytest.mark.parametrize("supersample", [1, 3])
def test_value_range(n, supersample):
    img = np.asarray(shepp_logan(n, supersample=supersample))
    shape = (n, n) if isinstance(n, int) else n
    assert img.shape == shape
    assert img.min() >= 0.0 and img.max() <= 1.0
    if supersample == 1 and min(shape) >= 16:  # pixel centres hit the background and the skull
        assert img.min() == 0.0 and img.max() == 1.0


def test_levels():
    img = np.asarray(shepp_logan(256))
    assert set(np.unique(np.round(img, 12))) <= {0.0, 0.1, 0.2, 0.3, 0.4, 1.0}


def test_ellipses_table():
    ph = shepp_logan_ellipses()
    assert isinstance(ph, EllipsePhantom)
    assert ph.num_ellipses == 10
    np.testing.assert_allclose(ph.value, [1, -0.8, -0.2, -0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    np.testing.assert_allclose(ph.centre[2], [0.22, 0.0])
    np.testing.assert_allclose(ph.axes[1], [0.6624, 0.874])
    np.testing.assert_allclose(ph.rotation[2], np.deg2rad(-18))
    # shepp_logan is rasterize of the ellipses, up to the clip
    np.testing.assert_allclose(shepp_logan(32), jnp.clip(rasterize(ph, (32, 32)), 0, 1))


def test_dtype():
    assert shepp_logan(8, dtype=jnp.float32).dtype == jnp.float32
    assert shepp_logan(8).dtype == jnp.float64  # tests run with x64 enabled


@pytest.mark.parametrize(
    "n, exc, match",
    [
        (0, ValueError, "positive int"),
        (-3, ValueError, "got -3"),
        ((8, 0), ValueError, r"got \(8, 0\)"),
        (3.5, TypeError, "got 3.5"),
        ("64", TypeError, "positive int"),
        (True, TypeError, "got True"),
        ((8,), TypeError, "pair of positive ints"),
        ((8, 8, 8), TypeError, "pair of positive ints"),
        (None, TypeError, "got None"),
    ],
)
def test_bad_size(n, exc, match):
    with pytest.raises(exc, match=match):
        shepp_logan(n)


def test_bad_supersample():
    with pytest.raises(ValueError, match="supersample must be a positive int, got 0"):
        shepp_logan(8, supersample=0)
    with pytest.raises(TypeError, match="supersample must be a positive int, got 2.0"):
        shepp_logan(8, supersample=2.0)
    with pytest.raises(TypeError, match="floating dtype"):
        shepp_logan(8, dtype=jnp.int32)
