"""bsuite's MemoryChain with a chosen memory length: gymnax's ``MemoryChain-bsuite`` (memory
length 5, a 1000-step time limit) made ``MemoryChain-<L>``, e.g. ``MemoryChain-20``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from gymnax.environments import spaces
from gymnax.environments.bsuite import memory_chain

from memjax._checks import check_positive_int

MemoryChainParams = memory_chain.EnvParams
MemoryChainState = memory_chain.EnvState


class MemoryChain(memory_chain.MemoryChain):
    """Remember a context bit for ``memory_length`` steps and name it at the end.

    bsuite (``memory_chain.py``, gymnax's ``MemoryChain-bsuite``): reset draws a context of
    ``num_bits`` random bits and a query (one of them). The observation is ``[1 - t / L,
    query (shown at t = L - 1 only), 2 * context - 1 (shown at t = 0 only)]``, where each
    step returns the observation of the time *before* it (bsuite computes it before
    advancing), so the context is seen on the reset and the first step. Steps ``0 .. L - 1``
    give reward 0; step ``L`` gives +1 if the action equals ``context[query]``, else -1, and
    terminates: ``L + 1`` steps per episode. Best return 1; any policy that does not
    remember the context 0 on average, a uniformly random one included.

    Here: gymnax's implementation as it is, with ``memory_length`` (default 20, against
    gymnax's 5) in the default params, a time limit of ``L + 1`` steps (the episode's
    length, so evaluation scans no further) that never fires together with the
    termination, an observation space whose bounds hold the context's -1, and the clock
    ``1 - t / L`` clipped to [0, 1] (XLA's float32 division leaves it at -1.5e-8 at t = L).
    """

    def __init__(self, memory_length: int = 20, num_bits: int = 1):
        super().__init__(num_bits=check_positive_int("num_bits", num_bits))
        self.memory_length = check_positive_int("memory_length", memory_length)

    @property
    def default_params(self) -> MemoryChainParams:
        return MemoryChainParams(
            memory_length=self.memory_length, max_steps_in_episode=self.memory_length + 1
        )

    def is_truncated(self, state: MemoryChainState, params: MemoryChainParams) -> jax.Array:
        """The time limit, where the episode did not terminate (never both at once)."""
        return (state.time >= params.max_steps_in_episode) & ~self.is_terminated(state, params)

    def get_obs(self, state: MemoryChainState, params: MemoryChainParams, key=None) -> jax.Array:
        obs = super().get_obs(state, params)
        return obs.at[0].set(jnp.clip(obs[0], 0.0, 1.0))

    def observation_space(self, params: MemoryChainParams) -> spaces.Box:
        low = jnp.array([0.0, 0.0] + [-1.0] * self.num_bits, jnp.float32)
        high = jnp.array([1.0, self.num_bits - 1.0] + [1.0] * self.num_bits, jnp.float32)
        return spaces.Box(low, high, (self.num_bits + 2,), jnp.float32)

    def memory_span(self, params=None) -> int:
        """``memory_length - 1``: the context bit is shown at the first step and named at the
        last (see :func:`memjax.envs.memory_span`)."""
        params = self.default_params if params is None else params
        return int(params.memory_length) - 1

    def return_range(self, params=None) -> tuple:
        """``(chance, best)``: a uniformly random policy names the bit right half the time
        (0 on average); the best return is 1, when the time limit lets the episode reach its
        last step (see :func:`memjax.envs.return_range`)."""
        params = self.default_params if params is None else params
        best = 1.0 if int(params.max_steps_in_episode) >= int(params.memory_length) + 1 else 0.0
        return best * (2.0 / self.num_actions - 1.0), best

    @property
    def name(self) -> str:
        return f"MemoryChain-{self.memory_length}"


__all__ = ["MemoryChain", "MemoryChainParams", "MemoryChainState"]
