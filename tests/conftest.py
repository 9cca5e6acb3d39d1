"""Shared test configuration.

* Hypothesis runs deterministically (derandomized, no example database, no deadline:
  the first call of a jitted function compiles) so CI results do not depend on luck.
* XLA compiles with most optimizations off (``JAX_DISABLE_MOST_OPTIMIZATIONS=1``: LLVM at
  level 0, no expensive LLVM passes; XLA's HLO passes such as fusion and buffer donation
  still run, so the tests that read compiled HLO see what users get). Compilation is most
  of this suite's time on CPU and the test programs are small: with it the suite used 26
  minutes of CPU instead of 36 (2-core machine). The subprocesses the tests start inherit
  it. ``JAX_DISABLE_MOST_OPTIMIZATIONS=0 pytest`` tests the fully optimized programs.
* The slowest files run first (``SLOWEST_FIRST``; ``--no-loadscope-reorder`` in pyproject
  keeps xdist to this order): with a file per worker at a time, a slow file taken last
  keeps one worker busy after the others have finished.
* Two tiers: ``pytest -q`` (pyproject's addopts hold ``-m "not slow"``) runs the quick
  checks of every module; ``pytest -q -m slow`` the rest (``SLOW``: learning runs, CLI and
  benchmark runs, subprocesses with SIGKILL, several processes or forced devices, the docs
  build, statistical tests, long randomized sequences, vmap/scan/donation equivalences of big
  programs), marked here rather than in the test files. ``.ci/run`` runs both;
  ``pytest -m "slow or not slow"`` runs everything in one go, and so does naming files
  (``pytest tests/test_train.py``: all of that file) unless ``-m`` is given too.
* ``tests/`` is on ``sys.path`` (pytest's default rootdir/conftest handling), so test
  modules import the NumPy references with ``import reference``; the checkout's root too,
  for ``experiments`` (the HLO copy scanner is the benchmarks').
"""

import importlib.util
import os
import sys

os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")  # before jax is imported

import jax  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# in case a plugin imported jax before this file set the variable
jax.config.update(
    "jax_disable_most_optimizations",
    os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"].lower() in ("1", "true"),
)

sys.path.insert(0, os.path.dirname(__file__))
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:  # experiments/ of this checkout
    sys.path.insert(0, _ROOT)

from experiments._common import hlo_copies as scan_hlo_copies  # noqa: E402

# Test files by their time on 2 CPU cores, slowest first (subprocess fixtures, then learning
# runs); the other files follow in collection order. The default tier has its own order.
SLOWEST_FIRST = [
    "test_cluster.py",
    "test_processes.py",
    "test_resume.py",
    "test_devices.py",
    "test_learning.py",
    "test_train.py",
    "test_drqn.py",
    "test_train_storage.py",
    "test_bench_loop_smoke.py",
    "test_readme.py",
    "test_memnet.py",
]
DEFAULT_SLOWEST_FIRST = [
    "test_codecs.py",
    "test_eviction.py",
    "test_sumtree.py",
    "test_sequence.py",
    "test_one_copy.py",
    "test_compress_quantize.py",
    "test_replay_prioritized.py",
    "test_dropin.py",
    "test_pomdp_envs.py",
    "test_train.py",
]

