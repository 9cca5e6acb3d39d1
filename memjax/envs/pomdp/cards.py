"""POPGym's card games as gymnax environments: ``RepeatFirst``, ``RepeatPrevious``,
``CountRecall`` (Morad et al. 2023, "POPGym: Benchmarking Partially Observable Reinforcement
Learning"; popgym 1.0.7's ``repeat_first.py``, ``repeat_previous.py``, ``count_recall.py``).

A game shuffles a deck at reset and shows one card per step; the episode ends (terminated)
when the last card is shown, after ``num_cards - 1`` steps. Every reward is +-1 over the
number of rewarded steps, so an episode's return lies in [-1, 1]: 1 for the best policy,
``2 / num_suits - 1`` (-0.5 with 4 suits) for a uniformly random one in the Repeat games.

Observations are float32 one-hot codes of what POPGym shows (a suit, or a value and a query
value) followed by an "is first" flag, 1 on an episode's first observation only: POPGym's
``Antialias`` wrapper, which its baselines apply to every environment. The deck lives in the
state (its cards in dealing order), so every shape is fixed and a whole episode is a pure
function of the reset key.

The decks are smaller than POPGym's 52 cards (and its multiples), so a recurrent agent learns
the games in minutes on a CPU; the constructors take POPGym's sizes too (see each class).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces

from memjax._checks import check_positive_int


@struct.dataclass
class CardParams(environment.EnvParams):
    """max_steps_in_episode: a time limit (truncation); the default is the deck's length
    (``num_cards - 1`` steps), where the game terminates anyway."""

    max_steps_in_episode: int = 31


@struct.dataclass
class RepeatPreviousParams(CardParams):
    """k: the agent repeats the suit of the k-th most recent card it has seen, the current
    one counted (k = 1: the current card); ``1 <= k < num_cards``."""

    k: int = 8


@struct.dataclass
class SuitState(environment.EnvState):
    """time: int32 steps taken; the card shown is ``suits[time]``. suits: int32
    [num_cards], the suit of each card in dealing order."""

    time: jax.Array
    suits: jax.Array


@struct.dataclass
class CountState(environment.EnvState):
    """time: int32 steps taken; values / queries: int32 [num_cards], the value deck and the
    query deck in dealing order (the step-``t`` observation shows ``values[t]`` and
    ``queries[t]``)."""

    time: jax.Array
    values: jax.Array
    queries: jax.Array


def _one_hot(x, n):
    return jax.nn.one_hot(x, n, dtype=jnp.float32)


class _CardGame(environment.Environment):
    """What the card games share: a deck of ``num_cards`` cards dealt one per step, the end
    when the last card is shown, the "is first" flag, and Box(0, 1) observations."""

    num_cards: int
    obs_size: int

    def _params(self, **fields) -> CardParams:
        raise NotImplementedError

    @property
    def default_params(self):
        return self._params(max_steps_in_episode=self.num_cards - 1)

    def _steps(self, params) -> int:
        """Steps of an episode under ``params``: the deck's, or the time limit's if shorter."""
        return min(int(params.max_steps_in_episode), self.num_cards - 1)

    def return_range(self, params=None) -> tuple:
        """``(chance, best)``: the expected return of a uniformly random policy and the
        largest return, from the game's rules (see :func:`memjax.envs.return_range`)."""
        params = self.default_params if params is None else params
        best = self._scored_steps(params) * self._scale(params)
        return best * (2.0 / self.num_actions - 1.0), best

    def _scored_steps(self, params) -> int:
        return self._steps(params)

    def memory_span(self, params=None) -> int:
        """How many steps back an optimal policy must remember: the whole episode (the
        first card, or every count since it; see :func:`memjax.envs.memory_span`)."""
        return self._steps(self.default_params if params is None else params)

    def _scale(self, params) -> float:
        return 1.0 / (self.num_cards - 1)

    def _first_flag(self, state):
        return (state.time == 0).astype(jnp.float32)[None]

    def is_terminated(self, state, params) -> jax.Array:
        """The last card is shown: ``num_cards - 1`` steps were taken."""
        return state.time >= self.num_cards - 1

    def is_truncated(self, state, params) -> jax.Array:
        """The time limit, where the game did not end by itself (never both at once)."""
        return (state.time >= params.max_steps_in_episode) & ~self.is_terminated(state, params)

    def _finish(self, state, reward, params):
        done = self.is_terminated(state, params)
        info = {"discount": 1.0 - done.astype(jnp.float32)}
        return (
            jax.lax.stop_gradient(self.get_obs(state, params)),
            jax.lax.stop_gradient(state),
            reward.astype(jnp.float32),
            done,
            info,
        )

    def observation_space(self, params=None) -> spaces.Box:
        return spaces.Box(0.0, 1.0, (self.obs_size,), jnp.float32)

    def action_space(self, params=None) -> spaces.Discrete:
        return spaces.Discrete(self.num_actions)


