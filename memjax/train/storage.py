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

``config.compact_fields``: actions and ``terminated`` stored as uint8 (lossless).
``config.reward_codec``: ``none`` | ``int8`` (exact for integer rewards in [-128, 127],
MinAtar and CartPole) | ``float16``.
``config.layout``: ``flat`` (each transition whole) | ``one_copy`` (each observation once,
frame stacks de-duplicated when ``config.frame_stack > 1``) | ``sequence`` (each step once,
sampled as windows of ``n_step`` steps). ``n_step > 1`` always uses ``sequence``
(``config.storage_layout``).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp

from memjax import codecs as mc
from memjax import replay

OBS_CODECS = ("none", "bitpack", "int8", "int4", "int2", "float16", "bfloat16", "kmeansK")
REWARD_CODECS = ("none", "int8", "float16")
LAYOUTS = ("flat", "one_copy", "sequence")
CALIBRATION_KEY = 20261122


def check_obs_codec(name: str) -> None:
    if name in OBS_CODECS[:-1] or re.fullmatch(r"kmeans([0-9]+)", name):
        return
    raise ValueError(
        f"obs_codec must be one of {', '.join(OBS_CODECS)} (e.g. kmeans16), got {name!r}"
    )


def calibration_observations(env, env_params, steps: int, num_envs: int):
    """float [~steps, *obs_shape]: observations of the uniform-random policy in ``num_envs``
    environments from a fixed key, half before each step and half after it (the final
    observations that auto-resets replace included)."""
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
            nobs, state, _, _, _, info = vstep(
                jax.random.split(ks, num_envs), state, actions, env_params
            )
            return (nobs, state, key), (obs, info["final_observation"])

        _, seen = jax.lax.scan(body, (obs, state, key), None, length=-(-steps // (2 * num_envs)))
        return jnp.concatenate(seen).reshape((-1, *seen[0].shape[2:]))

    return rollout(jax.random.key(CALIBRATION_KEY))


def obs_codec(config, env, env_params):
    """The codec for observations (None for ``"none"``)."""
    name = config.obs_codec
    check_obs_codec(name)
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
    layout = config.storage_layout
    if layout == "flat":
        return None
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
