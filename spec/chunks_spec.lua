-- chunks_spec.lua -- the text of every chunk is kept from the moment it is
-- loaded: the script of `farm run` (from a file, a pipe or stdin), dofile,
-- loadfile, require and load; and farm.remember for a chunk farm never saw.
-- Everything runs through `farm run` (or plain lua5.4) as a user runs it, with
-- real workers.
local H = require "helper"

local dirs = {}

-- a new empty directory, removed after each test
local function tmpdir()
  local d = os.tmpname()
  os.remove(d)
  assert(os.execute("mkdir -p " .. H.quote(d)))
  dirs[#dirs + 1] = d
  return d
end

-- farm run on a script given as text: its output, after checking it succeeded
local function run_ok(text, extra)
  local r = H.run_script(text, "-n 2 " .. (extra or ""))
  assert.are.equal(0, r.code, r.err)
  return r.out
end

describe("chunk texts", function()
  after_each(function()
    H.cleanup()
    for _, d in ipairs(dirs) do os.execute("rm -rf " .. H.quote(d)) end
    dirs = {}
  end)

  describe("the script of farm run", function()
    it("ships the text it was loaded with after the script rewrote its own file", function()
      assert.are.equal("42\t43\n", run_ok([[
local function work(x) return x * 2 end
local fh = assert(io.open(arg[0], "w"))
fh:write("-- nothing here any more\n")
fh:close()
local function later(x)
  return x + 1
end
print(farm.submit(work, 21):result(), farm.submit(later, 42):result())
]]))
    end)

    it("reads `-` from standard input: jobs run, arg[0] is '-', arguments follow", function()
      local path = H.tmp([[
print(arg[0], arg[1], select("#", ...), farm.submit(function(x) return x + 1 end, 1):result())
print(table.concat(farm.map(function(x) return x * x end, { 1, 2, 3 }), ","))
]])
      local r = H.sh("cat " .. H.quote(path) .. " | " .. H.quote(H.farm) .. " run - -n 2 a b")
      assert.are.equal(0, r.code, r.err)
      assert.are.equal("-\ta\t2\t2\n1,4,9\n", r.out)
    end)

    it("names standard input 'stdin' in errors, with line numbers after a #! line", function()
      local r = H.sh("printf '#!/usr/bin/env farm\\nlocal x = 1\\nerror(\"boom\")\\n' | "
        .. H.quote(H.farm) .. " run -")
      assert.are.equal(1, r.code, r.err)
      assert.are.equal("farm: stdin:3: boom\n", r.err)
    end)

    it("runs /dev/stdin from a file and from a pipe", function()
      local path = H.tmp("print(arg[0], farm.submit(function(x) return x * 3 end, 5):result())\n")
      local r = H.sh(H.quote(H.farm) .. " run /dev/stdin -n 1 < " .. H.quote(path))
      assert.are.equal(0, r.code, r.err)
      assert.are.equal("/dev/stdin\t15\n", r.out)
      r = H.sh("cat " .. H.quote(path) .. " | " .. H.quote(H.farm) .. " run /dev/stdin -n 1")
      assert.are.equal(0, r.code, r.err)
      assert.are.equal("/dev/stdin\t15\n", r.out)
    end)

    it("runs a script from a process substitution, <(...)", function()
      local path = H.tmp("print(farm.submit(function(x, y) return x .. y end, ...):result())\n")
      local r = H.sh("bash -c " .. H.quote(H.quote(H.farm) .. " run <(cat " .. H.quote(path)
        .. ") -n 1 -- a b"))
      assert.are.equal(0, r.code, r.err)
      assert.are.equal("ab\n", r.out)
    end)

    it("under plain lua5.4, keeps the script's text from require 'farm' on", function()
      local path = H.tmp([[
local farm = require "farm"
local function work(x) return x * 3 end
local fh = assert(io.open(arg[0], "w"))
fh:write("-- rewritten\n")
fh:close()
print(farm.submit(work, 5):result())
farm.close()
]])
      local r = H.sh("lua5.4 " .. H.quote(path))
      assert.are.equal(0, r.code, r.err)
      assert.are.equal("15\n", r.out)
    end)
  end)

  describe("files the script loads", function()
    it("ships the text dofile and loadfile loaded, for each version of a rewritten file", function()
      local d = tmpdir()
      assert.are.equal("2\t100\t-7\t8\n", run_ok(([[
local path = %q
local function put(text)
  local fh = assert(io.open(path, "w"))
  fh:write(text)
  fh:close()
end
put("return function(x) return x + 1 end\n")
local a = dofile(path)
put("return function(x) return x * 100 end\n")
local b = dofile(path)
put("#!shebang\nlocal k = -7\nreturn function(x) return x * k end\n")
local c = loadfile(path, "t", { })()
put("local k = 8\nreturn function(x) return x * k end\n")
local e = assert(loadfile(path))()
put("this is no Lua at all")
print(farm.submit(a, 1):result(), farm.submit(b, 1):result(),
      farm.submit(c, 1):result(), farm.submit(e, 1):result())
]]):format(d .. "/lib.lua")))
    end)

    it("ships functions of a module whose file was rewritten after require", function()
      local d = tmpdir()
      H.write(d .. "/mm.lua", [[
local M = {}
local function scale(x, k) return x * k end
function M.make(k)
  return function(x) return scale(x, k) end
end
return M
]])
      assert.are.equal("15\t6\n", run_ok(([[
package.path = %q .. "/?.lua;" .. package.path
local M = require "mm"
local fh = assert(io.open(%q, "w"))
fh:write("-- rewritten\nreturn {}\n")
fh:close()
local triple, double = M.make(3), M.make(2)
print(farm.submit(triple, 5):result(), farm.map(double, { 3 })[1])
]]):format(d, d .. "/mm.lua")))
    end)

    it("ships functions load()ed under a chunk name, each version its own text", function()
      assert.are.equal("3\t20\t-1\n", run_ok([[
local f = load("local k = 2\nreturn function(x) return x + k end", "=mine")()
local g = load("local k = 20\nreturn function(x) return x * k end", "=mine")()
local h = load("return function(x)\n  return -x\nend", "@/nonexistent/virtual.lua")()
print(farm.submit(f, 1):result(), farm.submit(g, 1):result(), farm.submit(h, 1):result())
]]))
    end)
  end)

  describe("farm.remember", function()
    it("makes a chunk farm never saw loaded shippable", function()
      assert.are.equal("false\tunknown\ntrue\t14\n", run_ok([[
-- the load farm's own load wraps: a chunk compiled past farm, as a C host's is
local raw
for i = 1, 10 do
  local n, v = debug.getupvalue(load, i)
  if n == "load" then raw = v end
end
assert(raw and debug.getinfo(raw, "S").what == "C")
local text = "local k = 7\nreturn function(x) return x * k end"
local f = raw(text, "=embedded")()
local ok, err = pcall(farm.submit, f, 2)
print(ok, err:find("the text of chunk '=embedded' is unknown", 1, true) and "unknown" or err)
farm.remember("=embedded", text)
print(pcall(function() return farm.submit(f, 2):result() end))
]]))
    end)

    it("checks its arguments", function()
      local out = run_ok([[
print(pcall(farm.remember, 1, "x"))
print(pcall(farm.remember, "=x"))
]])
      assert.is_truthy(out:find("farm.remember: argument #1 must be the chunk name", 1, true), out)
      assert.is_truthy(out:find("farm.remember: argument #2 must be the chunk's text", 1, true), out)
    end)
  end)

  it("lets load, loadfile and dofile held in upvalues travel by name", function()
    local d = tmpdir()
    H.write(d .. "/five.lua", "return 5\n")
    assert.are.equal("1\t5\t5\n", run_ok(([[
local myload, myloadfile, mydofile = load, loadfile, dofile
print(farm.submit(function(p)
  return myload("return 1")(), myloadfile(p)(), mydofile(p)
end, %q):result())
]]):format(d .. "/five.lua")))
  end)

  it("under plain lua5.4, lets load and dofile saved before require 'farm' travel by name", function()
    local d = tmpdir()
    H.write(d .. "/five.lua", "return 5\n")
    local path = H.tmp(([[
local rawload, rawdofile = load, dofile
local farm = require "farm"
print(farm.submit(function(p) return rawload("return 1")(), rawdofile(p) end, %q):result())
farm.close()
]]):format(d .. "/five.lua"))
    local r = H.sh("lua5.4 " .. H.quote(path))
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("1\t5\n", r.out)
  end)
end)
