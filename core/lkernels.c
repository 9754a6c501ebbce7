/*
 * lkernels.c -- farm.kernels: the compute kernels of kernels.c, for Lua.
 *
 * A kernel is a row of `kernels` below and a binding of a few lines that
 * checks the arguments, calls the C kernel and pushes what it gives. Each
 * binding has its kernel's name as its upvalue, so every error names the
 * kernel and the argument: "farm.kernels.mandelbrot: argument 'w' must be a
 * positive integer (got 0)". Integers go to C as the unsigned bits of the Lua
 * integer and come back the same way, so they wrap as Lua integers do.
 *
 * The table is farm.core.kernels, which lua/farm.lua shows as farm.kernels,
 * and package.loaded["farm.kernels"], so that a kernel a job holds travels by
 * its name (as math.sqrt does) and a worker finds its own copy under it.
 *
 * Adding a kernel: its C function in kernels.c with its declaration (and
 * contract) in kernels_decl.h, a binding here, and one row in `kernels`.
 *
 * Threads: the thread of the lua_State that loads it.
 */
#include <math.h>
#include <string.h>
#include <lua.h>
#include <lauxlib.h>
#include "farm_kernels.h"
#include "luafuncs.h"

/* ---- arguments ------------------------------------------------------------ */

static const char *kernel_name(lua_State *L) {
  return lua_tostring(L, lua_upvalueindex(1));
}

/* What argument i is, for a message: its value when a number, else its type. */
static const char *got(lua_State *L, int i) {
  if (lua_isnone(L, i)) return "no value";
  if (lua_type(L, i) == LUA_TNUMBER) return luaL_tolstring(L, i, NULL);
  return luaL_typename(L, i);
}

static int arg_error(lua_State *L, int i, const char *name, const char *must) {
  return luaL_error(L, "farm.kernels.%s: argument '%s' must be %s (got %s)",
                    kernel_name(L), name, must, got(L, i));
}

/* An integer (a float with an integral value will do) from lo to hi. */
static lua_Integer arg_int(lua_State *L, int i, const char *name,
                           lua_Integer lo, lua_Integer hi, const char *must) {
  int isint = 0;
  lua_Integer v = lua_type(L, i) == LUA_TNUMBER ? lua_tointegerx(L, i, &isint) : 0;
  if (!isint || v < lo || v > hi) arg_error(L, i, name, must);
  return v;
}

/* Any integer, as its 64 bits: -1 is 2^64-1. */
static uint64_t arg_bits(lua_State *L, int i, const char *name) {
  return (uint64_t)arg_int(L, i, name, LUA_MININTEGER, LUA_MAXINTEGER, "an integer");
}

static double arg_finite(lua_State *L, int i, const char *name) {
  double v = lua_type(L, i) == LUA_TNUMBER ? (double)lua_tonumber(L, i) : NAN;
  if (!isfinite(v)) arg_error(L, i, name, "a finite number");
  return v;
}

static const char *arg_string(lua_State *L, int i, const char *name, size_t *len) {
  if (lua_type(L, i) != LUA_TSTRING) arg_error(L, i, name, "a string");
  return lua_tolstring(L, i, len);
}

/* A C kernel refused: it can only be memory (the arguments were checked). */
static int kernel_failed(lua_State *L, int rc) {
  return luaL_error(L, "farm.kernels.%s: %s", kernel_name(L),
                    rc == -1 ? "out of memory" : "arguments refused");
}

/* Unsigned 64 bits back to Lua: 2^64-1 is -1, as a Lua integer wraps. */
static void push_bits(lua_State *L, uint64_t v) {
  lua_pushinteger(L, (lua_Integer)v);
}

/* ---- the bindings ---------------------------------------------------------- */

/* pi_hits(n, seed) -> how many of n points fall in the quarter disc. The seed
   is required: jobs that all took a default would all throw the same points. */
static int l_pi_hits(lua_State *L) {
  uint64_t n = (uint64_t)arg_int(L, 1, "n", 0, LUA_MAXINTEGER, "a non-negative integer");
  uint64_t seed = arg_bits(L, 2, "seed");
  push_bits(L, farm_kernel_pi_hits(n, seed));
  return 1;
}

