-- clients_spec.lua -- several clients on one standing node at once, each behind
-- its own wall (issue 16): both are served side by side, the workers are
-- shared, and nothing one client's jobs leave (a process in a session of its
-- own, reading whatever it can find) reaches the other's files, or outlives
-- its client.
local H = require "helper"

local q = H.quote

local dir, key, port, started

local sleep, wait_for = H.sleep, H.wait_for

local function exists(path) local f = io.open(path) if f then f:close() end return f ~= nil end

--- farm run of a script (text) in the background, from dir; its files are dir/NAME.{out,err,rc}
local function client(name, text)
  local script = H.write(("%s/%s.lua"):format(dir, name), text)
  local pid = H.bg(("cd %s && unset FARM_KEY_FILE && { timeout -k 3 90 %s run %s -n 0 --hosts node://127.0.0.1:%d "
    .. "--key-file %s >%s.out 2>%s.err; echo $? >%s.rc; }")
    :format(q(dir), q(H.farm), q(script), port, q(key), name, name, name))
  started[#started + 1] = pid
  return name
end

local function finished(name) return wait_for(function() return H.slurp(dir .. "/" .. name .. ".rc") ~= "" end, 90) end

describe("several clients on one standing node", function()
  local node
  before_each(function()
    dir = H.sh("mktemp -d /tmp/farm-clients-XXXXXX").out:gsub("%s+$", "")
    key = dir .. "/key"
    port = 24000 + (H.pid * 11) % 20000
    started = {}
    assert.are.equal(0, H.farm_cmd("keygen " .. q(key)).code)
    -- the node keeps its jobs' directories in dir (TMPDIR), where a thief would look
    node = H.bg(("TMPDIR=%s exec %s node --listen tcp://127.0.0.1:%d --key-file %s --log-file %s -w 2")
      :format(q(dir), q(H.farm), port, q(key), q(dir .. "/node.log")))
    assert(wait_for(function() return H.slurp(dir .. "/node.log"):find("listening on", 1, true) end, 20),
      H.slurp(dir .. "/node.log"))
  end)

  after_each(function()
    os.execute("kill " .. node .. " 2>/dev/null")
    assert.is_true(H.wait_gone({ node }, 15), "the node did not stop")
    for _, pid in ipairs(started) do os.execute("kill " .. pid .. " 2>/dev/null") end
    local left = tonumber(H.slurp(dir .. "/left.pid"):match("%d+"))
    if left then os.execute("kill -KILL " .. left .. " 2>/dev/null") end
    os.execute("rm -rf " .. q(dir))
    H.cleanup()
  end)

  it("serves two at once, shares its workers, and keeps each one's files and processes from the other", function()
    client("a", ([[
      local dir = %q
      -- a job leaves a process behind, in a session of its own, that copies
      -- whatever of the other client's it can find for as long as it lives
      print(farm.submit(function(dir)
        os.execute(("setsid sh -c 'echo $$ > %%s/left.pid; while :; do "
          .. "cat \"$TMPDIR\"/farm-node-*/secret-b.txt \"$TMPDIR\"/farm-node-*-d/*/secret-b.txt "
          .. ">> %%s/stolen 2>/dev/null; sleep 0.05; done' </dev/null >/dev/null 2>&1 &"):format(dir, dir))
        return "left one behind"
      end, dir):result())
      io.open(dir .. "/a.started", "w"):close()
      local fs = {}
      for i = 1, 8 do
        fs[i] = farm.submit(function(x) local t = os.clock() + 1; while os.clock() < t do end; return x * 2 end, i)
      end
      local r = {}
      for i = 1, 8 do r[i] = fs[i]:result() end
      io.open(dir .. "/a.done", "w"):close()
      print(table.concat(r, ","))
    ]]):format(dir))
    assert.is_truthy(wait_for(function() return exists(dir .. "/a.started") end, 30), H.slurp(dir .. "/a.err"))
    assert.is_truthy(wait_for(function() return exists(dir .. "/left.pid") end, 10))
    local left = tonumber(H.slurp(dir .. "/left.pid"):match("%d+"))
    H.write(dir .. "/secret-b.txt", "b's secret")
    client("b", ([[
      local dir = %q
      local function read() return io.open("secret-b.txt"):read("a") end
      print(farm.submit_with({ files = { "secret-b.txt" } }, read):result())
      print(io.open(dir .. "/a.done") and "a had ended" or "a still runs")
      print("clients", farm.nodes()[1].clients)
      -- the file stays on the node a while: the thief has its chance
      print(farm.submit_with({ files = { "secret-b.txt" } }, function(dir)
        io.open(dir .. "/b.busy", "w"):close()
        local t = os.clock() + 1.5
        while os.clock() < t do end
        return io.open("secret-b.txt"):read("a")
      end, dir):result())
    ]]):format(dir))
    -- while both have jobs, each has half of the node's two workers
    assert.is_truthy(wait_for(function() return exists(dir .. "/b.busy") end, 30), H.slurp(dir .. "/b.err"))
    sleep(0.3)
    os.execute("kill -USR1 " .. node)
    local stats = wait_for(function() return H.slurp(dir .. "/node.log"):match("[^\n]*stats:[^\n]*") end, 10)
    assert.is_truthy(stats and stats:find("2 clients now", 1, true), stats)
    local _, halves = stats:gsub("%(1 worker, busy%)", "")
    assert.are.equal(2, halves, stats)
    assert.is_truthy(finished("b"), "b did not finish")
    assert.is_truthy(finished("a"), "a did not finish")
    assert.are.equal("0\n", H.slurp(dir .. "/b.rc"), H.slurp(dir .. "/b.err"))
    assert.are.equal("0\n", H.slurp(dir .. "/a.rc"), H.slurp(dir .. "/a.err"))
    -- the second client was served while the first still ran
    assert.are.equal("b's secret\na still runs\nclients\t2\nb's secret\n", H.slurp(dir .. "/b.out"))
    assert.are.equal("left one behind\n2,4,6,8,10,12,14,16\n", H.slurp(dir .. "/a.out"))
    -- what a's job left behind is gone with a's session, and never read b's file
    assert.is_true(H.wait_gone({ left }, 10), "a's leftover process outlived its client")
    assert.are.equal("", H.slurp(dir .. "/stolen"))
    -- nothing of either session is left on the node's disk (a session started
    -- ahead of the next client has a directory of its own)
    local log = H.slurp(dir .. "/node.log")
    local pids = {}
    for pid in log:gmatch("farm node%[(%d+)%] info: client at [^\n]* authenticated") do pids[#pids + 1] = pid end
    assert.are.equal(2, #pids, log)
    assert.is_truthy(wait_for(function()
      for _, pid in ipairs(pids) do
        if H.sh(("ls -d %s/farm-node-*-%s-* %s/farm-node-*-d/%s-* 2>/dev/null"):format(q(dir), pid, q(dir), pid)).out ~= "" then
          return false
        end
      end
      return true
    end, 10), H.sh("ls -laR " .. q(dir)).out)
    local _, sessions = log:gsub("authenticated; serving it", "")
    assert.are.equal(2, sessions, log)
    -- (logged once the last of them is reaped, a moment after they died)
    assert.is_truthy(wait_for(function()
      return H.slurp(dir .. "/node.log"):find("stopped %d+ process")
    end, 10), H.slurp(dir .. "/node.log"))
  end)
end)
