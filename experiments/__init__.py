"""Scripts that produce the README's tables and plots, and the benchmarks.

``experiments.bench_replay.main(argv)`` is the replay benchmark behind ``memjax bench``;
``experiments._common`` holds what the scripts share (timing protocol, paired ratios, HLO copy
scanner, machine and git state, argparse types); the tests' HLO copy checks use it too.
"""
