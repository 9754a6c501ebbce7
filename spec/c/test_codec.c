/*
 * test_codec.c -- the value codec (core/codec.c, core/buf.c) driven through a
 * real lua_State, printing TAP.
 *
 * Round trips of every kind of value, the exact bytes of a few, the error
 * messages for what cannot travel, and hostile input: every truncation of a
 * rich encoding, a few bytes claiming huge counts (checked against an
 * allocator that records the largest block asked for), and random byte flips
 * (under ASan in `make asan`). Properties that read best in Lua are checked by
 * Lua snippets that call check(cond, description).
 */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include "farm.h"
#include "buf.h"
#include "codec.h"
#include "luafuncs.h"

typedef struct tap {
  int n, failed;
} tap;

static void ok(tap *t, int cond, const char *fmt, ...) {
  va_list ap;
  t->n++;
  if (!cond) t->failed++;
  printf("%sok %d - ", cond ? "" : "not ", t->n);
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  printf("\n");
  fflush(stdout);
}

/* ---- an allocator that can cap memory and reports the largest request ---- */

typedef struct mem {
  size_t used, limit, biggest;
  size_t peak;       /* most bytes in use at once */
  int nbig;          /* requests that (re)allocate a block to 1 MiB or more */
} mem;

static void *test_alloc(void *ud, void *p, size_t osize, size_t nsize) {
  mem *m = ud;
  if (p == NULL) osize = 0;
  if (nsize == 0) {
    free(p);
    m->used -= osize;
    return NULL;
  }
  if (nsize > m->biggest) m->biggest = nsize;
  if (nsize >= (1u << 20)) m->nbig++;
  if (m->limit && nsize > osize && m->used + (nsize - osize) > m->limit) return NULL;
  void *q = realloc(p, nsize);
  if (q) m->used = m->used - osize + nsize;
  if (m->used > m->peak) m->peak = m->used;
  return q;
}

/* ---- calling the codec under lua_pcall ---- */

/* A message to decode, or the buffer to encode into. */
typedef struct msg {
  const char *p;
  size_t n;
} msg;

/* encode(buf, values...): the farm_buf is a light userdata; values from 2. */
static int c_encode(lua_State *L) {
  farm_buf *b = lua_touserdata(L, 1);
  farm_encoder e = {0};
  e.root = "argument";
  farm__codec_encode(L, b, 2, lua_gettop(L) - 1, &e);
  return 0;
}

/* decode(msg [, env, resolve, cache]) -> values */
static int c_decode(lua_State *L) {
  const msg *m = lua_touserdata(L, 1);
  farm_decoder d = {0};
  lua_settop(L, 4);
  d.env = lua_isnil(L, 2) ? 0 : 2;
  d.resolve = lua_isnil(L, 3) ? 0 : 3;
  d.cache = lua_isnil(L, 4) ? 0 : 4;
  return farm__codec_decode(L, m->p, m->n, &d);
}

static int resolve_nil(lua_State *L) {
  (void)L;
  return 0;
}

/* A count hook so that decoded function text that loops cannot hang a test. */
static void stop_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  luaL_error(L, "instruction budget exceeded");
}

/* Decode p[0..n) under pcall with an empty env, a resolver giving nil and a
   cache; returns the pcall status and leaves the stack as it was. On error,
   copies the message (truncated) to err when err is not NULL. */
static int try_decode(lua_State *L, const void *p, size_t n, char *err, size_t errlen) {
  msg m = {p, n};
  int top = lua_gettop(L);
  lua_pushcfunction(L, c_decode);
  lua_pushlightuserdata(L, &m);
  lua_newtable(L);
  lua_pushcfunction(L, resolve_nil);
  lua_newtable(L);
  lua_sethook(L, stop_hook, LUA_MASKCOUNT, 1000000);
  int st = lua_pcall(L, 4, LUA_MULTRET, 0);
  lua_sethook(L, NULL, 0, 0);
  if (st != LUA_OK && err) {
    const char *s = lua_tostring(L, -1);
    snprintf(err, errlen, "%s", s ? s : "(no message)");
  }
  lua_settop(L, top);
  return st;
}

/* Encode the value at idx into b (appending) under pcall; returns status. */
static int try_encode1(lua_State *L, farm_buf *b, int idx) {
  idx = lua_absindex(L, idx);
  lua_pushcfunction(L, c_encode);
  lua_pushlightuserdata(L, b);
  lua_pushvalue(L, idx);
  return lua_pcall(L, 2, 0, 0);
}

/* ---- check(cond, description) for Lua snippets ---- */

static int l_check(lua_State *L) {
  tap *t = lua_touserdata(L, lua_upvalueindex(1));
  ok(t, lua_toboolean(L, 1), "%s", luaL_optstring(L, 2, "(lua check)"));
  return 0;
}

static void run_lua(tap *t, lua_State *L, const char *name, const char *src) {
  int st = luaL_loadbuffer(L, src, strlen(src), name);
  if (st == LUA_OK) st = lua_pcall(L, 0, 0, 0);
  if (st != LUA_OK) {
    ok(t, 0, "%s ran: %s", name, lua_tostring(L, -1));
    lua_pop(L, 1);
  }
}

/* ---- the tests ---- */

