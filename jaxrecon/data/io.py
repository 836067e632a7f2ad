"""One entry point per direction: `read_scan` and `write_reconstruction` choose the format by suffix."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .hdf5 import read_hdf5, write_reconstruction_hdf5
from .numpy_io import read_numpy
from .scan import Scan
from .tiff import read_tiff, write_reconstruction_tiff

__all__ = ["read_scan", "write_reconstruction", "write_preview", "HDF5_SUFFIXES", "TIFF_SUFFIXES"]

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nxs", ".cxi")
TIFF_SUFFIXES = (".tif", ".tiff")


def read_scan(path, *, row: int | None = None, angle_unit: str = "auto", flats=None, darks=None, angles=None) -> Scan:
    """Read one slice of a scan: HDF5 (`.h5`, `.hdf5`, `.nxs`, ...), TIFF (a file, folder or glob; with
    `flats`, `darks`, `angles`), NumPy (`.npy`, `.npz`).

    Example:
        >>> scan = read_scan("scan.h5")
    """
    p = Path(path)
    suffix = p.suffix.lower()
    tiff_extras = any(v is not None for v in (flats, darks, angles))
    if suffix in HDF5_SUFFIXES:
        _no_extras(tiff_extras, path)
        return read_hdf5(path, row=row, angle_unit=angle_unit)
    if suffix in (".npy", ".npz"):
        _no_extras(tiff_extras, path)
        return read_numpy(path, row=row, angle_unit=angle_unit)
    if suffix in TIFF_SUFFIXES or p.is_dir() or any(c in str(path) for c in "*?["):
        return read_tiff(path, flats=flats, darks=darks, angles=angles, row=row, angle_unit=angle_unit)
    if not p.exists():
        raise FileNotFoundError(f"{path}: no such file")
    raise ValueError(f"{path}: unknown scan format {suffix!r}; expected one of "
                     f"{HDF5_SUFFIXES + TIFF_SUFFIXES + ('.npy', '.npz')} or a folder of TIFF files")


def _no_extras(extras: bool, path) -> None:
    if extras:
        raise ValueError(f"{path}: separate flats/darks/angles files are for TIFF stacks; this file carries its own")


def write_reconstruction(path, image, geometry=None, settings: dict | None = None) -> Path:
    """Write a reconstruction by suffix: HDF5 (`write_reconstruction_hdf5`), TIFF
    (`write_reconstruction_tiff`) or `.npy`. Returns the path."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in HDF5_SUFFIXES:
        write_reconstruction_hdf5(p, image, geometry, settings)
    elif suffix in TIFF_SUFFIXES:
        write_reconstruction_tiff(p, image, geometry, settings)
    elif suffix == ".npy":
        np.save(p, np.asarray(image, np.float32))
    else:
        raise ValueError(f"{path}: unknown output format {suffix!r}; expected .h5/.hdf5, .tif/.tiff or .npy")
    return p


def write_preview(path, image, title: str = "") -> Path:
    """A grey-scale PNG of `image` (1st-99th percentile window) with a colour bar, via matplotlib's Agg."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    image = np.asarray(image, np.float64)
    lo, hi = np.percentile(image, [1, 99]) if image.size else (0.0, 1.0)
    fig = Figure(figsize=(5.5, 5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    im = ax.imshow(image, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.savefig(path, dpi=100)
    return Path(path)
