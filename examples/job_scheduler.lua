-- job_scheduler.lua -- dispy's job_scheduler example: the script schedules
-- its jobs itself, from the run's events (farm.on_event: dispy's
-- cluster_status), one job at a time on each node (submit_with{node = ...}:
-- dispy's submit_node), however many workers a node has; the next job goes
-- to the node whose job just finished.
--
--   farm run examples/job_scheduler.lua [FILES]             (on the local pool)
--   farm run examples/job_scheduler.lua --nodes hosts 12    (and on each node)
--
-- The "data files" are made up here (data000, data001, ...: FILES of them);
-- each job checksums one (Adler-32) and takes its time doing it.
local farm = require "farm"

local nfiles = tonumber(arg[1]) or 8
local function data_of(name)                     -- what file `name` would hold
  local parts, seed = {}, tonumber(name:match("%d+"))
  for i = 1, 2000 do parts[i] = string.char(32 + (seed * 7 + i * 13) % 90) end
  return table.concat(parts)
end

local function compute(name, text)
  local a, b = 1, 0
  for i = 1, #text do
    a = (a + text:byte(i)) % 65521
    b = (b + a) % 65521
  end
  local t = os.clock() + 0.05 while os.clock() < t do end   -- (as dispy's sleep)
  return ("%08x"):format(b * 65536 + a)
end

local submitted, results, busy, name_of = 0, {}, {}, {}

-- Give `node` its next file, if any is left.
local function schedule(node)
  if submitted >= nfiles or busy[node] then return end
  local name = ("data%03d"):format(submitted)
  submitted = submitted + 1
  busy[node] = farm.submit_with({ node = node }, compute, name, data_of(name))
  name_of[busy[node]] = name
end

farm.on_event(function(ev)
  if ev.event == "node_up" then
    local workers = 0
    for _, n in ipairs(farm.nodes()) do if n.host == ev.node then workers = n.workers end end
    print(("node %s with %d workers available"):format(ev.node, workers))
    schedule(ev.node)                            -- (a node already busy keeps its one job)
    return
  elseif ev.event == "job_done" and busy[ev.node] == ev.future then
    local name = name_of[ev.future]
    results[name] = ev.future:result()
    print(("checksum of %s (on %s): %s"):format(name, ev.node, results[name]))
  elseif ev.event == "job_failed" and busy[ev.node] == ev.future then
    print(("checksum of %s failed: %s"):format(name_of[ev.future], ev.error))
  else
    return
  end
  busy[ev.node] = nil
  schedule(ev.node)
end)

-- the local pool is there from the start; nodes say so as they come up
if farm.workers() > #farm.nodes() then schedule("local") end
for _, n in ipairs(farm.nodes()) do if n.state == "up" then schedule(n.host) end end
while next(busy) do                              -- the events schedule the rest
  local list = {}
  for _, f in pairs(busy) do list[#list + 1] = f end
  farm.wait(list, { return_when = "first" })
end
local n = 0
for _ in pairs(results) do n = n + 1 end
print(("%d of %d files checksummed"):format(n, nfiles))
farm.print_stats()
