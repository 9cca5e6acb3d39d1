"""gymnax environment wrappers.

``FrameStack(env, k)`` makes observations the last k frames concatenated along the last
axis, oldest first: a CartPole observation ``[4]`` becomes ``[4k]``, a MinAtar one
``[10, 10, C]`` becomes ``[10, 10, C*k]``. An episode's first observation repeats its first
frame k times. It wraps ``step_env``/``reset_env`` so gymnax's own ``step`` still auto-resets and
puts the stacked final observation in ``info["final_observation"]``. These are exactly the
stacks ``memjax.replay.one_copy(num_envs, frame_stack=k)`` de-duplicates:

```python
env, params = gymnax.make("Breakout-MinAtar")
env = mj.envs.FrameStack(env, 4)              # obs [10, 10, 16]
```
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

from memjax._checks import check_positive_int


@struct.dataclass
class FrameStackState:
    """The state of a :class:`FrameStack` environment.

    Attributes:
      inner: the wrapped environment's state.
      frames: the stacked observation ``[..., C*k]``.
      time: the inner state's step counter (gymnax reads ``state.time``).
    """

    inner: Any
    frames: jax.Array
    time: jax.Array


class FrameStack(environment.Environment):
    """Stack the last ``k`` observations of a gymnax environment along the last axis.

    A gymnax ``Environment`` itself: observations ``[..., C]`` of ``env`` become ``[..., C*k]``,
    oldest frame first, and an episode's first observation repeats its first frame; actions,
    rewards, termination and truncation are ``env``'s. Its observation space is ``env``'s with
    the bounds repeated k times (``ValueError`` for observations without an axis).

    Args:
      env: a gymnax environment.
      k: frames per observation, a Python int >= 1.

    Raises:
      TypeError: ``k`` is not a Python int.
      ValueError: ``k`` < 1.
    """

    def __init__(self, env: environment.Environment, k: int):
        super().__init__()
        self.env = env
        self.k = check_positive_int("k", k)

    @property
    def name(self) -> str:
        return f"{getattr(self.env, 'name', type(self.env).__name__)}-stack{self.k}"

    @property
    def num_actions(self) -> int:
        return self.env.num_actions

    @property
    def default_params(self):
        return self.env.default_params

    def action_space(self, params=None):
        return self.env.action_space(params)

    def observation_space(self, params):
        inner = self.env.observation_space(params)
        shape = tuple(inner.shape)
        if not shape:
            raise ValueError("FrameStack needs observations with at least one axis")
        low, high = (
            jnp.concatenate([jnp.broadcast_to(jnp.asarray(b), shape)] * self.k, axis=-1)
            for b in (inner.low, inner.high)
        )
        return spaces.Box(low, high, (*shape[:-1], shape[-1] * self.k), inner.dtype)

    def is_truncated(self, state: FrameStackState, params) -> jax.Array:
        return self.env.is_truncated(state.inner, params)

    def reset_env(self, key, params):
        obs, inner = self.env.reset_env(key, params)
        frames = jnp.concatenate([obs] * self.k, axis=-1)
        return frames, FrameStackState(inner, frames, inner.time)

    def step_env(self, key, state: FrameStackState, action, params):
        obs, inner, reward, done, info = self.env.step_env(key, state.inner, action, params)
        c = obs.shape[-1]
        frames = jnp.concatenate([state.frames[..., c:], obs], axis=-1)
        return frames, FrameStackState(inner, frames, inner.time), reward, done, info
