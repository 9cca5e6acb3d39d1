"""memjax.train.params_file: params of every seed + the TrainConfig, round trip and errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memjax.agents.networks import MLPQNetwork
from memjax.train import TrainConfig, params_file


def test_roundtrip(tmp_path):
    cfg = TrainConfig().replace(hidden=(8, 4), total_steps=123_000, lr=1e-3)
    net = MLPQNetwork(num_actions=2, hidden=(8, 4))
    params = jax.vmap(lambda k: net.init(k, jnp.zeros((1, 4))))(
        jax.random.split(jax.random.key(0), 3)
    )
    path = params_file.save(tmp_path / "run", cfg, params, meta={"note": "x"})
    assert path.name == "checkpoint.msgpack"
    ck = params_file.load(tmp_path / "run")
    assert ck.config == cfg and ck.num_seeds == 3
    assert ck.meta["agent"] == "dqn" and ck.meta["num_actions"] == 2 and ck.meta["note"] == "x"
    for a, b in zip(jax.tree.leaves(ck.params), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, np.asarray(b))
        assert a.dtype == np.float32
    obs = jnp.ones((2, 4))
    np.testing.assert_allclose(
        ck.network().apply(ck.seed_params(1), obs),
        net.apply(jax.tree.map(lambda x: x[1], params), obs),
        rtol=1e-6,
    )
    # one unstacked seed
    one = params_file.load(
        params_file.save(
            tmp_path / "one.msgpack", cfg, jax.tree.map(lambda x: x[0], params), stacked=False
        )
    )
    assert one.num_seeds == 1
    with pytest.raises(IndexError, match="out of range"):
        one.seed_params(1)


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        params_file.load(tmp_path)
    bad = tmp_path / "checkpoint.msgpack"
    bad.write_bytes(b"not msgpack at all")
    with pytest.raises(ValueError, match="not a memjax checkpoint"):
        params_file.load(tmp_path)
    with pytest.raises(ValueError, match="does not know"):
        params_file.config_from_json('{"env": "CartPole-v1", "warp_drive": 9}')
