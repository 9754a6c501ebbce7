/*
 * exec.h -- farm.core.exec: run a program, capture what it prints (exec.c).
 */
#ifndef FARM_EXEC_H
#define FARM_EXEC_H
#include <lua.h>

/* core.exec(argv [, opts]) -> { status =, signal =, stdout =, stderr = [, truncated =] } */
int farm__l_exec(lua_State *L);

#endif
