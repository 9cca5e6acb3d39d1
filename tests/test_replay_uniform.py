"""mj.replay.uniform against the NumPy FIFO reference (tests/reference.py).

Items carry their insertion number ``g`` (and an ``obs`` derived from it), so every
stored or sampled item can be traced back to the reference. Compiled functions are
shared through module-scoped fixtures; tests vary only the data.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import memjax as mj
import reference as ref

EX = ref.example_item()
ADD_SIZES = (1, 2, 3, 5, 7, 8, 15)  # includes == capacity, > capacity and > 2 * capacity
SAMPLE = 5


class Ops:
    """Jitted add/sample/update/can_sample of one buffer (compiled once per batch shape)."""

    def __init__(self, capacity):
        self.capacity = capacity
        self.buf = mj.replay.uniform(capacity)
        self.add = jax.jit(self.buf.add)
        self.sample = jax.jit(self.buf.sample, static_argnums=2)
        self.update = jax.jit(self.buf.update)
        self.can_sample = jax.jit(self.buf.can_sample, static_argnums=1)
        self.size = jax.jit(mj.replay.size)


@pytest.fixture(scope="module")
def ops1():
    return Ops(1)


@pytest.fixture(scope="module")
def ops7():
    return Ops(7)


def check_state(ops, state, r: ref.RefRing):
    """Size, storage shape and which item sits in which slot, against the reference."""
    c = ops.capacity
    assert int(ops.size(state)) == r.size
    assert state.items["g"].shape == (c,) and state.items["obs"].shape == (c, 3)  # exact
    g = np.asarray(state.items["g"])
    valid = r.slot_g >= 0
    np.testing.assert_array_equal(g[valid], r.slot_g[valid])
    np.testing.assert_array_equal(
        np.asarray(state.items["obs"])[valid], ref.make_items(r.slot_g[valid])["obs"]
    )
    # the stored items are exactly the newest min(added, capacity) ones
    np.testing.assert_array_equal(np.sort(g[valid]), np.arange(max(0, r.added - c), r.added))
    for k in (1, c):
        assert bool(ops.can_sample(state, k)) == (r.size >= k)


def check_sample(ops, state, smp, r: ref.RefRing, batch_size):
    c = ops.capacity
    g = np.asarray(smp.items["g"])
    assert g.shape == (batch_size,) and smp.indices.shape == (batch_size,)
    assert smp.indices.dtype == jnp.int32
    # every sampled item is currently stored, its obs matches, its id names its slot
    assert all(r.is_stored(x) for x in g.tolist()), (g, r.stored_g())
    np.testing.assert_array_equal(np.asarray(smp.items["obs"]), ref.make_items(g)["obs"])
    np.testing.assert_array_equal(np.asarray(smp.indices) % c, g % c)
    np.testing.assert_array_equal(np.asarray(state.items["g"])[np.asarray(smp.indices) % c], g)
    np.testing.assert_array_equal(smp.weights, np.ones(batch_size, np.float32))
    np.testing.assert_allclose(smp.probabilities, np.full(batch_size, 1.0 / r.size), rtol=1e-6)


op_strategy = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.sampled_from(ADD_SIZES)),
        st.tuples(st.just("sample"), st.integers(0, 2**31 - 1)),
    ),
    min_size=1,
    max_size=25,
)


def run_ops(ops, op_list):
    state = ops.buf.init(EX)
    r = ref.RefRing(ops.capacity)
    check_state(ops, state, r)
    for op, arg in op_list:
        if op == "add":
            items = ref.make_items(np.arange(r.added, r.added + arg))
            state = ops.add(state, items)
            r.add(items)
            check_state(ops, state, r)
        elif r.size > 0:
            batch_size = min(SAMPLE, ops.capacity)
            smp = ops.sample(state, jax.random.key(arg), batch_size)
            check_sample(ops, state, smp, r, batch_size)
            # update is the identity for uniform replay
            new = ops.update(state, smp.indices, jnp.ones(batch_size))
            jax.tree.map(np.testing.assert_array_equal, new, state)


@settings(max_examples=40)
@given(op_list=op_strategy)
def test_random_ops_vs_fifo_reference_capacity7(ops7, op_list):
    run_ops(ops7, op_list)


@settings(max_examples=15)
@given(op_list=op_strategy)
def test_random_ops_vs_fifo_reference_capacity1(ops1, op_list):
    run_ops(ops1, op_list)


def test_wrapping_add_is_exact_and_keeps_newest(ops7):
    """Adds that straddle the end of the ring, and one larger than the capacity."""
    state = ops7.buf.init(EX)
    r = ref.RefRing(7)
    for n in (5, 5, 15, 3, 7):
        items = ref.make_items(np.arange(r.added, r.added + n))
        state = ops7.add(state, items)
        r.add(items)
        check_state(ops7, state, r)
    # 35 added: the newest 7 (28..34) are kept, item g in slot g % 7
    np.testing.assert_array_equal(np.asarray(state.items["g"]), [28, 29, 30, 31, 32, 33, 34])


def test_eager_matches_jit(ops7):
    state_e = ops7.buf.init(EX)
    state_j = ops7.buf.init(EX)
    for start, n in ((0, 3), (3, 8)):
        items = ref.make_items(np.arange(start, start + n))
        state_e = ops7.buf.add(state_e, items)
        state_j = ops7.add(state_j, items)
    jax.tree.map(np.testing.assert_array_equal, state_e, state_j)


# --------------------------------------------------------------------------- sampling is uniform


@pytest.fixture(scope="module")
def draw50():
    """10^5 draws: 2000 keys x batch 50, one compiled program, the state as an argument."""
    buf = mj.replay.uniform(50)
    draw = jax.jit(jax.vmap(lambda s, k: buf.sample(s, k, 50).items["g"], in_axes=(None, 0)))
    return buf, lambda state, seed: np.asarray(
        draw(state, jax.random.split(jax.random.key(seed), 2000))
    ).reshape(-1)


@pytest.mark.parametrize("added", [37, 80])
def test_sampling_is_uniform_over_stored_items_chi_square(draw50, added):
    buf, draw = draw50
    state = buf.init(EX)
    state = buf.add(state, ref.make_items(np.arange(added)))
    g = draw(state, added)
    assert g.size == 100_000
    stored = np.arange(max(0, added - 50), added)
    assert np.isin(g, stored).all()
    counts = np.bincount(g - stored[0], minlength=stored.size)
    assert counts.size == stored.size
    p = ref.chi_square_p_value(counts, np.ones(stored.size))
    assert p > 1e-3, p
    # power check: a visibly non-uniform alternative is rejected
    alt = np.linspace(1.0, 1.5, stored.size)
    assert ref.chi_square_p_value(counts, alt) < 1e-6


@pytest.mark.parametrize("count", [3, 2**16 + 1, 2**20 - 3, 3 * 2**29, 2**31 - 1])
def test_random_slots_is_the_exact_64_bit_multiply_shift(count):
    """Each draw is floor(u * count / 2**64) for the 64 random bits u of its two words
    (Python integers as the reference), so its bias is below count / 2**64."""
    from memjax.replay.ring import random_slots

    key = jax.random.key(7)
    got = np.asarray(jax.jit(random_slots, static_argnums=1)(key, 4096, jnp.int32(count)))
    with jax.threefry_partitionable(False):  # the words: JAX's non-partitionable stream
        words = np.asarray(jax.random.bits(key, (2 * 4096,), jnp.uint32)).astype(object)
    high, low = words[:4096], words[4096:]
    np.testing.assert_array_equal(got, ((high << 32 | low) * count) >> 64)


def test_random_slots_of_a_non_threefry_key_use_its_bits():
    """An rbg key's draws use jax.random.bits(key, (2, n)) as the two words."""
    from memjax.replay.ring import random_slots

    key, count = jax.random.key(5, impl="rbg"), 2**20 - 3
    got = np.asarray(jax.jit(random_slots, static_argnums=1)(key, 512, jnp.int32(count)))
    high, low = (x.astype(object) for x in np.asarray(jax.random.bits(key, (2, 512), jnp.uint32)))
    np.testing.assert_array_equal(got, ((high << 32 | low) * count) >> 64)


