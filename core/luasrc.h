/* luasrc.h -- the Lua sources under lua/, embedded at build time (scripts/embed.lua). */
#ifndef FARM_LUASRC_H
#define FARM_LUASRC_H
#include <stddef.h>
typedef struct farm_luasrc {
  const char *name;    /* module basename: "farm", "ship", ... */
  const char *chunk;   /* chunk name for load: "@lua/farm.lua" */
  const char *text;
  size_t len;
  const char *code;    /* the text compiled (string.dump, debug information kept) */
  size_t codelen;      /* ...by Lua farm__luasrc_release */
} farm_luasrc;
extern const farm_luasrc farm__luasrc[];
extern const char farm__luasrc_release[];   /* "Lua 5.4.4" (LUA_RELEASE): what compiled code */
#endif
