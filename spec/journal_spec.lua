-- journal_spec.lua -- `farm run SCRIPT --journal FILE`: a run that survives its
-- client. A journaled run SIGKILLed half way and run again prints what a run
-- without a journal prints, and no job whose result was recorded runs again
-- (the jobs' side effects are counted); a third run runs no job. Journals of
-- another script, other arguments, damaged ones, and ones that cannot be made
-- are said in one line. Real `farm run` processes, real SIGKILL.
local H = require "helper"

local q = H.quote

-- Each job appends its id to the side-effect file $JSIDE when it starts, sleeps
-- a little, and returns id * $JSCALE (ids 7, 57, ... fail with an error); the
-- script prints every result in order, then how many events of each kind it had
-- (a job taken from the journal has them too).
local SCRIPT = [[
io.stdout:setvbuf("line")
local side, n = os.getenv("JSIDE"), tonumber(os.getenv("JN"))
local scale = tonumber(os.getenv("JSCALE") or "1")
local events = {}
farm.on_event(function(ev) events[ev.event] = (events[ev.event] or 0) + 1 end)
local fs = {}
for i = 1, n do
  fs[i] = farm.submit(function(id, path, k)
    local f = assert(io.open(path, "a"))
    f:write(id, "\n")
    f:close()
    os.execute("sleep 0.03")
    if id % 50 == 7 then error("job " .. id .. " failed on purpose", 0) end
    return id * k
  end, i, side, scale)
end
for i = 1, n do
  local ok, v = pcall(fs[i].result, fs[i])
  print(i, ok, ok and v or v.message)
end
farm.close()
print("events", events.job_started, events.job_done, events.job_failed)
]]

local function count_ids(path)
  local seen, lines = {}, 0
  for l in H.slurp(path):gmatch("[^\n]+") do
    lines = lines + 1
    seen[l] = (seen[l] or 0) + 1
  end
  return seen, lines
end

-- The records wholly in the journal at path (the format in core/journal.c:
-- a 112-byte header, then u32 length, body, 32-byte checksum).
local function records(path)
  local s, off, n = H.slurp(path), 113, 0
  while off + 4 <= #s + 1 do
    local len = string.unpack("<I4", s, off)
    if off + 4 + len + 32 > #s + 1 then break end
    off, n = off + 4 + len + 32, n + 1
  end
  return n, s
end

-- The pids of the processes below pid (two levels: workers and their children).
local function below(pid)
  local out = {}
  for _, parent in ipairs({ pid }) do
    local p = io.popen(H.tool("ps -o pid= --ppid " .. parent))
    for l in p:lines() do
      local c = tonumber(l)
      if c then
        out[#out + 1] = c
        local p2 = io.popen(H.tool("ps -o pid= --ppid " .. c))
        for l2 in p2:lines() do out[#out + 1] = tonumber(l2) end
        p2:close()
      end
    end
    p:close()
  end
  return out
end

describe("farm run --journal", function()
  local dir, script
  before_each(function()
    dir = H.sh("mktemp -d /tmp/farm-journal-XXXXXX").out:gsub("%s+$", "")
    script = H.write(dir .. "/jobs.lua", SCRIPT)
  end)
  after_each(function()
    os.execute("rm -rf " .. q(dir))
    H.cleanup()
  end)

  local function run(side, n, extra, env)
    return H.farm_cmd(("run %s -n 2 --quiet-jobs %s"):format(q(script), extra or ""), 120,
      ("JSIDE=%s JN=%d %s"):format(q(side), n, env or ""))
  end

  it("survives its client's SIGKILL: the run again prints the same, and no recorded job runs again", function()
    local n = 200
    local plain = run(dir .. "/side-plain", n)
    assert.are.equal(0, plain.code, plain.err)
    assert.are.equal(n + 1, H.lines(plain.out))
    assert.is_truthy(plain.out:find("\nevents\t200\t196\t4\n", 1, true), plain.out)
    assert.is_truthy(plain.out:find("7\tfalse\tjob 7 failed on purpose\n", 1, true), plain.out)

    local journal, side = dir .. "/run.journal", dir .. "/side"
    local killed_out = dir .. "/killed.out"
    local pid = tonumber(H.sh(("JSIDE=%s JN=%d exec %s run %s -n 2 --quiet-jobs --journal %s >%s 2>&1 & echo $!")
      :format(q(side), n, q(H.farm), q(script), q(journal), q(killed_out))).out)
    assert.is_truthy(H.wait_for(function()
      local _, lines = count_ids(side)
      return lines >= 60 and records(journal) >= 20
    end, 40), "the first run did not get going")
    local kids = below(pid)
    assert.is_true(#kids >= 2, "no workers seen below the client")
    os.execute("kill -KILL " .. pid)
    assert.is_true(H.wait_gone({ pid }, 10), "the client outlived SIGKILL")
    assert.is_true(H.wait_gone(kids, 15), "workers outlived their client")
    local _, started = count_ids(side)
    local recorded = records(journal)
    assert.is_true(started < n, "the run ended before it was killed")
    assert.is_true(recorded > 0 and recorded <= started)

    local again = run(side, n, "--journal " .. q(journal))
    assert.are.equal(0, again.code, again.err)
    assert.are.equal(plain.out, again.out)
    assert.are.equal("", again.err)
    local seen, lines = count_ids(side)
    local twice = 0
    for id = 1, n do
      local c = seen[tostring(id)]
      assert.is_truthy(c and c <= 2, "job " .. id .. " ran " .. tostring(c) .. " times")
      if c == 2 then twice = twice + 1 end
    end
    -- those started and not recorded ran again; a recorded one never did
    assert.are.equal(started - recorded, twice)
    -- a result the killed run's script had seen was durable by then: it did not run again
    local printed = 0
    for id in H.slurp(killed_out):gmatch("(%d+)\t[tf]") do
      printed = printed + 1
      assert.are.equal(1, seen[id], "job " .. id .. " was printed by the killed run, and ran again")
    end
    assert.is_true(printed > 0, "the killed run printed no result")
    assert.are.equal(n, records(journal))

    local third = run(side, n, "--journal " .. q(journal))
    assert.are.equal(0, third.code, third.err)
    assert.are.equal(plain.out, third.out)
    local _, lines3 = count_ids(side)
    assert.are.equal(lines, lines3)             -- no job ran at all
  end)

  it("replays a failed job as the same error, and cuts a torn last record off", function()
    local journal, side = dir .. "/j", dir .. "/side"
    local first = run(side, 10, "--journal " .. q(journal))
    assert.are.equal(0, first.code, first.err)
    assert.is_truthy(first.out:find("7\tfalse\tjob 7 failed on purpose\n", 1, true))
    local nrec, s = records(journal)
    assert.are.equal(10, nrec)
    H.write(journal, s:sub(1, #s - 5))          -- the client died writing the last one
    local again = run(side, 10, "--journal " .. q(journal))
    assert.are.equal(0, again.code, again.err)
    assert.are.equal(first.out, again.out)
    assert.are.equal("", again.err)
    local _, lines = count_ids(side)
    assert.are.equal(11, lines)                 -- only the job whose record was torn ran again
  end)

  it("refuses a journal of another script, or of other arguments, in one line before any job", function()
    local journal, side = dir .. "/j", dir .. "/side"
    assert.are.equal(0, run(side, 3, "--journal " .. q(journal)).code)
    local other = H.write(dir .. "/other.lua", SCRIPT .. "-- another script\n")
    local r = H.farm_cmd(("run %s -n 2 --journal %s"):format(q(other), q(journal)), 60,
      ("JSIDE=%s JN=3"):format(q(side)))
    assert.are.equal(2, r.code)
    assert.are.equal(1, H.lines(r.err), r.err)
    assert.is_truthy(r.err:find("^farm: journal " .. journal:gsub("%p", "%%%0") ..
      " was written by another script %(.*%); remove it or pass another %-%-journal\n$"), r.err)
    assert.are.equal("", r.out)
    r = run(side, 3, "--journal " .. q(journal) .. " -- an-argument")
    assert.are.equal(2, r.code)
    assert.are.equal(1, H.lines(r.err), r.err)
    assert.is_truthy(r.err:find("other arguments", 1, true), r.err)
    local _, lines = count_ids(side)
    assert.are.equal(3, lines)                  -- neither ran a job
  end)

  it("refuses a journal another run is using, in one line", function()
    local journal, side = dir .. "/j", dir .. "/side"
    local pid = H.bg(("JSIDE=%s JN=400 exec %s run %s -n 1 --quiet-jobs --journal %s")
      :format(q(side), q(H.farm), q(script), q(journal)))
    assert.is_truthy(H.wait_for(function() return records(journal) >= 1 end, 40), "the first run did not start")
    local kids = below(pid)
    local r = run(dir .. "/side2", 3, "--journal " .. q(journal))
    os.execute("kill " .. pid)
    assert.is_true(H.wait_gone({ pid }, 15) and H.wait_gone(kids, 15), "the first run outlived SIGTERM")
    assert.are.equal(2, r.code)
    assert.are.equal("farm: journal " .. journal ..
      " is in use by another farm run (wait for it to end, or pass another --journal)\n", r.err)
    assert.are.equal("", H.slurp(dir .. "/side2"))
  end)

  it("runs the jobs whose arguments changed, and says how many records matched nothing", function()
    local journal, side = dir .. "/j", dir .. "/side"
    assert.are.equal(0, run(side, 5, "--journal " .. q(journal)).code)
    local r = run(side, 5, "--journal " .. q(journal), "JSCALE=3")
    assert.are.equal(0, r.code, r.err)
    assert.is_truthy(r.out:find("5\ttrue\t15\n", 1, true), r.out)
    assert.are.equal("farm: journal " .. journal ..
      ": 5 recorded jobs did not match this run's calls (changed arguments?)\n", r.err)
    local _, lines = count_ids(side)
    assert.are.equal(10, lines)
  end)

  it("says a damaged record in the middle in one line naming the file, and runs nothing", function()
    local journal, side = dir .. "/j", dir .. "/side"
    assert.are.equal(0, run(side, 6, "--journal " .. q(journal)).code)
    local _, s = records(journal)
    local at = 112 + 40                         -- inside the first record's body
    H.write(journal, s:sub(1, at - 1) .. string.char(s:byte(at) ~ 0xff) .. s:sub(at + 1))
    local r = run(side, 6, "--journal " .. q(journal))
    assert.are.equal(2, r.code)
    assert.are.equal(1, H.lines(r.err), r.err)
    assert.is_truthy(r.err:find("farm: journal " .. journal .. " is damaged at byte 112", 1, true), r.err)
    assert.is_truthy(r.err:find("remove it", 1, true), r.err)
    local _, lines = count_ids(side)
    assert.are.equal(6, lines)
  end)

  it("says in one line that a journal cannot be made, is not a journal, or is not the user's alone", function()
    local side = dir .. "/side"
    local r = run(side, 2, "--journal " .. q(dir .. "/no/such/dir/j"))
    assert.are.equal(2, r.code)
    assert.are.equal(1, H.lines(r.err), r.err)
    assert.is_truthy(r.err:find("directory does not exist", 1, true), r.err)
    r = run(side, 2, "--journal " .. q(script))
    assert.are.equal(2, r.code)
    assert.is_truthy(r.err:find("is not a farm journal", 1, true), r.err)
    assert.are.equal(SCRIPT, H.slurp(script))   -- not written over
    local open_to_all = H.write(dir .. "/shared-journal", "")
    os.execute("chmod 666 " .. q(open_to_all))
    r = run(side, 2, "--journal " .. q(open_to_all))
    assert.are.equal(2, r.code)
    assert.is_truthy(r.err:find("may be written by others", 1, true), r.err)
    os.execute("ln -s " .. q(dir .. "/elsewhere") .. " " .. q(dir .. "/link"))
    r = run(side, 2, "--journal " .. q(dir .. "/link"))
    assert.are.equal(2, r.code)
    assert.are.equal(1, H.lines(r.err), r.err)
    assert.is_truthy(r.err:find("is a symbolic link", 1, true), r.err)
    r = run(side, 2, "--journal")
    assert.are.equal(2, r.code)
    assert.is_truthy(r.err:find("--journal needs a file", 1, true), r.err)
    local _, lines = count_ids(side)
    assert.are.equal(0, lines)
  end)
end)
