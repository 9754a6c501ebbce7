-- engine_spec.lua -- the scheduler loop on its own thread (core/engine.c,
-- core/peer_local.c, core/worker.c): what it does while the client sleeps,
-- jobs parked behind an endless one, streamed output, waiting at exit,
-- timeouts, callbacks, forced cancels, fresh closures, output of dying
-- workers, several pools, the progress line, and hostile finalizers.
-- Real processes throughout; no assertion on how long anything takes.
local farm = require "farm"
local H = require "helper"

local quote = H.quote

-- A job that keeps a CPU busy for s seconds of its own time.
local function spin(s)
  return function() local t = os.clock() + s; while os.clock() < t do end; return s end
end

local function sleep(s) os.execute("sleep " .. s) end

-- Outside tools run without the sanitizer runtime that the ASan run preloads
-- (ps, for one, hangs under it); the farm executable is linked with it anyway.
local bare = "env -u LD_PRELOAD "

-- Poll pred every 0.05 s for up to seconds; true once it holds.
local function wait_until(pred, seconds)
  local deadline = os.time() + (seconds or 10) + 1
  repeat
    if pred() then return true end
    sleep(0.05)
  until os.time() > deadline
  return pred() and true or false
end

-- A path that does not exist yet (removed by H.cleanup).
local function marker()
  local p = H.tmp("", ".marker")
  os.remove(p)
  return p
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close(); return true end
  return false
end

