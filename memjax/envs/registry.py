"""Environments by name: the partially observable suite (:mod:`memjax.envs.pomdp`) and
gymnax's own, with clear errors for unknown or non-discrete ones."""

from __future__ import annotations

import gymnax
import jax

from memjax.envs import multitask, pomdp


def make(name: str):
    """A discrete-action environment by name: one of the partially observable suite
    (``StatelessCartPole``, ``NoisyStatelessCartPole``, ``RepeatFirst``, ``RepeatPrevious``,
    ``CountRecall``, ``MemoryChain-<L>`` such as ``MemoryChain-20``), a multi-task one
    (``MultiCartPole``, ``ContinualCartPole-<K>``, see :func:`memjax.envs.multitask.make`),
    else ``gymnax.make(name)``. Returns ``(env, env_params)``.

    Raises ``ValueError`` naming the known environments when ``name`` is unknown, and when
    the action space is not discrete (the agents here pick among discrete actions)."""
    made = pomdp.make(name) or multitask.make(name)
    if made is None:
        if name not in gymnax.registered_envs:
            known = ", ".join(gymnax.registered_envs)
            raise ValueError(
                f"unknown environment {name!r}; memjax's partially observable "
                f"suite: {', '.join(pomdp.names())}; multi-task: "
                f"{', '.join(multitask.NAMES)}; gymnax knows: {known}"
            )
        made = gymnax.make(name)
    env, env_params = made
    check_discrete(env, env_params, name)
    return env, env_params


def check_discrete(env, env_params, name: str) -> None:
    """``ValueError`` unless ``env`` has a ``Discrete`` action space."""
    space = env.action_space(env_params)
    if not isinstance(space, gymnax.environments.spaces.Discrete):
        raise ValueError(
            f"environment {name!r} has a {type(space).__name__} action space; "
            "the agents need discrete actions"
        )


def num_actions(env, env_params) -> int:
    """Size of the discrete action space."""
    return int(env.action_space(env_params).n)


def observation_shape(env, env_params) -> tuple:
    """Shape of one observation, from ``jax.eval_shape`` of a reset (nothing runs)."""
    obs, _ = jax.eval_shape(lambda key: env.reset(key, env_params), jax.random.key(0))
    return tuple(obs.shape)


def memory_span(env, params=None):
    """How many steps back a policy must remember to play a task of the partially observable
    suite best (a name, as for :func:`make`, or an environment with its ``params``), or None
    where no fixed span is known (gymnax's own environments, the stateless CartPoles, whose
    velocities need only the step before):

    - ``MemoryChain-<L>``: ``L - 1`` (the bit shown first is named at the last step);
    - ``RepeatPrevious[-k]``: ``k - 1``;
    - ``RepeatFirst``, ``CountRecall``: the whole episode (e.g. 31 and 15 steps).

    A frame stack has its environment's span; a multi-task environment its largest."""
    if isinstance(env, str):
        env, params = make(env)
    params = env.default_params if params is None else params
    if isinstance(env, multitask.MultiTask):
        spans = [memory_span(env.env, env.task_params(params, t)) for t in range(env.num_tasks)]
        known = [s for s in spans if s is not None]
        return max(known) if known else None
    if hasattr(env, "memory_span"):
        return env.memory_span(params)
    inner = getattr(env, "env", None)
    if inner is not None and type(env).__name__ == "FrameStack":
        return memory_span(inner, params)
    return None


def return_range(env, params=None) -> tuple:
    """``(chance, best)`` episode returns of an environment (a name, as for :func:`make`, or
    an environment object with its ``params``): ``chance`` is the expected return of a
    uniformly random policy, ``best`` the largest return, both from the task's rules; None
    where not known (a random CartPole policy's return has no closed form; gymnax's own
    environments other than CartPole are not covered). Partially observable suite:

    - ``RepeatFirst``, ``RepeatPrevious[-k]``, ``CountRecall``: best 1, chance ``2 / actions
      - 1`` (-0.5 with 4 suits, -7/9 for CountRecall's 9 counts);
    - ``MemoryChain-<L>``: best 1, chance 0;
    - ``StatelessCartPole``, ``NoisyStatelessCartPole`` (and CartPole-v1): best 500 (the time
      limit times the reward per step), chance None;
    - multi-task CartPoles (``MultiCartPole``, ``ContinualCartPole-<K>``): the mean of the
      tasks' ranges (evaluation episode ``i`` plays task ``i % tasks``).

    A frame stack (:class:`memjax.envs.FrameStack`) has its environment's range."""
    from gymnax.environments.classic_control import cartpole

    if isinstance(env, str):
        env, params = make(env)
    params = env.default_params if params is None else params
    if isinstance(env, multitask.MultiTask):
        ranges = [return_range(env.env, env.task_params(params, t)) for t in range(env.num_tasks)]
        return tuple(None if None in xs else float(sum(xs) / len(xs)) for xs in zip(*ranges))
    if hasattr(env, "return_range"):
        return env.return_range(params)
    if isinstance(env, cartpole.CartPole):
        return None, float(params.max_steps_in_episode)
    inner = getattr(env, "env", None)  # a wrapper that changes observations only
    if inner is not None and type(env).__name__ == "FrameStack":
        return return_range(inner, params)
    return None, None


