"""The `jaxrecon` command line: the demo end to end, option validation, `python -m jaxrecon`."""

import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from jaxrecon import cli
from jaxrecon.cli import main, simulate_and_reconstruct

SMALL = ["--size", "32", "--views", "8"]


def _corr(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


@pytest.mark.slow
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
        (["demo", "--methods", "fbp,foo"], "--methods: expected a comma-separated subset of fbp,tv,lpd"),
        (["demo", "--tv-alpha", "-1"], "--tv-alpha: must be a finite number >= 0"),
        (["train"], "the following arguments are required: --model"),
        (["train", "--model", "cnn"], "--model: invalid choice"),
        (["train", "--model", "lpd", "--preset", "huge"], "--preset: invalid choice"),
        (["train", "--model", "lpd", "--steps", "0"], "--steps: must be an integer >= 1, got 0"),
        (["train", "--model", "lpd", "--minutes", "0"], "--minutes: must be a finite number > 0, got 0"),
        (["train", "--model", "lpd", "--checkpoint-every", "0"], "--checkpoint-every: must be an integer >= 1"),
        (["train", "--model", "lpd", "--loss", "n2n"], "--loss: invalid choice"),
        (["train", "--model", "lpd", "--loss", "sure", "--loss-option", "epsilon"], "--loss-option: expected KEY=VALUE"),
        (["train", "--model", "dncnn", "--loss", "sure"], "--loss and --loss-option apply to reconstruction models"),
        (["train", "--model", "dncnn", "--data", "lodopab:x"], "the dncnn denoiser trains on random-ellipse images"),
        (["train", "--model", "lpd", "--coordinator-address", "host"], "--coordinator-address: expected HOST:PORT"),
        (["train", "--model", "lpd", "--coordinator-address", "h:1", "--num-processes", "2"],
         "give --coordinator-address, --num-processes and --process-id together, or --distributed"),
        (["train", "--model", "lpd", "--coordinator-address", "h:1", "--num-processes", "2", "--process-id", "2"],
         "--process-id: must be below --num-processes 2, got 2"),
        (["train", "--model", "lpd", "--num-processes", "0"], "--num-processes: must be an integer >= 1, got 0"),
        (["evaluate"], "the following arguments are required: checkpoint"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
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


def test_model_and_preset_choices_match_experiments():
    from jaxrecon.train.denoiser import DENOISERS
    from jaxrecon.train.experiment import LOSSES, MODELS, PRESETS

    assert tuple(cli._MODELS) == tuple(MODELS) and tuple(cli._PRESETS) == tuple(PRESETS)
    assert tuple(cli._LOSSES) == tuple(LOSSES) and tuple(cli._DENOISERS) == tuple(DENOISERS)


def test_train_config_of_a_self_supervised_loss():
    args = cli.build_parser().parse_args(
        ["train", "--model", "lpd", "--loss", "noise2inverse", "--loss-option", "num_splits=3",
         "--loss-option", "domain=image", "--steps", "5"])
    config, output = cli._train_config(args)
    assert config["train"]["loss"] == "noise2inverse" and config["train"]["steps"] == 5
    assert config["train"]["loss_options"] == {"num_splits": 3, "domain": "image", "filter": "ram-lak"}
    assert output.as_posix() == "runs/lpd_quick_noise2inverse"
    config, output = cli._train_config(cli.build_parser().parse_args(["train", "--model", "dncnn"]))
    assert config["model"] == "dncnn" and output.as_posix() == "runs/dncnn_quick"
    assert cli._train_config(cli.build_parser().parse_args(["train", "--model", "lpd"]))[1].as_posix() == "runs/lpd_quick"


def test_an_output_holding_another_loss_or_model_is_refused(tmp_path):
    import jax.numpy as jnp

    from jaxrecon.train.checkpoint import save_checkpoint
    from jaxrecon.train.experiment import experiment_config

    sure = experiment_config("pgd", train={"loss": "sure"})
    save_checkpoint(tmp_path / "run", model={"w": jnp.zeros(1)}, step=1, config=sure)
    cli._check_same_data(tmp_path / "run", sure)  # the same run: resumed
    with pytest.raises(ValueError, match="holds a run with the sure loss; choose another --output to train with the "
                                         "supervised loss"):
        cli._check_same_data(tmp_path / "run", experiment_config("pgd"))
    with pytest.raises(ValueError, match="holds a pgd run; choose another --output to train lpd"):
        cli._check_same_data(tmp_path / "run", experiment_config("lpd", train={"loss": "sure"}))


@pytest.mark.slow
def test_train_and_evaluate_a_denoiser(tmp_path, capsys):
    den = tmp_path / "dncnn"
    assert main(["train", "--model", "dncnn", "--steps", "2", "--output", str(den), "--no-progress"]) == 0
    assert "trained dncnn (quick) for 2 steps" in capsys.readouterr().out
    js = tmp_path / "dncnn.json"
    assert main(["evaluate", str(den), "--samples", "2", "--json", str(js)]) == 0
    assert "dncnn at sigma 0.05 on 2 test images" in capsys.readouterr().out
    result = json.loads(js.read_text())
    assert result["model"] == "dncnn" and set(result["test"]) >= {"psnr_mean", "psnr_0.05", "gain_0.05"}


def test_evaluate_missing_checkpoint_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as excinfo:
        main(["evaluate", str(tmp_path / "nothing")])
    assert excinfo.value.code == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_train_then_evaluate_round_trip(tmp_path, capsys):
    # the cheapest model (unrolled PGD, 281 parameters) for 2 steps of the quick preset (64 x 64)
    out = tmp_path / "pgd"
    assert main(["train", "--model", "pgd", "--steps", "2", "--output", str(out), "--no-progress"]) == 0
    assert "trained pgd (quick) for 2 steps" in capsys.readouterr().out
    assert (out / "latest").exists()
    t0 = time.perf_counter()  # a finished run answers at once (no data, no compilation)
    assert main(["train", "--model", "pgd", "--steps", "2", "--output", str(out), "--no-progress"]) == 0
    assert "already trained" in capsys.readouterr().out and time.perf_counter() - t0 < 5
    js = tmp_path / "metrics.json"
    assert main(["evaluate", str(out), "--samples", "2", "--json", str(js)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(js.read_text())
    assert result["model"] == "pgd" and result["preset"] == "quick"
    # PGD starts as 10 steps of projected gradient descent from FBP: better than zeros (~12 dB)
    assert 15 < result["shepp_logan"]["psnr_mean"] < 40
    assert f"{result['shepp_logan']['psnr_mean']:.2f}" in printed


@pytest.mark.slow
def test_demo_with_tv_skips_lpd_for_other_settings(tmp_path, capsys):
    assert main(["demo", *SMALL, "--methods", "fbp,tv,lpd", "--output", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "TV (alpha" in printed and "learned primal-dual: skipped" in printed
    result = json.loads((tmp_path / "demo.json").read_text())
    assert set(result["methods"]) == {"tv"}
    # TV beats FBP at 32x32, 8 views (measured: see the assert message)
    assert result["methods"]["tv"]["psnr"] > result["psnr"], result


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


def test_default_demo_runs_fbp_tv_and_the_shipped_lpd(tmp_path, capsys):
    # the default setting is the shipped model's (64x64, 30 views, 5% noise); same data and truth as
    # benchmarks/comparison.py --preset quick: FBP(hann) 21.63, TV 25.46 dB; shipped LPD 28.17 dB (lpd_quick_8k)
    assert main(["demo", "--output", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "demo.json").read_text())
    assert set(result["methods"]) == {"tv", "lpd"}
    lpd, tv = result["methods"]["lpd"]["psnr"], result["methods"]["tv"]["psnr"]
    assert lpd > tv > result["psnr"] + 2, result
    assert "learned primal-dual (shipped" in capsys.readouterr().out


@pytest.mark.slow
def test_sigterm_during_training_checkpoints_and_says_how_to_resume(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "jaxrecon.cli", "train", "--model", "pgd", "--steps", "100000",
                             "--checkpoint-every", "1", "--output", str(out), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not list(out.glob("step_*")) and proc.poll() is None:
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted: checkpoint" in err and "run the same command again to resume" in err
    assert "Traceback" not in err


def test_user_errors_end_in_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["evaluate", str(empty)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("jaxrecon evaluate: error:") and str(empty) in err
    (empty / "config.json").write_text("{")
    assert main(["evaluate", str(empty)]) == 1
    assert "not valid JSON" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not valid JSON"):
        main(["evaluate", str(empty), "--debug"])
