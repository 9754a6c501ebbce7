-- fib.lua -- nested jobs: fib(n) by recursive farm.submit, as SCOOP's
-- examples do with futures. Each job above the cutoff submits fib(n - 1) and
-- fib(n - 2) as jobs of its own and waits for them (its worker runs other jobs
-- meanwhile); below the cutoff it computes serially.
--
--   farm run examples/fib.lua [N [CUTOFF]]      (default: fib(30), cutoff 20)
local farm = require "farm"

local n = math.tointeger(tonumber(arg and arg[1] or "")) or 30
local cutoff = math.tointeger(tonumber(arg and arg[2] or "")) or 20
if n < 0 or n > 92 then error("fib.lua: N must be an integer from 0 to 92", 0) end

local function serial(k)
  if k < 2 then return k end
  return serial(k - 1) + serial(k - 2)
end

local function fib(k)
  if k < cutoff then return serial(k) end
  local a, b = farm.submit(fib, k - 1), farm.submit(fib, k - 2)
  return a:result() + b:result()
end

print(("fib(%d) = %d"):format(n, farm.submit(fib, n):result()))