# The slow tier: a file name -> ALL, or the names of its slow tests (a test function's name,
# all its parameters, or one parametrized case as pytest names it, "test_x[1000-2]").
# Measured with --durations=0 (tests/test_tiers.py checks that the names exist).
ALL = "all"
SLOW = {
    # subprocesses: several processes, forced host devices, SIGKILL and resume, mkdocs builds
    "test_processes.py": {
        "test_two_processes_write_one_result_directory",
        "test_a_killed_process_ends_the_run_with_a_clear_message",
        "test_two_processes_killed_and_resumed_match_one_process",
        "test_a_population_over_two_processes_trains_as_in_one",
    },
    "test_devices.py": ALL,
    "test_cluster.py": {  # a SLURM-like 2-process run, resumed on 1 and 4 processes
        "test_slurm_environment_starts_the_processes_of_one_run",
        "test_each_process_writes_its_own_shards",
        "test_a_two_process_checkpoint_resumes_on_another_number_of_processes",
        "test_processes_agree_to_fall_back_when_one_cannot_read_its_shards",
        "test_a_coordinator_that_does_not_answer_is_one_error_line",
    },
    "test_population.py": {  # whole population runs, a CLI PBT run and its resume, 8 devices
        "test_a_member_trains_as_a_single_run_with_its_values",
        "test_cli_pbt_run_writes_members_lineage_and_resumes_bit_exactly",
        "test_members_x_seeds_shard_over_8_devices_as_on_one",
    },
    "test_resume.py": {  # these share the SIGKILLed run
        "test_sigkill_then_resume_is_bit_exact",
        "test_unreadable_latest_checkpoint_falls_back",
        "test_incompatible_checkpoints_are_errors",
        "test_fresh_run_refuses_an_unfinished_runs_checkpoints",
        "test_the_compress_checkpoint_is_still_written",
        "test_a_relative_out_dir_checkpoints_and_resumes",
        "test_a_ctrl_c_checkpoints_where_it_stops",  # three small runs
    },
    "test_docs.py": ALL,
    # learning runs, training runs (loop, CLI, benchmarks' smoke runs, distillation), README code
    "test_learning.py": ALL,
    "test_readme.py": {"test_python_block_runs"},
    "test_memnet.py": {"test_memnet_learns_a_memory_task_that_dqn_cannot"},
    "test_train.py": {
        "test_run_writes_results",
        "test_jit_vmap_train_whole_run",
        "test_sequence_layout_of_one_step_trains_like_one_copy",
        "test_train_every_groups_steps",
        "test_seeds_are_independent",
        "test_minatar_uses_conv_network",
        "test_evaluation_cap_and_unfinished_episodes",
    },
    "test_train_storage.py": {
        "test_prioritized_lossless_one_copy_is_bit_identical",
        "test_prioritized_one_copy_with_an_overflowing_side_store_draws_only_live_items",
        "test_frame_stacked_quantized_one_copy_runs",
        "test_lossless_storage_trains_bit_identically",
        "test_calibrated_quantizer_covers_random_policy_with_margin",
        "test_calibration_includes_finite_observation_space_bounds",
    },
    "test_default_storage.py": {
        "test_default_storage_trains_bit_identically_to_plain",
        "test_the_lossless_choices_of_the_named_environments",
        "test_side_store_follows_the_random_policys_episode_ends",
        "test_plan_peak_is_the_state_plus_the_largest_program",
        "test_default_run_returns_what_plain_returns_on_cartpole",
    },
    "test_dataclass_items.py": {
        "test_dataclass_items_sample_as_dict_items_do[ChexStep-prioritized-one_copy]",
        "test_dataclass_items_sample_as_dict_items_do[FlaxStep-prioritized-sequence]",
    },
    "test_train_rate.py": {"test_schedule_follows_the_rate_limiter"},
    "test_export.py": {  # agents' loops built and compiled (the NTM's: ~40 s), episodes played
        "test_an_agent_with_a_carry_exports_its_step[ntm]",
        "test_an_agent_with_a_carry_exports_its_step[memnet]",
        "test_an_agent_with_a_carry_exports_its_step[drqn-gru]",
        "test_an_agent_with_a_carry_exports_its_step[drqn-lru]",
        "test_an_agent_with_a_carry_exports_its_step[drqn-mingru]",
        "test_an_agent_with_a_carry_exports_its_step[ntm-lru]",
        "test_drqn_in_onnx_steps_as_the_network[drqn-lru]",
        "test_drqn_in_onnx_steps_as_the_network[drqn-mingru]",
        "test_drqn_in_onnx_steps_as_the_network[drqn-gru-minatar]",
        "test_a_greedy_episode_through_onnx_scores_what_the_network_scores",
        "test_a_recurrent_file_runs_without_memjax_or_jax",
        "test_the_ntm_in_onnx_steps_as_the_network",  # builds the NTM thrice
        "test_memnet_in_onnx_steps_as_the_network",
    },
    "test_export_compressed.py": {
        "test_what_memjax_compress_writes_exports",  # distils
        "test_every_method_exports_what_memjax_computes_from_its_artefact",  # 16 exports
    },
    "test_cli.py": {"test_tiny_train_run", "test_tiny_train_run_with_memory_budget_and_codecs"},
    "test_compress_cli.py": {"test_tiny_run"},
    "test_compress_distill.py": {
        "test_distill_learns_the_teacher_policy",
        "test_gradual_pruning_while_distilling_one_seed_at_a_time",
        "test_memjax_train_distils_a_teacher_run",
    },
    "test_ntm.py": {
        "test_ntm_learns_a_memory_task_through_its_memory_alone",
        "test_learn_from_uniform_and_prioritized_window_replay",
        "test_burn_in_has_no_gradient",
        "test_gradients_through_a_three_step_unroll",
    },
    "test_bench_memnet_loop_smoke.py": {
        "test_the_floor_replays_one_drawn_batch_and_stores_nothing"  # a DRQN chunk compiled
    },
    "test_cells.py": {
        "test_a_parallel_cell_learns_a_memory_task_that_dqn_cannot",
        "test_a_parallel_cell_exports_its_step",
        "test_td_errors_and_gradients_through_the_scan_equal_stepping",
        "test_the_stored_carry_through_replay_and_a_codec",
        "test_scan_equals_stepping_the_cell_in_jax",
        "test_unroll_in_parallel_equals_stepping[lru]",
        "test_unroll_in_parallel_equals_stepping[ffm]",
        "test_bench_cells_quick_writes_json_and_one_table",
    },
    "test_agent_spec.py": {
        "test_a_users_agent_trains_checkpoints_and_resumes_through_the_cli",
        "test_runs_of_before_agent_specs_rerun_bit_for_bit",
    },
    "test_compress_prune.py": {"test_sparse_storage_shrinks_and_roundtrips"},
    "test_multitask.py": {
        "test_memjax_train_reports_greedy_returns_per_task",
        "test_loop_per_task_returns_against_a_python_replay",
        "test_evaluation_episode_i_plays_task_i_mod_T",
        "test_train_reports_eval_tasks_and_chunk_metrics_per_task",
        "test_random_task_per_episode_uniform_and_kept_through_the_episode",
        "test_continual_schedule_switches_at_the_right_steps",
    },
    "test_pomdp_envs.py": {
        "test_dqn_trains_on_repeat_previous_with_a_frame_stack",
        "test_stateless_cartpole_is_cartpole_v1_positions",
        "test_make_train_traces_on_each_env",
        "test_repeat_previous_any_k",
    },
    "test_drqn.py": {
        "test_learn_on_sequence_replay_updates_and_returns_window_priorities",
        "test_window_td_errors_match_reference",
        "test_burn_in_has_no_gradient",
    },
    "test_bench_loop_smoke.py": {
        "test_agent_loop_matches_the_loop_before_agent_specs",
        "test_smallest_run_writes_json",
        "test_no_guard_reproduces_the_failure",
    },
    "test_bench_own_loop_smoke.py": {"test_quick_writes_json"},
    "test_bench_sequence_smoke.py": {"test_quick_writes_json_and_table"},
    "test_bench_smoke.py": {"test_quick_smallest_config_writes_json"},
    "test_dropin.py": {
        "test_docs_own_loop_runs_and_learns",
        "test_vmapped_seeds_one_empty",
        "test_prioritized_with_every_priority_zero",
    },
    "test_plan.py": {"test_plan_matches_the_allocated_state"},
    # statistical tests, long randomized sequences, vmap/scan/donation equivalences
    "test_sequence.py": {
        "test_stale_ids_ignored_live_ids_applied",
        "test_vmapped_adds_match_per_seed_adds",
        "test_scan_equals_python_loop",
        "test_tree_holds_exactly_the_sampleable_items",
        "test_uniform_window_sampling_chi_square",
        "test_prioritized_window_sampling_chi_square",
        "test_row_numbers_wrap_safely",
        "test_side_entries_of_more_than_64_envs",
        "test_length_one_equals_one_copy",
    },
    "test_sumtree.py": {
        "test_vmapped_set_uses_the_batched_loop_and_matches_per_tree",
        "test_vectorised_set_matches_cpu_path_under_vmap_scan_and_donation",
        "test_sample_chi_square",
        "test_million_updates_no_drift",
        "test_vmap_over_trees_matches_per_tree",
        "test_property_random_set_sequences",
        "test_sample_valid_and_probabilities[1000-2]",
    },
    "test_eviction.py": {
        "test_mintree_set_p_leaves_the_top_to_refresh",
        "test_reservoir_keeps_every_item_with_equal_probability",
        "test_policies_work_under_vmap_scan_and_donation",
        "test_batched_add_equals_one_item_at_a_time",
        "test_fifo_is_bit_identical_to_no_policy",
    },
    "test_one_copy.py": {
        "test_prioritized_with_one_copy",
        "test_frame_stack_wrapper_with_truncation_is_exact",
        "test_vmapped_adds_match_per_seed_adds",
    },
    "test_codecs.py": {
        "test_bitpack_roundtrip_bit_exact",
        "test_quantize_error_bound",
        "test_kmeans_1d_fit_matches_numpy_lloyd_and_reduces_distortion",
        "test_cast_relative_error_bound",
    },
    "test_replay_prioritized.py": {
        "test_sampling_chi_square_and_zero_priority_never_sampled",
        "test_vmap_over_seeds",
        "test_scan_matches_python_loop",
        "test_random_ops_vs_per_reference",
    },
    "test_replay_uniform.py": {
        "test_uniform_draws_chi_square_at_large_counts",
        "test_sampling_is_uniform_over_stored_items_chi_square",
        "test_vmap_over_seeds",
        "test_scan_matches_python_loop",
        "test_random_ops_vs_fifo_reference_capacity7",
        "test_random_ops_vs_fifo_reference_capacity1",
    },
    "test_mixer.py": {"test_prioritized_weights_are_the_mixtures"},
}


