"""Eviction policies (memjax.replay.eviction) against plain-Python references.

Items carry their insertion number ``g``. The ordered policies (least recently sampled,
lowest priority, max times sampled) are checked slot by slot against ``RefPolicy`` below, a
one-item-at-a-time model of the definitions in the module docstring; reservoir sampling by a
chi-square test of its inclusion probabilities; every policy for batched adds == adds of one
item; FIFO for bit-identical results to a buffer built without ``eviction=``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import memjax as mj
import reference as ref
from memjax import sumtree
from memjax.replay import eviction as ev

EX = ref.example_item()
C = 6
LAPS = (2**31 - 1) // C
ORDERED = ("least_recently_sampled", "lowest_priority", "max_times_sampled")


def make_policy(name):
    return {
        "reservoir": ev.reservoir,
        "least_recently_sampled": ev.least_recently_sampled,
        "lowest_priority": ev.lowest_priority,
        "fifo": ev.fifo,
        "max_times_sampled": lambda: ev.max_times_sampled(2),
    }[name]()


class Ops:
    """A buffer with a policy and its jitted functions (alpha 1, exact priorities)."""

    def __init__(self, policy, prioritized, capacity=C):
        self.prioritized, self.capacity = prioritized, capacity
        if prioritized:
            self.buf = mj.replay.prioritized(
                capacity, alpha=1.0, min_priority=0.0, eviction=make_policy(policy)
            )
        else:
            self.buf = mj.replay.uniform(capacity, eviction=make_policy(policy))
        self.add = jax.jit(self.buf.add)
        self.sample = jax.jit(self.buf.sample, static_argnums=2)
        self.update = jax.jit(self.buf.update)

    def init(self):
        return self.buf.init(EX)


_OPS = {}


def ops_for(policy, prioritized):
    key = (policy, prioritized)
    if key not in _OPS:
        _OPS[key] = Ops(policy, prioritized)
    return _OPS[key]


class RefPolicy:
    """One item at a time: per slot the item ``g``, its write count (ids), its stamp (when
    added, or last sampled for LRU), times sampled, stored flag and stored priority."""

    def __init__(self, kind, capacity, prioritized, n=2):
        self.kind, self.c, self.prioritized, self.n = kind, capacity, prioritized, n
        self.g = [-1] * capacity
        self.version = [0] * capacity
        self.stamp = [(s - capacity) % 2**32 for s in range(capacity)]
        self.clock = 0
        self.times = [0] * capacity
        self.stored = [False] * capacity
        self.leaf = [0.0] * capacity
        self.max_p = 1.0

    def age(self, s):
        return (self.clock - self.stamp[s]) % 2**32

    def victim(self):
        slots = range(self.c)
        if self.kind == "least_recently_sampled":
            return min(slots, key=lambda s: (-self.age(s), s))
        if self.kind == "lowest_priority":
            return min(slots, key=lambda s: (self.leaf[s], -self.age(s)))
        return min(slots, key=lambda s: (self.stored[s], -self.age(s)))  # max_times_sampled

    def add(self, gs):
        for g in gs:
            s = self.victim()
            self.g[s], self.stamp[s], self.times[s], self.stored[s] = int(g), self.clock, 0, True
            self.version[s] = (self.version[s] + 1) % ((2**31 - 1) // self.c)
            self.leaf[s] = self.max_p if self.prioritized else 0.0
            self.clock += 1

    def slot_of(self, i):
        if i < 0:
            return None
        s = i % self.c
        ok = self.version[s] == i // self.c and self.stored[s]
        return s if ok else None

    def update(self, ids, priorities=None):
        slots = [self.slot_of(int(i)) for i in ids]
        if self.kind == "least_recently_sampled":
            for s in slots:
                if s is not None:
                    self.stamp[s] = self.clock
            self.clock += 1
        retired = set()
        if self.kind == "max_times_sampled":
            for s in slots:
                if s is not None:
                    self.times[s] += 1
            retired = {s for s in slots if s is not None and self.times[s] >= self.n}
            for s in retired:
                self.stored[s] = False
        if self.prioritized:
            for s, p in zip(slots, priorities):
                if s is not None:
                    self.leaf[s] = 0.0 if s in retired else float(p)
                    self.max_p = max(self.max_p, float(p))

    @property
    def size(self):
        return sum(self.stored)


def check(ops, state, r):
    assert int(mj.replay.size(state)) == r.size
    g = np.asarray(state.items["g"])
    for s in range(r.c):
        if r.stored[s]:
            assert g[s] == r.g[s], (s, g.tolist(), r.g)
    np.testing.assert_array_equal(np.asarray(state.version), r.version)
    if ops.prioritized:
        np.testing.assert_array_equal(
            np.asarray(sumtree.leaves(state.tree)), np.asarray(r.leaf, np.float32)
        )


def run_script(ops, r, rng, steps=30):
    """Random adds (1, 2 or capacity + 2 items) and updates (sampled ids, with stale ids,
    -1 and repeats); state and reference compared after every step."""
    state, next_g, stale = ops.init(), 0, []
    for step in range(steps):
        if step < 2 or rng.random() < 0.5 or int(mj.replay.size(state)) == 0:
            n = int(rng.choice([1, 2, ops.capacity + 2]))
            gs = np.arange(next_g, next_g + n)
            next_g += n
            state = ops.add(state, ref.make_items(gs))
            r.add(gs)
        else:
            smp = ops.sample(state, jax.random.key(step), 4)
            ids = np.asarray(smp.indices).copy()
            stale += ids.tolist()
            ids[0] = -1
            ids[1] = stale[int(rng.integers(len(stale)))]  # maybe stale
            prios = rng.choice([0.25, 0.5, 1.0, 2.0, 4.0], size=4).astype(np.float32)
            state = ops.update(state, ids, prios if ops.prioritized else None)
            r.update(ids, prios)
        check(ops, state, r)
    return state


@pytest.mark.parametrize("prioritized", [False, True])
@pytest.mark.parametrize("kind", ORDERED)
def test_ordered_policies_follow_the_reference(kind, prioritized):
    if kind == "lowest_priority" and not prioritized:
        pytest.skip("lowest_priority is for prioritized buffers")
    ops = ops_for(kind, prioritized)
    run_script(ops, RefPolicy(kind, C, prioritized), np.random.default_rng(7), steps=40)


def test_least_recently_sampled_evicts_in_stamp_order():
    """Hand-made: sample two items, add two: the two never-sampled oldest go."""
    ops = ops_for("least_recently_sampled", False)
    state = ops.add(ops.init(), ref.make_items(np.arange(C)))
    state = ops.update(state, jnp.array([C, 1 + C], jnp.int32), None)
    state = ops.add(state, ref.make_items(np.array([100, 101])))
    assert np.asarray(state.items["g"]).tolist() == [0, 1, 100, 101, 4, 5]


def test_lowest_priority_ties_go_to_the_oldest():
    ops = ops_for("lowest_priority", True)
    state = ops.add(ops.init(), ref.make_items(np.arange(C)))  # all at priority 1
    state = ops.update(state, jnp.array([1 + C, 4 + C], jnp.int32), jnp.array([0.5, 0.5]))
    state = ops.add(state, ref.make_items(np.array([100, 101, 102])))
    # 0.5 twice (slot 1 older than slot 4), then the oldest at priority 1 (slot 0)
    assert np.asarray(state.items["g"]).tolist() == [102, 100, 2, 3, 101, 5]


@pytest.mark.parametrize("prioritized", [False, True])
def test_max_times_sampled_items_leave_after_n_samples(prioritized):
    ops = ops_for("max_times_sampled", prioritized)
    state = ops.add(ops.init(), ref.make_items(np.arange(4)))
    ids = jnp.array([2 + C, 2 + C, 3 + C, -1], jnp.int32)
    prios = jnp.ones((4,)) if prioritized else None
    state = ops.update(state, ids, prios)  # item 2 sampled twice: gone; item 3 once
    assert int(mj.replay.size(state)) == 3
    # never drawn again
    for seed in range(20):
        g = np.asarray(ops.sample(state, jax.random.key(seed), 4).items["g"])
        assert 2 not in g.tolist()
    if prioritized:
        assert float(sumtree.leaves(state.tree)[2]) == 0.0
    # a second update for item 2 is ignored; item 3's second sample retires it
    state = ops.update(state, jnp.array([2 + C, 3 + C, -1, -1], jnp.int32), prios)
    assert int(mj.replay.size(state)) == 2
    # free slots: never-used ones first (4, 5), then the freed ones, oldest item first (2, 3)
    state = ops.add(state, ref.make_items(np.array([10, 11, 12, 13])))
    assert int(mj.replay.size(state)) == C
    assert np.asarray(state.items["g"]).tolist() == [0, 1, 12, 13, 10, 11]


@pytest.mark.parametrize("prioritized", [False, True])
@pytest.mark.parametrize("kind", ("reservoir",) + ORDERED)
def test_batched_add_equals_one_item_at_a_time(kind, prioritized):
    if kind == "lowest_priority" and not prioritized:
        pytest.skip("lowest_priority is for prioritized buffers")
    ops = ops_for(kind, prioritized)
    a = b = ops.init()
    rng = np.random.default_rng(3)
    next_g = 0
    for step, n in enumerate([2, C + 2, 1, C + 2, 2, C + 2]):  # C + 2: overwrites in a batch
        gs = np.arange(next_g, next_g + n)
        next_g += n
        a = ops.add(a, ref.make_items(gs))
        for g in gs:
            b = ops.add(b, ref.make_items(np.array([g])))
        chex_equal(a, b)
        if step % 2:  # sample and update between adds (same ids for both)
            smp = ops.sample(a, jax.random.key(step), 4)
            prios = jnp.asarray(rng.choice([0.5, 1.0, 3.0], size=4), jnp.float32)
            a = ops.update(a, smp.indices, prios if prioritized else None)
            b = ops.update(b, smp.indices, prios if prioritized else None)


def chex_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_reservoir_keeps_every_item_with_equal_probability():
    """After N adds each item is stored with probability C / N: chi-square over the N items
    for 4000 independent reservoirs (the policy key replaced per trial; the same items)."""
    cap, total, trials = 8, 40, 2500
    buf = mj.replay.uniform(cap, eviction=ev.reservoir())
    sizes = [3, 1, 8, 5, 2, 13, 8]  # batched adds of mixed sizes, sum 40
    assert sum(sizes) == total

    def run(key):
        state = buf.init(EX)
        state = state.replace(eviction=state.eviction.replace(key=jax.random.key_data(key)))
        start = 0
        for n in sizes:
            state = buf.add(state, ref.make_items(np.arange(start, start + n)))
            start += n
        return state.items["g"]

    kept = np.asarray(jax.jit(jax.vmap(run))(jax.random.split(jax.random.key(11), trials)))
    assert all(len(set(row)) == cap for row in kept.tolist())  # C distinct items each
    counts = np.bincount(kept.reshape(-1), minlength=total)
    p = ref.chi_square_p_value(counts, np.full(total, 1.0 / total))
    assert p > 1e-3, (p, counts)
    # the same statistic rejects FIFO's "the last C items" at once
    fifo_counts = np.zeros(total)
    fifo_counts[-cap:] = trials
    assert ref.chi_square_p_value(fifo_counts, np.full(total, 1.0 / total)) < 1e-12
    # item n's chance: every slot equally likely to be replaced, too
    late = np.asarray([[g >= cap for g in row] for row in kept.tolist()]).mean(0)
    np.testing.assert_allclose(late, 1 - cap / total, atol=0.03)


def test_reservoir_draws_depend_on_the_items():
    """Buffers with the same key but different items (vmapped seeds) draw independently."""
    buf = mj.replay.uniform(4, eviction=ev.reservoir(seed=3))

    def run(offset):
        state = buf.init(EX)
        items = ref.make_items(np.arange(64))
        items = {"g": items["g"], "obs": items["obs"] + offset}
        return buf.add(state, items).items["g"]

    kept = np.asarray(jax.jit(jax.vmap(run))(jnp.arange(16.0)))
    assert len({tuple(row) for row in kept.tolist()}) > 8


@pytest.mark.parametrize("prioritized", [False, True])
def test_fifo_is_bit_identical_to_no_policy(prioritized):
    make = mj.replay.prioritized if prioritized else mj.replay.uniform
    plain, fifo = make(C), make(C, eviction=ev.fifo())
    a, b = plain.init(EX), fifo.init(EX)
    assert type(a) is type(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)

    def run(buf, state):
        def body(s, k):
            g = jax.random.randint(k, (C + 2,), 0, 1000)
            s = buf.add(s, {"g": g, "obs": jnp.zeros((C + 2, 3)) + g[:, None]})
            smp = buf.sample(s, k, 5)
            return buf.update(s, smp.indices, smp.items["g"] % 7 + 0.5), smp

        return jax.lax.scan(body, state, jax.random.split(jax.random.key(0), 6))

    chex_equal(jax.jit(lambda s: run(plain, s))(a), jax.jit(lambda s: run(fifo, s))(b))


def test_policies_work_under_vmap_scan_and_donation():
    """A vmapped scan of add + sample + update, jitted with the state donated, equals the
    per-seed runs (the tournament tree under prioritized replay)."""
    for kind, make in (("lowest_priority", mj.replay.prioritized),):
        buf = make(16, eviction=make_policy(kind))

        def run(state, key):
            def body(s, k):
                k1, k2 = jax.random.split(k)
                obs = jax.random.normal(k1, (3, 3))
                g = jax.random.randint(k1, (3,), 0, 1000)
                s = buf.add(s, {"g": g, "obs": obs})
                smp = buf.sample(s, k2, 4)
                return buf.update(
                    s, smp.indices, jnp.abs(smp.items["obs"][:, 0]) + 0.1
                ), smp.indices

            return jax.lax.scan(body, state, jax.random.split(key, 8))

        keys = jax.random.split(jax.random.key(1), 2)
        states = jax.vmap(lambda _: buf.init(EX))(keys)
        batched = jax.jit(jax.vmap(run), donate_argnums=0)(states, keys)
        for i in range(2):
            single = jax.jit(run)(buf.init(EX), keys[i])
            chex_equal(jax.tree.map(lambda x: x[i], batched), single)


def test_empty_buffer_samples_nothing_under_jit():
    for kind in ("reservoir", "max_times_sampled"):
        for make in (mj.replay.uniform, mj.replay.prioritized):
            buf = make(4, eviction=make_policy(kind))
            smp = jax.jit(buf.sample, static_argnums=2)(buf.init(EX), jax.random.key(0), 3)
            assert np.asarray(smp.indices).tolist() == [-1, -1, -1]
            assert np.asarray(smp.weights).tolist() == [0.0, 0.0, 0.0]


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="needs layout=None.*one_copy"):
        mj.replay.uniform(8, layout=mj.replay.one_copy(2), eviction=ev.reservoir())
    with pytest.raises(ValueError, match="needs layout=None.*sequence"):
        mj.replay.prioritized(
            8, layout=mj.replay.sequence(2, 2), eviction=ev.least_recently_sampled()
        )
    with pytest.raises(ValueError, match="lowest_priority.*prioritized"):
        mj.replay.uniform(8, eviction=ev.lowest_priority())
    with pytest.raises(TypeError, match="call it"):
        mj.replay.uniform(8, eviction=ev.reservoir)
    with pytest.raises(ValueError, match="n must be >= 1"):
        ev.max_times_sampled(0)
    with pytest.raises(TypeError, match="seed"):
        ev.reservoir(seed=1.5)
    # FIFO with a layout is today's buffer
    mj.replay.uniform(8, layout=mj.replay.one_copy(2), eviction=ev.fifo())


def test_mintree_takes_the_smallest_keys_in_order():
    """build + take == a sort by (p ascending, q descending); set_p re-keys; vmapped trees."""
    from memjax.replay import mintree

    rng = np.random.default_rng(5)

    def smallest(p, q, k):  # new keys larger than all: take returns the k smallest in order
        tree = mintree.build(p, q)
        return mintree.take(
            tree, jnp.full((k,), 2**30, jnp.int32), jnp.arange(k, dtype=jnp.uint32)
        )[1]

    for n, k in ((1, 1), (64, 10), (1000, 17)):
        p = rng.integers(0, 4, n).astype(np.int32)
        q = rng.permutation(n).astype(np.uint32)
        got = np.asarray(jax.jit(smallest, static_argnums=2)(p, q, k))
        np.testing.assert_array_equal(got, np.lexsort((-q.astype(np.int64), p))[:k])
    # re-keying (last duplicate wins, out of range skipped), on 3 vmapped trees
    p = rng.integers(0, 50, (3, 300)).astype(np.int32)
    q = np.stack([rng.permutation(300) for _ in range(3)]).astype(np.uint32)
    slots = rng.integers(-5, 305, (3, 40)).astype(np.int32)
    values = rng.integers(0, 50, (3, 40)).astype(np.int32)

    def rekey(p, q, slots, values):
        tree = mintree.set_p(mintree.build(p, q), slots, values)
        return mintree.take(
            tree, jnp.full((5,), 2**30, jnp.int32), jnp.arange(5, dtype=jnp.uint32)
        )[1]

    got = np.asarray(jax.jit(jax.vmap(rekey))(p, q, slots, values))
    # the vectorised re-keying (other platforms) builds the same tree as the CPU loop
    tree = mintree.build(p[0], q[0])
    loop = jax.jit(mintree._set_loop(300))(tree.keys, slots[0], values[0])
    vectorised = jax.jit(lambda *a: mintree._set_vectorised(300, *a))(
        tree.keys, slots[0], values[0]
    )
    np.testing.assert_array_equal(np.asarray(loop), np.asarray(vectorised))
    for t in range(3):
        want_p = p[t].copy()
        for s, v in zip(slots[t], values[t]):
            if 0 <= s < 300:
                want_p[s] = v
        np.testing.assert_array_equal(got[t], np.lexsort((-q[t].astype(np.int64), want_p))[:5])


def test_memory_report_counts_the_policy_state():
    plain = mj.replay.uniform(C).memory(jax.eval_shape(mj.replay.uniform(C).init, EX))
    buf = mj.replay.uniform(C, eviction=ev.least_recently_sampled())
    report = buf.memory(jax.eval_shape(buf.init, EX))
    state = jax.eval_shape(buf.init, EX)
    tree_bytes = state.eviction.tree.keys.size * 4  # per node: key (p, q) and winner, int32
    # + version (int32) per slot, the tournament tree and the clock
    assert report.overhead_bytes == plain.overhead_bytes + 4 * C + tree_bytes + 4


def test_mintree_set_p_leaves_the_top_to_refresh():
    """set_p recomputes nodes up to top_level only; refresh (take's first step) makes the tree
    bit-identical to a fresh build; both set_p paths agree; vmapped trees and trees stacked
    on a leading axis."""
    from memjax.replay import mintree

    capacity = 40_000
    offsets, _ = mintree.geometry(capacity, mintree.K)
    top = mintree.top_level(capacity)
    assert 0 < top < len(offsets) - 2  # the walk stops part-way up
    rng = np.random.default_rng(11)
    p = rng.integers(0, 30, (2, capacity)).astype(np.int32)
    q = np.stack([rng.permutation(capacity) for _ in range(2)]).astype(np.uint32)
    slots = rng.integers(-5, capacity + 5, (2, 300)).astype(np.int32)
    values = rng.integers(0, 30, (2, 300)).astype(np.int32)

    def run(p, q, slots, values):
        stale = mintree.set_p(mintree.build(p, q), slots, values)
        return stale.keys, mintree.refresh(stale).keys

    stale, fresh = jax.jit(jax.vmap(run))(p, q, slots, values)
    stacked = mintree.refresh(mintree.MinTree(keys=stale, capacity=capacity))  # a leading axis
    np.testing.assert_array_equal(np.asarray(stacked.keys), np.asarray(fresh))
    for t in range(2):
        want_p = p[t].copy()
        for s, v in zip(slots[t], values[t]):
            if 0 <= s < capacity:
                want_p[s] = v
        want = np.asarray(mintree.build(want_p, q[t]).keys)
        np.testing.assert_array_equal(
            np.asarray(stale[t])[3 * offsets[top] :], want[3 * offsets[top] :]
        )
        np.testing.assert_array_equal(np.asarray(fresh[t]), want)
        again = mintree.refresh(mintree.MinTree(keys=jnp.asarray(want), capacity=capacity))
        np.testing.assert_array_equal(np.asarray(again.keys), want)
    tree = mintree.build(p[0], q[0])
    loop = jax.jit(mintree._set_loop(capacity))(tree.keys, slots[0], values[0])
    vectorised = jax.jit(lambda *a: mintree._set_vectorised(capacity, *a))(
        tree.keys, slots[0], values[0]
    )
    np.testing.assert_array_equal(np.asarray(loop), np.asarray(vectorised))
    np.testing.assert_array_equal(np.asarray(loop), np.asarray(stale[0]))
