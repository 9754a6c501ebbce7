-- helper.lua -- what the integration specs share: running the real farm
-- executable on a script, and watching processes by pid.
local H = {}

H.build = os.getenv("FARM_BUILD") or "build"
H.farm = H.build .. "/farm"

local function slurp(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("a")           -- (nil for a directory: "" as for a missing file)
  f:close()
  return s or ""
end
H.slurp = slurp

function H.write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

--- a temporary file holding text; removed by H.cleanup()
local made = {}
function H.tmp(text, suffix)
  local base = os.tmpname()
  local path = base .. (suffix or ".lua")
  made[#made + 1] = base
  made[#made + 1] = path
  return H.write(path, text or "")
end

function H.cleanup()
  for _, p in ipairs(made) do os.remove(p) end
  made = {}
end

local function quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
H.quote = quote

--- Run a shell command line with a time bound; returns { code =, out =, err = }.
function H.sh(cmdline, timeout)
  local out, err = os.tmpname(), os.tmpname()
  local ok, how, code = os.execute(("timeout -k 3 %d sh -c %s >%s 2>%s </dev/null")
    :format(timeout or 120, quote(cmdline), out, err))
  local r = { out = slurp(out), err = slurp(err), code = code, ok = ok, how = how }
  os.remove(out)
  os.remove(err)
  return r
end

--- this process's pid (for names and ports of its own)
H.pid = assert(tonumber(slurp("/proc/self/stat"):match("^(%d+)")))

--- path made absolute against the current directory
function H.abs(path)
  if path:sub(1, 1) == "/" then return path end
  local p = io.popen("pwd")
  local dir = p:read("l")
  p:close()
  return dir .. "/" .. path
end

--- a system tool's command line, run without the ASan runtime that `make asan`
--- preloads into every process (uninstrumented tools report their own leaks, and
--- some hang); farm's own executables do not need it
function H.tool(cmdline) return "env -u LD_PRELOAD " .. cmdline end

--- pids of the `farm node --launched` processes of the farm executable at path
--- farm (nodes started over SSH or srun for a run); the [n] keeps the pattern
--- from matching the shell that runs pgrep
function H.launched_nodes(farm)
  local p = io.popen(H.tool("pgrep -f -- " .. quote(farm .. " [n]ode --launched")) .. " 2>/dev/null")
  local pids = {}
  for l in p:lines() do pids[#pids + 1] = tonumber(l) end
  p:close()
  return pids
end

--- start a shell command line in the background (output dropped); its pid
function H.bg(cmdline)
  return tonumber(H.sh(cmdline .. " >/dev/null 2>&1 & echo $!").out)
end

--- farm ARGS (a string, already quoted as the shell needs)
function H.farm_cmd(args, timeout, env)
  return H.sh((env or "") .. " " .. quote(H.farm) .. " " .. args, timeout)
end

--- farm run on a script given as text; extra is appended to the command line
function H.run_script(text, extra, timeout, env)
  local path = H.tmp(text)
  local r = H.farm_cmd("run " .. quote(path) .. " " .. (extra or ""), timeout, env)
  r.script = path
  return r
end

function H.sleep(s) os.execute("sleep " .. s) end

--- tell scripts/run-test that a test which must run long (over its 60 s
--- without a test ending) is alive: a TAP comment, `# still running: what`
function H.still_running(what)
  io.stdout:write("# still running: ", what, "\n")
  io.stdout:flush()
end

--- poll f() until it returns a true value (returned), or f()'s last answer after
--- about seconds (default 15)
function H.wait_for(f, seconds)
  local deadline = os.time() + (seconds or 15) + 1
  repeat
    local v = f()
    if v then return v end
    H.sleep(0.05)
  until os.time() > deadline
  return f()
end

function H.alive(pid)
  -- a zombie is dead for our purposes: it runs nothing
  local stat = slurp("/proc/" .. pid .. "/stat")
  if stat == "" then return false end
  local state = stat:match("^%d+ %b() (%a)")
  return state ~= "Z" and state ~= "X"
end

--- true once none of pids is alive, false if some still are after seconds
function H.wait_gone(pids, seconds)
  local deadline = os.time() + (seconds or 10)
  repeat
    local any = false
    for _, pid in ipairs(pids) do if H.alive(pid) then any = true end end
    if not any then return true end
    os.execute("sleep 0.05")
  until os.time() > deadline
  return false
end

--- number of lines in s
function H.lines(s)
  local n = 0
  for _ in s:gmatch("[^\n]+") do n = n + 1 end
  return n
end

--- A bed for standing nodes: a scratch directory with a farm key, and `farm
--- node`s on 127.0.0.1 started in it and stopped by pid. In a describe:
---   local bed = H.node_bed("placement", 26000)
---   before_each(bed.setup); after_each(bed.teardown)
---   local pid = bed.start("extra args", "ENV=1 ")     -- waits until it listens
--- bed.dir, bed.key, bed.port, bed.log name what the tests need. bed.start(extra,
--- env, port) starts one on another port (its log: bed.dir/node-PORT.log); a
--- node started again on a port waits for its own "listening on".
function H.node_bed(name, base)
  local b = { started = {} }
  function b.setup()
    b.dir = H.sh("mktemp -d /tmp/farm-" .. name .. "-XXXXXX").out:gsub("%s+$", "")
    b.key, b.log = b.dir .. "/key", b.dir .. "/node.log"
    b.port = base + (H.pid * 7) % 20000
    b.started = {}
    assert(H.farm_cmd("keygen " .. quote(b.key)).code == 0, "farm keygen failed")
  end
  function b.teardown()
    for i = #b.started, 1, -1 do os.execute("kill " .. b.started[i] .. " 2>/dev/null") end
    assert(H.wait_gone(b.started, 15), "something the test started still runs")
    os.execute("rm -rf " .. quote(b.dir))
  end
  local function listening(log)
    local _, n = H.slurp(log):gsub("listening on", "")
    return n
  end
  function b.start(extra, env, port)
    port = port or b.port
    local log = port == b.port and b.log or ("%s/node-%d.log"):format(b.dir, port)
    local before = listening(log)
    local pid = H.bg(("%sexec %s node --listen tcp://127.0.0.1:%d --key-file %s --log-file %s -w 2 %s")
      :format(env or "", quote(H.farm), port, quote(b.key), quote(log), extra or ""))
    b.started[#b.started + 1] = pid
    assert(H.wait_for(function() return listening(log) > before end, 20),
      "the node did not start: " .. H.slurp(log))
    return pid
  end
  return b
end

return H
