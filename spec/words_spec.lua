-- words_spec.lua -- what the seeds' users expect of farm's API and its words
-- (issue 17): each driven as a user would, by `farm run` of a script.
local H = require "helper"

-- the script's name as Lua's messages show it ("/tmp/lua_x.lua")
local function src(r) return r.script end

-- a job that spins s seconds of CPU
local SPIN = "local function spin(s) local t = os.clock() while os.clock() - t < s do end end\n"

describe("farm.wait with no futures (pp's wait())", function()
  after_each(H.cleanup)

  it("waits for every job submitted so far, kept or not, and says whether all ended", function()
    local r = H.run_script(SPIN .. [[
      local kept = {}
      for i = 1, 3 do kept[i] = farm.submit(function(i) spin(0.3); return i end, i) end
      farm.submit(function() spin(0.3) end)            -- not kept
      print(farm.wait())
      for i = 1, 3 do io.write(kept[i]:status(), " ") end
      print(farm.stats().outstanding)
      local long = farm.submit(function() spin(1.5) end)
      print(farm.wait { timeout = 0.2 }, long:status())
      print(farm.wait { timeout = math.huge }, long:status())
      local p = farm.new { workers = 1 }
      local g = p:submit(function() spin(0.3); return 5 end)
      print(p:wait(), g:status())
    ]], "-n 2")
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("true\ndone done done 0\nfalse\trunning\ntrue\tdone\ntrue\tdone\n", r.out)
  end)

  it("refuses what it cannot do without futures, with the words that fix it", function()
    local r = H.run_script([[
      print(pcall(farm.wait, { return_when = "first" }))
      print(pcall(farm.wait, { timout = 1 }))
    ]])
    assert.are.equal(0, r.code, r.err)
    assert.is_truthy(r.out:find('farm.wait: return_when = "first" needs a list of futures', 1, true), r.out)
    assert.is_truthy(r.out:find("'timout' is neither", 1, true), r.out)
  end)

  it("print_stats after farm.close() still prints what the run did", function()
    local r = H.run_script([[
      for i = 1, 4 do farm.submit(function() return 1 end):result() end
      farm.close()
      farm.print_stats()
      print("jobs", farm.stats().jobs)
    ]], "-n 2")
    assert.are.equal(0, r.code, r.err)
    assert.is_truthy(r.out:find("jobs\t4\n", 1, true), r.out)
    local counted = 0
    for n in r.out:gmatch("\n%s+(%d+) |[^\n]*%(pid %d+%)") do counted = counted + tonumber(n) end
    assert.are.equal(4, counted, r.out)
  end)
end)

