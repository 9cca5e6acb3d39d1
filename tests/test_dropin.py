"""memjax buffers dropped into someone else's JAX loop (PureJaxRL/flashbax habits).

- ``jax.jit(buf.sample)(state, key)`` works when the buffer was built with
  ``sample_batch_size``; a per-call ``batch_size`` still wins.
- ``buf.replace(init=jax.jit(buf.init), ...)``, PureJaxRL's idiom for flashbax buffers.
- Under jit, sampling a buffer with nothing to draw gives weights and probabilities 0 (never
  NaN) and indices -1, which ``update`` ignores, for every layout; eager calls still raise.
- The docs' own-loop example (docs/replay.md: a ``jit(vmap(train))`` DQN on the one-copy
  layout with PER) runs as written and learns.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import doc_blocks
import memjax as mj
from memjax.replay.base import ReplayBuffer

FACTORIES = {"uniform": mj.replay.uniform, "prioritized": mj.replay.prioritized}
NUM_ENVS = 2
EXAMPLE = {
    "obs": jnp.zeros(3),
    "next_obs": jnp.zeros(3),
    "first": jnp.bool_(False),
    "action": jnp.int32(0),
}
LAYOUTS = {
    "flat": lambda: None,
    "one_copy": lambda: mj.replay.one_copy(NUM_ENVS),
    "sequence": lambda: mj.replay.sequence(NUM_ENVS, length=2),
}


def rows(count, start=0):
    """``count`` vector steps of NUM_ENVS items each, as a list of [NUM_ENVS, ...] pytrees
    whose next_obs is the next row's obs (no episode ends)."""
    out = []
    for t in range(start, start + count):
        obs = jnp.full((NUM_ENVS, 3), float(t))
        out.append(
            {
                "obs": obs,
                "next_obs": obs + 1.0,
                "first": jnp.full((NUM_ENVS,), t == 0),
                "action": jnp.full((NUM_ENVS,), t, jnp.int32),
            }
        )
    return out


def filled(buf, count):
    state = buf.init(EXAMPLE)
    add = jax.jit(buf.add)
    for row in rows(count):
        state = add(state, row)
    return state


# ---------------------------------------------------------------------- sample_batch_size


@pytest.mark.parametrize("name", list(FACTORIES))
def test_jit_sample_uses_the_constructor_batch_size(name):
    buf = FACTORIES[name](16, sample_batch_size=5)
    state = filled(buf, 4)
    key = jax.random.key(3)
    jitted = jax.jit(buf.sample)(state, key)
    eager = buf.sample(state, key, 5)
    assert jitted.indices.shape == (5,) and jitted.items["obs"].shape == (5, 3)
    for a, b in zip(jax.tree.leaves(jitted), jax.tree.leaves(eager)):
        np.testing.assert_array_equal(a, b)
    assert buf.sample(state, key, 3).indices.shape == (3,)  # the per-call size wins
    assert bool(jax.jit(buf.can_sample)(state))  # 8 items >= 5
    assert not bool(buf.can_sample(filled(buf, 2)))  # 4 items < 5
    assert bool(buf.can_sample(filled(buf, 2), 4))


@pytest.mark.parametrize("name", list(FACTORIES))
def test_jit_sample_without_a_batch_size_says_how_to_fix_it(name):
    buf = FACTORIES[name](16)
    state = filled(buf, 4)
    with pytest.raises(TypeError, match="sample_batch_size"):
        jax.jit(buf.sample)(state, jax.random.key(0))
    with pytest.raises(TypeError, match="sample_batch_size"):
        jax.jit(buf.sample)(state, jax.random.key(0), 4)  # traced batch_size
    with pytest.raises(TypeError, match="sample_batch_size"):
        buf.can_sample(state)


@pytest.mark.parametrize("name", list(FACTORIES))
@pytest.mark.parametrize(
    "bad, error, words",
    [
        (0, ValueError, "sample_batch_size must be >= 1"),
        (2.5, TypeError, "sample_batch_size must be a python int"),
        (17, ValueError, "sample_batch_size 17 is larger than the buffer's capacity 16"),
        ("4", TypeError, "sample_batch_size must be a python int"),
    ],
)
def test_bad_sample_batch_size(name, bad, error, words):
    with pytest.raises(error, match=words):
        FACTORIES[name](16, sample_batch_size=bad)


# ---------------------------------------------------------------------- replace


