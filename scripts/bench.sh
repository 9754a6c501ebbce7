#!/bin/sh
# bench.sh [BUILD_DIR] -- print farm's benchmark figures (not tests: nothing is
# asserted). Each figure is the median of several runs of scripts/bench.lua, one
# line per figure; the last is the wall time of whole `farm run` processes.
set -eu
B=${1:-build}
cd "$(dirname "$0")/.."
export FARM_EXE="$PWD/$B/farm"
runs=${FARM_BENCH_RUNS:-5}
startup_runs=10
tmp=/tmp/farm-bench.$$
trap 'rm -f "$tmp" "$tmp.pi"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# median N: of the N lines in $tmp ("name value unit (detail)"), the median one by value
median() {
  LC_ALL=C sort -g -k2 "$tmp" | awk -v n="$1" 'NR == int((n + 1) / 2) { print }'
}

echo "farm benchmarks: local pool of 2 workers, median of $runs runs ($(nproc) CPUs)"
for what in submit submit_inline map pi pi_lua pi_kernel bytes results roundtrip shared; do
  i=0
  : > "$tmp"
  while [ $i -lt "$runs" ]; do
    "$B/farm" run -n 2 --quiet-jobs scripts/bench.lua -- "$what" >> "$tmp"
    i=$((i + 1))
  done
  median "$runs" | tee -a "$tmp.pi"
done
# the C kernel against pure Lua on the same workload (the two medians above)
awk '$1 == "pi_lua" { l = $2 } $1 == "pi_kernel" { k = $2 }
     END { if (l > 0) printf "pi_kernel_speedup %.0f x (farm.kernels.pi_hits against pure Lua, points/s)\n", k / l }' \
  "$tmp.pi"

# The same figures through one node over TCP on loopback (sealed: authenticated
# and encrypted), every job remote (-n 0): a standing `farm node` of 2 workers.
kdir=$(mktemp -d /tmp/farm-bench-node.XXXXXX)
port=$((30000 + $$ % 20000))
"$B/farm" keygen "$kdir/key" 2>/dev/null
"$B/farm" node --listen "tcp://127.0.0.1:$port" --key-file "$kdir/key" -w 2 \
  --log-file "$kdir/node.log" --pid-file "$kdir/node.pid" &
node_pid=$!
trap 'kill $node_pid 2>/dev/null || true; wait $node_pid 2>/dev/null || true; rm -rf "$kdir" "$tmp" "$tmp.pi"' EXIT
i=0
while [ ! -s "$kdir/node.pid" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
echo "through one node (tcp://127.0.0.1, sealed; 2 workers there, none here), median of $runs runs"
for what in submit bytes results roundtrip shared; do
  i=0
  : > "$tmp"
  while [ $i -lt "$runs" ]; do
    "$B/farm" run -n 0 --hosts "node://127.0.0.1:$port" --key-file "$kdir/key" --quiet-jobs \
      scripts/bench.lua -- "$what" | sed 's/^/node_/' >> "$tmp"
    i=$((i + 1))
  done
  median "$runs"
done
kill $node_pid 2>/dev/null
wait $node_pid 2>/dev/null || true

# Start-up to first result: wall clock from just before `farm run -n 2` starts (a
# script that submits one trivial job and prints its result) until its output line
# is read; the process's exit is timed too. Perl is only the timer (see deps.sh).
perl -MTime::HiRes=time -e '
  use strict; use warnings;
  my ($n, @cmd) = @ARGV;
  for (1 .. $n) {
    my $t0 = time;
    open(my $out, "-|", @cmd) or die "bench.sh: cannot run $cmd[0]: $!\n";
    my $line = <$out>;
    my $t1 = time;
    { local $/; my $rest = <$out>; }
    close $out;
    my $status = $?;
    my $t2 = time;
    die "bench.sh: \"@cmd\" exited with status $status\n" if $status;
    die "bench.sh: \"@cmd\" printed ", (defined $line ? "\"$line\"" : "nothing"), ", not 1\n"
      unless defined $line && $line eq "1\n";
    printf "startup_to_first_result %.1f ms (farm run -n 2, one trivial job, wall clock, "
      . "median of %d runs; that run exited at %.1f ms)\n", 1e3 * ($t1 - $t0), $n, 1e3 * ($t2 - $t0);
  }' "$startup_runs" "$B/farm" run -n 2 scripts/bench.lua -- startup > "$tmp"
median "$startup_runs"
