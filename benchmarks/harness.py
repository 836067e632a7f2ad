"""Shared benchmark plumbing: machine metadata, timing, workers and peer environments, result files.

Scripts beside this module keep their own experiment; what several of them need lives here. Importing it
needs only numpy (the TV peers' workers import it inside ODL's and SCICO's environments); jax and
jaxrecon are imported on first use. It also puts the repository on `sys.path` (after the installed
packages), so that a script run from a checkout finds its `jaxrecon`.

What ran it:

- `machine()`: device, cores, versions, date and load average, for new result files;
- `environment(*keys)`: devices, device kind, OS platform, cores, jax version and date under the keys
  the older result files use;
- `versions(packages)`: installed versions; `command(__file__, argv)`: the command line of a run.

Timing, workers and peers:

- `median_seconds(fn, *args)`: median wall time after a warm-up call (compile time reported apart);
- `wall_cpu_seconds(fn, repeats)`: the same with CPU time (how many cores a method used), numpy only, so
  that workers in peers' environments time the same way; `peak_rss_mb()`: the process's own peak resident
  memory (not its parent's);
- `run_worker(cmd)` / `send_result(data)`: run a worker process (a script in a fresh process, or in a
  peer's interpreter) and read the JSON result it sends;
- `peer_python(name, requirements)`: the interpreter of a virtual environment under
  `benchmarks/.venvs/<name>` made on first use, for peers that need another stack (PyTorch, an older
  jax), so that they never enter our own dependencies.

Reports:

- `write_results(stem, data, markdown)`: `benchmarks/results/<stem>.json` and `.md` (`to_json` makes
  numpy and jax values JSON numbers and lists);
- `fmt(value)`, `markdown_table(header, rows)`, `verdict(check)`: table cells, tables, check lines;
- `pyplot()`, `save_figure(fig, path)`: matplotlib without a display.

Arguments: `floats` (an argparse type), `at_least(parser, args, minimum, *names)`.

Shared experiment pieces: `mean_psnr(xs, refs)`, `tv_path` and `choose_tv_weight` (TV with its weight
chosen on validation data).
"""

from __future__ import annotations

import functools
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
VENVS = HERE / ".venvs"
RESULT = "RESULT "  # marks the line of a worker's stdout that carries its result

if str(ROOT) not in sys.path:  # run from a checkout without installing: the repository's jaxrecon
    sys.path.append(str(ROOT))


# --------------------------------------------------------------------------------------------------
# What ran it
# --------------------------------------------------------------------------------------------------


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


def environment(*keys: str) -> dict:
    """`devices`, `device_kind`, `platform` (the OS), `cpu_count`, `jax` (version) and `date` of this run;
    only `keys`, in their order, when given."""
    import jax

    info = dict(devices=[str(d) for d in jax.devices()], device_kind=jax.devices()[0].device_kind,
                platform=platform.platform(), cpu_count=os.cpu_count(), jax=jax.__version__,
                date=time.strftime("%Y-%m-%d %H:%M:%S"))
    return {k: info[k] for k in keys} if keys else info


def versions(packages) -> dict:
    """`{package: installed version, or None}`."""
    import importlib.metadata as md

    out = {}
    for p in packages:
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            out[p] = None
    return out


def command(script: str, argv=None) -> str:
    """`python benchmarks/<script's name> <arguments>`: the command line of a run, for its report.
    `argv`: the arguments `main` was called with (None: the process's own), quoted for a shell."""
    return shlex.join(["python", f"benchmarks/{Path(script).name}", *(sys.argv[1:] if argv is None else argv)])


# --------------------------------------------------------------------------------------------------
# Timing, workers, peers
# --------------------------------------------------------------------------------------------------


def median_seconds(fn, *args, repeats: int = 5) -> tuple[float, float]:
    """`(median, first)`: the median wall time of `repeats` calls of `fn(*args)` after a first call
    (compilation included), whose time is returned apart (`jaxrecon.train.experiment.timed`)."""
    from jaxrecon.train.experiment import timed

    return timed(fn, *args, repeats=repeats)


