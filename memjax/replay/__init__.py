"""Replay buffers: bundles of pure functions over immutable pytree states."""

from memjax.replay.base import ReplayBuffer, Sample, size
from memjax.replay.memory import FieldMemory, MemoryReport, memory_report
from memjax.replay.prioritized import PrioritizedState, prioritized
from memjax.replay.uniform import UniformState, uniform

__all__ = [
    "ReplayBuffer",
    "Sample",
    "size",
    "uniform",
    "prioritized",
    "UniformState",
    "PrioritizedState",
    "MemoryReport",
    "FieldMemory",
    "memory_report",
]
