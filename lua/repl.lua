-- repl.lua -- what `farm repl` does with each line it reads (core/repl.c reads
-- them, with libedit on a terminal): chunks that continue while incomplete,
-- expressions that print their values, the :commands, values shown readably,
-- and the names Tab completes.
--
-- Each chunk is compiled under a name of its own ("=stdin:3", the third chunk
-- of the session) and its text is given to farm.remember, so the functions
-- typed here ship to workers as functions from a file do.
--
-- The same lines give the same output whether they come from a terminal or a
-- pipe: only core/repl.c knows which (prompts, history, colour).

local farm = require "farm"
local core = require "farm.core"

local type, tostring, select, pairs, ipairs, pcall, xpcall, error, rawget =
  type, tostring, select, pairs, ipairs, pcall, xpcall, error, rawget
local getmetatable, next, load = getmetatable, next, load
local format, rep, concat, sort = string.format, string.rep, table.concat, table.sort
local mtype = math.type

local repl = {}

-- ---- values, readably -------------------------------------------------------

local MAX_DEPTH = 3        -- tables nested deeper show as {...}
local MAX_ITEMS = 30       -- items shown of one table, then "... (N more)"
local WIDTH = 78           -- a table that fits on one line this long stays on one

local KEYWORDS = {}
for w in ([[and break do else elseif end false for function goto if in local nil not
  or repeat return then true until while]]):gmatch("%a+") do KEYWORDS[w] = true end

local function is_name(k)
  return type(k) == "string" and k:match("^[%a_][%w_]*$") and not KEYWORDS[k]
end

local ESCAPES = { ["\n"] = "\\n", ["\t"] = "\\t", ["\r"] = "\\r", ["\\"] = "\\\\",
                  ['"'] = '\\"' }

local function quote(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return ESCAPES[c] or format("\\%03d", c:byte())   -- three digits: a digit may follow
  end) .. '"'
end

-- "local:2 (pid 4242)" -> "local:2"
local function place(where)
  return where and (where:gsub(" %(pid %d+%)$", "")) or nil
end

local function show_future(f)
  local where = place(core.where(f))
  return format("<future %d %s%s>", core.id(f), core.status(f), where and " on " .. where or "")
end

local function show_function(f)
  local info = debug.getinfo(f, "S")
  if info.what == "C" then return "<C function>" end
  return format("<function %s:%d>", info.short_src, info.linedefined)
end

local show

