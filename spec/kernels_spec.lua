-- kernels_spec.lua -- farm.kernels (core/kernels.c, core/lkernels.c): every
-- kernel against a plain Lua reference, the same results in jobs on workers,
-- argument errors that name the kernel and the argument, Lua integers as
-- unsigned bits, and the same results again through LuaJIT's FFI
-- (spec/kernels_luajit.lua, on build/libfarmkernels.so).
local farm = require "farm"
local H = require "helper"

local K = farm.kernels
local unpack = table.unpack

-- ---- plain Lua references ------------------------------------------------------
-- Lua 5.4's integers wrap, so the generator's 64-bit arithmetic is the C
-- kernel's exactly.

local function ref_pi_hits(n, seed)
  local function splitmix()
    seed = seed + 0x9e3779b97f4a7c15
    local z = seed
    z = (z ~ (z >> 30)) * 0xbf58476d1ce4e5b9
    z = (z ~ (z >> 27)) * 0x94d049bb133111eb
    return z ~ (z >> 31)
  end
  local function rotl(x, k) return (x << k) | (x >> (64 - k)) end
  local s0, s1, s2, s3 = splitmix(), splitmix(), splitmix(), splitmix()
  local hits = 0
  for _ = 1, n do
    local r = rotl(s1 * 5, 7) * 9
    local t = s1 << 17
    s2 = s2 ~ s0; s3 = s3 ~ s1; s1 = s1 ~ s2; s0 = s0 ~ s3; s2 = s2 ~ t; s3 = rotl(s3, 45)
    local x, y = r >> 32, r & 0xffffffff
    local x2 = x * x
    if not math.ult(x2 + y * y, x2) then hits = hits + 1 end   -- no carry: inside
  end
  return hits
end

