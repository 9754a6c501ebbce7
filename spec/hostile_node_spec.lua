-- hostile_node_spec.lua -- the wall between a client and its nodes (DESIGN.md
-- section 3, "Client <- node"): a node holds the key and may run the client's
-- jobs and return values, but it may not run code in the client or on the
-- client's other workers, nor write where the client will later execute.
--
-- Each test starts spec/peers/fake_node (build/peers/fake_node), a node that
-- speaks the protocol and then does one thing an honest node never does, and a
-- real `farm run` that uses it beside 2 local workers on a script of 20 jobs.
-- The attacks try to create a marker file: it must never appear. Everything a
-- test starts it stops by pid (after_each kills what is left); every file lives
-- in the test's own directory; 127.0.0.1 only.
local H = require "helper"
local Q = H.quote

local FARM = H.abs(H.farm)
local FAKE = H.abs(H.build .. "/peers/fake_node")
local MYPID = H.pid
local PLAIN = "env -u LD_PRELOAD timeout -k 2 30 "

local dir, procs, nstarted

local sleep, wait_for = H.sleep, H.wait_for

--- a fake node with this attack on a free port of 127.0.0.1, ready; { pid, port, url, log }
local function start_fake(attack, key, marker)
  for _ = 1, 8 do
    nstarted = nstarted + 1
    local f = { port = 40000 + (MYPID * 37 + nstarted * 101 + os.time()) % 20000,
                out = dir .. "/fake" .. nstarted .. ".out", log = dir .. "/fake" .. nstarted .. ".err" }
    local pidfile = dir .. "/fake" .. nstarted .. ".pid"
    os.execute(("%s --listen tcp://127.0.0.1:%d --key-file %s --attack %s --marker %s >%s 2>%s </dev/null & echo $! >%s")
      :format(Q(FAKE), f.port, Q(key), attack, Q(marker), Q(f.out), Q(f.log), Q(pidfile)))
    f.pid = assert(tonumber(H.slurp(pidfile):match("%d+")), "could not start " .. FAKE)
    procs[#procs + 1] = f.pid
    local ready = wait_for(function()
      return H.slurp(f.out):find("FAKE-NODE READY", 1, true) or not H.alive(f.pid)
    end, 10)
    if ready and H.slurp(f.out):find("FAKE-NODE READY", 1, true) then
      f.url = "node://127.0.0.1:" .. f.port
      f.name = "127.0.0.1:" .. f.port
      return f
    end
    assert(H.slurp(f.log):find("in use", 1, true), "the fake node did not start: " .. H.slurp(f.log))
  end
  error("no free port for the fake node")
end

--- the fake node ends by itself once the client is gone (QUIT, or silence);
--- true if it did within seconds. It is killed by pid either way.
local function fake_gone(f, seconds)
  local gone = H.wait_gone({ f.pid }, seconds or 10)
  if not gone then os.execute("kill -KILL " .. f.pid .. " 2>/dev/null") end
  return gone
end

local function keygen()
  local k = dir .. "/farm.key"
  local r = H.farm_cmd("keygen " .. Q(k), 30)
  assert.are.equal(0, r.code, r.err)
  return k
end

-- 20 jobs of known values, collected with pcall: one line per job,
-- "job I local|node ok VALUE|error MESSAGE", then the garbage is collected.
local SCRIPT = [[
local fs = {}
for i = 1, 20 do
  fs[i] = farm.submit(function(i)
    local s = 0
    for k = 1, 300000 do s = s + k % 7 end
    return i * i
  end, i)
end
for i = 1, 20 do
  local ok, v = pcall(fs[i].result, fs[i])
  local where = fs[i].node == "local" and "local" or "node"
  local what = ok and (math.type(v) and tostring(v) or type(v)) or tostring(v):gsub("\n", " ")
  print(("job %d %s %s %s"):format(i, where, ok and "ok" or "error", what))
end
fs = nil
collectgarbage() collectgarbage()
print("done")
]]

--- farm run SCRIPT (in dir) with the fake node beside 2 local workers
local function run(f, key, extra, text, timeout)
  H.write(dir .. "/job.lua", text or SCRIPT)
  return H.sh(("cd %s && unset FARM_KEY_FILE; %s run job.lua --hosts %s --key-file %s -n 2 --heartbeat 0.3 %s")
    :format(Q(dir), Q(FARM), f.url, Q(key), extra or ""), timeout or 45)
end

--- the script's lines about its jobs: { [i] = { where =, ok =, what = } }
local function jobs_of(out)
  local t, n = {}, 0
  for i, where, st, what in out:gmatch("job (%d+) (%a+) (%a+) ([^\n]*)") do
    t[tonumber(i)] = { where = where, ok = st == "ok", what = what }
    n = n + 1
  end
  return t, n
end

--- every job that ran here has its right value; returns how many ran at the node
local function local_jobs_right(r)
  local t, n = jobs_of(r.out)
  assert.are.equal(20, n, "the script did not report every job:\n" .. r.out .. r.err)
  local at_node = 0
  for i = 1, 20 do
    local j = t[i]
    if j.where == "local" then
      assert.is_true(j.ok, ("job %d failed here: %s"):format(i, j.what))
      assert.are.equal(tostring(i * i), j.what, "job " .. i)
    else
      at_node = at_node + 1
    end
  end
  return at_node, t
end

local function count(s, text)
  return select(2, s:gsub(text:gsub("%p", "%%%0"), ""))
end

describe("a hostile node", function()
  before_each(function()
    local p = io.popen(PLAIN .. "mktemp -d /tmp/farm-hostile-spec.XXXXXX")
    dir = p:read("l")
    p:close()
    assert(dir and dir:match("^/tmp/farm%-hostile%-spec%."), "mktemp -d failed")
    procs, nstarted = {}, 0
  end)

  after_each(function()
    for _, pid in ipairs(procs) do
      if H.alive(pid) then os.execute("kill -KILL " .. pid .. " 2>/dev/null") end
    end
    assert.is_true(H.wait_gone(procs, 10), "a fake node still runs")
    os.execute("rm -rf " .. Q(dir))
    H.cleanup()
  end)

  it("(the harness) honest-ish: its answers are taken, nothing is said, it leaves when the client does", function()
    local key, marker = keygen(), dir .. "/marker"
    local f = start_fake("honest-ish", key, marker)
    local r = run(f, key)
    assert.are.equal(0, r.code, r.err)
    assert.is_truthy(r.out:find("done\n", 1, true), r.out)
    local at_node, t = local_jobs_right(r)
    assert.is_true(at_node >= 1, "the fake node ran no job:\n" .. r.out)
    for i = 1, 20 do
      if t[i].where == "node" then assert.are.same({ true, "42" }, { t[i].ok, t[i].what }) end
    end
    assert.are.equal("", r.err)
    assert.is_true(fake_gone(f), "the fake node did not end with its client")
    assert.is_truthy(H.slurp(f.log):find("the client said QUIT", 1, true), H.slurp(f.log))
  end)

  for _, case in ipairs {
    { attack = "submit", what = "SUBMIT" },
    { attack = "suspended", what = "SUSPENDED" },
  } do
    it(("%s: the node is dropped with one line, used no more, and every job reruns here right"):format(case.attack), function()
      local key, marker = keygen(), dir .. "/marker"
      local f = start_fake(case.attack, key, marker)
      local r = run(f, key)
      assert.are.equal(0, r.code, r.err)
      assert.is_truthy(r.out:find("done\n", 1, true), r.out)
      local at_node = local_jobs_right(r)
      assert.are.equal(0, at_node, "a job's result came from the node:\n" .. r.out)
      assert.is_nil(io.open(marker), "the node's code ran here")
      -- one line, naming the node and what it sent
      assert.are.equal(1, H.lines(r.err), r.err)
      assert.is_truthy(r.err:find("^farm: node [^\n]*" .. f.name:gsub("%p", "%%%0")), r.err)
      assert.is_truthy(r.err:find(case.what, 1, true), r.err)
      -- one session (it was not reconnected), and the client cut it off: it
      -- never said QUIT to it, as it does to a node still in the run at the end
      -- (a JOBS already on its way may still have reached the node)
      assert.is_true(fake_gone(f), "the fake node did not end once dropped")
      local log = H.slurp(f.log)
      assert.are.equal(1, count(log, "authenticated"), log)
      assert.is_truthy(log:find("sent " .. case.what, 1, true), log)
      assert.is_nil(log:find("the client said QUIT", 1, true), log)
      assert.is_truthy(log:find("no word from the client", 1, true), log)
      assert.is_nil(io.open(marker), "the node's code ran here")
    end)
  end

  it("shm: RESULTS that name a shared-memory span are malformed; the node is dropped and its jobs rerun here", function()
    local key, marker = keygen(), dir .. "/marker"
    local f = start_fake("shm", key, marker)
    local r = run(f, key)
    assert.are.equal(0, r.code, r.err)
    assert.is_truthy(r.out:find("done\n", 1, true), r.out)
    assert.are.equal(0, local_jobs_right(r), "a job's result came from the node:\n" .. r.out)
    assert.are.equal(1, H.lines(r.err), r.err)
    assert.is_truthy(r.err:find("lost: malformed message from", 1, true), r.err)
    assert.is_true(fake_gone(f), "the fake node did not end once dropped")
    assert.is_truthy(H.slurp(f.log):find("sent RESULTS (shm)", 1, true), H.slurp(f.log))
  end)

  for _, case in ipairs {
    { attack = "gc", how = "a table whose metatable travels by value, with a __gc that writes a file" },
    { attack = "loop", how = "a function whose surrounding text never ends" },
    { attack = "alloc", how = "a function whose surrounding text allocates 1.5 GiB, and a table claiming 2^40 slots" },
  } do
    it(("%s: %s is refused; no hang, and the other jobs are right"):format(case.attack, case.how), function()
      local key, marker = keygen(), dir .. "/marker"
      local f = start_fake(case.attack, key, marker)
      local r = run(f, key)
      assert.are_not.equal(124, r.code, "farm run hung (killed by timeout)")
      assert.are.equal(0, r.code, r.err)
      assert.is_truthy(r.out:find("done\n", 1, true), r.out)
      local at_node, t = local_jobs_right(r)
      assert.is_true(at_node >= 1, "the fake node ran no job:\n" .. r.out)
      for i = 1, 20 do
        if t[i].where == "node" then
          assert.is_false(t[i].ok, ("job %d: the node's %s was taken as a result (%s)"):format(i, case.attack, t[i].what))
          assert.is_truthy(#t[i].what > 0, "job " .. i .. " failed without a message")
        end
      end
      assert.is_nil(io.open(marker), "the node's code ran here")
      assert.is_true(fake_gone(f), "the fake node did not end with its client")
      assert.is_nil(io.open(marker), "the node's code ran here")
    end)
  end

  it("partial: provisional results are data; a __gc by value is refused when read, one for a job not there is dropped", function()
    local key, marker = keygen(), dir .. "/marker"
    local f = start_fake("partial", key, marker)
    local r = run(f, key, nil, [[
      local fs = {}
      for i = 1, 20 do fs[i] = farm.submit(function(i) local s = 0 for k = 1, 300000 do s = s + k % 7 end return i * i end, i) end
      for i = 1, 20 do
        local ok, v = pcall(fs[i].result, fs[i])
        local pok, pv = pcall(fs[i].partial, fs[i])
        local where = fs[i].node == "local" and "local" or "node"
        print(("job %d %s %s %s | partial %s %s"):format(i, where, ok and "ok" or "error", tostring(v),
          pok and "ok" or "error", (tostring(pv):gsub("\n", " "))))
      end
      fs = nil
      collectgarbage() collectgarbage()
      print("done")
    ]])
    assert.are.equal(0, r.code, r.err)
    assert.is_truthy(r.out:find("done\n", 1, true), r.out)
    local at_node = 0
    for i, where, res, pst, pwhat in r.out:gmatch("job (%d+) (%a+) ok (%d+) | partial (%a+) ([^\n]*)") do
      i = tonumber(i)
      if where == "node" then
        at_node = at_node + 1
        assert.are.equal("42", res, r.out)
        assert.are.equal("error", pst, ("job %d: a __gc by value was taken as a provisional result: %s"):format(i, pwhat))
        assert.is_truthy(pwhat:find("metatable", 1, true), pwhat)
      else
        assert.are.equal(tostring(i * i), res)
        assert.are.same({ "ok", "nil" }, { pst, pwhat })
      end
    end
    assert.is_true(at_node >= 1, "the fake node ran no job:\n" .. r.out)
    assert.is_nil(io.open(marker), "the node's code ran here")
    assert.is_true(fake_gone(f), "the fake node did not end with its client")
    assert.is_nil(io.open(marker), "the node's code ran here")
  end)

  it("file: a file from a node never replaces one, and by default lands where nothing runs it", function()
    local key, marker = keygen(), dir .. "/marker"
    local UTIL = "return { answer = 42 }\n"
    H.write(dir .. "/util.lua", UTIL)
    os.execute("mkdir " .. Q(dir .. "/out"))
    H.write(dir .. "/out/util.lua", UTIL)

    -- an explicit --dest that holds util.lua: refused, one line
    local f = start_fake("file", key, marker)
    local r = run(f, key, "--dest out")
    assert.are.equal(0, r.code, r.err)
    local at_node, t = local_jobs_right(r)
    assert.is_true(at_node >= 1, "the fake node ran no job:\n" .. r.out)
    for i = 1, 20 do
      if t[i].where == "node" then assert.are.same({ true, "42" }, { t[i].ok, t[i].what }) end
    end
    assert.is_truthy(H.slurp(f.log):find("sent FILE util.lua", 1, true), H.slurp(f.log))
    assert.are.equal(UTIL, H.slurp(dir .. "/out/util.lua"))
    assert.are.equal(UTIL, H.slurp(dir .. "/util.lua"))
    assert.are.equal(1, H.lines(r.err), r.err)
    assert.is_truthy(r.err:find("^farm: refused the file 'util.lua' that job %d+ sent from "
      .. f.url:gsub("%p", "%%%0") .. ": a file of that name is already in [^\n]*/out %(files from nodes never replace one%)\n$"), r.err)
    assert.is_true(fake_gone(f), "the fake node did not end with its client")

    -- the default destination: not the current directory, where ./?.lua is on package.path
    f = start_fake("file", key, marker)
    r = run(f, key)
    assert.are.equal(0, r.code, r.err)
    local_jobs_right(r)
    assert.are.equal(UTIL, H.slurp(dir .. "/util.lua"))
    -- it landed in the run's own directory, which the user is told of in one line
    local run_dir = r.err:match("^farm: the files jobs send are in (farm%-out/%d+%-%d+%-%d+) %(")
    assert.is_truthy(run_dir, r.err)
    assert.are.equal(1, H.lines(r.err), r.err)
    assert.is_truthy(H.slurp(dir .. "/" .. run_dir .. "/util.lua"):find("io.open", 1, true))
    assert.is_true(fake_gone(f), "the fake node did not end with its client")
    -- the next run of the user's code requires util: its own
    local r2 = H.sh(("cd %s && %s run - -n 1 <<'EOF'\nprint(require('util').answer)\nEOF"):format(Q(dir), Q(FARM)), 30)
    assert.are.equal(0, r2.code, r2.err)
    assert.are.equal("42\n", r2.out)
    assert.is_nil(io.open(marker), "the node's file was run")
  end)
end)
