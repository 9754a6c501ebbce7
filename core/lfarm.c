/*
 * lfarm.c -- luaopen_farm: the `farm` Lua module, the same for plain lua5.4,
 * the farm executable and C hosts.
 *
 * It builds the `farm.core` table of C functions, makes the embedded Lua modules
 * (lua/ files) requirable as "farm.<name>", and runs lua/farm.lua, which is the
 * public module. Each module is loaded from its compiled chunk (scripts/embed.lua)
 * when the Lua it is built with (LUA_RELEASE) compiled it, else from its text.
 * Nothing here is global: all state lives in the Lua state.
 *
 * Threads: the thread of the lua_State that requires it.
 */
#include <string.h>
#include <lua.h>
#include <lauxlib.h>
#include "farm.h"
#include "luafuncs.h"
#include "luasrc.h"

static const farm_luasrc *find_src(const char *name) {
  for (const farm_luasrc *s = farm__luasrc; s->name; s++)
    if (strcmp(s->name, name) == 0) return s;
  return NULL;
}

/* package.preload loader for an embedded module: upvalue 1 is its basename. */
static int load_embedded(lua_State *L) {
  const farm_luasrc *s = find_src(lua_tostring(L, lua_upvalueindex(1)));
  if (!s) return luaL_error(L, "farm: embedded module missing");
  /* its compiled chunk when the Lua we are built with compiled it (a
     fraction of the text's compile time, at every start of a client and a
     worker), else, or should it not load, the text */
  int st = LUA_ERRSYNTAX;
  if (s->code && strcmp(farm__luasrc_release, LUA_RELEASE) == 0) {
    st = luaL_loadbufferx(L, s->code, s->codelen, s->chunk, "b");
    if (st != LUA_OK) lua_pop(L, 1);
  }
  if (st != LUA_OK && luaL_loadbufferx(L, s->text, s->len, s->chunk, "t") != LUA_OK)
    return lua_error(L);
  lua_pushstring(L, lua_tostring(L, 1));
  lua_call(L, 1, 1);
  return 1;
}

/* farm.ship.remember(chunkname, text), protected: the arguments are C data */
static int p_remember(lua_State *L) {
  const char *chunk = lua_touserdata(L, 1), *text = lua_touserdata(L, 2);
  size_t len = (size_t)lua_tointeger(L, 3);
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_getfield(L, -1, "farm.ship");
  if (!lua_istable(L, -1)) return luaL_error(L, "farm is not open in this state");
  lua_getfield(L, -1, "remember");
  lua_pushstring(L, chunk);
  lua_pushlstring(L, text ? text : "", len);
  lua_call(L, 2, 0);
  return 0;
}

int farm_remember(lua_State *L, const char *chunkname, const char *text, size_t len) {
  if (!L || !chunkname || (!text && len)) return FARM_EINVAL;
  if (!lua_checkstack(L, 8)) return FARM_ENOMEM;
  int top = lua_gettop(L);
  lua_pushcfunction(L, p_remember);
  lua_pushlightuserdata(L, (void *)chunkname);
  lua_pushlightuserdata(L, (void *)text);
  lua_pushinteger(L, (lua_Integer)len);
  int st = lua_pcall(L, 3, 0, 0);
  lua_settop(L, top);
  return st == LUA_OK ? FARM_OK : st == LUA_ERRMEM ? FARM_ENOMEM : FARM_EINVAL;
}

int luaopen_farm(lua_State *L) {
  luaL_checkversion(L);
  /* farm.core: the C side, shared by every embedded module */
  lua_newtable(L);
  int core = lua_gettop(L);
  farm__open_codec(L, core);
  farm__open_dump(L, core);
  farm__open_client(L, core);
  farm__open_kernels(L, core);
  lua_pushstring(L, FARM_VERSION);     /* farm._VERSION and the REPL's banner read it */
  lua_setfield(L, core, "version");
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushvalue(L, core);
  lua_setfield(L, -2, "farm.core");
  lua_pop(L, 1);
  /* package.preload["farm.<name>"] for every embedded module but farm itself */
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  for (const farm_luasrc *s = farm__luasrc; s->name; s++) {
    if (strcmp(s->name, "farm") == 0) continue;
    lua_pushfstring(L, "farm.%s", s->name);
    lua_pushstring(L, s->name);
    lua_pushcclosure(L, load_embedded, 1);
    lua_settable(L, -3);
  }
  lua_pop(L, 1);
  lua_pop(L, 1);  /* core */
  lua_pushstring(L, "farm");
  lua_pushcclosure(L, load_embedded, 1);
  lua_pushstring(L, "farm");
  lua_call(L, 1, 1);
  return 1;
}