-- the primes below limit, by a plain sieve, and the count and sum of those below n
local function ref_primes(limit)
  local composite, list = {}, {}
  for i = 2, limit - 1 do
    if not composite[i] then
      list[#list + 1] = i
      for j = i * i, limit - 1, i do composite[j] = true end
    end
  end
  return list
end

local function ref_primes_below(list, n)
  local count, sum = 0, 0
  for _, p in ipairs(list) do
    if p >= n then break end
    count, sum = count + 1, sum + p
  end
  return count, sum
end

local function ref_mandelbrot(x0, y0, dx, dy, w, h, maxiter)
  local out = {}
  for j = 0, h - 1 do
    local ci = y0 + j * dy
    for i = 0, w - 1 do
      local cr, zr, zi, it = x0 + i * dx, 0.0, 0.0, 0
      while it < maxiter do
        local zr2, zi2 = zr * zr, zi * zi
        if zr2 + zi2 > 4.0 then break end
        zi = 2 * zr * zi + ci
        zr = zr2 - zi2 + cr
        it = it + 1
      end
      out[#out + 1] = maxiter > 255 and string.pack("<I2", it) or string.char(it)
    end
  end
  return table.concat(out)
end

local function ref_matmul(a, b, n, m, k)
  local c = {}
  for i = 0, n - 1 do
    for j = 0, k - 1 do
      local s = 0.0
      for p = 0, m - 1 do s = s + a[i * m + p + 1] * b[p * k + j + 1] end
      c[i * k + j + 1] = s
    end
  end
  return c
end

local function doubles(t) return string.pack(("d"):rep(#t), unpack(t)) end

local function matrix(rows, cols, f)
  local t = {}
  for i = 0, rows - 1 do
    for j = 0, cols - 1 do t[#t + 1] = f(i, j) end
  end
  return t
end

local A = matrix(7, 5, function(i, j) return (i + 1) / (j + 3) - 0.25 * i end)
local B = matrix(5, 6, function(i, j) return math.sin(i + 2 * j) end)

-- ---- the cases: each through the client, workers and LuaJIT --------------------

local CASES = {
  { "pi_hits", 0, 1 }, { "pi_hits", 1, 1 }, { "pi_hits", 1000, 7 }, { "pi_hits", 100000, 42 },
  { "pi_hits", 5000, -1 }, { "pi_hits", 5000, math.mininteger }, { "pi_hits", 5000, math.maxinteger },
  { "count_primes_below", 0 }, { "count_primes_below", 3 }, { "count_primes_below", 4 },
  { "count_primes_below", 1000 }, { "count_primes_below", 524291 }, { "count_primes_below", 1048580 },
  { "count_primes_below", 10000000 },
  { "sum_primes_below", 2 }, { "sum_primes_below", 3 }, { "sum_primes_below", 100000 },
  { "sum_primes_below", 524289 }, { "sum_primes_below", 10000000 },
  { "blake2b", "" }, { "blake2b", "abc", 64 }, { "blake2b", "a\0b\255" .. ("x"):rep(300), 16 },
  { "mandelbrot", -2.0, -1.25, 2.5 / 40, 2.5 / 30, 40, 30, 60 },
  { "mandelbrot", -0.75, 0.1, 0.002, 0.0015, 17, 9, 1000 },
  { "matmul", { 1, 2, 3, 4, 5, 6 }, { 7, 8, 9, 10, 11, 12 }, 2, 3, 2 },
  { "matmul", A, B, 7, 5, 6 },
  { "matmul", doubles(A), doubles(B), 7, 5, 6 },
}

local function call(case) return K[case[1]](unpack(case, 2, #case)) end

describe("farm.kernels", function()
  setup(function() farm.config { workers = 2 } end)
  teardown(function()
    farm.close()
    H.cleanup()
  end)

  it("lists every kernel, in the client and on a worker", function()
    local names = {}
    for name, f in pairs(K) do
      assert.is_function(f)
      names[#names + 1] = name
    end
    table.sort(names)
    local want = { "blake2b", "count_primes_below", "mandelbrot", "matmul", "pi_hits", "sum_primes_below" }
    assert.are.same(want, names)
    assert.are.equal(K, package.loaded["farm.kernels"])
    assert.are.same(want, farm.submit(function()
      local list = {}
      for name in pairs(farm.kernels) do list[#list + 1] = name end
      table.sort(list)
      return list
    end):result())
  end)

  describe("match a plain Lua reference", function()
    it("pi_hits: xoshiro256** seeded by splitmix64, a point a number", function()
      for _, case in ipairs(CASES) do
        if case[1] == "pi_hits" then
          assert.are.equal(ref_pi_hits(case[2], case[3]), call(case))
        end
      end
      local n = 1000000
      assert.is_true(math.abs(4 * K.pi_hits(n, 1) / n - math.pi) < 0.01)
    end)

    it("count_primes_below and sum_primes_below, across segment boundaries", function()
      local list = ref_primes(1048581)
      for n = 0, 300 do
        local count, sum = ref_primes_below(list, n)
        assert.are.equal(count, K.count_primes_below(n), "count below " .. n)
        assert.are.equal(sum, K.sum_primes_below(n), "sum below " .. n)
      end
      -- a segment is 262,144 odd numbers: values 524,288 and 1,048,576 start one
      for _, n in ipairs({ 524287, 524288, 524289, 524290, 524291, 1048575, 1048577, 1048580 }) do
        local count, sum = ref_primes_below(list, n)
        assert.are.equal(count, K.count_primes_below(n), "count below " .. n)
        assert.are.equal(sum, K.sum_primes_below(n), "sum below " .. n)
      end
      -- known values: pi(10^k), the sums of the primes below 10^k, Project Euler 10
      local pis = { 4, 25, 168, 1229, 9592, 78498, 664579, 5761455 }
      local sums = { 17, 1060, 76127, 5736396, 454396537, 37550402023, 3203324994356,
                     279209790387276 }
      for e = 1, 8 do
        assert.are.equal(pis[e], K.count_primes_below(10 ^ e))
        assert.are.equal(sums[e], K.sum_primes_below(10 ^ e))
      end
      assert.are.equal(142913828922, K.sum_primes_below(2000000))
    end)

    it("blake2b: BLAKE2b as b2sum prints it, in hex", function()
      assert.are.equal("0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8",
        K.blake2b(""))
      assert.are.equal("ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b74b12bb6fdbffa2d1"
        .. "7d87c5392aab792dc252d5de4533cc9518d38aa8dbf1925ab92386edd4009923", K.blake2b("abc", 64))
      assert.are.equal(32, #K.blake2b("abc", 16))
      assert.are_not.equal(K.blake2b("a\0b"), K.blake2b("a\0c"))
    end)

    it("mandelbrot: bytes up to maxiter 255, then two bytes little-endian", function()
      for _, case in ipairs(CASES) do
        if case[1] == "mandelbrot" then
          assert.are.equal(ref_mandelbrot(unpack(case, 2)), call(case))
        end
      end
      local tile = K.mandelbrot(-2, -1, 0.5, 0.5, 6, 5, 255)
      assert.are.equal(30, #tile)
      assert.are.equal(255, tile:byte(4 + 2 * 6 + 1))       -- c = 0 never escapes
      local wide = K.mandelbrot(-2, -1, 0.5, 0.5, 6, 5, 300)
      assert.are.equal(60, #wide)
      assert.are.equal(300, string.unpack("<I2", wide, 2 * (4 + 2 * 6) + 1))
    end)

    it("matmul: tables in, a table out; strings of doubles in, a string out", function()
      assert.are.same({ 58.0, 64.0, 139.0, 154.0 }, K.matmul({ 1, 2, 3, 4, 5, 6 },
        { 7, 8, 9, 10, 11, 12 }, 2, 3, 2))
      local c = K.matmul(A, B, 7, 5, 6)
      assert.are.same(ref_matmul(A, B, 7, 5, 6), c)          -- exactly: the same order of sums
      assert.are.equal(doubles(c), K.matmul(doubles(A), doubles(B), 7, 5, 6))
    end)
  end)

  describe("in jobs on workers", function()
    it("every case gives what it gives in the client", function()
      local futures = {}
      for i, case in ipairs(CASES) do
        futures[i] = farm.submit(function(c) return farm.kernels[c[1]](table.unpack(c, 2, #c)) end, case)
      end
      for i, case in ipairs(CASES) do
        assert.are.same(call(case), futures[i]:result())
      end
    end)

    it("a kernel travels by its name: as the job, as an upvalue, in farm.map", function()
      local pi_hits, kernels = K.pi_hits, K
      local want = K.pi_hits(20000, 9)
      assert.are.equal(want, farm.submit(pi_hits, 20000, 9):result())
      assert.are.equal(want, farm.submit(function(n) return pi_hits(n, 9) end, 20000):result())
      assert.are.equal(want, farm.submit(function(n) return kernels.pi_hits(n, 9) end, 20000):result())
      assert.are.same({ 4, 25, 168 }, farm.map(K.count_primes_below, { 10, 100, 1000 }))
      assert.are.equal(K.blake2b, farm.submit(function() return farm.kernels.blake2b end):result())
    end)

    it("a kernel's argument error fails the job with the same message", function()
      local ok, err = pcall(function()
        return farm.submit(function() return farm.kernels.mandelbrot(0, 0, 1, 1, 0, 1, 1) end):result()
      end)
      assert.is_false(ok)
      assert.is_truthy(err.message:find("farm.kernels.mandelbrot: argument 'w' must be a positive "
        .. "integer (got 0)", 1, true))
    end)
  end)

  describe("argument errors name the kernel and the argument", function()
    local function fails(pattern, f, ...)
      local ok, err = pcall(f, ...)
      assert.is_false(ok)
      assert.is_truthy(tostring(err):find(pattern, 1, true),
        ("expected %q in %q"):format(pattern, tostring(err)))
    end

    it("pi_hits", function()
      fails("farm.kernels.pi_hits: argument 'n' must be a non-negative integer (got -1)", K.pi_hits, -1, 1)
      fails("farm.kernels.pi_hits: argument 'n' must be a non-negative integer (got 1.5)", K.pi_hits, 1.5, 1)
      fails("farm.kernels.pi_hits: argument 'n' must be a non-negative integer (got string)", K.pi_hits, "10", 1)
      fails("farm.kernels.pi_hits: argument 'seed' must be an integer (got no value)", K.pi_hits, 10)
      fails("farm.kernels.pi_hits: argument 'seed' must be an integer (got 9.2233720368548e+18)",
        K.pi_hits, 10, 2 ^ 63)
    end)

    it("count_primes_below and sum_primes_below", function()
      fails("farm.kernels.count_primes_below: argument 'n' must be an integer from 0 to 2^48 (got -5)",
        K.count_primes_below, -5)
      fails("farm.kernels.sum_primes_below: argument 'n' must be an integer from 0 to 2^48 (got "
        .. ((1 << 48) + 1) .. ")", K.sum_primes_below, (1 << 48) + 1)
      fails("farm.kernels.sum_primes_below: argument 'n' must be an integer from 0 to 2^48 (got nil)",
        K.sum_primes_below, nil)
    end)

    it("blake2b", function()
      fails("farm.kernels.blake2b: argument 's' must be a string (got 12)", K.blake2b, 12)
      fails("farm.kernels.blake2b: argument 's' must be a string (got table)", K.blake2b, {})
      fails("farm.kernels.blake2b: argument 'outlen' must be an integer from 16 to 64 (got 65)",
        K.blake2b, "x", 65)
      fails("farm.kernels.blake2b: argument 'outlen' must be an integer from 16 to 64 (got 8)",
        K.blake2b, "x", 8)
    end)

    it("mandelbrot", function()
      local ok = { -2, -1, 0.1, 0.1, 4, 3, 10 }
      local function with(i, v)
        local a = { unpack(ok) }
        a[i] = v
        return unpack(a, 1, 7)
      end
      local names = { "x0", "y0", "dx", "dy" }
      for i = 1, 4 do
        fails("farm.kernels.mandelbrot: argument '" .. names[i] .. "' must be a finite number (got nil)",
          K.mandelbrot, with(i, nil))
      end
      fails("farm.kernels.mandelbrot: argument 'dx' must be a finite number (got inf)",
        K.mandelbrot, with(3, math.huge))
      fails("farm.kernels.mandelbrot: argument 'w' must be a positive integer (got 0)", K.mandelbrot, with(5, 0))
      fails("farm.kernels.mandelbrot: argument 'h' must be a positive integer (got 2.5)", K.mandelbrot, with(6, 2.5))
      fails("farm.kernels.mandelbrot: argument 'maxiter' must be an integer from 1 to 65535 (got 65536)",
        K.mandelbrot, with(7, 65536))
      fails("farm.kernels.mandelbrot: arguments 'w' and 'h' (67108865 by 1) make more than 2^26 pixels",
        K.mandelbrot, -2, -1, 0.1, 0.1, 67108865, 1, 10)
      fails("farm.kernels.mandelbrot: arguments 'w' and 'h' (8192 by 8193) make more than 2^26 pixels",
        K.mandelbrot, -2, -1, 0.1, 0.1, 8192, 8193, 10)
      fails("farm.kernels.mandelbrot: arguments 'w' and 'h' (" .. math.maxinteger .. " by "
        .. math.maxinteger .. ")", K.mandelbrot, -2, -1, 0.1, 0.1, math.maxinteger, math.maxinteger, 10)
    end)

    it("matmul", function()
      fails("farm.kernels.matmul: argument 'a' must be a table of numbers or a string of doubles (got nil)",
        K.matmul, nil, {}, 1, 1, 1)
      fails("farm.kernels.matmul: argument 'b' must be a table of numbers, as 'a' is (got string)",
        K.matmul, { 1 }, "x", 1, 1, 1)
      fails("farm.kernels.matmul: argument 'b' must be a string of doubles, as 'a' is (got table)",
        K.matmul, doubles({ 1 }), { 1 }, 1, 1, 1)
      fails("farm.kernels.matmul: argument 'a' must hold n*m = 6 numbers (got 5)",
        K.matmul, { 1, 2, 3, 4, 5 }, { 1, 2, 3 }, 2, 3, 1)
      fails("farm.kernels.matmul: argument 'b' must hold numbers only (got string at item 2)",
        K.matmul, { 1, 2 }, { 1, "2" }, 1, 2, 1)
      fails("farm.kernels.matmul: argument 'a' must be n*m = 2 doubles, 16 bytes (got 8 bytes)",
        K.matmul, doubles({ 1 }), doubles({ 1, 2 }), 1, 2, 1)
      fails("farm.kernels.matmul: argument 'k' must be a positive integer (got 0)", K.matmul, { 1 }, { 1 }, 1, 1, 0)
      fails("farm.kernels.matmul: argument 'n' must be a positive integer (got no value)", K.matmul, { 1 }, { 1 })
      fails("farm.kernels.matmul: arguments 'n', 'm' and 'k' (1048576, 1048576, 1) make a matrix of "
        .. "more than 2^27 numbers", K.matmul, { 1 }, { 1 }, 1 << 20, 1 << 20, 1)
      fails("farm.kernels.matmul: arguments 'n', 'm' and 'k' (1, 2, " .. math.maxinteger .. ")",
        K.matmul, { 1 }, { 1 }, 1, 2, math.maxinteger)
    end)
  end)

  describe("Lua integers are unsigned bits", function()
    it("a seed is its 64 bits: -1 is 2^64-1, and both match the wrapping reference", function()
      assert.are.equal(K.pi_hits(5000, -1), K.pi_hits(5000, 0xffffffffffffffff))
      assert.are.equal(ref_pi_hits(5000, -1), K.pi_hits(5000, -1))
      assert.are.equal(ref_pi_hits(5000, math.mininteger), K.pi_hits(5000, 0x8000000000000000))
      assert.are_not.equal(K.pi_hits(5000, -1), K.pi_hits(5000, math.maxinteger))
    end)

    it("floats with an integral value are those integers", function()
      assert.are.equal(K.pi_hits(1000, 5), K.pi_hits(1e3, 5.0))
      assert.are.equal(K.count_primes_below(1000), K.count_primes_below(1e3))
      assert.are.same(K.mandelbrot(-2, -1, 0.5, 0.5, 6, 5, 30), K.mandelbrot(-2, -1, 0.5, 0.5, 6.0, 5.0, 30.0))
    end)
  end)

  describe("through LuaJIT's FFI", function()
    local function hex(s) return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end
    local function lit(v)
      if math.type(v) == "integer" then return ("U%q"):format(("%016x"):format(v)) end
      if type(v) == "number" then return ("%.17g"):format(v) end
      if type(v) == "string" then return ("H%q"):format(hex(v)) end
      local parts = {}
      for i, x in ipairs(v) do parts[i] = ("%.17g"):format(x) end
      return "{" .. table.concat(parts, ", ") .. "}"
    end

    it("the declarations are plain: no preprocessor lines for ffi.cdef", function()
      for line in io.lines("core/kernels_decl.h") do
        assert.is_falsy(line:find("^%s*#"), line)
      end
    end)

    it("spec/kernels_luajit.lua gets every kernel's Lua 5.4 results from libfarmkernels.so", function()
      local lines = { "return {" }
      for i, case in ipairs(CASES) do
        local args = {}
        for j = 2, #case do args[#args + 1] = lit(case[j]) end
        lines[#lines + 1] = ("  { kernel = %q, label = %q, args = { %s }, result = %s },")
          :format(case[1], "case " .. i, table.concat(args, ", "), lit(call(case)))
      end
      lines[#lines + 1] = "}"
      local expected = H.tmp(table.concat(lines, "\n"))
      local lib = H.build .. "/libfarmkernels.so"
      local r = H.sh(("luajit spec/kernels_luajit.lua core/kernels_decl.h %s %s")
        :format(H.quote(lib), H.quote(expected)), 120)
      assert.are.equal(0, r.code, r.out .. r.err)
      local oks = 0
      for line in r.out:gmatch("[^\n]+") do
        assert.is_falsy(line:find("^not ok"), line)
        if line:find("^ok ") then oks = oks + 1 end
      end
      assert.are.equal(#CASES + 4, oks, r.out)   -- 4: the checks the script makes alone
      for _, kernel in ipairs({ "pi_hits", "count_primes_below", "sum_primes_below", "blake2b",
                                "mandelbrot", "matmul" }) do
        assert.is_truthy(r.out:find("ok %d+ %- " .. kernel .. " case"), kernel)
      end
    end)

    it("include/farm_kernels.h compiles as C and as C++, installed beside kernels_decl.h", function()
      local dir = os.tmpname()
      os.remove(dir)
      assert(os.execute("mkdir -p " .. H.quote(dir)))
      local lib = H.build:sub(1, 1) == "/" and H.build or io.popen("pwd"):read("l") .. "/" .. H.build
      H.write(dir .. "/t.c", [[
#include "farm_kernels.h"
#include <stdio.h>
int main(void) {
  uint64_t count = 0;
  unsigned char h[16];
  double c[1], a[1] = { 3 }, b[1] = { 4 };
  if (farm_kernel_count_primes_below(100, &count) != 0 || count != 25) return 1;
  if (farm_kernel_blake2b(h, sizeof h, (const unsigned char *)"x", 1) != 0) return 2;
  farm_kernel_matmul(c, a, b, 1, 1, 1);
  printf("%llu %g %llu\n", (unsigned long long)count, c[0],
         (unsigned long long)farm_kernel_pi_hits(1000, 7));
  return c[0] == 12 ? 0 : 3;
}
]])
      H.write(dir .. "/t.cc", H.slurp(dir .. "/t.c"))
      H.write(dir .. "/farm_kernels.h", H.slurp("include/farm_kernels.h"))
      H.write(dir .. "/kernels_decl.h", H.slurp("core/kernels_decl.h"))
      -- (only the test programs run with the sanitizer runtime an ASan run preloads)
      local link = ("-L%s -lfarmkernels -Wl,-rpath,%s"):format(H.quote(lib), H.quote(lib))
      local r = H.sh(("cd %s && env -u LD_PRELOAD cc -std=c99 -Wall -Wextra -Werror -I. t.c %s -o t && "
        .. "./t && env -u LD_PRELOAD c++ -Wall -Wextra -Werror -I. t.cc %s -o tpp && ./tpp")
        :format(H.quote(dir), link, link), 120)
      os.execute("rm -rf " .. H.quote(dir))
      assert.are.equal(0, r.code, r.out .. r.err)
      assert.are.equal(("25 12 %d\n25 12 %d\n"):format(K.pi_hits(1000, 7), K.pi_hits(1000, 7)), r.out)
    end)
  end)
end)
