"""CartPole without velocities: POPGym's ``PositionOnlyCartPole`` and
``NoisyPositionOnlyCartPole`` (Morad et al. 2023; popgym 1.0.7's
``position_only_cartpole.py``, ``noisy_position_only_cartpole.py``) on gymnax's CartPole-v1.

The dynamics, resets, termination and time limit are gymnax's ``CartPole-v1``, driven by the
same keys: only the observation changes, ``[x, theta]`` (cart position, pole angle) instead
of ``[x, x_dot, theta, theta_dot]``, so the velocities must be inferred from memory.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import spaces
from gymnax.environments.classic_control import cartpole


@struct.dataclass
class StatelessCartPoleParams(cartpole.EnvParams):
    """gymnax CartPole-v1's parameters (500 steps) and ``reward_scale``, each step's reward
    (POPGym's normalisation is ``1 / max_steps_in_episode``)."""

    reward_scale: float = 1.0


@struct.dataclass
class NoisyStatelessCartPoleParams(StatelessCartPoleParams):
    """noise_std: standard deviation of the Gaussian noise on each observed component
    (POPGym: 0.1 Easy, 0.2 Medium, 0.3 Hard)."""

    noise_std: float = 0.1


class StatelessCartPole(cartpole.CartPole):
    """CartPole-v1 observing only the cart position and the pole angle.

    POPGym (``PositionOnlyCartPole``): gymnasium's CartPole with observations ``[x, theta]``
    (Box +-[2 * 2.4, 2 * 12 degrees]); a time limit of 200 steps (Easy; 400 Medium, 600
    Hard) and a reward of 1/200 per step, so returns lie in [0, 1].

    Here: gymnax's CartPole-v1 (same dynamics and termination) with observations ``[x,
    theta]`` float32 [2], and CartPole-v1's 500-step limit and reward 1 per step by default,
    so returns are comparable with CartPole-v1's (best 500; a uniformly random policy about
    22). POPGym Easy is ``params.replace(max_steps_in_episode=200, reward_scale=1 / 200)``.
    """

    def __init__(self):
        super().__init__()
        self.obs_shape = (2,)

    @property
    def default_params(self) -> StatelessCartPoleParams:
        return StatelessCartPoleParams()

    def return_range(self, params=None) -> tuple:
        """``(None, best)``: the best return is the time limit times the reward per step; a
        random policy's expected return has no closed form (about 22 for CartPole-v1, by
        simulation), so it is not given (see :func:`memjax.envs.return_range`)."""
        params = self.default_params if params is None else params
        return None, float(params.max_steps_in_episode) * float(params.reward_scale)

    def get_obs(self, state: cartpole.EnvState, params=None, key=None) -> jax.Array:
        return jnp.array([state.x, state.theta])

    def step_env(self, key, state, action, params):
        obs, state, reward, done, info = super().step_env(key, state, action, params)
        return obs, state, reward * params.reward_scale, done, info

    def observation_space(self, params) -> spaces.Box:
        high = jnp.array([params.x_threshold * 2, params.theta_threshold_radians * 2], jnp.float32)
        return spaces.Box(-high, high, (2,), jnp.float32)

    @property
    def name(self) -> str:
        return "StatelessCartPole"


class NoisyStatelessCartPole(StatelessCartPole):
    """StatelessCartPole with Gaussian noise on the observations.

    POPGym (``NoisyPositionOnlyCartPole``): ``PositionOnlyCartPole``'s observation plus
    independent N(0, noise_std^2) noise per component and step (resets included), clipped
    to the observation space; noise_std 0.1 (Easy), 0.2 (Medium), 0.3 (Hard).

    Here: the same noise (``params.noise_std``, default 0.1) and clipping on
    :class:`StatelessCartPole` (CartPole-v1's 500 steps and reward 1 per step). The noise is
    drawn from ``fold_in(key, 1)`` of the step's or reset's key, so the cart moves exactly
    as in StatelessCartPole and CartPole-v1 under the same keys and actions, and
    ``noise_std = 0`` gives StatelessCartPole's observations.
    """

    @property
    def default_params(self) -> NoisyStatelessCartPoleParams:
        return NoisyStatelessCartPoleParams()

    def get_obs(self, state: cartpole.EnvState, params=None, key=None) -> jax.Array:
        """``[x, theta]``, plus clipped noise when ``params`` and ``key`` are given."""
        obs = super().get_obs(state)
        if params is None or key is None:
            return obs
        noise = params.noise_std * jax.random.normal(key, obs.shape, obs.dtype)
        space = self.observation_space(params)
        return jnp.clip(obs + noise, space.low, space.high)

    def step_env(self, key, state, action, params):
        _, state, reward, done, info = super().step_env(key, state, action, params)
        obs = jax.lax.stop_gradient(self.get_obs(state, params, jax.random.fold_in(key, 1)))
        return obs, state, reward, done, info

    def reset_env(self, key, params):
        _, state = super().reset_env(key, params)
        return self.get_obs(state, params, jax.random.fold_in(key, 1)), state

    @property
    def name(self) -> str:
        return "NoisyStatelessCartPole"


__all__ = [
    "StatelessCartPole",
    "NoisyStatelessCartPole",
    "StatelessCartPoleParams",
    "NoisyStatelessCartPoleParams",
]
