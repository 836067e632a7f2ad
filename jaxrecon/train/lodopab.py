r"""LoDoPaB-CT as a training data source: deterministic batches read from the files, the challenge's scores.

A config with `config["data"] = {"source": "lodopab", "path": FOLDER, "shape": [H, W], "num_angles": A,
"num_detectors": D}` trains on the files in `FOLDER` (`jaxrecon.data.LoDoPaB`): training step $k$
reads samples $kB, \dots, kB + B - 1$ (mod the split's length) of the `train` split, $B$ the batch size,
so a resumed run sees exactly the batches it would have seen; validation is the first
`validation_size` samples of the `validation` split (all of them if it has fewer); evaluation scores the
`test` split with `lodopab_psnr` / `lodopab_ssim`. Observations are in pixel units (the stored line
integrals in metres divided by the pixel size), so that $y \approx$ `radon(x, lodopab_geometry(...))`.

The operator needs only the config (`LoDoPaBData.geometry`), never the files: a checkpoint rebuilds
without them. The files are opened (and their shapes checked against the config) by `open`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from jaxrecon.data.lodopab import LoDoPaB, lodopab_geometry, lodopab_psnr, lodopab_ssim
from jaxrecon.operators.geometry import ParallelBeamGeometry
from jaxrecon.operators.radon import RadonTransform

from .data import Sample
from .evaluate import reconstruct

__all__ = ["LoDoPaBData", "evaluate_lodopab", "lodopab_data_config", "lodopab_streams"]


def lodopab_data_config(path: str | os.PathLike) -> dict:
    """The `config["data"]` entry of LoDoPaB-CT files in `path`, with the shapes of its `train` split.

    The path is stored absolute, so that the checkpoint finds the files from anywhere.

    Example:
        >>> lodopab_data_config("/data/lodopab")
        {'source': 'lodopab', 'path': '/data/lodopab', 'shape': [362, 362], 'num_angles': 1000, 'num_detectors': 513}
    """
    reader = LoDoPaB(path, "train")
    (h, w), (a, d) = reader.image_shape, reader.observation_shape
    return dict(source="lodopab", path=str(Path(path).resolve()), shape=[h, w], num_angles=a, num_detectors=d)


class LoDoPaBData(eqx.Module):
    """The geometry of a LoDoPaB-CT config (a traced leaf) and the folder of its files (static).

    Attributes:
        geometry: `lodopab_geometry(shape, num_angles, num_detectors)`.
        path: the folder of the unzipped files, or None (a config without files: the model still rebuilds).

    Example:
        >>> data = LoDoPaBData(lodopab_geometry((16, 16), 10, 23), "/data/small")
        >>> data.operator.out_shape
        (10, 23)
        >>> ys, xs = data.read(data.open("test"), [0, 1])   # Sample: y (2, 10, 23), x (2, 16, 16)
    """

    geometry: ParallelBeamGeometry
    path: str | None = eqx.field(static=True)

    @classmethod
    def from_config(cls, data: dict, dtype=None) -> LoDoPaBData:
        """From `config["data"]` (see the module docstring); reads no file."""
        shape = tuple(int(n) for n in data["shape"])
        geometry = lodopab_geometry(shape, int(data["num_angles"]), int(data["num_detectors"]), dtype=dtype)
        return cls(geometry, data.get("path"))

    @property
    def shape(self) -> tuple[int, int]:
        """The image shape `(H, W)`."""
        return self.geometry.shape

    @property
    def operator(self) -> RadonTransform:
        """`RadonTransform(geometry)`."""
        return RadonTransform(self.geometry)

    def open(self, split: str) -> LoDoPaB:
        """The reader of `split`, after checking that its files hold this geometry's shapes.

        Raises `FileNotFoundError` (no path, no folder, missing files) or `ValueError` naming the first
        observation file if its images or observations differ from the config's.
        """
        if self.path is None:
            raise FileNotFoundError("the config names no LoDoPaB-CT folder (config['data']['path'] is None)")
        reader = LoDoPaB(self.path, split)
        want_x, want_y = tuple(self.geometry.shape), tuple(self.geometry.sinogram_shape)
        if (reader.image_shape, reader.observation_shape) != (want_x, want_y):
            raise ValueError(
                f"{reader.files[0][0]}: the {split} files hold {_shape(reader.image_shape)} images and "
                f"{_shape(reader.observation_shape)} observations, but the config expects {_shape(want_x)} images "
                f"and {_shape(want_y)} observations (angles x detectors)"
            )
        return reader

    def read(self, reader: LoDoPaB, indices) -> Sample:
        """Samples `indices` of `reader` as a `Sample(y (B, A, D), x (B, H, W))` in the geometry's dtype."""
        ys, xs = reader.read(indices)
        dtype = self.geometry.angles.dtype
        return Sample(jnp.asarray(ys, dtype), jnp.asarray(xs, dtype))


