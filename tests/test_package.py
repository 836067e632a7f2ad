"""The top-level package: subpackages as lazy attributes; the command's help without JAX."""

import subprocess
import sys


def test_subpackages_are_attributes_after_import():
    code = ("import jaxrecon, sys; assert 'jax' not in sys.modules; "
            "assert jaxrecon.solvers.__name__ == 'jaxrecon.solvers'; print(sorted(dir(jaxrecon)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for name in ("adapt", "data", "deq", "metrics", "nets", "operators", "phantoms", "solvers", "train"):
        assert name in out


def test_help_does_not_import_jax():
    code = "import sys; from jaxrecon.cli import main\ntry:\n main(['--help'])\nexcept SystemExit: pass\nassert 'jax' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)


def test_unknown_attribute_is_an_attribute_error():
    import jaxrecon
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        jaxrecon.nope
