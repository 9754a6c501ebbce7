-- shipping_spec.lua -- functions and values travelling to real workers and back.
local farm = require "farm"
local H = require "helper"

local function run(fn, ...) return farm.submit(fn, ...):result() end

describe("shipping", function()
  setup(function() farm.close(); farm.config { workers = 1, echo = false } end)
  teardown(function() farm.close(); farm.config { workers = 2, echo = true } end)

  describe("values", function()
    it("keeps integers integers and floats floats", function()
      local a, b, c, d = run(function(...) return ... end, 1, 1.0, -0.0, 2^53)
      assert.are.equal("integer", math.type(a))
      assert.are.equal("float", math.type(b))
      assert.are.equal(-math.huge, 1 / c)
      assert.are.equal("float", math.type(d))
      local types = run(function(x, y) return math.type(x) .. " " .. math.type(y) end, 1, 1.0)
      assert.are.equal("integer float", types)
    end)

    it("keeps inf, -inf, nan, and integer limits", function()
      local i, ni, n, mx, mn = run(function(...) return ... end,
        math.huge, -math.huge, 0 / 0, math.maxinteger, math.mininteger)
      assert.are.equal(math.huge, i)
      assert.are.equal(-math.huge, ni)
      assert.is_true(n ~= n)
      assert.are.equal(math.maxinteger, mx)
      assert.are.equal(math.mininteger, mn)
    end)

    it("keeps strings with NUL bytes", function()
      local s = "a\0b\0\0c\255"
      assert.are.equal(s, run(function(x) return x end, s))
      assert.are.equal(7, run(function(x) return #x end, s))
    end)

    it("carries a 16 MiB string there and back", function()
      local s = string.rep("0123456789abcdef", 1024 * 1024)
      local back, len = run(function(x) return x, #x end, s)
      assert.are.equal(16 * 1024 * 1024, len)
      assert.is_true(back == s)
    end)

    it("keeps cycles and shared references, in arguments and results", function()
      local t = { name = "t" }
      t.self = t
      local shared = { 1, 2 }
      local out = run(function(x, a, b)
        return { same = x.self == x, shared = a == b, a = a, b = b, x = x }
      end, t, shared, shared)
      assert.is_true(out.same)
      assert.is_true(out.shared)
      assert.are.equal(out.a, out.b)
      assert.are.equal(out.x, out.x.self)
    end)

    it("carries metatables with their methods", function()
      local Point = {}
      Point.__index = Point
      function Point.norm2(p) return p.x * p.x + p.y * p.y end
      local p = setmetatable({ x = 3, y = 4 }, Point)
      assert.are.equal(25, run(function(q) return q:norm2() end, p))
    end)
  end)

  describe("functions", function()
    it("takes upvalues by value at submit time", function()
      local k = 10
      local function add(x) return x + k end
      local f1 = farm.submit(add, 1)
      k = 20
      local f2 = farm.submit(add, 1)
      assert.are.equal(11, f1:result())
      assert.are.equal(21, f2:result())
    end)

    it("keeps a table shared by two upvalues shared", function()
      local t = { n = 1 }
      local a, b = t, t
      assert.is_true(run(function() return a == b and a.n == 1 end))
    end)

    it("ships cyclic table upvalues", function()
      local ring = { v = 1 }
      ring.next = { v = 2, next = ring }
      assert.are.equal(1, run(function() return ring.next.next.v end))
    end)

    it("tells apart two functions on one line", function()
      local inc, dec = function(x) return x + 1 end, function(x) return x - 1 end
      assert.are.equal(11, run(inc, 10))
      assert.are.equal(9, run(dec, 10))
    end)

    it("ships a recursive local function", function()
      local function fib(n) if n < 2 then return n end return fib(n - 1) + fib(n - 2) end
      assert.are.equal(6765, run(fib, 20))
    end)

    it("ships nested closures, and functions in upvalues by source", function()
      local function adder(k) return function(x) return x + k end end
      local add5 = adder(5)
      local function twice(x) return add5(add5(x)) end
      assert.are.equal(11, run(add5, 6))
      assert.are.equal(12, run(twice, 2))
      local make = run(function() return adder(3)(4) end)
      assert.are.equal(7, make)
    end)

    it("ships the script's global functions and values a job names", function()
      SPEC_SCALE = 3
      function spec_isprime(n)
        if n < 2 then return false end
        for i = 2, math.floor(math.sqrt(n)) do if n % i == 0 then return false end end
        return true
      end
      function spec_sum_primes(n)
        local s = 0
        for x = 2, n - 1 do if spec_isprime(x) then s = s + x end end
        return s * SPEC_SCALE
      end
      assert.are.equal(3 * 1060, run(spec_sum_primes, 100))
      SPEC_SCALE, spec_isprime, spec_sum_primes = nil, nil, nil
    end)

    it("ships module values by name", function()
      local sqrt, fmt, str = math.sqrt, string.format, string
      assert.are.equal("4.0 x", run(function(x) return fmt("%.1f", sqrt(x)) .. str.rep(" x", 1) end, 16))
      assert.are.equal(4.0, run(math.sqrt, 16))
    end)

    it("rebinds _ENV to the worker's globals", function()
      local pid = run(function() return type(print) == "function" and _G ~= nil and io.open("/proc/self/stat"):read("n") end)
      assert.are_not.equal(io.open("/proc/self/stat"):read("n"), pid)
    end)

    it("ships functions from load()ed strings, with and without a chunk name", function()
      local f1 = load("return function(x) return x * 2 end")()
      local f2 = load("return function(x) return x * 3 end", "=inline")()
      local f3 = load("return function(x) return x * 4 end", "=inline")()
      local f4 = load("return function(x) return x * 5 end", "@nowhere.lua")()
      assert.are.equal(2, run(f1, 1))
      assert.are.equal(3, run(f2, 1))
      assert.are.equal(4, run(f3, 1))
      assert.are.equal(5, run(f4, 1))
    end)

    it("brings back a function a job made, by source, from a chunk only the client had", function()
      local maker = load("return function(k) return function(x) return x + k end end", "=maker")()
      local add5 = run(maker, 5)
      assert.are.equal("function", type(add5))
      assert.are.equal(6, add5(1))
    end)

    it("ships a function given as an argument", function()
      assert.are.equal(9, run(function(g, x) return g(x) end, function(y) return y * y end, 3))
    end)

    it("refuses an unshippable upvalue at submit, naming it and the function", function()
      local conn = io.stdout
      local function work() return conn end
      local ok, err = pcall(farm.submit, work)
      assert.is_false(ok)
      assert.is_truthy(err:find("cannot ship upvalue 'conn' (userdata) of function 'work' (", 1, true), err)
      assert.is_truthy(err:find("shipping_spec.lua:%d+%)"), err)
    end)

    it("refuses a nested unshippable value with its path", function()
      local cfg = { db = { handle = io.stderr } }
      local ok, err = pcall(farm.submit, function() return cfg end)
      assert.is_false(ok)
      assert.is_truthy(err:find("cannot ship upvalue 'cfg.db.handle' (userdata)", 1, true), err)
      ok, err = pcall(farm.submit, function(x) return x end, { co = coroutine.create(print) })
      assert.is_false(ok)
      assert.is_truthy(err:find("cannot ship argument 1.co (thread)", 1, true), err)
    end)

    it("refuses a function whose source cannot be found", function()
      local g = load("return function() return 1 end", "=gone")()
      -- a stripped binary chunk: no text anywhere for it
      local ok, err = pcall(farm.submit, load(string.dump(g, true), "=never-seen", "b"))
      assert.is_false(ok)
      assert.is_truthy(err:find("cannot ship function", 1, true), err)
    end)
  end)

  describe("<const> locals", function()
    -- Lua 5.4 folds a <const> local with a constant value into the code that
    -- names it (no upvalue is left for it); farm rebuilds it in the shipped text.
    local SEP <const> = ";"
    local DASH <const> = "a -- b" -- a comment; with a semicolon
    local QUOTED <const> = 'it\'s "q" \\ \n\t\0;\r end'
    local LONG <const> = [==[a ]] "b" -- c]==]
    local TWO <const> = [[
two
lines]]
    local INT <const>, HEX <const> = 42, 0xff
    local FLT <const> = 2.5
    local NEG <const> = -7
    local EXP <const> = 1e10
    local PI <const> = math.pi
    local MIN <const> = -0x7fffffffffffffff - 1
    local THIRD <const> = 1 / 3
    local A <const>, B <const> = 1, 2
    local C <const>, D = 3, { 4 }
    local NIL <const>, YES <const>, NO <const> = nil, true, false
    local NIL1 <const> = nil
    local YES1 <const> = true
    local NO1 <const> = false
    local K <const> = 2^10
    local CAT <const> = "a" .. "b"
    local K2 <const> = K * 2 + INT
    local SPLIT <const> =
      "over two lines"

    it("ships string constants with semicolons, '--', quotes, escapes and long brackets", function()
      assert.are.equal("x;y", run(function(a, b) return a .. SEP .. b end, "x", "y"))
      local d, q, l, t = run(function() return DASH, QUOTED, LONG, TWO end)
      assert.are.equal("a -- b", d)
      assert.are.equal("it's \"q\" \\ \n\t\0;\r end", q)
      assert.are.equal('a ]] "b" -- c', l)
      assert.are.equal("two\nlines", t)
    end)

    it("ships numeric constants, integers as integers and floats as floats", function()
      local r = table.pack(run(function() return INT, HEX, FLT, NEG, EXP, PI, MIN, THIRD end))
      assert.are.same(table.pack(42, 255, 2.5, -7, 1e10, math.pi, math.mininteger, 1 / 3), r)
      local types = {}
      for i = 1, r.n do types[i] = math.type(r[i]) end
      assert.are.same({ "integer", "integer", "float", "integer", "float", "float", "integer",
                        "float" }, types)
    end)

    it("ships constants declared together, and a <const> next to a plain local", function()
      assert.are.same({ 1, 2 }, { run(function() return A, B end) })
      assert.are.equal(3, run(function() return (function() return A + B end)() end))
      assert.are.same({ 3, 4 }, { run(function() return C, D[1] end) })
      assert.are.same(table.pack(nil, true, false), table.pack(run(function() return NIL, YES, NO end)))
      assert.are.same(table.pack(nil, true, false), table.pack(run(function() return NIL1, YES1, NO1 end)))
    end)

    it("ships the constant in scope where the job is, shadowed or not", function()
      local X = 1
      local before = function() return X end
      local X <const> = 2
      local after = function() return X end
      local Y <const> = 10
      do local Y <const> = 20 end
      local outer = function() return Y end
      local block
      do local Y <const> = 30; block = function() return Y end end
      assert.are.same({ 1, 2, 10, 30 }, { run(before), run(after), run(outer), run(block) })
    end)

    it("ships constants in nested closures, in the job's own body and in a factory", function()
      local Z <const> = 3
      assert.are.equal(6, run(function() return (function() return Z * 2 end)() end))
      assert.are.equal(9, run(function() local W <const> = 9; return W end))
      local function factory() local F <const> = 6; return function(x) return x * F end end
      assert.are.equal(42, run(factory(), 7))
    end)

    it("ships the values the compiler folds", function()
      local k, cat, k2, split = run(function() return K, CAT, K2, SPLIT end)
      assert.are.equal(1024.0, k)
      assert.are.equal("float", math.type(k))
      assert.are.equal("ab", cat)
      assert.are.equal(2090.0, k2)
      assert.are.equal("over two lines", split)
    end)

    it("ships a <close> variable's value, also to a nested closure", function()
      local closed = 0
      do
        local h <close> = setmetatable({ v = 5 }, { __close = function() closed = closed + 1 end })
        assert.are.equal(5, run(function() return h.v end))
        assert.are.equal(5, run(function() return (function() return h.v end)() end))
      end
      assert.are.equal(1, closed)   -- closed once, by the client, as without farm
    end)

    it("ships a function under a local _ENV <const>", function()
      local job
      do
        local _ENV <const> = { x = 5 }
        job = function() return (function() return x end)() end
      end
      assert.are.equal(5, run(job))
    end)
  end)

  -- What a script sets up before it submits, run as a user runs a script (`farm
  -- run`, real workers): in a spec, functions have busted's environment rather
  -- than the global table.
  describe("what the script set up", function()
    local dirs = {}
    after_each(function()
      H.cleanup()
      for _, d in ipairs(dirs) do os.execute("rm -rf " .. H.quote(d)) end
      dirs = {}
    end)

    -- a new directory holding mymod/inc.lua; returns its path
    local function moddir()
      local d = os.tmpname()
      os.remove(d)
      dirs[#dirs + 1] = d
      assert(os.execute("mkdir -p " .. H.quote(d .. "/mymod")))
      H.write(d .. "/mymod/inc.lua", [[
local M = { scale = 1 }
function M.add(x) return x + M.scale end
return M
]])
      return d
    end

    -- farm run on the text (formatted with the arguments, if any): its output
    local function script(text, ...)
      if select("#", ...) > 0 then text = text:format(...) end
      local r = H.run_script(text)
      assert.are.equal(0, r.code, r.err)
      return r.out
    end

    it("keeps a global a job sets under a computed name to that job, as a plain name is", function()
      -- one worker, so every job of each function runs in the same state
      local r = H.run_script([[
        local function set_env(k, set)
          local before = _ENV[k]
          if set then _ENV[k] = "leaked" end
          return tostring(before)
        end
        local function set_G(k, set)
          local before = _G[k]
          if set then _G[k] = "leaked" end
          return tostring(before)
        end
        local function set_raw(k, set)
          local before = rawget(_ENV, k)
          if set then rawset(_ENV, k, "leaked") end
          return tostring(before)
        end
        local function set_plain(set)
          local before = plainname
          if set then plainname = "leaked" end
          return tostring(before)
        end
        for _, f in ipairs { set_env, set_G, set_raw } do
          local k = "computed" .. _
          local a = farm.submit(f, k, true):result()
          io.write(a, " ", farm.submit(f, k, false):result(), " ")
        end
        farm.submit(set_plain, true):result()
        print(farm.submit(set_plain, false):result(), farm.workers())
      ]], "-n 1")
      assert.are.equal(0, r.code, r.err)
      assert.are.equal("nil nil nil nil nil nil nil\t1\n", r.out)
    end)

    describe("modules", function()
      it("finds a module on a package.path the script set, required in the job and as an upvalue", function()
        local d = moddir()
        assert.are.equal("2\n3\n4\n", script([[
          package.path = %q .. "/?.lua;" .. package.path
          print(farm.submit(function(x) return require("mymod.inc").add(x) end, 1):result())
          local inc = require "mymod.inc"
          print(farm.submit(function(x) return inc.add(x) end, 2):result())
          print(farm.map(function(x) return inc.add(x) end, { 3 })[1])
        ]], d))
      end)

      it("sends a module the worker cannot find by name as its source, once per worker", function()
        local d = moddir()
        assert.are.equal("ok\t2\t@" .. d .. "/mymod/inc.lua\n", script([[
          package.path = %q .. "/?.lua;" .. package.path
          local inc = require "mymod.inc"
          local function job(x) return inc.add(x), debug.getinfo(inc.add, "S").source end
          assert(farm.submit(job, 1):result() == 2)
          -- gone from the disk: the workers of a new pool cannot require it by name
          assert(os.remove(%q))
          local pool = farm.new { workers = 2 }
          local fs = {}
          for i = 1, 40 do fs[i] = pool:submit(job, i) end
          for i = 1, 40 do assert(fs[i]:result() == i + 1) end
          print("ok", pool:stats().functions_sent, select(2, fs[1]:result()))
          pool:close()
        ]], d, d .. "/mymod/inc.lua"))
      end)

      it("ships a package.preload module by source, as an upvalue and to require in the job", function()
        assert.are.equal("6\tspec.pm\n9\n", script([[
          package.preload["spec.pm"] = function(name)
            return { name = name, triple = function(x) return 3 * x end }
          end
          local pm = require "spec.pm"
          print(farm.submit(function(x) return pm.triple(x), pm.name end, 2):result())
          print(farm.submit(function(x) return require("spec.pm").triple(x) end, 3):result())
        ]]))
      end)

      it("re-requires a module on the worker: what the script changed in it does not travel", function()
        -- as the README says: the job has the module as a fresh require makes it
        local d = moddir()
        assert.are.equal("11\t10\n2\t1\n11\n", script([[
          package.path = %q .. "/?.lua;" .. package.path
          local inc = require "mymod.inc"
          inc.scale = 10
          print(inc.add(1), inc.scale)
          print(farm.submit(function(x) return inc.add(x), inc.scale end, 1):result())
          -- state that must travel is passed
          print(farm.submit(function(x, scale) inc.scale = scale; return inc.add(x) end, 1, inc.scale):result())
        ]], d))
      end)
    end)

    describe("classes", function()
      local DOG = [[
        Dog = {}
        Dog.__index = Dog
        function Dog.new(name) return setmetatable({ name = name }, Dog) end
        function Dog:speak() return self.name .. " says woof" end
      ]]

      it("brings back an instance of a global class with the client's own class", function()
        assert.are.equal("true\trex says woof\nrex sits\n1\t2000\n", script(DOG .. [[
          local r = farm.submit(function(n) return Dog.new(n) end, "rex"):result()
          print(getmetatable(r) == Dog, r:speak())
          function Dog:sit() return self.name .. " sits" end   -- added after the job returned
          print(r:sit())
          local fs = {}
          for i = 1, 2000 do fs[i] = farm.submit(function(i) return Dog.new("d" .. i) end, i) end
          local mts, same = {}, 0
          for i = 1, 2000 do
            local mt = getmetatable(fs[i]:result())
            mts[mt] = true
            if mt == Dog then same = same + 1 end
          end
          local n = 0
          for _ in pairs(mts) do n = n + 1 end
          print(n, same)
        ]]))
      end)

      it("passes an instance of a global class as an argument, and it comes back as the client's", function()
        assert.are.equal("rex says woof\ntrue\trex says woof\ntrue\ttrue\ntrue\n", script(DOG .. [[
          local rex = Dog.new("rex")
          print(farm.submit(function(d) return d:speak() end, rex):result())
          -- a job that names the class sees the same class in its argument
          print(farm.submit(function(d) return getmetatable(d) == Dog, d:speak() end, rex):result())
          local back, other = farm.submit(function(d) return d, Dog.new("max") end, rex):result()
          print(getmetatable(back) == Dog, getmetatable(other) == Dog)
          -- in a table, through farm.map
          local out = farm.map(function(d) return d end, { rex, Dog.new("a"), Dog.new("b") })
          print(getmetatable(out[1]) == Dog and getmetatable(out[3]) == Dog and out[2]:speak() == "a says woof")
        ]]))
      end)

      it("keeps classes that are fields of a global, and a class hierarchy", function()
        assert.are.equal("true\tmeow\ntrue\ttrue\tpurr\n", script([[
          animals = {}
          animals.Cat = {}
          animals.Cat.__index = animals.Cat
          function animals.Cat:speak() return "meow" end
          local c = farm.submit(function() return setmetatable({}, animals.Cat) end):result()
          print(getmetatable(c) == animals.Cat, c:speak())
          Kitten = setmetatable({}, { __index = animals.Cat })
          Kitten.__index = Kitten
          function Kitten:purr() return "purr" end
          local k = farm.submit(function(x) return x end, setmetatable({}, Kitten)):result()
          print(getmetatable(k) == Kitten, getmetatable(Kitten).__index == animals.Cat, k:purr())
        ]]))
      end)

      it("keeps a class from a module in package.loaded, both ways", function()
        local d = moddir()
        H.write(d .. "/shapes.lua", [[
local Circle = {}
Circle.__index = Circle
function Circle.new(r) return setmetatable({ r = r }, Circle) end
function Circle:area() return 3 * self.r * self.r end
return { Circle = Circle }
]])
        assert.are.equal("true\t12\ntrue\t27\ttrue\n", script([[
          package.path = %q .. "/?.lua;" .. package.path
          local shapes = require "shapes"
          local c = farm.submit(function(r) return shapes.Circle.new(r) end, 2):result()
          print(getmetatable(c) == shapes.Circle, c:area())
          local back, area, same = farm.submit(function(x)
            return x, x:area(), getmetatable(x) == require("shapes").Circle
          end, shapes.Circle.new(3)):result()
          print(getmetatable(back) == shapes.Circle, area, same)
        ]], d))
      end)

      it("keeps the class through a job's own job", function()
        assert.are.equal("true\tmeow\n", script([[
          Cat = { __index = { say = function() return "meow" end } }
          local r, m = farm.submit(function(c)
            return farm.submit(function(x) return x, x.say() end, c):result()
          end, setmetatable({}, Cat)):result()
          print(getmetatable(r) == Cat, m)
        ]]))
      end)

      it("carries a metatable with no name by value, as before", function()
        assert.are.equal("false\thi\thi\n", script([[
          local mt = { __index = { hi = function() return "hi" end } }
          local r, said = farm.submit(function(x) return x, x:hi() end, setmetatable({}, mt)):result()
          print(getmetatable(r) == mt, said, r:hi())
        ]]))
      end)
    end)

    describe("globals", function()
      it("ships functions the script adds to string, called as methods and as fields", function()
        assert.are.equal("[  x  ]\n[x]\n[a b]\t[a b]\n", script([[
          local function job(s) return "[" .. (s.trim and s:trim() or s) .. "]" end
          print(farm.submit(job, "  x  "):result())
          function string.trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end
          -- added after a first submit of the same job: it travels all the same
          print(farm.submit(job, "  x  "):result())
          print(farm.submit(function(s) return "[" .. s:trim() .. "]", "[" .. string.trim(s) .. "]" end,
            "  a b "):result())
        ]]))
      end)

      it("ships math.clamp and a table the script adds to math, also through a local alias", function()
        assert.are.equal("5\t0\t6.28\n3\n", script([[
          function math.clamp(x, lo, hi) return math.max(lo, math.min(hi, x)) end
          math.consts = { tau = 6.28 }
          print(farm.submit(function(a, b) return math.clamp(a, 0, 5), math.clamp(b, 0, 5), math.consts.tau end,
            9, -1):result())
          local M = math
          print(farm.submit(function(x) return M.clamp(x, 0, 5) end, 3):result())
        ]]))
      end)

      -- The test above calls math.clamp first: its worker then has the field,
      -- and a job through the alias finds it whether it travelled or not. Here
      -- every job reaches math only through a local, so the field must travel
      -- with each (the jobs spread over the workers; none is warmed by a job
      -- through math itself).
      it("ships math.clamp to a job that reaches math only through a local alias", function()
        assert.are.equal("0 5 3 5\n", script([[
          function math.clamp(x, lo, hi) return math.max(lo, math.min(hi, x)) end
          local M = math
          local fs = {}
          for i, x in ipairs { -4, 9, 3, 12 } do
            fs[i] = farm.submit(function(v) return M.clamp(v, 0, 5) end, x)
          end
          local out = {}
          for i, f in ipairs(fs) do out[i] = tostring(f:result()) end
          print(table.concat(out, " "))
        ]]))
      end)

      it("ships globals reached as _G.NAME and _ENV.NAME", function()
        assert.are.equal("2\t3\t4\t7\n", script([[
          function helper(x) return x + 1 end
          CONFIG = { size = 7 }
          print(farm.submit(function(x)
            return _G.helper(x), _ENV.helper(x + 1), _G["helper"](x + 2), _G.CONFIG.size
          end, 1):result())
        ]]))
      end)
    end)
  end)

  describe("sharing", function()
    it("keeps two closures over one upvalue sharing it, passed together as arguments", function()
      local n = 0
      local function inc() n = n + 1 end
      local function get() return n end
      assert.are.equal(2, run(function(i, g) i(); i(); return g() end, inc, get))
      -- and in one table, and with the counter in a table
      local box = { k = 0 }
      local function bump() box.k = box.k + 1 end
      local function read() return box.k end
      assert.are.equal(3, run(function(t) t.inc(); t.inc(); t.inc(); return t.get() end,
        { inc = bump, get = read }))
      assert.are.equal(0, n)
    end)

    it("keeps a closure in an argument sharing an upvalue with the job function", function()
      local n = 0
      local function inc() n = n + 1 end
      local a, b = run(function(get) inc(); inc(); return get(), n end, function() return n end)
      assert.are.equal(2, a)
      assert.are.equal(2, b)
    end)

    it("makes a table that is an argument and an upvalue of the job one table there", function()
      local t = { v = 1 }
      local same, seen = run(function(x) x.v = 5; return rawequal(x, t), t.v end, t)
      assert.is_true(same)
      assert.are.equal(5, seen)
      -- also in every chunk of a map, and the job's copy only: the script's is untouched
      local list = { t, t, t }
      local out = farm.map(function(x) return rawequal(x, t) end, list)
      assert.are.same({ true, true, true }, out)
      assert.are.equal(1, t.v)
    end)

    it("keeps two returned closures sharing their upvalue", function()
      local inc, get = run(function()
        local n = 0
        return function() n = n + 1 end, function() return n end
      end)
      inc(); inc()
      assert.are.equal(2, get())
      local c = run(function()
        local n = 10
        return { up = function() n = n + 1; return n end, peek = function() return n end }
      end)
      c.up()
      assert.are.equal(11, c.peek())
    end)

    it("keeps a closure held in another's upvalue sharing their common upvalue", function()
      local n = 0
      local function get() return n end
      local function inc() n = n + 1; return get end        -- n met before get
      local function inc2() local g = get; n = n + 1; return g end   -- get met before n
      assert.are.equal(2, run(function(i) i(); return i()() end, inc))
      assert.are.equal(2, run(function(i) i(); return i()() end, inc2))
      assert.are.equal(0, n)
    end)
  end)

  describe("caching", function()
    it("sends a function's source once per worker, then only its hash", function()
      farm.close()                 -- the next pool counts from nothing
      local function work(x) return x * 2 end
      local fs = {}
      for i = 1, 50 do fs[i] = farm.submit(work, i) end
      for i = 1, 50 do assert.are.equal(2 * i, fs[i]:result()) end
      assert.are.equal(1, farm.stats().functions_sent)
    end)
  end)
end)
