"""Readers and writers: the round trip phantom -> counts with flats/darks and Poisson noise -> each layout
(DXchange HDF5, TIFF stack, NumPy) written with h5py/tifffile/NumPy directly -> read -> pre-process ->
FBP, against the direct path; and the errors for bad input."""

import json
import warnings

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tifffile

from jaxrecon.data import (
    normalize,
    read_hdf5,
    read_numpy,
    read_scan,
    read_tiff,
    simulate_counts,
    write_reconstruction,
    write_scan,
)
from jaxrecon.operators import ParallelBeamGeometry, fbp, poisson_noise, radon
from jaxrecon.phantoms import shepp_logan

N, A, D, ROWS = 32, 40, 47, 3
PHOTONS, MU = 1e4, 0.02


@pytest.fixture(scope="module")
def scan():
    geom = ParallelBeamGeometry.uniform((N, N), A, D)
    x = shepp_logan(N)
    y = radon(x, geom)
    proj, flats, darks = simulate_counts(jax.random.key(1), y, PHOTONS, MU, num_flats=6, num_darks=4, dark_level=5.0)
    # 3 detector rows: the slice in the middle row, other rows differ (so a wrong row is caught)
    stack = lambda a: np.stack([np.asarray(a) * 0.5, np.asarray(a), np.asarray(a) * 0.25], axis=1)  # noqa: E731
    return dict(geom=geom, x=x, y=y, proj=np.asarray(proj), flats=np.asarray(flats), darks=np.asarray(darks),
                proj3=stack(proj).astype(np.uint16), flats3=stack(flats).astype(np.uint16),
                darks3=stack(darks).astype(np.uint16))


_fbp = jax.jit(fbp, static_argnums=2)


def _rec(y, geom):
    return np.asarray(_fbp(jnp.asarray(y), geom, "hann"))


def _check_round_trip(s, read):
    y, clipped = normalize(read.projections, read.flats, read.darks, mu=MU)
    y_mem, _ = normalize(s["proj"], s["flats"], s["darks"], mu=MU)
    # lossless I/O (integer counts): the in-memory pre-processing up to float32 rounding (readers give float32;
    # dividing the log by mu = 0.02 amplifies it to ~1e-5)
    np.testing.assert_allclose(np.asarray(y), np.asarray(y_mem), rtol=0, atol=1e-4)
    geom = read.parallel_geometry((N, N))
    np.testing.assert_allclose(np.asarray(geom.angles), np.asarray(s["geom"].angles), atol=1e-6)
    clean = _rec(s["y"], s["geom"])
    err_file = np.linalg.norm(_rec(y, geom) - clean)
    # the direct path: the same photon count through jaxrecon.operators.poisson_noise (no flats/darks)
    errs = [np.linalg.norm(_rec(poisson_noise(jax.random.key(k), s["y"], PHOTONS, MU), s["geom"]) - clean)
            for k in range(3)]
    # measured: file path / direct path 1.05-1.07 (flats and darks add a little noise)
    assert 0.8 * min(errs) < err_file < 1.3 * max(errs), (err_file, errs)
    assert int(clipped) == 0


@pytest.mark.slow
def test_dxchange_round_trip_written_with_h5py(tmp_path, scan):
    path = tmp_path / "scan.h5"
    with h5py.File(path, "w") as f:  # another tool's file: h5py directly, theta in degrees, no units attribute
        f["exchange/data"] = scan["proj3"]
        f["exchange/data_white"] = scan["flats3"]
        f["exchange/data_dark"] = scan["darks3"]
        f["exchange/theta"] = np.rad2deg(np.asarray(scan["geom"].angles, np.float64))
    read = read_hdf5(path)  # middle row by default
    assert read.projections.shape == (A, D) and read.flats.shape == (6, D) and not read.post_log
    _check_round_trip(scan, read)
    assert np.allclose(read_hdf5(path, row=0).projections, scan["proj3"][:, 0])


def test_our_scan_writer_round_trip_keeps_the_geometry(tmp_path, scan):
    geom = ParallelBeamGeometry(
        (N, N), scan["geom"].angles, D, detector_spacing=1.1, detector_offset=0.75
    )
    path = tmp_path / "ours.h5"
    write_scan(path, scan["proj"], scan["flats"], scan["darks"], geometry=geom)
    read = read_scan(path)
    assert read.geometry is not None
    assert float(read.geometry.detector_spacing) == pytest.approx(1.1)
    assert float(read.geometry.detector_offset) == pytest.approx(0.75)
    np.testing.assert_allclose(read.angles, np.asarray(geom.angles), atol=1e-12)
    with h5py.File(path) as f:  # DXchange convention: degrees
        assert f["exchange/theta"].attrs["units"] == "degrees"
        np.testing.assert_allclose(f["exchange/theta"][()], np.rad2deg(np.asarray(geom.angles)))


def test_tiff_stack_round_trip_written_with_tifffile(tmp_path, scan):
    tifffile.imwrite(tmp_path / "proj.tif", scan["proj3"], photometric="minisblack")  # multi-page: one projection per page
    folder = tmp_path / "flats"
    folder.mkdir()
    for k, frame in enumerate(scan["flats3"]):  # a folder of single-page files
        tifffile.imwrite(folder / f"flat_{k:02d}.tif", frame)
    tifffile.imwrite(tmp_path / "darks.tif", scan["darks3"], photometric="minisblack")
    (tmp_path / "angles.txt").write_text("\n".join(f"{a:.10f}" for a in np.rad2deg(np.asarray(scan["geom"].angles))))
    with pytest.warns(UserWarning, match="reading the angles as degrees"):
        read = read_tiff(tmp_path / "proj.tif", flats=folder, darks=tmp_path / "darks.tif",
                         angles=tmp_path / "angles.txt")
    _check_round_trip(scan, read)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_tiff(tmp_path / "proj.tif", flats=folder, darks=tmp_path / "darks.tif", angles=tmp_path / "angles.txt",
                  angle_unit="degree")


