-- bench_table.lua FIGURES JSON -- the targets of issue 19 against the figures
-- scripts/bench.sh measured: FIGURES holds its median lines ("name value unit
-- (detail)"); prints one row per target (what, median, unit, target, met) and
-- writes the same rows to JSON as an array of
--   { "name": ..., "median": number or null, "unit": ..., "target": ..., "met": "yes" | "no" | "n/a" }
-- A target relative to luaproc is "n/a" here: `make bench-peers` measures
-- farm and luaproc in one run (the kit in ../shared/bench-peers). A figure
-- that is missing (a part that could not run) has median null and met "n/a".
-- Nothing here is a test: a "no" is a figure, not a failure.
local figures_path, json_path = arg[1], arg[2]
if not figures_path or not json_path then
  io.stderr:write("usage: lua5.4 scripts/bench_table.lua FIGURES JSON\n")
  os.exit(2)
end

local fig = {}
for line in assert(io.open(figures_path)):lines() do
  local name, value = line:match("^(%S+)%s+(%S+)")
  if name and tonumber(value) then fig[name] = tonumber(value) end
end

local function ratio(a, b)
  if fig[a] and fig[b] and fig[b] ~= 0 then return fig[a] / fig[b] end
end

local PEER = "luaproc (make bench-peers)"
local rows = {
  { "trivial jobs one by one, function named once", fig.submit_one_by_one, "jobs/s",
    ">= 1.2x " .. PEER },
  { "trivial jobs one by one, function written in the call", fig.submit_one_by_one_inline, "jobs/s",
    ">= 1.2x " .. PEER },
  { "function written in the call against named once", ratio("submit_one_by_one_inline", "submit_one_by_one"),
    "x", ">= 1.0", function(v) return v >= 1.0 end },
  { "one farm.map of 1,000,000 trivial items", fig.map, "items/s", ">= 1.5x " .. PEER },
  { "1,000 jobs with a 1 MB argument", fig.large_args, "MB/s",
    ">= 5000 (0.6x luaproc, about 5-7 GB/s here)", function(v) return v >= 5000 end },
  { "pi parallel efficiency", fig.pi_parallel_efficiency, "%", ">= 98",
    function(v) return v >= 98 end },
  { "one job's round trip, idle pool (median)", fig.round_trip, "us", "<= 40",
    function(v) return v <= 40 end },
  { "start-up to first result", fig.startup_to_first_result, "ms", "<= 8",
    function(v) return v <= 8 end },
  { "memory per queued job (1,000,000 queued)", fig.queued_job_memory, "bytes", "<= 200",
    function(v) return v <= 200 end },
  { "through one sealed node: 1 MB arguments", fig.node_large_args, "MB/s", ">= 1000",
    function(v) return v >= 1000 end },
  { "through one sealed node: trivial jobs against the local rate",
    ratio("node_submit_one_by_one", "submit_one_by_one"), "x", ">= 0.6",
    function(v) return v >= 0.6 end },
  { "32 nodes of 1 worker against 2: trivial jobs/s",
    ratio("nodes32_submit_one_by_one", "nodes2_submit_one_by_one"), "x", ">= 0.5",
    function(v) return v >= 0.5 end },
  { "C API: a round trip with 2 threads against 1 thread (means)", fig.capi_2threads_vs_1, "x", "<= 1.5",
    function(v) return v <= 1.5 end },
}

local function shown(v)
  if v == nil then return "-" end
  if math.abs(v) >= 1000 then return ("%.0f"):format(v) end
  if math.abs(v) >= 10 then return ("%.1f"):format(v) end
  return ("%.2f"):format(v)
end

local out, json = {}, {}
local wide = 0
for _, r in ipairs(rows) do wide = math.max(wide, #r[1]) end
print(("%-" .. wide .. "s  %12s %-7s %-46s %s"):format("target (issue 19)", "median", "unit", "target", "met"))
local nmet, nknown = 0, 0
for _, r in ipairs(rows) do
  local name, v, unit, target, check = r[1], r[2], r[3], r[4], r[5]
  local met = "n/a"
  if v ~= nil and check then
    met = check(v) and "yes" or "no"
    nknown = nknown + 1
    if met == "yes" then nmet = nmet + 1 end
  end
  out[#out + 1] = ("%-" .. wide .. "s  %12s %-7s %-46s %s"):format(name, shown(v), unit, target, met)
  json[#json + 1] = ('  {"name": %q, "median": %s, "unit": %q, "target": %q, "met": %q}')
    :format(name, v and ("%.6g"):format(v) or "null", unit, target, met)
end
print(table.concat(out, "\n"))
print(("%d of %d targets measured here met (the rest need luaproc in the same run)"):format(nmet, nknown))
local f = assert(io.open(json_path, "w"))
f:write("[\n", table.concat(json, ",\n"), "\n]\n")
f:close()
print("(written to " .. json_path .. ")")
