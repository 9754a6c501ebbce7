-- pi.lua -- estimate pi by Monte Carlo on every core (SCOOP's example).
--
--   farm run examples/pi.lua [JOBS [POINTS_PER_JOB]]
--   farm run examples/pi.lua -- --kernel [JOBS [POINTS_PER_JOB]]
--
-- Each job throws POINTS random points at the unit square and counts those
-- inside the quarter circle; pi is four times the fraction inside. With
-- --kernel each job is farm.kernels.pi_hits, the same loop in C (its own
-- generator, seeded by the job number as the Lua one is), many times faster.
local farm = require "farm"

local kernel, numbers = false, {}
for _, a in ipairs(arg or {}) do
  if a == "--kernel" then kernel = true else numbers[#numbers + 1] = a end
end
local jobs = math.tointeger(tonumber(numbers[1] or "")) or 64
local points = math.tointeger(tonumber(numbers[2] or "")) or 1000000

local function throw(n, seed)
  math.randomseed(seed)
  local random, hits = math.random, 0
  for _ = 1, n do
    local x, y = random(), random()
    if x * x + y * y <= 1.0 then hits = hits + 1 end
  end
  return hits
end

local sizes, seeds = {}, {}
for i = 1, jobs do sizes[i], seeds[i] = points, i end

-- a kernel is a function like any other: it travels by its name, farm.kernels.pi_hits
local hits = 0
for _, h in ipairs(farm.map(kernel and farm.kernels.pi_hits or throw, sizes, seeds)) do
  hits = hits + h
end

local pi = 4 * hits / (jobs * points)
print(("pi = %.6f (error %.2e) from %d points in %d jobs on %d workers%s")
  :format(pi, math.abs(pi - math.pi), jobs * points, jobs, farm.workers(),
          kernel and " (C kernel)" or ""))
