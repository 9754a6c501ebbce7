/*
 * fuzz_decode.c -- libFuzzer target for the value decoder (core/codec.c).
 *
 * Every input is decoded in a fresh lua_State under lua_pcall, with a resolver
 * that returns nil and a chunk cache, so every branch of the decoder is
 * reachable; as a worker decodes a job, it records class names, and it is
 * decoded a second time continuing the first (one chain, as a job's argument
 * block continues its function block), so references reach back. Decoding may compile and run function text from the input; it
 * runs with an empty environment, an instruction budget and a memory cap, so
 * that a loop or a huge string.rep the fuzzer writes is an error, not a hang
 * or an out-of-memory report. Each input is also decoded untrusted, as a
 * client decodes a node's results (no env: a sandbox; a function's text is
 * read before it runs, a metatable by value is refused). A malformed input
 * must raise a Lua error; anything else (a crash, a sanitizer report, a leak)
 * is a finding.
 *
 *   make fuzz && ./build-fuzz/fuzz_decode -max_total_time=60
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include "codec.h"

#define MEM_LIMIT ((size_t)256 << 20)

typedef struct mem {
  size_t used;
} mem;

static void *cap_alloc(void *ud, void *p, size_t osize, size_t nsize) {
  mem *m = ud;
  if (p == NULL) osize = 0;
  if (nsize == 0) {
    free(p);
    m->used -= osize;
    return NULL;
  }
  if (nsize > osize && m->used + (nsize - osize) > MEM_LIMIT) return NULL;
  void *q = realloc(p, nsize);
  if (q) m->used = m->used - osize + nsize;
  return q;
}

static void budget_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  luaL_error(L, "instruction budget exceeded");
}

static int resolve_nil(lua_State *L) {
  (void)L;
  return 0;
}

typedef struct input {
  const uint8_t *p;
  size_t n;
} input;

/* decode(input, env, resolve, cache, chain) */
static int decode(lua_State *L) {
  const input *in = lua_touserdata(L, 1);
  farm_decoder d = {.env = 2, .resolve = 3, .cache = 4, .chain = 5, .record = 1};
  lua_settop(L, 5);
  farm__codec_decode(L, in->p, in->n, &d);
  lua_settop(L, 5);
  return farm__codec_decode(L, in->p, in->n, &d);
}

/* decode_untrusted(input, resolve, cache) */
static int decode_untrusted(lua_State *L) {
  const input *in = lua_touserdata(L, 1);
  farm_decoder d = {.resolve = 2, .cache = 3, .untrusted = 1};
  lua_settop(L, 3);
  return farm__codec_decode(L, in->p, in->n, &d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  mem m = {0};
  input in = {data, size};
  lua_State *L = lua_newstate(cap_alloc, &m);
  if (!L) return 0;
  luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 0);   /* string metatable */
  lua_pop(L, 1);
  lua_sethook(L, budget_hook, LUA_MASKCOUNT, 100000);
  lua_pushcfunction(L, decode);
  lua_pushlightuserdata(L, &in);
  lua_newtable(L);
  lua_pushcfunction(L, resolve_nil);
  lua_newtable(L);
  lua_newtable(L);
  lua_pcall(L, 5, LUA_MULTRET, 0);
  lua_settop(L, 0);
  lua_pushcfunction(L, decode_untrusted);
  lua_pushlightuserdata(L, &in);
  lua_pushcfunction(L, resolve_nil);
  lua_newtable(L);
  lua_pcall(L, 3, LUA_MULTRET, 0);
  lua_close(L);
  return 0;
}
