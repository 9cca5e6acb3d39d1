"""memjax.envs.return_range: each partially observable task's chance-level (uniformly random
policy) and best return, from its rules; checked here against simulated episodes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memjax import envs


def _returns(env, params, policy, episodes=2000, seed=0):
    """Returns of ``episodes`` episodes, ``policy(key, state) -> action``, vmapped."""
    cap = int(params.max_steps_in_episode)

    def episode(key):
        k_reset, k_run = jax.random.split(key)
        _, state = env.reset(k_reset, params)

        def step(carry, k):
            state, total, done = carry
            k_act, k_step = jax.random.split(k)
            _, state, reward, term, trunc, _ = env.step(k_step, state, policy(k_act, state), params)
            return (state, total + jnp.where(done, 0.0, reward), done | term | trunc), None

        (_, total, _), _ = jax.lax.scan(step, (state, 0.0, False), jax.random.split(k_run, cap))
        return total

    return np.asarray(jax.jit(jax.vmap(episode))(jax.random.split(jax.random.key(seed), episodes)))


@pytest.mark.parametrize(
    "name", ["RepeatFirst", "RepeatPrevious-5", "CountRecall", "MemoryChain-5"]
)
def test_chance_is_a_random_policys_mean_return(name):
    env, params = envs.make(name)
    chance, best = envs.return_range(name)
    n = envs.num_actions(env, params)
    returns = _returns(env, params, lambda k, s: jax.random.randint(k, (), 0, n))
    assert returns.max() <= best + 1e-6
    assert abs(returns.mean() - chance) < 4 * returns.std() / np.sqrt(len(returns)) + 1e-6


def test_best_is_reached_by_a_policy_that_reads_the_state():
    env, params = envs.make("RepeatFirst")
    returns = _returns(env, params, lambda k, s: s.suits[0], episodes=16)
    np.testing.assert_allclose(returns, envs.return_range("RepeatFirst")[1], rtol=1e-5)
    env, params = envs.make("MemoryChain-5")
    returns = _returns(env, params, lambda k, s: s.context[s.query], episodes=16)
    np.testing.assert_allclose(returns, 1.0)


def test_ranges():
    assert envs.return_range("RepeatFirst") == (-0.5, 1.0)
    assert envs.return_range("CountRecall") == pytest.approx((-7 / 9, 1.0))
    assert envs.return_range("MemoryChain-20") == (0.0, 1.0)
    assert envs.return_range("StatelessCartPole") == (None, 500.0)
    assert envs.return_range("MultiCartPole") == (None, 500.0)
    env, params = envs.make("RepeatFirst")
    assert envs.return_range(envs.FrameStack(env, 4), params) == (-0.5, 1.0)
    # a shorter time limit scores fewer of the 31 steps
    assert envs.return_range(env, params.replace(max_steps_in_episode=15)) == pytest.approx(
        (-0.5 * 15 / 31, 15 / 31)
    )
    assert envs.return_range("Acrobot-v1") == (None, None)


def test_the_run_summary_reports_them():
    from memjax.train import TrainConfig, make_train
    from memjax.train.driver import return_range

    config = TrainConfig(
        env="RepeatFirst", num_envs=4, total_steps=2_000, learning_starts=400, buffer_capacity=1_000
    )
    assert return_range(make_train(config)) == {"chance_return": -0.5, "best_return": 1.0}
    cartpole = make_train(TrainConfig(num_envs=4, total_steps=2_000, learning_starts=400))
    assert return_range(cartpole) == {"best_return": 500.0}
