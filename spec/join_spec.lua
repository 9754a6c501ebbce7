-- join_spec.lua -- nodes that join a run while it runs: `farm run --listen ADDR`
-- and `farm node --join ADDR` on 127.0.0.1 (core/join.c, core/announce.c; the
-- record itself is attacked in spec/c/test_announce.c and spec/fuzz).
--
-- A client with one local worker submits jobs in rounds until the jobs say
-- they ran on a node (FARM_JOIN_MARK is set in the node's environment only),
-- or until a stop file appears; a standing node started mid-run with --join
-- gets jobs; one with another key is ignored with one line and runs nothing.
-- Everything is stopped by pid.
local H = require "helper"
local q = H.quote

local bed = H.node_bed("join", 27000)

-- the run (spec/fixtures/join_client.lua): arg[1] stop file, arg[2] ready
-- file, arg[3] how many jobs on a node end it
local CLIENT = H.abs((debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec") .. "/fixtures/join_client.lua")

local function client_port() return 28000 + (H.pid * 11) % 20000 end

--- start the client in the background; returns a record to wait on
local function start_client(enough, extra)
  local c = { out = bed.dir .. "/c.out", err = bed.dir .. "/c.err", rc = bed.dir .. "/c.rc",
              stop = bed.dir .. "/stop", ready = bed.dir .. "/ready" }
  os.remove(c.stop)
  os.remove(c.ready)
  local cmd = ("%s run %s -n 1 --no-progress --listen 127.0.0.1:%d --key-file %s %s -- %s %s %d")
    :format(q(H.farm), q(CLIENT), client_port(), q(bed.key), extra or "", q(c.stop), q(c.ready), enough)
  local p = io.popen(("(timeout -k 3 100 %s </dev/null >%s 2>%s; echo $? >%s) >/dev/null 2>&1 & echo $!")
    :format(cmd, q(c.out), q(c.err), q(c.rc)))
  c.pid = assert(tonumber(p:read("a"):match("%d+")))
  p:close()
  bed.started[#bed.started + 1] = c.pid
  assert(H.wait_for(function() return H.slurp(c.ready) ~= "" or H.slurp(c.rc) ~= "" end, 30),
    "the client did not start: " .. H.slurp(c.err))
  assert.are.equal("", H.slurp(c.rc), "the client ended at once: " .. H.slurp(c.err))
  return c
end

--- wait for the client to end; { code, out, err }
local function finish(c)
  assert(H.wait_for(function() return H.slurp(c.rc) ~= "" end, 100), "the client did not end: " .. H.slurp(c.err))
  assert(H.wait_gone({ c.pid }, 10))
  return { code = tonumber(H.slurp(c.rc)), out = H.slurp(c.out), err = H.slurp(c.err) }
end

local function count(s, what)
  local k = 0
  for _ in s:gmatch(what) do k = k + 1 end
  return k
end

describe("farm node --join, farm run --listen", function()
  before_each(bed.setup)
  after_each(bed.teardown)

  it("a node started mid-run with --join gets jobs", function()
    local c = start_client(12)
    -- (two --join: a run that is not there takes nothing from the one that is)
    local node = bed.start(("--join 127.0.0.1:%d --join 127.0.0.1:%d"):format(client_port() + 1, client_port()),
      "FARM_JOIN_MARK=node ")
    local r = finish(c)
    assert.are.equal(0, r.code, r.err)
    local jobs, here, there = r.out:match("^jobs (%d+) local (%d+) node (%d+)\n")
    assert(jobs, r.out)
    assert(tonumber(there) >= 12, "the node ran too few jobs:\n" .. r.out .. r.err)
    assert(tonumber(here) >= 6, r.out)           -- the first round ran before it joined
    local url = ("node://127.0.0.1:%d"):format(bed.port)
    local done, state = r.out:match("\nnode " .. url:gsub("%p", "%%%0") .. " (%d+) (%a+)")
    assert(done, "farm.nodes() does not list " .. url .. ":\n" .. r.out)
    assert(tonumber(done) >= 12 and state == "up", r.out)
    -- the client said once that it came
    assert.are.equal(1, count(r.err, "announced itself"), r.err)
    assert.is_truthy(r.err:find(url .. " announced itself (--listen): adding it", 1, true), r.err)
    local log = H.slurp(bed.log)
    assert.is_truthy(log:find("offering this node to the run at tcp://127.0.0.1:" .. client_port(), 1, true), log)
    assert.is_truthy(log:find("authenticated; serving it", 1, true), log)
    assert.is_true(H.alive(node))
  end)

  it("ignores a node with another key, in one line, and still takes the right one", function()
    local badkey = bed.dir .. "/badkey"
    assert.are.equal(0, H.farm_cmd("keygen " .. q(badkey)).code)
    local c = start_client(6)
    local badlog = ("%s/node-%d.log"):format(bed.dir, bed.port + 1)
    bed.start(("--join 127.0.0.1:%d --key-file %s"):format(client_port(), q(badkey)),
      "FARM_JOIN_MARK=stranger ", bed.port + 1)
    assert(H.wait_for(function() return H.slurp(c.err):find("ignored an announcement", 1, true) end, 20),
      "the client did not say it ignored the node: " .. H.slurp(c.err))
    -- the right node joins after it: by the time it has run jobs, the wrong one
    -- has sent its record again and again
    bed.start(("--join 127.0.0.1:%d"):format(client_port()), "FARM_JOIN_MARK=node ")
    local r = finish(c)
    assert.are.equal(0, r.code, r.err)
    assert(r.out:match("^jobs %d+ local %d+ node (%d+)\n"), r.out)
    assert.is_nil(r.out:find("stranger", 1, true), r.out)
    assert.are.equal(1, count(r.err, "ignored an announcement"), r.err)
    assert.is_truthy(r.err:find("ignored an announcement from --listen: made with another key", 1, true), r.err)
    assert.is_nil(r.err:find("127.0.0.1:" .. (bed.port + 1), 1, true), r.err)
    assert.is_nil(r.out:find("127.0.0.1:" .. (bed.port + 1), 1, true), r.out)
    -- nobody ever reached the wrong node's lobby
    local log = H.slurp(badlog)
    assert.is_nil(log:find("authenticat", 1, true), log)
  end)

  it("says what is wrong with --listen and --join in one line", function()
    local script = H.tmp("print(farm.submit(function() return 1 end):result())\n")
    local cases = {
      { "run " .. q(script) .. " --listen 127.0.0.1:7078", "--listen needs --key-file F" },
      { "run " .. q(script) .. " --listen nowhere --key-file " .. q(bed.key), "--listen takes HOST:PORT" },
      { "run " .. q(script) .. " --listen 127.0.0.1:0 --key-file " .. q(bed.key), "--listen takes HOST:PORT" },
      { "run " .. q(script) .. " --discover", "--discover needs a network interface" },
      { "run " .. q(script) .. " -n 0 --listen 7078 --key-file " .. q(bed.key), "keep a local worker (-n 1)" },
      { "run " .. q(script) .. " --discover eth0:x --key-file " .. q(bed.key), "--discover takes" },
      { "node --join 127.0.0.1:7078", "--join and --announce need --key-file F" },
      { "node --join 127.0.0.1 --key-file " .. q(bed.key), "--join takes HOST:PORT" },
      { "node --join nosuch.invalid:7078 --key-file " .. q(bed.key), "--join nosuch.invalid:7078: cannot find host" },
      { "node --announce nosuch0 --key-file " .. q(bed.key), "--announce nosuch0: no network interface 'nosuch0'" },
      { "node --announce lo --key-file " .. q(bed.key), "--announce lo: network interface 'lo' has no broadcast" },
    }
    for _, case in ipairs(cases) do
      local r = H.farm_cmd(case[1], 20, "env -u FARM_KEY_FILE")
      assert.are_not.equal(0, r.code, case[1])
      assert.are.equal(1, H.lines(r.err), case[1] .. ": " .. r.err)
      assert.is_truthy(r.err:find(case[2], 1, true), case[1] .. ": " .. r.err)
      assert.are.equal("", r.out, case[1])
    end
    -- the address in use: the run says so when its pool starts
    local holder = start_client(1000)
    local r = H.run_script("print(farm.submit(function() return 1 end):result())\n",
      ("-n 1 --listen 127.0.0.1:%d --key-file %s"):format(client_port(), q(bed.key)), 30)
    assert.are.equal(1, r.code, r.err)
    assert.are.equal(1, H.lines(r.err), r.err)
    assert.is_truthy(r.err:find("--listen 127.0.0.1:" .. client_port(), 1, true), r.err)
    assert.is_truthy(r.err:find("pick another port", 1, true), r.err)
    H.write(holder.stop, "")
    assert.are.equal(0, finish(holder).code)
  end)
end)
