-- ship_spec.lua -- source shipping: core.fnsig/core.globals (core/dump.c) and
-- lua/ship.lua (describe, chunk memory, names, resolve).
--
--   make && LUA_CPATH='build/?.so' busted --lua=lua5.4 spec/ship_spec.lua
--
-- Functions under test come from fixture files or from load(), never from this
-- file: busted runs a spec in its own environment, not in the global table.

require "farm"
local ship = require "farm.ship"
local core = require "farm.core"

local G = debug.getregistry()[2]       -- the real global table
local FIXTURES = "spec/fixtures/"

local function upvalue(f, name)
  for i = 1, 255 do
    local n, v = debug.getupvalue(f, i)
    if n == nil then return nil end
    if n == name then return v end
  end
end

-- Compile f's description the way a worker does: as if on line d.line of
-- d.chunk, in text mode, in `env`; then restore upvalues by name (f itself
-- stands for the rebuilt function, as the codec's shared references do).
local function rebuild(f, env)
  local d = ship.describe(f)
  local chunk = assert(load(string.rep("\n", d.line - 1) .. d.text, d.chunk, "t", env or G))
  local g = chunk()
  assert.is_function(g)
  for i = 1, 255 do
    local n = debug.getupvalue(g, i)
    if n == nil then break end
    if n ~= "_ENV" then
      local v = upvalue(f, n)
      if rawequal(v, f) then v = g end
      debug.setupvalue(g, i, v)
    end
  end
  assert.are.equal(core.fnsig(f), core.fnsig(g))
  return g, d
end

local function describe_error(f, instance)
  local ok, err = pcall((instance or ship).describe, f)
  assert.is_false(ok)
  return tostring(err)
end

local function sorted(t)
  local c = { table.unpack(t) }
  table.sort(c)
  return c
end

ship.hook(G)   -- farm does this already; hooking twice is harmless

local J = dofile(FIXTURES .. "jobs.lua")

describe("core.fnsig", function()
  it("is equal for the same text compiled in different scopes", function()
    local a = load("local x, y = 1, 2\nreturn function(z) return x + y + z end")()
    local b = load("local q; local y, x\nreturn function(z) return x + y + z end")()
    assert.are.equal(core.fnsig(a), core.fnsig(b))
    assert.are.equal(core.fnsig(a, true), core.fnsig(b, true))
  end)

  it("tells different code apart, and full signatures tell names apart", function()
    local a = load("local x\nreturn function() return x end")()
    local b = load("local x\nreturn function() return x + 1 end")()
    local c = load("local y\nreturn function() return y end")()
    assert.are_not.equal(core.fnsig(a), core.fnsig(b))
    assert.are.equal(core.fnsig(a), core.fnsig(c))
    assert.are_not.equal(core.fnsig(a, true), core.fnsig(c, true))
  end)

  it("refuses C functions and non-functions", function()
    assert.has_error(function() core.fnsig(print) end)
    assert.has_error(function() core.fnsig(42) end)
    assert.has_error(function() core.globals(print) end)
  end)
end)

describe("core.globals", function()
  it("finds globals read and written in a function and its nested functions", function()
    local f = load("local up = 1\nreturn function(a) x = y + up; return function() return z, x end end")()
    assert.are.same({ "x", "y", "z" }, sorted(core.globals(f)))
  end)

  it("does not count names read through a local _ENV", function()
    local f = load("return function() local _ENV = {} return function() return hidden end end")()
    assert.are.same({}, core.globals(f))
  end)

  it("finds globals with long names and beyond constant 255", function()
    local parts = {}
    for i = 1, 300 do parts[#parts + 1] = ("t[%d] = 's%d'"):format(i, i) end
    local long = string.rep("g", 50)
    local f = load("return function(t) " .. table.concat(parts, "; ")
      .. "; t.x = late_read; late_write = 1; " .. long .. " = " .. long .. " end")()
    assert.are.same(sorted({ "late_read", "late_write", long }), sorted(core.globals(f)))
  end)
end)

describe("ship.describe", function()
  it("ships a plain local function with its upvalue", function()
    local g, d = rebuild(J.work)
    assert.are.equal("work", d.name)
    assert.are.equal("@" .. FIXTURES .. "jobs.lua", d.chunk)
    assert.are.equal(FIXTURES .. "jobs.lua:" .. d.line, d.where)
    assert.are.equal(debug.getinfo(J.work, "S").linedefined, d.line)
    assert.are.equal("local k; return function(x)\n  return x * k\nend", d.text)
    assert.are.equal(15, g(3))
  end)

  it("ships a global function", function()
    local g, d = rebuild(G.global_job)
    assert.are.equal("global_job", d.name)
    assert.are.equal(101, g(1))
  end)

  it("tells two functions on one line apart", function()
    local g1, d1 = rebuild(J.one)
    local g2, d2 = rebuild(J.two)
    assert.are.equal(d1.line, d2.line)
    assert.are.equal("return function(x) return x + 1 end", d1.text)
    assert.are.equal("return function(x) return x + 2 end", d2.text)
    assert.are.equal(11, g1(10))
    assert.are.equal(12, g2(10))
  end)

  it("ships a recursive local function", function()
    local g, d = rebuild(J.fact)
    assert.are.equal("fact", d.name)
    assert.matches("^local fact; return function%(n%)", d.text)
    assert.are.equal(120, g(5))
  end)

  it("ships the inner function of a closure, over several lines and on one line", function()
    local inner = J.adder(3)
    local g, d = rebuild(inner)
    assert.are.equal("local n; return function(x)\n    return x + n\n  end", d.text)
    assert.are.equal(13, g(10))
    local g2, d2 = rebuild(J.scaler(4))
    assert.are.equal("local n; return function(x) return x * n end", d2.text)
    assert.are.equal(40, g2(10))
  end)

  it("ships methods with self and dotted functions", function()
    local get, d = rebuild(J.M.get)
    assert.are.equal("M:get", d.name)
    assert.matches("^return function%(self, x%)", d.text)
    assert.are.equal(15, get(J.M, 5))
    local none, d2 = rebuild(J.M.none)
    assert.matches("^return function%(self%)", d2.text)
    assert.are.equal(10, none(J.M))
    local twice, d3 = rebuild(J.M.twice)
    assert.are.equal("M.twice", d3.name)
    assert.are.equal("return function(x) return 2 * x end", d3.text)
    assert.are.equal(8, twice(4))
  end)

  it("rebuilds <const> literals the function folded in", function()
    local g, d = rebuild(J.uses_const)
    assert.matches("local N <const> = 7; ", d.text, 1, true)
    assert.matches('local LABEL <const> = "n="; ', d.text, 1, true)
    local a, b = g(3)
    assert.are.equal(21, a)
    assert.are.equal("n=3", b)
  end)

  it("analyses a prototype once for all its closures", function()
    local d1 = ship.describe(J.adder(1))
    local d2 = ship.describe(J.adder(2))
    assert.are.equal(d1, d2)
  end)

  it("ships a function from load(string) without a chunk name", function()
    local f = load("local base = 7\nreturn function(x)\n  return x + base\nend")()
    local g, d = rebuild(f)
    assert.are.equal(2, d.line)
    assert.matches("^=%[string", d.chunk)
    assert.are.equal(10, g(3))
  end)

  it("keeps every text loaded under one chunk name", function()
    local f1 = load("local a = 1\nreturn function(x) return x + a end", "=inline")()
    local f2 = load("local b = 2\nreturn function(x) return x * b end", "=inline")()
    local g1, d1 = rebuild(f1)
    local g2, d2 = rebuild(f2)
    assert.are.equal("=inline", d1.chunk)
    assert.are.equal("inline:2", d1.where)
    assert.are.equal("local a; return function(x) return x + a end", d1.text)
    assert.are.equal("local b; return function(x) return x * b end", d2.text)
    assert.are.equal(6, g1(5))
    assert.are.equal(10, g2(5))
  end)

  it("ships a function from load with a reader function", function()
    local pieces = { "local bang = '!'\n", "return function(s)\n", "  return s .. bang\n", "end\n" }
    local i = 0
    local f = load(function() i = i + 1; return pieces[i] end, "=reader")()
    local g, d = rebuild(f)
    assert.are.equal("=reader", d.chunk)
    assert.are.equal("hi!", g("hi"))
    local j = 0
    local f2 = load(function() j = j + 1; return pieces[j] end)()
    assert.are.equal("=(load)", ship.describe(f2).chunk)
    assert.are.equal("ho!", (rebuild(f2))("ho"))
  end)

  it("ships a main chunk as a text that returns it", function()
    local main = load("local a = ...\nreturn (a or 1) + 1", "=mainchunk")
    local d = ship.describe(main)
    local g = assert(load(d.text, d.chunk, "t", G))()
    assert.are.equal(core.fnsig(main), core.fnsig(g))
    assert.are.equal(2, g())
    assert.are.equal(11, g(10))
  end)

  it("says so when the source file is gone", function()
    local path = os.tmpname()
    local fh = assert(io.open(path, "w"))
    fh:write("local function gone(x)\n  return x\nend\nreturn gone\n")
    fh:close()
    local f = dofile(path)
    os.remove(path)
    assert.are.equal(1, rebuild(f)(1))   -- dofile kept the text it loaded
    -- a memory that never saw the file (a chunk loaded by C) reads the disk
    local err = describe_error(f, package.preload["farm.ship"]("farm.ship"))
    assert.matches("cannot ship function '?' (" .. path, err, 1, true)
    assert.matches("no source text for it verifies", err, 1, true)
    assert.matches("cannot open " .. path, err, 1, true)
  end)

  it("says so when the file changed after it was loaded", function()
    local path = os.tmpname()
    local fh = assert(io.open(path, "w"))
    fh:write("local function changing(x)\n  return x + 1\nend\nreturn changing\n")
    fh:close()
    local f = dofile(path)
    fh = assert(io.open(path, "w"))
    fh:write("local function changing(x)\n  return x - 1\nend\nreturn changing\n")
    fh:close()
    assert.are.equal(2, rebuild(f)(1))   -- dofile kept the text it loaded
    -- a memory that never saw the file (a chunk loaded by C) reads the disk
    local err = describe_error(f, package.preload["farm.ship"]("farm.ship"))
    os.remove(path)
    assert.matches("cannot ship function 'changing'", err, 1, true)
    assert.matches("compiles to another function", err, 1, true)
  end)

  it("says so when a chunk's text was never seen", function()
    local f = load("return function() return 1 end", "=ghost")()
    local fresh = package.preload["farm.ship"]("farm.ship")  -- a memory without "=ghost"
    local err = describe_error(f, fresh)
    assert.matches("the text of chunk '=ghost' is unknown", err, 1, true)
  end)

  it("refuses C functions and non-functions", function()
    assert.has_error(function() ship.describe(print) end)
    assert.has_error(function() ship.describe({}) end)
  end)
end)

describe("ship.describe <const> locals", function()
  -- Lua 5.4 folds a <const> local whose value is a constant expression into the
  -- code that names it: no upvalue is left for it. Every form must still ship.
  local FIXTURE = [===[
local T = {}
local SEP <const> = ";"
T.sep = function(a, b) return a .. SEP .. b end
local DASH <const> = "a -- b" -- and a comment; with a semicolon
T.dash = function() return DASH end
local QUOTED <const> = 'it\'s "q" \\ \n\t\0;\r end'
T.quoted = function() return QUOTED end
local LONG <const> = [==[a ]] "b" -- c]==]
T.long = function() return LONG end
local TWO <const> = [[
two
lines]]
T.two = function() return TWO end
local INT <const>, HEX <const> = 42, 0xff
T.ints = function() return INT, HEX end
local FLT <const> = 2.5
local NEG <const> = -7
local NEGF <const> = -0.5
local EXP <const> = 1e10
local PI <const> = math.pi
local MIN <const> = -0x7fffffffffffffff - 1
local THIRD <const> = 1 / 3
local INF <const> = 1e309
T.numbers = function() return FLT, NEG, NEGF, EXP, PI, MIN, THIRD, INF end
local A <const>, B <const> = 1, 2
T.pair = function() return A, B end
T.pair_nested = function() return function() return A + B end end
local C <const>, D = 3, { 4 }
T.mixed = function() return C, D[1] end
local X = 1
T.before = function() return X end
local X <const> = 2
T.shadow = function() return X end
local Y <const> = 10
do local Y <const> = 20 end
T.outer = function() return Y end
do local Y <const> = 30; T.block = function() return Y end end
local Z <const> = 3
T.nested = function() return function() return Z * 2 end end
T.body = function() local W <const> = 9; return W end
local NIL <const> = nil
local YES <const> = true
local NO <const> = false
T.lits = function() return NIL, YES, NO end
local K <const> = 2^10
local CAT <const> = "a" .. "b"
T.folded = function() return K, CAT end
local K2 <const> = K * 2 + Z
T.derived = function() return K2 end
local SPLIT <const> =
  "over two lines"
T.split = function() return SPLIT end
local function factory() local F <const> = 6; return function(x) return x * F end end
T.factory = factory()
local H <close> = setmetatable({ v = 1 }, { __close = function() end })
T.close = function() return H.v end
T.close_nested = function() return function() return H.v end end
return T
]===]
  local path, T

  setup(function()
    path = os.tmpname()
    local fh = assert(io.open(path, "w"))
    fh:write(FIXTURE)
    fh:close()
    T = dofile(path)
  end)

  teardown(function() os.remove(path) end)

  local function check(name, ...)
    local g, d = rebuild(T[name])
    assert.are.same(table.pack(T[name]()), table.pack(g()), name)
    assert.are.same(table.pack(...), table.pack(g()), name)
    return d.text, g
  end

  it("ships string constants with semicolons, '--', quotes, escapes and long brackets", function()
    local sep, d = rebuild(T.sep)
    assert.matches('local SEP <const> = ";"; ', d.text, 1, true)
    assert.are.equal("x;y", sep("x", "y"))
    check("dash", "a -- b")
    check("quoted", "it's \"q\" \\ \n\t\0;\r end")
    check("long", 'a ]] "b" -- c')
    local text2 = check("two", "two\nlines")
    assert.is_nil(text2:find("\n", 1, true), "the shipped text keeps the function's line")
  end)

  it("ships numeric constants exactly, integers as integers and floats as floats", function()
    check("ints", 42, 255)
    local _, g = check("numbers", 2.5, -7, -0.5, 1e10, math.pi, math.mininteger, 1 / 3, math.huge)
    local r = table.pack(g())
    assert.are.same({ "float", "integer", "float", "float", "float", "integer", "float", "float" },
      { math.type(r[1]), math.type(r[2]), math.type(r[3]), math.type(r[4]), math.type(r[5]),
        math.type(r[6]), math.type(r[7]), math.type(r[8]) })
  end)

  it("ships constants declared together, and a <const> next to a plain local", function()
    local text = check("pair", 1, 2)
    assert.matches("local B <const> = 2; local A <const>; ", text, 1, true)
    local g = rebuild(T.pair_nested)
    assert.are.equal(3, g()())
    check("mixed", 3, 4)
  end)

  it("ships the constant in scope where the function is, shadowed or not", function()
    check("before", 1)
    check("shadow", 2)
    check("outer", 10)
    check("block", 30)
  end)

  it("ships constants used in nested closures, in a function's own body, and in a factory", function()
    local g = rebuild(T.nested)
    assert.are.equal(6, g()())
    check("body", 9)
    local f = rebuild(T.factory)
    assert.are.equal(42, f(7))
  end)

  it("ships nil, true and false constants, and values the compiler folds", function()
    check("lits", nil, true, false)
    local _, g = check("folded", 1024.0, "ab")
    assert.are.equal("float", math.type((g())))
    check("derived", 2051.0)
    check("split", "over two lines")
  end)

  it("ships a <close> variable's value, also to a nested closure", function()
    local text = check("close", 1)
    assert.matches("local H <close>; ", text, 1, true)
    local g = rebuild(T.close_nested)
    assert.are.equal(1, g()())
  end)

  it("names a <const> whose value is not the one the function was compiled with", function()
    local f = load("local N <const> = 7\nreturn function(x) return x * N end", "=const-changed")()
    local fresh = package.preload["farm.ship"]("farm.ship")
    fresh.remember("=const-changed", "local N <const> = 8\nreturn function(x) return x * N end")
    local err = describe_error(f, fresh)
    assert.matches("rebuilt as local N <const> = 8 the text of lines 2-2 still compiles to "
      .. "another function", err, 1, true)
  end)

  it("names a <const> the text does not declare where the function is", function()
    local f = load("local N <const> = 7\nreturn function(x) return x * N end", "=const-gone")()
    local fresh = package.preload["farm.ship"]("farm.ship")
    fresh.remember("=const-gone", "local M <const> = 7\nreturn function(x) return x * N end")
    local err = describe_error(f, fresh)
    assert.matches("it uses 'N' as a compile-time constant, but it is no compile-time "
      .. "constant (<const>) where the text of lines 2-2 puts the function", err, 1, true)
  end)
end)

