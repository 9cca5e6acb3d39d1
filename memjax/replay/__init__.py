"""Replay buffers: bundles of pure functions over immutable pytree states."""

from memjax.replay import eviction
from memjax.replay.base import ReplayBuffer, Sample, size
from memjax.replay.budget import buffer_bytes, capacity_for
from memjax.replay.evicting_store import EvictingPrioritizedState, EvictingUniformState
from memjax.replay.layouts import OneCopy, Sequence, one_copy, sequence
from memjax.replay.memory import FieldMemory, MemoryReport, memory_report
from memjax.replay.mixer import MixedSample, Mixer, largest_remainder, mixer
from memjax.replay.one_copy_store import OneCopyState, PrioritizedOneCopyState
from memjax.replay.prioritized import PrioritizedState, prioritized, sequence_priorities
from memjax.replay.rate_limiter import RateLimiter, RateLimiterState, sample_to_insert_ratio
from memjax.replay.sequence_store import PrioritizedSequenceState, SequenceState
from memjax.replay.uniform import UniformState, uniform

__all__ = [
    "ReplayBuffer",
    "Sample",
    "size",
    "uniform",
    "prioritized",
    "UniformState",
    "PrioritizedState",
    "one_copy",
    "capacity_for",
    "buffer_bytes",
    "OneCopy",
    "OneCopyState",
    "PrioritizedOneCopyState",
    "sequence",
    "sequence_priorities",
    "Sequence",
    "SequenceState",
    "PrioritizedSequenceState",
    "MemoryReport",
    "FieldMemory",
    "memory_report",
    "eviction",
    "EvictingUniformState",
    "EvictingPrioritizedState",
    "sample_to_insert_ratio",
    "RateLimiter",
    "RateLimiterState",
    "mixer",
    "Mixer",
    "MixedSample",
    "largest_remainder",
]
