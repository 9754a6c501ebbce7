-- ship.lua -- find the source text of a Lua function, so that farm can ship it.
--
-- farm never sends bytecode: a job's function travels as text, compiled on the
-- worker in text mode. This module finds that text. debug.getinfo gives the
-- chunk and the lines a function spans; the text is cut from there, and a cut is
-- accepted only when it compiles to the very same function (core.fnsig compares
-- the bytecode with its debug information, upvalue descriptors aside). Where no
-- cut verifies, describe() raises and says why; it never guesses.
--
--   ship.describe(f)   -> { chunk, line, text, name, where, globals }
--   ship.protoid(f)    -> the identity of f's prototype (core.protoid), or nil
--   ship.remember(chunkname, text), ship.hook(G)   -- the text of loaded chunks
--                      (farm.remember and farm_remember in farm.h are this)
--   ship.names()       -> { [value] = "qualified.name" } over package.loaded
--   ship.is_constant(f) -> is f the same package at every submit (kept by hash)
--   ship.resolve(name [, info]) -> value: the worker-side inverse of names()
--   ship.module_info(qualified name) -> how a worker may load that module, or nil
--   ship.install("lib.key", value)   -- a library field a script added, on a worker
--
-- Tables returned by describe() and names() are shared caches: read, don't write.

local core = package.loaded["farm.core"] or require "farm.core"

local fnsig, fnglobals, upkinds = core.fnsig, core.globals, core.upkinds
local getinfo, getupvalue = debug.getinfo, debug.getupvalue
local find, match, sub, gsub, gmatch, rep, format, byte, char =
  string.find, string.match, string.sub, string.gsub, string.gmatch, string.rep, string.format,
  string.byte, string.char
local dump = string.dump
local concat, sort = table.concat, table.sort
local type, ipairs, next, pcall, error, load, rawequal, tostring, setmetatable =
  type, ipairs, next, pcall, error, load, rawequal, tostring, setmetatable
local open, max, huge, mtype, tonumber = io.open, math.max, math.huge, math.type, tonumber

-- The global table of this state (LUA_RIDX_GLOBALS), whatever `_G` is now.
local G = debug.getregistry()[2]
local package = package
local require = require

local ship = {}

-- (spelled with string.char: scripts/embed.lua mangles backslash-digit escapes)
local ESC, BOM = string.char(27), string.char(0xEF, 0xBB, 0xBF)

local cfuncs = setmetatable({}, { __mode = "k" })   -- function -> is it a C function?
local function iscfunc(v)
  local c = cfuncs[v]
  if c == nil then
    c = getinfo(v, "S").what == "C"
    cfuncs[v] = c
  end
  return c
end

