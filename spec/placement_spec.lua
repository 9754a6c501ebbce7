-- placement_spec.lua -- where a job runs (submit_with{node = name}, as dispy's
-- submit_node) and what a script sees of its run (farm.on_event, as dispy's
-- cluster_status callback): `farm run` scripts on the local pool, and with one
-- real standing `farm node` on 127.0.0.1, started and stopped by pid.
local H = require "helper"

local q = H.quote

local function run(script, args, env)
  local path = H.tmp(script, ".lua")
  return H.sh(("%s%s run %s %s"):format(env or "", q(H.farm), args or "", q(path)), 120)
end

describe("farm.on_event", function()
  after_each(H.cleanup)

  it("tells each job's start and end, in order, with its future and where it ran", function()
    local r = run([[
      local farm = require "farm"
      local seen, order = {}, {}
      farm.on_event(function(ev)
        order[#order + 1] = ev
        if ev.job then
          seen[ev.job] = seen[ev.job] or {}
          table.insert(seen[ev.job], ev.event)
          assert(ev.future and ev.future:id() == ev.job, "no future for job " .. ev.job)
          assert(ev.node == "local" and ev.worker:match("^local:%d$"), ev.node .. " " .. tostring(ev.worker))
        end
        assert(type(ev.time) == "number" and math.abs(ev.time - os.time()) < 60, "time " .. tostring(ev.time))
      end)
      local ok = farm.submit(function(x) return x * 2 end, 21)
      local bad = farm.submit(function() error("boom") end)
      local slow = farm.submit(function() local t = os.clock() + 30 while os.clock() < t do end end)
      assert(ok:result() == 42)
      assert(not pcall(bad.result, bad))
      while slow:status() ~= "running" do farm.wait({ slow }, { timeout = 0.05 }) end
      assert(slow:cancel{ force = true })
      farm.close()
      for _, f in ipairs { ok, bad, slow } do
        print(f:id(), table.concat(seen[f:id()] or {}, ","))
      end
      for _, ev in ipairs(order) do
        if ev.event == "job_failed" then print("error:", ev.error) end
      end
    ]])
    assert.are.equal(0, r.code, r.err)
    -- each job: started first, then exactly one end of the right kind
    local ids = {}
    for id, list in r.out:gmatch("(%d+)\t([%w_,]*)\n") do ids[#ids + 1] = { tonumber(id), list } end
    assert.are.same({ { 1, "job_started,job_done" }, { 2, "job_started,job_failed" },
                      { 3, "job_started,job_cancelled" } }, ids)
    assert.is_truthy(r.out:find("error:\t[^\n]*:%d+: boom"), r.out)
  end)

  it("refuses what is not a function, with the call's line", function()
    local r = run([[
      local farm = require "farm"
      farm.on_event(42)
    ]])
    assert.are_not.equal(0, r.code)
    assert.is_truthy(r.err:find(":2: farm.on_event: argument must be a function, or nil to stop (got number)", 1, true), r.err)
  end)

  it("says which event function failed, and goes on", function()
    local r = run([[
      local farm = require "farm"
      local n = 0
      farm.on_event(function(ev) n = n + 1; if ev.event == "job_done" then error("my bug") end end)
      for i = 1, 3 do farm.submit(function(x) return x end, i):result() end
      farm.close()
      print("events", n)
    ]])
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("events\t6", r.out:match("events\t%d+"))
    local _, fails = r.err:gsub("farm: the event function failed on job_done: [^\n]*my bug", "")
    assert.are.equal(3, fails, r.err)
  end)
end)

describe("submit_with{node = ...} on the local pool", function()
  after_each(H.cleanup)

  it("runs a job placed on \"local\" there, and refuses a node the pool does not have", function()
    local r = run([[
      local farm = require "farm"
      local f = farm.submit_with({ node = "local" }, function() return 7 end)
      assert(f:result() == 7)
      print("worker", f.worker)
      local ok, err = pcall(farm.submit_with, { node = "nowhere" }, print)
      print(err)
      ok, err = pcall(farm.submit_with, { node = 5 }, print)
      print(err)
    ]])
    assert.are.equal(0, r.code, r.err)
    assert.is_truthy(r.out:find("worker\tlocal:%d"), r.out)
    assert.is_truthy(r.out:find("farm.submit_with: this pool has no node 'nowhere' (it has: local)", 1, true), r.out)
    assert.is_truthy(r.out:find("farm.submit_with: node must be a node's name as farm.nodes() gives it, "
      .. 'or "local" (got number)', 1, true), r.out)
  end)
end)

describe("with a standing node", function()
  local bed = H.node_bed("placement", 26000)
  before_each(bed.setup)
  after_each(function() bed.teardown(); H.cleanup() end)

  local function start_node() return bed.start(nil, "FARM_WHERE=node ") end

  it("makes a pool of some hosts only (dispy's nodes= per cluster), beside one of the local workers", function()
    start_node()
    local r = run(([[
      local farm = require "farm"
      local remote = farm.new{ hosts = "node://127.0.0.1:%d", key_file = %q, local_workers = false }
      local here = farm.new{ workers = 1 }
      local where = function() return os.getenv("FARM_WHERE") or "client" end
      local a, b = {}, {}
      for i = 1, 10 do a[i] = remote:submit(where); b[i] = here:submit(where) end
      for i = 1, 10 do
        assert(a[i]:result() == "node", "the pool of the node ran a job at " .. a[i]:result())
        assert(b[i]:result() == "client", "the local pool ran a job at " .. b[i]:result())
      end
      print("nodes", #remote:nodes(), #here:nodes(), "workers", remote:workers(), here:workers())
      remote:close(); here:close()
    ]]):format(bed.port, bed.key), "-n 1")
    assert.are.equal(0, r.code, r.err .. r.out)
    assert.is_truthy(r.out:find("nodes\t1\t0\tworkers\t2\t1\n"), r.out)
  end)

  it("runs placed jobs only where they were placed; a job placed on a node that leaves fails saying so", function()
    local node = start_node()
    local r = run(([[
      local farm = require "farm"
      local events = {}
      farm.on_event(function(ev)
        if not ev.job then events[#events + 1] = ev.event .. " " .. ev.node .. " " .. (ev.reason or "") end
      end)
      farm.workers()                      -- (the pool starts: its nodes are known)
      local name = farm.nodes()[1].host
      local where = function() return os.getenv("FARM_WHERE") or "client" end
      local there, here = {}, {}
      for i = 1, 20 do
        there[i] = farm.submit_with({ node = name }, where)
        here[i] = farm.submit_with({ node = "local" }, where)
      end
      for i = 1, 20 do
        assert(there[i]:result() == "node", "placed on the node, ran at " .. there[i]:result())
        assert(there[i].node == name, tostring(there[i].node))
        assert(here[i]:result() == "client", "placed here, ran at " .. here[i]:result())
      end
      -- the node leaves (SIGTERM) with placed jobs running and queued there
      local long = {}
      for i = 1, 6 do
        long[i] = farm.submit_with({ node = name }, function() os.execute("sleep 20") return "late" end)
      end
      while long[1]:status() ~= "running" do farm.wait({ long[1] }, { timeout = 0.05 }) end
      os.execute("kill %d")
      for i = 1, 6 do
        local ok, err = pcall(long[i].result, long[i], 60)
        assert(not ok, "a job placed on the node that left ran elsewhere")
        print("failed:", err.message)
      end
      local ok, err = pcall(farm.submit_with, { node = name }, where)
      print("after:", err)
      farm.close()
      for _, e in ipairs(events) do print("event:", e) end
    ]]):format(node), ("-n 1 --hosts node://127.0.0.1:%d --key-file %s"):format(bed.port, q(bed.key)))
    assert.are.equal(0, r.code, r.err .. r.out)
    local _, failed = r.out:gsub("failed:\tfarm: the job was placed on node://127.0.0.1:" .. bed.port
      .. " %(submit_with{node = %.%.%.}%), which is gone from this run", "")
    assert.are.equal(6, failed, r.out)
    assert.is_truthy(r.out:find("after:\t[^\n]*farm.submit_with: node node://127.0.0.1:" .. bed.port
      .. " was lost in this run; place the job elsewhere"), r.out)
    assert.is_truthy(r.out:find("event:\tnode_up node://127.0.0.1:" .. bed.port, 1, true), r.out)
    assert.is_truthy(r.out:find("event:\tnode_lost node://127.0.0.1:" .. bed.port .. " [^\n]*stopping"), r.out)
  end)
end)
