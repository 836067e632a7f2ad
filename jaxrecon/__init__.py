"""jaxrecon: classical and learned reconstruction for inverse problems in imaging, in JAX."""

from . import metrics, operators, phantoms
from ._version import __version__

__all__ = ["__version__", "metrics", "operators", "phantoms"]
