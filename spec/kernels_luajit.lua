-- kernels_luajit.lua -- farm's kernels through LuaJIT's FFI, against the Lua 5.4 path.
--
--   luajit spec/kernels_luajit.lua [DECL_HEADER [LIBRARY [EXPECTED]]]
--
-- A plain script for `luajit` (not busted): it gives core/kernels_decl.h, as
-- it is, to ffi.cdef, ffi.load's LIBRARY (build/libfarmkernels.so, which
-- links no Lua), calls every kernel, and compares what it gets with a few
-- values known here and with EXPECTED: a Lua file that spec/kernels_spec.lua
-- writes with what farm.kernels gave under Lua 5.4, returning a list of
-- { kernel =, label =, args = {...}, result = ... }. In it U"<16 hex digits>"
-- is a uint64_t (the bits of a Lua 5.4 integer: LuaJIT's numbers cannot hold
-- every one) and H"<hex>" a string of bytes. Prints a line per check, "ok" or
-- "not ok" with both values, and exits 1 when any check failed.
local ffi = require "ffi"
local bit = require "bit"

local decl_path = arg[1] or "core/kernels_decl.h"
local lib_path = arg[2] or ((os.getenv("FARM_BUILD") or "build") .. "/libfarmkernels.so")
local expected_path = arg[3]

local f = assert(io.open(decl_path, "rb"))
ffi.cdef(f:read("*a"))
f:close()
local K = ffi.load(lib_path)

local function U(hex)
  local v = ffi.new("uint64_t", 0)
  for c in hex:gmatch(".") do v = v * 16 + tonumber(c, 16) end
  return v
end

local function H(hex)
  return (hex:gsub("..", function(x) return string.char(tonumber(x, 16)) end))
end

local function tohex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local function num(v) return tonumber(v) end   -- a uint64_t cdata or a number

-- ---- the kernels, called as farm.kernels calls them ------------------------

local call = {}

function call.pi_hits(n, seed) return K.farm_kernel_pi_hits(n, seed) end

local function primes(fn, n)
  local out = ffi.new("uint64_t[1]")
  local rc = fn(n, out)
  if rc ~= 0 then error("returned " .. rc) end
  return out[0]
end
function call.count_primes_below(n) return primes(K.farm_kernel_count_primes_below, n) end
function call.sum_primes_below(n) return primes(K.farm_kernel_sum_primes_below, n) end

-- farm.kernels.blake2b gives the hash in hex
function call.blake2b(s, outlen)
  outlen = outlen and num(outlen) or 32
  local out = ffi.new("unsigned char[?]", outlen)
  local rc = K.farm_kernel_blake2b(out, outlen, s, #s)
  if rc ~= 0 then error("returned " .. rc) end
  return tohex(ffi.string(out, outlen))
end

function call.mandelbrot(x0, y0, dx, dy, w, h, maxiter)
  local size = num(w) * num(h) * (num(maxiter) > 255 and 2 or 1)
  local out = ffi.new("unsigned char[?]", size)
  local rc = K.farm_kernel_mandelbrot(out, x0, y0, dx, dy, w, h, maxiter)
  if rc ~= 0 then error("returned " .. rc) end
  return ffi.string(out, size)
end

-- tables of numbers in and out, or strings of doubles in and out
function call.matmul(a, b, n, m, k)
  n, m, k = num(n), num(m), num(k)
  local function doubles(x, count)
    local d = ffi.new("double[?]", count)
    if type(x) == "string" then
      ffi.copy(d, x, count * 8)
    else
      for i = 1, count do d[i - 1] = x[i] end
    end
    return d
  end
  local c = ffi.new("double[?]", n * k)
  K.farm_kernel_matmul(c, doubles(a, n * m), doubles(b, m * k), n, m, k)
  if type(a) == "string" then return ffi.string(c, n * k * 8) end
  local t = {}
  for i = 1, n * k do t[i] = c[i - 1] end
  return t
end

-- ---- checks -------------------------------------------------------------------

local count, failed = 0, 0

local function show(v)
  if type(v) == "string" then
    return #v > 40 and ("%d bytes %s..."):format(#v, tohex(v:sub(1, 16))) or ("%q"):format(v)
  elseif type(v) == "table" then
    local parts = {}
    for i = 1, math.min(#v, 8) do parts[i] = ("%.17g"):format(v[i]) end
    return "{" .. table.concat(parts, ", ") .. (#v > 8 and ", ...}" or "}")
  end
  return tostring(v)
end

local function same(a, b)
  if type(a) == "table" and type(b) == "table" then
    if #a ~= #b then return false end
    for i = 1, #a do if a[i] ~= b[i] then return false end end
    return true
  end
  return a == b
end

local function check(label, got, want)
  count = count + 1
  if same(got, want) then
    print(("ok %d - %s"):format(count, label))
  else
    failed = failed + 1
    print(("not ok %d - %s: expected %s, got %s"):format(count, label, show(want), show(got)))
  end
end

local function run(kernel, label, args, want)
  local ok, got = pcall(call[kernel], unpack(args, 1, args.n or #args))
  if not ok then got = "error: " .. tostring(got) end
  check(kernel .. " " .. label, got, want)
end

-- values known without Lua 5.4: pi(10^6), Project Euler 10, RFC 7693's BLAKE2b-512("abc")
run("count_primes_below", "(1e6)", { 1000000 }, ffi.new("uint64_t", 78498))
run("sum_primes_below", "(2e6)", { 2000000 }, ffi.new("uint64_t", 142913828922))
run("blake2b", '("abc", 64)', { "abc", 64 },
  "ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b74b12bb6fdbffa2d1"
  .. "7d87c5392aab792dc252d5de4533cc9518d38aa8dbf1925ab92386edd4009923")
-- a Lua 5.4 integer's bits: seed -1 is 2^64-1. LuaJIT turns a negative Lua
-- number into uint64_t as 2^63, so negative seeds go in as int64_t cdata.
check("pi_hits seed -1LL is seed 2^64-1", K.farm_kernel_pi_hits(1000, -1LL),
  K.farm_kernel_pi_hits(1000, U"ffffffffffffffff"))

if expected_path then
  local chunk = assert(loadfile(expected_path))
  setfenv(chunk, { U = U, H = H })
  for _, case in ipairs(chunk()) do
    run(case.kernel, case.label, case.args, case.result)
  end
end

print(("# %d checks, %d failed (%s, %s)"):format(count, failed, jit.version, lib_path))
os.exit(failed == 0 and 0 or 1)
