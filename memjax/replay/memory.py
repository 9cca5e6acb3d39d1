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
    """The memory of one field of a buffer state.

    Attributes:
      name: the field's name (``"obs"``, ``"info.final"``).
      shape: the stored shape of one item.
      dtype: the stored dtype's name.
      bytes_per_item: the field's stored bytes divided by the capacity (and the number of
        copies), side stores included; fractional for layouts that share storage between
        items.
      total_bytes: the field's stored bytes (all copies).
      raw_shape: the shape of one item as given to ``add`` (before codecs and layouts);
        None when the field is stored as given.
      raw_dtype: the dtype's name as given to ``add``, or None.
      raw_bytes_per_item: bytes of one item as given to ``add``, or None.
    """

    name: str
    shape: tuple
    dtype: str
    bytes_per_item: float
    total_bytes: int
    raw_shape: tuple | None = None
    raw_dtype: str | None = None
    raw_bytes_per_item: int | None = None

    @property
    def raw_bytes(self) -> float:
        """Bytes of one item as given to ``add`` (``bytes_per_item`` if stored as given)."""
        return self.bytes_per_item if self.raw_bytes_per_item is None else self.raw_bytes_per_item

    @property
    def compression(self) -> float:
        """raw / stored bytes per item (inf for a field that takes no storage)."""
        return self.raw_bytes / self.bytes_per_item if self.bytes_per_item else math.inf


class MemoryReport(NamedTuple):
    """What a buffer state occupies; ``str(report)`` is a table of it.

    Attributes:
      capacity: items per buffer.
      copies: the number of buffers (seeds) in the state: the product of its leading
        vmapped axes, 1 for an unbatched state.
      fields: tuple of :class:`FieldMemory`, one per stored field.
      overhead_bytes: everything that is not an item field (sum-tree, counters, codec
        constants), all copies.
      total_bytes: all of it, all copies.
    """

    capacity: int
    copies: int
    fields: tuple
    overhead_bytes: int
    total_bytes: int

    @property
    def bytes_per_item(self) -> float:
        """``total_bytes / (capacity * copies)``, overhead included."""
        return self.total_bytes / (self.capacity * self.copies)

    @property
    def raw_bytes_per_item(self) -> float:
        """Bytes of one item as given to ``add`` (all fields, no overhead)."""
        return float(sum(f.raw_bytes for f in self.fields))

    @property
    def compression_ratio(self) -> float:
        """Raw item bytes / stored bytes per item (overhead included)."""
        return self.raw_bytes_per_item / self.bytes_per_item

    def as_dict(self) -> dict:
        """The report as plain Python values (for JSON), with the properties included."""
        return {
            "capacity": self.capacity,
            "copies": self.copies,
            "fields": {
                f.name: {**f._asdict(), "raw_bytes_per_item": f.raw_bytes} for f in self.fields
            },
            "overhead_bytes": self.overhead_bytes,
            "total_bytes": self.total_bytes,
            "bytes_per_item": self.bytes_per_item,
            "raw_bytes_per_item": self.raw_bytes_per_item,
            "compression_ratio": self.compression_ratio,
        }

    def __str__(self) -> str:
        n = self.capacity * self.copies
        rows = [("field", "stored as", "raw B/item", "stored B/item", "ratio", "total")]
        for f in self.fields:
            rows.append(
                (
                    f.name,
                    f"{f.dtype}{list(f.shape)}",
                    _num(f.raw_bytes),
                    _num(f.bytes_per_item),
                    f"{f.compression:.1f}x",
                    _human(f.total_bytes),
                )
            )
        rows.append(
            ("(overhead)", "", "", _num(self.overhead_bytes / n), "", _human(self.overhead_bytes))
        )
        rows.append(
            (
                "total",
                "",
                _num(self.raw_bytes_per_item),
                _num(self.bytes_per_item),
                f"{self.compression_ratio:.1f}x",
                _human(self.total_bytes),
            )
        )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = [
            "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))
            )
            for r in rows
        ]
        copies = f" x {self.copies} copies" if self.copies > 1 else ""
        return f"replay memory: capacity {self.capacity:,}{copies}\n" + "\n".join(lines)


def _num(x: float) -> str:
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:,.2f}"


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024


def memory_report(state, capacity: int, raw_spec=None) -> MemoryReport:
    """The report of a flat (default layout) buffer state; ``buf.memory(state)`` calls it.

    Args:
      state: a :class:`memjax.replay.UniformState` or ``PrioritizedState``, of arrays or of
        ``jax.ShapeDtypeStruct`` (``jax.eval_shape(buf.init, example)``), with any number
        of leading vmapped axes.
      capacity: the buffer's capacity.
      raw_spec: optional pytree (the structure of ``state.items``) of per-item
        ``jax.ShapeDtypeStruct`` of the fields as given to ``add`` (before codecs).

    Returns:
      The :class:`MemoryReport`; totals cover all copies.
    """
    seed_axes = state.cursor.shape[:-1]  # cursor is int32 [..., 3]; works on ShapeDtypeStructs
    copies = math.prod(seed_axes)
    raw = (
        [None] * len(jax.tree.leaves(state.items))
        if raw_spec is None
        else jax.tree.leaves(raw_spec)
    )
    fields = [
        field_memory(path_name(path), leaf, len(seed_axes), capacity, raw_leaf)
        for (path, leaf), raw_leaf in zip(jax.tree_util.tree_leaves_with_path(state.items), raw)
    ]
    return report_from_fields(state, capacity, copies, fields)


def field_memory(
    name: str, leaf, batch_dims: int, capacity: int, raw=None, extra_bytes: int = 0
) -> FieldMemory:
    """FieldMemory of one stored array ``leaf`` [*seeds, capacity, ...] (+ ``extra_bytes`` of
    side storage for the same field); ``raw``: per-item ShapeDtypeStruct as given to add."""
    copies = math.prod(leaf.shape[:batch_dims])
    total = nbytes(leaf) + extra_bytes
    per_item = total / (copies * capacity)
    per_item = int(per_item) if per_item.is_integer() else per_item
    stored_shape = tuple(leaf.shape[batch_dims + 1 :])
    if raw is None:
        return FieldMemory(name, stored_shape, str(np.dtype(leaf.dtype)), per_item, total)
    return FieldMemory(
        name,
        stored_shape,
        str(np.dtype(leaf.dtype)),
        per_item,
        total,
        tuple(raw.shape),
        str(np.dtype(raw.dtype)),
        nbytes(raw),
    )


def report_from_fields(state, capacity: int, copies: int, fields) -> MemoryReport:
    """MemoryReport whose overhead is everything in ``state`` not counted in ``fields``."""
    everything = sum(nbytes(x) for x in jax.tree.leaves(state))
    items_total = sum(f.total_bytes for f in fields)
    return MemoryReport(capacity, copies, tuple(fields), everything - items_total, everything)