def integer_reward_bounds(env, params=None):
    """``(low, high)``: every per-step reward of the environment is an integer in
    ``[low, high]``, by the task's rules; None where that is not known (float rewards, or an
    environment that does not say). ``env`` is a name, as for :func:`make`, or an
    environment with its ``params``. Lossless storage stores rewards as int8 or int16 only on
    this word (:mod:`memjax.train.storage`): a reward seen in calibration proves nothing about
    the rewards that come later. Known:

    - CartPole-v1 (and the stateless CartPoles at ``reward_scale`` 1): ``(0, 1)``;
      Acrobot-v1: ``(-1, 0)``; MountainCar-v0: ``(-1, -1)``;
    - MinAtar Breakout and Freeway ``(0, 1)``, Asterix ``(0, 16)`` (at most one treasure per
      entity slot and move), SpaceInvaders ``(0, 100)`` (aliens hit in one step on the 10 x 10
      grid); Seaquest is not declared;
    - ``MemoryChain-<L>``: ``(-1, 1)``.

    An environment of your own declares its rewards with a method
    ``integer_reward_bounds(params) -> (low, high) | None``. A frame stack has its
    environment's bounds; a multi-task environment the union of its tasks' (None if one is
    unknown)."""
    from gymnax.environments.bsuite import memory_chain
    from gymnax.environments.classic_control import acrobot, cartpole, mountain_car
    from gymnax.environments.minatar import asterix, breakout, freeway, space_invaders

    if isinstance(env, str):
        env, params = make(env)
    params = env.default_params if params is None else params
    if isinstance(env, multitask.MultiTask):
        bounds = [
            integer_reward_bounds(env.env, env.task_params(params, t)) for t in range(env.num_tasks)
        ]
        if any(b is None for b in bounds):
            return None
        return min(b[0] for b in bounds), max(b[1] for b in bounds)
    if hasattr(env, "integer_reward_bounds"):
        return env.integer_reward_bounds(params)
    inner = getattr(env, "env", None)  # a wrapper that changes observations only
    if inner is not None and type(env).__name__ == "FrameStack":
        return integer_reward_bounds(inner, params)
    if isinstance(env, cartpole.CartPole):  # reward 1 per step, 0 after a terminal step
        return (0, 1) if float(getattr(params, "reward_scale", 1.0)) == 1.0 else None
    known = {
        acrobot.Acrobot: (-1, 0),
        mountain_car.MountainCar: (-1, -1),
        breakout.MinBreakout: (0, 1),
        freeway.MinFreeway: (0, 1),
        asterix.MinAsterix: (0, 16),
        space_invaders.MinSpaceInvaders: (0, 100),
        memory_chain.MemoryChain: (-1, 1),
    }
    return next((b for cls, b in known.items() if isinstance(env, cls)), None)


def binary_observations(env, params=None) -> bool:
    """Whether every observation value of the environment is 0 or 1 by the task's rules (a
    name, as for :func:`make`, or an environment with its ``params``): MinAtar's planes of
    booleans. Lossless storage bit-packs observations only on this word
    (:mod:`memjax.train.storage`). An environment of your own declares it with a method
    ``binary_observations(params) -> bool``; a frame stack or a multi-task environment has
    its environment's."""
    from gymnax.environments import minatar

    if isinstance(env, str):
        env, params = make(env)
    params = env.default_params if params is None else params
    if hasattr(env, "binary_observations"):
        return bool(env.binary_observations(params))
    if isinstance(env, multitask.MultiTask):  # the task's observation and a one-hot task id
        return binary_observations(env.env, env.task_params(params, 0))
    inner = getattr(env, "env", None)
    if inner is not None and type(env).__name__ == "FrameStack":
        return binary_observations(inner, params)
    return type(env).__module__.startswith(minatar.__name__ + ".")
