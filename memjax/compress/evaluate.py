"""Evaluating compressed Q-networks: greedy return and action agreement with the original.

:func:`evaluate` runs the trainer's greedy evaluation (:func:`memjax.train.evaluate`: one
episode per parallel environment, cut at ``max_steps_in_episode``, the same PRNG use) for any
network and any (compressed) parameter tree, so the teacher's numbers here equal the
trainer's. :func:`visited_states` rolls out a policy and keeps its observations;
:func:`agreement` is the fraction of those states where two networks pick the same greedy
action.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from memjax.agents import epsilon_greedy
from memjax.compress.core import apply
from memjax.envs import num_actions
from memjax.train.evaluation import evaluate as evaluate_policy


def evaluate(network, params, env, env_params, key, episodes: int = 100, epsilon: float = 0.0):
    """Returns of epsilon-greedy episodes of ``network`` run from plain or compressed ``params``.

    Args:
      network: the flax Q-network.
      params: its parameters, plain or compressed.
      env: a gymnax environment.
      env_params: its parameters.
      key: a PRNG key.
      episodes: episodes (= parallel environments).
      epsilon: exploration; 0 is greedy.

    Returns:
      float32 ``[episodes]``.
    """

    def greedy(carry, obs, key):
        return jnp.argmax(apply(network, params, obs), axis=-1).astype(jnp.int32), carry

    return evaluate_policy(
        greedy, (), env, env_params, key, episodes, num_actions(env, env_params), epsilon=epsilon
    ).returns


def visited_states(
    network,
    params,
    env,
    env_params,
    key,
    num_envs: int = 32,
    steps: int = 250,
    epsilon: float = 0.0,
):
    """The observations seen by ``network``'s epsilon-greedy policy in auto-resetting environments.

    Args:
      network: the flax Q-network.
      params: its parameters, plain or compressed.
      env: a gymnax environment.
      env_params: its parameters.
      key: a PRNG key.
      num_envs: parallel environments.
      steps: vector steps.
      epsilon: exploration; 0 is greedy.

    Returns:
      ``[steps * num_envs, *obs_shape]``.
    """
    vreset = jax.vmap(env.reset, in_axes=(0, None))
    vstep = jax.vmap(env.step, in_axes=(0, 0, 0, None))
    k_reset, key = jax.random.split(key)
    obs, env_state = vreset(jax.random.split(k_reset, num_envs), env_params)

    def body(carry, _):
        obs, env_state, key = carry
        key, k_act, k_env = jax.random.split(key, 3)
        actions = epsilon_greedy(k_act, apply(network, params, obs), epsilon)
        nobs, env_state, _, _, _, _ = vstep(
            jax.random.split(k_env, num_envs), env_state, actions, env_params
        )
        return (nobs, env_state, key), obs

    _, seen = jax.lax.scan(body, (obs, env_state, key), None, length=steps)
    return seen.reshape((-1,) + seen.shape[2:])


def agreement(network_a, params_a, network_b, params_b, obs):
    """Fraction of ``obs`` where the greedy actions of two networks agree.

    Args:
      network_a: the first flax Q-network.
      params_a: its parameters, plain or compressed.
      network_b: the second network.
      params_b: its parameters.
      obs: observations ``[N, *obs_shape]``.

    Returns:
      float32 scalar in [0, 1].
    """
    a = jnp.argmax(apply(network_a, params_a, obs), axis=-1)
    b = jnp.argmax(apply(network_b, params_b, obs), axis=-1)
    return jnp.mean(a == b)


__all__ = ["evaluate", "visited_states", "agreement"]
