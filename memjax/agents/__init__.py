"""Agents: the :class:`Agent` interface, agent specs and their registry, DQN / Double DQN, DRQN,
the memory-network agent (MQN), the Neural Turing Machine agent, Q-networks and their memory
cells (the parallel-scan cells LRU, minGRU, FFM), losses, policies.

Importing this package registers the built-in agents (``dqn``, ``drqn``, ``memnet``, ``ntm``)
through :func:`register`, exactly as a user registers one of their own.
"""

from memjax.agents.base import Agent, no_carry
from memjax.agents.cells import FFM, LRU, PARALLEL_CELLS, MinGRU, ParallelCell, linear_scan
from memjax.agents.dqn import DQN, DQNConfig, DQNState, gradient_step, make_dqn
from memjax.agents.drqn import (
    DRQN,
    DRQNConfig,
    DRQNState,
    make_drqn,
    trained_steps,
    window_td_errors,
)
from memjax.agents.losses import (
    LOSS_KINDS,
    as_windows,
    bootstrap_value,
    n_step_bootstrap,
    q_learning_td,
    td_errors,
    weighted_loss,
)
from memjax.agents.memnet import (
    MEMNET,
    MemnetConfig,
    MemnetState,
    MemoryQNetwork,
    context_trained_steps,
    make_memnet,
    memnet_td_errors,
    window_contexts,
)
from memjax.agents.networks import (
    NETWORK_KINDS,
    ConvQNetwork,
    MLPQNetwork,
    make_network,
    network_kind,
)
from memjax.agents.ntm import NTM, NTMConfig, NTMQNetwork, NTMState, make_ntm
from memjax.agents.policies import epsilon_greedy, explore
from memjax.agents.recurrent import CELL_KINDS, RecurrentQNetwork, reset_where, unroll
from memjax.agents.spec import (
    AgentSpec,
    QNetworkConfig,
    Windows,
    get,
    load_entry_points,
    name_of_config,
    names,
    register,
    unregister,
)
from memjax.agents.window_learning import WindowConfig, window_learner, window_n_step_td

__all__ = [
    "AgentSpec",
    "Windows",
    "register",
    "get",
    "names",
    "name_of_config",
    "unregister",
    "load_entry_points",
    "QNetworkConfig",
    "WindowConfig",
    "DQNConfig",
    "DRQNConfig",
    "MemnetConfig",
    "NTMConfig",
    "DQN",
    "DRQN",
    "MEMNET",
    "NTM",
    "Agent",
    "no_carry",
    "DQNState",
    "make_dqn",
    "gradient_step",
    "DRQNState",
    "make_drqn",
    "trained_steps",
    "window_td_errors",
    "window_n_step_td",
    "window_learner",
    "MemnetState",
    "MemoryQNetwork",
    "make_memnet",
    "memnet_td_errors",
    "window_contexts",
    "context_trained_steps",
    "NTMState",
    "NTMQNetwork",
    "make_ntm",
    "RecurrentQNetwork",
    "CELL_KINDS",
    "PARALLEL_CELLS",
    "ParallelCell",
    "LRU",
    "MinGRU",
    "FFM",
    "linear_scan",
    "reset_where",
    "unroll",
    "ConvQNetwork",
    "MLPQNetwork",
    "make_network",
    "network_kind",
    "NETWORK_KINDS",
    "LOSS_KINDS",
    "n_step_bootstrap",
    "bootstrap_value",
    "q_learning_td",
    "as_windows",
    "td_errors",
    "weighted_loss",
    "epsilon_greedy",
    "explore",
]
