"""Storage layouts: how a buffer lays its items out in memory.

* ``layout=None`` (default): every transition stored whole (``memjax.replay.flat``).
* ``layout=one_copy(num_envs, frame_stack=k)``: each observation stored once, as the next
  observation of the step before it, with a small side store for the final observations
  that auto-resets replaced; with ``frame_stack=k`` only the newest frame of each stacked
  observation is stored and stacks are rebuilt at sample time (``memjax.replay.one_copy_store``).
* ``layout=sequence(num_envs, length, period)``: the same rows, sampled as windows of
  ``length`` consecutive steps of one environment (``memjax.replay.sequence_store``).

This module holds only the settings; ``memjax.replay.stores.make_store`` builds the store.
"""

from __future__ import annotations

import dataclasses
import math

from memjax._checks import check_positive_int


class RowLayout:
    """What the row-ring layouts share: rows of ``num_envs`` steps and a side store."""

    kind = "row"

    def rows(self, capacity: int) -> int:
        """Rows of ``num_envs`` steps the buffer keeps."""
        if capacity % self.num_envs:
            raise ValueError(
                f"{self.kind} layout: capacity {capacity} must be a "
                f"multiple of num_envs={self.num_envs} "
                f"(each add writes one row of num_envs steps); try "
                f"{capacity - capacity % self.num_envs} or "
                f"{capacity + self.num_envs - capacity % self.num_envs}"
            )
        rows = capacity // self.num_envs
        if rows < 2:
            raise ValueError(
                f"{self.kind} layout: capacity {capacity} must hold at least two rows "
                f"of num_envs={self.num_envs} steps"
            )
        return rows

    def capacity_step(self) -> int:
        """Valid capacities are multiples of this."""
        return self.num_envs

    def smallest_capacity(self) -> int:
        """The smallest valid capacity (two rows)."""
        return 2 * self.num_envs

    def side_slots(self, capacity: int) -> int:
        """Entries of the side store for final observations."""
        if self.side_capacity is not None:
            return self.side_capacity
        return max(self.num_envs, math.ceil(capacity * self.side_fraction))


def _check_row_settings(kind: str, num_envs, side_capacity, side_fraction, names) -> int:
    """num_envs as an int; ValueError/TypeError for bad side-store settings or repeated names."""
    num_envs = check_positive_int("num_envs", num_envs)
    if side_capacity is not None:
        side_capacity = check_positive_int("side_capacity", side_capacity)
        if side_capacity < num_envs:
            raise ValueError(
                f"{kind}: side_capacity {side_capacity} must be >= num_envs={num_envs}"
            )
    if not 0 < side_fraction <= 1:
        raise ValueError(f"{kind}: side_fraction must be in (0, 1], got {side_fraction}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{kind}: field names must differ, {repeated} is used twice")
    return num_envs


@dataclasses.dataclass(frozen=True)
class OneCopy(RowLayout):
    """Settings of the one-copy layout; make them with :func:`one_copy`, which checks them."""

    num_envs: int
    frame_stack: int = 1
    side_capacity: int | None = None
    side_fraction: float = 1 / 16
    obs: str = "obs"
    next_obs: str = "next_obs"

    kind = "one_copy"


def one_copy(
    num_envs: int,
    frame_stack: int = 1,
    side_capacity: int | None = None,
    side_fraction: float = 1 / 16,
    obs: str = "obs",
    next_obs: str = "next_obs",
) -> OneCopy:
    """Store each observation once (plus the final observations of episodes).

    For items from ``num_envs`` vectorised environments, added one row per vector step in
    a fixed environment order: ``add`` must get exactly ``num_envs`` items each call, and the
    item dict must hold ``obs`` and ``next_obs`` (the names are settable) of equal shape.

    Args:
      num_envs: environments per ``add`` (the batch size of every add).
      frame_stack: k >= 1. With k > 1 the observations are stacks of the last k frames
        concatenated along the last axis (oldest first, as
        :class:`memjax.envs.FrameStack` makes them; an episode's first stack repeats
        its first frame), and only the newest frame is stored.
      side_capacity: entries of the side store that keeps ``next_obs`` wherever it differs
        from the following ``obs`` (episode ends: the auto-reset replaced it), >= num_envs.
        Default ``max(num_envs, ceil(capacity * side_fraction))``: enough for episodes
        averaging ``1 / side_fraction`` steps. When the side store overflows, the oldest
        transitions are dropped (FIFO) so that no transition ever loses its next
        observation; ``size`` then reports fewer items than the capacity.
      side_fraction: the default side store as a fraction of the capacity, in (0, 1].
      obs: the name of the observation field.
      next_obs: the name of the next-observation field.

    Returns:
      The settings, to pass as ``layout=`` to :func:`memjax.replay.uniform`,
      :func:`memjax.replay.prioritized` or :func:`memjax.replay.capacity_for`. The
      buffer's capacity must then be a multiple of ``num_envs`` of at least two rows.

    Raises:
      TypeError: ``num_envs``, ``frame_stack`` or ``side_capacity`` is not a Python int.
      ValueError: one of them is below 1, ``side_capacity < num_envs``, ``side_fraction``
        is outside (0, 1], or ``obs`` equals ``next_obs``.
    """
    num_envs = _check_row_settings(
        "one_copy", num_envs, side_capacity, side_fraction, [obs, next_obs]
    )
    frame_stack = check_positive_int("frame_stack", frame_stack)
    return OneCopy(num_envs, frame_stack, side_capacity, side_fraction, obs, next_obs)


