"""benchmarks/error_split.py: the split of an error into range and null-space parts is exact, and the script runs."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxrecon.train.experiment import experiment_config, train

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from error_split import WEAK, split  # noqa: E402


def test_split_is_exact():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((6, 10)) * np.array([1, 1, 1, 0.01, 1, 1, 1, 1, 1, 1])  # one weakly seen direction
    _, s, vt = np.linalg.svd(a, full_matrices=False)
    v = vt.T
    null = np.linalg.svd(a)[2][6:].T  # (10, 4): an orthonormal basis of the null space
    in_range, in_null = v @ rng.standard_normal(6), null @ rng.standard_normal(4)
    parts = split(np.stack([in_range + in_null, in_range]), s, v)
    n = 10
    np.testing.assert_allclose(parts["range"] + parts["null"], parts["mse"], rtol=1e-12)
    np.testing.assert_allclose(parts["range"], np.sum(in_range**2) / n, rtol=1e-12)  # both samples share it
    np.testing.assert_allclose(parts["null"], np.sum(in_null**2) / n / 2, rtol=1e-12)
    weak = v[:, s < WEAK * s[0]]
    assert weak.shape[1] == 1  # the scaled column made one small singular value
    np.testing.assert_allclose(parts["weak_range"], np.sum((weak.T @ in_range) ** 2) / n, rtol=1e-10)


@pytest.mark.slow
def test_report(tmp_path):
    run = tmp_path / "pgd_run"
    train(experiment_config("pgd", "quick", train={"steps": 2, "validate_every": 2}), run, progress=False,
          dtype="float32")
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "error_split.py"), "--model", f"PGD={run}",
                          "--model", f"PGD, again={run}", "--out", str(tmp_path)], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads((tmp_path / "error_split_quick.json").read_text())
    assert data["rank"] + data["null_dimension"] == 64 * 64
    first, second = data["rows"]
    assert first["mse"] == pytest.approx(first["range"] + first["null"], rel=1e-12)
    assert second["mse"] == first["mse"]  # the same run twice
    assert "| PGD, again | supervised |" in (tmp_path / "error_split_quick.md").read_text()
