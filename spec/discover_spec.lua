-- discover_spec.lua -- discovery between network namespaces: `farm node
-- --announce eth0` on hosts H2 and H3, `farm run --discover eth0` on H1, three
-- namespaces on one bridge (scripts/netns-testbed), as root.
--
-- The node on H2 holds the run's key: the client hears its broadcast, dials it
-- with the key handshake and runs jobs there (they say so: FARM_JOIN_MARK is
-- set in that node's environment only). The node on H3 announces with another
-- key: the client says so in one line, never dials it, and nothing runs there.
-- A node on the client's own host announcing on another interface (x0, a veth
-- pair inside H1) with the right key is never heard: discovery listens on eth0
-- alone.
--
-- Rules (TESTBEDS.md): nothing in the root namespace connects to a namespace
-- address; names carry this process's pid; everything started is stopped by
-- pid, and the namespaces are deleted even when a test fails.
local H = require "helper"
local q = H.quote

local FARM = H.abs(H.farm)
local FARM_EXE = H.abs(os.getenv("FARM_EXE") or H.farm)
local HERE = (debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec")
local TESTBED = H.abs(HERE .. "/../scripts/netns-testbed")
local CLIENT = H.abs(HERE .. "/fixtures/join_client.lua")
local NET = os.getenv("FARM_NETNS_NET") or "10.203.0"
local TAG = "d" .. H.pid
local PORT = 7070

local function ns(i) return "fH" .. i .. TAG end
local function addr(i) return NET .. "." .. i end

local dir, key, badkey
local started = {}

--- run cmd in the background, its output to files under dir (with its exit
--- status: the pid is a shell's, which waits for it; without: cmd's own); its pid
local function bg(cmd, name, status)
  local out, err = q(dir .. "/" .. name .. ".out"), q(dir .. "/" .. name .. ".err")
  local p = io.popen(status
    and ("(%s </dev/null >%s 2>%s; echo $? >%s) >/dev/null 2>&1 & echo $!"):format(cmd, out, err, q(dir .. "/" .. name .. ".rc"))
    or ("%s </dev/null >%s 2>%s & echo $!"):format(cmd, out, err))
  local pid = assert(tonumber(p:read("a"):match("%d+")))
  p:close()
  started[#started + 1] = pid
  return pid
end

--- `farm node` on host i announcing on iface (eth0) with keyfile k, listening
--- on at (addr(i)); waits until it announces
local function start_node(i, k, mark, iface, at)
  iface, at = iface or "eth0", at or addr(i)
  local name = ("node%d-%s"):format(i, iface)
  local log = ("%s/%s.log"):format(dir, name)
  -- (ip netns exec and env exec farm: the pid is the node's)
  bg(("exec ip netns exec %s env FARM_EXE=%s FARM_JOIN_MARK=%s %s node --listen tcp://%s:%d --key-file %s"
    .. " -w 1 --log-file %s --announce %s"):format(ns(i), q(FARM_EXE), mark, q(FARM), at, PORT, q(k), q(log), iface),
    name)
  assert(H.wait_for(function() return H.slurp(log):find("announcing this node on " .. iface, 1, true) end, 20),
    name .. " did not start: " .. H.slurp(log) .. H.slurp(dir .. "/" .. name .. ".err"))
  return log
end

describe("discovery between network namespaces", function()
  setup(function()
    dir = H.sh("mktemp -d /tmp/farm-discover.XXXXXX").out:gsub("%s+$", "")
    assert(dir:match("^/tmp/farm%-discover%."), dir)
    local r = H.sh(H.tool(("%s up %s 3"):format(q(TESTBED), TAG)), 30)
    assert(r.code == 0, "netns-testbed up (this spec runs as root): " .. r.err)
    -- a second network inside H1 (a veth pair, x0 and x1): a node there announces
    -- on x0, which the client's eth0 must not hear
    for _, c in ipairs({ "link add x0 type veth peer name x1", "addr add 10.205.0.1/24 dev x0",
                         "addr add 10.205.0.2/24 dev x1", "link set x0 up", "link set x1 up" }) do
      r = H.sh(H.tool(("ip -n %s %s"):format(ns(1), c)), 10)
      assert(r.code == 0, c .. ": " .. r.err)
    end
    key, badkey = dir .. "/key", dir .. "/badkey"
    for _, k in ipairs({ key, badkey }) do assert.are.equal(0, H.farm_cmd("keygen " .. q(k)).code) end
  end)

  teardown(function()
    for _, pid in ipairs(started) do os.execute("kill -TERM " .. pid .. " 2>/dev/null") end
    local gone = H.wait_gone(started, 10)
    for _, pid in ipairs(started) do os.execute("kill -KILL " .. pid .. " 2>/dev/null") end
    local r = H.sh(H.tool(("%s down %s 3"):format(q(TESTBED), TAG)), 60)
    local left = H.sh("ip netns list").out
    H.cleanup()
    if dir then os.execute("rm -rf " .. q(dir)) end
    assert(gone, "something started here outlived SIGTERM")
    assert(r.code == 0, "netns-testbed down: " .. r.err)
    assert.is_nil(left:find(TAG, 1, true), "namespaces left: " .. left)
  end)

  it("finds a node in another namespace and runs jobs there; ignores one with another key", function()
    -- the stranger first, and the right key on another interface of the client's
    -- host: their broadcasts are there before the run starts
    local badlog = start_node(3, badkey, "stranger")
    local x0log = start_node(1, key, "x0", "x0", "10.205.0.1")
    local stop, ready = dir .. "/stop", dir .. "/ready"
    local client = bg(("timeout -k 3 100 ip netns exec %s env FARM_EXE=%s %s run %s -n 1 --no-progress"
      .. " --discover eth0 --key-file %s -- %s %s 12")
      :format(ns(1), q(FARM_EXE), q(FARM), q(CLIENT), q(key), q(stop), q(ready)), "client", true)
    local err = dir .. "/client.err"
    assert(H.wait_for(function() return H.slurp(err):find("ignored an announcement", 1, true) end, 30),
      "the client did not say it ignored the stranger: " .. H.slurp(err))
    local goodlog = start_node(2, key, "node")
    local rcfile = dir .. "/client.rc"
    assert(H.wait_for(function() return H.slurp(rcfile) ~= "" end, 90), "the client did not end: " .. H.slurp(err))
    assert(H.wait_gone({ client }, 10))
    local out, e = H.slurp(dir .. "/client.out"), H.slurp(err)
    assert.are.equal("0\n", H.slurp(rcfile), e)
    local there = out:match("^jobs %d+ local %d+ node (%d+)\n")
    assert(there and tonumber(there) >= 12, "the node on H2 ran too few jobs:\n" .. out .. e)
    local url = ("node://%s:%d"):format(addr(2), PORT)
    local done, state = out:match("\nnode " .. url:gsub("%p", "%%%0") .. " (%d+) (%a+)")
    assert(done and tonumber(done) >= 12 and state == "up", "farm.nodes():\n" .. out)
    assert.is_truthy(e:find(url .. " announced itself (" .. addr(2) .. " on eth0): adding it", 1, true), e)
    assert.is_truthy(H.slurp(goodlog):find("authenticated; serving it", 1, true), H.slurp(goodlog))
    -- the stranger: one line, never dialled, nothing ran there
    local said = 0
    for _ in e:gmatch("ignored an announcement") do said = said + 1 end
    assert.are.equal(1, said, e)
    assert.is_truthy(e:find("ignored an announcement from " .. addr(3) .. " on eth0: made with another key", 1, true), e)
    assert.is_nil(out:find("stranger", 1, true), out)
    assert.is_nil((out .. e):find("node://" .. addr(3), 1, true), out .. e)
    assert.is_nil(H.slurp(badlog):find("authenticat", 1, true), H.slurp(badlog))
    -- the node on x0: never heard, never dialled
    assert.is_nil((out .. e):find("10.205.0.1", 1, true), out .. e)
    assert.is_nil(out:find("elsewhere x0", 1, true), out)
    assert.is_nil(H.slurp(x0log):find("authenticat", 1, true), H.slurp(x0log))
  end)
end)
