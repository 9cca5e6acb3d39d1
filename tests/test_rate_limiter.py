"""memjax.replay.sample_to_insert_ratio against a plain-Python model of Reverb's rules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import memjax as mj


class ReverbModel:
    """Reverb's SampleToInsertRatio (rate_limiter.cc), in Python floats."""

    def __init__(self, spi, min_size, error_buffer):
        self.spi, self.min_size = spi, min_size
        if isinstance(error_buffer, (tuple, list)):
            self.min_diff, self.max_diff = error_buffer
        else:
            offset = spi * min_size
            self.min_diff, self.max_diff = offset - error_buffer, offset + error_buffer
        self.inserts = self.samples = self.deletes = 0

    def can_insert(self, n):
        if self.inserts + n - self.deletes <= self.min_size:
            return True
        return (n + self.inserts) * self.spi - self.samples <= self.max_diff

    def can_sample(self, n):
        if self.inserts - self.deletes < self.min_size:
            return False
        return self.inserts * self.spi - self.samples - n >= self.min_diff

    def samples_allowed(self):
        return max([0] + [n for n in range(1, 2000) if self.can_sample(n)])

    def inserts_allowed(self):
        return max([0] + [n for n in range(1, 2000) if self.can_insert(n)])


SETTINGS = [  # (samples_per_insert, min_size, error_buffer, insert_size, sample_size)
    (12.8, 100, 128.0, 10, 128),
    (0.5, 8, 4.0, 2, 1),
    (4.0, 20, (50.0, 130.0), 3, 5),
    (1.0, 5, 2.0, 1, 1),
    (0.25, 16, (0.5, 9.5), 2, 2),
]


@pytest.mark.parametrize("setting", SETTINGS, ids=[str(s[:3]) for s in SETTINGS])
def test_matches_reverbs_rules(setting):
    spi, min_size, eb, ins, smp = setting
    lim = mj.replay.sample_to_insert_ratio(spi, min_size, eb, insert_size=ins, sample_size=smp)
    ref = ReverbModel(spi, min_size, eb)
    assert (lim.min_diff, lim.max_diff) == (ref.min_diff, ref.max_diff)
    can_insert = jax.jit(lim.can_insert)
    can_sample = jax.jit(lim.can_sample)
    record_insert, record_sample = jax.jit(lim.record_insert), jax.jit(lim.record_sample)
    record_delete = jax.jit(lim.record_delete)
    allowed = jax.jit(lambda s: (lim.samples_allowed(s), lim.inserts_allowed(s)))
    state = lim.init()
    rng = np.random.default_rng(0)
    for step in range(300):
        for n in (1, ins, smp, 7):
            assert bool(can_insert(state, n)) == ref.can_insert(n), (step, n)
            assert bool(can_sample(state, n)) == ref.can_sample(n), (step, n)
        s_allowed, i_allowed = (int(x) for x in allowed(state))
        assert s_allowed == ref.samples_allowed()
        assert min(i_allowed, 1999) == ref.inserts_allowed()
        # a caller that follows the limiter, inserting ins at a time and sampling smp at a time;
        # now and then a delete
        r = rng.random()
        if r < 0.05 and ref.inserts - ref.deletes > 0:
            state, ref.deletes = record_delete(state, 1), ref.deletes + 1
        elif ref.can_sample(smp) and (r < 0.6 or not ref.can_insert(ins)):
            state, ref.samples = record_sample(state, smp), ref.samples + smp
        else:
            assert ref.can_insert(ins), f"deadlock at step {step}"
            state, ref.inserts = record_insert(state, ins), ref.inserts + ins
    assert int(state.inserts) == ref.inserts and int(state.samples) == ref.samples


