"""Host read-backs of PyTorch tensors: where a value leaves the computation for good.

A NaN that never reaches a loss, `backward()` or an optimizer (a direction
`v / v.norm()` that is only printed, a metric, an evaluation score) is seen
when the program reads it back: `.item()`, `float()`, `.tolist()`, `.numpy()`,
`print`/`str`/`format` of a tensor. These calls copy to the host already, so the
check adds no device sync; a read of a finite value costs one isfinite test on
the host copy (or on the tensor for tolist/print, which read it whole anyway).
"""

from __future__ import annotations

import math
import os
import sys
import threading

import numpy as np
import torch

from stabcheck.runtime import frames

_Tensor = torch.Tensor
_COMPILER_DIRS = tuple(os.path.join(frames.package_dir("torch") or "\0", sub) + os.sep
                       for sub in ("_dynamo", "_inductor", "_functorch", "_subclasses", "fx", "export"))
_ORIGINALS: dict = {}
_trap = None


def _report(tensor, how: str) -> None:
    trap = _trap
    if trap is not None and not trap.busy and not trap.muted:
        frame = sys._getframe(2)
        if frame.f_code.co_filename.startswith(_COMPILER_DIRS):
            return  # torch.compile reading its own values (folding an -inf mask constant): no exit
        trap.read_back(tensor, how, frame)


def _after_step(trap) -> None:
    """A loss logged after the optimizer step (`running += loss.item()`): the loop's code from here to
    its next module call is recorded (TorchTrap.open_tail)."""
    if trap.tail_pending and threading.get_ident() == trap.thread:
        trap.open_tail()


def _item(self):
    value = _ORIGINALS["item"](self)
    trap = _trap
    if trap is not None:
        _after_step(trap)
        if type(value) is float and not math.isfinite(value):
            _report(self, ".item() returned")
    return value


def _float(self):
    value = _ORIGINALS["__float__"](self)  # its warning (requires grad) is moved to the user's line: warning_lines
    trap = _trap
    if trap is not None:
        _after_step(trap)
        if not math.isfinite(value):
            _report(self, "float() returned")
    return value


def _tolist(self):
    if _trap is not None and self.is_floating_point() and self.device.type != "meta" and self.numel():
        if not bool(torch.isfinite(self).all()):
            _report(self, ".tolist() returned")
    return _ORIGINALS["tolist"](self)


def _numpy(self, *args, **kwargs):
    array = _ORIGINALS["numpy"](self, *args, **kwargs)
    if _trap is not None and array.dtype.kind == "f" and array.size and not np.isfinite(array).all():
        _report(self, ".numpy() returned")
    return array


def _repr(self, *args, **kwargs):
    if (_trap is not None and not _trap.busy and self.is_floating_point() and self.device.type != "meta"
            and self.numel() and not isinstance(self, torch.nn.Parameter) and not bool(torch.isfinite(self).all())):
        _report(self, "a tensor printed holds")
    return _ORIGINALS["__repr__"](self, *args, **kwargs)


_PATCHES = {"item": _item, "__float__": _float, "tolist": _tolist, "numpy": _numpy, "__repr__": _repr}


_MISSING = object()
_saved: dict = {}  # what Tensor's own __dict__ held before install (a method inherited: _MISSING)


def own_tolist(tensor) -> list:
    """`tensor.tolist()` for the trap's own reads (its flight recorder's ring holds NaN for empty slots);
    past the recording mode too, whose dispatch would call the patched method."""
    with torch._C.DisableTorchFunction():
        return _ORIGINALS.get("tolist", _Tensor.tolist)(tensor)


def install(trap) -> None:
    global _trap
    for name, patch in _PATCHES.items():
        _saved[name] = _Tensor.__dict__.get(name, _MISSING)
        _ORIGINALS[name] = getattr(_Tensor, name)
        setattr(_Tensor, name, patch)
    _trap = trap


def uninstall() -> None:
    global _trap
    _trap = None
    for name, patch in _PATCHES.items():
        if _Tensor.__dict__.get(name) is not patch:
            continue  # someone patched it after us: leave theirs
        before = _saved.pop(name, _MISSING)
        if before is _MISSING:
            delattr(_Tensor, name)  # inherited again, as before
        else:
            setattr(_Tensor, name, before)
