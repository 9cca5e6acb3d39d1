"""Plain NumPy reference implementations the replay core (and 1-D k-means) is tested against.

Everything here is deliberately naive (float64, Python loops, one item at a time) so
that it is obviously right:

* ``RefSumTree``: a float64 array of leaves; ``total``, prefix-sum ``find`` and the
  sampling distribution leaf / total.
* ``RefRing``: a FIFO ring of exact capacity that stores items one at a time.
* ``RefPER``: proportional prioritized replay (Schaul et al., 2016) on top of the ring:
  new items get the running max priority, stored priority = max(p, floor) ** alpha,
  P(i) = s_i / sum_j s_j, w_i = (N * P(i)) ** -beta / max_j w_j, and updates for items
  that have been overwritten since they were sampled are ignored.
* ``lloyd_1d_linear``: 1-D Lloyd k-means from k values evenly spaced over [min, max]
  (``memjax.codecs.fit_kmeans(init="linear")``, weight sharing's codebooks).

Items are identified by their insertion number ``g`` (0, 1, 2, ... over the whole life
of the buffer); the tests store ``g`` as an item field so that every sampled item can be
traced back to the reference.
"""

from __future__ import annotations

import math

import numpy as np

# --------------------------------------------------------------------------- helpers


def last_wins(indices, values, capacity):
    """In-range (index, value) pairs with, for each index, the value of its LAST occurrence.

    Returns (indices int64 [m], values [m]) with unique indices, in ascending order.
    """
    indices = np.asarray(indices).reshape(-1).astype(np.int64)
    values = np.asarray(values).reshape(-1)
    assert indices.shape == values.shape
    inside = (indices >= 0) & (indices < capacity)
    indices, values = indices[inside], values[inside]
    # np.unique on the reversed batch returns, for each index, its first position there,
    # i.e. its last position in the batch.
    unique, first_in_reversed = np.unique(indices[::-1], return_index=True)
    return unique, values[::-1][first_in_reversed]


def make_items(gs, obs_dim=3):
    """Items for insertion numbers ``gs``: {'g': int32 [n], 'obs': float32 [n, obs_dim]}.

    ``obs`` is a deterministic function of ``g`` so a gathered item can be checked for
    consistency across fields.
    """
    gs = np.asarray(gs, np.int32).reshape(-1)
    obs = gs[:, None].astype(np.float32) * np.float32(0.5) + np.arange(obs_dim, dtype=np.float32)
    return {"g": gs, "obs": obs}


def example_item(obs_dim=3):
    """ONE item (no batch axis) with the structure of ``make_items``."""
    return {"g": np.int32(0), "obs": np.zeros((obs_dim,), np.float32)}


def chi_square(counts, probs):
    """Pearson's statistic and degrees of freedom for observed ``counts`` vs ``probs``.

    Cells with probability 0 are excluded (the caller asserts their counts are 0).
    """
    counts = np.asarray(counts, np.float64)
    probs = np.asarray(probs, np.float64)
    keep = probs > 0
    expected = counts.sum() * probs[keep] / probs[keep].sum()
    stat = float(np.sum((counts[keep] - expected) ** 2 / expected))
    return stat, int(keep.sum()) - 1


def chi_square_p_value(counts, probs):
    """Upper-tail p-value of the chi-square goodness-of-fit test (scipy comes with jax)."""
    from scipy import stats

    stat, dof = chi_square(counts, probs)
    return float(stats.chi2.sf(stat, dof))


# --------------------------------------------------------------------------- sum-tree


