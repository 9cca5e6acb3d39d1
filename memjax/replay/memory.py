"""Memory reports: bytes per field, per item and in total, for a buffer state.

Works on a live state or on ``jax.eval_shape(buf.init, example)`` (no allocation),
and on states with leading seed axes (vmapped): totals then cover all seeds.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import numpy as np

from memjax._checks import path_name


def nbytes(leaf) -> int:
    """Bytes of an array or ShapeDtypeStruct."""
    return math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize


class FieldMemory(NamedTuple):
    """One stored field: ``name``, per-item ``shape`` and ``dtype``, bytes per item and in total."""

    name: str
    shape: tuple
    dtype: str
    bytes_per_item: int
    total_bytes: int


class MemoryReport(NamedTuple):
    """What a buffer state occupies.

    capacity: items per buffer; copies: number of buffers (seeds) in the state;
    fields: per stored field; overhead_bytes: everything that is not an item field
    (sum-tree, counters); total_bytes: all of it; bytes_per_item: total / (capacity * copies).
    """

    capacity: int
    copies: int
    fields: tuple
    overhead_bytes: int
    total_bytes: int

    @property
    def bytes_per_item(self) -> float:
        return self.total_bytes / (self.capacity * self.copies)

    def as_dict(self) -> dict:
        return {
            "capacity": self.capacity,
            "copies": self.copies,
            "fields": {f.name: f._asdict() for f in self.fields},
            "overhead_bytes": self.overhead_bytes,
            "total_bytes": self.total_bytes,
            "bytes_per_item": self.bytes_per_item,
        }

    def __str__(self) -> str:
        rows = [("field", "shape", "dtype", "bytes/item", "total")]
        for f in self.fields:
            rows.append((f.name, str(f.shape), f.dtype, f"{f.bytes_per_item:,}", _human(f.total_bytes)))
        rows.append(("(overhead)", "", "", f"{self.overhead_bytes / (self.capacity * self.copies):,.1f}", _human(self.overhead_bytes)))
        rows.append(("total", "", "", f"{self.bytes_per_item:,.1f}", _human(self.total_bytes)))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
        copies = f" x {self.copies} copies" if self.copies > 1 else ""
        return f"replay memory: capacity {self.capacity:,}{copies}\n" + "\n".join(lines)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024


def memory_report(state, capacity: int) -> MemoryReport:
    """Report for a buffer state (arrays or ShapeDtypeStructs) of the given capacity."""
    seed_axes = state.cursor.shape[:-1]  # cursor is int32 [..., 3]; works on ShapeDtypeStructs
    batch_dims = len(seed_axes)
    copies = math.prod(seed_axes)
    fields = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(state.items):
        item_shape = tuple(leaf.shape[batch_dims + 1 :])
        total = nbytes(leaf)
        fields.append(
            FieldMemory(path_name(path), item_shape, str(np.dtype(leaf.dtype)), total // (copies * capacity), total)
        )
    everything = sum(nbytes(x) for x in jax.tree.leaves(state))
    items_total = sum(f.total_bytes for f in fields)
    return MemoryReport(capacity, copies, tuple(fields), everything - items_total, everything)