@pytest.mark.parametrize("seeds", [1, 8, 32])
def test_vmapped_draws_are_uniform_and_independent_per_seed(seeds):
    """Draws under vmap (the shapes whose program the draw was chosen for): each seed's
    2**16 draws from [0, 10000) in 100 equal bins pass a chi-square test, and two seeds'
    draws differ."""
    from memjax.replay.ring import random_slots

    keys = jax.random.split(jax.random.key(3), seeds)
    draw = jax.jit(jax.vmap(lambda k: random_slots(k, 2**16, jnp.int32(10_000))))
    slots = np.asarray(draw(keys))
    assert slots.min() >= 0 and slots.max() < 10_000
    for row in slots:
        counts = np.bincount(row // 100, minlength=100)
        assert ref.chi_square_p_value(counts, np.ones(100)) > 1e-4
    if seeds > 1:
        assert (slots[0] != slots[1]).mean() > 0.99


@pytest.mark.parametrize("count", [2**20, 3 * 2**29])
def test_uniform_draws_chi_square_at_large_counts(count):
    """2**22 uniform draws from a buffer of 2**20 items, and from [0, 3 * 2**29) (where a
    draw built from one 32-bit word would favour [0, 2**30) 3:2), in 1024 equal bins."""
    from memjax.replay.ring import random_slots

    key, draws = jax.random.key(11), 2**22
    if count == 2**20:  # four batches of 2**20 (a batch is at most the capacity)
        buf = mj.replay.uniform(count)
        state = buf.add(buf.init({"x": jnp.int8(0)}), {"x": jnp.zeros((count,), jnp.int8)})
        sample = jax.vmap(lambda k: buf.sample(state, k, count).indices % count)
        slots = jax.jit(sample)(jax.random.split(key, draws // count))
    else:
        slots = jax.jit(random_slots, static_argnums=1)(key, draws, jnp.int32(count))
    counts = np.bincount(np.asarray(slots, np.int64).ravel() * 1024 // count, minlength=1024)
    assert counts.size == 1024 and counts.sum() == draws
    assert ref.chi_square_p_value(counts, np.ones(1024)) > 1e-3


# --------------------------------------------------------------------------- vmap, scan, donation


def fill_per_seed(buf, seeds, n):
    """A vmapped state [seeds, ...] where seed s holds items s*1000 + (0..n-1)."""
    items = jax.vmap(lambda s: jax.tree.map(jnp.asarray, ref.make_items(np.arange(n))))(
        jnp.arange(seeds)
    )
    items = {"g": items["g"] + 1000 * jnp.arange(seeds)[:, None], "obs": items["obs"]}
    state = jax.vmap(lambda _: buf.init(EX))(jnp.arange(seeds))
    return jax.jit(jax.vmap(buf.add))(state, items), items


def test_vmap_over_seeds(ops7):
    buf, seeds = ops7.buf, 4
    state, items = fill_per_seed(buf, seeds, 6)
    np.testing.assert_array_equal(mj.replay.size(state), np.full(seeds, 6))
    keys = jax.random.split(jax.random.key(0), seeds)
    vsample = jax.jit(jax.vmap(lambda s, k: buf.sample(s, k, 7)))
    smp = vsample(state, keys)
    # each seed samples from its own items, and different keys give different samples
    g = np.asarray(smp.items["g"])
    for s in range(seeds):
        assert ((g[s] >= 1000 * s) & (g[s] < 1000 * s + 6)).all()
    assert len({tuple((g[s] - 1000 * s).tolist()) for s in range(seeds)}) == seeds
    # identical to running each seed on its own
    for s in range(seeds):
        one = jax.tree.map(lambda x: x[s], state)
        alone = ops7.sample(one, keys[s], 7)
        jax.tree.map(np.testing.assert_array_equal, jax.tree.map(lambda x: x[s], smp), alone)
        jax.tree.map(
            np.testing.assert_array_equal,
            one,
            ops7.add(buf.init(EX), jax.tree.map(lambda x: x[s], items)),
        )
    # the same key for every seed gives the same slots: the difference comes from the keys
    same = vsample(state, jnp.stack([keys[0]] * seeds))
    assert (np.asarray(same.indices) == np.asarray(same.indices)[0]).all()


def test_scan_matches_python_loop(ops7):
    buf, steps = ops7.buf, 6
    items = ref.make_items(np.arange(steps * 3))
    items = jax.tree.map(lambda x: x.reshape(steps, 3, *x.shape[1:]), items)
    keys = jax.random.split(jax.random.key(1), steps)

    def step(state, xs):
        batch, key = xs
        state = buf.add(state, batch)
        smp = buf.sample(state, key, 4)
        state = buf.update(state, smp.indices, jnp.ones(4))
        return state, (smp.items["g"], smp.indices, mj.replay.size(state))

    final, (g, ids, sizes) = jax.jit(lambda s: jax.lax.scan(step, s, (items, keys)))(buf.init(EX))
    state = buf.init(EX)
    for t in range(steps):
        state = ops7.add(state, jax.tree.map(lambda x: x[t], items))
        smp = ops7.sample(state, keys[t], 4)
        np.testing.assert_array_equal(g[t], smp.items["g"])
        np.testing.assert_array_equal(ids[t], smp.indices)
        assert int(sizes[t]) == min(7, 3 * (t + 1))
    jax.tree.map(np.testing.assert_array_equal, final, state)


def test_donation_updates_in_place(hlo_copies):
    capacity = 4099
    buf = mj.replay.uniform(capacity)
    ex = {"obs": np.zeros((7,), np.float32), "g": np.int32(0)}
    items = {"obs": jnp.ones((64, 7)), "g": jnp.arange(64, dtype=jnp.int32)}
    big = [("f32", (capacity, 7)), ("s32", (capacity,))]

    def step(state, items, key):
        state = buf.add(state, items)
        smp = buf.sample(state, key, 32)
        state = buf.update(state, smp.indices, smp.weights)
        return state, jax.tree.map(jnp.sum, smp.items)  # consume every sampled field

    add = jax.jit(buf.add, donate_argnums=0)
    train = jax.jit(step, donate_argnums=0)
    state = buf.init(ex)
    # no XLA copy of the storage in the compiled programs
    assert hlo_copies(add.lower(state, items).compile().as_text(), big) == []
    assert hlo_copies(train.lower(state, items, jax.random.key(0)).compile().as_text(), big) == []
    # (the check has teeth: without donation XLA copies the storage)
    assert hlo_copies(jax.jit(buf.add).lower(state, items).compile().as_text(), big) != []
    # and at run time the output aliases the donated input
    for fn, args in ((add, (items,)), (train, (items, jax.random.key(1)))):
        ptr = state.items["obs"].unsafe_buffer_pointer()
        new = fn(state, *args)
        new_state = new if fn is add else new[0]
        assert state.items["obs"].is_deleted()
        assert new_state.items["obs"].unsafe_buffer_pointer() == ptr
        state = new_state
    assert int(mj.replay.size(state)) == 128