describe("waiting without end, as SCOOP's users spell it", function()
  after_each(H.cleanup)

  it("takes nil and math.huge as no bound, in wait, as_completed and result", function()
    local r = H.run_script(SPIN .. [[
      local fs = {}
      for i = 1, 3 do fs[i] = farm.submit(function(i) spin(0.1); return i end, i) end
      local done, pending = farm.wait(fs, { timeout = math.huge })
      print(#done, #pending)
      done = farm.wait(fs, { timeout = nil })
      print(#done)
      local n = 0
      for f in farm.as_completed(fs, math.huge) do n = n + f:result(math.huge) end
      print(n)
    ]])
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("3\t0\n3\n6\n", r.out)
  end)

  it("refuses -1 (SCOOP's own spelling) naming the script's line and the spellings that mean it", function()
    local words = "timeout must be a number of seconds, 0 or more; to wait without end, "
      .. "give none (nil) or math.huge (got -1)"
    for _, call in ipairs({ "farm.wait { timeout = -1 }", "farm.wait({ f }, { timeout = -1 })",
                            "f:result(-1)", "farm.as_completed({ f }, -1)" }) do
      local r = H.run_script("local f = farm.submit(function() return 1 end)\n" .. call .. "\n")
      assert.are.equal(1, r.code, call)
      assert.is_truthy(r.err:find(src(r) .. ":2: ", 1, true), call .. ": " .. r.err)
      assert.is_truthy(r.err:find(words, 1, true), call .. ": " .. r.err)
      assert.are.equal(1, H.lines(r.err), r.err)
    end
  end)
end)

describe("fields a script sets on a future", function()
  after_each(H.cleanup)

  it("are kept and read back (f.id = i, as dispy's users write), and break nothing", function()
    local r = H.run_script([[
      local fs = {}
      for i = 1, 4 do
        local f = farm.submit(function(x) return x * x end, i)
        f.id = 100 + i
        f.item = { i }
        fs[i] = f
      end
      local done = farm.wait(fs)
      local out = {}
      for _, f in ipairs(done) do
        out[#out + 1] = ("%d:%d:%d:%s"):format(f.id, f.item[1], f:result(), f:status())
      end
      table.sort(out)
      print(table.concat(out, " "), #done, tostring(fs[1]):match("^farm.future%(%d+, done%)$") ~= nil)
      fs[1].id = nil
      print(math.type(fs[1]:id()), fs[2].node, fs[2].attempts)
    ]])
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("101:1:1:done 102:2:4:done 103:3:9:done 104:4:16:done\t4\ttrue\ninteger\tlocal\t1\n", r.out)
  end)
end)

describe("a value that cannot travel", function()
  after_each(H.cleanup)

  local cases = {
    { "farm.submit(function(a) return a end, io.stdout)", "cannot ship argument 1 (userdata)" },
    { "farm.submit_with({ retries = 1 }, function(a) return a end, io.stdout)",
      "cannot ship argument 1 (userdata)" },
    { "local h = io.stdout\nfarm.submit(function() return h end)", "cannot ship upvalue 'h' (userdata)", 3 },
    { "farm.map(function(a) return a end, { coroutine.create(print) })", "cannot ship argument 2[1] (thread)" },
    { "for _ in farm.imap(function(a) return a end, { io.stdout }) do end", "cannot ship argument 2[1] (userdata)" },
    { "farm.map_reduce(function(a) return a end, math.max, { io.stdout })", "cannot ship argument 3[1] (userdata)" },
    { "farm.map_reduce(function(a) return a end, math.max, { 1 }, { init = io.stdout })",
      "cannot ship option init (userdata)" },
  }
  for _, case in ipairs(cases) do
    it("names the script's line, never farm.lua's: " .. case[1]:gsub("\n", "; "), function()
      local line = case[3] or 2
      local r = H.run_script("local x = 1\n" .. case[1] .. "\n")
      assert.are.equal(1, r.code, r.err)
      assert.is_truthy(r.err:find("farm: " .. src(r) .. ":" .. line .. ": " .. case[2], 1, true), r.err)
      assert.is_falsy(r.err:find("farm.lua", 1, true), r.err)
      assert.are.equal(1, H.lines(r.err), r.err)
    end)
  end
end)

describe("a directory given as the key file", function()
  local dir
  before_each(function() dir = H.sh("mktemp -d").out:gsub("%s+$", "") end)
  after_each(function() os.execute("rmdir " .. H.quote(dir)); H.cleanup() end)

  it("is a directory, in farm run, farm.new and farm node, never chmod", function()
    local runs = {
      H.run_script("print(1)", "--hosts node://127.0.0.1:1 --key-file " .. H.quote(dir)),
      H.run_script(("farm.new { hosts = 'node://127.0.0.1:1', key_file = %q }:submit(print)"):format(dir)),
      H.farm_cmd("node --listen tcp://127.0.0.1:1 --key-file " .. H.quote(dir), 30),
    }
    for _, r in ipairs(runs) do
      assert.are_not.equal(0, r.code)
      assert.is_truthy(r.err:find(("key file '%s' is a directory; give the key file itself"):format(dir), 1, true), r.err)
      assert.is_falsy(r.err:find("chmod", 1, true), r.err)
      assert.are.equal(1, H.lines(r.err), r.err)
    end
  end)
end)

describe("a job stopped by its own timeout", function()
  after_each(H.cleanup)

  it("has err.timeout == true, as a timed-out wait does; a job that fails otherwise has none", function()
    local r = H.run_script([[
      local f = farm.submit_with({ timeout = 0.3 }, function() while true do end end)
      local ok, e = pcall(f.result, f)
      print(ok, e.timeout, e.message)
      local g = farm.submit(function() error("boom") end)
      local _, e2 = pcall(g.result, g)
      print(e2.timeout)
      local h = farm.submit(function() while true do end end)
      local _, e3 = pcall(h.result, h, 0.1)
      print(e3.timeout)
      h:cancel { force = true }
    ]])
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("false\ttrue\tthe job timed out after 0.3 s and was stopped\nnil\ntrue\n", r.out)
  end)
end)

describe("a job stopped by its own timeout on a node", function()
  after_each(H.cleanup)

  it("has err.timeout == true too (the node stopped it, and said so)", function()
    local port = 26000 + H.pid % 4000
    local node = H.bg(("%s node --listen tcp://127.0.0.1:%d -w 1 --idle-timeout 60"):format(H.quote(H.farm), port))
    finally(function()
      os.execute("kill " .. node)
      assert.is_true(H.wait_gone({ node }, 15), "the node lives on")
    end)
    assert.is_truthy(H.wait_for(function()
      return H.sh(H.tool("ss -Hltn 'sport = :" .. port .. "'")).out:find(":" .. port, 1, true)
    end), "the node does not listen on " .. port)
    local r = H.run_script([[
      local f = farm.submit_with({ timeout = 0.3 }, function() while true do end end)
      local ok, e = pcall(f.result, f)
      print(ok, e.timeout, e.message, f.node)
    ]], ("-n 0 --hosts node://127.0.0.1:%d"):format(port), 60, "unset FARM_KEY_FILE;")
    assert.are.equal(0, r.code, r.err)
    assert.are.equal(("false\ttrue\tthe job timed out after 0.3 s and was stopped\tnode://127.0.0.1:%d\n")
      :format(port), r.out)
  end)
end)

describe("jobs that failed and were never read", function()
  after_each(H.cleanup)

  it("are told at the end of farm run in one line: their count and the first error", function()
    local r = H.run_script([[
      local kept = {}
      for i = 1, 3 do kept[i] = farm.submit(function(i) error("bad " .. i) end, i) end
      farm.submit(function() error("dropped") end)     -- not even kept
      local read = farm.submit(function() error("read") end)
      pcall(read.result, read)
      farm.submit(function() return 1 end)
      farm.map(function(x) return x end, { 1, 2 })
    ]], "-n 2")
    assert.are.equal(0, r.code, r.err)
    assert.are.equal(1, H.lines(r.err), r.err)
    assert.is_truthy(r.err:find("^farm: 4 jobs failed and their errors were never read %(future:result%(%) "
      .. "reads it%); the first, job 1: " .. src(r):gsub("%p", "%%%0") .. ":2: bad 1\n$"), r.err)
  end)

  it("are not told when the script read every error, or when none failed", function()
    local r = H.run_script([[
      local f = farm.submit(function() error("x") end)
      print(pcall(f.result, f))
      farm.submit(function() return 1 end)
    ]])
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("", r.err)
  end)
end)

describe("inside a job", function()
  after_each(H.cleanup)

  it("farm.new{}, farm.close() and farm.config{} fail at once, saying what to do", function()
    local r = H.run_script([[
      local f = farm.submit(function()
        local out = {}
        for _, call in ipairs({ function() return farm.new {} end, function() return farm.close() end,
                                function() return farm.config { workers = 2 } end,
                                function() return farm.wait() end }) do
          local ok, e = pcall(call)
          out[#out + 1] = tostring(ok) .. " " .. tostring(e)
        end
        return table.concat(out, "\n")
      end)
      print(f:result())
    ]])
    assert.are.equal(0, r.code, r.err)
    assert.is_truthy(r.out:find("false farm.new: a job cannot start a pool of its own", 1, true), r.out)
    assert.is_truthy(r.out:find("false farm.close: a job cannot close the pool it runs in", 1, true), r.out)
    assert.is_truthy(r.out:find("false farm.config: a job cannot configure the pool it runs in", 1, true), r.out)
    assert.is_truthy(r.out:find("false farm.wait: a job waits for its own jobs by their futures", 1, true), r.out)
  end)
end)

describe("the man page", function()
  -- ppserver's -r, named in farm node --help as what --restart-workers is like
  local NOT_FARMS = { ["-r"] = true }

  it("documents every option that farm --help, farm node --help and farm repl --help show", function()
    local documented = {}
    for line in io.lines("scripts/farm.1") do
      if line:match("^%.B[IR]? ") then                  -- an option named in bold
        for opt in line:gsub("\\%-", "-"):gmatch("%f[%w%-]%-%-?%a[%w%-]*") do documented[opt] = true end
      end
    end
    local missing, seen = {}, 0
    for _, cmd in ipairs({ "--help", "node --help", "repl --help" }) do
      local r = H.farm_cmd(cmd)
      assert.are.equal(0, r.code, r.err)
      for opt in r.out:gmatch("%f[%w%-]%-%-?%a[%w%-]*") do
        seen = seen + 1
        if not documented[opt] and not NOT_FARMS[opt] then missing[#missing + 1] = cmd .. ": " .. opt end
      end
    end
    assert.is_true(seen > 30, "options found in --help: " .. seen)
    assert.is_true(documented["--dest"] and documented["--max-file"])
    assert.are.same({}, missing)
  end)
end)
