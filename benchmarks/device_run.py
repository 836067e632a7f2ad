"""Every accelerator measurement in one call: fast tests, projector timings, paper-preset LPD training.

A session that is lent a GPU has minutes of device time; this script spends them in one prepared
run, in this order, each stage with its own share of the `--minutes` budget:

1. `device.json`: what ran (jax devices, `nvidia-smi` if there is one, versions).
2. `tests.txt`: the fast tests of the operators and networks on the device (`pytest -m "not slow"`).
3. `projector.{json,md}`: `benchmarks/projector.py` for jaxrecon at N = 256, 512, 1024.
4. `geometries.{json,md}`: `benchmarks/geometries.py --gpu`, fan beam at N = 512, 1024 and cone beam at
   256^3 and 512^3, jaxrecon alone (mbirjax's GPU stack cannot be installed on a machine without network).
5. `lpd_paper/`: learned primal-dual, `paper` preset (128 x 128, the paper's schedule), trained for
   what is left of the budget with `jaxrecon train --minutes`; it resumes from `--resume DIR` (a
   checkpoint folder a previous device run returned) and returns its newest checkpoint and the
   history, so training continues across sessions exactly.

Every stage writes under `--out` (default `benchmarks/results/gpu`, or `$OUT` on the device machine)
and a failed stage does not stop the next one; `summary.json` lists each stage's status and time.

    python benchmarks/device_run.py --out "$OUT" --minutes 8       # on the lent GPU
    python benchmarks/device_run.py --smoke --out /tmp/device      # CPU, tiny sizes, ~2 minutes

`--smoke` runs the same stages on the CPU at tiny sizes (one test module, N = 32, a few training
steps of the quick preset); the test suite runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _run(cmd, log: Path, seconds: float, env=None) -> dict:
    """Run `cmd` with a wall-clock limit, stdout and stderr into `log`; return status and time."""
    t0 = time.time()
    with open(log, "w") as fh:
        try:
            rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=max(seconds, 1), cwd=ROOT,
                                env=env).returncode
            status = "ok" if rc == 0 else f"exit {rc}"
        except subprocess.TimeoutExpired:
            status = "timed out"
    return dict(command=" ".join(map(str, cmd)), status=status, seconds=round(time.time() - t0, 1), log=log.name)


def device_info(out: Path) -> dict:
    import jax

    info = dict(devices=[str(d) for d in jax.devices()], platform=jax.default_backend(),
                device_kind=jax.devices()[0].device_kind, jax=jax.__version__, python=sys.version.split()[0],
                date=time.strftime("%Y-%m-%d %H:%M:%S"))
    if shutil.which("nvidia-smi"):
        info["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                                             "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
    (out / "device.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT") or str(HERE / "results" / "gpu"))
    ap.add_argument("--minutes", type=float, default=8.0, help="wall-clock budget of the whole run")
    ap.add_argument("--resume", default=None, help="checkpoint folder of an earlier device run's LPD training")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny sizes: check that every stage runs")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start, budget = time.time(), 60 * args.minutes
    left = lambda: budget - (time.time() - start)  # noqa: E731
    py = sys.executable
    summary = {"device": device_info(out), "smoke": args.smoke, "stages": {}}

    tests = ["tests/operators/test_geometry.py"] if args.smoke else ["tests/operators", "tests/nets"]
    # One process owns the device: no xdist workers (-n 0).
    summary["stages"]["tests"] = _run([py, "-m", "pytest", "-q", "-x", "-n", "0", "-m", "not slow",
                                       "-p", "no:cacheprovider", *tests], out / "tests.txt", 0.25 * left())

    sizes = ["32"] if args.smoke else ["256", "512", "1024"]
    summary["stages"]["projector"] = _run(
        [py, str(HERE / "projector.py"), "--libraries", "jaxrecon", "--sizes", *sizes,
         "--repeats", "1" if args.smoke else "5", "--out", str(out)], out / "projector.txt", 0.3 * left())

    summary["stages"]["geometries"] = _run(
        [py, str(HERE / "geometries.py"), "--smoke" if args.smoke else "--gpu", "--parts", "fan", "cone", "--peers",
         "--out", str(out)], out / "geometries.txt", 0.3 * left())

    run_dir = out / "lpd_paper"
    if args.resume and not run_dir.exists():
        shutil.copytree(args.resume, run_dir)
    preset, steps = ("quick", ["--steps", "3"]) if args.smoke else ("paper", [])
    minutes = max(left() - 45, 30) / 60  # leave time to write the summary
    summary["stages"]["train_lpd"] = _run(
        [py, "-m", "jaxrecon.cli", "train", "--model", "lpd", "--preset", preset, *steps, "--output", str(run_dir),
         "--minutes", f"{minutes:.2f}", "--checkpoint-every", "250", "--no-progress"],
        out / "train_lpd.txt", 60 * minutes + 120)
    for stale in sorted(run_dir.glob("step_*"))[:-1]:  # return only the newest checkpoint
        shutil.rmtree(stale)
    summary["seconds"] = round(time.time() - start, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary["stages"], indent=1))
    return 0 if all(s["status"] == "ok" for s in summary["stages"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
