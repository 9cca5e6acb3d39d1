"""Scripts that produce the docs' tables and plots, and the benchmarks (run from a source
checkout: ``python experiments/NAME.py``).

``experiments.bench_replay.main(argv)`` is the replay benchmark;
``experiments._common`` holds what the scripts share (timing protocol, paired ratios, HLO copy
scanner, machine and git state, argparse types); the tests' HLO copy checks use it too.
"""
