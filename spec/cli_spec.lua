-- cli_spec.lua -- `farm run` as a user runs it: real processes, real exit codes.
local H = require "helper"

local function one_line(s) return H.lines(s) == 1 end

describe("farm run", function()
  after_each(H.cleanup)

  it("estimates pi with examples/pi.lua on the local pool", function()
    local r = H.farm_cmd("run examples/pi.lua 16 200000")
    assert.are.equal(0, r.code, r.err)
    local pi = tonumber(r.out:match("pi = ([%d.]+)"))
    assert.is_truthy(pi, r.out)
    assert.is_true(math.abs(pi - math.pi) < 0.01, r.out)
  end)

  it("runs pp's sum_primes with isprime travelling as a global", function()
    local r = H.farm_cmd("run examples/sum_primes.lua")
    assert.are.equal(0, r.code, r.err)
    assert.is_truthy(r.out:find("Sum of primes below 100000 is 454396537", 1, true), r.out)
    assert.is_truthy(r.out:find("Sum of primes below 100700 is 460217613", 1, true), r.out)
    assert.is_truthy(r.out:find("job count | % of all jobs", 1, true), r.out)
  end)

  it("ships functions from files with any of Lua's line endings (LF, CRLF, CR, LFCR)", function()
    for _, nl in ipairs({ "\n", "\r\n", "\r", "\n\r" }) do
      local text = table.concat({ "local function f(x)", "  local y = x * 2", "  return y",
        "end", "print(farm.submit(f, 21):result())", "" }, nl)
      local r = H.run_script(text)
      assert.are.equal(0, r.code, r.err)
      assert.are.equal("42\n", r.out)
    end
  end)

  it("counts the CPUs it may use, as taskset sets them", function()
    local r = H.sh(("taskset -c 0 %s run %s"):format(H.quote(H.farm), H.quote(H.tmp("print(farm.workers())"))))
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("1\n", r.out)
  end)

  it("takes -n, and passes arguments after the script as arg and ...", function()
    local r = H.run_script([[
      local a, b = ...
      print(farm.workers(), arg[0] ~= nil, arg[1], arg[2], a, b, select('#', ...))
    ]], "-n 3 -- x 'y z'")
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("3\ttrue\tx\ty z\tx\ty z\t2\n", r.out)
  end)

  it("takes --slurm-wait from 1 to 86400 s, and says so in one line otherwise (also farm.config)", function()
    for _, v in ipairs { "0", "-5", "1e9", "soon" } do
      local r = H.farm_cmd("run x.lua --slurm-wait " .. v)
      assert.are.equal(2, r.code, r.err)
      assert.are.equal(1, H.lines(r.err), r.err)
      assert.is_truthy(r.err:find("--slurm-wait takes seconds from 1 to 86400, not '" .. v .. "'", 1, true), r.err)
    end
    local r = H.run_script("farm.config{ slurm_wait = 0 }")
    assert.are_not.equal(0, r.code)
    assert.is_truthy(r.err:find("slurm_wait must be a number of seconds from 1 to 86400", 1, true), r.err)
    r = H.run_script("farm.config{ slurm_wait = 5 } print(farm.submit(function() return 1 end):result())", "--slurm-wait 300")
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("1\n", r.out)
  end)

  it("echoes what jobs print, unless --quiet-jobs", function()
    local text = [[
      local f = farm.submit(function(x) print("hello from", x); io.write("w\n") end, 7)
      f:result()
      io.stderr:write("stdout field: ", f.stdout)
    ]]
    local r = H.run_script(text)
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("hello from\t7\nw\n", r.out)
    assert.is_truthy(r.err:find("stdout field: hello from\t7\nw\n", 1, true))
    r = H.run_script(text, "--quiet-jobs")
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("", r.out)
    assert.is_truthy(r.err:find("stdout field: hello from", 1, true))
  end)

  describe("bad input gets one clear line and a non-zero exit", function()
    it("an unknown option", function()
      local r = H.farm_cmd("run --frobnicate examples/pi.lua")
      assert.are.equal(2, r.code)
      assert.is_true(one_line(r.err), r.err)
      assert.is_truthy(r.err:find("unknown option '--frobnicate'", 1, true), r.err)
    end)

    it("--nodes with a hostfile that is not there, and a hostfile line that does not parse", function()
      -- found before the script runs (it prints first here): the command line's mistake, exit 2
      local script = H.tmp("print('the script ran')")
      local r = H.farm_cmd("run " .. H.quote(script) .. " --nodes /nonexistent/hosts")
      assert.are.equal(2, r.code)
      assert.are.equal("", r.out)
      assert.is_true(one_line(r.err), r.err)
      assert.is_truthy(r.err:find("cannot read hostfile '/nonexistent/hosts'", 1, true), r.err)
      r = H.farm_cmd("run " .. H.quote(script) .. " --hosts node://127.0.0.1:9 --key-file /nonexistent/key")
      assert.are.equal(2, r.code)
      assert.are.equal("", r.out)
      assert.is_truthy(r.err:find("cannot read key file '/nonexistent/key'", 1, true), r.err)
      local hosts = H.tmp("# two hosts\nh1 2\nh2 x\n", ".hosts")
      r = H.farm_cmd("run examples/pi.lua --nodes " .. H.quote(hosts))
      assert.are.equal(2, r.code)
      assert.is_true(one_line(r.err), r.err)
      assert.is_truthy(r.err:find(hosts .. ":3: bad worker count 'x'", 1, true), r.err)
      r = H.farm_cmd("run examples/pi.lua -n 0")
      assert.are.equal(2, r.code)
      assert.is_true(one_line(r.err), r.err)
      assert.is_truthy(r.err:find("--nodes HOSTFILE or --hosts LIST", 1, true), r.err)
    end)

    it("a bad worker count", function()
      local r = H.farm_cmd("run -n zero examples/pi.lua")
      assert.are.equal(2, r.code)
      assert.is_true(one_line(r.err), r.err)
      assert.is_truthy(r.err:find("-n takes a number", 1, true), r.err)
    end)

    it("an unknown command", function()
      local r = H.farm_cmd("frobnicate")
      assert.are.equal(2, r.code)
      assert.is_true(one_line(r.err), r.err)
    end)

    it("a missing script", function()
      local r = H.farm_cmd("run /nonexistent/job.lua")
      assert.are.equal(1, r.code)
      assert.is_true(one_line(r.err), r.err)
      assert.is_truthy(r.err:find("cannot open /nonexistent/job.lua", 1, true), r.err)
    end)

    it("an unreadable script", function()
      local r = H.farm_cmd("run /")
      assert.are_not.equal(0, r.code)
      assert.is_true(one_line(r.err), r.err)
    end)

    it("a syntax error in the script, with file:line", function()
      local r = H.run_script("local x = 1\nlocal y = = 2\n")
      assert.are.equal(1, r.code)
      assert.is_true(one_line(r.err), r.err)
      assert.is_truthy(r.err:find(r.script .. ":2:", 1, true), r.err)
    end)

    it("a script's own error('interrupted') is an error, not Ctrl-C", function()
      local r = H.run_script("error('interrupted', 0)")
      assert.are.equal(1, r.code)
      assert.are.equal("farm: interrupted\n", r.err)
    end)

    it("submit of a non-function", function()
      local r = H.run_script("farm.submit(42)")
      assert.are.equal(1, r.code)
      assert.is_true(one_line(r.err), r.err)
      assert.is_truthy(r.err:find("farm.submit: argument #1 must be a function (got number)", 1, true), r.err)
    end)

    it("an unshippable upvalue, with its name and where the function is", function()
      local r = H.run_script("local conn = io.stdout\nlocal function work(x)\n  return conn, x\nend\nfarm.submit(work, 1)\n")
      assert.are.equal(1, r.code)
      assert.is_true(one_line(r.err), r.err)
      assert.is_truthy(r.err:find("cannot ship upvalue 'conn' (userdata) of function 'work'", 1, true), r.err)
      assert.is_truthy(r.err:find(":2)", 1, true), r.err)
    end)

    it("an argument too large for the link", function()
      local r = H.run_script("farm.submit(function(s) return #s end, string.rep('x', 2 * 1024 * 1024))",
                             "", 60, "FARM_MAX_MESSAGE=1048576")
      assert.are.equal(1, r.code)
      assert.is_true(one_line(r.err), r.err)
      assert.is_truthy(r.err:find("a link carries at most 1.0 MiB", 1, true), r.err)
    end)

    it("a worker executable that is missing or does not start", function()
      local r = H.run_script("farm.workers()", "", 60, "FARM_EXE=/nonexistent/farm")
      assert.are.equal(1, r.code)
      assert.are.equal("farm: FARM_EXE=/nonexistent/farm is not an executable; point it at the farm executable\n", r.err)
      r = H.run_script("farm.workers()", "", 60, "FARM_EXE=/bin/false")
      assert.are.equal(1, r.code)
      assert.are.equal("farm: cannot start a worker (/bin/false): worker exited with status 1\n", r.err)
    end)

    it("a job that raises: the message, where it ran, and the remote traceback", function()
      local r = H.run_script("local function boom(x)\n  error('boom ' .. x)\nend\nfarm.submit(boom, 5):result()\n")
      assert.are.equal(1, r.code)
      assert.is_truthy(r.err:find("^farm: [^\n]*:2: boom 5\n"), r.err)
      assert.is_truthy(r.err:find("ran on local:%d"), r.err)
      assert.is_truthy(r.err:find("remote stack traceback", 1, true), r.err)
    end)
  end)

  it("keeps every message under the link's limit: big arguments, results and output", function()
    local r = H.run_script([[
      local s = string.rep("y", 3 * 1024 * 1024)
      local fs = {}
      for i = 1, 12 do fs[i] = farm.submit(function(x, i) return x .. i end, s, i) end
      for i = 1, 12 do assert(#fs[i]:result(60) == #s + #tostring(i)) end
      local f = farm.submit(function() print(string.rep("z", 3 * 1024 * 1024)); return 1 end)
      assert(f:result(60) == 1)
      assert(f.stdout:find("bytes of output cut", 1, true))
      local g = farm.submit(function() return string.rep("z", 5 * 1024 * 1024) end)
      local ok, err = pcall(g.result, g, 60)
      assert(not ok and err.message:find("a link carries at most 4.0 MiB", 1, true), tostring(err))
      local e = farm.submit(function() error(string.rep("e", 5 * 1024 * 1024)) end)
      ok, err = pcall(e.result, e, 60)
      assert(not ok and #err.message <= 65536)
      print("all arrived")
    ]], "--quiet-jobs", 120, "FARM_MAX_MESSAGE=4194304")
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("all arrived\n", r.out)
  end)

  describe("leaves no worker behind", function()
    -- the script reports the pool's pids and its own, then does what the test says
    local prelude = [[
      farm.submit(function() return 1 end):result()
      local f = assert(io.open(arg[1], "w"))
      local me = io.open("/proc/self/stat"):read("n")
      f:write(me, " ", table.concat(farm._pids(), " "), "\n")
      f:close()
    ]]

    local function pids_in(path)
      local pids = {}
      for p in H.slurp(path):gmatch("%d+") do pids[#pids + 1] = tonumber(p) end
      return pids
    end

    it("after an error in the script", function()
      local out = H.tmp("", ".pids")
      local r = H.run_script(prelude .. "error('script failed')", H.quote(out))
      assert.are.equal(1, r.code)
      assert.is_truthy(r.err:find("script failed", 1, true))
      local pids = pids_in(out)
      assert.is_true(#pids >= 2, "the script wrote its pids")
      assert.is_true(H.wait_gone(pids, 10))
    end)

    local function started(body)
      local out = H.tmp("", ".pids")
      local script = H.tmp(prelude .. body)
      local log = H.tmp("", ".log")
      os.execute(("(%s run %s %s >%s 2>&1; echo \"exit $?\" >>%s) &"):format(H.quote(H.farm),
        H.quote(script), H.quote(out), H.quote(log), H.quote(log)))
      local pids
      for _ = 1, 400 do
        pids = pids_in(out)
        if #pids >= 2 then break end
        os.execute("sleep 0.05")
      end
      assert.is_true(#pids >= 2, "the script started: " .. H.slurp(log))
      return pids, log
    end

    it("after SIGKILL of the client", function()
      local pids = started("farm.submit(function() while true do end end)\nwhile true do end\n")
      os.execute("kill -KILL " .. pids[1])
      assert.is_true(H.wait_gone(pids, 10), "workers outlived their client")
    end)

    it("after Ctrl-C (SIGINT) while the script waits on a job", function()
      local pids, log = started("farm.submit(function() while true do end end):result()\n")
      os.execute("sleep 0.2; kill -INT " .. pids[1])
      assert.is_true(H.wait_gone(pids, 10), "client or workers still running")
      for _ = 1, 100 do
        if H.slurp(log):find("exit", 1, true) then break end
        os.execute("sleep 0.05")
      end
      assert.are.equal("farm: interrupted\nexit 130\n", H.slurp(log))
    end)

    local function exit_line(log)
      for _ = 1, 200 do
        local text = H.slurp(log)
        if text:find("exit %d+") then return text end
        os.execute("sleep 0.05")
      end
      return H.slurp(log)
    end

    it("after SIGTERM while jobs run", function()
      local pids, log = started("for i = 1, 4 do farm.submit(function() while true do end end) end\nwhile true do end\n")
      os.execute("sleep 0.2; kill -TERM " .. pids[1])
      assert.is_true(H.wait_gone(pids, 10), "client or workers still running")
      assert.is_truthy(exit_line(log):find("exit 143", 1, true), H.slurp(log))
    end)

    it("after os.exit with jobs unfinished (no waiting)", function()
      local pids, log = started("for i = 1, 4 do farm.submit(function() while true do end end) end\nos.exit(3)\n")
      assert.is_true(H.wait_gone(pids, 10), "client or workers still running")
      assert.are.equal("exit 3\n", exit_line(log))
    end)

    it("after Ctrl-C while farm run waits for unfinished jobs at the end", function()
      local pids, log = started("farm.submit(function() while true do end end)\n")
      for _ = 1, 100 do                  -- the script has ended: farm run waits
        if H.slurp(log):find("waiting for 1 unfinished job", 1, true) then break end
        os.execute("sleep 0.05")
      end
      assert.is_truthy(H.slurp(log):find("farm: waiting for 1 unfinished job (Ctrl-C stops them)", 1, true),
        H.slurp(log))
      os.execute("kill -INT " .. pids[1])
      assert.is_true(H.wait_gone(pids, 10), "client or workers still running")
      assert.is_truthy(exit_line(log):find("exit 130", 1, true), H.slurp(log))
    end)

    it("after Ctrl-C caught by the script's pcall, which sees 'interrupted'", function()
      local pids, log = started([[
        local ok, err = pcall(function() farm.submit(function() while true do end end):result() end)
        io.stderr:write("caught: ", tostring(err), "\n")
        error(err)
      ]])
      os.execute("sleep 0.3; kill -INT " .. pids[1])
      assert.is_true(H.wait_gone(pids, 10), "client or workers still running")
      local text = exit_line(log)
      assert.is_truthy(text:find("caught: interrupted\n", 1, true), text)
      assert.is_truthy(text:find("exit 130", 1, true), text)
    end)

    it("when its output goes to a pipe that closes, as lua does (SIGPIPE)", function()
      for _, body in ipairs({
        "for i = 1, 1e9 do print(i) end\n",                     -- the script prints
        "for i = 1, 8 do farm.submit(function() for k = 1, 1e7 do print(k) end end) end\n",  -- its jobs do
      }) do
        local out = H.tmp("", ".pids")
        local script = H.tmp(prelude .. body)
        local r = H.sh(("%s run %s %s | head -1"):format(H.quote(H.farm), H.quote(script), H.quote(out)), 60)
        assert.are.equal(0, r.code, r.err)
        assert.are.equal("1\n", r.out)
        local pids = pids_in(out)
        assert.is_true(#pids >= 2, "the script wrote its pids")
        assert.is_true(H.wait_gone(pids, 10), "client or workers still running")
      end
    end)

    it("after Ctrl-C while the script itself computes", function()
      local pids, log = started("while true do end\n")
      os.execute("sleep 0.2; kill -INT " .. pids[1])
      assert.is_true(H.wait_gone(pids, 10), "client or workers still running")
      assert.is_truthy(H.slurp(log):find("interrupted", 1, true), H.slurp(log))
    end)

    it("in plain lua5.4, when the state closes at the end of the script", function()
      local out = H.tmp("", ".pids")
      local script = H.tmp("local farm = require 'farm'\n" .. prelude .. "print(farm.map(function(x) return x + 1 end, {1, 2})[2])\n")
      local r = H.sh(("lua5.4 %s %s"):format(H.quote(script), H.quote(out)))
      assert.are.equal(0, r.code, r.err)
      assert.are.equal("3\n", r.out)
      local pids = pids_in(out)
      assert.is_true(#pids >= 2)
      assert.is_true(H.wait_gone(pids, 10))
    end)

    it("in plain lua5.4, after SIGKILL of the interpreter", function()
      local out = H.tmp("", ".pids")
      local script = H.tmp("local farm = require 'farm'\n" .. prelude .. "while true do end\n")
      os.execute(("lua5.4 %s %s >/dev/null 2>&1 &"):format(H.quote(script), H.quote(out)))
      local pids
      for _ = 1, 400 do
        pids = pids_in(out)
        if #pids >= 2 then break end
        os.execute("sleep 0.05")
      end
      assert.is_true(#pids >= 2)
      os.execute("kill -KILL " .. pids[1])
      assert.is_true(H.wait_gone(pids, 10))
    end)

    it("sweeps up the socket directory of a client killed while starting", function()
      local dead = H.sh("sh -c 'echo $$'").out:match("%d+")
      local dir = "/tmp/farm-" .. dead .. "-test00"
      os.execute("mkdir -p " .. dir .. " && touch " .. dir .. "/w0.1")
      local r = H.run_script("farm.workers()")
      assert.are.equal(0, r.code, r.err)
      assert.is_nil(io.open(dir .. "/w0.1"))
      assert.are.equal("", H.sh("ls -d " .. dir .. " 2>/dev/null").out)
    end)

    it("after os.exit in the script, leaving no socket directory", function()
      -- a TMPDIR of its own: /tmp's farm-* come and go with whatever else runs
      local tmp = H.sh("mktemp -d /tmp/farm-exit-XXXXXX").out:gsub("%s+$", "")
      local out = H.tmp("", ".pids")
      local r = H.run_script(prelude .. "os.exit(3)", H.quote(out), nil, "TMPDIR=" .. H.quote(tmp))
      assert.are.equal(3, r.code)
      assert.is_true(H.wait_gone(pids_in(out), 10))
      local left = H.sh("ls -A " .. H.quote(tmp)).out
      os.execute("rm -rf " .. H.quote(tmp))
      assert.are.equal("", left, "left in TMPDIR: " .. left)
    end)
  end)
end)
