"""`jaxrecon reconstruct` from the command line, on files written by h5py / tifffile directly."""

import os
import subprocess
import sys
from pathlib import Path

import h5py
import jax
import numpy as np
import pytest
import tifffile

from jaxrecon.cli import main
from jaxrecon.data import normalize, simulate_counts
from jaxrecon.metrics import psnr
from jaxrecon.operators import ParallelBeamGeometry, fbp, radon
from jaxrecon.phantoms import shepp_logan

ROOT = Path(__file__).resolve().parents[2]  # this checkout, so the subprocess imports its code
N, A, D, MU = 32, 40, 32, 0.02


@pytest.fixture(scope="module")
def counts():
    geom = ParallelBeamGeometry.uniform((N, N), A, D)
    p, f, d = simulate_counts(jax.random.key(0), radon(shepp_logan(N), geom), 1e4, MU, num_flats=4, num_darks=2,
                              dark_level=3.0)
    return geom, np.asarray(p).astype(np.uint16), np.asarray(f).astype(np.uint16), np.asarray(d).astype(np.uint16)


def _dxchange(path, counts, theta=None):
    geom, p, f, d = counts
    with h5py.File(path, "w") as h:
        h["exchange/data"] = p[:, None, :]  # (angles, 1 row, columns)
        h["exchange/data_white"] = f[:, None, :]
        h["exchange/data_dark"] = d[:, None, :]
        h["exchange/theta"] = np.rad2deg(np.asarray(geom.angles)) if theta is None else theta
    return path


def _run(*args):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "jaxrecon", "reconstruct", *map(str, args)],
                          capture_output=True, text=True, timeout=180, env=env, cwd=ROOT)


@pytest.mark.slow
def test_command_line_fbp_on_an_h5py_file(tmp_path, counts):
    geom, p, f, d = counts
    scan = _dxchange(tmp_path / "scan.h5", counts)
    proc = _run(scan, "--mu", MU, "--output", tmp_path / "out" / "rec.h5")
    assert proc.returncode == 0, proc.stderr
    assert "0 of 1280 values clipped" in proc.stdout and "wrote" in proc.stdout
    with h5py.File(tmp_path / "out" / "rec.h5") as h:
        rec = h["reconstruction"][()]
        assert h["reconstruction"].attrs["method"] == "fbp"
    assert (tmp_path / "out" / "rec.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the command computes what the library does
    y, _ = normalize(p, f, d, mu=MU)
    np.testing.assert_allclose(rec, np.asarray(fbp(y, geom, "hann")), atol=2e-4)
    # measured 16.09 dB against the phantom (FBP, hann, 1e4 photons); transposed 12.46, zeros 12.07
    assert float(psnr(rec, np.asarray(shepp_logan(N)), data_range=1.0)) > 15.8


@pytest.mark.slow
def test_command_line_error_is_one_line(tmp_path, counts):
    geom, p, f, d = counts
    with h5py.File(tmp_path / "bad.h5", "w") as h:
        h["exchange/data"] = p
        h["exchange/data_white"] = f[:, :-2]
    proc = _run(tmp_path / "bad.h5")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "bad.h5: field 'exchange/data_white' has shape (4, 30)" in lines[0], proc.stderr
    proc = _run(tmp_path / "bad.h5", "--debug")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


@pytest.mark.slow
def test_iterative_methods_and_tiff_in_process(tmp_path, counts, capsys):
    geom, p, f, d = counts
    tifffile.imwrite(tmp_path / "proj.tif", p[:, None, :], photometric="minisblack")
    tifffile.imwrite(tmp_path / "flats.tif", f[:, None, :], photometric="minisblack")
    np.savetxt(tmp_path / "angles.txt", np.asarray(geom.angles))
    out = tmp_path / "rec.tif"
    assert main(["reconstruct", str(tmp_path / "proj.tif"), "--flats", str(tmp_path / "flats.tif"), "--angles",
                 str(tmp_path / "angles.txt"), "--method", "cgls", "--iterations", "10", "--mu", str(MU),
                 "--output", str(out), "--no-progress", "--centre", "auto"]) == 0
    rec = tifffile.imread(out)
    assert rec.shape == (D, D)
    assert "centre offset" in capsys.readouterr().out
    # measured 17.60 dB in-process with the known centre (10 CGLS iterations); transposed 10.40
    assert float(psnr(rec, np.asarray(shepp_logan(N)), data_range=1.0)) > 16.5
    _dxchange(tmp_path / "deg.h5", counts, theta=np.asarray(geom.angles))  # radians where degrees belong
    assert main(["reconstruct", str(tmp_path / "deg.h5"), "--method", "tv", "--iterations", "20", "--mu", str(MU),
                 "--no-progress"]) == 0
    assert "warning: " in capsys.readouterr().err and (tmp_path / "deg_tv.png").exists()


@pytest.mark.slow
def test_lpd_with_the_shipped_model_in_its_geometry(tmp_path, capsys):
    # the shipped LPD's setting: 64 x 64, 30 views, 91 detectors; counts at 1e4 photons
    n, mu = 64, 0.02
    geom = ParallelBeamGeometry.uniform((n, n), 30, 91)
    truth = np.asarray(shepp_logan(n))
    p, f, d = simulate_counts(jax.random.key(1), radon(shepp_logan(n), geom), 1e4, mu, num_flats=4, num_darks=2)
    scan = _dxchange(tmp_path / "scan.h5", (geom, *(np.asarray(a).astype(np.uint16) for a in (p, f, d))))
    scores = {}
    for method in ("fbp", "lpd"):
        out = tmp_path / f"{method}.h5"
        assert main(["reconstruct", str(scan), "--method", method, "--mu", str(mu), "--output", str(out),
                     "--size", str(n), "--no-progress"]) == 0
        with h5py.File(out) as h:
            scores[method] = float(psnr(h["reconstruction"][()], truth, data_range=1.0))
    # measured: FBP (hann) 18.05 dB, LPD 21.43 dB (Poisson counts, not the 5% Gaussian noise it was trained on)
    assert scores["lpd"] > scores["fbp"] + 2, scores
