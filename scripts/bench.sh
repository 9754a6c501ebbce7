#!/bin/sh
# bench.sh [BUILD_DIR] -- print farm's benchmark figures (not tests: nothing is
# asserted). Each figure is the median of several runs of scripts/bench.lua (or
# of BUILD_DIR/bench_capi), one line per figure; start-up is the wall time of
# whole `farm run` processes. At the end, the targets of issue 19 with the
# figures measured against each (scripts/bench_table.lua), also written as
# BUILD_DIR/bench.json. About 3 minutes.
set -eu
B=${1:-build}
cd "$(dirname "$0")/.."
export FARM_EXE="$PWD/$B/farm"
runs=${FARM_BENCH_RUNS:-5}
node_runs=3
startup_runs=10
tmp=/tmp/farm-bench.$$
res=/tmp/farm-bench-all.$$
kdir=
node_pids=
cleanup() {
  for p in $node_pids; do kill "$p" 2>/dev/null || true; done
  for p in $node_pids; do wait "$p" 2>/dev/null || true; done
  rm -f "$tmp" "$tmp.pi" "$res"
  [ -z "$kdir" ] || rm -rf "$kdir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
: > "$res"

# medians: of the lines in $tmp ("name value unit (detail)"), the median one of
# each name, by value; printed and kept in $res for the table
medians() {
  LC_ALL=C sort -k1,1 -k2,2g "$tmp" | awk '
    { if (!($1 in n)) order[++k] = $1; n[$1]++; line[$1, n[$1]] = $0 }
    END { for (i = 1; i <= k; i++) { m = order[i]; print line[m, int((n[m] + 1) / 2)] } }' |
    tee -a "$res"
}

# free_port: the next port from $port on that nothing listens on (in $port)
free_port() {
  port=$((port + 1))
  while [ -n "$(ss -Htln "sport = :$port" 2>/dev/null)" ]; do port=$((port + 1)); done
}

# start_node PORT WORKERS: a standing node on loopback (sealed), its pid in node_pids
start_node() {
  "$B/farm" node --listen "tcp://127.0.0.1:$1" --key-file "$kdir/key" -w "$2" \
    --log-file "$kdir/node.$1.log" --pid-file "$kdir/node.$1.pid" &
  node_pids="$node_pids $!"
}

# wait_nodes PORT...: until each has written its pid file (at most 10 s each)
wait_nodes() {
  for p in "$@"; do
    i=0
    while [ ! -s "$kdir/node.$p.pid" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
  done
}

stop_nodes() {
  for p in $node_pids; do kill "$p" 2>/dev/null || true; done
  for p in $node_pids; do wait "$p" 2>/dev/null || true; done
  node_pids=
}

echo "farm benchmarks: local pool of 2 workers, median of $runs runs ($(nproc) CPUs)"
for what in submit submit_inline map pi pi_lua pi_kernel bytes results roundtrip shared; do
  i=0
  : > "$tmp"
  while [ $i -lt "$runs" ]; do
    "$B/farm" run -n 2 --quiet-jobs scripts/bench.lua -- "$what" >> "$tmp"
    i=$((i + 1))
  done
  medians
done
# the C kernel against pure Lua on the same workload (the two medians above)
awk '$1 == "pi_lua" { l = $2 } $1 == "pi_kernel" { k = $2 }
     END { if (l > 0) printf "pi_kernel_speedup %.0f x (farm.kernels.pi_hits against pure Lua, points/s)\n", k / l }' \
  "$res"

# Memory per queued job: one run (1,000,000 jobs behind the one busy worker).
"$B/farm" run -n 1 --quiet-jobs scripts/bench.lua -- queued > "$tmp"
medians

# The C API from 2 threads against 1 (its own program, linked with libfarm).
if [ -x "$B/bench_capi" ]; then
  : > "$tmp"
  i=0
  while [ $i -lt 3 ]; do "$B/bench_capi" 2000 >> "$tmp"; i=$((i + 1)); done
  echo "the C API (farm.h): round trips from 1 thread, then from 2 at once, median of 3 runs"
  medians
else
  echo "(no $B/bench_capi: \`make bench\` builds it; the C API figures are left out)"
fi

# The same figures through one node over TCP on loopback (sealed: authenticated
# and encrypted), every job remote (-n 0): a standing `farm node` of 2 workers.
kdir=$(mktemp -d /tmp/farm-bench-node.XXXXXX)
port=$((30000 + $$ % 20000))
"$B/farm" keygen "$kdir/key" 2>/dev/null
free_port
start_node "$port" 2
wait_nodes "$port"
echo "through one node (tcp://127.0.0.1, sealed; 2 workers there, none here), median of $runs runs"
for what in submit bytes results roundtrip shared; do
  i=0
  : > "$tmp"
  while [ $i -lt "$runs" ]; do
    "$B/farm" run -n 0 --hosts "node://127.0.0.1:$port" --key-file "$kdir/key" --quiet-jobs \
      scripts/bench.lua -- "$what" | sed 's/^/node_/' >> "$tmp"
    i=$((i + 1))
  done
  medians
done
stop_nodes

# 32 standing nodes of one worker each against 2 of them: trivial jobs one by
# one (nothing may scan every node per job). The run waits for every worker.
ports=
i=1
while [ $i -le 32 ]; do free_port; ports="$ports $port"; i=$((i + 1)); done
for p in $ports; do start_node "$p" 1; done
# shellcheck disable=SC2086
wait_nodes $ports
hosts32=$(for p in $ports; do printf 'node://127.0.0.1:%s,' "$p"; done)
hosts32=${hosts32%,}
hosts2=$(echo "$hosts32" | cut -d, -f1-2)
echo "standing nodes of 1 worker each (tcp://127.0.0.1, sealed), median of $node_runs runs"
: > "$tmp"
i=0
while [ $i -lt "$node_runs" ]; do
  "$B/farm" run -n 0 --hosts "$hosts2" --key-file "$kdir/key" --quiet-jobs \
    scripts/bench.lua -- submit 2 | sed 's/^/nodes2_/' >> "$tmp"
  "$B/farm" run -n 0 --hosts "$hosts32" --key-file "$kdir/key" --quiet-jobs \
    scripts/bench.lua -- submit 32 | sed 's/^/nodes32_/' >> "$tmp"
  i=$((i + 1))
done
medians
stop_nodes

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
medians

echo
lua5.4 scripts/bench_table.lua "$res" "$B/bench.json"
