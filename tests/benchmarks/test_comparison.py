"""benchmarks/comparison.py: its command line (the full table is a benchmark run, not a test)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import comparison


def test_bad_minutes_is_a_usage_error():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "comparison.py"), "--minutes", "0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--minutes must be a positive number, got 0.0" in proc.stderr


def test_report_names_the_command_that_made_it():
    meta = dict(preset="standard", models=["lgd", "unet"], steps_override={"lgd": 8000}, minutes=30.0,
                device_kind="cpu", cpu_count=2, jax="0", date="today", total_seconds=60.0,
                data=dict(size=128, num_angles=30, num_detectors=183, noise=0.05, preset="adler2018"))
    text = comparison.markdown(meta, [])
    command = "`python benchmarks/comparison.py --preset standard --models lgd,unet --steps lgd=8000 --minutes 30`"
    assert command + " on" in text
    meta.update(models=list(comparison.MODELS), steps_override=None, minutes=None)
    assert "`python benchmarks/comparison.py --preset standard` on" in comparison.markdown(meta, [])
