"""The one-copy layout: every stored transition comes back exactly as added (obs, next_obs,
frame stacks, truncation's final observations), memory is about one observation per
transition, and side-store overflow drops the oldest transitions instead of corrupting any."""

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import memjax as mj
import memjax.codecs as mc
from memjax.envs import FrameStack
from memjax.replay.one_copy_store import OneCopyStore

E = 4


def synthetic_stream(T, k, seed, d=3, max_len=6):
    """Rows of transitions from E envs with random episode lengths; every frame is unique.
    Episodes end by termination or truncation; next_obs at an episode end is the final
    observation (never the next episode's first). Stacks follow FrameStack's convention."""
    rng = np.random.default_rng(seed)
    counter = [0]

    def frame():
        counter[0] += 1
        return np.full((d,), counter[0], np.float32) + np.arange(d, dtype=np.float32) / 10

    def reset():
        return np.concatenate([frame()] * k)

    stacks = [reset() for _ in range(E)]
    left = rng.integers(1, max_len + 1, E)
    rows = []
    for _ in range(T):
        obs = np.stack(stacks)
        nxt, term = [], []
        for e in range(E):
            new = np.concatenate([stacks[e][d:], frame()])
            left[e] -= 1
            ended = left[e] == 0
            nxt.append(new)
            term.append(float(ended and rng.random() < 0.5))
            if ended:
                stacks[e] = reset()
                left[e] = rng.integers(1, max_len + 1)
            else:
                stacks[e] = new
        rows.append(
            {
                "obs": obs,
                "next_obs": np.stack(nxt),
                "terminated": np.asarray(term, np.float32),
                "action": rng.integers(0, 3, E).astype(np.int32),
            }
        )
    return rows


def flatten(rows):
    return [{key: v[e] for key, v in row.items()} for row in rows for e in range(E)]


def window_slots(store, state):
    """Slots of all sampleable transitions, oldest first (row-major, env minor)."""
    rows, count = int(state.rows), int(state.count)
    first = rows - count // E
    return jnp.asarray(
        [(r % store.A) * E + e for r in range(first, rows) for e in range(E)], jnp.int32
    )


def assert_window_exact(store, state, reference, gather=None):
    """``gather``: ``store.gather`` jitted once by a caller that checks many states (it
    compiles once per window size, where op-by-op calls take seconds each)."""
    count = int(state.count)
    assert count % E == 0 and 0 < count <= store.capacity
    got = jax.device_get((gather or store.gather)(state, window_slots(store, state)))
    want = reference[len(reference) - count :]
    for i, tr in enumerate(want):
        for key, value in tr.items():
            np.testing.assert_array_equal(
                got[key][i], value, err_msg=f"transition {i}, field {key}"
            )


def example_of(rows):
    return {key: v[0] for key, v in rows[0].items()}


@pytest.fixture(scope="module")
def stream_k1():
    return synthetic_stream(40, 1, seed=0)


@pytest.fixture(scope="module")
def stream_k3():
    return synthetic_stream(40, 3, seed=1)


@pytest.mark.parametrize("k, side", [(1, 24), (3, 24), (1, E), (3, E)])
def test_every_stored_transition_comes_back_exactly(k, side, stream_k1, stream_k3):
    rows = stream_k1 if k == 1 else stream_k3
    layout = mj.replay.one_copy(E, frame_stack=k, side_capacity=side)
    buf = mj.replay.uniform(24, layout=layout)
    store = OneCopyStore(24, {}, layout)
    state = buf.init(example_of(rows))
    add, gather = jax.jit(buf.add), jax.jit(store.gather)
    ref = []
    saw_overflow = False
    for t, row in enumerate(rows):
        state = add(state, row)
        ref += flatten([row])
        assert_window_exact(store, state, ref, gather)
        saw_overflow |= int(state.count) < min(len(ref), 24)
    assert int(state.layout_errors) == 0
    if side == E:  # episodes of ~3.5 steps overflow a side store of 4 entries
        assert saw_overflow
    else:  # a side store as large as the buffer never costs a transition
        assert not saw_overflow


def test_uniform_samples_only_the_window(stream_k3):
    layout = mj.replay.one_copy(E, frame_stack=3, side_capacity=E)
    buf = mj.replay.uniform(24, layout=layout)
    state = buf.init(example_of(stream_k3))
    add = jax.jit(buf.add)
    for row in stream_k3:
        state = add(state, row)
    ref = flatten(stream_k3)[-int(state.count) :]
    keys = jax.random.split(jax.random.key(0), 100)
    items = jax.jit(jax.vmap(lambda key: buf.sample(state, key, 20).items))(keys)
    obs = np.asarray(items["obs"]).reshape(2000, -1)
    nxt = np.asarray(items["next_obs"]).reshape(2000, -1)
    window = {tr["obs"].tobytes(): tr for tr in ref}
    for i in range(len(obs)):
        tr = window[obs[i].tobytes()]  # KeyError: sampled outside the window
        np.testing.assert_array_equal(nxt[i], tr["next_obs"])
    # uniform over the window: every transition drawn, none much more than its share
    counts = np.unique(obs.reshape(len(obs), -1), axis=0, return_counts=True)[1]
    assert len(counts) == len(ref)
    from scipy.stats import chisquare

    assert chisquare(counts).pvalue > 1e-3


