"""Framework-neutral rules on values: which op is the producer, the kind of a
non-finite value, and the statistics every report shows for a tensor
(computed from a NumPy copy, only while a report is built)."""

from __future__ import annotations

from typing import Any

import numpy as np


def producer_kind(out_nan: bool, in_nan: bool, in_inf: bool, has_inputs: bool, inf_writer: bool,
                  out_kind) -> str | None:
    """The kind of value an op *produced*, or None when it only propagated one or wrote an intentional inf.

    A producer turns NaN-free inputs into NaN, or finite inputs into +-inf; ops that write +-inf on
    purpose (masks, fills, constants: `inf_writer`) never produce an inf. `out_kind` is called only
    when the kind of an inf is needed.
    """
    if not has_inputs:
        return None
    if out_nan and not in_nan:
        return "nan"
    if not out_nan and not in_nan and not in_inf and not inf_writer:
        return out_kind()
    return None


def kind_of_array(a: np.ndarray) -> str | None:
    if np.isnan(a).any():
        return "nan"
    if (a == np.inf).any():
        return "+inf"
    if (a == -np.inf).any():
        return "-inf"
    return None


def array_stats(a: np.ndarray, dtype: str, device: str) -> dict[str, Any]:
    """shape, dtype, device, min/max over the finite values, counts of zeros, negatives, NaN and Inf."""
    out: dict[str, Any] = {"shape": list(a.shape), "dtype": dtype, "device": device}
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
        return out
    f = a.astype(np.float64)
    finite = f[np.isfinite(f)]
    out["min"] = float(finite.min()) if finite.size else None
    out["max"] = float(finite.max()) if finite.size else None
    out["zeros"] = int((f == 0).sum())
    out["negatives"] = int((finite < 0).sum())  # finite ones; -inf is counted apart
    out["nan"] = int(np.isnan(f).sum())
    pinf, ninf = int((f == np.inf).sum()), int((f == -np.inf).sum())
    out["inf"] = pinf + ninf
    out["+inf"] = pinf
    out["-inf"] = ninf
    return out
