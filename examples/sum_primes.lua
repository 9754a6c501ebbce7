-- sum_primes.lua -- Parallel Python's example: the sums of the primes below
-- 100000, 100100, ..., 100700, one job each.
--
--   farm run examples/sum_primes.lua
--
-- isprime is an ordinary global function: it travels with sum_primes without
-- being listed (pp needs depfuncs=(isprime,) for this).
local farm = require "farm"

function isprime(n)
  if math.type(n) ~= "integer" then error("isprime: n must be an integer", 2) end
  if n < 2 then return false end
  if n == 2 then return true end
  local max = math.ceil(math.sqrt(n))
  for i = 2, max do
    if n % i == 0 then return false end
  end
  return true
end

function sum_primes(n)
  local sum = 0
  for x = 2, n - 1 do
    if isprime(x) then sum = sum + x end
  end
  return sum
end

local inputs = { 100000, 100100, 100200, 100300, 100400, 100500, 100600, 100700 }
local futures = {}
for i, n in ipairs(inputs) do futures[i] = farm.submit(sum_primes, n) end
for i, n in ipairs(inputs) do
  print(("Sum of primes below %d is %d"):format(n, futures[i]:result()))
end
farm.print_stats()
