-- status_spec.lua -- the live status page (issue 21): `farm run --status` and
-- `farm node --status` serve /status.json, /status.txt and a page that a real
-- headless Chromium renders; `farm status` prints the table; the page is
-- read-only, loopback unless keyed, and keyed pages give nothing without the
-- token. The runs are held at gates (files the test makes) so that what is
-- read while they go on does not depend on timing.
local H = require "helper"

local q = H.quote
local wait_for = H.wait_for

local dir, started

local function curl(args)
  return H.sh(H.tool("curl -s -m 20 " .. args))
end

local function num(json, field) return tonumber(json:match('"' .. field .. '":(%d+)')) end

local function json_of(port, extra)
  local r = curl(("-w '\\n%%{http_code}' %s 'http://127.0.0.1:%d/status.json'"):format(extra or "", port))
  local body, code = r.out:match("^(.*)\n(%d+)$")
  return body or "", tonumber(code)
end

-- 2 jobs that fail, then 200 that spin a few ms: 1..50 at once, 51..150 once
-- gate1 exists, 151..200 once gate2 does
local SCRIPT = [[
local gate1, gate2 = ...
local fs = {}
for i = 1, 2 do
  fs[#fs + 1] = farm.submit(function(i) error("planned failure " .. i) end, i)
end
for i = 1, 200 do
  fs[#fs + 1] = farm.submit(function(i, g1, g2)
    local gate = i > 150 and g2 or i > 50 and g1 or nil
    while gate and not io.open(gate) do os.execute("sleep 0.02") end
    local t = os.clock() + 0.003
    while os.clock() < t do end
    return i
  end, i, gate1, gate2)
end
local failed = 0
for _, f in ipairs(fs) do if not pcall(f.result, f) then failed = failed + 1 end end
print("failed " .. failed)
]]

--- farm run of SCRIPT in the background with extra options; its files dir/NAME.{out,err,rc}
local function run_bg(name, extra)
  local script = H.write(dir .. "/" .. name .. ".lua", SCRIPT)
  local pid = H.bg(("cd %s && { timeout -k 3 120 %s run %s --no-progress %s -- %s %s >%s.out 2>%s.err; echo $? >%s.rc; }")
    :format(q(dir), q(H.farm), q(script), extra, q(dir .. "/" .. name .. ".g1"), q(dir .. "/" .. name .. ".g2"),
            name, name, name))
  started[#started + 1] = pid
  return name
end

local function open_gate(name, g) H.write(dir .. "/" .. name .. "." .. g, "") end

local function finished(name)
  return wait_for(function() return H.slurp(dir .. "/" .. name .. ".rc") ~= "" end, 120)
end

describe("farm run --status", function()
  local port
  before_each(function()
    dir = H.sh("mktemp -d /tmp/farm-status-XXXXXX").out:gsub("%s+$", "")
    started = {}
    port = 30000 + (H.pid * 13) % 20000
  end)
  after_each(function()
    for _, pid in ipairs(started) do os.execute("kill " .. pid .. " 2>/dev/null") end
    assert.is_true(H.wait_gone(started, 20), "a farm the test started still runs")
    os.execute("rm -rf " .. q(dir))
  end)

  it("serves the run's figures as JSON, a table and a page Chromium renders", function()
    local name = run_bg("a", ("-n 2 --status 127.0.0.1:%d"):format(port))
    -- the first 50 and the 2 failures are over, the rest wait at the gate
    local first = wait_for(function()
      local j = json_of(port)
      return num(j, "done") == 50 and num(j, "failed") == 2 and j
    end, 60)
    assert.is_truthy(first, "no figures: " .. H.slurp(dir .. "/a.err"))
    assert.are.equal(202, num(first, "total"))
    assert.is_truthy(first:find('"nodes":[{"name":"local","kind":"local","state":"up","workers":2,', 1, true), first)
    assert.is_truthy(first:find('"message":"[^"]*planned failure 1"'), first)
    assert.is_truthy(first:find('"traceback":"stack traceback:', 1, true), first)
    for _, f in ipairs({ "running", "rate", "eta", "busy" }) do
      assert.is_truthy(first:find('"' .. f .. '":'), f .. " missing: " .. first)
    end

    -- the table in the terminal
    local t = H.farm_cmd(("status 127.0.0.1:%d"):format(port))
    assert.are.equal(0, t.code, t.err)
    assert.is_truthy(t.out:find("50 of 202 done", 1, true), t.out)
    assert.is_truthy(t.out:find("\nlocal%s+up%s+2%s"), t.out)
    assert.is_truthy(t.out:find("planned failure 2", 1, true), t.out)

    -- the page, in a real browser: its DOM has the figures, a screenshot is taken
    local chrome = "timeout -k 5 90 chromium --headless --no-sandbox --disable-gpu --user-data-dir="
      .. q(dir .. "/chrome") .. " --virtual-time-budget=3000 "
    local url = ("http://127.0.0.1:%d/"):format(port)
    local dom = H.sh(H.tool(chrome .. "--dump-dom " .. url), 120)
    assert.is_truthy(dom.out:find('id="total">202<', 1, true), dom.out .. dom.err)
    assert.is_truthy(dom.out:find('id="done">50<', 1, true), dom.out)
    assert.is_truthy(dom.out:find('<tr class="node"><td>local</td><td>up</td><td>2</td>', 1, true), dom.out)
    assert.is_truthy(dom.out:find("planned failure 1", 1, true), dom.out)
    assert.is_truthy(dom.out:find("stack traceback:", 1, true), dom.out)
    local shot = dir .. "/shot.png"
    local s = H.sh(H.tool(chrome .. "--window-size=1000,800 --screenshot=" .. q(shot) .. " " .. url), 120)
    local png = H.slurp(shot)
    assert.is_true(#png > 5000, "screenshot: " .. #png .. " bytes; " .. s.err)
    assert.are.equal("\137PNG\r\n\26\n", png:sub(1, 8))

    -- more are done once the gate opens
    open_gate(name, "g1")
    local second = wait_for(function()
      local j = json_of(port)
      return (num(j, "done") or 0) > 50 and j
    end, 60)
    assert.is_truthy(second)
    assert.are.equal(202, num(second, "total"))

    -- read-only: other methods and paths get nothing
    local post = curl(("-o /dev/null -w '%%{http_code}' -X POST -d x=1 http://127.0.0.1:%d/status.json"):format(port))
    assert.are.equal("405", post.out)
    local other = curl(("-o /dev/null -w '%%{http_code}' http://127.0.0.1:%d/etc/passwd"):format(port))
    assert.are.equal("404", other.out)

    open_gate(name, "g2")
    assert.is_true(finished(name))
    assert.are.equal("0", H.slurp(dir .. "/a.rc"):match("%d+"), H.slurp(dir .. "/a.err"))
    assert.are.equal("failed 2\n", H.slurp(dir .. "/a.out"))
    -- the page went with the run
    assert.are_not.equal("200", curl(("-o /dev/null -w '%%{http_code}' http://127.0.0.1:%d/"):format(port)).out)
  end)

  it("with --status-token gives nothing without the key's token", function()
    local key = dir .. "/key"
    assert.are.equal(0, H.farm_cmd("keygen " .. q(key)).code)
    local name = run_bg("b", ("-n 1 --status 127.0.0.1:%d --status-token --key-file %s"):format(port, q(key)))
    local u = H.farm_cmd(("status 127.0.0.1:%d --url --key-file %s"):format(port, q(key)))
    local token = u.out:match("#token=(%x+)\n$")
    assert.are.equal(64, token and #token, u.out)
    assert.is_truthy(wait_for(function() return select(2, json_of(port)) == 401 end, 60), H.slurp(dir .. "/b.err"))
    local wrong = token:sub(1, 63) .. (token:sub(64) == "0" and "1" or "0")
    for _, extra in ipairs({ "", "-H 'Authorization: Bearer " .. wrong .. "'", "-G -d token=" .. wrong,
                             "-G -d token=" .. token:sub(1, 32) }) do
      local body, code = json_of(port, extra)
      assert.are.equal(401, code, extra)
      assert.is_falsy(body:find("total", 1, true), body)
      local txt = curl(("-w '\\n%%{http_code}' %s http://127.0.0.1:%d/status.txt"):format(extra, port))
      assert.is_truthy(txt.out:find("\n401$"), txt.out)
      assert.is_falsy(txt.out:find("done", 1, true), txt.out)
    end
    local body, code = json_of(port, "-G -d token=" .. token)
    assert.are.equal(200, code, body)
    assert.are.equal(202, num(body, "total"))
    body, code = json_of(port, "-H 'Authorization: Bearer " .. token .. "'")
    assert.are.equal(200, code, body)
    -- farm status: refused without the key, the table with it
    local no = H.farm_cmd(("status 127.0.0.1:%d"):format(port), nil, "unset FARM_KEY_FILE;")
    assert.are.equal(2, no.code)
    assert.are.equal(1, H.lines(no.err), no.err)
    assert.is_truthy(no.err:find("--key-file", 1, true), no.err)
    local yes = H.farm_cmd(("status 127.0.0.1:%d --key-file %s"):format(port, q(key)))
    assert.are.equal(0, yes.code, yes.err)
    assert.is_truthy(yes.out:find("of 202 done", 1, true), yes.out)
    -- the page itself holds no figure: it asks for the token (Chromium, no token)
    local dom = H.sh(H.tool("timeout -k 5 90 chromium --headless --no-sandbox --disable-gpu --user-data-dir="
      .. q(dir .. "/chrome") .. (" --virtual-time-budget=3000 --dump-dom http://127.0.0.1:%d/"):format(port)), 120)
    assert.is_truthy(dom.out:find('id="auth" style="display: block;"', 1, true), dom.out .. dom.err)
    assert.is_truthy(dom.out:find('id="total">0<', 1, true), dom.out)
    open_gate(name, "g1")
    open_gate(name, "g2")
    assert.is_true(finished(name))
    assert.are.equal("0", H.slurp(dir .. "/b.rc"):match("%d+"), H.slurp(dir .. "/b.err"))
  end)

  it("is not held by strangers' idle connections: they time out, and the run ends with them open", function()
    local name = run_bg("d", ("-n 1 --status 127.0.0.1:%d"):format(port))
    assert.is_truthy(wait_for(function() return num(json_of(port), "done") == 50 end, 60), H.slurp(dir .. "/d.err"))
    -- 24 connections that say nothing, from this address: past the caps
    local holder = H.bg(H.tool(("bash -c 'for i in $(seq 24); do exec {fd}<>/dev/tcp/127.0.0.1/%d || true; done; "
      .. "echo held > %s; sleep 60'"):format(port, q(dir .. "/held"))))
    started[#started + 1] = holder
    assert.is_truthy(wait_for(function() return H.slurp(dir .. "/held") ~= "" end, 30))
    -- they are dropped when idle too long: the page answers again, with the holder alive
    assert.is_truthy(wait_for(function() return select(2, json_of(port)) == 200 end, 60))
    assert.is_true(H.alive(holder))
    local again = H.bg(H.tool(("bash -c 'for i in $(seq 24); do exec {fd}<>/dev/tcp/127.0.0.1/%d || true; done; "
      .. "echo held > %s; sleep 60'"):format(port, q(dir .. "/held2"))))
    started[#started + 1] = again
    assert.is_truthy(wait_for(function() return H.slurp(dir .. "/held2") ~= "" end, 30))
    open_gate(name, "g1")
    open_gate(name, "g2")
    assert.is_true(finished(name))
    assert.are.equal("0", H.slurp(dir .. "/d.rc"):match("%d+"), H.slurp(dir .. "/d.err"))
  end)

  it("refuses a non-loopback address without a key, and bad addresses, in one line", function()
    local script = H.write(dir .. "/x.lua", "print('ran')")
    for _, case in ipairs({
      { "--status 0.0.0.0:" .. port, "--key-file" },
      { "--status 10.1.2.3:" .. port, "--key-file" },
      { "--status 127.0.0.1:99999", "PORT or HOST:PORT" },
      { "--status nohost:80", "PORT or HOST:PORT" },
      { "--status", "needs an address" },
      { "--status-token --status 127.0.0.1:" .. port, "--key-file" },
    }) do
      local r = H.farm_cmd("run " .. q(script) .. " " .. case[1], nil, "unset FARM_KEY_FILE;")
      assert.are.equal(2, r.code, case[1])
      assert.are.equal(1, H.lines(r.err), r.err)
      assert.is_truthy(r.err:find(case[2], 1, true), r.err)
      assert.are.equal("", r.out)
    end
    local none = H.farm_cmd(("status 127.0.0.1:%d"):format(port))
    assert.are.equal(1, none.code)
    assert.are.equal(1, H.lines(none.err), none.err)
    assert.is_truthy(none.err:find("cannot reach 127.0.0.1:" .. port, 1, true), none.err)
    local n = H.farm_cmd(("node --listen tcp://127.0.0.1:%d --status 0.0.0.0:%d"):format(port, port + 1), 30,
                         "unset FARM_KEY_FILE;")
    assert.are.equal(2, n.code)
    assert.are.equal(1, H.lines(n.err), n.err)
    assert.is_truthy(n.err:find("--key-file", 1, true), n.err)
  end)
end)

describe("farm node --status", function()
  local bed = H.node_bed("status", 27000)
  before_each(function()
    bed.setup()
    dir = bed.dir
    started = {}
  end)
  after_each(function()
    for _, pid in ipairs(started) do os.execute("kill " .. pid .. " 2>/dev/null") end
    assert.is_true(H.wait_gone(started, 20), "a client the test started still runs")
    bed.teardown()
  end)

  it("lists the clients it serves, with their workers and jobs", function()
    local sport = bed.port + 1
    local node = bed.start(("--status 127.0.0.1:%d"):format(sport))
    local hosts = ("-n 0 --hosts node://127.0.0.1:%d --key-file %s"):format(bed.port, q(bed.key))
    run_bg("c1", hosts .. (" --status 127.0.0.1:%d"):format(sport + 1))
    run_bg("c2", hosts)
    -- both clients are served, each held at its first gate
    local j = wait_for(function()
      local body = json_of(sport)
      local n = 0
      for _ in body:gmatch('"name":"[^"]*pid %d+","workers":%d+,"active":%a+,"done":50,"failed":2}') do n = n + 1 end
      return n == 2 and body
    end, 45)                       -- (under run-test's 60 s: a failure says what it saw)
    assert.is_truthy(j, json_of(sport) .. H.slurp(bed.log) .. H.slurp(dir .. "/c1.err") .. H.slurp(dir .. "/c2.err"))
    assert.is_truthy(j:find('"kind":"node"', 1, true), j)
    assert.is_truthy(j:find('"nodes":[{"name":"127.0.0.1:' .. bed.port .. '","kind":"node","state":"up","workers":2,',
                            1, true), j)
    assert.are.equal(100, num(j, "done"))
    assert.are.equal(4, num(j, "failed"))
    -- a client's own page has the node as a row of its own, serving two clients
    local c = wait_for(function()
      local body = json_of(sport + 1)
      return body:find('"clients":2}', 1, true) and body
    end, 30)
    assert.is_truthy(c, json_of(sport + 1))
    assert.is_truthy(c:find('{"name":"node://127.0.0.1:' .. bed.port .. '","kind":"node","state":"up","workers":%d+,'), c)
    assert.is_falsy(c:find('"name":"local"', 1, true), c)
    local t = H.farm_cmd(("status %d"):format(sport))
    assert.are.equal(0, t.code, t.err)
    assert.is_truthy(t.out:find("CLIENT", 1, true), t.out)
    local rows = 0
    for _ in t.out:gmatch("\n[^\n]*pid %d+%s+%d+%s+%a+%s+50%s+2") do rows = rows + 1 end
    assert.are.equal(2, rows, t.out)
    for _, c in ipairs({ "c1", "c2" }) do open_gate(c, "g1"); open_gate(c, "g2") end
    for _, c in ipairs({ "c1", "c2" }) do
      assert.is_true(finished(c))
      assert.are.equal("0", H.slurp(dir .. "/" .. c .. ".rc"):match("%d+"), H.slurp(dir .. "/" .. c .. ".err"))
    end
    -- SIGTERM still reaches the lobby (the page's thread takes no signal): it
    -- stops as it should, and its page with it
    os.execute("kill " .. node)
    assert.is_true(H.wait_gone({ node }, 20))
    assert.is_truthy(H.slurp(bed.log):find("farm node[" .. node .. "] info: Terminated: stopping", 1, true),
      H.slurp(bed.log))
    assert.are_not.equal("200", curl(("-o /dev/null -w '%%{http_code}' http://127.0.0.1:%d/"):format(sport)).out)
  end)
end)