#define PRIMES_MAX ((lua_Integer)1 << 48)
#define PRIMES_MUST "an integer from 0 to 2^48"

static int l_count_primes_below(lua_State *L) {
  uint64_t n = (uint64_t)arg_int(L, 1, "n", 0, PRIMES_MAX, PRIMES_MUST), count;
  int rc = farm_kernel_count_primes_below(n, &count);
  if (rc != 0) return kernel_failed(L, rc);
  push_bits(L, count);
  return 1;
}

/* The sum modulo 2^64: negative from n of about 2.1e10 on, as Lua's own sum
   would be. */
static int l_sum_primes_below(lua_State *L) {
  uint64_t n = (uint64_t)arg_int(L, 1, "n", 0, PRIMES_MAX, PRIMES_MUST), sum;
  int rc = farm_kernel_sum_primes_below(n, &sum);
  if (rc != 0) return kernel_failed(L, rc);
  push_bits(L, sum);
  return 1;
}

/* blake2b(s [, outlen = 32]) -> the hash as lowercase hex (2*outlen digits),
   as b2sum -l prints it: printable, and compared as any string is. */
static int l_blake2b(lua_State *L) {
  size_t len;
  const char *s = arg_string(L, 1, "s", &len);
  size_t outlen = lua_isnoneornil(L, 2) ? 32
    : (size_t)arg_int(L, 2, "outlen", 16, 64, "an integer from 16 to 64");
  unsigned char out[64];
  char hex[128];
  int rc = farm_kernel_blake2b(out, outlen, (const unsigned char *)s, len);
  if (rc != 0) return kernel_failed(L, rc);
  for (size_t i = 0; i < outlen; i++) {
    hex[2 * i] = "0123456789abcdef"[out[i] >> 4];
    hex[2 * i + 1] = "0123456789abcdef"[out[i] & 15];
  }
  lua_pushlstring(L, hex, 2 * outlen);
  return 1;
}

#define TILE_MAX ((lua_Integer)1 << 26)    /* pixels: 8192 x 8192, 128 MiB at most */

/* mandelbrot(x0, y0, dx, dy, w, h, maxiter) -> a string of w*h iteration
   counts, rows first: a byte each when maxiter <= 255 (string.byte reads
   them), else two bytes little-endian (string.unpack("<I2", s, 2*k+1)). */
static int l_mandelbrot(lua_State *L) {
  double x0 = arg_finite(L, 1, "x0"), y0 = arg_finite(L, 2, "y0");
  double dx = arg_finite(L, 3, "dx"), dy = arg_finite(L, 4, "dy");
  lua_Integer w = arg_int(L, 5, "w", 1, LUA_MAXINTEGER, "a positive integer");
  lua_Integer h = arg_int(L, 6, "h", 1, LUA_MAXINTEGER, "a positive integer");
  lua_Integer maxiter = arg_int(L, 7, "maxiter", 1, 65535, "an integer from 1 to 65535");
  if (w > TILE_MAX / h)
    return luaL_error(L, "farm.kernels.mandelbrot: arguments 'w' and 'h' (%I by %I) make "
                      "more than 2^26 pixels (split the tile into several jobs)", w, h);
  size_t size = (size_t)(w * h) * (maxiter > 255 ? 2 : 1);
  luaL_Buffer b;
  unsigned char *out = (unsigned char *)luaL_buffinitsize(L, &b, size);
  int rc = farm_kernel_mandelbrot(out, x0, y0, dx, dy, (uint32_t)w, (uint32_t)h,
                                  (uint32_t)maxiter);
  if (rc != 0) return kernel_failed(L, rc);
  luaL_pushresultsize(&b, size);
  return 1;
}

#define MATRIX_MAX ((lua_Integer)1 << 27)  /* numbers in one matrix: 1 GiB of doubles */

/* Matrix `name` (argument i) of `count` numbers, as a table or a string of
   doubles (the same kind as argument 1), copied into a new userdata (the
   kernel wants aligned doubles; a string's bytes need not be). */
