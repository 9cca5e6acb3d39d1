"""How the training loop stores its replay: codecs per transition field and the layout,
built from a :class:`~memjax.train.TrainConfig`.

Observation codecs (``config.obs_codec``):
  none                  float32 as the environment gives it
  bitpack               1 bit per value (0/1 observations such as MinAtar; lossless)
  int8 / int4 / int2    uniform quantization, per-feature ranges calibrated (see below)
  kmeansK (e.g. kmeans16)  per-feature k-means codebooks of K values, calibrated
  float16 / bfloat16    half-precision casts

Calibration: the quantizers and codebooks are fitted once, before training, on
``config.calibration_steps`` observations of the uniform-random policy (the warm-up
policy) from a fixed key, so all seeds share one codec. A quantizer's range per feature is
the data's range extended to the observation space's bounds where those are finite (so
MinAtar's 0/1 map exactly to the end codes and int8/int4/int2 are lossless there), and
widened by ``config.calibration_margin`` of its width on each side where they are not,
because a learning agent visits states a random one does not. k-means codebooks get the
finite bounds as two extra data points. Values outside are clipped and counted
(``codec_counters`` in the summary).

Lossless by default (``config.storage``, ``memjax train --storage lossless|plain``): the
storage settings left at ``"auto"`` (``obs_codec``, ``reward_codec``, ``layout``;
``compact_fields`` and ``side_fraction`` at None) are chosen per environment by
:func:`resolve_storage`, so that learning is bit-identical to storing every transition whole
as float32 (``"plain"``, the way back):

- ``layout``: ``one_copy`` (each observation once) when the capacity is a multiple of
  ``num_envs``, else ``flat``; agents that learn from windows and ``n_step > 1`` use
  ``sequence`` as always;
- ``side_fraction`` (row layouts): the most of 1.5x the episode ends per step of the
  random-policy calibration rollout and those of the constant-action policy that ends
  episodes most often (an untrained greedy policy is often one), at least 1/16, so that the
  side store of final observations does not overflow (an overflow drops the oldest
  transitions: never wrong, but no longer bit-identical);
- ``obs_codec``: ``bitpack`` when the environment declares 0/1 observations
  (:func:`memjax.envs.binary_observations`, MinAtar) and every calibrated observation is 0
  or 1; lossy codecs (int8, float16, kmeans) only when asked for;
- ``reward_codec``: ``int8`` (or ``int16``) when the environment declares integer rewards in
  that range (:func:`memjax.envs.integer_reward_bounds`, e.g. CartPole, MinAtar) and the
  calibrated rewards agree; never from calibration alone, since a later reward (a learned
  policy's) may fall outside what a random one saw;
- ``compact_fields``: actions (fewer than 257) and ``terminated`` (0/1) as uint8.

:attr:`memjax.train.Trainer.storage` holds what was chosen and why; the summary
(``replay_storage.chosen``) and the start-up memory table show it.

``config.compact_fields``: actions and ``terminated`` stored as uint8 (lossless).
``config.reward_codec``: ``none`` | ``int8`` (exact for integer rewards in [-128, 127],
MinAtar and CartPole) | ``int16`` | ``float16``.
``config.layout``: ``flat`` (each transition whole) | ``one_copy`` (each observation once,
frame stacks de-duplicated when ``config.frame_stack > 1``) | ``sequence`` (each step once,
sampled as windows of ``n_step`` steps). ``n_step > 1`` always uses ``sequence``
(``config.storage_layout``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import NamedTuple

import jax
import jax.numpy as jnp

from memjax import codecs as mc
from memjax import envs, replay

OBS_CODECS = (
    "auto",
    "none",
    "bitpack",
    "int8",
    "int4",
    "int2",
    "float16",
    "bfloat16",
    "kmeansK",
)
REWARD_CODECS = ("auto", "none", "int8", "int16", "float16")
LAYOUTS = ("auto", "flat", "one_copy", "sequence")
STORAGE_KINDS = ("lossless", "plain")
CALIBRATION_KEY = 20261122
SIDE_MARGIN = 1.5
"""The side store holds this many times the random policy's episode ends per step."""


