#!/usr/bin/env bash
# The benchmarks that want an accelerator, in one prepared run with a time budget per part
# (a lent GPU machine gives a session about 15 minutes, one to two of them to start it):
#
#   bash experiments/gpu_run.sh [PARTS]         # on the device machine, from the checkout
#   QUICK=1 WHEELS= PYTHON=.venv/bin/python bash experiments/gpu_run.sh
#                                               # every part with --quick (a CPU smoke test)
#
# PARTS is a comma list of loop, replay, sequence, cells, memory_loop, population, pbt
# (default: all, in that order), ntm (the NTM's memory-table cells the CPU has not run) and cells_table
# (the LRU and FFM cells on the memory tasks with 4 seeds): each of the last two a slot of its own. Each part writes its JSON and its printed table to $OUT/gpu_run/ (OUT
# defaults to ./gpu_out), and the folder is packed into $OUT/gpu_run.tgz at the end, so it
# comes back as one file. What each part measures is in the benchmark's docstring; the
# figures go into docs/benchmarks.md with the hardware named (the first lines of each log).
#
# Wheels the machine lacks (see ../shared/GPU.md: gymnax, gymnasium, farama-notifications,
# flashbax for its Python) are installed from WHEELS (default .whl, an ignored folder to
# name in the device tool's `carry`) into /tmp/wheels; the project goes on PYTHONPATH.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/gpu_out}
DIR=$OUT/gpu_run
PARTS=${1:-loop,replay,sequence,cells,memory_loop,population,pbt}
QUICK=${QUICK:-0}
WHEELS=${WHEELS-$ROOT/.whl}
PYTHON=${PYTHON:-python}
mkdir -p "$DIR"
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
if [[ -n $WHEELS ]] && compgen -G "$WHEELS/*.whl" >/dev/null; then
  "$PYTHON" -m pip install -q --no-deps --target /tmp/wheels "$WHEELS"/*.whl 2>&1 | grep -v WARNING | tail -2
  export PYTHONPATH=$ROOT:/tmp/wheels
else
  export PYTHONPATH=$ROOT
fi
cd "$ROOT" || exit 1
{
  date -u
  git rev-parse --short HEAD 2>/dev/null
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
  "$PYTHON" -c "import jax; print('jax', jax.__version__, jax.devices())"
} | tee "$DIR/machine.txt"

quiet() { grep -v -e "^WARNING" -e "^W[0-9]" -e "^I[0-9]" -e "^E[0-9]"; }
# part NAME SECONDS COMMAND...: run one benchmark under a time limit, log it, print its tail
part() {
  local name=$1 limit=$2
  shift 2
  [[ ",$PARTS," == *",$name,"* ]] || return 0
  echo "== $name (limit ${limit} s) $(date +%T)"
  local quick=()
  [[ $QUICK == 1 ]] && quick=(--quick)
  timeout "$limit" "$PYTHON" "$@" "${quick[@]}" 2>&1 | quiet >"$DIR/$name.log"
  echo "   exit ${PIPESTATUS[0]} $(date +%T)"
  tail -n 25 "$DIR/$name.log"
}

# issue 28/30: the fused loop against its replay-free floor and flashbax, 1 to 512 seeds,
# with the kernel counts of each side
part loop 170 experiments/bench_loop.py --seeds 1,8,128,512 --rounds 3 --chunk-steps 500 \
  --no-breakdown --out "$DIR/bench_loop.json"
# issue 28: a realistic PER step at 2^20, and uniform add/sample, against flashbax
part replay 90 experiments/bench_replay.py --only per,sample --rounds 3 \
  --per-capacities 65536,1048576 --out "$DIR/bench_replay.json"
# issue 28: sequence replay (add, uniform windows, prioritized windows at period 1 and 40)
part sequence 90 experiments/bench_sequence.py --rounds 3 --out "$DIR/bench_sequence.json"
# issue 30: DRQN's update with the parallel cells against the GRU, and the loop's env steps/s
# at 8 seeds on MemoryChain-20 (the parallel cells compile slowly: most of the limit)
part cells 200 experiments/bench_cells.py --seeds 8 --rounds 2 --out "$DIR/bench_cells.json"
# issue 23: the NTM's loop against DRQN's, and each on its replay-free floor (the buffer's
# share of the loop), 8 seeds on MemoryChain-20
part memory_loop 150 experiments/bench_memnet_loop.py --sides drqn,ntm --floors drqn,ntm \
  --seeds 8 --rounds 3 --chunk-steps 200 --out "$DIR/bench_memnet_loop.json"
# issue 24: a sweep of 8 learning rates x 2 seeds in one program against 8 separate runs
part population 120 experiments/bench_population.py --parts throughput,memory --rounds 2 \
  --out "$DIR/bench_population.json"
# issue 24: PBT against its grid on Breakout-MinAtar (4 learning rates x 4 seeds, 250k steps)
part pbt 200 experiments/bench_population.py --parts pbt --pbt-env Breakout-MinAtar \
  --pbt-lrs 1e-6,1e-5,1e-4,1e-2 --pbt-steps 250000 --pbt-seeds 4 --pbt-every 25000 \
  --pbt-chunk-steps 25000 --plot "$DIR/population-pbt-breakout.png" \
  --out "$DIR/bench_population_pbt.json"

# issue 23: the NTM's column of the memory table (experiments/memory_table.py), its cells 4 at
# a time; cells still running at the deadline stop with their checkpoints (in the tarball)
# and resume on the next call from where they were, when that folder is put back as
# $OUT/gpu_run/memory_table. Not in the default PARTS: it takes a slot of its own.
if [[ ",$PARTS," == *",ntm,"* ]]; then
  echo "== ntm (deadline 480 s) $(date +%T)"
  # what the CPU has not run yet (its memory-task cells are in experiments/results/memory_table/ntm):
  # the CartPole cells, longest first, then the codecs' comparison on the memory tasks
  cells=ntm:StatelessCartPole,ntm:NoisyStatelessCartPole,ntm:CartPole-v1
  for codec in ntm-f32 ntm-int8; do
    for task in RepeatPrevious RepeatPrevious-5 CountRecall MemoryChain-20 RepeatFirst; do
      cells+=,$codec:$task
    done
  done
  timeout 560 "$PYTHON" experiments/memory_table.py --cells "$cells" --seeds 4 --jobs 4 --deadline 480 --out "$DIR/memory_table" 2>&1 | quiet | tee "$DIR/ntm.log" | tail -n 40
fi

# issue 30: the parallel cells' suite table (2 seeds; the CPU's is in
# experiments/results/memory_table/drqn-*), rerun on the GPU with 4 seeds, the same way
if [[ ",$PARTS," == *",cells_table,"* ]]; then
  echo "== cells_table (deadline 480 s) $(date +%T)"
  cells=
  for task in RepeatPrevious CountRecall RepeatPrevious-5 RepeatFirst MemoryChain-20; do
    for cell in lru ffm; do
      cells+=${cells:+,}drqn-$cell:$task
    done
  done
  timeout 560 "$PYTHON" experiments/memory_table.py --cells "$cells" --seeds 4 --jobs 4 \
    --deadline 480 --out "$DIR/memory_table" 2>&1 | quiet | tee "$DIR/cells_table.log" | tail -n 40
fi

tar -czf "$OUT/gpu_run.tgz" -C "$OUT" gpu_run
echo "== end $(date +%T): $OUT/gpu_run.tgz"
