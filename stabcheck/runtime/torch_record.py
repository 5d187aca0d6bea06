"""Recording a step of the PyTorch adapter: references (never copies) to what a
replay needs to re-run the step exactly.

A step is recorded from its top-level module calls (module, inputs, RNG state,
autocast state, caller line) and the torch calls of the user's own code between
them and `backward()` (TailMode, a TorchFunctionMode pushed only while no module
runs). The recording is bounded: MAX_EVENTS calls per step.
"""

from __future__ import annotations

import contextlib
import os
import sys
import weakref
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from stabcheck.runtime.report import Location
from stabcheck.runtime.torch_support import AMP_DEVICES, in_functorch, is_internal, output_tensors, rng_state, site, where

MAX_EVENTS = 5000  # recorded calls per step; beyond this the step is not recorded (replay impossible)
MAX_MODULE_EVENTS = 32  # top-level module calls kept without a backward/step in between (newest kept)
MAX_EVENT_BYTES = 64 << 20  # outputs of recorded torch calls kept per step (a long loop with no backward)

F = torch.nn.functional
LOSS_MODULE = torch.nn.modules.loss._Loss  # its output is checked as the step's loss
LOSS_FUNCTIONS = frozenset(
    getattr(F, name) for name in (
        "binary_cross_entropy", "binary_cross_entropy_with_logits", "cosine_embedding_loss", "cross_entropy",
        "ctc_loss", "gaussian_nll_loss", "hinge_embedding_loss", "huber_loss", "kl_div", "l1_loss",
        "margin_ranking_loss", "mse_loss", "multi_margin_loss", "multilabel_margin_loss",
        "multilabel_soft_margin_loss", "nll_loss", "poisson_nll_loss", "smooth_l1_loss", "soft_margin_loss",
        "triplet_margin_loss", "triplet_margin_with_distance_loss",
    ) if hasattr(F, name)
)

_TORCH_LOSSES = LOSS_MODULE.__module__  # torch's own loss modules draw no random numbers
LEARN_CALLS = 8  # calls of a module seen drawing no random numbers before its calls are recorded without the RNG state
RECHECK_EVERY = 64  # a module taken as drawing none is checked again on one call in this many
_DRAWS = -1  # a module seen drawing random numbers: its calls always keep the RNG state


class RandomDraws:
    """Which modules draw random numbers in their forward: a replay of a call that draws must restore the
    RNG state of that moment (the same dropout mask); a call that draws none needs no state. Keeping
    the state is a 5 kB copy per call, the largest single cost of the trap on a small model's step, so
    it is kept only while a module may draw: always for one seen drawing, for its first LEARN_CALLS
    calls (each compared with the state after it), then on one call in RECHECK_EVERY (where a module
    that draws only sometimes is caught). Learned per module and train/eval mode (dropout draws only in
    training). A call that drew although taken as drawing none is replayed with other random numbers:
    that replay may not reproduce, and the re-run (rerun.py), which re-executes the script, localizes."""

    def __init__(self):
        self.seen: dict = {}  # (id(module), training) -> [weakref to the module, calls seen drawing none or _DRAWS]

    def before(self, module):
        """(the RNG state to record with this call or None, whether to compare it with the state after)."""
        if type(module).__module__ == _TORCH_LOSSES:
            return None, False
        key = (id(module), module.training)
        entry = self.seen.get(key)
        if entry is None or entry[0]() is not module:
            if len(self.seen) > 4096:  # modules made anew each step: forget the dead ones
                self.seen = {k: e for k, e in self.seen.items() if e[0]() is not None}
            entry = self.seen[key] = [weakref.ref(module), 0]
        calls = entry[1]
        if calls == _DRAWS:
            return rng_state(), False
        if calls >= LEARN_CALLS and calls % RECHECK_EVERY:
            entry[1] = calls + 1
            return None, False
        return rng_state(), True

    def after(self, module, state) -> None:
        """After a call recorded with `state` and to be compared: did it draw?"""
        entry = self.seen.get((id(module), module.training))
        if entry is None or entry[0]() is not module:
            return
        now = rng_state()
        drew = len(now) != len(state) or any(not torch.equal(a, b) for a, b in zip(_flat(now), _flat(state)))
        entry[1] = _DRAWS if drew else entry[1] + 1


def _flat(state) -> list:
    """The tensors of an rng_state(): the CPU generator's, then each CUDA device's."""
    return [state[0], *(state[1] if len(state) > 1 else ())]



# one C call per recorded event says whether autocast is on at all (amp_state asks each device)
_any_autocast = getattr(torch._C, "_is_any_autocast_enabled", None) or (lambda: True)


class ModuleEvent:
    """A top-level module call of the current step (references only, no copies)."""

    __slots__ = ("module", "args", "kwargs", "rng", "where", "grad_enabled", "amp", "output")

    def __init__(self, module, args, kwargs, rng, where, grad_enabled):
        self.module, self.args, self.kwargs, self.rng = module, args, kwargs, rng
        self.where, self.grad_enabled, self.output = where, grad_enabled, None
        self.amp = amp_state() if _any_autocast() else None

    @property
    def location(self) -> Location | None:
        return site(self.where)


class OpEvent:
    """A torch call of the user's own code outside module calls (references only, no copies)."""

    __slots__ = ("func", "args", "kwargs", "output", "where", "grad_enabled", "amp", "rng")

    def __init__(self, func, args, kwargs, output, where, grad_enabled, rng=None):
        self.func, self.args, self.kwargs, self.output = func, args, kwargs, output
        self.where, self.grad_enabled, self.rng = where, grad_enabled, rng
        self.amp = amp_state() if _any_autocast() else None

    @property
    def location(self) -> Location | None:
        return site(self.where)


