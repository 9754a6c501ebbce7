/*
 * test_remember.c -- a C host that compiles a chunk itself
 * (luaL_loadbuffer(..., "=embedded")) gives its text with farm_remember, and
 * then its functions ship. Prints TAP.
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

static const char text[] = "local k = 7\nreturn function(x) return x * k end\n";

/* farm.submit(f, 6):result() for the function at the top; pops it. Returns the
   integer result, or -1 with the message in msg. */
static long long submit(lua_State *L, char *msg, size_t size) {
  static const char run[] = "local f = ...; return farm.submit(f, 6):result()";
  *msg = 0;
  if (luaL_loadstring(L, run) != LUA_OK) return -1;
  lua_insert(L, -2);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    snprintf(msg, size, "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
    return -1;
  }
  long long v = lua_isinteger(L, -1) ? (long long)lua_tointeger(L, -1) : -1;
  lua_pop(L, 1);
  return v;
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);     /* each line as its check ends: run-test watches them */
  char msg[1024];
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  ok(farm_remember(L, "=embedded", text, sizeof text - 1) == FARM_EINVAL,
     "farm_remember before luaopen_farm is FARM_EINVAL", NULL);
  ok(lua_gettop(L) == 0, "and leaves the stack as it was", NULL);
  luaL_requiref(L, "farm", luaopen_farm, 1);
  lua_pop(L, 1);
  if (luaL_dostring(L, "farm.config{workers = 1, echo = false}") != LUA_OK)
    printf("# %s\n", lua_tostring(L, -1));

  /* the host compiles a chunk past farm: its text is unknown to farm */
  luaL_loadbuffer(L, text, sizeof text - 1, "=embedded");
  lua_call(L, 0, 1);
  lua_pushvalue(L, -1);
  long long r = submit(L, msg, sizeof msg);
  ok(r == -1 && strstr(msg, "the text of chunk '=embedded' is unknown") != NULL,
     "a function from a chunk the host compiled cannot ship unremembered", msg);
  ok(strstr(msg, "farm_remember") != NULL, "and the error names farm_remember", NULL);

  ok(farm_remember(L, "=embedded", text, sizeof text - 1) == FARM_OK, "farm_remember is FARM_OK", NULL);
  ok(lua_gettop(L) == 1, "and leaves the stack as it was", NULL);
  r = submit(L, msg, sizeof msg);
  ok(r == 42, "the function ships once its text is remembered", msg);

  /* remembered first, compiled after, a text with NUL-free bytes of its own length */
  static const char text2[] = "return function(x) return x + 100 end -- trailing";
  ok(farm_remember(L, "=second", text2, strlen(text2)) == FARM_OK, "remember before compiling", NULL);
  luaL_loadbuffer(L, text2, strlen(text2), "=second");
  lua_call(L, 0, 1);
  r = submit(L, msg, sizeof msg);
  ok(r == 106, "a chunk remembered before it is compiled ships too", msg);

  ok(farm_remember(L, NULL, text, 1) == FARM_EINVAL, "a NULL chunk name is FARM_EINVAL", NULL);
  ok(farm_remember(L, "=x", NULL, 3) == FARM_EINVAL, "a NULL text is FARM_EINVAL", NULL);
  ok(lua_gettop(L) == 0, "the stack is as it was", NULL);
  if (luaL_dostring(L, "farm.close()") != LUA_OK) printf("# %s\n", lua_tostring(L, -1));
  lua_close(L);
  printf("1..%d\n", n_test);
  return n_fail != 0;
}
