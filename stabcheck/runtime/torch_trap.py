"""PyTorch adapter of the runtime trap: its state, the step boundaries and the reports (the entry
points of torch it wraps while installed are in torch_patches.py).

Two tiers (measurements in benchmarks/runtime_overhead.py and the README):

* **Detect (always on, cheap; torch_detect.py).** Checks the values that a NaN
  cannot avoid: the output of every loss (nn loss modules and
  `torch.nn.functional` losses called by the user), every tensor passed to
  `backward()`, and every gradient just before `optimizer.step()`. To be able
  to localize later, each step is recorded by reference (torch_record.py).
* **Localize (on detection; torch_localize.py).** State first, then an exact
  replay of the recorded step under a per-op checking dispatch mode.

`per_op=True` adds a continuous TorchDispatchMode that keeps one fp32 sum per
floating output as a 0-d device tensor and checks them all at the optimizer
step with a single host sync; it catches values that never reach a loss or a
gradient, and localizes when the step cannot be replayed. Shared helpers
(frames, tensor statistics, op tables) live in torch_support.py.
"""

from __future__ import annotations

import sys
import threading
import time
import weakref

import torch

from stabcheck.runtime import divergence, hints, readback, torch_patches, warning_lines
from stabcheck.runtime.config import NonFiniteError, TrapConfig
from stabcheck.runtime.incident import Finding, IncidentSink
from stabcheck.runtime.report import Location, TrapReport
from stabcheck.runtime.rerun import exit_now
from stabcheck.runtime.torch_detect import Detector
from stabcheck.runtime.torch_flags import FlagLog, FlagMode
from stabcheck.runtime.torch_flight import FlightRecorder
from stabcheck.runtime.torch_localize import Localizer, WatchMode
from stabcheck.runtime.torch_record import (LOSS_MODULE, MAX_EVENT_BYTES, MAX_EVENTS, MAX_MODULE_EVENTS, ModuleEvent,
                                            OpEvent, RandomDraws, TailMode)
from stabcheck.runtime.torch_support import (caller, float_tensors, grad_leaves, host_item, is_internal, root_name,
                                             kept_by_the_program, kind_of, loc_of, site, tensor_stats, where)

# the torch function mode stack, called directly (TorchFunctionMode.__enter__/__exit__ wrap these in
# two Python frames each; the recording mode is pushed and popped a few times per step)
_push_function_mode = torch._C._push_on_torch_function_stack
_pop_function_mode = torch._C._pop_torch_function_stack
_function_modes = torch._C._len_torch_function_stack
_function_mode_at = torch._C._get_function_stack_at

# ---------------------------------------------------------------------------
# the trap


