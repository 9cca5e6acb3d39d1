"""A samples-per-insert rate limiter as pure state (Reverb's ``SampleToInsertRatio``).

The limiter keeps the ratio of *sampled* items to *inserted* items near
``samples_per_insert``, so that each item is replayed about that many times whatever the
relative speed of acting and learning. It counts inserts, samples and deletes (items that
left the table) and allows an operation only while the running difference
``diff = inserts * samples_per_insert - samples`` stays within ``[min_diff, max_diff]``::

    limiter = mj.replay.sample_to_insert_ratio(samples_per_insert=12.8, min_size_to_sample=1000,
                                               error_buffer=200.0)
    state = limiter.init()
    ok = limiter.can_insert(state, 10)             # bool scalar (jittable)
    state = limiter.record_insert(state, 10)
    n = limiter.samples_allowed(state)             # int32: items that may be sampled now
    state = limiter.record_sample(state, 128)

Reverb's rules (``reverb/cc/rate_limiter.cc``), with ``size = inserts - deletes``:

* ``can_sample(n)``: ``size >= min_size_to_sample`` and
  ``inserts * samples_per_insert - samples - n >= min_diff``;
* ``can_insert(n)``: ``size + n <= min_size_to_sample`` (inserts are free until the table
  can be sampled), or ``(inserts + n) * samples_per_insert - samples <= max_diff``.

``error_buffer`` is Reverb's: a number ``e`` gives ``(min_diff, max_diff) = (offset - e,
offset + e)`` around ``offset = samples_per_insert * min_size_to_sample``; a pair gives them
directly.

**Exact arithmetic.** ``samples_per_insert``, ``min_diff`` and ``max_diff`` are turned into
fractions with a common denominator ``D`` (``Fraction.limit_denominator(10**6)``), and the
state keeps ``diff * D`` as an int32, updated incrementally: no float round-off however long
the run (Reverb uses doubles; the results agree wherever the doubles are exact).

**Deadlocks are refused at construction.** A compiled loop inserts ``insert_size`` items at a
time and samples ``sample_size`` at a time, one after the other, never concurrently. The
settings must then let one of the two proceed in every state, which holds when

* ``max_diff - min_diff >= insert_size * samples_per_insert + sample_size`` (the window holds
  one insert and one sample; Reverb's own rule is ``>= 2 * max(1, samples_per_insert)``,
  also checked),
* ``min_diff <= samples_per_insert * min_size_to_sample`` (Reverb's rule: else sampling never
  starts), and
* ``max_diff >= (min_size_to_sample + insert_size - 1) * samples_per_insert`` (the insert that
  reaches ``min_size_to_sample`` is allowed; Reverb only warns, as a concurrent sampler could
  still make room, which a compiled loop cannot).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from typing import NamedTuple

import jax
import jax.numpy as jnp

from memjax import _pytree as struct
from memjax._checks import check_positive_int

_LIMIT = 2**30  # scaled diffs stay well inside int32


@struct.dataclass
class RateLimiterState:
    """The counters of a :class:`RateLimiter` (a pytree of int32 scalars).

    Attributes:
      inserts: items inserted.
      samples: items sampled.
      deletes: items that left the table.
      diff: ``inserts * samples_per_insert - samples``, times the limiter's denominator ``D``
        (exact).
    """

    inserts: jax.Array
    samples: jax.Array
    deletes: jax.Array
    diff: jax.Array


class RateLimiter(NamedTuple):
    """A rate limiter: its settings and pure functions over a :class:`RateLimiterState`.
    Make one with :func:`sample_to_insert_ratio`. Every ``n`` may be a Python int or a traced
    int32 scalar; the functions work under ``jit``, ``vmap`` and ``scan``.

    Attributes:
      samples_per_insert: the target ratio of sampled to inserted items.
      min_size_to_sample: no sampling before the table holds this many items.
      min_diff: the lower bound of ``inserts * samples_per_insert - samples``.
      max_diff: its upper bound.
      denominator: ``D``, the common denominator of the three settings above.
      init: ``init() -> RateLimiterState`` (all zero).
      can_insert: ``can_insert(state, n=1) -> bool[]``.
      can_sample: ``can_sample(state, n=1) -> bool[]``.
      record_insert: ``record_insert(state, n=1) -> state``.
      record_sample: ``record_sample(state, n=1) -> state``.
      record_delete: ``record_delete(state, n=1) -> state``.
      samples_allowed: ``samples_allowed(state) -> int32[]``: the largest ``n`` for which
        ``can_sample(state, n)``, 0 if none.
      inserts_allowed: ``inserts_allowed(state) -> int32[]``: the largest ``n`` for which
        ``can_insert(state, n)``, 0 if none.
    """

    samples_per_insert: float
    min_size_to_sample: int
    min_diff: float
    max_diff: float
    denominator: int
    init: Callable
    can_insert: Callable
    can_sample: Callable
    record_insert: Callable
    record_sample: Callable
    record_delete: Callable
    samples_allowed: Callable
    inserts_allowed: Callable


def _fraction(name: str, value) -> Fraction:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, Fraction))
        or not math.isfinite(value)
    ):
        raise TypeError(f"sample_to_insert_ratio: {name} must be a finite number, got {value!r}")
    return Fraction(value).limit_denominator(10**6)


def sample_to_insert_ratio(
    samples_per_insert: float,
    min_size_to_sample: int,
    error_buffer,
    insert_size: int = 1,
    sample_size: int = 1,
) -> RateLimiter:
    """Reverb's ``SampleToInsertRatio`` rate limiter as pure functions (module docstring).

    Args:
      samples_per_insert: sampled items per inserted item, > 0 (e.g. batch 128 per 10
        inserted transitions: 12.8).
      min_size_to_sample: items the table must hold before the first sample, >= 1.
      error_buffer: a number ``e`` >= 0 (``min_diff, max_diff = offset -+ e`` with
        ``offset = samples_per_insert * min_size_to_sample``) or a pair
        ``(min_diff, max_diff)``.
      insert_size: items per insert call of the caller (a compiled loop: ``num_envs``).
      sample_size: items per sample call (the batch size).

    Returns:
      A :class:`RateLimiter`.

    Raises:
      TypeError: a setting of the wrong type.
      ValueError: ``samples_per_insert <= 0``, ``min_size_to_sample < 1``, a negative
        ``error_buffer``, or settings that can deadlock (module docstring), with the
        smallest ``error_buffer`` that would not.
    """
    spi = _fraction("samples_per_insert", samples_per_insert)
    if spi <= 0:
        raise ValueError(
            f"sample_to_insert_ratio: samples_per_insert must be > 0, got {samples_per_insert}"
        )
    min_size = check_positive_int("min_size_to_sample", min_size_to_sample)
    insert_size = check_positive_int("insert_size", insert_size)
    sample_size = check_positive_int("sample_size", sample_size)
    offset = spi * min_size
    if isinstance(error_buffer, (tuple, list)):
        if len(error_buffer) != 2:
            raise ValueError(
                f"sample_to_insert_ratio: error_buffer must be a number or a pair "
                f"(min_diff, max_diff), got {error_buffer!r}"
            )
        lo, hi = (_fraction("error_buffer", x) for x in error_buffer)
    else:
        e = _fraction("error_buffer", error_buffer)
        if e < 0:
            raise ValueError(
                f"sample_to_insert_ratio: error_buffer must be >= 0, got {error_buffer}"
            )
        lo, hi = offset - e, offset + e
    _check_deadlock(spi, min_size, lo, hi, insert_size, sample_size)

    den = math.lcm(spi.denominator, lo.denominator, hi.denominator)
    S, LO, HI = int(spi * den), int(lo * den), int(hi * den)
    reach = (
        max(abs(LO), abs(HI), (min_size + insert_size) * S) + insert_size * S + sample_size * den
    )
    if reach >= _LIMIT:
        raise ValueError(
            f"sample_to_insert_ratio: samples_per_insert={float(spi)} and the "
            f"error buffer ({float(lo)}, {float(hi)}) need a common denominator "
            f"{den}, too fine for exact int32 counting; round them to fewer digits"
        )

    def init():
        zero = jnp.zeros((), jnp.int32)
        return RateLimiterState(inserts=zero, samples=zero, deletes=zero, diff=zero)

    def size(state):
        return state.inserts - state.deletes

    def can_insert(state, n=1):
        n = jnp.asarray(n, jnp.int32)
        return (size(state) + n <= min_size) | (state.diff + n * S <= HI)

    def can_sample(state, n=1):
        n = jnp.asarray(n, jnp.int32)
        return (size(state) >= min_size) & (state.diff - n * den >= LO)

    def record_insert(state, n=1):
        n = jnp.asarray(n, jnp.int32)
        return state.replace(inserts=state.inserts + n, diff=state.diff + n * S)

    def record_sample(state, n=1):
        n = jnp.asarray(n, jnp.int32)
        return state.replace(samples=state.samples + n, diff=state.diff - n * den)

    def record_delete(state, n=1):
        return state.replace(deletes=state.deletes + jnp.asarray(n, jnp.int32))

    def samples_allowed(state):
        room = jnp.maximum(state.diff - LO, 0) // den
        return jnp.where(size(state) >= min_size, room, 0).astype(jnp.int32)

    def inserts_allowed(state):
        free = min_size - size(state)
        room = jnp.floor_divide(HI - state.diff, S)
        return jnp.maximum(jnp.maximum(free, room), 0).astype(jnp.int32)

    return RateLimiter(
        float(spi),
        min_size,
        float(lo),
        float(hi),
        den,
        init,
        can_insert,
        can_sample,
        record_insert,
        record_sample,
        record_delete,
        samples_allowed,
        inserts_allowed,
    )


def steady_schedule(
    limiter: RateLimiter,
    insert_size: int,
    sample_size: int,
    inserts: int,
    samples: int = 0,
    max_period: int = 10_000,
):
    """How a caller that inserts ``insert_size`` items at a time and then samples batches of
    ``sample_size`` while the limiter allows (greedily) proceeds, in exact integers.

    After the backlog (the batches allowed right away), each insert is followed by a number
    of batches that repeats with a period of ``P = b / gcd(insert_size * s, b)`` inserts,
    where the limiter's ``diff`` grows by ``s = samples_per_insert * D`` per item inserted and
    shrinks by ``b = sample_size * D`` per batch. Deletes are not modelled. Every seed of a
    compiled loop inserts and samples the same counts, so its schedule is static: this is how
    the training loop turns ``samples_per_insert`` into learner steps.

    Args:
      limiter: a :class:`RateLimiter`.
      insert_size: items per insert (the loop's ``num_envs``).
      sample_size: items per batch.
      inserts: items inserted so far (at least ``min_size_to_sample``).
      samples: items sampled so far.
      max_period: ValueError for a longer period.

    Returns:
      ``(backlog, pattern)``: the batches allowed now (a Python int) and the batches after each
      insert of one period (a tuple of Python ints, summing to ``P * insert_size *
      samples_per_insert / sample_size``).

    Raises:
      ValueError: ``inserts`` below ``min_size_to_sample``, a period above ``max_period``, or
        an insert the limiter refuses (the loop would stall).
    """
    insert_size = check_positive_int("insert_size", insert_size)
    sample_size = check_positive_int("sample_size", sample_size)
    if inserts < limiter.min_size_to_sample:
        raise ValueError(
            f"steady_schedule: {inserts} items inserted, below min_size_to_sample "
            f"{limiter.min_size_to_sample}: sampling has not started"
        )
    den = limiter.denominator
    spi = Fraction(limiter.samples_per_insert).limit_denominator(10**6)
    step, batch = int(spi * den) * insert_size, sample_size * den
    lo, hi = round(limiter.min_diff * den), round(limiter.max_diff * den)
    diff = int(spi * den) * inserts - samples * den
    backlog = max(0, (diff - lo) // batch)
    diff -= backlog * batch
    period = batch // math.gcd(step, batch)
    if period > max_period:
        raise ValueError(
            f"steady_schedule: samples_per_insert={limiter.samples_per_insert} with "
            f"{insert_size} items per insert and batches of {sample_size} repeats "
            f"only every {period} inserts (at most {max_period}); round "
            f"samples_per_insert to a simpler fraction of {sample_size}/{insert_size}"
        )
    pattern = []
    for _ in range(period):
        if diff + step > hi:
            raise ValueError(
                "steady_schedule: the limiter refuses an insert after sampling all "
                "it allows; widen the error buffer"
            )
        diff += step
        n = (diff - lo) // batch
        diff -= n * batch
        pattern.append(int(n))
    return int(backlog), tuple(pattern)


def _check_deadlock(spi, min_size, lo, hi, insert_size, sample_size) -> None:
    """ValueError naming the violated rule and the smallest symmetric error buffer that
    satisfies all of them."""
    width = hi - lo
    need_width = max(2 * max(Fraction(1), spi), insert_size * spi + sample_size)
    need_hi = (min_size + insert_size - 1) * spi
    offset = spi * min_size
    smallest = max(need_width / 2, need_hi - offset)
    hint = (
        f"; e.g. error_buffer={float(smallest):g} (around samples_per_insert * "
        f"min_size_to_sample = {float(offset):g})"
    )
    if width < need_width:
        raise ValueError(
            f"sample_to_insert_ratio: the error buffer ({float(lo):g}, {float(hi):g}) is "
            f"{float(width):g} wide; it must be at least {float(need_width):g} = max(2 * "
            f"max(1, samples_per_insert), insert_size * samples_per_insert + sample_size) "
            f"(insert_size={insert_size}, sample_size={sample_size}), else inserts and samples "
            f"can both be blocked (deadlock){hint}"
        )
    if lo > offset:
        raise ValueError(
            f"sample_to_insert_ratio: min_diff {float(lo):g} is above samples_per_insert * "
            f"min_size_to_sample = {float(offset):g}: sampling could never start (deadlock){hint}"
        )
    if hi < need_hi:
        raise ValueError(
            f"sample_to_insert_ratio: max_diff {float(hi):g} is below (min_size_to_sample + "
            f"insert_size - 1) * samples_per_insert = {float(need_hi):g}: the insert that "
            f"reaches min_size_to_sample would be refused before any sample is allowed "
            f"(deadlock without a concurrent sampler){hint}"
        )


__all__ = ["RateLimiter", "RateLimiterState", "sample_to_insert_ratio", "steady_schedule"]
