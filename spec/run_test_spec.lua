-- run_test_spec.lua -- scripts/run-test, the watchdog every test file runs
-- under: a hang fails fast, names the file and the test, and leaves nothing
-- behind. It runs the deliberately bad test files of spec/fixtures/watchdog
-- with short bounds.
local H = require "helper"

local DIR = "spec/fixtures/watchdog/"

-- run-test is perl: under `make asan` it runs without the preloaded runtime
-- (which reports perl's own leaks); it gives it to busted itself
local RUN_TEST = H.tool("scripts/run-test")

-- run-test on a fixture with env (a string of VAR=value); the result, the
-- seconds it took, and the pids the fixture wrote down
local function run(fixture, env)
  local pids = os.tmpname()
  local t0 = os.time()
  local r = H.sh(("WATCHDOG_PIDS=%s %s %s %s"):format(pids, env or "", RUN_TEST, DIR .. fixture), 60)
  r.took = os.time() - t0
  r.pids = {}
  for l in H.slurp(pids):gmatch("%d+") do r.pids[#r.pids + 1] = tonumber(l) end
  os.remove(pids)
  return r
end

local function none_alive(pids)
  for _, pid in ipairs(pids) do
    if H.alive(pid) then return false, pid end
  end
  return true
end

describe("scripts/run-test", function()
  after_each(H.cleanup)

  it("fails a spec that hangs within its bound, naming the file, the test that hung and the last that ended", function()
    local r = run("hang_spec.lua", "FARM_TEST_STALL=3")
    assert.are.equal(1, r.code, r.out .. r.err)
    assert.is_true(r.took <= 12, "took " .. r.took .. " s")
    local msg = 'run-test: spec/fixtures/watchdog/hang_spec.lua: no test ended for 3 s, in the test '
      .. '"a file that hangs then waits for a job that never ends" (spec/fixtures/watchdog/hang_spec.lua:12); '
      .. 'the last to end was "a file that hangs passes first"; killed the file\'s processes'
    assert.is_truthy(r.out:find("ok 1 - a file that hangs passes first\nnot ok 2 - " .. msg .. "\n1..2\n", 1, true), r.out)
    assert.is_falsy(r.out:find("never comes here", 1, true), r.out)
    assert.is_truthy(r.err:find(msg, 1, true), r.err)
    -- busted's lua5.4, its worker with the endless job, a program that left
    -- the group (setsid) and an orphan: all gone
    assert.are.equal(4, #r.pids, "the fixture did not write its pids")
    assert.is_true(none_alive(r.pids))
  end)

  it("makes prove count the hang as a failed test", function()
    local pids = os.tmpname()
    local r = H.sh(("WATCHDOG_PIDS=%s FARM_TEST_STALL=2 %s --exec scripts/run-test %shang_spec.lua")
      :format(pids, H.tool("prove"), DIR), 60)
    os.remove(pids)
    assert.are_not.equal(0, r.code)
    assert.is_truthy(r.out:find("Failed 1/2 subtests", 1, true), r.out)
    assert.is_truthy(r.err:find("no test ended for 2 s", 1, true), r.err)
  end)

  it("fails a spec whose teardown hangs after its last test", function()
    local r = run("exit_spec.lua", "FARM_TEST_STALL=3")
    assert.are.equal(1, r.code, r.out .. r.err)
    assert.is_true(r.took <= 12, "took " .. r.took .. " s")
    assert.is_truthy(r.out:find('not ok 2 - run-test: spec/fixtures/watchdog/exit_spec.lua: no test ended for 3 s, '
      .. 'after the last test that ended; the last to end was "a file that hangs at its end leaves an endless '
      .. 'job behind"', 1, true), r.out)
    assert.is_true(#r.pids >= 1 and none_alive(r.pids))
  end)

  it("fails a test program (as the C tests are) that hangs, and kills it", function()
    local r = run("hang.sh", "FARM_TEST_STALL=2")
    assert.are.equal(1, r.code)
    assert.is_true(r.took <= 10, "took " .. r.took .. " s")
    assert.is_truthy(r.out:find('ok 1 - the first check\nnot ok 2 - run-test: spec/fixtures/watchdog/hang.sh: '
      .. 'no test ended for 2 s, after the last test that ended; the last to end was "the first check"', 1, true), r.out)
    assert.are.equal(1, #r.pids)
    assert.is_true(none_alive(r.pids))
  end)

  it("bounds a file that keeps making progress by its whole time", function()
    local r = run("busy.sh", "FARM_TEST_LIMIT=2")
    assert.are.equal(1, r.code)
    assert.is_true(r.took <= 10, "took " .. r.took .. " s")
    assert.is_truthy(r.out:find("not ok %d+ %- run%-test: spec/fixtures/watchdog/busy%.sh: still running after 2 s "
      .. "%(FARM_TEST_LIMIT%)"), r.out)
  end)

  it("lets a long test that says it is alive run past the bound", function()
    local r = run("slow.sh", "FARM_TEST_STALL=1.5")
    assert.are.equal(0, r.code, r.out .. r.err)
    assert.is_truthy(r.out:find("ok 1 - the long check\n1..1\n", 1, true), r.out)
  end)

  it("fails a file that passes but leaves a process running, names it, and kills it", function()
    local r = run("leave.sh")
    assert.are.equal(1, r.code, r.out .. r.err)
    assert.are.equal(1, #r.pids)
    local msg = ("spec/fixtures/watchdog/leave.sh left 1 process running after it ended: %d (sleep 1000); "
      .. "killed them"):format(r.pids[1])
    assert.is_truthy(r.out:find("ok 1 - passes\nnot ok 2 - run-test: " .. msg .. " (a test stops what it starts)\n1..2\n", 1, true), r.out)
    assert.is_truthy(r.err:find(msg, 1, true), r.err)
    assert.is_true(none_alive(r.pids))
  end)

  it("refuses a bound that is not a number of seconds, in one line", function()
    local r = H.sh("FARM_TEST_STALL=soon " .. RUN_TEST .. " " .. DIR .. "hang.sh")
    assert.are.equal(2, r.code)
    assert.are.equal("run-test: FARM_TEST_STALL must be a number of seconds above 0 (got 'soon')\n", r.err)
  end)
end)