class _SuitGame(_CardGame):
    """A deck of ``num_suits`` suits x ``num_ranks`` ranks; the observation is the shown
    card's suit one-hot, then the flag; the actions are the suits."""

    def __init__(self, num_suits: int = 4, num_ranks: int = 8):
        super().__init__()
        self.num_suits = check_positive_int("num_suits", num_suits)
        self.num_ranks = check_positive_int("num_ranks", num_ranks)
        self.num_cards = self.num_suits * self.num_ranks
        if self.num_cards < 2:
            raise ValueError(
                f"a deck needs at least 2 cards, got {num_suits} suits x {num_ranks} ranks"
            )
        self.obs_size = self.num_suits + 1
        # POPGym's order: card i has suit i % num_suits (the order is shuffled at reset).
        self._deck = np.arange(self.num_cards, dtype=np.int32) % self.num_suits

    @property
    def num_actions(self) -> int:
        return self.num_suits

    def reset_env(self, key, params):
        state = SuitState(time=jnp.int32(0), suits=jax.random.permutation(key, self._deck))
        return self.get_obs(state, params), state

    def get_obs(self, state: SuitState, params=None, key=None) -> jax.Array:
        return jnp.concatenate(
            [_one_hot(state.suits[state.time], self.num_suits), self._first_flag(state)]
        )


class RepeatFirst(_SuitGame):
    """Repeat the suit of the episode's first card, at every step.

    POPGym (``RepeatFirst``): a shuffled deck of ``52 * num_decks`` cards (Easy 1 deck,
    Medium 8, Hard 16); reset shows the first card's suit; each of the ``num_cards - 1``
    steps rewards +1/(num_cards - 1) when the action is the FIRST card's suit and
    -1/(num_cards - 1) otherwise, then shows the next card; the step that shows the last
    card terminates. Best return 1; a uniformly random (or any constant) policy
    ``2 / num_suits - 1`` (-0.5 with 4 suits).

    Here: the same rules on a deck of ``num_suits x num_ranks`` cards (default 4 x 8 = 32,
    31 steps, against POPGym Easy's 4 x 13 = 52, 51 steps); the observation is the suit
    one-hot plus the "is first" flag (POPGym's Antialias wrapper), float32 [num_suits + 1].
    Policies without memory do better than chance through card counting and the flag, but
    not much (on the default deck, estimated by simulation): -0.43 for the best one that
    sees one observation, -0.25 for the best one that sees the last 4 (a 4-frame stack,
    which shows the first card until step 4).
    """

    def _params(self, **fields):
        return CardParams(**fields)

    def step_env(self, key, state: SuitState, action, params):
        scale = 1.0 / (self.num_cards - 1)
        reward = jnp.where(action == state.suits[0], scale, -scale)
        return self._finish(state.replace(time=state.time + 1), reward, params)

    @property
    def name(self) -> str:
        return "RepeatFirst"


class RepeatPrevious(_SuitGame):
    """Repeat the suit of the k-th most recent card (``params.k``, default 8).

    POPGym (``RepeatPrevious``, k = 4 with 1 deck in Easy, 32 with 2 in Medium, 64 with 3 in
    Hard): a shuffled deck of ``52 * num_decks`` cards; reset shows the first card's suit.
    The action of step ``t`` (1-based), chosen after seeing cards ``0 .. t-1``, is scored
    against card ``t - k`` (``hand[-k]`` in POPGym's code, so k = 1 is the card just shown
    and k = 4 the one shown three steps before it): +1/(num_cards - k) when it names that
    card's suit, -1/(num_cards - k) otherwise, from step ``k`` on; steps before ``k`` give 0.
    The step that shows the last card terminates, after ``num_cards - 1`` steps. Best return
    1; a uniformly random (or any constant) policy ``2 / num_suits - 1`` (-0.5 with 4 suits).

    Here: the same rules on a deck of ``num_suits x num_ranks`` cards (default 4 x 8 = 32:
    31 steps, 24 of them scored, against POPGym Easy's 52 cards and 48 scored steps) and
    k = 8 by default, not Easy's 4: POPGym's k = 4 is the oldest frame of a 4-frame stack,
    which a feedforward agent on stacked frames solves exactly; with k = 8 the best policy
    that sees the last 4 observations gets about -0.43, one that sees one about -0.48
    (estimated by simulation; card counting lifts both above -0.5). The observation is the
    suit one-hot plus the "is first" flag, float32 [num_suits + 1]. ``params.k`` must lie
    in ``1 .. num_cards - 1``.
    """

    def _params(self, **fields):
        return RepeatPreviousParams(**fields)

    def _scored_steps(self, params) -> int:
        return max(0, self._steps(params) - (int(params.k) - 1))  # steps k .. on

    def memory_span(self, params=None) -> int:
        """``k - 1``: the card to repeat was shown that many steps before the current one."""
        params = self.default_params if params is None else params
        return int(params.k) - 1

    def _scale(self, params) -> float:
        return 1.0 / (self.num_cards - int(params.k))

    def step_env(self, key, state: SuitState, action, params):
        seen = state.time + 1  # cards seen before this action
        target = state.suits[jnp.maximum(seen - params.k, 0)]
        scale = 1.0 / (self.num_cards - params.k)
        reward = jnp.where(seen >= params.k, jnp.where(action == target, scale, -scale), 0.0)
        return self._finish(state.replace(time=state.time + 1), reward, params)

    @property
    def name(self) -> str:
        return "RepeatPrevious"


