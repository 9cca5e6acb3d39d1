"""memjax.sumtree against the float64 NumPy reference (tests/reference.py).

Only the public API is used: init / set / get / leaves / total / find / sample /
sample_with_probs / build and the documented ``SumTree.nodes`` (for bit-identity with
``build``). Each (capacity, branching) is compiled once, into one program that applies a
few batched ``set``s and then runs every query; tests vary only the data.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference as ref
from memjax import sumtree

NB, B = 4, 16  # batches of `set` per probe call, entries per batch
T = 256  # absolute find targets per probe call
N_SAMPLE = 64
# find targets given as multiples of the total: 0, inside, exactly at, just past, far past, negative
REL = np.array([0.0, 0.5, 1.0, 1.0 + 2**-22, 1.5, 4.0, -1e-7, -0.25, -3.0], np.float32)

GRID = [
    (1, 2),
    (1, 16),
    (2, 2),
    (2, 8),
    (3, 2),
    (3, 4),
    (7, 2),
    (7, 8),
    (8, 2),
    (8, 8),
    (9, 4),
    (9, 8),
    (9, 16),
    (64, 4),
    (100, 4),
    (100, 8),
    (1000, 2),
    (1000, 16),
]


@functools.cache
def probe_fn(capacity, branching):
    """jit: NB batched sets, then total/leaves/get/find/build/sample of the result."""

    @jax.jit
    def probe(tree, idx, vals, targets):
        tree, _ = jax.lax.scan(
            lambda t, iv: (sumtree.set(t, iv[0], iv[1]), None), tree, (idx, vals)
        )
        tot = sumtree.total(tree)
        lv = sumtree.leaves(tree)
        found = sumtree.find(tree, jnp.concatenate([targets, jnp.asarray(REL) * tot]))
        return dict(
            tree=tree,
            total=tot,
            leaves=lv,
            get=sumtree.get(tree, jnp.arange(-3, capacity + 3)),
            find=found[:T],
            find_rel=found[T:],
            rebuilt=sumtree.build(lv, branching).nodes,
        )

    return probe


class Driver:
    """Feeds the same batches to the jitted tree and to the reference."""

    def __init__(self, capacity, branching, seed=0):
        self.capacity, self.branching = capacity, branching
        self.tree = sumtree.init(capacity, branching)
        self.ref = ref.RefSumTree(capacity)
        self.rng = np.random.default_rng(seed)
        self.out = None

    def call(self, idx, vals, targets=None):
        """One probe call with idx/vals [NB, B] (padded with -1), targets [T] (default: zeros)."""
        idx = np.asarray(idx, np.int32).reshape(NB, B)
        vals = np.asarray(vals, np.float32).reshape(NB, B)
        for b in range(NB):
            self.ref.set(idx[b], vals[b].astype(np.float64))
        if targets is None:
            targets = np.zeros((T,), np.float32)
        self.out = jax.device_get(
            probe_fn(self.capacity, self.branching)(
                self.tree, idx, vals, np.asarray(targets, np.float32)
            )
        )
        self.tree = self.out["tree"]
        return self.out

    def random_batches(self, zero_frac=0.4, lo=0.5, hi=2.0, out_of_range=0.1):
        c = self.capacity
        idx = self.rng.integers(0, c, (NB, B))
        # duplicates: a third of each batch repeats an earlier index of the same batch
        dup = self.rng.random((NB, B)) < 0.33
        idx = np.where(dup, idx[:, :1], idx)
        oor = self.rng.random((NB, B)) < out_of_range
        idx = np.where(oor, self.rng.choice([-7, -1, c, c + 5, 2**30]), idx)
        vals = np.where(
            self.rng.random((NB, B)) < zero_frac, 0.0, self.rng.uniform(lo, hi, (NB, B))
        )
        return idx.astype(np.int32), vals.astype(np.float32)

    def ensure_positive(self, idx, vals):
        """Make the last entry of the last batch a positive value at a random leaf."""
        idx, vals = idx.copy(), vals.copy()
        idx[-1, -1] = self.rng.integers(0, self.capacity)
        vals[-1, -1] = 1.25
        return idx, vals

    def targets_for_next(self, idx, vals):
        """Find targets for the state after applying (idx, vals): (targets, expected or -1).

        Half are midpoints of positive leaves' intervals (expected leaf known exactly),
        half uniform in [0, total) (checked against the interval with a tolerance).
        """
        nxt = ref.RefSumTree(self.capacity)
        nxt.leaves = self.ref.leaves.copy()
        for b in range(NB):
            nxt.set(idx[b], vals[b].astype(np.float64))
        positive = np.flatnonzero(nxt.leaves > 0)
        leaf = self.rng.choice(positive, T // 2)
        cum = nxt.cumsum()
        lo = np.where(leaf > 0, cum[np.maximum(leaf - 1, 0)], 0.0)
        mid = lo + nxt.leaves[leaf] * self.rng.uniform(0.25, 0.75, T // 2)
        unif = self.rng.uniform(0, 1, T - T // 2) * nxt.total()
        targets = np.concatenate([mid, unif]).astype(np.float32)
        expected = np.concatenate([leaf, np.full(T - T // 2, -1)])
        return targets, expected


def check_against_reference(d: Driver, targets=None, expected=None):
    out, r, c = d.out, d.ref, d.capacity
    # leaves are stored exactly, and get() agrees (0 outside [0, capacity))
    np.testing.assert_array_equal(out["leaves"], r.leaves.astype(np.float32))
    np.testing.assert_array_equal(out["get"], r.get(np.arange(-3, c + 3)).astype(np.float32))
    # total within float32 round-off of the float64 sum
    np.testing.assert_allclose(out["total"], r.total(), rtol=1e-6, atol=0)
    # drift-free: the incrementally updated tree is bit-identical to one built from its leaves
    np.testing.assert_array_equal(
        np.asarray(out["tree"].nodes).view(np.uint32), np.asarray(out["rebuilt"]).view(np.uint32)
    )
    positive = r.leaves > 0
    if not positive.any():
        return
    # find never returns a zero leaf or an index out of range, whatever the target
    for key in ("find", "find_rel"):
        got = out[key]
        assert ((got >= 0) & (got < c)).all(), (key, got)
        assert positive[got].all(), (key, got[~positive[got]], r.leaves[got[~positive[got]]])
    # targets at or past the total resolve to the last positive leaf (documented), unless
    # that leaf is below float32 resolution of the total (then the interval check below)
    cum = r.cumsum()
    tol = 4e-6 * r.total()
    last_positive = np.flatnonzero(positive)[-1]
    if r.leaves[last_positive] > tol:
        for rel, got in zip(REL.tolist(), out["find_rel"].tolist()):
            if rel >= 1.0:
                assert got == last_positive, (rel, got, last_positive)
    # every result lies in its leaf's prefix-sum interval, up to float32 round-off of the
    # sums (exactly when no leaf is narrower than the tolerance); target 0 included
    rel_t = REL.astype(np.float64) * r.total()
    checks = [(rel_t[REL >= 0], out["find_rel"][REL >= 0])]
    if targets is not None:
        checks.append((targets.astype(np.float64), out["find"]))
    for t, got in checks:
        t = np.minimum(t, r.total())
        lo = np.where(got > 0, cum[np.maximum(got - 1, 0)], 0.0)
        hi = cum[got]
        bad = ~((lo - tol <= t) & (t <= hi + tol))
        assert not bad.any(), (t[bad], got[bad], lo[bad], hi[bad])
    if expected is not None:  # midpoints of positive leaves' intervals: exact leaf
        known = expected >= 0
        np.testing.assert_array_equal(out["find"][known], expected[known])


# --------------------------------------------------------------------------- basic


def test_init_is_empty():
    tree = sumtree.init(10, 4)
    assert tree.capacity == 10 and tree.branching == 4
    assert float(sumtree.total(tree)) == 0.0
    np.testing.assert_array_equal(sumtree.leaves(tree), np.zeros(10, np.float32))
    assert sumtree.leaves(tree).dtype == jnp.float32


@pytest.mark.parametrize("capacity,branching", GRID)
def test_set_get_total_find_vs_reference(capacity, branching):
    d = Driver(capacity, branching, seed=capacity * 31 + branching)
    calls = 2 if capacity < 100 else 6
    for i in range(calls):
        idx, vals = d.random_batches()
        if i == calls - 1:
            idx, vals = d.ensure_positive(idx, vals)
            targets, expected = d.targets_for_next(idx, vals)
            d.call(idx, vals, targets)
            check_against_reference(d, targets, expected)
        else:
            d.call(idx, vals)
            check_against_reference(d)


@pytest.mark.parametrize("capacity,branching", [(9, 4), (100, 8), (1000, 2)])
def test_duplicates_last_occurrence_wins(capacity, branching):
    d = Driver(capacity, branching)
    idx = np.full((NB, B), -1, np.int32)
    vals = np.zeros((NB, B), np.float32)
    # batch 0: index 5 written 16 times, the last value is 7; batch 1: index 2 -> 3 then 0;
    # batch 2: index 0 zero then positive; batch 3: all out-of-range (a no-op)
    idx[0, :] = 5
    vals[0, :] = np.arange(B, dtype=np.float32)
    vals[0, -1] = 7.0
    idx[1, :3] = [2, 2, 2]
    vals[1, :3] = [1.0, 3.0, 0.0]
    idx[2, :4] = [0, 1, 0, 1]
    vals[2, :4] = [0.0, 4.0, 2.5, 0.5]
    idx[3, :] = [-1, capacity, capacity + 1, -(2**31), 2**31 - 1] + [-5] * (B - 5)
    vals[3, :] = 99.0
    out = d.call(idx, vals)
    expected = np.zeros(capacity, np.float32)
    expected[[0, 1, 2, 5]] = [2.5, 0.5, 0.0, 7.0]
    np.testing.assert_array_equal(out["leaves"], expected)
    assert float(out["total"]) == 10.0
    check_against_reference(d)


def test_out_of_range_ignored_eager():
    tree = sumtree.init(5, 2)
    tree = sumtree.set(tree, jnp.array([-1, 5, 6, 2]), jnp.array([1.0, 2.0, 3.0, 4.0]))
    np.testing.assert_array_equal(sumtree.leaves(tree), [0, 0, 4, 0, 0])
    assert float(sumtree.total(tree)) == 4.0
    np.testing.assert_array_equal(sumtree.get(tree, jnp.array([-1, 2, 5, 100])), [0, 4, 0, 0])


@pytest.mark.parametrize("capacity,branching", [(9, 8), (64, 4), (1000, 2), (1000, 16)])
def test_find_never_returns_zero_leaf_sparse_and_wide_range(capacity, branching):
    """Few positive leaves of wildly different sizes; targets on and around every boundary."""
    d = Driver(capacity, branching, seed=7)
    rng = d.rng
    for trial in range(3):
        # zero everything set so far, then set 1-8 positive leaves (tiny to huge)
        idx = np.full((NB, B), -1, np.int32)
        vals = np.zeros((NB, B), np.float32)
        nz = np.flatnonzero(d.ref.leaves)
        flat_i, flat_v = idx.reshape(-1), vals.reshape(-1)
        flat_i[: len(nz)] = nz
        k = min(capacity, rng.integers(1, 9))
        chosen = rng.choice(capacity, k, replace=False)
        mags = rng.choice([1e-30, 1e-7, 1e-3, 1.0, 3.3e3, 1e7], k).astype(np.float32)
        flat_i[len(nz) : len(nz) + k] = chosen
        flat_v[len(nz) : len(nz) + k] = mags
        idx, vals = flat_i.reshape(NB, B), flat_v.reshape(NB, B)
        nxt = ref.RefSumTree(capacity)
        nxt.leaves = d.ref.leaves.copy()
        for b in range(NB):
            nxt.set(idx[b], vals[b])
        tot32 = np.float32(nxt.total())
        cum32 = np.cumsum(nxt.leaves).astype(np.float32)
        near = np.concatenate(
            [
                cum32,
                np.nextafter(cum32, np.float32(-np.inf)),
                np.nextafter(cum32, np.float32(np.inf)),
            ]
        )
        grid = np.linspace(-0.1, 1.1, T, dtype=np.float32) * tot32
        targets = np.concatenate(
            [
                near,
                grid,
                [
                    0.0,
                    tot32,
                    np.nextafter(tot32, np.float32(0)),
                    -np.float32(1e-30),
                    np.float32(3e38),
                ],
            ]
        )
        targets = rng.permutation(targets)[:T] if len(targets) > T else np.resize(targets, T)
        d.call(idx, vals, targets.astype(np.float32))
        check_against_reference(d)


def test_find_total_zero_is_still_in_range():
    """With every leaf zero the result is arbitrary but must be a valid index."""
    d = Driver(9, 8)
    out = d.call(np.full((NB, B), -1), np.zeros((NB, B)), np.linspace(-1, 1, T).astype(np.float32))
    assert ((out["find"] >= 0) & (out["find"] < 9)).all()


@functools.cache
def sample_fn(capacity, branching, n):
    @jax.jit
    def draw(tree, key):
        strat, probs = sumtree.sample_with_probs(tree, key, n, stratified=True)
        plain, plain_probs = sumtree.sample_with_probs(tree, key, n, stratified=False)
        return strat, probs, sumtree.sample(tree, key, n), plain, plain_probs

    return draw


@pytest.mark.parametrize("capacity,branching", [(9, 8), (1000, 2)])
def test_sample_valid_and_probabilities(capacity, branching):
    """Samples are in range, never zero leaves, with probability leaf / total."""
    rng = np.random.default_rng(11)
    draw = sample_fn(capacity, branching, 512)
    for trial in range(4):
        leaves = np.zeros(capacity, np.float32)
        k = rng.integers(1, min(capacity, 20) + 1)
        chosen = rng.choice(capacity, k, replace=False)
        leaves[chosen] = rng.choice([1e-30, 1e-6, 0.5, 1.0, 7.0, 1e6], k)
        if trial == 0:
            leaves[:] = rng.uniform(0.5, 2.0, capacity)  # a dense tree as well
        tree = sumtree.build(leaves, branching)
        r = ref.RefSumTree(capacity)
        r.leaves = leaves.astype(np.float64)
        strat, probs, strat_only, plain, plain_probs = jax.device_get(
            draw(tree, jax.random.key(trial))
        )
        np.testing.assert_array_equal(strat, strat_only)
        np.testing.assert_array_equal(strat, np.sort(strat))  # stratified draws ascend
        # the j-th stratified draw comes from the j-th of n equal slices of [0, total)
        lo = np.where(strat > 0, r.cumsum()[np.maximum(strat - 1, 0)], 0.0)
        hi = r.cumsum()[strat]
        j = np.arange(512)
        tol = 4e-6 * r.total()
        assert ((lo <= (j + 1) / 512 * r.total() + tol) & (hi >= j / 512 * r.total() - tol)).all()
        for idx, p in ((strat, probs), (plain, plain_probs)):
            assert ((idx >= 0) & (idx < capacity)).all()
            assert (leaves[idx] > 0).all(), idx[leaves[idx] == 0]
            np.testing.assert_allclose(p, r.probabilities()[idx], rtol=1e-5)


# --------------------------------------------------------------------------- property test


def batches_strategy(capacity):
    entry = st.tuples(
        st.one_of(
            st.integers(0, min(capacity, 6) - 1),  # a small pool: many duplicates
            st.integers(-3, capacity + 2),
        ),  # anywhere, including out of range
        st.one_of(st.just(0.0), st.floats(2.0**-10, 1e4, width=32, allow_subnormal=False)),
    )
    batch = st.lists(entry, min_size=0, max_size=B)
    return st.lists(batch, min_size=1, max_size=3 * NB)


def run_batches(d: Driver, batches):
    """Pad the drawn batches into probe calls; return after the last call."""
    batches = list(batches) + [[]] * (-len(batches) % NB)
    for start in range(0, len(batches), NB):
        idx = np.full((NB, B), -1, np.int32)
        vals = np.zeros((NB, B), np.float32)
        for b, batch in enumerate(batches[start : start + NB]):
            for j, (i, v) in enumerate(batch):
                idx[b, j], vals[b, j] = i, v
        d.call(idx, vals)
        check_against_reference(d)


@pytest.mark.parametrize("capacity,branching", [(9, 4), (100, 8)])
@settings(max_examples=30)
@given(data=st.data())
def test_property_random_set_sequences(capacity, branching, data):
    d = Driver(capacity, branching)
    run_batches(d, data.draw(batches_strategy(capacity)))


# --------------------------------------------------------------------------- 10^6 updates


def test_million_updates_no_drift():
    """1000 batches of 1000 random sets inside ONE jit vs a float64 NumPy reference."""
    capacity, steps, batch = 10_007, 1000, 1000
    rng = np.random.default_rng(1)
    idx = rng.integers(0, capacity, (steps, batch))
    idx[:, ::50] = idx[:, 1::50]  # duplicates in every batch
    idx[:, 7::100] = capacity + 3  # and ignored out-of-range entries
    vals = rng.lognormal(0.0, 3.0, (steps, batch))
    vals[rng.random((steps, batch)) < 0.2] = 0.0
    idx, vals = idx.astype(np.int32), vals.astype(np.float32)

    @jax.jit
    def run(idx, vals):
        def body(tree, iv):
            tree = sumtree.set(tree, iv[0], iv[1])
            return tree, sumtree.total(tree)

        tree, totals = jax.lax.scan(body, sumtree.init(capacity), (idx, vals))
        return tree, totals, sumtree.build(sumtree.leaves(tree)).nodes

    tree, totals, rebuilt = jax.device_get(run(idx, vals))
    r = ref.RefSumTree(capacity)
    ref_totals = np.empty(steps)
    for s in range(steps):
        r.set(idx[s], vals[s])
        ref_totals[s] = r.leaves.sum()
    np.testing.assert_array_equal(sumtree.leaves(tree), r.leaves.astype(np.float32))
    np.testing.assert_allclose(totals, ref_totals, rtol=1e-5)
    np.testing.assert_allclose(sumtree.total(tree), r.total(), rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(tree.nodes).view(np.uint32), rebuilt.view(np.uint32))


# --------------------------------------------------------------------------- sampling distribution


@pytest.mark.parametrize("stratified,n", [(True, 8), (True, 1000), (False, 1000)])
def test_sample_chi_square(stratified, n):
    """10^5 draws. With n = 8 strata each slice spans ~8 leaves, so the draw within a
    slice must be uniform too; with n = 1000 each leaf spans many slices."""
    capacity, keys = 61, 100_000 // n
    rng = np.random.default_rng(3)
    leaves = rng.uniform(0.2, 3.0, capacity).astype(np.float32)
    leaves[rng.random(capacity) < 0.2] = 0.0
    leaves[[0, -1]] = [0.0, 0.0]  # zero leaves at both ends too
    tree = sumtree.build(leaves)
    draw = jax.jit(jax.vmap(lambda k: sumtree.sample(tree, k, n, stratified=stratified)))
    got = np.asarray(draw(jax.random.split(jax.random.key(42), keys))).reshape(-1)
    assert got.size == 100_000
    counts = np.bincount(got, minlength=capacity)
    assert counts.size == capacity
    assert counts[leaves == 0].sum() == 0
    p = ref.chi_square_p_value(counts, leaves)
    assert p > 1e-3, p
    # the test has power: a uniform distribution over the positive leaves is rejected
    assert ref.chi_square_p_value(counts, (leaves > 0).astype(np.float64)) < 1e-6


# --------------------------------------------------------------------------- vmap


def test_vmap_over_trees_matches_per_tree():
    capacity, seeds = 9, 3
    rng = np.random.default_rng(5)
    idx = rng.integers(-1, capacity + 1, (seeds, 12)).astype(np.int32)
    vals = rng.uniform(0, 2, (seeds, 12)).astype(np.float32)
    keys = jax.random.split(jax.random.key(0), seeds)

    def one(idx, vals, key):
        tree = sumtree.set(sumtree.init(capacity), idx, vals)
        return tree.nodes, sumtree.total(tree), sumtree.sample(tree, key, 32, stratified=False)

    f = jax.jit(one)
    nodes, totals, samples = jax.jit(jax.vmap(one))(idx, vals, keys)
    for s in range(seeds):
        n1, t1, s1 = f(idx[s], vals[s], keys[s])
        np.testing.assert_array_equal(nodes[s], n1)
        np.testing.assert_array_equal(totals[s], t1)
        np.testing.assert_array_equal(samples[s], s1)
    assert len({tuple(np.asarray(x).tolist()) for x in samples}) == seeds


# --------------------------------------------------------------------------- the non-CPU set path


def vectorised_set(tree, indices, values):
    """``set`` through its GPU/TPU implementation (a private function), on this backend."""
    indices, values = sumtree._set_args(indices, values)
    return tree.replace(nodes=sumtree._set_vectorised(tree, tree.nodes, indices, values))


def test_set_picks_the_loop_on_cpu_and_the_sort_elsewhere():
    """``set`` picks its implementation when lowered (lax.platform_dependent); CI has only
    CPUs, so the GPU/TPU programs are exported here, not run: they sort, the CPU one loops."""
    tree = sumtree.init(100)
    fn = jax.jit(lambda nodes, i, v: sumtree.set(tree.replace(nodes=nodes), i, v).nodes)
    args = (tree.nodes, jnp.zeros((8,), jnp.int32), jnp.ones((8,)))
    for platform, sorts in [("cpu", False), ("cuda", True), ("tpu", True)]:
        text = jax.export.export(fn, platforms=(platform,))(*args).mlir_module()
        assert ("stablehlo.sort" in text, "stablehlo.while" in text) == (sorts, not sorts), platform


def test_sample_keeps_its_results_apart_with_a_barrier_off_cpu_and_a_loop_on_cpu():
    """``sample_with_probs`` must not let XLA re-fuse its last gather past a later ``set``
    (that copies the tree). XLA:CPU strips ``optimization_barrier``, so there a one-trip
    loop does it; on GPU/TPU a loop costs a host round trip per step, so the barrier."""
    tree = sumtree.build(jnp.arange(1.0, 101.0))

    def step(nodes, key):
        return sumtree.sample_with_probs(tree.replace(nodes=nodes), key, 8)

    args = (tree.nodes, jax.random.key(0))
    for platform, loops in [("cpu", True), ("cuda", False), ("tpu", False)]:
        text = jax.export.export(jax.jit(step), platforms=(platform,))(*args).mlir_module()
        has_loop, has_barrier = "stablehlo.while" in text, "optimization_barrier" in text
        assert (has_loop, has_barrier) == (loops, not loops), platform


@pytest.mark.parametrize("capacity,branching", [(9, 4), (1000, 2), (1000, 8)])
def test_vectorised_set_matches_cpu_path_under_vmap_scan_and_donation(
    capacity, branching, hlo_copies
):
    """Three trees (vmap), four batches each (scan), donated: the vectorised set gives trees
    bit-identical to the CPU path's and to a rebuild from the reference's leaves, with
    duplicates (the last occurrence wins) and indices < 0 or >= capacity (ignored) in every
    batch, and updates the nodes in place."""
    drivers = [Driver(capacity, branching, seed=5 + s) for s in range(3)]

    def run(set_fn, trees, idx, vals):  # trees [3], idx/vals [NB, 3, B]
        step = lambda t, iv: (jax.vmap(set_fn)(t, iv[0], iv[1]), None)  # noqa: E731
        return jax.lax.scan(step, trees, (idx, vals))[0]

    vectorised = jax.jit(functools.partial(run, vectorised_set), donate_argnums=0)
    cpu = jax.jit(functools.partial(run, sumtree.set))
    trees, want = (
        jax.vmap(lambda _: sumtree.init(capacity, branching))(jnp.arange(3)) for _ in range(2)
    )
    nodes = ("f32", tuple(trees.nodes.shape))
    idx, vals = (np.zeros((NB, 3, B), dt) for dt in (np.int32, np.float32))
    assert hlo_copies(vectorised.lower(trees, idx, vals).compile().as_text(), [nodes]) == []
    for _ in range(3):
        batches = [d.random_batches() for d in drivers]
        idx, vals = (np.stack([b[k] for b in batches], axis=1) for k in (0, 1))
        assert any(len(set(row.tolist())) < B for row in idx.reshape(-1, B))  # duplicates
        assert ((idx < 0) | (idx >= capacity)).any()
        pointer = trees.nodes.unsafe_buffer_pointer()
        trees, want = vectorised(trees, idx, vals), cpu(want, idx, vals)
        assert trees.nodes.unsafe_buffer_pointer() == pointer
        np.testing.assert_array_equal(
            np.asarray(trees.nodes).view(np.uint32), np.asarray(want.nodes).view(np.uint32)
        )
        for s, d in enumerate(drivers):
            for b in range(NB):
                d.ref.set(idx[b, s], vals[b, s].astype(np.float64))
            rebuilt = sumtree.build(d.ref.leaves.astype(np.float32), branching).nodes
            np.testing.assert_array_equal(
                np.asarray(trees.nodes[s]).view(np.uint32), np.asarray(rebuilt).view(np.uint32)
            )


def test_vmapped_set_uses_the_batched_loop_and_matches_per_tree():
    """The CPU set's vmap rule: batched trees, one shared tree with batched updates, and
    nested vmaps all equal per-tree sets bit for bit; the compiled program walks the trees
    with dynamic slices, not per-step gathers/scatters (20x slower under plain vmap)."""
    rng = np.random.default_rng(7)
    cap, k = 300, 8
    base = sumtree.build(rng.random(cap).astype(np.float32), k)
    idx = jnp.asarray(rng.integers(-2, cap + 2, (2, 3, 40)), jnp.int32)
    val = jnp.asarray(rng.random((2, 3, 40)).astype(np.float32))
    with_nodes = lambda n: base.replace(nodes=n)  # noqa: E731
    trees = jax.vmap(jax.vmap(with_nodes))(
        jnp.broadcast_to(base.nodes, (2, 3, base.nodes.shape[0]))
    )
    nested = jax.jit(jax.vmap(jax.vmap(sumtree.set)))(trees, idx, val)
    shared = jax.jit(jax.vmap(lambda i, v: sumtree.set(base, i, v)))(idx[1], val[1])
    for a in range(2):
        for b in range(3):
            want = np.asarray(sumtree.set(base, idx[a, b], val[a, b]).nodes)
            np.testing.assert_array_equal(np.asarray(nested.nodes[a, b]), want)
            if a == 1:
                np.testing.assert_array_equal(np.asarray(shared.nodes[b]), want)
    hlo = (
        jax.jit(jax.vmap(sumtree.set))
        .lower(
            jax.vmap(with_nodes)(jnp.broadcast_to(base.nodes, (3, base.nodes.shape[0]))),
            idx[0],
            val[0],
        )
        .compile()
        .as_text()
    )
    assert "scatter(" not in hlo, "vmapped CPU set should not scatter per loop step"
