"""benchmarks/dot_tests.py at tiny sizes: every projector pair is measured in both precisions, within the bars."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_dot_tests_smoke(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "dot_tests.py"), "--sizes", "16", "--sizes3d", "6",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "dot_tests.json").read_text())
    names = {r["geometry"] for r in result["rows"]}
    assert names == {"parallel", "fan, flat", "fan, curved", "fan, vector", "cone", "helical cone", "3D parallel",
                     "3D parallel, vector"}
    assert {r["dtype"] for r in result["rows"]} == {"float32", "float64"} and len(result["rows"]) == 16
    assert result["check"]["passed"], result["check"]
    assert "| fan, curved | 16 | float32 |" in (tmp_path / "dot_tests.md").read_text()
