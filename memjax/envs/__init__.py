"""Environments: gymnax environments by name (with clear errors) and wrappers.

```python
env, env_params = mj.envs.make("CartPole-v1")
env = mj.envs.FrameStack(env, 4)          # observations [16]: the last 4 frames
env, env_params = mj.envs.make("MultiCartPole")   # 4 CartPole-v1 variants, obs [4 + 4]
```
"""

from memjax.envs.multitask import (
    MultiTask,
    MultiTaskParams,
    MultiTaskState,
    cartpole_variant,
    from_envs,
    multi_cartpole,
    task_means,
)
from memjax.envs.registry import (
    binary_observations,
    check_discrete,
    integer_reward_bounds,
    make,
    memory_span,
    num_actions,
    observation_shape,
    return_range,
)
from memjax.envs.wrappers import FrameStack, FrameStackState

__all__ = [
    "make",
    "check_discrete",
    "return_range",
    "integer_reward_bounds",
    "binary_observations",
    "memory_span",
    "num_actions",
    "observation_shape",
    "FrameStack",
    "FrameStackState",
    "MultiTask",
    "MultiTaskParams",
    "MultiTaskState",
    "from_envs",
    "cartpole_variant",
    "multi_cartpole",
    "task_means",
]
