-- rejoin_spec.lua -- nodes that come back, and nodes added to a running client
-- (issue 20): a standing node restarted at the same address, or frozen
-- (SIGSTOP) past the heartbeat limit and resumed, is taken back into the same
-- run; farm.add_nodes adds one mid-run; and a node that was frozen serves the
-- next client. `farm run` scripts through real `farm node`s on 127.0.0.1,
-- started and stopped by pid.
local H = require "helper"

local q = H.quote

-- every process of a node, children first (STOP or CONT)
local function tree(sig, pid)
  return ("env -u LD_PRELOAD sh -c 'tree() { for k in $(pgrep -P $1); do tree $k; done; kill -%s $1; }; tree %d'")
    :format(sig, pid)
end

-- The script's part shared by the tests: events kept, a job that takes a
-- moment, and a check that every job ended exactly once (by its events).
local COMMON = [[
  local farm = require "farm"
  local ends, rejoined, lost = {}, 0, 0
  farm.on_event(function(ev)
    if ev.job and (ev.event == "job_done" or ev.event == "job_failed" or ev.event == "job_cancelled") then
      ends[ev.job] = (ends[ev.job] or 0) + 1
    elseif ev.event == "node_up" and ev.rejoined then rejoined = rejoined + 1
    elseif ev.event == "node_lost" then lost = lost + 1 end
  end)
  local function work(x)
    local t = os.clock() + 0.02
    while os.clock() < t do end
    return x
  end
  local fs, n = {}, 0
  local function batch(k)
    for _ = 1, k do n = n + 1; fs[n] = farm.submit(work, n) end
    for i = n - k + 1, n do fs[i]:result(60) end
  end
  -- batches until one ran a job on node after it came back (nil: not within 60 s)
  local function runs_there_again(node)
    local t0 = os.time()
    while os.time() - t0 < 60 do
      batch(20)
      if rejoined > 0 then
        for i = n - 19, n do if fs[i].node == node then return true end end
      end
    end
  end
  local function report()
    local sum, once = 0, 0
    for i = 1, n do sum = sum + fs[i]:result() end
    farm.close()
    for i = 1, n do once = once + (ends[fs[i]:id()] == 1 and 1 or 0) end
    print("jobs", n, "sum right", sum == n * (n + 1) // 2, "each ended once", once == n)
    print("lost", lost, "rejoined", rejoined)
  end
]]

local function check(r)
  assert.are.equal(0, r.code, r.err .. r.out)
  local n = r.out:match("jobs\t(%d+)\tsum right\ttrue\teach ended once\ttrue\n")
  assert.is_truthy(n, r.out .. r.err)
end

describe("a standing node that comes back", function()
  local bed = H.node_bed("rejoin", 28000)
  before_each(bed.setup)
  after_each(bed.teardown)

  local function hosts() return ("--hosts node://127.0.0.1:%d --key-file %s"):format(bed.port, q(bed.key)) end
  local function url() return "node://127.0.0.1:" .. bed.port end

  it("restarted at the same address mid-run (SIGTERM, a new one on the port) rejoins and runs jobs again", function()
    local pid = bed.start()
    local pidfile = bed.dir .. "/new.pid"
    -- the same command the bed starts nodes with, in the background, its pid noted
    local restart = ("exec %s node --listen tcp://127.0.0.1:%d --key-file %s --log-file %s -w 2 >/dev/null 2>&1 & echo $! >%s")
      :format(q(H.farm), bed.port, q(bed.key), q(bed.log), q(pidfile))
    local r = H.run_script(COMMON .. ([[
      local pid, restart, node = %d, %q, %q
      for _ = 1, 3 do batch(20) end
      os.execute("kill " .. pid .. "; while kill -0 " .. pid .. " 2>/dev/null; do sleep 0.05; done")
      assert(os.execute(restart))
      print("ran there again", runs_there_again(node))
      print("state", farm.nodes()[1].state)
      report()
    ]]):format(pid, restart, url()), "-n 1 --heartbeat 0.2 " .. hosts(), 180)
    local newpid = tonumber(H.slurp(pidfile):match("%d+"))
    if newpid then bed.started[#bed.started + 1] = newpid end
    check(r)
    assert.is_truthy(newpid, "the script did not start the new node")
    assert.is_truthy(r.out:find("ran there again\ttrue\n", 1, true), r.out .. r.err)
    assert.is_truthy(r.out:find("state\tup\n", 1, true), r.out)
    assert.is_truthy(r.out:find("lost\t1\trejoined\t1\n", 1, true), r.out)
    assert.is_truthy(r.err:find("farm: node " .. url() .. " is back; jobs run there again", 1, true), r.err)
  end)

  it("frozen (SIGSTOP) past the heartbeat and resumed rejoins; its jobs in flight end once", function()
    local pid = bed.start()
    local r = H.run_script(COMMON .. ([[
      local stop, cont, node = %q, %q, %q
      for _ = 1, 3 do batch(20) end
      -- jobs in flight there when it freezes
      for _ = 1, 40 do n = n + 1; fs[n] = farm.submit(work, n) end
      os.execute(stop)
      local t0 = os.time()
      while farm.nodes()[1].state ~= "lost" and os.time() - t0 < 30 do farm.wait(fs, { timeout = 0.05 }) end
      print("lost while frozen", farm.nodes()[1].state == "lost")
      os.execute(cont)
      print("ran there again", runs_there_again(node))
      report()
    ]]):format(tree("STOP", pid), tree("CONT", pid), url()), "-n 1 --heartbeat 0.2 " .. hosts(), 180)
    os.execute(tree("CONT", pid))             -- (whatever happened)
    check(r)
    assert.is_truthy(r.out:find("lost while frozen\ttrue\n", 1, true), r.out)
    assert.is_truthy(r.out:find("ran there again\ttrue\n", 1, true), r.out .. r.err)
    assert.is_truthy(r.out:find("lost\t1\trejoined\t1\n", 1, true), r.out)
  end)

  it("with no other worker, the queue waits for the lost node to come back", function()
    local pid = bed.start()
    local pidfile = bed.dir .. "/new.pid"
    local restart = ("exec %s node --listen tcp://127.0.0.1:%d --key-file %s --log-file %s -w 2 >/dev/null 2>&1 & echo $! >%s")
      :format(q(H.farm), bed.port, q(bed.key), q(bed.log), q(pidfile))
    local r = H.run_script(COMMON .. ([[
      local pid, restart = %d, %q
      batch(20)
      os.execute("kill " .. pid .. "; while kill -0 " .. pid .. " 2>/dev/null; do sleep 0.05; done")
      for _ = 1, 20 do n = n + 1; fs[n] = farm.submit(work, n) end   -- nothing can run them now
      os.execute("sleep 2")
      assert(os.execute(restart))
      report()
    ]]):format(pid, restart), "-n 0 --heartbeat 0.2 " .. hosts(), 180)
    local newpid = tonumber(H.slurp(pidfile):match("%d+"))
    if newpid then bed.started[#bed.started + 1] = newpid end
    check(r)
    local _, said = r.err:gsub("farm: no workers left; waiting up to 30 s for a lost node to come back\n", "")
    assert.are.equal(1, said, r.err)
  end)
end)

describe("a node that broke the protocol", function()
  local bed = H.node_bed("hostile-rejoin", 28200)
  before_each(bed.setup)
  after_each(bed.teardown)

  -- spec/peers/fake_node sends SUBMIT, which only the client's own workers
  -- may: it is dropped, and never tried again. Its lobby still takes TCP
  -- connections (and answers nothing more), so a try would be a connection
  -- to its port held for seconds: there is none.
  it("is not tried again", function()
    local fake = H.abs(H.build .. "/peers/fake_node")
    local pidfile, out = bed.dir .. "/fake.pid", bed.dir .. "/fake.out"
    os.execute(("%s --listen tcp://127.0.0.1:%d --key-file %s --attack submit --marker %s >%s 2>/dev/null </dev/null & echo $! >%s")
      :format(q(fake), bed.port, q(bed.key), q(bed.dir .. "/marker"), q(out), q(pidfile)))
    local pid = assert(tonumber(H.slurp(pidfile):match("%d+")))
    bed.started[#bed.started + 1] = pid
    assert(H.wait_for(function() return H.slurp(out):find("FAKE-NODE READY", 1, true) end, 10), "no fake node")
    local r = H.run_script(([[
      local farm = require "farm"
      local port = %d
      local fs = {}
      for i = 1, 20 do fs[i] = farm.submit(function(x) return x end, i) end
      for i = 1, 20 do fs[i]:result(30) end
      local t0 = os.time()
      while farm.nodes()[1].state ~= "lost" and os.time() - t0 < 30 do farm.wait(fs, { timeout = 0.05 }) end
      print("state", farm.nodes()[1].state)
      os.execute("sleep 3")                     -- a try would have begun after 0.5 s
      local held = 0
      for line in io.lines("/proc/net/tcp") do
        local rport, st = line:match("^%%s*%%d+: %%x+:%%x+ %%x+:(%%x+) (%%x+)")
        if rport and tonumber(rport, 16) == port and st == "01" then held = held + 1 end
      end
      print("connections to it", held)
    ]]):format(bed.port), ("-n 1 --heartbeat 0.2 --hosts node://127.0.0.1:%d --key-file %s"):format(bed.port, q(bed.key)), 60)
    assert.are.equal(0, r.code, r.err)
    assert.is_truthy(r.out:find("state\tlost\n", 1, true), r.out)
    assert.is_truthy(r.out:find("connections to it\t0\n", 1, true), r.out .. r.err)
  end)
end)

describe("farm.add_nodes", function()
  local bed = H.node_bed("addnodes", 28400)
  before_each(bed.setup)
  after_each(bed.teardown)

  it("adds a node mid-run that then gets jobs; the same again does nothing; a bad line is one error", function()
    bed.start()
    local free = bed.port + 1                 -- nothing listens there
    local r = H.run_script(COMMON .. ([[
      local node, free = %q, %d
      batch(20)
      print("nodes before", #farm.nodes())
      farm.add_nodes { node }
      farm.add_nodes { node, "  # a comment", "" }
      local t0 = os.time()
      local there = false
      while not there and os.time() - t0 < 60 do
        batch(20)
        for i = n - 19, n do there = there or fs[i].node == node end
      end
      print("ran there", there)
      farm.add_nodes { node }                   -- up already: left as it is
      print("nodes after", #farm.nodes())
      local ok, err = pcall(farm.add_nodes, { "node://127.0.0.1:99999" })
      print("bad line", ok, err)
      ok, err = pcall(farm.add_nodes, { 42 })
      print("not a string", ok, err)
      farm.add_nodes { "node://127.0.0.1:" .. free }
      local t1 = os.time()
      while #farm.nodes() < 2 or farm.nodes()[2].state == "starting" do
        batch(5)
        if os.time() - t1 > 30 then break end
      end
      print("unreachable", farm.nodes()[2] and farm.nodes()[2].state)
      report()
    ]]):format("node://127.0.0.1:" .. bed.port, free), "-n 1 --key-file " .. q(bed.key), 180)
    check(r)
    assert.is_truthy(r.out:find("nodes before\t0\n", 1, true), r.out)
    assert.is_truthy(r.out:find("ran there\ttrue\n", 1, true), r.out .. r.err)
    assert.is_truthy(r.out:find("nodes after\t1\n", 1, true), r.out)
    assert.is_truthy(r.out:find("bad line\tfalse\tfarm.add_nodes: farm.add_nodes item 1: bad port '99999' in "
      .. "'node://127.0.0.1:99999' (1 to 65535); a line is ", 1, true), r.out)
    assert.is_truthy(r.out:find("not a string\tfalse\tfarm.add_nodes: item 1 is not a string", 1, true), r.out)
    assert.is_truthy(r.out:find("unreachable\tfailed\n", 1, true), r.out .. r.err)
    local _, said = r.err:gsub("farm: host node://127.0.0.1:" .. free .. ": connection refused [^\n]*; going on without it\n", "")
    assert.are.equal(1, said, r.err)
  end)
end)

describe("a pool closed while a node it added still connects", function()
  local bed = H.node_bed("addclose", 28600)
  before_each(bed.setup)
  after_each(bed.teardown)

  -- the node is frozen: its port takes the connection, and nothing answers
  it("closes at once, and the run goes on", function()
    local pid = bed.start()
    assert(os.execute(tree("STOP", pid)))
    local r = H.run_script(([[
      local farm = require "farm"
      local p = farm.new { workers = 1, key_file = %q }
      p:add_nodes { "node://127.0.0.1:%d" }
      print("pool", p:submit(function() return 1 end):result(30))
      print("state", p:nodes()[1].state)
      p:close()
      print("closed")
      print("default pool", farm.submit(function() return 2 end):result(30))
    ]]):format(bed.key, bed.port), "-n 1", 60)
    os.execute(tree("CONT", pid))
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("pool\t1\nstate\tstarting\nclosed\ndefault pool\t2\n", r.out, r.err)
  end)
end)

describe("a node that was frozen", function()
  local bed = H.node_bed("resumed", 28800)
  before_each(bed.setup)
  after_each(bed.teardown)

  local function client(extra)
    local path = H.tmp([[
      local farm = require "farm"
      print("answer", farm.submit(function() return 7 end):result(30))
    ]], ".lua")
    return ("%s run %s -n 0 --hosts node://127.0.0.1:%d --key-file %s %s"):format(q(H.farm), q(path), bed.port,
      q(bed.key), extra or "")
  end

  -- The session the node keeps warm for its next client took the SIGCHLD of
  -- its workers' resumption for an order to stop, and a client that came
  -- meanwhile was refused ("cannot serve ...: it did not take a port").
  it("serves a client that came while it was frozen, with its warm session intact", function()
    local pid = bed.start()
    for round = 1, 3 do
      assert(os.execute(tree("STOP", pid)))
      local r = H.sh(("(sleep 1; %s) & %s; wait"):format(tree("CONT", pid), client()), 60)
      assert.are.equal(0, r.code, r.err)
      assert.are.equal("answer\t7\n", r.out, r.err)
    end
    local log = H.slurp(bed.log)
    assert.is_falsy(log:find("cannot serve", 1, true), log)
    assert.is_falsy(log:find("a session started ahead of its client", 1, true), log)
  end)

  it("serves the next client at once after one that ended with os.exit() while it had jobs there", function()
    bed.start()
    for round = 1, 2 do
      local r = H.run_script([[
        local farm = require "farm"
        local fs = {}
        for i = 1, 200 do fs[i] = farm.submit(function(x) local t = os.clock() + 0.1 while os.clock() < t do end return x end, i) end
        fs[1]:result(30)
        os.exit(0)
      ]], ("-n 0 --hosts node://127.0.0.1:%d --key-file %s"):format(bed.port, q(bed.key)), 60)
      assert.are.equal(0, r.code, r.err)
      local r2 = H.sh(client(), 60)
      assert.are.equal(0, r2.code, r2.err)
      assert.are.equal("answer\t7\n", r2.out, r2.err)
    end
    local log = H.slurp(bed.log)
    assert.is_falsy(log:find("cannot serve", 1, true), log)
  end)
end)
