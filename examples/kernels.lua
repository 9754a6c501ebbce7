-- kernels.lua -- farm.kernels: loops in C, called from jobs like any Lua function.
--
--   farm run examples/kernels.lua
--
-- Every kernel is in the client and on every worker as farm.kernels.NAME, and
-- a kernel travels by that name: farm.map(farm.kernels.count_primes_below, ns)
-- runs it on the workers with nothing shipped but the name. What each takes
-- and gives is in README.md ("Kernels"); the C side is core/kernels.c.
--
-- Adding a kernel (say `dot`, a dot product) is three small pieces of C:
--
--   1. core/kernels.c, the loop, and its declaration in core/kernels_decl.h
--      (plain C: LuaJIT's ffi.cdef reads that file as it is):
--        double farm_kernel_dot(const double *a, const double *b, size_t n);
--   2. core/lkernels.c, a binding that checks the arguments, so that errors
--      name the kernel and the argument, and calls the loop:
--        static int l_dot(lua_State *L) { ... arg_int(L, 3, "n", 1, ...) ... }
--   3. one row in the `kernels` table of core/lkernels.c:
--        { "dot", l_dot },
--
-- `make`, and farm.kernels.dot is there in scripts, in jobs on every worker,
-- and in build/libfarmkernels.so for LuaJIT.
local farm = require "farm"
local K = farm.kernels

-- pi: 16 jobs of 10 million points, each with its own seed
local sizes, seeds = {}, {}
for i = 1, 16 do sizes[i], seeds[i] = 10000000, i end
local hits = 0
for _, h in ipairs(farm.map(K.pi_hits, sizes, seeds)) do hits = hits + h end
print(("pi_hits:  pi = %.6f from %d points"):format(4 * hits / (16 * 10000000), 16 * 10000000))

-- Parallel Python's sum_primes (examples/sum_primes.lua), a sieve per job
local inputs = { 100000, 100100, 100200, 100300, 100400, 100500, 100600, 100700 }
local sums = farm.map(K.sum_primes_below, inputs)
print(("sum_primes_below: below %d, %d; below %d, %d; and %d primes below 1e9")
  :format(inputs[1], sums[1], inputs[8], sums[8],
          farm.submit(K.count_primes_below, 1000000000):result()))

-- BLAKE2b of several strings at once (hex; 32 bytes unless told)
local texts = { "", "abc", ("farm"):rep(100000) }
local digests = farm.map(K.blake2b, texts)
print(("blake2b:  %q -> %s"):format(texts[2], digests[2]))

-- a Mandelbrot set, one job per band of rows, drawn in characters
local w, h, bands, maxiter = 72, 24, 4, 200
local x0, y0, dx, dy = -2.2, -1.2, 3.2 / w, 2.4 / h
local futures = {}
for b = 0, bands - 1 do
  local rows = h // bands
  futures[#futures + 1] = farm.submit(K.mandelbrot, x0, y0 + b * rows * dy, dx, dy, w, rows, maxiter)
end
local shades = " .:-=+*#%"                   -- by log2 of the count; "@" never escaped
for _, f in ipairs(futures) do
  local tile = f:result()                      -- one byte per pixel: maxiter <= 255
  for row = 0, #tile // w - 1 do
    local line = {}
    for i = 1, w do
      local it = tile:byte(row * w + i)
      local s = math.min(#shades, math.floor(math.log(it + 1, 2)) + 1)
      line[i] = it == maxiter and "@" or shades:sub(s, s)
    end
    print(table.concat(line))
  end
end

-- c = a * b, one job per band of a's rows; strings of doubles keep the
-- matrices out of Lua tables on their way to and from the workers
local n, m, k, jobs = 200, 150, 100, 4
local function random_matrix(rows, cols)
  local t = {}
  for i = 1, rows * cols do t[i] = math.random() end
  return string.pack(("d"):rep(#t), table.unpack(t))
end
local a, b = random_matrix(n, m), random_matrix(m, k)
local rows = n // jobs
local parts = {}
for j = 0, jobs - 1 do
  local band = a:sub(j * rows * m * 8 + 1, (j + 1) * rows * m * 8)
  parts[#parts + 1] = farm.submit(K.matmul, band, b, rows, m, k)
end
for j = 1, jobs do parts[j] = parts[j]:result() end
local c = table.concat(parts)
assert(c == K.matmul(a, b, n, m, k))             -- the same sums in the same order
print(("matmul:   %dx%d times %dx%d in %d jobs, c[1][1] = %.6f"):format(n, m, m, k, jobs,
  string.unpack("d", c)))
