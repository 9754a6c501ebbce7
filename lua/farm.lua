-- farm.lua -- the public `farm` module: submit Lua functions, get futures back.
--
-- A pool of local workers starts at first use and stops with close() (which
-- waits for unfinished jobs, as Python's executors do) or when the Lua state
-- closes. `farm.submit` and friends use the default pool; `farm.new{}` makes
-- more, each with the same methods. Functions travel as source (ship.lua); the
-- C engine (farm.core) keeps the job table and schedules on a thread of its own.

local core = require "farm.core"
local ship = require "farm.ship"

local error, type, select, tostring, setmetatable, pairs, pcall =
  error, type, select, tostring, setmetatable, pairs, pcall
local ceil, min, max, huge = math.ceil, math.min, math.max, math.huge
local tmove = table.move
local getupvalue = debug.getupvalue

local farm = { _VERSION = "farm 0.2.0" }
farm.kernels = core.kernels   -- compute kernels in C (core/lkernels.c), on workers too

local describe, names, resolve = ship.describe, ship.names, ship.resolve
local resolve_loaded = ship.resolve_loaded
-- A module a result refers to is this state's own: the paths and source a
-- worker sends along with the reference (ship.module_info) are for workers.
local function resolve_here(name) return resolve(name) end
-- compiled chunks of functions in results, while something uses them
local chunks = setmetatable({}, { __mode = "v" })

local on_worker = false                 -- set in worker processes
local default                           -- the pool behind farm.submit and friends

-- ---- pools -------------------------------------------------------------------

local Pool = {}
Pool.__index = Pool
local pool_of = setmetatable({}, { __mode = "k" })   -- ctx -> its pool

local OPTIONS = "workers, echo, max_message, progress, nodes, hosts, key_file, local_workers, "
  .. "accept_new_hosts, remote_farm, heartbeat"

local function check_config(what, opts, level)
  if type(opts) ~= "table" then
    error(("%s: argument #1 must be a table of options"):format(what), level + 1)
  end
  for k, v in pairs(opts) do
    if k == "workers" then
      if v ~= nil and (math.type(v) ~= "integer" or v < 1 or v > 256) then
        error(("%s: workers must be an integer from 1 to 256"):format(what), level + 1)
      end
    elseif k == "max_message" then
      if math.type(v) ~= "integer" or v < 65536 then
        error(("%s: max_message must be a number of bytes (at least 65536)"):format(what), level + 1)
      end
    elseif k == "echo" or k == "progress" or k == "local_workers" or k == "accept_new_hosts" then
      if type(v) ~= "boolean" then
        error(("%s: %s must be true or false (got %s)"):format(what, k, type(v)), level + 1)
      end
    elseif k == "nodes" or k == "hosts" or k == "key_file" or k == "remote_farm" then
      if type(v) ~= "string" or v == "" then
        error(("%s: %s must be a string (got %s)"):format(what, k, type(v)), level + 1)
      end
    elseif k == "heartbeat" then
      if type(v) ~= "number" or not (v >= 0.05 and v <= 3600) then
        error(("%s: heartbeat must be a number of seconds from 0.05 to 3600"):format(what), level + 1)
      end
    else
      error(("%s: unknown option '%s' (%s)"):format(what, tostring(k), OPTIONS), level + 1)
    end
  end
end

local function new_pool(config)
  return setmetatable({ config = config, callbacks = {} }, Pool)
end

function Pool:_ctx()
  if on_worker then
    -- a job's jobs go through the client's scheduler, via this worker
    if self ~= default then
      error("farm.new: a job cannot start a pool of its own; use farm.submit and farm.map", 0)
    end
    return core.worker_ctx()
  end
  local c = self.ctx
  if not c or core.closed(c) then
    c = core.new(self.config)
    self.ctx = c
    pool_of[c] = self
  end
  return c
end

-- Callbacks run on the caller's thread, inside farm calls: each exactly once.
function Pool:_callbacks()
  local c = self.ctx
  if not c then return end
  local cbs = self.callbacks
  while true do
    local id = core.finished(c)
    if not id then return end
    local cb = cbs[id]
    if cb then
      cbs[id] = nil
      local ok, err = pcall(cb[1], cb[2])
      if not ok then
        io.stderr:write(("farm: the callback of job %d failed: %s\n"):format(id, tostring(err)))
      end
    end
  end
end

--- pool:config{workers = N, echo = bool, max_message = bytes, progress = bool}: before it starts.
function Pool:configure(opts)
  check_config("farm.config", opts, 2)
  if self.ctx and not core.closed(self.ctx) then
    error("farm.config: the pool is running; call farm.close() first", 2)
  end
  for k, v in pairs(opts) do self.config[k] = v end
end

-- Function packages: a function whose upvalues are the global table and values
-- that travel by name (a module: `local inc = require "mymod.inc"`, math.sqrt),
-- and that names no shippable global, is the same package every time, so it is
-- encoded and hashed once, and a worker keeps it (a module's source, when it
-- travels, thus goes once to each worker); any other is encoded at each submit
-- (its upvalues are values) and a worker makes a fresh closure of it for each
-- job. A kept package stays valid while those upvalues hold the same values and
-- the function needs no globals (a library field the script added since, say).
local constant = setmetatable({}, { __mode = "k" })
  -- f -> { [ctx] = { p = package, ups = its upvalues then, named = f travels by name } }

local function is_constant(f)
  if names()[f] then return true end          -- travels by name (math.sqrt)
  local d = describe(f)
  if #d.globals > 0 then return false end
  local named
  for i = 1, huge do
    local name, v = getupvalue(f, i)
    if name == nil then return true end
    if not (name == "_ENV" and v == _G) then
      named = named or names()
      if v == nil or named[v] == nil then return false end
    end
  end
end

local function upvalues_of(f)
  local ups = {}
  for i = 1, huge do
    local name, v = getupvalue(f, i)
    if name == nil then return ups end
    ups[i] = v
  end
end

local function still_constant(f, kept)
  local ups = kept.ups
  for i = 1, huge do
    local name, v = getupvalue(f, i)
    if name == nil then break end
    if not rawequal(v, ups[i]) then return false end
  end
  return kept.named or #describe(f).globals == 0
end

local function package(c, f)
  local byctx = constant[f]
  local kept = byctx and byctx[c]
  if kept and still_constant(f, kept) then return kept.p end
  local const = is_constant(f)
  local p = core.package(c, describe, names, f, not const)
  if const then
    byctx = byctx or setmetatable({}, { __mode = "k" })
    byctx[c] = { p = p, ups = upvalues_of(f), named = names()[f] ~= nil }
    constant[f] = byctx
  elseif byctx then
    byctx[c] = nil
  end
  return p
end

local function check_fn(what, fn)
  if type(fn) ~= "function" then
    error(("%s: argument #1 must be a function (got %s)"):format(what, type(fn)), 3)
  end
end

--- pool:submit(fn, ...) -> future
function Pool:submit(fn, ...)
  check_fn("farm.submit", fn)
  local c = self:_ctx()
  if self.ctx and next(self.callbacks) then self:_callbacks() end
  return core.submit(c, nil, package(c, fn), describe, names, ...)
end

--- pool:submit_with({timeout = s, retries = n, callback = fn}, fn, ...) -> future
function Pool:submit_with(opts, fn, ...)
  if type(opts) ~= "table" then
    error(("farm.submit_with: argument #1 must be a table of options (got %s)"):format(type(opts)), 2)
  end
  local o = {}
  for k, v in pairs(opts) do
    if k == "timeout" then
      if type(v) ~= "number" or not (v > 0) or v == huge then
        error(("farm.submit_with: timeout must be a positive number of seconds (got %s)")
          :format(tostring(v)), 2)
      end
      o.timeout = v
    elseif k == "retries" then
      if math.type(v) ~= "integer" or v < 0 or v > 1000 then
        error(("farm.submit_with: retries must be an integer from 0 to 1000 (got %s)")
          :format(tostring(v)), 2)
      end
      o.retries = v
    elseif k == "callback" then
      if type(v) ~= "function" then
        error(("farm.submit_with: callback must be a function (got %s)"):format(type(v)), 2)
      end
      o.notify = true
    else
      error(("farm.submit_with: unknown option '%s' (timeout, retries, callback)")
        :format(tostring(k)), 2)
    end
  end
  if type(fn) ~= "function" then
    error(("farm.submit_with: argument #2 must be a function (got %s)"):format(type(fn)), 2)
  end
  local c = self:_ctx()
  if on_worker then
    error("farm.submit_with: a job's own jobs take no options yet; use farm.submit", 2)
  end
  local f = core.submit(c, o, package(c, fn), describe, names, ...)
  if o.notify then self.callbacks[core.id(f)] = { opts.callback, f } end
  return f
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
  local message, traceback, where, value = ...
  error(setmetatable({ message = message, traceback = traceback, value = value,
                       worker = where ~= "" and where or nil, job = core.id(f) }, JobError), 3)
end

local function timed_out(f, timeout)
  error(setmetatable({ message = ("farm: timed out after %g s waiting for job %d "
    .. "(it goes on running)"):format(timeout, core.id(f)), traceback = "",
    job = core.id(f), timeout = true }, JobError), 3)
end

local function check_timeout(what, timeout, level)
  if timeout ~= nil and (type(timeout) ~= "number" or not (timeout >= 0)) then
    error(("%s: timeout must be a number of seconds, 0 or more (got %s)"):format(what, tostring(timeout)), level + 1)
  end
end

-- Run the callbacks due in every pool; cheap when none wait.
local function callbacks_of()
  for _, p in pairs(pool_of) do
    if next(p.callbacks) then p:_callbacks() end
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
  callbacks_of()
  return finish(f, core.result(f, resolve_here, chunks, resolve_loaded))
end

--- future:cancel([{force = true}]) -> true when cancelled
function Future.cancel(f, opts)
  local force = false
  if opts ~= nil then
    if type(opts) ~= "table" then
      error(("future:cancel: argument must be a table of options such as {force = true} (got %s)")
        :format(type(opts)), 2)
    end
    for k, v in pairs(opts) do
      if k ~= "force" then
        error(("future:cancel: unknown option '%s' (force)"):format(tostring(k)), 2)
      end
      if type(v) ~= "boolean" then
        error(("future:cancel: force must be true or false (got %s)"):format(type(v)), 2)
      end
      force = v
    end
  end
  return core.cancel(f, force)
end

Future.status = core.status
Future.done = core.done
Future.id = core.id

local methods = Future
core.set_future_mt {
  __index = function(f, k)
    if k == "stdout" then return core.stdout(f) end
    if k == "worker" then return core.where(f) end
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

-- The pool (ctx) of the first future not done in list, and its change count,
-- read before the caller looks at the futures: a change after that look ends
-- the wait at once.
local function watch(list)
  for i = 1, #list do
    if not core.done(list[i]) then
      local c = core.ctx_of(list[i])
      return c, core.gen(c)
    end
  end
end

-- Wait until something changes in pool c since gen (or the deadline); false
-- once the deadline has passed. A signal returns at once (its hook acts).
local function progress(deadline, c, gen)
  local left = deadline and deadline - core.now()
  if left and left <= 0 then return false end
  if c then core.pump(c, min(left or 1, 1), gen) end
  return true
end

--- pool:map(fn, list1 [, list2, ...]) -> { fn(list1[i], list2[i], ...) first results }
function Pool:map(fn, ...)
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
  local c = self:_ctx()
  local p = package(c, fn)
  -- about eight chunks a worker: enough to even out the end, few enough to
  -- batch; a short list goes item by item (its items are likely long ones,
  -- and a job costs microseconds), so no worker waits on another's last chunk
  local w = core.workers(c)
  local chunk = n <= 64 * w and 1 or max(1, min(10000, ceil(n / (w * 8))))
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
      local c, gen = watch(pending)
      ready, pending = core.split_done(pending)
      ri = 1
      if #ready == 0 and not progress(deadline, c, gen) then
        ready, pending = core.split_done(pending)   -- what the last look brought
        if #ready == 0 then
          error(("farm.as_completed: timed out after %g s with %d futures not done")
            :format(timeout, #pending), 2)
        end
      end
      callbacks_of()
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
    local c, gen = watch(futures)
    local done, pending = core.split_done(futures)
    callbacks_of()
    if #pending == 0 or (when == "first" and #done > 0) then return done, pending end
    if when == "error" then
      for i = 1, #done do
        if core.status(done[i]) == "failed" then return done, pending end
      end
    end
    if not progress(deadline, c, gen) then return core.split_done(futures) end
  end
end

--- pool:workers() -> number of workers
function Pool:workers()
  return core.workers(self:_ctx())
end

--- pool:stats() -> { workers = {{name, pid, jobs, busy}...}, jobs, busy, elapsed, ... }
function Pool:stats()
  if not self.ctx then return { workers = {}, jobs = 0, busy = 0, elapsed = 0, queued = 0 } end
  return core.stats(self.ctx)
end

--- pool:nodes() -> { {host =, workers =, jobs_done =, state = "up" | "lost" | "failed"}, ... }
function Pool:nodes()
  local list = {}
  for _, w in ipairs(self:stats().workers) do
    if w.kind == "node" then
      list[#list + 1] = { host = w.name, workers = w.capacity, jobs_done = w.jobs, state = w.state }
    end
  end
  return list
end

--- pool:print_stats([file]): like pp's print_stats
function Pool:print_stats(out)
  out = out or io.stdout
  local s = self:stats()
  out:write("Job execution statistics:\n",
            " job count | % of all jobs | job time sum | time per job | job server\n")
  for _, w in ipairs(s.workers) do
    local who = w.kind == "node"
      and ("%s (node, %d workers, %s)"):format(w.name, w.capacity, w.state)
      or ("%s (pid %d)"):format(w.name, w.pid)
    out:write(("%10d | %13.2f | %12.4f | %12.6f | %s\n"):format(
      w.jobs, s.jobs > 0 and 100 * w.jobs / s.jobs or 0, w.busy,
      w.jobs > 0 and w.busy / w.jobs or 0, who))
  end
  out:write(("Time elapsed since server creation %.4f\n"):format(s.elapsed),
            ("%d jobs queued\n"):format(s.queued or 0))
end

--- pool:wait_all(): wait until every job submitted has finished (callbacks run);
--- says on stderr what it waits for when that takes more than a second.
function Pool:wait_all()
  local c = self.ctx
  if not c or core.closed(c) then return end
  local t0, told = core.now(), false
  while core.outstanding(c) > 0 do
    local gen = core.gen(c)
    self:_callbacks()
    if not told and core.now() - t0 > 1 then
      local n = core.outstanding(c)
      if n > 0 then
        io.stderr:write(("farm: waiting for %d unfinished job%s (Ctrl-C stops them)\n")
          :format(n, n == 1 and "" or "s"))
        told = true
      end
    end
    if core.outstanding(c) > 0 then core.pump(c, 0.25, gen) end
  end
  self:_callbacks()
end

--- pool:close([{cancel = true}]): wait for unfinished jobs (or cancel them), then
--- stop the workers. The next submit starts a new pool.
function Pool:close(opts)
  local c = self.ctx
  if opts ~= nil then
    if type(opts) ~= "table" then
      error(("farm.close: argument must be a table of options such as {cancel = true} (got %s)")
        :format(type(opts)), 2)
    end
    for k in pairs(opts) do
      if k ~= "cancel" then error(("farm.close: unknown option '%s' (cancel)"):format(tostring(k)), 2) end
    end
  end
  if c and not core.closed(c) then
    if opts and opts.cancel then core.cancel_all(c, true) end
    self:wait_all()
    core.close(c)
  end
  self.ctx = nil
end

-- ---- the default pool, and farm.new -------------------------------------------

default = new_pool({ echo = true })
do
  local maxmsg = tonumber(os.getenv("FARM_MAX_MESSAGE") or "")
  if maxmsg then default.config.max_message = maxmsg end
end

--- farm.new{workers = N, echo = bool, max_message = bytes} -> a pool of its own
function farm.new(opts)
  opts = opts or {}
  check_config("farm.new", opts, 2)
  local cfg = { echo = default.config.echo, max_message = default.config.max_message }
  for k, v in pairs(opts) do cfg[k] = v end
  return new_pool(cfg)
end

function farm.config(opts) return default:configure(opts) end
function farm.submit(fn, ...) return default:submit(fn, ...) end
function farm.submit_with(opts, fn, ...) return default:submit_with(opts, fn, ...) end
function farm.map(fn, ...) return default:map(fn, ...) end
function farm.workers() return default:workers() end
function farm.stats() return default:stats() end
function farm.nodes() return default:nodes() end
function farm.print_stats(out) return default:print_stats(out) end
function farm.close(opts) return default:close(opts) end
Pool.config = Pool.configure
Pool.wait = function(_, ...) return farm.wait(...) end
Pool.as_completed = function(_, ...) return farm.as_completed(...) end

--- farm.remember(chunkname, text): the text of a chunk that farm did not see
--- loaded, so that its functions can ship. farm keeps by itself the text of
--- every chunk load, loadfile, dofile and require compile once it is loaded,
--- and the script `farm run` runs; a C host that compiles a chunk itself
--- (luaL_loadbuffer(L, text, len, "=embedded")) or a REPL with a reader of its
--- own gives the text here (or with farm_remember in C), under the very chunk
--- name it compiled it with, before or after compiling, before a submit.
--- Several texts may be remembered under one name: each function ships the
--- one it was compiled from. Texts are kept as long as the Lua state lives.
function farm.remember(chunkname, text)
  if type(chunkname) ~= "string" then
    error(("farm.remember: argument #1 must be the chunk name the text was loaded with "
      .. "(a string, got %s)"):format(type(chunkname)), 2)
  end
  if type(text) ~= "string" then
    error(("farm.remember: argument #2 must be the chunk's text (a string, got %s)")
      :format(type(text)), 2)
  end
  ship.remember(chunkname, text)
end

-- Chunks loaded from now on are remembered, so their functions can ship:
-- load, loadfile, dofile and require keep the text they compile.
ship.hook(_G)

-- Only internal: the worker marks its own farm module with this.
farm._on_worker = function() on_worker = true end

-- Only internal: farm run's end (wait, then close) and its progress line.
farm._default = default

-- Only internal: tests look at the worker pids through this.
farm._pids = function() return default.ctx and core.pids(default.ctx) or {} end

return farm
