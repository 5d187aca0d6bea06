"""Localization in the TensorFlow adapter: which op produced the value, at which line.

Eager code: the ops recorded while a tape was open are scanned for the producer
(numerics.producer_kind); when the forward was finite, the recorded forward is
re-executed under a new tape to record the backward pass. `tf.function` / `fit`:
the failing traced function is replayed eagerly (`run_functions_eagerly`) from
the inputs and variable values saved by the traced check (a Site per traced
`gradient()` call), every op recorded, up to the failing `gradient()` call
(the update never runs in the replay); variables are restored after.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from tensorflow.python.eager import backprop, context
from tensorflow.python.framework import op_callbacks
from tensorflow.python.util import nest

from stabcheck.runtime.incident import Finding
from stabcheck.runtime import numerics
from stabcheck.runtime.numerics import kind_of_array, producer_kind
from stabcheck.runtime.report import Location
from stabcheck.runtime.tf_support import ORIG_GRADIENT as _ORIG_GRADIENT
from stabcheck.runtime.tf_support import (INF_WRITERS, NOT_PRODUCERS, as_np, is_float, is_internal, neutral,
                                          tensor_stats, tf_variable, to_location, user_where)



class ReplayDone(BaseException):
    """Ends a replay at the failing gradient() call, before any update runs."""


def scan(records, localized: str) -> Finding | None:
    """The first recorded op whose inputs are finite (NaN-free for a NaN) and whose output is not."""
    for op_type, inputs, outputs, where, phase, extra, _attrs in records:
        if op_type in NOT_PRODUCERS:
            continue
        outs = [o for o in outputs if is_float(o) and hasattr(o, "numpy")]
        bad = None
        for o in outs:
            a = as_np(o)
            if a.size and not np.isfinite(a).all():
                bad = a
                break
        if bad is None:
            continue
        ins = [as_np(i) for i in inputs if is_float(i) and hasattr(i, "numpy")]
        out_nan = any(np.isnan(as_np(o)).any() for o in outs)
        in_nan = any(np.isnan(a).any() for a in ins)
        in_inf = any(np.isinf(a).any() for a in ins)
        kind = producer_kind(out_nan, in_nan, in_inf, bool(ins), op_type in INF_WRITERS, lambda: kind_of_array(bad))
        if kind is None:
            continue  # propagated, or an intentional inf (mask, fill, constant)
        module, forward = (extra or {}).get("module"), (extra or {}).get("forward")
        location = to_location(where)
        if phase == "backward" and forward and forward.get("location"):
            location = Location(**forward["location"])
        stats_in = [tensor_stats(i) for i in inputs if hasattr(i, "numpy") and getattr(i, "dtype", None) is not None
                    and i.dtype != tf.resource]
        return Finding(phase, op_type, kind, location, module, forward, inputs=stats_in,
                       outputs=[tensor_stats(o) for o in outs], localized=localized)
    return None


#: ops an intentional -inf/+inf (a mask built before the tape, a sentinel) is fed to; any other op fed
#: an inf that no recorded op made (a layer's MatMul) is reading data that holds it
MASK_CONSUMERS = frozenset({"Add", "AddV2", "SelectV2", "Select", "Minimum", "Maximum", "Min", "Max", "ArgMin",
                            "ArgMax", "TopKV2", "Less", "LessEqual", "Greater", "GreaterEqual", "Equal", "NotEqual",
                            "IsFinite", "IsInf", "IsNan", "ClipByValue", "Softmax", "LogSoftmax", "Identity",
                            "Cast", "Fill", "BroadcastTo", "Tile", "ExpandDims", "Reshape"})


def data_in(records) -> Finding | None:
    """Eager code: a value no recorded op produced (data, not a variable) that already holds NaN, else
    one holding an inf that an op other than a mask's consumer reads (a record parsed as inf)."""
    for infinite in (False, True):
        produced: set = set()
        for op_type, inputs, outputs, where, phase, _extra, _attrs in records:
            if not infinite or op_type not in MASK_CONSUMERS:
                for t in inputs:
                    if id(t) in produced or not is_float(t) or not hasattr(t, "numpy"):
                        continue
                    a = as_np(t)
                    if np.isinf(a).any() if infinite else np.isnan(a).any():
                        return Finding("input", None, kind_of_array(a), to_location(where),
                                       inputs=[tensor_stats(t)], localized="per-op")
            produced.update(id(o) for o in outputs)
    return None


