-- resize_spec.lua -- farm.set_workers (pp's set_ncpus): the local pool grows and
-- shrinks while a run goes on. Real `farm run` scripts on real workers; the
-- scripts assert what they see and print what the spec checks from outside.
local H = require "helper"

local function run(text, args, timeout)
  local r = H.run_script(text, args or "", timeout or 120)
  assert.are.equal(0, r.code, r.err .. r.out)
  return r
end

-- what every script starts with
local PRELUDE = [[
  local function mypid() return io.open("/proc/self/stat"):read("n") end
  local function slow(x, s)
    os.execute("sleep " .. (s or 0.2))
    return x * 2, io.open("/proc/self/stat"):read("n")
  end
  local function alive(pid) return os.execute("kill -0 " .. pid .. " 2>/dev/null") == true end
  local function wait_gone(pid)                -- a bound, not a time asserted
    for _ = 1, 600 do
      if not alive(pid) then return true end
      os.execute("sleep 0.05")
    end
    return false
  end
  local function wait_running(fs)
    for _ = 1, 2000 do
      local all = true
      for _, f in ipairs(fs) do all = all and f:status() == "running" end
      if all then return end
      os.execute("sleep 0.01")
    end
    error("the jobs did not start")
  end
  local ever = {}                              -- every worker pid seen
  local function note() for _, p in ipairs(farm._pids()) do ever[p] = true end end
  local function print_ever()
    local t = {}
    for p in pairs(ever) do t[#t + 1] = p end
    print("ever " .. table.concat(t, " "))
  end
  local function states()
    local t = {}
    for _, w in ipairs(farm.stats().workers) do t[w.state] = (t[w.state] or 0) + 1 end
    return t
  end
]]

-- after the run, no worker process it started is left
local function none_left(out)
  local pids = {}
  for p in (out:match("ever ([%d ]+)") or ""):gmatch("%d+") do pids[#pids + 1] = tonumber(p) end
  assert.is_true(#pids > 0, out)
  assert.is_true(H.wait_gone(pids, 10), "workers left: " .. table.concat(pids, " "))
end

describe("farm.set_workers", function()
  after_each(H.cleanup)

  it("grows the pool from 1 to 3 mid-run: 3 distinct workers run the jobs after", function()
    local r = run(PRELUDE .. [[
      assert(farm.workers() == 1)
      note()
      local first = farm.submit(slow, 0, 0.3)  -- runs while the pool grows
      farm.set_workers(3)
      note()
      print("workers " .. farm.workers())
      print("in a job " .. farm.submit(function() return farm.workers() end):result())
      local fs, seen, n = {}, {}, 0
      for i = 1, 12 do fs[i] = farm.submit(slow, i) end
      for i = 1, 12 do
        local v, p = fs[i]:result()
        assert(v == 2 * i, "wrong result")
        if not seen[p] then seen[p] = true; n = n + 1 end
      end
      print("distinct " .. n)
      print("first " .. first:result())
      local st = states()
      print("up " .. (st.up or 0) .. " entries " .. #farm.stats().workers .. " pids " .. #farm._pids())
      print_ever()
    ]], "-n 1")
    assert.is_truthy(r.out:find("workers 3\n", 1, true), r.out)
    assert.is_truthy(r.out:find("in a job 3\n", 1, true), r.out)
    assert.is_truthy(r.out:find("distinct 3\n", 1, true), r.out)
    assert.is_truthy(r.out:find("first 0\n", 1, true), r.out)
    assert.is_truthy(r.out:find("up 3 entries 3 pids 3\n", 1, true), r.out)
    none_left(r.out)
  end)

  it("shrinks from 3 to 1 while 3 long jobs run: they finish, later jobs run on one worker", function()
    local r = run(PRELUDE .. [[
      assert(farm.workers() == 3)              -- the pool starts
      local before = farm._pids()
      assert(#before == 3)
      note()
      local long = {}
      for i = 1, 3 do long[i] = farm.submit(slow, 10 + i, 0.5) end
      wait_running(long)
      farm.set_workers(1)
      print("workers " .. farm.workers())
      local st = states()
      print("right after: up " .. (st.up or 0) .. " retired " .. (st.retired or 0))
      local ran, n = {}, 0
      for i = 1, 3 do
        local v, p = long[i]:result()
        assert(v == 2 * (10 + i), "wrong result of a long job")
        if not ran[p] then ran[p] = true; n = n + 1 end
      end
      print("long jobs on " .. n .. " workers")
      local later, on = {}, {}
      for i = 1, 8 do later[i] = farm.submit(slow, i, 0.05) end
      local m = 0
      for i = 1, 8 do
        local v, p = later[i]:result()
        assert(v == 2 * i, "wrong result of a later job")
        if not on[p] then on[p] = true; m = m + 1 end
      end
      print("later jobs on " .. m .. " worker")
      -- the retired workers go while the run goes on
      local kept = next(on)
      local gone = 0
      for _, p in ipairs(before) do
        if p ~= kept and wait_gone(p) then gone = gone + 1 end
      end
      local pids = farm._pids()
      print("retired gone " .. gone .. " pids " .. #pids .. " " .. tostring(pids[1] == kept)
        .. " alive " .. tostring(alive(kept)))
      print("in a job " .. farm.submit(function() return farm.workers() end):result())
      st = states()
      print("then: up " .. (st.up or 0) .. " retired " .. (st.retired or 0) .. " workers " .. farm.workers())
      local zero = 0
      for _, w in ipairs(farm.stats().workers) do
        if w.state == "retired" and w.pid == 0 and w.jobs >= 1 then zero = zero + 1 end
      end
      print("retired with pid 0 and their jobs counted " .. zero)
      print_ever()
    ]], "-n 3")
    assert.is_truthy(r.out:find("workers 1\n", 1, true), r.out)
    assert.is_truthy(r.out:find("right after: up 1 retired 2\n", 1, true), r.out)
    assert.is_truthy(r.out:find("long jobs on 3 workers\n", 1, true), r.out)
    assert.is_truthy(r.out:find("later jobs on 1 worker\n", 1, true), r.out)
    assert.is_truthy(r.out:find("retired gone 2 pids 1 true alive true\n", 1, true), r.out)
    assert.is_truthy(r.out:find("in a job 1\n", 1, true), r.out)
    assert.is_truthy(r.out:find("then: up 1 retired 2 workers 1\n", 1, true), r.out)
    assert.is_truthy(r.out:find("retired with pid 0 and their jobs counted 2\n", 1, true), r.out)
    none_left(r.out)
  end)

  it("loses no job when it shrinks with jobs queued and prefetched, and grows again", function()
    local r = run(PRELUDE .. [[
      local function spin(x)
        local t = os.clock() + 0.01
        while os.clock() < t do end
        return x * x
      end
      local fs = {}
      for i = 1, 300 do fs[i] = farm.submit(spin, i) end
      note()
      farm.set_workers(1)
      for i = 301, 400 do fs[i] = farm.submit(spin, i) end
      farm.set_workers(4)
      note()
      farm.set_workers(2)
      for i = 401, 500 do fs[i] = farm.submit(spin, i) end
      local bad = 0
      for i = 1, 500 do if fs[i]:result() ~= i * i then bad = bad + 1 end end
      print("wrong " .. bad .. " workers " .. farm.workers())
      -- a retired worker that is gone starts again under its old name
      local entries = #farm.stats().workers
      farm.set_workers(1)
      for _ = 1, 600 do
        if #farm._pids() == 1 then break end
        os.execute("sleep 0.05")
      end
      assert(#farm._pids() == 1, "the retired workers did not go")
      farm.set_workers(4)
      note()
      local st = states()
      print("up " .. (st.up or 0) .. " reused " .. tostring(#farm.stats().workers == math.max(entries, 4))
        .. " workers " .. farm.workers())
      print(table.concat(farm.map(spin, { 1, 2, 3, 4 }), " "))
      print_ever()
    ]], "-n 3")
    assert.is_truthy(r.out:find("wrong 0 workers 2\n", 1, true), r.out)
    assert.is_truthy(r.out:find("up 4 reused true workers 4\n", 1, true), r.out)
    assert.is_truthy(r.out:find("1 4 9 16\n", 1, true), r.out)
    none_left(r.out)
  end)

  it("refuses a count that is not 1 to 256 in one line, exit 1", function()
    for _, bad in ipairs({ "0", '"x"', "257", "1.5" }) do
      local r = H.run_script("print(farm.workers())\nfarm.set_workers(" .. bad .. ")\nprint('not here')\n", "-n 1")
      assert.are.equal(1, r.code, bad .. ": " .. r.err)
      assert.are.equal(1, H.lines(r.err), r.err)
      assert.is_truthy(r.err:find("farm.set_workers: the number of workers must be an integer from 1 to 256",
        1, true), r.err)
      assert.are.equal("1\n", r.out)
    end
  end)

  it("is an error in a job, with its message", function()
    local r = run([[
      local f = farm.submit(function() farm.set_workers(2) end)
      local ok, err = pcall(f.result, f)
      print(ok, err.message)
      print(farm.workers())
    ]], "-n 1")
    assert.is_truthy(r.out:find("^false\t.*farm.set_workers: only the client can resize the pool\n1\n$"), r.out)
  end)

  it("sets the configured count before the pool starts", function()
    local r = run([[
      farm.set_workers(2)
      print(farm.workers(), #farm._pids())
      local p = farm.new { echo = false }
      p:set_workers(3)
      print(p:workers())
      p:set_workers(1)
      print(p:workers(), p:submit(function() return 7 end):result())
      p:close()
    ]], "-n 4")
    assert.are.equal("2\t2\n3\n1\t7\n", r.out)
  end)
end)
