-- api_spec.lua -- the farm Lua API in plain lua5.4 (require "farm"), against
-- real worker processes.
local farm = require "farm"

local function pack(...) return { n = select("#", ...), ... } end

describe("farm API", function()
  setup(function() farm.config { workers = 2 } end)
  teardown(function() farm.close() end)

  describe("submit and result", function()
    it("returns every result of the job", function()
      local f = farm.submit(function(a, b) return a + b, a * b, "x" end, 3, 4)
      assert.are.same({ n = 3, 7, 12, "x" }, pack(f:result()))
    end)

    it("keeps nils among the arguments and results (select('#'))", function()
      local f = farm.submit(function(...) return select("#", ...), ... end, nil, 2, nil, nil)
      assert.are.same({ n = 5, 4, nil, 2, nil, nil }, pack(f:result()))
    end)

    it("future() is future:result()", function()
      assert.are.equal(42, farm.submit(function() return 42 end)())
    end)

    it("a job with no results gives none", function()
      assert.are.equal(0, select("#", farm.submit(function() end):result()))
    end)

    it("result(timeout) raises a timeout error and the job goes on", function()
      local f = farm.submit(function(t)
        local t0 = os.clock(); while os.clock() - t0 < t do end; return "finished"
      end, 0.5)
      local ok, err = pcall(f.result, f, 0.05)
      assert.is_false(ok)
      assert.is_truthy(tostring(err):find("timed out after 0.05 s", 1, true))
      assert.is_true(err.timeout)
      assert.are.equal("finished", f:result())
    end)

    it("status goes pending/running -> done, and done() follows", function()
      local f = farm.submit(function(t)
        local t0 = os.clock(); while os.clock() - t0 < t do end
      end, 0.2)
      assert.is_truthy(({ pending = true, running = true })[f:status()])
      assert.is_false(f:done())
      f:result()
      assert.are.equal("done", f:status())
      assert.is_true(f:done())
    end)
  end)

  describe("a failing job", function()
    it("gives the raised value itself as err.value: tables, numbers, false", function()
      local function raised(v)
        local f = farm.submit(function(x) error(x) end, v)
        local ok, err = pcall(f.result, f)
        assert.is_false(ok)
        return err
      end
      local err = raised({ code = 42, why = "bad" })
      assert.are.same({ code = 42, why = "bad" }, err.value)
      -- as lua.c says it, not an address that says nothing
      assert.are.equal("(error object is a table value)", err.message)
      assert.are.equal("custom", raised(setmetatable({}, { __tostring = function() return "custom" end })).message)
      err = raised(3.5)
      assert.are.equal(3.5, err.value)
      assert.are.equal("float", math.type(err.value))
      assert.are.equal(false, raised(false).value)
      local f = farm.submit(function() error(io.stdout) end)   -- a value that cannot travel
      local ok
      ok, err = pcall(f.result, f)
      assert.is_false(ok)
      assert.is_nil(err.value)
      assert.is_truthy(err.message:find("file", 1, true), err.message)
    end)

    it("raises an error value with message, traceback and worker", function()
      local function fails(x)
        error("bad value " .. x)
      end
      local f = farm.submit(fails, 7)
      local ok, err = pcall(f.result, f)
      assert.is_false(ok)
      assert.are.equal("table", type(err))
      assert.is_truthy(err.message:find("api_spec.lua:%d+: bad value 7"))
      assert.is_truthy(err.traceback:find("stack traceback", 1, true))
      assert.is_truthy(err.traceback:find("in [^\n]*fails") or err.traceback:find("api_spec.lua"))
      assert.is_truthy(err.worker:find("^local:%d+ %(pid %d+%)$"))
      local s = tostring(err)
      assert.is_truthy(s:find("bad value 7", 1, true))
      assert.is_truthy(s:find(err.worker, 1, true))
      assert.is_truthy(s:find("stack traceback", 1, true))
      assert.are.equal("failed", f:status())
    end)

    it("keeps non-string error values readable", function()
      local f = farm.submit(function() error({ code = 1 }) end)
      local ok, err = pcall(f.result, f)
      assert.is_false(ok)
      assert.is_truthy(err.message:find("table", 1, true))
    end)

    it("fails with the path when a result cannot travel back", function()
      local f = farm.submit(function() return 1, { out = io.stdout } end)
      local ok, err = pcall(f.result, f)
      assert.is_false(ok)
      assert.is_truthy(err.message:find("cannot ship result 2.out (userdata)", 1, true), err.message)
    end)

    it("refuses a job that returns a future (it cannot travel; its result can)", function()
      local f = farm.submit(function() return farm.submit(function() end) end)
      local ok, err = pcall(f.result, f)
      assert.is_false(ok)
      assert.is_truthy(err.message:find("cannot ship result 1 (userdata)", 1, true), err.message)
    end)

    it("leaves the worker serving other jobs", function()
      local f = farm.submit(function() error("x") end)
      assert.is_false(pcall(f.result, f))
      assert.are.equal(5, farm.submit(function() return 5 end):result())
    end)
  end)

  describe("cancel", function()
    it("cancels a job that has not started, and not one that has", function()
      local block = function(t) local t0 = os.clock(); while os.clock() - t0 < t do end; return t end
      local running = {}
      for i = 1, 6 do running[i] = farm.submit(block, 0.2) end   -- fill the workers and their prefetch
      local f = farm.submit(block, 0.2)
      assert.is_true(f:cancel())
      assert.are.equal("cancelled", f:status())
      assert.is_true(f:done())
      local ok, err = pcall(f.result, f)
      assert.is_false(ok)
      assert.is_truthy(tostring(err):find("cancelled", 1, true))
      for i = 1, 6 do assert.are.equal(0.2, running[i]:result()) end
      assert.is_false(running[1]:cancel())
    end)
  end)

  describe("map", function()
    it("maps one list, in order", function()
      local input = {}
      for i = 1, 1000 do input[i] = i end
      local out = farm.map(function(x) return x * x end, input)
      assert.are.equal(1000, #out)
      for i = 1, 1000 do assert.are.equal(i * i, out[i]) end
    end)

    it("zips several lists, stopping at the shortest", function()
      local out = farm.map(function(a, b) return a .. b end, { "a", "b", "c" }, { 1, 2 })
      assert.are.same({ "a1", "b2" }, out)
    end)

    it("keeps only the first result of each call, nils included", function()
      local out = farm.map(function(x) if x % 2 == 0 then return nil, 1 end return x, 2 end, { 1, 2, 3 })
      assert.are.same({ [1] = 1, [3] = 3 }, out)
    end)

    it("maps an empty list to an empty table", function()
      assert.are.same({}, farm.map(function(x) return x end, {}))
    end)

    it("raises the first error", function()
      local list = {}
      for i = 1, 200 do list[i] = i end
      local ok, err = pcall(farm.map, function(x) if x >= 50 then error("item " .. x) end return x end, list)
      assert.is_false(ok)
      assert.is_truthy(tostring(err):find("item 50", 1, true))
    end)

    it("refuses what is not a list", function()
      local ok, err = pcall(farm.map, function() end, 5)
      assert.is_false(ok)
      assert.is_truthy(err:find("farm.map: argument #2 must be a table (got number)", 1, true))
    end)
  end)

  describe("as_completed and wait", function()
    local function sleeper(t) local t0 = os.clock(); while os.clock() - t0 < t do end; return t end

    it("as_completed yields every future once, as they finish", function()
      -- two workers, two jobs: one each, so the short one finishes first
      local fs = { farm.submit(sleeper, 0.4), farm.submit(sleeper, 0.01) }
      local seen, order = {}, {}
      for f in farm.as_completed(fs) do
        assert.is_true(f:done())
        assert.is_nil(seen[f])
        seen[f] = true
        order[#order + 1] = f:result()
      end
      assert.are.same({ 0.01, 0.4 }, order)
    end)

    it("as_completed raises when its timeout passes", function()
      local fs = { farm.submit(sleeper, 0.5) }
      local ok, err = pcall(function() for _ in farm.as_completed(fs, 0.05) do end end)
      assert.is_false(ok)
      assert.is_truthy(tostring(err):find("timed out", 1, true))
      fs[1]:result()
    end)

    it("wait returns all done by default", function()
      local fs = { farm.submit(sleeper, 0.05), farm.submit(sleeper, 0.01) }
      local done, pending = farm.wait(fs)
      assert.are.equal(2, #done)
      assert.are.equal(0, #pending)
    end)

    it("wait return_when = first", function()
      local fs = { farm.submit(sleeper, 0.6), farm.submit(sleeper, 0.01) }
      local done, pending = farm.wait(fs, { return_when = "first" })
      -- it returns at the first: the 0.6 s job is still pending
      assert.are.equal(1, #done)
      assert.are.equal(1, #pending)
      farm.wait(fs)
    end)

    it("wait return_when = error returns at the first failure", function()
      local fs = { farm.submit(sleeper, 1.0), farm.submit(function() error("x") end) }
      local done, pending = farm.wait(fs, { return_when = "error" })
      assert.are.equal(1, #done)
      assert.are.equal("failed", done[1]:status())
      assert.are.equal(1, #pending)
      farm.wait(fs)
    end)

    it("wait with a timeout returns what is not done", function()
      local fs = { farm.submit(sleeper, 0.5) }
      local done, pending = farm.wait(fs, { timeout = 0.05 })
      assert.are.equal(0, #done)
      assert.are.equal(1, #pending)
      farm.wait(fs)
    end)

    it("takes a timeout of 0: a look, no wait (a result(0) of a job not done times out)", function()
      local fs = { farm.submit(sleeper, 0.5) }
      local done, pending = farm.wait(fs, { timeout = 0 })
      assert.are.equal(0, #done)
      assert.are.equal(1, #pending)
      local ok, err = pcall(fs[1].result, fs[1], 0)
      assert.is_false(ok)
      assert.is_true(err.timeout, tostring(err.message))
      farm.wait(fs)
    end)

    it("refuses what is not a future", function()
      local ok, err = pcall(farm.wait, { 1 })
      assert.is_false(ok)
      assert.is_truthy(err:find("item 1 is not a future", 1, true))
      ok, err = pcall(farm.wait, {}, { return_when = "some" })
      assert.is_false(ok)
      assert.is_truthy(err:find("return_when", 1, true))
    end)
  end)

  describe("workers, stats and print_stats", function()
    it("counts workers and the jobs each ran", function()
      assert.are.equal(2, farm.workers())
      local before = farm.stats().jobs
      local fs = {}
      for i = 1, 20 do fs[i] = farm.submit(function(x) return x end, i) end
      farm.wait(fs)
      local s = farm.stats()
      assert.are.equal(before + 20, s.jobs)
      assert.are.equal(2, #s.workers)
      local sum = 0
      for _, w in ipairs(s.workers) do
        sum = sum + w.jobs
        assert.is_true(w.busy >= 0)
        assert.is_truthy(w.name:find("^local:%d$"))
      end
      assert.are.equal(s.jobs, sum)
    end)

    it("print_stats prints pp's table", function()
      local lines = {}
      farm.print_stats({ write = function(_, ...) lines[#lines + 1] = table.concat({ ... }) end })
      local text = table.concat(lines)
      assert.is_truthy(text:find("job count | % of all jobs | job time sum | time per job | job server", 1, true))
      assert.is_truthy(text:find("local:1 (pid", 1, true))
      assert.is_truthy(text:find("Time elapsed since server creation", 1, true))
    end)
  end)

  describe("what jobs print", function()
    it("is captured in future.stdout", function()
      farm.close()
      farm.config { echo = false }
      local f = farm.submit(function(x) print("x =", x); io.write("a", 1, "\n") end, 3)
      f:result()
      assert.are.equal("x =\t3\na1\n", f.stdout)
      local silent = farm.submit(function() end)
      silent:result()
      assert.is_nil(silent.stdout)                 -- one job's output is not the next one's
      farm.close()
      farm.config { echo = true }
    end)
  end)

  describe("the pool", function()
    it("stops on farm.close() and starts again at the next submit", function()
      farm.submit(function() end):result()
      local pids = farm._pids()
      assert.is_true(#pids > 0)
      farm.close()
      for _, pid in ipairs(pids) do
        assert.is_nil(io.open("/proc/" .. pid .. "/stat"))
      end
      assert.are.equal(3, farm.submit(function() return 3 end):result())
      assert.are_not.same(pids, farm._pids())
    end)

    it("refuses config changes while running, and bad options", function()
      farm.submit(function() end):result()
      assert.has_error(function() farm.config { workers = 3 } end,
        "farm.config: the pool is running; call farm.close() first")
      farm.close()
      assert.has_error(function() farm.config { wrkers = 3 } end)
      assert.has_error(function() farm.config { workers = 0 } end)
      assert.has_error(function() farm.config { echo = "no" } end, "farm.config: echo must be true or false (got string)")
      assert.has_error(function() farm.config { progress = 1 } end, "farm.config: progress must be true or false (got number)")
    end)

    it("replaces a worker that dies, and retries its job elsewhere", function()
      farm.close()
      farm.config { workers = 2 }
      -- the first attempt kills its own worker; the retry succeeds
      local marker = os.tmpname()
      local f = farm.submit(function(path)
        local fh = io.open(path)
        local seen = fh:read("a")
        fh:close()
        if seen == "" then
          fh = io.open(path, "w"); fh:write("died once"); fh:close()
          os.exit(9)
        end
        return seen
      end, marker)
      assert.are.equal("died once", f:result(30))
      os.remove(marker)
      assert.are.equal(2, farm.workers())
    end)

    it("fails a job whose every attempt kills its worker, with the cause", function()
      local f = farm.submit(function() os.exit(7) end)
      local ok, err = pcall(f.result, f, 30)
      assert.is_false(ok)
      assert.is_truthy(tostring(err):find("worker exited with status 7", 1, true))
    end)
  end)
end)
