r"""A measured scan as arrays plus geometry, and the conventions the readers share (angle units,
geometry stored as attributes).

A `Scan` is one 2D slice: `projections` `(angles, detectors)`, either raw counts (with `flats` and
optionally `darks`, each `(frames, detectors)`) or an already normalised post-log sinogram
(`post_log=True`); `angles` in radians; `geometry` when the file stored one (files written by
`write_scan`), else None (`Scan.parallel_geometry` builds the parallel-beam default).
"""

from __future__ import annotations

import json
import math
import warnings
from typing import Any, NamedTuple

import numpy as np

__all__ = ["Scan", "geometry_to_dict", "geometry_from_dict", "angles_to_radians", "ANGLE_UNITS"]

ANGLE_UNITS = ("auto", "degree", "radian")
_DEGREE_NAMES = {"deg", "degree", "degrees"}
_RADIAN_NAMES = {"rad", "radian", "radians"}


class Scan(NamedTuple):
    """One slice of a scan, as read from a file (NumPy arrays).

    Attributes:
        projections: `(angles, detectors)` counts, or the post-log sinogram if `post_log`.
        flats: `(frames, detectors)` open-beam counts, or None.
        darks: `(frames, detectors)` dark counts, or None.
        angles: `(angles,)` in radians, or None if the file has none.
        geometry: the geometry stored in the file (`geometry_from_dict`), or None.
        post_log: whether `projections` is already a post-log sinogram (line integrals).
        source: the file it came from (for messages).
        attrs: other metadata (a dict of plain values).
    """

    projections: np.ndarray
    flats: np.ndarray | None
    darks: np.ndarray | None
    angles: np.ndarray | None
    geometry: Any
    post_log: bool
    source: str
    attrs: dict

    def parallel_geometry(self, shape: tuple[int, int] | None = None, detector_offset: float = 0.0):
        """The stored geometry, else a `ParallelBeamGeometry` with the file's angles (default
        $k\\pi/A$), unit detector spacing and a square image of side `detectors` (or `shape`)."""
        from jaxrecon.operators import ParallelBeamGeometry

        if self.geometry is not None and shape is None and detector_offset == 0.0:
            return self.geometry
        num_angles, num_det = self.projections.shape
        angles = self.angles if self.angles is not None else np.arange(num_angles) * (np.pi / num_angles)
        shape = (num_det, num_det) if shape is None else tuple(shape)
        return ParallelBeamGeometry(shape, _float_angles(angles), num_det, 1.0, detector_offset)


def _float_angles(angles) -> np.ndarray:
    """float64 angles as float32 unless JAX's x64 mode is on (jnp would truncate them anyway)."""
    import jax

    a = np.asarray(angles, np.float64)
    return a if jax.config.jax_enable_x64 else a.astype(np.float32)


def angles_to_radians(values, unit: str, source: str, field: str, default_unit: str | None = "radian") -> np.ndarray:
    r"""Angles in radians from `values` in `unit` ("degree", "radian" or "auto"), with a heuristic check.

    "auto" uses `default_unit` (the format's convention, e.g. degrees for DXchange's `exchange/theta`);
    with `default_unit=None` (formats without a convention: TIFF, NumPy) it guesses degrees when the
    values span more than $2\pi$, radians otherwise, and warns when it guesses degrees.
    Heuristic (a `UserWarning` naming the file and field, never an error): values read as radians that
    span more than $2\pi$ look like degrees; values read as degrees that span at most $2\pi$ (e.g.
    0 to 3.14) look like radians. A scan rarely covers more than one turn or less than 7 degrees.
    """
    if unit not in ANGLE_UNITS:
        raise ValueError(f"angle unit must be one of {ANGLE_UNITS}, got {unit!r}")
    a = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{source}: field {field!r} holds non-finite angles")
    span = float(a.max() - a.min()) if a.size else 0.0
    if unit == "auto" and default_unit is None:
        if span > 2 * math.pi * (1 + 1e-6):
            warnings.warn(f"{source}: field {field!r} spans {span:.4g}, more than 2 pi: reading the angles as degrees "
                          "(pass angle_unit='radian' or 'degree' to say so)", UserWarning, stacklevel=3)
            return np.deg2rad(a)
        return a
    unit = default_unit if unit == "auto" else unit
    if unit == "radian" and span > 2 * math.pi * (1 + 1e-6):
        warnings.warn(
            f"{source}: field {field!r} spans {span:.4g} 'radians' (more than one turn): the angles look like "
            "degrees; pass angle_unit='degree' (CLI: --angle-unit degree) if they are",
            UserWarning, stacklevel=3,
        )
    if unit == "degree" and 0 < span <= 2 * math.pi * (1 + 1e-6) and len(a) > 2:
        warnings.warn(
            f"{source}: field {field!r} spans only {span:.4g} degrees: the angles look like radians; pass "
            "angle_unit='radian' (CLI: --angle-unit radian) if they are",
            UserWarning, stacklevel=3,
        )
    return np.deg2rad(a) if unit == "degree" else a


