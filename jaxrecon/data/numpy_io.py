r"""NumPy files: `.npy` (a sinogram `(angles, detectors)` or projections `(angles, rows, columns)`,
post-log) and `.npz` (named arrays: `projections` or `data`; `flats` or `data_white`; `darks` or
`data_dark`; `angles` (radians unless an `angle_unit` entry says "degree") or `theta` (degrees, as
in DXchange); `geometry`, a JSON string). `.npy` is memory-mapped, so only the row used is read.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from .scan import Scan, angles_to_radians, check_scan, geometry_from_dict, take_row

__all__ = ["read_numpy"]

_ALIASES = {"projections": ("projections", "data"), "flats": ("flats", "data_white"),
            "darks": ("darks", "data_dark")}


def read_numpy(path, *, row: int | None = None, angle_unit: str = "auto") -> Scan:
    """Read one slice of a scan from a `.npy` or `.npz` file (see the module docstring).

    Example:
        >>> scan = read_numpy("scan.npz")
    """
    p = Path(path)
    src = str(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")
    try:
        if p.suffix.lower() == ".npy":
            arr = np.load(p, mmap_mode="r", allow_pickle=False)
            sino = take_row(arr, row, src, "array")
            return check_scan(Scan(sino.astype(np.float32), None, None, None, None, True, src,
                                   {"projections_field": "array", "shape": arr.shape}))
        with np.load(p, allow_pickle=False) as z:
            return _read_npz(z, src, row, angle_unit)
    except (zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"{src}: not a readable NumPy file ({e}); the file may be truncated") from None
    except ValueError as e:
        if src in str(e):
            raise
        raise ValueError(f"{src}: not a readable NumPy file ({e}); the file may be truncated") from None


def _read_npz(z, src, row, angle_unit) -> Scan:
    names = set(z.files)
    found = {k: next((n for n in aliases if n in names), None) for k, aliases in _ALIASES.items()}
    if found["projections"] is None:
        raise ValueError(f"{src}: missing field 'projections' (or 'data'); the file holds {sorted(names)}")
    arrays = {k: None if n is None else take_row(z[n], row, src, n) for k, n in found.items()}
    angles = None
    if "angles" in names or "theta" in names:
        field = "angles" if "angles" in names else "theta"
        unit = angle_unit
        if unit == "auto" and "angle_unit" in names:
            unit = str(z["angle_unit"])
        angles = angles_to_radians(z[field], unit, src, field, default_unit="radian" if field == "angles" else "degree")
    geometry = geometry_from_dict(str(z["geometry"]), src, "geometry") if "geometry" in names else None
    flats = arrays["flats"]
    attrs = {"projections_field": found["projections"], "flats_field": found["flats"],
             "darks_field": found["darks"], "angles_field": "angles" if "angles" in names else "theta"}
    return check_scan(Scan(arrays["projections"].astype(np.float32), flats if flats is None else flats.astype(np.float32),
                           None if arrays["darks"] is None else arrays["darks"].astype(np.float32),
                           angles, geometry, flats is None, src, attrs))
