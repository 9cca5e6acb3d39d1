"""``cast``: store a field in a narrower dtype (float16, bfloat16, small integers)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from memjax import _pytree as struct
from memjax.codecs.base import (
    Codec,
    add_count,
    check_input,
    check_stored,
    describe_values,
    example_spec,
    is_concrete,
    zero_count,
)

FLOAT_TARGETS = tuple(np.dtype(d) for d in (jnp.float16, jnp.bfloat16, jnp.float32))
INT_TARGETS = tuple(
    np.dtype(d) for d in (jnp.int8, jnp.uint8, jnp.int16, jnp.uint16, jnp.int32, jnp.uint32)
)


@struct.dataclass
class CastState:
    """The state of :func:`cast`.

    Attributes:
      clipped: int32 scalar, values outside the target's finite range, moved to its edge.
      invalid: int32 scalar, NaN values and (integer targets) non-integral values, rounded.
      shape: the item shape (static).
      dtype: the item dtype (static).
      target: the stored dtype (static).
    """

    clipped: jax.Array
    invalid: jax.Array
    shape: tuple = struct.field(pytree_node=False)
    dtype: Any = struct.field(pytree_node=False)
    target: Any = struct.field(pytree_node=False)


def _is_float(dtype) -> bool:
    return jnp.issubdtype(dtype, jnp.floating)


def _int_bounds_in(source: np.dtype, target: np.dtype) -> tuple:
    """Target integer range as values of ``source``: (lo, hi), each representable there."""
    info = np.iinfo(target)
    if _is_float(source):
        # float32 is the compute type for floats; np.float32(2**31 - 1) rounds up.
        lo, hi = np.float32(info.min), np.float32(info.max)
        if int(hi) > info.max:
            hi = np.nextafter(hi, np.float32(0))
        return lo, hi
    if source == np.bool_:
        return None
    sinfo = np.iinfo(source)
    lo, hi = max(info.min, sinfo.min), min(info.max, sinfo.max)
    if lo == sinfo.min and hi == sinfo.max:
        return None  # every source value fits
    return np.array(lo, source), np.array(hi, source)


def cast(dtype) -> Codec:
    """Store values as ``dtype``; decode casts back to the example's dtype.

    The stored item is ``[*B, *item_shape]`` of ``dtype``; decode gives ``[*B, *item_shape]`` in
    the example's dtype (bool, integer or float).

    **Float targets.** Values beyond the finite range (+-65504 for float16, +-3.39e38 for
    bfloat16, infinities included) are clipped to the finite max and counted in
    ``state.clipped``; NaN is stored as NaN and counted in ``state.invalid``. Error bound (round
    to nearest even), for normal-range values:

    ```
    float16:  |x - x_hat| <= 2**-11 * |x|  for 2**-14 <= |x| <= 65504;
              |x - x_hat| <= 2**-25         below 2**-14 (subnormals)
    bfloat16: |x - x_hat| <= 2**-8  * |x|  for |x| >= 2**-126
    ```

    Integer sources convert exactly while ``|x| <= 2048`` (float16) / 256 (bfloat16).

    **Integer targets** (actions, 0/1 rewards as uint8, ...). Values are rounded to the
    nearest integer; out-of-range values are clipped to the target range and counted in
    ``state.clipped``; NaN (stored as 0) and non-integral values count in ``state.invalid``. On
    concrete (eager) input any such value raises ``ValueError`` instead; lossless otherwise.

    Args:
      dtype: float16, bfloat16, float32, or int8/uint8/int16/uint16/int32/uint32.

    Returns:
      A :class:`Codec` with a :class:`CastState`.

    Raises:
      TypeError: ``dtype`` is not one of those (use :func:`memjax.codecs.bitpack` for bool).
    """
    try:
        target = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"cast: dtype must be a numpy/jax dtype, got {dtype!r}") from None
    if target not in FLOAT_TARGETS + INT_TARGETS:
        raise TypeError(
            f"cast: dtype must be one of {', '.join(str(d) for d in FLOAT_TARGETS + INT_TARGETS)}, "
            f"got {target} (use bitpack() for bool)"
        )
    who = f"cast({target})"

    def init(example) -> CastState:
        shape, src = example_spec(example, who)
        if not (src == np.bool_ or jnp.issubdtype(src, jnp.integer) or _is_float(src)):
            raise TypeError(
                f"{who}.init: example dtype {src} is not supported (bool, integer or float)"
            )
        return CastState(
            clipped=zero_count(), invalid=zero_count(), shape=shape, dtype=src, target=target
        )

    def encode(x, state: CastState):
        x, _ = check_input(who, x, state.shape, state.dtype)
        src = state.dtype
        if _is_float(target):
            fmax = float(jnp.finfo(target).max)
            xf = x.astype(jnp.float32) if not _is_float(src) or jnp.finfo(src).bits < 32 else x
            nan = jnp.isnan(xf) if _is_float(src) else jnp.zeros(x.shape, bool)
            over = jnp.abs(xf) > fmax
            stored = jnp.clip(xf, -fmax, fmax).astype(target)
            return stored, state.replace(
                clipped=add_count(state.clipped, jnp.sum(over)),
                invalid=add_count(state.invalid, jnp.sum(nan)),
            )
        bounds = _int_bounds_in(src, target)
        if _is_float(src):
            xf = x.astype(jnp.float32)
            lo, hi = bounds
            nan = jnp.isnan(xf)
            r = jnp.round(jnp.where(nan, 0.0, xf))
            over = (r < lo) | (r > hi)
            bad = nan | ((r != xf) & ~over)
            stored = jnp.clip(r, lo, hi).astype(target)
        elif bounds is None:
            over = bad = jnp.zeros(x.shape, bool)
            stored = x.astype(target)
        else:
            lo, hi = bounds
            over = (x < lo) | (x > hi)
            bad = jnp.zeros(x.shape, bool)
            stored = jnp.clip(x, lo, hi).astype(target)
        nover, nbad = jnp.sum(over), jnp.sum(bad)
        if is_concrete(x) and (int(nover) > 0 or int(nbad) > 0):
            xs = np.asarray(x)
            problems = []
            if int(nover):
                info = np.iinfo(target)
                problems.append(
                    f"{int(nover)} outside [{info.min}, {info.max}] (e.g. "
                    f"{describe_values(xs[np.asarray(over)])})"
                )
            if int(nbad):
                problems.append(
                    f"{int(nbad)} NaN or non-integral (e.g. {describe_values(xs[np.asarray(bad)])})"
                )
            raise ValueError(
                f"{who}.encode: of {xs.size} values, {'; '.join(problems)}; they cannot be stored "
                f"exactly as {target}"
            )
        return stored, state.replace(
            clipped=add_count(state.clipped, nover), invalid=add_count(state.invalid, nbad)
        )

    def decode(stored, state: CastState):
        stored, _ = check_stored(who, stored, state.shape, state.target)
        return stored.astype(state.dtype)

    return Codec(init, encode, decode)
