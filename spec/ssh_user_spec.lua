-- ssh_user_spec.lua -- what an ssh user expects of `farm run --nodes/--hosts`,
-- through a real OpenSSH sshd on 127.0.0.1 (scripts/sshd-testbed, started and
-- stopped by pid; HOME is the test bed's, never the real ~/.ssh):
--   a passphrase-protected key is named, with ssh-agent as the fix (and an
--   agent holding it then works); --accept-new-hosts says which key it added;
--   ~/.ssh/config's Host entries (HostName, Port, User, IdentityFile) are
--   honoured, with known_hosts under the real host and port; a bad config
--   line is named; when no host can be reached, one line says so.
local H = require "helper"

local q = H.quote
local FARM = H.abs(H.farm)
local MYPID = H.pid
local PORT = 40000 + (MYPID * 13) % 20000
local DIR = "/tmp/farm-ssh-user-spec." .. MYPID
local HOME = DIR .. "/home"
local JOB = "print(require('farm').submit(function() return 7 end):result())"

local function run(extra, env, home)
  return H.run_script(JOB, "--remote-farm " .. q(FARM) .. " " .. (extra or ""), 120,
    "HOME=" .. q(home or HOME) .. " SSH_AUTH_SOCK= " .. (env or ""))
end

local function sh(cmd)
  local r = H.sh(H.tool(cmd))
  assert(r.code == 0, cmd .. ": " .. r.err .. r.out)
  return r.out
end

-- a home of its own: known_hosts as the test bed's, the client key where told
-- (or none), a passphrase on it when given
local function new_home(name, keypath, passphrase)
  local home = DIR .. "/" .. name
  sh("mkdir -p " .. q(home .. "/.ssh") .. " && cp " .. q(HOME .. "/.ssh/known_hosts") .. " " .. q(home .. "/.ssh/"))
  if keypath then
    local key = home .. "/" .. keypath
    sh("mkdir -p \"$(dirname " .. q(key) .. ")\" && cp " .. q(DIR .. "/client") .. " " .. q(key) ..
      " && cp " .. q(DIR .. "/client.pub") .. " " .. q(key .. ".pub") .. " && chmod 600 " .. q(key))
    if passphrase then sh("ssh-keygen -q -p -P '' -N " .. q(passphrase) .. " -f " .. q(key)) end
  end
  return home
end

local function fingerprint(pubfile)
  return sh("ssh-keygen -l -E sha256 -f " .. q(pubfile)):match("(SHA256:%S+)")
end

describe("farm and an ssh user's setup (a real sshd on 127.0.0.1)", function()
  setup(function()
    assert(os.execute("scripts/sshd-testbed start " .. q(DIR) .. " " .. PORT) == true, "sshd testbed")
  end)

  teardown(function()
    for _, pid in ipairs(H.launched_nodes(FARM)) do os.execute("kill -9 " .. pid .. " 2>/dev/null") end
    os.execute("scripts/sshd-testbed stop " .. q(DIR))
    H.cleanup()
  end)

  after_each(function()
    os.remove(HOME .. "/.ssh/config")
    H.cleanup()
  end)

  describe("a key protected by a passphrase", function()
    it("is named, with ssh-agent as the fix, instead of 'login refused'", function()
      local home = new_home("home-pp", ".ssh/id_ed25519", "a secret phrase")
      local r = run("-n 0 --hosts " .. q("127.0.0.1:" .. PORT), "", home)
      assert.are_not.equal(0, r.code)
      assert.are.equal(1, H.lines(r.err), r.err)
      assert.are.equal(("farm: host 127.0.0.1:%d: ~/.ssh/id_ed25519 is protected by a passphrase; load it " ..
        "into ssh-agent (ssh-add ~/.ssh/id_ed25519) and run again\n"):format(PORT), r.err)
    end)

    it("also as a PEM key (id_ecdsa), and the agent's keys tried first are listed", function()
      local home = new_home("home-pem")
      sh("ssh-keygen -q -t ecdsa -m PEM -N 'a secret phrase' -f " .. q(home .. "/.ssh/id_ecdsa"))
      local sock = DIR .. "/no-agent.sock"
      local r = run("-n 0 --hosts " .. q("127.0.0.1:" .. PORT), "SSH_AUTH_SOCK=" .. q(sock), home)
      assert.are_not.equal(0, r.code)
      assert.are.equal(1, H.lines(r.err), r.err)
      assert.is_truthy(r.err:find("~/.ssh/id_ecdsa is protected by a passphrase; load it into ssh-agent " ..
        "(ssh-add ~/.ssh/id_ecdsa) and run again (also tried: the SSH agent (cannot reach it", 1, true), r.err)
    end)

    it("works once ssh-add has put it into an agent, as the message says", function()
      local home = new_home("home-agent", ".ssh/id_ed25519", "a secret phrase")
      local sock = DIR .. "/agent.sock"
      local out = sh("ssh-agent -a " .. q(sock) .. " -s")
      local agent = assert(tonumber(out:match("SSH_AGENT_PID=(%d+)")), out)
      local ok, err = pcall(function()
        local askpass = H.write(DIR .. "/askpass", "#!/bin/sh\necho 'a secret phrase'\n")
        sh("chmod 700 " .. q(askpass))
        sh(("SSH_AUTH_SOCK=%s SSH_ASKPASS=%s SSH_ASKPASS_REQUIRE=force DISPLAY=:0 ssh-add %s")
          :format(q(sock), q(askpass), q(home .. "/.ssh/id_ed25519")))
        local r = run("-n 0 --hosts " .. q("127.0.0.1:" .. PORT), "SSH_AUTH_SOCK=" .. q(sock), home)
        assert.are.equal(0, r.code, r.err)
        assert.are.equal("7\n", r.out)
      end)
      os.execute("kill " .. agent)
      assert(ok, err)
    end)
  end)

  it("--accept-new-hosts says which key it added, in one line on stderr", function()
    local home = new_home("home-new", ".ssh/id_ed25519")
    H.write(home .. "/.ssh/known_hosts", "")
    local r = run("-n 0 --accept-new-hosts --hosts " .. q("127.0.0.1:" .. PORT), "", home)
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("7\n", r.out)
    assert.are.equal(("farm: added host 127.0.0.1:%d (ssh-ed25519 %s) to ~/.ssh/known_hosts\n")
      :format(PORT, fingerprint(DIR .. "/hostkey.pub")), r.err)
    -- the second time it is known: nothing to say
    r = run("-n 0 --accept-new-hosts --hosts " .. q("127.0.0.1:" .. PORT), "", home)
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("", r.err)
  end)

  describe("~/.ssh/config", function()
    local function config(text) H.write(HOME .. "/.ssh/config", text) end

    it("gives HostName and Port to a Host alias (patterns with * and ?), first value winning", function()
      config(("# an ssh user's file\nHost farm-?lias other\n  HostName 127.0.0.1\n  Port %d\n" ..
        "Host *\n  Port 1\n  HostName 127.0.0.9\n"):format(PORT))
      local hosts = H.tmp("farm-alias\n", ".hosts")
      local r = run("-n 0 --nodes " .. q(hosts))
      assert.are.equal(0, r.code, r.err)
      assert.are.equal("7\n", r.out)
      assert.are.equal("", r.err)
    end)

    it("gives the User; a user given with the host wins over it", function()
      config(("Host farm-*\n  HostName 127.0.0.1\n  Port %d\n  User farm-nosuchuser\n"):format(PORT))
      local r = run("-n 0 --hosts farm-alias")
      assert.are_not.equal(0, r.code)
      assert.are.equal(1, H.lines(r.err), r.err)
      assert.is_truthy(r.err:find(("farm: host farm-alias (127.0.0.1:%d from ~/.ssh/config): login refused for " ..
        "user farm-nosuchuser"):format(PORT), 1, true), r.err)
      local me = sh("id -un"):match("%S+")
      r = run("-n 0 --hosts " .. q(me .. "@farm-alias"))
      assert.are.equal(0, r.code, r.err)
      assert.are.equal("7\n", r.out)
    end)

    it("a port given with the host wins over Port", function()
      config(("Host farm-alias\n  HostName 127.0.0.1\n  Port %d\n"):format(PORT))
      local r = run("-n 0 --hosts farm-alias:1")
      assert.are_not.equal(0, r.code)
      assert.are.equal("farm: host farm-alias:1 (127.0.0.1:1 from ~/.ssh/config): connection refused " ..
        "(is sshd running there?)\n", r.err)
    end)

    it("gives the IdentityFile (~ expanded) in place of ~/.ssh/id_ed25519", function()
      local home = new_home("home-id", "keys/farm key")
      local r = run("-n 0 --hosts " .. q("127.0.0.1:" .. PORT), "", home)
      assert.are_not.equal(0, r.code)
      assert.is_truthy(r.err:find("no key", 1, true), r.err)
      H.write(home .. "/.ssh/config", "Host 127.0.0.*\n  IdentityFile \"~/keys/farm key\"\n")
      r = run("-n 0 --hosts " .. q("127.0.0.1:" .. PORT), "", home)
      assert.are.equal(0, r.code, r.err)
      assert.are.equal("7\n", r.out)
    end)

    it("checks and adds the host key under the real HostName and Port, as OpenSSH does", function()
      local home = new_home("home-kh", ".ssh/id_ed25519")
      H.write(home .. "/.ssh/known_hosts", "")
      H.write(home .. "/.ssh/config", ("Host farm-alias\n  HostName 127.0.0.1\n  Port %d\n"):format(PORT))
      local r = run("-n 0 --hosts farm-alias", "", home)
      assert.are_not.equal(0, r.code)
      assert.are.equal(1, H.lines(r.err), r.err)
      assert.is_truthy(r.err:find(("ssh-keyscan -p %d -t ed25519 127.0.0.1 >> ~/.ssh/known_hosts"):format(PORT),
        1, true), r.err)
      r = run("-n 0 --accept-new-hosts --hosts farm-alias", "", home)
      assert.are.equal(0, r.code, r.err)
      assert.are.equal("7\n", r.out)
      local kh = H.slurp(home .. "/.ssh/known_hosts")
      assert.is_truthy(kh:find(("^%%[127%%.0%%.0%%.1%%]:%d ssh%%-ed25519 "):format(PORT)), kh)
      assert.is_falsy(kh:find("farm-alias", 1, true), kh)
      -- and a known_hosts line for the alias alone does not vouch for the real host
      H.write(home .. "/.ssh/known_hosts", kh:gsub("%[127%.0%.0%.1%]:%d+", "farm-alias"))
      r = run("-n 0 --hosts farm-alias", "", home)
      assert.are_not.equal(0, r.code)
      assert.is_truthy(r.err:find("unknown host key", 1, true), r.err)
    end)

    it("a malformed line is named with its file and line, in one line", function()
      config("Host farm-alias\n  HostName 127.0.0.1\n  Port twenty-two\n")
      local r = run("-n 0 --hosts farm-alias")
      assert.are_not.equal(0, r.code)
      assert.are.equal("farm: host farm-alias: ~/.ssh/config line 3: bad Port 'twenty-two' (a number, 1 to 65535); " ..
        "fix that line\n", r.err)
    end)

    it("one that cannot be read is named", function()
      os.execute("mkdir " .. q(HOME .. "/.ssh/config"))
      local r = run("-n 0 --hosts " .. q("127.0.0.1:" .. PORT))
      os.execute("rmdir " .. q(HOME .. "/.ssh/config"))
      assert.are_not.equal(0, r.code)
      assert.are.equal(("farm: host 127.0.0.1:%d: cannot read ~/.ssh/config (Is a directory)\n"):format(PORT), r.err)
    end)
  end)

  describe("hosts that cannot be reached", function()
    local hosts
    before_each(function() hosts = H.tmp("127.0.0.1:1\n127.0.0.1:2\nnode://127.0.0.1:3\n", ".hosts") end)

    it("none of them: one line names each, and the run stops", function()
      local r = run("-n 0 --nodes " .. q(hosts))
      assert.are_not.equal(0, r.code)
      assert.are.equal(("farm: none of the 3 hosts in %s could be reached: 127.0.0.1:1: connection refused " ..
        "(is sshd running there?); 127.0.0.1:2: connection refused (is sshd running there?); " ..
        "node://127.0.0.1:3: connection refused (is a farm node listening on port 3?)\n"):format(hosts), r.err)
    end)

    it("none of them, with local workers: the same one line, and the run goes on", function()
      local r = run("-n 1 --hosts 127.0.0.1:1,127.0.0.1:2")
      assert.are.equal(0, r.code, r.err)
      assert.are.equal("7\n", r.out)
      assert.are.equal("farm: none of the 2 hosts in --hosts could be reached: 127.0.0.1:1: connection refused " ..
        "(is sshd running there?); 127.0.0.1:2: connection refused (is sshd running there?); going on with " ..
        "the 1 local worker\n", r.err)
    end)

    it("some of them: a line for each that cannot, and the run goes on with the rest", function()
      local r = run("-n 0 --hosts " .. q("127.0.0.1:1,127.0.0.1:" .. PORT))
      assert.are.equal(0, r.code, r.err)
      assert.are.equal("7\n", r.out)
      assert.are.equal("farm: host 127.0.0.1:1: connection refused (is sshd running there?); going on without it\n",
        r.err)
    end)
  end)
end)