-- The pids of every process below pid (children first found, then theirs).
local function descendants(pid)
  local kids = {}
  local p = io.popen(bare .. "ps -e -o pid=,ppid=")
  for line in p:lines() do
    local c, pp = line:match("(%d+)%s+(%d+)")
    if c then
      kids[#kids + 1] = { tonumber(c), tonumber(pp) }
    end
  end
  p:close()
  local out, seen, frontier = {}, { [pid] = true }, { pid }
  while #frontier > 0 do
    local nxt = {}
    for _, parent in ipairs(frontier) do
      for _, cp in ipairs(kids) do
        if cp[2] == parent and not seen[cp[1]] then
          seen[cp[1]] = true
          out[#out + 1] = cp[1]
          nxt[#nxt + 1] = cp[1]
        end
      end
    end
    frontier = nxt
  end
  return out
end

-- Stop pid and everything below it, by pid: TERM, then KILL what stays.
local function stop_tree(pid)
  if not pid then return end
  local all = descendants(pid)
  table.insert(all, 1, pid)
  for _, p in ipairs(all) do
    if H.alive(p) then os.execute("kill -TERM " .. p .. " 2>/dev/null") end
  end
  if not H.wait_gone(all, 3) then
    for _, p in ipairs(all) do
      if H.alive(p) then os.execute("kill -KILL " .. p .. " 2>/dev/null") end
    end
    H.wait_gone(all, 3)
  end
end

local function abs(path)
  if path:sub(1, 1) == "/" then return path end
  return (os.getenv("PWD") or ".") .. "/" .. path
end

local function count(s, plain)
  local n, i = 0, 1
  while true do
    local a, b = s:find(plain, i, true)
    if not a then return n end
    n, i = n + 1, b + 1
  end
end

local function pids_copy()
  local t = {}
  for i, p in ipairs(farm._pids()) do t[i] = p end
  return t
end

-- The pids of the default pool once it has n workers again (after a
-- replacement), or what it has after 15 s.
local function pids_when(n)
  wait_until(function()
    local ps = farm._pids()
    if #ps ~= n then return false end
    for _, p in ipairs(ps) do if not p or p <= 0 or not H.alive(p) then return false end end
    return true
  end, 15)
  return pids_copy()
end

describe("engine", function()
  after_each(function()
    farm.close { cancel = true }
    H.cleanup()
  end)

  describe("runs on its own thread", function()
    it("finishes jobs while the client sleeps in os.execute", function()
      local r = H.run_script([[
        local fs = {}
        for i = 1, 10 do
          fs[i] = farm.submit(function()
            local t = os.clock() + 0.1
            while os.clock() < t do end
            return i
          end)
        end
        os.execute("sleep 2")
        local n = 0
        for i = 1, 10 do if fs[i]:done() then n = n + 1 end end
        print("done after sleep: " .. n)
        for i = 1, 10 do assert(fs[i]:result() == i) end
      ]], "-n 2 --no-progress", 60)
      assert.are.equal(0, r.code, r.err)
      assert.are.equal("done after sleep: 10\n", r.out)
    end)

    it("takes short jobs back from behind an endless one", function()
      farm.config { workers = 2, echo = false }
      local endless = farm.submit(function() while true do end end)
      local fs = {}
      for i = 1, 6 do fs[i] = farm.submit(spin(0.05)) end
      local done, pending = farm.wait(fs, { timeout = 15 })
      assert.are.equal(6, #done)
      assert.are.equal(0, #pending)
      for i = 1, 6 do assert.are.equal("done", fs[i]:status()) end
      assert.is_false(endless:done())
      assert.is_true(endless:cancel { force = true })
      assert.are.equal("cancelled", endless:status())
    end)

    it("takes jobs back, and cancels them, from behind a job blocked in C", function()
      farm.config { workers = 2, echo = false }
      local blocked = farm.submit(function() os.execute("sleep 4") return "slept" end)
      while blocked:status() ~= "running" do farm.wait({ blocked }, { timeout = 0.02 }) end
      local fs = {}
      for i = 1, 6 do fs[i] = farm.submit(spin(0.05)) end
      local victim = farm.submit(spin(0.05))
      -- wherever the victim waits (here, or at a worker, even the one blocked
      -- in os.execute: its link thread answers), a cancel of it succeeds
      assert.is_true(victim:cancel())
      assert.are.equal("cancelled", victim:status())
      local done = farm.wait(fs, { timeout = 15 })
      assert.are.equal(6, #done)
      assert.is_false(blocked:done())     -- they all ran while it slept: the one
                                          -- prefetched behind it was taken back
      assert.are.equal("slept", blocked:result(30))
    end)
  end)

  describe("output", function()
    it("streams what a job prints, through a pty, while the job runs", function()
      assert.is_truthy(os.execute("command -v script >/dev/null 2>&1"),
        "util-linux `script` is missing (scripts/deps.sh should install it)")
      local script = H.tmp([[
        farm.submit(function()
          print("first")
          io.stdout:flush()
          os.execute("sleep 3")
          print("second")
        end)
      ]])
      local out = H.tmp("", ".out")
      local inner = quote(abs(H.farm)) .. " run --no-progress -n 1 " .. quote(script)
      local p = io.popen((bare .. "script -qfec %s /dev/null >%s 2>&1 </dev/null & echo $!")
        :format(quote(inner), quote(out)))
      local pid = tonumber(p:read("l"))
      p:close()
      assert.is_number(pid)
      local ok, err = pcall(function()
        local seen_first, second_with_first
        wait_until(function()
          local text = H.slurp(out)
          if text:find("first", 1, true) then
            seen_first = true
            second_with_first = text:find("second", 1, true) ~= nil
            return true
          end
          return not H.alive(pid)
        end, 20)
        assert.is_true(seen_first, "no 'first' in the output: " .. H.slurp(out))
        assert.is_false(second_with_first,
          "'first' showed up only together with 'second' (output not streamed): " .. H.slurp(out))
        wait_until(function() return not H.alive(pid) end, 20)
        local text = H.slurp(out)
        assert.is_truthy(text:find("first", 1, true), text)
        assert.is_truthy(text:find("second", 1, true), text)
        assert.are.equal(1, count(text, "first"), text)
        assert.are.equal(1, count(text, "second"), text)
      end)
      stop_tree(pid)
      assert(ok, err)
    end)

    it("keeps the output of a job whose worker exits or is killed", function()
      farm.config { workers = 1, echo = false }
      local f = farm.submit_with({ retries = 0 }, function()
        print("before")
        io.stdout:flush()
        os.exit(3)
      end)
      local ok, err = pcall(f.result, f, 30)
      assert.is_false(ok)
      assert.is_truthy(tostring(err):find("worker exited with status 3", 1, true), tostring(err))
      assert.are.equal("failed", f:status())
      assert.is_truthy((f.stdout or ""):find("before", 1, true), tostring(f.stdout))

      local flag = marker()
      local g = farm.submit_with({ retries = 0 }, function(path)
        print("alive")
        io.stdout:flush()
        local m = io.open(path, "w"); m:write("x"); m:close()
        while true do end
      end, flag)
      assert.is_true(wait_until(function() return g:status() == "running" end, 15))
      assert.is_true(wait_until(function() return exists(flag) end, 15))   -- it has printed
      local pid = farm._pids()[1]
      assert.is_number(pid)
      os.execute("kill -KILL " .. pid)
      ok, err = pcall(g.result, g, 30)
      assert.is_false(ok)
      assert.is_truthy(tostring(err):find("SIGKILL", 1, true), tostring(err))
      assert.is_truthy((g.stdout or ""):find("alive", 1, true), tostring(g.stdout))
      assert.are.equal(1, farm.submit(function() return 1 end):result(30))
    end)
  end)

  describe("farm run's end", function()
    it("waits for jobs never collected, and says so", function()
      local flag = marker()
      local r = H.run_script(([[
        farm.submit(function(path)
          os.execute("sleep 1.5")
          local f = io.open(path, "w"); f:write("done"); f:close()
        end, %q)
      ]]):format(flag), "-n 2 --no-progress", 60)
      assert.are.equal(0, r.code, r.err)
      assert.is_true(exists(flag), "the job did not finish: " .. r.err)
      assert.is_truthy(r.err:find("farm: waiting for 1 unfinished job", 1, true), r.err)
      assert.is_falsy(r.err:find("1 unfinished jobs", 1, true), r.err)
    end)

    it("prints the statistics with --stats", function()
      local r = H.run_script([[
        for i = 1, 4 do farm.submit(function() return i end):result() end
      ]], "-n 2 --no-progress --stats", 60)
      assert.are.equal(0, r.code, r.err)
      assert.is_truthy(r.err:find("Job execution statistics", 1, true), r.err)
      assert.is_falsy(r.out:find("Job execution statistics", 1, true), r.out)
    end)
  end)

  describe("timeouts and cancels", function()
    it("stops a job past its timeout and replaces its worker", function()
      farm.config { workers = 2, echo = false }
      assert.are.equal(2, farm.workers())
      local before = pids_when(2)
      assert.are.equal(2, #before)
      local f = farm.submit_with({ timeout = 0.5 }, function() while true do end end)
      local ok, err = pcall(f.result, f, 30)
      assert.is_false(ok)
      assert.is_truthy(tostring(err):find("timed out", 1, true), tostring(err))
      assert.are.equal("failed", f:status())
      assert.are.equal(2, farm.workers())
      assert.are.equal(7, farm.submit(function() return 7 end):result(30))
      local after = pids_when(2)
      assert.are.equal(2, #after)
      local changed, old = 0, nil
      for i = 1, 2 do
        if before[i] ~= after[i] then changed = changed + 1; old = before[i] end
      end
      assert.are.equal(1, changed, ("pids before %s, after %s")
        :format(table.concat(before, ","), table.concat(after, ",")))
      assert.is_true(H.wait_gone({ old }, 10), "the timed-out worker " .. tostring(old) .. " lives on")
    end)

    it("force-cancels a running job and keeps the pool whole", function()
      farm.config { workers = 2, echo = false }
      local f = farm.submit(function() while true do end end)
      assert.is_true(wait_until(function() return f:status() == "running" end, 15))
      local before = pids_copy()
      assert.is_false(f:cancel())
      assert.are.equal("running", f:status())
      assert.is_true(f:cancel { force = true })
      assert.are.equal("cancelled", f:status())
      assert.is_true(f:done())
      local ok, err = pcall(f.result, f, 10)
      assert.is_false(ok)
      assert.is_truthy(tostring(err):find("cancelled", 1, true), tostring(err))
      assert.are.equal(2, farm.workers())
      assert.are.same({ 3, 4 }, farm.map(function(x) return x + 1 end, { 2, 3 }))
      local after = pids_when(2)
      local gone = {}
      for _, p in ipairs(before) do
        local kept = false
        for _, q in ipairs(after) do if p == q then kept = true end end
        if not kept then gone[#gone + 1] = p end
      end
      assert.are.equal(1, #gone)
      assert.is_true(H.wait_gone(gone, 10))
    end)

    it("never runs a job cancelled while it waits at a worker", function()
      farm.config { workers = 1, echo = false }
      local cancelled = 0
      for i = 1, 20 do
        local flag = marker()
        local a = farm.submit(spin(0.2))
        local b = farm.submit(function(path)
          local m = io.open(path, "w"); m:write("ran"); m:close()
          return "ran"
        end, flag)
        if b:cancel() then
          cancelled = cancelled + 1
          a:result(30)
          sleep(0.3)
          assert.is_false(exists(flag), "cancelled job ran (round " .. i .. ")")
          assert.are.equal("cancelled", b:status())
        else
          assert.are.equal("ran", b:result(30))
        end
        os.remove(flag)
      end
      assert.is_true(cancelled > 0, "no cancel succeeded in 20 rounds")
    end)

    it("close{cancel = true} cancels queued and running jobs", function()
      farm.config { workers = 2, echo = false }
      local flags, fs = {}, {}
      for i = 1, 5 do
        flags[i] = marker()
        fs[i] = farm.submit(function(path)
          local t = os.clock() + 1
          while os.clock() < t do end
          local m = io.open(path, "w"); m:write("ran"); m:close()
        end, flags[i])
      end
      wait_until(function() return fs[1]:status() == "running" end, 10)
      farm.close { cancel = true }
      for i = 1, 5 do
        assert.are.equal("cancelled", fs[i]:status(), "job " .. i)
      end
      sleep(1.5)
      for i = 1, 5 do
        assert.is_false(exists(flags[i]), "job " .. i .. " ran to its end")
      end
    end)
  end)

  describe("callbacks", function()
    it("run exactly once each, in process and at the end of farm run", function()
      farm.config { workers = 2, echo = false }
      local calls, fs = {}, {}
      for i = 1, 20 do
        fs[i] = farm.submit_with({
          callback = function(f) calls[f:id()] = (calls[f:id()] or 0) + 1 end,
        }, function(x) return x * 2 end, i)
      end
      farm.wait(fs)
      assert.are.equal(5, farm.submit(function() return 5 end):result(30))
      farm.wait(fs)
      for i = 1, 20 do
        assert.are.equal(i * 2, fs[i]:result())
        assert.are.equal(1, calls[fs[i]:id()], "callback of job " .. i)
      end
      local n = 0
      for _ in pairs(calls) do n = n + 1 end
      assert.are.equal(20, n)

      local r = H.run_script([[
        for i = 1, 10 do
          farm.submit_with({ callback = function(f) print("callback " .. f:result()) end },
            function(x) local t = os.clock() + 0.02; while os.clock() < t do end; return x end, i)
        end
      ]], "-n 2 --no-progress", 60)
      assert.are.equal(0, r.code, r.err)
      local seen = {}
      for line in r.out:gmatch("[^\n]+") do
        local k = tonumber(line:match("^callback (%d+)$"))
        assert.is_truthy(k, "unexpected line: " .. line)
        seen[k] = (seen[k] or 0) + 1
      end
      for i = 1, 10 do assert.are.equal(1, seen[i], "callback " .. i .. " in:\n" .. r.out) end
    end)
  end)

  describe("closures", function()
    it("get fresh upvalues for every job, and the worker does not keep them", function()
      farm.config { workers = 1, echo = false }
      local n = 0
      local function f() n = n + 1; return n end
      local fs = {}
      for i = 1, 5 do fs[i] = farm.submit(f) end
      for i = 1, 5 do assert.are.equal(1, fs[i]:result(30)) end

      local big = {}
      for i = 1, 20000 do big[i] = "entry " .. i .. string.rep("x", 40) end
      local function size() return #big end
      local gs = {}
      for i = 1, 300 do gs[i] = farm.submit(size) end
      for i = 1, 300 do assert.are.equal(20000, gs[i]:result(60)) end
      -- what the worker's Lua state still holds once it collects: one copy
      -- of the table is about 2 MB there, so 300 kept would be 600 MB
      local heap = farm.submit(function()
        collectgarbage(); collectgarbage()
        return collectgarbage("count")
      end):result(60)
      assert.is_true(heap < 100 * 1024, ("the worker's Lua heap holds %.0f kB"):format(heap))
      -- and its resident size, except under AddressSanitizer, whose quarantine
      -- of freed memory (256 MB) and shadow make it meaningless
      local pid = farm._pids()[1]
      assert.is_number(pid)
      local status = H.slurp("/proc/" .. pid .. "/status")
      local kb = tonumber(status:match("VmRSS:%s*(%d+)"))
      assert.is_number(kb, status)
      if not os.getenv("FARM_ASAN_RT") then
        assert.is_true(kb < 200 * 1024, ("worker VmRSS is %d kB"):format(kb))
      end
    end)
  end)

  describe("pools", function()
    it("runs two pools in one Lua state", function()
      local p1 = farm.new { workers = 1, echo = false }
      local p2 = farm.new { workers = 2, echo = false }
      finally(function() p1:close(); p2:close() end)
      local a = p1:submit(function() return "one" end)
      local b = p2:submit(function() return "two" end)
      assert.are.equal("one", a:result(30))
      assert.are.equal("two", b:result(30))
      assert.are.same({ 2, 4, 6 }, p2:map(function(x) return 2 * x end, { 1, 2, 3 }))
      assert.are.same({ 3, 6 }, p1:map(function(x) return 3 * x end, { 1, 2 }))
      assert.are.equal(1, p1:workers())
      assert.are.equal(2, p2:workers())
      local c = p1:submit_with({ timeout = 10 }, function() return "with" end)
      assert.are.equal("with", c:result(30))
      p1:close()
      assert.are.equal(2, p2:workers())
      assert.are.equal(42, p2:submit(function() return 42 end):result(30))
      assert.are.same({ 1, 4, 9 }, p2:map(function(x) return x * x end, { 1, 2, 3 }))
      local s = p2:stats()
      assert.are.equal(2, #s.workers)
    end)
  end)

  describe("the progress line", function()
    it("shows on a terminal (tmux), not in a pipe unless --progress", function()
      assert.is_truthy(os.execute("command -v tmux >/dev/null 2>&1"),
        "tmux is missing: scripts/deps.sh should install it")
      local text = [[
        local fs = {}
        for i = 1, 40 do
          fs[i] = farm.submit(function() local t = os.clock() + 0.1; while os.clock() < t do end end)
        end
        farm.wait(fs)
      ]]
      local script = H.tmp(text)
      local sock = ("farmspec%d_%d"):format(os.time(), math.random(1, 1e9))
      local tmux = bare .. "tmux -L " .. sock .. " "
      local name = "progress" .. math.random(1, 1e9)
      local cmd = quote(abs(H.farm)) .. " run -n 2 " .. quote(script) .. "; sleep 5"
      local ok = os.execute(tmux .. "new-session -d -s " .. name .. " -x 200 -y 20 "
        .. quote(cmd) .. " </dev/null >/dev/null 2>&1")
      assert.is_truthy(ok, "tmux new-session failed")
      local pane_pid, socket_path
      local ok2, err = pcall(function()
        local p = io.popen(tmux .. "display-message -p -t " .. name
          .. " '#{pane_pid} #{socket_path}' 2>/dev/null")
        local pid_s, path = p:read("a"):match("^(%d+) ([^\n]+)")
        p:close()
        pane_pid, socket_path = tonumber(pid_s), path
        local shown = wait_until(function()
          local q = io.popen(tmux .. "capture-pane -p -t " .. name .. " 2>/dev/null")
          local screen = q:read("a")
          q:close()
          return screen:find("jobs done", 1, true) ~= nil
        end, 20)
        assert.is_true(shown, "no progress line on the terminal")
      end)
      local below = pane_pid and descendants(pane_pid) or {}
      os.execute(tmux .. "kill-session -t " .. name .. " >/dev/null 2>&1")
      os.execute(tmux .. "kill-server >/dev/null 2>&1")
      if socket_path then os.remove(socket_path) end   -- tmux may leave it behind
      if pane_pid then stop_tree(pane_pid) end
      for _, p in ipairs(below) do stop_tree(p) end
      assert(ok2, err)

      local r = H.run_script(text, "-n 2", 60)
      assert.are.equal(0, r.code, r.err)
      assert.is_falsy(r.err:find("jobs done", 1, true), r.err)
      r = H.run_script(text, "-n 2 --progress", 60)
      assert.are.equal(0, r.code, r.err)
      assert.is_truthy(r.err:find("jobs done", 1, true), r.err)
      assert.is_truthy(r.err:find("\r", 1, true), r.err)
      r = H.run_script(text, "-n 2 --progress --no-progress", 60)
      assert.are.equal(0, r.code, r.err)
      assert.is_falsy(r.err:find("jobs done", 1, true), r.err)
    end)

    it("is cleared before anything else reaches the terminal, and shows a rate from the first jobs", function()
      -- stdout and stderr into one file, as on a terminal: the jobs' echoed
      -- lines, the script's print, io.write and io.stderr:write, and farm's own
      -- lines each start where the line was cleared, never glued onto it
      local script = H.tmp([[
        local fs = {}
        for i = 1, 16 do
          fs[i] = farm.submit(function(i) local t = os.clock() + 0.1 while os.clock() < t do end
            print("job says " .. i) return i end, i)
        end
        for i = 1, 16 do
          fs[i]:result()
          if i % 4 == 1 then print("script prints " .. i) end
          if i % 4 == 2 then io.write("script writes ", i, "\n") end
          if i % 4 == 3 then io.stderr:write("script errs " .. i .. "\n") end
        end
      ]])
      local r = H.sh(quote(abs(H.farm)) .. " run -n 2 --progress " .. quote(script) .. " 2>&1", 60)
      assert.are.equal(0, r.code, r.out)
      local all = r.out
      assert.is_truthy(all:find("jobs done", 1, true), all)
      local lines = 0
      for what in all:gmatch("[^\n\r]*(job says %d+)") do lines = lines + 1 end
      for line in all:gmatch("([^\n]*)\n") do
        local text = line:gsub("^.*\r\27%[K", "")   -- what the terminal shows of it
        assert.is_falsy(text:find("jobs done", 1, true), ("glued onto the progress line: %q"):format(line))
      end
      assert.are.equal(16, lines, all)
      -- nothing of the progress line is left at the end
      local last = all:gsub("^.*\n", ""):gsub("^.*\r\27%[K", "")
      assert.are.equal("", last, ("left: %q"):format(all:sub(-120)))
      -- a rate from the first jobs: a line with some done and a rate > 0 within its first second
      assert.is_truthy(all:find("farm: [1-9]%d*/16 jobs done, [1-9]%d* jobs/s"), all)
    end)
  end)

  describe("finalizers", function()
    -- In a script of its own (farm run): with the collector at pause 10 it
    -- walks the whole heap all the time, and busted's heap made this one test
    -- take over a minute; a script's heap takes seconds, and the race is the same.
    it("survive a __gc that submits while submit encodes arguments", function()
      local r = H.run_script([[
        collectgarbage("incremental", 10, 400)
        local inner = 0
        local fs = {}
        for i = 1, 150 do
          for _ = 1, 20 do
            setmetatable({}, { __gc = function()
              if pcall(farm.submit, function() return 1 end) then inner = inner + 1 end
            end })
          end
          local t = {}
          for k = 1, 1000 do t[k] = "s" .. i .. "_" .. k end
          fs[i] = farm.submit(function(list, j)
            return #list, list[1], list[1000], j
          end, t, i)
          collectgarbage("step")
        end
        collectgarbage()
        local bad = 0
        for i = 1, 150 do
          local n, first, last, j = fs[i]:result(60)
          if n ~= 1000 or first ~= "s" .. i .. "_1" or last ~= "s" .. i .. "_1000" or j ~= i then
            bad = bad + 1
          end
        end
        print(bad, farm.submit(function() return 9 end):result(30), inner > 0)
      ]], "-n 2 --quiet-jobs --no-progress", 120)
      assert.are.equal(0, r.code, r.err)
      assert.are.equal("0\t9\ttrue\n", r.out)
    end)

    it("a future resurrected after collection gives a clear error", function()
      farm.config { workers = 2, echo = false }
      local saved
      do
        local holder = { f = farm.submit(function() return 1 end) }
        setmetatable(holder, { __gc = function(t) saved = t.f end })
        holder = nil
      end
      collectgarbage()
      collectgarbage()
      assert.is_not_nil(saved, "the finalizer did not run")
      local ok, err = pcall(farm.wait, { saved })
      assert.is_false(ok)
      assert.is_truthy(tostring(err):find("already collected", 1, true), tostring(err))
      ok, err = pcall(saved.result, saved)
      assert.is_false(ok)
      assert.is_truthy(tostring(err):find("already collected", 1, true), tostring(err))
      ok, err = pcall(saved.status, saved)
      assert.is_false(ok)
      assert.is_truthy(tostring(err):find("already collected", 1, true), tostring(err))
      assert.are.equal(2, farm.submit(function() return 2 end):result(30))
    end)
  end)

  describe("bad input", function()
    it("gets one clear error naming the option", function()
      farm.config { workers = 1, echo = false }
      local job = function() return 1 end
      local f = farm.submit(job)
      local cases = {
        { "timeout", function() farm.submit_with({ timeout = -1 }, job) end },
        { "timeout", function() farm.submit_with({ timeout = "x" }, job) end },
        { "bogus", function() farm.submit_with({ bogus = 1 }, job) end },
        { "retries", function() farm.submit_with({ retries = 1.5 }, job) end },
        { "force", function() f:cancel("x") end },
        { "force", function() f:cancel { force = 1 } end },
        { "bogus", function() farm.close { bogus = true } end },
      }
      for i, c in ipairs(cases) do
        local ok, err = pcall(c[2])
        assert.is_false(ok, "case " .. i .. " raised nothing")
        assert.is_string(err, "case " .. i)
        assert.is_truthy(err:find(c[1], 1, true), "case " .. i .. ": " .. err)
        assert.are.equal(1, H.lines(err), "case " .. i .. ": " .. err)
      end
      assert.are.equal(1, f:result(30))      -- the pool is still open
      assert.are.equal(1, farm.submit(job):result(30))
    end)
  end)
end)
