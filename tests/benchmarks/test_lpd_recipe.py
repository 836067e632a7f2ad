"""benchmarks/lpd_recipe.py: its variants are the configs they name, and bad runs are usage errors."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import lpd_recipe

from jaxrecon.train.experiment import experiment_config


def test_variants_differ_only_in_initialisation_and_b2():
    quick = experiment_config("lpd", "quick", train={"steps": 10, "validate_every": 5})
    assert lpd_recipe.variant_config("both", 10, 5, smoke=False) == quick  # the quick preset's recipe
    default = lpd_recipe.variant_config("default", 10, 5, smoke=False)
    assert (default["model_options"]["weight_init"], default["train"]["b2"]) == ("default", 0.999)
    strip = lambda c: (dict(c["model_options"], weight_init=None), dict(c["train"], b2=None), c["data"])  # noqa: E731
    assert strip(default) == strip(quick)


def test_unknown_run_is_a_usage_error():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "lpd_recipe.py"), "--runs", "default,adamw"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "expected some of default, glorot, b2, both, got 'default,adamw'" in proc.stderr
