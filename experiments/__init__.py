"""Scripts that produce the README's tables and plots, and the benchmarks.

``experiments.bench_replay.main(argv)`` is the replay benchmark behind ``memjax bench``.
"""
