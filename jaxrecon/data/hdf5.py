r"""HDF5 scans and reconstructions (h5py): the DXchange layout, a plain sinogram layout, and writers.

**Read** (`read_hdf5`), in this order:

- DXchange (APS, TomoPy; `dxchange.read_aps_32id`): `exchange/data` projections
  `(angles, rows, columns)` or `(angles, detectors)`, `exchange/data_white` flats, `exchange/data_dark`
  darks, `exchange/theta` angles **in degrees** (the DXchange convention; a `units` attribute
  "rad"/"deg" overrides it). Counts are pre-log when flats are present.
- Plain: a dataset `sinogram` (post-log, `(angles, detectors)`) with optional `angles` (radians unless a
  `units` attribute says degrees).

From 3D projections one detector row is read (`row`, default the middle one) with an HDF5 hyperslab,
so a file larger than memory is fine: only `(angles, columns)` values are loaded. A geometry written
by `write_scan` (root attribute `jaxrecon_geometry`, JSON) is restored.

**Write**: `write_scan` (the DXchange layout, theta in degrees, plus the geometry) and
`write_reconstruction_hdf5` (dataset `reconstruction` with the geometry and settings as JSON attributes).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .scan import Scan, angles_to_radians, check_scan, geometry_from_dict, geometry_to_dict, take_row
from .scan import read_field, unit_from_attribute

__all__ = ["read_hdf5", "write_scan", "write_reconstruction_hdf5"]


def _h5py():
    try:
        import h5py
    except ImportError:  # pragma: no cover
        raise ImportError("reading HDF5 needs h5py: pip install h5py (or pip install 'jaxrecon[data]')") from None
    return h5py


def _open(path):
    h5py = _h5py()
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: not a readable HDF5 file ({e}); the file may be truncated or corrupt") from None


def _attr_str(obj, name):
    v = obj.attrs.get(name)
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    return None if v is None else str(v)


def read_hdf5(path: str | os.PathLike, *, row: int | None = None, angle_unit: str = "auto") -> Scan:
    """Read one slice of a scan from an HDF5 file (DXchange or plain layout; see the module docstring).

    Args:
        path: the file.
        row: detector row of 3D projections (default: the middle row); must be None or 0 for 2D data.
        angle_unit: "auto" (the layout's convention or the `units` attribute), "degree" or "radian".

    Returns:
        A `Scan`; errors name the file and the field (missing datasets, mismatched shapes, a
        truncated file). Angles that look like the wrong unit give a `UserWarning`.

    Example:
        >>> scan = read_hdf5("tomo_0001.h5", row=512)
        >>> y, clipped = normalize(scan.projections, scan.flats, scan.darks)
    """
    src = str(path)
    with _open(path) as f:
        if "exchange" in f and isinstance(f["exchange"], _h5py().Group):
            return _read_dxchange(f, src, row, angle_unit)
        if "sinogram" in f:
            return _read_plain(f, src, row, angle_unit)
        names = sorted(f.keys())
        raise ValueError(
            f"{src}: no field 'exchange/data' (DXchange layout) or 'sinogram' (plain layout) in this file; "
            f"its top-level entries are {names}"
        )


def _stored_geometry(f, src):
    text = _attr_str(f, "jaxrecon_geometry")
    return None if text is None else geometry_from_dict(text, src, "jaxrecon_geometry")


def _read_angles(f, name, src, angle_unit, default_unit):
    if name not in f:
        return None
    ds = f[name]
    unit = unit_from_attribute(ds.attrs.get("units"))
    if unit is not None and angle_unit == "auto":
        angle_unit = unit
    values = read_field(ds, (), src, name)
    return angles_to_radians(values, angle_unit, src, name, default_unit=default_unit)


def _read_dxchange(f, src, row, angle_unit) -> Scan:
    ex = f["exchange"]
    if "data" not in ex:
        raise ValueError(f"{src}: missing field 'exchange/data' (the projections); 'exchange' holds {sorted(ex.keys())}")
    data = ex["data"]
    for name in ("data_white", "data_dark"):
        if name in ex and (ex[name].ndim != data.ndim or ex[name].shape[1:] != data.shape[1:]):
            raise ValueError(f"{src}: field 'exchange/{name}' has shape {ex[name].shape}; expected (frames, "
                             f"{', '.join(map(str, data.shape[1:]))}) to match 'exchange/data' {data.shape}")
    projections = take_row(data, row, src, "exchange/data")
    flats = take_row(ex["data_white"], row, src, "exchange/data_white") if "data_white" in ex else None
    darks = take_row(ex["data_dark"], row, src, "exchange/data_dark") if "data_dark" in ex else None
    angles = _read_angles(f, "exchange/theta", src, angle_unit, "degree")
    quantity = _attr_str(data, "jaxrecon_quantity")
    post_log = (quantity == "post-log") if quantity is not None else flats is None
    if not post_log and flats is None:
        raise ValueError(f"{src}: missing field 'exchange/data_white' (flat fields): 'exchange/data' holds counts "
                         "that need them")
    if flats is None and np.issubdtype(data.dtype, np.integer):
        raise ValueError(f"{src}: missing field 'exchange/data_white' (flat fields): 'exchange/data' holds integer "
                         f"counts ({data.dtype}) that need them")
    scan = Scan(projections.astype(np.float64 if projections.dtype == np.float64 else np.float32),
                None if flats is None else flats.astype(np.float32),
                None if darks is None else darks.astype(np.float32),
                angles, _stored_geometry(f, src), post_log, src,
                {"projections_field": "exchange/data", "flats_field": "exchange/data_white",
                 "darks_field": "exchange/data_dark", "angles_field": "exchange/theta", "shape": tuple(data.shape)})
    return check_scan(scan)


def _read_plain(f, src, row, angle_unit) -> Scan:
    sino = take_row(f["sinogram"], row, src, "sinogram")
    angles = _read_angles(f, "angles", src, angle_unit, "radian")
    scan = Scan(sino.astype(np.float64 if sino.dtype == np.float64 else np.float32), None, None, angles,
                _stored_geometry(f, src), True, src,
                {"projections_field": "sinogram", "angles_field": "angles", "shape": tuple(f["sinogram"].shape)})
    return check_scan(scan)


def write_scan(path, projections, flats=None, darks=None, angles=None, geometry=None, *, post_log: bool = False):
    r"""Write a scan in the DXchange layout: `exchange/data`, `exchange/data_white`, `exchange/data_dark`,
    `exchange/theta` (degrees, `units="degrees"`), and the geometry as the JSON root attribute
    `jaxrecon_geometry`. `angles` are in radians (default: the geometry's). Projections are written
    in chunks of one angle (`(1, *det)`), the layout lazy readers expect.

    Example:
        >>> write_scan("scan.h5", proj, flats, darks, geometry=geom)
    """
    h5py = _h5py()
    projections = np.asarray(projections)
    if angles is None and geometry is not None:
        angles = np.asarray(geometry.angles)
    with h5py.File(path, "w") as f:
        ex = f.create_group("exchange")
        d = ex.create_dataset("data", data=projections, chunks=(1, *projections.shape[1:]))
        d.attrs["jaxrecon_quantity"] = "post-log" if post_log else "counts"
        if flats is not None:
            ex.create_dataset("data_white", data=np.asarray(flats))
        if darks is not None:
            ex.create_dataset("data_dark", data=np.asarray(darks))
        if angles is not None:
            t = ex.create_dataset("theta", data=np.rad2deg(np.asarray(angles, np.float64)))
            t.attrs["units"] = "degrees"
        if geometry is not None:
            f.attrs["jaxrecon_geometry"] = json.dumps(geometry_to_dict(geometry))


def write_reconstruction_hdf5(path, image, geometry=None, settings: dict | None = None) -> None:
    """Write a reconstruction `(H, W)` as dataset `reconstruction` (float32) with attributes
    `geometry` (JSON of `geometry_to_dict`), `settings` (JSON) and each setting as its own attribute.

    Example:
        >>> write_reconstruction_hdf5("rec.h5", x, geom, {"method": "fbp", "filter": "hann"})
    """
    h5py = _h5py()
    image = np.asarray(image, np.float32)
    with h5py.File(path, "w") as f:
        d = f.create_dataset("reconstruction", data=image)
        if geometry is not None:
            d.attrs["geometry"] = json.dumps(geometry_to_dict(geometry))
        settings = dict(settings or {})
        d.attrs["settings"] = json.dumps(settings)
        for k, v in settings.items():
            if isinstance(v, (bool, int, float, str)):
                d.attrs[k] = v