def pytest_configure(config):
    """Naming test files or directories (``pytest tests/test_train.py``) runs all their tests,
    slow ones too, unless ``-m`` is given: pyproject's ``-m "not slow"`` is for the default
    run. xdist's workers parse the same command line, so they decide alike."""
    if config.args_source != pytest.Config.ArgsSource.ARGS:
        return
    marks_given = any(a.startswith("-m") for a in config.invocation_params.args)
    if not marks_given and config.option.markexpr == "not slow":
        config.option.markexpr = ""


def is_slow(item) -> bool:
    names = SLOW.get(item.path.name, ())
    return names == ALL or item.name in names or getattr(item, "originalname", None) in names


@pytest.hookimpl(tryfirst=True)  # before the -m selection of pytest's mark plugin
def pytest_collection_modifyitems(config, items):
    """Mark the tests of ``SLOW`` ``slow``; then put the slowest files first, in the order of
    ``SLOWEST_FIRST`` (``DEFAULT_SLOWEST_FIRST`` when the slow tier is deselected): a stable
    sort, so tests keep their order within a file."""
    for item in items:
        if is_slow(item):
            item.add_marker(pytest.mark.slow)
    order = DEFAULT_SLOWEST_FIRST if "not slow" in (config.option.markexpr or "") else SLOWEST_FIRST
    rank = {name: i for i, name in enumerate(order)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


settings.register_profile(
    "memjax",
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "memjax"))


def _hlo_copies(hlo_text: str, shapes) -> list:
    """Lines of compiled HLO text where a ``copy``/``copy-start`` produces one of ``shapes``
    (anywhere, fusions included): ``experiments._common.hlo_copies``, the benchmarks' scanner.

    ``shapes``: iterable of (dtype_prefix, shape) such as ("f32", (4099, 7)); they are
    matched against XLA's type strings, e.g. ``f32[4099,7]{1,0}``.
    """
    found = scan_hlo_copies(hlo_text, shapes=shapes, nested=True, ops=("copy", "copy-start"))
    return [c.line for c in found]


@pytest.fixture(scope="session")
def load_experiment():
    """``load_experiment("bench_replay")``: a fresh module from ``experiments/<name>.py``,
    loaded from its path, as a script run from the checkout would be."""

    def load(name: str):
        path = os.path.join(_ROOT, "experiments", f"{name}.py")
        spec = importlib.util.spec_from_file_location(f"{name}_under_test", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def hlo_copies():
    """``hlo_copies(text, shapes)``: copies of big arrays in compiled HLO (see _hlo_copies)."""
    return _hlo_copies
