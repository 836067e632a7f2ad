"""benchmarks/comparison.py: its command line (the full table is a benchmark run, not a test)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

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


def _table(path, data, rows, date, **meta):
    learned = [r["method"] for r in rows if r["method"] in comparison.MODELS]
    meta = dict(preset="standard", data=data, date=date, models=learned, **meta)
    path.write_text(json.dumps(dict(meta=meta, rows=rows)))


def test_keep_copies_the_other_models_rows_with_their_run(tmp_path):
    data = dict(size=128, num_angles=30)
    path = tmp_path / "comparison_standard.json"
    rows = [dict(method=m, shepp_logan=[30.0, 0.9]) for m in ("fbp", "tv", "unet", "lgd", "lpd")]
    _table(path, data, rows, "day 1", steps_override={"lgd": 6500})
    kept, runs = comparison.kept_rows(path, data, ["lpd"])
    assert [r["method"] for r in kept] == ["unet", "lgd"]
    command = "python benchmarks/comparison.py --preset standard --models unet,lgd,lpd --steps lgd=6500"
    assert runs == [dict(date="day 1", command=command, models=["unet", "lgd"])]
    # Kept again by a later run: each row keeps the run it was trained in.
    _table(path, data, [*kept, dict(method="lpd", shepp_logan=[33.0, 0.9])], "day 2", kept_from=runs)
    kept2, runs2 = comparison.kept_rows(path, data, ["unet"])
    assert [r["method"] for r in kept2] == ["lgd", "lpd"]
    assert [(r["date"], r["models"]) for r in runs2] == [("day 1", ["lgd"]), ("day 2", ["lpd"])]
    assert "--keep" in runs2[1]["command"]
    meta = dict(preset="standard", models=["unet"], steps_override=None, minutes=None, device_kind="cpu",
                cpu_count=2, jax="0", date="day 3", total_seconds=60.0, kept_from=runs2,
                data=dict(size=128, num_angles=30, num_detectors=183, noise=0.05, preset="adler2018"))
    text = comparison.markdown(meta, [])
    assert "`python benchmarks/comparison.py --preset standard --models unet --keep` on" in text
    assert "from the earlier run of day 1 (`" + command + "`)" in text and "Learned gradient descent." in text


def test_keep_refuses_other_data_or_a_missing_table(tmp_path):
    path = tmp_path / "comparison_quick.json"
    with pytest.raises(ValueError, match="does not exist"):
        comparison.kept_rows(path, {}, ["lpd"])
    _table(path, dict(size=64), [dict(method="lgd")], "day 1")
    with pytest.raises(ValueError, match="other data"):
        comparison.kept_rows(path, dict(size=128), ["lpd"])
