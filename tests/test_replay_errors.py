"""Bad input gets a clear TypeError/ValueError that names the field and what was expected.

Shape/dtype/structure checks run at trace time, so they fire inside ``jit`` too; value
checks (negative/NaN priorities, an empty buffer) need concrete data and fire eagerly.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import memjax as mj
from memjax import sumtree

FACTORIES = {"uniform": mj.replay.uniform, "prioritized": mj.replay.prioritized}
EX = {"obs": np.zeros((3,), np.float32), "info": {"step": np.int32(0)}}


def good_items(b=2):
    return {"obs": np.zeros((b, 3), np.float32), "info": {"step": np.zeros((b,), np.int32)}}


@pytest.fixture(scope="module", params=list(FACTORIES))
def buf_state(request):
    buf = FACTORIES[request.param](8)
    return buf, buf.init(EX)


# --------------------------------------------------------------------------- construction


@pytest.mark.parametrize("name", list(FACTORIES))
@pytest.mark.parametrize("capacity", [0, -1, -100])
def test_capacity_below_one(name, capacity):
    with pytest.raises(ValueError, match=r"capacity.*>= 1"):
        FACTORIES[name](capacity)


@pytest.mark.parametrize("name", list(FACTORIES))
@pytest.mark.parametrize("capacity", [2.5, 8.0, "8", True, None])
def test_capacity_not_an_int(name, capacity):
    with pytest.raises(TypeError, match="capacity"):
        FACTORIES[name](capacity)


def test_numpy_int_capacity_accepted():
    state = mj.replay.uniform(np.int64(5)).init(EX)
    assert state.items["obs"].shape == (5, 3)


@pytest.mark.parametrize("alpha", [-0.1, -1.0, float("nan")])
def test_alpha_negative_or_nan(alpha):
    with pytest.raises(ValueError, match="alpha"):
        mj.replay.prioritized(8, alpha=alpha)


@pytest.mark.parametrize("floor", [-1e-6, float("nan")])
def test_min_priority_negative(floor):
    with pytest.raises(ValueError, match="min_priority"):
        mj.replay.prioritized(8, min_priority=floor)


# --------------------------------------------------------------------------- add


def bad_cases():
    """(label, items, exception, fragments the message must contain)."""
    g = good_items()
    return [
        ("missing field", {"obs": g["obs"]}, TypeError, ["structure", "info"]),
        (
            "extra field",
            {**g, "reward": np.zeros((2,), np.float32)},
            TypeError,
            ["structure", "reward"],
        ),
        ("not a dict", g["obs"], TypeError, ["structure"]),
        (
            "obs dtype",
            {**g, "obs": g["obs"].astype(np.int32)},
            TypeError,
            ["'obs'", "int32", "float32"],
        ),
        (
            "nested dtype",
            {**g, "info": {"step": np.zeros((2,), np.float32)}},
            TypeError,
            ["info.step", "float32", "int32"],
        ),
        (
            "obs shape",
            {**g, "obs": np.zeros((2, 4), np.float32)},
            ValueError,
            ["'obs'", "(2, 4)", "(B, 3)"],
        ),
        (
            "no batch axis",
            {**g, "obs": np.zeros((3,), np.float32)},
            ValueError,
            ["'obs'", "(B, 3)"],
        ),
        (
            "scalar no batch axis",
            {**g, "info": {"step": np.int32(1)}},
            ValueError,
            ["info.step", "(B)"],
        ),
        (
            "no broadcast",
            {**g, "obs": np.zeros((2, 1), np.float32)},
            ValueError,
            ["'obs'", "(B, 3)"],
        ),
        (
            "extra axis",
            {**g, "info": {"step": np.zeros((2, 1), np.int32)}},
            ValueError,
            ["info.step", "(B)"],
        ),
        (
            "batch mismatch",
            {**g, "info": {"step": np.zeros((3,), np.int32)}},
            ValueError,
            ["batch size"],
        ),
        ("empty batch", good_items(0), ValueError, ["empty"]),
    ]


@pytest.mark.parametrize("case", bad_cases(), ids=[c[0] for c in bad_cases()])
def test_add_bad_items_eager(buf_state, case):
    buf, state = buf_state
    _, items, exc, fragments = case
    with pytest.raises(exc) as info:
        buf.add(state, items)
    for frag in fragments:
        assert frag in str(info.value), (frag, str(info.value))


@pytest.mark.parametrize("case", bad_cases()[:8], ids=[c[0] for c in bad_cases()[:8]])
def test_add_bad_items_inside_jit(buf_state, case):
    buf, state = buf_state
    _, items, exc, fragments = case
    with pytest.raises(exc) as info:
        jax.jit(buf.add)(state, items)
    for frag in fragments:
        assert frag in str(info.value), (frag, str(info.value))


def test_good_items_accepted(buf_state):
    buf, state = buf_state
    state = buf.add(state, good_items(3))
    assert int(mj.replay.size(state)) == 3


# --------------------------------------------------------------------------- sample


@pytest.mark.parametrize("batch_size", [0, -4])
def test_batch_size_below_one(buf_state, batch_size):
    buf, state = buf_state
    state = buf.add(state, good_items(8))
    with pytest.raises(ValueError, match="batch_size"):
        buf.sample(state, jax.random.key(0), batch_size)
    with pytest.raises(ValueError, match="batch_size"):
        jax.jit(buf.sample, static_argnums=2)(state, jax.random.key(0), batch_size)


def test_batch_size_larger_than_capacity(buf_state):
    buf, state = buf_state
    state = buf.add(state, good_items(8))
    with pytest.raises(ValueError, match=r"batch_size 9.*capacity 8"):
        buf.sample(state, jax.random.key(0), 9)
    with pytest.raises(ValueError, match="batch_size"):
        jax.jit(buf.sample, static_argnums=2)(state, jax.random.key(0), 9)


@pytest.mark.parametrize("batch_size", [2.0, "4", None])
def test_batch_size_not_an_int(buf_state, batch_size):
    buf, state = buf_state
    state = buf.add(state, good_items(8))
    with pytest.raises(TypeError, match="batch_size"):
        buf.sample(state, jax.random.key(0), batch_size)


def test_sampling_an_empty_buffer_eagerly(buf_state):
    buf, state = buf_state
    with pytest.raises(ValueError, match="empty"):
        buf.sample(state, jax.random.key(0), 1)
    assert not bool(buf.can_sample(state, 1))


def test_sampling_a_stacked_state_without_vmap(buf_state):
    buf, state = buf_state
    state = buf.add(state, good_items(4))
    stacked = jax.tree.map(lambda x: jnp.stack([x, x]), state)
    with pytest.raises(ValueError, match="vmap"):
        buf.sample(stacked, jax.random.key(0), 2)


# --------------------------------------------------------------------------- update


def test_update_shape_mismatch():
    buf = mj.replay.prioritized(8)
    state = buf.add(buf.init(EX), good_items(4))
    with pytest.raises(ValueError, match="priorities"):
        buf.update(state, jnp.arange(3), jnp.ones(4))
    with pytest.raises(ValueError, match="priorities"):
        buf.update(state, jnp.arange(4).reshape(2, 2), jnp.ones((2, 2)))


@pytest.mark.parametrize("bad", [np.nan, -0.5, np.inf])
def test_update_bad_priority_eager(bad):
    buf = mj.replay.prioritized(8)
    state = buf.add(buf.init(EX), good_items(4))
    with pytest.raises(ValueError, match=r"priorities must be finite and >= 0"):
        buf.update(state, jnp.arange(4), jnp.array([1.0, 2.0, bad, 0.0]))


# --------------------------------------------------------------------------- sumtree


@pytest.mark.parametrize(
    "capacity,exc", [(0, ValueError), (-2, ValueError), (3.0, TypeError), ("3", TypeError)]
)
def test_sumtree_bad_capacity(capacity, exc):
    with pytest.raises(exc, match="capacity"):
        sumtree.init(capacity)


@pytest.mark.parametrize("branching", [0, 1, 3, 6, 12])
def test_sumtree_bad_branching(branching):
    with pytest.raises(ValueError, match="branching"):
        sumtree.init(8, branching)


@pytest.mark.parametrize("bad", [-1.0, -1e-30, np.nan, np.inf])
def test_sumtree_bad_values_eager(bad):
    tree = sumtree.init(8)
    with pytest.raises(ValueError, match=r"finite and >= 0"):
        sumtree.set(tree, jnp.array([0, 1]), jnp.array([1.0, bad]))
    with pytest.raises(ValueError, match=r"finite and >= 0"):
        sumtree.build(np.array([1.0, bad, 2.0], np.float32))


def test_sumtree_bad_values_in_jit_stored_as_zero():
    tree = sumtree.set(sumtree.init(8), jnp.arange(4), jnp.array([1.0, 2.0, 3.0, 4.0]))
    tree = jax.jit(sumtree.set)(tree, jnp.array([0, 1, 2]), jnp.array([-1.0, np.nan, np.inf]))
    np.testing.assert_array_equal(sumtree.leaves(tree)[:4], [0.0, 0.0, 0.0, 4.0])
    assert float(sumtree.total(tree)) == 4.0


def test_sumtree_set_length_mismatch():
    with pytest.raises(ValueError, match="same length"):
        sumtree.set(sumtree.init(8), jnp.arange(3), jnp.ones(4))


def test_sumtree_sample_n_below_one():
    tree = sumtree.build(np.ones(4, np.float32))
    with pytest.raises(ValueError, match="n"):
        sumtree.sample(tree, jax.random.key(0), 0)
