-- netns_spec.lua -- standing nodes on other "hosts": three network namespaces on a
-- bridge (scripts/netns-testbed), `farm node` on H2 and H3 (and H4), the client on H1.
--
-- Rules (see /work/shared/TESTBEDS.md): nothing in the root namespace ever connects
-- to a namespace address (every client runs under `ip netns exec fH1...`); the
-- namespace names carry this process's pid; everything started here is stopped by
-- its pid and checked gone, and the namespaces are removed even when a test fails.
local H = require "helper"

local function sh_ok(cmd)
  local ok = os.execute(H.tool("sh -c " .. H.quote(cmd)))
  return ok == true
end

local function read_cmd(cmd)
  local p = assert(io.popen(H.tool("sh -c " .. H.quote(cmd))))
  local s = p:read("a")
  p:close()
  return s
end

local abs = H.abs

local FARM = abs(H.farm)
local FARM_EXE = abs(os.getenv("FARM_EXE") or H.farm)
-- scripts/netns-testbed, found from where this file is
local TESTBED = abs(((debug.getinfo(1, "S").source:match("^@(.*)/spec/[^/]*$") or ".")
  .. "/scripts/netns-testbed"))
local NET = os.getenv("FARM_NETNS_NET") or "10.203.0"
local PORT = 7070
local MYPID = H.pid
local TAG = "n" .. MYPID                      -- fH3n4194304: 11 characters at most
local NHOSTS = 4
local q = H.quote

local function ns(i) return "fH" .. i .. TAG end
local function addr(i) return NET .. "." .. i end
local function node_url(i) return ("node://%s:%d"):format(addr(i), PORT) end

