"""`--per-op` in the PyTorch adapter: one fp32 sum per floating op output, checked once per step.

FlagMode computes the flags; FlagLog keeps them until the step's sync. A flag is
written into a slot of a per-device fp32 buffer that lives as long as the trap,
not kept as a 0-d tensor of its own: thousands of tiny allocations that live
until the sync, interleaved with a step's activations, fragment the host heap
(an LBFGS step evaluates its closure up to max_iter times before it syncs:
measured 1.5 GB peak RSS against 0.58 GB plain, see benchmarks/runtime_programs.py).
"""

from __future__ import annotations

import math
import sys
import weakref
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from stabcheck.runtime import hints
from stabcheck.runtime.torch_support import (INF_WRITERS, NOT_PRODUCERS, caller, dense_float, float_tensors,
                                             loc_of, node_name)


MAX_FLAGS = 200000  # per-op flags kept before a forced flush
FIRST_SLOTS = 4096  # a buffer's first size; it doubles when a step needs more


class _Part:
    """Flags of one kind (forward or backward ops): a buffer per device and what made each slot."""

    __slots__ = ("buffers", "used", "records")

    def __init__(self):
        self.buffers: dict = {}  # device -> 1-D fp32 tensor, kept across steps
        self.used: dict = {}  # device -> slots written since the last sync
        self.records: list = []  # (seq, device, slot, func, location, mods, node)

    def slot(self, device):
        n = self.used.get(device, 0)
        buf = self.buffers.get(device)
        if buf is None or n == buf.numel():
            grown = torch.empty(max(FIRST_SLOTS, 2 * n), dtype=torch.float32, device=device)
            if n:
                grown[:n].copy_(buf)
            buf = self.buffers[device] = grown
        self.used[device] = n + 1
        return buf[n], n

    def clear(self):
        self.used.clear()
        self.records.clear()


class FlagLog:
    """The per-op flags of the current step, in the order the ops ran.

    Backward flags are kept apart: when the gradients come out finite they are all dropped at once
    (torch's own backward computes and masks NaN: std, norm at 0)."""

    def __init__(self):
        self.forward = _Part()
        self.backward = _Part()
        self.seq = 0

    def __len__(self) -> int:
        return len(self.forward.records) + len(self.backward.records)

    def add(self, out, tainted: bool, func, location, mods, node) -> None:
        part = self.forward if node is None else self.backward
        device = out.device
        slot, n = part.slot(device)
        if tainted:  # downstream of an intentional inf only a NaN counts
            slot.copy_(torch.isnan(out).any().logical_not().float().reciprocal())
        else:
            # an fp32 sum of large finite values (a finfo.min mask) may overflow: the exact replay
            # then finds no producer and the flag is benign (TorchTrap.trip)
            torch.sum(out, dim=None, dtype=torch.float32, out=slot)
        part.records.append((self.seq, device, n, func, location, mods, node))
        self.seq += 1

    def truncate(self, seq: int) -> None:
        """Forget the flags raised from `seq` on (their slots are written again)."""
        for part in (self.forward, self.backward):
            part.records = [r for r in part.records if r[0] < seq]
            part.used = {}
            for _seq, device, n, *_rest in part.records:
                part.used[device] = max(part.used.get(device, 0), n + 1)

    def drop_backward(self) -> None:
        self.backward.clear()

    def clear(self) -> None:
        self.forward.clear()
        self.backward.clear()

    def checks(self) -> list:
        """(device, 0-d tensor) pairs, each finite iff every flag on that device is (no sync)."""
        out = []
        for part in (self.forward, self.backward):
            for device, n in part.used.items():
                if n:
                    values = part.buffers[device][:n]
                    out.append((device, torch.isfinite(values).all().float().reciprocal()))
        return out

    def read(self) -> list:
        """(func, location, mods, node, value) of every flag, in the order the ops ran (syncs)."""
        host = {}
        rows = []
        for part in (self.forward, self.backward):
            for seq, device, n, func, location, mods, node in part.records:
                key = (id(part), device)
                if key not in host:
                    host[key] = part.buffers[device][:part.used[device]].tolist()
                rows.append((seq, func, location, mods, node, host[key][n]))
        rows.sort(key=lambda row: row[0])
        return [row[1:] for row in rows]

    def first_bad(self):
        """(func, location, mods, node, kind) of the first flag that is not finite, or None (syncs)."""
        for func, location, mods, node, value in self.read():
            if not math.isfinite(value):
                return func, location, mods, node, "nan" if math.isnan(value) else ("+inf" if value > 0 else "-inf")
        return None


class FlagMode(TorchDispatchMode):
    """--per-op: one fp32 sum per floating output, kept on the device, synced once per step."""

    def __init__(self, trap: Any):
        super().__init__()
        self.trap = trap
        self.info: dict[Any, tuple[bool, bool]] = {}
        self.taint: dict[int, Any] = {}  # id -> weakref of tensors holding intentional +-inf

    def _op_info(self, func):
        info = self.info.get(func)
        if info is None:
            name = hints.base_name(str(func))
            skip = bool(getattr(func, "is_view", False)) or name in NOT_PRODUCERS
            info = self.info[func] = (skip, name in INF_WRITERS)
        return info

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if kwargs is None:
            kwargs = {}
        out = func(*args, **kwargs)
        trap = self.trap
        if trap.busy:
            return out
        skip, writer = self._op_info(func)
        has_input = False
        tainted = False
        taint = self.taint
        for a in _flat_args(args, kwargs):
            if isinstance(a, torch.Tensor):
                has_input = True
                if taint:
                    ref = taint.get(id(a))
                    if ref is not None and ref() is a:
                        tainted = True
                        break
            elif writer and isinstance(a, float) and math.isinf(a):
                tainted = True
        if type(out) is torch.Tensor:
            outs = [out] if dense_float(out) else []
        else:
            outs = float_tensors(out)
        if tainted:
            for o in outs:
                taint[id(o)] = weakref.ref(o)
        if skip or not outs or not has_input:  # views, copies, factories: never the producer
            return out
        if trap.scaled and torch._C._current_autograd_node() is not None:
            return out  # scaled gradients: GradScaler detects and skips overflowing steps itself
        flags = trap.flags
        where = None
        trap.busy += 1  # the flag's own torch calls (and its buffer) are no part of the step's recording
        try:
            for o in outs:
                if not o.numel():
                    continue
                if where is None:
                    where = (loc_of(caller(sys._getframe(1))), tuple(trap.mod_stack), node_name())
                flags.add(o, tainted, func, *where)
        finally:
            trap.busy -= 1
        if len(flags) > MAX_FLAGS:
            trap.flush(None, "op", "per-op flags")
        return out


def _flat_args(args, kwargs):
    """Tensors and scalars of an aten call (aten args nest at most one level: Tensor[] lists)."""
    for a in args:
        if type(a) in (list, tuple):
            yield from a
        else:
            yield a
    if kwargs:
        for a in kwargs.values():
            if type(a) in (list, tuple):
                yield from a
            else:
                yield a
