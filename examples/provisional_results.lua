-- provisional_results.lua -- dispy's provisional_results example: each job
-- looks for a small value, and tells the client every better one it finds
-- (farm.provide: dispy_provisional_result). The client watches them come
-- (job_partial events, future:partial()) and, as soon as one is good enough,
-- cancels the others: the local optima gathered make the global one.
--
--   farm run examples/provisional_results.lua [JOBS [GOOD]]
--
-- A job cancelled with a grace hears of it (farm.cancelled()) and returns the
-- best it found so far: its last word, which the client reads as well.
local farm = require "farm"

local njobs = tonumber(arg[1]) or 4
local good = tonumber(arg[2]) or 0.005

local function compute(seed, steps)
  math.randomseed(seed)
  local best = 1
  for i = 1, steps do
    if farm.cancelled() then break end   -- the client has what it needs
    local r = math.random()
    if r <= best then
      best = r
      farm.provide({ seed = seed, best = r, step = i })   -- a possible result: a local optimum
    end
    local t = os.clock() + 0.002 while os.clock() < t do end   -- (the work of a step)
  end
  return { seed = seed, best = best, final = true }
end

local jobs, found = {}, nil
farm.on_event(function(ev)
  if ev.event ~= "job_partial" and ev.event ~= "job_done" then return end
  local v = ev.future:partial()
  if ev.event == "job_done" then v = ev.future:result() end
  if not v then return end
  print(("best value from job %d: %.6f"):format(v.seed, v.best))
  if v.best < good and not found then
    found = v
    print(("job %d computed %.6f: good enough, the others are told to stop"):format(v.seed, v.best))
    for _, f in ipairs(jobs) do
      if f ~= ev.future and not f:done() then f:cancel{ force = true, grace = 2 } end
    end
  end
end)

for seed = 1, njobs do
  jobs[#jobs + 1] = farm.submit(compute, seed, 5000 + 1000 * seed)
end
farm.wait(jobs)
local best
for _, f in ipairs(jobs) do
  local v = f:status() == "done" and f:result() or f:partial()
  if v and (not best or v.best < best.best) then best = v end
  print(("job %d: %s, best %s"):format(f:id(), f:status(), v and ("%.6f"):format(v.best) or "none (it never began)"))
end
print(("global best: %.6f (job %d)"):format(best.best, best.seed))
