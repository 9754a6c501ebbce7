-- connect_wait_spec.lua -- a client waiting for a busy node (issue 20): a
-- standing `farm node` on 127.0.0.1 frozen with SIGSTOP (its TCP port still
-- accepts, nothing answers) is said within a second or so, and Ctrl-C (SIGINT
-- to the farm process) ends the wait at once, as Ctrl-C ends `farm run`
-- elsewhere (status 130, "interrupted"), leaving no process behind. A node that
-- answers at once is not said. Everything started here is stopped by pid.
local H = require "helper"

local q = H.quote

local SCRIPT = [[
local farm = require "farm"
print("result", farm.submit(function() return 6 * 7 end):result())
]]

describe("a client waiting for a busy standing node", function()
  local bed = H.node_bed("connect-wait", 28100)
  local frozen
  before_each(function() bed.setup() frozen = nil end)
  after_each(function()
    if frozen then os.execute("kill -CONT " .. frozen .. " 2>/dev/null") end   -- so SIGTERM can stop it
    bed.teardown()
  end)

  local function hosts() return ("--hosts node://127.0.0.1:%d --key-file %s"):format(bed.port, q(bed.key)) end

  local function start_run(args)
    local pid = H.run_script_bg(bed.dir, SCRIPT, args)
    assert.is_truthy(pid, "farm run did not start")
    return pid
  end

  --- pids of every process below pid (children, theirs, ...)
  local function descendants(pid)
    local out, todo = {}, { pid }
    while #todo > 0 do
      local p = table.remove(todo)
      local r = H.sh(H.tool("pgrep -P " .. p .. " || true"))
      for c in r.out:gmatch("%d+") do out[#out + 1] = tonumber(c) todo[#todo + 1] = tonumber(c) end
    end
    return out
  end

  for _, workers in ipairs { 0, 1 } do
    it(("says which node it waits for and what for, and stops at Ctrl-C with nothing left (-n %d)"):format(workers), function()
      frozen = bed.start()
      os.execute("kill -STOP " .. frozen)
      local pid = start_run(hosts() .. " -n " .. workers)
      local want = ("farm: waiting for node node://127.0.0.1:%d ("):format(bed.port)
      assert.is_truthy(H.wait_for(function() return H.slurp(bed.dir .. "/err"):find(want, 1, true) end, 15),
        "no waiting line: " .. H.slurp(bed.dir .. "/err"))
      assert.are.equal("", H.slurp(bed.dir .. "/rc"), "farm ended before Ctrl-C: " .. H.slurp(bed.dir .. "/err"))
      local children = descendants(pid)
      os.execute("kill -INT " .. pid)
      -- a generous limit: it stops at once (a frozen node would hold it 10 s, the
      -- connect timeout, from before the waiting line)
      assert.is_truthy(H.wait_for(function() return H.slurp(bed.dir .. "/rc"):match("%d+") end, 4),
        "farm still runs after Ctrl-C: " .. H.slurp(bed.dir .. "/err"))
      local err = H.slurp(bed.dir .. "/err")
      assert.are.equal("130", H.slurp(bed.dir .. "/rc"):match("%d+"), err)
      assert.is_truthy(err:find("farm: interrupted", 1, true), err)
      assert.is_falsy(H.slurp(bed.dir .. "/out"):find("result", 1, true))
      -- one line said what it waited for (the handshake at a lobby that does not answer)
      local waiting = 0
      for line in err:gmatch("[^\n]+") do
        if line:find(want, 1, true) then
          waiting = waiting + 1
          assert.is_truthy(line:find("handshake", 1, true), line)
        end
      end
      assert.are.equal(1, waiting, err)
      assert.is_true(H.wait_gone(children, 10), "a process of farm's outlived it")
      assert.are.equal("", H.sh(H.tool(("pgrep -f -- %s || true"):format(q("[-]-parent " .. pid)))).out,
        "a worker of the interrupted farm still runs")
    end)
  end

  it("says nothing of a node that answers at once, and runs there", function()
    bed.start()
    local r = H.run_script(SCRIPT, hosts() .. " -n 0", 60)
    assert.are.equal(0, r.code, r.err)
    assert.is_truthy(r.out:find("result\t42", 1, true), r.out)
    assert.is_falsy(r.err:find("waiting for", 1, true), r.err)
  end)

  it("goes on once a node that was slow answers, after saying it waited", function()
    frozen = bed.start()
    os.execute("kill -STOP " .. frozen)
    local pid = start_run(hosts() .. " -n 0")
    assert.is_truthy(H.wait_for(function() return H.slurp(bed.dir .. "/err"):find("waiting for node", 1, true) end, 15),
      H.slurp(bed.dir .. "/err"))
    os.execute("kill -CONT " .. frozen)
    assert.is_truthy(H.wait_for(function() return H.slurp(bed.dir .. "/rc"):match("%d+") end, 30),
      "farm did not end: " .. H.slurp(bed.dir .. "/err"))
    assert.are.equal("0", H.slurp(bed.dir .. "/rc"):match("%d+"), H.slurp(bed.dir .. "/err"))
    assert.is_truthy(H.slurp(bed.dir .. "/out"):find("result\t42", 1, true), H.slurp(bed.dir .. "/out"))
    assert.is_true(H.wait_gone({ pid }, 5))
  end)
end)