static void test_bytes(tap *t, lua_State *L) {
  farm_buf b;
  farm__buf_init(&b);
  lua_pushinteger(L, 5);
  try_encode1(L, &b, -1);
  lua_pop(L, 1);
  ok(t, b.n == 3 && memcmp(b.p, "\x01\x85\x00", 3) == 0,
     "5 encodes as SMALLINT: 01 85 00");
  b.n = 0;
  lua_pushinteger(L, 128);
  try_encode1(L, &b, -1);
  lua_pop(L, 1);
  ok(t, b.n == 5 && memcmp(b.p, "\x01\x03\x80\x02\x00", 5) == 0,
     "128 encodes as INT zigzag: 01 03 80 02 00");
  b.n = 0;
  lua_pushnumber(L, 1.0);
  try_encode1(L, &b, -1);
  lua_pop(L, 1);
  ok(t, b.n == 11 && (unsigned char)b.p[1] == FARM_T_FLT &&
        memcmp(b.p + 2, "\x00\x00\x00\x00\x00\x00\xf0\x3f", 8) == 0,
     "1.0 encodes as FLT with its IEEE bits, little-endian");
  farm__buf_free(&b);

  /* buffer and reader primitives */
  farm__buf_init(&b);
  uint64_t u[] = {0, 1, 127, 128, 300, UINT32_MAX, UINT64_MAX};
  int64_t s[] = {0, -1, 1, INT64_MIN, INT64_MAX, -300};
  for (size_t i = 0; i < sizeof u / sizeof u[0]; i++) farm__buf_uvar(&b, u[i]);
  for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) farm__buf_svar(&b, s[i]);
  farm__buf_u64le(&b, 0x0102030405060708ull);
  farm__buf_str(&b, "a\0b", 3);
  farm_rd r;
  farm__rd_init(&r, b.p, b.n);
  int good = 1;
  for (size_t i = 0; i < sizeof u / sizeof u[0]; i++) good &= farm__rd_uvar(&r) == u[i];
  for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) good &= farm__rd_svar(&r) == s[i];
  good &= farm__rd_u64le(&r) == 0x0102030405060708ull;
  size_t n;
  const char *str = farm__rd_str(&r, &n);
  good &= str && n == 3 && memcmp(str, "a\0b", 3) == 0;
  good &= !r.err && farm__rd_left(&r) == 0;
  ok(t, good, "buf/rd: uvar, svar (minint, maxint), u64le, str round trip");
  farm__rd_u8(&r);
  ok(t, r.err && farm__rd_u8(&r) == 0, "rd: reading past the end fails and stays failed");
  farm__buf_free(&b);

  static const unsigned char over11[] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
                                         0x80, 0x80, 0x80, 0x80, 0x00};
  farm__rd_init(&r, over11, sizeof over11);
  farm__rd_uvar(&r);
  ok(t, r.err, "rd: a uvar longer than 10 bytes is rejected");
  static const unsigned char over64[] = {0xff, 0xff, 0xff, 0xff, 0xff,
                                         0xff, 0xff, 0xff, 0xff, 0x02};
  farm__rd_init(&r, over64, sizeof over64);
  farm__rd_uvar(&r);
  ok(t, r.err, "rd: a 10-byte uvar that overflows 64 bits is rejected");
  static const unsigned char max64[] = {0xff, 0xff, 0xff, 0xff, 0xff,
                                        0xff, 0xff, 0xff, 0xff, 0x01};
  farm__rd_init(&r, max64, sizeof max64);
  ok(t, farm__rd_uvar(&r) == UINT64_MAX && !r.err, "rd: UINT64_MAX in 10 bytes is read");
  static const unsigned char longstr[] = {0x05, 'a', 'b'};
  farm__rd_init(&r, longstr, sizeof longstr);
  ok(t, farm__rd_str(&r, &n) == NULL && r.err, "rd: a string longer than what is left fails");
}

