"""A batched, drift-free, k-ary sum-tree over a fixed number of non-negative leaves.

**Layout.** Each node has ``branching`` (k, a power of two, default 8) children. Level D
holds the ``capacity`` leaves; level d-1 has ``ceil(n_d / k)`` nodes; level 0 is the root. All
levels live in one flat float32 array ``nodes``, root level first, each level padded to a
whole number of k-wide rows, so the children of node i of level d are the contiguous row
``nodes[off[d+1] + k*i : off[d+1] + k*i + k]``. Padding leaves are always 0. With k = 8 a
tree of ``2**20`` leaves has depth 7 and occupies 1.14 floats per leaf (a binary heap has
depth 20 and 2 floats per leaf): fewer levels means fewer dependent gathers, which is what
a descent costs on any backend. k = 8 measured fastest on CPU (k = 16 hits a slower XLA
code path there).

**Exactness (why this tree never drifts).** ``set`` does not propagate deltas
(``parent += new - old``), which accumulates float32 round-off over millions of updates. It
recomputes every touched ancestor from its current children, summed pairwise in a fixed
order (``((c0 + c1) + (c2 + c3)) + ...``). So every internal node is a pure function of its
children, and the whole tree of its leaves: after any sequence of updates it is
bit-identical to a tree built from scratch from the same leaves (``build``), and the
relative error of any subtree sum is at most about ``log2(capacity) * 2**-24`` (1.2e-6 at
``2**20`` leaves). The tests check both against NumPy (float32 and float64).

``find`` guards against round-off in the descent: it only ever steps into a child whose sum
is > 0 (if a target overshoots every child's prefix sum, it takes the last positive
child), so it never returns a zero-priority leaf or a leaf past ``capacity`` while the total
is > 0.

**Cost.** ``set`` of B values is ``O(B log B + B k log_k N)``: a stable sort for duplicate
resolution, then per level one gather of B rows and one scatter of B sums. ``find``/``sample``
of n targets is ``O(n k log_k N)``. Nothing is O(capacity) per call. Loops over levels are
Python loops, unrolled at trace time.

**In-place updates and the sorts.** When a program both reads the tree (``sample``) and
writes it (``set``), XLA updates ``nodes`` in place only if every read of the old array is
computed before the first write. XLA's fusion pass likes to duplicate the last gather of
the descent into later consumers (the importance weights, say), which then read the old
array after the write, and XLA copies the whole tree to keep them correct: O(capacity) per
step. So ``sample_with_probs`` passes its results through ``memjax._fusion.materialise``
(an ``optimization_barrier`` on GPU/TPU; on CPU, which strips that barrier, a one-trip
``while_loop`` that XLA cannot prove is one trip), and ``set`` uses only the outputs of its
duplicate-resolving sort (or, on CPU, runs as a loop); none can be fused through. A
``get`` whose result does not feed the following ``set`` still forces a copy: prefer
``sample_with_probs``.

All functions are pure and work under ``jit``, ``vmap`` (a leading axis on ``nodes``), ``scan``
and buffer donation.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from memjax import _pytree as struct
from memjax._batching import vmap_as_leading_axis
from memjax._checks import check_positive_int, is_concrete
from memjax._fusion import materialise

__all__ = [
    "SumTree",
    "init",
    "build",
    "set",
    "get",
    "leaves",
    "total",
    "find",
    "sample",
    "sample_with_probs",
    "geometry",
    "DEFAULT_BRANCHING",
]

DEFAULT_BRANCHING = 8
"""Children per node of a tree made without ``branching``."""


@functools.cache
def geometry(capacity: int, branching: int = DEFAULT_BRANCHING):
    """The static layout of a tree: where each level lives in ``nodes``.

    Level d occupies ``nodes[offsets[d] : offsets[d] + widths[d]]``; the last level holds the
    leaves. Every width is a multiple of ``branching`` (the root level is the root plus
    padding), so ``nodes.reshape(-1, branching)`` has each node's children as one row.

    Args:
      capacity: the number of leaves.
      branching: children per node.

    Returns:
      ``(offsets, widths)``: tuples of Python ints, one entry per level, root (level 0) first;
      ``offsets[-1] + widths[-1]`` is the length of ``nodes``.
    """
    counts = [capacity]
    while counts[-1] > 1:
        counts.append(-(-counts[-1] // branching))
    counts.reverse()  # root first: counts[d] = real nodes on level d
    widths = [branching] + [counts[d - 1] * branching for d in range(1, len(counts))]
    offsets = tuple(int(x) for x in np.cumsum([0] + widths[:-1]))
    return offsets, tuple(widths)


@struct.dataclass
class SumTree:
    """Sum-tree state (a pytree: ``nodes`` is its only array).

    Attributes:
      nodes: float32 ``[M]``, all levels root first (see the module docstring); M is about
        ``capacity * k / (k - 1)``. ``[S, M]`` for a vmapped tree.
      capacity: static int, number of leaves.
      branching: static int, children per node (power of two >= 2).
    """

    nodes: jax.Array
    capacity: int = struct.field(pytree_node=False)
    branching: int = struct.field(pytree_node=False, default=DEFAULT_BRANCHING)

    @property
    def depth(self) -> int:
        """Number of levels below the root (0 when capacity == 1)."""
        return len(geometry(self.capacity, self.branching)[0]) - 1

    def _offsets(self):
        return geometry(self.capacity, self.branching)[0]


def _check_branching(branching) -> int:
    branching = check_positive_int("sumtree branching", branching)
    if branching < 2 or branching & (branching - 1):
        raise ValueError(f"sumtree branching must be a power of two >= 2, got {branching}")
    return branching


def init(capacity: int, branching: int = DEFAULT_BRANCHING) -> SumTree:
    """An all-zero tree with ``capacity`` leaves.

    Args:
      capacity: Python int >= 1.
      branching: children per node, a power of two >= 2.

    Returns:
      A :class:`SumTree` whose ``nodes`` is float32 ``[M]`` (see :func:`geometry`).

    Raises:
      TypeError: ``capacity`` or ``branching`` is not a Python int.
      ValueError: ``capacity`` < 1, or ``branching`` is not a power of two >= 2.
    """
    capacity = check_positive_int("sumtree capacity", capacity)
    branching = _check_branching(branching)
    offsets, widths = geometry(capacity, branching)
    size = offsets[-1] + widths[-1]
    return SumTree(nodes=jnp.zeros((size,), jnp.float32), capacity=capacity, branching=branching)


def _pairwise_sum(rows: jax.Array) -> jax.Array:
    """Sum over the last axis (a power of two wide) in a fixed pairwise order."""
    while rows.shape[-1] > 1:
        rows = rows[..., 0::2] + rows[..., 1::2]
    return rows[..., 0]


def build(leaf_values: jax.Array, branching: int = DEFAULT_BRANCHING) -> SumTree:
    """A tree over ``leaf_values``, built level by level in O(capacity).

    Bit-identical to ``set``-ing the same leaves one batch at a time.

    Args:
      leaf_values: float ``[capacity]``, finite and >= 0 (other shapes are flattened).
      branching: children per node, a power of two >= 2.

    Returns:
      A :class:`SumTree` with ``capacity = leaf_values.size``.

    Raises:
      ValueError: concrete (non-traced) values that are negative, NaN or inf; traced ones are
        stored as 0.
    """
    leaf_values = jnp.asarray(leaf_values, jnp.float32).reshape(-1)
    _check_values(leaf_values)
    tree = init(leaf_values.shape[0], branching)
    offsets, widths = geometry(tree.capacity, tree.branching)
    level = jnp.zeros((widths[-1],), jnp.float32).at[: tree.capacity].set(_sanitise(leaf_values))
    parts = [level]
    for d in range(tree.depth - 1, -1, -1):
        sums = _pairwise_sum(level.reshape(-1, tree.branching))
        level = jnp.zeros((widths[d],), jnp.float32).at[: sums.shape[0]].set(sums)
        parts.append(level)
    return tree.replace(nodes=jnp.concatenate(parts[::-1]))


def total(tree: SumTree) -> jax.Array:
    """Sum of all leaves: float32 scalar (or ``[S]`` for a vmapped tree)."""
    return tree.nodes[..., 0]


def leaves(tree: SumTree) -> jax.Array:
    """All leaf values: float32 ``[capacity]`` (or ``[S, capacity]``)."""
    start = tree._offsets()[-1]
    return tree.nodes[..., start : start + tree.capacity]


def get(tree: SumTree, indices: jax.Array) -> jax.Array:
    """Leaf values at ``indices``.

    Args:
      tree: the :class:`SumTree`.
      indices: int ``[n]``.

    Returns:
      float32 ``[n]``; an index outside ``[0, capacity)`` reads 0.
    """
    indices = jnp.asarray(indices, jnp.int32)
    inside = (indices >= 0) & (indices < tree.capacity)
    node = tree._offsets()[-1] + jnp.clip(indices, 0, tree.capacity - 1)
    return jnp.where(inside, tree.nodes[node], 0.0)


def _check_values(values) -> None:
    if is_concrete(values):
        v = np.asarray(values)
        bad = ~(np.isfinite(v) & (v >= 0))
        if bad.any():
            raise ValueError(
                f"sumtree values must be finite and >= 0; got {v[bad][:5].tolist()} "
                "(inside jit such values are stored as 0)"
            )


def _sanitise(values: jax.Array) -> jax.Array:
    return jnp.where(jnp.isfinite(values) & (values > 0), values, 0.0)


def _rows(tree: SumTree, nodes: jax.Array, level: int, parents: jax.Array) -> jax.Array:
    """Children rows [n, k] on ``level`` of the nodes ``parents`` (int32 [n]) of level-1."""
    k = tree.branching
    row = tree._offsets()[level] // k + parents
    # Whole-row gathers: about half the cost of k element gathers on CPU.
    return nodes.reshape(-1, k).at[row].get(mode="promise_in_bounds")


def set(tree: SumTree, indices: jax.Array, values: jax.Array) -> SumTree:  # noqa: A001
    """Set leaves ``indices`` to ``values`` and recompute their ancestors.

    Two implementations, chosen when the program is lowered for a platform; both give
    bit-identical trees (the tree is a pure function of its leaves):

    - CPU: a sequential loop over the batch, each entry walking up its path. XLA runs such a
      tiny loop body for a few ns per step, while every vectorised kernel costs microseconds
      on CPU (3x faster at B=256, capacity ``2**20``).
    - GPU/TPU: a stable sort, then one vectorised gather/scatter per level.

    Args:
      tree: the :class:`SumTree`.
      indices: int ``[B]`` leaf indices. Indices outside ``[0, capacity)`` are ignored.
      values: float ``[B]``, finite and >= 0. Duplicate indices: the value at the LAST
        occurrence wins, deterministically. Traced values that are negative, NaN or inf are
        stored as 0.

    Returns:
      The updated :class:`SumTree` (same shapes; updated in place under donation).

    Raises:
      ValueError: concrete (non-traced) values that are negative, NaN or inf.
    """
    nodes = jax.lax.platform_dependent(
        tree.nodes,
        *_set_args(indices, values),
        cpu=functools.partial(_set_sequential, tree),
        default=functools.partial(_set_vectorised, tree),
    )
    return tree.replace(nodes=nodes)


def _set_args(indices, values):
    """``set``'s arguments as (int32 [B], float32 [B] with bad values stored as 0); raises
    for unequal lengths and for concrete bad values."""
    indices = jnp.asarray(indices, jnp.int32).reshape(-1)
    values = jnp.asarray(values, jnp.float32).reshape(-1)
    if indices.shape != values.shape:
        raise ValueError(
            f"sumtree.set: indices and values must have the same length, got "
            f"{indices.shape[0]} and {values.shape[0]}"
        )
    _check_values(values)
    return indices, _sanitise(values)


def _set_sequential(tree: SumTree, nodes, indices, values):
    """``set`` as a loop over the batch: later entries overwrite earlier ones."""
    return _set_loop(tree.capacity, tree.branching)(nodes, indices, values)


@functools.cache
def _set_loop(capacity: int, branching: int):
    """The sequential ``set`` for one static geometry, over trees with any leading axes.

    Returns ``loop(nodes [..., M], indices [..., B], values [..., B]) -> nodes`` (same
    leading axes everywhere). One ``fori_loop`` walks every (tree, entry) pair with 2-D
    dynamic slices. Plain ``vmap`` of a scalar loop would turn each dynamic slice into a
    batched gather/scatter (20x slower, even for one seed); the vmap rule instead moves
    the new axis into the leading axes and calls ``loop`` again, so nested vmaps work too.
    """
    offsets, _ = geometry(capacity, branching)
    depth = len(offsets) - 1

    @vmap_as_leading_axis
    def loop(nodes, indices, values):
        trees = int(np.prod(nodes.shape[:-1], dtype=np.int64))
        batch = indices.shape[-1]
        flat = nodes.reshape(trees, nodes.shape[-1])
        indices2 = indices.reshape(trees, batch)
        values2 = values.reshape(trees, batch)

        def body(step, flat):
            t, i = step // batch, step % batch
            index = indices2[t, i]
            leaf = jnp.clip(index, 0, capacity - 1)
            inside = (index >= 0) & (index < capacity)
            old = jax.lax.dynamic_slice(flat, (t, offsets[-1] + leaf), (1, 1))
            value = jnp.where(inside, values2[t, i].reshape(1, 1), old)
            flat = jax.lax.dynamic_update_slice(flat, value, (t, offsets[-1] + leaf))
            node = leaf
            for level in range(depth, 0, -1):
                node = node // branching
                row = jax.lax.dynamic_slice(
                    flat, (t, offsets[level] + branching * node), (1, branching)
                )
                flat = jax.lax.dynamic_update_slice(
                    flat, _pairwise_sum(row).reshape(1, 1), (t, offsets[level - 1] + node)
                )
            return flat

        return jax.lax.fori_loop(0, trees * batch, body, flat).reshape(nodes.shape)

    return loop


def _set_vectorised(tree: SumTree, nodes, indices, values):
    """``set`` as one sorted, batched gather/scatter per level."""
    # A stable sort keeps equal indices in call order, so the last of each run of
    # equal sorted indices is the last occurrence: deterministic on every backend,
    # unlike a scatter with duplicate indices. Only the sort's outputs are used
    # below (see "In-place updates" in the module docstring).
    indices, values = jax.lax.sort((indices, values), num_keys=1, is_stable=True)
    last = jnp.concatenate([indices[1:] != indices[:-1], jnp.array([True])])
    write = last & (indices >= 0) & (indices < tree.capacity)
    offsets = tree._offsets()
    # Recomputing an ancestor from its children is idempotent, so entries that must
    # not write a leaf (duplicates, out of range) can still walk up a valid path.
    node = jnp.clip(indices, 0, tree.capacity - 1)
    nodes = nodes.at[jnp.where(write, offsets[-1] + node, nodes.shape[-1])].set(values, mode="drop")
    for level in range(tree.depth, 0, -1):
        node = node // tree.branching
        sums = _pairwise_sum(_rows(tree, nodes, level, node))
        nodes = nodes.at[offsets[level - 1] + node].set(sums, indices_are_sorted=True)
    return nodes


def _prefix_sums(rows: jax.Array) -> jax.Array:
    """Inclusive prefix sums over the last axis (a power of two wide), in log2(k) steps.

    A log-depth scan keeps the descent to a few fused kernels per level (a left-to-right
    chain of k adds becomes k kernels on CPU). Its sums need not be monotone to the
    last ulp, which ``_descend`` tolerates.
    """
    shift = 1
    while shift < rows.shape[-1]:
        rows = rows + jnp.pad(rows[:, :-shift], ((0, 0), (shift, 0)))
        shift *= 2
    return rows


def _descend(tree: SumTree, targets: jax.Array):
    """(leaf index int32 [n], leaf value float32 [n]) for each target."""
    targets = jnp.maximum(jnp.asarray(targets, jnp.float32), 0.0)  # see "Leading zero" below
    node = jnp.zeros(targets.shape, jnp.int32)
    value = jnp.broadcast_to(total(tree), targets.shape)
    k = tree.branching
    lanes = jnp.arange(k, dtype=jnp.int32)
    for level in range(1, tree.depth + 1):
        children = _rows(tree, tree.nodes, level, node)  # [n, k]
        before = _prefix_sums(children) - children  # exclusive prefix sums
        # The child is the LAST one with a positive value whose exclusive prefix sum is
        # <= target. In exact arithmetic that is the child whose interval holds the
        # target; under round-off (the log-depth sums need not be monotone to the ulp,
        # a target may overshoot the row) it is still a child with a positive value,
        # so a zero leaf is never chosen. Leading zero children have before == 0 <=
        # target, so some positive child always qualifies when the row sum is > 0.
        # One max-reduction per level; argmax is a slow variadic reduce on CPU.
        eligible = (before <= targets[:, None]) & (children > 0)
        child = jnp.max(jnp.where(eligible, lanes, 0), axis=-1)
        pick = lanes == child[:, None]
        value = jnp.sum(jnp.where(pick, children, 0.0), axis=-1)
        targets = targets - jnp.sum(jnp.where(pick, before, 0.0), axis=-1)
        node = k * node + child
    return jnp.clip(node, 0, tree.capacity - 1), value


def find(tree: SumTree, targets: jax.Array) -> jax.Array:
    """Prefix-sum search: the leaf i with ``sum(leaves[:i]) <= target < sum(leaves[:i+1])``.

    Args:
      tree: the :class:`SumTree` (total > 0).
      targets: float ``[n]``, in ``[0, total)``. Round-off is guarded: a target at or past the
        total, or one that lands past a subtree's sum on the way down, resolves to the
        nearest leaf to its left with a positive value.

    Returns:
      int32 ``[n]`` leaf indices in ``[0, capacity)``, each with a positive value whenever
      ``total(tree) > 0`` (with total 0 the result is an arbitrary valid index).
    """
    return _descend(tree, targets)[0]


def sample_with_probs(tree: SumTree, key: jax.Array, n: int, stratified: bool = True):
    """Draw ``n`` leaves with probability ``leaf / total``; also return those probabilities.

    Args:
      tree: the :class:`SumTree` (total > 0).
      key: a PRNG key.
      n: static Python int >= 1.
      stratified: if True, target j is drawn uniformly from the j-th of n equal slices of
        ``[0, total)``, which lowers the variance of a batch; every draw still has marginal
        probability ``leaf / total`` averaged over j.

    Returns:
      ``(indices, probabilities)``: int32 ``[n]`` and float32 ``[n]``; stratified indices ascend.
    """
    n = check_positive_int("sumtree.sample: n", n)
    u = jax.random.uniform(key, (n,), jnp.float32)
    if stratified:
        u = (jnp.arange(n, dtype=jnp.float32) + u) / n
    tot = total(tree)
    indices, values = _descend(tree, u * tot)
    # Materialise everything read from the tree (module docstring, "In-place updates").
    return materialise((indices, values / tot), (tot >= 0).astype(jnp.int32))


def sample(tree: SumTree, key: jax.Array, n: int, stratified: bool = True) -> jax.Array:
    """Draw ``n`` leaf indices with probability ``leaf / total``.

    Args:
      tree: the :class:`SumTree` (total > 0).
      key: a PRNG key.
      n: static Python int >= 1.
      stratified: as for :func:`sample_with_probs`.

    Returns:
      int32 ``[n]`` leaf indices.
    """
    return sample_with_probs(tree, key, n, stratified)[0]
