"""Provenance: which expressions hold probabilities, and where they flow.

One walk over a module's `ast`, in statement order (walker.py). Each
expression gets an abstract value (values.py); the walk tells the checks
about the events they subscribe to (a log, a loss call, a product, a square)
together with the values involved and the facts known where they happen.
"""

from stabcheck.flow.scopes import ClassInfo, FuncInfo, Instance
from stabcheck.flow.syntax import base_key, const_value, strip
from stabcheck.flow.walker import EVENTS, Walker

__all__ = ["EVENTS", "ClassInfo", "FuncInfo", "Instance", "Walker", "base_key", "const_value", "strip"]
