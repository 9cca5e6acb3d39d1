"""Agent specs: the registry, per-agent configs in TrainConfig, config files of both forms,
a user's own agent trained through ``run`` with checkpoints and resume, and no agent-name
switch outside ``memjax/agents/``."""

import ast
import dataclasses
import json
import shutil
from pathlib import Path

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

import memjax as mj
from memjax import agents, cli
from memjax.train import TrainConfig, params_file

ROOT = Path(__file__).resolve().parent.parent
LEGACY = Path(__file__).resolve().parent / "data" / "legacy_runs"


# --------------------------------------------------------------------------- the registry


def test_builtin_agents_are_registered_like_a_users():
    assert agents.names()[:3] == ("dqn", "drqn", "memnet")
    for name, config in (
        ("dqn", agents.DQNConfig),
        ("drqn", agents.DRQNConfig),
        ("memnet", agents.MemnetConfig),
    ):
        spec = agents.get(name)
        assert isinstance(spec, agents.AgentSpec) and spec.name == name and spec.config is config
    assert agents.get("dqn").feedforward and not agents.get("drqn").feedforward
    with pytest.raises(ValueError, match=r"agent must be one of \('dqn', 'drqn', 'memnet'"):
        agents.get("ppo")


def test_register_checks_its_input():
    spec = agents.get("dqn")
    with pytest.raises(ValueError, match="already registered"):
        agents.register(spec)
    with pytest.raises(ValueError, match="non-empty name"):
        agents.register(spec._replace(name=""))

    @dataclasses.dataclass(frozen=True)
    class NoDefaults:
        width: int

    with pytest.raises(ValueError, match="needs a default"):
        agents.register(spec._replace(name="nodefaults", config=NoDefaults))
    with pytest.raises(ValueError, match="must be a dataclass"):
        agents.register(spec._replace(name="notdataclass", config=dict))
    assert "nodefaults" not in agents.names()


def test_a_renamed_spec_takes_its_config_by_name():
    agents.register(agents.get("dqn")._replace(name="mydqn"))
    try:
        config = TrainConfig(agent="mydqn")
        assert config.agent == "mydqn" and config.agent_config == agents.DQNConfig()
        # the config instance alone names the first agent registered with its class
        assert TrainConfig(agent=agents.DQNConfig(hidden=(8,))).agent == "dqn"
        assert TrainConfig.from_dict(config.to_dict()) == config
    finally:
        agents.unregister("mydqn")


# --------------------------------------------------------------------------- TrainConfig


def test_agent_config_instances_and_names():
    drqn = TrainConfig(agent=agents.DRQNConfig(burn_in=4))
    assert drqn.agent == "drqn" and drqn.agent_config.burn_in == 4
    assert drqn == TrainConfig(agent="drqn", agent_config=agents.DRQNConfig(burn_in=4))
    assert TrainConfig(agent="memnet").agent_config == agents.MemnetConfig()
    with pytest.raises(ValueError, match="takes a DRQNConfig, got agent_config DQNConfig"):
        TrainConfig(agent="drqn", agent_config=agents.DQNConfig())
    with pytest.raises(ValueError, match="not both"):
        TrainConfig(agent=agents.DRQNConfig(), agent_config=agents.DRQNConfig())
    hash(drqn)  # usable as a static argument


def test_replace_routes_settings_by_name():
    base = TrainConfig(agent=agents.DQNConfig(hidden=(16,)), lr=1e-3)
    drqn = base.replace(agent="drqn", burn_in=2, steps=9_000, capacity=2_000)
    # the agent's shared knobs carry over, its own start at their defaults
    assert drqn.agent_config == agents.DRQNConfig(hidden=(16,), burn_in=2)
    assert (drqn.total_steps, drqn.buffer_capacity, drqn.lr) == (9_000, 2_000, 1e-3)
    assert base.replace(hidden=(8,)).agent_config.hidden == (8,)
    with pytest.raises(
        ValueError, match="burn_in is a setting of agent 'drqn' and 'ntm', not of 'dqn'"
    ):
        base.replace(burn_in=3)
    with pytest.raises(ValueError, match="did you mean: 'burnin' -> burn_in"):
        base.replace(burnin=3)


