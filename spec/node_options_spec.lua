-- node_options_spec.lua -- the node's and the client's options not driven
-- elsewhere: --restart-workers (a fresh worker process per job, ppserver's -r),
-- --log-level, --no-local, and a key file that is not there.
local H = require "helper"

local q = H.quote
local MYPID = H.pid

local bg = H.bg

describe("node options", function()
  local dir, key, port, node
  before_each(function()
    dir = H.sh("mktemp -d /tmp/farm-nodeopt-XXXXXX").out:gsub("%s+$", "")
    key = dir .. "/key"
    port = 23000 + (MYPID * 17) % 20000
    assert.are.equal(0, H.farm_cmd("keygen " .. q(key)).code)
  end)
  after_each(function()
    if node then
      os.execute("kill " .. node .. " 2>/dev/null")
      assert.is_true(H.wait_gone({ node }, 10))
      node = nil
    end
    os.execute("rm -rf " .. q(dir))
    H.cleanup()
  end)

  local function start(opts)
    node = bg(("%s node --listen tcp://127.0.0.1:%d --key-file %s --log-file %s --pid-file %s %s")
      :format(q(H.farm), port, q(key), q(dir .. "/log"), q(dir .. "/pid"), opts or ""))
    for _ = 1, 200 do                -- the pid file is written once the node serves
      if H.slurp(dir .. "/pid"):find("%d") then return end
      os.execute("sleep 0.05")
    end
    error("the node did not start: " .. H.slurp(dir .. "/log"))
  end

  -- each job counts the jobs its worker process has run (state kept in package.loaded)
  local COUNT = [[
local farm = require "farm"
local fs = {}
for i = 1, 12 do
  fs[i] = farm.submit(function()
    local t = package.loaded
    t.count = (t.count or 0) + 1
    return t.count
  end)
end
local most = 0
for i = 1, 12 do most = math.max(most, fs[i]:result()) end
print("most jobs in one worker process", most)
]]

  it("runs the jobs in a directory of its own and sweeps those of killed nodes", function()
    -- a node killed with SIGKILL left its jobs' directory behind (its pid is gone)
    local gone = tonumber(H.sh("sh -c 'echo $$'").out)
    local stale = ("%s/farm-node-%d-AbCdEf"):format(dir, gone)
    local live = ("%s/farm-node-%d-GhIjKl"):format(dir, MYPID)     -- a node that still runs
    os.execute("mkdir -p " .. q(stale .. "/sub") .. " " .. q(live))
    H.write(stale .. "/sub/left.txt", "x")
    node = bg(("TMPDIR=%s %s node --listen tcp://127.0.0.1:%d --key-file %s --log-file %s --pid-file %s -w 1")
      :format(q(dir), q(H.farm), port, q(key), q(dir .. "/log"), q(dir .. "/pid")))
    for _ = 1, 200 do
      if H.slurp(dir .. "/pid"):find("%d") then break end
      os.execute("sleep 0.05")
    end
    local r = H.run_script("print(farm.submit(function() return io.popen('pwd'):read('l') end):result())",
      ("-n 0 --hosts node://127.0.0.1:%d --key-file %s"):format(port, q(key)), 60)
    assert.are.equal(0, r.code, r.err)
    local mine = ("%s/farm-node-%d-"):format(dir, node)
    assert.are.equal(mine, r.out:sub(1, #mine), r.out)
    assert.is_nil(io.open(stale .. "/sub/left.txt"))
    assert.is_true(os.execute("test -d " .. q(live)) == true)
  end)

  it("--restart-workers gives every job a fresh worker process", function()
    start("-w 2 --restart-workers")
    local r = H.run_script(COUNT, ("-n 0 --hosts node://127.0.0.1:%d --key-file %s"):format(port, q(key)), 60)
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("most jobs in one worker process\t1\n", r.out)
  end)

  it("without it, a worker process runs many jobs", function()
    start("-w 2")
    local r = H.run_script(COUNT, ("-n 0 --hosts node://127.0.0.1:%d --key-file %s"):format(port, q(key)), 60)
    assert.are.equal(0, r.code, r.err)
    local most = tonumber(r.out:match("(%d+)\n$"))
    assert.is_true(most > 1, r.out)
  end)

  it("--log-level warn keeps the info lines out of the log", function()
    start("-w 1 --log-level warn")
    local r = H.run_script("print(require('farm').submit(function() return 1 end):result())",
      ("-n 0 --hosts node://127.0.0.1:%d --key-file %s"):format(port, q(key)), 60)
    assert.are.equal(0, r.code, r.err)
    os.execute("kill -USR1 " .. node .. "; sleep 0.3")
    local log = H.slurp(dir .. "/log")
    assert.is_falsy(log:find("authenticated", 1, true), log)
    assert.is_truthy(log:find("stats:", 1, true), log)      -- statistics are logged at warn
  end)

  it("--no-local runs every job on the nodes, as -n 0 does", function()
    start("-w 1")
    local r = H.run_script([[
local farm = require "farm"
print(farm.submit(function() return 7 end):result())
for _, w in ipairs(farm.stats().workers) do print(w.kind, w.jobs) end
]], ("--no-local --hosts node://127.0.0.1:%d --key-file %s"):format(port, q(key)), 60)
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("7\nnode\t1\n", r.out)
  end)

  it("gives each client fresh workers: nothing one client installed is seen by the next", function()
    start("-w 1")
    local via = ("-n 0 --hosts node://127.0.0.1:%d --key-file %s"):format(port, q(key))
    local r = H.run_script([[
function string.left_here() return "first client" end
print(require("farm").submit(function() return ("x"):left_here() end):result())
]], via, 60)
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("first client\n", r.out)
    r = H.run_script([[
print(require("farm").submit(function() return string.left_here == nil, package.loaded.count end):result())
]], via, 60)
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("true\tnil\n", r.out)
  end)

  it("a bad --listen address: one line naming it and the form, no process left", function()
    for _, bad in ipairs({ "tcp://127.0.0.1:99999", "tcp://:7070", "7070", "tcp://nohost.invalid:7070" }) do
      local r = H.farm_cmd(("node --listen %s --key-file %s"):format(q(bad), q(key)), 20)
      assert.are_not.equal(0, r.code)
      assert.are.equal(1, H.lines(r.err), r.err)
      assert.is_truthy(r.err:find(bad, 1, true), r.err)
    end
  end)

  it("a key file that is not there: one line with the fix, on both sides", function()
    local r = H.farm_cmd(("node --listen tcp://127.0.0.1:%d --key-file %s"):format(port, q(dir .. "/nokey")), 20)
    assert.are.equal(2, r.code)
    assert.are.equal(1, H.lines(r.err), r.err)
    assert.is_truthy(r.err:find("farm keygen", 1, true), r.err)
    r = H.run_script("print(require('farm').submit(function() end):result())",
      ("-n 0 --hosts node://127.0.0.1:%d --key-file %s"):format(port, q(dir .. "/nokey")), 20)
    assert.are_not.equal(0, r.code)
    assert.are.equal(1, H.lines(r.err), r.err)
    assert.is_truthy(r.err:find("cannot read key file", 1, true), r.err)
  end)
end)
