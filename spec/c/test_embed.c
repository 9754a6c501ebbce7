/*
 * test_embed.c -- a C host embedding farm through libfarm: two farms open side
 * by side in one process (no global state), each running jobs. Prints TAP.
 */
#include <stdio.h>
#include <string.h>
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include "farm.h"

static int n_test = 0, n_fail = 0;

static void ok(int cond, const char *what, const char *detail) {
  n_test++;
  if (!cond) n_fail++;
  printf("%sok %d - %s%s%s\n", cond ? "" : "not ", n_test, what, detail ? " # " : "", detail ? detail : "");
}

static lua_State *open_farm(int workers) {
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  luaL_requiref(L, "farm", luaopen_farm, 1);
  lua_pop(L, 1);
  char cfg[64];
  snprintf(cfg, sizeof cfg, "farm.config{workers = %d, echo = false}", workers);
  if (luaL_dostring(L, cfg) != LUA_OK) fprintf(stderr, "%s\n", lua_tostring(L, -1));
  return L;
}

/* Run a chunk; returns its integer result, or -1 on error (message printed). */
static long long eval(lua_State *L, const char *chunk) {
  if (luaL_loadstring(L, chunk) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK) {
    printf("# %s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
    return -1;
  }
  long long v = lua_isinteger(L, -1) ? (long long)lua_tointeger(L, -1) : -1;
  lua_pop(L, 1);
  return v;
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);     /* each line as its check ends: run-test watches them */
  ok(strcmp(farm_version(), FARM_VERSION) == 0, "farm_version matches the header", NULL);
  ok(strcmp(farm_strerror(FARM_ECLOSED), "the farm was closed") == 0, "farm_strerror names a code", NULL);
  lua_State *a = open_farm(1), *b = open_farm(2);
  ok(eval(a, "return farm.workers()") == 1, "first farm has its 1 worker", NULL);
  ok(eval(b, "return farm.workers()") == 2, "second farm has its 2 workers", NULL);
  /* jobs defined by strings the host loads: farm remembers their text */
  ok(eval(a, "local k = 10; return farm.submit(function(x) return x + k end, 5):result()") == 15,
     "a job from a host-loaded chunk runs in the first farm", NULL);
  ok(eval(b, "local t = farm.map(function(x) return x * x end, {1, 2, 3, 4}); return t[4]") == 16,
     "map runs in the second farm", NULL);
  ok(eval(a, "return farm.stats().jobs") == 1, "the first farm counted only its own job", NULL);
  ok(eval(b, "return farm.stats().jobs") >= 1, "the second farm counted its own jobs", NULL);
  lua_close(a);
  ok(eval(b, "return farm.submit(function() return 7 end):result()") == 7,
     "closing one farm leaves the other working", NULL);
  lua_close(b);
  printf("1..%d\n", n_test);
  return n_fail != 0;
}
