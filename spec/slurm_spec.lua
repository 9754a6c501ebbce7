-- slurm_spec.lua -- farm inside batch allocations, as a user runs it: a real
-- Slurm (slurmctld and slurmd started by scripts/slurm-testbed with a slurm.conf
-- of its own, stopped by pid), `--nodes slurm` under salloc and sbatch, SIGKILL
-- of the client ending the step; three Slurm nodes in network namespaces; and
-- PBS/SGE host files (written here) that start nodes over SSH on port 22 of a
-- namespace host; a step that cannot start (another step holds the allocation's
-- CPU; or, with a stale SLURM_JOB_NODELIST, another job holds the node) said
-- with Slurm's reason and given up at --slurm-wait, leaving nothing queued even
-- when farm is SIGKILLed or interrupted meanwhile. Every client of a namespace
-- address runs inside a namespace.
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

  -- salloc -N1 gives the job one CPU: a step of sleep holds it
  it("says a step that cannot start, with Slurm's reason, and gives up at --slurm-wait", function()
    local script = H.tmp(SCRIPT)
    local holder = dir .. "/holder.sh"
    H.write(holder, ([[
srun -n1 sleep 120 &
i=0; until squeue -h -s -j "$SLURM_JOB_ID" -o %%j | grep -qx sleep || [ $i -ge 200 ]; do sleep 0.1; i=$((i+1)); done
%s run %s --nodes slurm -n 0 --slurm-wait 3 2>&1; echo "rc=$?"
echo "--- with a local worker"
%s run %s --nodes slurm -n 1 --slurm-wait 2 2>&1; echo "rc=$?"
kill %%1
]]):format(q(FARM), q(script), q(FARM), q(script)))
    local r = sh(env .. "salloc -N1 sh " .. q(holder) .. " 2>&1", 120)
    local alone, with_local = r.out:match("^(.-)%-%-%- with a local worker\n(.*)$")
    assert.is_truthy(alone, r.out)
    -- -n 0: one line that it waits and why, one that it gave up, a non-zero status
    assert.is_truthy(alone:match("farm: the Slurm step for 1 node waits to start: job %d+'s CPUs are taken by its step %d+%.0 %(sleep%); farm gives up at 3 s"), alone)
    assert.is_truthy(alone:match("farm: host slurm:%S+: the Slurm step did not start within 3 s: [^\n]*step %d+%.0 %(sleep%)[^\n]*Requested nodes are busy[^\n]*%-%-slurm%-wait S\n"), alone)
    assert.is_truthy(alone:find("rc=1", 1, true), alone)
    local lines = 0
    for l in alone:gmatch("[^\n]+") do if l:match("^farm: ") then lines = lines + 1 end end
    assert.are.equal(2, lines, alone)
    -- a local worker: the run goes on without the step, as without any unreachable host
    assert.is_truthy(with_local:match("did not start within 2 s[^\n]*; going on without it"), with_local)
    assert.is_truthy(with_local:find(want, 1, true), with_local)
    assert.is_truthy(with_local:find("rc=0", 1, true), with_local)
  end)

  describe("with a stale SLURM_JOB_NODELIST outside an allocation, the node held by another job", function()
    local holder, node_name
    before_each(function()
      node_name = sh(env .. "sinfo -h -o %N").out:match("%S+")
      assert.is_truthy(node_name)
      local r = sh(env .. "sbatch --parsable -N1 --exclusive -o /dev/null --wrap 'sleep 300'")
      holder = r.out:match("%d+")
      assert.is_truthy(holder, r.err)
      assert.is_true(settles(function() return sh(env .. "squeue -h -t R -o %i").out:match(holder) ~= nil end, 60),
        "the job that holds the node did not start")
    end)
    after_each(function() sh(env .. "scancel " .. holder) end)

    local function stale(args)
      return ("env -u SLURM_JOB_ID -u SLURM_JOBID SLURM_JOB_NODELIST=%s %s run %s --nodes slurm -n 0 %s")
        :format(q(node_name), q(FARM), q(H.tmp(SCRIPT)), args or "")
    end
    local function pending() return sh(env .. "squeue -h -t PD -o %i").out:match("%d+") end

    it("says srun's job pending with squeue's reason, gives up, and leaves nothing queued", function()
      local r = sh(env .. stale("--slurm-wait 3"), 60)
      assert.are_not.equal(0, r.code)
      assert.is_truthy(r.err:match("farm: the Slurm step for 1 node waits to start: its job %d+ is pending %(squeue's reason: Resources%)"), r.err)
      assert.is_truthy(r.err:match("did not start within 3 s: its job %d+ is pending"), r.err)
      assert.is_true(settles(function() return not pending() end, 20), "a job is still pending")
    end)

    for _, how in ipairs { "KILL", "INT" } do
      it(("leaves nothing pending when farm gets SIG%s while srun's job waits"):format(how), function()
        local out = dir .. "/stale.err"
        local r = sh(env .. stale() .. " 2>" .. q(out) .. " >/dev/null & echo $!")
        local pid = tonumber(r.out:match("%d+"))
        assert.is_true(settles(function() return H.slurp(out):find("waits to start", 1, true) ~= nil end, 30), H.slurp(out))
        assert.is_truthy(pending(), "srun's job is not in the queue")
        local srun = sh("pgrep -P " .. pid .. " -x srun").out:match("%d+")
        assert.is_truthy(srun, "farm's srun")
        os.execute(("kill -%s %d"):format(how, pid))
        assert.is_true(H.wait_gone({ pid, tonumber(srun) }, 15), "farm or its srun still runs")
        assert.is_true(settles(function() return not pending() end, 30), "farm's job is still pending")
        if how == "INT" then assert.is_truthy(H.slurp(out):find("farm: interrupted", 1, true), H.slurp(out)) end
      end)
    end
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