/* Scalars through the C API, checked in C. */
static void test_scalars(tap *t, lua_State *L) {
  farm_buf b;
  farm__buf_init(&b);
  int top = lua_gettop(L);
  lua_pushcfunction(L, c_encode);
  lua_pushlightuserdata(L, &b);
  lua_pushnil(L);
  lua_pushboolean(L, 0);
  lua_pushboolean(L, 1);
  lua_Integer ints[] = {0, 127, 128, -1, LUA_MININTEGER, LUA_MAXINTEGER};
  for (int i = 0; i < 6; i++) lua_pushinteger(L, ints[i]);
  lua_pushnumber(L, 1.0);
  lua_pushnumber(L, -0.0);
  lua_pushnumber(L, HUGE_VAL);
  lua_pushnumber(L, -HUGE_VAL);
  lua_pushnumber(L, NAN);
  lua_pushlstring(L, "a\0b\0", 4);
  lua_pushliteral(L, "");
  lua_pushnil(L);
  lua_pushnil(L);
  int nvals = lua_gettop(L) - top - 2;
  int st = lua_pcall(L, nvals + 1, 0, 0);
  ok(t, st == LUA_OK, "scalars encode");

  msg m = {b.p, b.n};
  lua_pushcfunction(L, c_decode);
  lua_pushlightuserdata(L, &m);
  st = lua_pcall(L, 1, LUA_MULTRET, 0);
  ok(t, st == LUA_OK && lua_gettop(L) - top == nvals, "scalars decode, count %d kept (trailing nils)",
     nvals);
  if (st != LUA_OK) {
    lua_settop(L, top);
    farm__buf_free(&b);
    return;
  }
  int i = top + 1;
  ok(t, lua_type(L, i) == LUA_TNIL, "nil");
  ok(t, lua_type(L, i + 1) == LUA_TBOOLEAN && !lua_toboolean(L, i + 1), "false");
  ok(t, lua_type(L, i + 2) == LUA_TBOOLEAN && lua_toboolean(L, i + 2), "true");
  for (int k = 0; k < 6; k++)
    ok(t, lua_isinteger(L, i + 3 + k) && lua_tointeger(L, i + 3 + k) == ints[k],
       "integer %lld stays an integer", (long long)ints[k]);
  i += 9;
  ok(t, !lua_isinteger(L, i) && lua_tonumber(L, i) == 1.0, "1.0 stays a float");
  ok(t, !lua_isinteger(L, i + 1) && lua_tonumber(L, i + 1) == 0 && signbit(lua_tonumber(L, i + 1)),
     "-0.0 keeps its sign bit");
  ok(t, isinf(lua_tonumber(L, i + 2)) && lua_tonumber(L, i + 2) > 0, "inf");
  ok(t, isinf(lua_tonumber(L, i + 3)) && lua_tonumber(L, i + 3) < 0, "-inf");
  ok(t, isnan(lua_tonumber(L, i + 4)), "nan");
  size_t n;
  const char *s = lua_tolstring(L, i + 5, &n);
  ok(t, n == 4 && memcmp(s, "a\0b\0", 4) == 0, "string with NUL bytes");
  s = lua_tolstring(L, i + 6, &n);
  ok(t, s && n == 0, "empty string");
  ok(t, lua_isnil(L, i + 7) && lua_isnil(L, i + 8), "trailing nils");
  lua_settop(L, top);
  farm__buf_free(&b);

  /* a block of no values */
  farm__buf_init(&b);
  lua_pushcfunction(L, c_encode);
  lua_pushlightuserdata(L, &b);
  lua_pcall(L, 1, 0, 0);
  m.p = b.p;
  m.n = b.n;
  lua_pushcfunction(L, c_decode);
  lua_pushlightuserdata(L, &m);
  st = lua_pcall(L, 1, LUA_MULTRET, 0);
  ok(t, st == LUA_OK && lua_gettop(L) == top && b.n == 2, "a block of zero values");
  lua_settop(L, top);
  farm__buf_free(&b);
}

static void test_big_string(tap *t, lua_State *L, size_t size) {
  char *src = malloc(size);
  if (!src) {
    ok(t, 0, "%zu MiB string: no memory for the test", size >> 20);
    return;
  }
  for (size_t i = 0; i < size; i++) src[i] = (char)(i * 131 + (i >> 13));
  lua_pushlstring(L, src, size);
  farm_buf b;
  farm__buf_init(&b);
  int st = try_encode1(L, &b, -1);
  lua_pop(L, 1);
  msg m = {b.p, b.n};
  int top = lua_gettop(L);
  lua_pushcfunction(L, c_decode);
  lua_pushlightuserdata(L, &m);
  int st2 = st == LUA_OK ? lua_pcall(L, 1, LUA_MULTRET, 0) : -1;
  size_t n = 0;
  const char *s = st2 == LUA_OK ? lua_tolstring(L, -1, &n) : NULL;
  ok(t, st == LUA_OK && st2 == LUA_OK && s && n == size && memcmp(s, src, size) == 0,
     "%zu MiB string round trip", size >> 20);
  lua_settop(L, top);
  farm__buf_free(&b);
  free(src);
  lua_gc(L, LUA_GCCOLLECT);
}

