"""Training: the fused loop for any agent (``make_train``), its configuration, the host driver
behind ``memjax train`` (``run``), results files and checkpoints.

```python
import jax, memjax as mj
trainer = mj.train.make_train(mj.train.TrainConfig())        # DQN on CartPole-v1
state, metrics = jax.jit(jax.vmap(trainer))(jax.random.split(jax.random.key(0), 8))
summary = mj.train.run(mj.train.TrainConfig(), num_seeds=8, out_dir="runs/cartpole")
```

Modules: ``config`` (TrainConfig), ``storage`` (codecs and layout from the config),
``build`` (environment, network, optimizer, agent, buffer from the config), ``loop``
(make_train, Trainer, TrainState), ``evaluation`` (greedy returns), ``driver`` (run),
``results`` (returns.csv, curve.png, summary.json), ``checkpoints`` (whole-state run
checkpoints for ``--resume``), ``params_file`` (the trained parameters that ``compress``
reads), ``memory`` (bytes per transition, capacity within a budget), ``plan`` (``--plan``).
"""

from typing import TYPE_CHECKING

from memjax.train.build import (
    example_transition,
    make_agent,
    make_buffer,
    make_env_for,
    make_network_for,
    make_optimizer,
)
from memjax.train.config import REPLAY_KINDS, TrainConfig
from memjax.train.evaluation import evaluate
from memjax.train.loop import Trainer, TrainState, make_train
from memjax.train.memory import buffer_bytes_per_transition, capacity_for_budget

if TYPE_CHECKING:  # the host driver (orbax, tqdm, matplotlib) loads when `run` is first used
    from memjax.train.driver import run


def __getattr__(name):
    if name == "run":
        from memjax.train.driver import run

        return run
    raise AttributeError(f"module 'memjax.train' has no attribute {name!r}")


__all__ = [
    "TrainConfig",
    "TrainState",
    "Trainer",
    "make_train",
    "run",
    "evaluate",
    "make_env_for",
    "make_buffer",
    "make_agent",
    "make_network_for",
    "make_optimizer",
    "example_transition",
    "capacity_for_budget",
    "buffer_bytes_per_transition",
    "REPLAY_KINDS",
]
