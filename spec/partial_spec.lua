-- partial_spec.lua -- provisional results (farm.provide in a job, future:partial()
-- and job_partial events in the client: dispy's dispy_provisional_result) and a
-- last word on cancel (future:cancel{force = true, grace = s}; farm.cancelled()
-- in the job). `farm run` scripts on the local pool, and through one real
-- standing `farm node` on 127.0.0.1, started and stopped by pid.
local H = require "helper"

local q = H.quote

local function run(script, args)
  local path = H.tmp(script, ".lua")
  return H.sh(("%s run %s %s"):format(q(H.farm), args or "-n 2", q(path)), 120)
end

-- The script both cases run: every line it prints is checked below.
local SCRIPT = [[
  local farm = require "farm"
  local events = 0
  farm.on_event(function(ev) if ev.event == "job_partial" then events = events + 1 end end)
  -- a job that improves its answer step by step, saying each one
  local f = farm.submit(function(k)
    local best = 1
    for i = 1, k do
      local t = os.clock() + 0.15 while os.clock() < t do end   -- (long enough to be seen, under ASan too)
      best = best / 2
      farm.provide({ best = best, step = i })
    end
    return best
  end, 8)
  local seen, last = {}, 0
  while not f:done() do
    local v, n = f:partial()
    if v then
      assert(n >= last, "the count went back")
      assert(v.step == n, ("value of step %d with count %d"):format(v.step, n))
      last = n
      seen[n] = true
    end
    farm.wait({ f }, { timeout = 0.02 })
  end
  local v, n = f:partial()
  print("result", f:result(), "partials", n, v.best, "events", events)
  local shown = 0
  for _ in pairs(seen) do shown = shown + 1 end
  print("seen while running", shown > 1)
  -- a job that stops when asked, and says its last word
  local g = farm.submit(function()
    local rounds = 0
    while not farm.cancelled() do
      rounds = rounds + 1
      local t = os.clock() + 0.01 while os.clock() < t do end
    end
    return "stopped after " .. (rounds > 0 and "some" or "no") .. " rounds"
  end)
  local until_g = os.time() + 30
  while g:status() ~= "running" and os.time() < until_g do farm.wait({ g }, { timeout = 0.05 }) end
  local t0 = os.time()
  print("graceful", g:cancel{ force = true, grace = 30 }, g:status(), (g:partial()))
  print("in time", os.time() - t0 < 20)
  -- one that does not listen is stopped when the grace is over; what it
  -- provided before stays its last word
  local h = farm.submit(function() farm.provide("halfway") while true do end end)
  local until_t = os.time() + 30
  while (h:status() ~= "running" or not h:partial()) and os.time() < until_t do farm.wait({ h }, { timeout = 0.05 }) end
  print("stubborn", h:cancel{ force = true, grace = 0.3 }, h:status(), (h:partial()))
  print("client cancelled()", farm.cancelled())
  print("after", farm.submit(function(x) return x + 1 end, 1):result())
]]

local function check(r)
  assert.are.equal(0, r.code, r.err .. r.out)
  assert.is_truthy(r.out:find("result\t0.00390625\tpartials\t8\t0.00390625\tevents\t8\n", 1, true), r.out)
  assert.is_truthy(r.out:find("seen while running\ttrue\n", 1, true), r.out)
  assert.is_truthy(r.out:find("graceful\ttrue\tcancelled\tstopped after some rounds\n", 1, true), r.out)
  assert.is_truthy(r.out:find("in time\ttrue\n", 1, true), r.out)
  assert.is_truthy(r.out:find("stubborn\ttrue\tcancelled\thalfway\n", 1, true), r.out)
  assert.is_truthy(r.out:find("client cancelled()\tfalse\n", 1, true), r.out)
  assert.is_truthy(r.out:find("after\t2\n", 1, true), r.out)
end

describe("provisional results and a last word", function()
  after_each(H.cleanup)

  it("work on the local pool", function()
    check(run(SCRIPT))
  end)

  it("refuse what makes no sense, in one line each", function()
    local r = run([[
      local farm = require "farm"
      print(pcall(farm.provide, 1))
      local f = farm.submit(function() return 1 end)
      print(pcall(f.cancel, f, { grace = 1 }))
      print(pcall(f.cancel, f, { force = true, grace = -1 }))
      print(pcall(f.cancel, f, { force = true, grace = "1" }))
      f:result()
      print("partial of none", f:partial())
      local k = farm.submit(function() farm.provide(1, 2) end)
      print(pcall(k.result, k))
    ]])
    assert.are.equal(0, r.code, r.err)
    for _, want in ipairs {
      "false\tfarm.provide: only a job provides results; the client reads them with future:partial()",
      "future:cancel: a grace is for a running job, which only {force = true} stops",
      "future:cancel: grace must be a number of seconds, 0 or more (got -1)",
      'future:cancel: grace must be a number of seconds, 0 or more (got "1")',
      "partial of none\tnil\t0",
      "farm.provide: one value (put several in a table)",
    } do
      assert.is_truthy(r.out:find(want, 1, true), want .. "\n" .. r.out)
    end
  end)

  describe("through a standing node", function()
    local bed = H.node_bed("partial", 27000)
    before_each(bed.setup)
    after_each(bed.teardown)

    it("pass provisional results on, and carry the stop and the last word", function()
      bed.start()
      check(run(SCRIPT, ("-n 0 --hosts node://127.0.0.1:%d --key-file %s"):format(bed.port, q(bed.key))))
    end)
  end)
end)