/* Tables, functions and messages: in Lua, through core.pack / core.unpack. */
static const char *lua_tests =
  "local pack, unpack = core.pack, core.unpack\n"
  "local function rt(...) return unpack(pack(nil, ...)) end\n"
  "local function deq(a, b, seen)\n"
  "  if type(a) ~= type(b) then return false end\n"
  "  if type(a) ~= 'table' then\n"
  "    if a ~= a then return b ~= b end\n"
  "    return a == b and math.type(a) == math.type(b)\n"
  "  end\n"
  "  seen = seen or {}\n"
  "  if seen[a] then return seen[a] == b end\n"
  "  seen[a] = b\n"
  "  for k, v in pairs(a) do if not deq(v, b[k], seen) then return false end end\n"
  "  for k in pairs(b) do if a[k] == nil then return false end end\n"
  "  return deq(getmetatable(a), getmetatable(b), seen)\n"
  "end\n"
  "local t = {1, 2.5, 'x', {y = {z = {true, false}}}, [10] = 'ten', [-1] = 'neg',\n"
  "           [1.5] = 'f', [true] = 'b', s = 'a\\0b'}\n"
  "check(deq(rt(t), t), 'nested table round trip')\n"
  "local u = rt(t)\n"
  "check(math.type(u[1]) == 'integer' and math.type(u[2]) == 'float', 'numbers keep their subtype in tables')\n"
  "local holes = {1, nil, 3, nil, nil, 6}\n"
  "local h = rt(holes)\n"
  "check(h[1] == 1 and h[2] == nil and h[3] == 3 and h[6] == 6 and h[4] == nil, 'nil holes in arrays')\n"
  "local c = {name = 'c'} c.self = c c.list = {c, {c}}\n"
  "local c2 = rt(c)\n"
  "check(c2.self == c2 and c2.list[1] == c2 and c2.list[2][1] == c2 and c2 ~= c, 'cycles come back as cycles')\n"
  "local shared = {1, 2}\n"
  "local a, b = rt(shared, {shared, shared})\n"
  "check(a == b[1] and b[1] == b[2], 'shared references stay shared, across values of a block')\n"
  "local mt = {__index = {default = 1}, kind = 'point'}\n"
  "local p1, p2 = setmetatable({x = 1}, mt), setmetatable({x = 2}, mt)\n"
  "local q1, q2 = rt(p1, p2)\n"
  "check(getmetatable(q1) == getmetatable(q2) and getmetatable(q1).kind == 'point' and q1.default == 1, 'metatables travel, shared')\n"
  "local r = rt(setmetatable({}, {__mode = 'k'}))\n"
  "check(getmetatable(r).__mode == 'k', 'metatable fields travel')\n"
  "check(select('#', rt(nil, nil, nil)) == 3, 'select(\"#\") with only nils')\n"
  "check(select('#', rt()) == 0, 'no values')\n"
  "local keys = {} for i = 1, 300 do keys['k' .. i] = i end\n"
  "for i = 1, 300 do keys[i] = -i end\n"
  "check(deq(rt(keys), keys), 'table with 300 array and 300 hash entries (wide counts)')\n"
  "local back = {} for i = 200, 1, -1 do back[i] = i end\n"
  "check(deq(rt(back), back), 'table filled backwards (array keys in the hash part)')\n"
  "local sparse = {[1] = 'a', [2] = 'b', [4] = 'd', x = 1}\n"
  "check(deq(rt(sparse), sparse), 'sparse table')\n"
  "local ok, err = pcall(pack, nil, 1, {conn = {io.stdout}})\n"
  "check(not ok and err == 'cannot ship argument 2.conn[1] (userdata)', 'userdata path message: ' .. tostring(err))\n"
  "ok, err = pcall(pack, {root = 'result'}, {['not an id'] = print})\n"
  "check(not ok and err == 'cannot ship result 1[?] (C function)', 'C function message: ' .. tostring(err))\n"
  "ok, err = pcall(pack, nil, {[io.stdout] = 1})\n"
  "check(not ok and err == 'cannot ship argument 1[?] (userdata)', 'userdata key message: ' .. tostring(err))\n"
  "ok, err = pcall(pack, nil, setmetatable({}, {__index = io.stdout}))\n"
  "check(not ok and err == 'cannot ship argument 1<metatable>.__index (userdata)', 'metatable path: ' .. tostring(err))\n"
  "ok, err = pcall(pack, nil, coroutine.create(print))\n"
  "check(not ok and err == 'cannot ship argument 1 (thread)', 'thread message')\n"
  "local deep = {} local x = deep for i = 1, 199 do x[1] = {} x = x[1] end\n"
  "ok = pcall(pack, nil, deep)\n"
  "check(ok, '200 levels of tables encode')\n"
  "x[1] = {}\n"
  "ok, err = pcall(pack, nil, deep)\n"
  "check(not ok and err:find('its tables nest deeper than 200 levels', 1, true), 'depth limit on encode: ' .. tostring(err))\n"
  "local big = {} for i = 1, 1000000 do big[i] = i end\n"
  "local t0 = os.clock() local s = pack(nil, big) local t1 = os.clock()\n"
  "local big2 = unpack(s) local t2 = os.clock()\n"
  "check(#big2 == 1000000 and big2[1000000] == 1000000, '1,000,000 integers round trip')\n"
  "print(string.format('# 1e6 integers: %d bytes, encode %.1f ms, decode %.1f ms', #s, (t1 - t0) * 1e3, (t2 - t1) * 1e3))\n";

