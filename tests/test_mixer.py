"""memjax.replay.mixer: exact per-buffer counts, draws only from the buffers it uses,
mixture probabilities and importance weights against NumPy, priorities routed back."""

import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import memjax as mj
import reference as ref
from memjax import sumtree

EX = ref.example_item()


def hamilton(batch, props):
    """Largest remainder, the textbook way (exact fractions, ties to the lower index)."""
    w = [Fraction(p) / sum(Fraction(x) for x in props) for p in props]
    quotas = [batch * x for x in w]
    floors = [math.floor(q) for q in quotas]
    left = batch - sum(floors)
    ranked = sorted(range(len(w)), key=lambda k: (floors[k] - quotas[k], k))
    for k in ranked[:left]:
        floors[k] += 1
    return tuple(floors)


def test_counts_are_exact_largest_remainder():
    assert mj.replay.largest_remainder(128, (0.5, 0.3, 0.2)) == (64, 38, 26)
    assert mj.replay.largest_remainder(10, (1, 1, 1)) == (4, 3, 3)  # tie: the lower index
    assert mj.replay.largest_remainder(7, (0, 1)) == (0, 7)
    rng = np.random.default_rng(0)
    for _ in range(200):
        k = int(rng.integers(1, 6))
        props = rng.random(k) * (rng.random(k) > 0.2) + 1e-9 * (rng.random() < 0.1)
        if props.sum() == 0:
            continue
        batch = int(rng.integers(1, 300))
        got = mj.replay.largest_remainder(batch, props.tolist())
        assert got == hamilton(batch, props.tolist())
        assert sum(got) == batch
        quotas = batch * props / props.sum()
        assert all(abs(c - q) < 1 for c, q in zip(got, quotas))


def filled(buf, first_g, n):
    return buf.add(buf.init(EX), ref.make_items(np.arange(first_g, first_g + n)))


def test_draws_the_counts_from_each_buffer_and_only_what_it_uses():
    def never(*args, **kwargs):
        raise AssertionError("a buffer with proportion 0 was sampled")

    bufs = [
        mj.replay.uniform(16),
        mj.replay.uniform(16),
        mj.replay.uniform(16).replace(sample=never),
    ]
    mix = mj.replay.mixer(bufs, (0.6, 0.4, 0.0), sample_batch_size=10)
    states = (filled(bufs[0], 0, 16), filled(bufs[1], 1000, 5), bufs[2].init(EX))
    smp = jax.jit(mix.sample)(states, jax.random.key(0))
    assert mix.counts(10) == (6, 4, 0)
    assert np.asarray(smp.buffer).tolist() == [0] * 6 + [1] * 4
    g = np.asarray(smp.items["g"])
    assert (g[:6] < 16).all() and ((g[6:] >= 1000) & (g[6:] < 1005)).all()
    np.testing.assert_allclose(smp.probabilities, [0.6 / 16] * 6 + [0.4 / 5] * 4, rtol=1e-6)
    np.testing.assert_array_equal(smp.weights, np.ones(10))  # uniform buffers: ones
    can = jax.jit(mix.can_sample, static_argnums=1)
    assert bool(can(states, 10)) and not bool(can(states, 14))  # 14: 6 of buffer 1's 5 items
    many = jax.jit(jax.vmap(lambda st, k: mix.sample(st, k).items["g"], in_axes=(None, 0)))(
        states, jax.random.split(jax.random.key(2), 4)
    )
    assert many.shape == (4, 10)


