-- node_files_spec.lua -- the files a client ships for its jobs (SHARE of
-- FARM_SHARE_FILE, nodes/node.c put_file) land below that client's jobs'
-- directory and nowhere else, whoever the client is. farm.lua sends only plain
-- relative names; spec/peers/fake_client (build/peers/fake_client) holds the
-- key and sends what it likes: "../x", "a/../../x", an absolute path, "./.",
-- "", "a//b", and one plain "ok.txt" (the control: the node writes that one).
-- A real `farm node` on 127.0.0.1, started and stopped by pid.
local H = require "helper"

local q = H.quote
local FAKE = H.abs(H.build .. "/peers/fake_client")

local dir, key, port, started

local wait_for = H.wait_for

describe("a node given files by a client that is not farm.lua", function()
  before_each(function()
    dir = H.sh("mktemp -d /tmp/farm-node-files-XXXXXX").out:gsub("%s+$", "")
    key = dir .. "/key"
    port = 24000 + (H.pid * 11) % 20000
    started = {}
    assert.are.equal(0, H.farm_cmd("keygen " .. q(key)).code)
    assert.are.equal(0, H.sh("mkdir " .. q(dir .. "/tmp")).code)
  end)

  after_each(function()
    for i = #started, 1, -1 do os.execute("kill " .. started[i] .. " 2>/dev/null") end
    assert.is_true(H.wait_gone(started, 15), "something the test started still runs")
    os.execute("rm -rf " .. q(dir))
    H.cleanup()
  end)

  it("skips every name that is not a plain relative path, logs it, and writes nothing outside", function()
    -- the jobs' directories go below dir/tmp: "../x" from one is dir/tmp/x
    local node = H.bg(("TMPDIR=%s exec %s node --listen tcp://127.0.0.1:%d --key-file %s --log-file %s --log-level debug -w 1")
      :format(q(dir .. "/tmp"), q(H.farm), port, q(key), q(dir .. "/node.log")))
    started[#started + 1] = node
    local log = function() return H.slurp(dir .. "/node.log") end
    assert(wait_for(function() return log():find("listening on", 1, true) end, 20),
      "the node did not start: " .. log())
    local abs = dir .. "/abs-target"
    local r = H.sh(("%s --connect tcp://127.0.0.1:%d --key-file %s --abs %s")
      :format(q(FAKE), port, q(key), q(abs)), 30)
    assert.are.equal(0, r.code, r.err)
    -- the QUIT after the SHARE ends the session: by then every file was handled
    assert(wait_for(function() return log():find("the client said goodbye", 1, true) end, 15), log())
    local text = log()
    for _, name in ipairs { "../x", "a/../../x", abs, "./.", "", "a//b" } do
      assert.is_truthy(text:find("skipped a file for the jobs with a name that is not a plain relative path: '"
        .. name .. "'", 1, true), "not logged as skipped: '" .. name .. "'\n" .. text)
    end
    assert.is_truthy(text:find("file ok.txt (23 bytes) for the jobs", 1, true),
      "the plain name was not written (the test proves nothing): " .. text)
    assert.is_falsy(text:find("file %.%./x"), text)
    -- nothing planted anywhere outside a jobs' directory (those are gone with the client)
    assert.is_nil(H.slurp(abs):find("planted"), "the absolute path was written")
    for _, p in ipairs { dir .. "/tmp/x", dir .. "/x", "/tmp/x" } do
      assert.is_nil(H.slurp(p):find("planted by fake_client", 1, true), p .. " was written")
    end
    local found = H.sh("grep -rl 'planted by fake_client' " .. q(dir) .. " 2>/dev/null").out
    assert.are.equal("", found, "written outside the jobs' directory: " .. found)
    assert.is_true(H.alive(node), "the node went down")
  end)
end)