/* Functions through a describe hook written here (lua/ship.lua is the real one). */
static const char *lua_fn_tests =
  "local pack, unpack = core.pack, core.unpack\n"
  "local texts = {}\n"
  "local function describe(f)\n"
  "  local d = assert(texts[f], 'no text for function')\n"
  "  return d\n"
  "end\n"
  "local k = 10\n"
  "local function add(x) return x + k end\n"
  "texts[add] = {chunk = '@job.lua', line = 7, text = 'local k; return function(x) return x + k end',\n"
  "              name = 'add', where = 'job.lua:7'}\n"
  "local s = pack({describe = describe}, add)\n"
  "local add2 = unpack(s)\n"
  "check(add2 ~= add and add2(1) == 11, 'function with an upvalue round trip')\n"
  "local info = debug.getinfo(add2, 'S')\n"
  "check(info.source == '@job.lua' and info.linedefined == 7, 'function keeps chunk name and line')\n"
  "local cache = {}\n"
  "local f1 = unpack(s, {cache = cache})\n"
  "local f2 = unpack(s, {cache = cache})\n"
  "local n = 0 for _ in pairs(cache) do n = n + 1 end\n"
  "check(n == 1 and f1 ~= f2 and f1(1) == 11 and f2(2) == 12, 'compiled chunk cached, fresh closures')\n"
  "local function usesg() return G end\n"
  "texts[usesg] = {chunk = '=g', line = 1, text = 'return function() return G end', name = 'usesg',\n"
  "                where = 'g:1', globals = {'G'}}\n"
  "G = 'sender'\n"
  "local sg = pack({describe = describe, globals = _G}, usesg)\n"
  "local e1, e2 = {}, {}\n"
  "local g1 = unpack(sg, {env = e1, cache = cache})\n"
  "local g2 = unpack(sg, {env = e2, cache = cache})\n"
  "check(g1() == 'sender' and rawget(e1, 'G') == 'sender', 'globals section fills the env')\n"
  "e1.G, e2.G = 'one', 'two'\n"
  "check(g1() == 'one' and g2() == 'two', 'two copies of a cached function keep their own env')\n"
  "G = nil\n"
  "local g3 = unpack(pack({describe = describe, globals = _G}, usesg))\n"
  "check(g3() == nil, 'a nil global is left out')\n"
  "local function even(n) if n == 0 then return true end return odd(n - 1) end\n"
  "function odd(n) if n == 0 then return false end return even(n - 1) end\n"
  "texts[even] = {chunk = '=e', line = 1, text = 'local odd; return function(n) if n == 0 then return true end return odd(n - 1) end',\n"
  "               name = 'even', where = 'e:1'}\n"
  "texts[odd] = {chunk = '=o', line = 1, text = 'local even; return function(n) if n == 0 then return false end return even(n - 1) end',\n"
  "              name = 'odd', where = 'o:1'}\n"
  "local mutual = {}\n"
  "local function mk()\n"
  "  local ev, od\n"
  "  ev = function(n) if n == 0 then return true end return od(n - 1) end\n"
  "  od = function(n) if n == 0 then return false end return ev(n - 1) end\n"
  "  return ev, od\n"
  "end\n"
  "local ev, od = mk()\n"
  "texts[ev] = {chunk = '=m', line = 1, text = 'local od; return function(n) if n == 0 then return true end return od(n - 1) end', name = 'ev', where = 'm:1'}\n"
  "texts[od] = {chunk = '=m', line = 1, text = 'local ev; return function(n) if n == 0 then return false end return ev(n - 1) end', name = 'od', where = 'm:1'}\n"
  "local ev2 = unpack(pack({describe = describe}, ev))\n"
  "check(ev2(10) == true and ev2(7) == false, 'mutually recursive functions (a cycle through upvalues)')\n"
  "local conn = io.stdout\n"
  "local function work() return conn end\n"
  "texts[work] = {chunk = '@job.lua', line = 12, text = 'local conn; return function() return conn end', name = 'work', where = 'job.lua:12'}\n"
  "local ok, err = pcall(pack, {describe = describe}, work)\n"
  "check(not ok and err == \"cannot ship upvalue 'conn' (userdata) of function 'work' (job.lua:12)\", tostring(err))\n"
  "local cfg = {conn = io.stdout}\n"
  "local function work2() return cfg end\n"
  "texts[work2] = {chunk = '@job.lua', line = 12, text = 'x', name = 'work', where = 'job.lua:12'}\n"
  "ok, err = pcall(pack, {describe = describe}, work2)\n"
  "check(not ok and err == \"cannot ship upvalue 'cfg.conn' (userdata) of function 'work' (job.lua:12)\", tostring(err))\n"
  "db = io.stdout\n"
  "local function work3() return db end\n"
  "texts[work3] = {chunk = '@job.lua', line = 12, text = 'x', name = 'work', where = 'job.lua:12', globals = {'db'}}\n"
  "ok, err = pcall(pack, {describe = describe, globals = _G}, work3)\n"
  "check(not ok and err == \"cannot ship global 'db' (userdata) used by function 'work' (job.lua:12)\", tostring(err))\n"
  "db = nil\n"
  "ok, err = pcall(pack, {describe = function() error('no source') end}, work3)\n"
  "check(not ok and err:find('no source'), 'an error from describe propagates')\n"
  "local names = {[math.sqrt] = 'math.sqrt', [string] = 'string'}\n"
  "local ms = pack({names = names}, math.sqrt, {string})\n"
  "local asked = {}\n"
  "local sq, st = unpack(ms, {resolve = function(n) asked[#asked + 1] = n return load('return ' .. n)() end})\n"
  "check(sq == math.sqrt and st[1] == string and asked[1] == 'math.sqrt' and asked[2] == 'string', 'MODREF through names and resolve')\n"
  "ok, err = pcall(unpack, ms)\n"
  "check(not ok and err:find('^malformed message'), 'MODREF without resolve is malformed')\n"
  "ok, err = pcall(pack, nil, math.sqrt)\n"
  "check(not ok and err == 'cannot ship argument 1 (C function)', 'C function not in names')\n"
  "local bad = {chunk = '=x', line = 1, text = 'return function( end', name = 'x', where = 'x:1'}\n"
  "local function fbad() end\n"
  "texts[fbad] = bad\n"
  "ok, err = pcall(unpack, pack({describe = describe}, fbad))\n"
  "check(not ok and err:find('^malformed message: function text does not compile: '), tostring(err))\n"
  "texts[fbad] = {chunk = '=x', line = 1, text = 'return 42', name = 'x', where = 'x:1'}\n"
  "ok, err = pcall(unpack, pack({describe = describe}, fbad))\n"
  "check(not ok and err == 'malformed message: function text does not return a function', tostring(err))\n"
  "local up = 1\n"
  "local function fup() return up end\n"
  "texts[fup] = {chunk = '=x', line = 1, text = 'return function() end', name = 'x', where = 'x:1'}\n"
  "ok, err = pcall(unpack, pack({describe = describe}, fup))\n"
  "check(not ok and err == \"malformed message: function has no upvalue 'up'\", tostring(err))\n";

