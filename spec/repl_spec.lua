-- repl_spec.lua -- `farm repl` as a user types at it: a real terminal (tmux),
-- keys sent, the screen read back; and the same statements through a pipe.
-- Nothing here asserts a time: every wait polls the screen, with a bound.
local H = require "helper"

local made_dirs, sessions = {}, 0
local socket                     -- the tmux server's, in a directory of its own

local function tmpdir()
  local base = os.tmpname()
  os.remove(base)
  assert(os.execute("mkdir -p " .. H.quote(base)))
  made_dirs[#made_dirs + 1] = base
  return base
end

local function tmux(args)
  socket = socket or tmpdir() .. "/tmux"
  -- the tmux server is uninstrumented: keep the ASan runtime out of it (the
  -- farm executable under test links its own)
  return H.sh("env -u LD_PRELOAD tmux -S " .. H.quote(socket) .. " " .. args, 20)
end

local function sleep(s) os.execute("sleep " .. s) end

-- A terminal running farm repl. opts: args (farm repl's), home, history
-- (FARM_HISTORY; nil: not set), env (more NAME=value words for env), no_prompt
-- (do not wait for the first prompt). When farm exits, the pane says "[exited N]".
local Term = {}
Term.__index = Term

local function start(opts)
  opts = opts or {}
  sessions = sessions + 1
  local self = setmetatable({ name = "repl" .. sessions, home = opts.home or tmpdir() }, Term)
  local env = { "env" }
  if not opts.history then env[#env + 1] = "-u FARM_HISTORY" end
  env[#env + 1] = "HOME=" .. H.quote(self.home)
  if opts.history then env[#env + 1] = "FARM_HISTORY=" .. H.quote(opts.history) end
  if opts.env then env[#env + 1] = opts.env end
  if os.getenv("FARM_EXE") then env[#env + 1] = "FARM_EXE=" .. H.quote(os.getenv("FARM_EXE")) end
  local cmd = ("%s %s repl %s; echo \"[exited $?]\"; sleep 600")
    :format(table.concat(env, " "), H.quote(H.farm), opts.args or "-n 2")
  local r = tmux(("new-session -d -s %s -x 200 -y 50 %s"):format(self.name, H.quote(cmd)))
  assert(r.code == 0, "tmux: " .. r.err)
  if not opts.no_prompt then self:wait_line("^farm>%s*$", "the first prompt") end
  return self
end

--- the whole screen and its history, as text
function Term:screen()
  return tmux(("capture-pane -p -S - -E - -t %s"):format(self.name)).out
end

function Term:lines()
  local t = {}
  for l in (self:screen() .. "\n"):gmatch("(.-)\n") do t[#t + 1] = l:gsub("%s+$", "") end
  while #t > 0 and t[#t] == "" do t[#t] = nil end
  return t
end

function Term:last() local t = self:lines(); return t[#t] or "" end

--- wait until test(lines) is true (at most 30 s); fails with the screen
function Term:wait(test, what)
  for _ = 1, 300 do
    local lines = self:lines()
    if test(lines) then return lines end
    sleep(0.1)
  end
  error(("timed out waiting for %s; the screen:\n%s"):format(what, self:screen()), 2)
end

function Term:wait_line(pattern, what)
  return self:wait(function(lines)
    for _, l in ipairs(lines) do if l:find(pattern) then return true end end
  end, what or ("a line like " .. pattern))
end

function Term:keys(...)
  local args = {}
  for i = 1, select("#", ...) do args[i] = H.quote((select(i, ...))) end
  local r = tmux(("send-keys -t %s %s"):format(self.name, table.concat(args, " ")))
  assert(r.code == 0, r.err)
end

function Term:type(text)        -- literal text, no Enter
  local r = tmux(("send-keys -t %s -l %s"):format(self.name, H.quote(text)))
  assert(r.code == 0, r.err)
end

local function is_prompt(l) return l == "farm>" or l == "..." or l == "  ..." end
local function count_prompts(lines)
  local n = 0
  for _, l in ipairs(lines) do
    if l:find("^farm>") or l:find("^  %.%.%.") then n = n + 1 end
  end
  return n
end

--- type a line, Enter, and wait for the prompt after it; returns the screen's lines
function Term:send(line)
  local before = count_prompts(self:lines())
  self:type(line)
  self:keys("Enter")
  return self:wait(function(lines)
    return count_prompts(lines) > before and is_prompt(lines[#lines])
  end, "the prompt after " .. line)
end

--- Enter, and wait for the prompt after it
function Term:enter()
  local before = count_prompts(self:lines())
  self:keys("Enter")
  return self:wait(function(lines)
    return count_prompts(lines) > before and is_prompt(lines[#lines])
  end, "the prompt after Enter")
end

--- the output of the last line sent: what follows its echo, up to the prompt
function Term:output()
  local lines = self:lines()
  local out = {}
  for i = #lines - 1, 1, -1 do
    if lines[i]:find("^farm>") or lines[i]:find("^  %.%.%.") then break end
    table.insert(out, 1, lines[i])
  end
  return table.concat(out, "\n")
end

function Term:stop()
  tmux("kill-session -t " .. self.name)
end

local function cleanup()
  if socket then tmux("kill-server") end
  socket = nil
  for _, d in ipairs(made_dirs) do os.execute("rm -rf " .. H.quote(d)) end
  made_dirs = {}
  H.cleanup()
end

-- A job that runs until the test lets it go: it writes `started`, then waits
-- for `go` to exist. Returns the Lua source of the function and the two paths.
local function gated(result)
  local dir = tmpdir()
  local started, go = dir .. "/started", dir .. "/go"
  local src = ("function() io.open(%q, 'w'):close() while not io.open(%q) do "
    .. "os.execute('sleep 0.05') end return %q end"):format(started, go, result)
  return src, started, go
end

local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

local function wait_file(path)
  for _ = 1, 300 do
    if exists(path) then return true end
    sleep(0.1)
  end
  error("timed out waiting for " .. path)
end

local function touch(path) H.write(path, "") end

-- The statements of the pipe test, and what they print (stdout, then stderr
-- where an error is).
local STATEMENTS = {
  "1 + 41",
  "function sq(x) return x * x end",
  "f = farm.submit(sq, 12)",
  "f()",
  "function add(a, b)",
  "  local s = a + b",
  "  return s",
  "end",
  "farm.submit(add, 1000, 234)()",
  "=f:status()",
  "{1, 'two', x = {y = true}}",
  "farm.submit(function() error('kaboom') end)()",
  "2 + 2",
  "farm.map(function(x) return x + 1 end, {1, 2, 3})",
}

describe("farm repl", function()
  after_each(cleanup)

  describe("at a terminal", function()
    it("prints an expression, and runs a function typed at the prompt on a worker", function()
      local t = start()
      t:send("1 + 41")
      assert.are.equal("42", t:output())
      t:send("function sq(x) return x * x end")
      assert.are.equal("", t:output())
      t:send("f = farm.submit(sq, 12)")
      t:send("f()")
      assert.are.equal("144", t:output())
      t:send("f")
      assert.is_truthy(t:output():find("^<future %d+ done on local:%d+>$"), t:output())
      t:send("=f.worker ~= nil")
      assert.are.equal("true", t:output())
      t:stop()
    end)

    it("continues a chunk while it is incomplete: a multi-line function ships", function()
      local t = start()
      t:send("function add(a, b)")
      assert.are.equal("  ...", t:last())
      t:send("  local s = a + b")
      t:send("  return s")
      t:send("end")
      assert.are.equal("farm>", t:last())
      t:send("farm.submit(add, 1000, 234)()")
      assert.are.equal("1234", t:output())
      t:send("{1, 'two', x = {y = true}}")
      assert.are.equal('{1, "two", x = {y = true}}', t:output())
      t:stop()
    end)

    it("prints an error with the remote traceback, and the prompt comes back", function()
      local t = start()
      t:send("farm.submit(function() error('kaboom') end)()")
      local out = t:output()
      assert.is_truthy(out:find("stdin:1:1: kaboom", 1, true), out)
      assert.is_truthy(out:find("remote stack traceback:", 1, true), out)
      assert.is_truthy(out:find("ran on local:%d"), out)
      assert.are.equal("farm>", t:last())
      t:send("2 + 3")
      assert.are.equal("5", t:output())
      t:stop()
    end)

    it("recalls history after a restart (Up), from ~/.farm_history", function()
      local home = tmpdir()
      local t = start { home = home }
      t:send("histmark = 4242")
      t:keys("C-d")
      t:wait_line("^%[exited 0%]", "the REPL to exit")
      t:stop()
      assert.is_truthy(H.slurp(home .. "/.farm_history"):find("histmark", 1, true))
      t = start { home = home }
      t:keys("Up")
      t:wait(function(lines) return lines[#lines] == "farm> histmark = 4242" end, "the recalled line")
      t:enter()
      t:send("=histmark")
      assert.are.equal("4242", t:output())
      t:stop()
    end)

    it("keeps no history when FARM_HISTORY is empty", function()
      local home = tmpdir()
      local t = start { home = home, history = "" }
      t:send("nohist = 1")
      t:keys("C-d")
      t:wait_line("^%[exited 0%]", "the REPL to exit")
      t:stop()
      assert.is_false(exists(home .. "/.farm_history"))
    end)

    it("completes globals and fields with Tab", function()
      local t = start()
      t:type("farm.subm")
      t:keys("Tab")
      t:wait(function(lines) return lines[#lines] == "farm> farm.submit" end, "farm.submit completed")
      t:type("_w")
      t:keys("Tab")
      t:wait(function(lines) return lines[#lines] == "farm> farm.submit_with" end, "farm.submit_with")
      t:keys("C-u")
      t:send("unique_thing_xyz = 7")
      t:type("=unique_th")
      t:keys("Tab")
      t:wait(function(lines) return lines[#lines] == "farm> =unique_thing_xyz" end, "a global completed")
      t:enter()
      assert.are.equal("7", t:output())
      t:stop()
    end)

    it("Ctrl-C at the prompt clears the line, and a chunk being continued", function()
      local t = start()
      t:type("this is not lua")
      t:keys("C-c")
      t:wait(function(lines) return lines[#lines] == "farm>" end, "a fresh prompt")
      t:send("function broken(")
      assert.are.equal("  ...", t:last())
      t:keys("C-c")
      t:wait(function(lines) return lines[#lines] == "farm>" end, "a fresh prompt")
      t:send("2 + 2")
      assert.are.equal("4", t:output())
      t:stop()
    end)

    it("Ctrl-C during a wait stops the wait; the REPL and the job go on", function()
      local src, started, go = gated("slow done")
      local t = start()
      t:send("slow = farm.submit(" .. src .. ")")
      wait_file(started)
      t:type("print('waiting') print(slow())")
      t:keys("Enter")
      t:wait_line("^waiting$", "the wait to begin")
      t:keys("C-c")
      t:wait_line("^interrupted", "the interruption")
      t:wait(function(lines) return lines[#lines] == "farm>" end, "the prompt")
      t:send("=slow:status()")
      assert.are.equal('"running"', t:output())
      touch(go)
      t:send("slow()")
      assert.are.equal('"slow done"', t:output())
      t:stop()
    end)

    it("lists farm.map's jobs a Ctrl-C left running in :jobs, and :cancel all stops them", function()
      local dir = tmpdir()
      local go = dir .. "/go"
      local src = ("function(x) io.open(%q .. x, 'w'):close() while not io.open(%q) do "
        .. "os.execute('sleep 0.05') end return x end"):format(dir .. "/started", go)
      local t = start()
      t:type("r = farm.map(" .. src .. ", {1, 2})")
      t:keys("Enter")
      wait_file(dir .. "/started1")
      wait_file(dir .. "/started2")
      t:keys("C-c")
      t:wait_line("^interrupted %(unfinished jobs go on: 2; :jobs lists them%)", "the interruption")
      t:wait(function(lines) return lines[#lines] == "farm>" end, "the prompt")
      t:send(":jobs")
      local out = t:output()
      assert.is_truthy(out:find("\n%s*1%s+running%s"), out)
      assert.is_truthy(out:find("\n%s*2%s+running%s"), out)
      t:send(":cancel all")
      assert.are.equal("2 jobs cancelled", t:output())
      t:send(":jobs")
      assert.are.equal("no unfinished jobs", t:output())
      t:send("=farm.stats().outstanding")
      assert.are.equal("0", t:output())
      -- the pool goes on: the stopped jobs' workers were replaced
      touch(go)
      t:send("farm.map(function(x) return x * 2 end, {1, 2, 3})")
      assert.are.equal("{2, 4, 6}", t:output())
      t:stop()
    end)

    it("completes a value's methods with Tab, and the ( that follows", function()
      local t = start()
      t:send("f = farm.submit(function() return 5 end)")
      t:type("f:res")
      t:keys("Tab")
      t:wait(function(lines) return lines[#lines] == "farm> f:result(" end, "f:result( completed")
      t:type(")")
      t:enter()
      assert.are.equal("5", t:output())
      t:send("s = 'abc'")
      t:type("s:up")
      t:keys("Tab")
      t:wait(function(lines) return lines[#lines] == "farm> s:upper(" end, "s:upper( completed")
      t:keys("C-u")
      t:type("farm.ma")
      t:keys("Tab")
      t:wait(function(lines) return lines[#lines] == "farm> farm.map" end, "farm.map completed")
      t:type("_u")
      t:keys("Tab")
      t:wait(function(lines) return lines[#lines] == "farm> farm.map_unordered" end, "farm.map_unordered")
      t:stop()
    end)

    it(":jobs lists the unfinished jobs, :stats the pool's statistics, :cancel stops one", function()
      local src, started, go = gated("gated")
      local t = start()
      t:send("g = farm.submit(" .. src .. ")")
      wait_file(started)
      t:send(":jobs")
      local out = t:output()
      assert.is_truthy(out:find("\n%s*1%s+running%s"), out)
      t:send(":stats")
      out = t:output()
      assert.is_truthy(out:find("Job execution statistics:", 1, true), out)
      assert.is_truthy(out:find("1 jobs submitted, 1 unfinished", 1, true), out)
      t:send("h = farm.submit(" .. (gated("other")) .. ")")
      t:send(":cancel 2")
      assert.is_truthy(t:output():find("^job 2 "), t:output())
      t:send("=h:status()")
      assert.are.equal('"cancelled"', t:output())
      touch(go)
      t:send("g()")
      assert.are.equal('"gated"', t:output())
      t:send(":jobs")
      assert.are.equal("no unfinished jobs", t:output())
      t:send(":nodes")
      assert.is_truthy(t:output():find("^no nodes"), t:output())
      t:stop()
    end)

    it(":workers N resizes the running pool, while a job is unfinished too", function()
      local src, started, go = gated("w")
      local t = start()
      t:send("g = farm.submit(" .. src .. ")")
      wait_file(started)
      t:send(":workers 3")
      assert.are.equal("3 workers", t:output())
      t:send("=farm.workers(), #farm._pids()")
      assert.is_truthy(t:output():find("^3%s+3$"), t:output())
      t:send(":workers 1")
      assert.are.equal("1 worker", t:output())
      touch(go)
      t:send("g()")
      assert.are.equal('"w"', t:output())
      t:send("=farm.workers()")
      assert.are.equal("1", t:output())
      t:send("farm.submit(function(x) return x * 2 end, 21)()")
      assert.are.equal("42", t:output())
      t:stop()
    end)

    it("shows what a job prints while the prompt waits, above the line being typed", function()
      local t = start()
      t:send("farm.submit(function() os.execute('sleep 0.3') print('from the job') end)")
      t:type("print('abc")
      t:wait_line("^from the job$", "the job's output")
      t:wait(function(lines) return lines[#lines] == "farm> print('abc" end, "the line drawn again")
      t:type("')")
      t:enter()
      assert.are.equal("abc", t:output())
      t:stop()
    end)

    it("Ctrl-D quits and leaves no process", function()
      local t = start()
      t:send("=io.open('/proc/self/stat'):read('n')")
      local pid = tonumber(t:output())
      assert.is_truthy(pid, t:output())
      t:send("=table.concat(farm._pids(), ' ')")
      local pids = { pid }
      for p in t:output():gmatch("%d+") do pids[#pids + 1] = tonumber(p) end
      assert.are.equal(3, #pids, t:output())
      for _, p in ipairs(pids) do assert.is_true(H.alive(p)) end
      t:keys("C-d")
      t:wait_line("^%[exited 0%]", "the REPL to exit")
      assert.is_true(H.wait_gone(pids, 10), "the REPL or a worker outlived Ctrl-D")
      t:stop()
    end)

    it("says so when libedit cannot be loaded, and reads lines plainly", function()
      local dir = tmpdir()
      H.write(dir .. "/libedit.so.2", "")   -- no library: found first, dlopen fails
      local t = start({ env = "LD_LIBRARY_PATH=" .. H.quote(dir), no_prompt = true })
      t:wait_line("^farm: cannot load libedit%.so%.2 %(apt%-get install libedit2%): .*; reading lines plainly$",
        "the line that says so")
      t:type("print(6 * 7)")
      t:keys("Enter")
      t:wait_line("^42$", "the statement's output")
      t:keys("C-d")
      t:wait_line("^%[exited 0%]", "the REPL to exit")
      t:stop()
    end)

    it("gives the same output for the same statements as a pipe does", function()
      local t = start()
      local got = {}
      for _, s in ipairs(STATEMENTS) do
        t:send(s)
        local out = t:output()
        if out ~= "" then got[#got + 1] = out end
      end
      t:stop()
      local r = H.sh(("%s repl -n 2 <%s 2>&1"):format(H.quote(H.farm),
        H.quote(H.tmp(table.concat(STATEMENTS, "\n") .. "\n", ".txt"))), 60)
      -- where a job ran may differ from one run to the next, and a terminal
      -- shows a tab as spaces
      local function same(s)
        return (s:gsub("local:%d+", "local:N"):gsub("pid %d+", "pid N"):gsub("[ \t]+", " "))
      end
      assert.are.equal(same(table.concat(got, "\n") .. "\n"), same(r.out))
    end)
  end)

  describe("through a pipe", function()
    it("reads statements with no prompt and prints what they give", function()
      local input = H.tmp(table.concat(STATEMENTS, "\n") .. "\n", ".txt")
      local r = H.sh(("%s repl -n 2 <%s"):format(H.quote(H.farm), H.quote(input)), 60)
      assert.are.equal(table.concat({
        "42", "144", "1234", '"done"', '{1, "two", x = {y = true}}', "4", "{2, 3, 4}", "" }, "\n"),
        r.out)
      assert.is_truthy(r.err:find("^stdin:9:1: kaboom\n%(job %d+ ran on local:%d+ %(pid %d+%)%)\n"
        .. "remote stack traceback:"), r.err)
      assert.is_falsy(r.err:find("\27", 1, true), "colour through a pipe")
      assert.are.equal(1, r.code, "a statement failed: the exit status says so")
    end)

    it("exits 0 when every statement ran, and stops at :quit", function()
      local r = H.sh(("printf '%%s\\n' 'x = 1' ':quit' 'print(\"after\")' | %s repl -n 1")
        :format(H.quote(H.farm)), 60)
      assert.are.equal(0, r.code, r.err)
      assert.are.equal("", r.out)
    end)

    it("says so when the input ends inside a chunk", function()
      local r = H.sh(("printf 'function f()\\n  return 1\\n' | %s repl -n 1"):format(H.quote(H.farm)), 60)
      assert.are.equal(1, r.code)
      assert.is_truthy(r.err:find("'end' expected", 1, true), r.err)
    end)

    it("refuses a script and unknown options in one line", function()
      local r = H.farm_cmd("repl x.lua")
      assert.are.equal(2, r.code)
      assert.are.equal(1, H.lines(r.err), r.err)
      assert.is_truthy(r.err:find("farm run SCRIPT.lua", 1, true), r.err)
      r = H.farm_cmd("repl --frobnicate")
      assert.are.equal(2, r.code)
      assert.is_truthy(r.err:find("unknown option '--frobnicate'", 1, true), r.err)
    end)
  end)
end)
