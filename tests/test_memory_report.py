"""Memory reports: bytes per field, per item and in total, before and after allocation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import memjax as mj

EX = {
    "obs": np.zeros((84, 84, 4), np.uint8),
    "action": np.int32(0),
    "reward": np.float32(0),
    "done": np.bool_(False),
    "info": {"q": np.zeros((6,), np.float16)},
}
# hand computation, per item: name -> (shape, dtype, bytes)
FIELDS = {
    "action": ((), "int32", 4),
    "done": ((), "bool", 1),
    "info.q": ((6,), "float16", 12),
    "obs": ((84, 84, 4), "uint8", 84 * 84 * 4),
    "reward": ((), "float32", 4),
}
ITEM_BYTES = sum(b for _, _, b in FIELDS.values())
FACTORIES = {"uniform": mj.replay.uniform, "prioritized": mj.replay.prioritized}


def nbytes(tree):
    return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def check_fields(report, capacity, copies):
    assert report.capacity == capacity and report.copies == copies
    got = {f.name: f for f in report.fields}
    assert set(got) == set(FIELDS)
    for name, (shape, dtype, per_item) in FIELDS.items():
        f = got[name]
        assert tuple(f.shape) == shape, name
        assert f.dtype == dtype, name
        assert f.bytes_per_item == per_item, name
        assert f.total_bytes == per_item * capacity * copies, name
    assert report.total_bytes == ITEM_BYTES * capacity * copies + report.overhead_bytes
    assert report.bytes_per_item == pytest.approx(report.total_bytes / (capacity * copies))


@pytest.mark.parametrize("name", list(FACTORIES))
def test_live_state_matches_hand_computation(name):
    capacity = 100
    buf = FACTORIES[name](capacity)
    state = buf.init(EX)
    report = buf.memory(state)
    check_fields(report, capacity, 1)
    # everything in the state is accounted for
    assert report.total_bytes == nbytes(state)
    assert report.overhead_bytes == nbytes(state) - nbytes(state.items)
    if name == "uniform":
        assert report.overhead_bytes <= 64  # counters only
    d = report.as_dict()
    assert d["total_bytes"] == report.total_bytes and set(d["fields"]) == set(FIELDS)
    text = str(report)
    assert all(field in text for field in FIELDS)


def test_prioritized_overhead_includes_the_tree():
    capacity = 1000
    uni = mj.replay.uniform(capacity)
    per = mj.replay.prioritized(capacity)
    per_state = per.init(EX)
    r_uni, r_per = uni.memory(uni.init(EX)), per.memory(per_state)
    tree_bytes = nbytes(per_state.tree)
    assert tree_bytes >= 4 * capacity  # at least one float32 per leaf
    assert r_per.overhead_bytes >= tree_bytes
    assert r_per.overhead_bytes - r_uni.overhead_bytes >= tree_bytes
    assert r_per.total_bytes - r_uni.total_bytes == r_per.overhead_bytes - r_uni.overhead_bytes
    assert r_per.bytes_per_item > r_uni.bytes_per_item + 4


@pytest.mark.parametrize("name", list(FACTORIES))
def test_eval_shape_equals_live(name):
    buf = FACTORIES[name](100)
    abstract = jax.eval_shape(buf.init, EX)
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(abstract))
    assert buf.memory(abstract) == buf.memory(buf.init(EX))


@pytest.mark.parametrize("name", list(FACTORIES))
def test_eval_shape_does_not_allocate(name):
    """A 10^9-item buffer of Atari frames (~28 TB) can be reported, never allocated."""
    capacity = 10**9
    buf = FACTORIES[name](capacity)
    report = buf.memory(jax.eval_shape(buf.init, EX))
    check_fields(report, capacity, 1)
    assert report.total_bytes >= ITEM_BYTES * capacity
    if name == "prioritized":
        assert report.overhead_bytes >= 4 * capacity


@pytest.mark.parametrize("name", list(FACTORIES))
def test_vmapped_state_counts_copies(name):
    capacity, seeds = 50, 8
    buf = FACTORIES[name](capacity)
    single = buf.memory(buf.init(EX))
    init_seeds = jax.vmap(lambda _: buf.init(EX))
    abstract = jax.eval_shape(init_seeds, jnp.arange(seeds))
    live = jax.jit(init_seeds)(jnp.arange(seeds))
    for state in (abstract, live):
        report = buf.memory(state)
        check_fields(report, capacity, seeds)
        assert report.total_bytes == seeds * single.total_bytes
        assert report.overhead_bytes == seeds * single.overhead_bytes
        assert report.bytes_per_item == pytest.approx(single.bytes_per_item)
    assert buf.memory(abstract) == buf.memory(live)
    assert buf.memory(live).total_bytes == nbytes(live)
    assert "8 copies" in str(buf.memory(live))


@pytest.mark.parametrize("name", list(FACTORIES))
def test_two_leading_axes(name):
    """seeds x devices: copies is the product of the leading axes."""
    buf = FACTORIES[name](10)
    single = buf.memory(buf.init(EX))
    nested = jax.eval_shape(jax.vmap(jax.vmap(lambda _: buf.init(EX))), jnp.zeros((2, 3)))
    report = buf.memory(nested)
    check_fields(report, 10, 6)
    assert report.total_bytes == 6 * single.total_bytes


def test_codecs_report_raw_and_stored_bytes_per_field():
    import memjax.codecs as mc

    ex = {"obs": np.zeros((10, 10, 4), np.float32), "action": np.int32(0), "reward": np.float32(0)}
    buf = mj.replay.uniform(1000, codecs={"obs": mc.bitpack(), "action": mc.cast(jnp.uint8)})
    report = buf.memory(jax.eval_shape(buf.init, ex))
    got = {f.name: f for f in report.fields}
    assert (got["obs"].raw_bytes, got["obs"].bytes_per_item, got["obs"].shape) == (1600, 50, (50,))
    assert got["obs"].compression == 32.0 and got["obs"].raw_dtype == "float32"
    assert (got["action"].raw_bytes, got["action"].bytes_per_item) == (4, 1)
    assert (got["reward"].raw_bytes, got["reward"].bytes_per_item) == (4, 4)  # no codec
    assert report.raw_bytes_per_item == 1608
    assert report.compression_ratio == pytest.approx(1608 / report.bytes_per_item)
    assert report.as_dict()["fields"]["obs"]["raw_bytes_per_item"] == 1600
    assert "32.0x" in str(report)
    # vmapped states (two seeds) report the same per-item figures
    two = jax.eval_shape(jax.vmap(buf.init), jax.tree.map(lambda x: np.stack([x, x]), ex))
    assert buf.memory(two).copies == 2
    assert buf.memory(two).raw_bytes_per_item == 1608