-- ---- chunk texts -----------------------------------------------------------
--
-- A function's text is cut from the text its chunk had when it was loaded.
-- farm keeps that text from the moment of the load: every chunk that load,
-- loadfile, dofile and require (its searcher for Lua files) compile once farm
-- is loaded (ship.hook), the script `farm run` runs (core/cli.c: read once,
-- from a file, a pipe or stdin), and under plain lua the files running when
-- farm was required. Each is kept under its chunk name ("@path", "=stdin", the
-- name given to load). A chunk loaded again under the same name with another
-- text (a file rewritten, then dofile'd again) adds a text: each function
-- ships the one that compiles to it, newest first, so functions from both
-- loads ship. A file is read from disk only when no text was kept under its
-- name (a chunk C loaded, or one loaded before farm), and only when it is a
-- regular file: a pipe gives nothing the second time. A C host or a REPL that
-- compiles chunks itself gives farm their text: farm.remember(chunkname, text)
-- in Lua, farm_remember() in C (include/farm.h); both end in ship.remember.
--
-- A text record is { text = string, lines = array or nil (split on demand) }.

local files = {}       -- path -> record of a file read from disk
local memory = {}      -- chunk name -> array of records, oldest first (several chunks
                       -- may share a name)
local remembered = {}  -- chunk name -> { [text] = true }
local literal = {}     -- source string that is its own text -> record

--- ship.remember(chunkname, text): the text of a chunk loaded under chunkname
--- (the very name given to load: "@path", "=name"). Kept while this state
--- lives; the same text twice is kept once.
function ship.remember(chunkname, text)
  if type(chunkname) ~= "string" or type(text) ~= "string" then
    error("ship.remember: chunk name and text must be strings", 2)
  end
  if chunkname == text or sub(text, 1, 1) == ESC then return end  -- nothing to learn
  local seen = remembered[chunkname]
  if not seen then
    seen = {}
    remembered[chunkname] = seen
    memory[chunkname] = {}
  end
  if not seen[text] then
    seen[text] = true
    local list = memory[chunkname]
    list[#list + 1] = { text = text }
  end
end

local function lines_of(rec)
  local lines = rec.lines
  if lines then return lines end
  lines = {}
  -- lines end as Lua's lexer ends them: "\n", "\r", "\r\n" or "\n\r" (so CR-only
  -- and CRLF files number their lines as the compiler does)
  local text, pos, n = rec.text, 1, 0
  while true do
    local nl = find(text, "[\r\n]", pos)
    n = n + 1
    if not nl then
      lines[n] = sub(text, pos)
      break
    end
    lines[n] = sub(text, pos, nl - 1)
    local c, d = sub(text, nl, nl), sub(text, nl + 1, nl + 1)
    pos = ((d == "\r" or d == "\n") and d ~= c) and nl + 2 or nl + 1
  end
  rec.lines = lines
  return lines
end

-- The contents of a file as luaL_loadfile compiles them: no UTF-8 BOM, a first
-- line starting with '#' blanked (its newline kept, so line numbers hold; not
-- in a binary chunk, which starts with ESC).
local function file_text(text)
  if sub(text, 1, 3) == BOM then text = sub(text, 4) end
  if sub(text, 1, 1) == "#" then
    local nl = find(text, "\n", 1, true)
    text = nl and sub(text, nl) or "\n"
    if sub(text, 2, 2) == ESC then text = sub(text, 2) end
  end
  return text
end

-- A file's text read from disk now, for a chunk whose text was not kept when
-- it was loaded (then kept: it is read once). Only a regular file: a pipe, a
-- terminal or a /dev/fd name would give something else, or block.
local function file_record(path)
  local rec = files[path]
  if rec then return rec end
  local fh, err = open(path, "rb")
  if not fh then return nil, format("cannot open %s", err or path) end
  if not fh:seek("end") or not fh:seek("set") then
    fh:close()
    return nil, format("its text was not kept when it was loaded, and %s cannot be read "
      .. "again (not a regular file)", path)
  end
  local text = fh:read("a")
  fh:close()
  if not text then return nil, format("cannot read %s", path) end
  rec = { text = file_text(text) }
  files[path] = rec
  return rec
end

-- The text of file `path` as it was loaded last (as a module, say), or as it is
-- on disk when no text was kept for it; or nil and why not.
local function loaded_record(path)
  local mem = memory["@" .. path]
  if mem and #mem > 0 then return mem[#mem] end
  return file_record(path)
end

-- The candidate texts for a chunk, most likely first; or nil and why none.
local function records_for(info)
  local source, list, err = info.source, {}, nil
  local c = sub(source, 1, 1)
  -- the texts loaded under that name, newest first (a worker that compiles a
  -- shipped function remembers its text under the sender's chunk name too)
  local mem = memory[source]
  if mem then
    for i = #mem, 1, -1 do list[#list + 1] = mem[i] end
  elseif c == "@" then
    list[1], err = file_record(sub(source, 2))   -- loaded before farm, or by C
  end
  if c == "@" then
    if #list == 0 then return nil, err end
  elseif c ~= "=" then
    -- load(string) without a chunk name: the name is the text itself (or a
    -- bare name given to load, which then has too few lines: see below)
    local rec = literal[source]
    if not rec then
      rec = { text = source, literal = true }
      literal[source] = rec
    end
    list[#list + 1] = rec
  end
  if #list == 0 then
    return nil, format("the text of chunk '%s' is unknown: it was not loaded through load, "
      .. "loadfile, dofile or require after farm was, nor given to farm.remember(chunkname, "
      .. "text) (farm_remember in C)%s", source,
      source == "=stdin" and "; `farm run -` keeps the text of a script read from standard input"
      or "")
  end
  return list
end

-- ---- candidate spans ---------------------------------------------------------

local function positions(line, word)
  local t = {}
  for p in gmatch(line, "()%f[%w_]" .. word .. "%f[^%w_]") do t[#t + 1] = p end
  return t
end

local function span(lines, l1, c1, l2, c2)
  if l1 == l2 then return sub(lines[l1], c1, c2) end
  local parts = { sub(lines[l1], c1) }
  for i = l1 + 1, l2 - 1 do parts[#parts + 1] = lines[i] end
  parts[#parts + 1] = sub(lines[l2], 1, c2)
  return concat(parts, "\n")
end

-- The name a header gives: `local function work`, `function M.work`,
-- `function M:work`, `work = function`, `M.work = function`; else "?".
local function header_name(funcname, before)
  if funcname ~= "" then return funcname end
  local pre, name = match(before, "^(.-)([%a_][%w_%.]*)%s*=%s*$")
  if name and not match(pre, ",%s*$") then return name end
  return "?"
end

-- "function NAME(params) ..." -> "function(params) ...", methods get `self`.
-- Returns the anonymous text and the name, or nil when this is no header.
local function anonymous(cand, before)
  local head, rest = match(cand, "^function([^(]*)%((.*)$")
  if not head or not find(head, "^[%s%w_%.:]*$") then return nil end
  local funcname = gsub(head, "%s+", "")
  local self = ""
  if find(funcname, ":", 1, true) then
    self = find(rest, "^%s*%)") and "self" or "self, "
  end
  -- keep the header's line breaks: the function must start on the same line
  local breaks = gsub(head, "[^\n]+", "")
  return "function" .. breaks .. "(" .. self .. rest, header_name(funcname, before)
end

-- Compile `text` as if it began on `line` of `chunk` and run it (it only
-- declares locals and returns a function). A private empty environment: running
-- a candidate touches nothing.
local function compile(text, line, chunk)
  local chunkfn = load(rep("\n", line - 1) .. text, chunk, "t", {})
  if not chunkfn then return nil end
  local ok, g = pcall(chunkfn)
  if ok and type(g) == "function" then return g end
  return nil
end

local function is_name(s)
  return find(s, "^[%a_][%w_]*$") ~= nil
end

-- ---- compile-time constants ------------------------------------------------
--
-- Lua 5.4 folds a `<const>` local whose value is a constant expression (`local
-- SEP <const> = ";"`, `local K <const> = 2^10`) into the code that names it: the
-- function has no upvalue for it, and a candidate text, compiled alone, reads
-- it as a global. Such a constant is rebuilt in front of the text as
-- `local NAME <const> = VALUE; `, with the very value the compiler folded in.
-- The compiler itself finds that value: the chunk's text, with the candidate's
-- body replaced by probes `function() return NAME end`, is compiled (never run)
-- and core.probe reads what each probe loads. Scopes, shadowing, declarations
-- over several lines and constants made of other constants are thus exactly
-- the compiler's.

-- a string constant no script holds
local PROBE = string.char(0) .. "farm: a probe for <const> locals" .. string.char(0)

-- A value as Lua source on one line that compiles to that very constant.
local function literal(v)
  local t = type(v)
  if t == "string" then
    -- %q continues a newline on the next line: keep the text on one line
    return (gsub(format("%q", v), "\\\n", "\\n"))
  elseif mtype(v) == "float" and v == v and v ~= huge and v ~= -huge then
    for _, fmt in ipairs({ "%.14g", "%.17g" }) do
      local s = format(fmt, v)
      if not find(s, "[.e]") then s = s .. ".0" end
      -- (a locale's decimal comma would fail the first test)
      if find(s, "^%-?%d+%.?%d*e?[-+]?%d*$") and tonumber(s) == v then return s end
    end
  elseif t ~= "number" then
    return tostring(v)   -- nil, true, false
  end
  return format("%q", v)   -- integers; floats in hexadecimal, exact
end

-- The values of `names` where candidate `cand` stands in the text: a table
-- name -> literal, or nil and the names that are no compile-time constants there.
local function const_values(env, cand, names)
  local lines = env.lines
  local head, params = match(span(lines, cand.line, cand.col, cand.last, cand.ec + 2),
    "^(function[^(]*%()([^)]*)%)")
  if not head then return nil, names end
  local probes = {}
  for i, n in ipairs(names) do probes[i] = format("function() return %s end", n) end
  local parts = {}
  for l = 1, cand.line - 1 do parts[l] = lines[l] end
  parts[#parts + 1] = sub(lines[cand.line], 1, cand.col - 1)
    .. format("%s%s) return { %q, %s } end", head, params, PROBE, concat(probes, ", "))
    .. sub(lines[cand.last], cand.ec + 3)
  for l = cand.last + 1, #lines do parts[#parts + 1] = lines[l] end
  local chunkfn = load(concat(parts, "\n"), "=(farm: <const> probe)", "t", {})
  local values, isconst
  if chunkfn then values, isconst = core.probe(chunkfn, PROBE) end
  if not values then return nil, names end
  local out, bad = {}, {}
  for i, n in ipairs(names) do
    if isconst[i] then out[n] = literal(values[i]) else bad[#bad + 1] = n end
  end
  if #bad > 0 then return nil, bad end
  return out
end

local function quoted(names)
  local q = {}
  for i, n in ipairs(names) do q[i] = "'" .. n .. "'" end
  return concat(q, ", ")
end

-- A candidate that compiled but not to f: maybe f folded `<const>` locals into
-- its code, and the candidate reads them as globals. Rebuilds them in front of
-- the text; returns the text that verifies, or nil and why not (naming them).
local function with_consts(g, cand, env)
  local missing = {}
  for _, n in ipairs(fnglobals(g)) do
    if not env.fglobals[n] then missing[#missing + 1] = n end
  end
  if #missing == 0 then return nil end
  for _, n in ipairs(missing) do
    if not is_name(n) then return nil end
  end
  local values, bad = const_values(env, cand, missing)
  if not values then
    return nil, format("it uses %s as %s, but %s no compile-time constant (<const>) "
      .. "where the text of lines %d-%d puts the function (was it changed after it was "
      .. "loaded?)", quoted(bad), #bad > 1 and "compile-time constants" or "a compile-time "
      .. "constant", #bad > 1 and "they are" or "it is", cand.line, cand.last)
  end
  local decls = {}
  for i, n in ipairs(missing) do
    decls[i] = format("local %s <const> = %s; ", n, values[n])
  end
  local text = concat(decls) .. cand.text
  g = compile(text, cand.line, env.chunk)
  if g and fnsig(g, true) == env.sig then return text end
  return nil, format("with its compile-time constants (<const>) rebuilt as %s the text of "
    .. "lines %d-%d still compiles to another function (was it changed after it was loaded?)",
    (gsub(concat(decls), "; $", "")), cand.line, cand.last)
end

-- `local a, b <const>; local c <close>; ` for f's upvalues, with their
-- attributes: a function nested in f copies them into its own bytecode.
-- (A <close> variable travels as its value, which nothing closes on the worker.)
local function upvalue_decl(f)
  local names, closes, kinds = {}, {}, upkinds(f)
  for i = 1, 255 do
    local name = getupvalue(f, i)
    if not name then break end
    if not is_name(name) then return nil end
    local kind = kinds[i]
    -- (_ENV is the chunk's own upvalue, unless it is a local with an attribute)
    if name ~= "_ENV" or kind ~= 0 then
      if kind == 2 then closes[#closes + 1] = format("local %s <close>; ", name)
      elseif kind == 1 then names[#names + 1] = name .. " <const>"
      else names[#names + 1] = name end
    end
  end
  local decl = #names > 0 and "local " .. concat(names, ", ") .. "; " or ""
  return decl .. concat(closes)
end

-- Lines with `function` keywords: linedefined, or when the keyword sits on an
-- earlier line (`local f = function` + newline + `(x)`), the nearest before it.
local function start_line(lines, first)
  for l = first, max(1, first - 3), -1 do
    if #positions(lines[l], "function") > 0 then return l end
  end
  return nil
end

-- Tries every span from a `function` on the first line to an `end` on the last.
-- Returns { text, line, name } or nil, the reason.
local function verify_function(rec, env)
  local info, lines = env.info, lines_of(rec)
  local first, last = info.linedefined, info.lastlinedefined
  if last > #lines then
    if rec.literal then
      return nil, format("the text of chunk '%s' is unknown", info.short_src)
    end
    return nil, format("the text has %d lines but the function spans lines %d-%d "
      .. "(was it changed after it was loaded?)", #lines, first, last)
  end
  local sl = start_line(lines, first)
  if not sl then return nil, format("no 'function' keyword on line %d", first) end
  local starts, ends = positions(lines[sl], "function"), positions(lines[last], "end")
  local mismatched, guess = {}, nil
  for _, sc in ipairs(starts) do
    local before = sub(lines[sl], 1, sc - 1)
    for _, ec in ipairs(ends) do
      if sl < last or ec > sc then
        local body, name = anonymous(span(lines, sl, sc, last, ec + 2), before)
        if body then
          guess = guess or name
          local cand = { text = env.prefix .. "return " .. body, line = sl, col = sc,
                         last = last, ec = ec, name = name }
          local g = compile(cand.text, sl, env.chunk)
          if g then
            if fnsig(g, true) == env.sig then return cand end
            mismatched[#mismatched + 1] = { g = g, cand = cand }
          end
        end
      end
    end
  end
  env.guess = env.guess or guess
  env.lines = lines
  local why
  for _, m in ipairs(mismatched) do
    local text, const = with_consts(m.g, m.cand, env)
    if text then
      m.cand.text = text
      return m.cand
    end
    why = why or const
  end
  if why then return nil, why end
  if #mismatched > 0 then
    return nil, format("the text on lines %d-%d compiles to another function "
      .. "(was it changed after it was loaded?)", sl, last)
  end
  return nil, format("no span from 'function' on line %d to 'end' on line %d compiles", sl, last)
end

-- A main chunk ships whole, as `return load(<its text>, <chunk>, "t")`: text
-- that, compiled and called, returns a function with f's very bytecode.
local function verify_main(rec, env)
  local text = format("return load(%q, %q, \"t\")", rec.text, env.chunk)
  local chunkfn = load(text, env.chunk, "t", { load = load })
  local ok, g = pcall(chunkfn)
  if ok and type(g) == "function" and fnsig(g, true) == env.sig then
    return { text = text, line = 1, name = "main chunk" }
  end
  return nil, "the chunk's text compiles to another function (was it changed after it was loaded?)"
end

-- ---- describe --------------------------------------------------------------

local STDNAMES = {}
for name in gmatch("assert collectgarbage dofile error getmetatable ipairs load loadfile "
  .. "next pairs pcall print rawequal rawget rawlen rawset require select setmetatable "
  .. "tonumber tostring type warn xpcall _G _VERSION coroutine debug io math os package "
  .. "string table utf8 farm", "%S+") do
  STDNAMES[name] = true
end

-- ---- what a script adds to the standard libraries --------------------------
--
-- A job may use what its script added to a standard library: `function
-- string.trim` called as `s:trim()`, `math.clamp(x, 0, 1)`, a table `math.consts`.
-- The worker's libraries are fresh, so such a field travels in the globals
-- section as "string.trim" and the worker puts it into its own library
-- (ship.install) before the job runs. Which fields a function needs is found
-- from its string constants (the keys `s:trim()`, `string.trim` and
-- `string["trim"]` compile to): a field of a library the function can reach --
-- `string` always (every string's methods), the libraries it names or holds in
-- an upvalue, all of them through `_G` -- that is not one the library had when
-- this state opened it. The same constants find the globals a job reaches as
-- `_G.NAME` (the worker's `_G` is the job's environment, see core/codec.c).
-- A function that names `require` carries the script's package.path and
-- package.cpath (when they are not the defaults) and the package.preload
-- functions its constants name, so that `require` in a job finds what it finds
-- in the script. What is added is looked up at each submit: a field defined
-- after a first submit still travels.

local LIBNAMES = { "string", "table", "math", "os", "io", "utf8", "coroutine", "debug", "package" }
local LIBS, LIBOF = {}, {}   -- name -> true; library table -> name
for _, n in ipairs(LIBNAMES) do
  LIBS[n] = true
  if type(G[n]) == "table" then LIBOF[G[n]] = n end
end

-- The libraries luaL_openlibs loads: only their C functions are "theirs" (a Lua
-- function a script stores in `string` or in _G travels by source).
local STDLIBS = { _G = true, package = true, coroutine = true, table = true, io = true,
                  os = true, string = true, math = true, utf8 = true, debug = true }

-- What the standard libraries hold when this module loads (before the script
-- under `farm run`; on a worker, before any job): their C functions, and their
-- few standard tables and values. Anything else in them a script added.
local STD = {}
for lib in next, STDLIBS do
  local t, s = lib == "_G" and G or G[lib], {}
  if type(t) == "table" then
    for k, v in next, t do
      if type(v) == "function" and (lib ~= "_G" or STDNAMES[k]) and getinfo(v, "S").what == "C" then
        s[k] = v
      end
    end
  end
  STD[lib] = s
end
for k, v in next, package do
  if type(v) ~= "function" then STD.package[k] = v end   -- loaded, preload, path, config...
end
for _, k in ipairs({ "pi", "huge", "maxinteger", "mininteger" }) do STD.math[k] = math[k] end
STD.utf8.charpattern = utf8.charpattern
for _, k in ipairs({ "stdin", "stdout", "stderr" }) do STD.io[k] = io[k] end

-- The package.path and package.cpath a fresh state starts with (a local
-- worker's too): only other paths travel.
local default_path, default_cpath
local function default_paths()
  if not default_path then default_path, default_cpath = core.default_paths() end
  return default_path, default_cpath
end

-- The string constants of f and of the functions nested in it, read from its
-- stripped dump: a constant is its type tag (short or long string: 4, 20), its
-- size plus one with the high bit set (one byte, for up to 126 bytes) and its
-- bytes. Other bytes of the dump may look like one too; they can only add a
-- name, which then is looked up and found in no library. Returns the
-- constants that are names (sorted), and those that may be module names.
local STRTAG, NUL = "[" .. char(4, 20) .. "]", char(0)
local function constants(f)
  local ok, d = pcall(dump, f, true)
  local ids, strs, seen = {}, {}, {}
  if not ok then return ids, strs end
  local pos = 1
  while true do
    local p = find(d, STRTAG, pos)
    if not p then break end
    local sz = byte(d, p + 1)
    if sz and sz >= 0x82 then
      local s = sub(d, p + 2, p + sz - 0x80)
      if #s == sz - 0x81 and not seen[s] and find(s, "^[%w_%.%-]+$") then
        seen[s] = true
        strs[#strs + 1] = s
        if find(s, "^[%a_][%w_]*$") then ids[#ids + 1] = s end
      end
    end
    pos = p + 1
  end
  sort(ids)
  sort(strs)
  return ids, strs
end

-- What describe() keeps of f to find its extras at each call, or nil when it
-- can have none.
local function scan_of(f, raw, globals)
  local ids, strs = constants(f)
  local named, uses_G, uses_require = {}, false, false
  for _, n in ipairs(raw) do
    if LIBS[n] then named[n] = true end
    if n == "_G" then uses_G = true elseif n == "require" then uses_require = true end
  end
  if #ids == 0 and not uses_require then return nil end
  local static = {}
  for _, n in ipairs(globals) do static[n] = true end
  return { ids = ids, strs = strs, named = named, uses_G = uses_G,
           uses_require = uses_require, static = static }
end

-- A value found by its name alone may be something the job never uses as a
-- global: one that could not travel is left behind rather than refused.
local function may_travel(v)
  local t = type(v)
  if t == "userdata" or t == "thread" then return false end
  if t == "function" and iscfunc(v) then return ship.names()[v] ~= nil end
  return true
end

local function add(out, name)
  out = out or {}
  out[#out + 1] = name
  return out
end

-- The names of the library fields and `_G` globals f needs now, or nil.
-- global_env: f's _ENV is this state's global table (nil: not known yet).
local function extras_of(f, s, global_env)
  local out
  local ids = s.ids
  if #ids > 0 then
    local held                      -- libraries f holds in upvalues (`local M = math`)
    local globals = G               -- where its globals are: G, or the environment
    for i = 1, 255 do               -- a shipped function was given here (a job's job)
      local name, v = getupvalue(f, i)
      if not name then break end
      local lib = type(v) == "table" and LIBOF[v]
      if lib then
        held = held or {}
        held[lib] = true
      end
      if name == "_ENV" and global_env == nil then
        global_env = rawequal(v, G) or core.is_env(v)
        if global_env then globals = v end
      end
    end
    local all = s.uses_G and global_env
    for _, lib in ipairs(LIBNAMES) do
      local t = G[lib]
      if type(t) == "table" and (all or lib == "string" or s.named[lib] or (held and held[lib])) then
        local std = STD[lib]
        for i = 1, #ids do
          local k = ids[i]
          local v = rawget(t, k)
          if v ~= nil and std[k] == nil and may_travel(v) then out = add(out, lib .. "." .. k) end
        end
      end
    end
    if all then                     -- _G.helper, _G.CONFIG
      local static = s.static
      for i = 1, #ids do
        local k = ids[i]
        if not STDNAMES[k] and not static[k] then
          local v = rawget(globals, k)
          if v ~= nil and may_travel(v) then out = add(out, k) end
        end
      end
    end
  end
  if s.uses_require then
    local dpath, dcpath = default_paths()
    if type(package.path) == "string" and package.path ~= dpath then out = add(out, "package.path") end
    if type(package.cpath) == "string" and package.cpath ~= dcpath then out = add(out, "package.cpath") end
    local pre = rawget(package, "preload")
    if type(pre) == "table" then
      local strs = s.strs
      for i = 1, #strs do
        local v = rawget(pre, strs[i])
        if type(v) == "function" and not iscfunc(v) then out = add(out, "package.preload." .. strs[i]) end
      end
    end
  end
  return out
end

-- d itself, or (when f needs extras now) a copy of d whose globals add them;
-- the copy is kept for the next call with the same extras.
local function with_extras(f, d)
  local s = d.scan
  local global_env               -- (nil: not known yet)
  if d.bare then global_env = false end
  local out = extras_of(f, s, global_env)
  if not out then return d end
  local key = concat(out, NUL)
  local memo = d.derived
  if memo and memo.key == key then return memo.desc end
  local globals = {}
  for i, n in ipairs(d.globals) do globals[i] = n end
  for _, n in ipairs(out) do globals[#globals + 1] = n end
  local x = { chunk = d.chunk, line = d.line, text = d.text, name = d.name, where = d.where,
              globals = globals }
  d.derived = { key = key, desc = x }
  return x
end

local byfunc = setmetatable({}, { __mode = "k" })  -- closure -> description
local byproto = {}  -- source -> fnsig(f, true) -> { desc =, bare = }
-- A new closure of a function expression already described (a function
-- written in the call: `farm.submit(function(x) ... end, i)` in a loop) finds
-- its entry by its prototype (core.protoid, exact and cheap), not by fnsig
-- (a lua_dump): what describe() says of f is its prototype's entry, with
-- only env_is_global and the extras read from f's own upvalues.
local protoid = core.protoid
local byid = setmetatable({}, { __mode = "v" })      -- prototype id -> a closure of it
local entry_of = setmetatable({}, { __mode = "k" })  -- that closure -> its entry

-- Distinct reasons, the first few of them: one per text tried.
local function summary(reasons)
  local out, seen = {}, {}
  for _, r in ipairs(reasons) do
    if not seen[r] then
      seen[r] = true
      out[#out + 1] = r
    end
  end
  if #out > 3 then
    local more = #out - 3
    out = { out[1], out[2], out[3], format("and %d other texts of that chunk", more) }
  end
  return concat(out, "; ")
end

local function fail(name, where, why)
  error(format("cannot ship function '%s' (%s): no source text for it verifies (%s)",
    name, where, why), 0)
end

-- Is f's _ENV upvalue the global table of this state?
-- _ENV is the global table, or the environment a shipped function was given
-- here (which travels as the global table again, with the globals it brought)
local function env_is_global(f)
  for i = 1, 255 do
    local name, v = getupvalue(f, i)
    if not name then return false end
    if name == "_ENV" then return rawequal(v, G) or core.is_env(v) end
  end
  return false
end

local function analyse(f, info, sig)
  local where = format("%s:%d", info.short_src, info.linedefined)
  local chunk = info.source
  if not find(chunk, "^[@=]") and not memory[chunk] then chunk = "=" .. info.short_src end
  local raw = fnglobals(f)
  local env = { info = info, sig = sig, chunk = chunk, fglobals = {} }
  for _, n in ipairs(raw) do env.fglobals[n] = true end
  local found, reasons = nil, {}
  local recs, why = records_for(info)
  if not recs then reasons[1] = why end
  env.prefix = upvalue_decl(f)
  if not env.prefix then
    recs, reasons[1] = nil, "its upvalues have no names (stripped bytecode)"
  end
  for _, rec in ipairs(recs or {}) do
    if info.what == "main" then found, why = verify_main(rec, env)
    else found, why = verify_function(rec, env) end
    if found then break end
    reasons[#reasons + 1] = why
  end
  if not found then fail(env.guess or "?", where, summary(reasons)) end
  local globals = {}
  for _, n in ipairs(raw) do
    if not STDNAMES[n] then globals[#globals + 1] = n end
  end
  local scan = scan_of(f, raw, globals)
  -- A text that names _ENV or _G may set a global under a computed name
  -- (`_ENV[k] = v`), which no scan of its constants sees: such a function must
  -- get a fresh environment for each job, as one that names its globals does,
  -- not be kept on a worker whose one closure (and environment) every job
  -- would share. (A mention in a string or comment only costs that keeping.)
  local env_value = find(found.text, "%f[%w_]_ENV%f[^%w_]") ~= nil
    or find(found.text, "%f[%w_]_G%f[^%w_]") ~= nil
  local desc = { chunk = chunk, line = found.line, text = found.text, name = found.name,
                 where = format("%s:%d", info.short_src, found.line), globals = globals,
                 scan = scan, env_value = env_value }
  local entry = { desc = desc }
  if #globals > 0 then
    entry.bare = { chunk = chunk, line = desc.line, text = desc.text, name = desc.name,
                   where = desc.where, globals = {}, scan = scan, bare = true,
                   env_value = env_value }
  end
  return entry
end

ship.protoid = protoid

--- ship.describe(f) -> { chunk, line, text, name, where, globals }; raises when
--- f's text cannot be found or does not verify. globals include the library
--- fields ("string.trim") and `_G` globals f needs as things stand now.
function ship.describe(f)
  local d = byfunc[f]
  if d then
    if d.scan then return with_extras(f, d) end
    return d
  end
  if type(f) ~= "function" then
    error(format("ship.describe: function expected, got %s", type(f)), 2)
  end
  local id = protoid(f)
  local same = id and byid[id]   -- (alive: so id is still its prototype's)
  local entry = same and entry_of[same]
  if not entry then
    local info = getinfo(f, "S")
    if info.what == "C" then
      error("cannot ship a C function by source: only functions of loaded modules "
        .. "travel (by name)", 2)
    end
    local sig = fnsig(f, true)
    local per = byproto[info.source]
    entry = per and per[sig]
    if not entry then
      entry = analyse(f, info, sig)
      if not per then
        per = {}
        byproto[info.source] = per
      end
      per[sig] = entry
    end
    if id then
      byid[id] = f
      entry_of[f] = entry
    end
  end
  d = entry.desc
  if entry.bare and not env_is_global(f) then d = entry.bare end
  byfunc[f] = d
  if d.scan then return with_extras(f, d) end
  return d
end

-- ---- remembering loaded chunks ----------------------------------------------

local wrappers = setmetatable({}, { __mode = "k" })

-- After load(text, name, ...) returned `...`: remember the text if it compiled.
local function remember_loaded(text, name, ...)
  if (...) and type(name) == "string" and type(text) == "string" then
    ship.remember(name, text)
  end
  return ...
end

-- The same for a reader function, whose pieces were collected as load read them.
local function remember_read(pieces, name, ...)
  if (...) and type(name) == "string" then ship.remember(name, concat(pieces)) end
  return ...
end

-- (the original is called `load` here so that its argument errors name `load`)
local function wrap_load(load, reader_name)
  if type(load) ~= "function" or wrappers[load] then return load end
  local function hooked(chunk, ...)
    local name = (...)
    if type(chunk) ~= "function" then
      return remember_loaded(chunk, name, load(chunk, ...))
    end
    local pieces = {}
    local function collect()
      local p = chunk()
      if type(p) == "string" or type(p) == "number" then pieces[#pieces + 1] = tostring(p) end
      return p
    end
    if name == nil then name = reader_name end
    return remember_read(pieces, name, load(collect, ...))
  end
  wrappers[hooked] = true
  return hooked
end

-- loadfile, dofile and require's searcher for Lua files read the file here,
-- once, and compile what they read with load: the text kept is the text
-- compiled. They behave as the originals do (the same chunk names, modes,
-- environments and messages); when the file cannot be opened or read, the
-- original runs and says why in its own words.

local stdin, searchpath = io.stdin, package.searchpath

local function pass(...) return ... end   -- (a call that is no tail call keeps its name)

-- The error luaL_checkstring gives, where the caller of the wrapper called it.
local function argerror(n, fname, v)
  local mt = debug.getmetatable(v)
  local tn = type(mt) == "table" and rawget(mt, "__name")
  error(format("bad argument #%d to '%s' (string expected, got %s)", n, fname,
    type(tn) == "string" and tn or type(v)), 3)
end

-- The text of a file (filename nil: standard input) as luaL_loadfile compiles
-- it, or nil and why not.
local function read_text(filename)
  local fh, err = stdin, nil
  if filename ~= nil then fh, err = open(filename, "rb") end
  if not fh then return nil, err end
  local ok, text, rerr = pcall(fh.read, fh, "a")
  if filename ~= nil then fh:close() end
  if not ok or type(text) ~= "string" then
    return nil, format("cannot read %s: %s", filename or "stdin", tostring(ok and rerr or text))
  end
  return file_text(text)
end

local function wrap_loadfile(loadfile)
  if type(loadfile) ~= "function" or wrappers[loadfile] then return loadfile end
  local function hooked(filename, ...)
    local mode = ...
    if type(filename) == "number" then filename = tostring(filename) end
    if filename ~= nil and type(filename) ~= "string" then argerror(1, "loadfile", filename) end
    if mode ~= nil and type(mode) ~= "string" and type(mode) ~= "number" then
      argerror(2, "loadfile", mode)
    end
    local text, err = read_text(filename)
    if not text then
      if filename == nil then return nil, err end
      return pass(loadfile(filename, ...))
    end
    local name = filename == nil and "=stdin" or "@" .. filename
    return remember_loaded(text, name, load(text, name, ...))
  end
  wrappers[hooked] = true
  return hooked
end

local function wrap_dofile(dofile, loadfile)
  if type(dofile) ~= "function" or wrappers[dofile] or not wrappers[loadfile] then return dofile end
  local function hooked(filename)
    local t = type(filename)
    if filename ~= nil and t ~= "string" and t ~= "number" then argerror(1, "dofile", filename) end
    local chunk, err = loadfile(filename)
    if not chunk then error(err, 0) end
    return chunk()
  end
  wrappers[hooked] = true
  return hooked
end

-- package.searchers[2]: returns the compiled chunk and its file, as the
-- original does (require calls it with both)
local function wrap_searcher(searcher)
  if type(searcher) ~= "function" or wrappers[searcher] or not iscfunc(searcher) then
    return searcher
  end
  local function hooked(name, ...)
    local path = package.path
    if type(name) ~= "string" or type(path) ~= "string" then return pass(searcher(name, ...)) end
    local file = searchpath(name, path)
    local text = file and read_text(file)
    local chunkname = file and "@" .. file
    local chunk = text and load(text, chunkname)
    if not chunk then return pass(searcher(name, ...)) end   -- its own message
    ship.remember(chunkname, text)
    return chunk, file
  end
  wrappers[hooked] = true
  return hooked
end

-- The files running when farm is loaded (under plain lua: the script that
-- requires farm, loaded before it), but for farm's own embedded modules.
local function keep_running_files()
  local own = match(getinfo(1, "S").source, "^(@.*/)[^/]*$")
  for level = 2, 200 do
    local info = getinfo(level, "S")
    if not info then break end
    local src = info.source
    local base = own and sub(src, 1, #own) == own and match(sub(src, #own + 1), "^([%w_]+)%.lua$")
    local embedded = base and (base == "farm" or package.preload["farm." .. base] ~= nil)
    if sub(src, 1, 1) == "@" and not memory[src] and not embedded then
      local rec = file_record(sub(src, 2))
      if rec then ship.remember(src, rec.text) end
    end
  end
end

--- ship.hook([G]): from now on, every chunk G.load (and G.loadstring, if any),
--- G.loadfile, G.dofile and require (package.searchers[2], the searcher for
--- Lua files) compile is remembered under its chunk name, with the text they
--- compiled. The files running now are read and kept too. The wrappers travel
--- by name, as the functions they wrap did ("_G.load"); so do the originals,
--- which something may hold from before (a test framework's saved globals), as
--- ship.unhooked_load, ship.unhooked_loadfile and ship.unhooked_dofile.
function ship.hook(g)
  g = g or G
  if type(g) ~= "table" then error("ship.hook: table expected", 2) end
  local std = rawequal(g, G) and STD._G or {}
  for _, k in ipairs({ "load", "loadfile", "dofile" }) do
    local v = std[k]
    if v ~= nil and rawequal(v, g[k]) and iscfunc(v) and ship["unhooked_" .. k] == nil then
      ship["unhooked_" .. k] = v
    end
  end
  local function hook(key, wrapped)
    if std[key] ~= nil and rawequal(std[key], g[key]) then std[key] = wrapped end
    g[key] = wrapped
  end
  hook("load", wrap_load(g.load, "=(load)"))
  if g.loadstring then hook("loadstring", wrap_load(g.loadstring, nil)) end
  local lf = wrap_loadfile(g.loadfile)
  hook("loadfile", lf)
  hook("dofile", wrap_dofile(g.dofile, lf))
  local searchers = type(package) == "table" and rawget(package, "searchers")
  if type(searchers) == "table" then searchers[2] = wrap_searcher(searchers[2]) end
  keep_running_files()
end

-- ---- module names ------------------------------------------------------------

local snapshot, snapshot_n, names_map = {}, -1, nil
local NAMES_MT = {}   -- its __module is set below

local function loaded_changed(loaded)
  local n = 0
  for k, v in next, loaded do
    if not rawequal(snapshot[k], v) then return true end
    n = n + 1
  end
  return n ~= snapshot_n
end

local function better(old, new)
  return #new < #old or (#new == #old and new < old)
end

-- A standard library's own fields are named; what a script added to it is not
-- (a worker's library has no such field: it travels as a value, see above).
local function field_wanted(modname, key, v)
  local t = type(v)
  if modname == "_G" then
    return (t == "function" and rawequal(STD._G[key], v)) or (t == "table" and STDLIBS[key] == true)
  elseif STDLIBS[modname] then
    return (t == "function" or t == "table") and rawequal(STD[modname][key], v)
  end
  return t == "function" or t == "table"
end

local function build_names(loaded)
  local map, mods, fieldname = {}, {}, {}
  snapshot, snapshot_n = {}, 0
  for k, v in next, loaded do
    snapshot[k], snapshot_n = v, snapshot_n + 1
    if type(k) == "string" and (type(v) == "table" or type(v) == "function") then
      mods[#mods + 1] = k
    end
  end
  sort(mods)
  for _, m in ipairs(mods) do
    local v = loaded[m]
    if map[v] == nil or better(map[v], m) then map[v] = m end
  end
  for _, m in ipairs(mods) do
    local mod = loaded[m]
    if type(mod) == "table" then
      for k, v in next, mod do
        if type(k) == "string" and not find(k, ".", 1, true) and field_wanted(m, k, v) then
          local qn = m .. "." .. k
          local old = map[v]
          -- a module of that very name would shadow the field in resolve()
          if loaded[qn] == nil and (old == nil or (fieldname[v] and better(old, qn))) then
            map[v], fieldname[v] = qn, true
          end
        end
      end
    end
  end
  return setmetatable(map, NAMES_MT)
end

--- ship.names() -> { [value] = "qualified.name" } for the modules in
--- package.loaded and their function and table fields. Its metatable's
--- __module is ship.module_info, which the encoder asks about the module of
--- each name it sends (core/codec.h: MODULE).
function ship.names()
  local loaded = package.loaded
  if not names_map or loaded_changed(loaded) then names_map = build_names(loaded) end
  return names_map
end

--- ship.is_constant(f) -> is f the same function package every time it is
--- submitted? True when f travels by name (math.sqrt), or when its upvalues are
--- only the global table (as _ENV) and values that travel by name (a module:
--- `local inc = require "mymod.inc"`), and it names no global that travels nor
--- _ENV or _G (describe's env_value): workers then keep it by hash. The Lua
--- module (lua/farm.lua) and the C API (core/capi.c) both ask this one.
function ship.is_constant(f)
  if ship.names()[f] then return true end
  local d = ship.describe(f)
  if #d.globals > 0 or d.env_value then return false end
  local named
  for i = 1, huge do
    local name, v = getupvalue(f, i)
    if name == nil then return true end
    if not (name == "_ENV" and rawequal(v, G)) then
      named = named or ship.names()
      if v == nil or named[v] == nil then return false end
    end
  end
end

-- ---- classes -------------------------------------------------------------------
--
-- A table whose metatable is a global of the script or a field of one (`Dog`,
-- `animals.Cat`) travels with that name (core/codec.h: CLASS) and its value; a
-- worker gives the name back with its results, and the client's own class is
-- the metatable of what comes back. (A metatable in package.loaded travels by
-- its name already.) The names come from a look over the globals and one level
-- of their fields (not lists, not modules, not the standard libraries, at most
-- CLASS_FIELDS fields of each), kept while each name still leads to its table.
-- A metatable not found makes a new look, at most once per block encoded, and
-- once only for that metatable while the globals stay as they were.

local CLASS_FIELDS = 256
local class_map = setmetatable({}, { __mode = "k" })   -- table -> name
local class_missed = setmetatable({}, { __mode = "k" }) -- not found by the last look
local class_block = setmetatable({}, { __mode = "k" })  -- the block looked for last
local class_globals, class_nglobals = {}, 0              -- _G as the last look saw it

-- The table called `name` (dotted) among this state's globals, read raw.
local function class_at(name)
  local v = G
  for part in gmatch(name, "[^.]+") do
    if type(v) ~= "table" then return nil end
    v = rawget(v, part)
  end
  return v
end

-- Only table-valued globals can be or hold classes: a number or string global
-- changing on every submit (a pp-style counter) must not make us look again.
local function globals_changed()
  local n = 0
  for k, v in next, G do
    if type(v) == "table" then
      if not rawequal(class_globals[k], v) then return true end
      n = n + 1
    end
  end
  return n ~= class_nglobals
end

local function scan_classes()
  local map = setmetatable({}, { __mode = "k" })
  local named = names_map or {}
  local seen, nseen = {}, 0
  local function put(v, name)
    local old = map[v]
    if old == nil or better(old, name) then map[v] = name end
  end
  for k, v in next, G do
    if type(v) == "table" then
      seen[k], nseen = v, nseen + 1
      if type(k) == "string" and is_name(k) then put(v, k) end
    end
  end
  for k, t in next, G do
    if type(k) == "string" and type(t) == "table" and is_name(k) and not STDLIBS[k]
        and t ~= G and named[t] == nil and rawget(t, 1) == nil then
      local n = 0
      for k2, v2 in next, t do
        n = n + 1
        if n > CLASS_FIELDS then break end
        if type(v2) == "table" and type(k2) == "string" and is_name(k2) then
          put(v2, k .. "." .. k2)
        end
      end
    end
  end
  class_globals, class_nglobals = seen, nseen
  return map
end

--- ship.classname(mt [, block]) -> "Dog" | "animals.Cat" | nil: the name mt
--- has among the globals (and their fields) now. The encoder asks it (the
--- names table's __class) once per metatable and block, with a table that
--- stands for the block.
function ship.classname(mt, block)
  local name = class_map[mt]
  if name and rawequal(class_at(name), mt) then return name end
  if block ~= nil and class_block[block] then return nil end   -- looked in this block already
  if class_missed[mt] and not globals_changed() then return nil end
  if block ~= nil then class_block = setmetatable({ [block] = true }, { __mode = "k" }) end
  class_map = scan_classes()
  class_missed = setmetatable({}, { __mode = "k" })
  name = class_map[mt]
  if not name then class_missed[mt] = true end
  return name
end
NAMES_MT.__class = ship.classname

local function split(name)
  local parts = {}
  for p in gmatch(name, "[^.]+") do parts[#parts + 1] = p end
  return parts
end

-- raw lookups: names() names raw fields only, and a name from another host must
-- not run a module's __index (a lazy loader could require what we never loaded)
local function index_rest(v, parts, from)
  for i = from, #parts do
    if type(v) ~= "table" then return nil end
    v = rawget(v, parts[i])
  end
  return v
end

-- The value called `name` among what this state has loaded: package.loaded[name],
-- or a field path under the longest loaded module that prefixes it; nil if none.
local function find_loaded(name)
  local loaded = package.loaded
  local v = loaded[name]
  if v ~= nil then return v end
  local parts = split(name)
  for i = #parts - 1, 1, -1 do
    local m = loaded[concat(parts, ".", 1, i)]
    if m ~= nil then return index_rest(m, parts, i + 1) end
  end
  return nil
end

-- What a value from another host may not refer to, though this state has it
-- loaded: the global table, and the libraries (or fields of them) that reach
-- outside the Lua state or into its innards. A node's function gets an
-- environment without them (core/codec.h); an upvalue must not bring them back.
local UNTRUSTED_NO = { _G = true, package = true, debug = true, os = true, io = true,
                       ["string.dump"] = true }

--- ship.resolve_loaded(name) -> the value names() called `name`, found in what
--- this state has loaded already (never a require: for values from another host)
function ship.resolve_loaded(name)
  if type(name) ~= "string" then
    error(format("ship.resolve_loaded: module name expected, got %s", type(name)), 2)
  end
  if UNTRUSTED_NO[name] or UNTRUSTED_NO[name:match("^[^.]*")] then
    error(format("a result refers to '%s', which a value from another host may not "
      .. "(the global table, package, debug, os and io stay this side's)", name), 2)
  end
  local v = find_loaded(name)
  if v ~= nil then return v end
  error(format("a result refers to module '%s', which this client has not loaded (it is not required here for another host)", name), 2)
end

-- ---- modules a worker loads ----------------------------------------------------
--
-- A module value travels by its name and the worker requires it: it gets the
-- module as its own require makes it, fresh, never the state the script gave it
-- at run time. For that require to find what the script's found, the first
-- reference to a module in a block says how (core/codec.h: MODULE): the
-- script's package.path and package.cpath when they are not the defaults, and
-- the module's own source -- its Lua file's text, or its package.preload
-- function by source -- for a worker that still cannot find it by name (a node
-- whose disk has no such file). A worker puts the script's paths in front of
-- its own, tries require, and only then loads the source it was sent, as
-- package.preload would. A module it loaded so is sent on from here by the same
-- text (a job's own jobs).

local NOMODULE = { farm = true, ["farm.core"] = true, ["farm.ship"] = true,
                   ["farm.kernels"] = true }
local modinfo = {}   -- module name -> { value =, path =, cpath =, info = } (the last answer)
local shipped = {}   -- module name -> { file =, text = }: loaded here from a text sent

-- The module a qualified name is in: the longest prefix of it that is loaded.
local function module_of(qname)
  local loaded = package.loaded
  if loaded[qname] ~= nil then return qname end
  local parts = split(qname)
  for i = #parts - 1, 1, -1 do
    local m = concat(parts, ".", 1, i)
    if loaded[m] ~= nil then return m end
  end
end

-- A package.preload function travels when it can be described and does not
-- hold the module itself (whose reference would be resolved, inside the very
-- record that says how to load it, before it is loaded).
local function preload_travels(fn, value)
  if iscfunc(fn) or not pcall(ship.describe, fn) then return false end
  for i = 1, 255 do
    local name, v = getupvalue(fn, i)
    if not name then return true end
    if rawequal(v, value) then return false end
  end
  return true
end

--- ship.module_info(qualified name) -> nil, or { module =, path =, cpath =,
--- file =, text = | preload = }: what a worker may need to load the module of
--- that name (standard libraries and farm itself need nothing).
function ship.module_info(qname)
  if type(qname) ~= "string" then return nil end
  local m = module_of(qname)
  if not m or STDLIBS[m] or NOMODULE[m] then return nil end
  local value, path, cpath = package.loaded[m], package.path, package.cpath
  local c = modinfo[m]
  if c and rawequal(c.value, value) and c.path == path and c.cpath == cpath then return c.info end
  local dpath, dcpath = default_paths()
  local info, any = { module = m }, false
  if type(path) == "string" and path ~= dpath then info.path, any = path, true end
  if type(cpath) == "string" and cpath ~= dcpath then info.cpath, any = cpath, true end
  local pre = type(package.preload) == "table" and rawget(package.preload, m)
  if type(pre) == "function" and preload_travels(pre, value) then
    info.preload, any = pre, true
  elseif not pre then
    -- (a file the default path finds too, any worker of this machine finds:
    -- only a file found through paths the script set travels as text)
    local ok, file = pcall(package.searchpath, m, path)
    local rec = ok and file and loaded_record(file)
    local dok, dfile = pcall(package.searchpath, m, dpath)
    if rec and not (dok and dfile == file) then
      info.file, info.text, any = file, rec.text, true
    elseif not rec and shipped[m] then
      info.file, info.text, any = shipped[m].file, shipped[m].text, true
    end
  end
  if not any then info = nil end
  modinfo[m] = { value = value, path = path, cpath = cpath, info = info }
  return info
end
NAMES_MT.__module = ship.module_info

-- The script's paths first, then those of this state's own default not in them.
local function merged(theirs, own)
  local out, seen = {}, {}
  for _, list in ipairs({ theirs, own }) do
    for p in gmatch(list, "[^;]+") do
      if not seen[p] then
        seen[p] = true
        out[#out + 1] = p
      end
    end
  end
  return concat(out, ";")
end

local function use_path(key, theirs)
  if type(theirs) ~= "string" then return end
  local dpath, dcpath = default_paths()
  local p = merged(theirs, key == "path" and dpath or dcpath)
  if package[key] ~= p then package[key] = p end
end

-- The loader for package.preload that a MODULE's info gives, or nil.
local function sent_loader(m, info)
  if type(info.preload) == "function" then return info.preload end
  if type(info.text) ~= "string" then return nil end
  local file = type(info.file) == "string" and info.file or m
  local chunkname, text = "@" .. file, info.text
  return function()
    local chunk, err = load(text, chunkname, "t")
    if not chunk then error(err, 0) end
    ship.remember(chunkname, text)
    shipped[m] = { file = file, text = text }
    return chunk(m, file)
  end
end

-- The value called name in module info.module, loaded as info says; or nil and
-- why not (nil: it is not there).
local function load_module(name, info)
  local m = info.module
  if sub(name, 1, #m) ~= m or (#name > #m and sub(name, #m + 1, #m + 1) ~= ".") then return nil end
  use_path("path", info.path)
  use_path("cpath", info.cpath)
  local loaded = package.loaded
  if loaded[m] == nil then
    local ok, err = pcall(require, m)
    if not ok then
      err = tostring(err)
      local loader = find(err, "module '" .. m .. "' not found", 1, true) and sent_loader(m, info)
      if not loader then
        if find(err, "module '" .. m .. "' not found", 1, true) then return nil end
        return nil, match(err, "^[^\n]*")
      end
      package.preload[m] = loader
      ok, err = pcall(require, m)
      if not ok then return nil, match(tostring(err), "^[^\n]*") end
    end
  end
  if #name == #m then return loaded[m] end
  local mod = loaded[m]
  return type(mod) == "table" and mod[sub(name, #m + 2)] or nil
end

--- ship.resolve(name [, info]) -> the value names() called `name`, found in
--- package.loaded or required here (as info says: ship.module_info); raises
--- when this state does not have it.
function ship.resolve(name, info)
  if type(name) ~= "string" then
    error(format("ship.resolve: module name expected, got %s", type(name)), 2)
  end
  local v = find_loaded(name)
  if v ~= nil then return v end
  local parts = split(name)
  local why
  if type(info) == "table" and type(info.module) == "string" then
    v, why = load_module(name, info)
    if v ~= nil then return v end
  end
  for i = #parts, 1, -1 do
    local modname = concat(parts, ".", 1, i)
    local ok, m = pcall(require, modname)
    if ok then
      v = index_rest(m, parts, i + 1)
      if v ~= nil then return v end
    elseif not why and not find(tostring(m), "module '" .. modname .. "' not found", 1, true) then
      why = match(tostring(m), "^[^\n]*")
    end
  end
  error(format("module '%s' is not available on this worker%s", name,
    why and " (" .. why .. ")" or ""), 2)
end

--- ship.install("lib.key", value): on a worker, a field the script added to a
--- standard library (its own fields stay); package.path and package.cpath go in
--- front of this state's defaults; "package.preload.NAME" is a loader for a
--- module not loaded here yet.
function ship.install(name, value)
  if type(name) ~= "string" then return end
  local lib, key = match(name, "^([%a_][%w_]*)%.(.+)$")
  if not lib or not LIBS[lib] then return end
  if lib == "package" then
    if key == "path" or key == "cpath" then return use_path(key, value) end
    local m = match(key, "^preload%.(.+)$")
    if m then
      local pre = rawget(package, "preload")
      if type(pre) == "table" and package.loaded[m] == nil then rawset(pre, m, value) end
      return
    end
  end
  local t = G[lib]
  if type(t) ~= "table" then t = package.loaded[lib] end
  if type(t) == "table" and STD[lib][key] == nil then rawset(t, key, value) end
end

return ship
