"""mj.replay.prioritized against the NumPy proportional-PER reference (tests/reference.py).

Items carry their insertion number ``g``; ids passed to ``update`` always come from
``sample`` (the public contract), and the reference decides staleness from ``g``.
Stored priorities are read through the public ``state.tree`` (a SumTree of p ** alpha).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import memjax as mj
import reference as ref
from memjax import sumtree

EX = ref.example_item()
ALPHA = 0.6
FLOOR = 1e-6  # the default min_priority


class Ops:
    """A prioritized buffer and its jitted functions (compiled once per shape)."""

    def __init__(self, capacity, alpha=ALPHA, min_priority=FLOOR, stratified=True):
        self.capacity, self.alpha, self.min_priority = capacity, alpha, min_priority
        self.buf = mj.replay.prioritized(
            capacity, alpha=alpha, min_priority=min_priority, stratified=stratified
        )
        self.add = jax.jit(self.buf.add)
        # beta is a traced argument: one compile for every beta
        self.sample = jax.jit(
            lambda s, k, beta, n: self.buf.sample(s, k, n, beta=beta), static_argnums=3
        )
        self.update = jax.jit(self.buf.update)
        self.can_sample = jax.jit(self.buf.can_sample, static_argnums=1)

    def ref(self):
        return ref.RefPER(self.capacity, self.alpha, self.min_priority)

    def stored(self, state):
        return np.asarray(sumtree.leaves(state.tree), np.float64)


@pytest.fixture(scope="module")
def ops8():
    return Ops(8)


def check_state(ops, state, r: ref.RefPER):
    assert int(mj.replay.size(state)) == r.size
    valid = r.slot_g >= 0
    np.testing.assert_array_equal(np.asarray(state.items["g"])[valid], r.slot_g[valid])
    np.testing.assert_allclose(ops.stored(state), r.stored, rtol=2e-6, atol=0)
    np.testing.assert_allclose(float(sumtree.total(state.tree)), r.stored.sum(), rtol=1e-5)
    for k in (1, ops.capacity):
        assert bool(ops.can_sample(state, k)) == (r.size >= k and r.stored.sum() > 0)


def check_sample(ops, smp, r: ref.RefPER, beta):
    g = np.asarray(smp.items["g"])
    assert all(r.is_stored(x) for x in g.tolist())
    np.testing.assert_array_equal(np.asarray(smp.items["obs"]), ref.make_items(g)["obs"])
    np.testing.assert_array_equal(np.asarray(smp.indices) % ops.capacity, g % ops.capacity)
    assert (r.stored[g % ops.capacity] > 0).all()
    np.testing.assert_allclose(smp.probabilities, r.probability_of(g), rtol=1e-5)
    np.testing.assert_allclose(smp.weights, r.weights(g, beta), rtol=2e-5)
    assert float(np.max(smp.weights)) == 1.0


def add_range(ops, state, r, n):
    items = ref.make_items(np.arange(r.added, r.added + n))
    r.add(items)
    return ops.add(state, items)


def ids_of_all_stored(ops, state, r):
    """{g: id} for every stored item, collected from samples (ids only come from sample)."""
    found = {}
    for seed in range(50):
        smp = ops.sample(state, jax.random.key(seed), 1.0, ops.capacity)
        found.update(zip(np.asarray(smp.items["g"]).tolist(), np.asarray(smp.indices).tolist()))
        if len(found) == r.size:
            return found
    raise AssertionError(f"could not sample every stored item: {sorted(found)}")


# --------------------------------------------------------------------------- priorities


def test_new_items_get_running_max_priority(ops8):
    state, r = ops8.buf.init(EX), ops8.ref()
    state = add_range(ops8, state, r, 3)
    np.testing.assert_allclose(ops8.stored(state)[:3], 1.0)  # max priority starts at 1
    ids = ids_of_all_stored(ops8, state, r)
    state = ops8.update(state, jnp.array([ids[0], ids[1]]), jnp.array([5.0, 0.5]))
    r.update([0, 1], [5.0, 0.5])
    check_state(ops8, state, r)
    state = add_range(ops8, state, r, 2)  # new items: 5 ** alpha
    np.testing.assert_allclose(ops8.stored(state)[3:5], 5.0**ALPHA, rtol=1e-6)
    ids = ids_of_all_stored(ops8, state, r)
    # lower priorities do not lower the running max
    state = ops8.update(state, jnp.array([ids[g] for g in range(5)]), jnp.full((5,), 0.1))
    r.update(range(5), [0.1] * 5)
    state = add_range(ops8, state, r, 1)
    check_state(ops8, state, r)
    np.testing.assert_allclose(ops8.stored(state)[5], 5.0**ALPHA, rtol=1e-6)
    # a larger one raises it
    state = ops8.update(state, jnp.array([ids[2]]), jnp.array([9.0]))
    r.update([2], [9.0])
    state = add_range(ops8, state, r, 2)
    check_state(ops8, state, r)
    np.testing.assert_allclose(ops8.stored(state)[6:8], 9.0**ALPHA, rtol=1e-6)


def test_stored_priority_is_floored_power(ops8):
    state, r = ops8.buf.init(EX), ops8.ref()
    state = add_range(ops8, state, r, 8)
    ids = ids_of_all_stored(ops8, state, r)
    p = np.array([0.0, 1e-9, FLOOR, 2e-6, 0.3, 1.0, 7.5, 1e4], np.float32)
    state = ops8.update(state, jnp.array([ids[g] for g in range(8)]), p)
    r.update(range(8), p)
    check_state(ops8, state, r)
    expected = np.maximum(p.astype(np.float64), FLOOR) ** ALPHA
    np.testing.assert_allclose(ops8.stored(state), expected, rtol=2e-6)


def test_alpha_zero_is_uniform():
    ops = Ops(8, alpha=0.0, min_priority=0.0)
    state, r = ops.buf.init(EX), ops.ref()
    state = add_range(ops, state, r, 6)
    ids = ids_of_all_stored(ops, state, r)
    state = ops.update(
        state, jnp.array([ids[g] for g in range(6)]), jnp.array([0.0, 1e-3, 1.0, 2.0, 50.0, 1e6])
    )
    smp = ops.sample(state, jax.random.key(0), 0.7, 8)
    np.testing.assert_allclose(smp.probabilities, np.full(8, 1 / 6), rtol=1e-6)
    np.testing.assert_allclose(smp.weights, np.ones(8), rtol=1e-6)
    np.testing.assert_allclose(ops.stored(state)[:6], 1.0)


# --------------------------------------------------------------------------- weights


def test_importance_weights_formula_with_traced_beta(ops8):
    state, r = ops8.buf.init(EX), ops8.ref()
    state = add_range(ops8, state, r, 6)  # not full: N = 6
    ids = ids_of_all_stored(ops8, state, r)
    p = np.array([0.1, 0.5, 1.0, 2.0, 4.0, 8.0], np.float32)
    state = ops8.update(state, jnp.array([ids[g] for g in range(6)]), p)
    r.update(range(6), p)
    for i, beta in enumerate([0.0, 0.4, 0.75, 1.0]):
        smp = ops8.sample(state, jax.random.key(i), jnp.float32(beta), 8)
        check_sample(ops8, smp, r, beta)
        if beta == 0.0:
            np.testing.assert_array_equal(smp.weights, np.ones(8, np.float32))
            compiled = ops8.sample._cache_size()
    assert ops8.sample._cache_size() == compiled  # beta is traced: no re-compilation


# --------------------------------------------------------------------------- sampling distribution


@pytest.fixture(scope="module", params=[True, False], ids=["stratified", "plain"])
def draws64(request):
    """10^5 draws (2000 keys x 50) from a capacity-64 buffer with min_priority 0."""
    ops = Ops(64, alpha=0.7, min_priority=0.0, stratified=request.param)
    draw = jax.jit(jax.vmap(lambda s, k: ops.buf.sample(s, k, 50).items["g"], in_axes=(None, 0)))
    return ops, lambda state, seed: np.asarray(
        draw(state, jax.random.split(jax.random.key(seed), 2000))
    ).reshape(-1)


def test_sampling_chi_square_and_zero_priority_never_sampled(draws64):
    ops, draw = draws64
    state, r = ops.buf.init(EX), ops.ref()
    state = add_range(ops, state, r, 64)
    ids = ids_of_all_stored(ops, state, r)
    rng = np.random.default_rng(0)
    p = rng.lognormal(0.0, 1.0, 64).astype(np.float32)
    zero = rng.random(64) < 0.25
    p[zero] = 0.0
    state = ops.buf.update(state, jnp.array([ids[g] for g in range(64)]), jnp.asarray(p))
    r.update(range(64), p)
    check_state(ops, state, r)
    g = draw(state, 1)
    assert g.size == 100_000
    counts = np.bincount(g, minlength=64)
    assert counts[zero].sum() == 0, np.flatnonzero(counts * zero)
    probs = r.probabilities()  # p ** alpha / sum
    np.testing.assert_allclose(
        probs, p.astype(np.float64) ** 0.7 / np.sum(p.astype(np.float64) ** 0.7)
    )
    assert ref.chi_square_p_value(counts, probs) > 1e-3
    # power check: without the alpha exponent the frequencies do not fit
    assert ref.chi_square_p_value(counts, p.astype(np.float64)) < 1e-6


# --------------------------------------------------------------------------- stale updates


def test_stale_update_is_ignored(ops8):
    state, r = ops8.buf.init(EX), ops8.ref()
    state = add_range(ops8, state, r, 8)  # full: g 0..7 in slots 0..7
    old = ids_of_all_stored(ops8, state, r)
    state = add_range(ops8, state, r, 3)  # g 8..10 overwrite slots 0..2
    state = ops8.update(state, jnp.array([old[g] for g in range(8)]), jnp.full((8,), 50.0))
    r.update(range(8), [50.0] * 8)
    check_state(ops8, state, r)
    stored = ops8.stored(state)
    np.testing.assert_allclose(stored[:3], 1.0)  # the new items keep the max priority they got
    np.testing.assert_allclose(stored[3:], 50.0**ALPHA, rtol=1e-6)  # still stored: applied
    # exactly one lap later every slot holds a new item in the same slot: all ignored
    fresh = ids_of_all_stored(ops8, state, r)
    state = add_range(ops8, state, r, 8)
    state = ops8.update(state, jnp.array(list(fresh.values())), jnp.full((8,), 3.0))
    state = ops8.update(state, jnp.array([old[g] for g in range(8)]), jnp.full((8,), 3.0))
    r.update(list(fresh), [3.0] * 8)
    check_state(ops8, state, r)
    np.testing.assert_allclose(ops8.stored(state), 50.0**ALPHA, rtol=1e-6)
    # several laps in one add (batch 20 > capacity 8): still ignored
    fresh = ids_of_all_stored(ops8, state, r)
    state = add_range(ops8, state, r, 20)
    state = ops8.update(state, jnp.array(list(fresh.values())), jnp.full((8,), 0.01))
    r.update(list(fresh), [0.01] * 8)
    check_state(ops8, state, r)


def test_update_of_live_id_after_other_adds_is_applied(ops8):
    state, r = ops8.buf.init(EX), ops8.ref()
    state = add_range(ops8, state, r, 3)
    ids = ids_of_all_stored(ops8, state, r)
    state = add_range(ops8, state, r, 4)  # fills slots 3..6, nothing overwritten
    state = ops8.update(state, jnp.array([ids[0], ids[2]]), jnp.array([0.25, 4.0]))
    r.update([0, 2], [0.25, 4.0])
    check_state(ops8, state, r)
    np.testing.assert_allclose(ops8.stored(state)[[0, 2]], [0.25**ALPHA, 4.0**ALPHA], rtol=1e-6)


def test_out_of_range_and_negative_ids_are_ignored(ops8):
    state, r = ops8.buf.init(EX), ops8.ref()
    state = add_range(ops8, state, r, 4)
    state = ops8.update(state, jnp.array([-1, -8, 5, 7, 2**31 - 1, -(2**31)]), jnp.full((6,), 9.0))
    check_state(ops8, state, r)  # slots 4..7 were never written: ids there are not live


# --------------------------------------------------------------------------- bad priorities


def test_bad_priorities_eager_raise(ops8):
    state, r = ops8.buf.init(EX), ops8.ref()
    state = add_range(ops8, state, r, 4)
    ids = jnp.array(list(ids_of_all_stored(ops8, state, r).values()))
    for bad in (np.nan, -1.0, np.inf, -np.inf):
        p = jnp.array([1.0, bad, 2.0, 3.0])
        with pytest.raises(ValueError, match="priorit"):
            ops8.buf.update(state, ids, p)


def test_bad_priorities_in_jit_nan_ignored_negative_floored(ops8):
    state, r = ops8.buf.init(EX), ops8.ref()
    state = add_range(ops8, state, r, 4)
    ids = ids_of_all_stored(ops8, state, r)
    state = ops8.update(
        state, jnp.array([ids[g] for g in range(4)]), jnp.array([2.0, 3.0, 0.5, 1.5])
    )
    r.update(range(4), [2.0, 3.0, 0.5, 1.5])
    p = jnp.array([np.nan, -1.0, np.inf, 2.5], jnp.float32)
    state = ops8.update(state, jnp.array([ids[g] for g in range(4)]), p)
    r.update(range(4), np.asarray(p))
    check_state(ops8, state, r)
    stored = ops8.stored(state)
    assert stored[0] == pytest.approx(2.0**ALPHA, rel=1e-6)  # NaN: kept
    assert stored[1] == pytest.approx(FLOOR**ALPHA, rel=1e-5)  # negative: floored
    assert stored[2] == pytest.approx(0.5**ALPHA, rel=1e-6)  # inf: kept
    assert np.isfinite(float(sumtree.total(state.tree)))
    # the running max is not poisoned by NaN/inf: the next new item gets 3 ** alpha
    state = add_range(ops8, state, r, 1)
    assert ops8.stored(state)[4] == pytest.approx(3.0**ALPHA, rel=1e-6)
    check_state(ops8, state, r)


# --------------------------------------------------------------------------- random op sequences


op_strategy = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.sampled_from((1, 3, 8, 11))),
        st.tuples(st.just("sample"), st.integers(0, 2**31 - 1)),
        # update the k-th most recent sample (possibly stale) with drawn priorities
        st.tuples(
            st.just("update"),
            st.tuples(
                st.integers(0, 3),
                st.lists(
                    st.sampled_from([0.0, 1e-8, 0.05, 0.7, 1.0, 3.0, 40.0]), min_size=8, max_size=8
                ),
            ),
        ),
    ),
    min_size=1,
    max_size=20,
)


@settings(max_examples=40)
@given(op_list=op_strategy)
def test_random_ops_vs_per_reference(ops8, op_list):
    state, r = ops8.buf.init(EX), ops8.ref()
    samples = []  # (ids, g) of past samples, newest last
    for op, arg in op_list:
        if op == "add":
            state = add_range(ops8, state, r, arg)
        elif op == "sample" and r.size > 0:
            beta = (arg % 5) / 4
            smp = ops8.sample(state, jax.random.key(arg), beta, 8)
            check_sample(ops8, smp, r, beta)
            samples.append((np.asarray(smp.indices), np.asarray(smp.items["g"])))
        elif op == "update" and samples:
            k, prios = arg
            ids, g = samples[-1 - min(k, len(samples) - 1)]
            state = ops8.update(state, jnp.asarray(ids), jnp.asarray(prios, jnp.float32))
            r.update(g, np.asarray(prios, np.float32))
        check_state(ops8, state, r)


# --------------------------------------------------------------------------- vmap, scan, donation


def same(a, b):
    """Exact for integers, to float32 round-off for floats."""
    a, b = np.asarray(a), np.asarray(b)
    if np.issubdtype(a.dtype, np.floating):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=0)
    else:
        np.testing.assert_array_equal(a, b)


def test_vmap_over_seeds(ops8):
    buf, seeds = ops8.buf, 4
    state, r = buf.init(EX), ops8.ref()
    state = add_range(ops8, state, r, 8)
    ids = ids_of_all_stored(ops8, state, r)
    state = ops8.update(
        state,
        jnp.array([ids[g] for g in range(8)]),
        jnp.array([0.1, 0.2, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0]),
    )
    states = jax.tree.map(lambda x: jnp.stack([x] * seeds), state)
    keys = jax.random.split(jax.random.key(0), seeds)

    def sample_update(s, k, beta):
        smp = buf.sample(s, k, 8, beta=beta)
        return buf.update(s, smp.indices, smp.weights + smp.items["obs"][:, 0]), smp

    vstep = jax.jit(jax.vmap(sample_update, in_axes=(0, 0, None)))
    new, smp = vstep(states, keys, 0.5)
    g = np.asarray(smp.items["g"])
    assert len({tuple(x.tolist()) for x in g}) == seeds  # different keys, different samples
    leaves = np.asarray(sumtree.leaves(new.tree))
    assert len({tuple(x.tolist()) for x in leaves}) == seeds  # and different updates
    # identical to running each seed alone: the same items, ids and state; float results
    # up to an ulp (the vmapped program is fused differently)
    one_step = jax.jit(sample_update)
    for s in range(seeds):
        alone_state, alone = one_step(state, keys[s], 0.5)
        jax.tree.map(same, jax.tree.map(lambda x: x[s], smp), alone)
        jax.tree.map(same, jax.tree.map(lambda x: x[s], new), alone_state)


def test_scan_matches_python_loop(ops8):
    buf, steps = ops8.buf, 6
    items = ref.make_items(np.arange(steps * 3))
    items = jax.tree.map(lambda x: x.reshape(steps, 3, *x.shape[1:]), items)
    keys = jax.random.split(jax.random.key(2), steps)

    def step(state, xs):
        batch, key = xs
        state = buf.add(state, batch)
        smp = buf.sample(state, key, 4, beta=0.6)
        state = buf.update(state, smp.indices, smp.items["obs"][:, 1] * 0.1)
        return state, (smp.items["g"], smp.indices, smp.weights)

    final, outs = jax.jit(lambda s: jax.lax.scan(step, s, (items, keys)))(buf.init(EX))
    loop_step = jax.jit(step)
    state = buf.init(EX)
    for t in range(steps):
        state, out = loop_step(state, (jax.tree.map(lambda x: x[t], items), keys[t]))
        for a, b in zip(out, outs):
            np.testing.assert_array_equal(a, b[t])
    jax.tree.map(np.testing.assert_array_equal, final, state)
    assert int(mj.replay.size(final)) == 8


DONATION_CAPACITY = 4099


@pytest.fixture(scope="module")
def donation_setup():
    buf = mj.replay.prioritized(DONATION_CAPACITY, alpha=0.6)
    ex = {"obs": np.zeros((7,), np.float32), "g": np.int32(0)}
    items = {"obs": jnp.ones((64, 7)), "g": jnp.arange(64, dtype=jnp.int32)}
    nodes_shape = jax.eval_shape(buf.init, ex).tree.nodes.shape
    big = [("f32", (DONATION_CAPACITY, 7)), ("s32", (DONATION_CAPACITY,)), ("f32", nodes_shape)]
    return buf, ex, items, big


def test_donation_updates_in_place(donation_setup, hlo_copies):
    buf, ex, items, big = donation_setup
    state = buf.init(ex)

    def sample_update(state, key, beta):
        smp = buf.sample(state, key, 256, beta=beta)
        prio = jnp.abs(smp.items["obs"].sum(-1)) * smp.weights + smp.items["g"] * 1e-3
        return buf.update(state, smp.indices, prio), jnp.sum(smp.indices)

    add = jax.jit(buf.add, donate_argnums=0)
    step = jax.jit(sample_update, donate_argnums=0)
    assert hlo_copies(add.lower(state, items).compile().as_text(), big) == []
    assert hlo_copies(step.lower(state, jax.random.key(0), 0.4).compile().as_text(), big) == []
    # (the check has teeth: without donation XLA copies the storage and the tree)
    assert len(hlo_copies(jax.jit(buf.add).lower(state, items).compile().as_text(), big)) >= 3
    for i in range(3):
        ptrs = (
            state.items["obs"].unsafe_buffer_pointer(),
            state.tree.nodes.unsafe_buffer_pointer(),
        )
        state = add(state, items)
        state, _ = step(state, jax.random.key(i), 0.4)
        assert (
            state.items["obs"].unsafe_buffer_pointer(),
            state.tree.nodes.unsafe_buffer_pointer(),
        ) == ptrs
    old = state
    state, _ = step(old, jax.random.key(9), 0.4)
    assert old.tree.nodes.is_deleted() and old.items["obs"].is_deleted()
    assert int(mj.replay.size(state)) == 192
    assert np.isfinite(float(sumtree.total(state.tree)))


def test_donated_learner_step_does_not_copy_the_tree(donation_setup, hlo_copies):
    """The usual DQN step: priorities from the TD error of the sampled items, importance
    weights (and probabilities) only in the loss. Nothing orders those reads of the tree
    before the write of the new priorities, and XLA must still not copy the tree (an
    O(capacity) copy per step), alone or inside a scan."""
    buf, ex, items, big = donation_setup
    state = buf.add(buf.init(ex), items)

    def learner_step(state, key):
        smp = buf.sample(state, key, 256, beta=0.4)
        td = smp.items["obs"].sum(-1) - smp.items["g"] * 1e-3
        loss = jnp.mean(smp.weights * td**2)
        return buf.update(state, smp.indices, jnp.abs(td) + 1e-3), loss

    def scanned(state, key):
        def body(carry, _):
            state, key = carry
            key, sub = jax.random.split(key)
            state, loss = learner_step(state, sub)
            return (state, key), loss

        (state, _), losses = jax.lax.scan(body, (state, key), None, length=4)
        return state, losses

    step = jax.jit(learner_step, donate_argnums=0)
    loop = jax.jit(scanned, donate_argnums=0)
    assert hlo_copies(step.lower(state, jax.random.key(0)).compile().as_text(), big) == []
    assert hlo_copies(loop.lower(state, jax.random.key(0)).compile().as_text(), big) == []
    ptr = state.tree.nodes.unsafe_buffer_pointer()
    state, _ = step(state, jax.random.key(1))
    state, _ = loop(state, jax.random.key(2))
    assert state.tree.nodes.unsafe_buffer_pointer() == ptr
