-- slurm_spec.lua -- farm inside batch allocations, as a user runs it: a real
-- Slurm (slurmctld and slurmd started by scripts/slurm-testbed with a slurm.conf
-- of its own, stopped by pid), `--nodes slurm` under salloc and sbatch, SIGKILL
-- of the client ending the step; three Slurm nodes in network namespaces; and
-- PBS/SGE host files (written here) that start nodes over SSH on port 22 of a
-- namespace host. Every client of a namespace address runs inside a namespace.
local H = require "helper"

local q = H.quote
local abs = H.abs
local FARM = abs(H.farm)
local ROOT = abs(".")
local MYPID = H.pid
local NET = os.getenv("FARM_NETNS_NET") or "10.203.0"

-- Slurm's commands and the other tools run without `make asan`'s preloaded runtime
local function sh(cmd, timeout) return H.sh("unset LD_PRELOAD; " .. cmd, timeout or 120) end

local SCRIPT = [[
local farm = require "farm"
local function sum_primes(lo, hi)
  local s = 0
  for n = math.max(lo, 2), hi do
    local p = true
    for d = 2, math.floor(math.sqrt(n)) do if n % d == 0 then p = false break end end
    if p then s = s + n end
  end
  return s
end
local los, his = {}, {}
for i = 1, 30 do los[i], his[i] = (i - 1) * 2000, i * 2000 - 1 end
local total = 0
for _, s in ipairs(farm.map(sum_primes, los, his)) do total = total + s end
print("sum", total)
for _, n in ipairs(farm.nodes()) do
  io.stderr:write(("NODE %s %d %s\n"):format(n.host, n.jobs_done, n.state))
end
]]

local function expected()
  local r = H.run_script(SCRIPT, "-n 2")
  assert.are.equal(0, r.code, r.err)
  return r.out
end

--- nodes started by srun for farm, still running anywhere on this machine
local function step_nodes()
  local r = sh("pgrep -f -- '[n]ode --launched --connect-back' || true")
  local n = 0
  for _ in r.out:gmatch("%d+") do n = n + 1 end
  return n
end

local function settles(fn, seconds)
  local deadline = os.time() + (seconds or 10)
  repeat
    if fn() then return true end
    os.execute("sleep 0.1")
  until os.time() > deadline
  return false
end