static double *arg_matrix(lua_State *L, int i, const char *name, const char *dims,
                          lua_Integer count, int as_string) {
  double *m = (double *)lua_newuserdatauv(L, (size_t)count * sizeof(double), 0);
  if (as_string) {
    size_t len;
    if (lua_type(L, i) != LUA_TSTRING) arg_error(L, i, name, "a string of doubles, as 'a' is");
    const char *s = lua_tolstring(L, i, &len);
    if (len != (size_t)count * sizeof(double))
      luaL_error(L, "farm.kernels.matmul: argument '%s' must be %s = %I doubles, %I bytes "
                 "(got %I bytes)", name, dims, count, count * (lua_Integer)sizeof(double),
                 (lua_Integer)len);
    memcpy(m, s, len);
    return m;
  }
  if (lua_type(L, i) != LUA_TTABLE) arg_error(L, i, name, "a table of numbers, as 'a' is");
  lua_Integer len = (lua_Integer)lua_rawlen(L, i);
  if (len != count)
    luaL_error(L, "farm.kernels.matmul: argument '%s' must hold %s = %I numbers (got %I)",
               name, dims, count, len);
  for (lua_Integer k = 0; k < count; k++) {
    if (lua_rawgeti(L, i, k + 1) != LUA_TNUMBER)
      luaL_error(L, "farm.kernels.matmul: argument '%s' must hold numbers only (got %s "
                 "at item %I)", name, luaL_typename(L, -1), k + 1);
    m[k] = (double)lua_tonumber(L, -1);
    lua_pop(L, 1);
  }
  return m;
}

/* matmul(a, b, n, m, k) -> c = a * b, row-major: a is n by m, b m by k, c n by
   k. Tables of numbers in, a table out; or strings of native doubles in
   (string.pack("d", ...)), a string out, which keeps big matrices out of
   tables on their way to and from workers. */
static int l_matmul(lua_State *L) {
  lua_Integer n = arg_int(L, 3, "n", 1, LUA_MAXINTEGER, "a positive integer");
  lua_Integer m = arg_int(L, 4, "m", 1, LUA_MAXINTEGER, "a positive integer");
  lua_Integer k = arg_int(L, 5, "k", 1, LUA_MAXINTEGER, "a positive integer");
  if (n > MATRIX_MAX / m || m > MATRIX_MAX / k || n > MATRIX_MAX / k)
    return luaL_error(L, "farm.kernels.matmul: arguments 'n', 'm' and 'k' (%I, %I, %I) make "
                      "a matrix of more than 2^27 numbers (split c into several jobs)", n, m, k);
  int t = lua_type(L, 1);
  if (t != LUA_TTABLE && t != LUA_TSTRING)
    return arg_error(L, 1, "a", "a table of numbers or a string of doubles");
  lua_settop(L, 5);
  double *a = arg_matrix(L, 1, "a", "n*m", n * m, t == LUA_TSTRING);
  double *b = arg_matrix(L, 2, "b", "m*k", m * k, t == LUA_TSTRING);
  double *c = (double *)lua_newuserdatauv(L, (size_t)(n * k) * sizeof(double), 0);
  farm_kernel_matmul(c, a, b, (size_t)n, (size_t)m, (size_t)k);
  if (t == LUA_TSTRING) {
    lua_pushlstring(L, (const char *)c, (size_t)(n * k) * sizeof(double));
    return 1;
  }
  lua_createtable(L, (int)(n * k), 0);
  for (lua_Integer i = 0; i < n * k; i++) {
    lua_pushnumber(L, c[i]);
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

/* ---- the table --------------------------------------------------------------- */

static const luaL_Reg kernels[] = {
  { "pi_hits",            l_pi_hits },
  { "count_primes_below", l_count_primes_below },
  { "sum_primes_below",   l_sum_primes_below },
  { "blake2b",            l_blake2b },
  { "mandelbrot",         l_mandelbrot },
  { "matmul",             l_matmul },
  { NULL, NULL }
};

void farm__open_kernels(lua_State *L, int core) {
  core = lua_absindex(L, core);
  lua_createtable(L, 0, (int)(sizeof kernels / sizeof *kernels - 1));
  for (const luaL_Reg *k = kernels; k->name; k++) {
    lua_pushstring(L, k->name);
    lua_pushcclosure(L, k->func, 1);
    lua_setfield(L, -2, k->name);
  }
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushvalue(L, -2);
  lua_setfield(L, -2, "farm.kernels");
  lua_pop(L, 1);
  lua_setfield(L, core, "kernels");
}