describe("ship.describe globals", function()
  dofile(FIXTURES .. "primes.lua")

  it("lists the script's globals a job uses, not the standard ones", function()
    local d = ship.describe(G.sum_primes)
    assert.are.same({ "isprime" }, d.globals)
    assert.are.same({}, ship.describe(G.isprime).globals)
  end)

  it("lets a worker run the job with the shipped globals", function()
    local env = setmetatable({}, { __index = G })
    env.isprime = rebuild(G.isprime, env)
    env.print = function() end
    local sum = rebuild(G.sum_primes, env)
    assert.are.equal(17, sum(10))
  end)

  it("is empty when the function's _ENV is not the global table", function()
    assert.are.same({}, ship.describe(J.private_env).globals)
    assert.are.same({ "foo" }, ship.describe(J.env_factory(G)).globals)
    assert.are.same({}, ship.describe(J.env_factory({})).globals)
  end)
end)

describe("ship.describe library fields and _G globals", function()
  -- a function of the script (global table as _ENV), from a chunk of its own
  local function job(text) return load("return " .. text, "=" .. text, "t", G)() end

  after_each(function()
    string.spec_trim, math.spec_clamp, math.spec_consts = nil, nil, nil
    G.spec_helper, G.spec_conn = nil, nil
  end)

  it("adds what the script added to a library, by the keys the function's code holds", function()
    local f = job("function(s) return s:spec_trim(), math.spec_clamp(1), math.floor(1) end")
    assert.are.same({}, ship.describe(f).globals)
    string.spec_trim = function(s) return s end
    math.spec_clamp = function(x) return x end
    assert.are.same({ "string.spec_trim", "math.spec_clamp" }, ship.describe(f).globals)
    assert.is_nil(ship.names()[string.spec_trim])       -- travels by source, not by name
    math.spec_consts = { 1 }
    assert.is_nil(ship.names()[math.spec_consts])       -- by value
    -- a library the function does not reach: nothing
    assert.are.same({}, ship.describe(job("function(t) return t.spec_clamp end")).globals)
  end)

  it("adds the globals reached as _G.NAME, leaving behind what could not travel", function()
    local f = job("function(x) return _G.spec_helper(x), _G.spec_conn, _G.print end")
    assert.are.same({}, ship.describe(f).globals)
    G.spec_helper, G.spec_conn = function(x) return x end, io.stdout
    assert.are.same({ "spec_helper" }, ship.describe(f).globals)
  end)

  it("reads library fields for the globals section and installs them only where asked", function()
    local f = job("function(s) return s:spec_trim() end")
    string.spec_trim = load("return function(s) return (s:gsub('^ +', '')) end", "=trim")()
    local block = core.pack({ describe = ship.describe, names = ship.names(), globals = G }, f)
    string.spec_trim = nil
    local g = core.unpack(block, { resolve = ship.resolve })   -- dropped: no install hook
    assert.is_nil(string.spec_trim)
    local got = {}
    g = core.unpack(block, { resolve = ship.resolve, install = function(k, v) got[k] = v end })
    assert.are.equal("function", type(got["string.spec_trim"]))
    assert.are.equal("x", got["string.spec_trim"]("  x"))
    ship.install("string.spec_trim", got["string.spec_trim"])
    assert.are.equal("x", g("  x"))
    ship.install("string.format", print)                   -- a library's own field stays
    assert.are_not.equal(print, string.format)
  end)
end)

