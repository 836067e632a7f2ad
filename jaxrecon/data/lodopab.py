r"""LoDoPaB-CT (Leuschner, Schmidt, Otero Baguer, Maass, Sci. Data 8, 109 (2021); data on Zenodo,
record 3384092): the file layout, the challenge geometry and the challenge's scores.

**Files.** For each split `train` / `validation` / `test` (35820 / 3522 / 3553 samples), HDF5 files
`ground_truth_{split}_{i:03d}.hdf5` and `observation_{split}_{i:03d}.hdf5`, each with one dataset
`data` of 128 samples (fewer in the last file): ground truth `(N, 362, 362)` float32 in $[0, 1]$ and
post-log observations `(N, 1000, 513)` float32. Sample $n$ is row $n \bmod 128$ of file
$\lfloor n/128\rfloor$. Unzip the Zenodo archives into one folder and point `LoDoPaB(folder, split)`
(or `jaxrecon train --data lodopab:FOLDER`) at it; samples are read one at a time.

**Simulation** (verified in `create_dataset.py` of github.com/jleuschn/lodopab_tech_ref and
`dival/datasets/lodopab_dataset.py`, `dival/util/constants.py` of github.com/jleuschn/dival):
images on $[-0.13, 0.13]^2$ m (26 cm, 362 pixels), attenuation $\mu_{\max} x$ with
$\mu_{\max} = 3071\cdot(20 - 0.02)/1000 + 20 = 81.35858\ \mathrm{m}^{-1}$, projected (at 1000 x 1000,
against the inverse crime) with ODL's `parallel_beam_geometry`; counts
$c \sim \mathrm{Poisson}(4096\,e^{-\int \mu_{\max} x})$, zero counts set to 0.1, observation
$-\log(c/4096)/\mu_{\max}$: line integrals of $x$ in metres.

**Geometry, mapped to ours.** ODL's `parallel_beam_geometry(space, 1000, det_shape=513)` has angles
at the midpoints $\theta_k = (k + \tfrac12)\pi/1000$ of `uniform_partition(0, pi, 1000)` and a
detector on $[-\rho, \rho]$, $\rho = 0.13\sqrt2$ m (the domain's corner), 513 bins; ODL's ray at
$(\theta, s)$ is $x\cos\theta + y\sin\theta = s$ (detector axis $(\cos\theta, \sin\theta)$), with
array axis 0 = $x$, axis 1 = $y$. Reading the stored array as our image (row = axis 0, column =
axis 1, $y$ up the rows) turns ODL's $(x, y)$ into our $(-y, x)$, so the same rays are ours at
$\varphi_k = \theta_k - \pi/2$. In pixel units ($h$ = 0.26/362 m) the bins are $2\rho/(513 h) =
\sqrt2\cdot362/513 \approx 0.99794$ pixels apart, centred (offset 0), and the observations divided
by $h$ are our `radon(x, lodopab_geometry())` up to noise and discretisation: `LoDoPaB` returns them
so. (ODL-stored arrays are the DICOM slices transposed: `imshow(x.T)` shows the usual orientation.)

**Scores** (the challenge's, via DIVal's `dival.measure.PSNR`/`SSIM`): PSNR with
data_range = max - min of each ground truth, and `skimage.metrics.structural_similarity` with its
defaults (7 x 7 uniform window, sample covariance) and the same data range: `lodopab_psnr`,
`lodopab_ssim` (tested against scikit-image).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from jaxrecon.operators import ParallelBeamGeometry

__all__ = [
    "LoDoPaB",
    "lodopab_geometry",
    "lodopab_psnr",
    "lodopab_ssim",
    "MU_MAX",
    "MU_PIXEL",
    "PHOTONS",
    "PIXEL_SIZE",
    "DOMAIN_SIZE",
    "IMAGE_SHAPE",
    "NUM_ANGLES",
    "NUM_DETECTORS",
    "SPLITS",
]

MU_WATER, MU_AIR = 20.0, 0.02  # m^-1, as in DIVal's constants
MU_MAX = 3071 * (MU_WATER - MU_AIR) / 1000 + MU_WATER  # 81.35858 m^-1
PHOTONS = 4096  # mean photons per detector pixel before attenuation
DOMAIN_SIZE = 0.26  # metres, the image side
IMAGE_SHAPE = (362, 362)
NUM_ANGLES = 1000
NUM_DETECTORS = 513
PIXEL_SIZE = DOMAIN_SIZE / IMAGE_SHAPE[1]  # metres
MU_PIXEL = MU_MAX * PIXEL_SIZE  # attenuation of one pixel of value 1, for sinograms in pixel units
SPLITS = {"train": 35820, "validation": 3522, "test": 3553}
SAMPLES_PER_FILE = 128


def lodopab_geometry(shape: tuple[int, int] = IMAGE_SHAPE, num_angles: int = NUM_ANGLES,
                     num_detectors: int = NUM_DETECTORS, dtype=None) -> ParallelBeamGeometry:
    r"""The LoDoPaB-CT challenge geometry in our (ASTRA) convention (see the module docstring).

    Angles $(k + \tfrac12)\pi/A - \pi/2$, `num_detectors` bins spanning the image's diagonal
    ($\sqrt{H^2 + W^2}/D$ pixels apart), no offset. The defaults are the challenge's (362 x 362, 1000
    angles, 513 bins); other sizes give the same construction at that size (e.g. for small test files).

    Example:
        >>> g = lodopab_geometry()
        >>> g.sinogram_shape, round(float(g.detector_spacing), 5)
        ((1000, 513), 0.99794)
    """
    dtype = jnp.result_type(float) if dtype is None else dtype
    angles = (jnp.arange(num_angles, dtype=dtype) + 0.5) * (jnp.pi / num_angles) - jnp.pi / 2
    spacing = math.hypot(*shape) / num_detectors
    return ParallelBeamGeometry(shape, angles, num_detectors, spacing, 0.0)


def lodopab_psnr(x: Float[ArrayLike, "H W"], gt: Float[ArrayLike, "H W"]) -> Float[Array, ""]:
    r"""The challenge's PSNR: $10\log_{10}\big((\max gt - \min gt)^2/\mathrm{MSE}\big)$ (DIVal's `PSNR`)."""
    from jaxrecon.metrics import psnr

    gt = jnp.asarray(gt)
    return psnr(x, gt, data_range=jnp.max(gt) - jnp.min(gt))


def lodopab_ssim(x: Float[ArrayLike, "H W"], gt: Float[ArrayLike, "H W"]) -> Float[Array, ""]:
    r"""The challenge's SSIM: scikit-image's defaults, as DIVal's `SSIM` calls it.

    Local means, variances and covariance over $7\times7$ uniform windows, variances with the sample
    normalisation $49/48$, $L = \max gt - \min gt$, $C_1 = (0.01L)^2$, $C_2 = (0.03L)^2$,
    $S = \frac{(2\mu_x\mu_y + C_1)(2\sigma_{xy} + C_2)}{(\mu_x^2+\mu_y^2+C_1)(\sigma_x^2+\sigma_y^2+C_2)}$,
    averaged over the windows inside the image. Equals
    `skimage.metrics.structural_similarity(x, gt, data_range=gt.max() - gt.min())` (tested).
    """
    x, gt = jnp.asarray(x), jnp.asarray(gt)
    if x.shape != gt.shape or x.ndim != 2 or min(x.shape) < 7:
        raise ValueError(f"lodopab_ssim expects two images of the same shape, at least 7x7, got {x.shape} and {gt.shape}")
    dtype = jnp.result_type(x.dtype, gt.dtype, jnp.float32)
    x, gt = x.astype(dtype), gt.astype(dtype)
    L = jnp.max(gt) - jnp.min(gt)

    def box(a):
        return jax.lax.reduce_window(a, 0.0, jax.lax.add, (7, 7), (1, 1), "VALID") / 49

    ux, uy = box(x), box(gt)
    norm = 49 / 48
    vx = norm * (box(x * x) - ux * ux)
    vy = norm * (box(gt * gt) - uy * uy)
    vxy = norm * (box(x * gt) - ux * uy)
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return jnp.mean(s)


class LoDoPaB:
    r"""One split of LoDoPaB-CT on disk, read lazily (files opened per read, one sample at a time).

    `dataset[n]` is `(y, x)`: the observation divided by the pixel size (a sinogram in pixel units,
    $\approx$ `radon(x, dataset.geometry)`) and the ground truth, float32 NumPy arrays.
    `dataset.read(indices)` stacks several. `dataset.geometry` is `lodopab_geometry` at the files'
    shapes. `raw=True` returns the observation as stored (metres).

    Example:
        >>> data = LoDoPaB("/data/lodopab", "validation")
        >>> y, x = data[0]                     # (1000, 513), (362, 362)
        >>> rec = fbp(jnp.asarray(y), data.geometry, "hann")
        >>> lodopab_psnr(rec, x), lodopab_ssim(rec, x)
    """

    def __init__(self, path: str | os.PathLike, split: str = "train"):
        import h5py

        if split not in SPLITS and split != "challenge":
            raise ValueError(f"split must be one of {tuple(SPLITS)}, got {split!r}")
        root = Path(path)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no such folder (expected the unzipped LoDoPaB-CT files)")
        self.root, self.split = root, split
        pattern = re.compile(rf"observation_{split}_(\d{{3}})\.hdf5$")
        numbers = sorted(int(m.group(1)) for p in root.iterdir() if (m := pattern.match(p.name)))
        if not numbers:
            raise FileNotFoundError(f"{root}: no files observation_{split}_000.hdf5, ... (LoDoPaB-CT {split} split)")
        if numbers != list(range(len(numbers))):
            missing = sorted(set(range(numbers[-1] + 1)) - set(numbers))
            raise FileNotFoundError(f"{root}: observation_{split}_{missing[0]:03d}.hdf5 is missing")
        self._files, counts = [], []
        obs_shape = gt_shape = None
        for i in numbers:
            obs_file = root / f"observation_{split}_{i:03d}.hdf5"
            gt_file = root / f"ground_truth_{split}_{i:03d}.hdf5"
            if not gt_file.exists():
                raise FileNotFoundError(f"{gt_file}: no such file (the ground truth of {obs_file.name})")
            o_shape, g_shape = self._shape(h5py, obs_file), self._shape(h5py, gt_file)
            if o_shape[0] != g_shape[0]:
                raise ValueError(f"{obs_file}: field 'data' has {o_shape[0]} samples but {gt_file.name} has {g_shape[0]}")
            if len(o_shape) != 3 or len(g_shape) != 3:
                raise ValueError(f"{obs_file}: field 'data' must be (N, angles, detectors) and the ground truth "
                                 f"(N, H, W), got {o_shape} and {g_shape}")
            if obs_shape is not None and (o_shape[1:], g_shape[1:]) != (obs_shape, gt_shape):
                raise ValueError(f"{obs_file}: field 'data' has sample shape {o_shape[1:]} / ground truth {g_shape[1:]}, "
                                 f"unlike the first file's {obs_shape} / {gt_shape}")
            obs_shape, gt_shape = o_shape[1:], g_shape[1:]
            self._files.append((obs_file, gt_file))
            counts.append(o_shape[0])
        self._offsets = np.concatenate([[0], np.cumsum(counts)])
        self.observation_shape, self.image_shape = tuple(obs_shape), tuple(gt_shape)
        self.pixel_size = DOMAIN_SIZE / self.image_shape[1]

    @staticmethod
    def _shape(h5py, file):
        try:
            with h5py.File(file, "r") as f:
                if "data" not in f:
                    raise ValueError(f"{file}: missing field 'data'; the file holds {sorted(f.keys())}")
                return tuple(f["data"].shape)
        except OSError as e:
            raise ValueError(f"{file}: not a readable HDF5 file ({e}); the file may be truncated") from None

    def __len__(self) -> int:
        return int(self._offsets[-1])

    @property
    def files(self) -> list[tuple[Path, Path]]:
        """The split's `(observation, ground truth)` file pairs, in sample order."""
        return list(self._files)

    @property
    def geometry(self) -> ParallelBeamGeometry:
        return lodopab_geometry(self.image_shape, *self.observation_shape)

    def _locate(self, n: int) -> tuple[int, int]:
        if not -len(self) <= n < len(self):
            raise IndexError(f"sample {n} out of range for the {self.split} split of {self.root} ({len(self)} samples)")
        n %= len(self)
        f = int(np.searchsorted(self._offsets, n, side="right") - 1)
        return f, n - int(self._offsets[f])

    def __getitem__(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        y, x = self.read([n])
        return y[0], x[0]

    def read(self, indices, raw: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Samples `indices` as `(ys (B, A, D), xs (B, H, W))`; each file is opened once per call."""
        import h5py

        indices = [int(i) for i in np.asarray(indices).reshape(-1)]
        ys = np.empty((len(indices), *self.observation_shape), np.float32)
        xs = np.empty((len(indices), *self.image_shape), np.float32)
        located = [self._locate(n) for n in indices]
        for f in sorted({f for f, _ in located}):
            obs_file, gt_file = self._files[f]
            slots = [(k, r) for k, (ff, r) in enumerate(located) if ff == f]
            for file, out in ((obs_file, ys), (gt_file, xs)):
                try:
                    with h5py.File(file, "r") as h:
                        for k, r in slots:
                            out[k] = h["data"][r]
                except OSError as e:
                    raise ValueError(f"{file}: field 'data' could not be read ({e}); the file may be truncated") from None
        if not raw:
            ys /= self.pixel_size
        return ys, xs
