-- mutate.lua: the work of scripts/mutate.sh (which says what it does).
--
-- spec/mutants.txt holds one block per mutant:
--
--   @ ID  what the tired developer did
--   file:  core/buf.c
--   from:  if (r->err || n > farm__rd_left(r)) { rd_fail(r); return NULL; }
--   to:    if (r->err || n > farm__rd_left(r) + 1) { rd_fail(r); return NULL; }
--   tests: build/tests/test_wire spec/codec_spec.lua
--
-- "from" must occur exactly once in the file (else the mutant is reported as
-- stale: the code moved on, the list must follow); leading white space of
-- "from" and "to" after the label is not part of them. A literal "\n" in
-- them stands for a newline (so a mutant cannot hold the two characters
-- backslash and n of a C string: take text beside them). Lines starting with
-- # are comments.
local listfile = "spec/mutants.txt"
local want = {}
for _, a in ipairs(arg) do
  if a:match("%.txt$") then listfile = a else want[#want + 1] = a end
end
local TIME = tonumber(os.getenv("MUTATE_TIME") or "") or 120
local JOBS = os.getenv("MUTATE_JOBS") or "2"

local function sh(cmd) return os.execute(cmd) == true end
local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end
local function slurp(p) local f = assert(io.open(p, "rb")) local s = f:read("a") f:close() return s end
local function spit(p, s) local f = assert(io.open(p, "wb")) f:write(s) f:close() end

-- the list
local mutants, cur = {}, nil
local n = 0
for line in io.lines(listfile) do
  n = n + 1
  if line:match("^@") then
    cur = { id = line:match("^@%s*(%S+)"), what = line:match("^@%s*%S+%s*(.*)$") or "", line = n }
    mutants[#mutants + 1] = cur
  elseif line:match("^%s*#") or line:match("^%s*$") then
    -- a comment, or a blank line
  else
    local k, v = line:match("^(%a+):%s?%s*(.*)$")
    assert(cur and k, listfile .. ":" .. n .. ": not a mutant's line: " .. line)
    v = v:gsub("\\n", "\n")
    if k == "tests" then
      cur.tests = {}
      for t in v:gmatch("%S+") do cur.tests[#cur.tests + 1] = t end
    else
      cur[k] = v
    end
  end
end
local function chosen(m)
  if #want == 0 then return true end
  for _, p in ipairs(want) do
    local pat = "^" .. p:gsub("[%^%$%(%)%%%.%[%]%+%-]", "%%%0"):gsub("%*", ".*") .. "$"
    if m.id:match(pat) then return true end
  end
  return false
end

-- the scratch copy: the tree as it is now (uncommitted changes included), with
-- its plain build, whose timestamps are kept so that make rebuilds only what a
-- mutant touches
local tmp = os.getenv("TMPDIR") or "/tmp"
local p = io.popen("mktemp -d " .. q(tmp .. "/farm-mutate.XXXXXX"))
local scratch = p:read("l")
p:close()
assert(scratch and scratch ~= "", "mktemp failed")
assert(sh("tar -cf - --exclude=./build-asan --exclude=./build-fuzz --exclude=./.git . | tar -xf - -C " .. q(scratch)),
       "cannot copy the tree")
io.write("mutate: scratch copy in ", scratch, "; building it\n")
io.flush()
local function build()
  return sh("cd " .. q(scratch) .. " && make -j" .. JOBS .. " all >" .. q(scratch .. "/mutate-build.log") .. " 2>&1")
end
assert(build(), "the unmutated tree does not build: see " .. scratch .. "/mutate-build.log")

local caught, survived, broken, stale, total = {}, {}, {}, {}, 0
local t_all = os.time()
for _, m in ipairs(mutants) do
  if chosen(m) then
    total = total + 1
    local path = scratch .. "/" .. m.file
    local ok_read, orig = pcall(slurp, path)
    local at = ok_read and orig:find(m.from, 1, true)
    local again = at and orig:find(m.from, at + 1, true)
    if not m.tests or #m.tests == 0 or not at or again then
      stale[#stale + 1] = m
      io.write(string.format("%-28s STALE    (%s)\n", m.id,
        not (m.tests and #m.tests > 0) and "no tests named" or not at and "text not found in " .. m.file
        or "text found twice in " .. m.file))
    else
      spit(path, orig:sub(1, at - 1) .. m.to .. orig:sub(at + #m.from))
      local t0 = os.time()
      local verdict, by
      if not build() then
        verdict = "NO BUILD"
        broken[#broken + 1] = m
      else
        for _, t in ipairs(m.tests) do
          -- a failure or a run out of time catches it (prove exits nonzero)
          local cmd = string.format("cd %s && timeout -k 5 %d sh scripts/test.sh build %s >%s 2>&1",
            q(scratch), TIME, q(t), q(scratch .. "/mutate-test.log"))
          if not sh(cmd) then
            -- which assertion: the first "not ok" line, else the run's last words
            local log = slurp(scratch .. "/mutate-test.log")
            local line = log:match("\n(not ok [^\n]*)") or log:match("([^\n]*)\n*$") or ""
            by = t .. ": " .. line:sub(1, 100)
            break
          end
        end
        verdict = by and "caught" or "SURVIVED"
        if by then caught[#caught + 1] = m else survived[#survived + 1] = m end
      end
      io.write(string.format("%-28s %-8s %4ds  %s%s\n", m.id, verdict, os.time() - t0,
        by and ("by " .. by) or table.concat(m.tests, " "), m.what ~= "" and "  -- " .. m.what or ""))
      io.flush()
      spit(path, orig)
      -- back to the original bytes, and newer than the mutant's objects
      sh("touch " .. q(path))
    end
  end
end
if os.getenv("KEEP") then io.write("mutate: kept ", scratch, "\n") else sh("rm -rf " .. q(scratch)) end
local judged = #caught + #survived
io.write(string.format("\nmutate: %d mutants: %d caught, %d survived, %d did not build, %d stale; " ..
  "score %d/%d (%.0f%%) in %d s\n", total, #caught, #survived, #broken, #stale, #caught, judged,
  judged > 0 and 100 * #caught / judged or 0, os.time() - t_all))
for _, m in ipairs(survived) do io.write("  survived: ", m.id, " (", m.file, ") ", m.what, "\n") end
os.exit((#survived + #broken + #stale) == 0 and 0 or 1)