class RefSumTree:
    """A sum-tree's observable behaviour over float64 leaves."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.leaves = np.zeros((capacity,), np.float64)

    def set(self, indices, values):
        """Batched set: out-of-range indices ignored, duplicates: last occurrence wins."""
        idx, vals = last_wins(indices, np.asarray(values, np.float64), self.capacity)
        self.leaves[idx] = vals

    def get(self, indices):
        indices = np.asarray(indices, np.int64)
        inside = (indices >= 0) & (indices < self.capacity)
        return np.where(inside, self.leaves[np.clip(indices, 0, self.capacity - 1)], 0.0)

    def total(self) -> float:
        return math.fsum(self.leaves.tolist())

    def cumsum(self):
        return np.cumsum(self.leaves)

    def find(self, targets):
        """Leaf i with sum(leaves[:i]) <= t < sum(leaves[:i+1]), for t in [0, total)."""
        return np.searchsorted(self.cumsum(), np.asarray(targets, np.float64), side="right")

    def interval(self, i):
        """[lo, hi) of the targets that select leaf i."""
        cum = self.cumsum()
        return (cum[i - 1] if i > 0 else 0.0), cum[i]

    def probabilities(self):
        return self.leaves / self.leaves.sum()


# --------------------------------------------------------------------------- FIFO ring


class RefRing:
    """FIFO ring of exactly ``capacity`` items, filled one item at a time.

    ``slot_g[s]`` is the insertion number of the item in slot s (-1 if never written);
    ``items[s]`` is that item (a dict of NumPy arrays without batch axis).
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.added = 0
        self.slot_g = np.full((capacity,), -1, np.int64)
        self.items = [None] * capacity

    @property
    def size(self) -> int:
        return min(self.added, self.capacity)

    def add(self, items):
        """Append a batch (dict of arrays [B, ...]) oldest first; return the slots written."""
        batch = len(next(iter(items.values())))
        slots = []
        for b in range(batch):
            slot = self.added % self.capacity
            self.slot_g[slot] = self.added
            self.items[slot] = {k: np.asarray(v[b]) for k, v in items.items()}
            self.added += 1
            slots.append(slot)
        return slots

    def stored_g(self):
        """Insertion numbers currently stored, ascending."""
        return np.sort(self.slot_g[self.slot_g >= 0])

    def is_stored(self, g) -> bool:
        return 0 <= g and g >= self.added - self.capacity and g < self.added

    def slot_of(self, g) -> int:
        return int(g) % self.capacity


# --------------------------------------------------------------------------- proportional PER


class RefPER(RefRing):
    """Proportional prioritized replay with Schaul et al.'s formulas, in float64."""

    def __init__(self, capacity: int, alpha: float, min_priority: float):
        super().__init__(capacity)
        self.alpha = alpha
        self.min_priority = min_priority
        self.max_priority = 1.0  # raw; new items get this
        self.stored = np.zeros((capacity,), np.float64)  # max(p, floor) ** alpha per slot

    def _stored(self, raw):
        return max(raw, self.min_priority) ** self.alpha

    def add(self, items):
        slots = super().add(items)
        for s in slots:
            self.stored[s] = self._stored(self.max_priority)
        return slots

    def update(self, gs, priorities):
        """Raw priorities for the items with insertion numbers ``gs``, applied in order.

        Items overwritten since (stale) are skipped; NaN/inf skipped; negatives floored.
        """
        for g, p in zip(np.asarray(gs).tolist(), np.asarray(priorities, np.float64).tolist()):
            if not self.is_stored(g) or not math.isfinite(p):
                continue
            raw = max(p, 0.0)
            self.stored[self.slot_of(g)] = self._stored(raw)
            self.max_priority = max(self.max_priority, raw)

    def probabilities(self):
        """P per slot: stored / sum(stored)."""
        return self.stored / self.stored.sum()

    def probability_of(self, gs):
        return self.probabilities()[np.asarray(gs) % self.capacity]

    def weights(self, gs, beta):
        """(N * P(i)) ** -beta / max over the batch."""
        w = (self.size * self.probability_of(gs)) ** (-beta)
        return w / w.max()


# --------------------------------------------------------------------------- k-means


def lloyd_1d_linear(x: np.ndarray, k: int, iters: int):
    """Lloyd's k-means on 1-D ``x`` from k values evenly spaced over [min, max] (an empty
    cluster keeps its centre): (codebook float32 [k], nearest centre of each value)."""
    c = np.linspace(x.min(), x.max(), k).astype(np.float32)
    for _ in range(iters):
        a = np.argmin(np.abs(x[:, None] - c[None, :]), axis=1)
        for j in range(k):
            if np.any(a == j):
                c[j] = x[a == j].mean()
    return c, np.argmin(np.abs(x[:, None] - c[None, :]), axis=1)