describe("ship.names and ship.resolve", function()
  it("name standard values and resolve them back", function()
    local names = ship.names()
    assert.are.equal("math.sqrt", names[math.sqrt])
    assert.are.equal("string", names[string])
    assert.are.equal("_G.print", names[print])
    assert.are.equal(math.sqrt, ship.resolve("math.sqrt"))
    assert.are.equal(string, ship.resolve("string"))
    assert.are.equal(print, ship.resolve("_G.print"))
  end)

  it("round-trip every name", function()
    for v, name in pairs(ship.names()) do
      assert.is_true(rawequal(v, ship.resolve(name)), name)
    end
  end)

  it("leave the script's own Lua functions out", function()
    dofile(FIXTURES .. "primes.lua")
    assert.is_nil(ship.names()[G.sum_primes])
  end)

  it("follow changes to package.loaded", function()
    local mod = { f = function() end }
    package.loaded["ship_spec.fake"] = mod
    assert.are.equal("ship_spec.fake.f", ship.names()[mod.f])
    assert.are.equal(mod.f, ship.resolve("ship_spec.fake.f"))
    package.loaded["ship_spec.fake"] = nil
    assert.is_nil(ship.names()[mod.f])
  end)

  it("say how to load a module on a path the script set, and load it so", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir .. "/specmod"))
    local fh = assert(io.open(dir .. "/specmod/m.lua", "w"))
    fh:write("return { v = 42, name = ... }\n")
    fh:close()
    local path = package.path
    package.path = dir .. "/?.lua;" .. path
    local m = require "specmod.m"
    local info = ship.module_info("specmod.m.v")
    -- the first reference in a block carries it (MODULE), the next one is a name
    local got = {}
    core.unpack(core.pack({ names = ship.names() }, m, m), { resolve = function(name, i)
      got[#got + 1] = { name = name, info = i }
      return m
    end })
    package.path = path
    assert.are.equal(2, #got)
    assert.are.equal("specmod.m", got[1].name)
    assert.are.same(info, got[1].info)
    assert.is_nil(got[2].info)
    assert.are.equal("specmod.m", info.module)
    assert.are.equal(dir .. "/?.lua;" .. path, info.path)
    assert.are.equal(dir .. "/specmod/m.lua", info.file)
    assert.are.equal("return { v = 42, name = ... }\n", info.text)
    -- a state that has not loaded it and cannot find it by name loads the text
    package.loaded["specmod.m"] = nil
    os.execute("rm -rf " .. dir)
    local saved = package.path
    assert.are.equal(42, ship.resolve("specmod.m.v", { module = "specmod.m", text = info.text,
                                                        file = info.file }))
    assert.are_not.equal(m, package.loaded["specmod.m"])
    assert.are.equal("specmod.m", package.loaded["specmod.m"].name)
    package.loaded["specmod.m"], package.preload["specmod.m"], package.path = nil, nil, saved
    -- standard libraries and modules on the default path need nothing
    assert.is_nil(ship.module_info("math.sqrt"))
    assert.is_nil(ship.module_info("farm.ship"))
  end)

  it("refuse what this state does not have", function()
    local ok, err = pcall(ship.resolve, "no_such_module.f")
    assert.is_false(ok)
    assert.matches("module 'no_such_module.f' is not available on this worker", err, 1, true)
    assert.has_error(function() ship.resolve("math.no_such_function") end)
  end)
end)

describe("ship.resolve_loaded (names from another host)", function()
  it("looks fields up raw: a lazy module's __index does not run, nothing is required", function()
    local ran = false
    package.loaded.lazymod_spec = setmetatable({ here = 7 }, {
      __index = function(_, k) ran = true; return require("lazymod_spec_" .. k) end })
    assert.equal(7, ship.resolve_loaded("lazymod_spec.here"))
    local ok, err = pcall(ship.resolve_loaded, "lazymod_spec.evil")
    assert.is_false(ok)
    assert.is_false(ran)
    assert.truthy(tostring(err):find("has not loaded", 1, true), err)
    package.loaded.lazymod_spec = nil
  end)
end)
