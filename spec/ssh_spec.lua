-- ssh_spec.lua -- `farm run --nodes HOSTFILE` through a real OpenSSH sshd on
-- 127.0.0.1 (scripts/sshd-testbed: its own keys, config and port, started and
-- stopped by pid), as a user runs it: the node is started over SSH for the run,
-- with a key made for the run, and nothing is left on the "host" afterwards.
local H = require "helper"

local q = H.quote
local abs = H.abs
local FARM = abs(H.farm)
local MYPID = H.pid
local PORT = 20000 + (MYPID * 7) % 20000
local DIR = "/tmp/farm-ssh-spec." .. MYPID
local HOME = DIR .. "/home"

-- `farm node --launched` processes started for this spec's sshd (by their
-- command line: the remote farm path is ours)
local function launched_nodes() return H.launched_nodes(FARM) end

local function settles_empty(seconds)
  local deadline = os.time() + (seconds or 10)
  repeat
    if #launched_nodes() == 0 then return true end
    os.execute("sleep 0.1")
  until os.time() > deadline
  return false
end

local function run(script, extra, env)
  return H.run_script(script, "--remote-farm " .. q(FARM) .. " " .. (extra or ""), 120,
    "HOME=" .. q(HOME) .. " SSH_AUTH_SOCK= " .. (env or ""))
end

local function hostfile(text) return H.tmp(text, ".hosts") end

local PI = [[
local farm = require "farm"
local function throw(n, seed)
  local x = seed
  local hits = 0
  for _ = 1, n do
    x = (x * 1103515245 + 12345) % 2147483648
    local a = x / 2147483648
    x = (x * 1103515245 + 12345) % 2147483648
    local b = x / 2147483648
    if a * a + b * b <= 1 then hits = hits + 1 end
  end
  return hits
end
local sizes, seeds = {}, {}
for i = 1, 24 do sizes[i], seeds[i] = 20000, i end
local hits = 0
for _, h in ipairs(farm.map(throw, sizes, seeds)) do hits = hits + h end
print(("pi %.10f"):format(4 * hits / (24 * 20000)))
local nodes = farm.nodes()
for _, n in ipairs(nodes) do io.stderr:write(("NODE %s %d %d %s\n"):format(n.host, n.workers, n.jobs_done, n.state)) end
]]

