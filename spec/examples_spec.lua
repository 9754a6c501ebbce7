-- examples_spec.lua -- the seeds' own examples, ported (examples/): dispy's
-- provisional_results, job_scheduler and bounded_submit, run as a user runs
-- them (`farm run`), on the local pool and with one real standing node on
-- 127.0.0.1 (started and stopped by pid).
local H = require "helper"

local q = H.quote

local function adler32(s)
  local a, b = 1, 0
  for i = 1, #s do a = (a + s:byte(i)) % 65521; b = (b + a) % 65521 end
  return ("%08x"):format(b * 65536 + a)
end
local function data_of(name)      -- as examples/job_scheduler.lua makes its files
  local parts, seed = {}, tonumber(name:match("%d+"))
  for i = 1, 2000 do parts[i] = string.char(32 + (seed * 7 + i * 13) % 90) end
  return table.concat(parts)
end

describe("the seeds' examples", function()
  it("provisional_results: the client sees each job's optima as they come and stops the rest", function()
    local r = H.farm_cmd("run -n 2 examples/provisional_results.lua 4 0.005", 120)
    assert.are.equal(0, r.code, r.err .. r.out)
    assert.is_truthy(r.out:find("computed 0%.00[0-4]%d*: good enough, the others are told to stop"), r.out)
    local best = tonumber(r.out:match("global best: ([%d.]+)"))
    assert.is_truthy(best and best < 0.005, r.out)
    local _, provisional = r.out:gsub("best value from job %d+", "")
    assert.is_true(provisional >= 4, r.out)
    assert.is_truthy(r.out:find("job %d+: cancelled"), r.out)
  end)

  it("job_scheduler: each file once, checksummed right, one job at a time on the local pool", function()
    local r = H.farm_cmd("run -n 2 examples/job_scheduler.lua 6", 120)
    assert.are.equal(0, r.code, r.err .. r.out)
    for i = 0, 5 do
      local name = ("data%03d"):format(i)
      assert.are.equal(adler32(data_of(name)), r.out:match("checksum of " .. name .. " %(on local%): (%x+)"), r.out)
    end
    assert.is_truthy(r.out:find("6 of 6 files checksummed", 1, true), r.out)
    -- one at a time on "local": a single worker ran them all
    local counts = {}
    for n in r.out:gmatch("\n%s+(%d+) |[^\n]*local:%d") do counts[#counts + 1] = tonumber(n) end
    table.sort(counts)
    assert.are.same({ 0, 6 }, counts, r.out)
  end)

  it("bounded_submit: never more than the upper bound pending", function()
    local r = H.farm_cmd("run -n 2 examples/bounded_submit.lua 100 2 6", 120)
    assert.are.equal(0, r.code, r.err .. r.out)
    local done, most = r.out:match("(%d+) jobs done, at most (%d+) pending at once %(bounds 2%.%.6%)")
    assert.are.equal("100", done, r.out)
    assert.is_true(tonumber(most) <= 6, r.out)
  end)

  describe("with a standing node", function()
    local bed = H.node_bed("examples", 28000)
    before_each(bed.setup)
    after_each(bed.teardown)

    it("job_scheduler: the node says it is up, and gets its files one at a time beside the local pool", function()
      bed.start()
      local port, key = bed.port, bed.key
      local r = H.farm_cmd(("run -n 1 --hosts node://127.0.0.1:%d --key-file %s examples/job_scheduler.lua 10")
        :format(port, q(key)), 120)
      assert.are.equal(0, r.code, r.err .. r.out)
      local node = "node://127.0.0.1:" .. port
      assert.is_truthy(r.out:find("node " .. node .. " with 2 workers available", 1, true), r.out)
      local there, here = 0, 0
      for i = 0, 9 do
        local name = ("data%03d"):format(i)
        local at, sum = r.out:match("checksum of " .. name .. " %(on ([^)]+)%): (%x+)")
        assert.are.equal(adler32(data_of(name)), sum, r.out)
        if at == node then there = there + 1 elseif at == "local" then here = here + 1 end
      end
      assert.are.equal(10, there + here, r.out)
      assert.is_true(there >= 1 and here >= 1, r.out)
    end)
  end)
end)