@pytest.mark.parametrize("weighting", ["mixture", "union"])
def test_prioritized_weights_are_the_mixtures(weighting):
    alpha, beta = 1.0, 0.5
    bufs = [
        mj.replay.prioritized(8, alpha=alpha),
        mj.replay.prioritized(8, alpha=alpha),
        mj.replay.uniform(8),
    ]
    mix = mj.replay.mixer(bufs, (2, 1, 1), weights=weighting)
    states = [filled(bufs[0], 0, 8), filled(bufs[1], 100, 4), filled(bufs[2], 200, 6)]
    # known priorities through the public path: a stratified sample of n over n items of
    # equal priority draws each once; update them
    prio = {0: np.arange(1, 9, dtype=np.float32), 1: np.array([1, 2, 3, 10], np.float32)}
    for k, n in ((0, 8), (1, 4)):
        s = jax.jit(bufs[k].sample, static_argnums=2)(states[k], jax.random.key(k), n)
        ids = np.zeros(n, np.int32)
        ids[np.asarray(s.items["g"]) - 100 * k] = np.asarray(s.indices)
        states[k] = jax.jit(bufs[k].update)(states[k], jnp.asarray(ids), prio[k])
    smp = jax.jit(lambda st, key: mix.sample(st, key, 8, beta=beta))(
        tuple(states), jax.random.key(3)
    )
    assert mix.counts(8) == (4, 2, 2)
    g = np.asarray(smp.items["g"])
    share = np.array([4, 4, 4, 4, 2, 2, 2, 2]) / 8
    p_within = np.concatenate(
        [prio[0][g[:4]] / prio[0].sum(), prio[1][g[4:6] - 100] / prio[1].sum(), np.full(2, 1 / 6)]
    )
    np.testing.assert_allclose(smp.probabilities, share * p_within, rtol=1e-5)
    sizes = np.array([8] * 4 + [4] * 2 + [6] * 2)
    if weighting == "mixture":
        w = (sizes * p_within) ** -beta
    else:
        w = (18 * share * p_within) ** -beta
    np.testing.assert_allclose(smp.weights, w / w.max(), rtol=1e-5)
    if weighting == "mixture":
        np.testing.assert_allclose(smp.weights[6:] * w.max(), 1.0, rtol=1e-6)  # uniform part


def test_update_routes_priorities_to_each_buffer():
    bufs = [
        mj.replay.prioritized(8, alpha=1.0),
        mj.replay.uniform(8),
        mj.replay.prioritized(8, alpha=1.0),
    ]
    mix = mj.replay.mixer(bufs, (0.5, 0.25, 0.25))
    states = (filled(bufs[0], 0, 8), filled(bufs[1], 100, 8), filled(bufs[2], 200, 8))
    smp = jax.jit(mix.sample, static_argnums=2)(states, jax.random.key(0), 8)
    prios = jnp.arange(1.0, 9.0)
    new = jax.jit(mix.update)(states, smp, prios)
    for k, (lo, hi) in ((0, (0, 4)), (2, (6, 8))):
        leaves = np.asarray(sumtree.leaves(new[k].tree))
        slots = np.asarray(smp.indices[lo:hi]) % 8
        for slot, p in zip(slots, np.asarray(prios[lo:hi])):
            # the last position naming a slot wins
            last = [q for s, q in zip(slots, np.asarray(prios[lo:hi])) if s == slot][-1]
            assert leaves[slot] == last
        untouched = np.setdiff1d(np.arange(8), slots)
        np.testing.assert_array_equal(leaves[untouched], 1.0)
    assert new[1] is states[1] or jax.tree.all(jax.tree.map(jnp.array_equal, new[1], states[1]))
    # None priorities for all-uniform mixers
    umix = mj.replay.mixer([mj.replay.uniform(8), mj.replay.uniform(8)], (1, 1))
    ustates = (filled(umix.buffers[0], 0, 8), filled(umix.buffers[1], 8, 8))
    jax.jit(lambda st, k: umix.update(st, umix.sample(st, k, 4), None))(ustates, jax.random.key(0))


def test_add_goes_to_one_buffer():
    bufs = [mj.replay.uniform(4), mj.replay.uniform(4)]
    mix = mj.replay.mixer(bufs, (1, 1))
    states = mix.add(mix.init(EX), 1, ref.make_items(np.arange(3)))
    assert [int(mj.replay.size(s)) for s in states] == [0, 3]


def test_bad_settings_are_clear_errors():
    u = mj.replay.uniform(4)
    with pytest.raises(ValueError, match="2 proportions for 3 buffers"):
        mj.replay.mixer([u, u, u], (1, 1))
    with pytest.raises(ValueError, match="all 0"):
        mj.replay.mixer([u, u], (0, 0))
    with pytest.raises(ValueError, match=">= 0"):
        mj.replay.mixer([u, u], (1, -1))
    with pytest.raises(ValueError, match="weights must be one of"):
        mj.replay.mixer([u], (1,), weights="uniform")
    with pytest.raises(TypeError, match="ReplayBuffer"):
        mj.replay.mixer([u, "buffer"], (1, 1))
    with pytest.raises(TypeError, match="sample_batch_size"):
        mj.replay.mixer([u], (1,)).sample((filled(u, 0, 4),), jax.random.key(0))
    other = mj.replay.uniform(4)
    states = (
        filled(u, 0, 4),
        other.add(other.init({"g": np.int32(0)}), {"g": np.arange(4, dtype=np.int32)}),
    )
    with pytest.raises(TypeError, match="must store the same items"):
        mj.replay.mixer([u, other], (1, 1)).sample(states, jax.random.key(0), 4)