describe("--nodes slurm with a real Slurm on this machine", function()
  local dir = "/tmp/farm-slurm-spec." .. MYPID
  local env
  local want

  setup(function()
    local r = sh("scripts/slurm-testbed start " .. q(dir), 60)
    assert.are.equal(0, r.code, r.err)
    env = ". " .. q(dir .. "/env") .. " && "
    want = expected()
  end)

  teardown(function()
    sh("scripts/slurm-testbed stop " .. q(dir), 60)
    H.cleanup()
  end)

  after_each(function()
    assert.is_true(settles(function() return step_nodes() == 0 end, 15), "a node of the step outlived its run")
    -- the allocation ends before the next test asks for the node again
    assert.is_true(settles(function() return sh(env .. "squeue -h 2>/dev/null").out == "" end, 90),
      "a job is still in the queue")
  end)

  it("runs every job on the node srun started inside salloc (-n 0), with the local results", function()
    local script = H.tmp(SCRIPT)
    local r = sh(env .. ("salloc -N1 --exclusive %s run %s --nodes slurm -n 0 2>&1"):format(q(FARM), q(script)))
    assert.are.equal(0, r.code, r.out .. r.err)
    assert.is_truthy(r.out:find(want, 1, true), r.out)
    assert.is_truthy(r.out:match("NODE slurm:%S+ 30 up"), r.out)
  end)

  it("runs from an sbatch script", function()
    local script = H.tmp(SCRIPT)
    local out = dir .. "/batch.out"
    local batch = H.tmp(("#!/bin/sh\n#SBATCH -N1 --exclusive\nexec %s run %s --nodes slurm -n 0\n")
      :format(q(FARM), q(script)), ".sh")
    local r = sh(env .. ("sbatch --parsable -o %s %s"):format(q(out), q(batch)))
    assert.are.equal(0, r.code, r.err)
    local job = r.out:match("(%d+)")
    assert.is_truthy(job, r.out)
    assert.is_true(settles(function()
      return sh(env .. "squeue -h -j " .. job .. " 2>/dev/null").out == ""
    end, 90), "the batch job did not end")
    local text = H.slurp(out)
    assert.is_truthy(text:find(want, 1, true), text)
    assert.is_truthy(text:match("NODE slurm:%S+ 30 up"), text)
  end)

  it("ends the step when the client is killed with SIGKILL", function()
    local script = H.tmp([[
local farm = require "farm"
local fs = {}
for i = 1, 40 do fs[i] = farm.submit(function() local c = os.clock() while os.clock() - c < 0.2 do end end) end
print("submitted") io.stdout:flush()
for i = 1, 40 do fs[i]:result() end
]])
    local out = dir .. "/kill.out"
    local r = sh(env .. ("salloc -N1 --exclusive %s run %s --nodes slurm -n 0 >%s 2>&1 & echo $!")
      :format(q(FARM), q(script), q(out)))
    local salloc = tonumber(r.out:match("%d+"))
    assert.is_truthy(salloc)
    assert.is_true(settles(function() return H.slurp(out):find("submitted", 1, true) ~= nil end, 60), H.slurp(out))
    assert.is_true(step_nodes() >= 1, "the node runs while the client does")
    -- the farm process itself (salloc's command line holds the same words)
    local client
    for pid in sh(("pgrep -f -- %s"):format(q(FARM .. " [r]un " .. script))).out:gmatch("%d+") do
      if H.slurp("/proc/" .. pid .. "/comm"):match("^farm") then client = pid end
    end
    assert.is_truthy(client, "the client's pid")
    os.execute("kill -9 " .. client)
    assert.is_true(settles(function() return step_nodes() == 0 end, 15), "the step outlived its client")
    assert.is_true(H.wait_gone({ salloc }, 30))
  end)

  it("says so in one line outside an allocation", function()
    local r = H.run_script("print(require('farm').submit(function() return 1 end):result())", "--nodes slurm", 30,
      "env -u SLURM_JOB_NODELIST -u SLURM_NODELIST -u SLURM_JOB_ID")
    assert.are_not.equal(0, r.code)
    assert.are.equal(1, H.lines(r.err), r.err)
    assert.is_truthy(r.err:find("not inside a Slurm allocation", 1, true), r.err)
  end)

  it("--nodes auto inside salloc uses the allocation", function()
    local script = H.tmp(SCRIPT)
    local r = sh(env .. ("salloc -N1 --exclusive %s run %s --nodes auto -n 0 2>&1"):format(q(FARM), q(script)))
    assert.are.equal(0, r.code, r.out .. r.err)
    assert.is_truthy(r.out:find(want, 1, true), r.out)
    assert.is_truthy(r.out:match("NODE slurm:%S+ 30 up"), r.out)
  end)
end)

describe("three Slurm nodes in network namespaces", function()
  local dir = "/tmp/farm-slurm3-spec." .. MYPID
  local tag = "s" .. MYPID
  local ns1 = "fH1" .. tag

  setup(function()
    local r = sh(("scripts/slurm-testbed start3 %s %s"):format(q(dir), tag), 90)
    assert.are.equal(0, r.code, r.err)
  end)

  teardown(function()
    sh(("scripts/slurm-testbed stop %s %s"):format(q(dir), tag), 90)
    H.cleanup()
  end)

  it("salloc -N3 spreads the jobs over the three nodes", function()
    local script = H.tmp(SCRIPT)
    local r = sh((". %s && ip netns exec %s salloc -N3 %s run %s --nodes slurm -n 0 2>&1")
      :format(q(dir .. "/env"), ns1, q(FARM), q(script)), 180)
    assert.are.equal(0, r.code, r.out)
    assert.is_truthy(r.out:find(expected(), 1, true), r.out)
    local seen = 0
    for host, jobs, state in r.out:gmatch("NODE slurm:(%S+) (%d+) (%a+)") do
      assert.are.equal("up", state)
      assert.is_true(tonumber(jobs) > 0, "node " .. host .. " did no job")
      seen = seen + 1
    end
    assert.are.equal(3, seen, r.out)
    assert.is_true(settles(function() return step_nodes() == 0 end, 15))
  end)
end)

describe("--nodes pbs and --nodes sge (host files written here, sshd on port 22 of a namespace host)", function()
  local tag = "p" .. MYPID
  local sshdir = "/tmp/farm-pbs-spec." .. MYPID
  local home = sshdir .. "/home"
  local h2 = NET .. ".2"

  setup(function()
    local r = sh(("scripts/netns-testbed up %s 2"):format(tag), 30)
    assert.are.equal(0, r.code, r.err)
    r = sh(("ip netns exec fH2%s scripts/sshd-testbed start %s 22 %s"):format(tag, q(sshdir), h2), 30)
    assert.are.equal(0, r.code, r.err)
  end)

  teardown(function()
    sh("scripts/sshd-testbed stop " .. q(sshdir), 30)
    sh(("scripts/netns-testbed down %s 2"):format(tag), 30)
    H.cleanup()
  end)

  local function run_in_h1(var, file_text)
    local file = H.tmp(file_text, ".nodes")
    local script = H.tmp(SCRIPT)
    return sh(("ip netns exec fH1%s env HOME=%s SSH_AUTH_SOCK= %s=%s %s run %s --nodes %s -n 0 --remote-farm %s 2>&1")
      :format(tag, q(home), var, q(file), q(FARM), q(script), var == "PBS_NODEFILE" and "pbs" or "sge", q(FARM)), 120)
  end

  it("PBS_NODEFILE: one line per CPU; the host's node gets that many workers", function()
    local r = run_in_h1("PBS_NODEFILE", h2 .. "\n" .. h2 .. "\n")
    assert.are.equal(0, r.code, r.out)
    assert.is_truthy(r.out:find(expected(), 1, true), r.out)
    assert.is_truthy(r.out:find("NODE " .. h2 .. " 30 up", 1, true), r.out)
  end)

  it("PE_HOSTFILE: host slots queue processors", function()
    local r = run_in_h1("PE_HOSTFILE", h2 .. " 2 all.q@" .. h2 .. " UNDEFINED\n")
    assert.are.equal(0, r.code, r.out)
    assert.is_truthy(r.out:find(expected(), 1, true), r.out)
    assert.is_truthy(r.out:find("NODE " .. h2 .. " 30 up", 1, true), r.out)
  end)
end)
