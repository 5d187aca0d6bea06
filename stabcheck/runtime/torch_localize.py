"""Localization in the PyTorch adapter: which op produced the value, at which line.

Parameters and inputs are checked first (a poisoned parameter is named as
such). Then the recorded step is replayed (forward, loss and backward, from the
same inputs and RNG state) under CheckMode, a TorchDispatchMode that checks
every aten op: the producer is the first op whose inputs are finite (NaN-free
for a NaN) and whose output is not (numerics.producer_kind). Anomaly mode
(check_nan=False) is on during the replay's forward so a backward op is traced
to the forward op and line that created its node. Global state (RNG, module
buffers, anomaly mode, .grad) is restored after.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

from stabcheck.runtime import hints
from stabcheck.runtime.incident import Finding
from stabcheck.runtime.numerics import producer_kind
from stabcheck.runtime.torch_record import (ModuleEvent, OpEvent, autocast, is_grad_leaf, is_inplace, reexecuted,
                                            replay_target, tag_nodes)
from stabcheck.runtime.torch_support import (CASTS, INF_WRITERS, NOT_PRODUCERS, caller, float_tensors, kind_of, loc_from_traceback,
                                             loc_of, output_tensors, paired_outputs, rng_state, root_name, set_rng_state,
                                             stats_list, tensor_stats)


class _Found(Exception):
    pass


# reductions whose output is -inf exactly where a whole row of the input is -inf (fully masked)
MASKED_ROW_REDUCTIONS = {"logsumexp", "amax"}


class CheckMode(TorchDispatchMode):
    """Exact, synchronous per-op check used while replaying a step."""

    replaying = True  # ops run from the replay (stabcheck's code): no user frame above it counts

    def __init__(self, trap: Any):
        super().__init__()
        self.trap = trap
        self.event: Any = None
        self.found: Finding | None = None
        self.fallback: Finding | None = None  # a reduction of a fully masked row (see examine)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if kwargs is None:
            kwargs = {}
        if self.found is not None:
            return func(*args, **kwargs)
        out, self.found = self.examine(func, args, kwargs, sys._getframe(1))
        if self.found is not None:
            raise _Found()
        return out

    def examine(self, func, args, kwargs, frame) -> tuple[Any, Finding | None]:
        """Run the op: (its output, a Finding when it produced a non-finite value from finite inputs)."""
        name = hints.base_name(str(func))
        if getattr(func, "is_view", False) or (name in NOT_PRODUCERS and name not in CASTS):
            return func(*args, **kwargs), None  # views, uninitialised memory, initialisers: never the producer
        inputs = float_tensors((args, kwargs))
        mutable = func._schema.is_mutable
        before = [t.detach().clone() for t in inputs] if mutable else inputs
        out = func(*args, **kwargs)
        outs = [t for t in float_tensors(out) if t.numel()]
        bad = [t for t in outs if not bool(torch.isfinite(t).all())]
        if not bad:
            return out, None
        out_nan = any(bool(torch.isnan(t).any()) for t in bad)
        in_nan = any(bool(torch.isnan(t).any()) for t in before)
        in_inf = any(bool(torch.isinf(t).any()) for t in before)
        # a cast to a narrower float type that overflows (float32 -> float16 above 65504) is a producer;
        # other copies only move an inf that is there on purpose
        narrowing = name in CASTS and any(torch.finfo(t.dtype).max > torch.finfo(bad[0].dtype).max for t in before)
        writer = (name in INF_WRITERS and not narrowing) or (name == "log" and len(before) == 1
                                                            and self.from_constants(before) and _is_mask(before[0]))
        kind = producer_kind(out_nan, in_nan, in_inf, bool(before), writer, lambda: kind_of(bad[0]))
        if kind is None:
            if (name in MASKED_ROW_REDUCTIONS and self.fallback is None and not out_nan and not in_nan
                    and any(bool((t == float("-inf")).any()) for t in bad)):
                # a row with every position masked reduces to -inf: the producer, if no op made one
                self.trap.busy += 1
                try:
                    self.fallback = self.trap._finding_for_op(func, "-inf", args, kwargs, before, outs, self, frame)
                finally:
                    self.trap.busy -= 1
            return out, None  # propagated, or an intentional inf (mask, fill, constant)
        self.trap.busy += 1  # the statistics read values back: no incidents of their own
        try:
            return out, self.trap._finding_for_op(func, kind, args, kwargs, before, outs, self, frame)
        finally:
            self.trap.busy -= 1

    def from_constants(self, inputs) -> bool:
        return _on_constants(self.event)


def _argument_name(event, value) -> str | None:
    """The parameter name of the call that `value` was passed as (`target` of MSELoss.forward), or
    its position; None when it sits inside a container."""
    fn = event.module.forward if isinstance(event, ModuleEvent) else event.func
    for key, arg in event.kwargs.items():
        if arg is value:
            return key
    for i, arg in enumerate(event.args):
        if arg is value:
            try:
                names = [p.name for p in inspect.signature(fn).parameters.values()
                         if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
            except (TypeError, ValueError):  # a builtin with no signature
                names = []
            return names[i] if i < len(names) else f"argument {i}"
    return None


class WatchMode(CheckMode):
    """The failing step of a re-run (rerun.py): CheckMode's exact check of every op as it runs. The
    first producer is kept for the report and the run goes on: the trap's detection decides whether
    that value is the fault (a NaN that a where() drops never trips it)."""

    replaying = False  # ops run from the user's code (through the trap's recording mode)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if kwargs is None:
            kwargs = {}
        if self.found is not None or self.trap.busy:
            return func(*args, **kwargs)
        out, found = self.examine(func, args, kwargs, sys._getframe(1))
        if found is not None:
            found.localized = "per-op"
            self.found = found
        elif self.fallback is not None:
            self.fallback.localized = "per-op"
        return out

    def from_constants(self, inputs) -> bool:
        return not any(t.requires_grad for t in inputs)  # no recorded event to ask: the values tell




def _on_constants(event) -> bool:
    """A torch call of the user's code on values that need no gradient (a mask is built from constants;
    log(1 - p) of a model's output is not)."""
    return isinstance(event, OpEvent) and not any(t.requires_grad for t in float_tensors((event.args, event.kwargs)))


