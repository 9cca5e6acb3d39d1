"""``bitpack``: lossless storage of {0, 1} data, 8 values per byte."""

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


@struct.dataclass
class BitpackState:
    """The state of :func:`bitpack`.

    Attributes:
      invalid: int32 scalar, non-binary values seen by a jitted ``encode`` (stored as 1).
      shape: the item shape (static).
      dtype: the item dtype (static).
    """

    invalid: jax.Array
    shape: tuple = struct.field(pytree_node=False)
    dtype: Any = struct.field(pytree_node=False)


def _check_dtype(dtype: np.dtype) -> None:
    if not (
        dtype == np.bool_
        or np.issubdtype(dtype, np.integer)
        or np.issubdtype(dtype, np.floating)
        or dtype == jnp.bfloat16
    ):
        raise TypeError(
            f"bitpack.init: example dtype {dtype} is not supported "
            "(expected bool, an integer or a float dtype)"
        )


def bitpack() -> Codec:
    """Lossless codec for binary data: 8 values per uint8 byte (32x smaller than float32).

    Any input dtype: float 0/1 planes such as MinAtar's, bool, integers. For an item of
    ``n = prod(item_shape)`` values:

    - stored: uint8 ``[*B, ceil(n / 8)]``; value ``j`` of the flattened item is bit ``j % 8`` of
      byte ``j // 8``.
    - decode: ``[*B, *item_shape]`` in the example's dtype, exactly equal to ``x`` for 0/1 data.

    Non-binary values (anything other than 0 and 1, NaN included): on concrete (eager) input
    ``encode`` raises ``ValueError`` with the count and examples; under ``jit``/``vmap``/``scan``
    a value is stored as ``x != 0`` and counted in ``state.invalid`` (int32 scalar).

    Returns:
      A :class:`Codec` with a :class:`BitpackState`. Its ``init`` raises ``TypeError`` for an
      example dtype that is not bool, integer or float.
    """

    def init(example) -> BitpackState:
        shape, dtype = example_spec(example, "bitpack")
        _check_dtype(dtype)
        return BitpackState(invalid=zero_count(), shape=shape, dtype=dtype)

    def encode(x, state: BitpackState):
        x, batch = check_input("bitpack", x, state.shape, state.dtype)
        n = item_size(state.shape)
        flat = x.reshape(*batch, n)
        if state.dtype == np.bool_:
            bits, nbad = flat, 0
        else:
            bits = flat != 0
            bad = bits & (flat != 1)
            nbad = jnp.sum(bad)
            if is_concrete(x) and int(nbad) > 0:
                examples = np.asarray(flat)[np.asarray(bad)]
                raise ValueError(
                    f"bitpack.encode: {int(nbad)} of {flat.size} values are not 0/1 "
                    f"(e.g. {describe_values(examples)}); bitpack stores binary data only "
                    f"(use quantize or cast for other values)"
                )
        stored = pack_codes(bits, 1)
        return stored, state.replace(invalid=add_count(state.invalid, nbad))

    def decode(stored, state: BitpackState):
        n = item_size(state.shape)
        stored, batch = check_stored("bitpack", stored, (packed_width(n, 1),), jnp.uint8)
        bits = unpack_codes(stored, 1, n)
        return bits.astype(state.dtype).reshape(*batch, *state.shape)

    return Codec(init, encode, decode)