class TorchTrap(Detector, Localizer, IncidentSink):
    def __init__(self, config: TrapConfig):
        self.config = config
        self.depth = 0
        self.busy = 0
        self.events: list = []
        self.event_bytes = 0  # output bytes the recorded torch calls of this step hold
        self.dropped: dict = {}  # id -> weakref: outputs of calls of this step dropped from its recording
        self.step_done = False
        # index of the first event recorded after the last optimizer step (a step of module calls): the
        # loop's own torch code before the next module call (a batch normalised by hand) is part of the
        # next step, and kept into it
        self.tail_from: int | None = None
        # ... recorded from the loop's next DataLoader fetch, zero_grad() or loss.item() on (open_tail):
        # opened at the step's end, the recording mode would also see the optimizer's own profiler exit
        # after its post-hook, which alone cost a sixth of the trap's fixed cost per step
        self.tail_pending = False
        self.lead = 0  # events of this step recorded before its first module call (that code)
        self.roots: list = []  # (tensors, grad_tensors) of each backward() of this step
        self.grad_leaves = None  # no optimizer: the leaves whose .grad the running backward() fills
        self.in_step = False  # between an optimizer's step pre- and post-hook
        self.step_loss = None  # the loss of this step (a 0-d tensor passed to backward())
        self.history = FlightRecorder()  # per-step loss and norms, for a divergence diagnosis
        self.norms_due = 0  # the step at which the flight recorder takes the norms next
        self.step_clock = time.perf_counter()  # when the flight recorder last recorded (a step's time)
        self.last_optimizer = None  # weakref of the optimizer of the last step
        self.primary_optimizer = None  # weakref of the first optimizer seen: its steps are the step count
        self.step_counts: dict = {}  # id(optimizer) -> [weakref, its steps], for the others than the primary
        self.stepped_since_primary: set = set()  # ids of the other optimizers that stepped since its last step
        self.steps = 0
        self.updating = 0  # 1 between the first optimizer's step pre- and post-hook
        self.backward_calls = 0
        self.saw_optimizer = False
        self.pending: list = []  # (value finite iff ok, at, message, location) for accelerator tensors
        self.flags = FlagLog()  # --per-op: this step's flags, checked at the step sync
        self.mod_stack: list = []
        self.track_modules = config.per_op
        self.window_open = False  # recording the user's torch calls
        self.tail_pushed = False  # the recording mode is on the torch function mode stack
        self.tail_mode = TailMode(self)
        self.draws = RandomDraws()  # which modules' calls need the RNG state recorded
        self.flag_mode = FlagMode(self) if config.per_op else None
        self.watch: WatchMode | None = None  # a re-run's failing step (at_step_boundary)
        self.anomaly = None  # anomaly mode before the watch turned it on
        self.handles: list = []
        self.muted = False
        self.incidents = 0
        self.first_report: TrapReport | None = None
        self.stopped: TrapReport | None = None
        self.benign: set = set()
        # --per-op: the first op that made a NaN the checks then found neutralised (torch_detect.flush),
        # kept to localize it should the value come out later (read back from a list of monitored values)
        self.suspect = None
        self.init_writes: dict = {}  # id(parameter) -> where the program wrote it in place before any update
        self.init_nonfinite: set | None = None  # ids of the parameters non-finite at the first optimizer step
        self.installed = False
        self.last_checked = None
        self._found_inf: dict = {}
        self._grads_ok = False  # the last fused gradient check found every gradient finite
        self._uniform_key = None  # (count, device, dtype) of gradients last found fit for the fused check
        self.module_events = 0
        self.grad_events = 0
        self.scaled = False  # a GradScaler scaled this step's loss: inf in backward is its business
        self.scale_mark = None  # --per-op: the first flag of the scaled backward (torch_patches._scaler_step)
        self.defer_cpu = False  # tests: treat CPU values like accelerator ones (checked at the step sync)

    # -- install / uninstall ------------------------------------------------
    def install(self) -> None:
        self.thread = threading.get_ident()
        torch_patches.install(self)
        from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

        self.handles = [register_optimizer_step_pre_hook(self._pre_step),
                        register_optimizer_step_post_hook(self._post_step)]
        readback.install(self)
        warning_lines.install(is_internal)
        if self.flag_mode is not None:
            self.flag_mode.__enter__()
        self.installed = True
        self.open_window()  # code with no module call is recorded too
        self.at_step_boundary()  # a re-run of step 0

    def uninstall(self) -> None:
        if not self.installed:
            return
        self.installed = False
        try:
            self.close_window()
            for mode in (self.watch, self.flag_mode):
                if mode is not None:
                    try:
                        mode.__exit__(None, None, None)
                    except Exception:
                        pass
            if self.anomaly is not None:
                torch.autograd.set_detect_anomaly(*self.anomaly)
            for handle in self.handles:
                handle.remove()
            self.handles = []
            readback.uninstall()
            warning_lines.uninstall()
        finally:
            torch_patches.uninstall()
        self.events = []

    def final_check(self) -> None:
        """The end of the run: values still pending (no optimizer step after them), then what the last
        recorded step computed and nothing ever checked (a NaN kept, never read back)."""
        if self.installed and (self.pending or self.flags):
            self.flush(None, "exit", "end of run")
        if not self.installed or self.muted or self.stopped is not None:
            return
        self.busy += 1
        try:
            kept = kept_by_the_program(sys._getframe(1))
            # a NaN the program handed to a NaN-aware call (`torch.nan_to_num(gap)`: the ECE of an empty
            # bin) was dealt with; the name it is kept under is no unchecked value
            handled = {id(t) for e in self.events if isinstance(e, OpEvent)
                       and getattr(e.func, "__name__", "") in NAN_AWARE for t in float_tensors((e.args, e.kwargs))}
            bad = next(((t, e) for e in self.events for t in float_tensors(e.output) if id(t) in kept
                        and id(t) not in handled and t.device.type != "meta" and bool(torch.isnan(t.detach()).any())),
                       None)
        finally:
            self.busy -= 1
        if bad is not None:
            value, event = bad
            self.trip("exit", "a value the program kept is nan at the end of the run", event.location, value,
                      kind_hint="nan", quiet_unless_localized=True)

    # -- the tail window ----------------------------------------------------
    def open_window(self) -> None:
        self.window_open = True
        if not self.tail_pushed:
            _push_function_mode(self.tail_mode)  # (what TorchFunctionMode.__enter__ does, without its frames)
            self.tail_pushed = True

    def open_tail(self) -> None:
        """The loop fetched its next batch, cleared the gradients or read its loss after an optimizer
        step: record what it runs until its next module call (see tail_from)."""
        self.tail_pending = False
        if self.tail_from is not None and self.installed:
            self.open_window()

    def close_window(self) -> None:
        """Stop recording. The mode leaves the stack now if it is on top; inside its own handler
        (a check fired from backward() or a loss function) it is popped at the next boundary."""
        self.window_open = False
        if self.tail_pushed:
            depth = _function_modes()
            if depth and _function_mode_at(depth - 1) is self.tail_mode:
                _pop_function_mode()
                self.tail_pushed = False

    def close_for_backward(self) -> bool:
        """backward()'s own torch calls (the seed gradient) are no part of the step to record; after
        it, a step of module calls records again from its next module call (what runs in between --
        clipping, the optimizer -- is no part of a forward). True: reopen after it (no module call)."""
        reopen = self.window_open and not self.module_events
        self.close_window()
        return reopen

    # -- boundaries -----------------------------------------------------------
    @property
    def step(self) -> int:
        """The step in progress (0-based): optimizer steps completed, the one running excluded (an
        L-BFGS closure is evaluated inside it); backward() calls where no optimizer is used."""
        return self.steps - self.updating if self.saw_optimizer else self.backward_calls

    def new_step(self) -> None:
        """The previous step is over: forget its recording (after checking what it left pending)."""
        if self.step_done and not self.saw_optimizer and (self.pending or self.flags):
            # no optimizer step to sync at: check the previous step's device values now, once
            self.flush(None, "backward", "after backward()")
        tail = self.events[self.tail_from:] if self.tail_from is not None else None
        self.forget_step()
        if tail:
            self.events, self.lead = tail, len(tail)
            self.event_bytes = _output_bytes(tail)
        self.roots = []
        self.step_done = False
        self.scaled = False

    def forget_step(self) -> None:
        """Drop this step's recording (also when recording it failed: a replay with a gap would mislead)."""
        self.events = []
        self.event_bytes = 0
        self.dropped = {}
        self.module_events = self.grad_events = 0
        self.tail_from, self.lead, self.tail_pending = None, 0, False

    def record(self, event) -> None:
        """Keep an event of this step; past MAX_EVENTS calls, or MAX_EVENT_BYTES of outputs that only the
        recording may keep alive (a loop with no backward), the oldest half goes (a replay feeds the
        original tensors to calls whose producers were dropped, so it stays valid)."""
        events = self.events
        events.append(event)
        if type(event) is OpEvent and isinstance(event.output, torch.Tensor):
            self.event_bytes += event.output.numel() * event.output.element_size()
        if len(events) > MAX_EVENTS or self.event_bytes > MAX_EVENT_BYTES:
            cut = len(events) // 2
            for dropped in events[:cut]:  # their outputs are no inputs of the step
                self.dropped.update((id(t), weakref.ref(t)) for t in float_tensors(dropped.output))
            del events[:cut]
            self.lead = max(0, self.lead - cut)
            if self.tail_from is not None:
                self.tail_from = max(0, self.tail_from - cut)
            self.module_events = sum(1 for e in events if isinstance(e, ModuleEvent))
            self.grad_events = sum(1 for e in events if isinstance(e, ModuleEvent) and e.grad_enabled)
            self.event_bytes = _output_bytes(events)

    def at_step_boundary(self) -> None:
        """A step is over (after the optimizer's update, or a backward() with no optimizer). A re-run
        (rerun.py) checks every op from its failing step on, and ends once that step is over."""
        until = self.config.rerun_until
        if until is None or threading.get_ident() != self.thread:
            return
        if self.step > until:
            exit_now(0)  # no value met by that step: the run did not repeat itself
        if self.step == until and self.watch is None and self.installed:
            self.track_modules = True
            self.anomaly = (torch.is_anomaly_enabled(), torch.is_anomaly_check_nan_enabled())
            torch.autograd.set_detect_anomaly(True, check_nan=False)  # a backward op -> its forward line
            self.watch = WatchMode(self)
            self.watch.__enter__()

    def raise_if_stopped(self) -> None:
        """The trap stopped the run, the script caught NonFiniteError and trains on: stop it again."""
        if self.stopped is not None and self.config.action == "stop":
            raise NonFiniteError(f"stabcheck: the run was stopped ({self.stopped.headline()}) and is still "
                                 "training (NonFiniteError caught, or another thread)", self.stopped)

    def top_level_call(self, module, args, kwargs):
        # (the hot path of the trap: one call per top-level module call, kept to what each call needs)
        if self.stopped is not None:
            self.raise_if_stopped()
        if self.tail_pushed:
            self.close_window()
        else:
            self.window_open = False
        grad = torch.is_grad_enabled()
        if self.step_done or (self.in_step and self.roots) or not (grad or self.grad_events):
            # a new step, the next evaluation of a closure by optimizer.step() (each ends with its
            # backward() and is a step of its own: LBFGS), or an inference call with no training call
            # pending: nothing to keep
            self.new_step()
        elif self.module_events >= MAX_MODULE_EVENTS:
            self._drop_oldest()
        rng, compare = self.draws.before(module)
        event = ModuleEvent(module, args, kwargs, rng, where(sys._getframe(2)), grad)
        self.record(event)
        self.module_events += 1
        self.grad_events += grad
        self.depth = 1
        track = self.track_modules
        if track:
            self.mod_stack.append(module)
        is_loss = isinstance(module, LOSS_MODULE)
        try:
            out = torch_patches.ORIG_MODULE_CALL(module, *args, **kwargs)
        except RuntimeError as exc:
            if is_loss:  # BCELoss refuses NaN input: say where the NaN came from
                self.depth = 0
                self.loss_refused(exc, type(module).__name__, args, kwargs, event.where)
            raise
        finally:
            self.depth = 0
            if track and self.mod_stack:
                self.mod_stack.pop()
        event.output = out
        if compare:
            self.draws.after(module, rng)
        if is_loss:
            self.check(out, "loss", f"{type(module).__name__} returned", event)
        self.open_window()  # penalties, scaling and hand-written terms of the loss are recorded too
        return out

    def _drop_oldest(self) -> None:
        """Many forward calls and no backward (evaluation with grad on): keep the newest half.

        A replay feeds the original tensors to calls whose producers were dropped, so it stays valid."""
        keep = MAX_MODULE_EVENTS // 2
        seen = 0
        for i in range(len(self.events) - 1, -1, -1):
            if isinstance(self.events[i], ModuleEvent):
                seen += 1
                if seen == keep:
                    self.events = self.events[i:]
                    self.lead = max(0, self.lead - i)
                    break
        self.module_events = keep
        self.grad_events = sum(1 for e in self.events if isinstance(e, ModuleEvent) and e.grad_enabled)

    def before_backward(self, tensors, grad_tensors) -> None:
        roots = (tensors,) if isinstance(tensors, torch.Tensor) else tuple(tensors)
        if grad_tensors is not None and isinstance(grad_tensors, torch.Tensor):
            grad_tensors = (grad_tensors,)
        self.roots.append((roots, grad_tensors))
        if len(roots) == 1 and roots[0].numel() == 1:  # the loss, for the flight recorder
            loss = roots[0]
            self.step_loss = (host_item(loss) if loss.is_cpu and not self.defer_cpu and loss.is_floating_point()
                              else loss.detach())
        if not self.saw_optimizer:  # no optimizer: the gradients are checked after backward()
            self.grad_leaves = grad_leaves(roots)
        if not (len(roots) == 1 and roots[0] is self.last_checked):  # a loss checked already
            # a GradScaler-scaled loss may overflow to inf on purpose (the scaler then skips the step)
            self.check(roots, "backward", "the tensor passed to backward() is", sys._getframe(2), self.scaled)

    def after_backward(self) -> None:
        leaves, self.grad_leaves = self.grad_leaves, None
        if leaves and not self.saw_optimizer:
            # no optimizer step follows (yet): the gradients it would have checked are checked now
            self.check_grads(leaves, sys._getframe(2))  # (the caller of backward(): frames are dear, asked only here)
        if not self.saw_optimizer:
            self.record_scalars([])
        self.backward_calls += 1
        if not self.saw_optimizer:
            self.step_done = True  # no optimizer (yet): a step ends with backward()
            self.at_step_boundary()
            if not self.module_events:
                self.open_window()  # code with no module call: record the next step from its first op

    def _post_step(self, optimizer, args, kwargs) -> None:
        self.in_step = False
        self.updating = 0
        if self.config.rerun_until is not None:
            self.at_step_boundary()
        if self.module_events:
            self.tail_from = len(self.events)  # what the loop runs before its next module call: next step's
            self.tail_pending = True
        else:
            self.open_window()  # code with no module call: record the next step from its first op

    def loss_refused(self, exc, name: str, args, kwargs, at) -> None:
        """A loss raised on its input (BCE: "all elements of input should be between 0 and 1"): when
        the input is not finite, report where that value came from instead."""
        if self.busy or self.muted:
            return
        bad = next((t for t in float_tensors((args, kwargs)) if not bool(torch.isfinite(t.detach()).all())), None)
        if bad is not None:
            reason = str(exc).splitlines()[0][:120]
            self.trip("loss", f"{name}() refused its input ({reason}); the input is {kind_of(bad)}", site(at), bad)

    def read_back(self, value, how: str, frame) -> None:
        """A non-finite value left the computation for the host (.item(), print, .numpy(), ...)."""
        if self.busy or self.muted:
            return
        if self.pending or self.flags:
            self.flush(None, "read", how)  # what the device still holds unchecked comes first
            if self.muted:
                return
        kind = kind_of(value)
        # an inf read back that no recorded op made is a sentinel (`best = inf`) or a mask; a NaN is
        # no one's sentinel: a metric computed outside the recording (after the optimizer step) is
        # reported unlocalized, and `stabcheck run` re-runs to this step with every op checked
        self.trip("read", f"{how} {kind}", loc_of(caller(frame)), value, kind_hint=kind,
                  quiet_unless_localized=kind != "nan")

    def trip(self, at: str, message: str, location: Location | None, value=None, *, kind_hint=None,
             optimizer=None, flag_record=None, benign_key=None, quiet_unless_localized=False) -> None:
        if self.muted or self.busy:
            return
        self.close_window()
        detected = {"at": at, "message": message, "location": vars(location) if location else None}
        finding = None
        if threading.get_ident() == self.thread:  # another thread must not replay the recording thread's step
            self.busy += 1
            try:
                finding = self._localize(detected, optimizer, flag_record)
            finally:
                self.busy -= 1
        if at == "op" and benign_key is not None and (
                (finding is not None and finding.phase == "input")
                or (finding is None and kind_hint in ("+inf", "-inf") and self.events)):
            # a per-op flag saw an inf but an exact replay of the step found no producer: an intentional
            # inf (a mask built earlier); or only an input already holding it: data with NaN as its
            # missing-value marker, handled by nan-aware code (were it fed on, the loss check would
            # report it) -- remember the op and line, stay silent
            self.benign.add(benign_key)
            return
        if finding is None and quiet_unless_localized:
            return  # a value read back that no op of the step produced: a sentinel, or data read as is
        self.busy += 1  # the report reads tensors back itself: those reads are no incidents
        try:
            try:
                report = self._make_report(detected, finding, value, kind_hint)
            except Exception as exc:  # (a bug of the report's: the run is still stopped, with what was seen)
                report = self.stamp(self.fallback_report(detected, exc), self.step)
        finally:
            self.busy -= 1
        self.emit(report)

    def _make_report(self, detected, finding: Finding | None, value, kind_hint) -> TrapReport:
        if finding is None:
            kind = kind_hint or (kind_of(value) if isinstance(value, torch.Tensor) else None) or "nan"
            replayable = bool(self.events) and not self.dropped
            note = ("replay did not reproduce" if replayable else "step too long to replay" if self.events
                    else "step could not be replayed")
            hint = hints.UNLOCALIZED_HINT if replayable else hints.UNREPLAYABLE_HINT
            if self.config.per_op:  # (the hints above send the user to --per-op)
                hint = hints.PER_OP_UNSEEN_HINT
            outputs = [tensor_stats(value)] if isinstance(value, torch.Tensor) else []
            report = self.unlocalized_report(detected, kind, note, hint, outputs)
        else:
            report = self.localized_report(detected, finding, finding.op)
            param = self._param_named(finding.parameter) if finding.phase == "parameter" else None
            if finding.phase == "parameter" and (self.step == 0 or id(param) in (self.init_nonfinite or ())):
                # no update has run, or it was so before the first: the initialisation made it (its line,
                # if the program wrote it in place)
                report.hint = hints.INIT_PARAMETER_HINT
                written = self.init_writes.get(id(param)) if param is not None else None
                report.location = site(written) if written is not None else report.location
            elif finding.phase == "parameter":
                report.hint = self._optimizer_hint() or report.hint
        report.mode = self._mode()
        if finding is None or finding.phase != "input":
            report.divergence = self._divergence()
            if report.divergence is not None:
                report.hint = divergence.hint(report.divergence)
        return self.stamp(report, self.step)

    def _param_named(self, name: str | None):
        """The parameter a report calls `name` (`model.emb.weight`), or None."""
        for event in self.events if name else ():
            if isinstance(event, ModuleEvent):
                root = root_name(event.module)
                for pname, p in event.module.named_parameters():
                    if f"{root}.{pname}" == name:
                        return p
        return None

    def _optimizer_hint(self) -> str | None:
        """A parameter went non-finite: an optimizer set up to divide 0 by 0 is the likelier cause."""
        optimizer = self.last_optimizer() if self.last_optimizer is not None else None
        for group in optimizer.param_groups if optimizer is not None else ():
            eps = group.get("eps")
            if isinstance(eps, (int, float)) and eps <= 0:
                return hints.zero_eps(type(optimizer).__name__, eps)
        return None

    def _divergence(self) -> dict | None:
        """Read the flight recorder (syncs: a report is being built) and diagnose a divergence."""
        optimizer = self.last_optimizer() if self.last_optimizer is not None else None
        lrs = sorted({float(g["lr"]) for g in optimizer.param_groups if isinstance(g.get("lr"), (int, float))}) \
            if optimizer is not None else []
        return divergence.diagnose(*self.history.read(), lrs)

    def _mode(self) -> str | None:
        """"training" (a backward, a module called in train mode with grad on, or a value that requires
        grad), "evaluation" (a program that trains, in a step that does none of that), else None (also
        for a thread other than the recording one: its step is not recorded)."""
        if threading.get_ident() != self.thread:
            return None
        if self.roots or any(
                e.module.training if isinstance(e, ModuleEvent) else any(t.requires_grad for t in float_tensors(e.output))
                for e in self.events if e.grad_enabled):
            return "training"
        return "evaluation" if (self.saw_optimizer or self.backward_calls) else None


def _output_bytes(events) -> int:
    """The bytes of the tensors the recorded torch calls among `events` output (MAX_EVENT_BYTES)."""
    return sum(e.output.numel() * e.output.element_size() for e in events
               if isinstance(e, OpEvent) and isinstance(e.output, torch.Tensor))


# calls that take a NaN as an expected value (final_check)
NAN_AWARE = frozenset({"nan_to_num", "nan_to_num_", "isnan", "isfinite", "where", "nanmean", "nansum", "nanmedian",
                       "nanquantile", "masked_fill", "masked_fill_"})


# ---------------------------------------------------------------------------
# module-level entry points used by api.py / runner.py

def activate(config: TrapConfig) -> TorchTrap:
    trap = TorchTrap(config)
    trap.install()
    return trap


def active() -> TorchTrap | None:
    return torch_patches.active()
