-- shm_spec.lua -- big arguments and results through the memory a client shares
-- with its local workers (core/shm.h): exact values at sizes around the
-- threshold, a full region that falls back to the socket, a worker that dies
-- holding a big argument, a job that scribbles over the region it can write.
-- Real workers throughout; what went over the socket is read from farm.stats().
local farm = require "farm"
local H = require "helper"

local THRESHOLD = 64 * 1024        -- FARM_SHM_MIN: encoded blocks this big go through it

-- a string of n bytes that differs with seed at every position (not one byte repeated)
local function bytes(n, seed)
  local t, x = {}, seed
  for i = 1, 256 do x = (x * 1103515245 + 12345) % 2147483648; t[i] = string.char(x % 256) end
  local unit = table.concat(t)
  return (unit:rep(n // 256 + 1)):sub(1, n)
end

local function socket_bytes()
  local sent, got = 0, 0
  for _, w in ipairs(farm.stats().workers) do sent, got = sent + w.bytes_sent, got + w.bytes_received end
  return sent, got
end

describe("shared memory with local workers", function()
  after_each(function() farm.close(); H.cleanup() end)

  it("carries arguments and results of sizes around the threshold exactly", function()
    farm.config { workers = 2, echo = false }
    local sizes = { THRESHOLD - 64, THRESHOLD - 8, THRESHOLD - 3, THRESHOLD, THRESHOLD + 1, 100000,
                    1000000, 3 * 1000 * 1000 + 7 }
    local job = function(s, k) return s:reverse() .. k, #s, s:sub(1, 16) end
    local fs, want, big = {}, {}, 0
    for round = 1, 3 do
      for i, n in ipairs(sizes) do
        local s = bytes(n, 7 * i + round)
        fs[#fs + 1] = farm.submit(job, s, i)
        want[#want + 1] = { s:reverse() .. i, n, s:sub(1, 16) }
        if n >= THRESHOLD then big = big + 2 * n end
      end
    end
    for i, f in ipairs(fs) do
      local r, n, head = f:result(120)
      assert.are.equal(want[i][2], n)
      assert.is_true(r == want[i][1], "result " .. i .. " differs")
      assert.are.equal(want[i][3], head)
    end
    -- the big blocks did not go over the sockets (both ways, all of them)
    local sent, got = socket_bytes()
    assert.is_true(sent + got < big / 4, ("%d bytes on the sockets for %d big bytes"):format(sent + got, big))
  end)

  it("falls back to the socket when a region is full, and stays exact", function()
    -- regions of 256 KiB: one 150 kB block fits, two do not
    local r = H.run_script([[
      local farm = require "farm"
      local s = {}
      for i = 1, 24 do s[i] = string.rep(string.char(64 + i), 150000 - i) .. i end
      local fs = {}
      for i = 1, 24 do
        fs[i] = farm.submit(function(x)
          local t = os.clock() + 0.02
          while os.clock() < t do end          -- held a while: the next one finds it full
          return x:upper():reverse()
        end, s[i])
      end
      for i = 1, 24 do assert(fs[i]:result() == s[i]:upper():reverse(), "job " .. i) end
      local sent, got = 0, 0
      for _, w in ipairs(farm.stats().workers) do sent, got = sent + w.bytes_sent, got + w.bytes_received end
      print("exact", sent, got)
    ]], "-n 2", 120, "FARM_SHM_BYTES=262144")
    assert.are.equal(0, r.code, r.err)
    local sent, got = r.out:match("exact%s+(%d+)%s+(%d+)")
    assert.is_truthy(sent, r.out)
    sent, got = tonumber(sent), tonumber(got)
    if os.getenv("SHM_DEBUG") then print(sent, got) end
    -- some went over the socket (the region was full), not all of them: a
    -- worker holds two jobs at a time, one of them in the region (about half go
    -- by the socket; all but two would if the spans were not given back)
    assert.is_true(sent > 150000 and sent < 18 * 150000, "sent " .. sent)
    assert.is_true(got < 23 * 150000, "received " .. got)
  end)

  it("gives every block to the socket when FARM_SHM_BYTES is 0", function()
    local r = H.run_script([[
      local farm = require "farm"
      local s = string.rep("xy", 200000)
      local f = farm.submit(function(x) return x .. "!" end, s)
      assert(f:result() == s .. "!")
      local sent = 0
      for _, w in ipairs(farm.stats().workers) do sent = sent + w.bytes_sent end
      print("sent", sent)
    ]], "-n 1", 60, "FARM_SHM_BYTES=0")
    assert.are.equal(0, r.code, r.err)
    assert.is_true(tonumber(r.out:match("sent%s+(%d+)")) > 400000, r.out)
  end)

  it("runs a job whose worker died holding its big argument again, with that argument", function()
    farm.config { workers = 2, echo = false }
    local mark = os.tmpname()
    os.remove(mark)
    local s = bytes(2 * 1000 * 1000, 99)
    local others = {}
    for i = 1, 6 do others[i] = bytes(300000, i) end
    local fs = {}
    for i = 1, 3 do fs[#fs + 1] = farm.submit(function(x) return x:reverse() end, others[i]) end
    local dying = farm.submit(function(x, path)
      local f = io.open(path, "r")
      if not f then                            -- the first time: die holding x
        io.open(path, "w"):close()
        os.exit(3)
      end
      f:close()
      return #x, x:sub(-20), x:reverse()
    end, s, mark)
    for i = 4, 6 do fs[#fs + 1] = farm.submit(function(x) return x:reverse() end, others[i]) end
    local n, tail, rev = dying:result(120)
    os.remove(mark)
    assert.are.equal(#s, n)
    assert.are.equal(s:sub(-20), tail)
    assert.is_true(rev == s:reverse(), "the retried job's argument differs")
    for i, f in ipairs(fs) do assert.is_true(f:result(120) == others[i]:reverse(), "job " .. i) end
    assert.are.equal(2, farm.workers())
  end)

  it("survives a job that scribbles over the regions it can reach", function()
    farm.config { workers = 1, echo = false }
    local s = bytes(500000, 5)
    assert.is_true(farm.submit(function(x) return x end, s):result(60) == s)   -- the regions are in use
    local scribble = farm.submit(function()
      local said = {}
      -- the descriptors were closed once mapped
      for _, fd in ipairs { 5, 6 } do
        local f = io.open("/proc/self/fd/" .. fd, "r+")
        said[#said + 1] = ("fd %d %s"):format(fd, f and "open" or "closed")
        if f then f:close() end
      end
      -- the mappings: write garbage over both through /proc/self/mem
      local mem = assert(io.open("/proc/self/mem", "r+b"))
      for line in io.lines("/proc/self/maps") do
        local a, b, name = line:match("^(%x+)%-(%x+) %S+ %S+ %S+ %S+%s+(.*)$")
        if name and name:find("farm%-") and (name:find("farm-args", 1, true) or name:find("farm-results", 1, true)) then
          local from, to = tonumber(a, 16), tonumber(b, 16)
          local junk = string.rep("\255\0\127\1", 1024)
          local wrote = 0
          for at = from, to - #junk, #junk do
            if not mem:seek("set", at) or not mem:write(junk) or not mem:flush() then break end
            wrote = wrote + #junk
          end
          said[#said + 1] = ("%s %s"):format(name:match("farm%-%a+"), wrote > 0 and "written" or "refused")
        end
      end
      mem:close()
      return table.concat(said, ", ")
    end)
    local said = scribble:result(120)
    if os.getenv("SHM_DEBUG") then print(said) end
    assert.is_truthy(said:find("fd 5 closed", 1, true), said)
    assert.is_truthy(said:find("fd 6 closed", 1, true), said)
    assert.is_truthy(said:find("farm-args refused", 1, true), said)   -- mapped read-only, from a read-only descriptor
    -- a result waiting in the region while the next job scribbles over it: its
    -- bytes may change (a job's code can spoil its own worker's results, as it
    -- could by returning something else), but the client copies the span out
    -- before it decodes it and goes on either way
    local t0 = bytes(300000, 77)
    local a = farm.submit(function(x) return x end, t0)
    local b = farm.submit(function()
      local mem = assert(io.open("/proc/self/mem", "r+b"))
      local junk = string.rep("\3\255", 2048)
      local t = os.clock() + 0.2
      while os.clock() < t do
        for line in io.lines("/proc/self/maps") do
          local from, to = line:match("^(%x+)%-(%x+) .*farm%-results")
          if from then
            for at = tonumber(from, 16), tonumber(to, 16) - #junk, 65536 do
              mem:seek("set", at); mem:write(junk); mem:flush()
            end
          end
        end
      end
      mem:close()
      return "scribbled"
    end)
    local ok, got = pcall(a.result, a, 60)
    assert.is_true(ok or got ~= nil)        -- a value, or an error that says something
    assert.are.equal("scribbled", b:result(60))
    -- after the scribbles, big blocks both ways are still exact
    for i = 1, 4 do
      local t = bytes(400000 + i, 40 + i)
      assert.is_true(farm.submit(function(x) return x:reverse() end, t):result(60) == t:reverse(), "job " .. i)
    end
  end)

  describe("through a standing node", function()
    local bed = H.node_bed("shm", 28400)
    before_each(bed.setup)
    after_each(bed.teardown)

    it("is not used: the node's big blocks go over its link, and its own workers use it", function()
      bed.start()
      local r = H.run_script([[
        local farm = require "farm"
        local s = string.rep("0123456789", 30000)
        local fs = {}
        for i = 1, 4 do fs[i] = farm.submit(function(x, i) return x:reverse() .. i end, s, i) end
        for i = 1, 4 do assert(fs[i]:result() == s:reverse() .. i, "job " .. i) end
        local sent, got = 0, 0
        for _, w in ipairs(farm.stats().workers) do sent, got = sent + w.bytes_sent, got + w.bytes_received end
        print("exact", sent, got)
      ]], ("-n 0 --hosts node://127.0.0.1:%d --key-file %s"):format(bed.port, H.quote(bed.key)), 120)
      assert.are.equal(0, r.code, r.err)
      local sent, got = r.out:match("exact%s+(%d+)%s+(%d+)")
      assert.is_truthy(sent, r.out)
      assert.is_true(tonumber(sent) > 4 * 300000 and tonumber(got) > 4 * 300000, r.out)
    end)

    it("ends the session of a client that says a job's arguments are in shared memory", function()
      local node = bed.start("--log-level debug")
      local r = H.sh(("%s --connect tcp://127.0.0.1:%d --key-file %s --shm-job 1")
        :format(H.quote(H.abs(H.build .. "/peers/fake_client")), bed.port, H.quote(bed.key)), 30)
      assert.are.equal(0, r.code, r.err)
      assert(H.wait_for(function()
        return H.slurp(bed.log):find("a job whose arguments are in shared memory", 1, true)
      end, 15), H.slurp(bed.log))
      assert.is_true(H.alive(node), "the node went down")
    end)
  end)
end)
