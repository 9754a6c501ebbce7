-- hashing.lua -- dispy's setup/cleanup example, the farm way.
--
--   farm run examples/hashing.lua [DATAFILE] [SLICES]
--
-- A data file travels to every node once (on_node's files; local workers read
-- it where it is), each worker reads it into memory once (setup: the globals it
-- sets are the jobs'), each job hashes one slice of it with the BLAKE2b kernel,
-- and each worker says at the end how many slices it hashed (cleanup, on its
-- standard error; a node's workers, on the node's, which may be gone by then). The
-- digests are checked against the same hashes made here, one by one.
--
-- Without DATAFILE it makes hashing-data.bin (4 MiB of reproducible bytes) in
-- the current directory. A DATAFILE must be a relative path below the current
-- directory: that is where jobs on nodes find it too.
local farm = require "farm"

local path = arg[1] or "hashing-data.bin"
local slices = math.tointeger(tonumber(arg[2] or "64"))
if not slices or slices < 1 then
  io.stderr:write("hashing.lua: SLICES must be a whole number of 1 or more\n")
  os.exit(2)
end

if not arg[1] then                       -- reproducible data: a linear congruential stream
  local f = assert(io.open(path, "wb"))
  local x, parts = 12345, {}
  for i = 1, 4 * 1024 * 1024 / 8 do
    x = (x * 6364136223846793005 + 1442695040888963407) & 0xffffffffffffffff
    parts[#parts + 1] = string.pack("<i8", x)
    if #parts == 4096 then f:write(table.concat(parts)); parts = {} end
  end
  f:write(table.concat(parts))
  f:close()
end

farm.on_node{
  files = { path },
  setup = function(p)
    local f = assert(io.open(p, "rb"))
    DATA = f:read("a")
    f:close()
    STATS = { slices = 0 }              -- a table: the jobs' changes to it stay
  end,
  cleanup = function()
    io.stderr:write(("hashing: a worker hashed %d slices\n"):format(STATS.slices))
    DATA = nil
  end,
  args = { path },
}

local function digest(i, n)
  local size = #DATA // n
  local from = (i - 1) * size + 1
  local to = i == n and #DATA or i * size
  STATS.slices = STATS.slices + 1
  return farm.kernels.blake2b(DATA:sub(from, to))
end

local futures = {}
for i = 1, slices do futures[i] = farm.submit(digest, i, slices) end

-- the same slices hashed here, one by one
local f = assert(io.open(path, "rb"))
local data = f:read("a")
f:close()
local size, wrong = #data // slices, 0
for i = 1, slices do
  local to = i == slices and #data or i * size
  if futures[i]:result() ~= farm.kernels.blake2b(data:sub((i - 1) * size + 1, to)) then wrong = wrong + 1 end
end
local all = {}
for i = 1, slices do all[i] = futures[i]:result() end
print(("%d slices of %s (%d bytes): %s; digest of digests %s"):format(slices, path, #data,
  wrong == 0 and "all verified" or (wrong .. " WRONG"), farm.kernels.blake2b(table.concat(all))))
if not arg[1] then os.remove(path) end
if wrong > 0 then os.exit(1) end
