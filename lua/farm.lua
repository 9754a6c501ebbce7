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

local farm = { _VERSION = "farm " .. core.version }   -- the Makefile's VERSION (farm.h's)
farm.kernels = core.kernels   -- compute kernels in C (core/lkernels.c), on workers too

local describe, names, resolve = ship.describe, ship.names, ship.resolve
local is_constant = ship.is_constant
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
  .. "accept_new_hosts, remote_farm, heartbeat, dest, max_file, journal, slurm_wait, status, status_token, "
  .. "listen, discover"

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
    elseif k == "echo" or k == "progress" or k == "local_workers" or k == "accept_new_hosts"
        or k == "status_token" then
      if type(v) ~= "boolean" then
        error(("%s: %s must be true or false (got %s)"):format(what, k, type(v)), level + 1)
      end
    elseif k == "max_file" then
      if math.type(v) ~= "integer" or v < 1 or v > 192 * 1048576 then
        error(("%s: max_file must be a number of bytes from 1 to 192 MiB"):format(what), level + 1)
      end
    elseif k == "nodes" or k == "hosts" or k == "key_file" or k == "remote_farm" or k == "dest"
        or k == "journal" or k == "journal_id" or k == "status" or k == "listen" or k == "discover" then
      if type(v) ~= "string" or v == "" then
        error(("%s: %s must be a string (got %s)"):format(what, k, type(v)), level + 1)
      end
    elseif k == "heartbeat" then
      if type(v) ~= "number" or not (v >= 0.05 and v <= 3600) then
        error(("%s: heartbeat must be a number of seconds from 0.05 to 3600"):format(what), level + 1)
      end
    elseif k == "slurm_wait" then
      if type(v) ~= "number" or not (v >= 1 and v <= 86400) then
        error(("%s: slurm_wait must be a number of seconds from 1 to 86400"):format(what), level + 1)
      end
    else
      error(("%s: unknown option '%s' (%s)"):format(what, tostring(k), OPTIONS), level + 1)
    end
  end
end

local new_shared
local all_pools = setmetatable({}, { __mode = "k" })   -- every pool made, while it lives
local function new_pool(config)
  local p = setmetatable({ config = config, callbacks = {}, shares = {}, files = {} }, Pool)
  p.shared = new_shared(p)
  all_pools[p] = true
  return p
end

-- With a progress line on the terminal, the script's own writes there clear it
-- first (it is drawn again after): print, io.write and io.stdout/io.stderr's
-- write. Installed once, when a pool with a progress line starts.
local writes_wrapped
local function clear_progress()
  for c, p in pairs(pool_of) do
    if p.config.progress and not core.closed(c) then core.term_clear(c) end
  end
end
local function wrap_writes()
  if writes_wrapped then return end
  writes_wrapped = true
  local print0, write0 = print, io.write
  _G.print = function(...) clear_progress(); return print0(...) end
  io.write = function(...) clear_progress(); return write0(...) end
  local methods = getmetatable(io.stdout).__index
  local fwrite, out, err = methods.write, io.stdout, io.stderr
  methods.write = function(f, ...)
    if f == out or f == err then clear_progress() end
    return fwrite(f, ...)
  end
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
    self.files = {}
    pool_of[c] = self
    if self.event_fn then core.events_on(c, true) end
    if self.config.progress then wrap_writes() end
    for _, x in ipairs(self.shares) do
      if x[4] then self:_ship_files(c, x[4], "farm.on_node", 1) end
      core.share(c, x[1], x[2], describe, names, x[3])
    end
  end
  return c
end

