-- collect_spec.lua -- more ways to collect (issue 11): farm.imap (in order,
-- lazily, in bounded memory), farm.map_unordered, farm.map_reduce (the folds
-- on the workers) and map's chunksize, through `farm run` on real workers.
local H = require "helper"

local function run(text, args, timeout)
  local r = H.run_script(text, args or "-n 2", timeout or 120)
  assert.are.equal(0, r.code, r.err)
  return r
end

describe("farm.imap", function()
  after_each(H.cleanup)

  it("yields index and first result in order over 100,000 items", function()
    local r = run([[
      local list = {}
      for i = 1, 100000 do list[i] = i end
      local n, ok = 0, true
      for i, r in farm.imap(function(x) return x * 2 + 1, "dropped" end, list) do
        n = n + 1
        if i ~= n or r ~= 2 * n + 1 then ok = false end
      end
      print(n, ok)
    ]])
    assert.are.equal("100000\ttrue\n", r.out)
  end)

  it("runs 1,000,000 items from an iterator in bounded client memory", function()
    local r = run([[
      local N, k = 1000000, 0
      local function gen() k = k + 1; if k <= N then return k end end
      local n, sum, want, peak, most = 0, 0, 0, 0, 0
      for i, r in farm.imap(function(x) return x % 7 end, gen) do
        n = n + 1
        sum, want = sum + r, want + i % 7
        if i ~= n then error("out of order at " .. i) end
        if n % 5000 == 0 then
          peak = math.max(peak, collectgarbage("count"))
          most = math.max(most, farm.stats().outstanding)
        end
      end
      -- a table of a million results alone takes 16 MiB
      print(n, sum == want, peak < 6 * 1024, most <= 4 * farm.workers(), most > 0)
    ]])
    assert.are.equal("1000000\ttrue\ttrue\ttrue\ttrue\n", r.out)
  end)

  it("keeps only a window of a 1,000,000-item list in flight", function()
    local r = run([[
      local list = {}
      for i = 1, 1000000 do list[i] = i end
      collectgarbage(); collectgarbage()
      local base, grew, most, n = collectgarbage("count"), 0, 0, 0
      for i, r in farm.imap(function(x) return -x end, list, {window = 3}) do
        n = n + 1
        if r ~= -i then error("wrong result at " .. i) end
        if i % 100000 == 0 then
          collectgarbage()
          grew = math.max(grew, collectgarbage("count") - base)
          most = math.max(most, farm.stats().outstanding)
        end
      end
      print(n, grew < 4 * 1024, most <= 3)
    ]])
    assert.are.equal("1000000\ttrue\ttrue\n", r.out)
  end)

  it("stops the rest when the loop is left early", function()
    local log = os.tmpname()
    local r = run(([[
      local log = %q
      local list = {}
      for i = 1, 1000 do list[i] = i end
      local n = 0
      for i, r in farm.imap(function(x)
        local f = io.open(log, "a"); f:write(x, "\n"); f:close()
        local t = os.clock(); while os.clock() - t < 0.005 do end
        return x
      end, list, {chunksize = 1}) do
        n = n + 1
        if n == 5 then break end
      end
      local submitted = farm.stats().submitted
      while farm.stats().outstanding > 0 do os.execute("sleep 0.02") end
      local ran = 0
      for _ in io.lines(log) do ran = ran + 1 end
      print(n, submitted <= 5 + 4 * farm.workers(), ran < 100)
    ]]):format(log))
    os.remove(log)
    assert.are.equal("5\ttrue\ttrue\n", r.out)
  end)

  it("raises a job's error from the loop and stops the rest", function()
    local r = run([[
      local list = {}
      for i = 1, 500 do list[i] = i end
      local seen = 0
      local ok, err = pcall(function()
        for i, r in farm.imap(function(x) if x == 300 then error("bad item " .. x) end return x end,
                              list, {chunksize = 10}) do
          seen = i
        end
      end)
      print(ok, getmetatable(err) == farm.JobError, err.message:match("bad item 300") ~= nil, seen)
    ]])
    assert.are.equal("false\ttrue\ttrue\t290\n", r.out)
  end)

  it("zips several lists and iterators, stopping at the shortest", function()
    local r = run([[
      local k = 0
      local function letters() k = k + 1; if k <= 5 then return string.char(96 + k) end end
      local out = {}
      for i, r in farm.imap(function(a, b) return a .. b end, { 1, 2, 3, 4, 5, 6, 7 }, letters) do
        out[#out + 1] = i .. "=" .. r
      end
      print(table.concat(out, " "))
    ]])
    assert.are.equal("1=1a 2=2b 3=3c 4=4d 5=5e\n", r.out)
  end)
end)

describe("farm.map_unordered", function()
  after_each(H.cleanup)

  it("gives each index once, with its result", function()
    local r = run([[
      local list = {}
      for i = 1, 5000 do list[i] = i end
      local seen, count, ok = {}, 0, true
      for i, r in farm.map_unordered(function(x) return x * x end, list) do
        if seen[i] or r ~= i * i then ok = false end
        seen[i], count = true, count + 1
      end
      print(count, ok)
    ]])
    assert.are.equal("5000\ttrue\n", r.out)
  end)

  it("yields as the jobs finish: a held first item comes after the others", function()
    local flag = os.tmpname()
    os.remove(flag)
    local r = run(([[
      local flag = %q
      local list = {}
      for i = 1, 40 do list[i] = i end
      local order = {}
      for i, r in farm.map_unordered(function(x)
        if x == 1 then   -- waits until the client has had 20 other results
          for _ = 1, 2000 do
            local f = io.open(flag)
            if f then f:close(); break end
            os.execute("sleep 0.01")
          end
        end
        return x * 10
      end, list, {chunksize = 1}) do
        order[#order + 1] = i
        if r ~= i * 10 then error("wrong result for " .. i) end
        if #order == 20 then io.open(flag, "w"):close() end
      end
      local at
      for k, i in ipairs(order) do if i == 1 then at = k end end
      print(#order, at > 20)
    ]]):format(flag))
    os.remove(flag)
    assert.are.equal("40\ttrue\n", r.out)
  end)
end)

describe("farm.map_reduce", function()
  after_each(H.cleanup)

  it("sums, and concatenates in list order with a non-commutative reducer", function()
    local r = run([[
      local list, strs = {}, {}
      for i = 1, 10000 do list[i] = i end
      for i = 1, 300 do strs[i] = "s" .. i end
      local add = function(a, b) return a + b end
      local cat = function(a, b) return a .. "," .. b end
      print(farm.map_reduce(function(x) return x end, add, list))
      print(farm.map_reduce(function(s) return s:upper() end, cat, strs) ==
            table.concat(strs, ","):upper())
      print(farm.map_reduce(function(s) return s end, cat, strs, {chunksize = 7}) ==
            table.concat(strs, ","))
      print(farm.map_reduce(function(a, b) return a * b end, add, { 1, 2, 3 }, { 4, 5, 6, 7 }))
      print(farm.map_reduce(tostring, function(a, b) return a .. b end, { 1, 2, 3, 4, 5 },
                            {init = "", chunksize = 2}))
      print(farm.map_reduce(tostring, add, {}, {init = 0}))
      print(farm.map_reduce(function(x) return x end, add, { 42 }))
      -- every fold starts from init, on the workers and at the end (a reducer
      -- that shows each step tells; a neutral init would not)
      local show = function(a, b) return a .. "+" .. b end
      print(farm.map_reduce(tostring, show, { 1, 2, 3 }, {init = "i", chunksize = 2}))
    ]])
    assert.are.equal("50005000\ntrue\ntrue\n32\n12345\n0\n42\ni+i+1+2+i+3\n", r.out)
  end)

  it("folds on the workers, never in the client", function()
    local r = run([[
      local function pid()
        local f = io.open("/proc/self/stat")
        local s = f:read("l")
        f:close()
        return tonumber(s:match("^%d+"))
      end
      local function leaf(x) return { sum = x, pids = {} } end
      local function merge(a, b)
        a.sum = a.sum + b.sum
        for p in pairs(b.pids) do a.pids[p] = true end
        a.pids[pid()] = true
        return a
      end
      local list = {}
      for i = 1, 1000 do list[i] = i end
      local r = farm.map_reduce(leaf, merge, list, {chunksize = 50})
      local workers, n, mine = {}, 0, pid()
      for _, p in ipairs(farm._pids()) do workers[p] = true end
      local all_workers = true
      for p in pairs(r.pids) do
        n = n + 1
        if not workers[p] then all_workers = false end
      end
      print(r.sum, n > 0, r.pids[mine] == nil, all_workers)
    ]])
    assert.are.equal("500500\ttrue\ttrue\ttrue\n", r.out)
  end)

  it("raises the job's message when fn or the reducer fails", function()
    local r = run([[
      local list = {}
      for i = 1, 200 do list[i] = i end
      local add = function(a, b) return a + b end
      local ok, err = pcall(farm.map_reduce,
        function(x) if x == 137 then error("fn failed at " .. x) end return x end, add, list)
      print(ok, getmetatable(err) == farm.JobError, err.message:match("fn failed at 137") ~= nil)
      ok, err = pcall(farm.map_reduce, function(x) return x end,
        function(a, b) if b == 150 then error("reducer failed") end return a + b end, list, {chunksize = 1})
      print(ok, getmetatable(err) == farm.JobError, err.message:match("reducer failed") ~= nil)
      -- in the last fold: every partial is fine, their sum is not
      ok, err = pcall(farm.map_reduce, function(x) return x end,
        function(a, b) if a + b > 20000 then error("too big") end return a + b end, list, {chunksize = 20})
      print(ok, getmetatable(err) == farm.JobError, err.message:match("too big") ~= nil)
    ]])
    assert.are.equal("false\ttrue\ttrue\nfalse\ttrue\ttrue\nfalse\ttrue\ttrue\n", r.out)
  end)

  it("works inside a job (nested)", function()
    local r = run([[
      local f = farm.submit(function(n)
        local list = {}
        for i = 1, n do list[i] = i end
        local sq = farm.map_reduce(function(x) return x * x end, function(a, b) return a + b end,
                                   list, {chunksize = 10})
        local t = 0
        for _, r in farm.imap(function(x) return x + 1 end, list, {chunksize = 7}) do t = t + r end
        local u = 0
        for _, r in farm.map_unordered(function(x) return x - 1 end, list) do u = u + r end
        return sq, t, u
      end, 100)
      print(f:result())
    ]], "-n 1")
    assert.are.equal("338350\t5150\t4950\n", r.out)
  end)
end)

describe("chunksize", function()
  after_each(H.cleanup)

  it("gives what plain map gives, at 1 and at 1000", function()
    local r = run([[
      local a, b = {}, {}
      for i = 1, 3000 do a[i], b[i] = i, 3001 - i end
      local function f(x, y) return (x * 31 + y) % 1009 end
      local want = farm.map(f, a, b)
      local function same(t) for i = 1, 3000 do if t[i] ~= want[i] then return false end end return true end
      local function collect(it) local t = {} for i, r in it do t[i] = r end return t end
      local k = 0
      local function gen() k = k + 1; if k <= 3000 then return k end end
      print(#want, same(farm.map(f, a, b, {chunksize = 1})), same(farm.map(f, a, b, {chunksize = 1000})),
            same(collect(farm.imap(f, a, b, {chunksize = 1}))), same(collect(farm.imap(f, a, b, {chunksize = 1000}))),
            same(collect(farm.map_unordered(f, a, b, {chunksize = 1}))),
            same(collect(farm.map_unordered(f, a, b, {chunksize = 1000}))),
            same(farm.map(f, gen, b)))
    ]])
    assert.are.equal("3000\ttrue\ttrue\ttrue\ttrue\ttrue\ttrue\ttrue\n", r.out)
  end)

  it("is a method of pools made with farm.new", function()
    local r = run([[
      local p = farm.new{workers = 2}
      local out = {}
      for i, r in p:imap(function(x) return x + 1 end, { 1, 2, 3 }) do out[i] = r end
      local n = 0
      for _ in p:map_unordered(function(x) return x end, { 1, 2, 3 }) do n = n + 1 end
      print(table.concat(out, ","), n, p:map_reduce(function(x) return x end, math.max, { 3, 9, 2 }),
            table.concat(p:map(function(x) return x * 2 end, { 1, 2, 3 }, {chunksize = 2}), ","))
      p:close()
    ]])
    assert.are.equal("2,3,4\t3\t9\t2,4,6\n", r.out)
  end)
end)

describe("bad arguments", function()
  after_each(H.cleanup)

  local cases = {
    { "farm.map(print, {1}, {chunksize = 0})", "farm.map: chunksize must be an integer of 1 or more (got 0)" },
    { "farm.map(print, {1}, {chunksize = 2.5})", "farm.map: chunksize must be an integer of 1 or more (got 2.5)" },
    { "farm.map(print, {1}, {chunksize = 2, window = 4})", "farm.map: unknown option 'window' (chunksize)" },
    { "farm.imap(print, {1}, {window = 0})", "farm.imap: window must be an integer of 1 or more (got 0)" },
    { "farm.imap(print, {1}, {chunksize = 1, size = 3})", "farm.imap: unknown option 'size' (chunksize, window)" },
    { "farm.imap(5, {1})", "farm.imap: argument #1 must be a function (got number)" },
    { "farm.imap(print)", "farm.imap: needs at least one list" },
    { "farm.map_unordered(print, {1}, 5)",
      "farm.map_unordered: argument #3 must be a table (got number) or an iterator function" },
    { "farm.map_reduce(print, 5, {1})", "farm.map_reduce: argument #2 must be a function (got number)" },
    { "farm.map_reduce(print, print, {1}, 'x')",
      "farm.map_reduce: argument #4 must be a table (got string) or an iterator function" },
    { "farm.map_reduce(print, print, {})", "farm.map_reduce: the lists are empty; nothing to reduce" },
    { "farm.map_reduce(print, print, {1}, {init = 0, chunk = 2})",
      "farm.map_reduce: unknown option 'chunk' (chunksize, window, init)" },
    -- misspelt options alone, once taken for one more (empty) list: no results, no word
    { "print(#farm.map(print, {1, 2}, {chunk_size = 2}))", "farm.map: unknown option 'chunk_size' (chunksize)" },
    { "print(#farm.map(print, {1, 2}, {window = 4}))", "farm.map: unknown option 'window' (chunksize)" },
    { "for i in farm.imap(print, {1, 2}, {windw = 2}) do print(i) end",
      "farm.imap: unknown option 'windw' (chunksize, window)" },
    { "for i in farm.map_unordered(print, {1, 2}, {windw = 2}) do print(i) end",
      "farm.map_unordered: unknown option 'windw' (chunksize, window)" },
    { "farm.map_reduce(print, print, {1}, {int = 0})",
      "farm.map_reduce: unknown option 'int' (chunksize, window, init)" },
    { "farm.map(print, {1}, {2, chunksize = 1})",
      "farm.map: argument #3 is neither a list (keys 1..n only) nor a table of options (chunksize)" },
    { "farm.imap(print, {1}, {[0] = 1})",
      "farm.imap: argument #3 is neither a list (keys 1..n only) nor a table of options (chunksize, window)" },
  }
  for _, case in ipairs(cases) do
    it("refuses " .. case[1], function()
      local r = H.run_script(case[1] .. "\n", "-n 1", 60)
      assert.are.equal(1, r.code, r.err)
      assert.are.equal(1, H.lines(r.err), r.err)
      assert.is_truthy(r.err:find(case[2], 1, true), r.err)
    end)
  end
end)

describe("the examples", function()
  after_each(H.cleanup)

  it("fib.lua computes fib by nested jobs", function()
    local r = H.farm_cmd("run examples/fib.lua -n 2 -- 25", 120)
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("fib(25) = 75025\n", r.out)
    r = H.farm_cmd("run examples/fib.lua -n 2", 120)
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("fib(30) = 832040\n", r.out)
  end)

  it("mapreduce.lua counts the words of a directory's files", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir " .. H.quote(dir)))
    H.write(dir .. "/a.txt", "The cat and the dog.\nA cat!\n")
    H.write(dir .. "/b.txt", "the end, THE END; cat's dog\n")
    H.write(dir .. "/c.txt", "zebra yak xerus wolf vole urial tapir seal\n")
    local r = H.farm_cmd("run examples/mapreduce.lua -n 2 -- " .. H.quote(dir), 120)
    os.execute("rm -rf " .. H.quote(dir))
    assert.are.equal(0, r.code, r.err)
    assert.are.equal(table.concat({
      "3 files, 15 distinct words",
      "      4 the",
      "      3 cat",
      "      2 dog",
      "      2 end",
      "      1 a",
      "      1 and",
      "      1 s",
      "      1 seal",
      "      1 tapir",
      "      1 urial",
      "" }, "\n"), r.out)
  end)
end)