def _is_mask(t: torch.Tensor) -> bool:
    """A 0/1 tensor with both values: log(tril(ones)) writes -inf on purpose (an additive attention
    mask). All zeros is no mask: that is a probability that saturated (log(1 - p) at p == 1)."""
    zeros, ones = t == 0, t == 1
    return bool((zeros | ones).all()) and bool(zeros.any()) and bool(ones.any())


def _writes_replayed(args, mapping) -> bool:
    """Does an in-place call (after substitution) write a tensor the replay computed?"""
    target = args[0] if args else None
    targets = target if isinstance(target, (list, tuple)) else [target]
    replayed = {id(v) for v in mapping.values()}
    return any(isinstance(t, torch.Tensor) and id(t) in replayed for t in targets)


class Localizer:
    """Finding the producer once a value was detected (a mixin of TorchTrap): state first,
    then an exact replay of the recorded step, then the per-op flags."""

    def _param_name(self, param) -> str | None:
        seen = set()
        for event in self.events:
            if isinstance(event, ModuleEvent) and id(event.module) not in seen:
                seen.add(id(event.module))
                for name, p in event.module.named_parameters():
                    if p is param:
                        return f"{root_name(event.module)}.{name}"
        return None

    def _module_path(self, module) -> str | None:
        for event in self.events:
            if isinstance(event, ModuleEvent):
                for name, sub in event.module.named_modules():
                    if sub is module:
                        root = root_name(event.module)
                        return f"{root}.{name}" if name else root
        return None

    def _finding_for_op(self, func, kind, args, kwargs, inputs, outs, check: CheckMode, frame) -> Finding:
        node = torch._C._current_autograd_node()
        event = check.event
        module = self._module_path(self.mod_stack[-1]) if self.mod_stack else None
        values = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, (torch.Tensor, int, float))
                  and not isinstance(a, bool)]
        input_stats = stats_list(inputs if func._schema.is_mutable else values)
        user = loc_of(caller(frame, stop_at_own=check.replaying))
        if node is None:
            location = user
            if location is None and event is not None:
                location = event.location
            return Finding("forward", str(func), kind, location, module, None, None, input_stats,
                           stats_list(outs))
        metadata = node.metadata
        index = metadata.get("stabcheck_event")
        fwd_event = self.events[index] if index is not None and index < len(self.events) else None
        fwd_loc, own = loc_from_traceback(metadata.get("traceback_"))
        if fwd_loc is None and fwd_event is not None:
            fwd_loc = fwd_event.location
        if module is None and isinstance(fwd_event, ModuleEvent):
            module = self._module_path(fwd_event.module)
        node_name = node.name()
        forward = {"op": hints.base_name(node_name), "node": node_name,
                   "location": vars(fwd_loc) if fwd_loc else None}
        # a user frame on the stack of a backward op: the backward() of a custom autograd.Function,
        # whose line is the one to edit
        return Finding("backward", str(func), kind, user or fwd_loc, module, forward, None, input_stats,
                       stats_list(outs))

    def _idle_lead(self, detected_at: str | None) -> set:
        """Indices of this step's leading events (the loop's torch code after the previous optimizer step,
        before this step's first module call) whose outputs no later event reads: the previous step's
        metrics and log lines, no part of this step's computation (a NaN metric there is no producer).
        A value read back or left at the exit may be one of them: nothing is idle then."""
        lead = min(self.lead, len(self.events))
        if not lead or detected_at in ("read", "exit"):
            return set()
        needed = {id(t) for e in self.events[lead:] for t in tree_flatten((e.args, e.kwargs))[0]
                  if isinstance(t, torch.Tensor)}
        idle = set()
        for index in range(lead - 1, -1, -1):
            event = self.events[index]
            written = (event.args[0] if isinstance(event, OpEvent) and is_inplace(event.func) and event.args
                       else None)  # `labels[5] = 99` returns nothing and changes labels
            if (isinstance(written, torch.Tensor) and id(written) in needed) or any(
                    id(t) in needed for t in output_tensors(event.output)):
                needed.update(id(t) for t in tree_flatten((event.args, event.kwargs))[0] if isinstance(t, torch.Tensor))
            else:
                idle.add(index)
        return idle

    def _check_state(self, optimizer=None, idle=frozenset(), read=False) -> Finding | None:
        """Parameters and inputs that are already non-finite (named as such, not blamed on an op).
        `read`: a value read back -- what the loop's code between two steps reads may be a value an
        earlier step computed (a list of monitored values stacked for printing): no data, then."""
        between = set()
        if read:  # the events recorded between two steps: this step's lead, the last step's tail
            between.update(range(min(self.lead, len(self.events))))
            if self.tail_from is not None:
                between.update(range(self.tail_from, len(self.events)))
        seen: set = set()
        produced: set = set()  # computed by the step (a replay recomputes them)
        constants: set = set()  # made by the program from constants (a mask of -inf is no fault)
        # state the step writes in place (e.g. a Keras metric's running total, updated with copy_ after
        # the loss): its value now is not the value that was read, and it is no input of the failing
        # computation -- a loss that is already inf would otherwise be blamed on the metric's "input"
        written = self._written_in_place()
        for index, event in enumerate(self.events):
            if index in idle:
                continue
            if isinstance(event, ModuleEvent):
                root = root_name(event.module)
                for name, p in event.module.named_parameters():
                    if id(p) in seen:
                        continue
                    seen.add(id(p))
                    if p.is_floating_point() and not bool(torch.isfinite(p).all()):
                        owner = name.rsplit(".", 1)[0] if "." in name else ""
                        return Finding("parameter", None, kind_of(p), event.location,
                                       f"{root}.{owner}" if owner else root, None, f"{root}.{name}",
                                       [], [tensor_stats(p)], "replay")
            for t in float_tensors((event.args, event.kwargs)):
                if id(t) in produced or written.get(id(t), -1) >= index:  # its value now is not what was read
                    continue
                if self._made_in_step(t, produced):
                    continue
                if not (bool(torch.isnan(t).any()) if id(t) in constants else not bool(torch.isfinite(t).all())):
                    continue
                if index in between:
                    continue
                if is_grad_leaf(t):  # a parameter (a leaf the program trains): no data
                    return Finding("parameter", None, kind_of(t), event.location, None, None,
                                   self._param_name(t) or "a leaf tensor", [], [tensor_stats(t)], "replay")
                module = root_name(event.module) if isinstance(event, ModuleEvent) else None
                stats = tensor_stats(t)
                argument = _argument_name(event, t)
                if argument is not None:
                    stats["argument"] = argument  # a loss's `target`: the labels, not the model's input
                return Finding("input", None, kind_of(t), event.location, module, None, None, [stats], [], "replay")
            if isinstance(event, OpEvent) and is_inplace(event.func):
                continue  # it wrote its input: the output is that input, not a new value
            (produced if reexecuted(event) else constants).update(id(t) for t in output_tensors(event.output))
        if optimizer is not None:
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if id(p) not in seen and p.is_floating_point() and not bool(torch.isfinite(p).all()):
                        return Finding("parameter", None, kind_of(p), None, None, None, "optimizer parameter",
                                       [], [tensor_stats(p)], "replay")
        return None

    def _made_in_step(self, t, produced: set) -> bool:
        """Computed by this step, though no recorded call made it: a view taken by attribute (`h.T`,
        `.mT`: not recorded) of a value the step made, or the output of a call the recording dropped."""
        for value in (t, t._base):
            if value is None:
                continue
            if id(value) in produced and value is not t:
                return True
            ref = self.dropped.get(id(value))
            if ref is not None and ref() is value:
                return True
        return False

    def _written_in_place(self) -> dict:
        """id -> index of the last recorded call of this step that wrote the tensor in place (self of
        `x.add_()`, `x += y`, `x[i] = v`, `x.copy_(y)`, or an `out=` argument)."""
        written: dict = {}
        for index, event in enumerate(self.events):
            if isinstance(event, OpEvent):
                if is_inplace(event.func) and event.args and isinstance(event.args[0], torch.Tensor):
                    written[id(event.args[0])] = index
                out = event.kwargs.get("out") if event.kwargs else None
                if out is not None:
                    written.update((id(t), index) for t in float_tensors(out))
        return written

    def _replay(self, detected_at: str, idle=frozenset()) -> Finding | None:
        if not self.events:
            return None
        events = self.events
        rng = rng_state()
        modules = {id(e.module): e.module for e in events if isinstance(e, ModuleEvent)}
        buffers = [(b, b.detach().clone()) for m in modules.values() for b in m.buffers()]
        leaves = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
        for event in events:
            leaves.extend(t for t in float_tensors((event.args, event.kwargs)) if is_grad_leaf(t))
        leaves = list({id(t): t for t in leaves}.values())
        grads = [(t, t.grad) for t in leaves]
        mapping: dict[int, torch.Tensor] = {}
        keep: list = []
        check = CheckMode(self)
        saved_stack, saved_track = self.mod_stack, self.track_modules
        self.mod_stack, self.track_modules = [], True

        def sub(x):
            return mapping.get(id(x), x) if isinstance(x, torch.Tensor) else x

        try:
            # the replay re-runs the user's forward code: whatever it prints was printed already
            with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), \
                    torch.autograd.set_detect_anomaly(True, check_nan=False):
                for index, event in enumerate(events):
                    if not reexecuted(event) or index in idle:
                        continue  # a factory (its output is the original), or no part of this step
                    check.event = event
                    args, kwargs = tree_map(sub, event.args), tree_map(sub, event.kwargs)
                    with torch.set_grad_enabled(event.grad_enabled), autocast(event.amp):
                        if event.rng is not None:
                            set_rng_state(event.rng)
                        if isinstance(event, ModuleEvent):
                            with check:
                                out = replay_target(event.module)(*args, **kwargs)
                        else:
                            if is_inplace(event.func) and not _writes_replayed(args, mapping):
                                continue  # it wrote an original tensor, whose value now already holds its effect
                            with check:
                                out = event.func(*args, **kwargs)
                    keep.append(out)
                    tag_nodes(out, index)
                    for a, b in paired_outputs(event.output, out):
                        mapping[id(a)] = b
            # a non-finite loss must come from the forward: replay backward only for gradient findings;
            # every backward() of the step (all micro-batches of a gradient accumulation)
            sources = [t for t in leaves if id(t) not in mapping]
            for roots, grad_tensors in self.roots if detected_at not in ("loss", "backward") else ():
                replayed = [mapping.get(id(r)) for r in roots]
                if check.found is None and sources and all(r is not None and r.requires_grad for r in replayed):
                    check.event = None
                    with check:
                        torch.autograd.grad(replayed, sources, grad_outputs=grad_tensors, allow_unused=True,
                                            retain_graph=True)
        except _Found:
            pass
        except Exception as exc:  # the replay itself failed: report what the detector saw
            if check.found is None:
                self.replay_error = f"{type(exc).__name__}: {exc}"
        finally:
            self.mod_stack, self.track_modules = saved_stack, saved_track
            set_rng_state(rng)
            with torch.no_grad():
                for buf, copy in buffers:
                    if buf.shape == copy.shape:
                        buf.copy_(copy)
            for t, g in grads:
                t.grad = g
        return check.found or check.fallback

    def _localize(self, detected: dict, optimizer=None, flag_record=None) -> Finding | None:
        self.replay_error = None
        idle = self._idle_lead(detected.get("at"))
        finding = self._check_state(optimizer, idle, detected.get("at") in ("read", "exit"))
        if finding is None and self.watch is not None:
            finding = self.watch.found or self.watch.fallback  # a re-run's failing step, checked op by op as it ran
        if finding is None:
            finding = self._replay(detected["at"], idle)
        if finding is None and flag_record is None and self.flags:
            flag_record = self._first_bad_flag()
        if finding is None and flag_record is None:
            flag_record = self.suspect  # a NaN made at an earlier step, out of sight until now
        if finding is None and flag_record is not None and flag_record[4] != "nan" and self.events:
            flag_record = None  # an inf the exact replay does not reproduce: intentional (trip stays silent)
        if finding is None and flag_record is not None:
            func, location, mods, node, kind = flag_record
            module = self._module_path(mods[-1]) if mods else None
            phase = "backward" if node else ("optimizer" if detected.get("at") == "optimizer" else "forward")
            forward = {"op": hints.base_name(node), "node": node, "location": None} if node else None
            finding = Finding(phase, str(func), kind, location, module, forward, None, [], [], "per-op")
        return finding

    # -- reporting ------------------------------------------------------------
