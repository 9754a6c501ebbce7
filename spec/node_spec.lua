-- node_spec.lua -- `farm node` (a standing node, like ppserver / dispynode) and
-- `farm run --hosts node://HOST:PORT --key-file F` (a client using it), as a
-- user runs them: real processes on 127.0.0.1, real keys, real signals.
--
-- Every process a test starts runs under a small waiter shell that keeps its
-- pid and exit status in the test's temporary directory; the test stops it by
-- that pid and checks it is gone (and so are the node's workers). after_each
-- kills whatever is left, by pid, and removes the directory.
local H = require "helper"
local Q = H.quote

local MYPID = io.open("/proc/self/stat"):read("n")
local BASE = 21000 + MYPID % 20000
local nports = 0
local function port()
  nports = nports + 1
  return BASE + nports
end

-- Under `make asan` every process inherits LD_PRELOAD of the ASan runtime, and
-- some tools hang with it (pgrep deadlocks in a futex): they run without it.
local PLAIN = "env -u LD_PRELOAD timeout -k 2 30 "

local dir        -- the test's temporary directory
local procs      -- what the test started: { pid =, waiter =, kids = {} ... }
local nfiles

local sleep, wait_for = H.sleep, H.wait_for

local function children(pid)
  local kids = {}
  local p = io.popen(PLAIN .. "pgrep -P " .. math.tointeger(pid) .. " 2>/dev/null")
  for l in p:lines() do kids[#kids + 1] = tonumber(l) end
  p:close()
  return kids
end

--- when a process started (in clock ticks since boot), to tell it from a later one with its pid
local function started_at(pid)
  local rest = H.slurp("/proc/" .. pid .. "/stat"):match("^%d+ %b() (.*)")
  if not rest then return nil end
  local f = {}
  for w in rest:gmatch("%S+") do f[#f + 1] = w end
  return f[20]                                     -- field 22: starttime
end

--- alive, and the same process (pids are reused quickly on a busy machine)
local function alive(pid, start)
  return H.alive(pid) and (not start or started_at(pid) == start)
end

--- true once none of the processes is alive, false if some still are after seconds
local function wait_gone(list, seconds)
  return wait_for(function()
    for _, q in ipairs(list) do if alive(q.pid, q.start) then return false end end
    return true
  end, seconds or 10) or false
end

local function read_pid(path)
  return tonumber(H.slurp(path):match("^(%d+)\n"))
end

--- start a shell command line in the background, under a waiter shell that
--- records its pid (exec'd by the shell, so it is the command's own pid) and
--- its exit status
local function spawn(name, cmd)
  local p = { name = name, out = dir .. "/" .. name .. ".out", err = dir .. "/" .. name .. ".err",
              rcfile = dir .. "/" .. name .. ".rc", pidfile = dir .. "/" .. name .. ".spawned",
              waiterfile = dir .. "/" .. name .. ".waiter", kids = {} }
  local sh = ("unset FARM_KEY_FILE; echo $$ >%s.tmp && mv %s.tmp %s; %s >%s 2>%s </dev/null & "
    .. "echo $! >%s.tmp && mv %s.tmp %s; wait $!; echo $? >%s.tmp && mv %s.tmp %s")
    :format(Q(p.waiterfile), Q(p.waiterfile), Q(p.waiterfile), cmd, Q(p.out), Q(p.err),
            Q(p.pidfile), Q(p.pidfile), Q(p.pidfile), Q(p.rcfile), Q(p.rcfile), Q(p.rcfile))
  os.execute("sh -c " .. Q(sh) .. " >/dev/null 2>&1 </dev/null &")
  p.pid = wait_for(function() return read_pid(p.pidfile) end, 10)
  p.waiter = read_pid(p.waiterfile)
  assert(p.pid, "could not start " .. cmd)
  -- a process that has already exited has no start time; nothing else can have its pid yet
  p.start, p.wstart = started_at(p.pid), p.waiter and started_at(p.waiter)
  procs[#procs + 1] = p
  return p
end

--- the exit status of a spawned process once it is over (nil if not within seconds)
local function status(p, seconds)
  return wait_for(function() return read_pid(p.rcfile) end, seconds or 15)
end

--- every process that belongs to p: itself, its waiter, the children seen so far
local function all_pids(p)
  local list = { { pid = p.pid, start = p.start } }
  if p.waiter then list[2] = { pid = p.waiter, start = p.wstart } end
  for _, k in ipairs(p.kids) do list[#list + 1] = k end
  return list
end

--- remember p's children (a node's workers) so that the test can check they go too;
--- returns the pids of those that are alive
local function note_kids(p)
  local seen = {}
  for _, k in ipairs(p.kids) do seen[k.pid .. "/" .. tostring(k.start)] = true end
  if alive(p.pid, p.start) then
    for _, pid in ipairs(children(p.pid)) do
      local start = started_at(pid)
      if start and not seen[pid .. "/" .. start] then p.kids[#p.kids + 1] = { pid = pid, start = start } end
    end
  end
  local pids = {}
  for _, k in ipairs(p.kids) do if alive(k.pid, k.start) then pids[#pids + 1] = k.pid end end
  return pids
end

local function one_line(s) return H.lines(s) == 1 and s:sub(-1) == "\n" end

local function keygen(name)
  local k = dir .. "/" .. (name or "farm.key")
  local r = H.farm_cmd("keygen " .. Q(k), 30)
  assert.are.equal(0, r.code, r.err)
  return k
end

--- a standing node on 127.0.0.1 (or o.listen); args are further options, quoted
local function start_node(args, o)
  o = o or {}
  local n = { port = o.port or port() }
  local k = #procs + 1
  n.log = dir .. "/node" .. k .. ".log"
  local listen = o.listen or ("tcp://127.0.0.1:" .. n.port)
  local p = spawn("node" .. k, ("exec %s node --listen %s --log-file %s %s")
    :format(Q(H.farm), Q(listen), Q(n.log), args or ""))
  for key, v in pairs(p) do n[key] = v end
  procs[#procs] = n
  n.url = "node://127.0.0.1:" .. n.port
  if o.nowait then return n end
  local ready = wait_for(function()
    return H.slurp(n.log):find("listening on", 1, true) or read_pid(n.rcfile)
  end, 20)
  assert(ready and H.slurp(n.log):find("listening on", 1, true),
    "the node did not start: " .. H.slurp(n.err) .. H.slurp(n.log))
  note_kids(n)
  return n
end

--- stop a node with SIGTERM; checks it, its waiter and its workers are gone; its exit status
local function stop_node(n)
  note_kids(n)
  if alive(n.pid, n.start) then os.execute("kill -TERM " .. n.pid .. " 2>/dev/null") end
  assert.is_true(wait_gone(all_pids(n), 20), "node " .. n.pid .. " or its workers still run")
  return status(n, 5)
end

--- stop a node and check it exits 0 (its stderr says why not)
local function stopped_ok(n)
  local rc = stop_node(n)
  assert.are.equal(0, rc, "the node's exit status; its stderr: " .. H.slurp(n.err))
end

local function log_has(n, text, seconds)
  return wait_for(function() return H.slurp(n.log):find(text, 1, true) end, seconds or 15)
end

--- SIGUSR1, then the node's statistics line
local function node_stats(n)
  local before = select(2, H.slurp(n.log):gsub("stats:", ""))
  os.execute("kill -USR1 " .. n.pid)
  wait_for(function() return select(2, H.slurp(n.log):gsub("stats:", "")) > before end, 15)
  local last
  for l in H.slurp(n.log):gmatch("[^\n]*stats:[^\n]*") do last = l end
  return last or ""
end

local function script(text)
  nfiles = nfiles + 1
  return H.write(dir .. "/script" .. nfiles .. ".lua", text)
end

--- farm run on a script given as text (synchronously, with a time bound)
local function run(text, args, timeout)
  local s = script(text)
  local r = H.farm_cmd("run " .. Q(s) .. " " .. (args or ""), timeout or 90, "unset FARM_KEY_FILE;")
  r.script = s
  return r
end

local function via(n, key)
  return ("--hosts %s --key-file %s"):format(n.url, Q(key))
end

--- sum of user + system CPU ticks of each pid (those still there)
local function ticks(pids)
  local t = {}
  for _, pid in ipairs(pids) do
    local stat = H.slurp("/proc/" .. pid .. "/stat")
    local rest = stat:match("^%d+ %b() (.*)")
    if rest then
      local f = {}
      for w in rest:gmatch("%S+") do f[#f + 1] = w end
      t[pid] = tonumber(f[12]) + tonumber(f[13])      -- utime, stime (fields 14, 15)
    end
  end
  return t
end

local ONE_JOB = [[
  print(farm.submit(function(x) return x + 1 end, 41):result())
]]

describe("farm node", function()
  before_each(function()
    local p = io.popen(PLAIN .. "mktemp -d /tmp/farm-node-spec.XXXXXX")
    dir = p:read("l")
    p:close()
    assert(dir and dir:match("^/tmp/farm%-node%-spec%."), "mktemp -d failed")
    procs, nfiles = {}, 0
  end)

  after_each(function()
    for _, p in ipairs(procs) do
      note_kids(p)
      for _, q in ipairs(all_pids(p)) do
        if alive(q.pid, q.start) then os.execute("kill -KILL " .. q.pid .. " 2>/dev/null") end
      end
    end
    for _, p in ipairs(procs) do wait_gone(all_pids(p), 10) end
    os.execute("rm -rf " .. Q(dir))
    H.cleanup()
  end)

  it("1. farm keygen writes a key of mode 600 and will not overwrite one", function()
    local k = dir .. "/farm.key"
    -- a permissive umask does not matter: the key is readable by its owner alone
    local r = H.farm_cmd("keygen " .. Q(k), 30, "umask 000;")
    assert.are.equal(0, r.code, r.err)
    local p = io.popen(PLAIN .. "stat -c %a " .. Q(k))
    local mode = p:read("l")
    p:close()
    assert.are.equal("600", mode)
    local key = H.slurp(k)
    assert.is_true(#key >= 32, key)
    local k2 = keygen("other.key")
    assert.are_not.equal(key, H.slurp(k2))          -- each key is fresh
    r = H.farm_cmd("keygen " .. Q(k), 30)
    assert.are_not.equal(0, r.code)
    assert.is_true(one_line(r.err), r.err)
    assert.is_truthy(r.err:find(k, 1, true), r.err)
    assert.are.equal(key, H.slurp(k))               -- left as it was
  end)

  it("2. runs a script's jobs on the node with exactly the local results; nodes() and --stats show it", function()
    local key = keygen()
    local n = start_node("-w 2 --key-file " .. Q(key))
    local text = [[
      local function pi_part(seed, n)
        math.randomseed(seed)
        local inside = 0
        for _ = 1, n do
          local x, y = math.random(), math.random()
          if x * x + y * y <= 1.0 then inside = inside + 1 end
        end
        return inside
      end
      local fs = {}
      for seed = 1, 16 do fs[seed] = farm.submit(pi_part, seed, 20000) end
      local inside = 0
      for seed = 1, 16 do inside = inside + fs[seed]:result() end
      print(("pi %d %.17g"):format(inside, 4 * inside / (16 * 20000)))
      local xs = {}
      for i = 1, 1000 do xs[i] = i end
      local sq = farm.map(function(x) return x * x end, xs)
      local sum = 0
      for i = 1, #sq do sum = sum + sq[i] end
      print("squares", #sq, sum)
      print(("floats %.17g %.17g %s"):format(farm.submit(function(x) return x / 3, math.sqrt(x), math.type(x) end, 2.0):result()))
      for _, nd in ipairs(farm.nodes()) do
        io.stderr:write(("NODE %s %s %d %d\n"):format(nd.host, nd.state, nd.jobs_done, nd.workers))
      end
    ]]
    local remote = run(text, "-n 0 --stats " .. via(n, key))
    assert.are.equal(0, remote.code, remote.err)
    local here = run(text, "-n 2")
    assert.are.equal(0, here.code, here.err)
    assert.are.equal(here.out, remote.out)
    assert.is_truthy(remote.out:find("squares\t1000\t333833500\n", 1, true), remote.out)
    local pi = tonumber(remote.out:match("^pi %d+ (%S+)"))
    assert.is_true(pi and math.abs(pi - math.pi) < 0.05, remote.out)
    assert.is_falsy(here.err:find("NODE", 1, true), here.err)
    local state, done, workers = remote.err:match("NODE " .. n.url:gsub("%p", "%%%0") .. " (%a+) (%d+) (%d+)\n")
    assert.are.equal("up", state, remote.err)
    assert.is_true(tonumber(done) > 0, remote.err)
    assert.are.equal("2", workers, remote.err)
    assert.is_truthy(remote.err:find(n.url .. " (node, 2 workers, up)", 1, true), remote.err)
    assert.is_truthy(log_has(n, "authenticated"))
    stopped_ok(n)
  end)

  it("3. gives work to local workers and to the node at once", function()
    local key = keygen()
    local n = start_node("-w 2 --key-file " .. Q(key))
    local r = run([[
      local function work(x)
        local t = os.clock() + 0.05
        while os.clock() < t do end
        return x * 2
      end
      local fs = {}
      for i = 1, 40 do fs[i] = farm.submit(work, i) end
      for i = 1, 40 do assert(fs[i]:result() == 2 * i, "wrong result for " .. i) end
      local here, there = 0, 0
      for _, w in ipairs(farm.stats().workers) do
        if w.kind == "node" then there = there + w.jobs else here = here + w.jobs end
      end
      print(here, there, here + there)
    ]], "-n 1 " .. via(n, key))
    assert.are.equal(0, r.code, r.err)
    local here, there, all = r.out:match("^(%d+)\t(%d+)\t(%d+)\n$")
    assert.is_truthy(here, r.out)
    assert.is_true(tonumber(here) > 0, "local workers ran nothing: " .. r.out)
    assert.is_true(tonumber(there) > 0, "the node ran nothing: " .. r.out)
    assert.are.equal("40", all)
    stopped_ok(n)
  end)

  it("4. a client with the wrong key: one line, the node logs it, nothing runs", function()
    local key, wrong = keygen(), keygen("wrong.key")
    local n = start_node("-w 1 --key-file " .. Q(key))
    local mark = dir .. "/ran"
    local r = run(([[
      print(farm.submit(function(path) io.open(path, "w"):close(); return 1 end, %q):result())
    ]]):format(mark), "-n 0 " .. via(n, wrong), 60)
    assert.are_not.equal(0, r.code)
    assert.are.equal("", r.out)
    assert.is_true(one_line(r.err), r.err)
    assert.is_truthy(r.err:find(n.url, 1, true), r.err)
    assert.is_truthy(r.err:find("authentication failed", 1, true), r.err)
    assert.is_truthy(log_has(n, "authentication failed"), H.slurp(n.log))
    local stats = node_stats(n)
    assert.is_truthy(stats:find(" 0 jobs done", 1, true), stats)
    assert.is_truthy(stats:find("0 sessions", 1, true), stats)
    assert.is_truthy(stats:find("1 failed authentications", 1, true), stats)
    assert.is_nil(io.open(mark))
    -- the node's log names the client's address
    assert.is_truthy(H.slurp(n.log):find("authentication failed: client at 127%.0%.0%.1:%d+ "), H.slurp(n.log))
    -- no key at all: the client says to give one
    local r2 = run("print(farm.submit(function() return 1 end):result())", "-n 0 --hosts " .. n.url, 60)
    assert.are.equal(1, r2.code)
    assert.is_true(one_line(r2.err), r2.err)
    assert.is_truthy(r2.err:find("the node has a key and none was given here (pass --key-file F, or set FARM_KEY_FILE)", 1, true), r2.err)
    stopped_ok(n)
  end)

  it("5. a key file others can read: node and client refuse, saying chmod 600", function()
    local key = keygen()
    os.execute("chmod 644 " .. Q(key))
    local n = start_node("-w 1 --key-file " .. Q(key), { nowait = true })
    local rc = status(n, 15)
    assert.is_truthy(rc, "the node did not exit")
    assert.are_not.equal(0, rc)
    local err = H.slurp(n.err)
    assert.is_true(one_line(err), err)
    assert.is_truthy(err:find("chmod 600", 1, true), err)
    assert.is_true(wait_gone(all_pids(n), 10))
    local r = run(ONE_JOB, "-n 0 --hosts node://127.0.0.1:" .. port() .. " --key-file " .. Q(key), 60)
    assert.are_not.equal(0, r.code)
    assert.are.equal("", r.out)
    assert.is_true(one_line(r.err), r.err)
    assert.is_truthy(r.err:find("chmod 600", 1, true), r.err)
  end)

  it("6. will not listen on 0.0.0.0 without a key", function()
    local n = start_node("-w 1", { listen = "tcp://0.0.0.0:" .. port(), nowait = true })
    local rc = status(n, 15)
    assert.is_truthy(rc, "the node did not exit")
    assert.are_not.equal(0, rc)
    local err = H.slurp(n.err)
    assert.is_true(one_line(err), err)
    assert.is_truthy(err:find("without a key", 1, true), err)
    assert.is_true(wait_gone(all_pids(n), 10))
    assert.are.same({}, children(n.pid))
  end)

  it("7. garbage from nanocat is dropped and logged; the node goes on serving", function()
    local key = keygen()
    local n = start_node("-w 1 --key-file " .. Q(key))
    -- a PAIR is not let in at all (the lobby is REP), a REQ's requests are dropped
    for _, kind in ipairs({ "--pair", "--req" }) do
      local g = H.sh((PLAIN .. "timeout 1 nanocat %s --connect tcp://127.0.0.1:%d --data xxx -i 0.1")
        :format(kind, n.port), 20)
      assert.are.equal(124, g.code, g.err)          -- it ran its second and was stopped
    end
    assert.is_truthy(log_has(n, "dropped"), H.slurp(n.log))
    assert.is_true(H.alive(n.pid))
    local r = run(ONE_JOB, "-n 0 " .. via(n, key))
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("42\n", r.out)
    local dropped = tonumber(node_stats(n):match("(%d+) messages dropped"))
    assert.is_true(dropped and dropped > 0, H.slurp(n.log))
    stopped_ok(n)
  end)

  it("8. a second node on a port in use: one clear line, non-zero exit; the first goes on", function()
    local key = keygen()
    local n = start_node("-w 1 --key-file " .. Q(key))
    local n2 = start_node("-w 1 --key-file " .. Q(key), { port = n.port, nowait = true })
    local rc = status(n2, 30)
    assert.is_truthy(rc, "the second node did not exit")
    assert.are_not.equal(0, rc)
    local err = H.slurp(n2.err)
    assert.is_true(one_line(err), err)
    assert.is_truthy(err:find("in use", 1, true), err)
    assert.is_truthy(err:find(tostring(n.port), 1, true), err)
    assert.is_true(wait_gone(all_pids(n2), 10))
    local r = run(ONE_JOB, "-n 0 " .. via(n, key))
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("42\n", r.out)
    stopped_ok(n)
  end)

  it("9. client errors: refused, unknown host, bad --hosts item, -n 0 alone, bad --heartbeat", function()
    local key = keygen()
    local free = port()
    local cases = {
      { "-n 0 --hosts node://127.0.0.1:" .. free .. " --key-file " .. Q(key),
        { "node://127.0.0.1:" .. free, "connection refused" } },
      { "-n 0 --hosts node://no-such-host.invalid:7070 --key-file " .. Q(key),
        { "no-such-host.invalid", "unknown host" } },
      { "--hosts 'a b' --key-file " .. Q(key), { "--hosts", "'a b'" } },
      { "-n 0", { "-n 0" } },
      { "--heartbeat x --hosts node://127.0.0.1:" .. free .. " --key-file " .. Q(key), { "--heartbeat", "'x'" } },
    }
    for _, c in ipairs(cases) do
      local r = run(ONE_JOB, c[1], 60)
      assert.are_not.equal(0, r.code, c[1])
      assert.are_not.equal(124, r.code, c[1] .. ": timed out")
      assert.are.equal("", r.out, c[1])
      assert.is_true(one_line(r.err), c[1] .. ": " .. r.err)
      for _, want in ipairs(c[2]) do
        assert.is_truthy(r.err:find(want, 1, true), c[1] .. ": " .. r.err)
      end
    end
  end)

  it("10. a node SIGKILLed mid-run: its jobs run elsewhere, every result right, exit 0", function()
    local key = keygen()
    local n = start_node("-w 2 --heartbeat 0.2 --key-file " .. Q(key))
    local kidsfile = dir .. "/kids"
    local r = run(([[
      local nodepid, kidsfile = %d, %q
      local function work(x)
        local t = os.clock() + 0.1
        while os.clock() < t do end
        return x * x + 1
      end
      local fs = {}
      for i = 1, 40 do fs[i] = farm.submit(work, i) end
      -- once the node has done some of them, it dies
      local done = 0
      for _ in farm.as_completed(fs) do
        done = done + 1
        if farm.nodes()[1].jobs_done >= 2 then break end
      end
      os.execute("env -u LD_PRELOAD pgrep -P " .. nodepid .. " >" .. kidsfile)
      os.execute("kill -KILL " .. nodepid)
      local right = 0
      for i = 1, 40 do if fs[i]:result(60) == i * i + 1 then right = right + 1 end end
      print("killed after", done, "right", right, farm.nodes()[1].state)
    ]]):format(n.pid, kidsfile), "-n 1 --heartbeat 0.2 " .. via(n, key), 120)
    assert.are.equal(0, r.code, r.err)
    local done, right, state = r.out:match("^killed after\t(%d+)\tright\t(%d+)\t(%a+)\n$")
    assert.is_truthy(done, r.out)
    assert.is_true(tonumber(done) < 40, "the node died after the run: " .. r.out)
    assert.are.equal("40", right)
    assert.are.equal("lost", state)
    assert.is_truthy(r.err:find(n.url, 1, true), r.err)
    assert.is_truthy(r.err:find("lost", 1, true), r.err)
    -- the node is gone, and its workers follow it
    assert.are.equal(137, status(n, 15))
    local kids = 0
    for pid in H.slurp(kidsfile):gmatch("%d+") do
      kids = kids + 1
      local start = started_at(pid)                -- nil: gone already
      if start then n.kids[#n.kids + 1] = { pid = tonumber(pid), start = start } end
    end
    assert.is_true(kids > 0, "the node had no workers?")
    assert.is_true(wait_gone(all_pids(n), 15), "the dead node's workers still run")
  end)

  -- A node killed outright also stops answering TAKEs, which gives it up
  -- another way; a node frozen while nothing is asked of it shows that its
  -- silence alone is judged: lost after LOST_BEATS (5) heartbeats of 0.2 s.
  it("10b. a node frozen (SIGSTOP) while idle is lost within seconds, by its silence alone", function()
    local key = keygen()
    local n = start_node("-w 1 --heartbeat 0.2 --key-file " .. Q(key))
    local r = run(([[
      local nodepid = %d
      -- every process of the node, children first (STOP or CONT)
      local function signal(sig)
        os.execute(("env -u LD_PRELOAD sh -c 'tree() { for k in $(pgrep -P $1); do tree $k; done; kill -%%s $1; }; "
          .. "tree %%d'"):format(sig, nodepid))
      end
      assert(farm.submit(function() return 1 end):result(30) == 1)
      signal("STOP")
      local waited = 0
      while farm.nodes()[1].state ~= "lost" and waited < 15 do
        os.execute("sleep 0.1")
        waited = waited + 0.1
      end
      local state = farm.nodes()[1].state          -- (once resumed, it may come back: rejoin_spec)
      signal("CONT")
      print(state, waited < 4 and "soon" or ("after " .. waited .. " s"))
    ]]):format(n.pid), "-n 0 --heartbeat 0.2 " .. via(n, key), 60)
    assert.are.equal("lost\tsoon\n", r.out, r.err)
    assert.is_truthy(r.err:find("lost", 1, true), r.err)
  end)

  it("11. a client SIGKILLed mid-run: the node ends the session, stops its jobs, serves the next", function()
    local key = keygen()
    local n = start_node("-w 2 --heartbeat 0.2 --key-file " .. Q(key))
    local r = run(([[
      local mark = %q
      local function spin(i, mark)
        io.open(mark .. "/started" .. i, "w"):close()
        local t = os.clock() + 60
        while os.clock() < t do end
        return i
      end
      local fs = {}
      for i = 1, 4 do fs[i] = farm.submit(spin, i, mark) end
      local function started()
        local k = 0
        for i = 1, 4 do
          local f = io.open(mark .. "/started" .. i)
          if f then f:close(); k = k + 1 end
        end
        return k
      end
      for _ = 1, 300 do
        if started() >= 2 then break end
        os.execute("sleep 0.05")
      end
      io.stderr:write("started ", started(), "\n")
      os.execute("kill -KILL " .. io.open("/proc/self/stat"):read("n"))
      print("still here")
    ]]):format(dir), "-n 0 --heartbeat 0.2 " .. via(n, key), 60)
    assert.are.equal(137, r.code, r.err)
    assert.are.equal("", r.out)
    assert.is_truthy(r.err:find("started 2", 1, true), r.err)
    assert.is_truthy(log_has(n, "ended", 20), H.slurp(n.log) .. "\nits stderr: " .. H.slurp(n.err))
    -- no worker of the node goes on spinning
    local idle = wait_for(function()
      local pids = note_kids(n)
      local t1 = ticks(pids)
      sleep(0.5)
      local t2 = ticks(pids)
      for pid, t in pairs(t2) do
        if t1[pid] and t - t1[pid] > 10 then return false end
      end
      return true
    end, 15)
    assert.is_true(idle, "the node's workers still run the dead client's jobs")
    local r2 = run([[
      print(table.concat(farm.map(function(x) return x * 3 end, {1, 2, 3, 4, 5}), ","))
    ]], "-n 0 --heartbeat 0.2 " .. via(n, key))
    assert.are.equal(0, r2.code, r2.err)
    assert.are.equal("3,6,9,12,15\n", r2.out)
    stopped_ok(n)
  end)

  it("12. two clients at once: both are served at the same time", function()
    -- Each client gets a session of its own: the second does not wait for the first.
    local key = keygen()
    local n = start_node("-w 2 --key-file " .. Q(key))
    local first = spawn("first", ("exec %s run %s -n 0 %s"):format(Q(H.farm), Q(script([[
      local r = farm.map(function(x)
        local t = os.clock() + 0.4
        while os.clock() < t do end
        return x * 2
      end, {1, 2, 3, 4, 5, 6})
      print(table.concat(r, ","))
    ]])), via(n, key)))
    assert.is_truthy(log_has(n, "authenticated", 30), H.slurp(n.log))
    local second = run(ONE_JOB, "-n 0 " .. via(n, key), 60)
    assert.are.equal(0, status(first, 60), H.slurp(first.err))
    assert.are.equal("2,4,6,8,10,12\n", H.slurp(first.out))
    assert.are.equal(0, second.code, second.err)
    assert.are.equal("42\n", second.out)
    -- side by side: the second's session began before the first's ended
    local log = H.slurp(n.log)
    local first_end = log:find("ended", 1, true)
    local _, auths = log:gsub("authenticated", "")
    assert.are.equal(2, auths, log)
    local second_auth = select(2, log:find("authenticated.-authenticated"))
    assert.is_truthy(first_end and second_auth and second_auth < first_end, log)
    stopped_ok(n)
  end)

  it("13. SIGTERM stops a node (exit 0, pid file removed); --idle-timeout; --help lists every option", function()
    local key = keygen()
    local pidfile = dir .. "/node.pid"
    local n = start_node("-w 1 --key-file " .. Q(key) .. " --pid-file " .. Q(pidfile))
    assert.is_truthy(wait_for(function() return read_pid(pidfile) end, 10))
    assert.are.equal(n.pid, read_pid(pidfile))
    stopped_ok(n)
    assert.is_nil(io.open(pidfile))
    assert.is_truthy(H.slurp(n.log):find("stopping", 1, true), H.slurp(n.log))

    -- idle: exits by itself; a client's session is not idle time
    local m = start_node("-w 1 --idle-timeout 1 --key-file " .. Q(key))
    local r = run([[
      print(farm.submit(function() local t = os.clock() + 2; while os.clock() < t do end; return "busy" end):result())
    ]], "-n 0 " .. via(m, key))
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("busy\n", r.out)
    assert.are.equal(0, status(m, 20))
    assert.is_true(wait_gone(all_pids(m), 10))
    assert.is_truthy(H.slurp(m.log):find("no client for 1 s", 1, true), H.slurp(m.log))

    local h = H.farm_cmd("node --help", 30)
    assert.are.equal(0, h.code, h.err)
    for _, opt in ipairs({ "--listen", "--workers", "--key-file", "--idle-timeout", "--pid-file",
                           "--log-file", "--log-level", "--daemon", "--heartbeat" }) do
      assert.is_truthy(h.out:find(opt, 1, true), opt .. " missing from: " .. h.out)
    end
  end)

  it("13b. --daemon detaches, and writes a relative --pid-file where it was started", function()
    local key = keygen()
    local p = port()
    local r = H.sh(("cd %s && %s node --daemon --listen tcp://127.0.0.1:%d --key-file farm.key --pid-file node.pid --log-file node.log")
      :format(Q(dir), Q(H.farm), p), 30)
    -- find the daemon by its own port (unique to this test), to stop it whatever happens
    local pid = wait_for(function()
      local f = io.popen((PLAIN .. "pgrep -f -- %s"):format(Q("[-]-listen tcp://127.0.0.1:" .. p .. " ")))
      local v = tonumber(f:read("l") or "")
      f:close()
      return v
    end, 10)
    if pid then procs[#procs + 1] = { pid = pid, kids = {} } end
    assert.are.equal(0, r.code, r.err)
    assert.is_truthy(pid, "no daemon")
    assert.is_truthy(wait_for(function() return H.slurp(dir .. "/node.log"):find("listening on", 1, true) end, 10))
    local c = run(ONE_JOB, "-n 0 --hosts node://127.0.0.1:" .. p .. " --key-file " .. Q(key))
    assert.are.equal(0, c.code, c.err)
    assert.are.equal("42\n", c.out)
    local in_dir = wait_for(function() return read_pid(dir .. "/node.pid") end, 5)
    os.execute("kill -TERM " .. pid)
    assert.is_true(H.wait_gone({ pid }, 15))
    assert.are.equal(pid, in_dir, "the pid file is not in the directory the node started in")
  end)

  it("14. a node's results never touch the client's globals", function()
    local key = keygen()
    local n = start_node("-w 1 --key-file " .. Q(key))
    local r = run([[
      local f = farm.submit(function()
        SECRET = "from the node"
        return function() return SECRET end
      end)
      local g = f:result()
      assert(type(g) == "function", "not a function: " .. tostring(g))
      print("after result", rawget(_G, "SECRET"))
      local ok, v = pcall(g)
      print("call", ok, rawget(_G, "SECRET"))
      local h = farm.submit(function()
        SECRET = 1
        return function() SECRET = "set by a result"; return true end
      end)
      local set = h:result()
      print("table", rawget(_G, "SECRET"), pcall(set))
      print("at last", rawget(_G, "SECRET"))
      -- a metatable of the node's own (code that would run here) is refused
      local m = farm.submit(function()
        return setmetatable({}, { __index = function() return SECRET end })
      end)
      print("metatable", pcall(m.result, m))
    ]], "-n 0 " .. via(n, key))
    assert.are.equal(0, r.code, r.err)
    local lines = {}
    for l in r.out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.are.equal("after result\tnil", lines[1], r.out)
    assert.is_truthy(lines[2] and lines[2]:find("^call\t%a+\tnil$"), r.out)
    assert.is_truthy(lines[3] and lines[3]:find("^table\tnil\t"), r.out)
    assert.are.equal("at last\tnil", lines[4], r.out)
    assert.is_truthy(lines[5] and lines[5]:find("^metatable\tfalse\t.*carries a metatable by value"), r.out)
    stopped_ok(n)
  end)

  it("15. a table error reaches the client as it was; a job out of time fails while the node goes on", function()
    local key = keygen()
    local n = start_node("-w 2 --key-file " .. Q(key))
    local r = run([[
      local f = farm.submit(function() error({ code = 42 }) end)
      local ok, err = pcall(f.result, f)
      print("table error", ok, type(err) == "table" and type(err.value) == "table" and err.value.code)
      local slow = farm.submit_with({ timeout = 0.3 }, function()
        local t = os.time() + 5
        while os.time() < t do end
        return "late"
      end)
      local others = {}
      for i = 1, 6 do others[i] = farm.submit(function(x) return x * 3 end, i) end
      local ok2, err2 = pcall(slow.result, slow, 60)
      print("slow", ok2, type(err2) == "table" and err2.message or tostring(err2))
      local got = {}
      for i = 1, 6 do got[i] = others[i]:result(60) end
      print("others", table.concat(got, ","))
      print("after", farm.submit(function() return "still serving" end):result(60))
      print("node", farm.nodes()[1].state)
    ]], "-n 0 " .. via(n, key))
    assert.are.equal(0, r.code, r.err)
    assert.is_truthy(r.out:find("table error\tfalse\t42\n", 1, true), r.out)
    assert.is_truthy(r.out:find("slow\tfalse\t[^\n]*timed out"), r.out)
    assert.is_truthy(r.out:find("others\t3,6,9,12,15,18\n", 1, true), r.out)
    assert.is_truthy(r.out:find("after\tstill serving\n", 1, true), r.out)
    assert.is_truthy(r.out:find("node\tup\n", 1, true), r.out)
    assert.is_true(H.alive(n.pid))
    stopped_ok(n)
  end)

  it("16. what a job prints on the node reaches the client's stdout and future.stdout", function()
    local key = keygen()
    local n = start_node("-w 1 --key-file " .. Q(key))
    local r = run([[
      local f = farm.submit(function(x) print("hello from the node", x); io.write("second line\n"); return x end, 5)
      assert(f:result() == 5)
      io.stderr:write("FIELD[", f.stdout, "]\n")
    ]], "-n 0 " .. via(n, key))
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("hello from the node\t5\nsecond line\n", r.out)
    assert.is_truthy(r.err:find("FIELD[hello from the node\t5\nsecond line\n]", 1, true), r.err)
    stopped_ok(n)
  end)

  it("17. nested jobs (submit, map) inside a job on the node", function()
    local key = keygen()
    local n = start_node("-w 2 --key-file " .. Q(key))
    local r = run([[
      local function fib(n)
        if n < 2 then return n end
        local a, b = farm.submit(fib, n - 1), farm.submit(fib, n - 2)
        return a:result() + b:result()
      end
      print(farm.submit(fib, 10):result(60))
      local function recurse(depth)
        if depth == 0 then return 1 end
        local r = farm.map(recurse, { depth - 1, depth - 1 })
        return r[1] + r[2]
      end
      print(farm.submit(recurse, 6):result(60))
      print(farm.submit(function()
        return table.concat(farm.map(function(x) return x * x end, { 1, 2, 3, 4 }), ",")
      end):result(60))
      print(farm.nodes()[1].state, farm.nodes()[1].jobs_done > 0)
    ]], "-n 0 " .. via(n, key))
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("55\n64\n1,4,9,16\nup\ttrue\n", r.out)
    stopped_ok(n)
  end)

  it("18. a node and a client with different --heartbeat keep their session through a long job", function()
    local key = keygen()
    local text = [[
      print(farm.submit(function() local t = os.clock() + 3; while os.clock() < t do end; return "done" end):result(60))
    ]]
    -- the node beats fast, the client at its default
    local n = start_node("-w 1 --heartbeat 0.2 --key-file " .. Q(key))
    local r = run(text, "-n 0 " .. via(n, key))
    stopped_ok(n)
    -- the client beats fast, the node at its default
    local m = start_node("-w 1 --key-file " .. Q(key))
    local r2 = run(text, "-n 0 --heartbeat 0.2 " .. via(m, key))
    stopped_ok(m)
    assert.are.equal(0, r.code, "node --heartbeat 0.2, client default: " .. r.err .. H.slurp(n.log))
    assert.are.equal("done\n", r.out)
    assert.are.equal(0, r2.code, "client --heartbeat 0.2, node default: " .. r2.err .. H.slurp(m.log))
    assert.are.equal("done\n", r2.out)
  end)

  it("19. a hostfile's `node://host:port N` uses at most N of the node's workers", function()
    local key = keygen()
    local n = start_node("-w 2 --key-file " .. Q(key))
    local hosts = H.write(dir .. "/hosts", n.url .. " 1\n")
    local busy = dir .. "/busy"
    assert(os.execute("mkdir " .. Q(busy)))
    -- each job marks itself busy, waits, then counts the busy ones: with two
    -- at once, both see two
    local r = run(([[
      local function job(dir, i)
        local mine = dir .. "/" .. i
        io.open(mine, "w"):close()
        os.execute("sleep 0.3")
        local p = io.popen("ls " .. dir .. " | wc -l")
        local most = p:read("n")
        p:close()
        os.remove(mine)
        return most
      end
      local fs = {}
      for i = 1, 6 do fs[i] = farm.submit(job, %q, i) end
      local most = 0
      for i = 1, 6 do most = math.max(most, fs[i]:result()) end
      local nd = farm.nodes()[1]
      print(most, farm.workers(), nd.workers, nd.state)
    ]]):format(busy), "-n 0 --nodes " .. Q(hosts) .. " --key-file " .. Q(key))
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("1\t1\t1\tup\n", r.out)
    -- without a count, all the node has
    r = run(ONE_JOB .. "print(farm.workers(), farm.nodes()[1].workers)\n", "-n 0 " .. via(n, key))
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("42\n2\t2\n", r.out)
    stopped_ok(n)
  end)

  it("20. farm.nodes() gives a host that could not be reached no workers", function()
    local key = keygen()
    local r = run(ONE_JOB .. [[
      for _, nd in ipairs(farm.nodes()) do print(nd.host, nd.state, nd.workers) end
      print(farm.workers())
    ]], "-n 1 --hosts node://127.0.0.1:" .. port() .. " --key-file " .. Q(key))
    assert.are.equal(0, r.code, r.err)
    assert.is_truthy(r.out:find("^42\nnode://127%.0%.0%.1:%d+\tfailed\t0\n1\n$"), r.out)
  end)

  it("21. a second node given a live node's --pid-file says so and exits; a dead node's is taken over", function()
    local key = keygen()
    local pidfile = dir .. "/node.pid"
    local n = start_node("-w 1 --key-file " .. Q(key) .. " --pid-file " .. Q(pidfile))
    assert.are.equal(n.pid, wait_for(function() return read_pid(pidfile) end, 10))
    local m = start_node("-w 1 --key-file " .. Q(key) .. " --pid-file " .. Q(pidfile), { nowait = true })
    local rc = status(m, 20)
    assert.is_truthy(rc and rc ~= 0, "the second node's exit status: " .. tostring(rc))
    local err = H.slurp(m.err)
    assert.is_true(one_line(err), err)
    assert.is_truthy(err:find("pid file '" .. pidfile .. "' belongs to node " .. n.pid .. ", which is still running", 1, true), err)
    assert.is_true(wait_gone(all_pids(m), 10))
    -- the first one's file is still there, still its own, and it still serves
    assert.are.equal(n.pid, read_pid(pidfile))
    local r = run(ONE_JOB, "-n 0 " .. via(n, key))
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("42\n", r.out)
    assert.is_truthy(alive(n.pid, n.start))
    -- a node killed outright leaves its file; the next node takes it over
    os.execute("kill -KILL " .. n.pid)
    assert.is_true(wait_gone({ { pid = n.pid, start = n.start } }, 10))
    assert.are.equal(n.pid, read_pid(pidfile))
    local o = start_node("-w 1 --key-file " .. Q(key) .. " --pid-file " .. Q(pidfile))
    assert.are.equal(o.pid, wait_for(function() return read_pid(pidfile) == o.pid and o.pid end, 10))
    stopped_ok(o)
    assert.is_nil(io.open(pidfile))
  end)

  it("22. a program shipped with files = runs by its path on the node: its execute bits go, and only those", function()
    local key = keygen()
    local n = start_node("-w 1 --key-file " .. Q(key))
    H.write(dir .. "/prog.sh", "#!/bin/sh\necho ran \"$1\"\n")
    H.write(dir .. "/data.txt", "data\n")
    -- setuid on the client's copy must not reach the node's
    assert(os.execute(PLAIN .. "chmod 4750 " .. Q(dir .. "/prog.sh") .. " && chmod 640 " .. Q(dir .. "/data.txt")))
    local s = script([[
      local function run(arg)
        local p = io.popen("./prog.sh " .. arg .. " 2>&1")
        local out = p:read("a")
        p:close()
        local m = io.popen("stat -c %a prog.sh data.txt")
        local modes = m:read("a")
        m:close()
        return out .. modes:gsub("\n", " ")
      end
      print(farm.submit_with({ files = { "prog.sh", "data.txt" } }, run, "there"):result())
      print(farm.nodes()[1].jobs_done)
    ]])
    local r = H.sh(("cd %s && unset FARM_KEY_FILE && %s run %s -n 0 %s")
      :format(Q(dir), Q(H.abs(H.farm)), Q(s), via(n, key)), 60)
    assert.are.equal(0, r.code, r.err)
    -- 0644 less the node's umask (022 under the spec), with the execute bits the client's copy had
    assert.are.equal("ran there\n754 644 \n1\n", r.out)
    stopped_ok(n)
  end)

  it("23. a job running on a node says running; one cancelled there by force names the node", function()
    local key = keygen()
    local n = start_node("-w 1 --key-file " .. Q(key))
    local r = run([[
      local function spin(s) local t = os.time() + s while os.time() < t do end return s end
      local function until_running(f)
        local deadline = os.time() + 15
        local st = f:status()
        while st ~= "running" and os.time() < deadline do os.execute("sleep 0.05") st = f:status() end
        return st
      end
      local f = farm.submit(spin, 2)
      print("first", until_running(f), f:result())
      local g = farm.submit(spin, 60)
      print("second", until_running(g), g:cancel{ force = true })
      farm.wait({ g }, { timeout = 15 })
      print("cancelled", g:status(), g.node, g.worker)
    ]], "-n 0 " .. via(n, key), 60)
    assert.are.equal(0, r.code, r.err)
    assert.are.equal(("first\trunning\t2\nsecond\trunning\ttrue\ncancelled\tcancelled\t%s\t%s\n")
      :format(n.url, n.url), r.out)
    stopped_ok(n)
  end)
end)
