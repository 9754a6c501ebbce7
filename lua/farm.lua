-- farm.lua -- the public `farm` module: submit Lua functions, get futures back.
--
-- The pool of local workers starts at first use and stops with farm.close()
-- or when the Lua state closes. Functions travel as source (see ship.lua);
-- the C core (farm.core) keeps the job table and schedules by credit.

local core = require "farm.core"
local ship = require "farm.ship"

local error, type, select, tostring, setmetatable = error, type, select, tostring, setmetatable
local ceil, min, max, huge = math.ceil, math.min, math.max, math.huge
local tmove, pack = table.move, table.pack
local getupvalue = debug.getupvalue

local farm = { _VERSION = "farm 0.1.0" }

local describe, names, resolve = ship.describe, ship.names, ship.resolve
local chunks = {}                       -- compiled chunks of functions in results

local config = { echo = true }
do
  local maxmsg = tonumber(os.getenv("FARM_MAX_MESSAGE") or "")
  if maxmsg then config.max_message = maxmsg end
end
local ctx                               -- the running pool, or nil
local on_worker = false                 -- set in worker processes

local function pool()
  if on_worker then
    -- a pool started from a job would start pools from its jobs, and so on
    error("farm: a job cannot submit jobs yet (nested jobs are not supported in this version)", 0)
  end
  if not ctx or core.closed(ctx) then
    ctx = core.new(config)
  end
  return ctx
end

--- farm.config{workers = N, echo = bool, max_message = bytes}: before the pool starts.
function farm.config(opts)
  if type(opts) ~= "table" then
    error("farm.config: argument #1 must be a table of options", 2)
  end
  if ctx and not core.closed(ctx) then
    error("farm.config: the pool is running; call farm.close() first", 2)
  end
  for k, v in pairs(opts) do
    if k == "workers" then
      if v ~= nil and (math.type(v) ~= "integer" or v < 1 or v > 256) then
        error("farm.config: workers must be an integer from 1 to 256", 2)
      end
    elseif k == "max_message" then
      if math.type(v) ~= "integer" or v < 65536 then
        error("farm.config: max_message must be a number of bytes (at least 65536)", 2)
      end
    elseif k ~= "echo" then
      error(("farm.config: unknown option '%s' (workers, echo, max_message)"):format(tostring(k)), 2)
    end
    config[k] = v
  end
end

--- farm.close(): stop the workers; jobs not finished fail. The next submit starts a new pool.
function farm.close()
  if ctx then core.close(ctx) end
  ctx = nil
end

-- Function packages: a function whose only upvalue is the global table and that
-- names no shippable global is the same package every time, so it is encoded and
-- hashed once; any other is encoded at each submit (its upvalues are values).
local constant = setmetatable({}, { __mode = "k" })

local function is_constant(f)
  if names()[f] then return true end          -- travels by name (math.sqrt)
  local d = describe(f)
  if #d.globals > 0 then return false end
  for i = 1, huge do
    local name, v = getupvalue(f, i)
    if name == nil then return true end
    if not (name == "_ENV" and v == _G) then return false end
  end
end

local function package(c, f)
  local p = constant[f]
  if p then return p end
  p = core.package(c, describe, names, f)
  if is_constant(f) then constant[f] = p end
  return p
end

local function check_fn(what, fn)
  if type(fn) ~= "function" then
    error(("%s: argument #1 must be a function (got %s)"):format(what, type(fn)), 3)
  end
end

--- farm.submit(fn, ...) -> future
function farm.submit(fn, ...)
  check_fn("farm.submit", fn)
  local c = pool()
  return core.submit(c, package(c, fn), describe, names, ...)
end

-- ---- futures -------------------------------------------------------------

local JobError = {}
JobError.__index = JobError
function JobError.__tostring(e)
  local s = e.message
  if e.worker then s = s .. "\n(job " .. e.job .. " ran on " .. e.worker .. ")" end
  if e.traceback and e.traceback ~= "" then
    s = s .. "\nremote " .. e.traceback
  end
  return s
end
farm.JobError = JobError

local Future = {}

local function finish(f, ok, ...)
  if ok then return ... end
  local message, traceback, where = ...
  error(setmetatable({ message = message, traceback = traceback,
                       worker = where ~= "" and where or nil, job = core.id(f) }, JobError), 3)
end

local function timed_out(f, timeout)
  error(setmetatable({ message = ("farm: timed out after %g s waiting for job %d "
    .. "(it goes on running)"):format(timeout, core.id(f)), traceback = "",
    job = core.id(f), timeout = true }, JobError), 3)
end

local function check_timeout(what, timeout, level)
  if timeout ~= nil and (type(timeout) ~= "number" or timeout ~= timeout) then
    error(("%s: timeout must be a number of seconds (got %s)"):format(what, tostring(timeout)), level + 1)
  end
end

--- future:result([timeout]) -> the job's results, or raises its error
function Future.result(f, timeout)
  if not core.done(f) then
    check_timeout("future:result", timeout, 2)
    local deadline = timeout and core.now() + timeout
    while not core.wait(f, deadline and max(0, deadline - core.now())) do
      if deadline and core.now() >= deadline then timed_out(f, timeout) end
    end
  end
  return finish(f, core.result(f, resolve, chunks))
end

Future.status = core.status
Future.done = core.done
Future.cancel = core.cancel
Future.id = core.id

local methods = Future
core.set_future_mt {
  __index = function(f, k)
    if k == "stdout" then return core.stdout(f) end
    return methods[k]
  end,
  __call = Future.result,
  __tostring = function(f) return ("farm.future(%d, %s)"):format(core.id(f), core.status(f)) end,
  __name = "farm.future",
}

