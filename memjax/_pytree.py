"""``flax.struct``'s ``dataclass`` and ``field`` without importing flax.

The replay buffers, codecs and sum-tree define their states with these, so that
``import memjax.replay`` loads jax and numpy only (flax brings some 150 modules: linen,
rich, msgpack, yaml). The classes are the same pytrees as with ``flax.struct``: frozen
dataclasses registered by ``jax.tree_util.register_dataclass`` (fields with
``pytree_node=False`` are static metadata), with a ``replace`` method. Unlike flax's, they
are not registered with ``flax.serialization`` (``to_state_dict``); orbax checkpoints, which
flatten with jax's key paths, are unaffected.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import dataclass_transform

import jax


def field(pytree_node: bool = True, *, metadata=None, **kwargs):
    """``dataclasses.field``; ``pytree_node=False`` makes the field static (not a leaf)."""
    return dataclasses.field(metadata=(metadata or {}) | {"pytree_node": pytree_node}, **kwargs)


@dataclass_transform(field_specifiers=(field,), frozen_default=True)
def dataclass(clz=None, **kwargs):
    """A frozen dataclass registered as a jax pytree, as ``flax.struct.dataclass``."""
    if clz is None:
        return functools.partial(dataclass, **kwargs)
    if "_memjax_dataclass" in clz.__dict__:
        return clz
    kwargs.setdefault("frozen", True)
    data_clz = dataclasses.dataclass(**kwargs)(clz)
    data_fields, meta_fields = [], []
    for f in dataclasses.fields(data_clz):
        (data_fields if f.metadata.get("pytree_node", True) else meta_fields).append(f.name)

    def replace(self, **updates):
        """A copy with the given fields replaced."""
        return dataclasses.replace(self, **updates)

    data_clz.replace = replace
    jax.tree_util.register_dataclass(data_clz, data_fields, meta_fields)
    data_clz._memjax_dataclass = True
    return data_clz
