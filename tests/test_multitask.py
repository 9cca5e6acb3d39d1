"""memjax.envs.MultiTask against its definition: each task's dynamics are gymnax CartPole's
with that task's parameters (bit for bit, same keys), the one-hot is the episode's task,
resets draw / keep / schedule tasks as documented, the continual switch truncates at the
right steps; the loop's per-task bookkeeping against a Python replay of the same steps;
evaluation episode i on task i % T; clear errors."""

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnax.environments.classic_control import cartpole

import memjax as mj
from memjax.envs import multitask
from memjax.train.evaluation import evaluate as evaluate_policy

VARIANTS = ("default", "long", "heavy", "reversed")
STEPS = 60


def rollout(env, params, key, actions):
    """obs, reward, terminated, truncated of ``env.step`` over ``actions``, one key per step."""

    def body(state, xs):
        k, a = xs
        obs, state, reward, term, trunc, info = env.step(k, state, a, params)
        return state, (obs, reward, term, trunc, info["final_observation"])

    k0, *ks = jax.random.split(key, len(actions) + 1)
    obs0, state = env.reset(k0, params)
    _, out = jax.lax.scan(body, state, (jnp.stack(ks), actions))
    return obs0, out


@pytest.fixture(scope="module")
def rollouts():
    env = mj.envs.multi_cartpole(VARIANTS)
    params = env.default_params
    actions = jax.random.bernoulli(jax.random.key(1), 0.8, (STEPS,)).astype(jnp.int32)
    key = jax.random.key(7)
    ours = jax.jit(jax.vmap(lambda t: rollout(env, env.for_task(params, t), key, actions)))(
        jnp.arange(len(VARIANTS))
    )
    ref_env = cartpole.CartPole()
    stacked = jax.tree.map(
        lambda *x: jnp.stack([jnp.asarray(v) for v in x]),
        *[mj.envs.cartpole_variant(**multitask.CARTPOLE_VARIANTS[v]) for v in VARIANTS],
    )
    theirs = jax.jit(jax.vmap(lambda p: rollout(ref_env, p, key, actions)))(stacked)
    return ours, jax.tree.map(np.asarray, theirs)


def test_each_task_steps_like_gymnax_cartpole_with_its_params(rollouts):
    (obs0, (obs, reward, term, trunc, final)), theirs = rollouts
    for t in range(len(VARIANTS)):
        r_obs0, (r_obs, r_reward, r_term, r_trunc, r_final) = jax.tree.map(lambda x: x[t], theirs)
        np.testing.assert_array_equal(obs0[t, :4], r_obs0)
        np.testing.assert_array_equal(obs[t, :, :4], r_obs)
        np.testing.assert_array_equal(final[t, :, :4], r_final)
        np.testing.assert_array_equal(reward[t], r_reward)
        np.testing.assert_array_equal(term[t], r_term)
        np.testing.assert_array_equal(trunc[t], r_trunc)
        assert bool(r_term.any()), "the rollout should cross an episode end (auto-reset)"
        # the one-hot names the task, before and after every reset
        np.testing.assert_array_equal(obs[t, :, 4:], np.eye(len(VARIANTS))[[t] * STEPS])
    # the variants really differ
    assert not np.array_equal(obs[0], obs[1]) and not np.array_equal(obs[0], obs[3])


def test_variant_params_are_consistent():
    p = mj.envs.cartpole_variant(length=1.0, masspole=0.5)
    assert p.total_mass == pytest.approx(1.5) and p.polemass_length == pytest.approx(0.5)
    assert mj.envs.cartpole_variant() == cartpole.EnvParams()