# torch calls that draw random numbers: their event keeps the RNG state, so a replay draws the same ones
RANDOM_CALLS = frozenset({
    "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout", "rrelu",
    "gumbel_softmax", "bernoulli", "bernoulli_", "multinomial", "normal", "normal_", "poisson", "rand_like",
    "randn_like", "randint_like", "uniform_", "exponential_", "random_", "cauchy_", "log_normal_", "geometric_",
})


def reexecuted(event) -> bool:
    """Does a replay run this event again? Module calls do. A torch call does when it computes from
    tensors (a factory's output is the original, as are the outputs of `out=` calls, which a replay
    must not overwrite)."""
    if isinstance(event, ModuleEvent):
        return True
    if event.kwargs and "out" in event.kwargs:
        return False
    return any(isinstance(a, torch.Tensor) for a in tree_flatten((event.args, event.kwargs))[0])


def amp_state():
    """Autocast settings in force (a replay must run in the same precision), or None."""
    if not _any_autocast():
        return None
    state = None
    for device in AMP_DEVICES:
        if torch.is_autocast_enabled(device):
            state = (state or ()) + ((device, torch.get_autocast_dtype(device)),)
    return state


def autocast(state):
    stack = contextlib.ExitStack()
    for device, dtype in state or ():
        stack.enter_context(torch.autocast(device, dtype=dtype))
    return stack


class TailMode(TorchFunctionMode):
    """Records the user's own torch calls while no module runs (pushed only then: see TorchTrap.open_window)."""

    def __init__(self, trap: Any):
        super().__init__()
        self.trap = trap

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if kwargs is None:
            kwargs = {}
        trap = self.trap
        if (trap.depth or trap.busy or not trap.window_open or in_functorch()
                or (trap.in_step and _from_optimizer(sys._getframe(1)))):
            return func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        rng = rng_state() if name in RANDOM_CALLS else None
        try:
            out = func(*args, **kwargs)
        except RuntimeError as exc:
            if func in LOSS_FUNCTIONS:  # BCE refuses NaN input: say where the NaN came from
                trap.loss_refused(exc, name, args, kwargs, where(sys._getframe(1)))
            raise
        # `x[i] = v` returns nothing but changes x: a replay that recomputes x must change it too
        if isinstance(out, torch.Tensor) or name == "__setitem__" or (isinstance(out, (tuple, list)) and out
                                                                      and isinstance(out[0], torch.Tensor)):
            try:
                if name == "__get__":
                    return out
                if is_inplace(func) and _is_parameter_update(args):
                    if not (trap.saw_optimizer or trap.backward_calls):  # initialisation: where each was written
                        trap.init_writes[id(args[0])] = where(sys._getframe(1))
                    return out
                if trap.step_done and trap.tail_from is None:
                    trap.new_step()
                at = where(sys._getframe(1))
                trap.record(OpEvent(func, args, kwargs, out, at, torch.is_grad_enabled(), rng))
            except Exception:  # the recording must never break the user's call: this step is not replayable
                trap.forget_step()
                return out
            if func in LOSS_FUNCTIONS:
                trap.check(out, "loss", f"{func.__name__}() returned", site(at))
        return out


_OPTIM_DIR = os.path.dirname(torch.optim.__file__) + os.sep


def _from_optimizer(frame) -> bool:
    """A call made by torch.optim's own update code (LBFGS's direction and line search between two
    closure evaluations), not by the closure: no part of the step's computation, and replaying it
    against the optimizer's since-updated state computes values that never existed."""
    while frame is not None:
        name = frame.f_code.co_filename
        if name.startswith(_OPTIM_DIR):
            return True
        if not is_internal(name):
            return False
        frame = frame.f_back
    return False


def _is_parameter_update(args) -> bool:
    """`w -= lr * w.grad`, `w.add_(...)`, an initialiser: an in-place write to a leaf that requires grad
    is an update between steps, not part of a step's computation, and so is one to a view of such a leaf."""
    target = args[0] if args else None
    targets = target if isinstance(target, (list, tuple)) else [target]  # _foreach_add_(params, ...)
    return bool(targets) and all(isinstance(t, torch.Tensor) and (is_grad_leaf(t) or is_grad_leaf(t._base))
                                 for t in targets)


def is_grad_leaf(t) -> bool:
    """A leaf that requires grad (`t._base` of a view written under no_grad: `weight[row].fill_(0)`).
    is_leaf of a view made under no_grad whose base was then written in place raises (spectral_norm's
    `weight_mat`): no leaf of the step's gradients, then."""
    try:
        return t is not None and t.requires_grad and t.is_leaf
    except RuntimeError:
        return False


def is_inplace(func) -> bool:
    """A torch call that writes its first argument in place: `x.add_()`, `x += y` (not `__add__`)."""
    name = getattr(func, "__name__", "")
    return name.endswith("_") and not name.endswith("__") or name.startswith("__i") or name == "__setitem__"


def replay_target(module):
    """The module to call in a replay: DDP's wrapped module (a replay must not join collectives)."""
    name = type(module).__name__
    if name == "DistributedDataParallel" and isinstance(getattr(module, "module", None), torch.nn.Module):
        return module.module
    if "FullyShard" in name or name == "FSDPModule":
        raise RuntimeError("replaying a sharded (FSDP) module is not supported")
    return module


def tag_nodes(out, index: int) -> None:
    """Mark the autograd nodes created by replayed event `index` (backward ops -> forward line)."""
    stack = [t.grad_fn for t in output_tensors(out) if t.grad_fn is not None]
    while stack:
        node = stack.pop()
        if node is None:
            continue
        metadata = node.metadata
        if "stabcheck_event" in metadata:
            continue
        metadata["stabcheck_event"] = index
        stack.extend(fn for fn, _ in node.next_functions if fn is not None)
