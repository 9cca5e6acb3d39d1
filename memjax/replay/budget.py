"""Byte budgets: the largest buffer that fits a given number of bytes."""

from __future__ import annotations

import jax

from memjax._checks import check_positive_int
from memjax.replay.layouts import RowLayout
from memjax.replay.memory import nbytes
from memjax.replay.prioritized import prioritized
from memjax.replay.uniform import uniform


def buffer_bytes(make_buffer, capacity: int, example) -> int:
    """Bytes of the whole state of ``make_buffer(capacity)`` for ``example``.

    Counts items, side stores, the sum-tree, counters and codec constants, from
    ``jax.eval_shape`` (nothing is allocated).

    Args:
      make_buffer: ``capacity -> ReplayBuffer``, e.g.
        ``lambda c: memjax.replay.prioritized(c, alpha=0.6)``.
      capacity: the capacity to measure.
      example: ONE item (no batch axis), as given to ``init``.

    Returns:
      The state's size in bytes (one buffer, i.e. one seed).
    """
    buf = make_buffer(capacity)
    return sum(nbytes(x) for x in jax.tree.leaves(jax.eval_shape(buf.init, example)))


def capacity_for(
    budget_bytes: int,
    example,
    codecs=None,
    layout=None,
    kind: str = "uniform",
    minimum: int = 1,
    **buffer_kwargs,
) -> int:
    """The largest capacity whose buffer state fits in ``budget_bytes``.

    The budget is for one buffer, i.e. one seed, and counts everything its state holds:
    stored items, side stores, the sum-tree for ``kind="prioritized"``, counters and codec
    constants. Nothing is allocated (``jax.eval_shape``).

    Args:
      budget_bytes: the budget in bytes (int > 0).
      example: ONE item (no batch axis), as given to ``init``.
      codecs: storage codecs per field, as for :func:`memjax.replay.uniform`.
      layout: the storage layout, as for :func:`memjax.replay.uniform`.
      kind: ``"uniform"`` or ``"prioritized"``.
      minimum: the smallest acceptable capacity (e.g. the batch size).
      **buffer_kwargs: more arguments of the buffer's constructor (``alpha=...``).

    Returns:
      The capacity (at most 2**34). With a row layout it is a multiple of ``num_envs``
      (of ``num_envs * period`` for sequences).

    Raises:
      ValueError: not even ``minimum`` items fit, or ``kind`` is unknown.
    """
    budget_bytes = check_positive_int("budget_bytes", budget_bytes)
    if kind not in ("uniform", "prioritized"):
        raise ValueError(f"kind must be 'uniform' or 'prioritized', got {kind!r}")
    factory = {"uniform": uniform, "prioritized": prioritized}[kind]
    rows = isinstance(layout, RowLayout)
    step = layout.capacity_step() if rows else 1
    smallest = max(-(-minimum // step) * step, layout.smallest_capacity() if rows else step)

    def fits(units: int) -> bool:
        make = lambda c: factory(c, codecs=codecs, layout=layout, **buffer_kwargs)  # noqa: E731
        return buffer_bytes(make, units * step, example) <= budget_bytes

    lo = smallest // step
    if not fits(lo):
        need = buffer_bytes(
            lambda c: factory(c, codecs=codecs, layout=layout, **buffer_kwargs), lo * step, example
        )
        raise ValueError(
            f"a memory budget of {budget_bytes:,} bytes is too small: {lo * step} "
            f"items already take {need:,} bytes"
        )
    hi = lo
    while fits(hi * 2):
        hi *= 2
        if hi * step > 2**34:
            return hi * step
    lo, hi = hi, hi * 2  # fits(lo), not fits(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo * step
