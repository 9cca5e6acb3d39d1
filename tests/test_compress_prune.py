"""memjax.compress pruning: one-shot magnitude pruning vs NumPy, the cubic schedule, masks
that stay zero through optimizer steps (optax wrapper), and sparse storage that shrinks."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import memjax.compress as mjc
from memjax.agents.networks import MLPQNetwork

NET = MLPQNetwork(num_actions=3, hidden=(32, 16))


@pytest.fixture(scope="module")
def params():
    return NET.init(jax.random.key(0), jnp.zeros((1, 6)))


def _kernels(p):
    return [np.asarray(layer["kernel"]) for _, layer in mjc.layers(p)]


_prune = jax.jit(mjc.prune, static_argnums=(1, 2))


@pytest.mark.parametrize("dist", ["global", "uniform"])
def test_prune_matches_numpy(params, dist):
    s = 0.7
    pruned, masks = _prune(params, s, dist)
    ks = _kernels(params)
    if dist == "global":  # NumPy reference: the floor(s n) smallest magnitudes overall
        allw = np.concatenate([np.abs(k).ravel() for k in ks])
        thr = np.sort(allw)[int(s * allw.size) - 1]
        refs = [np.abs(k) > thr for k in ks]
    else:
        refs = [np.abs(k) > np.sort(np.abs(k).ravel())[int(s * k.size) - 1] for k in ks]
    for (_, m), (_, pl), ref in zip(mjc.layers(masks), mjc.layers(pruned), refs):
        np.testing.assert_array_equal(np.asarray(m["kernel"]), ref)
        assert np.all(np.asarray(m["bias"]))
        assert np.all(np.asarray(pl["kernel"])[~ref] == 0)
    n = sum(k.size for k in ks)
    assert abs(mjc.sparsity_of(pruned) - int(s * n) / n) < 1e-9 or dist == "uniform"


def test_erk_sparsities(params):
    per = mjc.layer_sparsities(params, 0.8, "erk")
    sizes = {p: layer["kernel"].size for p, layer in mjc.layers(params)}
    mean = sum(per[p] * sizes[p] for p in per) / sum(sizes.values())
    assert abs(mean - 0.8) < 1e-9
    # smaller layers (larger sum/prod) are kept denser
    first, big, head = (tuple(p) for p, _ in mjc.layers(params))
    assert per[big] > per[head] or per[head] == 0.0


def test_cubic_schedule_values():
    f = mjc.cubic_schedule(0.9, begin_step=100, end_step=1100, initial_sparsity=0.1)
    for t in (0, 100, 350, 600, 1000, 1100, 5000):  # Zhu & Gupta, eq. 1
        frac = min(max((t - 100) / 1000, 0.0), 1.0)
        assert abs(float(f(t)) - (0.9 + (0.1 - 0.9) * (1 - frac) ** 3)) < 1e-6
    assert float(f(0)) == pytest.approx(0.1) and float(f(2000)) == pytest.approx(0.9)


def test_gradual_pruning_masks_stay_zero_through_adam(params):
    """A regression fitted with Adam under the pruning wrapper: at every step the pruned
    weights are exactly 0, sparsity follows the schedule, and the loss still goes down."""
    x = jax.random.normal(jax.random.key(1), (64, 6))
    y = jax.random.normal(jax.random.key(2), (64, 3))
    tx = mjc.gradual_pruning(optax.adam(1e-2), 0.8, begin_step=0, end_step=40, update_every=10)
    sched = mjc.cubic_schedule(0.8, 0, 40)

    def loss(p):
        return jnp.mean((NET.apply(p, x) - y) ** 2)

    @jax.jit
    def step(p, s):
        value, g = jax.value_and_grad(loss)(p)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s, value

    def run(p, s, n):
        out = []
        for _ in range(n):
            p, s, value = step(p, s)
            out.append((p, s, float(value)))
        return out

    hist = run(params, tx.init(params), 60)
    losses = [h[2] for h in hist]
    for i, (p, s, _) in enumerate(hist):
        for (_, m), (_, layer) in zip(mjc.layers(s.masks), mjc.layers(p)):
            assert np.all(np.asarray(layer["kernel"])[~np.asarray(m["kernel"])] == 0.0)
        if i in (0, 10, 20, 30, 40):  # masks recomputed after update i: uniform per layer
            for _, m in mjc.layers(s.masks):
                k = np.asarray(m["kernel"])
                assert abs((1 - k.mean()) - float(sched(i))) < 1.0 / k.size * 2 + 1e-6
    p_end = hist[-1][0]
    assert abs(mjc.sparsity_of(p_end) - 0.8) < 0.02
    assert losses[-1] < losses[0]
    # once pruned, pruned forever: masks only shrink
    m10 = jax.tree.leaves(hist[10][1].masks)
    m50 = jax.tree.leaves(hist[50][1].masks)
    assert all(np.all(np.asarray(b) <= np.asarray(a)) for a, b in zip(m10, m50))
    with pytest.raises(ValueError, match="needs params"):
        tx.update(params, tx.init(params))


def test_keep_masks_fixed(params):
    pruned, masks = _prune(params, 0.5, "global")
    tx = mjc.keep_masks(optax.sgd(0.1), masks)
    g = jax.tree.map(jnp.ones_like, params)
    u, _ = tx.update(g, tx.init(pruned), pruned)
    new = optax.apply_updates(pruned, u)
    for (_, m), (_, layer) in zip(mjc.layers(masks), mjc.layers(new)):
        assert np.all(np.asarray(layer["kernel"])[~np.asarray(m["kernel"])] == 0.0)


_quantize = jax.jit(mjc.quantize, static_argnums=(1, 2))


def _flat_kernels(tree):
    return np.concatenate([k.ravel() for k in _kernels(tree)])


def test_sparse_storage_shrinks_and_roundtrips(params):
    sizes = []
    for s in (0.0, 0.5, 0.9):
        pruned, _ = _prune(params, s, "global")
        q = _quantize(pruned, 8, True)
        for store in (pruned, q):
            sp = mjc.to_sparse(jax.device_get(store))
            back = mjc.deserialize(mjc.serialize(sp))
            # bit-exact: the decoded kernels (numpy) equal the dense ones
            dense = [
                np.asarray(
                    layer["kernel"].ints()
                    if isinstance(layer["kernel"], mjc.QTensor)
                    else layer["kernel"]
                )
                for _, layer in mjc.layers(store)
            ]
            got = [
                np.asarray(
                    layer["kernel"].ints()
                    if isinstance(layer["kernel"], mjc.QTensor)
                    else mjc.decompress({"k": layer})["k"]["kernel"]
                )
                for _, layer in mjc.layers(back)
            ]
            for a, b in zip(got, dense):
                np.testing.assert_array_equal(a, b)
        sizes.append((mjc.nbytes(sp), mjc.kernel_bytes(sp), mjc.kernel_bytes(q)))
    # serialized sizes fall with sparsity; at 90% the sparse int8 kernels (non-zeros + positions
    # + scales) take under half of the dense int8 kernels
    assert sizes[0][0] > sizes[1][0] > sizes[2][0]
    assert sizes[2][1] < 0.5 * sizes[2][2]
    assert sizes[0][1] == sizes[0][2]  # 0% sparse: kernels stay dense (no blow-up)


@pytest.mark.parametrize("encoding", ["bitmask", "index", "delta"])
def test_sparse_encodings_decode_exactly(encoding):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(40, 300)).astype(np.float32)
    w[rng.random(w.shape) < 0.95] = 0.0
    w[:, 5:290] = 0.0  # long zero runs: the delta encoding needs bridging entries
    sp = mjc.sparse_tensor(w, encoding)
    assert sp.encoding == encoding
    np.testing.assert_array_equal(np.asarray(jax.jit(lambda t: t.decode())(sp)), w)
    if encoding == "delta":
        assert sp.positions.dtype == np.uint8