def check_obs_codec(name: str) -> None:
    if name in OBS_CODECS[:-1] or re.fullmatch(r"kmeans([0-9]+)", name):
        return
    raise ValueError(
        f"obs_codec must be one of {', '.join(OBS_CODECS)} (e.g. kmeans16), got {name!r}"
    )


class Calibration(NamedTuple):
    """What the uniform-random policy showed in ``steps`` vector steps of ``num_envs``
    environments from a fixed key: ``observations`` float [2 * steps * num_envs, *obs_shape]
    (each step's observation and its next one, the final observations that auto-resets
    replace included), ``rewards`` float32 [steps * num_envs], ``episode_ends`` (int, the
    steps that ended an episode, terminated or truncated) and ``constant_action_ends`` (the
    same for each policy that always takes one action, as many steps each)."""

    observations: jax.Array
    rewards: jax.Array
    episode_ends: int
    constant_action_ends: tuple = ()

    @property
    def ends_per_step(self) -> float:
        """Episode ends per transition of the random policy."""
        return self.episode_ends / max(1, self.rewards.size)

    @property
    def constant_ends_per_step(self) -> float:
        """Episode ends per transition of the constant-action policy that ends them most
        often (the greedy policy of an untrained Q-network is often one of these), in as
        many steps as the random policy's."""
        return max(self.constant_action_ends, default=0) / max(1, self.rewards.size)


def calibration_observations(env, env_params, steps: int, num_envs: int):
    """float [~steps, *obs_shape]: observations of the uniform-random policy in ``num_envs``
    environments from a fixed key, half before each step and half after it (the final
    observations that auto-resets replace included)."""
    return calibrate(env, env_params, steps, num_envs).observations