/* A rich value, encoded: every tag appears. */
static const char *rich_src =
  "local t = {1, -1, 1e300, -0.0, 1/0, 'str\\0ing', true, false, {nested = {deep = {}}},\n"
  "           [100] = 'far', x = 128, [2.5] = 'flt'}\n"
  "t.self = t\n"
  "t.shared = {t[9], t[9]}\n"
  "setmetatable(t, {__index = t[9]})\n"
  "local k = 3\n"
  "local function f(x) return x + k end\n"
  "RICHG = {1, 2}\n"
  "local d = {chunk = '@rich.lua', line = 5, text = 'local k; return function(x) return x + k + #RICHG end',\n"
  "           name = 'f', where = 'rich.lua:5', globals = {'RICHG'}}\n"
  "t.f = f\n"
  "t.g = f\n"
  "t.sqrt = math.sqrt\n"
  "t.env = _G\n"
  "return core.pack({describe = function() return d end, names = {[math.sqrt] = 'math.sqrt'},\n"
  "                  globals = _G}, t, nil, 'tail')\n";

static void test_hostile(tap *t, lua_State *L, mem *m) {
  char err[256];
  if (luaL_dostring(L, rich_src) != LUA_OK) {
    ok(t, 0, "rich value encodes: %s", lua_tostring(L, -1));
    lua_pop(L, 1);
    return;
  }
  size_t n;
  const char *enc = lua_tolstring(L, -1, &n);
  char *rich = malloc(n);
  memcpy(rich, enc, n);
  lua_pop(L, 1);

  int st = try_decode(L, rich, n, err, sizeof err);
  ok(t, st == LUA_OK, "rich value (%zu bytes) decodes: %s", n, st == LUA_OK ? "ok" : err);

  int all = 1;
  for (size_t len = 0; len < n; len++) {
    st = try_decode(L, rich, len, err, sizeof err);
    if (st == LUA_OK || strncmp(err, "malformed message: ", 19) != 0) {
      if (all) printf("# truncation at %zu: %s\n", len, st == LUA_OK ? "decoded!" : err);
      all = 0;
    }
  }
  ok(t, all, "every truncation (%zu of them) fails as malformed", n);

  char *ext = malloc(n + 1);
  memcpy(ext, rich, n);
  ext[n] = 0;
  st = try_decode(L, ext, n + 1, err, sizeof err);
  ok(t, st != LUA_OK && strstr(err, "trailing"), "a trailing byte is malformed: %s", err);
  free(ext);

  /* a few bytes claiming enormous sizes must fail before allocating */
#define S(lit) lit, sizeof(lit) - 1
  static const struct {
    const char *what;
    const char *p;
    size_t n;
  } huge[] = {
    {"table of 2^32 array slots", S("\x01\x06\xff\xff\xff\xff\x0f\x00\x00")},
    {"table of 2^63 hash slots", S("\x01\x06\x00\xff\xff\xff\xff\xff\xff\xff\xff\x7f\x00")},
    {"string of 2^62 bytes", S("\x01\x05\xff\xff\xff\xff\xff\xff\xff\xff\x3f" "abc\x00")},
    {"block of 2^40 values", S("\x80\x80\x80\x80\x80\x20\x00")},
    {"function with 2^30 upvalues", S("\x01\x09\x01x\x01\x15return function() end\x80\x80\x80\x80\x04\x00")},
    {"function on line 2^50", S("\x01\x09\x01x\x80\x80\x80\x80\x80\x80\x80\x01\x15return function() end\x00\x00")},
    {"uvar of 11 bytes", S("\x01\x03\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x00\x00")},
    {"reference to nothing", S("\x01\x08\x01\x00")},
    {"reference 0", S("\x01\x06\x01\x00\x08\x00\x00")},
    {"unknown tag", S("\x01\x42\x00")},
    {"MODREF resolving to nil (fine here)", S("\x01\x0a\x01x\x00")},
    {"globals name without value", S("\x00\x01x")},
    {"nil table key", S("\x01\x06\x00\x01\x00\x81\x00")},
    {"NaN table key", S("\x01\x06\x00\x01\x04\x00\x00\x00\x00\x00\x00\xf8\x7f\x81\x00")},
    {"metatable that is not a table", S("\x01\x07\x00\x00\x81\x00")},
    {"binary chunk as function text", S("\x01\x09\x01x\x01\x04\x1bLua\x00\x00")},
  };
  for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
    lua_gc(L, LUA_GCCOLLECT);
    m->biggest = 0;
    st = try_decode(L, huge[i].p, huge[i].n, err, sizeof err);
    int expect_ok = strstr(huge[i].what, "fine here") != NULL;
    ok(t, (expect_ok ? st == LUA_OK : st != LUA_OK && strncmp(err, "malformed message: ", 19) == 0) &&
          m->biggest < (64 << 10),
       "%s: %s (largest allocation %zu bytes)", huge[i].what, expect_ok ? "ok" : err, m->biggest);
  }

  /* each count is checked against what the message can hold, before anything
     is read or made for it, and the error says which: claims just past what
     is left (a later check -- a budget, a truncation -- would also stop the
     huge ones above, with a vaguer word) */
  static const struct {
    const char *what, *why;
    const char *p;
    size_t n;
  } claims[] = {
    {"table of 2^63 hash slots", "table size exceeds message", S("\x01\x06\x00\xff\xff\xff\xff\xff\xff\xff\xff\x7f\x00")},
    {"table of 3 pairs in 5 bytes", "table size exceeds message", S("\x01\x06\x00\x03\x81\x81\x81\x81\x00")},
    {"table of 6 slots in 5 bytes", "table size exceeds message", S("\x01\x06\x06\x00\x81\x81\x81\x81\x00")},
    {"block of 2^40 values", "value count exceeds message", S("\x80\x80\x80\x80\x80\x20\x00")},
    {"block of 5 values in 4 bytes", "value count exceeds message", S("\x05\x81\x82\x83\x00")},
    {"function with 2^30 upvalues", "upvalue count exceeds message",
     S("\x01\x09\x01x\x01\x15return function() end\x80\x80\x80\x80\x04\x00")},
    {"function with 3 upvalues in 4 bytes", "upvalue count exceeds message",
     S("\x01\x09\x01x\x01\x15return function() end\x03\x00\x00\x00\x00")},
  };
  for (size_t i = 0; i < sizeof claims / sizeof claims[0]; i++) {
    st = try_decode(L, claims[i].p, claims[i].n, err, sizeof err);
    ok(t, st != LUA_OK && strstr(err, claims[i].why) != NULL, "%s: refused as '%s' (%s)",
       claims[i].what, claims[i].why, err);
  }

  /* nesting depth on decode: 200 tables decode, 201 are malformed */
  for (int depth = 200; depth <= 201; depth++) {
    size_t len = 1 + 4 * (size_t)depth + 1;
    unsigned char *p = malloc(len), *q = p;
    *q++ = 1;
    for (int i = 0; i < depth - 1; i++) { *q++ = FARM_T_TABLE; *q++ = 1; *q++ = 0; }
    *q++ = FARM_T_TABLE; *q++ = 0; *q++ = 0;
    *q++ = 0;
    st = try_decode(L, p, (size_t)(q - p), err, sizeof err);
    if (depth == 200)
      ok(t, st == LUA_OK, "200 nested tables decode");
    else
      ok(t, st != LUA_OK && strcmp(err, "malformed message: table nesting too deep (more than 200 levels)") == 0,
         "201 nested tables: %s", err);
    free(p);
  }

  /* random byte flips; xorshift so that a failure can be replayed */
  uint64_t x = 0x9e3779b97f4a7c15ull;
  int decoded = 0, failed = 0, bad = 0;
  char *mut = malloc(n);
  for (int iter = 0; iter < 20000; iter++) {
    memcpy(mut, rich, n);
    int flips = 1 + (int)(x % 4);
    for (int f = 0; f < flips; f++) {
      x ^= x << 13; x ^= x >> 7; x ^= x << 17;
      size_t pos = (size_t)(x % n);
      x ^= x << 13; x ^= x >> 7; x ^= x << 17;
      mut[pos] = (iter & 1) ? (char)(mut[pos] ^ (1u << (x % 8))) : (char)x;
    }
    st = try_decode(L, mut, n, err, sizeof err);
    if (st == LUA_OK) decoded++;
    else failed++;
    if (st != LUA_OK && st != LUA_ERRRUN && st != LUA_ERRMEM) bad++;
    if ((iter & 1023) == 0) lua_gc(L, LUA_GCCOLLECT);
  }
  ok(t, bad == 0, "20000 random byte flips: no crash (%d decoded, %d refused)", decoded, failed);
  free(mut);
  free(rich);
}

