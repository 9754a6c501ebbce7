-- node_wire_spec.lua -- a node and a client each facing a peer that speaks
-- nanomsg but not this farm (nanocat): another protocol version is named on both
-- sides, and the node drops what it cannot read and goes on serving.
local H = require "helper"

local P = tonumber(H.farm_cmd("--version").out:match("protocol (%d+)"))
local MYPID = H.pid
local q = H.quote

local bg = H.bg

describe("node links and other protocol versions", function()
  local dir, key, port, node
  before_each(function()
    dir = H.sh("mktemp -d /tmp/farm-nodewire-XXXXXX").out:gsub("%s+$", "")
    key = dir .. "/key"
    port = 22000 + (MYPID * 13) % 20000
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

  it("a node answers a client of another protocol version by naming both, and goes on", function()
    node = bg(("%s node --listen tcp://127.0.0.1:%d --key-file %s --log-file %s")
      :format(q(H.farm), port, q(key), q(dir .. "/log")))
    os.execute("sleep 0.3")
    -- an AUTH1 from "version 9"
    local data = H.tmp("Fm\9\32" .. string.rep("x", 40), ".bin")
    local cat = bg(("timeout 2 nanocat --req --connect tcp://127.0.0.1:%d --file %s -i 0.3")
      :format(port, q(data)))
    assert.is_true(H.wait_gone({ cat }, 10))
    local log = H.slurp(dir .. "/log")
    assert.is_truthy(log:find("protocol version 9, this node speaks " .. P, 1, true), log)
    local r = H.run_script("print(require('farm').submit(function() return 6 * 7 end):result())",
      ("-n 0 --hosts node://127.0.0.1:%d --key-file %s"):format(port, q(key)), 60)
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("42\n", r.out)
  end)

  it("a client facing a node of another protocol version says so in one line", function()
    -- a "node" that answers everything with an AUTH2 of version 9
    local data = H.tmp("Fm\9\33" .. string.rep("y", 70), ".bin")
    local fake = bg(("nanocat --rep --bind tcp://127.0.0.1:%d --data %s"):format(port, q(H.slurp(data))))
    os.execute("sleep 0.3")
    local r = H.run_script("require('farm').submit(function() end):result()",
      ("-n 0 --hosts node://127.0.0.1:%d --key-file %s"):format(port, q(key)), 60)
    os.execute("kill " .. fake)
    assert.is_true(H.wait_gone({ fake }, 5))
    assert.are_not.equal(0, r.code)
    assert.are.equal(1, H.lines(r.err), r.err)
    assert.is_truthy(r.err:find("protocol version 9, this farm speaks " .. P, 1, true), r.err)
  end)

  it("a client facing something that is not a farm node says so in one line", function()
    local fake = bg(("nanocat --rep --bind tcp://127.0.0.1:%d --data 'hello, I am not farm'"):format(port))
    os.execute("sleep 0.3")
    local r = H.run_script("require('farm').submit(function() end):result()",
      ("-n 0 --hosts node://127.0.0.1:%d --key-file %s"):format(port, q(key)), 60)
    os.execute("kill " .. fake)
    assert.is_true(H.wait_gone({ fake }, 5))
    assert.are_not.equal(0, r.code)
    assert.are.equal(1, H.lines(r.err), r.err)
    assert.is_truthy(r.err:find("not a farm node", 1, true), r.err)
  end)
end)
