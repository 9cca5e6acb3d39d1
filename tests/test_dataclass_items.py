"""The row layouts (one_copy, sequence) take items that are dataclasses (flax.struct or chex,
such as PureJaxRL's ``TimeStep``) with ``obs`` and ``next_obs`` fields, not only dicts: the
samples come back as that class, equal field by field to a dict buffer's from the same key."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

import memjax as mj
import memjax.codecs as mc

E = 4


@struct.dataclass
class FlaxStep:
    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    next_obs: jax.Array
    first: jax.Array


@chex.dataclass
class ChexStep:
    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    next_obs: jax.Array
    first: jax.Array


def rows(n):
    """n rows of E steps as dicts: episodes of 3 steps, next_obs = obs + 1 within one."""
    out = []
    for t in range(n):
        obs = jnp.stack([jnp.full((3,), 10.0 * t + e) for e in range(E)])
        ends = (t % 3) == 2
        out.append(
            {
                "obs": obs,
                "action": jnp.arange(E, dtype=jnp.int32) + t,
                "reward": jnp.full((E,), float(t)),
                "next_obs": obs + (100.0 if ends else 10.0),  # a final observation at ends
                "first": jnp.full((E,), t % 3 == 0),
            }
        )
    return out


LAYOUTS = {
    "one_copy": lambda: mj.replay.one_copy(E),
    "sequence": lambda: mj.replay.sequence(E, length=2),
}


@pytest.mark.parametrize(
    "cls, kind, layout",
    [
        (FlaxStep, "uniform", "one_copy"),
        (ChexStep, "prioritized", "one_copy"),
        (FlaxStep, "prioritized", "sequence"),
    ],
)
def test_dataclass_items_sample_as_dict_items_do(cls, kind, layout):
    make = getattr(mj.replay, kind)
    codecs = {"action": mc.cast(jnp.uint8)}
    as_dict = make(capacity=8 * E, codecs=codecs, layout=LAYOUTS[layout]())
    as_class = make(capacity=8 * E, codecs=codecs, layout=LAYOUTS[layout]())
    example = {k: v[0] for k, v in rows(1)[0].items()}  # one_copy: first is a plain field
    d_state, c_state = as_dict.init(example), as_class.init(cls(**example))
    add_d, add_c = jax.jit(as_dict.add), jax.jit(as_class.add)
    for row in rows(11):  # wraps the ring of 8 rows
        d_state, c_state = add_d(d_state, row), add_c(c_state, cls(**row))
    assert int(mj.replay.size(c_state)) == int(mj.replay.size(d_state)) > 0
    key = jax.random.key(3)
    d, c = (
        jax.jit(b.sample, static_argnums=2)(st, key, 16)
        for b, st in ((as_dict, d_state), (as_class, c_state))
    )
    assert type(c.items) is cls
    for name, value in d.items.items():
        np.testing.assert_array_equal(getattr(c.items, name), value, err_msg=name)
    np.testing.assert_array_equal(c.indices, d.indices)
    # a final observation comes back where an episode ended, not the next episode's first
    assert bool(jnp.any(c.items.next_obs - c.items.obs == 100.0))
    if kind == "prioritized":
        c_state = jax.jit(as_class.update)(c_state, c.indices, jnp.ones(16))
    mem = as_class.memory(jax.eval_shape(as_class.init, cls(**example)))
    assert {f.name for f in mem.fields} >= {"obs", "next_obs", "action"}


def test_items_of_another_class_or_with_static_fields_are_refused():
    buf = mj.replay.uniform(capacity=4 * E, layout=mj.replay.one_copy(E))
    row = rows(1)[0]
    state = buf.init(FlaxStep(**{k: v[0] for k, v in row.items()}))
    with pytest.raises(TypeError, match="initialised with FlaxStep items"):
        buf.add(state, row)

    @struct.dataclass
    class WithStatic:
        obs: jax.Array
        next_obs: jax.Array
        name: str = struct.field(pytree_node=False, default="x")

    with pytest.raises(TypeError, match="static fields"):
        buf.init(WithStatic(jnp.zeros(3), jnp.zeros(3)))
    with pytest.raises(TypeError, match="a dict or a dataclass"):
        buf.init((jnp.zeros(3), jnp.zeros(3)))