describe("farm run --nodes over SSH (a real sshd on 127.0.0.1)", function()
  setup(function()
    assert(os.execute("scripts/sshd-testbed start " .. q(DIR) .. " " .. PORT) == true, "sshd testbed")
  end)

  teardown(function()
    -- whatever a failed test left: the nodes it started, then the sshd
    for _, pid in ipairs(launched_nodes()) do os.execute("kill -9 " .. pid .. " 2>/dev/null") end
    os.execute("scripts/sshd-testbed stop " .. q(DIR))
    H.cleanup()
  end)

  after_each(function()
    assert.is_true(settles_empty(10), "a farm node started over SSH outlived its run")
  end)

  it("starts a node over SSH for the run; results equal the local run's; nothing is left", function()
    local hosts = hostfile(("# the sshd of this test\n127.0.0.1:%d 2\n"):format(PORT))
    local remote = run(PI, "-n 0 --nodes " .. q(hosts))
    assert.are.equal(0, remote.code, remote.err)
    local here = H.run_script(PI, "-n 2")
    assert.are.equal(0, here.code, here.err)
    assert.are.equal(here.out, remote.out)
    assert.is_truthy(remote.err:find(("NODE 127.0.0.1:%d 2 24 up"):format(PORT), 1, true), remote.err)
  end)

  it("shares the work between local workers and the node", function()
    local script = [[
local farm = require "farm"
local fs = {}
for i = 1, 30 do fs[i] = farm.submit(function(x) local t = os.time() + 0 local c = os.clock() while os.clock() - c < 0.05 do end return x end, i) end
local s = 0
for i = 1, 30 do s = s + fs[i]:result() end
local st = farm.stats()
local kinds = {}
for _, w in ipairs(st.workers) do kinds[w.kind] = (kinds[w.kind] or 0) + w.jobs end
print(s, kinds["local"] > 0, kinds.node > 0)
]]
    local r = run(script, "-n 1 --hosts " .. q("127.0.0.1:" .. PORT))
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("465\ttrue\ttrue\n", r.out)
  end)

  it("leaves nothing on the host when the client is killed with SIGKILL", function()
    local script = H.tmp([[
local farm = require "farm"
local fs = {}
for i = 1, 50 do fs[i] = farm.submit(function() local c = os.clock() while os.clock() - c < 0.2 do end end) end
print("submitted") io.stdout:flush()
for i = 1, 50 do fs[i]:result() end
]])
    local out = os.tmpname()
    local cmd = ("HOME=%s SSH_AUTH_SOCK= %s run %s -n 0 --remote-farm %s --hosts %s >%s 2>&1 & echo $!")
      :format(q(HOME), q(FARM), q(script), q(FARM), q("127.0.0.1:" .. PORT), q(out))
    local p = io.popen(cmd)
    local pid = tonumber(p:read("l"))
    p:close()
    local deadline = os.time() + 30
    while not H.slurp(out):find("submitted", 1, true) and os.time() < deadline do os.execute("sleep 0.05") end
    assert.is_truthy(H.slurp(out):find("submitted", 1, true), H.slurp(out))
    assert.is_true(#launched_nodes() >= 1, "the node runs while the client does")
    os.execute("kill -9 " .. pid)
    assert.is_true(H.wait_gone({ pid }, 10))
    assert.is_true(settles_empty(10), "the node outlived its client")
    -- and its workers went with it
    local p2 = io.popen(H.tool("sh -c " .. q("pgrep -f 'farm worker' | xargs -r -n1 sh -c 'cat /proc/$0/cmdline 2>/dev/null | tr \"\\0\" \" \"; echo' 2>/dev/null")))
    local workers = p2:read("a")
    p2:close()
    assert.is_falsy(workers:find("--parent " .. tostring(pid), 1, true))
    os.remove(out)
  end)

  it("refuses an unknown host with the ssh-keyscan line, and --accept-new-hosts adds it", function()
    local kh = HOME .. "/.ssh/known_hosts"
    local saved = H.slurp(kh)
    H.write(kh, "")
    local r = run("print(require('farm').submit(function() return 7 end):result())",
      "-n 0 --hosts " .. q("127.0.0.1:" .. PORT))
    assert.are_not.equal(0, r.code)
    assert.are.equal(1, H.lines(r.err), r.err)
    assert.is_truthy(r.err:find("ssh-keyscan -p " .. PORT, 1, true), r.err)
    r = run("print(require('farm').submit(function() return 7 end):result())",
      "-n 0 --accept-new-hosts --hosts " .. q("127.0.0.1:" .. PORT))
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("7\n", r.out)
    assert.is_truthy(H.slurp(kh):find("[127.0.0.1]:" .. PORT, 1, true), H.slurp(kh))
    H.write(kh, saved)
  end)

  it("refuses a changed host key", function()
    local kh = HOME .. "/.ssh/known_hosts"
    local saved = H.slurp(kh)
    local other = DIR .. "/other"
    os.execute(H.tool("ssh-keygen -q -t ed25519 -N '' -f " .. q(other)) .. " >/dev/null")
    local pub = H.slurp(other .. ".pub"):match("^(%S+ %S+)")
    H.write(kh, ("[127.0.0.1]:%d %s\n"):format(PORT, pub))
    local r = run("print(1)\nrequire('farm').submit(function() end):result()", "-n 0 --hosts " .. q("127.0.0.1:" .. PORT))
    H.write(kh, saved)
    assert.are_not.equal(0, r.code)
    assert.are.equal(1, H.lines(r.err), r.err)
    assert.is_truthy(r.err:find("CHANGED", 1, true), r.err)
  end)

  it("refuses a host key marked @revoked in known_hosts, also with --accept-new-hosts, and never appends it", function()
    local kh = HOME .. "/.ssh/known_hosts"
    local saved = H.slurp(kh)
    local key = H.slurp(DIR .. "/hostkey.pub"):match("^(%S+ %S+)")
    local job = "print(require('farm').submit(function() return 7 end):result())"
    local hosts = "-n 0 --hosts " .. q("127.0.0.1:" .. PORT)
    local cases = {
      { saved .. ("@revoked [127.0.0.1]:%d %s\n"):format(PORT, key), "" },
      { saved .. ("@revoked [127.0.0.1]:%d %s\n"):format(PORT, key), "--accept-new-hosts " },
      { ("@revoked [127.0.0.1]:%d %s\n"):format(PORT, key), "" },          -- no normal line
      { ("@revoked [127.0.0.1]:%d %s\n"):format(PORT, key), "--accept-new-hosts " },
    }
    for _, c in ipairs(cases) do
      H.write(kh, c[1])
      local r = run(job, c[2] .. hosts)
      local after = H.slurp(kh)
      H.write(kh, saved)
      assert.are_not.equal(0, r.code, r.err)
      assert.are.equal(1, H.lines(r.err), r.err)
      assert.is_truthy(r.err:find(("host 127.0.0.1:%d: the host key (ssh-ed25519 SHA256:"):format(PORT), 1, true), r.err)
      assert.is_truthy(r.err:find("is marked @revoked in ~/.ssh/known_hosts line %d+: it was revoked and you " ..
        "cannot connect to it"), r.err)
      assert.are.equal(c[1], after)
    end
  end)

  it("ignores @cert-authority lines: a normal line for the host still lets it in", function()
    local kh = HOME .. "/.ssh/known_hosts"
    local saved = H.slurp(kh)
    local key = H.slurp(DIR .. "/hostkey.pub"):match("^(%S+ %S+)")
    H.write(kh, ("@cert-authority * %s\n"):format(key) .. saved)
    local r = run("print(require('farm').submit(function() return 7 end):result())",
      "-n 0 --hosts " .. q("127.0.0.1:" .. PORT))
    H.write(kh, saved)
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("7\n", r.out)
  end)

  it("says so when farm is not installed on the host", function()
    local r = H.run_script("require('farm').submit(function() end):result()",
      "--remote-farm /nonexistent/farm -n 0 --hosts " .. q("127.0.0.1:" .. PORT), 60,
      "HOME=" .. q(HOME) .. " SSH_AUTH_SOCK= ")
    assert.are_not.equal(0, r.code)
    assert.are.equal(1, H.lines(r.err), r.err)
    assert.is_truthy(r.err:find("--remote-farm", 1, true), r.err)
  end)

  -- sshd frozen (SIGSTOP): TCP connects, the SSH login gets no answer
  it("says it waits for the SSH login of a host that does not answer, and stops at Ctrl-C", function()
    local sshd = tonumber(H.slurp(DIR .. "/sshd.pid"):match("%d+"))
    assert.is_truthy(sshd)
    local d = H.sh("mktemp -d " .. q(DIR .. "/bg-XXXXXX")).out:gsub("%s+$", "")
    os.execute("kill -STOP " .. sshd)
    local pid = H.run_script_bg(d, "print(require('farm').submit(function() return 7 end):result())",
      "--remote-farm " .. q(FARM) .. " -n 0 --hosts " .. q("127.0.0.1:" .. PORT), "HOME=" .. q(HOME) .. " SSH_AUTH_SOCK=")
    local said = H.wait_for(function() return H.slurp(d .. "/err"):find("waiting for node", 1, true) end, 15)
    local err = H.slurp(d .. "/err")
    if pid then os.execute("kill -INT " .. pid) end
    local ended = H.wait_for(function() return H.slurp(d .. "/rc"):match("%d+") end, 5)   -- (SSH's limit: 30 s)
    os.execute("kill -CONT " .. sshd)
    assert.is_truthy(said, err)
    assert.is_truthy(err:find(("farm: waiting for node 127.0.0.1:%d (the SSH login"):format(PORT), 1, true), err)
    assert.is_truthy(ended, "farm still runs after Ctrl-C: " .. H.slurp(d .. "/err"))
    assert.are.equal("130", H.slurp(d .. "/rc"):match("%d+"), H.slurp(d .. "/err"))
    assert.is_truthy(H.slurp(d .. "/err"):find("farm: interrupted", 1, true), H.slurp(d .. "/err"))
    assert.is_true(H.wait_gone({ pid }, 5))
  end)

  it("goes on with the local pool when a host cannot be reached, and says which", function()
    local r = run("print(require('farm').submit(function() return 5 end):result())",
      "-n 1 --hosts " .. q("127.0.0.1:" .. PORT .. ",127.0.0.1:1"))
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("5\n", r.out)
    assert.is_truthy(r.err:find("host 127.0.0.1:1: connection refused", 1, true), r.err)
  end)
end)

describe("libssh2, loaded only when a host is started over SSH", function()
  local libdir = DIR .. "-lib"
  after_each(function()
    os.execute("rm -rf " .. q(libdir))
    H.cleanup()
  end)

  it("is not linked: no farm process loads it, OpenSSL's libcrypto or libedit at exec", function()
    local r = H.sh(H.tool("readelf -d " .. q(FARM)))
    assert.are.equal(0, r.code, r.err)
    assert.matches("%(NEEDED%)", r.out)
    for _, lib in ipairs { "libssh2", "libcrypto", "libedit", "libtinfo" } do
      assert.is_nil(r.out:find("[" .. lib, 1, true), r.out)
    end
  end)

  it("when it cannot be loaded, says so in one line with the package to install", function()
    -- a libssh2.so.1 that is no library, found first through LD_LIBRARY_PATH
    assert(os.execute("mkdir -p " .. q(libdir)) == true)
    H.write(libdir .. "/libssh2.so.1", "")
    local r = H.run_script("require('farm').submit(function() end):result()",
      "-n 0 --hosts 127.0.0.1:1", 60, "LD_LIBRARY_PATH=" .. q(libdir))
    assert.are_not.equal(0, r.code)
    assert.are.equal(1, H.lines(r.err), r.err)
    assert.is_truthy(r.err:find("host 127.0.0.1:1: cannot load libssh2.so.1 (apt-get install libssh2-1): ",
      1, true), r.err)
  end)
end)