@pytest.mark.parametrize("name", list(FACTORIES))
def test_replace_is_purejaxrls_idiom(name):
    buf = FACTORIES[name](16, sample_batch_size=4)
    fast = buf.replace(
        init=jax.jit(buf.init), add=jax.jit(buf.add, donate_argnums=0), sample=jax.jit(buf.sample)
    )
    assert isinstance(fast, ReplayBuffer)
    assert fast.update is buf.update and fast.init is not buf.init
    state = fast.init(EXAMPLE)
    for row in rows(3):
        state = fast.add(state, row)
    assert fast.sample(state, jax.random.key(0)).indices.shape == (4,)
    with pytest.raises(ValueError, match="sampel"):
        buf.replace(sampel=buf.sample)


# ---------------------------------------------------------------------- nothing to draw


def assert_nothing_drawn(sample):
    assert np.all(np.asarray(sample.weights) == 0), sample.weights
    assert np.all(np.asarray(sample.probabilities) == 0), sample.probabilities
    assert np.all(np.asarray(sample.indices) == -1), sample.indices


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("name", list(FACTORIES))
def test_empty_buffer_under_jit(name, layout):
    buf = FACTORIES[name](16, layout=LAYOUTS[layout](), sample_batch_size=4)
    state = buf.init(EXAMPLE)
    sample = jax.jit(buf.sample)(state, jax.random.key(0))
    assert_nothing_drawn(sample)
    after = jax.jit(buf.update)(state, sample.indices, jnp.full((4,), 5.0))
    for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(state)):
        np.testing.assert_array_equal(a, b)  # -1 ids are ignored
    with pytest.raises(ValueError, match="empty"):
        buf.sample(state, jax.random.key(0))  # eager: the clear error


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("name", list(FACTORIES))
def test_vmapped_seeds_one_empty(name, layout):
    """Seeds vmapped together: an empty seed draws nothing; the other draws as usual."""
    buf = FACTORIES[name](16, layout=LAYOUTS[layout](), sample_batch_size=4)
    states = jax.tree.map(lambda *x: jnp.stack(x), buf.init(EXAMPLE), filled(buf, 3))
    samples = jax.jit(jax.vmap(buf.sample))(states, jax.random.split(jax.random.key(1), 2))
    assert_nothing_drawn(jax.tree.map(lambda x: x[0], samples))
    assert np.all(np.asarray(samples.indices[1]) >= 0)
    assert np.all(np.asarray(samples.weights[1]) > 0)
    assert np.all(np.asarray(samples.probabilities[1]) > 0)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_prioritized_with_every_priority_zero(layout):
    buf = mj.replay.prioritized(16, layout=LAYOUTS[layout](), sample_batch_size=4, min_priority=0.0)
    state = filled(buf, 3)
    sample, update = jax.jit(buf.sample, static_argnums=2), jax.jit(buf.update)
    for i in range(50):  # zero the priority of whatever is still drawn
        if not bool(buf.can_sample(state)):
            break
        drawn = sample(state, jax.random.key(i), 16).indices
        state = update(state, drawn, jnp.zeros(16))
    assert not bool(buf.can_sample(state)) and mj.replay.size(state) > 0
    sample = jax.jit(buf.sample)(state, jax.random.key(5))
    assert_nothing_drawn(sample)


# ------------------------------------------------------------- the docs' own-loop example


def own_loop_example() -> doc_blocks.Block:
    """The own-loop DQN example, wherever it is (docs/replay.md today)."""
    blocks = [b for b in doc_blocks.all_blocks() if doc_blocks.OWN_LOOP in b.code]
    assert len(blocks) == 1, "the own-loop example is missing from README.md and docs/"
    return blocks[0]


def test_docs_own_loop_runs_and_learns():
    example = own_loop_example()
    namespace = {}
    exec(compile(example.code, f"{example.path} own-loop example", "exec"), namespace)
    runner, finished, loss = namespace["runner"], namespace["finished"], namespace["loss"]
    steps = namespace["STEPS"]
    assert finished.shape == (2, steps, namespace["NUM_ENVS"])
    assert np.all(np.isfinite(np.asarray(loss)))
    buf_state = runner[3]
    assert np.all(np.asarray(mj.replay.size(buf_state)) > 0.9 * 8 * 2_500)  # one-copy rows
    # priorities came back through update: the largest raw priority moved off its initial 1
    assert np.all(np.asarray(buf_state.max_priority) != 1.0)
    late = np.asarray(finished)[:, -steps // 5 :]
    early = np.asarray(finished)[:, : steps // 10]
    late_mean, early_mean = np.nanmean(late, axis=(1, 2)), np.nanmean(early, axis=(1, 2))
    assert np.all(late_mean > 100), late_mean  # random play: about 22
    assert np.all(late_mean > 3 * early_mean), (early_mean, late_mean)
