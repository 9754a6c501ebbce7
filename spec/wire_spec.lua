-- wire_spec.lua -- a real worker fed what a broken or hostile client might send
-- (through nanocat, nanomsg's own tool): it says what was wrong in one line
-- and exits, never crashes and never hangs.
local H = require "helper"

-- the protocol this build speaks, as `farm --version` says it
local P = tonumber(H.farm_cmd("--version").out:match("protocol (%d+)"))
local V = string.char(P)

local function feed(bytes)
  local dir = H.sh("mktemp -d /tmp/farm-wire-XXXXXX").out:gsub("%s+$", "")
  local url = "ipc://" .. dir .. "/w"
  local data = H.tmp(bytes, ".bin")
  -- nanocat binds and sends the bytes once the worker has connected
  local pid = tonumber(H.sh(("nanocat --pair --bind %s --file %s --delay 0.3 >/dev/null 2>&1 & echo $!")
    :format(H.quote(url), H.quote(data))).out)
  local r = H.farm_cmd("worker --connect " .. H.quote(url), 20)
  os.execute("kill " .. pid .. " 2>/dev/null")
  assert.is_true(H.wait_gone({ pid }, 5))
  os.execute("rm -rf " .. H.quote(dir))
  return r
end

describe("a worker fed bad messages", function()
  after_each(H.cleanup)

  it("rejects bytes that are not a farm message", function()
    local r = feed("garbage")
    assert.are.equal(3, r.code)
    assert.are.equal("farm worker 1: malformed message: not a farm message\n", r.err)
  end)

  it("names both protocol versions when they differ", function()
    local r = feed("Fm\9\2xxxx")
    assert.are.equal(3, r.code)
    assert.are.equal("farm worker 1: protocol version 9, this node speaks " .. P .. "\n", r.err)
  end)

  it("rejects a JOBS message that claims more jobs than it holds", function()
    local r = feed("Fm" .. V .. "\2\0\5\0\0\0\1")
    assert.are.equal(3, r.code)
    assert.are.equal("farm worker 1: malformed message from the client\n", r.err)
  end)

  it("rejects an unknown message type", function()
    local r = feed("Fm" .. V .. "\99")
    assert.are.equal(3, r.code)
    assert.is_truthy(r.err:find("malformed message", 1, true))
  end)

  it("rejects a TAKE whose ids run past its end", function()
    local r = feed("Fm" .. V .. "\5\3\0\0\0\1")
    assert.are.equal(3, r.code)
    assert.are.equal("farm worker 1: malformed message from the client\n", r.err)
  end)

  it("rejects a JOBS entry with an unknown function kind", function()
    -- flags 0, pool of 2, one job: id 1, attempt 0, mode 0, hash, fn kind 7, then an args string
    local r = feed("Fm" .. V .. "\2\0\2\1\0\0\0" .. "\1\0\0" .. string.rep("h", 16) .. "\7\1x"
      .. string.rep("\0", 20))
    assert.are.equal(3, r.code)
    assert.are.equal("farm worker 1: malformed message from the client\n", r.err)
  end)

  it("refuses to start without a link", function()
    local r = H.farm_cmd("worker")
    assert.are.equal(2, r.code)
    assert.are.equal(1, H.lines(r.err))
  end)
end)