@pytest.mark.parametrize("agent", ["dqn", "drqn", "memnet"])
def test_to_dict_nests_the_knobs_and_round_trips(agent):
    config = TrainConfig(agent=agent, env="MemoryChain-8", lr=1e-3).replace(hidden=(16, 8))
    d = config.to_dict()
    assert d["agent"]["name"] == agent and d["agent"]["hidden"] == [16, 8]
    assert "hidden" not in d and "agent_config" not in d
    assert TrainConfig.from_dict(json.loads(json.dumps(d))) == config


def test_flat_files_of_before_agent_configs_still_load():
    """A summary.json written before this change (memjax at da0a727, stored): every agent's
    knobs flat beside the loop's fields."""
    old = json.loads((LEGACY / "drqn" / "summary.json").read_text())
    assert "burn_in" in old["config"] and "context_length" in old["config"]  # flat, all agents
    config = TrainConfig.from_dict(old["config"])
    assert config.agent == "drqn"
    assert config.agent_config == agents.DRQNConfig(
        hidden=(16,), memory=16, burn_in=4, sequence_length=16, sequence_period=8
    )
    assert (config.env, config.total_steps, config.num_envs) == ("MemoryChain-8", 800, 4)
    # a flat dqn file drops the knobs of the other agents that it recorded
    dqn = TrainConfig.from_dict({**old["config"], "agent": "dqn"})
    assert dqn.agent_config == agents.DQNConfig(hidden=(16,))


def test_config_files_take_option_names_and_nested_agents(tmp_path):
    from memjax.cli_config import config_from_args

    path = tmp_path / "run.yaml"
    path.write_text(
        "steps: 40000\ncapacity: 5000\nlearning-starts: 1000\nagent:\n  name: drqn\n  burn_in: 3\n"
    )
    args = cli.build_parser(["train", "--config", str(path)]).parse_args(
        ["train", "--config", str(path), "--memory", "8"]
    )
    config = config_from_args(args)
    assert (config.total_steps, config.buffer_capacity, config.learning_starts) == (
        40_000,
        5_000,
        1_000,
    )
    assert config.agent_config == agents.DRQNConfig(burn_in=3, memory=8)


def test_a_summary_reruns_its_seeds_and_seed(tmp_path, capsys):
    """``--config summary.json --plan`` plans the run's own seeds (the old file records
    ``seeds`` but not ``seed``; both are read when present)."""
    summary = json.loads((LEGACY / "drqn" / "summary.json").read_text())
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({**summary, "seeds": 3, "seed": 7}))
    from memjax.cli_config import read_config_file

    settings, run = read_config_file(path)
    assert run == {"seeds": 3, "seed": 7} and settings["agent"] == "drqn"
    assert cli.main(["train", "--config", str(path), "--plan"]) == 0
    assert "3 seeds" in capsys.readouterr().out