def _shape(shape) -> str:
    return "x".join(str(n) for n in shape)


def lodopab_streams(data: LoDoPaBData, batch_size: int, validation_size: int, *, rows: slice | None = None):
    """`(batch_fn, validation)`: `batch_fn(k)` reads samples `k*batch_size, ...` (mod the train split's length);
    `validation` is the first `validation_size` samples of the validation split (all, if it has fewer).
    `rows` (e.g. `process_rows(batch_size)`): read only these rows of each batch (one process's part).

    Example:
        >>> batch_fn, val = lodopab_streams(data, 4, 16)
        >>> batch_fn(0).y.shape                # samples 0..3 of the train split
        (4, 1000, 513)
    """
    train, validation = data.open("train"), data.open("validation")
    n = len(train)

    index = np.arange(batch_size)[slice(None) if rows is None else rows]

    def batch_fn(k: int) -> Sample:
        return data.read(train, (k * batch_size + index) % n)

    return batch_fn, data.read(validation, np.arange(min(validation_size, len(validation))))


@jax.jit
def _challenge_scores(xs, refs):
    return jax.vmap(lodopab_psnr)(xs, refs), jax.vmap(lodopab_ssim)(xs, refs)


def evaluate_lodopab(model, data: LoDoPaBData, split: str = "test", num_samples: int | None = None,
                     batch_size: int = 8) -> dict:
    """Mean and standard deviation of the challenge's PSNR and SSIM (`lodopab_psnr`, `lodopab_ssim`) of
    `model(y, data.operator)` over the first `num_samples` samples of `split` (default: all of them).

    The files are read `batch_size` samples at a time (the last chunk is padded, so one compilation
    serves all); the first chunk is reconstructed twice, the first time to compile, and
    `seconds_per_reconstruction` is the time of the reconstructions after compilation over the samples.

    Returns:
        A dict of Python floats: `psnr_mean`, `psnr_std`, `ssim_mean`, `ssim_std`, `samples` (an int),
        `seconds_per_reconstruction`.

    Example:
        >>> model, data, config = load_trained("runs/lpd_lodopab")
        >>> evaluate_lodopab(model, data, "test", 100)["psnr_mean"]
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size}")
    reader = data.open(split)
    n = len(reader) if num_samples is None else min(int(num_samples), len(reader))
    if n < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    batch_size = min(batch_size, n)
    op, psnrs, ssims, seconds = data.operator, [], [], 0.0
    for start in range(0, n, batch_size):
        count = min(batch_size, n - start)
        batch = data.read(reader, np.minimum(np.arange(start, start + batch_size), n - 1))
        if start == 0:
            jax.block_until_ready(reconstruct(model, op, batch.y))  # compile
        t = time.perf_counter()
        xs = jax.block_until_ready(reconstruct(model, op, batch.y))
        seconds += time.perf_counter() - t
        p, s = _challenge_scores(xs, batch.x)
        psnrs.append(np.asarray(p, np.float64)[:count])
        ssims.append(np.asarray(s, np.float64)[:count])
    p, s = np.concatenate(psnrs), np.concatenate(ssims)
    return {"psnr_mean": float(p.mean()), "psnr_std": float(p.std()), "ssim_mean": float(s.mean()),
            "ssim_std": float(s.std()), "samples": n, "seconds_per_reconstruction": seconds / n}
