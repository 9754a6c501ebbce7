#!/bin/sh
# bench.sh [BUILD_DIR] -- print farm's benchmark figures (not tests: nothing is
# asserted). Each figure is the median of several runs of spec/bench/bench.lua.
set -eu
B=${1:-build}
cd "$(dirname "$0")/.."
export FARM_EXE="$PWD/$B/farm"
runs=${FARM_BENCH_RUNS:-5}
echo "farm benchmarks: local pool of 2 workers, median of $runs runs ($(nproc) CPUs)"
for what in submit map pi bytes; do
  i=0
  : > /tmp/farm-bench.$$
  while [ $i -lt "$runs" ]; do
    "$B/farm" run -n 2 --quiet-jobs scripts/bench.lua -- "$what" >> /tmp/farm-bench.$$
    i=$((i + 1))
  done
  sort -g -k2 /tmp/farm-bench.$$ | awk -v n="$runs" 'NR == int((n + 1) / 2) { print }'
done
rm -f /tmp/farm-bench.$$
