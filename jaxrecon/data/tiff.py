r"""TIFF stacks (tifffile): projections as a multi-page TIFF or a folder of single-page TIFFs, and
reconstructions written as 32-bit float TIFF with the geometry and settings in the ImageDescription.

Layout read by `read_tiff`:

- `path` a multi-page file: page $a$ is the projection at angle $a$, `(rows, columns)`; or a folder
  (or glob pattern) of single-page files, sorted by name, one projection each. One detector row is
  taken from each page (`row`, default the middle one), page by page, so only one page is in
  memory at a time.
- a single-page file holding a 2D array `(angles, detectors)` is a sinogram.
- `flats`, `darks`: the same kinds of path (stacks of open-beam / dark frames), optional.
- `angles`: an array, or a `.txt` (one angle per line) / `.npy` file; TIFF has no angle convention,
  so the unit is guessed (see `angles_to_radians`) unless `angle_unit` is given.

Without flats the data is taken as a post-log sinogram.
"""

from __future__ import annotations

import glob
import json
import logging
import os
from pathlib import Path

import numpy as np

from .scan import Scan, angles_to_radians, check_scan, geometry_to_dict

__all__ = ["read_tiff", "write_reconstruction_tiff", "read_angles_file"]


def _tifffile():
    try:
        import tifffile
    except ImportError:  # pragma: no cover
        raise ImportError("reading TIFF needs tifffile: pip install tifffile (or pip install 'jaxrecon[data]')") from None
    return tifffile


def _files(path) -> list[Path] | Path:
    """A folder or glob pattern -> sorted list of files; a file -> the file."""
    p = Path(path)
    if p.is_dir():
        files = sorted(q for q in p.iterdir() if q.suffix.lower() in (".tif", ".tiff"))
        if not files:
            raise FileNotFoundError(f"{p}: folder holds no .tif/.tiff files")
        return files
    if p.exists():
        return p
    matches = sorted(Path(m) for m in glob.glob(str(path)))
    if matches:
        return matches
    raise FileNotFoundError(f"{path}: no such file, folder or pattern")


class _Errors(logging.Handler):
    """Collects tifffile's logged errors: it logs (and skips) broken page chains of truncated files."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _open_tiff(tifffile, file, src):
    """`(number of pages, first page shape)`; a broken file (truncated page chain or data) is a ValueError."""
    errors = _Errors()
    log = logging.getLogger("tifffile")
    log.addHandler(errors)
    try:
        with tifffile.TiffFile(file) as t:
            pages = list(t.pages)
            size = Path(file).stat().st_size
            for page in pages:
                ends = [o + c for o, c in zip(page.dataoffsets, page.databytecounts)]
                if ends and max(ends) > size:
                    errors.messages.append(f"page data ends at byte {max(ends)} beyond the file's {size} bytes")
            n, shape = len(pages), tuple(pages[0].shape)
    except (OSError, ValueError, IndexError, tifffile.TiffFileError) as e:
        raise ValueError(f"{src}: {file} is not a readable TIFF file ({e}); the file may be truncated") from None
    finally:
        log.removeHandler(errors)
    if errors.messages:
        raise ValueError(f"{src}: {file} is broken ({errors.messages[0]}); the file may be truncated")
    return n, shape


def _read_page(tifffile, file, index, src):
    try:
        with tifffile.TiffFile(file) as t:
            return np.asarray(t.pages[index].asarray())
    except (OSError, ValueError, IndexError, KeyError, tifffile.TiffFileError) as e:
        raise ValueError(f"{src}: page {index} of {file} could not be read ({e}); the file may be truncated") from None


def _stack_rows(path, row, what) -> tuple[np.ndarray, tuple, str]:
    """`(frames, columns)` from a multi-page file or a folder of files, and the stack's full shape."""
    tifffile = _tifffile()
    files = _files(path)
    src = str(path)
    if isinstance(files, Path):
        n, page_shape = _open_tiff(tifffile, files, src)
        pages = [(files, i) for i in range(n)]
    else:
        pages = [(f, 0) for f in files]
        for f in files[1:]:
            _open_tiff(tifffile, f, src)
        page_shape = tuple(_open_tiff(tifffile, files[0], src)[1])
    if len(pages) == 1 and len(page_shape) == 2:
        return _read_page(tifffile, *pages[0], src), page_shape, "sinogram"
    if len(page_shape) != 2:
        raise ValueError(f"{src}: {what} pages must be 2D images (rows, columns), got shape {page_shape}")
    r = page_shape[0] // 2 if row is None else row
    if not 0 <= r < page_shape[0]:
        raise ValueError(f"{src}: row {r} is outside the {what} pages of shape {page_shape}")
    out = np.empty((len(pages), page_shape[1]), np.float32)
    for k, (file, i) in enumerate(pages):
        page = _read_page(tifffile, file, i, src)
        if page.shape != page_shape:
            raise ValueError(f"{src}: {what} page {k} ({file}) has shape {page.shape}, expected {page_shape} like page 0")
        out[k] = page[r]
    return out, (len(pages), *page_shape), "stack"


