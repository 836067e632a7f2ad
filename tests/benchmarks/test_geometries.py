"""benchmarks/geometries.py --smoke: every part runs at tiny sizes and writes its report (peers when present)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MBIRJAX_VENV = ROOT / "benchmarks" / ".venvs" / "mbirjax"


@pytest.mark.slow
def test_geometries_smoke(tmp_path):
    # Peers only where they are already here: ASTRA (the `astra` extra), mbirjax's venv (made by a full run).
    peers = [p for p, present in (("astra", importlib.util.find_spec("astra") is not None),
                                  ("mbirjax", (MBIRJAX_VENV / ".complete").exists())) if present]
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "geometries.py"), "--smoke", "--out", str(tmp_path),
                           "--peers", *peers], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads((tmp_path / "geometries.json").read_text())
    md = (tmp_path / "geometries.md").read_text()
    libraries = {r["library"] for r in data["fan"] + data["cone"]}
    assert libraries == {"jaxrecon"} | ({"astra line_fanflat", "astra strip_fanflat"} if "astra" in peers else set()) | (
        {"mbirjax"} if "mbirjax" in peers else set())
    for row in data["fan"] + data["cone"]:
        assert all(row["results"][d]["seconds"] > 0 for d in ("forward", "adjoint")), row
        assert row["dot_test"] < 1e-4, row  # every library's pair is matched (ours: exactly)
        if row["library"] != "jaxrecon":  # same geometry after aligning conventions: close, not equal
            assert row["rel_diff_forward"] < 0.05, row
    if "astra" in peers:
        assert set(data["fan_speedups"]["32"]) == {"astra line_fanflat", "astra strip_fanflat"}
        assert "jaxrecon >= 3x faster than ASTRA line_fanflat" in md
    xla = data["memory"]["xla"]
    assert {r["batch_size"] for r in xla} == {2, 4, 8} and {r["views"] for r in xla} == {8, 20, 24}
    assert all(r["temp"] > 0 and r["total"] >= r["temp"] for r in xla)
    assert [r["direction"] for r in data["memory"]["rss"]] == ["forward", "adjoint"]
    assert all(r["peak_rss_mb"] >= r["peak_rss_before_run_mb"] > 0 for r in data["memory"]["rss"])
    assert "XLA scratch grows with the view batch" in md and "load average" in md.lower()
    assert data["meta"]["load_average_before"] and data["meta"]["load_average_after"]