@dataclasses.dataclass(frozen=True)
class Sequence(RowLayout):
    """Settings of the sequence layout; make them with :func:`sequence`, which checks them."""

    num_envs: int
    length: int
    period: int = 1
    side_capacity: int | None = None
    side_fraction: float = 1 / 16
    per_window: tuple = ()
    obs: str = "obs"
    next_obs: str = "next_obs"
    first: str = "first"

    kind = "sequence"

    def capacity_step(self) -> int:
        """Valid capacities are multiples of this: ``num_envs * period``."""
        return self.num_envs * self.period

    def smallest_capacity(self) -> int:
        """Two rows and one whole window, in whole periods."""
        step = self.capacity_step()
        return -(-max(2, self.length) * self.num_envs // step) * step


def sequence(
    num_envs: int,
    length: int,
    period: int = 1,
    side_capacity: int | None = None,
    side_fraction: float = 1 / 16,
    per_window=(),
    obs: str = "obs",
    next_obs: str = "next_obs",
    first: str = "first",
) -> Sequence:
    """Sample windows of ``length`` consecutive steps of one environment (recurrent agents).

    Steps are stored once each, in the one-copy layout's rows (``obs`` once per step,
    ``next_obs`` read from the next row or the side store); ``sample`` returns windows
    ``[batch, length, ...]`` that start at global rows that are multiples of ``period``
    and may cross episode ends. Frame stacks are not supported (store stacked
    observations whole, or use ``one_copy(num_envs, frame_stack=k)``).

    Args:
      num_envs: environments per ``add`` (the batch size of every add).
      length: steps per window, 1 <= length <= rows (``rows = capacity / num_envs``).
      period: windows start every ``period`` rows; rows must be a multiple of it.
      side_capacity: entries of the side store of final observations, as for
        :func:`one_copy`; on overflow the oldest rows are dropped (FIFO), with every window
        that touches them.
      side_fraction: the default side store as a fraction of the capacity, as for
        :func:`one_copy`.
      per_window: names of fields given with every add ([num_envs, ...], e.g. a recurrent
        state ``("carry",)``) but stored only for rows whose global number is a multiple of
        ``period``: once per window start, returned per window ([batch, ...]).
      obs: the name of the observation field.
      next_obs: the name of the next-observation field.
      first: the name of the bool field, one per step, that marks steps whose ``obs``
        starts an episode; it is kept as a bit of the per-step flags and returned as
        bool [batch, length].

    Returns:
      The settings, to pass as ``layout=`` to :func:`memjax.replay.uniform` or
      :func:`memjax.replay.prioritized`. The buffer's capacity counts steps; it must be a
      multiple of ``num_envs * period``, and the buffer then holds ``size`` windows.

    Raises:
      TypeError: ``per_window`` is not a tuple of field names, or ``num_envs``,
        ``length``, ``period`` or ``side_capacity`` is not a Python int.
      ValueError: one of those is below 1, ``side_capacity < num_envs``,
        ``side_fraction`` is outside (0, 1], or two fields have the same name.
    """
    if isinstance(per_window, str) or not all(isinstance(n, str) for n in per_window):
        raise TypeError(f"sequence: per_window must be a tuple of field names, got {per_window!r}")
    per_window = tuple(per_window)
    num_envs = _check_row_settings(
        "sequence", num_envs, side_capacity, side_fraction, [obs, next_obs, first, *per_window]
    )
    length = check_positive_int("length", length)
    period = check_positive_int("period", period)
    return Sequence(
        num_envs, length, period, side_capacity, side_fraction, per_window, obs, next_obs, first
    )