def calibrate(env, env_params, steps: int, num_envs: int) -> Calibration:
    """The :class:`Calibration` rollout of ``ceil(steps / (2 num_envs))`` vector steps:
    about ``steps`` observations, half before each step and half after it."""
    vreset = jax.vmap(env.reset, in_axes=(0, None))
    vstep = jax.vmap(env.step, in_axes=(0, 0, 0, None))
    n_actions = int(env.action_space(env_params).n)

    @jax.jit
    def rollout(key):
        k0, key = jax.random.split(key)
        obs, state = vreset(jax.random.split(k0, num_envs), env_params)

        def body(carry, _):
            obs, state, key = carry
            key, ka, ks = jax.random.split(key, 3)
            actions = jax.random.randint(ka, (num_envs,), 0, n_actions)
            nobs, state, reward, terminated, truncated, info = vstep(
                jax.random.split(ks, num_envs), state, actions, env_params
            )
            ends = jnp.sum(terminated | truncated, dtype=jnp.int32)
            return (nobs, state, key), (obs, info["final_observation"], reward, ends)

        length = -(-steps // (2 * num_envs))
        _, (obs, nxt, rewards, ends) = jax.lax.scan(body, (obs, state, key), None, length=length)
        seen = jnp.concatenate([obs, nxt]).reshape((-1, *obs.shape[2:]))
        return seen, rewards.reshape(-1).astype(jnp.float32), jnp.sum(ends)

    @jax.jit
    def constant_actions(key):  # episode ends of each constant-action policy
        policies = jnp.repeat(jnp.arange(n_actions), num_envs)
        _, state = vreset(jax.random.split(key, policies.size), env_params)

        def body(carry, _):
            state, key = carry
            key, ks = jax.random.split(key)
            _, state, _, terminated, truncated, _ = vstep(
                jax.random.split(ks, policies.size), state, policies, env_params
            )
            return (state, key), terminated | truncated

        length = -(-steps // (2 * num_envs))
        _, ends = jax.lax.scan(body, (state, key), None, length=length)
        return jnp.sum(ends.reshape(length, n_actions, num_envs), axis=(0, 2))

    seen, rewards, ends = rollout(jax.random.key(CALIBRATION_KEY))
    constant = constant_actions(jax.random.key(CALIBRATION_KEY + 1))
    return Calibration(seen, rewards, int(ends), tuple(int(n) for n in constant))


class StorageChoice(NamedTuple):
    """One storage setting of a run: its ``value`` and ``why`` (a sentence): chosen for the
    environment (``auto``), or as given."""

    value: object
    why: str
    auto: bool


def resolve_storage(config, env, env_params, named: bool = False) -> tuple:
    """``(config, choices)``: ``config`` with its ``"auto"`` storage settings made concrete
    (see the module docstring), and a dict setting -> :class:`StorageChoice` for
    ``layout``, ``side_fraction``, ``obs_codec``, ``reward_codec`` and ``compact_fields``.

    Args:
      config: a :class:`memjax.train.TrainConfig`; ``config.storage`` ``"plain"`` resolves
        every auto setting to what stores transitions whole as given (float32, flat).
      env: its environment (after any frame stack).
      env_params: the environment's parameters.
      named: ``env`` is ``memjax.envs.make(config.env)`` (with ``config.frame_stack``), so
        its calibration rollout may be reused from an earlier call.
    """
    choices, values = {}, {}

    def given(name, value):
        choices[name] = StorageChoice(value, "as given", False)

    def chosen(name, value, why):
        values[name] = value
        choices[name] = StorageChoice(value, why, True)

    plain = config.storage == "plain"
    calibration = None if plain else _calibration(config, env, env_params, named)
    # layout
    layout = config.storage_layout
    if layout == "sequence" and config.layout != "sequence":  # windows: not the layout's choice
        why = f"agent {config.agent!r} learns from windows" if config.windowed else "n_step > 1"
        choices["layout"] = StorageChoice(layout, f"sequence: {why} of steps stored once", True)
    elif layout != "auto":
        given("layout", layout)
    elif plain:
        chosen("layout", "flat", "storage plain: each transition whole")
    elif config.buffer_capacity % config.num_envs:
        chosen(
            "layout",
            "flat",
            f"capacity {config.buffer_capacity} is not a multiple of num_envs "
            f"{config.num_envs}, which one_copy needs",
        )
    else:
        chosen("layout", "one_copy", "each observation stored once (lossless)")
    rows = choices["layout"].value != "flat"
    # side store of the row layouts
    if config.side_fraction is not None:
        given("side_fraction", config.side_fraction)
    elif plain or not rows:
        chosen("side_fraction", 1 / 16, "the default" if rows else "unused (flat layout)")
    else:
        rate, constant = calibration.ends_per_step, calibration.constant_ends_per_step
        need = max(SIDE_MARGIN * rate, constant)
        fraction = max(1 / 16, min(1.0, math.ceil(need * 1000) / 1000))
        chosen(
            "side_fraction",
            fraction,
            f"the most of {SIDE_MARGIN}x the {rate:.4f} episode ends per step of the random "
            f"policy and the {constant:.4f} of a constant action (at least 1/16), so that "
            "final observations are not dropped",
        )
    # observations
    if config.obs_codec != "auto":
        given("obs_codec", config.obs_codec)
    elif plain:
        chosen("obs_codec", "none", "storage plain")
    else:
        chosen("obs_codec", *_lossless_obs_codec(env, env_params, calibration))
    # rewards
    if config.reward_codec != "auto":
        given("reward_codec", config.reward_codec)
    elif plain:
        chosen("reward_codec", "none", "storage plain")
    else:
        chosen("reward_codec", *_lossless_reward_codec(env, env_params, calibration))
    # actions and terminated
    if config.compact_fields is not None:
        given("compact_fields", config.compact_fields)
    elif plain:
        chosen("compact_fields", False, "storage plain")
    else:
        n = envs.num_actions(env, env_params)
        if n <= 256:
            chosen("compact_fields", True, f"{n} actions and 0/1 terminated fit uint8")
        else:
            chosen("compact_fields", False, f"{n} actions do not fit uint8")
    return dataclasses.replace(config, **values), choices


def _calibration(config, env, env_params, named: bool) -> Calibration:
    """The calibration rollout, cached for environments made by name."""
    if not named:
        return calibrate(env, env_params, config.calibration_steps, config.num_envs)
    return _cached_calibration(
        config.env, config.frame_stack, config.calibration_steps, config.num_envs
    )


@functools.lru_cache(maxsize=16)
def _cached_calibration(name: str, frame_stack: int, steps: int, num_envs: int) -> Calibration:
    env, env_params = envs.make(name)
    if frame_stack > 1:
        env = envs.FrameStack(env, frame_stack)
    return calibrate(env, env_params, steps, num_envs)


def _lossless_obs_codec(env, env_params, calibration) -> tuple:
    obs = calibration.observations
    if not jnp.issubdtype(obs.dtype, jnp.floating):
        return "none", f"{obs.dtype} observations are stored as they are"
    if not envs.binary_observations(env, env_params):
        return "none", (
            "float observations with no lossless codec (the environment does not declare "
            "0/1 values; int8, float16 and kmeans are lossy: opt in with --obs-codec)"
        )
    if not bool(jnp.all((obs == 0) | (obs == 1))):
        return "none", "declared 0/1, yet calibration saw other values: stored as float32"
    return "bitpack", "1 bit per value: the environment declares 0/1 observations"


def _lossless_reward_codec(env, env_params, calibration) -> tuple:
    bounds = envs.integer_reward_bounds(env, env_params)
    rewards = calibration.rewards
    integral = bool(jnp.all(rewards == jnp.round(rewards)))
    seen = f"[{float(rewards.min()):g}, {float(rewards.max()):g}]" if rewards.size else "none"
    if bounds is None:
        return "none", (
            "float32: the environment does not declare integer rewards "
            f"(calibration saw {seen}"
            + (", all integers, which says nothing of later rewards)" if integral else ")")
        )
    low, high = bounds
    if not integral or float(rewards.min()) < low or float(rewards.max()) > high:
        return "none", f"declared integers in [{low}, {high}], yet calibration saw {seen}: float32"
    for name in ("int8", "int16"):
        info = jnp.iinfo(getattr(jnp, name))
        if info.min <= low and high <= info.max:
            return name, f"the environment declares integer rewards in [{low}, {high}]"
    return "none", f"declared integer rewards in [{low}, {high}] do not fit int16: float32"


def format_choices(choices: dict) -> str:
    """The storage choices, one line each: ``  obs_codec  bitpack  (why)``."""
    lines = ["storage (chosen for the environment where auto):"]
    for name, choice in choices.items():
        value = f"{choice.value:.4g}" if isinstance(choice.value, float) else str(choice.value)
        lines.append(f"  {name:<15}{value:<10} {choice.why}")
    return "\n".join(lines)


def obs_codec(config, env, env_params):
    """The codec for observations (None for ``"none"``)."""
    name = config.obs_codec
    check_obs_codec(name)
    if name == "auto":
        raise ValueError("obs_codec 'auto': resolve the config first (resolve_storage)")
    if name == "none":
        return None
    if name == "bitpack":
        return mc.bitpack()
    if name in ("float16", "bfloat16"):
        return mc.cast(getattr(jnp, name))
    data = calibration_observations(env, env_params, config.calibration_steps, config.num_envs)
    space = env.observation_space(env_params)
    space_low, space_high = (
        jnp.broadcast_to(jnp.asarray(b, jnp.float32), data.shape[1:])
        for b in (space.low, space.high)
    )
    if config.frame_stack > 1 and config.storage_layout != "flat":  # the codec sees single frames
        c = data.shape[-1] // config.frame_stack
        data, space_low, space_high = (x[..., -c:] for x in (data, space_low, space_high))
    # finite observation-space bounds (MinAtar's [0, 1], CartPole's cart position and angle)
    # are part of the range, so values a random policy never shows are still representable
    finite_low, finite_high = jnp.abs(space_low) < 1e30, jnp.abs(space_high) < 1e30
    if name.startswith("int"):
        low, high = mc.fit_range(data)
        pad = config.calibration_margin * (high - low)
        low = jnp.where(finite_low, jnp.minimum(low, space_low), low - pad)
        high = jnp.where(finite_high, jnp.maximum(high, space_high), high + pad)
        return mc.quantize(bits=int(name[3:]), low=low, high=high)
    extremes = jnp.stack(
        [
            jnp.where(finite_low, space_low, data.min(0)),
            jnp.where(finite_high, space_high, data.max(0)),
        ]
    )
    return mc.kmeans(int(name[len("kmeans") :]), jnp.concatenate([data, extremes]), per="feature")


def make_codecs(config, env, env_params) -> dict:
    """dict field -> codec for the transitions of ``memjax.train.example_transition``, and
    the codecs the agent's spec gives its per-window fields (:class:`memjax.agents.Windows`)."""
    if _unresolved(config):
        config = resolve_storage(config, env, env_params)[0]
    codecs = {}
    obs = obs_codec(config, env, env_params)
    if obs is not None:
        codecs["obs"] = obs
        if config.storage_layout == "flat":
            codecs["next_obs"] = obs
    if config.compact_fields:
        if int(env.action_space(env_params).n) > 256:
            raise ValueError("compact_fields stores actions as uint8: at most 256 actions")
        codecs["action"] = mc.cast(jnp.uint8)
        codecs["terminated"] = mc.cast(jnp.uint8)
    if config.reward_codec != "none":
        codecs["reward"] = mc.cast(getattr(jnp, config.reward_codec))
    windows = config.windows if config.storage_layout == "sequence" else None
    if windows is not None:
        codecs.update(dict(windows.codecs))  # the agent's per-window fields (e.g. its carry)
    return codecs


def make_layout(config):
    """None (flat), ``memjax.replay.one_copy(num_envs, frame_stack, side_fraction)``,
    ``memjax.replay.sequence(num_envs, length=n_step, side_fraction=...)``, or for an agent
    that learns from windows, the windows its spec asks for (:class:`memjax.agents.Windows`:
    length, period, and the extras stored once per window, e.g. DRQN's carry)."""
    if config.storage == "plain":  # plain's choices need no environment
        config = resolve_storage(config, None, None)[0]
    layout = config.storage_layout
    if layout == "flat":
        return None
    if layout == "auto" or config.side_fraction is None:
        raise ValueError("make_layout: resolve the config's auto storage first (resolve_storage)")
    windows = config.windows
    if layout == "sequence" and windows is not None:
        return replay.sequence(
            config.num_envs,
            length=windows.length,
            period=windows.period,
            per_window=tuple(windows.per_window),
            side_fraction=config.side_fraction,
        )
    if layout == "sequence":
        return replay.sequence(
            config.num_envs, length=config.n_step, side_fraction=config.side_fraction
        )
    return replay.one_copy(
        config.num_envs, frame_stack=config.frame_stack, side_fraction=config.side_fraction
    )


def stores_episode_starts(config) -> bool:
    """Whether replay items carry ``first`` (the step's observation starts an episode):
    the sequence layout needs it to say where windows cross episodes."""
    return config.storage_layout == "sequence"


def _unresolved(config) -> bool:
    return (
        "auto" in (config.obs_codec, config.reward_codec, config.storage_layout)
        or config.compact_fields is None
        or config.side_fraction is None
    )
