"""benchmarks/device_run.py --smoke: every stage of the accelerator script runs (CPU, tiny sizes)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_device_run_smoke(tmp_path):
    out = tmp_path / "device"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "device_run.py"), "--smoke", "--minutes", "6",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    summary = json.loads((out / "summary.json").read_text())
    assert proc.returncode == 0, (proc.stdout, proc.stderr, summary)
    assert set(summary["stages"]) == {"tests", "projector", "geometries", "train_lpd"}
    assert all(s["status"] == "ok" for s in summary["stages"].values()), summary
    assert (out / "projector.json").exists() and (out / "device.json").exists()
    assert json.loads((out / "geometries.json").read_text())["cone"]
    steps = sorted((out / "lpd_paper").glob("step_*"))
    assert [p.name for p in steps] == ["step_00000003"]  # the newest checkpoint only