/* Preallocation is bounded by what the whole message can hold, not by the
   bytes left at each level: 40 nested tables in 1 MiB, each claiming about as
   many slots as there are bytes after its header, once made the decoder
   reserve some 16 MiB per level (640 MiB, past this state's 512 MiB limit). */
static void test_prealloc(tap *t, lua_State *L, mem *m) {
  enum { LEVELS = 40, SIZE = 1 << 20 };
  char err[256];
  for (int hash = 0; hash <= 1; hash++) {
    farm_buf b;
    farm__buf_init(&b);
    farm__buf_uvar(&b, 1);
    for (int i = 0; i < LEVELS; i++) {
      /* each header takes at most 1 + 3 + 3 bytes; the claim is what is left
         after it, so it passes the per-table check */
      size_t left = SIZE - b.n - 7;
      farm__buf_u8(&b, FARM_T_TABLE);
      farm__buf_uvar(&b, hash ? 0 : left);
      farm__buf_uvar(&b, hash ? left / 2 : 0);
      if (hash) farm__buf_u8(&b, 0x81);     /* key 1; its value is the next table */
    }
    while (b.n < SIZE) farm__buf_u8(&b, FARM_T_NIL);   /* elements of the innermost */
    lua_gc(L, LUA_GCCOLLECT);
    size_t base = m->used;
    m->peak = m->used;
    int st = try_decode(L, b.p, b.n, err, sizeof err);
    size_t grew = m->peak - base;
    ok(t, st != LUA_OK && strncmp(err, "malformed message: ", 19) == 0 && grew < ((size_t)40 << 20),
       "%d nested tables each claiming ~%d %s slots in 1 MiB: %s (peak %zu MiB over the start)",
       LEVELS, hash ? SIZE / 2 : SIZE, hash ? "hash" : "array", st == LUA_OK ? "decoded!" : err,
       grew >> 20);
    farm__buf_free(&b);
  }

  /* a genuine big flat table is still made at its full size at once */
  farm_buf b;
  farm__buf_init(&b);
  farm__buf_uvar(&b, 1);
  farm__buf_u8(&b, FARM_T_TABLE);
  farm__buf_uvar(&b, 1000000);
  farm__buf_uvar(&b, 0);
  for (int i = 0; i < 1000000; i++) farm__buf_u8(&b, FARM_T_SMALLINT + (i & 0x7f));
  farm__buf_u8(&b, 0);
  lua_gc(L, LUA_GCCOLLECT);
  m->nbig = 0;
  int st = try_decode(L, b.p, b.n, err, sizeof err);
  ok(t, st == LUA_OK && m->nbig == 1,
     "a flat table of 1,000,000 elements decodes into one preallocated block: %s (%d blocks of 1 MiB or more)",
     st == LUA_OK ? "ok" : err, m->nbig);
  farm__buf_free(&b);
  lua_gc(L, LUA_GCCOLLECT);
}

