"""benchmarks/long_run.py: a short run is evaluated on the comparison's data beside its TV and model rows."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jaxrecon.train.experiment import experiment_config, train

ROOT = Path(__file__).resolve().parents[2]


def _long_run(*args):
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "long_run.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_report_of_an_unfinished_run(tmp_path):
    run = tmp_path / "pgd_run"
    config = experiment_config("pgd", "quick", train={"steps": 4, "validate_every": 2})
    # float32 weights: the script runs without x64. Stops after its first step: an unfinished run.
    train(config, run, progress=False, time_limit=1e-9, dtype="float32")
    proc = _long_run(run, "--out", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "out" / "long_pgd_run.json").read_text())
    row = result["row"]
    assert row["of_steps"] == 4 and 1 <= row["steps"] < 4, row
    reference = {r["method"]: r for r in json.loads((ROOT / "benchmarks/results/comparison_quick.json")
                                                     .read_text())["rows"]}
    assert abs(result["minus_tv"]["test"] - (row["test"][0] - reference["tv"]["test"][0])) < 1e-9
    assert 10 < row["shepp_logan"][0] < 40 and 10 < row["test"][0] < 45, row
    md = (tmp_path / "out" / "long_pgd_run.md").read_text()
    assert "TV (PDHG)" in md and f"{row['steps']} of 4 steps done" in md
    assert (tmp_path / "out" / "long_pgd_run.png").stat().st_size > 0


@pytest.mark.slow
def test_bad_runs_are_clear_errors(tmp_path):
    proc = _long_run(tmp_path)
    assert proc.returncode == 2
    assert "is not a checkpoint folder written by `jaxrecon train`" in proc.stderr
    run = tmp_path / "float64"  # trained under x64 (this test process); the script runs without it
    train(experiment_config("pgd", "quick", train={"steps": 1}), run, progress=False)
    proc = _long_run(run)
    assert proc.returncode != 0
    assert "float64 weights, which load only after jax.config.update('jax_enable_x64', True)" in proc.stderr
