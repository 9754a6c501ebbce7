-- model_spec.lua -- the rest of the seeds' programming model, through `farm run`
-- on real workers: shared constants (SCOOP's shared.setConst), per-worker setup
-- and cleanup (dispy's setup/cleanup), files to and from jobs (dispy's depends and
-- dispy_send_file), and what a finished future says of its job. The same again
-- through a node started over SSH by a real sshd on 127.0.0.1.
local H = require "helper"

local q = H.quote
local abs = H.abs
local FARM = abs(H.farm)

local function run(text, args, env)
  local r = H.run_script(text, args or "-n 2", 120, env)
  return r
end

local function ok(text, args, env)
  local r = run(text, args, env)
  assert.are.equal(0, r.code, r.err)
  return r
end

local function fields(line)
  local t = {}
  for w in line:gmatch("%S+") do t[#t + 1] = w end
  return t
end

-- a directory of its own per test, removed after
local dirs = {}
local function tmpdir()
  local d = os.tmpname()
  os.remove(d)
  assert(os.execute("mkdir -p " .. q(d)))
  dirs[#dirs + 1] = d
  return d
end

local function cleanup_dirs()
  for _, d in ipairs(dirs) do os.execute("rm -rf " .. q(d)) end
  dirs = {}
  H.cleanup()
end

-- 10 MB of strings: 10,000 of 1,000 bytes, each different
local BIG = [[
local big = {}
for i = 1, 10000 do big[i] = string.rep(string.char(65 + i % 26), 996) .. ("%04d"):format(i % 10000) end
]]

describe("farm.shared", function()
  after_each(cleanup_dirs)

  it("gives every job, nested ones too, the value; a 10 MB table read by 1,000 jobs crosses each link once", function()
    local r = ok(BIG .. [[
farm.shared.big = big
farm.shared.scale = 3
local fs = {}
for i = 1, 1000 do
  fs[i] = farm.submit(function(i)
    local t = farm.shared.big
    return #t + #t[i % 10000 + 1] * farm.shared.scale
  end, i)
end
local sum = 0
for i = 1, 1000 do sum = sum + fs[i]:result() end
-- a job's own job reads it too
local nested = farm.submit(function()
  return farm.submit(function() return farm.shared.big[7]:sub(-4), farm.shared.scale end):result()
end):result()
print("sum", sum, nested)
for _, w in ipairs(farm.stats().workers) do print("link", w.name, w.jobs, w.bytes_sent) end
]])
    assert.is_truthy(r.out:find("sum\t13000000\t0007\n", 1, true), r.out)
    local links = 0
    for name, jobs, sent in r.out:gmatch("link\t(%S+)\t(%d+)\t(%d+)") do
      links = links + 1
      jobs, sent = tonumber(jobs), tonumber(sent)
      if jobs > 0 then
        -- the value (10 MB) once, plus the jobs themselves (tens of bytes each)
        assert.is_true(sent > 10000000, name .. " got " .. sent .. " bytes")
        assert.is_true(sent < 10500000 + jobs * 400, name .. " got " .. sent .. " bytes for " .. jobs .. " jobs")
      end
    end
    assert.are.equal(2, links, r.out)
  end)

  it("refuses a name set twice, a name never set, a value that cannot travel, and setting it in a job", function()
    local r = run([[
farm.shared.x = 1
print(pcall(function() farm.shared.x = 2 end))
print(pcall(function() return farm.shared.nope end))
print(pcall(function() farm.shared.f = io.stdout end))
print(pcall(function() farm.shared["not a name"] = 1 end))
print(pcall(farm.submit(function() return farm.shared.missing end).result, nil))
]])
    assert.are.equal(0, r.code, r.err)
    local lines = {}
    for l in r.out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.is_truthy(lines[1]:find("farm.shared.x is already set: shared values are constants", 1, true), r.out)
    assert.is_truthy(lines[2]:find("farm.shared.nope is not set", 1, true), r.out)
    assert.is_truthy(lines[3]:find("cannot ship", 1, true), r.out)
    assert.is_truthy(lines[4]:find("a name must be a Lua name", 1, true), r.out)
    local r2 = run([[
farm.shared.x = 1
print(farm.submit(function() return farm.shared.missing end):result())
]])
    assert.are.equal(1, r2.code)
    assert.is_truthy(r2.err:find("farm.shared.missing is not set: set it in the client", 1, true), r2.err)
    local r3 = run([[
farm.shared.x = 1
farm.submit(function() farm.shared.y = 2 end):result()
]])
    assert.are.equal(1, r3.code)
    assert.is_truthy(r3.err:find("shared values are set in the client, not in a job", 1, true), r3.err)
  end)
end)

describe("farm.on_node", function()
  after_each(cleanup_dirs)

  it("runs setup once per worker before its jobs (its globals are theirs) and cleanup when the pool ends", function()
    local d = tmpdir()
    local r = ok(([[
local dir = %q
farm.on_node{
  setup = function(prefix, d)
    PREFIX = prefix
    local f = io.open(d .. "/setup." .. farm.core_pid(), "w") f:write("1") f:close()
  end,
  cleanup = function(prefix, d)
    local f = io.open(d .. "/cleanup." .. farm.core_pid(), "w") f:write(prefix) f:close()
  end,
  args = { "P:", dir },
}
local fs = {}
for i = 1, 40 do fs[i] = farm.submit(function(i) return PREFIX .. i, farm.core_pid() end, i) end
local pids = {}
for i = 1, 40 do
  local s, pid = fs[i]:result()
  assert(s == "P:" .. i, s)
  pids[pid] = true
end
local n = 0 for _ in pairs(pids) do n = n + 1 end
print("workers", n)
print(pcall(farm.on_node, { setup = print }))
]]):gsub("farm%.core_pid%(%)", [[(io.open("/proc/self/stat"):read("n"))]]):format(d))
    local n = tonumber(r.out:match("workers\t(%d+)"))
    assert.is_truthy(n and n >= 1, r.out)
    assert.is_truthy(r.out:find("this pool's setup is already given", 1, true), r.out)
    local setups, cleanups = {}, {}
    local p = io.popen("ls " .. q(d))
    for f in p:lines() do
      local kind, pid = f:match("^(%a+)%.(%d+)$")
      if kind == "setup" then setups[#setups + 1] = pid end
      if kind == "cleanup" then cleanups[#cleanups + 1] = pid; assert.are.equal("P:", H.slurp(d .. "/" .. f)) end
    end
    p:close()
    table.sort(setups)
    table.sort(cleanups)
    assert.are.equal(n, #setups)             -- once in each worker that ran jobs
    assert.are.same(setups, cleanups)         -- and cleanup in each of those
  end)

  it("takes out a worker whose setup fails, with one line naming it; the others run every job", function()
    local d = tmpdir()
    local r = run(([[
farm.on_node{ setup = function(d)
  -- the first worker to get here fails, as a node without its GPU would
  -- (mkdir makes the directory for one of them alone)
  if os.execute("mkdir " .. d .. "/first 2>/dev/null") then error("no GPU on this worker") end
  READY = true
end, args = { %q } }
local fs = {}
for i = 1, 30 do fs[i] = farm.submit(function(i) assert(READY) return i * 2 end, i) end
local s = 0
for i = 1, 30 do s = s + fs[i]:result() end
print("sum", s)
local states = {}
for _, w in ipairs(farm.stats().workers) do states[#states + 1] = w.state end
table.sort(states)
print(table.concat(states, " "))
]]):format(d), "-n 2")
    assert.are.equal(0, r.code, r.err)
    assert.is_truthy(r.out:find("sum\t930\n", 1, true), r.out)
    assert.is_truthy(r.out:find("retired up", 1, true), r.out)
    local n = 0
    for l in r.err:gmatch("[^\n]+") do
      n = n + 1
      assert.is_truthy(l:find("^farm: the setup function of farm.on_node failed on local:%d %(pid %d+%): .*no GPU on this worker; that worker is out of the run$"), l)
    end
    assert.are.equal(1, n, r.err)
  end)

  it("fails the jobs with the setup's error when every worker's setup fails", function()
    local r = run([[
farm.on_node{ setup = function() error("the licence server is down") end }
print(farm.submit(function() return 1 end):result())
]], "-n 1")
    assert.are.equal(1, r.code)
    assert.is_truthy(r.err:find("the licence server is down", 1, true), r.err)
    assert.is_falsy(r.out:find("1"), r.out)
  end)

  it("says a setup cannot wait for jobs, and a worker started again after a failed setup fails again, in words", function()
    local r = run([[
farm.on_node{ setup = function() READY = farm.submit(function() return 42 end):result() end }
print(pcall(function() return farm.submit(function() return READY end):result() end))
]], "-n 1")
    assert.are.equal(0, r.code, r.err)
    assert.is_truthy(r.err:find("the setup and cleanup functions cannot wait for jobs", 1, true), r.err)
    assert.is_truthy(r.out:find("^false\t"), r.out)
    local r2 = run([[
farm.on_node{ setup = function() error("no licence") end }
for round = 1, 2 do
  local ok, e = pcall(function() return farm.submit(function() return 1 end):result(30) end)
  print(round, ok, tostring(e):match("no licence") ~= nil)
  os.execute("sleep 0.3")
  farm.set_workers(2)
end
]], "-n 2")
    assert.are.equal(0, r2.code, r2.err)
    assert.are.equal("1\tfalse\ttrue\n2\tfalse\ttrue\n", r2.out)
  end)

  it("refuses bad specs in one line", function()
    for spec, msg in pairs({
      ["nil"] = "argument #1 must be a table",
      ["{ setup = 1 }"] = "setup must be a function (got number)",
      ["{ args = {} }"] = "give a setup function, a cleanup function, or both",
      ["{ setup = print, when = 1 }"] = "unknown field 'when'",
    }) do
      local r = run("farm.on_node(" .. spec .. ")")
      assert.are.equal(1, r.code, spec)
      assert.is_truthy(r.err:find(msg, 1, true), r.err)
    end
  end)
end)

describe("files to and from jobs", function()
  after_each(cleanup_dirs)

  it("a job reads the files it was given, and the files it sends land under --dest", function()
    local d = tmpdir()
    H.write(d .. "/data.txt", "one\ntwo\nthree\n")
    os.execute("mkdir -p " .. q(d .. "/sub") .. " " .. q(d .. "/out"))
    H.write(d .. "/sub/more.txt", "four\n")
    H.write(d .. "/job.lua", [[
local fs = {}
for i = 1, 5 do
  fs[i] = farm.submit_with({ files = { "data.txt", "sub/more.txt" } }, function(i)
    local n = 0
    for _ in io.lines("data.txt") do n = n + 1 end
    for _ in io.lines("sub/more.txt") do n = n + 1 end
    local name = "result" .. i .. ".txt"
    local f = io.open(name, "w") f:write(("job %d saw %d lines\n"):format(i, n)) f:close()
    farm.send_file(name)
    os.remove(name)
    return n
  end, i)
end
for i = 1, 5 do io.write(fs[i]:result(), " ") end
print()
]])
    local r = H.sh(("cd %s && %s run job.lua -n 2 --dest out"):format(q(d), q(FARM)))
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("4 4 4 4 4 \n", r.out)
    for i = 1, 5 do
      assert.are.equal(("job %d saw 4 lines\n"):format(i), H.slurp(d .. "/out/result" .. i .. ".txt"))
    end
  end)

  it("a file a job sent is written before its result is seen (files are written outside the engine's lock)", function()
    local d = tmpdir()
    os.execute("mkdir -p " .. q(d .. "/out"))
    H.write(d .. "/job.lua", [[
local fs = {}
for i = 1, 40 do
  fs[i] = farm.submit(function(i)
    local name = "sent" .. i .. ".bin"
    local f = io.open(name, "wb") f:write(("s"):rep(200000 + i)) f:close()
    farm.send_file(name)
    os.remove(name)
    return i
  end, i)
end
local bad = 0
for i = 1, 40 do
  fs[i]:result()
  local f = io.open("out/sent" .. i .. ".bin", "rb")
  if not f or #f:read("a") ~= 200000 + i then bad = bad + 1 end
  if f then f:close() end
end
print("missing " .. bad)
]])
    local r = H.sh(("cd %s && %s run job.lua -n 2 --dest out"):format(q(d), q(FARM)))
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("missing 0\n", r.out)
  end)

  it("refuses a missing file, an absolute path, one above the directory, and one over --max-file", function()
    local d = tmpdir()
    H.write(d .. "/big.bin", string.rep("x", 5000))
    H.write(d .. "/small.bin", "x")
    local cases = {
      { [[farm.submit_with({ files = { "nope.bin" } }, print)]], "farm.submit_with: cannot read nope.bin: No such file or directory" },
      { [[farm.submit_with({ files = { "/etc/hostname" } }, print)]], "file /etc/hostname must be a relative path below the current directory" },
      { [[farm.submit_with({ files = { "../x" } }, print)]], "file ../x must be a relative path below" },
      { [[farm.submit_with({ files = { ".." } }, print)]], "file .. must be a relative path below" },
      { [[farm.submit_with({ files = { "big.bin" } }, print)]], "farm.submit_with: big.bin is 4.9 KiB; files travel up to 1000 bytes (farm.config{max_file = bytes} or farm run --max-file raises it)" },
      { [[farm.submit(function() local f = io.open("b2.bin", "w") f:write(("y"):rep(2000)) f:close() farm.send_file("b2.bin") end):result()]],
        "farm.send_file: b2.bin is 2.0 KiB; files travel up to 1000 bytes" },
      { [[farm.submit(function() farm.send_file("none.bin") end):result()]], "farm.send_file: cannot read none.bin: No such file or directory" },
    }
    for _, c in ipairs(cases) do
      H.write(d .. "/case.lua", c[1])
      local r = H.sh(("cd %s && %s run case.lua -n 1 --max-file 1000"):format(q(d), q(FARM)))
      assert.are.equal(1, r.code, c[1] .. "\n" .. r.err)
      assert.is_truthy(r.err:find(c[2], 1, true), r.err)
    end
    -- the smallest links still carry a small file
    H.write(d .. "/small.lua", [[
farm.config{ max_message = 65536 }
print(farm.submit(function()
  local f = io.open("tiny.out", "w") f:write(("z"):rep(100)) f:close()
  farm.send_file("tiny.out") return true
end):result())
]])
    local rs = H.sh(("cd %s && %s run small.lua -n 1 --dest sent"):format(q(d), q(FARM)))
    assert.are.equal(2, rs.code)                 -- no such directory yet
    os.execute("mkdir " .. q(d .. "/sent"))
    rs = H.sh(("cd %s && %s run small.lua -n 1 --dest sent"):format(q(d), q(FARM)))
    assert.are.equal(0, rs.code, rs.err)
    assert.are.equal(("z"):rep(100), H.slurp(d .. "/sent/tiny.out"))
    local r = H.farm_cmd("run x.lua --max-file 1T")
    assert.are.equal(2, r.code)
    assert.is_truthy(r.err:find("--max-file takes a size such as", 1, true), r.err)
    r = H.farm_cmd("run x.lua --dest /nonexistent/dir")
    assert.are.equal(2, r.code)
    assert.is_truthy(r.err:find("--dest /nonexistent/dir: no such directory", 1, true), r.err)
  end)
end)

describe("a finished future's metadata", function()
  after_each(cleanup_dirs)

  it("says where and when its job ran, and how many tries it took", function()
    local d = tmpdir()
    local r = ok(([[
local t0 = os.time()
local f = farm.submit(function() local c = os.clock() while os.clock() - c < 0.05 do end return 1 end)
print(f.finished == nil, f.node == nil)
f:result()
print("meta", f.node, f.worker:match("^local:%%d+ %%(pid %%d+%%)$") ~= nil, f.attempts,
  f.submitted <= f.started, f.started <= f.finished, f.finished - f.started >= 0.04,
  f.submitted >= t0 - 1 and f.finished <= os.time() + 1)
-- a job that kills its worker once is tried again: two attempts
local mark = %q
local g = farm.submit(function(m)
  local h = io.open(m, "r")
  if not h then io.open(m, "w"):close() os.exit(3) end
  h:close()
  print("second try")
  return 2
end, mark)
print("retry", g:result(), g.attempts, g.stdout)
]]):format(d .. "/mark"))
    assert.is_truthy(r.out:find("meta\tlocal\ttrue\t1\ttrue\ttrue\ttrue\ttrue\n", 1, true), r.out)
    assert.is_truthy(r.out:find("retry\t2\t2\tsecond try\n", 1, true), r.out)
  end)

  it("gives the jobs one worker ran in turn their times in turn (one clock for both ends)", function()
    -- short and shorter jobs alternate, so that a batch of results holds jobs
    -- of different lengths: each must start after the one before it ended
    local r = ok([[
local fs = {}
for i = 1, 300 do
  fs[i] = farm.submit(function(d) local c = os.clock() while os.clock() - c < d do end return d end,
                      i % 2 == 1 and 0.0004 or 0.00002)
end
local bad, worst = 0, 0
for i = 1, #fs do fs[i]:result() end
for i = 2, #fs do
  local a, b = fs[i - 1], fs[i]
  if b.started < a.finished or a.started > a.finished then
    bad = bad + 1
    worst = math.max(worst, a.finished - b.started)
  end
end
print("out of turn", bad, worst)
]], "-n 1")
    assert.are.equal("out of turn\t0\t0\n", r.out)
  end)
end)

local HASHING_DIGEST = "cce5c9af959fcf3ec499b5d940f6deabd67286d931ac5312e359ea36b4625fa8"

local function check_hashing(r, remote)
  assert.are.equal(0, r.code, r.err)
  assert.are.equal("64 slices of hashing-data.bin (4194304 bytes): all verified; digest of digests "
    .. HASHING_DIGEST .. "\n", r.out)
  local slices = 0
  for n in r.err:gmatch("hashing: a worker hashed (%d+) slices\n") do slices = slices + tonumber(n) end
  -- every worker that ran jobs said so in its cleanup (a node's workers, in its log)
  if not remote then assert.are.equal(64, slices, r.err) end
end

describe("examples/hashing.lua (dispy's setup and cleanup example)", function()
  after_each(cleanup_dirs)

  it("hashes the slices of its data file on the workers and verifies them", function()
    local d = tmpdir()
    check_hashing(H.sh(("cd %s && %s run %s -n 2"):format(q(d), q(FARM), q(abs("examples/hashing.lua")))))
  end)
end)

-- ---- the same through a node started over SSH ---------------------------------------

local MYPID = H.pid
local PORT = 20000 + (MYPID * 11 + 3) % 20000
local DIR = "/tmp/farm-model-spec." .. MYPID
local HOME = DIR .. "/home"

local function launched_nodes() return H.launched_nodes(FARM) end

describe("through a node started over SSH (a real sshd on 127.0.0.1)", function()
  setup(function()
    assert(os.execute("scripts/sshd-testbed start " .. q(DIR) .. " " .. PORT) == true, "sshd testbed")
  end)

  teardown(function()
    for _, pid in ipairs(launched_nodes()) do os.execute("kill -9 " .. pid .. " 2>/dev/null") end
    os.execute("scripts/sshd-testbed stop " .. q(DIR))
    cleanup_dirs()
  end)

  local function remote(d, script, extra)
    H.write(d .. "/job.lua", script)
    return H.sh(("cd %s && HOME=%s SSH_AUTH_SOCK= %s run job.lua -n 0 --remote-farm %s --hosts %s %s")
      :format(q(d), q(HOME), q(FARM), q(FARM), q("127.0.0.1:" .. PORT), extra or ""), 120)
  end

  it("shares a value once over the node's link; setup, cleanup, files both ways and programs work there", function()
    local d = tmpdir()
    H.write(d .. "/data.bin", string.rep("0123456789abcdef", 65536))   -- 1 MiB
    os.execute("mkdir -p " .. q(d .. "/out"))
    local r = remote(d, BIG .. ([[
farm.shared.big = big
farm.on_node{
  setup = function(tag) TAG = tag end,
  cleanup = function(path) local f = io.open(path, "a") f:write("cleanup\n") f:close() end,
  args = { %q },
}
local fs = {}
for i = 1, 200 do
  fs[i] = farm.submit_with({ files = { "data.bin" } }, function(i)
    local f = assert(io.open("data.bin", "rb")) local n = #f:read("a") f:close()
    if i <= 3 then
      local name = "from-node-" .. i .. ".txt"
      local o = io.open(name, "w") o:write(TAG, " ", n, " ", #farm.shared.big) o:close()
      farm.send_file(name)
    end
    return n + #farm.shared.big[i]
  end, i)
end
local s = 0
for i = 1, 200 do s = s + fs[i]:result() end
local sha = farm.exec{ "sha1sum", "data.bin", files = { "data.bin" } }:result()
local cwd = farm.submit(function() return io.popen("pwd"):read("l") end):result()
print("sum", s, fs[1].node, fs[1].attempts)
print("sha", sha.status, (sha.stdout:match("^%%x+")))
print("cwd", cwd ~= os.getenv("PWD"))
for _, w in ipairs(farm.stats().workers) do print("link", w.kind, w.jobs, w.bytes_sent) end
]]):format(d .. "/cleanup.log"), "--dest out")
    assert.are.equal(0, r.code, r.err)
    assert.is_truthy(r.out:find(("sum\t%d\t127.0.0.1:%d\t1\n"):format(200 * (1048576 + 1000), PORT), 1, true), r.out)
    local want = io.popen("sha1sum " .. q(d .. "/data.bin")):read("l"):match("^%x+")
    assert.is_truthy(r.out:find("sha\t0\t" .. want .. "\n", 1, true), r.out)
    assert.is_truthy(r.out:find("cwd\ttrue\n", 1, true), r.out)
    local sent = tonumber(r.out:match("link\tnode\t%d+\t(%d+)"))
    -- 10 MB of value and 1 MiB of file, once each, plus 202 jobs
    assert.is_true(sent > 10000000 + 1048576, "sent " .. tostring(sent))
    assert.is_true(sent < 10000000 + 1048576 + 600000, "sent " .. tostring(sent))
    for i = 1, 3 do
      local got = H.slurp(d .. "/out/from-node-" .. i .. ".txt")
      assert.is_truthy(got:match("^/.+ 1048576 10000$"), got)
    end
    -- the node's workers ran the cleanup when the client left
    local deadline = os.time() + 10
    while H.slurp(d .. "/cleanup.log") == "" and os.time() < deadline do os.execute("sleep 0.1") end
    assert.is_truthy(H.slurp(d .. "/cleanup.log"):find("cleanup\n", 1, true))
  end)

  it("takes a node out of the run when its workers' setup fails there; local workers run every job", function()
    local d = tmpdir()
    local r = remote(d, [[
farm.on_node{ setup = function()
  local dir = io.popen("pwd"):read("l")
  if dir:find("farm-node", 1, true) then error("no GPU on this node") end
end }
local fs = {}
for i = 1, 20 do fs[i] = farm.submit(function(i) return i end, i) end
local s = 0
for i = 1, 20 do s = s + fs[i]:result() end
print("sum", s)
for _, w in ipairs(farm.stats().workers) do print(w.kind, w.state) end
]])
    -- (remote() runs with -n 0, the node alone; and again with a local worker too)
    local r2 = H.sh(("cd %s && HOME=%s SSH_AUTH_SOCK= %s run job.lua -n 1 --remote-farm %s --hosts %s")
      :format(q(d), q(HOME), q(FARM), q(FARM), q("127.0.0.1:" .. PORT)), 120)
    assert.are.equal(0, r2.code, r2.err)
    assert.is_truthy(r2.out:find("sum\t210\n", 1, true), r2.out)
    assert.is_truthy(r2.out:find("node\tretired", 1, true), r2.out)
    assert.is_truthy(r2.err:find("farm: node 127.0.0.1:" .. PORT .. ": the setup function of farm.on_node failed on this node's worker local:%d+ %(pid %d+%): [^\n]*no GPU on this node; that node is out of the run"), r2.err)
    -- with the node alone, the jobs fail with that error
    assert.are.equal(1, r.code, r.out)
    assert.is_truthy(r.err:find("no GPU on this node", 1, true), r.err)
  end)

  it("sends a file again when it changed, takes plain forms of paths, carries big files, and refuses dot-files from nodes", function()
    local d = tmpdir()
    os.execute("mkdir -p " .. q(d .. "/sub") .. " " .. q(d .. "/out"))
    H.write(d .. "/sub/v.txt", "version one")
    local r = remote(d, [[
local read = function(p) local f = assert(io.open(p)) local s = f:read("a") f:close() return s end
print(farm.submit_with({ files = { "./sub//v.txt" } }, read, "sub/v.txt"):result())
local f = io.open("sub/v.txt", "w") f:write("version two, longer") f:close()
print(farm.submit_with({ files = { "sub/v.txt" } }, read, "sub/v.txt"):result())
print(farm.submit(function()
  local h = io.open("big.out", "wb")
  for _ = 1, 70 do h:write(("b"):rep(1048576)) end
  h:close()
  farm.send_file("big.out")
  h = io.open(".profile", "w") h:write("evil") h:close()
  farm.send_file(".profile")
  return "sent"
end):result())
]], "--dest out --max-file 100M")
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("version one\nversion two, longer\nsent\n", r.out)
    local h = io.open(d .. "/out/big.out", "rb")
    assert.are.equal(70 * 1048576, h:seek("end"))
    h:close()
    assert.is_nil(io.open(d .. "/out/.profile"))
    assert.is_truthy(r.err:find("refused the file '.profile' that job %d+ sent from 127.0.0.1:%d+: no part of a name from another host may begin with a dot"), r.err)
  end)

  it("runs examples/hashing.lua on the node alone: its data file travels there once", function()
    local d = tmpdir()
    H.write(d .. "/job.lua", H.slurp("examples/hashing.lua"))
    check_hashing(H.sh(("cd %s && HOME=%s SSH_AUTH_SOCK= %s run job.lua -n 0 --remote-farm %s --hosts %s")
      :format(q(d), q(HOME), q(FARM), q(FARM), q("127.0.0.1:" .. PORT)), 120), true)
  end)
end)
