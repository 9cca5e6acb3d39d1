"""The codec bundle, shared helpers, and the ``identity`` and ``chain`` codecs.

A codec is three pure functions, like an optax ``GradientTransformation``:

  init(example) -> state
  encode(x, state) -> (stored, state)
  decode(stored, state) -> x_hat

``example`` is ONE item of a field (no batch axis): a jax/NumPy array or a
``jax.ShapeDtypeStruct``. ``x`` is ``[*B, *item_shape]`` in the example's dtype, where
``*B`` is any number of leading batch axes (usually one). ``stored`` is
``[*B, *stored_item_shape]``; ``decode`` reads the batch axes off ``stored``, so it
works on any gathered sample, whatever batch size ``encode`` saw.

A state is a frozen pytree dataclass (as ``flax.struct.dataclass`` makes; memjax's own
``memjax._pytree``, so that the buffers load without flax): fitted constants (ranges,
codebooks) and int32 scalar counters are arrays; the item shape, dtype and code widths are
static (``pytree_node=False``). ``init`` works under ``jax.eval_shape`` and ``jax.vmap``;
``encode``/``decode`` under ``jit``, ``vmap`` (per-seed states) and ``lax.scan``.

Counters are saturating int32 scalars named ``clipped`` (values moved to the edge
of a representable range) and ``invalid`` (values the codec cannot represent
faithfully, e.g. non-binary values given to ``bitpack``, NaN). ``counters(state)``
sums them over any state (chains, vmapped seeds) for reports.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from memjax import _pytree as struct
from memjax._checks import is_concrete

INT32_MAX = 2**31 - 1
COUNTER_NAMES = ("clipped", "invalid")


class Codec(NamedTuple):
    """A per-field storage codec: a bundle of pure functions, like an optax transform.

    ```
    init(example) -> state
    encode(x, state) -> (stored, state)
    decode(stored, state) -> x_hat
    ```

    All three work under ``jax.jit``, ``jax.vmap`` (a leading seed axis on the state and the data)
    and ``jax.lax.scan``.

    Attributes:
      init: ``example`` is ONE item, no batch axis (an array or a ``jax.ShapeDtypeStruct``);
        returns the codec state (fitted constants and counters, a pytree).
      encode: ``x`` is ``[*B, *item_shape]`` in the example's dtype; returns the stored arrays
        (their per-item spec is :func:`stored_spec`) and the updated state (counters).
      decode: ``stored`` is any batch of stored rows; returns ``x_hat`` ``[*B, *item_shape]`` in
        the example's dtype.
    """

    init: Callable
    encode: Callable
    decode: Callable


# ----------------------------------------------------------------------------- helpers


def example_spec(example, who: str) -> tuple[tuple[int, ...], np.dtype]:
    """(item_shape, dtype) of ONE example item; TypeError naming ``who`` otherwise."""
    if not (hasattr(example, "shape") and hasattr(example, "dtype")):
        if isinstance(example, (bool, int, float, np.generic, list, tuple)):
            example = np.asarray(example)
            if example.dtype == np.float64:
                example = example.astype(np.float32)
            elif example.dtype == np.int64:
                example = example.astype(np.int32)
        else:
            raise TypeError(
                f"{who}.init: example must be ONE item as an array or jax.ShapeDtypeStruct, "
                f"got {type(example).__name__}"
            )
    return tuple(int(d) for d in example.shape), np.dtype(example.dtype)


def _check_batched(
    where: str, name: str, x, shape: tuple, dtype, shape_hint: str = "", dtype_hint: str = ""
):
    """``x`` as a jax array [*B, *shape] of ``dtype``; returns (x, B). Errors name ``where``
    (e.g. ``quantize.encode``) and the argument ``name``, then the hints."""
    x = jnp.asarray(x)
    nd = len(shape)
    if x.ndim < nd or tuple(x.shape[x.ndim - nd :]) != tuple(shape):
        raise ValueError(
            f"{where}: {name} has shape {tuple(x.shape)}, expected (*B, "
            f"{', '.join(str(d) for d in shape)}){shape_hint}"
        )
    if x.dtype != np.dtype(dtype):
        raise TypeError(
            f"{where}: {name} has dtype {x.dtype}, expected {np.dtype(dtype)}{dtype_hint}"
        )
    return x, tuple(x.shape[: x.ndim - nd])


def check_input(who: str, x, shape: tuple, dtype: np.dtype):
    """``x`` as a jax array with shape [*B, *shape] and ``dtype``; returns (x, B)."""
    return _check_batched(
        f"{who}.encode",
        "x",
        x,
        shape,
        dtype,
        f" (batch axes, then the item shape {tuple(shape)} given to init)",
        " (the example's dtype)",
    )


def check_stored(who: str, stored, shape: tuple, dtype):
    """``stored`` as a jax array [*B, *shape] of ``dtype``; returns (stored, B)."""
    return _check_batched(f"{who}.decode", "stored", stored, shape, dtype)


def add_count(count: jax.Array, n) -> jax.Array:
    """``count + n`` for int32 counters, saturating at 2**31 - 1 instead of wrapping."""
    n = jnp.asarray(n).astype(jnp.int32)
    return jnp.where(n > INT32_MAX - count, INT32_MAX, count + n).astype(jnp.int32)


def zero_count() -> jax.Array:
    return jnp.zeros((), jnp.int32)


# Bit packing: the one implementation, shared by the codecs and memjax.compress (packed
# quantized weights, sparsity bitmasks and weight-sharing indices).

PACK_BITS = (1, 2, 4, 8)


def index_bits(k: int) -> int:
    """Bits per index into ``k`` entries, rounded up to a packable width: 1 (k <= 2), 2 (k <= 4),
    4 (k <= 16), 8 (k <= 256), else 16 (stored unpacked as uint16)."""
    for b in PACK_BITS:
        if k <= 2**b:
            return b
    return 16


def packed_width(n: int, bits: int) -> int:
    """Bytes per item for ``n`` codes of ``bits`` bits packed into uint8."""
    return -(-n * bits // 8)


def pack_codes(codes, bits: int) -> jax.Array:
    """Pack small codes into bytes, ``8 // bits`` codes per byte.

    Code ``i`` of a byte lives in bits ``[i*bits, (i+1)*bits)`` (little-endian within the byte, so
    1-bit packing is NumPy's ``packbits(bitorder="little")``); the last byte is zero-padded.

    Args:
      codes: ``[..., n]``, any integer or bool array (jax or NumPy), values ``< 2**bits``.
      bits: 1, 2, 4 or 8 (8 returns the codes as uint8).

    Returns:
      uint8 ``[..., ceil(n * bits / 8)]``.

    Raises:
      ValueError: ``bits`` is not 1, 2, 4 or 8.
    """
    if bits not in PACK_BITS:
        raise ValueError(f"pack_codes: bits must be 1, 2, 4 or 8, got {bits!r}")
    codes = jnp.asarray(codes).astype(jnp.uint8)
    if bits == 8:
        return codes
    per = 8 // bits
    n = codes.shape[-1]
    m = -(-n // per)
    if m * per != n:
        codes = jnp.pad(codes, [(0, 0)] * (codes.ndim - 1) + [(0, m * per - n)])
    codes = codes.reshape(*codes.shape[:-1], m, per)
    shifts = jnp.arange(per, dtype=jnp.uint8) * jnp.uint8(bits)
    return jnp.sum(codes << shifts, axis=-1, dtype=jnp.uint8)


def unpack_codes(packed: jax.Array, bits: int, n: int) -> jax.Array:
    """Inverse of :func:`pack_codes`.

    Args:
      packed: uint8 ``[..., ceil(n * bits / 8)]``.
      bits: 1, 2, 4 or 8, as packed.
      n: the number of codes per row.

    Returns:
      uint8 codes ``[..., n]``.
    """
    if bits == 8:
        return packed
    per = 8 // bits
    shifts = jnp.arange(per, dtype=jnp.uint8) * jnp.uint8(bits)
    codes = (packed[..., None] >> shifts) & jnp.uint8(2**bits - 1)
    codes = codes.reshape(*packed.shape[:-1], packed.shape[-1] * per)
    return codes[..., :n]


def item_size(shape) -> int:
    return int(math.prod(shape))


def describe_values(values: np.ndarray, limit: int = 5) -> str:
    """'0.5, 2.0, -1.0' for the first few entries of a host array."""
    return ", ".join(repr(v.item()) for v in np.asarray(values).reshape(-1)[:limit])


# ----------------------------------------------------------------------------- identity


@struct.dataclass
class IdentityState:
    """The state of :func:`identity`: no arrays.

    Attributes:
      shape: the item shape (static).
      dtype: the item dtype (static).
    """

    shape: tuple = struct.field(pytree_node=False)
    dtype: Any = struct.field(pytree_node=False)


def identity() -> Codec:
    """A codec that stores items as they are.

    Returns:
      A :class:`Codec` whose stored item is ``x`` itself, ``[*B, *item_shape]`` in the example's
      dtype.
    """

    def init(example) -> IdentityState:
        shape, dtype = example_spec(example, "identity")
        return IdentityState(shape=shape, dtype=dtype)

    def encode(x, state: IdentityState):
        x, _ = check_input("identity", x, state.shape, state.dtype)
        return x, state

    def decode(stored, state: IdentityState):
        stored, _ = check_stored("identity", stored, state.shape, state.dtype)
        return stored

    return Codec(init, encode, decode)


# ----------------------------------------------------------------------------- chain


def chain(*codecs: Codec) -> Codec:
    """Compose codecs: encode left to right, decode right to left.

    The error bound of a chain is the sum of the bounds of its stages (each measured in the
    units it sees).

    Args:
      *codecs: one or more :class:`Codec`. Codec ``i + 1`` is initialised with the stored item
        spec of codec ``i`` (see :func:`stored_spec`).

    Returns:
      A :class:`Codec` whose state is a tuple with one state per codec.

    Raises:
      ValueError: no codec is given.
      TypeError: an argument is not a :class:`Codec`.
    """
    if not codecs:
        raise ValueError("chain: needs at least one codec, got none")
    for i, c in enumerate(codecs):
        if not isinstance(c, Codec):
            raise TypeError(f"chain: argument {i} must be a Codec, got {type(c).__name__}")

    def init(example) -> tuple:
        states = []
        spec = example
        for c in codecs:
            states.append(c.init(spec))
            spec = stored_spec(c, spec)
        return tuple(states)

    def check_state(state, what):
        if not isinstance(state, tuple) or len(state) != len(codecs):
            raise TypeError(
                f"chain.{what}: state must be a tuple of "
                f"{len(codecs)} codec states (from chain.init)"
            )

    def encode(x, state):
        check_state(state, "encode")
        new = []
        for c, s in zip(codecs, state):
            x, s = c.encode(x, s)
            new.append(s)
        return x, tuple(new)

    def decode(stored, state):
        check_state(state, "decode")
        for c, s in zip(reversed(codecs), reversed(state)):
            stored = c.decode(stored, s)
        return stored

    return Codec(init, encode, decode)


# ----------------------------------------------------------------------------- reports


def counters(state) -> dict:
    """Every counter in a codec state, summed on the host.

    Works for any codec state: chains (tuples of states), vmapped states (counters [S] are
    summed over seeds), and states without counters (zeros). Reads the values, so call it
    outside ``jit`` (for reports).

    Args:
      state: a codec state, or any pytree holding codec states.

    Returns:
      ``{"clipped": int, "invalid": int}``.
    """
    out = {name: 0 for name in COUNTER_NAMES}
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        name = getattr(path[-1], "name", None) if path else None
        if name in out:
            out[name] += int(np.sum(np.asarray(leaf, dtype=np.int64)))
    return out


def stored_spec(codec: Codec, example):
    """The stored form of ONE item, computed with ``jax.eval_shape`` (no data is encoded).

    A buffer storing the field allocates ``[capacity, *spec.shape]`` of ``spec.dtype``.

    Args:
      codec: a :class:`Codec`.
      example: ONE item (no batch axis): an array or a ``jax.ShapeDtypeStruct``.

    Returns:
      Pytree of ``jax.ShapeDtypeStruct`` (no batch axis), e.g. ``uint8[50]`` for
      :func:`memjax.codecs.bitpack` of a ``[10, 10, 4]`` item.

    Raises:
      TypeError: ``example`` has no shape and dtype.
    """
    shape, dtype = example_spec(example, "stored_spec")
    state = jax.eval_shape(codec.init, jax.ShapeDtypeStruct(shape, dtype))
    x = jax.ShapeDtypeStruct((1, *shape), dtype)
    out = jax.eval_shape(lambda x, s: codec.encode(x, s)[0], x, state)
    return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape[1:], leaf.dtype), out)


__all__ = [
    "Codec",
    "IdentityState",
    "identity",
    "chain",
    "counters",
    "stored_spec",
    "pack_codes",
    "unpack_codes",
    "packed_width",
    "index_bits",
    "is_concrete",
]
