-- bounded_submit.lua -- dispy's bounded_submit example: a million jobs need
-- not all wait in the client's memory at once. The script keeps between
-- LOWER and UPPER jobs pending: when UPPER are out, it waits until the run's
-- events (farm.on_event) have brought the count down to LOWER, then goes on.
--
--   farm run examples/bounded_submit.lua [JOBS [LOWER UPPER]]
local farm = require "farm"

local total = tonumber(arg[1]) or 200
local lower = tonumber(arg[2]) or 2 * farm.workers()
local upper = tonumber(arg[3]) or 3 * lower

local function compute(n)
  local t = os.clock() + n while os.clock() < t do end
  return n
end

local pending_jobs, pending, most, done, sum = {}, 0, 0, 0, 0
farm.on_event(function(ev)
  local f = pending_jobs[ev.job]
  if not f or (ev.event ~= "job_done" and ev.event ~= "job_failed" and ev.event ~= "job_cancelled") then
    return
  end
  pending_jobs[ev.job], pending = nil, pending - 1   -- its future is no longer kept
  if ev.event == "job_done" then
    done, sum = done + 1, sum + f:result()
  else
    print(("job %d: %s %s"):format(ev.job, ev.event, ev.error or ""))
  end
end)

for i = 1, total do
  local f = farm.submit(compute, 0.001 + (i % 3) * 0.001)
  -- (its events come inside a later farm call, on this thread: never before this)
  pending_jobs[f:id()], pending = f, pending + 1
  if pending > most then most = pending end
  if pending >= upper then
    while pending > lower do farm.wait({}, { timeout = 0.05 }) end
  end
end
while pending > 0 do farm.wait({}, { timeout = 0.05 }) end
print(("%d jobs done, at most %d pending at once (bounds %d..%d), sum %.3f"):format(done, most, lower, upper, sum))