def test_prioritized_with_one_copy(stream_k1):
    """After side-store overflows every draw is a transition of the window, with weight > 0
    and its exact next_obs; an update sets their priorities and the leaves of the slots
    outside the window stay 0."""
    layout = mj.replay.one_copy(E, side_capacity=E)
    buf = mj.replay.prioritized(24, layout=layout, alpha=1.0)
    store = OneCopyStore(24, {}, layout)
    state = buf.init(example_of(stream_k1))
    add = jax.jit(buf.add)
    for row in stream_k1:
        state = add(state, row)
    assert int(state.count) < 24  # the side store overflowed
    ref = flatten(stream_k1)[-int(state.count) :]
    window = {tr["obs"].tobytes(): tr for tr in ref}
    smp = buf.sample(state, jax.random.key(1), 24)
    obs = np.asarray(smp.items["obs"])
    assert (np.asarray(smp.weights) > 0).all()
    for i in range(len(obs)):
        np.testing.assert_array_equal(
            np.asarray(smp.items["next_obs"][i]), window[obs[i].tobytes()]["next_obs"]
        )
    state = buf.update(state, smp.indices, jnp.full((24,), 2.0))
    leaves = np.asarray(mj.sumtree.leaves(state.tree))
    np.testing.assert_allclose(leaves[np.asarray(store.resolve(state, smp.indices)[0])], 2.0)
    outside = np.setdiff1d(np.arange(store.num_slots), np.asarray(window_slots(store, state)))
    assert outside.size and np.all(leaves[outside] == 0)


def test_frame_stack_wrapper_with_truncation_is_exact():
    """Real gymnax episodes (CartPole cut at 7 steps: many truncations) through FrameStack."""
    k = 4
    env, params = gymnax.make("CartPole-v1")
    params = params.replace(max_steps_in_episode=7)
    env = FrameStack(env, k)
    assert env.observation_space(params).shape == (16,)
    obs, st = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(jax.random.key(0), E), params)
    np.testing.assert_array_equal(obs[:, :4], obs[:, 12:])  # first stack repeats its frame
    step = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))
    layout = mj.replay.one_copy(E, frame_stack=k, side_capacity=40)
    buf = mj.replay.uniform(40, layout=layout)
    store = OneCopyStore(40, {}, layout)
    ex = {"obs": obs[0], "action": jnp.int32(0), "next_obs": obs[0], "terminated": jnp.float32(0)}
    state = buf.init(ex)
    add = jax.jit(buf.add)
    ref, truncations, key = [], 0, jax.random.key(1)
    for _ in range(30):
        key, ka, ks = jax.random.split(key, 3)
        a = jax.random.randint(ka, (E,), 0, 2).astype(jnp.int32)
        nobs, st, r, term, trunc, info = step(jax.random.split(ks, E), st, a, params)
        row = {
            "obs": obs,
            "action": a,
            "next_obs": info["final_observation"],
            "terminated": term.astype(jnp.float32),
        }
        truncations += int(jnp.sum(trunc & ~term))
        state = add(state, row)
        ref += flatten([jax.device_get(row)])
        obs = nobs
    assert truncations >= E and int(state.layout_errors) == 0
    assert_window_exact(store, state, ref)
    # the stored next_obs of a truncated step is the final observation, not the reset one
    assert int(state.count) == 40


def test_codecs_inside_one_copy_and_breakout_bytes():
    layout = mj.replay.one_copy(E, frame_stack=2, side_capacity=8)
    codecs = {"obs": mc.bitpack(), "action": mc.cast(jnp.uint8)}
    buf = mj.replay.uniform(16, codecs=codecs, layout=layout)
    rng = np.random.default_rng(0)
    frames = (rng.random((40, E, 5, 5, 2)) > 0.5).astype(np.float32)
    stack = np.concatenate([frames[0], frames[0]], -1)
    ex = {"obs": stack[0], "next_obs": stack[0], "action": np.int32(0)}
    state = buf.init(ex)
    add = jax.jit(buf.add)
    ref = []
    for t in range(1, 12):
        nxt = np.concatenate([stack[..., 2:], frames[t]], -1)
        row = {"obs": stack, "next_obs": nxt, "action": rng.integers(0, 5, E).astype(np.int32)}
        state = add(state, row)
        ref += flatten([row])
        stack = nxt
    assert state.items["obs"].dtype == jnp.uint8 and state.items["obs"].shape[1:] == (7,)  # 50 bits
    assert_window_exact(OneCopyStore(16, codecs, layout), state, ref)
    # Breakout-MinAtar: bitpacked [10, 10, 4] frames, uint8 action/reward/terminated
    ex = {
        "obs": jnp.zeros((10, 10, 4)),
        "next_obs": jnp.zeros((10, 10, 4)),
        "action": jnp.int32(0),
        "reward": jnp.float32(0),
        "terminated": jnp.float32(0),
    }
    small = {
        "obs": mc.bitpack(),
        "action": mc.cast(jnp.uint8),
        "reward": mc.cast(jnp.int8),
        "terminated": mc.cast(jnp.uint8),
    }
    big = mj.replay.uniform(100_000, codecs=small, layout=mj.replay.one_copy(10))
    report = big.memory(jax.eval_shape(big.init, ex))
    assert report.bytes_per_item <= 60, str(report)
    assert report.raw_bytes_per_item == 2 * 1600 + 12
    flat = mj.replay.uniform(100_000)
    assert flat.memory(jax.eval_shape(flat.init, ex)).bytes_per_item == pytest.approx(
        3212, abs=0.01
    )


