-- mapreduce.lua -- dispy's word count, with farm.map_reduce: one job per file
-- counts its words (runs of letters, lowercased) into a table; the reducer,
-- which runs on the workers too, merges two such tables. The client prints the
-- 10 most frequent words, by count and then by word.
--
--   farm run examples/mapreduce.lua [DIR]      (default: this examples/ directory)
--
-- The paths travel as the jobs' arguments: the files are read where the jobs
-- run (the local pool runs them on this machine).
local farm = require "farm"

local dir = arg and arg[1] or (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."

local function sh_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- the regular files of dir (not below it), sorted
local files = {}
local p = assert(io.popen("find " .. sh_quote(dir) .. " -maxdepth 1 -type f 2>/dev/null | LC_ALL=C sort"))
for path in p:lines() do files[#files + 1] = path end
p:close()
if #files == 0 then error(("mapreduce.lua: no files in %s"):format(dir), 0) end

local function count_words(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("a")
  f:close()
  local counts = {}
  for word in text:gmatch("%a+") do
    word = word:lower()
    counts[word] = (counts[word] or 0) + 1
  end
  return counts
end

local function merge(a, b)
  for word, n in pairs(b) do a[word] = (a[word] or 0) + n end
  return a
end

local counts = farm.map_reduce(count_words, merge, files)

local top = {}
for word, n in pairs(counts) do top[#top + 1] = { word = word, n = n } end
table.sort(top, function(x, y)
  if x.n ~= y.n then return x.n > y.n end
  return x.word < y.word
end)
print(("%d files, %d distinct words"):format(#files, #top))
for i = 1, math.min(10, #top) do print(("%7d %s"):format(top[i].n, top[i].word)) end
