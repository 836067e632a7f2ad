"""Named experiments: configs, training a tiny run, rebuilding it from its checkpoint, the shipped model."""

import json

import equinox as eqx
import jax
import numpy as np
import pytest

from jaxrecon.deq import DEProx
from jaxrecon.nets import LearnedPrimalDual, PostProcessing, UnrolledPGD
from jaxrecon.train import shepp_logan_sample
from jaxrecon.train.experiment import (
    MODELS,
    build_data,
    build_model,
    experiment_config,
    load_pretrained,
    load_trained,
    train,
)


def test_config_is_json_and_overrides_nest():
    config = experiment_config("lpd", "quick", seed=3, train={"steps": 7}, data={"size": 32})
    assert json.loads(json.dumps(config)) == config
    assert config["train"]["steps"] == 7 and config["train"]["batch_size"] == 4  # nested update
    assert config["data"]["size"] == 32 and config["data"]["num_angles"] == 30
    assert config["seed"] == 3
    paper = experiment_config("lpd", "paper")
    assert (paper["data"]["size"], paper["data"]["num_detectors"]) == (128, 183)
    assert paper["model_options"]["num_iterations"] == 10 and paper["model_options"]["hidden"] == 32
    # the authors' code: zero start, Glorot weights, Adam b2 = 0.99, batches of 5, 1e5 steps
    assert (paper["model_options"]["init"], paper["model_options"]["weight_init"]) == ("zero", "glorot")
    assert (paper["train"]["b2"], paper["train"]["batch_size"], paper["train"]["steps"]) == (0.99, 5, 100000)
    standard = experiment_config("lpd", "standard")
    assert standard["data"] == paper["data"]  # the paper's data setting, with the CPU-sized recipe
    assert standard["model_options"] == experiment_config("lpd", "quick")["model_options"]
    quick, quick15 = experiment_config("lpd", "quick"), experiment_config("lpd", "quick15")
    assert quick15["data"] == dict(quick["data"], num_angles=15)  # only the number of views differs
    assert (quick15["model_options"], quick15["train"]) == (quick["model_options"], quick["train"])


@pytest.mark.parametrize(
    "args, message",
    [
        (("gan", "quick"), "unknown model 'gan'"),
        (("lpd", "huge"), "unknown preset 'huge'"),
    ],
)
def test_config_errors(args, message):
    with pytest.raises(ValueError, match=message):
        experiment_config(*args)
    with pytest.raises(ValueError, match="unknown config entries"):
        experiment_config("lpd", optimiser={"lr": 1})
    with pytest.raises(ValueError, match="seed must be an int >= 0, got -1"):
        experiment_config("lpd", seed=-1)
    with pytest.raises(ValueError, match="train.steps must be an int >= 1, got -5"):
        experiment_config("lpd", train={"steps": -5})
    with pytest.raises(ValueError, match="data.size must be an int >= 1, got 2.5"):
        experiment_config("lpd", data={"size": 2.5})


@pytest.mark.slow
def test_build_model_types():
    config = experiment_config("pgd", "quick", data={"size": 16, "num_detectors": 23})
    op = build_data(config).operator
    assert isinstance(build_model(config, op), UnrolledPGD)
    unet = experiment_config("unet", "quick", model_options={"channels": 4, "levels": 2})
    assert isinstance(build_model(unet, op), PostProcessing)
    lpd = experiment_config("lpd", "quick", model_options={"hidden": 4, "num_iterations": 2})
    assert isinstance(build_model(lpd, op), LearnedPrimalDual)
    deq = experiment_config("deprox", "quick", model_options={"features": 4, "depth": 2})
    assert isinstance(build_model(deq, op), DEProx) and build_model(deq, op).max_iter == 30
    assert set(MODELS) == {"unet", "pgd", "lista", "lgd", "lpd", "degrad", "deprox"}


@pytest.mark.slow
def test_train_and_load_trained_round_trip(tmp_path):
    config = experiment_config(
        "pgd", "quick", data={"size": 16, "num_detectors": 23},
        train={"steps": 3, "validate_every": 2, "validation_size": 2},
    )
    result = train(config, tmp_path / "run", progress=False)
    assert len(result.history["loss"]) == 3 and len(result.history["val_psnr_mean"]) >= 1
    model, data, stored = load_trained(tmp_path / "run")
    assert stored == config
    for a, b in zip(jax.tree.leaves(eqx.filter(model, eqx.is_array)), jax.tree.leaves(eqx.filter(result.model, eqx.is_array))):
        np.testing.assert_array_equal(a, b)
    # training changed the parameters (the learning rate is 1e-2 for PGD)
    fresh = build_model(config, data.operator)
    assert not np.allclose(model.params.step, fresh.params.step)


@pytest.mark.slow
def test_deq_model_trains_and_loads(tmp_path):
    config = experiment_config(
        "degrad", "quick", data={"size": 16, "num_detectors": 23}, model_options={"features": 4, "depth": 2},
        train={"steps": 2, "validate_every": 2, "validation_size": 2},
    )
    result = train(config, tmp_path / "run", progress=False)
    model, data, _ = load_trained(tmp_path / "run")
    np.testing.assert_array_equal(model.step_param, result.model.step_param)
    assert model.max_iter == 30 and model.tol == 1e-3
    assert model.step_param != build_model(config, data.operator).step_param  # it trained


def test_unknown_pretrained_name():
    with pytest.raises(ValueError, match="no pretrained model 'nope'"):
        load_pretrained("nope")


@pytest.mark.slow
@pytest.mark.parametrize("name, table", [("lpd_quick", "comparison_quick"), ("lpd_standard", "comparison_standard")])
def test_shipped_lpd_reproduces_its_table_row(name, table):
    import json
    from pathlib import Path

    from jaxrecon.metrics import psnr
    from jaxrecon.operators import fbp

    model, data = load_pretrained(name)  # float32 as saved, also under x64
    sample = shepp_logan_sample(data)
    x = eqx.filter_jit(lambda m, y: m(y, data.operator))(model, sample.y)
    p_lpd = float(psnr(x, sample.x, data_range=1.0))
    p_fbp = float(psnr(fbp(sample.y, data.geometry, "hann"), sample.x, data_range=1.0))
    assert p_lpd > p_fbp + 3, (p_lpd, p_fbp)
    results = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / f"{table}.json"
    row = next(r for r in json.loads(results.read_text())["rows"] if r["method"] == "lpd")
    assert abs(p_lpd - row["shepp_logan"][0]) < 0.05, (p_lpd, row["shepp_logan"][0])