/* A block of n functions, each on `line` of chunk "=x"; distinct texts unless
   same is set (then the cache compiles the text once). */
static void func_block(farm_buf *b, int n, uint64_t line, int same) {
  farm__buf_uvar(b, (uint64_t)n);
  for (int i = 0; i < n; i++) {
    char text[64];
    int k = snprintf(text, sizeof text, "return function() return %d end", same ? 0 : i);
    farm__buf_u8(b, FARM_T_FUNC);
    farm__buf_str(b, "=x", 2);
    farm__buf_uvar(b, line);
    farm__buf_str(b, text, (size_t)k);
    farm__buf_uvar(b, 0);
  }
  farm__buf_u8(b, 0);
}

/* A FUNC's line makes the lexer count line-1 newlines before its text: that
   cost must not outgrow the message. 2 KB of functions on line 2^24 once took
   seconds of CPU. */
static void test_lines(tap *t, lua_State *L) {
  char err[256];
  farm_buf b;
  farm__buf_init(&b);
  func_block(&b, 64, (uint64_t)1 << 24, 0);
  int st = try_decode(L, b.p, b.n, err, sizeof err);
  ok(t, st != LUA_OK && strncmp(err, "malformed message: ", 19) == 0 && strstr(err, "line") &&
        strstr(err, "limit"),
     "64 functions on line 2^24 (%zu bytes): %s", b.n, st == LUA_OK ? "decoded!" : err);
  farm__buf_free(&b);

  /* each within the line limit, but together more lines than the message pays for */
  farm__buf_init(&b);
  func_block(&b, 64, 1000000, 0);
  st = try_decode(L, b.p, b.n, err, sizeof err);
  ok(t, st != LUA_OK && strncmp(err, "malformed message: ", 19) == 0 && strstr(err, "line") &&
        strstr(err, "limit"),
     "64 different functions on line 1,000,000 (%zu bytes): %s", b.n,
     st == LUA_OK ? "decoded!" : err);
  farm__buf_free(&b);

  /* the same text 64 times is compiled, and charged, once (try_decode caches) */
  farm__buf_init(&b);
  func_block(&b, 64, 1000000, 1);
  st = try_decode(L, b.p, b.n, err, sizeof err);
  ok(t, st == LUA_OK, "one function 64 times on line 1,000,000, cached: %s",
     st == LUA_OK ? "ok" : err);
  farm__buf_free(&b);

  /* a function far down a big file still decodes, and knows its line */
  farm__buf_init(&b);
  func_block(&b, 1, 999999, 0);
  msg mm = {b.p, b.n};
  lua_pushcfunction(L, c_decode);
  lua_pushlightuserdata(L, &mm);
  st = lua_pcall(L, 1, 1, 0);
  lua_Debug ar;
  int line = -1;
  if (st == LUA_OK && lua_isfunction(L, -1)) {
    lua_getinfo(L, ">S", &ar);
    line = ar.linedefined;
  } else {
    lua_pop(L, 1);
  }
  ok(t, st == LUA_OK && line == 999999, "a function on line 999,999 decodes (linedefined %d)", line);
  farm__buf_free(&b);
}

int main(void) {
  tap t = {0, 0};
  mem m = {0, 0, 0, 0, 0};
  lua_State *L = lua_newstate(test_alloc, &m);
  luaL_openlibs(L);
  lua_newtable(L);
  farm__open_codec(L, lua_gettop(L));
  lua_setglobal(L, "core");
  lua_pushlightuserdata(L, &t);
  lua_pushcclosure(L, l_check, 1);
  lua_setglobal(L, "check");

  test_bytes(&t, L);
  test_scalars(&t, L);
  test_big_string(&t, L, (size_t)16 << 20);
  test_big_string(&t, L, (size_t)64 << 20);
  run_lua(&t, L, "=tables", lua_tests);
  run_lua(&t, L, "=functions", lua_fn_tests);
  lua_gc(L, LUA_GCCOLLECT);
  m.limit = (size_t)512 << 20;    /* decoded text may try to eat memory */
  test_hostile(&t, L, &m);
  test_prealloc(&t, L, &m);
  test_lines(&t, L);

  lua_close(L);
  printf("1..%d\n", t.n);
  return t.failed ? 1 : 0;
}