def test_numpy_round_trip(tmp_path, scan):
    np.savez(tmp_path / "scan.npz", projections=scan["proj3"], flats=scan["flats3"], darks=scan["darks3"],
             angles=np.asarray(scan["geom"].angles))
    _check_round_trip(scan, read_numpy(tmp_path / "scan.npz"))
    np.save(tmp_path / "sino.npy", np.asarray(scan["y"]))
    read = read_scan(tmp_path / "sino.npy")
    assert read.post_log and read.angles is None
    np.testing.assert_allclose(read.projections, np.asarray(scan["y"]), rtol=1e-6)


def test_reconstruction_writers_store_geometry_and_settings(tmp_path, scan):
    image = np.asarray(scan["x"])
    write_reconstruction(tmp_path / "rec.h5", image, scan["geom"], {"method": "fbp", "filter": "hann"})
    with h5py.File(tmp_path / "rec.h5") as f:
        d = f["reconstruction"]
        np.testing.assert_allclose(d[()], image, rtol=1e-6)
        assert d.attrs["method"] == "fbp" and json.loads(d.attrs["settings"])["filter"] == "hann"
        g = json.loads(d.attrs["geometry"])
        assert g["type"] == "parallel" and g["shape"] == [N, N] and len(g["angles"]) == A
    write_reconstruction(tmp_path / "rec.tif", image, scan["geom"], {"method": "fbp"})
    with tifffile.TiffFile(tmp_path / "rec.tif") as t:
        np.testing.assert_allclose(t.asarray(), image, rtol=1e-6)
        meta = json.loads(t.pages[0].description)
    assert meta["settings"]["method"] == "fbp" and meta["geometry"]["num_detectors"] == D


# --- bad input --------------------------------------------------------------------------------------


def _h5(path, **fields):
    with h5py.File(path, "w") as f:
        for name, value in fields.items():
            f[name.replace("__", "/")] = value
    return path


def test_missing_file_and_missing_fields(tmp_path, scan):
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        read_scan(tmp_path / "nope.h5")
    p = _h5(tmp_path / "a.h5", exchange__data_white=scan["flats"])
    with pytest.raises(ValueError, match=r"a\.h5: missing field 'exchange/data'"):
        read_scan(p)
    p = _h5(tmp_path / "b.h5", exchange__data=scan["proj3"])  # integer counts, no flats
    with pytest.raises(ValueError, match=r"b\.h5: missing field 'exchange/data_white'"):
        read_scan(p)
    p = _h5(tmp_path / "c.h5", other=np.ones(3))
    with pytest.raises(ValueError, match=r"c\.h5: no field 'exchange/data'.*\['other'\]"):
        read_scan(p)
    np.savez(tmp_path / "d.npz", flats=scan["flats"])
    with pytest.raises(ValueError, match=r"d\.npz: missing field 'projections'"):
        read_scan(tmp_path / "d.npz")


def test_mismatched_shapes_name_file_and_field(tmp_path, scan):
    p = _h5(tmp_path / "m.h5", exchange__data=scan["proj"], exchange__data_white=scan["flats"][:, :-1])
    with pytest.raises(ValueError, match=r"m\.h5: field 'exchange/data_white' has shape \(6, 46\); expected \(frames, 47\)"):
        read_scan(p)
    p = _h5(tmp_path / "t.h5", exchange__data=scan["proj"], exchange__data_white=scan["flats"],
            exchange__theta=np.arange(A - 1, dtype=float))
    with pytest.raises(ValueError, match=r"t\.h5: field 'exchange/theta' has 39 angles, expected 40"):
        read_scan(p)
    with pytest.raises(ValueError, match=r"row 5 is outside field 'exchange/data'"):
        _h5(tmp_path / "r.h5", exchange__data=scan["proj3"], exchange__data_white=scan["flats3"])
        read_scan(tmp_path / "r.h5", row=5)


def test_angles_in_the_wrong_unit_warn(tmp_path, scan):
    radians = np.asarray(scan["geom"].angles, np.float64)
    p = _h5(tmp_path / "u.h5", exchange__data=scan["proj"], exchange__data_white=scan["flats"],
            exchange__theta=radians)  # DXchange expects degrees
    with pytest.warns(UserWarning, match=r"u\.h5: field 'exchange/theta' spans only 3.063 degrees: the angles look like radians"):
        read_scan(p)
    read = read_scan(p, angle_unit="radian")
    np.testing.assert_allclose(read.angles, radians)
    p = _h5(tmp_path / "v.h5", sinogram=np.asarray(scan["y"]), angles=np.rad2deg(radians))
    with pytest.warns(UserWarning, match=r"v\.h5: field 'angles' spans 175.5 'radians'.*look like degrees"):
        read_scan(p)


def test_truncated_files_are_named(tmp_path, scan):
    p = _h5(tmp_path / "full.h5", exchange__data=scan["proj"], exchange__data_white=scan["flats"])
    data = p.read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.h5: .*truncated"):
        read_scan(tmp_path / "cut.h5")
    tifffile.imwrite(tmp_path / "full.tif", scan["proj3"], photometric="minisblack")
    data = (tmp_path / "full.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.tif.*truncated"):
        read_scan(tmp_path / "cut.tif", flats=tmp_path / "full.tif")
    np.savez(tmp_path / "full.npz", projections=scan["proj"], flats=scan["flats"])
    data = (tmp_path / "full.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.npz.*truncated"):
        read_scan(tmp_path / "cut.npz")