def wall_cpu_seconds(fn, repeats: int = 5) -> dict:
    """Median wall and CPU seconds of `repeats` calls of `fn()` (which must block until its result is
    ready) after one warm-up call, timed apart: `dict(seconds, cpu_seconds, first_call_seconds)`. CPU time
    is the whole process's (all threads), so `cpu_seconds / seconds` is the number of cores used."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return dict(seconds=float(np.median(walls)), cpu_seconds=float(np.median(cpus)), first_call_seconds=first)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB: Linux's `VmHWM` (/proc/self/status), else
    `ru_maxrss`. Not `ru_maxrss` where `VmHWM` exists: Linux carries the high-water mark of the image a
    process replaced by `exec` into it, so a worker started by `subprocess` reports its parent's peak if
    that is larger (measured: 427 MiB for a 14 MiB child of a 427 MiB parent)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux (bytes on macOS)


class WorkerError(RuntimeError):
    """A worker failed or sent no result; `returncode` and `stderr` are what it left."""

    def __init__(self, label: str, returncode: int, stderr: str):
        super().__init__(f"{label} failed (exit {returncode}):\n{stderr[-4000:]}")
        self.returncode, self.stderr = returncode, stderr


def send_result(data) -> None:
    """In a worker: print `data` as the JSON line that `run_worker` returns."""
    print(RESULT + json.dumps(data, default=to_json), flush=True)


def run_worker(cmd, *, env=None, timeout=None, label=None):
    """Run the worker command `cmd` and return the last result it sent (`send_result`); `WorkerError`
    (named `label`, default the command) if it exits with an error or sends none."""
    cmd = [str(c) for c in cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT)]
    if proc.returncode != 0 or not lines:
        raise WorkerError(label or " ".join(cmd), proc.returncode, proc.stderr)
    return json.loads(lines[-1][len(RESULT):])


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


# --------------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------------


def to_json(obj):
    """`json.dumps(..., default=to_json)`: numpy and jax scalars as numbers, arrays as (nested) lists."""
    if isinstance(obj, np.generic):
        return obj.item()
    if hasattr(obj, "__array__"):
        return np.asarray(obj).tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_results(stem: str, data: dict, markdown: str, out: Path | str = RESULTS) -> tuple[Path, Path]:
    """Write `<out>/<stem>.json` (indented) and `<out>/<stem>.md`; return both paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / f"{stem}.json", out / f"{stem}.md"
    js.write_text(json.dumps(data, indent=1, default=to_json) + "\n")
    md.write_text(markdown.rstrip() + "\n")
    return js, md


def fmt(value, template: str = "{:.2f}", missing: str = "-") -> str:
    """`template.format(value)`; `missing` for None; a string as it is."""
    if value is None:
        return missing
    return value if isinstance(value, str) else template.format(value)


def markdown_table(header, rows) -> list[str]:
    """The lines of a markdown table with the cells `header` and one line per row (`str` of each cell)."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(map(str, row)) + " |" for row in rows)]


def verdict(check: dict) -> str:
    """`PASS: <claim> (<detail>)`, or `FAIL: ...`, for a check `dict(claim=, passed=, detail=)`."""
    return f"{'PASS' if check['passed'] else 'FAIL'}: {check['claim']} ({check['detail']})"


def pyplot():
    """`matplotlib.pyplot` on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path, dpi: int = 120) -> None:
    """Lay `fig` out tightly, write it to `path` and close it."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)


# --------------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------------


def floats(text: str) -> list[float]:
    """argparse type: comma-separated numbers, `"0.01,0.05"` -> `[0.01, 0.05]`."""
    return [float(v) for v in text.split(",") if v.strip()]


def at_least(parser, args, minimum, *names: str) -> None:
    """`parser.error` unless each option in `names` (attribute names of `args`) is at least `minimum`."""
    for name in names:
        value = getattr(args, name)
        if value < minimum:
            parser.error(f"--{name.replace('_', '-')} must be >= {minimum}, got {value}")


# --------------------------------------------------------------------------------------------------
# Shared experiment pieces (jax and jaxrecon imported on first use)
# --------------------------------------------------------------------------------------------------


@functools.cache
def _batched_psnr():
    import jax

    from jaxrecon.metrics import psnr

    return jax.jit(jax.vmap(psnr))


def mean_psnr(xs, refs) -> float:
    """Mean PSNR (dB) of the images `xs` against `refs`, each with its reference's data range."""
    import jax.numpy as jnp

    return float(np.mean(np.asarray(_batched_psnr()(jnp.asarray(xs, refs.dtype), refs))))


@functools.cache
def _tv_path():
    import equinox as eqx
    import jax

    from jaxrecon.solvers import tv_pdhg

    @eqx.filter_jit
    def path(op, y, alphas, op_norm, iterations):
        return jax.vmap(lambda a: tv_pdhg(op, y, a, max_iter=iterations, op_norm=op_norm).x)(alphas)

    return path


def tv_path(op, y, alphas, op_norm, iterations):
    """TV (PDHG, `iterations` steps, operator norm `op_norm`) reconstructions of `y`, one per weight in
    the array `alphas` (jitted, vmapped over the weights)."""
    return _tv_path()(op, y, alphas, op_norm, iterations)


def choose_tv_weight(op, val, alphas, iterations):
    """The TV weight among `alphas` with the best mean PSNR on the validation samples `val` (`.y`, `.x`):
    `(index of the best, the weights as an array of val's dtype, 1.01 ||A|| likewise, PSNR per weight)`."""
    import jax.numpy as jnp

    from jaxrecon.operators import operator_norm

    dtype = val.y.dtype
    op_norm = jnp.asarray(1.01 * float(operator_norm(op, num_iter=100)), dtype)
    a = jnp.asarray(alphas, dtype)
    paths = jnp.stack([tv_path(op, y, a, op_norm, iterations) for y in val.y])  # (N, alphas, H, W)
    scores = [mean_psnr(paths[:, i], val.x) for i in range(len(alphas))]
    return int(np.argmax(scores)), a, op_norm, scores