def test_random_task_per_episode_uniform_and_kept_through_the_episode():
    env = mj.envs.multi_cartpole(VARIANTS)
    params = env.default_params
    n = 1000
    obs, state = jax.vmap(env.reset, in_axes=(0, None))(
        jax.random.split(jax.random.key(0), n), params
    )
    counts = np.bincount(np.asarray(state.task), minlength=4)
    chi2 = ((counts - n / 4) ** 2 / (n / 4)).sum()
    assert chi2 < 16.3, counts  # 3 dof, p = 0.001
    np.testing.assert_array_equal(np.argmax(obs[:, 4:], axis=1), state.task)
    # a step that does not end the episode keeps its task; an auto-reset draws again
    step = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def body(state, key):
        _, new, _, term, trunc, info = step(
            jax.random.split(key, n), state, jnp.ones(n, jnp.int32), params
        )
        return new, (state.task, info["task"], new.task, term | trunc)

    _, (before, stepped, after, done) = jax.jit(
        lambda s: jax.lax.scan(body, s, jax.random.split(jax.random.key(1), 40))
    )(state)
    before, stepped, after, done = map(np.asarray, (before, stepped, after, done))
    np.testing.assert_array_equal(stepped, before)
    np.testing.assert_array_equal(after[~done], before[~done])
    redrawn = np.bincount(after[done], minlength=4)
    assert redrawn.sum() > 400 and (redrawn > redrawn.sum() / 4 * 0.8).all(), redrawn


