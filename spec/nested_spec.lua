-- nested_spec.lua -- jobs that submit jobs and wait for them (SCOOP's nested
-- futures): through `farm run`, on real workers. A waiting job frees its
-- worker, so nothing deadlocks even with one worker.
local H = require "helper"

local function run(text, args, timeout, env)
  local r = H.run_script(text, args or "", timeout or 120, env)
  assert.are.equal(0, r.code, r.err)
  return r
end

describe("nested jobs", function()
  after_each(H.cleanup)

  it("computes fib(15) by recursive nested submits on one worker", function()
    local r = run([[
      local function fib(n)
        if n < 2 then return n end
        local a, b = farm.submit(fib, n - 1), farm.submit(fib, n - 2)
        return a:result() + b:result()
      end
      print(farm.submit(fib, 15):result(), farm.stats().submitted, farm.workers())
    ]], "-n 1")
    assert.are.equal("610\t1973\t1\n", r.out)
  end)

  it("runs nested maps 12 levels deep on two workers (SCOOP's recurse)", function()
    local r = run([[
      local function recurse(depth)
        if depth == 0 then return 1 end
        local r = farm.map(recurse, { depth - 1, depth - 1 })
        return r[1] + r[2]
      end
      print(farm.submit(recurse, 12):result())
    ]], "-n 2")
    assert.are.equal("4096\n", r.out)
  end)

  it("sorts with a parallel merge sort (SCOOP's sorting example)", function()
    local r = run([[
      local function msort(t)
        if #t <= 50 then table.sort(t); return t end
        local mid = #t // 2
        local l = farm.submit(msort, table.move(t, 1, mid, 1, {}))
        local r = farm.submit(msort, table.move(t, mid + 1, #t, 1, {}))
        local a, b, out, i, j = l:result(), r:result(), {}, 1, 1
        while i <= #a or j <= #b do
          if j > #b or (i <= #a and a[i] <= b[j]) then out[#out + 1] = a[i]; i = i + 1
          else out[#out + 1] = b[j]; j = j + 1 end
        end
        return out
      end
      math.randomseed(7)
      local t, want = {}, {}
      for i = 1, 3000 do t[i] = math.random(1, 1e6); want[i] = t[i] end
      table.sort(want)
      local s = farm.submit(msort, t):result()
      local same = #s == #want
      for i = 1, #want do same = same and s[i] == want[i] end
      print(same, #s)
    ]], "-n 2")
    assert.are.equal("true\t3000\n", r.out)
  end)

  it("gives a job its sub-job's error, which it may catch", function()
    local r = run([[
      local f = farm.submit(function()
        local g = farm.submit(function() error("deep trouble") end)
        local ok, err = pcall(g.result, g)
        return ok, err.message:match("deep trouble") ~= nil, err.traceback ~= ""
      end)
      print(f:result())
      local h = farm.submit(function() return farm.submit(function() error("uncaught") end):result() end)
      local ok, err = pcall(h.result, h)
      print(ok, tostring(err):match("uncaught") ~= nil)
    ]], "-n 2")
    assert.are.equal("false\ttrue\ttrue\nfalse\ttrue\n", r.out)
  end)

  it("lets a job use farm.wait and farm.as_completed on its own jobs", function()
    local r = run([[
      local f = farm.submit(function()
        local fs = {}
        for i = 1, 6 do fs[i] = farm.submit(function(x) return x * x end, i) end
        local done, pending = farm.wait(fs)
        local sum = 0
        for g in farm.as_completed(fs) do sum = sum + g:result() end
        return #done, #pending, sum
      end)
      print(f:result())
    ]], "-n 1")
    assert.are.equal("6\t0\t91\n", r.out)
  end)

  it("echoes what sub-jobs print, and keeps it in their futures", function()
    local r = run([[
      local f = farm.submit(function()
        local g = farm.submit(function() print("from the sub-job"); return 1 end)
        g:result()
        return g.stdout
      end)
      io.stderr:write("stdout: ", f:result())
    ]], "-n 1")
    assert.are.equal("from the sub-job\n", r.out)
    assert.is_truthy(r.err:find("stdout: from the sub-job", 1, true), r.err)
  end)

  it("echoes once and in order what a job prints around its waits", function()
    for _ = 1, 3 do
      local r = run([[
        local f = farm.submit(function()
          print("one")
          farm.submit(function() return 1 end):result()
          print("two")
          farm.submit(function() return 2 end):result()
          io.write("three")
          return 3
        end)
        f:result()
        io.stderr:write("[", f.stdout, "]")
      ]], "-n 1")
      assert.are.equal("one\ntwo\nthree\n", r.out)
      assert.are.equal("[one\ntwo\nthree]", r.err)
    end
  end)

  it("runs the jobs a job submitted without waiting for them, before the run ends", function()
    local path = os.tmpname()
    local r = run(([[
      local path = %q
      local function child(i) local f = io.open(path, "a"); f:write("child ", i, "\n"); f:close() end
      local function parent()
        for i = 1, 10 do farm.submit(child, i) end
        return "parent done"
      end
      farm.submit(parent)
    ]]):format(path), "-n 2")
    local n = H.lines(H.slurp(path))
    os.remove(path)
    assert.are.equal(10, n, r.err)
  end)

  it("nests 150 levels deep on one worker, and ships the script's globals at every level", function()
    local r = run([[
      local function chain(n) if n == 0 then return 0 end return farm.submit(chain, n - 1):result() + 1 end
      print(farm.submit(chain, 150):result())
      function isprime(n)
        if n < 2 then return false end
        for d = 2, math.floor(math.sqrt(n)) do if n % d == 0 then return false end end
        return true
      end
      function count(lo, hi) local c = 0; for i = lo, hi do if isprime(i) then c = c + 1 end end; return c end
      local function split(lo, hi, depth)
        if depth == 0 then return count(lo, hi) end
        local mid = (lo + hi) // 2
        local a, b = farm.submit(split, lo, mid, depth - 1), farm.submit(split, mid + 1, hi, depth - 1)
        return a:result() + b:result()
      end
      print(farm.submit(split, 1, 10000, 4):result(), farm.submit(function() return farm.workers() end):result())
    ]], "-n 1")
    assert.are.equal("150\n1229\t1\n", r.out)
  end)

  it("cancels a job that waits on its jobs only by force, and its jobs with it", function()
    local r = run([[
      local p = farm.submit(function()
        local c = farm.submit(function() while true do end end)
        return c:result()
      end)
      while p:status() ~= "running" do farm.wait({p}, {timeout = 0.05}) end
      local t = 0
      while farm.stats().submitted < 2 and t < 200 do farm.wait({p}, {timeout = 0.05}); t = t + 1 end
      print(p:cancel(), p:status())
      print(p:cancel{force = true}, p:status())
      local inner = farm.submit(function()
        local ok, err = pcall(function() farm.submit(function() end):cancel() end)
        return ok, err:match("cannot cancel its own jobs") ~= nil
      end)
      print(inner:result())
    ]], "-n 2", 60)
    assert.are.equal("false\trunning\ntrue\tcancelled\nfalse\ttrue\n", r.out)
  end)

  it("waits by blocking inside a coroutine of the job's own, even two such jobs on one worker", function()
    local r = run([[
      local function parent(k)
        local co = coroutine.wrap(function()
          return farm.submit(function(x) return x end, k):result() + 1
        end)
        return co()
      end
      local f, g = farm.submit(parent, 41), farm.submit(parent, 1)
      print(f:result(), g:result())
    ]], "-n 1", 60)
    assert.are.equal("42\t2\n", r.out)
  end)

  it("gives a job the results of many big sub-jobs under a small link limit", function()
    local r = run([[
      local f = farm.submit(function()
        local fs = {}
        for i = 1, 30 do fs[i] = farm.submit(function(n) return string.rep("x", n) end, 40000) end
        local total = 0
        for i = 1, 30 do total = total + #fs[i]:result() end
        return total
      end)
      print(f:result())
    ]], "-n 3", 60, "FARM_MAX_MESSAGE=65536")
    assert.are.equal("1200000\n", r.out)
  end)

  it("times a job out with its waits counted", function()
    local r = run([[
      local f = farm.submit_with({ timeout = 1 }, function()
        for _ = 1, 3 do farm.submit(function() local t = os.clock() + 1 while os.clock() < t do end end):result() end
        return "finished"
      end)
      local ok, err = pcall(f.result, f)
      print(ok, err.message:match("timed out") ~= nil, farm.workers())
    ]], "-n 2", 60)
    assert.are.equal("false\ttrue\t2\n", r.out)
  end)

  it("moves sub-jobs waiting behind a long job to the worker their parent frees", function()
    local r = run([[
      local long = farm.submit(function() local t = os.clock() + 20 while os.clock() < t do end return "long" end)
      while long:status() ~= "running" do farm.wait({long}, {timeout = 0.05}) end
      local parent = farm.submit(function()
        local fs = {}
        for i = 1, 6 do fs[i] = farm.submit(function(x) local t = os.clock() + 0.1 while os.clock() < t do end return x end, i) end
        local s = 0
        for i = 1, 6 do s = s + fs[i]:result() end
        return s
      end)
      print(parent:result(), long:status())
      long:cancel{force = true}
    ]], "-n 2", 60)
    assert.are.equal("21\trunning\n", r.out)
  end)

  it("waits by blocking inside a coroutine of the job's own (two workers)", function()
    local r = run([[
      local f = farm.submit(function()
        local co = coroutine.wrap(function()
          return farm.submit(function() return 41 end):result() + 1
        end)
        return co()
      end)
      print(f:result())
    ]], "-n 2")
    assert.are.equal("42\n", r.out)
  end)

  it("reruns a waiting job whose worker died, and still gets every result", function()
    local marker = os.tmpname()
    local r = run(([[
      local marker = %q
      local f = farm.submit(function()
        local g = farm.submit(function() return 20 end)
        local h = farm.submit(function() return 22 end)
        local first = io.open(marker, "r") == nil
        if first then io.open(marker, "w"):close(); os.exit(9) end
        return g:result() + h:result()
      end)
      print(f:result(), f:status())
    ]]):format(marker), "-n 2")
    os.remove(marker)
    assert.are.equal("42\tdone\n", r.out)
  end)

  it("starts a job's sub-jobs while it computes on, before it waits for them", function()
    local marker = os.tmpname()
    os.remove(marker)
    local r = run(([[
      print(farm.submit(function(m)
        local f = farm.submit(function(m) io.open(m, "w"):close() return 1 end, m)
        local t = os.time() + 30                -- computes until the sub-job has run
        while not io.open(m, "r") and os.time() < t do end
        return os.time() < t, f:result()
      end, %q):result())
    ]]):format(marker), "-n 2")
    os.remove(marker)
    assert.are.equal("true\t1\n", r.out)
  end)

  it("gives a job's own jobs retries (submit_with in a job), and refuses a timeout or a callback there", function()
    local marker = os.tmpname()
    os.remove(marker)
    local r = run(([[
      local marker = %q
      print(farm.submit(function(m)
        -- a sub-job that kills its worker once is tried again only when retries allow
        local once = function(m)
          local h = io.open(m, "r")
          if not h then io.open(m, "w"):close() os.exit(7) end
          h:close()
          return "again"
        end
        -- this job keeps its worker busy until the sub-job has run (on the other
        -- worker, then): a worker that dies takes the jobs waiting there with it
        local function busy_until(path)
          local t = os.time() + 20
          while not io.open(path, "r") and os.time() < t do end
        end
        local none = farm.submit_with({ retries = 0 }, once, m .. ".a")
        busy_until(m .. ".a")
        local ok, e = pcall(none.result, none)
        local one = farm.submit_with({ retries = 1 }, once, m .. ".b")
        busy_until(m .. ".b")
        return ok, tostring(e.message):match("worker exited with status 7") ~= nil, one:result()
      end, marker):result())
      for _, o in ipairs({ "{ callback = print }", "{ timeout = 1 }" }) do
        print(pcall(function() return farm.submit(function(o)
          return farm.submit_with(load("return " .. o)(), print):result() end, o):result() end))
      end
    ]]):format(marker), "-n 2")
    os.remove(marker .. ".a")
    os.remove(marker .. ".b")
    assert.is_truthy(r.out:find("false\ttrue\tagain\n", 1, true), r.out)
    assert.is_truthy(r.out:find("a job's own jobs take retries, not a callback", 1, true), r.out)
    assert.is_truthy(r.out:find("a job's own jobs take retries, not a timeout", 1, true), r.out)
  end)
end)