def test_ratio_is_kept_in_a_compiled_loop():
    """A scan that inserts 10 items per step and samples batches of 128 while allowed keeps
    sampled / inserted within the error buffer of 12.8."""
    lim = mj.replay.sample_to_insert_ratio(12.8, 1000, 200.0, insert_size=10, sample_size=128)

    def step(state, _):
        state = lim.record_insert(state, 10)
        batches = lim.samples_allowed(state) // 128
        return lim.record_sample(state, batches * 128), batches

    state, batches = jax.jit(lambda s: jax.lax.scan(step, s, None, length=5000))(lim.init())
    inserts, samples = int(state.inserts), int(state.samples)
    assert inserts == 50_000
    assert abs(inserts * 12.8 - samples - 1000 * 12.8) <= 200
    assert set(np.unique(np.asarray(batches)).tolist()) <= {0, 1, 2}
    # vmapped limiters are independent states
    states = jax.vmap(lambda _: lim.init())(jnp.arange(3))
    states = jax.vmap(lim.record_insert)(states, jnp.array([1, 2, 3]))
    assert np.asarray(states.inserts).tolist() == [1, 2, 3]


def test_exact_counting_over_long_runs():
    """1/3 sample per insert: after 3 million inserts and 1 million samples the diff is exactly
    0 (float counters would drift)."""
    lim = mj.replay.sample_to_insert_ratio(1 / 3, 30, 2.0)
    state = lim.record_sample(lim.record_insert(lim.init(), 3_000_000), 1_000_000)
    assert int(state.diff) == 0
    assert int(lim.samples_allowed(state)) == 0  # diff 0, min_diff = 10 - 2
    assert lim.denominator == 3


def test_settings_that_deadlock_are_refused():
    with pytest.raises(ValueError, match="at least 256 .*deadlock.*error_buffer=128"):
        mj.replay.sample_to_insert_ratio(12.8, 1000, 100.0, insert_size=10, sample_size=128)
    with pytest.raises(ValueError, match="2 \\* max\\(1, samples_per_insert\\)"):
        mj.replay.sample_to_insert_ratio(4.0, 10, 3.0)  # Reverb's own rule
    with pytest.raises(ValueError, match="sampling could never start"):
        mj.replay.sample_to_insert_ratio(1.0, 10, (11.0, 30.0))
    with pytest.raises(ValueError, match="insert that reaches min_size_to_sample"):
        mj.replay.sample_to_insert_ratio(1.0, 10, (0.0, 10.0), insert_size=4)
    with pytest.raises(ValueError, match="samples_per_insert must be > 0"):
        mj.replay.sample_to_insert_ratio(0.0, 10, 5.0)
    with pytest.raises(ValueError, match="min_size_to_sample must be >= 1"):
        mj.replay.sample_to_insert_ratio(1.0, 0, 5.0)
    with pytest.raises(ValueError, match="error_buffer must be >= 0"):
        mj.replay.sample_to_insert_ratio(1.0, 10, -1.0)
    with pytest.raises(TypeError, match="error_buffer"):
        mj.replay.sample_to_insert_ratio(1.0, 10, "wide")
    with pytest.raises(ValueError, match="too fine"):
        mj.replay.sample_to_insert_ratio(0.123457, 100000, 50000.0)


@pytest.mark.parametrize(
    "spi,ins,batch",
    [(12.8, 10, 128), (6.4, 10, 128), (4.0, 10, 128), (12.7, 10, 128), (0.5, 1, 4), (3.0, 4, 6)],
)
def test_steady_schedule_is_the_greedy_callers(spi, ins, batch):
    """The static schedule the training loop uses equals a greedy caller of the Reverb model,
    period after period."""
    min_size = 100
    e = max(spi * ins + batch, 2 * max(1, spi)) / 2 + (ins - 1) * spi + 3
    lim = mj.replay.sample_to_insert_ratio(spi, min_size, e, insert_size=ins, sample_size=batch)
    from memjax.replay.rate_limiter import steady_schedule

    backlog, pattern = steady_schedule(lim, ins, batch, inserts=min_size)
    assert sum(pattern) * batch == pytest.approx(len(pattern) * ins * spi)
    ref = ReverbModel(spi, min_size, e)
    ref.inserts = min_size
    taken = 0
    while ref.can_sample(batch):
        ref.samples += batch
        taken += 1
    assert taken == backlog
    for period in range(3):
        for want in pattern:
            assert ref.can_insert(ins)
            ref.inserts += ins
            got = 0
            while ref.can_sample(batch):
                ref.samples += batch
                got += 1
            assert got == want
