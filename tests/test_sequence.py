"""The sequence layout: every sampleable window comes back exactly as added (obs, next_obs
across episode ends and truncations, first, other fields, per-window fields), uniform and
prioritized sampling follow their distributions, stale ids are ignored, length 1 is the
one-copy layout, and memory is one observation per step."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import memjax as mj
import memjax.codecs as mc
import reference as ref
from memjax import sumtree
from memjax.replay.one_copy_store import OneCopyStore
from memjax.replay.sequence_store import SequenceStore
from memjax.replay.stores import make_store
from test_one_copy import synthetic_stream

E = 4
CARRY = 3


def sequence_stream(T, seed, d=2, max_len=5, envs=E):
    """Rows of E steps with random episode ends (terminations and truncations, so next_obs
    at an episode end is the final observation); about a third of the resets return an obs
    equal to the final one. Every other observation is unique."""
    rng = np.random.default_rng(seed)
    counter = [0]

    def fresh():
        counter[0] += 1
        return np.full((d,), counter[0], np.float32) + np.arange(d, dtype=np.float32) / 10

    obs, first = [fresh() for _ in range(envs)], [True] * envs
    left = rng.integers(1, max_len + 1, envs)
    rows = []
    for _ in range(T):
        row = {"obs": np.stack(obs), "first": np.array(first), "next_obs": [], "terminated": []}
        for e in range(envs):
            final = fresh()
            left[e] -= 1
            row["next_obs"].append(final)
            row["terminated"].append(float(left[e] == 0 and rng.random() < 0.5))
            first[e] = bool(left[e] == 0)
            obs[e] = (final if rng.random() < 0.3 else fresh()) if first[e] else final
            if first[e]:
                left[e] = rng.integers(1, max_len + 1)
        row["next_obs"] = np.stack(row["next_obs"])
        row["terminated"] = np.asarray(row["terminated"], np.float32)
        row["action"] = rng.integers(0, 3, envs).astype(np.int32)
        row["carry"] = rng.normal(size=(envs, CARRY)).astype(np.float32)
        rows.append(row)
    return rows


class RefSequence:
    """NumPy reference: the rows as added, the side store's FIFO rule (entries are steps
    whose next_obs is not the next row's obs, pushed in row then env order; each eviction
    drops every row up to the evicted entry's), and the sampleable windows."""

    def __init__(self, rows_kept, side, length, period, envs=E):
        self.R, self.K, self.L, self.P, self.E = rows_kept, side, length, period, envs
        self.rows, self.side, self.valid_from = [], [], 0

    def add(self, row):
        if self.rows:
            prev = self.rows[-1]
            n = len(self.rows) - 1
            ended = [not np.array_equal(prev["next_obs"][e], row["obs"][e]) for e in range(self.E)]
            self.side += [n] * sum(ended)
            if len(self.side) > self.K:
                self.valid_from = max(self.valid_from, self.side[-self.K - 1] + 1)
                self.side = self.side[-self.K :]
        self.rows.append(row)

    def starts(self):
        n = len(self.rows)
        lo = max(n - self.R, self.valid_from, 0)
        return range(-(-lo // self.P), (n - self.L) // self.P + 1)

    def windows(self):
        """[(j, env)] of every sampleable window."""
        return [(j, e) for j in self.starts() for e in range(self.E)]

    def window(self, j, e, per_window=("carry",)):
        steps = self.rows[j * self.P : j * self.P + self.L]
        out = {k: np.stack([r[k][e] for r in steps]) for k in steps[0] if k not in per_window}
        out.update({k: steps[0][k][e] for k in per_window})
        return out


def example_of(rows, drop=()):
    return {k: v[0] for k, v in rows[0].items() if k not in drop}


def row_of(rows, t, drop=()):
    return {k: v for k, v in rows[t].items() if k not in drop}


def numbering(store):
    """(period, starts per lap of the ring, id modulus of starts) of a store's windows; a
    one-copy store's items are windows of one step."""
    if isinstance(store, SequenceStore):
        return store.P, store.W, store.M_starts
    return 1, store.A, store.M


def window_slots(store, windows, first_row=0):
    """Slots of ``windows`` (model starts j, counted from ``first_row``, a multiple of the
    period), padded to ``store.num_slots`` entries (one compiled gather)."""
    period, laps, _ = numbering(store)
    slots = [((first_row // period + j) % laps) * store.E + e for j, e in windows]
    return jnp.asarray(slots + [slots[0]] * (store.num_slots - len(slots)), jnp.int32)


def assert_windows_exact(store, gather, state, model, first_row=0):
    """Exactly the model's windows are sampleable, with their ids and contents (the model's
    row 0 is the store's row ``first_row``)."""
    windows = model.windows()
    assert int(state.count) == len(windows)
    if not windows:
        return
    period, _, modulus = numbering(store)
    slots = window_slots(store, windows, first_row)
    got = jax.device_get(gather(state, slots))
    ids = np.asarray(store.ids_of(state, slots))
    one_step = not isinstance(store, SequenceStore)
    for i, (j, e) in enumerate(windows):
        assert ids[i] == ((first_row // period + j) % modulus) * store.E + e
        for key, value in model.window(j, e, () if one_step else ("carry",)).items():
            np.testing.assert_array_equal(
                got[key][i],
                value[0] if one_step else value,
                err_msg=f"window {(j, e)}, field {key}",
            )


# (length, period, rows kept, side capacity, rows added): side 2 * E overflows
CASES = {
    "L3_P1": (3, 1, 12, 48, 60),
    "L4_P2_carry": (4, 2, 12, 48, 60),
    "L3_P3_tiny_side": (3, 3, 12, 2 * E, 60),
    "L12_P1_whole_ring": (12, 1, 12, 48, 40),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_sampleable_window_comes_back_exactly(case):
    length, period, rows_kept, side, T = CASES[case]
    rows = sequence_stream(T, seed=len(case))
    layout = mj.replay.sequence(E, length, period=period, side_capacity=side, per_window=("carry",))
    buf = mj.replay.uniform(rows_kept * E, layout=layout)
    store = SequenceStore(rows_kept * E, {}, layout)
    state = buf.init(example_of(rows))
    add, gather = jax.jit(buf.add), jax.jit(store.gather)
    model = RefSequence(rows_kept, side, length, period)
    overflowed = False
    for t in range(T):
        state = add(state, row_of(rows, t))
        model.add(rows[t])
        assert_windows_exact(store, gather, state, model)
        overflowed |= model.valid_from > max(0, len(model.rows) - rows_kept)
    assert overflowed == (side < 48)
    assert int(state.rows) >= 3 * rows_kept  # the ring wrapped several times


@pytest.mark.parametrize("layout", ["one_copy", "L3_P1", "L4_P2_carry"])
@pytest.mark.parametrize("limit", ["ids", "rows"])
def test_row_numbers_wrap_safely(layout, limit):
    """A buffer whose row counter starts R + 3 periods before the modulus of row numbers in ids
    (M, just under 2**31 / E: where row * E + env wrapped int32 before) or of the row counter
    itself (T < 2**31): adds across it, with the side store overflowing, keep exactly the
    reference's windows sampleable, with their ids and contents."""
    length, period, rows_kept, _, steps = CASES.get(layout, (1, 1, 12, 0, 60))
    rows = sequence_stream(steps, seed=21)
    if layout == "one_copy":
        layout = mj.replay.one_copy(E, side_capacity=2 * E)
        store, rows = (
            OneCopyStore(rows_kept * E, {}, layout),
            [row_of(rows, t, ("carry",)) for t in range(steps)],
        )
    else:
        layout = mj.replay.sequence(
            E, length, period=period, side_capacity=2 * E, per_window=("carry",)
        )
        store = SequenceStore(rows_kept * E, {}, layout)
    buf = mj.replay.uniform(rows_kept * E, layout=layout)
    first_row = (store.M if limit == "ids" else store.T) - rows_kept - 3 * period
    state = buf.init(example_of(rows))
    state = state.replace(cursor=state.cursor.at[0].set(first_row))  # empty, at row first_row
    add, gather = jax.jit(buf.add), jax.jit(store.gather)
    model, overflowed = RefSequence(rows_kept, 2 * E, length, period), False
    for t in range(steps):
        state = add(state, rows[t])
        model.add(rows[t])
        assert_windows_exact(store, gather, state, model, first_row)
        overflowed |= model.valid_from > max(0, len(model.rows) - rows_kept)
    assert overflowed
    assert int(state.rows) == (first_row + steps) % store.T


def test_side_entries_of_more_than_64_envs():
    """70 environments: side-store ranks are kept per group of 64 envs of a row."""
    envs = 70
    rows = sequence_stream(16, seed=9, max_len=2, envs=envs)
    layout = mj.replay.sequence(envs, 2, side_capacity=6 * envs, per_window=("carry",))
    buf = mj.replay.uniform(6 * envs, layout=layout)
    store = SequenceStore(6 * envs, {}, layout)
    state = buf.init(example_of(rows))
    add, gather = jax.jit(buf.add), jax.jit(store.gather)
    model = RefSequence(6, 6 * envs, 2, 1, envs)
    for t in range(16):
        state = add(state, row_of(rows, t))
        model.add(rows[t])
        assert_windows_exact(store, gather, state, model)
    assert state.side_start.shape == (6, 2) and int(jnp.max(state.flags >> 2)) > 6


def test_codecs_on_steps_and_windows_decode_exactly():
    """bitpack on 0/1 obs planes, cast on actions, bfloat16 on the per-window carry."""
    rows = sequence_stream(30, seed=5)
    for r in rows:  # 0/1 observations: the parity bits of the unique values
        for k in ("obs", "next_obs"):
            r[k] = (np.floor(r[k][..., :1] * np.array([1, 0.5, 0.25, 0.125])) % 2).astype(
                np.float32
            )
    layout = mj.replay.sequence(E, 4, period=2, side_capacity=64, per_window=("carry",))
    codecs = {"obs": mc.bitpack(), "action": mc.cast(jnp.uint8), "carry": mc.cast(jnp.bfloat16)}
    buf = mj.replay.uniform(16 * E, codecs=codecs, layout=layout)
    store = SequenceStore(16 * E, codecs, layout)
    state = buf.init(example_of(rows))
    model = RefSequence(16, 64, 4, 2)
    add = jax.jit(buf.add)
    for t in range(30):
        state = add(state, row_of(rows, t))
        carry = jnp.asarray(rows[t]["carry"], jnp.bfloat16).astype(jnp.float32)
        model.add(dict(rows[t], carry=np.asarray(carry)))
    assert state.items["obs"].dtype == jnp.uint8 and state.windows["carry"].dtype == jnp.bfloat16
    assert state.windows["carry"].shape == (8 * E, CARRY)  # once per window start
    assert_windows_exact(store, jax.jit(store.gather), state, model)


@pytest.fixture(scope="module")
def filled():
    """A sequence buffer (L 3, period 1) after 30 rows, with its reference."""
    rows = sequence_stream(30, seed=11)
    layout = mj.replay.sequence(E, 3, side_capacity=48, per_window=("carry",))
    model = RefSequence(12, 48, 3, 1)
    for r in rows:
        model.add(r)
    return rows, layout, model


def fill(buf, rows):
    state = buf.init(example_of(rows))
    add = jax.jit(buf.add)
    for t in range(len(rows)):
        state = add(state, row_of(rows, t))
    return state


def test_uniform_window_sampling_chi_square(filled):
    rows, layout, model = filled
    buf = mj.replay.uniform(48, layout=layout)
    state = fill(buf, rows)
    keys = jax.random.split(jax.random.key(0), 400)
    ids = np.asarray(jax.jit(jax.vmap(lambda k: buf.sample(state, k, 40).indices))(keys)).ravel()
    windows = {(j % (SequenceStore(48, {}, layout).M_starts)) * E + e for j, e in model.windows()}
    assert set(ids.tolist()) == windows  # every sampleable window drawn, nothing else
    counts = np.unique(ids, return_counts=True)[1]
    assert ref.chi_square_p_value(counts, np.ones(len(counts))) > 1e-3


def test_prioritized_window_sampling_chi_square(filled):
    rows, layout, model = filled
    buf = mj.replay.prioritized(48, alpha=0.7, layout=layout)
    state = fill(buf, rows)
    store = SequenceStore(48, {}, layout)
    windows = model.windows()
    live = store.ids_of(state, window_slots(store, windows))[: len(windows)]
    prio = np.random.default_rng(0).uniform(0.1, 3.0, len(windows)).astype(np.float32)
    state = buf.update(state, live, prio)
    keys = jax.random.split(jax.random.key(1), 400)
    smp = jax.jit(jax.vmap(lambda k: buf.sample(state, k, 40)))(keys)
    got = np.asarray(smp.indices).ravel()
    counts = np.array([np.sum(got == i) for i in np.asarray(live)])
    assert counts.sum() == got.size
    assert ref.chi_square_p_value(counts, prio.astype(np.float64) ** 0.7) > 1e-3
    # importance weights: (N P(i))^-beta / max, P from the priorities
    probs = prio.astype(np.float64) ** 0.7 / np.sum(prio.astype(np.float64) ** 0.7)
    first = {int(i): p for i, p in zip(np.asarray(live), probs)}
    w = (len(windows) * np.array([first[int(i)] for i in np.asarray(smp.indices[0])])) ** -0.4
    np.testing.assert_allclose(np.asarray(smp.weights[0]), w / w.max(), rtol=1e-4)


def test_stale_ids_ignored_live_ids_applied(filled):
    rows, layout, model = filled
    buf = mj.replay.prioritized(48, alpha=1.0, layout=layout)
    store = SequenceStore(48, {}, layout)
    state = fill(buf, rows[:20])
    smp = buf.sample(state, jax.random.key(2), 40)
    add = jax.jit(buf.add)
    for t in range(20, 26):  # overwrites the windows starting at rows 8..13
        state = add(state, row_of(rows, t))
    slots, live = (np.asarray(x) for x in store.resolve(state, smp.indices))
    assert live.any() and (~live).any()
    before = np.asarray(sumtree.leaves(state.tree))
    state = buf.update(state, smp.indices, jnp.full((40,), 7.0))
    after = np.asarray(sumtree.leaves(state.tree))
    np.testing.assert_allclose(after[slots[live]], 7.0)
    untouched = np.setdiff1d(np.arange(store.num_slots), slots[live])  # stale ids: ignored
    np.testing.assert_array_equal(after[untouched], before[untouched])
    # leaves: exactly the sampleable windows are positive
    positive = {(j % store.W) * E + e for j, e in _model_after(rows[:26], layout).windows()}
    assert set(np.flatnonzero(after > 0).tolist()) == positive


def _model_after(rows, layout):
    model = RefSequence(12, layout.side_capacity, layout.length, layout.period)
    for r in rows:
        model.add(r)
    return model


def tree_case(case, seed):
    """(rows, layout, store, length, period) of a PER case whose side store of E entries
    overflows."""
    if case == "one_copy_stack3":
        return (
            synthetic_stream(60, 3, seed),
            mj.replay.one_copy(E, frame_stack=3, side_capacity=E),
            1,
            1,
        )
    rows = sequence_stream(60, seed)
    if case == "one_copy":
        return (
            [row_of(rows, t, ("carry",)) for t in range(60)],
            mj.replay.one_copy(E, side_capacity=E),
            1,
            1,
        )
    length, period = CASES[case][:2]
    return (
        rows,
        mj.replay.sequence(E, length, period=period, side_capacity=E, per_window=("carry",)),
        length,
        period,
    )


@pytest.mark.parametrize(
    "case, start, seeds",
    [
        ("one_copy", 0, 1),
        ("one_copy_stack3", 0, 1),
        ("L3_P1", 0, 1),
        ("L4_P2_carry", "T", 1),
        ("one_copy", "T", 2),
        ("L4_P2_carry", 0, 2),
    ],
)
def test_tree_holds_exactly_the_sampleable_items(case, start, seeds):
    """PER with a side store of E entries (it overflows, and an eviction can drop several rows
    at once): after every add and update the leaves are the priorities of exactly the
    reference's sampleable windows (transitions for one_copy) and 0 elsewhere, so the total is
    their sum; no draw gets weight 0; updates of ids that an add since made unsampleable are
    ignored. Also across the wrap of row numbers (start at T - R - 3 periods), and for two
    seeds under vmap (different streams, so different rows dropped per seed)."""
    streams = [tree_case(case, seed=40 + s) for s in range(seeds)]
    layout, length, period = streams[0][1:]
    buf = mj.replay.prioritized(48, alpha=1.0, layout=layout)
    store = make_store(48, {}, layout)
    _, laps, modulus = numbering(store)
    first_row = 0 if start == 0 else store.T - 12 - 3 * period
    batched = (lambda f: jax.jit(jax.vmap(f))) if seeds > 1 else jax.jit  # noqa: E731
    one = lambda x: jax.tree.map(lambda *v: jnp.stack(v), *x) if seeds > 1 else x[0]  # noqa: E731
    init = buf.init(example_of(streams[0][0]))
    state = one([init.replace(cursor=init.cursor.at[0].set(first_row))] * seeds)
    add, update = batched(buf.add), batched(buf.update)
    sample = batched(lambda st, key: buf.sample(st, key, 16))
    models = [RefSequence(12, E, length, period) for _ in range(seeds)]
    prio, max_p = [{} for _ in range(seeds)], [np.float32(1) for _ in range(seeds)]
    pending, ignored, jumped, rng = None, 0, False, np.random.default_rng(0)
    for t in range(60):
        lo = [max(len(m.rows) - 12, m.valid_from, 0) for m in models]
        state = add(state, one([jax.tree.map(jnp.asarray, rows[t]) for rows, *_ in streams]))
        for s, m in enumerate(models):
            m.add(streams[s][0][t])
            jumped |= max(len(m.rows) - 12, m.valid_from, 0) - lo[s] >= 2
            prio[s] = {w: prio[s].get(w, max_p[s]) for w in m.windows()}  # new ones: max priority
        if pending is not None:  # ids drawn before this add
            state = update(state, *(one(x) for x in pending))
            for s in range(seeds):
                for i, p in zip(np.asarray(pending[0][s]).tolist(), pending[1][s].tolist()):
                    w = ((i // E - first_row // period) % modulus, i % E)
                    ignored += w not in prio[s]
                    if w in prio[s]:
                        prio[s][w], max_p[s] = np.float32(p), max(max_p[s], np.float32(p))
        leaves = np.asarray(sumtree.leaves(state.tree)).reshape(seeds, -1)
        for s in range(seeds):
            want = np.zeros(store.num_slots, np.float32)
            for (j, e), p in prio[s].items():
                want[((first_row // period + j) % laps) * E + e] = p
            np.testing.assert_allclose(
                leaves[s], want, rtol=1e-6, atol=0, err_msg=f"add {t}, seed {s}"
            )
            np.testing.assert_allclose(
                np.asarray(sumtree.total(state.tree)).reshape(-1)[s], want.sum(), rtol=1e-5
            )
        pending = None
        if all(prio):
            smp = sample(state, one(list(jax.random.split(jax.random.key(t), seeds))))
            assert (np.asarray(smp.weights) > 0).all(), f"add {t}: a draw of weight 0"
            ids = np.asarray(smp.indices).reshape(seeds, -1)
            pending = (
                [ids[s] for s in range(seeds)],
                [rng.uniform(0.1, 3.0, 16).astype(np.float32) for _ in range(seeds)],
            )
    assert jumped and ignored  # some add dropped several rows; some updates were stale


def test_sequence_priorities_match_numpy():
    rng = np.random.default_rng(0)
    td = np.abs(rng.normal(size=(5, 7))).astype(np.float32)
    mask = rng.random((5, 7)) > 0.3
    mask[2] = False
    for m in (None, mask):
        for eta in (0.9, 0.0, 1.0):
            got = np.asarray(mj.replay.sequence_priorities(td, m, eta=eta))
            mm = np.ones_like(mask) if m is None else m
            want = [
                eta * td[b][mm[b]].max() + (1 - eta) * td[b][mm[b]].mean() if mm[b].any() else 0.0
                for b in range(5)
            ]
            np.testing.assert_allclose(got, want, rtol=1e-6)
    with pytest.raises(ValueError, match=r"\[B, L\]"):
        mj.replay.sequence_priorities(td[0])
    with pytest.raises(ValueError, match="mask"):
        mj.replay.sequence_priorities(td, mask[:, :3])


@pytest.mark.parametrize("kind", ["uniform", "prioritized"])
def test_length_one_equals_one_copy(kind):
    """The same adds and keys give the same samples (items with a window axis of 1)."""
    rows = sequence_stream(25, seed=4)
    make = getattr(mj.replay, kind)
    seq = make(48, layout=mj.replay.sequence(E, 1, side_capacity=8))
    one = make(48, layout=mj.replay.one_copy(E, side_capacity=8))
    drop = ("carry",)
    s_state, o_state = seq.init(example_of(rows, drop)), one.init(example_of(rows, drop))
    s_add, o_add = jax.jit(seq.add), jax.jit(one.add)
    for t in range(25):
        s_state, o_state = (
            s_add(s_state, row_of(rows, t, drop)),
            o_add(o_state, row_of(rows, t, drop)),
        )
    assert int(s_state.count) == int(o_state.count)

    def sample_update(buf, state, key, window):
        smp = buf.sample(state, key, 32)
        return buf.update(state, smp.indices, jnp.abs(window(smp.items["obs"])[:, 0])), smp

    s_step = jax.jit(functools.partial(sample_update, seq, window=lambda x: x[:, 0]))
    o_step = jax.jit(functools.partial(sample_update, one, window=lambda x: x))
    for i in range(3):
        (s_state, a), (o_state, b) = (
            s_step(s_state, jax.random.key(i)),
            o_step(o_state, jax.random.key(i)),
        )
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_array_equal(a.weights, b.weights)
        for name, v in b.items.items():
            np.testing.assert_array_equal(a.items[name][:, 0], v, err_msg=name)


def test_per_window_storage_and_memory():
    ex = {
        "obs": jnp.zeros(4),
        "next_obs": jnp.zeros(4),
        "first": jnp.bool_(False),
        "action": jnp.int32(0),
        "reward": jnp.float32(0),
        "carry": jnp.zeros((2, 128)),
    }
    one_ex = {k: v for k, v in ex.items() if k not in ("first", "carry")}
    for make in (mj.replay.uniform, mj.replay.prioritized):
        seq = make(64_000, layout=mj.replay.sequence(16, 80, period=40, per_window=("carry",)))
        report = seq.memory(jax.eval_shape(seq.init, ex))
        fields = {f.name: f for f in report.fields}
        assert fields["carry"].total_bytes == 64_000 // 40 * 1024
        assert fields["carry"].bytes_per_item == pytest.approx(1024 / 40)
        assert fields["carry"].raw_bytes == 1024 and fields["first"].bytes_per_item == 1
        one = make(64_000, layout=mj.replay.one_copy(16))
        one_report = one.memory(jax.eval_shape(one.init, one_ex))
        without_carry = report.bytes_per_item - fields["carry"].bytes_per_item
        assert without_carry <= 1.05 * one_report.bytes_per_item, (str(report), str(one_report))


def test_capacity_for_sequences():
    ex = {"obs": jnp.zeros(4), "next_obs": jnp.zeros(4), "first": jnp.bool_(False)}
    layout = mj.replay.sequence(4, 5, period=3)
    cap = mj.replay.capacity_for(10_000, ex, layout=layout)
    assert cap % 12 == 0 and cap // 4 >= 5
    buf = lambda c: mj.replay.uniform(c, layout=layout)  # noqa: E731
    assert (
        mj.replay.buffer_bytes(buf, cap, ex) <= 10_000 < mj.replay.buffer_bytes(buf, cap + 12, ex)
    )


@pytest.fixture(scope="module")
def seeds_setup(filled):
    rows, layout, _ = filled
    other = sequence_stream(30, seed=12)
    buf = mj.replay.prioritized(
        48, layout=mj.replay.sequence(E, 3, period=3, side_capacity=8, per_window=("carry",))
    )
    return rows, other, buf


def stack(a, b):
    return jax.tree.map(lambda x, y: jnp.stack([x, y]), a, b)


def test_vmapped_adds_match_per_seed_adds(seeds_setup):
    rows, other, buf = seeds_setup
    both = jax.vmap(buf.init)(stack(example_of(rows), example_of(other)))
    singles = [buf.init(example_of(rows)), buf.init(example_of(other))]
    vadd, add = jax.jit(jax.vmap(buf.add)), jax.jit(buf.add)
    for t in range(30):
        both = vadd(both, stack(row_of(rows, t), row_of(other, t)))
        singles = [add(singles[0], row_of(rows, t)), add(singles[1], row_of(other, t))]
    for i in range(2):
        jax.tree.map(lambda v, s: np.testing.assert_array_equal(v[i], s), both, singles[i])
    keys = jax.random.split(jax.random.key(0), 2)
    sample = jax.jit(lambda s, k: buf.sample(s, k, 8))
    vs = jax.jit(jax.vmap(sample))(both, keys)
    for i in range(2):
        one = sample(singles[i], keys[i])
        jax.tree.map(
            lambda v, s: np.testing.assert_array_equal(v[i], s),
            (vs.items, vs.indices),
            (one.items, one.indices),
        )
        np.testing.assert_allclose(vs.weights[i], one.weights, rtol=1e-6)
    assert buf.memory(both).copies == 2


def test_scan_equals_python_loop(seeds_setup):
    rows, _, buf = seeds_setup
    data = jax.tree.map(lambda *x: jnp.stack(x), *[row_of(rows, t) for t in range(30)])

    def step(state, xs):
        row, key = xs
        state = buf.add(state, row)
        smp = buf.sample(state, key, 4)
        priorities = jnp.abs(smp.items["obs"][:, 0, 0]) + smp.items["carry"][:, 0] ** 2
        ok = buf.can_sample(state, 1)
        return jax.lax.cond(
            ok, lambda s: buf.update(s, smp.indices, priorities), lambda s: s, state
        ), ok

    keys = jax.random.split(jax.random.key(3), 30)
    scanned, _ = jax.jit(lambda s: jax.lax.scan(step, s, (data, keys)))(buf.init(example_of(rows)))
    state, jitted = buf.init(example_of(rows)), jax.jit(step)
    for t in range(30):
        state, _ = jitted(state, (row_of(rows, t), keys[t]))
    jax.tree.map(np.testing.assert_array_equal, scanned, state)


def test_donation_updates_in_place(hlo_copies):
    ex = {
        "obs": jnp.zeros(6),
        "next_obs": jnp.zeros(6),
        "first": jnp.bool_(False),
        "action": jnp.int32(0),
        "carry": jnp.zeros(5),
    }
    capacity, length = 4096 * E, 16
    buf = mj.replay.prioritized(
        capacity, layout=mj.replay.sequence(E, length, period=8, per_window=("carry",))
    )
    state = buf.init(ex)
    row = jax.tree.map(lambda x: jnp.ones((E, *x.shape), x.dtype), ex)
    big = [
        ("f32", (capacity, 6)),
        ("f32", (E, capacity // E, 6)),  # obs as stored: [num_envs, rows, ...]
        ("f32", (capacity // 8, 5)),
        ("u8", (capacity,)),
        ("u8", (E, capacity // E)),  # flags as stored
        ("s32", (capacity // 16,)),  # side_ids (the side store has capacity / 16 entries)
        ("s32", (capacity // E, 1)),  # side_start
        ("f32", tuple(state.tree.nodes.shape)),
    ]

    def learner_step(state, key):
        smp = buf.sample(state, key, 32)
        td = (
            jnp.abs(smp.items["obs"].sum(-1) - smp.items["next_obs"].sum(-1))
            + smp.items["carry"][:, :1]
        )
        return buf.update(state, smp.indices, mj.replay.sequence_priorities(td)), jnp.mean(
            smp.weights
        )

    add = jax.jit(buf.add, donate_argnums=0)
    step = jax.jit(learner_step, donate_argnums=0)
    assert hlo_copies(add.lower(state, row).compile().as_text(), big) == []
    assert hlo_copies(step.lower(state, jax.random.key(0)).compile().as_text(), big) == []
    assert len(hlo_copies(jax.jit(buf.add).lower(state, row).compile().as_text(), big)) >= 3
    two = jax.tree.map(lambda x: jnp.stack([x, x]), (state, row))  # two seeds: the vmap rules
    vadd = jax.jit(jax.vmap(buf.add), donate_argnums=0).lower(*two).compile().as_text()
    assert hlo_copies(vadd, [(dt, (2, *shape)) for dt, shape in big]) == []
    for t in range(length + 2):
        state = add(state, row)

    def pointers(s):
        return [
            x.unsafe_buffer_pointer() for x in (s.items["obs"], s.windows["carry"], s.tree.nodes)
        ]

    before = pointers(state)
    state, _ = step(state, jax.random.key(1))
    state = add(state, row)
    assert pointers(state) == before


def test_update_without_priorities():
    ex = {"obs": jnp.zeros(2), "next_obs": jnp.zeros(2), "first": jnp.bool_(False)}
    uni = mj.replay.uniform(8, layout=mj.replay.sequence(E, 2))
    state = uni.init(ex)
    assert uni.update(state, jnp.zeros((3,), jnp.int32), None) is state
    per = mj.replay.prioritized(8, layout=mj.replay.sequence(E, 2))
    with pytest.raises(TypeError, match="needs priorities"):
        per.update(per.init(ex), jnp.zeros((3,), jnp.int32), None)


def test_errors_are_clear():
    ex = {
        "obs": jnp.zeros(2),
        "next_obs": jnp.zeros(2),
        "first": jnp.bool_(False),
        "carry": jnp.zeros(3),
    }
    seq = mj.replay.sequence
    with pytest.raises(ValueError, match="length 7 is longer than the buffer's 6 rows"):
        mj.replay.uniform(24, layout=seq(E, 7))
    with pytest.raises(ValueError, match="length must be >= 1"):
        seq(E, 0)
    with pytest.raises(ValueError, match="period must be >= 1"):
        seq(E, 2, period=0)
    with pytest.raises(ValueError, match="must be a multiple of period=4"):
        mj.replay.uniform(24, layout=seq(E, 2, period=4))
    with pytest.raises(ValueError, match="multiple of num_envs"):
        mj.replay.uniform(26, layout=seq(E, 2))
    with pytest.raises(ValueError, match="'next_obs' is not stored separately"):
        mj.replay.uniform(24, codecs={"next_obs": mc.identity()}, layout=seq(E, 2))
    with pytest.raises(ValueError, match="'first' is kept as a flag bit"):
        mj.replay.uniform(24, codecs={"first": mc.identity()}, layout=seq(E, 2))
    with pytest.raises(TypeError, match="frame_stack"):
        seq(E, 2, frame_stack=4)
    with pytest.raises(ValueError, match="used twice"):
        seq(E, 2, per_window=("obs",))
    buf = mj.replay.uniform(24, layout=seq(E, 2, per_window=("carry",)))
    with pytest.raises(TypeError, match="'obs' and 'next_obs'"):
        buf.init({"obs": ex["obs"], "first": ex["first"], "carry": ex["carry"]})
    with pytest.raises(TypeError, match=r"\['first'\]"):
        buf.init({k: v for k, v in ex.items() if k != "first"})
    with pytest.raises(TypeError, match=r"\['carry'\]"):
        buf.init({k: v for k, v in ex.items() if k != "carry"})
    with pytest.raises(ValueError, match="'first' must be a bool scalar"):
        buf.init(dict(ex, first=jnp.float32(0)))
    state = buf.init(ex)
    row = jax.tree.map(lambda x: jnp.zeros((E, *x.shape), x.dtype), ex)
    with pytest.raises(ValueError, match="num_envs=4 items per add, got a batch of 2"):
        jax.jit(buf.add)(state, jax.tree.map(lambda v: v[:2], row))
    with pytest.raises(TypeError, match="structure"):
        buf.add(state, {k: v for k, v in row.items() if k != "carry"})
    with pytest.raises(ValueError, match="empty"):
        buf.sample(state, jax.random.key(0), 2)
    shapes_only = buf.memory(jax.eval_shape(buf.init, ex))
    assert math.isclose(buf.memory(state).bytes_per_item, shapes_only.bytes_per_item)


@pytest.mark.parametrize("num_envs", [1, 5, 64, 128, 129, 300])
def test_side_entries_compacted_in_env_order(num_envs):
    """The side store's slice write: each entry's rank among the lower envs' entries, their
    count, and the env of the i-th entry, on both paths ([E, E] masks up to 128 envs, a
    cumsum and a scatter beyond)."""
    from memjax.replay.row_ring import _compact

    rng = np.random.default_rng(num_envs)
    for p in (0.0, 0.1, 0.5, 1.0):
        differ = rng.random(num_envs) < p
        before, n, src = jax.jit(_compact)(jnp.asarray(differ))
        envs = np.flatnonzero(differ)
        assert int(n) == len(envs)
        np.testing.assert_array_equal(np.asarray(before), np.cumsum(differ) - differ)
        np.testing.assert_array_equal(np.asarray(src)[: len(envs)], envs)
        assert np.all((np.asarray(src) >= 0) & (np.asarray(src) < num_envs))
