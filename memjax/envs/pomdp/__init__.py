"""The partially observable task suite: POPGym's tasks and bsuite's MemoryChain as pure-JAX
gymnax 1.x environments (``memjax.envs.make(NAME)``, ``memjax train --env NAME``).

| name | what the agent must remember | best / uniformly random return |
|---|---|---|
| ``StatelessCartPole`` | velocities, from positions ``[x, theta]`` | 500 / about 22 |
| ``NoisyStatelessCartPole`` | the same, with N(0, 0.1^2) noise on them | 500 / about 22 |
| ``RepeatFirst`` | the first card's suit, for 31 steps | 1 / -0.5 |
| ``RepeatPrevious`` | the suits of the last 8 cards (k = 8), 24 scored steps | 1 / -0.5 |
| ``RepeatPrevious-<k>`` | the same for k cards (``RepeatPrevious-5``: 27 scored) | 1 / -0.5 |
| ``CountRecall`` | how many cards of each of 2 values were dealt, 15 steps | 1 / -7/9 |
| ``MemoryChain-<L>`` | one bit for ``L`` steps (``MemoryChain-20``: 21 steps) | 1 / 0 |

Each class's docstring gives POPGym's (or bsuite's) definition and where ours differs.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from memjax.envs.pomdp.cards import (
    CardParams,
    CountRecall,
    CountState,
    RepeatFirst,
    RepeatPrevious,
    RepeatPreviousParams,
    SuitState,
)
from memjax.envs.pomdp.cartpole import (
    NoisyStatelessCartPole,
    NoisyStatelessCartPoleParams,
    StatelessCartPole,
    StatelessCartPoleParams,
)
from memjax.envs.pomdp.memory_chain import MemoryChain, MemoryChainParams, MemoryChainState

ENVIRONMENTS: dict[str, Callable] = {
    "StatelessCartPole": StatelessCartPole,
    "NoisyStatelessCartPole": NoisyStatelessCartPole,
    "RepeatFirst": RepeatFirst,
    "RepeatPrevious": RepeatPrevious,
    "CountRecall": CountRecall,
}
"""Names of the suite's environments with a fixed configuration -> their classes."""

MEMORY_CHAIN = "MemoryChain-<L>"
_MEMORY_CHAIN = re.compile(r"MemoryChain-([1-9][0-9]*)")
REPEAT_PREVIOUS = "RepeatPrevious-<k>"
_REPEAT_PREVIOUS = re.compile(r"RepeatPrevious-([1-9][0-9]*)")


def names() -> list:
    """The suite's names, ``MemoryChain-<L>`` standing for any memory length L >= 1 and
    ``RepeatPrevious-<k>`` for any k in ``1 .. 31``."""
    return [*ENVIRONMENTS, MEMORY_CHAIN, REPEAT_PREVIOUS]


def make(name: str):
    """``(env, env_params)`` for a name of the suite (the class's default parameters, with
    ``k`` set for ``RepeatPrevious-<k>``), or None for another name.

    Raises ``ValueError`` for ``RepeatPrevious-<k>`` with k outside ``1 .. num_cards - 1``."""
    if name in ENVIRONMENTS:
        env = ENVIRONMENTS[name]()
        return env, env.default_params
    if (match := _MEMORY_CHAIN.fullmatch(name)) is not None:
        env = MemoryChain(memory_length=int(match.group(1)))
        return env, env.default_params
    if (match := _REPEAT_PREVIOUS.fullmatch(name)) is not None:
        env, k = RepeatPrevious(), int(match.group(1))
        if k >= env.num_cards:
            raise ValueError(
                f"{name}: k must lie in 1 .. {env.num_cards - 1} (the deck has "
                f"{env.num_cards} cards), got {k}"
            )
        return env, env.default_params.replace(k=k)
    return None


__all__ = [
    "make",
    "names",
    "ENVIRONMENTS",
    "MEMORY_CHAIN",
    "REPEAT_PREVIOUS",
    "StatelessCartPole",
    "NoisyStatelessCartPole",
    "RepeatFirst",
    "RepeatPrevious",
    "CountRecall",
    "MemoryChain",
    "StatelessCartPoleParams",
    "NoisyStatelessCartPoleParams",
    "CardParams",
    "RepeatPreviousParams",
    "SuitState",
    "CountState",
    "MemoryChainParams",
    "MemoryChainState",
]