-- What every job of the pool may use (shared values, the setup): encoded
-- once, sent once to each worker and node; a pool started again sends it again.
function Pool:_share(kind, name, value, files)
  local c = self:_ctx()
  if files then self:_ship_files(c, files, "farm.on_node", 3) end
  core.share(c, kind, name, describe, names, value)
  self.shares[#self.shares + 1] = { kind, name, value, files }
end

-- ---- farm.shared: constants every job reads (SCOOP's shared.setConst) ------

local NAME = "^[%a_][%w_]*$"
function new_shared(pool)
  local values = {}
  return setmetatable({}, {
    __index = function(_, name)
      if on_worker then
        if type(name) == "string" then
          local v = core.shared_get(name)
          if v ~= nil then return v end
        end
        error(("farm.shared.%s is not set: set it in the client (farm.shared.%s = value) "
          .. "before submitting the job"):format(tostring(name), tostring(name)), 2)
      end
      local v = values[name]
      if v == nil then
        error(("farm.shared.%s is not set: set it first (farm.shared.%s = value)")
          :format(tostring(name), tostring(name)), 2)
      end
      return v
    end,
    __newindex = function(_, name, value)
      if on_worker then
        error("farm.shared: shared values are set in the client, not in a job", 2)
      end
      if type(name) ~= "string" or not name:match(NAME) then
        error(("farm.shared: a name must be a Lua name such as data_2 (got %s)")
          :format(type(name) == "string" and ("'" .. name .. "'") or type(name)), 2)
      end
      if values[name] ~= nil then
        error(("farm.shared.%s is already set: shared values are constants (use another name)")
          :format(name), 2)
      end
      if value == nil then error(("farm.shared.%s: a shared value cannot be nil"):format(name), 2) end
      local ok, e = pcall(pool._share, pool, "value", name, value)
      if not ok then error(e, 2) end
      values[name] = value
    end,
    __pairs = function() return next, on_worker and {} or values, nil end,
    __name = "farm.shared",
  })
end

--- pool:on_node{setup = fn, cleanup = fn, args = {...}}: setup(args...) runs once in
--- each worker (here and on every node) before its first job; the globals it sets
--- are the jobs' globals. cleanup(args...) runs when that worker ends. A setup
--- that fails takes its worker out of the run, with a line that names it.
function Pool:on_node(spec)
  if on_worker then error("farm.on_node: only the client sets up the workers", 2) end
  if type(spec) ~= "table" then
    error(("farm.on_node: argument #1 must be a table such as {setup = fn, cleanup = fn, "
      .. "args = {...}} (got %s)"):format(type(spec)), 2)
  end
  for k, v in pairs(spec) do
    if k == "setup" or k == "cleanup" then
      if type(v) ~= "function" then
        error(("farm.on_node: %s must be a function (got %s)"):format(k, type(v)), 2)
      end
    elseif k == "args" or k == "files" then
      if type(v) ~= "table" then error(("farm.on_node: %s must be a table (got %s)"):format(k, type(v)), 2) end
    else
      error(("farm.on_node: unknown field '%s' (setup, cleanup, args, files)"):format(tostring(k)), 2)
    end
  end
  if not spec.setup and not spec.cleanup then
    error("farm.on_node: give a setup function, a cleanup function, or both", 2)
  end
  if self.setup_given then
    error("farm.on_node: this pool's setup is already given (once per pool: close it first)", 2)
  end
  local args = spec.args or {}
  self:_share("setup", "", { setup = spec.setup, cleanup = spec.cleanup,
                             args = tmove(args, 1, #args, 1, {}) }, spec.files)
  self.setup_given = true
end

-- Files a job needs: relative paths below the current directory, which is where
-- local workers run; a node gets each once (by content), into its jobs' directory.
-- (what: the call, for messages; level: the caller's level, as error's, from here)
function Pool:_ship_files(c, files, what, level)
  level = level + 1
  if type(files) ~= "table" then
    error(("%s: files must be a list of paths (got %s)"):format(what, type(files)), level)
  end
  for i = 1, #files do
    local path = files[i]
    if type(path) ~= "string" or path == "" then
      error(("%s: files[%d] must be a path (got %s)"):format(what, i, type(path)), level)
    end
    if path:sub(1, 1) == "/" or ("/" .. path .. "/"):find("/%.%./") then
      error(("%s: file %s must be a relative path below the current directory "
        .. "(jobs on nodes find it at that path in their directory); cd, or copy it here")
        :format(what, path), level)
    end
    -- its plain form: what a node writes ("./a//b.txt" is a/b.txt there too)
    local parts = {}
    for part in path:gmatch("[^/]+") do if part ~= "." then parts[#parts + 1] = part end end
    path = table.concat(parts, "/")
    if path == "" then error(("%s: files[%d] names no file"):format(what, i), level) end
    local ok, key = pcall(core.file_key, path, what)
    if not ok then error(key, level) end
    if self.files[path] ~= key then
      ok, key = pcall(core.share_file, c, path, what)
      if not ok then error(key, level) end
      self.files[path] = core.file_key(path)
    end
  end
end

-- The run's events go to the function farm.on_event gave, in order, on the
-- caller's thread inside farm calls (as callbacks do).
function Pool:_events()
  local c, fn = self.ctx, self.event_fn
  if not c or not fn or self.in_event then return end
  self.in_event = true             -- (an event function that calls farm does not recurse)
  while true do
    local evs = core.events(c)
    if #evs == 0 then break end
    for _, ev in ipairs(evs) do
      ev.future = ev.job and self.tracked[ev.job]
      local ok, err = pcall(fn, ev)
      if not ok then
        io.stderr:write(("farm: the event function failed on %s: %s\n"):format(ev.event, tostring(err)))
      end
    end
  end
  self.in_event = false
end

--- pool:on_event(fn | nil): fn(event) is called, on the script's thread inside
--- farm calls (submit, wait, result, ...), for each event of the run in order:
--- node_up, node_lost, job_started, job_done, job_failed, job_cancelled (and
--- dropped, when more than 65536 waited). event = { event =, time =, node =
--- (a node's name, or "local": what submit_with{node =} takes), worker =
--- ("local:N"), job =, future =, error = (job_failed), reason = (node_lost),
--- rejoined = true (node_up of a lost node that is back), count = (dropped) }.
function Pool:on_event(fn)
  if fn ~= nil and type(fn) ~= "function" then
    error(("farm.on_event: argument must be a function, or nil to stop (got %s)"):format(type(fn)), 2)
  end
  if on_worker then error("farm.on_event: a job cannot watch the run; the client does", 2) end
  self.event_fn = fn
  self.tracked = fn and (self.tracked or setmetatable({}, { __mode = "v" })) or nil
  if self.ctx and not core.closed(self.ctx) then core.events_on(self.ctx, fn ~= nil) end
end

-- Callbacks run on the caller's thread, inside farm calls: each exactly once.
function Pool:_callbacks()
  local c = self.ctx
  if not c then return end
  if self.event_fn then self:_events() end
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
  if on_worker then
    error("farm.config: a job cannot configure the pool it runs in; configure it in the client, "
      .. "before its first job", 2)
  end
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

local function upvalues_of(f)
  local ups = {}
  for i = 1, huge do
    local name, v = getupvalue(f, i)
    if name == nil then return ups end
    ups[i] = v
  end
end

-- (g: the closure kept was made from, or another of the same prototype: with
-- the same upvalue values, describe says the same of both)
local function still_constant(f, kept, g)
  local ups = kept.ups
  for i = 1, huge do
    local name, v = getupvalue(f, i)
    if name == nil then break end
    if not rawequal(v, ups[i]) then return false end
  end
  return kept.named or #describe(g or f).globals == 0
end

-- A closure kept in `constant` for each function expression (prototype id,
-- ship.protoid): a new closure of it with the same upvalue values (rawequal)
-- is the same package (a function written in the call), unless that one
-- travels by name. (f itself is not looked up in names(), which costs more
-- than the rest: if f were a module's field, its text, compiled there with
-- the same upvalues, is the same function.)
local protoid = ship.protoid
local same_code = setmetatable({}, { __mode = "v" })  -- prototype id -> closure

local function package(c, f)
  local byctx = constant[f]
  local kept = byctx and byctx[c]
  if kept and still_constant(f, kept) then return kept.p end
  local id = not byctx and protoid(f)
  if id then
    local same = same_code[id]
    local other = same and constant[same]
    kept = other and other[c]
    if kept and not kept.named and still_constant(f, kept, same) then
      return kept.p
    end
  end
  local const = is_constant(f)
  local p = core.package(c, describe, names, f, not const)
  if const then
    byctx = byctx or setmetatable({}, { __mode = "k" })
    byctx[c] = { p = p, ups = upvalues_of(f), named = names()[f] ~= nil }
    constant[f] = byctx
    if id then same_code[id] = f end
  elseif byctx then
    byctx[c] = nil
  end
  return p
end

-- a value in a message, as the script would write it ("5" stays a string; a
-- table is named by its type, not its address)
local function shown(v)
  if type(v) == "number" or type(v) == "boolean" or v == nil then return tostring(v) end
  if type(v) == "string" then return ("%q"):format(v) end
  return type(v)
end

-- Where the script called farm ("x.lua:12: "), as error(msg, level) would put
-- it: level 1 is the function that calls where_of.
local function where_of(level)
  local info = debug.getinfo(level + 1, "Sl")
  if info and info.currentline > 0 then return ("%s:%d: "):format(info.short_src, info.currentline) end
  return ""
end

-- A message from farm.core (a value that cannot travel, a job too large), with
-- where the script called: a stream's (map_reduce, imap) submits raise it from
-- deep inside, with the place its call was (where_of) put in front.
local function raise_at(msg, where)
  if type(msg) ~= "string" then error(msg, 0) end
  msg = msg:gsub("^farm: ", "", 1)
  error(where .. msg, 0)
end

local function check_fn(what, fn)
  if type(fn) ~= "function" then
    error(("%s: argument #1 must be a function (got %s)"):format(what, type(fn)), 3)
  end
end

local WATCHED = { watch = true }   -- core.submit's options: the script's own job
local function submit_job(c, o, fn, ...)
  return core.submit(c, o, package(c, fn), describe, names, ...)
end

--- pool:submit(fn, ...) -> future
function Pool:submit(fn, ...)
  check_fn("farm.submit", fn)
  local c = self:_ctx()
  if self.ctx and (next(self.callbacks) or self.event_fn) then self:_callbacks() end
  local ok, f = pcall(submit_job, c, WATCHED, fn, ...)
  if not ok then raise_at(f, where_of(2)) end
  if self.tracked then self.tracked[core.id(f)] = f end
  return f
end

--- pool:submit_with({timeout = s, retries = n, callback = fn}, fn, ...) -> future
function Pool:submit_with(opts, fn, ...)
  if type(opts) ~= "table" then
    error(("farm.submit_with: argument #1 must be a table of options (got %s)"):format(type(opts)), 2)
  end
  local o = { watch = true }
  for k, v in pairs(opts) do
    if k == "timeout" then
      if type(v) ~= "number" or not (v > 0) or v == huge then
        error(("farm.submit_with: timeout must be a positive number of seconds (got %s)")
          :format(shown(v)), 2)
      end
      o.timeout = v
    elseif k == "retries" then
      if math.type(v) ~= "integer" or v < 0 or v > 1000 then
        error(("farm.submit_with: retries must be an integer from 0 to 1000 (got %s)")
          :format(shown(v)), 2)
      end
      o.retries = v
    elseif k == "callback" then
      if type(v) ~= "function" then
        error(("farm.submit_with: callback must be a function (got %s)"):format(type(v)), 2)
      end
      o.notify = true
    elseif k == "files" then
      o.files = v
    elseif k == "node" then
      if type(v) ~= "string" then
        error(("farm.submit_with: node must be a node's name as farm.nodes() gives it, or \"local\" "
          .. "(got %s)"):format(type(v)), 2)
      end
      o.node = v
    else
      error(("farm.submit_with: unknown option '%s' (timeout, retries, callback, files, node)")
        :format(tostring(k)), 2)
    end
  end
  if type(fn) ~= "function" then
    error(("farm.submit_with: argument #2 must be a function (got %s)"):format(type(fn)), 2)
  end
  local c = self:_ctx()
  if on_worker and (o.notify or o.files or o.timeout or o.node) then
    -- a callback runs in the client, files are the client's to ship, and a
    -- timeout stops the worker that runs the job: often the one where its
    -- parent waits, which would then run again from its start
    error(("farm.submit_with: a job's own jobs take retries, not %s")
      :format(o.notify and "a callback" or o.files and "files" or o.node and "a node to run on"
        or "a timeout (it stops a worker, and the job waiting there with it)"), 2)
  end
  if o.files then self:_ship_files(c, o.files, "farm.submit_with", 2); o.files = nil end
  if o.node then
    local ok, pin = pcall(core.pin, c, o.node)
    if not ok then error("farm.submit_with: " .. tostring(pin), 2) end
    o.pin, o.node = pin, nil
  end
  local ok, f = pcall(submit_job, c, o, fn, ...)
  if not ok then raise_at(f, where_of(2)) end
  if o.notify then self.callbacks[core.id(f)] = { opts.callback, f } end
  if self.tracked then self.tracked[core.id(f)] = f end
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
  -- timeout: stopped by its own timeout (submit_with), as a wait that timed out says
  error(setmetatable({ message = message, traceback = traceback, value = value,
                       worker = where ~= "" and where or nil, job = core.id(f),
                       timeout = core.timed_out(f) or nil }, JobError), 3)
end

local function timed_out(f, timeout)
  error(setmetatable({ message = ("farm: timed out after %g s waiting for job %d "
    .. "(it goes on running)"):format(timeout, core.id(f)), traceback = "",
    job = core.id(f), timeout = true }, JobError), 3)
end

-- A timeout to wait: seconds, 0 or more; nil or math.huge waits without end.
-- SCOOP's wait takes -1 for that, Python's None: -1 is refused with the
-- spellings that mean it here (a negative left by a deadline gone by must not
-- wait forever).
local function check_timeout(what, timeout, level)
  if timeout ~= nil and (type(timeout) ~= "number" or not (timeout >= 0)) then
    error(("%s: timeout must be a number of seconds, 0 or more; to wait without end, give none "
      .. "(nil) or math.huge (got %s)"):format(what, shown(timeout)), level + 1)
  end
end

-- Run the callbacks due in every pool; cheap when none wait.
local function callbacks_of()
  for _, p in pairs(pool_of) do
    if next(p.callbacks) or p.event_fn then p:_callbacks() end
  end
end

--- future:result([timeout]) -> the job's results, or raises its error
function Future.result(f, timeout)
  if not core.is_future(f) then
    error("future:result: call it on a future with a colon, f:result() (got "
      .. (f == nil and "nothing" or type(f)) .. ")", 2)
  end
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
  local force, grace = false, nil
  if opts ~= nil then
    if type(opts) ~= "table" then
      error(("future:cancel: argument must be a table of options such as {force = true} (got %s)")
        :format(type(opts)), 2)
    end
    for k, v in pairs(opts) do
      if k == "grace" then
        if type(v) ~= "number" or not (v >= 0) or v == huge then
          error(("future:cancel: grace must be a number of seconds, 0 or more (got %s)"):format(shown(v)), 2)
        end
        grace = v
      elseif k ~= "force" then
        error(("future:cancel: unknown option '%s' (force, grace)"):format(tostring(k)), 2)
      elseif type(v) ~= "boolean" then
        error(("future:cancel: force must be true or false (got %s)"):format(type(v)), 2)
      else
        force = v
      end
    end
    if grace and not force then
      error("future:cancel: a grace is for a running job, which only {force = true} stops", 2)
    end
  end
  if not grace then return core.cancel(f, force) end
  -- told to stop (farm.cancelled() in it): it ends within the grace, or is stopped then
  local told = core.stop(f, grace)
  if told == nil then return core.status(f) == "cancelled" end
  while not core.done(f) do core.wait(f, 0.5) end
  callbacks_of()
  return core.status(f) == "cancelled"
end

--- future:partial() -> the job's last provisional result (farm.provide) and
--- how many came, or nil and 0; once a job cancelled with a grace ended, its
--- last word (what it returned in time, or last provided).
function Future.partial(f)
  if not core.is_future(f) then
    error("future:partial: call it on a future with a colon, f:partial()", 2)
  end
  callbacks_of()
  return core.partial(f, resolve_here, chunks, resolve_loaded)
end

Future.status = core.status
Future.done = core.done
Future.id = core.id

local methods = Future
-- what a finished future tells of its job: the times are seconds, as os.time
-- (with fractions); node is "local" or the node's name; attempts counts tries
local META = { submitted = true, started = true, finished = true, attempts = true, node = true }
-- Fields a script sets on a future (f.id = i, f.item = x, as dispy's users set
-- theirs on jobs): kept here, read back as set, over farm's own of that name;
-- they stay in this process and go with the future.
local fields = setmetatable({}, { __mode = "k" })
core.set_future_mt {
  __index = function(f, k)
    local own = fields[f]
    if own then
      local v = own[k]
      if v ~= nil then return v end
    end
    if k == "stdout" then return core.stdout(f) end
    if k == "worker" then return core.where(f) end
    local m = methods[k]
    if m == nil and META[k] then
      local t = core.meta(f)
      return t and t[k]
    end
    return m
  end,
  __newindex = function(f, k, v)
    if k == nil or k ~= k then error("farm.future: a field's name cannot be nil or NaN", 2) end
    local own = fields[f]
    if not own then
      if v == nil then return end
      own = {}
      fields[f] = own
    end
    own[k] = v
  end,
  __call = Future.result,
  __tostring = function(f) return ("farm.future(%d, %s)"):format(core.id(f), core.status(f)) end,
  __name = "farm.future",
  __methods = methods,            -- what __index offers by name (the REPL's Tab lists them)
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

-- ---- map and more ways to collect: imap, map_unordered, map_reduce -----------
--
-- Each splits the rows of its lists into chunks, one job each. map submits
-- every chunk at once; the others keep a window of chunks in flight (4 per
-- worker unless told) and submit the next as results are taken, so a list of
-- any length (or an iterator) runs in bounded memory.

local tunpack = table.unpack
local MAP_OPTS = { "chunksize" }
local STREAM_OPTS = { "chunksize", "window" }
local REDUCE_OPTS = { "chunksize", "window", "init" }


-- (what, known option names, level, the argument number before the first list, lists... [, opts]) -> the lists (an
-- array), their count, the rows of the tables (huge when there are none),
-- whether some list is an iterator function, and the options (a table).
-- What a last table argument is: "list" when it has a first item and no
-- option's name (its items are not walked), or when its keys are all 1..#t
-- (an empty table is an empty list); "options" when its keys are all
-- strings; nil when it is neither. Telling them apart by shape, not by a known name in it, is what
-- keeps a misspelt option ({chunk_size = 2}) from being taken for one more,
-- empty, list, which would make the call return nothing without a word.
local function table_kind(t, keys)
  if rawget(t, 1) ~= nil then
    -- a list: its items are not walked (a map's list may hold millions); one
    -- that also holds an option's name is neither
    for _, k in ipairs(keys) do if rawget(t, k) ~= nil then return nil end end
    return "list"
  end
  local len, strings, others = rawlen(t), 0, 0
  for k in next, t do
    if type(k) == "string" then
      strings = strings + 1
    elseif not (math.type(k) == "integer" and k >= 1 and k <= len) then
      others = others + 1
    end
  end
  if strings == 0 and others == 0 then return "list" end
  if others == 0 and len == 0 then return "options" end
  return nil
end

local function map_args(what, keys, level, argbase, ...)
  local nargs = select("#", ...)
  local opts = nargs > 0 and select(nargs, ...)
  if type(opts) == "table" and getmetatable(opts) == nil then
    local kind = table_kind(opts, keys)
    if kind == nil then
      error(("%s: argument #%d is neither a list (keys 1..n only) nor a table of options (%s)")
        :format(what, nargs + argbase, table.concat(keys, ", ")), level + 1)
    end
    if kind == "options" then nargs = nargs - 1 else opts = nil end
  else
    opts = nil
  end
  if nargs == 0 then error(what .. ": needs at least one list", level + 1) end
  local lists, n, iter = { ... }, huge, false
  for i = 1, nargs do
    local l = lists[i]
    if type(l) == "table" then
      n = min(n, #l)
    elseif type(l) == "function" then
      iter = true
    else
      error(("%s: argument #%d must be a table (got %s) or an iterator function")
        :format(what, i + argbase, type(l)), level + 1)
    end
  end
  lists[nargs + 1] = nil
  if opts then
    for k, v in pairs(opts) do
      local known = false
      for _, key in ipairs(keys) do known = known or k == key end
      if not known then
        error(("%s: unknown option '%s' (%s)"):format(what, tostring(k), table.concat(keys, ", ")),
          level + 1)
      end
      if (k == "chunksize" or k == "window") and (math.type(v) ~= "integer" or v < 1) then
        error(("%s: %s must be an integer of 1 or more (got %s)"):format(what, k, shown(v)), level + 1)
      end
    end
  end
  return lists, nargs, n, iter, opts or {}
end

-- about eight chunks a worker: enough to even out the end, few enough to
-- batch; a short list goes item by item (its items are likely long ones,
-- and a job costs microseconds), so no worker waits on another's last chunk.
-- Rows from an iterator (their number unknown) go in chunks that grow with
-- the rows taken so far, by the same rule.
local function chunk_for(n, w)
  return n <= 64 * w and 1 or max(1, min(10000, ceil(n / (w * 8))))
end
local function chunk_after(taken, w)
  return taken < 64 * w and 1 or max(1, min(10000, taken // (w * 8)))
end

-- A job of our own that cannot be cancelled (a job's sub-jobs, for now) runs
-- to its end, and its result is dropped.
local function drop(f)
  if not on_worker and not core.done(f) then core.cancel(f) end
end

-- A stream of chunk jobs over the rows of lists: s.pend holds the futures in
-- flight (in the order submitted), s.meta[f] = { chunk number, first row, rows }.
local Stream = {}
Stream.__index = Stream

-- submit(start, count, slices) submits one chunk: rows start..start+count-1 of
-- the lists, or when slices is given (rows from iterators), rows 1..count of them.
local function new_stream(lists, nl, n, iter, chunk, w, window, submit)
  return setmetatable({ lists = lists, nl = nl, n = n, iter = iter, chunk = chunk, w = w,
    window = window, submit = submit, pos = 1, chunks = 0, over = n == 0,
    pend = {}, meta = {} }, Stream)
end

-- The next chunk's rows, as (start, count[, slices]); nil at the end.
function Stream:take()
  if self.over then return nil end
  local start = self.pos
  if not self.iter then
    local count = min(self.chunk or chunk_for(self.n, self.w), self.n - start + 1)
    self.pos = start + count
    if self.pos > self.n then self.over = true end
    return start, count
  end
  local size = self.chunk or chunk_after(start - 1, self.w)
  local lists, nl, n, slices, count = self.lists, self.nl, self.n, {}, 0
  for k = 1, nl do slices[k] = {} end
  for r = 0, size - 1 do
    local row = start + r
    if row > n then self.over = true; break end
    local ended = false
    for k = 1, nl do
      local l, v = lists[k], nil
      if type(l) == "function" then
        v = l()
        if v == nil then ended = true; break end
      else
        v = l[row]
      end
      slices[k][r + 1] = v
    end
    if ended then self.over = true; break end
    count = r + 1
  end
  self.pos = start + count
  if count == 0 then return nil end
  return start, count, slices
end

-- Submit chunks until the window is full or the rows run out.
function Stream:fill()
  local pend = self.pend
  while #pend < self.window do
    local start, count, slices = self:take()
    if not start then return end
    self.chunks = self.chunks + 1
    local f = self.submit(start, count, slices)
    pend[#pend + 1] = f
    self.meta[f] = { self.chunks, start, count }
  end
end

-- Stop: no more chunks, and those in flight are cancelled (or dropped).
function Stream:stop()
  self.over = true
  local pend = self.pend
  self.pend = {}
  for i = 1, #pend do drop(pend[i]) end
  local ready = self.ready
  if ready then
    for i = self.ri or 1, #ready do drop(ready[i]) end
    self.ready = nil
  end
end

-- f's results, or the job's error raised (after the rest is stopped).
function Stream:result(f)
  local m = self.meta[f]
  self.meta[f] = nil
  local ok, r = pcall(Future.result, f)
  if not ok then self:stop(); error(r, 0) end
  return m[1], m[2], m[3], r
end

-- The next chunk in the order submitted: (chunk number, start, count, results), or nil.
function Stream:next_ordered()
  self:fill()
  local f = table.remove(self.pend, 1)
  if not f then return nil end
  self:fill()
  return self:result(f)
end

-- The next chunk to finish: (chunk number, start, count, results), or nil.
function Stream:next_done()
  while true do
    local ready = self.ready
    if ready and self.ri <= #ready then
      local f = ready[self.ri]
      self.ri = self.ri + 1
      return self:result(f)
    end
    self:fill()
    if #self.pend == 0 then return nil end
    local c, gen = watch(self.pend)
    self.ready, self.pend = core.split_done(self.pend)
    self.ri = 1
    if #self.ready == 0 then progress(nil, c, gen) end
    callbacks_of()
  end
end

-- The pieces common to the streaming kinds: the stream, its ctx.
local function stream_of(self, what, keys, argbase, ...)
  local lists, nl, n, iter, opts = map_args(what, keys, 3, argbase, ...)
  local c = self:_ctx()
  if self.ctx and (next(self.callbacks) or self.event_fn) then self:_callbacks() end
  local w = core.workers(c)
  local s = new_stream(lists, nl, n, iter, opts.chunksize, w, opts.window or 4 * w, nil)
  return s, c, opts
end

local function map_submitter(c, fn, s, where)
  local ok, p = pcall(package, c, fn)
  if not ok then raise_at(p, where) end
  local lists, nl = s.lists, s.nl
  return function(start, count, slices)
    local f
    if slices then
      ok, f = pcall(core.submit_map, c, p, describe, names, 1, count, tunpack(slices, 1, nl))
    else
      ok, f = pcall(core.submit_map, c, p, describe, names, start, start + count - 1, tunpack(lists, 1, nl))
    end
    if not ok then raise_at(f, where) end
    return f
  end
end

-- An iterator over (row, result) that yields chunk by chunk through next_chunk,
-- with a closing value for the generic for: leaving the loop stops the rest.
local function rows_of(s, next_chunk)
  local cur, pos, count, base = nil, 1, 0, 0
  local closing = setmetatable({}, { __close = function() s:stop() end })
  return function()
    if pos > count then
      local _, start, n, r = next_chunk(s)
      if not start then return nil end
      cur, pos, count, base = r, 1, n, start
    end
    local i = pos
    pos = i + 1
    return base + i - 1, cur[i]
  end, nil, nil, closing
end

--- pool:map(fn, list1 [, list2, ...] [, {chunksize = n}]) -> { fn(list1[i], list2[i], ...) first results }
function Pool:map(fn, ...)
  check_fn("farm.map", fn)
  local lists, nl, n, iter, opts = map_args("farm.map", MAP_OPTS, 2, 1, ...)
  local out = {}
  if n == 0 then return out end
  local c = self:_ctx()
  if iter then
    local s = new_stream(lists, nl, n, true, opts.chunksize, core.workers(c), 4 * core.workers(c))
    s.submit = map_submitter(c, fn, s, where_of(2))
    while true do
      local _, start, count, r = s:next_ordered()
      if not start then return out end
      tmove(r, 1, count, start, out)
    end
  end
  local ok, p = pcall(package, c, fn)
  if not ok then raise_at(p, where_of(2)) end
  local chunk = opts.chunksize or chunk_for(n, core.workers(c))
  local futures, starts = {}, {}
  for i = 1, n, chunk do
    starts[#starts + 1] = i
    local f
    ok, f = pcall(core.submit_map, c, p, describe, names, i, min(i + chunk - 1, n), tunpack(lists, 1, nl))
    if not ok then
      for j = 1, #futures do drop(futures[j]) end
      raise_at(f, where_of(2))
    end
    futures[#futures + 1] = f
  end
  for k = 1, #futures do
    local ok, r = pcall(Future.result, futures[k])
    if not ok then
      for j = k + 1, #futures do drop(futures[j]) end
      error(r, 2)
    end
    tmove(r, 1, min(chunk, n - starts[k] + 1), starts[k], out)
  end
  return out
end

--- pool:imap(fn, list1 [, ...] [, {chunksize =, window =}]) -> iterator over i, fn(...) in order
function Pool:imap(fn, ...)
  check_fn("farm.imap", fn)
  local s, c = stream_of(self, "farm.imap", STREAM_OPTS, 1, ...)
  s.submit = map_submitter(c, fn, s, where_of(2))
  return rows_of(s, s.next_ordered)
end

--- pool:map_unordered(fn, list1 [, ...] [, opts]) -> iterator over i, fn(...) as they finish
function Pool:map_unordered(fn, ...)
  check_fn("farm.map_unordered", fn)
  local s, c = stream_of(self, "farm.map_unordered", STREAM_OPTS, 1, ...)
  s.submit = map_submitter(c, fn, s, where_of(2))
  return rows_of(s, s.next_done)
end

-- The jobs of map_reduce, shipped as any function is, with fn and reducer as
-- their upvalues: a chunk job maps its rows and folds them, on a worker; one
-- more folds the chunks' partials, in order. The text is kept for ship.lua
-- under its chunk name (on workers too: a job may call map_reduce).
local REDUCE_CHUNK = "=farm.map_reduce"
local REDUCE_TEXT = [[
local fn, reducer = ...
local function chunk_job(has_init, acc, n, l1, ...)
  local nl = select("#", ...)
  local lists, row = nl > 0 and { l1, ... } or nil, {}
  for i = 1, n do
    local v
    if lists then
      for k = 1, nl + 1 do row[k] = lists[k][i] end
      v = fn(table.unpack(row, 1, nl + 1))
    else
      v = fn(l1[i])
    end
    if has_init or i > 1 then acc = reducer(acc, v) else acc = v end
  end
  return acc
end
local function fold_job(has_init, acc, n, partials)
  for i = 1, n do
    if has_init or i > 1 then acc = reducer(acc, partials[i]) else acc = partials[i] end
  end
  return acc
end
return chunk_job, fold_job
]]
ship.remember(REDUCE_CHUNK, REDUCE_TEXT)
local reduce_jobs = assert(load(REDUCE_TEXT, REDUCE_CHUNK, "t"))

--- pool:map_reduce(fn, reducer, list1 [, ...] [, {chunksize =, window =, init =}])
---   -> reducer(...reducer(reducer(fn(row 1), fn(row 2)), fn(row 3))..., in row order;
---   every fold (on the workers) starts from init when given: a neutral element.
function Pool:map_reduce(fn, reducer, ...)
  check_fn("farm.map_reduce", fn)
  if type(reducer) ~= "function" then
    error(("farm.map_reduce: argument #2 must be a function (got %s)"):format(type(reducer)), 2)
  end
  local s, c, opts = stream_of(self, "farm.map_reduce", REDUCE_OPTS, 2, ...)
  local has_init, init = opts.init ~= nil, opts.init
  local chunk_job, fold_job = reduce_jobs(fn, reducer)
  local where = where_of(2)
  local ok, p = pcall(package, c, chunk_job)
  if not ok then raise_at(p, where) end
  local lists, nl = s.lists, s.nl
  s.submit = function(start, count, slices)
    if not slices then
      slices = {}
      for k = 1, nl do slices[k] = tmove(lists[k], start, start + count - 1, 1, {}) end
    end
    local f
    ok, f = pcall(core.submit, c, nil, p, describe, names, has_init, init, count, tunpack(slices, 1, nl))
    if not ok then
      -- the chunk job's arguments are (has_init, init, rows, list 1, ...): say
      -- them as the script gave them (list 1 is map_reduce's argument #3)
      if type(f) == "string" then
        f = f:gsub("argument 2([^%d])", "option init%1", 1)
             :gsub("argument (%d+)", function(k) return "argument " .. (tonumber(k) - 1) end, 1)
      end
      raise_at(f, where)
    end
    return f
  end
  local partials = {}
  while true do
    local k, start, _, r = s:next_done()
    if not start then break end
    partials[k] = r
  end
  if s.chunks == 0 then
    if has_init then return init end
    error("farm.map_reduce: the lists are empty; nothing to reduce (give {init = value} to get "
      .. "that value back)", 2)
  end
  if s.chunks == 1 then return partials[1] end
  local f = core.submit(c, nil, package(c, fold_job), describe, names, has_init, init, s.chunks, partials)
  local ok, r = pcall(Future.result, f)
  if not ok then error(r, 2) end
  return r
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

local WAIT_OPTS = { timeout = true, return_when = true }

-- Wait until none of pools has a job out (callbacks run), or the deadline:
-- true when none has.
local function wait_pools(pools, deadline)
  while true do
    local c, gen
    for _, p in ipairs(pools) do
      local pc = p.ctx
      if pc and not core.closed(pc) and core.outstanding(pc) > 0 then
        c, gen = pc, core.gen(pc)
        break
      end
    end
    callbacks_of()
    if not c then return true end
    if core.outstanding(c) > 0 and not progress(deadline, c, gen) then return false end
  end
end

--- farm.wait(futures [, {timeout = s, return_when = "all" | "first" | "error"}]) -> done, not_done
--- farm.wait([{timeout = s}]) -> true when every job submitted so far has finished
---   (pp's wait()), false when the timeout came first; pool:wait() waits for
---   that pool's jobs, farm.wait() for every pool's.
function farm.wait(futures, opts, pools)
  if futures == nil or (type(futures) == "table" and rawget(futures, 1) == nil
                        and getmetatable(futures) == nil and opts == nil and next(futures) ~= nil) then
    -- no futures: every job; a table of options alone says how
    if on_worker then
      error("farm.wait: a job waits for its own jobs by their futures (farm.wait(futures))", 2)
    end
    if futures ~= nil then
      for k in pairs(futures) do
        if not WAIT_OPTS[k] then
          error(("farm.wait: argument #1 must be a list of futures, or a table of options "
            .. "(timeout, return_when): '%s' is neither"):format(tostring(k)), 2)
        end
      end
      opts = futures
    elseif opts ~= nil and type(opts) ~= "table" then
      error("farm.wait: argument #2 must be a table of options", 2)
    end
    opts = opts or {}
    if opts.return_when ~= nil and opts.return_when ~= "all" then
      error(("farm.wait: return_when = %s needs a list of futures (without one, farm.wait waits "
        .. "for every job)"):format(shown(opts.return_when)), 2)
    end
    check_timeout("farm.wait", opts.timeout, 2)
    if not pools then
      pools = {}
      for _, p in pairs(pool_of) do pools[#pools + 1] = p end
    end
    return wait_pools(pools, opts.timeout and core.now() + opts.timeout)
  end
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

--- pool:set_workers(n): n local workers (1 to 256) from now on, as pp's set_ncpus:
--- growing starts workers (they are up when it returns), shrinking retires the
--- surplus, idle ones first, letting their running jobs finish. Before the pool
--- starts it sets the configured count. Only the client can resize a pool.
function Pool:set_workers(n)
  if on_worker then error("farm.set_workers: only the client can resize the pool", 2) end
  if math.type(n) ~= "integer" or n < 1 or n > 256 then
    error(("farm.set_workers: the number of workers must be an integer from 1 to 256 (got %s)")
      :format(math.type(n) and tostring(n) or type(n)), 2)
  end
  local c = self.ctx
  if c and not core.closed(c) then core.set_workers(c, n) end
  self.config.workers, self.config.local_workers = n, nil   -- and when it starts again
end

--- pool:add_nodes{line, ...}: nodes added to the running pool (it starts if it
--- has not), each a hostfile line ("node://host:port [workers]", "user@host 4"):
--- they connect in the background and get jobs once up; one that cannot be
--- reached is said on stderr and the pool goes on. A node the pool has already
--- (up, or being tried again) is left as it is. Standing nodes use the pool's
--- key_file (or FARM_KEY_FILE). Only the client can add nodes.
function Pool:add_nodes(lines)
  if on_worker then error("farm.add_nodes: only the client can add nodes", 2) end
  if type(lines) == "string" then lines = { lines } end
  if type(lines) ~= "table" then
    error(("farm.add_nodes: a list of hostfile lines expected, as {\"node://host:7070\"} (got %s)")
      :format(type(lines)), 2)
  end
  core.add_nodes(self:_ctx(), lines, self.config.key_file)
end

--- pool:stats() -> { workers = {{name, pid, jobs, busy}...}, jobs, busy, elapsed, ... }
function Pool:stats()
  if not self.ctx then
    -- closed: what it did (farm.close keeps it), or nothing yet
    return self.last_stats or { workers = {}, jobs = 0, busy = 0, elapsed = 0, queued = 0 }
  end
  return core.stats(self.ctx)
end

--- pool:nodes() -> { {host =, workers =, jobs_done =, state = "up" | "lost" | "failed",
---                     clients = (the clients the node serves now, this one included)}, ... }
function Pool:nodes()
  local list = {}
  for _, w in ipairs(self:stats().workers) do
    if w.kind == "node" then
      list[#list + 1] = { host = w.name, workers = w.capacity, jobs_done = w.jobs, state = w.state,
                          clients = w.clients }
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
  if on_worker then
    error("farm.close: a job cannot close the pool it runs in; the client closes it (at its end, "
      .. "farm run does)", 2)
  end
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
    self:_events()
    self.last_stats = core.stats(c)
    self:_keep_unread(c)
    core.close(c)
  end
  self.ctx = nil
end

-- The script's jobs that failed with their error never read (future:result):
-- counted, with the first of them, across the pool's starts (core.unread).
function Pool:_keep_unread(c)
  local n, id, msg = core.unread(c)
  if n == 0 then return end
  local u = self.unread or { n = 0 }
  u.n = u.n + n
  if not u.id then u.id, u.msg = id, msg end
  self.unread = u
end

-- farm run's end: one line on out for the jobs that failed unread, in every
-- pool (as Python's asyncio warns of exceptions never retrieved); their count.
function farm._report_unread(out)
  local n, id, msg = 0, nil, nil
  local function add(k, kid, kmsg)
    if k == 0 then return end
    n = n + k
    if not id or kid < id then id, msg = kid, kmsg end
  end
  for p in pairs(all_pools) do
    local u = p.unread
    if u then add(u.n, u.id, u.msg) end
    if p.ctx and not core.closed(p.ctx) then add(core.unread(p.ctx)) end
  end
  if n == 0 then return 0 end
  out:write(("farm: %d job%s failed and %s never read (future:result() reads it); "
    .. "the first, job %d: %s\n"):format(n, n == 1 and "" or "s",
    n == 1 and "its error was" or "their errors were", id, tostring(msg):match("^[^\n]*")))
  return n
end

-- ---- programs as jobs (dispy's executable computations) -------------------------
--
-- pool:exec{"sha1sum", "f.bin", input = s, timeout = t, retries = n, files = {...},
-- max_output = bytes} -> a future whose result is { status =, stdout =, stderr =
-- [, signal =] [, truncated =] }. The job is core.exec itself (core/exec.c): a C
-- function of farm.core, it travels by its name and the worker runs its own.
-- A program that exits non-zero is a result; one that cannot start is an error.

local EXEC_OPTIONS = "input, max_output, timeout, retries, files"
local EXAMPLE = '{"sha1sum", "f.bin"}'

function Pool:exec(spec)
  if type(spec) ~= "table" then
    error(("farm.exec: argument #1 must be a table such as %s (got %s)"):format(EXAMPLE, type(spec)), 2)
  end
  local n = #spec
  if n == 0 then
    error(("farm.exec: the command is empty: give the program and its arguments, as %s"):format(EXAMPLE), 2)
  end
  local argv = {}
  for i = 1, n do
    local v = spec[i]
    if type(v) ~= "string" then
      error(("farm.exec: item %d of the command must be a string (got %s)"):format(i, type(v)), 2)
    end
    if v:find("\0", 1, true) then
      error(("farm.exec: item %d of the command holds a zero byte"):format(i), 2)
    end
    argv[i] = v
  end
  if argv[1] == "" then error("farm.exec: the program's name (item 1 of the command) is empty", 2) end
  local run, opts = nil, nil
  for k, v in pairs(spec) do
    if math.type(k) == "integer" and k >= 1 and k <= n then
      -- the command itself
    elseif k == "input" then
      if type(v) ~= "string" then
        error(("farm.exec: input must be a string (got %s)"):format(type(v)), 2)
      end
      run = run or {}
      run.input = v
    elseif k == "max_output" then
      if math.type(v) ~= "integer" or v < 0 then
        error(("farm.exec: max_output must be a number of bytes (an integer >= 0, got %s)")
          :format(tostring(v)), 2)
      end
      run = run or {}
      run.max_output = v
    elseif k == "timeout" then
      if type(v) ~= "number" or not (v > 0) or v == huge then
        error(("farm.exec: timeout must be a positive number of seconds (got %s)"):format(shown(v)), 2)
      end
      opts = opts or {}
      opts.timeout = v
    elseif k == "retries" then
      if math.type(v) ~= "integer" or v < 0 or v > 1000 then
        error(("farm.exec: retries must be an integer from 0 to 1000 (got %s)"):format(shown(v)), 2)
      end
      opts = opts or {}
      opts.retries = v
    elseif k == "files" then
      opts = opts or {}
      opts.files = v                      -- farm.submit_with checks and ships them
    elseif math.type(k) == "integer" then
      error(("farm.exec: the command must be a list without holes (item %d follows a hole)"):format(k), 2)
    else
      error(("farm.exec: unknown option '%s' (%s)"):format(tostring(k), EXEC_OPTIONS), 2)
    end
  end
  if opts then return self:submit_with(opts, core.exec, argv, run) end
  return self:submit(core.exec, argv, run)
end

-- ---- the default pool, and farm.new -------------------------------------------

default = new_pool({ echo = true })
do
  local maxmsg = tonumber(os.getenv("FARM_MAX_MESSAGE") or "")
  if maxmsg then default.config.max_message = maxmsg end
end

--- farm.new{workers = N, echo = bool, max_message = bytes} -> a pool of its own
function farm.new(opts)
  if on_worker then
    error("farm.new: a job cannot start a pool of its own; its jobs go to the client's pool "
      .. "(farm.submit, farm.map)", 2)
  end
  opts = opts or {}
  check_config("farm.new", opts, 2)
  local cfg = { echo = default.config.echo, max_message = default.config.max_message }
  for k, v in pairs(opts) do cfg[k] = v end
  return new_pool(cfg)
end

function farm.config(opts) return default:configure(opts) end
farm.shared = default.shared
function farm.on_node(spec) return default:on_node(spec) end
function farm.on_event(fn) return default:on_event(fn) end
--- farm.send_file(path): in a job, send that file to the client, which writes it
--- under its --dest directory (farm.config{dest =}; by default the run's own
--- farm-out/YYYYmmdd-HHMMSS-PID), at path when path is relative and stays below,
--- else under its last component. Before the job's result. From a node, a file
--- never replaces one that is there.
function farm.send_file(path)
  if type(path) ~= "string" then
    error(("farm.send_file: argument #1 must be a path (got %s)"):format(type(path)), 2)
  end
  local ok, e = pcall(core.send_file, path)
  if not ok then error(e, 2) end
  return true
end
--- farm.provide(value): in a job, a provisional result (dispy's
--- dispy_provisional_result): the client sees it at once, as future:partial(),
--- and as a job_partial event. The last one a job gives is its last word when
--- it is cancelled with a grace.
function farm.provide(value, ...)
  if select("#", ...) > 0 then
    error("farm.provide: one value (put several in a table)", 2)
  end
  if not on_worker then
    error("farm.provide: only a job provides results; the client reads them with future:partial()", 2)
  end
  local ok, e = pcall(core.provide, core.worker_ctx(), describe, names, value)
  if not ok then error(e, 2) end
end

--- farm.cancelled(): in a job, true once the client cancelled it with a grace
--- (future:cancel{force = true, grace = s}): the job may say a last word with
--- farm.provide and return before the grace is over. Always false in the client.
function farm.cancelled()
  return on_worker and core.cancelled() or false
end

function farm.submit(fn, ...) return default:submit(fn, ...) end
function farm.submit_with(opts, fn, ...) return default:submit_with(opts, fn, ...) end
function farm.map(fn, ...) return default:map(fn, ...) end
function farm.imap(fn, ...) return default:imap(fn, ...) end
function farm.map_unordered(fn, ...) return default:map_unordered(fn, ...) end
function farm.map_reduce(fn, reducer, ...) return default:map_reduce(fn, reducer, ...) end
function farm.exec(spec) return default:exec(spec) end
function farm.workers() return default:workers() end
function farm.set_workers(n) return default:set_workers(n) end
function farm.add_nodes(lines) return default:add_nodes(lines) end
function farm.stats() return default:stats() end
function farm.nodes() return default:nodes() end
function farm.print_stats(out) return default:print_stats(out) end
function farm.close(opts) return default:close(opts) end
Pool.config = Pool.configure
function Pool:wait(futures, opts) return farm.wait(futures, opts, { self }) end
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
