"""jaxrecon: classical and learned reconstruction for inverse problems in imaging, in JAX.

Subpackages are imported on first use (`jaxrecon.solvers` works after `import jaxrecon`), so that
`import jaxrecon` and the `jaxrecon` command's help start without loading JAX.
"""

import importlib

from ._version import __version__

_SUBPACKAGES = ("adapt", "data", "deq", "metrics", "nets", "operators", "phantoms", "solvers", "train")
__all__ = ["__version__", *_SUBPACKAGES]


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'jaxrecon' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