# ---------------------------------------------------------------------------
# sites: gradient() calls traced into a tf.function


class Site:
    """One `gradient()` call traced into a function graph."""

    def __init__(self, index, function, signature, nargs, where, ordinal, variables, replayable):
        self.index = index
        self.function = function  # weakref to the innermost tf.function being traced, or None
        self.signature = signature
        self.nargs = nargs
        self.where = where
        self.ordinal = ordinal
        self.variables = variables  # weakrefs of the source variables (pre-update values are saved)
        self.replayable = replayable
        self.nchecked = 0
        self.nsnap = 0


@dataclass
class Stash:
    site: Site
    checked: list
    args: list
    snapshot: list
    kind: str


def signature_of(graph):
    """(structured signature, number of tensor args) of a function graph, or (None, 0) if not replayable."""
    sig = getattr(graph, "structured_input_signature", None)
    if sig is None:
        return None, 0
    leaves = nest.flatten(sig, expand_composites=False)
    count = 0
    for leaf in leaves:
        if isinstance(leaf, tf.TensorSpec):
            count += 1
        elif isinstance(leaf, tf.TypeSpec):
            return None, 0  # composite or resource arguments (iterators, datasets): cannot re-feed
    return sig, count


class Localizer:
    """The replays of TFTrap (a mixin); `record_cb` is the trap's op callback."""

    def _backward_from_records(self, records, target, sources, args, kwargs) -> Finding | None:
        """Eager code whose forward was finite: re-execute the recorded forward ops under a new tape
        (same inputs, same variables, not yet updated) and record the backward pass it computes."""
        from tensorflow.python.eager import execute

        ctx = context.context()
        mapping: dict = {}
        forward: list = []
        sub = lambda t: mapping.get(id(t), t)  # noqa: E731
        self.replaying, self.replay_site, self.replay_error = True, None, None
        try:
            with backprop.GradientTape(persistent=True) as tape:
                for v in nest.flatten(sources):
                    if v is not None:
                        inner = tf_variable(v)  # a Keras 3 variable wraps the tf.Variable
                        tape.watch(inner if inner is not None else v)
                for op_type, inputs, outputs, where, phase, _extra, attrs in records:
                    if phase != "forward":
                        continue
                    new_inputs = [sub(t) for t in inputs]
                    new_outputs = execute.execute(op_type, len(outputs), new_inputs, attrs, ctx)
                    execute.record_gradient(op_type, new_inputs, attrs, new_outputs)
                    for old, new in zip(outputs, new_outputs):
                        mapping[id(old)] = new
                    forward.append((op_type, new_inputs, new_outputs, where, "forward", None, attrs))
            new_target = nest.map_structure(sub, target)
            self.records, self.phase, self.recording = forward, "backward", True
            op_callbacks.add_op_callback(self.record_cb)
            try:
                with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
                    self.busy -= 1
                    try:
                        _ORIG_GRADIENT(tape, new_target, sources, *args, **kwargs)
                    finally:
                        self.busy += 1
            finally:
                op_callbacks.remove_op_callback(self.record_cb)
            backward = [r for r in self.records if r[4] == "backward"]
        except Exception as exc:  # re-execution not possible (custom gradients, stateful ops): report detection
            self.replay_error = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            return None
        finally:
            self.replaying, self.recording, self.phase, self.records = False, False, "forward", []
        finding = scan(backward, "per-op")
        if finding is not None:
            self.replay_error = None
        return finding

    def incident(self, stash: Stash, fn) -> None:
        site = stash.site
        where = site.where
        python_fn = getattr(fn, "python_function", None)
        code = getattr(python_fn, "__code__", None)
        users = code is not None and not is_internal(code.co_filename)
        checked = stash.checked
        if checked and not np.isfinite(checked[0]).all():
            # under fit the user never called GradientTape.gradient(): name what they did call
            what = f"the loss passed to GradientTape.gradient() in {fn.__name__}()" if users else \
                "the loss of the training step (model.fit / train_on_batch)"
            at, message = "loss", f"{what} is {kind_of_array(checked[0])}"
        else:
            where_ = f" in {fn.__name__}()" if users else " by the training step (model.fit / train_on_batch)"
            at, message = "backward", f"the gradients computed{where_} are {stash.kind}"
        detected = {"at": at, "message": message,
                    "location": dict(zip(("filename", "line", "function"), where)) if where else None}
        finding = self._data_finding(stash, user_where(sys._getframe(1)))
        replayable = site.replayable and site.function is not None and site.function() is not None
        if finding is None and replayable:
            self.busy += 1
            try:
                finding = self._replay(stash)
            finally:
                self.busy -= 1
        self.trip(detected, finding, "replay" if replayable else None)

    @staticmethod
    def _data_finding(stash: Stash, where) -> Finding | None:
        """The batch the step was fed already holds NaN/Inf: the data, not an op, is the cause."""
        for a in stash.args:
            if isinstance(a, np.ndarray) and a.dtype.kind == "f" and a.size and not np.isfinite(a).all():
                stats = numerics.array_stats(a, a.dtype.name, "cpu")
                return Finding("input", None, kind_of_array(a), to_location(where), inputs=[stats], localized="replay")
        return None

    def _replay(self, stash: Stash) -> Finding | None:
        site = stash.site
        function = site.function()
        leaves = nest.flatten(site.signature, expand_composites=False)
        values = iter(stash.args)
        filled = [tf.constant(next(values)) if isinstance(leaf, tf.TensorSpec) else leaf for leaf in leaves]
        call_args, call_kwargs = nest.pack_sequence_as(site.signature, filled, expand_composites=False)
        variables = [ref() for ref in site.variables]
        saved = [(v, tf.identity(v.read_value())) for v in variables if v is not None]
        for v, value in zip(variables, stash.snapshot):
            if v is not None:
                v.assign(value)
        was_eager = tf.config.functions_run_eagerly()
        self.replaying, self.replay_site, self.replay_grad_calls = True, site, 0
        self.records, self.phase, self.overflowed, self.recording = [], "forward", False, True
        self.replay_error = None
        self.busy -= 1  # the replay's own ops are recorded
        op_callbacks.add_op_callback(self.record_cb)
        try:
            tf.config.run_functions_eagerly(True)
            with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                function.python_function(*call_args, **call_kwargs)
        except ReplayDone:
            pass
        except Exception as exc:  # the replay itself failed: report what the detector saw
            self.replay_error = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        finally:
            try:
                op_callbacks.remove_op_callback(self.record_cb)
            except (KeyError, ValueError):
                pass
            self.busy += 1
            tf.config.run_functions_eagerly(was_eager)
            self.replaying, self.recording, self.phase = False, False, "forward"
            for v, value in saved:
                v.assign(value)
        records, self.records = self.records, []
        finding = scan(records, "replay")
        if finding is not None:
            self.replay_error = None
        return finding

    def replay_gradient(self, tape, target, sources, args, kwargs):
        self.phase = "backward"
        try:
            grads = _ORIG_GRADIENT(tape, target, sources, *args, **kwargs)
        finally:
            self.phase = "forward"
        self.replay_grad_calls += 1
        site = self.replay_site
        if site is None or self.replay_grad_calls > site.ordinal:
            raise ReplayDone()
        return grads

    def forward_of(self, frame) -> dict | None:
        """The forward op (and its line) whose gradient function is running (backward replay only)."""
        while frame is not None:
            if frame.f_code.co_name == "_gradient_function" and "op_name" in frame.f_locals:
                op_name = frame.f_locals["op_name"]
                outputs = frame.f_locals.get("outputs") or ()
                ids = {id(o) for o in outputs}
                loc = None
                for rec in reversed(self.records):
                    if rec[4] == "forward" and rec[0] == op_name and (not ids or any(id(o) in ids for o in rec[2])):
                        loc = rec[3]
                        break
                if loc is None:
                    loc = next((rec[3] for rec in reversed(self.records) if rec[4] == "forward" and rec[0] == op_name),
                               None)
                return {"op": neutral(op_name), "node": op_name,
                        "location": dict(zip(("filename", "line", "function"), loc)) if loc else None}
            frame = frame.f_back
        return None

    # -- reporting ------------------------------------------------------------