def test_the_cli_lists_the_agents_knobs_in_their_own_section(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--agent", "drqn", "--help"])
    text = capsys.readouterr().out
    assert "agent drqn (DRQNConfig; --agent drqn)" in text
    assert "--burn-in" in text and "--cell" in text and "--context-length" not in text
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = capsys.readouterr().out
    assert "agent dqn (DQNConfig" in text and "--burn-in" not in text and "--hidden" in text


def test_another_agents_option_is_one_clear_line(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--burn-in", "4", "--plan"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("--burn-in is a setting of agent drqn or ntm: add --agent drqn"), err


# --------------------------------------------------------------------------- a user's agent


@dataclasses.dataclass(frozen=True)
class TinyQConfig:
    """A user's agent: DQN with one hidden layer of ``width`` units and a clipped target."""

    width: int = 16  # hidden units of the one layer
    double_dqn: bool = True  # Double DQN targets


class TinyQNetwork(nn.Module):
    num_actions: int
    width: int

    @nn.compact
    def __call__(self, obs):
        x = nn.relu(nn.Dense(self.width)(obs.reshape(obs.shape[0], -1).astype(jnp.float32)))
        return nn.Dense(self.num_actions)(x)


def tinyq_network(config, obs, num_actions):
    return TinyQNetwork(num_actions, config.width)


def tinyq_agent(train_config, network, num_actions, optimizer):
    import optax

    return agents.make_dqn(
        network,
        num_actions,
        optimizer,
        epsilon=optax.linear_schedule(
            train_config.eps_start, train_config.eps_end, train_config.eps_decay_steps
        ),
        gamma=train_config.gamma,
        double=train_config.agent_config.double_dqn,
        target_period=train_config.target_period,
    )


def tinyq_validate(train_config):
    if train_config.agent_config.width < 1:
        raise ValueError(f"width must be >= 1, got {train_config.agent_config.width}")


@pytest.fixture
def tinyq():
    spec = agents.register(
        agents.AgentSpec(
            name="tinyq",
            config=TinyQConfig,
            make_network=tinyq_network,
            make_agent=tinyq_agent,
            validate=tinyq_validate,
        )
    )
    yield spec
    agents.unregister("tinyq")


TINY_RUN = [
    "--steps",
    "1600",
    "--num-envs",
    "4",
    "--capacity",
    "400",
    "--learning-starts",
    "200",
    "--batch-size",
    "16",
    "--chunk-steps",
    "400",
    "--eval-episodes",
    "2",
    "--seeds",
    "2",
    "--no-progress",
]


def test_a_users_agent_trains_checkpoints_and_resumes_through_the_cli(tinyq, tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        cli.main(
            [
                "train",
                "--agent",
                "tinyq",
                "--width",
                "8",
                *TINY_RUN,
                "--checkpoint-every",
                "800",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["agent"] == "tinyq"
    assert summary["config"]["agent"] == {"name": "tinyq", "width": 8, "double_dqn": True}
    trained = params_file.load(out)
    assert trained.meta["agent"] == "tinyq"
    assert trained.network() == TinyQNetwork(2, 8)
    q = trained.network().apply(trained.seed_params(0), np.ones((3, 4), np.float32))
    assert q.shape == (3, 2)
    # resume from the middle checkpoint: the same returns, bit for bit
    steps = sorted(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit())
    assert len(steps) >= 2
    shutil.rmtree(out / "checkpoints" / str(steps[-1]))
    first = (out / "returns.csv").read_text()
    (out / "returns.csv").unlink()
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(out), "--no-progress"]) == 0
    assert (out / "returns.csv").read_text() == first
    with pytest.raises(SystemExit):
        cli.main(["train", "--agent", "tinyq", "--width", "0", *TINY_RUN, "--plan"])
    assert "argument --width: must be a positive integer" in capsys.readouterr().err
    with pytest.raises(ValueError, match="width must be >= 1, got -1"):
        TrainConfig(agent=TinyQConfig(width=-1)).validate()


# --------------------------------------------------------------------------- the rule


AGENT_NAMES = {"dqn", "drqn", "memnet", "ntm"}


def _name_switches(path: Path) -> list:
    """Comparisons (``==``, ``!=``, ``in``) and dict keys in ``path`` that test a value against
    a built-in agent's name as a string constant."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Compare):
            constants = [
                c
                for c in [node.left, *node.comparators]
                if isinstance(c, ast.Constant) and c.value in AGENT_NAMES
            ]
            constants += [
                e
                for c in node.comparators
                if isinstance(c, (ast.Tuple, ast.List, ast.Set))
                for e in c.elts
                if isinstance(e, ast.Constant) and e.value in AGENT_NAMES
            ]
            if constants:
                found.append(f"{path}:{node.lineno}")
        if isinstance(node, ast.Dict):
            if any(isinstance(k, ast.Constant) and k.value in AGENT_NAMES for k in node.keys):
                found.append(f"{path}:{node.lineno}")
    return found


def test_no_code_outside_agents_switches_on_an_agent_name():
    files = [p for p in (ROOT / "memjax").rglob("*.py") if "agents" not in p.parts]
    switches = [s for p in files for s in _name_switches(p)]
    assert switches == []


def test_the_rule_finds_a_switch(tmp_path):
    bad = tmp_path / "switch.py"
    bad.write_text(
        'def f(config):\n    return config.agent in ("drqn", "x")\n'
        'KINDS = {"memnet": 1}\nOK = config.agent == name\n'
    )
    assert len(_name_switches(bad)) == 2


# --------------------------------------------------------------------------- files of before


@pytest.mark.parametrize("agent", ["drqn", "memnet"])
def test_parameter_files_of_before_agent_specs_rebuild_their_network(agent):
    """Version 1 parameter files (memjax at da0a727, stored): the spec rebuilds the network
    from the flat config and the environment, and the parameters fit it."""
    loaded = params_file.load(LEGACY / agent)
    assert loaded.config.agent == agent and loaded.num_seeds == 2
    network = loaded.network()
    assert network.memory == 16 and tuple(network.hidden) == (16,)
    if agent == "memnet":
        assert network.heads == 2 and network.context_length == 8
    # the agent made with this network takes the stored parameters and acts with them
    import jax

    trainer = mj.train.make_train(loaded.config)
    assert trainer.network == network
    obs = jnp.zeros((3, *loaded.observation_spec().shape), jnp.float32)
    state = trainer.agent.init(jax.random.key(0), obs[0])
    stored = loaded.seed_params(1)
    assert jax.tree.structure(stored) == jax.tree.structure(state.params)
    assert [x.shape for x in jax.tree.leaves(stored)] == [
        x.shape for x in jax.tree.leaves(state.params)
    ]
    actions, _, _ = trainer.agent.act(
        state.replace(params=stored),
        trainer.agent.initial_carry(3),
        obs,
        jax.random.key(1),
        0,
        True,
    )
    assert actions.shape == (3,)


@pytest.mark.parametrize("agent, seed", [("drqn", 3), ("memnet", 5)])
def test_runs_of_before_agent_specs_rerun_bit_for_bit(agent, seed, tmp_path):
    """``memjax train --config`` on a summary.json of memjax at da0a727 (stored with the run's
    returns.csv) reruns that run: the same returns.csv, byte for byte. The old summary did
    not record the base seed, so the test gives it."""
    out = tmp_path / agent
    assert (
        cli.main(
            [
                "train",
                "--config",
                str(LEGACY / agent / "summary.json"),
                "--seed",
                str(seed),
                "--out",
                str(out),
                "--no-progress",
                "--checkpoint-every",
                "0",
            ]
        )
        == 0
    )
    assert (out / "returns.csv").read_text() == (LEGACY / agent / "returns.csv").read_text()


def test_installed_packages_register_agents_through_entry_points(monkeypatch):
    from importlib import metadata

    from memjax.agents import spec as spec_module

    class Point:
        name = "entrydqn"

        def load(self):
            return agents.get("dqn")._replace(name="entrydqn")

    def entry_points(group):
        assert group == "memjax.agents"
        return [Point()]

    monkeypatch.setattr(metadata, "entry_points", entry_points)
    monkeypatch.setattr(spec_module, "_entry_points_loaded", False)
    try:
        assert agents.get("entrydqn").config is agents.DQNConfig
        assert "entrydqn" in agents.names()
        assert TrainConfig(agent="entrydqn").agent_config == agents.DQNConfig()
    finally:
        agents.unregister("entrydqn")


def test_a_knob_named_like_a_loop_field_is_refused():
    @dataclasses.dataclass(frozen=True)
    class Clashing:
        gamma: float = 0.5  # would shadow TrainConfig.gamma

    agents.register(agents.get("dqn")._replace(name="clashing", config=Clashing))
    try:
        with pytest.raises(ValueError, match=r"knobs \['gamma'\] have the names of TrainConfig"):
            TrainConfig(agent="clashing")
    finally:
        agents.unregister("clashing")


def test_a_spec_gives_codecs_to_its_per_window_fields():
    """``Windows.codecs`` reach the replay: DRQN's carry stored as bfloat16 takes half the
    bytes of its float32 window field, and round-trips through the buffer as bfloat16 does."""
    import jax

    import memjax.codecs as mc

    def bf16_windows(config):
        knobs = config.agent_config
        return agents.Windows(
            knobs.sequence_length,
            knobs.sequence_period,
            ("carry",),
            {"carry": mc.cast(jnp.bfloat16)},
        )

    agents.register(agents.get("drqn")._replace(name="drqn_bf16", windows=bf16_windows))
    try:
        shapes = {}
        for name in ("drqn", "drqn_bf16"):
            trainer = mj.train.make_train(TrainConfig(agent=name, env="MemoryChain-8"))
            state = jax.eval_shape(trainer.init, jax.random.key(0))
            shapes[name] = state.buffer.windows["carry"]
        assert shapes["drqn"].dtype == jnp.float32 and shapes["drqn_bf16"].dtype == jnp.bfloat16
        assert shapes["drqn"].shape == shapes["drqn_bf16"].shape
    finally:
        agents.unregister("drqn_bf16")