farm.is_future = core.is_future

local function check_futures(what, futures)
  if type(futures) ~= "table" then
    error(("%s: argument #1 must be a table of futures (got %s)"):format(what, type(futures)), 3)
  end
  for i = 1, #futures do
    if not core.is_future(futures[i]) then
      error(("%s: item %d is not a future (got %s)"):format(what, i, type(futures[i])), 3)
    end
  end
end

-- Wait until something arrives (or the deadline); false once the deadline has passed.
local function progress(deadline)
  local c = ctx
  if not c or core.closed(c) then return true end
  if deadline then
    local left = deadline - core.now()
    if left <= 0 then
      core.pump(c, 0)              -- one last look: what has arrived counts
      return false
    end
    core.pump(c, min(left, 1))
  else
    core.pump(c, 1)
  end
  return true
end

--- farm.map(fn, list1 [, list2, ...]) -> { fn(list1[i], list2[i], ...) first results }
function farm.map(fn, ...)
  check_fn("farm.map", fn)
  local nl = select("#", ...)
  if nl == 0 then error("farm.map: needs at least one list", 2) end
  local n = huge
  for i = 1, nl do
    local l = select(i, ...)
    if type(l) ~= "table" then
      error(("farm.map: argument #%d must be a table (got %s)"):format(i + 1, type(l)), 2)
    end
    n = min(n, #l)
  end
  local out = {}
  if n == 0 then return out end
  local c = pool()
  local p = package(c, fn)
  -- about eight chunks a worker: enough to even out the end, few enough to batch
  local chunk = max(1, min(10000, ceil(n / (core.workers(c) * 8))))
  local futures, starts = {}, {}
  for i = 1, n, chunk do
    starts[#starts + 1] = i
    futures[#futures + 1] = core.submit_map(c, p, describe, names, i, min(i + chunk - 1, n), ...)
  end
  for k = 1, #futures do
    local ok, r = pcall(Future.result, futures[k])
    if not ok then
      for j = k + 1, #futures do core.cancel(futures[j]) end
      error(r, 2)
    end
    tmove(r, 1, min(chunk, n - starts[k] + 1), starts[k], out)
  end
  return out
end

--- farm.as_completed(futures [, timeout]) -> iterator over the futures as they finish
function farm.as_completed(futures, timeout)
  check_futures("farm.as_completed", futures)
  check_timeout("farm.as_completed", timeout, 2)
  local pending = tmove(futures, 1, #futures, 1, {})
  local ready, ri = {}, 1
  local deadline = timeout and core.now() + timeout
  return function()
    while true do
      local f = ready[ri]
      if f then ri = ri + 1; return f end
      if #pending == 0 then return nil end
      ready, pending = core.split_done(pending)
      ri = 1
      if #ready == 0 and not progress(deadline) then
        ready, pending = core.split_done(pending)   -- what the last look brought
        if #ready == 0 then
          error(("farm.as_completed: timed out after %g s with %d futures not done")
            :format(timeout, #pending), 2)
        end
      end
    end
  end
end

--- farm.wait(futures [, {timeout = s, return_when = "all" | "first" | "error"}]) -> done, not_done
function farm.wait(futures, opts)
  check_futures("farm.wait", futures)
  opts = opts or {}
  if type(opts) ~= "table" then error("farm.wait: argument #2 must be a table of options", 2) end
  local when = opts.return_when or "all"
  if when ~= "all" and when ~= "first" and when ~= "error" then
    error(("farm.wait: return_when must be \"all\", \"first\" or \"error\" (got %s)")
      :format(tostring(when)), 2)
  end
  check_timeout("farm.wait", opts.timeout, 2)
  local deadline = opts.timeout and core.now() + opts.timeout
  while true do
    local done, pending = core.split_done(futures)
    if #pending == 0 or (when == "first" and #done > 0) then return done, pending end
    if when == "error" then
      for i = 1, #done do
        local s = core.status(done[i])
        if s == "failed" then return done, pending end
      end
    end
    if not progress(deadline) then return core.split_done(futures) end
  end
end

--- farm.workers() -> number of workers
function farm.workers()
  return core.workers(pool())
end

--- farm.stats() -> { workers = {{name, pid, jobs, busy}...}, jobs, busy, elapsed }
function farm.stats()
  if not ctx then return { workers = {}, jobs = 0, busy = 0, elapsed = 0 } end
  return core.stats(ctx)
end

--- farm.print_stats(): like pp's print_stats
function farm.print_stats(out)
  out = out or io.stdout
  local s = farm.stats()
  out:write("Job execution statistics:\n",
            " job count | % of all jobs | job time sum | time per job | job server\n")
  for _, w in ipairs(s.workers) do
    out:write(("%10d | %13.2f | %12.4f | %12.6f | %s (pid %d)\n"):format(
      w.jobs, s.jobs > 0 and 100 * w.jobs / s.jobs or 0, w.busy,
      w.jobs > 0 and w.busy / w.jobs or 0, w.name, w.pid))
  end
  out:write(("Time elapsed since server creation %.4f\n"):format(s.elapsed),
            ("%d jobs queued\n"):format(s.queued or 0))
end

-- Chunks loaded from now on are remembered, so their functions can ship.
ship.hook(_G)

-- Only internal: the worker marks its own farm module with this.
farm._on_worker = function() on_worker = true end

-- Only internal: tests look at the worker pids through this.
farm._pids = function() return ctx and core.pids(ctx) or {} end

return farm