def test_memory_within_1_1x_of_one_observation():
    ex = {"obs": jnp.zeros((64,)), "next_obs": jnp.zeros((64,)), "action": jnp.int32(0)}
    buf = mj.replay.uniform(10_000, layout=mj.replay.one_copy(10, frame_stack=4))
    report = buf.memory(jax.eval_shape(buf.init, ex))
    frame_bytes = 16 * 4
    fields = {f.name: f for f in report.fields}
    assert fields["obs"].raw_bytes == 256 and fields["next_obs"].raw_bytes == 256
    assert fields["obs"].bytes_per_item + fields["next_obs"].bytes_per_item <= 1.1 * frame_bytes
    assert "next_obs" in str(report)


def test_vmapped_adds_match_per_seed_adds(stream_k3):
    layout = mj.replay.one_copy(E, frame_stack=3, side_capacity=8)
    buf = mj.replay.uniform(24, layout=layout)
    ex = example_of(stream_k3)
    other = synthetic_stream(40, 3, seed=7)
    both = jax.vmap(buf.init)(jax.tree.map(lambda a, b: jnp.stack([a, b]), ex, ex))
    vadd = jax.jit(jax.vmap(buf.add))
    singles = [buf.init(ex), buf.init(ex)]
    add = jax.jit(buf.add)
    for r0, r1 in zip(stream_k3[:20], other[:20]):
        both = vadd(both, jax.tree.map(lambda a, b: jnp.stack([a, b]), r0, r1))
        singles = [add(singles[0], r0), add(singles[1], r1)]
    for i in range(2):
        jax.tree.map(lambda v, s: np.testing.assert_array_equal(v[i], s), both, singles[i])
    assert buf.memory(both).copies == 2


def test_errors_are_clear(stream_k3):
    ex = example_of(stream_k3)
    with pytest.raises(ValueError, match="multiple of num_envs"):
        mj.replay.uniform(25, layout=mj.replay.one_copy(E))
    with pytest.raises(ValueError, match="next_obs"):
        mj.replay.uniform(24, codecs={"next_obs": mc.identity()}, layout=mj.replay.one_copy(E))
    with pytest.raises(ValueError, match="side_capacity"):
        mj.replay.one_copy(E, side_capacity=2)
    buf = mj.replay.uniform(24, layout=mj.replay.one_copy(E, frame_stack=3))
    with pytest.raises(TypeError, match="'obs' and 'next_obs'"):
        buf.init({"obs": ex["obs"]})
    state = buf.init(ex)
    with pytest.raises(ValueError, match="num_envs=4"):
        buf.add(state, jax.tree.map(lambda v: v[:2], stream_k3[0]))
    bad = dict(stream_k3[0], next_obs=stream_k3[0]["next_obs"] * 0 + 99)  # not a shift of obs
    with pytest.raises(ValueError, match="frame-stack convention"):
        buf.add(state, bad)
    state = jax.jit(buf.add)(state, bad)  # under jit: counted, not raised
    assert int(state.layout_errors) == E


def test_codec_counters_count_each_stored_value_once():
    """Clipped values are counted once per stored observation: every obs row, plus the final
    observations that went to the side store (not the next_obs that equal the next obs)."""
    rows = synthetic_stream(30, 1, seed=3)
    rows = [dict(r, obs=r["obs"] / 60.0, next_obs=r["next_obs"] / 60.0) for r in rows]  # some > 1
    layout = mj.replay.one_copy(E, side_capacity=120)
    buf = mj.replay.uniform(
        120, codecs={"obs": mc.quantize(bits=8, low=0.0, high=1.0)}, layout=layout
    )
    state = buf.init(example_of(rows))
    add = jax.jit(buf.add)
    for row in rows:
        state = add(state, row)
    expected = sum(int(np.sum(r["obs"] > 1)) for r in rows)
    for r, following in zip(rows, rows[1:]):  # final observations kept in the side store
        ended = ~np.all(r["next_obs"] == following["obs"], axis=1)
        expected += int(np.sum(r["next_obs"][ended] > 1))
    assert expected > 0
    assert mc.counters(state.codecs["obs"])["clipped"] == expected
