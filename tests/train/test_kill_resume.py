"""Fault injection: training killed with SIGKILL at random moments resumes bitwise, from a clean folder.

A worker process trains a tiny unrolled PGD (16 x 16, 4 views) with a checkpoint after every step. It
is killed at random points (during compilation, between steps, inside a save), restarted each time,
and finally run to the end; its last weights must equal those of a run that was never interrupted,
byte for byte, and its folder must hold only complete checkpoints (no temp folders, `latest` valid).
"""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jaxrecon.train.checkpoint import _verify

STEPS = 12
WORKER = f"""
import sys
import jax
jax.config.update("jax_enable_x64", True)
from jaxrecon.train.experiment import experiment_config, train
config = experiment_config("pgd", "quick", data={{"size": 16, "num_angles": 4, "num_detectors": 23}},
                           model_options={{"num_iterations": 2}},
                           train={{"steps": {STEPS}, "validate_every": 4, "validation_size": 2, "batch_size": 2}})
train(config, sys.argv[1], progress=False, checkpoint_every=1)
"""


def _start(directory: Path) -> subprocess.Popen:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"}
    return subprocess.Popen([sys.executable, "-c", WORKER, str(directory)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen) -> None:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-3000:]


def _final_weights(directory: Path) -> bytes:
    latest = (directory / "latest").read_text().strip()
    assert latest == f"step_{STEPS:08d}", latest
    return (directory / latest / "model.eqx").read_bytes()


def _wait_for_step(directory: Path, step: int, proc: subprocess.Popen) -> None:
    """Until `latest` names `step` or a later one (or the worker exits)."""
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        latest = directory / "latest"
        if latest.exists() and latest.read_text().strip() >= f"step_{step:08d}":
            return
        time.sleep(0.02)


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_is_bitwise_and_clean(tmp_path):
    rng = random.Random(0)
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    _finish(_start(reference))
    kills = 0
    # first while it compiles (no checkpoint yet), then twice mid-run: once a random step is saved,
    # after a random pause (between steps, or inside the next save)
    plan = [None, rng.randint(2, STEPS // 2), rng.randint(STEPS // 2 + 1, STEPS - 1)]
    for step in plan:
        proc = _start(killed)
        if step is None:
            time.sleep(rng.uniform(0.5, 2.0))
        else:
            _wait_for_step(killed, step, proc)
            time.sleep(rng.uniform(0.0, 0.05))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate(timeout=60)
    _finish(_start(killed))
    assert kills == len(plan), f"only {kills} of {len(plan)} workers were killed before they finished"
    assert _final_weights(killed) == _final_weights(reference)
    leftovers = [p.name for p in killed.iterdir() if p.name.startswith(".tmp")]
    assert not leftovers, f"stale temp folders after the final save: {leftovers}"
    for step_dir in killed.glob("step_*"):  # every step folder left is complete and matches its manifest
        _verify(step_dir)
