"""benchmarks/harness.py: the helpers the benchmark scripts share (no jax needed)."""

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
_spec = importlib.util.spec_from_file_location("harness", BENCHMARKS / "harness.py")
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)


def test_markdown_table():
    lines = harness.markdown_table(["a", "b c"], [[1, "x"], [2.5, ""]])
    assert lines == ["| a | b c |", "|---|---|", "| 1 | x |", "| 2.5 |  |"]
    assert harness.markdown_table(["only"], []) == ["| only |", "|---|"]


def test_fmt():
    assert harness.fmt(3.14159) == "3.14"
    assert harness.fmt(None) == "-"
    assert harness.fmt(None, missing="") == ""
    assert harness.fmt(2.0, "{:.1f}x") == "2.0x"
    assert harness.fmt(12, "{}") == "12"
    assert harness.fmt("hann", "{:.4g}") == "hann"  # a string is already a cell


def test_verdict_and_command():
    assert harness.verdict(dict(claim="it converges", passed=True, detail="3 steps")) == "PASS: it converges (3 steps)"
    assert harness.verdict(dict(claim="c", passed=False, detail="d")) == "FAIL: c (d)"
    assert harness.command("/anywhere/benchmarks/demo.py", ["--smoke", "--out", "x"]) == \
        "python benchmarks/demo.py --smoke --out x"
    assert harness.command("demo.py", []) == "python benchmarks/demo.py"


def test_write_results_with_numpy_values(tmp_path):
    data = dict(x=np.float32(0.5), n=np.int64(3), a=np.arange(3), nested=dict(b=np.ones((2, 2))))
    js, md = harness.write_results("demo", data, "# Title\n\n| a |\n\n\n", tmp_path / "new" / "folder")
    assert js == tmp_path / "new" / "folder" / "demo.json" and md.name == "demo.md"
    assert json.loads(js.read_text()) == dict(x=0.5, n=3, a=[0, 1, 2], nested=dict(b=[[1.0, 1.0], [1.0, 1.0]]))
    assert js.read_text().endswith("}\n")
    assert md.read_text() == "# Title\n\n| a |\n"
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        json.dumps(object(), default=harness.to_json)


def test_arguments():
    assert harness.floats("0.01, 0.05,") == [0.01, 0.05]
    parser = argparse.ArgumentParser()
    parser.add_argument("--num-test", type=int, default=0)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args([])
    harness.at_least(parser, args, 0, "num_test", "steps")
    with pytest.raises(SystemExit):
        harness.at_least(parser, args, 1, "num_test")


def test_versions():
    found = harness.versions(["numpy", "surely-not-an-installed-package"])
    assert found == {"numpy": np.__version__, "surely-not-an-installed-package": None}


def test_run_worker(tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text("import sys\nfrom harness import send_result\nprint('chatter')\n"
                      "send_result({'args': sys.argv[1:], 'x': __import__('numpy').float64(1.5)})\n"
                      "sys.exit(int(sys.argv[1]))\n")
    env = dict(os.environ, PYTHONPATH=str(BENCHMARKS))
    assert harness.run_worker([sys.executable, worker, 0], env=env) == {"args": ["0"], "x": 1.5}
    with pytest.raises(harness.WorkerError, match=r"demo failed \(exit 3\)") as failed:
        harness.run_worker([sys.executable, worker, 3], env=env, label="demo")
    assert failed.value.returncode == 3