--- the pids of the processes in host namespace i
local function ns_pids(i)
  local pids = {}
  for p in read_cmd("ip netns pids " .. ns(i) .. " 2>/dev/null"):gmatch("%d+") do
    pids[#pids + 1] = tonumber(p)
  end
  return pids
end

--- true once namespace i holds exactly `want` processes (default none), within seconds
local function ns_settles(i, want, seconds)
  local deadline = os.time() + (seconds or 10)
  repeat
    if #ns_pids(i) == (want or 0) then return true end
    os.execute("sleep 0.05")
  until os.time() > deadline
  return false
end

local function wait_for(pred, seconds)
  local deadline = os.time() + (seconds or 10)
  repeat
    if pred() then return true end
    os.execute("sleep 0.05")
  until os.time() > deadline
  return pred()
end

local dir, key, badkey
local nodes = {}          -- host number -> { pid =, log =, pidfile = }
local started = {}        -- every pid this spec started in the background

--- start `farm node` on host i in the background; returns its record
local function start_node(i)
  local n = { log = ("%s/node%d.log"):format(dir, i), pidfile = ("%s/node%d.pid"):format(dir, i),
              out = ("%s/node%d.out"):format(dir, i) }
  os.remove(n.log)
  local cmd = ("ip netns exec %s env FARM_EXE=%s %s node --listen tcp://%s:%d --key-file %s"
    .. " --workers 1 --pid-file %s --log-file %s </dev/null >%s 2>&1 & echo $!")
    :format(ns(i), q(FARM_EXE), q(FARM), addr(i), PORT, q(key), q(n.pidfile), q(n.log), q(n.out))
  n.pid = assert(tonumber(read_cmd(cmd):match("%d+")), "no pid for node " .. i)
  started[#started + 1] = n.pid
  assert(wait_for(function()
    return H.slurp(n.log):find("listening on", 1, true) ~= nil or not H.alive(n.pid)
  end, 10), "node " .. i .. " did not start")
  assert(H.alive(n.pid), ("node %d exited at once: %s%s"):format(i, H.slurp(n.log), H.slurp(n.out)))
  -- `ip netns exec` execs farm: the pid we have is the node's
  assert.are.equal(n.pid, tonumber(H.slurp(n.pidfile):match("%d+")))
  nodes[i] = n
  return n
end

local function ensure_nodes(list)
  for _, i in ipairs(list or { 2, 3 }) do
    if not (nodes[i] and H.alive(nodes[i].pid)) then start_node(i) end
  end
end

--- SIGTERM (then SIGKILL) by pid; true when gone
local function stop_pid(pid)
  if not H.alive(pid) then return true end
  os.execute("kill -TERM " .. pid .. " 2>/dev/null")
  if H.wait_gone({ pid }, 5) then return true end
  os.execute("kill -KILL " .. pid .. " 2>/dev/null")
  return H.wait_gone({ pid }, 5)
end

--- run farm on host 1 (the client side); args already quoted
local function client(args, timeout)
  return H.sh(("ip netns exec %s env FARM_EXE=%s %s %s"):format(ns(1), q(FARM_EXE), q(FARM), args),
              timeout or 60)
end

local function hosts(...)
  local l = {}
  for _, i in ipairs({ ... }) do l[#l + 1] = node_url(i) end
  return table.concat(l, ",")
end

--- the lines of s that do not start with one of the prefixes
local function lines_without(s, prefixes)
  local out = {}
  for line in s:gmatch("[^\n]+") do
    local keep = true
    for _, p in ipairs(prefixes) do
      if line:sub(1, #p) == p then keep = false end
    end
    if keep then out[#out + 1] = line end
  end
  return out
end

--- "node <host> <jobs_done> <state>" lines, as the scripts print farm.nodes()
local function nodes_of(s)
  local t = {}
  for host, jobs, state in s:gmatch("\nnode (%S+) (%d+) (%a+)") do
    t[host] = { jobs = tonumber(jobs), state = state }
  end
  return t
end

-- what the scripts print of farm.nodes() and farm.stats()
local report = [[
for _, n in ipairs(farm.nodes()) do
  print(("node %s %d %s"):format(n.host, n.jobs_done, n.state))
end
local s = farm.stats()
local on_nodes = 0
for _, w in ipairs(s.workers) do
  if w.kind == "node" then
    on_nodes = on_nodes + w.jobs
    print(("stat %s %d %s"):format(w.name, w.jobs, w.state))
  end
end
print(("stats %d %d"):format(s.jobs, on_nodes))
]]

describe("standing nodes in network namespaces", function()
  setup(function()
    dir = read_cmd("mktemp -d /tmp/farm-netns.XXXXXX"):gsub("%s+$", "")
    assert(dir:match("^/tmp/farm%-netns%."), dir)
    local r = H.sh(("%s up %s %d"):format(q(TESTBED), TAG, NHOSTS), 30)
    assert(r.code == 0, "netns-testbed up: " .. r.err)
    assert.are.equal("", r.out .. r.err)
    key, badkey = dir .. "/key", dir .. "/badkey"
    for _, k in ipairs({ key, badkey }) do
      r = H.farm_cmd("keygen " .. q(k))
      assert(r.code == 0, r.err)
    end
  end)

  teardown(function()
    -- stop everything by pid first, then remove the namespaces whatever happened
    local stuck = {}
    for _, pid in ipairs(started) do
      if not stop_pid(pid) then stuck[#stuck + 1] = pid end
    end
    local r = H.sh(("%s down %s %d"):format(q(TESTBED), TAG, NHOSTS), 60)
    local left = read_cmd("ip netns list")
    H.cleanup()
    if dir then os.execute("rm -rf " .. q(dir)) end
    assert(#stuck == 0, "still alive after SIGKILL: " .. table.concat(stuck, " "))
    assert(r.code == 0, "netns-testbed down: " .. r.err)
    assert(not left:find(TAG, 1, true), "namespaces left: " .. left)
  end)

  after_each(function()
    -- nothing a client started stays behind on H1
    assert(ns_settles(1, 0, 10), "processes left on H1: " .. table.concat(ns_pids(1), " "))
  end)

  it("runs pi and sum_primes on two nodes with exactly the local results", function()
    ensure_nodes()
    local script = H.tmp([[
      local jobs = tonumber(arg[1])
      local points = 20000

      local function throw(n, seed)
        math.randomseed(seed)
        local random, hits = math.random, 0
        for _ = 1, n do
          local x, y = random(), random()
          if x * x + y * y <= 1.0 then hits = hits + 1 end
        end
        return hits
      end

      function isprime(n)
        if n < 2 then return false end
        for i = 2, math.ceil(math.sqrt(n)) do
          if n % i == 0 and i ~= n then return false end
        end
        return true
      end

      function sum_primes(n)
        local sum = 0
        for x = 2, n - 1 do if isprime(x) then sum = sum + x end end
        return sum
      end

      local pis, sums = {}, {}
      for i = 1, jobs do
        pis[i] = farm.submit(throw, points, 1000 + i)
        sums[i] = farm.submit(sum_primes, 5000 + 250 * i)
      end
      local hits = 0
      for i = 1, jobs do
        local h = pis[i]:result()
        hits = hits + h
        print(("hits %d %d"):format(i, h))
      end
      for i = 1, jobs do
        print(("Sum of primes below %d is %d"):format(5000 + 250 * i, sums[i]:result()))
      end
      print(("pi = %.15f"):format(4 * hits / (jobs * points)))
    ]] .. report)

    local here = H.farm_cmd(("run %s -n 2 --no-progress -- 40"):format(q(script)), 60)
    assert.are.equal(0, here.code, here.err)
    local expected = lines_without(here.out, { "node ", "stat ", "stats " })
    assert.are.equal(81, #expected, here.out)
    assert.is_truthy(here.out:find("Sum of primes below 15000 is 12295969", 1, true), here.out)
    local pi = tonumber(here.out:match("pi = ([%d.]+)"))
    assert.is_true(math.abs(pi - math.pi) < 0.01, here.out)

    local r = client(("run %s -n 0 --no-progress --hosts %s --key-file %s -- 40")
      :format(q(script), hosts(2, 3), q(key)))
    assert.are.equal(0, r.code, r.err)
    assert.are.same(expected, lines_without(r.out, { "node ", "stat ", "stats " }))

    local seen = nodes_of("\n" .. r.out)
    for _, i in ipairs({ 2, 3 }) do
      local n = seen[node_url(i)]
      assert(n, "farm.nodes() does not list " .. node_url(i) .. ":\n" .. r.out)
      assert.are.equal("up", n.state)
      assert(n.jobs > 0, node_url(i) .. " did no job:\n" .. r.out)
      assert.is_truthy(r.out:find(("\nstat %s %d up"):format(node_url(i), n.jobs), 1, true), r.out)
    end
    assert.are.equal(80, seen[node_url(2)].jobs + seen[node_url(3)].jobs, r.out)
    assert.is_truthy(r.out:find("\nstats 80 80\n", 1, true), r.out)
    -- both nodes saw the client come and go
    for _, i in ipairs({ 2, 3 }) do
      local log = H.slurp(nodes[i].log)
      assert.is_truthy(log:find("authenticated; serving it", 1, true), log)
      assert.is_truthy(log:find("the client said goodbye", 1, true), log)
      assert.is_true(H.alive(nodes[i].pid))
    end
  end)

  it("refuses a client with the wrong key, on both sides, and still serves the right one", function()
    ensure_nodes()
    local script = H.tmp("print(farm.submit(function(x) return x * 2 end, 21):result())\n")
    local r = client(("run %s -n 0 --no-progress --hosts %s --key-file %s")
      :format(q(script), hosts(2), q(badkey)), 30)
    assert.are.equal(1, r.code, r.err)
    assert.are.equal("", r.out)
    assert.are.equal(1, H.lines(r.err), r.err)
    assert.is_truthy(r.err:find(node_url(2), 1, true), r.err)
    assert.is_truthy(r.err:find("authentication failed", 1, true), r.err)
    assert(wait_for(function()
      return H.slurp(nodes[2].log):find("authentication failed", 1, true) ~= nil
    end, 5), "the node's log does not say so:\n" .. H.slurp(nodes[2].log))
    assert.is_true(H.alive(nodes[2].pid))

    r = client(("run %s -n 0 --no-progress --hosts %s --key-file %s")
      :format(q(script), hosts(2), q(key)), 30)
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("42\n", r.out)
  end)

  it("will not start a node on 0.0.0.0 without a key, in a namespace or not", function()
    ensure_nodes()
    local before = #ns_pids(3)
    local pidfile = dir .. "/open.pid"
    local rootport = 20000 + MYPID % 20000
    local cases = {
      { prefix = "ip netns exec " .. ns(3) .. " ", listen = "tcp://0.0.0.0:7071" },
      { prefix = "ip netns exec " .. ns(3) .. " ", listen = "tcp://" .. addr(3) .. ":7071" },
      -- the root namespace: it only listens (nothing connects), and must not even do that
      { prefix = "", listen = "tcp://0.0.0.0:" .. rootport },
    }
    for _, c in ipairs(cases) do
      local r = H.sh(("%senv -u FARM_KEY_FILE FARM_EXE=%s %s node --listen %s --workers 1 --pid-file %s")
        :format(c.prefix, q(FARM_EXE), q(FARM), c.listen, q(pidfile)), 10)
      assert.are.equal(2, r.code, c.listen .. ": " .. r.err)
      assert.are.equal(1, H.lines(r.err), r.err)
      assert.is_truthy(r.err:find("refusing to listen on " .. c.listen .. " without a key", 1, true), r.err)
      assert.is_truthy(r.err:find("--key-file", 1, true), r.err)
      assert.is_nil(io.open(pidfile), "it wrote a pid file")
    end
    -- nothing was left running on H3 but node 3 and its worker
    assert.are.equal(before, #ns_pids(3))
  end)

  it("loses no job when a node is SIGKILLed mid-run", function()
    ensure_nodes()
    local progress = dir .. "/progress"
    local script = H.tmp([[
      local jobs, progress = tonumber(arg[1]), arg[2]
      local function work(i)
        local t = os.clock() + 0.1
        while os.clock() < t do end
        return i * i + 7, ("job %d"):format(i)
      end
      local fs = {}
      for i = 1, jobs do fs[i] = farm.submit(work, i) end
      for i = 1, jobs do
        local a, b = fs[i]:result(60)
        print(("result %d %d %s"):format(i, a, b))
        if progress ~= "" then
          local f = assert(io.open(progress, "a"))
          f:write(i, "\n")
          f:close()
        end
      end
    ]] .. report)

    local here = H.farm_cmd(("run %s -n 2 --no-progress -- 40 ''"):format(q(script)), 60)
    assert.are.equal(0, here.code, here.err)
    local expected = lines_without(here.out, { "node ", "stat ", "stats " })
    assert.are.equal(40, #expected)
    assert.are.equal("result 40 1607 job 40", expected[40])

    -- the client in the background; the node on H2 dies once 8 results are in
    local out, err, rcfile = dir .. "/b.out", dir .. "/b.err", dir .. "/b.rc"
    local cmd = ("ip netns exec %s env FARM_EXE=%s %s run %s -n 0 --no-progress --heartbeat 0.2"
      .. " --hosts %s --key-file %s -- 40 %s")
      :format(ns(1), q(FARM_EXE), q(FARM), q(script), hosts(2, 3), q(key), q(progress))
    local wrapper = assert(tonumber(read_cmd(("(timeout -k 3 60 %s </dev/null >%s 2>%s; echo $? >%s) >/dev/null 2>&1 & echo $!")
      :format(cmd, q(out), q(err), q(rcfile))):match("%d+")))
    started[#started + 1] = wrapper
    assert(wait_for(function() return H.lines(H.slurp(progress)) >= 8 or H.slurp(rcfile) ~= "" end, 30),
      "no progress: " .. H.slurp(err))
    local victim = nodes[2].pid
    local workers = {}
    for _, p in ipairs(ns_pids(2)) do if p ~= victim then workers[#workers + 1] = p end end
    -- (a node is its lobby, a session process for our client with its worker, and a
    -- session started ahead of the next client, with its worker)
    assert.are.equal(4, #workers, "node 2 should have two sessions of one worker each")
    assert.are.equal("", H.slurp(rcfile), "the run ended before the node was killed")
    os.execute("kill -KILL " .. victim)
    assert.is_true(H.wait_gone({ victim }, 5))
    -- its worker sees its parent go and exits
    assert(H.wait_gone(workers, 10), "node 2's worker outlived it: " .. table.concat(workers, " "))
    assert.is_true(ns_settles(2, 0, 5))

    assert(wait_for(function() return H.slurp(rcfile) ~= "" end, 60), "the client did not finish")
    assert.is_true(H.wait_gone({ wrapper }, 5))
    local r = { code = tonumber(H.slurp(rcfile)), out = H.slurp(out), err = H.slurp(err) }
    assert.are.equal(0, r.code, r.err)
    assert.are.same(expected, lines_without(r.out, { "node ", "stat ", "stats " }))
    assert.is_truthy(r.err:find("node " .. node_url(2) .. " lost", 1, true), r.err)
    local seen = nodes_of("\n" .. r.out)
    local n2, n3 = seen[node_url(2)], seen[node_url(3)]
    assert(n2 and n3, r.out)
    assert.are.equal("lost", n2.state, r.out)
    assert.are.equal("up", n3.state, r.out)
    assert(n2.jobs >= 1 and n2.jobs < 40, r.out)
    assert.are.equal(40, n2.jobs + n3.jobs, r.out)
    assert.is_truthy(r.out:find("\nstats 40 40\n", 1, true), r.out)
    assert.is_true(H.alive(nodes[3].pid))
  end)

  -- Issue 20's run: 10,000 jobs over 2 local workers and nodes on H2, H3 and H4;
  -- mid-run the node on H2 and two local workers are SIGKILLed, and the node on
  -- H3 is SIGSTOPped for 10 s (lost at the client's 0.5 s heartbeat) and then
  -- SIGCONTed: it rejoins and runs jobs again before the end (the script holds
  -- its last 1,000 jobs back until it has seen the node come back, 60 s at most).
  it("resolves 10,000 futures once through node and worker kills and a node frozen for 10 s", function()
    for _, i in ipairs({ 2, 3, 4 }) do
      if nodes[i] and H.alive(nodes[i].pid) then stop_pid(nodes[i].pid) end
      assert.is_true(ns_settles(i, 0, 10))
    end
    ensure_nodes({ 2, 3, 4 })
    local progress, pidfile = dir .. "/chaos.progress", dir .. "/chaos.pids"
    os.remove(progress)
    os.remove(pidfile)
    local script = H.tmp([[
      local total, progress, pidfile, frozen = tonumber(arg[1]), arg[2], arg[3], arg[4]
      local held = 1000
      local seen, dup, lost, back, after = {}, 0, false, false, 0
      farm.on_event(function(ev)
        local on_frozen = ev.node and ev.node:find(frozen, 1, true) ~= nil
        if ev.event == "job_done" then
          if seen[ev.job] then dup = dup + 1 end
          seen[ev.job] = true
          if back and on_frozen then after = after + 1 end
        elseif ev.event == "node_lost" and on_frozen then lost = true
        elseif ev.event == "node_up" and on_frozen and lost then back = true
        end
      end)
      local function work(i)
        local t = os.clock() + 0.002
        while os.clock() < t do end
        return i
      end
      local fs, sum, resolved = {}, 0, 0
      local function collect(from, to)
        for i = from, to do
          sum = sum + fs[i]:result(120)
          resolved = resolved + 1
          if i % 100 == 0 then
            local p = assert(io.open(progress, "a"))
            p:write(i, "\n")
            p:close()
          end
        end
      end
      for i = 1, total - held do fs[i] = farm.submit(work, i) end
      local f = assert(io.open(pidfile, "w"))     -- the local workers (the pool is up now)
      f:write(table.concat(farm._pids(), " "), "\n")
      f:close()
      collect(1, total - held)
      local deadline = os.time() + 60
      while not back and os.time() < deadline do
        farm.submit(work, 0):result(10)
        os.execute("sleep 0.1")
      end
      print(("lost %s back %s"):format(lost, back))
      for i = total - held + 1, total do fs[i] = farm.submit(work, i) end
      collect(total - held + 1, total)
      for _, g in ipairs(fs) do assert(g:status() == "done", g:status()) end
      print(("resolved %d sum %d dup %d after %d"):format(resolved, sum, dup, after))
    ]] .. report)

    local out, err, rcfile = dir .. "/c.out", dir .. "/c.err", dir .. "/c.rc"
    local cmd = ("ip netns exec %s env FARM_EXE=%s %s run %s -n 2 --no-progress --heartbeat 0.5"
      .. " --hosts %s --key-file %s -- 10000 %s %s %s")
      :format(ns(1), q(FARM_EXE), q(FARM), q(script), hosts(2, 3, 4), q(key), q(progress), q(pidfile),
              addr(3))
    local wrapper = assert(tonumber(read_cmd(("(timeout -k 3 240 %s </dev/null >%s 2>%s; echo $? >%s) >/dev/null 2>&1 & echo $!")
      :format(cmd, q(out), q(err), q(rcfile))):match("%d+")))
    started[#started + 1] = wrapper
    finally(function()             -- a failed assertion leaves no client behind on H1
      if H.slurp(rcfile) == "" then
        for _, p in ipairs(ns_pids(1)) do os.execute("kill -KILL " .. p) end
      end
      for _, p in ipairs(ns_pids(3)) do os.execute("kill -CONT " .. p) end
    end)
    local function upto(n)
      return wait_for(function() return H.lines(H.slurp(progress)) >= n or H.slurp(rcfile) ~= "" end, 120)
    end
    -- 1,500 results in: SIGKILL the node on H2 (every process there) and two local workers
    assert(upto(15), "no progress: " .. H.slurp(err))
    assert.are.equal("", H.slurp(rcfile), "the run ended early: " .. H.slurp(err))
    local workers = {}
    for p in H.slurp(pidfile):gmatch("%d+") do   -- (the nodes' entries are 0)
      if tonumber(p) > 0 then workers[#workers + 1] = tonumber(p) end
    end
    assert.are.equal(2, #workers, H.slurp(pidfile))
    local h2 = ns_pids(2)
    for _, p in ipairs(h2) do os.execute("kill -KILL " .. p) end
    for _, p in ipairs(workers) do os.execute("kill -KILL " .. p) end
    assert.is_true(H.wait_gone(workers, 10))
    assert.is_true(ns_settles(2, 0, 10))
    -- 3,000: freeze the node on H3, every process of it, for 10 s
    assert(upto(30), "no progress after the kills: " .. H.slurp(err))
    local h3 = ns_pids(3)
    assert(#h3 >= 2, "node 3 has no processes")
    for _, p in ipairs(h3) do os.execute("kill -STOP " .. p) end
    H.sleep(10)
    for _, p in ipairs(h3) do os.execute("kill -CONT " .. p) end

    assert(wait_for(function() return H.slurp(rcfile) ~= "" end, 180), "the client did not finish: " .. H.slurp(err))
    assert.is_true(H.wait_gone({ wrapper }, 5))
    local r = { code = tonumber(H.slurp(rcfile)), out = H.slurp(out), err = H.slurp(err) }
    assert.are.equal(0, r.code, r.err)
    assert.is_truthy(r.out:find("lost true back true\n", 1, true), r.out .. r.err)
    local resolved, sum, dup, after = r.out:match("resolved (%d+) sum (%d+) dup (%d+) after (%d+)")
    assert(resolved, r.out .. r.err)
    assert.are.equal(10000, tonumber(resolved))
    assert.are.equal(50005000, tonumber(sum))
    assert.are.equal(0, tonumber(dup))
    assert(tonumber(after) > 0, "the resumed node ran no job after it came back:\n" .. r.out .. r.err)
    assert.is_truthy(r.err:find("node " .. node_url(2) .. " lost", 1, true), r.err)
    assert.is_truthy(r.err:find("node " .. node_url(3) .. " lost", 1, true), r.err)
    local seen = nodes_of("\n" .. r.out)
    assert.are.equal("up", seen[node_url(3)].state, r.out)
    assert.are.equal("up", seen[node_url(4)].state, r.out)
    assert.is_true(H.alive(nodes[3].pid) and H.alive(nodes[4].pid))
  end)
end)
