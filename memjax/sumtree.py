"""A batched, drift-free sum-tree over a fixed number of non-negative leaves.

Layout: one flat float32 array ``nodes`` of length ``2 * P`` where ``P`` is the
smallest power of two >= capacity. It is a binary heap: the root is ``nodes[1]``,
node ``k`` has children ``2k`` and ``2k + 1``, and leaf ``i`` lives at ``P + i``.
``nodes[0]`` is unused. Leaves ``capacity .. P-1`` are always 0.

Exactness (why this tree never drifts):
    ``set`` does not propagate deltas (``parent += new - old``), which accumulates
    float32 round-off over millions of updates. It recomputes every touched ancestor
    as ``left + right`` from its current children. Every internal node is therefore
    always exactly ``fl(left + right)`` of its children, i.e. the tree is a pure
    function of its leaves: after any sequence of updates it is bit-identical to a
    tree built from scratch from the same leaves, and the relative error of any
    subtree sum versus exact arithmetic is at most ``depth * 2**-24`` (about 1.2e-6
    at 2**20 leaves). The tests check both against a float64 NumPy reference.

    ``find`` guards against round-off in the descent: it only ever steps into a
    child whose sum is > 0, so it can never return a zero-priority leaf or a leaf
    past ``capacity`` while the total is > 0.

Cost: ``set`` of B values is O(B log B + B log P) (a stable sort for duplicate
resolution, then one gather/scatter of B nodes per level); ``find``/``sample`` of n
targets is O(n log P). Nothing is O(capacity) per call. The depth loop is a Python
loop, unrolled at trace time.

All functions are pure and work under ``jit``, ``vmap`` (a leading axis on
``nodes``), ``scan`` and buffer donation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from memjax._checks import check_positive_int, is_concrete

__all__ = ["SumTree", "init", "set", "get", "total", "find", "sample", "depth_of"]


@struct.dataclass
class SumTree:
    """Sum-tree state.

    Attributes:
      nodes: float32 [2 * P] heap of subtree sums (see module docstring).
      capacity: static int, number of addressable leaves (<= P).
    """

    nodes: jax.Array
    capacity: int = struct.field(pytree_node=False)

    @property
    def num_leaves(self) -> int:
        """P, the padded (power of two) number of leaves."""
        return self.nodes.shape[-1] // 2


def depth_of(capacity: int) -> int:
    """Number of levels between the root and the leaves: ceil(log2(capacity))."""
    return max(int(capacity) - 1, 0).bit_length()


def init(capacity: int) -> SumTree:
    """An all-zero tree with ``capacity`` leaves.

    Args:
      capacity: python int >= 1.
    Returns:
      SumTree whose ``nodes`` is float32 [2 * next_pow2(capacity)].
    """
    capacity = check_positive_int("sumtree capacity", capacity)
    padded = 1 << depth_of(capacity)
    return SumTree(nodes=jnp.zeros((2 * padded,), jnp.float32), capacity=capacity)


def total(tree: SumTree) -> jax.Array:
    """Sum of all leaves, float32 scalar (or [S] for a batched tree)."""
    return tree.nodes[..., 1]


def get(tree: SumTree, indices: jax.Array) -> jax.Array:
    """Leaf values at ``indices`` (int [n]) -> float32 [n]. Out-of-range reads 0."""
    indices = jnp.asarray(indices, jnp.int32)
    inside = (indices >= 0) & (indices < tree.capacity)
    node = tree.num_leaves + jnp.clip(indices, 0, tree.capacity - 1)
    return jnp.where(inside, tree.nodes[node], 0.0)


def _last_occurrence_mask(indices: jax.Array) -> jax.Array:
    """bool [B]: True where no later position in ``indices`` holds the same value.

    A stable sort keeps equal indices in their original order, so the last element
    of each run of equal sorted values is the last occurrence. Deterministic on
    every backend, unlike a scatter with duplicate indices.
    """
    order = jnp.argsort(indices, stable=True)
    sorted_idx = indices[order]
    last_in_run = jnp.concatenate([sorted_idx[1:] != sorted_idx[:-1], jnp.array([True])])
    return jnp.zeros(indices.shape, bool).at[order].set(last_in_run)


def _check_values(values) -> None:
    if is_concrete(values):
        v = np.asarray(values)
        if not np.all(np.isfinite(v)) or np.any(v < 0):
            bad = v[~(np.isfinite(v) & (v >= 0))][:5]
            raise ValueError(
                f"sumtree values must be finite and >= 0; got {bad.tolist()} "
                "(inside jit such values are stored as 0)"
            )


def set(tree: SumTree, indices: jax.Array, values: jax.Array) -> SumTree:  # noqa: A001
    """Set leaves ``indices`` to ``values`` and repair their ancestors.

    Args:
      tree: the SumTree.
      indices: int [B] leaf indices. Indices outside [0, capacity) are ignored.
      values: float [B], finite and >= 0. Duplicate indices: the value at the LAST
        occurrence wins, deterministically. Concrete (non-traced) values that are
        negative, NaN or inf raise ValueError; traced ones are stored as 0.
    Returns:
      The updated SumTree (same shapes; updates in place under donation).
    """
    indices = jnp.asarray(indices, jnp.int32).reshape(-1)
    values = jnp.asarray(values, jnp.float32).reshape(-1)
    if indices.shape != values.shape:
        raise ValueError(
            f"sumtree.set: indices and values must have the same length, got "
            f"{indices.shape[0]} and {values.shape[0]}"
        )
    _check_values(values)
    values = jnp.where(jnp.isfinite(values) & (values > 0), values, 0.0)
    padded = tree.num_leaves
    out_of_bounds = 2 * padded  # scatter target that mode="drop" discards

    inside = (indices >= 0) & (indices < tree.capacity)
    write = inside & _last_occurrence_mask(indices)
    # Recomputing an ancestor from its children is idempotent, so entries that must
    # not write a leaf (duplicates, out of range) can still walk up a valid path.
    node = padded + jnp.clip(indices, 0, tree.capacity - 1)
    nodes = tree.nodes.at[jnp.where(write, node, out_of_bounds)].set(values, mode="drop")
    for _ in range(depth_of(tree.capacity)):
        node = node // 2
        nodes = nodes.at[node].set(nodes[2 * node] + nodes[2 * node + 1])
    return tree.replace(nodes=nodes)


def find(tree: SumTree, targets: jax.Array) -> jax.Array:
    """Prefix-sum search: the leaf i with sum(leaves[:i]) <= target < sum(leaves[:i+1]).

    Args:
      tree: the SumTree (total > 0).
      targets: float [n], in [0, total). Round-off is guarded: a target at or past
        the total, or one that lands past a subtree's sum on the way down, resolves
        to the nearest leaf with a positive value.
    Returns:
      int32 [n] leaf indices in [0, capacity), each with a positive value whenever
      total(tree) > 0. (With total 0 the result is an arbitrary valid index.)
    """
    targets = jnp.asarray(targets, jnp.float32)
    node = jnp.ones(targets.shape, jnp.int32)
    nodes = tree.nodes
    for _ in range(depth_of(tree.capacity)):
        left = nodes[2 * node]
        right = nodes[2 * node + 1]
        go_right = ((targets >= left) & (right > 0)) | (left <= 0)
        targets = jnp.where(go_right, targets - left, targets)
        node = 2 * node + go_right.astype(jnp.int32)
    return jnp.clip(node - tree.num_leaves, 0, tree.capacity - 1)


def sample(tree: SumTree, key: jax.Array, n: int, stratified: bool = True) -> jax.Array:
    """Draw ``n`` leaf indices with probability leaf / total.

    Args:
      tree: the SumTree (total > 0).
      key: a PRNG key.
      n: static python int >= 1.
      stratified: if True (default), target j is drawn uniformly from the j-th of n
        equal slices of [0, total), which lowers the variance of a batch; every
        draw still has marginal probability leaf / total averaged over j.
    Returns:
      int32 [n] leaf indices.
    """
    n = check_positive_int("sumtree.sample: n", n)
    u = jax.random.uniform(key, (n,), jnp.float32)
    if stratified:
        u = (jnp.arange(n, dtype=jnp.float32) + u) / n
    return find(tree, u * total(tree))
