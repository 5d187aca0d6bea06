"""The flight recorder's storage in the PyTorch adapter (what it records: divergence.py).

Each step's loss, gradient norm and parameter norm are copied into a fixed ring of HISTORY x 3
fp32 values per device, not kept as 0-d tensors: HISTORY steps' worth of tiny allocations, each
alive for HISTORY steps among the activations of every step, fragmented the host heap (word LM
example: peak RSS +40%; benchmarks/runtime_programs.py). Written without a sync, read for a report.
A value already on the host (a CPU loss, read by its check anyway) is kept as a float in its row.
"""

from __future__ import annotations

import collections

import torch

from stabcheck.runtime.divergence import HISTORY
from stabcheck.runtime.readback import own_tolist

FLUSH_EVERY = 16  # values waiting before they are copied into the ring: few tiny tensors alive at once


class FlightRecorder:
    def __init__(self):
        self.rows: collections.deque = collections.deque(maxlen=HISTORY)  # [step, slot, dev0, dev1, dev2]
        self.rings: dict = {}  # device -> HISTORY * 3 fp32 values (row slot, quantity k at 3 * slot + k)
        self.next_slot = 0
        self.waiting: list = []  # (ring index, 0-d tensor) not yet copied into a ring

    def __len__(self) -> int:
        return len(self.rows)

    def record(self, step: int, loss, grad_norm=None, param_norm=None) -> None:
        """(loss, grad_norm, param_norm) of `step`, each a float, a 0-d tensor or None. A second record
        of the same step (backward() before the optimizer step) fills what the first left out. Tensors
        wait in a short list and go into the ring FLUSH_EVERY at a time (one copy per device, not one
        per value: a per-step cost of a few microseconds was a tenth of a tiny model's step)."""
        rows = self.rows
        if rows and rows[-1][0] == step:
            row = rows[-1]
        else:
            # the deque drops its oldest row as the ring reuses that row's slot
            row = [step, self.next_slot, None, None, None]
            self.next_slot = (self.next_slot + 1) % HISTORY
            rows.append(row)
        if type(loss) is float and grad_norm is None and param_norm is None:  # a CPU step with no norms
            row[2] = loss
            return
        base = 3 * row[1]
        waiting = self.waiting
        for k, value in enumerate((loss, grad_norm, param_norm)):
            if value is None:
                continue
            if isinstance(value, float):
                row[2 + k] = value
                continue
            if value.requires_grad:  # a gradient norm under create_graph=True
                value = value.detach()
            waiting.append((base + k, value))
            row[2 + k] = value.device
        if len(waiting) >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        """Copy the waiting values into their rings (no sync)."""
        by_device: dict = {}
        for index, value in self.waiting:
            by_device.setdefault(value.device, ([], []))
            by_device[value.device][0].append(index)
            by_device[value.device][1].append(value.reshape(()).float())
        self.waiting = []
        for device, (indices, values) in by_device.items():
            ring = self.rings.get(device)
            if ring is None:
                ring = self.rings[device] = torch.full((3 * HISTORY,), float("nan"), device=device)
            ring.index_copy_(0, torch.tensor(indices, device=device), torch.stack(values))

    def read(self) -> tuple[list, list, list, list]:
        """steps, losses, gradient norms, parameter norms (floats or None), oldest first (syncs)."""
        self.flush()
        host = {device: own_tolist(ring) for device, ring in self.rings.items()}
        columns: tuple[list, list, list, list] = ([], [], [], [])
        for step, slot, *kept in self.rows:  # each a float, the device whose ring holds it, or None
            columns[0].append(step)
            for k, where in enumerate(kept):
                columns[1 + k].append(where if where is None or isinstance(where, float) else host[where][3 * slot + k])
        return columns
