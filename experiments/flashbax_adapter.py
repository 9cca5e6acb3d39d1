"""flashbax 0.1.3 buffers behind memjax's ``ReplayBuffer`` contract (benchmark peers only).

``memjax.train.make_train(config, buffer=...)`` runs the same training loop with any buffer that
has the contract of ``memjax.replay.base.ReplayBuffer``; these adapters let the loop benchmark
(experiments/bench_loop.py) run that loop on flashbax's buffers. flashbax is a dev extra:
memjax itself never imports this module.

What is stored. The loop inserts whole transitions ``{obs, action, reward, next_obs,
terminated}`` (``next_obs`` = ``info["final_observation"]``, so the learner bootstraps through
truncation). The adapters store exactly that pytree in flashbax's flat buffer
(``add_batch_size = num_envs``, one vector step per ``add``) and return the ``first`` element of
each sampled pair as the batch. flashbax's flat buffer is built for storing single timesteps
and pairing ``(t, t + 1)``, which halves observation memory, but the second element of a pair
after an auto-reset is the reset observation, not the final one: a loop written that way is a
different algorithm. With identical items, both sides run the same algorithm and hold the same
bytes per transition, so the benchmark compares buffer mechanics only. (XLA drops the unused
``second`` half of flashbax's pair gather; see the HLO kernel counts in the benchmark's JSON.)

Capacity. flashbax lays items out as ``[num_envs, capacity // num_envs]``: capacity is rounded
down to a multiple of ``num_envs`` (2**20 -> 1,048,570 with 10 environments), and in each row the
pair that crosses the write head is invalid, so ``num_envs`` of the stored items cannot be
sampled. ``flashbax_capacity(state)`` gives the rounded figure.

Uniform (``flat_uniform``): ``make_flat_buffer``. It returns no indices; ``sample.indices`` is
all -1 and ``update`` returns the state unchanged (as memjax's uniform buffer does).

Prioritised (``flat_prioritised``): ``make_prioritised_flat_buffer`` with ``device="cpu"``
(priorities set by a ``lax.scan`` over the batch, O(B log N), flashbax's choice for CPU), or
``set_path="bincount"``: its GPU/TPU path (``sum_tree.set_batch_bincount``, O(capacity) per
call), reached by calling ``prioritised_add`` / ``set_priorities`` with ``device="gpu"``
directly, since ``validate_device`` falls back to "cpu" where no GPU exists.
Importance weights are memjax's: ``w = (N * P(i)) ** -beta``, divided by the batch maximum
(N cancels in the normalisation).

The zero-probability guard (``guard="drop"``, the default). flashbax 0.1.3's sum-tree
propagates float32 *deltas* up a binary tree (``parent += new - old``), so internal sums drift
from the sums of their leaves, and its descent (``query < left_sum``) can end on a leaf of
priority 0 (an item not yet written, or the invalid pair at a row's write head). That draw has
probability 0, an infinite importance weight, and the loss turns NaN. The guard DROPS such
draws: their importance weight is set to 0 (so they add nothing to the loss or its gradient),
the max-normalisation runs over the remaining draws, and the index handed back for ``update``
is encoded as ``-1 - index`` so that ``update`` writes priority 0 back (the leaf keeps the 0 it
had; it must not become sampleable). We do not clamp the probability from below instead: a
clamped near-zero probability still gets a weight orders of magnitude above every other draw,
and after max-normalisation the batch would learn from that one invalid item alone.
``guard="none"`` is flashbax as published (weights from the raw probabilities), for
reproducing the failure.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from experiments._common import flashbax_modules
from memjax.replay.base import ReplayBuffer, Sample
from memjax.replay.memory import FieldMemory, MemoryReport, nbytes

GUARDS = ("drop", "none")
SET_PATHS = ("cpu", "bincount")


def _fbx():
    return flashbax_modules("experiments/flashbax_adapter.py", ImportError)


def _rows_and_length(state):
    """(rows, time axis length) of a flashbax trajectory-buffer state (seed axes allowed)."""
    leaf = jax.tree.leaves(state.experience)[0]
    seed_axes = len(jnp.shape(state.current_index))
    return int(leaf.shape[seed_axes]), int(leaf.shape[seed_axes + 1])


def flashbax_capacity(state) -> int:
    """Items flashbax actually stores: ``num_envs * (capacity // num_envs)``."""
    rows, length = _rows_and_length(state)
    return rows * length


def _count(state):
    """Items written so far (<= flashbax_capacity), int32 ([S] when vmapped)."""
    rows, length = _rows_and_length(state)
    return jnp.where(state.is_full, length, state.current_index).astype(jnp.int32) * rows


def _memory(state) -> MemoryReport:
    """Bytes per field / per item / in total, like ``memjax.replay.memory.memory_report``."""
    seed_axes = tuple(jnp.shape(state.current_index))
    copies = math.prod(seed_axes)
    capacity = flashbax_capacity(state)
    fields = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(state.experience):
        name = ".".join(str(getattr(p, "key", getattr(p, "name", p))) for p in path)
        item_shape = tuple(leaf.shape[len(seed_axes) + 2 :])
        total = nbytes(leaf)
        fields.append(
            FieldMemory(
                name, item_shape, str(np.dtype(leaf.dtype)), total // (copies * capacity), total
            )
        )
    everything = sum(nbytes(x) for x in jax.tree.leaves(state))
    items_total = sum(f.total_bytes for f in fields)
    return MemoryReport(capacity, copies, tuple(fields), everything - items_total, everything)


def _check_batch(name, fixed, batch_size):
    if batch_size != fixed:
        raise ValueError(
            f"{name}: flashbax fixes the sample batch size at construction "
            f"({fixed}); sample was called with batch_size={batch_size}"
        )


def flat_uniform(capacity: int, num_envs: int, batch_size: int) -> ReplayBuffer:
    """flashbax ``make_flat_buffer`` (uniform) as a memjax ``ReplayBuffer``.

    ``add`` takes ``num_envs`` items (one vector step); ``sample`` draws ``batch_size`` (fixed
    here) pairs uniformly and returns their first elements."""
    fbx, _ = _fbx()
    fbuf = fbx.make_flat_buffer(
        max_length=capacity,
        min_length=num_envs,
        sample_batch_size=batch_size,
        add_sequences=False,
        add_batch_size=num_envs,
    )

    def init(example):
        return fbuf.init(example)

    def add(state, items):
        return fbuf.add(state, items)

    def sample(state, key, batch_size_: int, beta=None) -> Sample:
        _check_batch("flat_uniform", batch_size, batch_size_)
        first = fbuf.sample(state, key).experience.first
        n = jnp.maximum(_count(state), 1).astype(jnp.float32)
        return Sample(
            items=first,
            indices=jnp.full((batch_size,), -1, jnp.int32),
            weights=jnp.ones((batch_size,), jnp.float32),
            probabilities=jnp.full((batch_size,), 1.0, jnp.float32) / n,
        )

    def update(state, indices, priorities):
        return state

    def can_sample(state, batch_size_: int):
        return fbuf.can_sample(state) & (_count(state) >= batch_size_)

    return ReplayBuffer(init, add, sample, update, can_sample, _memory)


def flat_prioritised(
    capacity: int,
    num_envs: int,
    batch_size: int,
    alpha: float = 0.6,
    set_path: str = "cpu",
    guard: str = "drop",
) -> ReplayBuffer:
    """flashbax ``make_prioritised_flat_buffer`` as a memjax ``ReplayBuffer``.

    Args:
      capacity, num_envs, batch_size, alpha: as for memjax ``prioritized`` (flashbax's
        ``max_length``, ``add_batch_size``, ``sample_batch_size``, ``priority_exponent``).
      set_path: "cpu" (``device="cpu"``: lax.scan set, O(B log N)) or "bincount"
        (flashbax's GPU/TPU set, O(capacity) per add and per update).
      guard: "drop" (default): draws of probability 0 get weight 0 and keep priority 0 (see the
        module docstring); "none": flashbax as published (such a draw makes the loss NaN).
    """
    if set_path not in SET_PATHS:
        raise ValueError(f"set_path must be one of {SET_PATHS}, got {set_path!r}")
    if guard not in GUARDS:
        raise ValueError(f"guard must be one of {GUARDS}, got {guard!r}")
    fbx, fbx_pt = _fbx()
    fbuf = fbx.make_prioritised_flat_buffer(
        max_length=capacity,
        min_length=num_envs,
        sample_batch_size=batch_size,
        add_sequences=False,
        add_batch_size=num_envs,
        priority_exponent=alpha,
        device="cpu",
    )
    if set_path == "cpu":
        add_fn, set_fn = fbuf.add, fbuf.set_priorities
    else:
        # validate_device() turns "gpu" into "cpu" on a CPU-only machine, so call the module
        # functions with device="gpu" (SET_BATCH_FN["gpu"] = sum_tree.set_batch_bincount).
        raw_add = functools.partial(
            fbx_pt.prioritised_add, sample_sequence_length=2, period=1, device="gpu"
        )
        set_fn = functools.partial(fbx_pt.set_priorities, priority_exponent=alpha, device="gpu")

        def add_fn(state, items):  # one vector step -> a sequence of length 1 per row
            return raw_add(state, jax.tree.map(lambda x: x[:, None], items))

    def init(example):
        state = fbuf.init(example)
        # flashbax 0.1.3 initialises max_recorded_priority as a weak-typed float; its first
        # set_priorities makes it strong, so a jitted host loop would retrace and recompile
        # its chunk on the second call. Start it strongly typed.
        tree = state.sum_tree_state
        return state.replace(
            sum_tree_state=tree.replace(
                max_recorded_priority=jnp.asarray(tree.max_recorded_priority, jnp.float32)
            )
        )

    def add(state, items):
        return add_fn(state, items)

    def sample(state, key, batch_size_: int, beta=0.4) -> Sample:
        _check_batch("flat_prioritised", batch_size, batch_size_)
        s = fbuf.sample(state, key)
        prob = s.probabilities.astype(jnp.float32)
        beta = jnp.asarray(beta, jnp.float32)
        indices = s.indices.astype(jnp.int32)
        if guard == "drop":
            ok = prob > 0
            w = jnp.where(ok, jnp.where(ok, prob, 1.0) ** -beta, 0.0)
            w = w / jnp.maximum(jnp.max(w), jnp.finfo(jnp.float32).tiny)
            indices = jnp.where(ok, indices, -1 - indices)
        else:
            w = prob**-beta
            w = w / jnp.max(w)
        return Sample(items=s.experience.first, indices=indices, weights=w, probabilities=prob)

    def update(state, indices, priorities):
        indices = jnp.asarray(indices, jnp.int32)
        priorities = jnp.asarray(priorities, jnp.float32)
        if guard == "drop":
            dropped = indices < 0
            indices = jnp.where(dropped, -1 - indices, indices)
            priorities = jnp.where(dropped, 0.0, priorities)
        return set_fn(state, indices, priorities)

    def can_sample(state, batch_size_: int):
        return (
            fbuf.can_sample(state)
            & (_count(state) >= batch_size_)
            & (state.sum_tree_state.nodes[..., 0] > 0)
        )

    return ReplayBuffer(init, add, sample, update, can_sample, _memory)