def test_continual_schedule_switches_at_the_right_steps():
    k, tasks = 7, ("default", "long", "reversed")
    env = mj.envs.multi_cartpole(tasks, switch_every=k)
    params = env.default_params
    n = 3 * k * 2 + 5  # twice through, then some
    actions = jax.random.bernoulli(jax.random.key(3), 0.5, (n,)).astype(jnp.int32)

    @jax.jit
    def run(state, params):
        def body(state, xs):
            key, a = xs
            obs, state, _, term, trunc, info = env.step(key, state, a, params)
            return state, (info["task"], state.task, state.clock, term, trunc, obs)

        return jax.lax.scan(body, state, (jax.random.split(jax.random.key(1), n), actions))[1]

    obs0, state = env.reset(jax.random.key(0), params)
    task, next_task, clock, term, trunc, obs = run(state, params)
    i = np.arange(n)
    np.testing.assert_array_equal(task, (i // k) % 3)  # step i plays (i // K) % T
    np.testing.assert_array_equal(clock, i + 1)  # kept through resets
    switch = (i + 1) % k == 0
    assert np.all(np.asarray(trunc)[switch])  # cut at every switch
    np.testing.assert_array_equal(np.asarray(trunc), switch)  # and only there (short run)
    np.testing.assert_array_equal(np.asarray(next_task)[switch], ((i[switch] + 1) // k) % 3)
    np.testing.assert_array_equal(np.argmax(np.asarray(obs)[:, 4:], axis=1), next_task)
    assert int(state.task) == 0 and np.argmax(obs0[4:]) == 0
    # a forced task: every episode in it (resets included), and no switch
    forced = env.for_task(params, 2)
    _, state = env.reset(jax.random.key(0), forced)
    task, next_task, _, term, trunc, _ = run(state, forced)
    assert np.all(np.asarray(task) == 2) and np.all(np.asarray(next_task) == 2)
    assert bool(np.any(term)) and not bool(np.any(trunc))


def test_task_input_off_and_spaces():
    env = mj.envs.multi_cartpole(("default", "long"), task_input=False)
    obs, _ = env.reset(jax.random.key(0), env.default_params)
    assert obs.shape == (4,)
    env = mj.envs.multi_cartpole(("default", "long"))
    space = env.observation_space(env.default_params)
    assert space.shape == (6,) and float(space.high[5]) == 1.0 and float(space.low[4]) == 0.0
    assert env.num_actions == 2 and env.action_space(env.default_params).n == 2
    assert mj.envs.observation_shape(env, env.default_params) == (6,)


def test_registry_names():
    env, params = mj.envs.make("MultiCartPole")
    assert env.names == multitask.DEFAULT_CARTPOLE_TASKS and env.switch_every is None
    env, _ = mj.envs.make("ContinualCartPole-500:short,heavy")
    assert env.names == ("short", "heavy") and env.switch_every == 500
    assert env.name == "ContinualCartPole-500:short,heavy"


def test_bad_settings_give_clear_errors():
    with pytest.raises(ValueError, match="unknown CartPole variant 'tall'.*known: default"):
        mj.envs.make("MultiCartPole:default,tall")
    with pytest.raises(ValueError, match="task names must differ"):
        mj.envs.make("MultiCartPole:long,long")
    with pytest.raises(ValueError, match="unknown environment.*MultiCartPole"):
        mj.envs.make("MultiCartpole")
    with pytest.raises(ValueError, match="observes float32\\[2\\].*same observation shape"):
        mj.envs.from_envs([mj.envs.make("CartPole-v1"), mj.envs.make("StatelessCartPole")])
    with pytest.raises(ValueError, match="5 actions.*3; every task must have the same actions"):
        mj.envs.from_envs([gymnax.make("Breakout-MinAtar"), gymnax.make("Asterix-MinAtar")])
    with pytest.raises(ValueError, match="one environment class with one configuration"):
        mj.envs.from_envs(
            [mj.envs.make("MemoryChain-3"), mj.envs.make("MemoryChain-5")], names=["a", "b"]
        )
    with pytest.raises(TypeError, match="task 'b'.s parameters"):
        mj.envs.MultiTask(
            cartpole.CartPole(), [cartpole.EnvParams(), {"gravity": 1.0}], names=["a", "b"]
        )
    with pytest.raises(ValueError, match="at least one"):
        mj.envs.MultiTask(cartpole.CartPole(), [])
    with pytest.raises(ValueError, match="switch_every must be >= 1"):
        mj.envs.multi_cartpole(switch_every=0)
    with pytest.raises(ValueError, match="tasks \\(3,\\) for returns \\(2, 4\\)"):
        mj.envs.task_means(np.zeros((2, 4)), np.zeros(3, int), 2)


def test_task_means_against_python():
    rng = np.random.default_rng(0)
    returns, tasks = rng.random((3, 10)), np.arange(10) % 4
    got = mj.envs.task_means(returns, tasks, 5)
    for s in range(3):
        for t in range(4):
            assert got[s, t] == pytest.approx(
                np.mean([returns[s, i] for i in range(10) if tasks[i] == t])
            )
        assert np.isnan(got[s, 4])


# -------------------------------------------------------------------- the training loop


@pytest.fixture(scope="module")
def trainer():
    cfg = mj.train.TrainConfig(
        env="MultiCartPole",
        num_envs=6,
        total_steps=1200,
        learning_starts=600,
        batch_size=16,
        buffer_capacity=600,
        chunk_steps=600,
        eval_episodes=6,
        eval_max_steps=40,
        agent=mj.agents.DQNConfig(hidden=(16,)),
    )
    return mj.train.make_train(cfg)


def test_loop_per_task_returns_against_a_python_replay(trainer):
    """The warm-up's per-task metrics equal sums over the same steps replayed one by one."""

    def body(s, _):
        tasks = s.env_state.task
        s, (_, done, finished) = trainer.env_step(s, random_actions=True)
        return s, (tasks, done, finished)

    @jax.jit
    def both(key):
        state = trainer.init(key)
        replay = jax.lax.scan(body, state, None, length=trainer.config.warmup_vec_steps)[1]
        return trainer.collect(state)[1], replay

    metrics, (tasks, done, finished) = both(jax.random.key(0))
    sums, counts = np.zeros(4), np.zeros(4, int)
    for t, d, f in zip(
        np.asarray(tasks).ravel(), np.asarray(done).ravel(), np.asarray(finished).ravel()
    ):
        if d:
            sums[t] += f
            counts[t] += 1
    assert counts.min() > 0 and counts.sum() == int(metrics["episodes"])
    np.testing.assert_array_equal(metrics["task_episodes"], counts)
    np.testing.assert_allclose(metrics["task_episode_return"], sums / counts, rtol=1e-6)


def test_evaluation_episode_i_plays_task_i_mod_T(trainer):
    """Against each task evaluated on its own (2 episodes each, keys split per task): the
    returns interleave task by task and keep the first eval_episodes."""

    @jax.jit
    def both(key):
        agent = trainer.init(jax.random.key(1)).agent

        def policy(carry, obs, k):
            return trainer.agent.act(agent, carry, obs, k, 0, True)[:2]

        per = jax.vmap(
            lambda t, k: (
                evaluate_policy(
                    policy,
                    (),
                    trainer.env,
                    trainer.env.for_task(trainer.env_params, t),
                    k,
                    2,
                    2,
                    max_steps=40,
                ).returns
            )
        )(jnp.arange(4), jax.random.split(key, 4))  # [tasks, 2]
        return trainer.evaluate(agent, key).returns, per

    got, per = both(jax.random.key(2))
    np.testing.assert_array_equal(got, np.asarray(per).T.reshape(-1)[:6])
    assert len(set(np.asarray(per).ravel().tolist())) > 1  # not all equal
    assert trainer.num_tasks == 4


def test_train_reports_eval_tasks_and_chunk_metrics_per_task(trainer):
    shapes = jax.eval_shape(jax.vmap(trainer), jax.random.split(jax.random.key(0), 2))[1]
    assert shapes["eval_task"].shape == (2, 6)
    assert shapes["train"]["task_episode_return"].shape == (2, 1, 4)
    assert shapes["train"]["task_episodes"].shape == (2, 1, 4)


def test_results_get_a_per_task_section_and_plot(tmp_path):
    """``memjax train`` on a MultiTask env: summary.json's per_task section against NumPy."""
    import json

    from memjax.train import results

    rng = np.random.default_rng(0)
    task_returns = rng.random((3, 2, 4)) * 100  # [points, seeds, tasks]
    task_returns[-1, 0, 3] = np.nan  # no episode of task 3
    episodes = rng.integers(1, 5, (3, 2, 4))
    episodes[-1, 0, 3] = 0
    greedy = rng.random((3, 2, 4)) * 500  # eval_task_return
    curves = {
        "steps": [10, 20, 30],
        "eval_return": rng.random((3, 2)),
        "train_return": rng.random((3, 2)),
        "eval_unfinished": [0, 0, 0],
        "task_episode_return": task_returns,
        "task_episodes": episodes,
        "eval_task_return": greedy,
    }
    results.write_all(tmp_path, {"env": "MultiCartPole"}, curves)
    per_task = json.loads((tmp_path / "summary.json").read_text())["per_task"]
    np.testing.assert_allclose(per_task["final_return_mean"], greedy[-1].mean(axis=0))
    np.testing.assert_allclose(per_task["final_return_per_seed"], greedy[-1])
    want = [task_returns[-1, :, t][~np.isnan(task_returns[-1, :, t])].mean() for t in range(4)]
    np.testing.assert_allclose(per_task["train_return_last_chunk_mean"], want)
    assert per_task["train_episodes_last_chunk"] == episodes[-1].sum(axis=0).tolist()
    assert per_task["train_return_last_chunk_per_seed"][0][3] is None and per_task["tasks"] == 4
    assert (tmp_path / "curve_tasks.png").stat().st_size > 0
    saved = json.loads((tmp_path / "returns.json").read_text())
    assert np.asarray(saved["task_episodes"]).shape == (3, 2, 4)


def test_memjax_train_reports_greedy_returns_per_task(tmp_path):
    """``mj.train.run`` on MultiCartPole: every evaluation keeps its greedy return per task
    ([points, seeds, tasks]); with eval_episodes a multiple of the task count their mean over
    tasks is the evaluation's mean; summary.json's per_task section holds the last one."""
    import json

    cfg = mj.train.TrainConfig(
        env="MultiCartPole",
        num_envs=6,
        total_steps=1200,
        learning_starts=600,
        batch_size=16,
        buffer_capacity=600,
        chunk_steps=600,
        eval_episodes=8,
        eval_max_steps=40,
        agent=mj.agents.DQNConfig(hidden=(16,)),
    )
    summary = mj.train.run(
        cfg, num_seeds=2, out_dir=tmp_path, progress=False, log=None, checkpoint_every=0
    )
    curves = summary["curves"]
    per_task = np.asarray(curves["eval_task_return"])
    assert per_task.shape == (len(curves["steps"]), 2, 4)
    np.testing.assert_allclose(per_task.mean(axis=-1), curves["eval_return"], rtol=1e-6)
    saved = json.loads((tmp_path / "summary.json").read_text())["per_task"]
    np.testing.assert_allclose(saved["final_return_per_seed"], per_task[-1])
    np.testing.assert_allclose(saved["final_return_mean"], per_task[-1].mean(axis=0))
    assert (tmp_path / "curve_tasks.png").stat().st_size > 0
