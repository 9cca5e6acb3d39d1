"""``quantize``: uniform affine quantization to 8, 4 or 2 bits per value."""

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
    item_size,
    pack_codes,
    packed_width,
    unpack_codes,
    zero_count,
)

BITS = (8, 4, 2)


@struct.dataclass
class QuantizeState:
    """The state of :func:`quantize`.

    Attributes:
      low: float32 ``[*item_shape]``, the per-feature lower end of the range.
      high: float32 ``[*item_shape]``, the per-feature upper end.
      clipped: int32 scalar, values outside ``[low, high]`` (NaN included) seen by ``encode``.
      shape: the item shape (static).
      dtype: the item dtype (static).
      bits: bits per value (static).
    """

    low: jax.Array
    high: jax.Array
    clipped: jax.Array
    shape: tuple = struct.field(pytree_node=False)
    dtype: Any = struct.field(pytree_node=False)
    bits: int = struct.field(pytree_node=False)


@jax.jit
def fit_range(data: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-feature (min, max) over the leading axis; jittable.

    Args:
      data: ``[N, *item_shape]``, N >= 1.

    Returns:
      ``(low, high)``, two float32 ``[*item_shape]``.
    """
    data = jnp.asarray(data).astype(jnp.float32)
    return jnp.min(data, axis=0), jnp.max(data, axis=0)


def _check_bits(bits) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or int(bits) not in BITS:
        raise ValueError(f"quantize: bits must be one of {BITS}, got {bits!r}")
    return int(bits)


def _check_range(low: jax.Array, high: jax.Array) -> None:
    """Finite, low <= high everywhere (only checked on concrete values)."""
    if not (is_concrete(low) and is_concrete(high)):
        return
    lo, hi = np.broadcast_arrays(np.asarray(low), np.asarray(high))
    for name, v in (("low", lo), ("high", hi)):
        bad = ~np.isfinite(v)
        if bad.any():
            raise ValueError(
                f"quantize: {name} must be finite, got {int(bad.sum())} non-finite entries "
                f"(e.g. {describe_values(v[bad])})"
            )
    bad = lo > hi
    if bad.any():
        raise ValueError(
            f"quantize: low must be <= high for every feature, got low > high at {int(bad.sum())} "
            f"entries (e.g. low={describe_values(lo[bad], 3)}, high={describe_values(hi[bad], 3)})"
        )


def quantize(bits: int = 8, low=None, high=None, data=None) -> Codec:
    """Uniform affine quantization to ``bits`` per value, ``L = 2**bits`` levels.

    For an item of ``n = prod(item_shape)`` values of a float dtype:

    - encode: ``q = round((clip(x, low, high) - low) / (high - low) * (L - 1))``, packed
      ``8 // bits`` codes per byte (code ``j`` of the flattened item in byte ``j // (8 // bits)``).
    - stored: uint8 ``[*B, ceil(n * bits / 8)]``.
    - decode: ``x_hat = min(low + q * (high - low) / (L - 1), high)``, ``[*B, *item_shape]`` in
      the example's dtype (code 0 decodes to ``low`` exactly; features with ``high == low``
      decode exactly to ``low``).

    Error bound, for in-range values (``low <= x <= high``):
    ``|x - x_hat| <= (high - low) / (2 * (L - 1))``, plus float32 rounding (a few ulp of
    ``max(|low|, |high|)``), plus the rounding of the example dtype when it is narrower than
    float32. Grid values ``low + j * (high - low) / (L - 1)`` (``x_hat`` itself) round-trip
    exactly. Out-of-range values (and NaN, stored as ``low``) are clipped and counted in
    ``state.clipped`` (int32 scalar, total values clipped).

    Args:
      bits: 8, 4 or 2 (4-bit: 2 codes per byte, 2-bit: 4 per byte).
      low: the lower end of the range: a scalar or an array broadcastable to the item shape
        (per-feature). Give ``low`` and ``high``, or ``data``.
      high: the upper end of the range, like ``low``, ``>= low``.
      data: ``[N, *item_shape]`` (float or integer) to calibrate ``low`` and ``high`` as the
        per-feature min and max (:func:`fit_range`) at construction.

    Returns:
      A :class:`Codec` with a :class:`QuantizeState`. Its ``init`` raises ``TypeError`` for a
      non-float example and ``ValueError`` when the range or ``data`` does not fit the item shape.

    Raises:
      ValueError: ``bits`` is not 8, 4 or 2; both or neither of (``low``, ``high``) and ``data`` are
        given; ``data`` is empty; ``low`` and ``high`` do not broadcast together, are not finite
        or have ``high < low`` somewhere.
      TypeError: ``data`` is not numeric.
    """
    bits = _check_bits(bits)
    data_shape = None
    if data is not None:
        if low is not None or high is not None:
            raise ValueError(
                "quantize: give either low and high, or data to calibrate them, not both"
            )
        data = jnp.asarray(data)
        if not (
            jnp.issubdtype(data.dtype, jnp.floating) or jnp.issubdtype(data.dtype, jnp.integer)
        ):
            raise TypeError(f"quantize: data must be numeric, got dtype {data.dtype}")
        if data.ndim < 1 or data.shape[0] < 1:
            raise ValueError(
                "quantize: data must have shape [N, *item_shape] "
                f"with N >= 1, got {tuple(data.shape)}"
            )
        data_shape = tuple(data.shape[1:])
        low, high = fit_range(data)
    else:
        if low is None or high is None:
            raise ValueError(
                "quantize: needs low and high (scalars or arrays broadcastable to the item shape), "
                "or data [N, *item_shape] to calibrate them"
            )
        low = jnp.asarray(low, jnp.float32)
        high = jnp.asarray(high, jnp.float32)
        try:
            np.broadcast_shapes(low.shape, high.shape)
        except ValueError:
            raise ValueError(
                f"quantize: low {tuple(low.shape)} and high "
                f"{tuple(high.shape)} do not broadcast together"
            ) from None
    _check_range(low, high)
    levels = 2**bits - 1  # L - 1

    def init(example) -> QuantizeState:
        shape, dtype = example_spec(example, "quantize")
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"quantize.init: example dtype must be a float dtype, got {dtype} "
                f"(use cast(...) or bitpack() for integer and bool fields)"
            )
        if data_shape is not None and data_shape != shape:
            raise ValueError(
                f"quantize: data has item shape {data_shape} (data [N, ...] minus N), the example "
                f"has item shape {shape}"
            )
        for name, v in (("low", low), ("high", high)):
            try:
                ok = np.broadcast_shapes(v.shape, shape) == shape
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(
                    f"quantize: {name} has shape {tuple(v.shape)}, not "
                    f"broadcastable to the item shape {shape}"
                )
        return QuantizeState(
            low=jnp.broadcast_to(low, shape),
            high=jnp.broadcast_to(high, shape),
            clipped=zero_count(),
            shape=shape,
            dtype=dtype,
            bits=bits,
        )

    def encode(x, state: QuantizeState):
        x, batch = check_input("quantize", x, state.shape, state.dtype)
        xf = x.astype(jnp.float32)
        lo, hi = state.low, state.high
        out = ~(xf >= lo) | (xf > hi)  # NaN counts as out of range
        xc = jnp.where(jnp.isnan(xf), lo, jnp.clip(xf, lo, hi))
        span = hi - lo
        inv = jnp.where(span > 0, levels / jnp.where(span > 0, span, 1.0), 0.0)
        q = jnp.clip(jnp.round((xc - lo) * inv), 0, levels).astype(jnp.uint8)
        stored = pack_codes(q.reshape(*batch, item_size(state.shape)), state.bits)
        return stored, state.replace(clipped=add_count(state.clipped, jnp.sum(out)))

    def decode(stored, state: QuantizeState):
        n = item_size(state.shape)
        stored, batch = check_stored("quantize", stored, (packed_width(n, state.bits),), jnp.uint8)
        q = unpack_codes(stored, state.bits, n).reshape(*batch, *state.shape).astype(jnp.float32)
        step = (state.high - state.low) / levels
        # the clip keeps the top code from overshooting high by an ulp (so decoded
        # values re-encode without being counted as clipped)
        return jnp.clip(state.low + q * step, state.low, state.high).astype(state.dtype)

    return Codec(init, encode, decode)
