/*
 * luafuncs.h -- the C functions each core file gives the `farm.core` table.
 * luaopen_farm (lfarm.c) calls every farm__open_* below with the index of that table.
 */
#ifndef FARM_LUAFUNCS_H
#define FARM_LUAFUNCS_H
#include <lua.h>
void farm__open_codec(lua_State *L, int core);   /* pack, unpack (codec.c) */
void farm__open_dump(lua_State *L, int core);    /* fnsig, globals, upkinds, probe (dump.c) */
void farm__open_client(lua_State *L, int core);  /* the client context (client.c) */
void farm__open_kernels(lua_State *L, int core); /* kernels, also package.loaded["farm.kernels"] (lkernels.c) */
#endif