class CountRecall(_CardGame):
    """Say how many cards of the queried value have been dealt so far.

    POPGym (``CountRecall``): two independently shuffled decks of ``52 * num_decks`` cards,
    one of values and one of queries, where a card's value is its colour (Easy: 2 values,
    1 deck), suit (Medium: 4, 2 decks) or rank (Hard: 13, 4 decks). Each step deals one card
    from each; the observation is (value, query). The action of step ``t`` (1-based) is
    scored against the number of value cards among cards ``0 .. t-1`` equal to query
    ``t-1`` (the query shown with the current card, the current card counted): +1/(num_cards
    - 1) when equal, -1/(num_cards - 1) otherwise (POPGym's ``error_clamp`` is unused in its
    code). Actions are the counts ``0 .. num_cards / num_values``. The step that deals the
    last card terminates, after ``num_cards - 1`` steps. Best return 1; a uniformly random
    policy ``2 / num_actions - 1`` (-7/9 with the defaults).

    Here: the same rules with ``num_values`` values and ``cards_per_value`` cards of each
    (default 2 x 8 = 16 cards: 15 steps and 9 actions, against POPGym Easy's 2 x 26 = 52
    cards, 51 steps and 27 actions); the observation is the value one-hot, the query one-hot
    and the "is first" flag, float32 [2 * num_values + 1].
    """

    def __init__(self, num_values: int = 2, cards_per_value: int = 8):
        super().__init__()
        self.num_values = check_positive_int("num_values", num_values)
        self.cards_per_value = check_positive_int("cards_per_value", cards_per_value)
        self.num_cards = self.num_values * self.cards_per_value
        if self.num_cards < 2:
            raise ValueError(
                f"a deck needs at least 2 cards, got {num_values} values x {cards_per_value} cards"
            )
        self.obs_size = 2 * self.num_values + 1
        self._deck = np.arange(self.num_cards, dtype=np.int32) % self.num_values

    def _params(self, **fields):
        return CardParams(**fields)

    @property
    def num_actions(self) -> int:
        return self.cards_per_value + 1

    def reset_env(self, key, params):
        k_values, k_queries = jax.random.split(key)
        state = CountState(
            time=jnp.int32(0),
            values=jax.random.permutation(k_values, self._deck),
            queries=jax.random.permutation(k_queries, self._deck),
        )
        return self.get_obs(state, params), state

    def get_obs(self, state: CountState, params=None, key=None) -> jax.Array:
        return jnp.concatenate(
            [
                _one_hot(state.values[state.time], self.num_values),
                _one_hot(state.queries[state.time], self.num_values),
                self._first_flag(state),
            ]
        )

    def count(self, state: CountState) -> jax.Array:
        """int32: the answer the next action is scored against (see the class docstring)."""
        dealt = jnp.arange(self.num_cards) <= state.time
        return jnp.sum(dealt & (state.values == state.queries[state.time])).astype(jnp.int32)

    def step_env(self, key, state: CountState, action, params):
        scale = 1.0 / (self.num_cards - 1)
        reward = jnp.where(action == self.count(state), scale, -scale)
        return self._finish(state.replace(time=state.time + 1), reward, params)

    @property
    def name(self) -> str:
        return "CountRecall"


__all__ = [
    "RepeatFirst",
    "RepeatPrevious",
    "CountRecall",
    "CardParams",
    "RepeatPreviousParams",
    "SuitState",
    "CountState",
]
