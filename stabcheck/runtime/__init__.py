"""Runtime NaN/Inf trap: `stabcheck run script.py` and `stabcheck.trap()`.

The package is framework-neutral; `torch_trap` is the PyTorch adapter and is
imported only once the user's code imports torch. Importing this package never
imports a framework.
"""

from stabcheck.runtime.config import EXIT_TRAPPED, NonFiniteError, TrapConfig

__all__ = ["EXIT_TRAPPED", "NonFiniteError", "TrapConfig"]
