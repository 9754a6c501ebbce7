/* TEMPORARY: stubs until codec.c / dump.c / client.c land. Delete the ones you implement. */
#include "luafuncs.h"
void farm__open_codec(lua_State *L, int core) { (void)L; (void)core; }
