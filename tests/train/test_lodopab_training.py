"""LoDoPaB-CT as a training data source: small files in the dataset's exact layout (h5py, one `data` field per
file, 128-sample files shortened to a few), training from them (Python and CLI), exact resume, the challenge's
scores on the test split, and one-line errors for bad data."""

import json
import shutil

import equinox as eqx
import h5py
import jax
import numpy as np
import pytest

from jaxrecon.cli import main
from jaxrecon.data import LoDoPaB, lodopab_geometry, lodopab_psnr, lodopab_ssim
from jaxrecon.operators import radon
from jaxrecon.train import (
    LoDoPaBData,
    evaluate_lodopab,
    load_config,
    lodopab_data_config,
)
from jaxrecon.train.experiment import (
    build_data,
    build_model,
    experiment_config,
    load_trained,
    train,
)
from jaxrecon.train.lodopab import lodopab_streams

SIZE, ANGLES, DETECTORS = 16, 8, 23
COUNTS = {"train": [3, 2], "validation": [2], "test": [3]}


def _write_split(root, split, counts, size=SIZE, angles=ANGLES, detectors=DETECTORS, seed=0):
    """Files `ground_truth_{split}_{k:03d}.hdf5` / `observation_{split}_{k:03d}.hdf5` as LoDoPaB stores them:
    ground truths (N, H, W) in [0, 1] (random discs), observations = line integrals in metres (pixels * 0.26/W)."""
    rng = np.random.default_rng(seed)
    geom = lodopab_geometry((size, size), angles, detectors)
    r, c = np.mgrid[:size, :size]
    for k, count in enumerate(counts):
        x = np.zeros((count, size, size), np.float32)
        for n in range(count):
            for _ in range(3):
                cy, cx, rad = rng.uniform(size / 4, 3 * size / 4, 2).tolist() + [rng.uniform(2, size / 4)]
                x[n] += rng.uniform(0.2, 0.5) * (((r - cy) ** 2 + (c - cx) ** 2) <= rad**2)
        x = np.clip(x, 0, 1)
        y = np.asarray(jax.vmap(lambda im: radon(im, geom))(x)) * (0.26 / size)
        for name, data in (("ground_truth", x), ("observation", y.astype(np.float32))):
            with h5py.File(root / f"{name}_{split}_{k:03d}.hdf5", "w") as f:
                f.create_dataset("data", data=data, maxshape=(128, *data.shape[1:]), chunks=True)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("lodopab")
    for seed, (split, counts) in enumerate(COUNTS.items()):
        _write_split(root, split, counts, seed=seed)
    return root


def _small_config(folder, steps=4):
    """Unrolled PGD with 3 iterations (fast to compile), batches of 2, validation at the end."""
    return experiment_config("pgd", "quick", data=lodopab_data_config(folder), model_options={"num_iterations": 3},
                             train=dict(steps=steps, batch_size=2, validate_every=steps, validation_size=16))


def test_config_records_the_files_and_their_shapes(folder):
    config = _small_config(folder)
    assert config["data"] == {"source": "lodopab", "path": str(folder.resolve()), "shape": [SIZE, SIZE],
                              "num_angles": ANGLES, "num_detectors": DETECTORS}
    assert json.loads(json.dumps(config)) == config
    challenge = experiment_config("lpd", "lodopab")
    assert challenge["data"]["shape"] == [362, 362] and challenge["data"]["num_angles"] == 1000
    assert challenge["data"]["num_detectors"] == 513
    assert challenge["train"]["steps"] == 35820 and challenge["train"]["batch_size"] == 1  # one pass, batch 1
    assert build_data(challenge).geometry.sinogram_shape == (1000, 513)  # no files needed for the operator
    with pytest.raises(ValueError, match="unknown data source 'foo'"):
        experiment_config("lpd", "quick", data={"source": "foo"})
    # the random-ellipse configs carry no source (checkpoints written before stay loadable)
    assert "source" not in experiment_config("lpd", "quick")["data"]


