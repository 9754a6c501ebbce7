-- exec_spec.lua -- farm.exec: programs as jobs (dispy's executable computations),
-- through `farm run`, on real workers: what the program prints comes back whole,
-- its status and signal, its input, what it cannot inherit, and that running
-- many leaves nothing behind in the worker.
local H = require "helper"

local function run(text, args, timeout)
  local r = H.run_script(text, args or "-n 2", timeout or 120)
  assert.are.equal(0, r.code, r.err)
  return r
end

-- a script that should fail at once with one line on stderr
local function refused(text)
  local r = H.run_script(text, "-n 1", 60)
  assert.are.equal(1, r.code, r.out .. r.err)
  assert.are.equal(1, H.lines(r.err), r.err)
  return r.err
end

describe("farm.exec", function()
  after_each(H.cleanup)

  it("gives what sha1sum prints, as it prints it run directly", function()
    local data = H.tmp(("farm exec \0 binary\255 data\n"):rep(1000), ".bin")
    local p = io.popen(H.tool("sha1sum " .. H.quote(data)))
    local want = p:read("a")
    p:close()
    local r = run(([[
      local r = farm.exec{"sha1sum", %q}:result()
      io.write(r.status, "|", r.stdout, "|", r.stderr, "|", tostring(r.signal))
    ]]):format(data))
    assert.are.equal("0|" .. want .. "||nil", r.out)
  end)

  it("gives a non-zero status and both streams exactly, as a result, not an error", function()
    local r = run([[
      local r = farm.exec{"sh", "-c", "echo out; echo err >&2; printf 'no newline' >&2; exit 3"}:result()
      print(("%d %q %q %s"):format(r.status, r.stdout, r.stderr, tostring(r.signal)))
    ]])
    assert.are.equal('3 "out\\\n" "err\\\nno newline" nil\n', r.out)
  end)

  it("names the signal that killed the program, with status 128 + its number", function()
    local r = run([[
      local r = farm.exec{"sh", "-c", "echo before; kill -9 $$; echo after"}:result()
      print(r.status, r.signal, r.stdout)
      local t = farm.exec{"sh", "-c", "kill -TERM $$"}:result()
      print(t.status, t.signal)
    ]])
    assert.are.equal("137\tSIGKILL\tbefore\n\n143\tSIGTERM\n", r.out)
  end)

  it("feeds input to the program's standard input, else /dev/null", function()
    local r = run([[
      local input = "line one\nbytes \0\1\2\255\n"
      local r = farm.exec{"cat", input = input}:result()
      print(r.stdout == input, r.status)
      -- a large input while the program writes as much back: no deadlock
      local big = ("0123456789abcdef"):rep(200000)          -- 3.2 MB
      local c = farm.exec{"cat", input = big}:result()
      print(c.stdout == big, #c.stdout)
      -- a program that reads none of its input is no error
      print(farm.exec{"true", input = big}:result().status)
      -- no input: standard input is /dev/null, read at once to its end
      local n = farm.exec{"wc", "-c"}:result()
      print((n.stdout:gsub("%s", "")))
      print(farm.exec{"cat", input = ""}:result().stdout == "")
    ]])
    assert.are.equal("true\t0\ntrue\t3200000\n0\n0\ntrue\n", r.out)
  end)

  it("brings 5 MB on stdout and 5 MB on stderr, written at once, whole", function()
    local r = run([[
      local r = farm.exec{"sh", "-c",
        "head -c 5000000 /dev/zero | tr '\\0' a & head -c 5000000 /dev/zero | tr '\\0' b >&2; wait"}:result()
      print(r.status, #r.stdout, #r.stderr, r.stdout:find("[^a]") == nil, r.stderr:find("[^b]") == nil,
            r.truncated == nil)
    ]])
    assert.are.equal("0\t5000000\t5000000\ttrue\ttrue\ttrue\n", r.out)
  end)

  it("cuts what passes max_output, with a note, and lets the program run to its end", function()
    local r = run([[
      local r = farm.exec{"sh", "-c", "head -c 1000 /dev/zero | tr '\\0' x; echo done >&2; exit 4",
                          max_output = 100}:result()
      print(r.status, r.stdout:sub(1, 100) == ("x"):rep(100), r.truncated.stdout, r.truncated.stderr)
      print(r.stdout:sub(101))
      print(r.stderr)
    ]])
    assert.are.equal("4\ttrue\t900\tnil\n\n[farm.exec: stdout cut at 100 bytes: 900 more bytes were dropped]\n\ndone\n\n",
                     r.out)
  end)

  it("fails the future when the program cannot be started, naming it", function()
    local noexec = H.tmp("#!/bin/sh\necho hi\n", ".sh")   -- not executable
    local r = run(([[
      local f = farm.exec{"nosuchprog-farm-exec", "x"}
      local ok, err = pcall(f.result, f)
      print(ok, err.message)
      local g = farm.exec{%q}
      ok, err = pcall(g.result, g)
      print(ok, err.message)
      local h = farm.exec{"/nonexistent/dir/prog"}
      ok, err = pcall(h.result, h)
      print(ok, err.message)
    ]]):format(noexec))
    assert.are.equal("false\tfarm.exec: cannot run 'nosuchprog-farm-exec': not found on PATH (is it installed on this host?)\n"
      .. "false\tfarm.exec: cannot run '" .. noexec .. "': permission denied\n"
      .. "false\tfarm.exec: cannot run '/nonexistent/dir/prog': no such file\n", r.out)
  end)

  it("ends the script with the error when nobody catches it", function()
    local r = H.run_script([[ print(farm.exec{"nosuchprog-farm-exec"}:result().status) ]], "-n 1", 60)
    assert.are.equal(1, r.code, r.err)
    assert.is_truthy(r.err:find("farm.exec: cannot run 'nosuchprog-farm-exec': not found on PATH", 1, true), r.err)
  end)

  it("refuses a bad command or option with one line, in the client", function()
    assert.is_truthy(refused('farm.exec("sha1sum f.bin")')
      :find('farm.exec: argument #1 must be a table such as {"sha1sum", "f.bin"} (got string)', 1, true))
    assert.is_truthy(refused('farm.exec{}'):find("farm.exec: the command is empty", 1, true))
    assert.is_truthy(refused('farm.exec{"sh", {}}')
      :find("farm.exec: item 2 of the command must be a string (got table)", 1, true))
    assert.is_truthy(refused('farm.exec{"echo", 3}')
      :find("farm.exec: item 2 of the command must be a string (got number)", 1, true))
    assert.is_truthy(refused('farm.exec{""}'):find("farm.exec: the program's name", 1, true))
    assert.is_truthy(refused('farm.exec{"cat", input = 5}')
      :find("farm.exec: input must be a string (got number)", 1, true))
    assert.is_truthy(refused('farm.exec{"cat", max_output = -1}')
      :find("farm.exec: max_output must be a number of bytes", 1, true))
    assert.is_truthy(refused('farm.exec{"cat", timeout = 0}')
      :find("farm.exec: timeout must be a positive number of seconds", 1, true))
    assert.is_truthy(refused('farm.exec{"cat", stdin = "x"}')
      :find("farm.exec: unknown option 'stdin'", 1, true))
    assert.is_truthy(refused('farm.exec{"cat", [3] = "x"}')
      :find("farm.exec: the command must be a list without holes", 1, true))
    -- and the message points at the script's line
    assert.is_truthy(refused('\n\nfarm.exec(nil)'):find(":3: farm.exec: argument #1", 1, true))
  end)

  it("takes submit_with's options, and runs from inside a job too", function()
    local r = run([[
      local r = farm.exec{"sh", "-c", "echo $0 $1", "a b", "c'd", timeout = 60, retries = 1}:result()
      io.write(r.stdout)
      local nested = farm.submit(function()
        return farm.exec{"echo", "from", "a job"}:result().stdout
      end)
      io.write(nested:result())
      local pool = farm.new{ workers = 1 }
      io.write(pool:exec{"echo", "own pool"}:result().stdout)
      pool:close()
    ]])
    assert.are.equal("a b c'd\nfrom a job\nown pool\n", r.out)
  end)

  it("gives the program descriptors 0, 1 and 2 only, default signals, none blocked", function()
    local r = run([[
      local r = farm.exec{"sh", "-c", "ls /proc/self/fd"}:result()
      print((r.stdout:gsub("\n", " ")))
      local s = farm.exec{"grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"}:result()
      io.write(s.stdout)
    ]], "-n 1")
    -- 3 is ls's own reading of /proc/self/fd
    assert.are.equal("0 1 2 3 \nSigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n", r.out)
  end)

  it("leaves no zombie and no descriptor in the worker after 200 programs", function()
    local r = run([[
      local function count(cmd)
        local p = io.popen(cmd)
        local n = 0
        for _ in p:lines() do n = n + 1 end
        p:close()
        return n
      end
      local pid = farm.submit(function()
        local f = io.open("/proc/self/stat")
        local s = f:read("a")
        f:close()
        return tonumber(s:match("^(%d+)"))
      end):result()
      local before = count("ls /proc/" .. pid .. "/fd")
      local fs = {}
      for i = 1, 200 do
        fs[i] = farm.exec{"sh", "-c", "echo $1; echo e >&2; exit $(($1 % 7))", "x", tostring(i),
                          input = i % 2 == 0 and "in" or nil}
      end
      local ok = true
      for i, f in ipairs(fs) do
        local r = f:result()
        ok = ok and r.status == i % 7 and r.stdout == i .. "\n" and r.stderr == "e\n"
      end
      -- a job between: the worker is idle again when we look
      farm.submit(function() return 1 end):result()
      local after = count("ls /proc/" .. pid .. "/fd")
      -- (ps without the ASan runtime that `make asan` preloads: it hangs with it)
      local children = count("env -u LD_PRELOAD ps -o pid= --ppid " .. pid)
      print(ok, before == after, before, after, children)
    ]], "-n 1")
    assert.is_truthy(r.out:match("^true\ttrue\t%d+\t%d+\t0\n$"), r.out)
  end)
end)
