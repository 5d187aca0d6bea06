"""The PyTorch entry points the trap wraps while it is installed, and nothing else: each wrapper
hands its call to the active TorchTrap (torch_trap.py), or straight through when none is active, in a
thread other than the one that installed it, or while the trap runs its own code (`busy`).

    nn.Module.__call__        top-level module calls are recorded (torch_record.py)
    torch.autograd.backward   the tensors passed to it and the .grad it leaves are checked
    Tensor.backward           leaves the recording mode before torch dispatches it
    autograd.Function.apply   a custom Function is recorded as one call (its backward is replayed)
    Optimizer.zero_grad       runs outside the recording (a closure's zero_grad starts its step)
    DataLoader's __next__     runs outside the recording (the batch is data)
    GradScaler.scale          a scaled loss may overflow on purpose
"""

from __future__ import annotations

import sys
import threading

import torch

from stabcheck.runtime.torch_record import OpEvent
from stabcheck.runtime.torch_support import PASS_THROUGH, in_functorch, where

ORIG_MODULE_CALL = torch.nn.Module.__call__
_ORIG_BACKWARD = torch.autograd.backward


_ACTIVE = None  # the installed TorchTrap


def _module_call(self, *args, **kwargs):
    trap = _ACTIVE
    if trap is None or (trap.depth and not trap.track_modules) or threading.get_ident() != trap.thread:
        # a submodule of a recorded call (the common case first: no thread lookup per submodule), or
        # another thread (the recording is the installing thread's; other training threads are
        # checked at the optimizer step: they must not interleave with its module stack)
        return ORIG_MODULE_CALL(self, *args, **kwargs)
    if trap.depth or trap.busy:
        if trap.track_modules:
            trap.mod_stack.append(self)
            try:
                return ORIG_MODULE_CALL(self, *args, **kwargs)
            finally:
                trap.mod_stack.pop()
        return ORIG_MODULE_CALL(self, *args, **kwargs)
    if in_functorch():  # inside vmap / torch.func.grad: its values cannot be recorded or read
        return ORIG_MODULE_CALL(self, *args, **kwargs)
    return trap.top_level_call(self, args, kwargs)


try:
    from torch.amp.grad_scaler import GradScaler as _GradScaler

    _ORIG_SCALE = _GradScaler.scale
    _ORIG_SCALER_STEP = _GradScaler.step
except (ImportError, AttributeError):  # pragma: no cover - torch without torch.amp
    _GradScaler = _ORIG_SCALE = _ORIG_SCALER_STEP = None


def _scaler_scale(self, outputs):
    trap = _ACTIVE
    if trap is not None and self.is_enabled():  # (a disabled scaler scales nothing, skips no step)
        trap.scaled = True
        if trap.flag_mode is not None:
            trap.scale_mark = trap.flags.seq  # --per-op: the flags of the scaled backward start here
    return _ORIG_SCALE(self, outputs)


def _scaler_step(self, optimizer, *args, **kwargs):
    """A step GradScaler skips (its scaled gradients overflowed: the scale is too high, on purpose
    at first) is no fault: --per-op forgets the flags its backward, unscale_ and clipping raised."""
    result = _ORIG_SCALER_STEP(self, optimizer, *args, **kwargs)
    trap = _ACTIVE
    if trap is not None and trap.flag_mode is not None and trap.scale_mark is not None:
        state = getattr(self, "_per_optimizer_states", {}).get(id(optimizer), {})
        found = state.get("found_inf_per_device") or {}
        if any(v.item() for v in found.values()):  # (read by step() already: no new sync)
            trap.flags.truncate(trap.scale_mark)
        trap.scale_mark = None
    return result


_ORIG_APPLY = torch.autograd.Function.__dict__["apply"]


@classmethod
def _function_apply(cls, *args, **kwargs):
    """A custom autograd.Function is recorded as one call (not as its forward's ops), so that a replay
    builds its node again and runs the user's backward()."""
    trap = _ACTIVE
    if (trap is None or trap.depth or trap.busy or not trap.window_open or threading.get_ident() != trap.thread
            or in_functorch()):
        return _ORIG_APPLY.__func__(cls, *args, **kwargs)
    trap.depth += 1
    try:
        out = _ORIG_APPLY.__func__(cls, *args, **kwargs)
    finally:
        trap.depth -= 1
    if trap.step_done and trap.tail_from is None:
        trap.new_step()
    trap.record(OpEvent(cls.apply, args, kwargs, out, where(sys._getframe(1)), torch.is_grad_enabled()))
    return out


_LOADER_ITER = torch.utils.data.dataloader._BaseDataLoaderIter
_ORIG_LOADER_NEXT = _LOADER_ITER.__next__