def read_angles_file(path) -> np.ndarray:
    """Angles from a `.npy` file or a text file (numbers separated by white space or commas)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file (angles)")
    if p.suffix.lower() == ".npy":
        return np.load(p, allow_pickle=False).reshape(-1)
    try:
        return np.array(p.read_text().replace(",", " ").split(), dtype=np.float64)
    except ValueError as e:
        raise ValueError(f"{p}: the angles file must hold numbers only ({e})") from None


def read_tiff(path, *, flats=None, darks=None, angles=None, row: int | None = None, angle_unit: str = "auto") -> Scan:
    """Read one slice of a scan from TIFF files (see the module docstring for the layout).

    Example:
        >>> scan = read_tiff("proj/", flats="flats.tif", darks="darks.tif", angles="angles.txt")
    """
    src = str(path)
    proj, shape, kind = _stack_rows(path, row, "projection")
    f = d = None
    attrs = {"projections_field": src, "shape": shape}
    if flats is not None:
        f, fshape, _ = _stack_rows(flats, row, "flat")
        attrs["flats_field"] = str(flats)
        if fshape[-1] != shape[-1] or len(fshape) != len(shape):
            raise ValueError(f"{flats}: flat frames of shape {fshape[1:]} do not match the projections {shape[1:]} ({src})")
    if darks is not None:
        d, dshape, _ = _stack_rows(darks, row, "dark")
        attrs["darks_field"] = str(darks)
        if dshape[-1] != shape[-1] or len(dshape) != len(shape):
            raise ValueError(f"{darks}: dark frames of shape {dshape[1:]} do not match the projections {shape[1:]} ({src})")
    a = None
    if angles is not None:
        values = read_angles_file(angles) if isinstance(angles, (str, os.PathLike)) else np.asarray(angles)
        name = str(angles) if isinstance(angles, (str, os.PathLike)) else "angles"
        attrs["angles_field"] = name
        a = angles_to_radians(values, angle_unit, src, name, default_unit=None)
    post_log = f is None
    scan = Scan(proj.astype(np.float32), f, d, a, None, post_log, src, attrs)
    return check_scan(scan)


def write_reconstruction_tiff(path, image, geometry=None, settings: dict | None = None) -> None:
    """Write a reconstruction `(H, W)` as a float32 TIFF; the ImageDescription tag holds JSON
    `{"shape": ..., "geometry": ..., "settings": ...}` (read it with `tifffile.TiffFile(path).pages[0].description`).
    """
    tifffile = _tifffile()
    image = np.asarray(image, np.float32)
    # "shape" first: tifffile reads a JSON description as its own "shaped" metadata and needs that key
    meta = {"shape": list(image.shape), "geometry": None if geometry is None else geometry_to_dict(geometry),
            "settings": dict(settings or {})}
    tifffile.imwrite(path, image, description=json.dumps(meta), metadata=None)
