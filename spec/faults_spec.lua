-- faults_spec.lua -- what goes wrong at the edges: workers dying under a batch,
-- hostile error objects, polling loops, cancelling jobs waiting at a worker,
-- output from anywhere, limits. Real workers throughout.
local farm = require "farm"
local H = require "helper"

local function spin(s)
  return function() local t = os.clock() + s; while os.clock() < t do end; return s end
end

describe("faults and edges", function()
  after_each(function() farm.close(); H.cleanup() end)

  it("takes many arguments, many results, and many lists", function()
    farm.config { workers = 2, echo = false }
    local args = {}
    for i = 1, 200 do args[i] = i end
    assert.are.equal(200, select("#", farm.submit(function(...) return ... end, table.unpack(args)):result()))
    local n = select("#", farm.submit(function() return table.unpack(args) end):result())
    assert.are.equal(200, n)
    local many = {}
    for i = 1, 60 do many[i] = { i, i + 1 } end
    local out = farm.map(function(...) return select("#", ...) end, table.unpack(many))
    assert.are.same({ 60, 60 }, out)
  end)

  it("blames only the job that killed its worker, not the others it held", function()
    farm.config { workers = 1, echo = false }
    farm.map(function(x) return x end, { 1, 2, 3, 4, 5, 6, 7, 8 })   -- credit up: jobs travel together
    local fs = { farm.submit(function() os.exit(7) end) }
    for i = 2, 6 do fs[i] = farm.submit(function(x) return x * 10 end, i) end
    local ok, err = pcall(fs[1].result, fs[1], 30)
    assert.is_false(ok)
    assert.is_truthy(tostring(err):find("worker exited with status 7", 1, true))
    assert.is_truthy(err.worker:find("^local:1"))
    for i = 2, 6 do assert.are.equal(i * 10, fs[i]:result(30)) end
  end)

  it("survives error objects whose __tostring raises or lies", function()
    farm.config { workers = 1, echo = false }
    local f1 = farm.submit(function()
      error(setmetatable({}, { __tostring = function() error("nested") end }))
    end)
    local f2 = farm.submit(function()
      error(setmetatable({}, { __tostring = function() return 42 end }))
    end)
    local f3 = farm.submit(function() return "still here" end)
    local ok, err = pcall(f1.result, f1)
    assert.is_false(ok)
    assert.is_truthy(err.message:find("error object is a table value", 1, true), err.message)
    ok, err = pcall(f2.result, f2)
    assert.is_false(ok)
    assert.are.equal("still here", f3:result())
    assert.are.equal(1, #farm._pids())
  end)

  it("makes progress for polling loops and zero timeouts", function()
    farm.config { workers = 2, echo = false }
    local f = farm.submit(function() return 2 end)
    while not f:done() do end
    assert.are.equal("done", f:status())
    local g = farm.submit(function() return 3 end)
    while g:status() ~= "done" do end
    local fs = { farm.submit(function() return 4 end) }
    fs[1]:result()
    local done, pending = farm.wait(fs, { timeout = 0 })
    assert.are.equal(1, #done)
    assert.are.equal(0, #pending)
    for h in farm.as_completed(fs, 0) do assert.are.equal(4, h:result(0)) end
    local slow = farm.submit(spin(0.3))
    local ok, err = pcall(slow.result, slow, 0 / 0)
    assert.is_false(ok)
    assert.is_truthy(tostring(err):find("timeout must be a number", 1, true))
  end)

  it("forgets cached functions only between batches", function()
    farm.config { workers = 1, echo = false }
    local function mk(k) return function() return k end end
    local keep = {}
    for i = 1, 50 do keep[i] = mk(-i) end
    local fs = {}
    for i = 1, 5000 do
      fs[#fs + 1] = farm.submit(keep[i % 50 + 1])   -- known: travels as a hash
      fs[#fs + 1] = farm.submit(mk(i))              -- new each time: fills the cache
    end
    local failed = 0
    for i = 1, #fs do if not pcall(fs[i].result, fs[i]) then failed = failed + 1 end end
    assert.are.equal(0, failed)
  end)

  it("cancels a job waiting at a worker, and says which one runs", function()
    farm.config { workers = 1, echo = false }
    local marker = os.tmpname()
    os.remove(marker)
    local first = farm.submit(spin(0.6))
    local waiting = farm.submit(function(path)
      local f = io.open(path, "w"); f:write("ran"); f:close()
    end, marker)
    while first:status() ~= "running" do end
    assert.are.equal("pending", waiting:status())     -- handed over, not started
    assert.is_true(waiting:cancel())
    assert.are.equal("cancelled", waiting:status())
    assert.is_false(first:cancel())
    first:result()
    assert.are.equal(1, farm.submit(function() return 1 end):result())
    assert.is_nil(io.open(marker))                     -- the worker skipped it
  end)

  it("captures output from io.stdout, io.write, print and child processes", function()
    farm.config { workers = 1, echo = false }
    local f = farm.submit(function()
      print("p")
      io.write("w\n")
      io.stdout:write("s\n")
      os.execute("echo child")
    end)
    f:result()
    assert.are.equal("p\nw\ns\nchild\n", f.stdout)
    local silent = farm.submit(function() end)
    silent:result()
    assert.is_nil(silent.stdout)
  end)

  it("sends the results waiting before a long job while it runs", function()
    farm.config { workers = 1, echo = false }
    farm.map(function(x) return x end, { 1, 2, 3, 4 })
    local short = farm.submit(function() return "short" end)
    local long = farm.submit(spin(4))
    local deadline = os.time() + 3
    while not short:done() and os.time() < deadline do end
    assert.is_true(short:done())
    assert.is_false(long:done())
    long:result()
  end)

  it("sends jobs submitted one by one in batches", function()
    farm.config { workers = 2, echo = false }
    local inc = function(x) return x + 1 end
    farm.submit(inc, 0):result()
    local before = farm.stats().batches_sent
    local fs = {}
    for i = 1, 100000 do fs[i] = farm.submit(inc, i) end
    for i = 1, 100000 do assert(fs[i]:result() == i + 1) end
    local batches = farm.stats().batches_sent - before
    assert.is_true(batches < 20000, ("100000 jobs took %d messages"):format(batches))
  end)

  it("keeps messages under a small link limit", function()
    farm.config { workers = 2, echo = false, max_message = 1024 * 1024 }
    local s = string.rep("a", 600 * 1024)
    local fs = {}
    for i = 1, 20 do fs[i] = farm.submit(function(x) return #x end, s) end
    for i = 1, 20 do assert.are.equal(#s, fs[i]:result(30)) end
    fs = {}
    for i = 1, 200 do fs[i] = farm.submit(function() return string.rep("r", 100 * 1024) end) end
    for i = 1, 200 do assert.are.equal(100 * 1024, #fs[i]:result(30)) end
    farm.close()
    farm.config { max_message = 256 * 1024 * 1024 }
  end)

  it("raises, not crashes, on a future resurrected after collection", function()
    farm.config { workers = 1, echo = false }
    local saved
    do
      local f = farm.submit(function() return 1 end)
      f:result()
      setmetatable({}, { __gc = function() saved = f end })
    end
    collectgarbage(); collectgarbage()
    assert.is_not_nil(saved)                       -- the finalizer brought it back
    local ok, err = pcall(saved.status, saved)
    assert.is_false(ok)
    assert.is_truthy(tostring(err):find("already collected", 1, true))
  end)
end)