def _loader_next(self):
    """A DataLoader's next batch is loaded with the recording off: the batch is data (a NaN in it is
    reported as such), and recording a main-process loader's per-sample transforms would cost more
    than the rest of the trap."""
    trap = _ACTIVE
    if trap is None or threading.get_ident() != trap.thread or not (trap.window_open or trap.tail_pending):
        return _ORIG_LOADER_NEXT(self)
    trap.close_window()
    try:
        return _ORIG_LOADER_NEXT(self)
    finally:
        if trap.tail_pending:
            trap.open_tail()  # the loop's code on this batch, up to its next module call
        else:
            trap.open_window()


_ORIG_ZERO_GRAD = torch.optim.Optimizer.zero_grad


def _zero_grad(self, *args, **kwargs):
    """optimizer.zero_grad() runs with the recording off: clearing .grad is no part of a step's
    computation, and recording its per-parameter calls would cost more than the rest of the trap."""
    trap = _ACTIVE
    if trap is not None and trap.in_step and not trap.busy and threading.get_ident() == trap.thread:
        # a closure evaluated by optimizer.step() (LBFGS) begins: a step of its own, recorded from here
        trap.new_step()  # also when it calls no module (the optimizer's own calls are not: TailMode)
        trap.open_window()
    if trap is not None and trap.tail_pending and threading.get_ident() == trap.thread:
        try:
            return _ORIG_ZERO_GRAD(self, *args, **kwargs)
        finally:
            trap.open_tail()  # the loop's code after it, up to its next module call
    if trap is None or not trap.window_open:
        return _ORIG_ZERO_GRAD(self, *args, **kwargs)
    trap.close_window()
    try:
        return _ORIG_ZERO_GRAD(self, *args, **kwargs)
    finally:
        trap.open_window()


def _autograd_backward(tensors, *args, **kwargs):
    trap = _ACTIVE
    if trap is None or trap.busy or threading.get_ident() != trap.thread:
        return _ORIG_BACKWARD(tensors, *args, **kwargs)
    trap.raise_if_stopped()
    trap.before_backward(tensors, args[0] if args else kwargs.get("grad_tensors"))
    reopen = trap.close_for_backward()
    try:
        result = _ORIG_BACKWARD(tensors, *args, **kwargs)
    finally:
        if reopen:
            trap.open_window()
    trap.after_backward()
    return result


_ORIG_TENSOR_BACKWARD = torch.Tensor.backward
_has_torch_function = torch._C._has_torch_function_unary


def _tensor_backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None):
    """`loss.backward()`: the recording mode leaves the stack before the call is dispatched (inside the
    mode's own handler it could not, and every later torch call of the step -- the optimizer's --
    would pay for it). A step with no module call records again after it (TorchTrap.close_for_backward).
    For a plain tensor it then does what Tensor.backward does (autograd.backward, here the wrapper
    below) without Tensor.backward's own frame: the trap adds no call depth to backward()."""
    trap = _ACTIVE
    if trap is None or trap.busy or threading.get_ident() != trap.thread:
        return _ORIG_TENSOR_BACKWARD(self, gradient, retain_graph, create_graph, inputs)
    reopen = trap.close_for_backward()
    try:
        if type(self) is torch.Tensor and not _has_torch_function(self):
            return _autograd_backward(self, gradient, retain_graph, create_graph, inputs=inputs)
        return _ORIG_TENSOR_BACKWARD(self, gradient, retain_graph, create_graph, inputs)
    finally:
        if reopen and trap.installed:
            trap.open_window()


PASS_THROUGH.update({_module_call.__code__, _function_apply.__func__.__code__})


_PATCHES = [(torch.nn.Module, "__call__", ORIG_MODULE_CALL, _module_call),
            (torch.autograd, "backward", _ORIG_BACKWARD, _autograd_backward),
            (torch.Tensor, "backward", _ORIG_TENSOR_BACKWARD, _tensor_backward),
            (torch.autograd.Function, "apply", _ORIG_APPLY, _function_apply),
            (torch.optim.Optimizer, "zero_grad", _ORIG_ZERO_GRAD, _zero_grad),
            (_LOADER_ITER, "__next__", _ORIG_LOADER_NEXT, _loader_next)]
if _GradScaler is not None:
    _PATCHES.append((_GradScaler, "scale", _ORIG_SCALE, _scaler_scale))
    _PATCHES.append((_GradScaler, "step", _ORIG_SCALER_STEP, _scaler_step))


def install(trap) -> None:
    global _ACTIVE
    if _ACTIVE is not None:
        raise RuntimeError("a stabcheck trap is already active")
    _ACTIVE = trap
    for owner, name, _original, patch in _PATCHES:
        setattr(owner, name, patch)


def uninstall() -> None:
    global _ACTIVE
    try:
        for owner, name, original, _patch in _PATCHES:
            setattr(owner, name, original)
    finally:
        _ACTIVE = None


def active():
    return _ACTIVE
