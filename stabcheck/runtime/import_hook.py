"""Run code right after a framework is imported, without importing it early:
the trap for torch or TensorFlow is installed when the user's script
imports it."""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from typing import Callable


class AfterImport(importlib.abc.MetaPathFinder):
    def __init__(self, name: str, callback: Callable[[], None]):
        self.name = name
        self.callback = callback
        self._busy = False

    def install(self) -> "AfterImport":
        sys.meta_path.insert(0, self)
        return self

    def remove(self) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name or self._busy:
            return None
        self._busy = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._busy = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        original = spec.loader.exec_module

        def exec_module(module):
            original(module)
            self.remove()
            self.callback()

        spec.loader.exec_module = exec_module
        return spec
