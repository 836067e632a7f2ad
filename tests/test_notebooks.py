"""Every jupytext tutorial in notebooks/ parses as a notebook and runs as a script at a tiny size."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.py"))
TINY = 32


def test_there_are_notebooks():
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_parses(path):
    jupytext = pytest.importorskip("jupytext")
    nb = jupytext.read(path)
    kinds = {cell.cell_type for cell in nb.cells}
    assert {"code", "markdown"} <= kinds, f"{path.name}: expected code and markdown cells, got {kinds}"
    assert nb.cells[0].cell_type == "markdown", f"{path.name} should open with a markdown title"
    # Round trip through the percent format keeps the cells.
    again = jupytext.reads(jupytext.writes(nb, fmt="py:percent"), fmt="py:percent")
    assert [c.cell_type for c in again.cells] == [c.cell_type for c in nb.cells]


@pytest.mark.slow  # CI runs every notebook at the same size in the docs build (mkdocs-jupyter, allow_errors: false)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path):
    env = {
        **os.environ,
        "JAXRECON_NOTEBOOK_SIZE": str(TINY),
        "JAXRECON_NOTEBOOK_FIGURES": str(tmp_path / "figures"),
        "MPLBACKEND": "Agg",
    }
    proc = subprocess.run(
        [sys.executable, str(path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, (
        f"{path.name} failed (exit {proc.returncode})\n--- stdout (tail) ---\n{proc.stdout[-3000:]}"
        f"\n--- stderr ---\n{proc.stderr[-6000:]}"
    )
