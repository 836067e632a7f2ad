"""LoDoPaB-CT: the geometry against ODL's convention (formula written here), the reader on files in the
dataset's exact layout (written with h5py directly), and the challenge scores against scikit-image / DIVal."""

import h5py
import jax
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from jaxrecon.data import LoDoPaB, lodopab_geometry, lodopab_psnr, lodopab_ssim
from jaxrecon.data.lodopab import MU_MAX, PIXEL_SIZE
from jaxrecon.operators import radon


def test_challenge_geometry_constants():
    g = lodopab_geometry()
    assert g.shape == (362, 362) and g.sinogram_shape == (1000, 513)
    # ODL: detector [-0.13 sqrt 2, 0.13 sqrt 2] m in 513 bins, pixel 0.26/362 m
    assert float(g.detector_spacing) == pytest.approx(2 * 0.13 * np.sqrt(2) / 513 / (0.26 / 362), rel=1e-12)
    np.testing.assert_allclose(np.asarray(g.angles), (np.arange(1000) + 0.5) * np.pi / 1000 - np.pi / 2, atol=1e-12)
    assert MU_MAX == pytest.approx(81.35858, abs=1e-9)
    assert float(g.detector_offset) == 0.0


def test_geometry_maps_odl_rays_onto_ours():
    # A disc in ODL's layout: array axis 0 = x, axis 1 = y, pixel centres at index - (N-1)/2. ODL's parallel
    # beam ray (theta, s) is x cos(theta) + y sin(theta) = s (detector axis (cos, sin), see
    # odl/tomo/geometry/parallel.py), so the disc's projections are centred at s = cx cos + cy sin.
    n, a, d = 32, 24, 45
    c = (n - 1) / 2
    i, j = np.meshgrid(np.arange(n) - c, np.arange(n) - c, indexing="ij")
    cx, cy, r = -7.5, 4.5, 3.0
    gt = ((i - cx) ** 2 + (j - cy) ** 2 <= r**2).astype(np.float64)
    geom = lodopab_geometry((n, n), a, d)
    sino = np.asarray(radon(gt, geom))
    theta = (np.arange(a) + 0.5) * np.pi / a  # ODL's angles (cell midpoints of [0, pi))
    s = (np.arange(d) - (d - 1) / 2) * np.hypot(n, n) / d
    centroid = (sino * s).sum(1) / sino.sum(1)
    np.testing.assert_allclose(centroid, cx * np.cos(theta) + cy * np.sin(theta), atol=0.05)
    # without the -pi/2 the disc would sit at s = -cy cos + cx sin: far off
    assert np.abs(centroid - (-cy * np.cos(theta) + cx * np.sin(theta))).max() > 5


def _write_split(root, split, counts, gt_shape, obs_shape, seed=0):
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for k, count in enumerate(counts):
        x = rng.uniform(0, 1, (count, *gt_shape)).astype(np.float32)
        y = rng.uniform(0, 0.02, (count, *obs_shape)).astype(np.float32)
        with h5py.File(root / f"ground_truth_{split}_{k:03d}.hdf5", "w") as f:
            f.create_dataset("data", data=x, maxshape=(128, *gt_shape), chunks=True)
        with h5py.File(root / f"observation_{split}_{k:03d}.hdf5", "w") as f:
            f.create_dataset("data", data=y, maxshape=(128, *obs_shape), chunks=True)
        xs.append(x)
        ys.append(y)
    return np.concatenate(ys), np.concatenate(xs)


def test_reader_on_files_in_the_exact_layout(tmp_path):
    ys, xs = _write_split(tmp_path, "validation", [3, 2], (362, 362), (1000, 513))
    data = LoDoPaB(tmp_path, "validation")
    assert len(data) == 5 and data.image_shape == (362, 362) and data.observation_shape == (1000, 513)
    assert data.geometry.sinogram_shape == (1000, 513)
    y, x = data[3]  # first sample of the second file
    np.testing.assert_array_equal(x, xs[3])
    np.testing.assert_allclose(y, ys[3] / PIXEL_SIZE, rtol=1e-6)  # observations in pixel units
    yb, xb = data.read([4, 0, 2], raw=True)
    np.testing.assert_array_equal(yb, ys[[4, 0, 2]])
    np.testing.assert_array_equal(xb, xs[[4, 0, 2]])
    with pytest.raises(IndexError, match="sample 5 out of range"):
        data[5]


def test_reader_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="observation_train_000.hdf5"):
        LoDoPaB(tmp_path, "train")
    _write_split(tmp_path, "test", [2, 2], (16, 16), (10, 23))
    (tmp_path / "ground_truth_test_001.hdf5").unlink()
    with pytest.raises(FileNotFoundError, match="ground_truth_test_001.hdf5"):
        LoDoPaB(tmp_path, "test")
    _write_split(tmp_path, "train", [2], (16, 16), (10, 23))
    with h5py.File(tmp_path / "ground_truth_train_000.hdf5", "w") as f:
        f["data"] = np.zeros((3, 16, 16), np.float32)
    with pytest.raises(ValueError, match=r"observation_train_000.hdf5: field 'data' has 2 samples"):
        LoDoPaB(tmp_path, "train")
    with pytest.raises(ValueError, match="split must be one of"):
        LoDoPaB(tmp_path, "val")


def test_challenge_scores_equal_skimage_and_dival_formulas():
    rng = np.random.default_rng(3)
    gt = rng.uniform(0.1, 0.8, (40, 36))
    x = gt + rng.normal(0, 0.05, gt.shape)
    rng_gt = gt.max() - gt.min()
    psnr_ref = 20 * np.log10(rng_gt) - 10 * np.log10(np.mean((x - gt) ** 2))  # dival.measure.PSNRMeasure.apply
    assert float(lodopab_psnr(x, gt)) == pytest.approx(psnr_ref, abs=1e-10)
    ssim_ref = structural_similarity(x, gt, data_range=rng_gt)  # dival.measure.SSIMMeasure.apply
    assert float(jax.jit(lodopab_ssim)(x, gt)) == pytest.approx(ssim_ref, abs=1e-10)
