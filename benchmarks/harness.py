"""Shared benchmark plumbing: machine metadata, timing, peer virtual environments, result files.

Scripts beside this module keep their own experiment; what every benchmark needs lives here:

- `machine()`: what ran it (device, cores, jax version, date, load average), for every result file.
- `median_seconds(fn, *args)`: median wall time after a warm-up call (compile time reported apart).
- `peer_python(name, requirements)`: the interpreter of a virtual environment under
  `benchmarks/.venvs/<name>` made on first use, for peers that need another stack (PyTorch, an older
  jax), so that they never enter our own dependencies.
- `write_results(stem, data, markdown)`: `benchmarks/results/<stem>.json` and `.md`.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
VENVS = HERE / ".venvs"


def machine() -> dict:
    """Device, CPU count, versions, date and load average of this run."""
    import jax

    return {
        "device": jax.devices()[0].device_kind,
        "platform": jax.default_backend(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "load_average": os.getloadavg(),
    }


def median_seconds(fn, *args, repeats: int = 5) -> tuple[float, float]:
    """`(median, first)`: the median wall time of `repeats` calls of `fn(*args)` after a first call
    (compilation included), whose time is returned apart (`jaxrecon.train.experiment.timed`)."""
    from jaxrecon.train.experiment import timed

    return timed(fn, *args, repeats=repeats)


def peer_python(name: str, requirements: list[list[str]]) -> str:
    """The Python of the venv `benchmarks/.venvs/<name>`, created with `pip install` of each list in
    `requirements` (in order; a list may carry pip options such as `--no-deps`) if it does not exist."""
    venv = VENVS / name
    python = venv / "bin" / "python"
    marker = venv / ".complete"
    if not marker.exists():
        print(f"creating the peer environment {venv} (once)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        for req in requirements:
            subprocess.run([str(python), "-m", "pip", "install", "-q", *req], check=True)
        marker.write_text(json.dumps(requirements))
    return str(python)


def write_results(stem: str, data: dict, markdown: str, out: Path = RESULTS) -> tuple[Path, Path]:
    """Write `<out>/<stem>.json` (indented) and `<out>/<stem>.md`; return both paths."""
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / f"{stem}.json", out / f"{stem}.md"
    js.write_text(json.dumps(data, indent=1) + "\n")
    md.write_text(markdown.rstrip() + "\n")
    return js, md
