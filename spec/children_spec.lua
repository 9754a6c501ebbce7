-- children_spec.lua -- the programs jobs start, and signals, through `farm run` as a
-- user runs it: what a job leaves running dies with the run however the run ends;
-- what it prints late is no other job's output; a Ctrl-C at the terminal (SIGINT to
-- the whole foreground process group) is the client's alone; a job's children start
-- with the signals a child of lua would have, and jobs do not read the client's stdin.
-- Real processes throughout; no assertion on how long anything takes.
local H = require "helper"

local quote = H.quote

-- Outside tools run without the sanitizer runtime that the ASan run preloads.
local bare = "env -u LD_PRELOAD "

local function sleep(s) os.execute("sleep " .. s) end

-- Poll pred every 0.05 s for up to seconds; true once it holds.
local function wait_until(pred, seconds)
  local deadline = os.time() + (seconds or 10) + 1
  repeat
    if pred() then return true end
    sleep(0.05)
  until os.time() > deadline
  return pred() and true or false
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close(); return true end
  return false
end

-- A path that does not exist yet (removed by H.cleanup).
local function marker()
  local p = H.tmp("", ".marker")
  os.remove(p)
  return p
end

-- Processes whose command line holds "100.TAG" (the jobs start `sleep 100.TAG`), by
-- reading /proc: the same text runs in the specs and in the client scripts.
local FIND = [[
local function tagged(tag, exact)
  local found = {}
  local ls = io.popen("env -u LD_PRELOAD ls /proc")
  for name in ls:lines() do
    if name:match("^%d+$") then
      local f = io.open("/proc/" .. name .. "/cmdline", "rb")
      local cmd = f and f:read("a") or ""
      if f then f:close() end
      if (exact and cmd == "sleep\0" .. "100." .. tag .. "\0")
         or (not exact and cmd:find("100." .. tag, 1, true)) then
        found[#found + 1] = tonumber(name)
      end
    end
  end
  ls:close()
  return found
end
]]
local tagged = load(FIND .. "return tagged")()

-- A tag no other process has: our pid and a count.
local my_pid = io.open("/proc/self/stat"):read("n")
local ntags = 0
local function new_tag()
  ntags = ntags + 1
  return ("%d%03d"):format(my_pid, ntags)
end

-- What each test started, stopped after it whatever happened.
local started_pids, started_tags = {}, {}
local function stop_all()
  for _, tag in ipairs(started_tags) do
    for _, pid in ipairs(tagged(tag)) do os.execute("kill -KILL " .. pid .. " 2>/dev/null") end
  end
  for _, pid in ipairs(started_pids) do
    if H.alive(pid) then os.execute("kill -KILL " .. pid .. " 2>/dev/null") end
  end
  started_pids, started_tags = {}, {}
end

local function pids_in(path)
  local pids = {}
  for p in H.slurp(path):gmatch("%d+") do pids[#pids + 1] = tonumber(p) end
  return pids
end

local function pgid_of(pid)
  local stat = H.slurp("/proc/" .. pid .. "/stat")
  return tonumber(stat:match("^%d+ %b() %a %d+ (%d+)"))
end

-- The script writes its own pid and its workers' to the file arg[1] names.
local report_pids = [[
  farm.submit(function() return 1 end):result()
  local pf = assert(io.open(arg[1], "w"))
  pf:write(io.open("/proc/self/stat"):read("n"), " ", table.concat(farm._pids(), " "), "\n")
  pf:close()
]]

-- farm run SCRIPT PIDFILE in the background (under setsid when asked: a process group
-- of its own, as a shell gives a foreground job); returns the pids the script
-- reported (its own first) and the log, which ends with "exit N".
local function start(body, opts)
  opts = opts or {}
  local out = H.tmp("", ".pids")
  local script = H.tmp(body)
  local log = H.tmp("", ".log")
  os.execute(("(%s%s %s run %s %s %s >%s 2>&1; echo \"exit $?\" >>%s) &"):format(
    bare, opts.setsid and "setsid -w" or "", quote(H.farm), opts.args or "", quote(script),
    quote(out), quote(log), quote(log)))
  local pids = {}
  wait_until(function()
    pids = pids_in(out)
    return #pids >= 2 or H.slurp(log):find("exit %d+")
  end, 20)
  for _, p in ipairs(pids) do started_pids[#started_pids + 1] = p end
  assert.is_true(#pids >= 2, "the script started: " .. H.slurp(log))
  return pids, log
end

-- (the shell's own line, "exit N" alone on its line: a script's output may say
-- "exit 0" inside a line of its own, as os.execute's results do)
local function exit_line(log)
  wait_until(function() return ("\n" .. H.slurp(log)):find("\nexit %d+\n") ~= nil end, 30)
  return H.slurp(log)
end

-- A job that leaves three `sleep 100.TAG` running: one started in the background by
-- os.execute, one by io.popen (its handle kept open, as a job may keep one for the
-- jobs after it), one in a background subshell. The script waits until all three run.
local function leave_children(tag)
  return FIND .. ([[
    local tag = %q
    farm.submit(function(tag)
      os.execute("sleep 100." .. tag .. " &")
      debug.getregistry().kept_popen = io.popen("exec sleep 100." .. tag)
      os.execute("(sleep 100." .. tag .. "; echo never) &")
      return true
    end, tag):result()
    local t = os.time() + 10
    while #tagged(tag, true) < 3 and os.time() < t do os.execute("sleep 0.05") end
    print("started " .. #tagged(tag, true))
    io.stdout:flush()
  ]]):format(tag)
end

describe("programs a job starts", function()
  after_each(function()
    stop_all()
    H.cleanup()
  end)

  it("end with the run when it ends normally", function()
    local tag = new_tag()
    started_tags[#started_tags + 1] = tag
    local r = H.run_script(leave_children(tag), "-n 2")
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("started 3\n", r.out)
    assert.is_true(wait_until(function() return #tagged(tag) == 0 end, 10),
      "left running after the run: " .. table.concat(tagged(tag), " "))
  end)

  it("end with the run when farm run is killed with SIGKILL", function()
    local tag = new_tag()
    started_tags[#started_tags + 1] = tag
    local pids, log = start(leave_children(tag) .. report_pids ..
      "farm.submit(function() while true do end end):result()\n")
    assert.is_truthy(H.slurp(log):find("started 3", 1, true), H.slurp(log))
    assert.are.equal(3, #tagged(tag, true))
    os.execute("kill -KILL " .. pids[1])
    assert.is_true(H.wait_gone(pids, 10), "workers outlived their client")
    assert.is_true(wait_until(function() return #tagged(tag) == 0 end, 10),
      "left running after the client died: " .. table.concat(tagged(tag), " "))
  end)

  it("print nothing into the output of the jobs after theirs", function()
    -- one left in the background by a shell that has ended, one from an io.popen
    -- the job keeps open: both print a line after their job is over
    local flag1, flag2 = marker(), marker()
    local r = H.run_script(([[
      local flag1, flag2 = %q, %q
      local function exists(p) local f = io.open(p) if f then f:close() return true end return false end
      local first = farm.submit(function(flag)
        os.execute(("(sleep 0.3; echo late-line; touch '%%s') &"):format(flag))
        print("first job")
      end, flag1)
      local second = farm.submit(function(flag)
        debug.getregistry().kept_popen = io.popen(("sleep 0.4; echo late-popen; touch '%%s'"):format(flag), "w")
        print("second job")
      end, flag2)
      first:result()
      second:result()
      print("first:", first.stdout)
      print("second:", second.stdout)
      -- jobs run on the one worker until well after both late lines were written
      local n, after, bad = 0, 0, {}
      repeat
        n = n + 1
        local g = farm.submit(function(i)
          local t = os.clock() + 0.005
          while os.clock() < t do end
          print("job " .. i)
        end, n)
        g:result()
        if g.stdout ~= "job " .. n .. "\n" then bad[#bad + 1] = ("%%q"):format(g.stdout) end
        if exists(flag1) and exists(flag2) then after = after + 1 end
      until after >= 20 or n >= 5000
      print("late lines written:", exists(flag1), exists(flag2))
      print("jobs with other output:", #bad, bad[1])
    ]]):format(flag1, flag2), "-n 1 --quiet-jobs")
    assert.are.equal(0, r.code, r.err)
    assert.is_truthy(r.out:find("first:\tfirst job\n", 1, true), r.out)
    assert.is_truthy(r.out:find("second:\tsecond job\n", 1, true), r.out)
    assert.is_truthy(r.out:find("late lines written:\ttrue\ttrue\n", 1, true), r.out)
    assert.is_truthy(r.out:find("jobs with other output:\t0\tnil\n", 1, true), r.out)
  end)

  it("start with the signal dispositions a child of lua5.4 has", function()
    -- farm's worker ignores SIGINT and SIGPIPE for itself; what it starts must not
    -- inherit that (`yes | head -1` would complain of a broken pipe)
    local probe = [[io.popen("grep -E 'SigIgn|SigBlk' /proc/self/status"):read("a")]]
    local want = H.sh("lua5.4 -e " .. quote("io.write(" .. probe .. ")"))
    assert.are.equal(0, want.code, want.err)
    assert.is_truthy(want.out:find("SigIgn", 1, true), want.out)
    local r = H.run_script("io.write(farm.submit(function() return " .. probe .. " end):result())",
      "-n 1 --quiet-jobs")
    assert.are.equal(0, r.code, r.err)
    assert.are.equal(want.out, r.out)
    r = H.run_script([[
      print(farm.submit(function()
        local p = io.popen("(yes | head -1) 2>&1")
        local s = p:read("a")
        p:close()
        return s
      end):result())
    ]], "-n 1 --quiet-jobs")
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("y\n\n", r.out)
  end)

  it("read /dev/null as standard input, not the client's", function()
    local script = H.tmp([[
      local got = farm.submit(function() return io.read("a") end):result()
      print(("job read %q"):format(got))
      print(("client read %q"):format(io.read("a")))
    ]])
    local r = H.sh(("printf 'one\\ntwo\\n' | %s run -n 1 --quiet-jobs %s"):format(quote(H.farm), quote(script)))
    assert.are.equal(0, r.code, r.err)
    assert.are.equal('job read ""\nclient read "one\\\ntwo\\\n"\n', r.out)
  end)
end)

describe("Ctrl-C at the terminal (SIGINT to farm run's process group)", function()
  after_each(function()
    stop_all()
    H.cleanup()
  end)

  it("stops the run through the client: status 130, no worker and no child left", function()
    local tag = new_tag()
    started_tags[#started_tags + 1] = tag
    local flag = marker()
    local pids, log = start(report_pids .. ([[
      farm.submit(function(tag, flag)
        os.execute("sleep 100." .. tag .. " &")
        io.open(flag, "w"):close()
        os.execute("sleep 60")
        return "slept"
      end, %q, %q):result()
      print("not interrupted")
    ]]):format(tag, flag), { setsid = true })
    assert.is_true(wait_until(function() return exists(flag) end, 20), H.slurp(log))
    local pgid = pgid_of(pids[1])
    assert.is_number(pgid)
    os.execute("kill -INT -" .. pgid)
    assert.are.equal("farm: interrupted\nexit 130\n", exit_line(log))
    assert.is_true(H.wait_gone(pids, 10), "client or workers still running")
    assert.is_true(wait_until(function() return #tagged(tag) == 0 end, 10),
      "left running after Ctrl-C: " .. table.concat(tagged(tag), " "))
  end)

  it("reaches neither the workers nor their jobs' children: a script that catches it goes on", function()
    local flag = marker()
    local pids, log = start(report_pids .. ([[
      local f = farm.submit(function(flag)
        local ok, how, code = os.execute(("touch '%%s'; sleep 2"):format(flag))
        return how .. " " .. code
      end, %q)
      local ok, err = pcall(f.result, f)
      print("caught", tostring(err))
      print("workers", table.concat(farm._pids(), " "))
      print("result", f:result())
      print("then", farm.submit(function() return "ran" end):result())
    ]]):format(flag), { setsid = true, args = "-n 2" })
    assert.is_true(wait_until(function() return exists(flag) end, 20), H.slurp(log))
    local pgid = pgid_of(pids[1])
    assert.is_number(pgid)
    os.execute("kill -INT -" .. pgid)
    local text = exit_line(log)
    assert.is_truthy(text:find("caught\tinterrupted\n", 1, true), text)
    -- the same workers: none died of the SIGINT and none was replaced
    assert.is_truthy(text:find("workers\t" .. pids[2] .. " " .. pids[3] .. "\n", 1, true), text)
    -- the job's own child was not interrupted either
    assert.is_truthy(text:find("result\texit 0\n", 1, true), text)
    assert.is_truthy(text:find("then\tran\n", 1, true), text)
    assert.is_truthy(text:find("exit 0\n", 1, true), text)
    assert.is_true(H.wait_gone(pids, 10), "client or workers still running")
  end)
end)
