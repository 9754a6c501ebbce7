-- codec_spec.lua -- the value codec (core/codec.c) as Lua sees it, through
-- farm.core.pack(opts, ...) and farm.core.unpack(s [, opts]).
--
--   make && LUA_CPATH='build/?.so' busted --lua=lua5.4 spec/codec_spec.lua
--
-- Functions travel through a describe hook written here (lua/ship.lua is the
-- real one): a table from each function to its source text.

-- luaopen_farm puts farm.core in package.loaded before it runs the Lua side,
-- so the codec can be tested even while the rest of the module is unwell.
local loaded, why = pcall(require, "farm")
local core = package.loaded["farm.core"]
assert(core and core.pack, "farm.core not loaded: " .. tostring(why))
local pack, unpack = core.pack, core.unpack

local function rt(...) return unpack(pack(nil, ...)) end

local function errmsg(f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok)
  return err
end

describe("codec", function()
  it("loads with the farm module", function()
    assert.is_true(loaded, tostring(why))
  end)

  describe("numbers", function()
    it("keep their subtype", function()
      local a, b, c, d = rt(1, 1.0, 2^53, math.maxinteger)
      assert.equal("integer", math.type(a))
      assert.equal("float", math.type(b))
      assert.equal("float", math.type(c))
      assert.equal("integer", math.type(d))
      assert.equal(math.maxinteger, d)
      assert.equal(math.mininteger, (rt(math.mininteger)))
    end)

    it("keep -0.0, infinities and nan", function()
      local z, pinf, ninf, nan = rt(-0.0, math.huge, -math.huge, 0/0)
      assert.equal(-math.huge, 1/z)
      assert.equal(math.huge, pinf)
      assert.equal(-math.huge, ninf)
      assert.is_true(nan ~= nan)
    end)

    it("small integers take one byte", function()
      assert.equal(3, #pack(nil, 127))   -- count, SMALLINT, end of globals
      assert.equal(5, #pack(nil, 128))
    end)
  end)

  describe("strings", function()
    it("carry any bytes", function()
      local s = "a\0b\0\255\n"
      assert.equal(s, (rt(s)))
      assert.equal("", (rt("")))
    end)

    it("of 16 MiB", function()
      local s = string.rep("0123456789abcde\0", 1 << 20)
      local back = rt(s)
      assert.equal(#s, #back)
      assert.is_true(s == back)
    end)
  end)

  describe("values of a block", function()
    it("keep their count, trailing nils too", function()
      assert.equal(3, select("#", rt(1, nil, nil)))
      assert.equal(2, select("#", rt(nil, nil)))
      assert.equal(0, select("#", rt()))
    end)
  end)

  describe("tables", function()
    it("nest", function()
      local t = {1, "two", {3, {x = {y = true}}}, k = {[false] = 0.5}}
      assert.same(t, (rt(t)))
    end)

    it("keep nil holes", function()
      local back = rt({1, nil, 3, [6] = 6})
      assert.equal(1, back[1])
      assert.is_nil(back[2])
      assert.equal(3, back[3])
      assert.equal(6, back[6])
    end)

    it("keep cycles", function()
      local t = {} t.self = t t[1] = {t}
      local back = rt(t)
      assert.not_equal(t, back)
      assert.equal(back, back.self)
      assert.equal(back, back[1][1])
    end)

    it("keep shared references shared, across the values of a block", function()
      local shared = {1}
      local a, b = rt(shared, {shared, x = shared})
      assert.equal(a, b[1])
      assert.equal(a, b.x)
    end)

    it("bring their metatables", function()
      local mt = {__index = {answer = 42}}
      local a, b = rt(setmetatable({}, mt), setmetatable({}, mt))
      assert.equal(42, a.answer)
      assert.equal(getmetatable(a), getmetatable(b))
    end)
  end)

  describe("functions", function()
    local texts = setmetatable({}, {__mode = "k"})
    local function describe_fn(f)
      return assert(texts[f], "no text for this function")
    end

    it("travel as source with their upvalues", function()
      local k = 10
      local function add(x) return x + k end
      -- the text declares the upvalue, as ship.lua writes it
      texts[add] = {chunk = "@job.lua", line = 4, name = "add", where = "job.lua:4",
                    text = "local k; return function(x) return x + k end"}
      local back = unpack(pack({describe = describe_fn}, add))
      assert.not_equal(add, back)
      assert.equal(15, back(5))
      local info = debug.getinfo(back, "S")
      assert.equal("@job.lua", info.source)
      assert.equal(4, info.linedefined)
    end)

    it("bring the globals they name, into the env", function()
      local genv = {SCALE = 3}
      local f = load("return function(x) return x * SCALE end", "=g", "t", genv)()
      texts[f] = {chunk = "=g", line = 1, name = "f", where = "g:1",
                  text = "return function(x) return x * SCALE end", globals = {"SCALE"}}
      local s = pack({describe = describe_fn, globals = genv}, f)
      local env = {}
      local back = unpack(s, {env = env})
      assert.equal(3, rawget(env, "SCALE"))
      assert.equal(6, back(2))
    end)

    it("are cached by text, each copy with its own environment", function()
      local genv = {V = "sent"}
      local f = load("return function() return V end", "=v", "t", genv)()
      texts[f] = {chunk = "=v", line = 1, name = "f", where = "v:1",
                  text = "return function() return V end", globals = {"V"}}
      local s = pack({describe = describe_fn, globals = genv}, f)
      local cache, e1, e2 = {}, {}, {}
      local f1 = unpack(s, {env = e1, cache = cache})
      local f2 = unpack(s, {env = e2, cache = cache})
      local entries = 0
      for _ in pairs(cache) do entries = entries + 1 end
      assert.equal(1, entries)
      e1.V, e2.V = "one", "two"
      assert.equal("one", f1())
      assert.equal("two", f2())
    end)

    it("and modules travel by name", function()
      local names = {[math.sqrt] = "math.sqrt", [string] = "string"}
      local s = pack({names = names}, math.sqrt, {string})
      local asked = {}
      local sqrt, t = unpack(s, {resolve = function(name)
        asked[#asked + 1] = name
        return name == "string" and string or math.sqrt
      end})
      assert.equal(math.sqrt, sqrt)
      assert.equal(string, t[1])
      assert.same({"math.sqrt", "string"}, asked)
      assert.matches("^malformed message", errmsg(unpack, s))
    end)
  end)

  describe("classes", function()
    -- the state's own global table (in a spec, _G is busted's environment)
    local RG = debug.getregistry()[2]
    local Dog = {}
    Dog.__index = Dog
    Dog.kind = "dog"
    local Cat = { __index = { kind = "cat" } }
    local function hook(map)
      return setmetatable({}, { __class = function(mt) return map[mt] end })
    end
    local CLASS = string.char(13)
    before_each(function() RG.FarmSpecDog, RG.farmspec = Dog, { Cat = Cat } end)
    after_each(function() RG.FarmSpecDog, RG.farmspec = nil, nil end)

    it("travel with their name and value; a receiver without them uses that copy", function()
      local s = pack({ names = hook({ [Dog] = "FarmSpecDog" }) },
        setmetatable({ n = 1 }, Dog), setmetatable({ n = 2 }, Dog), setmetatable({}, Cat))
      assert.truthy(s:find(CLASS .. "\11FarmSpecDog\6", 1, true))
      assert.is_nil(s:find("FarmSpecDog", s:find("FarmSpecDog", 1, true) + 1, true))  -- once
      local a, b, c = unpack(s)
      assert.equal(getmetatable(a), getmetatable(b))
      assert.not_equal(Dog, getmetatable(a))
      assert.equal("dog", a.kind)
      assert.equal("cat", c.kind)          -- no name: by value, as ever
    end)

    it("come back by name to the receiver's own class, once it recorded them", function()
      local s = pack({ names = hook({ [Dog] = "FarmSpecDog", [Cat] = "farmspec.Cat" }) },
        setmetatable({}, Dog), setmetatable({}, Cat))
      local a, c = unpack(s, { record = true })    -- as a worker decodes
      -- a worker's results: the names the client sent, without their values
      local back = pack({ home = true }, a, c, setmetatable({}, getmetatable(a)))
      assert.is_nil(back:find("kind", 1, true))
      local a2, c2, a3 = unpack(back)
      assert.equal(Dog, getmetatable(a2))
      assert.equal(Cat, getmetatable(c2))
      assert.equal(Dog, getmetatable(a3))
      -- what was not recorded travels by value
      local other = { __index = {} }
      local o = unpack(pack({ home = true }, setmetatable({}, other)))
      assert.not_equal(other, getmetatable(o))
      assert.is_table(getmetatable(o).__index)
    end)

    it("that the receiver does not know are an error naming the class", function()
      local s = "\1\7\0\0" .. CLASS .. "\14FarmSpecNoSuch\0\0"
      assert.matches("class 'FarmSpecNoSuch'.*not known here", errmsg(unpack, s))
      assert.equal(Dog, getmetatable(unpack("\1\7\0\0" .. CLASS .. "\11FarmSpecDog\0\0")))
    end)

    it("are recorded from the globals that arrive, and their fields", function()
      local genv = { Pets = { Parrot = { __index = { says = "hello" } } } }
      local f = load("return function() return Pets end", "=p", "t", genv)()
      local texts = { [f] = { chunk = "=p", line = 1, name = "f", where = "p:1",
                              text = "return function() return Pets end", globals = { "Pets" } } }
      local s = pack({ describe = function(g) return texts[g] end, globals = genv }, f)
      local env = {}
      unpack(s, { env = env, record = true })
      local parrot = setmetatable({}, env.Pets.Parrot)
      local back = pack({ home = true }, parrot)
      assert.truthy(back:find(CLASS .. "\11Pets.Parrot\0", 1, true))
    end)

    it("are checked as they arrive", function()
      assert.matches("^malformed message: a class where", errmsg(unpack, "\1" .. CLASS .. "\3Dog\0\0"))
      assert.matches("^malformed message: bad class name", errmsg(unpack, "\1\7\0\0" .. CLASS .. "\4a.b.\0\0"))
      assert.matches("^malformed message: bad class value", errmsg(unpack, "\1\7\0\0" .. CLASS .. "\3Dog\1\0"))
      assert.matches("^malformed message: ", errmsg(unpack, "\1\7\0\0" .. CLASS .. "\3Dog"))
    end)
  end)

  describe("sharing", function()
    local texts = setmetatable({}, { __mode = "k" })
    local function describe_fn(f) return assert(texts[f], "no text for this function") end
    local UPREF = string.char(14)

    local function counter()
      local n = 0
      local function inc() n = n + 1 end
      local function get() return n end
      texts[inc] = { chunk = "=c", line = 1, name = "inc", where = "c:1",
                     text = "local n; return function() n = n + 1 end" }
      texts[get] = { chunk = "=c", line = 1, name = "get", where = "c:1",
                     text = "local n; return function() return n end" }
      return inc, get
    end

    it("keeps closures that share an upvalue sharing it", function()
      local inc, get = counter()
      inc()
      local s = pack({ describe = describe_fn }, inc, get)
      assert.truthy(s:find(UPREF .. "\1\1n", 1, true))
      local i2, g2 = unpack(s)
      assert.equal(1, g2())
      i2(); i2()
      assert.equal(3, g2())
      assert.equal(1, get())                -- the sender's are their own
      assert.equal(debug.upvalueid(i2, 1), debug.upvalueid(g2, 1))
      -- one of them alone, or a copy each: nothing is joined
      local lone = unpack(pack({ describe = describe_fn }, get))
      assert.equal(1, lone())
    end)

    it("continues a block: its references reach the tables and upvalues of the one before", function()
      local inc, get = counter()
      local t = { v = 1 }
      local function job() inc(); return t end
      texts[job] = { chunk = "=j", line = 1, name = "job", where = "j:1",
                     text = "local inc, t; return function() inc(); return t end" }
      local keep = {}
      local fblock, nseen = pack({ describe = describe_fn, keep = keep }, job)
      assert.equal(3, nseen)                -- job, inc, t
      local args = pack({ describe = describe_fn, prior = keep, nprior = nseen }, t, get, { t })
      local chain = {}
      local f = unpack(fblock, { chain = chain })
      local x, g, y = unpack(args, { chain = chain })
      assert.is_true(rawequal(f(), x))
      assert.equal(x, y[1])
      assert.equal(1, g())
      f()
      assert.equal(2, g())
      -- without the chain, a reference to the block before is malformed
      assert.matches("^malformed message: bad reference", errmsg(unpack, args))
    end)

    it("checks upvalue references as they arrive", function()
      local FUNC = "\9"
      local text = "local n; return function() return n end"
      local fn = FUNC .. "\2=c\1" .. string.char(#text) .. text .. "\1\1n"
      assert.matches("^malformed message: bad upvalue reference",
        errmsg(unpack, "\1" .. fn .. UPREF .. "\2\1n\0"))
      assert.matches("^malformed message: function has no upvalue 'm'",
        errmsg(unpack, "\1" .. fn .. UPREF .. "\1\1m\0"))
      assert.matches("^malformed message: upvalue reference to something not a Lua function",
        errmsg(unpack, "\2\6\0\0" .. fn .. UPREF .. "\1\1n\0"))
      assert.matches("^malformed message: an upvalue reference where", errmsg(unpack, "\1" .. UPREF .. "\1\1n\0"))
      -- a reference to itself is fine
      assert.is_function(unpack("\1" .. fn .. UPREF .. "\1\1n\0"))
    end)
  end)

  describe("refuses what cannot travel", function()
    local function work_desc(t)
      return function() return t end
    end

    it("naming the argument path", function()
      assert.equal("cannot ship argument 2.conn (userdata)",
                   errmsg(pack, nil, 1, {conn = io.stdout}))
      assert.equal("cannot ship argument 1[3] (thread)",
                   errmsg(pack, nil, {1, 2, coroutine.create(print)}))
      assert.equal("cannot ship result 1.f (C function)",
                   errmsg(pack, {root = "result"}, {f = print}))
    end)

    it("naming the upvalue and its function", function()
      local conn = io.stdout
      local function work() return conn end
      local d = {chunk = "@job.lua", line = 12, text = "x", name = "work", where = "job.lua:12"}
      assert.equal("cannot ship upvalue 'conn' (userdata) of function 'work' (job.lua:12)",
                   errmsg(pack, {describe = work_desc(d)}, work))
      local cfg = {conn = io.stdout}
      local function work2() return cfg end
      assert.equal("cannot ship upvalue 'cfg.conn' (userdata) of function 'work' (job.lua:12)",
                   errmsg(pack, {describe = work_desc(d)}, work2))
    end)

    it("naming the global and the function that uses it", function()
      local genv = {db = io.stdout}
      local work = load("return function() return db end", "@job.lua", "t", genv)()
      local d = {chunk = "@job.lua", line = 12, text = "x", name = "work", where = "job.lua:12",
                 globals = {"db"}}
      assert.equal("cannot ship global 'db' (userdata) used by function 'work' (job.lua:12)",
                   errmsg(pack, {describe = work_desc(d), globals = genv}, work))
    end)

    it("too deep a table", function()
      local t = {} local x = t
      for _ = 1, 200 do x[1] = {} x = x[1] end
      assert.equal("cannot ship argument 1[1][1][1][1][1][1]...: its tables nest deeper than 200 levels, "
        .. "farm's limit (flatten it, or pass it as a string)", errmsg(pack, nil, t))
    end)
  end)

  describe("decoding what another host sent (untrusted)", function()
    -- the state's own global table (in a spec, _G is busted's environment)
    local RG = debug.getregistry()[2]
    local CLASS, MADE = string.char(13), "^malformed message: a function from another host runs code while it is made %("
    local BYVALUE = "malformed message: a value from another host carries a metatable by value " ..
                    "(only classes this side names may be metatables)"
    -- the texts of the functions a hostile node sends, by function
    local texts = setmetatable({}, { __mode = "k" })
    local function fn(text)
      local f = function() end
      texts[f] = { chunk = "=node", line = 1, name = "f", where = "node:1", globals = {}, text = text }
      return f
    end
    local function describe_fn(f) return assert(texts[f], "no text for this function") end
    local function hostile(text) return pack({ describe = describe_fn }, fn(text)) end
    -- decode, giving up after some millions of instructions: a loop is a failure, not a hang
    local function bounded(block, opts)
      local co = coroutine.create(function() return unpack(block, opts) end)
      debug.sethook(co, function() error("still running after 10,000,000 instructions") end, "", 1e7)
      local res = table.pack(coroutine.resume(co))
      return table.unpack(res, 1, res.n)
    end
    local marker = os.tmpname()
    before_each(function() os.remove(marker) end)
    after_each(function() os.remove(marker) end)
    local function exists(path)
      local f = io.open(path)
      if f then f:close() end
      return f ~= nil
    end

    it("runs none of the text around a function: an endless loop is refused, not run", function()
      local ok, err = bounded(hostile("while true do end return function() end"), { untrusted = true })
      assert.is_false(ok)
      assert.matches(MADE .. "JMP", err)
    end)

    it("nor a string method that would take a gigabyte of a 60-byte message", function()
      local block = hostile("local s = ('x'):rep(2^30) return function() end")
      assert.is_true(#block < 64)
      collectgarbage()
      local before = collectgarbage("count")
      local ok, err = bounded(block, { untrusted = true })
      assert.is_false(ok)
      assert.matches(MADE .. "SELF", err)
      assert.is_true(collectgarbage("count") - before < 1024, "the decode allocated a megabyte or more")
    end)

    it("nor a statement that reaches for os or io, nor a main chunk", function()
      local ok, err = bounded(hostile(("os.execute('touch %s') io.open('%s', 'w') return function() end")
                                      :format(marker, marker)), { untrusted = true })
      assert.is_false(ok)
      assert.matches(MADE .. "GETTABUP", err)
      assert.is_false(exists(marker))
      ok, err = bounded(hostile('return load("return 1", "=m", "t")'), { untrusted = true })
      assert.is_false(ok)
      assert.matches(MADE .. ".*no main chunk", err)
    end)

    it("nor a to-be-closed value with a __close", function()
      local ok, err = bounded(hostile("local c <close> = function() end return function() end"),
                              { untrusted = true })
      assert.is_false(ok)
      assert.matches(MADE .. "TBC", err)
    end)

    it("even when a trusted decode cached the same text", function()
      local block, cache = hostile("HOSTILE_WROTE = true return function() end"), {}
      unpack(block, { env = {}, cache = cache })
      local ok, err = bounded(block, { untrusted = true, cache = cache })
      assert.is_false(ok)
      assert.matches(MADE .. "SETTABUP", err)
    end)

    it("makes the functions of honest text, declarations and all", function()
      local block = hostile("local n, k <const>; local c <close>; return function(x) " ..
                            "return math.floor(x) + 1, n, k, c end")
      local f = unpack(block, { untrusted = true })
      assert.equal(3, (f(2.5)))
      local g = unpack(hostile("return function(t) local n = 0 for _, v in ipairs(t) do n = n + v end " ..
        "return string.format('%d %s %s', n, tostring(utf8.char(72)), table.concat(t, ',')) end"),
        { untrusted = true })
      assert.equal("6 H 1,2,3", g({ 1, 2, 3 }))
    end)

    it("gives the function an environment of its own: none of our globals, no os, no load", function()
      RG.SECRET = "ours"
      local f = unpack(hostile("return function() return SECRET, os, io, load, require, debug, package, " ..
                               "getmetatable, setmetatable, collectgarbage, dofile end"), { untrusted = true })
      local got = table.pack(f())
      RG.SECRET = nil
      for i = 1, got.n do assert.is_nil(got[i], "value " .. i .. " reached") end
      local open = unpack(hostile(("return function() local f = io.open('%s', 'w') f:write('x') f:close() end")
                                  :format(marker)), { untrusted = true })
      assert.is_false(pcall(open))
      assert.is_false(exists(marker))
      local env = select(2, debug.getupvalue(f, 1))
      assert.is_true(core.is_env(env))       -- shipped on, it travels as the global table again
      assert.not_equal(RG, env)
      assert.is_nil(getmetatable(env).__index)
    end)

    it("resolves no reference to our global table, os, io, debug or package for it", function()
      local ship = require "farm.ship"
      for name, v in pairs({ _G = RG, ["os.execute"] = os.execute, ["io.open"] = io.open,
                             ["debug.getregistry"] = debug.getregistry, package = package }) do
        local g = v
        local f = function() return g end
        texts[f] = { chunk = "=node", line = 1, name = "f", where = "node:1", globals = {},
                     text = "local g; return function() return g end" }
        local block = pack({ describe = describe_fn, names = { [v] = name } }, f)
        local ok, err = pcall(unpack, block, { untrusted = true, resolve = ship.resolve_loaded })
        assert.is_false(ok, name)
        assert.is_truthy(tostring(err):find("a value from another host may not", 1, true), err)
      end
      -- a library that stays in the state is still named
      local fl = math.floor
      local h = function() return fl end
      texts[h] = { chunk = "=node", line = 1, name = "h", where = "node:1", globals = {},
                   text = "local fl; return function() return fl end" }
      local got = unpack(pack({ describe = describe_fn, names = { [math.floor] = "math.floor" } }, h),
                         { untrusted = true, resolve = ship.resolve_loaded })
      assert.equal(math.floor, got())
    end)

    it("with copies of the libraries: what it writes there is its own", function()
      local f = unpack(hostile("return function() math.floor = nil; string.upper = nil; math.x = 1; " ..
                               "return math.x end"), { untrusted = true })
      assert.equal(1, f())
      assert.is_function(math.floor)
      assert.is_function(string.upper)
      assert.is_nil(math.x)
      assert.equal("X", ("x"):upper())
    end)

    it("refuses a metatable by value: its __gc never runs", function()
      local gc = fn(("return function() local f = io.open('%s', 'w') f:write('gc') f:close() end")
                   :format(marker))
      local block = pack({ describe = describe_fn }, setmetatable({}, { __gc = gc }))
      local ok, err = pcall(unpack, block, { untrusted = true })
      assert.is_false(ok)
      assert.equal(BYVALUE, err)
      collectgarbage()
      collectgarbage()
      assert.is_false(exists(marker))
    end)

    it("refuses a metatable by value however it comes", function()
      local Dog = { __index = { kind = "dog" } }
      local mt = { __index = {} }
      local named = setmetatable({}, { __class = function(m) return m == Dog and "FarmSpecDog" or nil end })
      local cases = {
        pack(nil, setmetatable({}, mt)),                                   -- a table
        pack({ names = named }, setmetatable({}, Dog)),                    -- a class with its copy
        pack(nil, mt, setmetatable({}, mt)),                               -- a table met before
        "\1\7\0\0\11\0",                                                -- the environment
      }
      RG.FarmSpecDog = Dog
      for i, block in ipairs(cases) do
        local ok, err = pcall(unpack, block, { untrusted = true })
        assert.is_false(ok, "case " .. i)
        assert.equal(BYVALUE, err, "case " .. i)
      end
      -- trusted, all of these decode
      assert.is_table(getmetatable(unpack(cases[1])))
      assert.is_table(getmetatable((unpack(cases[2]))))
      RG.FarmSpecDog = nil
    end)

    it("takes a class this side names, and a module value it has loaded, as metatables", function()
      local Dog = { __index = { kind = "dog" } }
      RG.FarmSpecDog = Dog
      -- as a worker's results name a class: by name, then as a reference to it (REF 2)
      local a, b = unpack("\2\7\0\0" .. CLASS .. "\11FarmSpecDog\0" .. "\7\0\0\8\2" .. "\0",
                          { untrusted = true })
      RG.FarmSpecDog = nil
      assert.equal(Dog, getmetatable(a))
      assert.equal(Dog, getmetatable(b))
      local block = "\1\7\0\0" .. CLASS .. "\11FarmSpecDog\0\0"
      assert.matches("class 'FarmSpecDog'.*not known here", select(2, pcall(unpack, block, { untrusted = true })))
      local m = unpack(pack({ names = { [Dog] = "dogs.Dog" } }, setmetatable({}, Dog)),
                       { untrusted = true, resolve = function(name) return name == "dogs.Dog" and Dog end })
      assert.equal(Dog, getmetatable(m))
    end)
  end)

  describe("refuses malformed input", function()
    it("truncated, trailing or unknown", function()
      local s = pack(nil, {1, "two", {3}})
      for i = 0, #s - 1 do
        assert.matches("^malformed message: ", errmsg(unpack, s:sub(1, i)))
      end
      assert.matches("^malformed message: .*trailing", errmsg(unpack, s .. "\0"))
      assert.matches("^malformed message: unknown tag", errmsg(unpack, "\1\99\0"))
    end)

    it("module references nested in their own loading information, too deep", function()
      local s = "\1" .. string.rep("\12\1m", 300) .. "\0"
      assert.matches("^malformed message: table nesting too deep",
        errmsg(unpack, s, { resolve = function() return {} end }))
    end)

    it("a huge count in a few bytes", function()
      assert.matches("^malformed message: ", errmsg(unpack, "\1\6\255\255\255\255\15\0\0"))
      assert.matches("^malformed message: ", errmsg(unpack, "\1\5\255\255\255\255\255\255\255\127"))
    end)

    -- raw bytes of the format in core/codec.h
    local function uvar(n)
      local t = {}
      repeat
        local b = n & 0x7f
        n = n >> 7
        t[#t + 1] = string.char(n > 0 and b | 0x80 or b)
      until n == 0
      return table.concat(t)
    end
    local function str(s) return uvar(#s) .. s end
    local TABLE, FUNC = "\6", "\9"

    it("tables nested in a message claiming its size at every level", function()
      -- each of 40 levels claims as many array slots as there are bytes after
      -- its header; the preallocation must be bounded by the whole message
      local size, parts, n = 256 * 1024, {"\1"}, 1
      for _ = 1, 40 do
        local h = TABLE .. uvar(size - n - 5) .. "\0"
        parts[#parts + 1] = h
        n = n + #h
      end
      parts[#parts + 1] = string.rep("\0", size - n)   -- elements of the innermost
      local s = table.concat(parts)
      assert.equal(size, #s)
      collectgarbage()
      collectgarbage("stop")    -- so that what the decode made is still counted after
      local before = collectgarbage("count")
      local ok, err = pcall(unpack, s)
      local grew = collectgarbage("count") - before
      collectgarbage("restart")
      collectgarbage()
      assert.is_false(ok)
      assert.matches("^malformed message: ", err)
      -- 40 levels of 256 Ki slots were 160 MiB; bounded, one level's worth
      assert.is_true(grew < 16 * 1024, ("grew by %.0f KiB"):format(grew))
    end)

    describe("functions far down their file", function()
      local function funcs(n, line, same)
        local t = {uvar(n)}
        for i = 1, n do
          t[#t + 1] = FUNC .. str("=x") .. uvar(line)
                      .. str("return function() return " .. (same and 0 or i) .. " end") .. uvar(0)
        end
        return table.concat(t) .. "\0"
      end

      it("past the line limit", function()
        local err = errmsg(unpack, funcs(64, 1 << 24))
        assert.matches("^malformed message: .*line.*limit", err)
      end)

      it("more lines in all than the message pays for", function()
        local s = funcs(64, 1000000)
        assert.is_true(#s < 4096)
        assert.matches("^malformed message: .*line.*limit", errmsg(unpack, s))
        -- one copy is fine, and keeps its line
        local f = unpack(funcs(1, 1000000))
        assert.equal(1000000, debug.getinfo(f, "S").linedefined)
      end)

      it("counting only what is compiled, not what the cache gives back", function()
        local s = funcs(64, 1000000, true)
        assert.matches("^malformed message: .*line.*limit", errmsg(unpack, s))
        local fs = {unpack(s, {cache = {}})}
        assert.equal(64, #fs)
        assert.equal(1000000, debug.getinfo(fs[64], "S").linedefined)
      end)
    end)
  end)
end)