local function key_order(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return ta < tb end
  if ta == "number" or ta == "string" then return a < b end
  return tostring(a) < tostring(b)
end

-- A table's items as strings, array part first, then the other keys sorted;
-- and how many of them are the array part's.
local function items(t, depth, open)
  local out, n = {}, #t
  local shown = 0
  for i = 1, n do
    if shown == MAX_ITEMS then break end
    shown = shown + 1
    out[shown] = show(rawget(t, i), depth + 1, open)
  end
  local keys = {}
  for k in next, t do
    if not (mtype(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  local total = n + #keys
  if shown < MAX_ITEMS then
    sort(keys, key_order)
    for _, k in ipairs(keys) do
      if shown == MAX_ITEMS then break end
      shown = shown + 1
      local ks = is_name(k) and k or "[" .. show(k, depth + 1, open) .. "]"
      out[shown] = ks .. " = " .. show(rawget(t, k), depth + 1, open)
    end
  end
  if total > shown then out[#out + 1] = format("... (%d more)", total - shown) end
  return out, math.min(n, MAX_ITEMS)
end

local function show_table(t, depth, open)
  if open[t] then return "<cycle>" end
  if next(t) == nil then return "{}" end
  if depth >= MAX_DEPTH then return "{...}" end
  open[t] = true
  local parts, npos = items(t, depth, open)
  open[t] = nil
  local one = "{" .. concat(parts, ", ") .. "}"
  if #one + 2 * depth <= WIDTH and not one:find("\n", 1, true) then return one end
  -- one item a line (nested tables indent themselves), but the array part's
  -- short items share lines
  local pad = rep("  ", depth + 1)
  local lines, line = {}, nil
  for i, p in ipairs(parts) do
    local packable = i <= npos and not p:find("\n", 1, true)
    if line and packable and #line + #p + 2 <= WIDTH then
      line = line .. ", " .. p
    else
      if line then lines[#lines + 1] = line end
      line = pad .. p
      if not packable then lines[#lines + 1] = line; line = nil end
    end
  end
  if line then lines[#lines + 1] = line end
  return "{\n" .. concat(lines, ",\n") .. "\n" .. rep("  ", depth) .. "}"
end

--- show(v) -> v as a readable string (strings quoted, tables with contents)
function show(v, depth, open)
  depth, open = depth or 0, open or {}
  local t = type(v)
  if t == "string" then return quote(v) end
  if t == "table" then
    local mt = getmetatable(v)
    if type(mt) == "table" and rawget(mt, "__tostring") then
      local ok, s = pcall(tostring, v)
      if ok and type(s) == "string" then return s end
    end
    return show_table(v, depth, open)
  end
  if t == "function" then return show_function(v) end
  if t == "userdata" and core.is_future(v) then return show_future(v) end
  return tostring(v)
end
repl.show = show

-- ---- jobs submitted at the prompt ---------------------------------------------

-- Futures are tracked from submit to their end (for :jobs and :cancel), then
-- kept weakly: a job whose future the user dropped is no longer listed.
local live = {}                                   -- id -> { f = future, t = when }
local past = setmetatable({}, { __mode = "v" })   -- id -> future, over

local function track(f)
  if core.is_future(f) then live[core.id(f)] = { f = f, t = core.now() } end
  return f
end

local function prune()
  for id, j in pairs(live) do
    if core.done(j.f) then past[id] = j.f; live[id] = nil end
  end
end

-- Pools' submit and submit_with, wrapped to track what they return. Their own
-- argument errors keep pointing at the line that called them.
local Pool = getmetatable(farm._default)
local function tracked(orig)
  return function(self, ...)
    local ok, f = pcall(orig, self, ...)
    if ok then return track(f) end
    if type(f) == "string" and f:find("^farm%.submit[%w_]*: ") then error(f, 2) end
    error(f, 0)
  end
end
Pool.submit, Pool.submit_with = tracked(Pool.submit), tracked(Pool.submit_with)

-- farm.map, imap, map_unordered and map_reduce submit their chunk jobs through
-- core.submit_map and core.submit, not a pool's submit: tracked there too, so
-- the chunks a Ctrl-C left running (it stops the wait, not the jobs) are
-- listed by :jobs and stopped by :cancel all.
do
  local submit, submit_map = core.submit, core.submit_map
  core.submit = function(...) return track(submit(...)) end
  core.submit_map = function(...) return track(submit_map(...)) end
end

local function outstanding()
  return farm._default.ctx and (farm.stats().outstanding or 0) or 0
end

-- ---- the commands -------------------------------------------------------------

local HELP = [[
Type Lua. An expression prints its values (1 + 1, or =expr); a statement runs;
a chunk left open (a function without its end) goes on at the next line.
Functions defined here ship to the workers like functions from a file:
  function sq(x) return x * x end
  f = farm.submit(sq, 7)     f()  ->  49
Commands:
  :jobs          jobs submitted here and not finished: state, time since submit
  :nodes         the nodes and their state
  :stats         the pool's statistics (farm.print_stats)
  :cancel ID     cancel job ID, stopping it if it runs (:cancel all: every job)
  :workers N     N local workers from now on (running jobs go on; farm.set_workers)
  :help          this text
  :quit          leave (Ctrl-D too); unfinished jobs are stopped
Ctrl-C clears the line, or stops waiting for a result (the job goes on).
Tab completes names, fields (farm.sub<Tab>) and methods (f:res<Tab>).]]

local commands = {}

local function out(s) io.stdout:write(s, "\n") end

function commands.help() out(HELP) end

function commands.jobs()
  prune()
  local ids = {}
  for id in pairs(live) do ids[#ids + 1] = id end
  sort(ids)
  local now = core.now()
  if #ids > 0 then
    out(format("%6s  %-9s  %-12s  %s", "job", "state", "where", "since submit"))
    for _, id in ipairs(ids) do
      local f, t = live[id].f, live[id].t
      out(format("%6d  %-9s  %-12s  %.1f s", id, core.status(f), place(core.where(f)) or "-", now - t))
    end
  end
  local total = outstanding()
  if #ids == 0 then
    out(total > 0 and format("no jobs submitted here are unfinished (%d in the pool: "
      .. "jobs' own jobs)", total) or "no unfinished jobs")
  elseif total > #ids then
    out(format("(%d unfinished in the pool in all, with jobs' own jobs)", total))
  end
end

function commands.nodes()
  local list = farm.nodes()
  if #list == 0 then
    out("no nodes (farm repl --nodes HOSTFILE or --hosts LIST adds them)")
    return
  end
  out(format("%-32s  %7s  %9s  %s", "node", "workers", "jobs done", "state"))
  for _, n in ipairs(list) do
    out(format("%-32s  %7d  %9d  %s", n.host, n.workers or 0, n.jobs_done or 0, n.state or "?"))
  end
end

function commands.stats()
  farm.print_stats(io.stdout)
  local s = farm.stats()
  out(format("%d jobs submitted, %d unfinished", s.submitted or 0, s.outstanding or 0))
end

local function cancel_one(id, f)
  local state = core.status(f)
  if core.done(f) then
    out(format("job %d is over (%s)", id, state))
  elseif f:cancel() then
    out(format("job %d cancelled", id))
  elseif f:cancel { force = true } then
    out(format("job %d stopped (it was running: its worker is replaced)", id))
  else
    out(format("job %d could not be cancelled (%s)", id, core.status(f)))
  end
end

function commands.cancel(arg)
  prune()
  if arg == "all" then
    local n = 0
    for id, j in pairs(live) do
      if j.f:cancel { force = true } then n = n + 1 end
      live[id] = nil
      past[id] = j.f
    end
    out(format("%d job%s cancelled", n, n == 1 and "" or "s"))
    return
  end
  local id = math.tointeger(tonumber(arg or ""))
  if not id then return false, ":cancel takes a job id (:jobs lists them), or 'all'" end
  local j = live[id]
  local f = j and j.f or past[id]
  if not f then
    return false, format("no job %d was submitted here, or its future is gone (:jobs lists them)", id)
  end
  cancel_one(id, f)
  prune()
end

-- N >= 1 resizes the running pool (farm.set_workers: running jobs go on, a
-- retired worker finishes its own first). No local workers at all (0, with
-- nodes) is a pool of another kind: it closes and reopens, so only when no job
-- is unfinished.
function commands.workers(arg)
  local n = math.tointeger(tonumber(arg or ""))
  if not n or n < 0 or n > 256 then
    return false, ":workers takes a number of local workers from 0 to 256, e.g. :workers 4"
  end
  local pool = farm._default
  local cfg = pool.config
  if n > 0 then
    farm.set_workers(n)
  else
    if not (cfg.nodes or cfg.hosts) then
      return false, ":workers 0 leaves no workers: start farm repl with --nodes or --hosts for that"
    end
    local busy = outstanding()
    if busy > 0 then
      return false, format("%d job%s unfinished: :workers 0 restarts the pool, so wait for them "
        .. "or :cancel them first", busy, busy == 1 and " is" or "s are")
    end
    farm.close()
    farm.config { local_workers = false }
  end
  local w = farm.workers()
  out(format("%d worker%s", w, w == 1 and "" or "s"))
end

function commands.quit() return "quit" end
commands.q, commands.exit, commands.h = commands.quit, commands.quit, commands.help

local COMMAND_NAMES = { ":cancel", ":help", ":jobs", ":nodes", ":quit", ":stats", ":workers" }

-- ---- completion --------------------------------------------------------------

-- The fields a value offers: a table's keys and, through __index tables, its
-- class's; a string's methods; a future's (its __index is a function: the
-- names it offers are in __methods).
local function fields(v, into)
  for _ = 1, 8 do
    if type(v) == "table" then
      for k in next, v do if type(k) == "string" then into[k] = true end end
    end
    local mt = getmetatable(v)
    if type(mt) ~= "table" then break end
    local index = rawget(mt, "__index")
    if index == nil and type(v) == "userdata" then index = mt end
    if type(index) == "function" then index = rawget(mt, "__methods") end
    if type(index) ~= "table" then break end
    v = index
  end
  return into
end

-- v's field k, or nil when reading it raises
local function field(v, k)
  local ok, x = pcall(function() return v[k] end)
  if ok then return x end
end

--- complete(word, at_start) -> sorted list of completions of word
function repl.complete(word, at_start)
  local list = {}
  if at_start and word:sub(1, 1) == ":" then
    for _, c in ipairs(COMMAND_NAMES) do
      if c:sub(1, #word) == word then list[#list + 1] = c end
    end
    return list
  end
  local base, sep, part = word:match("^(.*)([%.:])([%w_]*)$")
  local names
  if base then
    if not base:match("^[%a_][%w_]*$") and not base:match("^[%a_][%w_%.]*[%w_]$") then
      return list
    end
    local v = _G
    for name in base:gmatch("[^%.]+") do
      if type(v) ~= "table" then v = nil; break end
      v = field(v, name)
    end
    if v == nil then return list end
    names = fields(v, {})
    if sep == ":" then             -- a method call: methods only, with the "(" that follows
      local methods = {}
      for k in pairs(names) do
        if k:sub(1, #part) == part and type(field(v, k)) == "function" then methods[k] = true end
      end
      names, sep = methods, ":"
    end
  else
    part, base, sep = word, "", ""
    if not word:match("^[%a_]?[%w_]*$") then return list end
    names = fields(_G, {})
    for k in pairs(KEYWORDS) do names[k] = true end
  end
  -- names starting with "_" (farm's internals, _G) only when asked for
  local hidden = part:sub(1, 1) ~= "_"
  for k in pairs(names) do
    if (is_name(k) or (sep == "" and KEYWORDS[k])) and k:sub(1, #part) == part
        and not (hidden and k:sub(1, 1) == "_") then
      list[#list + 1] = base .. sep .. k .. (sep == ":" and "(" or "")
    end
  end
  sort(list)
  return list
end

-- ---- sessions: lines in, output out ----------------------------------------------

local Session = {}
Session.__index = Session

--- repl.new{tty = bool, color = bool, interrupted = marker} -> a session
function repl.new(opts)
  return setmetatable({
    tty = opts and opts.tty or false,         -- lines come from a terminal
    color = opts and opts.color or false,     -- errors in red
    interrupted = opts and opts.interrupted,   -- what Ctrl-C raises (core/repl.c)
    buffer = nil,                             -- lines of a chunk not complete yet
    n = 0,                                    -- chunks so far
  }, Session)
end

local function is_incomplete(err)
  return type(err) == "string" and err:sub(-5) == "<eof>"
end

function Session:error(msg)
  if self.color then msg = "\27[31m" .. msg .. "\27[0m" end
  io.stdout:flush()
  io.stderr:write(msg, "\n")
  io.stderr:flush()
end

-- The message for what a chunk raised: a job's error with its remote
-- traceback, Ctrl-C's, or the value itself.
function Session:describe(e)
  if e == self.interrupted then
    -- on a terminal the ^C the terminal echoed ends the line first
    local n = outstanding()
    return (self.tty and "\n" or "") .. (n > 0 and format("interrupted (unfinished jobs go on: "
      .. "%d; :jobs lists them)", n) or "interrupted")
  end
  if type(e) == "string" then return e end
  if getmetatable(e) == farm.JobError then
    -- a job that raised a value other than a string: that value, shown
    if e.value ~= nil and type(e.value) ~= "string" then
      local ok, s = pcall(show, e.value)
      if ok then
        local copy = setmetatable({}, farm.JobError)
        for k, v in pairs(e) do copy[k] = v end
        copy.message = "error: " .. s
        e = copy
      end
    end
    return tostring(e)
  end
  local ok, s = pcall(show, e)
  return "error: " .. (ok and s or "(an error value that cannot be shown)")
end

local function print_values(n, ...)
  if n == 0 then return end
  local parts = {}
  for i = 1, n do parts[i] = show((select(i, ...))) end
  io.stdout:write(concat(parts, "\t"), "\n")
end

function Session:run(fn)
  local r = table.pack(xpcall(fn, function(e) return e end))
  prune()                          -- finished jobs are held weakly from here on
  if not r[1] then
    self:error(self:describe(r[2]))
    return "failed"
  end
  print_values(r.n - 1, table.unpack(r, 2, r.n))
  return "done"
end

-- Compile the chunk in self.buffer: "return <chunk>" first, as lua.c does, so
-- an expression gives its values; then the chunk as statements. Either one
-- still open asks for more lines.
function Session:compile()
  local text = concat(self.buffer, "\n")
  local name = self.name
  if text:sub(1, 1) == "=" then text = "return " .. text:sub(2) end
  local rtext = "return " .. text
  local f, rerr = load(rtext, name, "t")
  if f then return f, rtext end
  local g, err = load(text, name, "t")
  if g then return g, text end
  if is_incomplete(err) or is_incomplete(rerr) then return nil, nil, "more" end
  return nil, nil, err
end

local function remember(name, text)
  if farm.remember then farm.remember(name, text)
  else require("farm.ship").remember(name, text) end
end

function Session:command(line)
  local name, arg = line:match("^:(%a+)%s*(.-)%s*$")
  local cmd = name and commands[name]
  if not cmd then
    self:error(format("unknown command '%s' (:help lists them)", line:match("^%S+")))
    return "failed"
  end
  local ok, r, msg = xpcall(cmd, function(e) return e end, arg ~= "" and arg or nil)
  if not ok then self:error(self:describe(r)); return "failed" end
  if r == false then self:error(msg); return "failed" end
  return r == "quit" and "quit" or "done"
end

--- session:feed(line) -> "more" (a chunk goes on), "done", "failed" or "quit"
function Session:feed(line)
  if not self.buffer then
    if line:match("^%s*$") then return "done" end
    if line:match("^%s*:%a") then return self:command(line:match("^%s*(.-)%s*$")) end
    self.n = self.n + 1
    self.name = "=stdin:" .. self.n
    self.buffer = {}
  end
  self.buffer[#self.buffer + 1] = line
  local f, text, err = self:compile()
  if err == "more" then return "more" end
  self.buffer = nil
  if not f then self:error(err); return "failed" end
  remember(self.name, text)
  local st = self:run(f)
  io.stdout:flush()
  return st
end

--- session:reset(): forget a chunk not finished (Ctrl-C at the prompt)
function Session:reset() self.buffer = nil end

--- session:finish(): the input ended; a chunk left open is an error
function Session:finish()
  if not self.buffer then return "done" end
  local text = concat(self.buffer, "\n")
  self.buffer = nil
  local _, err = load(text, self.name, "t")
  self:error(err or "the input ended inside a chunk")
  return "failed"
end

--- session:bye(): before the pool closes, say what is stopped with it
function Session:bye()
  local n = outstanding()
  if n > 0 then
    io.stderr:write(format("farm: stopping %d unfinished job%s\n", n, n == 1 and "" or "s"))
  end
end

function Session:complete(word, at_start) return repl.complete(word, at_start) end

return repl
