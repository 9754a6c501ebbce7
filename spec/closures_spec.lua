-- closures_spec.lua -- a function written in the call: each new closure of one
-- `function` expression finds what farm knows of that expression by its
-- prototype (core.protoid, lua/ship.lua, lua/farm.lua's package), and that
-- cache never hands one closure what belongs to another.
local farm = require "farm"
local core = require "farm.core"

local function results(fs)
  local out = {}
  for i, f in ipairs(fs) do out[i] = f:result() end
  return out
end

describe("a function written in the call", function()
  setup(function() farm.close(); farm.config { workers = 2, echo = false } end)
  teardown(function() farm.close(); farm.config { workers = 2, echo = true } end)

  it("has a prototype id: one per expression, none for a C function", function()
    local mk = function(k) return function(x) return x + k end end
    local a, b = mk(1), mk(2)
    local c = function(x) return x + 1 end
    assert.is_not_nil(core.protoid(a))           -- the layout check passed: the cache is on
    assert.are.equal(core.protoid(a), core.protoid(b))
    assert.are_not.equal(core.protoid(a), core.protoid(c))
    assert.is_nil(core.protoid(print))
    assert.is_nil(core.protoid(io.write))
  end)

  it("runs the same in a loop as named once", function()
    local fs = {}
    for i = 1, 2000 do fs[i] = farm.submit(function(x) return x + 1 end, i) end
    local out = results(fs)
    for i = 1, 2000 do assert.are.equal(i + 1, out[i]) end
  end)

  it("gives each closure its own upvalues, by value and by name", function()
    local fs = {}
    for i = 1, 6 do fs[i] = farm.submit(function(x) return x * i end, 10) end
    assert.are.same({ 10, 20, 30, 40, 50, 60 }, results(fs))
    local ops = { string.upper, string.lower, string.upper, string.reverse }
    fs = {}
    for i, op in ipairs(ops) do fs[i] = farm.submit(function(s) return op(s) end, "Ab") end
    assert.are.same({ "AB", "ab", "AB", "bA" }, results(fs))
  end)

  it("sees an upvalue that changed between two closures", function()
    local op, k = string.upper, 1
    local fs = {}
    for i = 1, 6 do
      if i == 3 then op = string.lower end
      if i == 5 then k = 2 end
      fs[i] = farm.submit(function(s) return op(s):rep(k) end, "Ab")
    end
    assert.are.same({ "AB", "AB", "ab", "ab", "abab", "abab" }, results(fs))
  end)

  it("does not confuse two functions written on one line", function()
    local fs = {}
    for i = 1, 5 do
      fs[2 * i - 1], fs[2 * i] = farm.submit(function(x) return x + 1 end, i), farm.submit(function(x) return x - 1 end, i)
    end
    assert.are.same({ 2, 0, 3, 1, 4, 2, 5, 3, 6, 4 }, results(fs))
  end)

  it("does not confuse a function redefined as a REPL does, under one chunk name", function()
    -- each line compiled anew under the same name and dropped: a prototype
    -- freed may leave its address to the next one
    for i = 1, 60 do
      local src = ("return function(x) return x + %d end"):format(i)
      local f = assert(load(src, "=stdin"))()
      assert.are.equal(1000 + i, farm.submit(f, 1000):result())
      f = nil
      collectgarbage()
    end
    local texts = { "return function(x) return x * 2 end", "return function(x) return x * 3 end" }
    for round = 1, 3 do
      for j, text in ipairs(texts) do
        local f = assert(load(text, "=stdin"))()
        assert.are.equal(10 * (j + 1), farm.submit(f, 10):result(), "round " .. round)
      end
      collectgarbage()
    end
  end)

  it("does not confuse closures of one expression holding different modules, or nil", function()
    local mods = { string, math, string, false }
    local fs = {}
    for i, m in ipairs(mods) do
      fs[i] = farm.submit(function(x) return m and (m == string and "string" or "math") or "none" end, i)
    end
    assert.are.same({ "string", "math", "string", "none" }, results(fs))
  end)
end)
