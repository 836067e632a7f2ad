"""The `jaxrecon` command line: the demo end to end, option validation, `python -m jaxrecon`."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxrecon import cli
from jaxrecon.cli import main, simulate_and_reconstruct

SMALL = ["--size", "32", "--views", "8"]


def _corr(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def test_demo_writes_figure_and_metrics(tmp_path, capsys):
    out = tmp_path / "nested" / "out"  # created on demand
    assert main(["demo", *SMALL, "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "PSNR" in printed and "SSIM" in printed and "compile" in printed

    png, js = out / "demo.png", out / "demo.json"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    height, width, _ = matplotlib.image.imread(png).shape
    assert width > 2 * height  # three panels side by side

    result = json.loads(js.read_text())
    assert (result["size"], result["views"], result["noise"], result["filter"]) == (32, 8, 0.05, "hann")
    for name in ("psnr", "ssim", "relative_error"):
        assert math.isfinite(result[name]), name
    assert all(math.isfinite(t) and t >= 0 for t in result["timings_s"].values())
    # Measured at 32x32, 8 views, 5% noise, seed 0: PSNR 15.55 dB, SSIM 0.528. For comparison
    # (same phantom): zeros 12.1 dB, the constant mean 13.3 dB, the transposed reconstruction
    # 12.4 dB, half the reconstruction 14.4 dB / SSIM 0.31.
    assert result["psnr"] > 14.5
    assert 0.4 < result["ssim"] <= 1
    assert f"{result['psnr']:.2f}" in printed


def test_demo_reconstruction_is_oriented_and_scaled_like_the_phantom():
    data = simulate_and_reconstruct(32, 8, 0.05, 0, "hann")
    x, r = np.asarray(data.phantom), np.asarray(data.reconstruction)
    assert x.shape == r.shape == (32, 32)
    assert data.sinogram.shape == (8, data.geom.num_detectors)
    # FBP keeps the mean (the DC component): catches a wrong scaling (measured ratio 1.006).
    assert abs(r.mean() / x.mean() - 1) < 0.1
    # The asymmetric parts of the phantom and the reconstruction agree (measured correlations
    # 0.49, 0.47, 0.61); a flipped or transposed reconstruction would give the negatives.
    assert _corr(r - r[:, ::-1], x - x[:, ::-1]) > 0.25
    assert _corr(r - r[::-1], x - x[::-1]) > 0.25
    assert _corr(r - r.T, x - x.T) > 0.25


@pytest.mark.parametrize(
    "argv, message",
    [
        (["demo", "--size", "8"], "--size: must be an integer >= 16, got 8"),
        (["demo", "--size", "abc"], "--size: expected an integer"),
        (["demo", "--views", "0"], "--views: must be an integer >= 1, got 0"),
        (["demo", "--noise", "-0.1"], "--noise: must be a finite number >= 0"),
        (["demo", "--noise", "nan"], "--noise: must be a finite number >= 0"),
        (["demo", "--seed", "-1"], "--seed: must be an integer >= 0"),
        (["demo", "--filter", "gauss"], "--filter: invalid choice"),
        (["demo", "--bogus"], "unrecognized arguments: --bogus"),
        (["train"], "invalid choice: 'train'"),
        ([], "required: COMMAND"),
    ],
)
def test_bad_options_exit_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as excinfo:
        main(argv)
    assert excinfo.value.code == 2
    assert message in capsys.readouterr().err


def test_output_that_is_a_file_is_rejected(tmp_path, capsys):
    target = tmp_path / "a_file"
    target.write_text("")
    with pytest.raises(SystemExit) as excinfo:
        main(["demo", *SMALL, "--output", str(target)])
    assert excinfo.value.code == 2
    assert "is not a directory" in capsys.readouterr().err


def test_filter_choices_match_fbp():
    from jaxrecon.operators.fbp import FBP_FILTERS

    assert tuple(cli._FILTERS) == tuple(FBP_FILTERS)


def _run_module(*args):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, "-m", "jaxrecon", *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_python_dash_m_help():
    proc = _run_module("--help")
    assert proc.returncode == 0, proc.stderr
    assert "demo" in proc.stdout
    proc = _run_module("demo", "--help")
    assert proc.returncode == 0, proc.stderr
    for option in ("--size", "--views", "--noise", "--seed", "--filter", "--output"):
        assert option in proc.stdout
    proc = _run_module("demo", "--views", "0")
    assert proc.returncode == 2
    assert "--views" in proc.stderr
