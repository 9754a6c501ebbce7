-- bench.lua WHAT -- one benchmark figure, printed as "name value unit (detail)".
--   submit: 100,000 trivial jobs submitted one by one, then every result()
--   submit_inline: the same with the function written in the call (a new
--           closure of one expression for each job)
--   map:    one farm.map over 1,000,000 items
--   pi:     parallel efficiency of the pi workload against the same Lua run serially
--   pi_lua: points/s of the pi workload in pure Lua (examples/pi.lua's throw)
--           over the local pool: 32 jobs of 500,000 points
--   pi_kernel: points/s of the same workload as farm.kernels.pi_hits, the C
--           kernel: 32 jobs of 50,000,000 points (so each job's time, not
--           farm's, is what is measured)
--   bytes:  MB/s for 1,000 jobs with a 1 MB string argument
--   results: MB/s for 1,000 jobs that each return a 1 MB string (16 at a time
--           outstanding, each result read and dropped as it comes)
--   roundtrip: median of 2,000 sequential submit-to-result round trips (after 100
--           unmeasured ones) of one trivial job to an idle pool, in microseconds
--   shared: 1,000 jobs that each read a 10 MB table through farm.shared (sent once
--           to each worker), against 20 jobs that get it as their argument
--   queued: client memory per job queued (run it with -n 1): 1,000,000 trivial
--           jobs submitted behind the one worker, kept busy by a job that waits
--           on a FIFO; the client's RSS growth over them / 1,000,000 (each job's
--           argument is one small integer: a few bytes). Jobs are then cancelled.
--   startup: no figure; prints the result of one trivial job (bench.sh times the
--           whole `farm run` process that does this)
local farm = require "farm"
local now = require("farm.core").now
local what = arg[1] or "submit"

local function inc(x) return x + 1 end

-- examples/pi.lua's workload: hits of n random points in the unit quarter circle
local function throw(n, seed)
  math.randomseed(seed)
  local random, hits = math.random, 0
  for _ = 1, n do
    local x, y = random(), random()
    if x * x + y * y <= 1.0 then hits = hits + 1 end
  end
  return hits
end

local first = farm.submit(inc, 0):result()   -- the pool is up and the function cached

-- bench.lua WHAT WORKERS: wait (at most 30 s) until that many workers are up
-- (nodes join as their links come up), so that all of them are measured
local want = tonumber(arg[2])
if want then
  local until_t = now() + 30
  while farm.workers() < want do
    if now() > until_t then
      error(("bench.lua: only %d of %d workers came up in 30 s"):format(farm.workers(), want))
    end
    os.execute("sleep 0.1")
  end
end

if what == "submit" then
  local n = 100000
  local t0 = now()
  local fs = {}
  for i = 1, n do fs[i] = farm.submit(inc, i) end
  local sum = 0
  for i = 1, n do sum = sum + fs[i]:result() end
  local dt = now() - t0
  assert(sum == n * (n + 1) // 2 + n)
  print(("submit_one_by_one %.0f jobs/s (%d jobs in %.3f s)"):format(n / dt, n, dt))
elseif what == "submit_inline" then
  local n = 100000
  local t0 = now()
  local fs = {}
  for i = 1, n do fs[i] = farm.submit(function(x) return x + 1 end, i) end
  local sum = 0
  for i = 1, n do sum = sum + fs[i]:result() end
  local dt = now() - t0
  assert(sum == n * (n + 1) // 2 + n)
  print(("submit_one_by_one_inline %.0f jobs/s (%d jobs, the function written in the call, in %.3f s)")
    :format(n / dt, n, dt))
elseif what == "map" then
  local n = 1000000
  local list = {}
  for i = 1, n do list[i] = i end
  local t0 = now()
  local out = farm.map(inc, list)
  local dt = now() - t0
  assert(#out == n and out[n] == n + 1)
  print(("map %.0f items/s (%d items in %.3f s)"):format(n / dt, n, dt))
elseif what == "pi" then
  local jobs, points = 32, 500000
  local sizes, seeds = {}, {}
  for i = 1, jobs do sizes[i], seeds[i] = points, i end
  local t0 = now()
  for i = 1, jobs do throw(points, i) end
  local serial = now() - t0
  t0 = now()
  farm.map(throw, sizes, seeds)
  local parallel = now() - t0
  local eff = serial / (parallel * farm.workers())
  print(("pi_parallel_efficiency %.1f %% (serial %.3f s, parallel %.3f s on %d workers)")
    :format(100 * eff, serial, parallel, farm.workers()))
elseif what == "pi_lua" or what == "pi_kernel" then
  local kernel = what == "pi_kernel"
  local fn = kernel and farm.kernels.pi_hits or throw
  local jobs, points = 32, kernel and 50000000 or 500000
  local sizes, seeds = {}, {}
  for i = 1, jobs do sizes[i], seeds[i] = points, i end
  farm.map(fn, { 1000, 1000 }, { 1, 2 })          -- both workers have the function
  local t0 = now()
  local hits = 0
  for _, h in ipairs(farm.map(fn, sizes, seeds)) do hits = hits + h end
  local dt = now() - t0
  assert(math.abs(4 * hits / (jobs * points) - math.pi) < 0.01)
  print(("%s %.0f points/s (%d jobs of %d points in %.3f s on %d workers)")
    :format(what, jobs * points / dt, jobs, points, dt, farm.workers()))
elseif what == "bytes" then
  local n, size = 1000, 1000000
  local s = string.rep("x", size)
  local len = function(x) return #x end
  farm.submit(len, "warm"):result()
  local t0 = now()
  local fs = {}
  for i = 1, n do fs[i] = farm.submit(len, s) end
  for i = 1, n do assert(fs[i]:result() == size) end
  local dt = now() - t0
  print(("large_args %.0f MB/s (%d jobs of %d bytes in %.3f s)"):format(n * size / dt / 1e6, n, size, dt))
elseif what == "results" then
  local n, size, window = 1000, 1000000, 16
  local big = function(k) return string.rep(("x"):rep(1000), k // 1000) end
  farm.submit(big, 1000):result()
  local t0 = now()
  local fs = {}
  for i = 1, n + window do
    if i <= n then fs[i] = farm.submit(big, size) end
    local k = i - window
    if k >= 1 then assert(#fs[k]:result() == size); fs[k] = nil end
  end
  local dt = now() - t0
  print(("large_results %.0f MB/s (%d jobs returning %d bytes, %d at a time, in %.3f s)")
    :format(n * size / dt / 1e6, n, size, window, dt))
elseif what == "roundtrip" then
  local warm, n = 100, 2000
  local ident = function(x) return x end
  for _ = 1, warm do assert(farm.submit(ident, 1):result() == 1) end
  local dts = {}
  for i = 1, n do
    local t0 = now()
    local r = farm.submit(ident, 1):result()
    dts[i] = now() - t0
    assert(r == 1)
  end
  table.sort(dts)
  local function us(q) return 1e6 * dts[math.max(1, math.ceil(q * n))] end
  print(("round_trip %.1f µs (median of %d sequential round trips; min %.1f, p90 %.1f µs)")
    :format(us(0.5), n, 1e6 * dts[1], us(0.9)))
elseif what == "shared" then
  local big = {}
  for i = 1, 10000 do big[i] = string.rep(string.char(65 + i % 26), 996) .. ("%04d"):format(i) end
  local t0 = now()
  farm.shared.big = big
  local fs = {}
  for i = 1, 1000 do fs[i] = farm.submit(function(i) return #farm.shared.big[i % 10000 + 1] end, i) end
  for i = 1, 1000 do assert(fs[i]:result() == 1000) end
  local dt = now() - t0
  local sent = 0
  for _, w in ipairs(farm.stats().workers) do sent = sent + w.bytes_sent end
  local n = 20
  local t1 = now()
  for i = 1, n do fs[i] = farm.submit(function(t, i) return #t[i] end, big, i) end
  for i = 1, n do assert(fs[i]:result() == 1000) end
  local da = now() - t1
  print(("shared_10MB %.0f jobs/s (1,000 jobs reading a 10 MB farm.shared table in %.3f s, "
    .. "%.1f MB sent in all; as each job's argument instead: %.0f jobs/s)")
    :format(1000 / dt, dt, sent / 1e6, n / da))
elseif what == "queued" then
  local function rss()
    local f = assert(io.open("/proc/self/statm"))
    local _, pages = f:read("n", "n")
    f:close()
    return pages * 4096
  end
  local fifo = os.tmpname()
  os.remove(fifo)
  assert(os.execute("mkfifo " .. fifo), "bench.lua: mkfifo failed")
  local hold = farm.submit(function(path)
    local f = assert(io.open(path, "r"))
    f:read("a")
    f:close()
    return true
  end, fifo)
  local n = 1000000
  local fs = {}
  collectgarbage()
  collectgarbage()
  local r0 = rss()
  local t0 = now()
  for i = 1, n do fs[i] = farm.submit(inc, i) end
  local dt = now() - t0
  collectgarbage()
  collectgarbage()
  local grown = rss() - r0
  local w = assert(io.open(fifo, "w"))       -- the worker's job reads its end of file
  w:close()
  os.remove(fifo)
  assert(hold:result())
  farm.close { cancel = true }
  print(("queued_job_memory %.0f bytes (client RSS growth over %d trivial jobs queued behind "
    .. "a busy worker, per job, the script's table of futures included; submitted in %.2f s)")
    :format(grown / n, n, dt))
elseif what == "startup" then
  print(first)
  io.stdout:flush()                 -- the timer in bench.sh reads this line at once
else
  error("bench.lua: unknown benchmark '" .. tostring(what)
    .. "' (submit, submit_inline, map, pi, pi_lua, pi_kernel, bytes, results, roundtrip, shared, queued, startup)")
end
