"""DQN-family agents: Q-networks, TD losses, target updates, schedules."""

from memjax.agents.losses import (
    double_dqn_loss,
    double_q_learning_target,
    dqn_loss,
    huber,
    l2,
    q_learning_target,
    td_loss,
)
from memjax.agents.networks import ConvQNetwork, MLPQNetwork, make_network
from memjax.agents.schedules import (
    beta_schedule,
    epsilon_greedy,
    epsilon_schedule,
    linear_schedule,
)
from memjax.agents.targets import crossed_period, hard_update, periodic_update, soft_update

__all__ = [
    "ConvQNetwork", "MLPQNetwork", "make_network",
    "dqn_loss", "double_dqn_loss", "td_loss", "huber", "l2",
    "q_learning_target", "double_q_learning_target",
    "linear_schedule", "epsilon_schedule", "beta_schedule", "epsilon_greedy",
    "soft_update", "hard_update", "periodic_update", "crossed_period",
]