def test_batches_read_the_train_split_in_order_and_validation_from_its_start(folder):
    data = build_data(_small_config(folder))
    assert isinstance(data, LoDoPaBData) and data.operator.out_shape == (ANGLES, DETECTORS)
    batch_fn, val = lodopab_streams(data, 2, 16)
    train_ys, train_xs = LoDoPaB(folder, "train").read(np.arange(5))
    # step 2 reads samples 4 and 0: the second file's last sample, then around to the first file's first
    for k, idx in ((0, [0, 1]), (1, [2, 3]), (2, [4, 0]), (7, [4, 0])):
        b = batch_fn(k)
        np.testing.assert_array_equal(np.asarray(b.x), train_xs[idx])
        np.testing.assert_array_equal(np.asarray(b.y), train_ys[idx])
    assert val.x.shape == (2, SIZE, SIZE)  # validation_size 16 > the 2 validation samples: all of them
    np.testing.assert_array_equal(np.asarray(val.x), LoDoPaB(folder, "validation").read([0, 1])[1])
    # observations are in pixel units: radon(x) of our geometry
    np.testing.assert_allclose(np.asarray(b.y[0]), np.asarray(radon(b.x[0], data.geometry)), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_resumed_run_is_bitwise_the_uninterrupted_one_and_loads_without_files(folder, tmp_path, monkeypatch):
    config = _small_config(folder, steps=4)
    full = train(config, tmp_path / "full", progress=False, checkpoint_every=2)
    # a run stopped after 2 steps: the full run's step-2 checkpoint alone, then resumed to 4
    (tmp_path / "resumed").mkdir()
    shutil.copytree(tmp_path / "full" / "step_00000002", tmp_path / "resumed" / "step_00000002")
    resumed = train(config, tmp_path / "resumed", progress=False, checkpoint_every=2)
    assert resumed.history["loss"] == full.history["loss"] and len(full.history["loss"]) == 4
    for a, b in zip(jax.tree.leaves(eqx.filter(resumed.model, eqx.is_array)),
                    jax.tree.leaves(eqx.filter(full.model, eqx.is_array))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # the operator comes from the config: loading the checkpoint opens no file
    def no_files(*args, **kwargs):
        raise AssertionError("load_trained opened the LoDoPaB files")

    monkeypatch.setattr("jaxrecon.train.lodopab.LoDoPaB", no_files)
    model, data, stored = load_trained(tmp_path / "full")
    assert stored == config and isinstance(data, LoDoPaBData) and data.shape == (SIZE, SIZE)
    assert data.geometry.sinogram_shape == (ANGLES, DETECTORS)
    np.testing.assert_array_equal(np.asarray(model.params.step), np.asarray(full.model.params.step))


@pytest.mark.slow
def test_evaluate_scores_the_test_split_like_the_challenge(folder):
    config = _small_config(folder)
    data = build_data(config)
    model = build_model(config, data.operator)  # untrained PGD: 3 gradient steps from FBP
    scores = evaluate_lodopab(model, data, "test", batch_size=2)  # 2 chunks, the last one padded
    ys, xs = data.read(data.open("test"), np.arange(3))
    recs = eqx.filter_jit(lambda m, ys: jax.vmap(lambda y: m(y, data.operator))(ys))(model, ys)
    psnr = [float(lodopab_psnr(r, x)) for r, x in zip(recs, xs)]
    ssim = [float(lodopab_ssim(r, x)) for r, x in zip(recs, xs)]
    assert scores["samples"] == 3
    assert scores["psnr_mean"] == pytest.approx(np.mean(psnr), abs=1e-6)
    assert scores["ssim_mean"] == pytest.approx(np.mean(ssim), abs=1e-6)
    assert scores["psnr_std"] == pytest.approx(np.std(psnr), abs=1e-6)
    # observations in pixel units reconstruct the discs (measured 13.7 dB against 10.5 dB for a blank image;
    # the stored metres, 60x smaller at 16 px, would reconstruct nearly blank)
    blank = np.mean([float(lodopab_psnr(np.zeros_like(x), x)) for x in xs])
    assert scores["psnr_mean"] > blank + 2, (scores, blank)
    assert evaluate_lodopab(model, data, "test", num_samples=2)["samples"] == 2


@pytest.mark.slow
def test_cli_trains_from_files_and_evaluates_on_the_test_split(folder, tmp_path, capsys):
    # the lodopab preset's unrolled PGD (batch 8: wraps around the 5 training samples); LPD trains the same
    # way, but its compilation would take this test past a minute
    out, js = tmp_path / "pgd", tmp_path / "scores.json"
    argv = ["train", "--model", "pgd", "--data", f"lodopab:{folder}", "--steps", "2", "--output", str(out),
            "--no-progress"]
    assert main(argv) == 0
    assert "trained pgd (lodopab) for 2 steps" in capsys.readouterr().out
    saved = load_config(out)
    assert saved["data"]["path"] == str(folder.resolve()) and saved["preset"] == "lodopab"
    assert main(argv) == 0 and "already trained" in capsys.readouterr().out
    assert main(["evaluate", str(out), "--samples", "2", "--json", str(js)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(js.read_text())["lodopab_test"]
    assert result["samples"] == 2 and "pgd on 2 LoDoPaB-CT test samples" in printed
    assert f"{result['psnr_mean']:.2f}" in printed and result["path"] == str(folder.resolve())
    assert np.isfinite([result["psnr_mean"], result["ssim_mean"]]).all()  # the values: test_evaluate_scores_...


def _one_line_error(capsys, command):
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"jaxrecon {command}: error: ") and "\n" not in err, err
    return err


def test_bad_data_gives_one_line_errors(folder, tmp_path, capsys):
    missing = tmp_path / "missing"
    assert main(["train", "--model", "pgd", "--data", f"lodopab:{missing}", "--output", str(tmp_path / "a")]) == 1
    assert f"{missing}: no such folder" in _one_line_error(capsys, "train")
    for bad, message in (("foo:bar", "expected 'ellipses' or 'lodopab:FOLDER', got 'foo:bar'"),
                         ("lodopab:", "lodopab needs the folder")):
        with pytest.raises(SystemExit) as excinfo:
            main(["train", "--model", "pgd", "--data", bad])
        assert excinfo.value.code == 2 and f"argument --data: {message}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--model", "pgd", "--preset", "lodopab"])
    assert "add --data lodopab:FOLDER" in capsys.readouterr().err

    # validation files of another size than the training files: the error names the file
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    _write_split(wrong, "train", [2])
    _write_split(wrong, "validation", [2], size=20, detectors=29)
    assert main(["train", "--model", "pgd", "--data", f"lodopab:{wrong}", "--steps", "1", "--no-progress",
                 "--output", str(tmp_path / "b")]) == 1
    err = _one_line_error(capsys, "train")
    assert "observation_validation_000.hdf5" in err and "20x20 images" in err and "16x16 images" in err

    # a trained checkpoint evaluated on files of the wrong shape, on a missing folder, on ellipses
    ckpt = tmp_path / "ckpt"
    assert main(["train", "--model", "pgd", "--data", f"lodopab:{folder}", "--preset", "quick", "--steps", "1",
                 "--no-progress", "--output", str(ckpt)]) == 0
    capsys.readouterr()
    _write_split(wrong, "test", [2], size=20, detectors=29)
    assert main(["evaluate", str(ckpt), "--data", f"lodopab:{wrong}"]) == 1
    assert "observation_test_000.hdf5" in _one_line_error(capsys, "evaluate")
    assert main(["evaluate", str(ckpt), "--data", f"lodopab:{missing}"]) == 1
    assert "no such folder" in _one_line_error(capsys, "evaluate")
    assert main(["evaluate", str(ckpt), "--data", "ellipses"]) == 1
    assert "trained on lodopab" in _one_line_error(capsys, "evaluate")
    # the same output directory on other data is not resumed
    assert main(["train", "--model", "pgd", "--data", f"lodopab:{wrong}", "--preset", "quick", "--steps", "1",
                 "--no-progress", "--output", str(ckpt)]) == 1
    assert "holds a run on other data" in _one_line_error(capsys, "train")
