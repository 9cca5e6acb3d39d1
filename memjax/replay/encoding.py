"""Per-field codecs applied by the buffers: encode inside ``add``, decode inside ``sample``.

``codecs`` is a dict from a top-level field name of the item dict to a codec from
:mod:`memjax.codecs` (a NamedTuple ``(init, encode, decode)``); fields without a codec are
stored as given. The codec states (fitted ranges, codebooks, clip/invalid counters) live in
the buffer state under ``codecs`` so that they are vmapped, donated and checkpointed with it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def check_codecs(codecs) -> dict:
    """``codecs`` as a dict name -> codec ({} for None); TypeError on anything else."""
    if codecs is None:
        return {}
    if not isinstance(codecs, dict):
        raise TypeError(
            f"codecs must be a dict mapping field names to codecs, got {type(codecs).__name__}"
        )
    for name, codec in codecs.items():
        if not all(callable(getattr(codec, f, None)) for f in ("init", "encode", "decode")):
            raise TypeError(
                f"codecs['{name}'] is not a codec (needs init, encode, decode), got {codec!r}"
            )
    return dict(codecs)


def _check_fields(codecs: dict, example) -> None:
    if codecs and not isinstance(example, dict):
        raise TypeError(
            f"codecs need dict items (field name -> array), got {type(example).__name__}"
        )
    unknown = sorted(set(codecs) - set(example if isinstance(example, dict) else ()))
    if unknown:
        raise ValueError(
            f"codecs for unknown fields {unknown}; the item has fields {sorted(example)}"
        )


def init_states(codecs: dict, example) -> dict:
    """Codec states for ONE example item (no batch axis): dict name -> state."""
    _check_fields(codecs, example)
    return {name: codec.init(example[name]) for name, codec in codecs.items()}


def spec_of(x) -> jax.ShapeDtypeStruct:
    """ShapeDtypeStruct of an array, ShapeDtypeStruct or Python/NumPy scalar (as jnp.asarray)."""
    dtype = x.dtype if hasattr(x, "dtype") else jnp.asarray(x).dtype
    return jax.ShapeDtypeStruct(tuple(jnp.shape(x)), dtype)


def stored_example(codecs: dict, example, states: dict):
    """Per-item ShapeDtypeStructs of the stored fields (what the ring holds)."""
    if not codecs:
        return jax.tree.map(spec_of, example)
    one = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct((1, *jnp.shape(x)), spec_of(x).dtype), example
    )
    stored = jax.eval_shape(lambda items, st: encode(codecs, items, st)[0], one, states)
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape[1:], s.dtype), stored)


def raw_spec(codecs: dict, stored_items, states: dict):
    """Per-item ShapeDtypeStructs of the fields as given to ``add`` (decoded), from the
    stored arrays ``stored_items`` [capacity, ...] (or their shapes)."""
    one = jax.tree.map(lambda s: jax.ShapeDtypeStruct((1, *s.shape[1:]), s.dtype), stored_items)
    if codecs:
        one = jax.eval_shape(lambda st_items, st: decode(codecs, st_items, st), one, states)
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape[1:], s.dtype), one)


def strip_axes(tree, n: int):
    """ShapeDtypeStructs of ``tree``'s leaves without their ``n`` leading (seed) axes."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[n:], x.dtype), tree)


def encode(codecs: dict, items, states: dict):
    """(stored items, new states) for a batch ``items`` [B, ...]."""
    if not codecs:
        return items, states
    items = dict(items)
    states = dict(states)
    for name, codec in codecs.items():
        try:
            items[name], states[name] = codec.encode(items[name], states[name])
        except ValueError as err:
            raise ValueError(f"add: field '{name}': {err}") from None
    return items, states


def decode(codecs: dict, stored, states: dict):
    """Items [n, ...] as given to ``add`` from stored rows [n, ...]."""
    if not codecs:
        return stored
    stored = dict(stored)
    for name, codec in codecs.items():
        stored[name] = codec.decode(stored[name], states[name])
    return stored
