"""Measured data: readers and writers (HDF5/DXchange, TIFF, NumPy), pre-processing (flat/dark correction,
negative log, ring removal, Poisson count simulation) and the LoDoPaB-CT dataset.

This package sits at the bottom floor: it knows geometries (`jaxrecon.operators`), never solvers,
networks or training. Pre-processing functions are pure and jittable; readers return NumPy arrays.
"""

from .hdf5 import read_hdf5, write_reconstruction_hdf5, write_scan
from .io import read_scan, write_preview, write_reconstruction
from .lodopab import LoDoPaB, lodopab_geometry, lodopab_psnr, lodopab_ssim
from .numpy_io import read_numpy
from .preprocess import MIN_COUNT, flat_dark_correct, negative_log, normalize, remove_rings, simulate_counts
from .scan import Scan, angles_to_radians, geometry_from_dict, geometry_to_dict
from .tiff import read_tiff, write_reconstruction_tiff

__all__ = [
    "LoDoPaB",
    "MIN_COUNT",
    "Scan",
    "angles_to_radians",
    "flat_dark_correct",
    "geometry_from_dict",
    "geometry_to_dict",
    "lodopab_geometry",
    "lodopab_psnr",
    "lodopab_ssim",
    "negative_log",
    "normalize",
    "read_hdf5",
    "read_numpy",
    "read_scan",
    "read_tiff",
    "remove_rings",
    "simulate_counts",
    "write_preview",
    "write_reconstruction",
    "write_reconstruction_hdf5",
    "write_reconstruction_tiff",
    "write_scan",
]
