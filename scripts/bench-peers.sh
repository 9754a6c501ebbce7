#!/bin/sh
# bench-peers.sh [BUILD_DIR] -- farm against luaproc (and Lua Lanes, where built)
# in one interleaved run, with the bench kit of ../shared/bench-peers (its README
# says how to build the peers), then farm's ratios to luaproc against issue 19's
# targets. Runs only where the peers are built: LUAPEERS names the kit's work
# folder (default: the kit itself), and $LUAPEERS/luaproc/bin/luaproc.so must be
# there. A measurement, not a test: never part of `make test`.
set -eu
B=${1:-build}
cd "$(dirname "$0")/.."
KIT=$(cd "${BENCH_PEERS_KIT:-../shared/bench-peers}" 2>/dev/null && pwd) || {
  echo "bench-peers: no bench kit at ${BENCH_PEERS_KIT:-../shared/bench-peers} (set BENCH_PEERS_KIT)" >&2
  exit 1
}
LUAPEERS=${LUAPEERS:-$KIT}
if [ ! -f "$LUAPEERS/luaproc/bin/luaproc.so" ]; then
  echo "bench-peers: the peers are not built in $LUAPEERS (no luaproc/bin/luaproc.so): build them" \
       "with the kit's build.sh (see $KIT/README.md), then set LUAPEERS to that folder" >&2
  exit 1
fi
peers="farm luaproc"
[ -f "$LUAPEERS/lanes/src/lanes_core.so" ] && peers="$peers lanes"
[ -f "$LUAPEERS/lanes3/src/lanes/core.so" ] && peers="$peers lanes3"
out=$(mktemp -d /tmp/farm-bench-peers.XXXXXX)
trap 'rm -rf "$out"' EXIT
FARM="$PWD/$B/farm" LUAPEERS="$LUAPEERS" PEERS="$peers" WORKLOADS="${WORKLOADS:-w1 w2 w3 w4}" \
  OUTDIR="$out" sh "$LUAPEERS/run.sh"
echo
lua5.4 - "$out/raw.txt" <<'LUA'
-- the ratio of farm's median to luaproc's for each workload both ran, with its target
local runs = {}
for line in io.lines(arg[1]) do
  local name, value = line:match("^%S+ (%S+) (%S+)")
  if name and tonumber(value) then
    runs[name] = runs[name] or {}
    table.insert(runs[name], tonumber(value))
  end
end
local function median(t)
  if not t or #t == 0 then return nil end
  table.sort(t)
  return #t % 2 == 1 and t[(#t + 1) // 2] or (t[#t // 2] + t[#t // 2 + 1]) / 2
end
local targets = { w1 = { "trivial jobs one by one", 1.2 }, w2 = { "one map of 1M items", 1.5 },
                  w4 = { "1,000 jobs with a 1 MB argument", 0.6 } }
print(("%-34s %8s %8s  %s"):format("farm against luaproc, same run", "ratio", "target", "met"))
for _, w in ipairs { "w1", "w2", "w4" } do
  local f, l = median(runs["farm_" .. w]), median(runs["luaproc_" .. w])
  if f and l and l > 0 then
    local r = f / l
    print(("%-34s %8.2f %8s  %s"):format(targets[w][1], r, ">= " .. targets[w][2],
      r >= targets[w][2] and "yes" or "no"))
  end
end
LUA