def unit_from_attribute(value) -> str | None:
    """'degree' / 'radian' from a `units` attribute (bytes or str), None if absent or unknown."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    value = str(value).strip().lower()
    if value in _DEGREE_NAMES:
        return "degree"
    if value in _RADIAN_NAMES:
        return "radian"
    return None


def geometry_to_dict(geom) -> dict:
    """A JSON-ready description of a parallel- or fan-beam geometry (stored as a file attribute)."""
    from jaxrecon.operators import FanBeamGeometry, ParallelBeamGeometry

    if isinstance(geom, ParallelBeamGeometry):
        return {
            "type": "parallel",
            "shape": list(geom.shape),
            "angles": np.asarray(geom.angles, np.float64).tolist(),
            "num_detectors": geom.num_detectors,
            "detector_spacing": float(geom.detector_spacing),
            "detector_offset": float(geom.detector_offset),
        }
    if isinstance(geom, FanBeamGeometry):
        return {
            "type": "fan",
            "shape": list(geom.shape),
            "angles": np.asarray(geom.angles, np.float64).tolist(),
            "num_detectors": geom.num_detectors,
            "source_origin": float(geom.source_origin),
            "origin_detector": float(geom.origin_detector),
            "detector_spacing": float(geom.detector_spacing),
            "detector_offset": float(geom.detector_offset),
            "detector": geom.detector,
        }
    raise TypeError(f"cannot store a geometry of type {type(geom).__name__} (parallel or fan beam only)")


def geometry_from_dict(d: dict | str, source: str = "<dict>", field: str = "geometry"):
    """The geometry described by `geometry_to_dict` (or its JSON string)."""
    from jaxrecon.operators import FanBeamGeometry, ParallelBeamGeometry

    try:
        if isinstance(d, (bytes, str)):
            d = json.loads(d)
        kind = d["type"]
        shape = tuple(int(n) for n in d["shape"])
        angles = _float_angles(d["angles"])
        if kind == "parallel":
            return ParallelBeamGeometry(shape, angles, int(d["num_detectors"]), d["detector_spacing"],
                                        d["detector_offset"])
        if kind == "fan":
            return FanBeamGeometry(shape, angles, int(d["num_detectors"]), d["source_origin"], d["origin_detector"],
                                   d["detector_spacing"], d["detector_offset"], detector=d["detector"])
        raise ValueError(f"unknown geometry type {kind!r}")
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
        raise ValueError(f"{source}: field {field!r} is not a valid geometry description ({e})") from None


def read_field(array, selection, source: str, field: str) -> np.ndarray:
    """`array[selection]` as a NumPy array; an I/O failure (a truncated or corrupt file) becomes a
    ValueError naming the file and the field."""
    try:
        return np.asarray(array[selection])
    except OSError as e:
        raise ValueError(f"{source}: field {field!r} could not be read ({e}); the file may be truncated or corrupt") from None


def take_row(array, row: int | None, source: str, field: str) -> np.ndarray:
    """A 2D slice `(frames, detectors)` of `array`: the whole array if 2D, `array[:, row, :]` if 3D
    (`row` default: the middle row). Only that slice is read from a lazy array (h5py dataset, memmap)."""
    shape = tuple(array.shape)
    if len(shape) == 2:
        if row not in (None, 0):
            raise ValueError(f"{source}: field {field!r} is 2D {shape} (a sinogram); row {row} does not exist")
        return read_field(array, (slice(None), slice(None)), source, field)
    if len(shape) == 3:
        rows = shape[1]
        r = rows // 2 if row is None else row
        if not 0 <= r < rows:
            raise ValueError(f"{source}: row {r} is outside field {field!r} of shape {shape} (rows 0..{rows - 1})")
        return read_field(array, (slice(None), r, slice(None)), source, field)
    raise ValueError(
        f"{source}: field {field!r} must be 2D (angles, detectors) or 3D (angles, rows, columns), got shape {shape}"
    )


def check_scan(scan: Scan) -> Scan:
    """Validate shapes and values of a `Scan` (errors name the file and the field)."""
    src = scan.source
    p = scan.projections
    if p.ndim != 2 or p.shape[0] < 1 or p.shape[1] < 2:
        raise ValueError(f"{src}: projections must be (angles, detectors) with at least 2 detectors, got {p.shape}")
    for name, frames in (("flats", scan.flats), ("darks", scan.darks)):
        if frames is not None and (frames.ndim != 2 or frames.shape[1:] != p.shape[1:] or frames.shape[0] < 1):
            raise ValueError(
                f"{src}: field {scan.attrs.get(name + '_field', name)!r} has shape {frames.shape}, expected "
                f"(frames, {p.shape[1]}) to match the projections' {p.shape[1]} detectors (projections {p.shape})"
            )
    if scan.angles is not None and scan.angles.shape != (p.shape[0],):
        raise ValueError(
            f"{src}: field {scan.attrs.get('angles_field', 'angles')!r} has {scan.angles.size} angles, expected "
            f"{p.shape[0]} (one per projection)"
        )
    if scan.geometry is not None:
        g = scan.geometry
        if tuple(g.sinogram_shape) != tuple(p.shape):
            raise ValueError(f"{src}: the stored geometry's sinogram shape {tuple(g.sinogram_shape)} does not match "
                             f"the projections {p.shape}")
    if not scan.post_log and scan.flats is None:
        raise ValueError(
            f"{src}: the projections are counts (field {scan.attrs.get('projections_field', 'projections')!r}) but the "
            "file has no flat fields to normalise them; give flats, or mark the data as post-log"
        )
    if not np.all(np.isfinite(p)) and scan.post_log:
        bad = int(np.sum(~np.isfinite(p)))
        raise ValueError(f"{src}: the post-log sinogram holds {bad} non-finite values")
    return scan
