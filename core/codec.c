/*
 * codec.c -- the binary codec for Lua values on the wire (format in codec.h).
 *
 * The encoder walks values through the Lua C API and appends to a farm_buf;
 * the decoder reads through a farm_rd and pushes values. Both keep every piece
 * of scratch state either in a C struct on the C stack or in slots of the Lua
 * stack, so a Lua error anywhere (a describe hook that raises, a value that
 * cannot travel, a malformed message) leaks nothing: the slots go away with
 * the unwound stack frame and the caller owns the output buffer.
 *
 * Costs were chosen for the common cases: a block of scalars allocates nothing
 * but its output bytes (the table of values already seen is made when the
 * first table or function is met); a table's two counts are written as
 * one-byte placeholders and widened afterwards, so a table is walked once
 * (see encode_table). The Lua C API call is the unit of cost: about 5 ns each
 * on the machine this was measured on, six per element of an integer array.
 *
 * Functions travel as source text (from the describe hook) plus their upvalues
 * by name. On decode a compiled chunk may be cached and called again for the
 * next copy of the same function; each call must give the new closure its own
 * _ENV cell, or setting the environment of one copy would change it for every
 * copy made before. See give_fresh_env_of().
 *
 * Threads: runs on the thread that owns the lua_State (the caller's in a
 * client, the Lua thread in a worker); never on the engine's loop thread.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include "farm.h"
#include "codec.h"
#include "luafuncs.h"

#define DEPTH_MSG "table nesting too deep (more than 200 levels)"
/* A FUNC's line costs line-1 newlines fed to the lexer (about 4 ns each) on
   every compile, so it is bounded twice. Per function: Lua itself stops at
   INT_MAX lines, but a function that starts past line 1,000,000 would come from
   a source file of some 30 MB or more, which nobody ships jobs from; a million
   newlines is a few milliseconds. Per decode: the newlines of all the chunks
   really compiled (the cache's hits cost nothing) may not exceed LINES_PER_BYTE
   for each byte of the message plus one function's worth (MAX_LINE), so the
   lexing is never more than about ten times what compiling a message's worth of
   ordinary source text (some 25 ns a byte) would cost (remember's padded copy
   of each text costs as much again, in bytes that are freed). */
#define MAX_LINE 1000000
#define LINES_PER_BYTE 64

/* ------------------------------------------------------------------------
 * Encoder
 * ------------------------------------------------------------------------ */

/* One step of the path to the value being encoded, for error messages. */
enum { SEG_ROOT, SEG_GLOBAL, SEG_UPVAL, SEG_INT, SEG_KEY, SEG_OTHER, SEG_META };

typedef struct seg {
  int kind;
  int idx;           /* SEG_KEY: stack index of the key;
                        SEG_UPVAL, SEG_GLOBAL: stack index of the describe table */
  lua_Integer i;     /* SEG_ROOT: value number; SEG_INT: the key */
  const char *name;  /* SEG_UPVAL, SEG_GLOBAL: upvalue or global name */
} seg;

typedef struct enc {
  lua_State *L;
  farm_buf *b;
  const farm_encoder *e;
  int base;          /* stack top on entry; restored on return */
  int seen;          /* stack index of value -> ref number; 0 until needed */
  int pend;          /* stack index of the pending global names:
                        [i] = name, [name] = describe table of the first asker */
  int envs;          /* stack index of the decoded environments met, or 0 */
  int mods;          /* stack slot: the modules this block has described (see
                        push_module_info); nil until needed, 0 before make_seen */
  int cls;           /* stack slot: metatable -> class name or false, as found for
                        this block (see class_name); nil until needed */
  lua_Integer nref, npend;
  int depth;
  seg path[FARM_CODEC_MAXDEPTH + 1];
} enc;

static void raise_nomem(lua_State *L) {
  lua_pushliteral(L, "not enough memory");
  lua_error(L);
}

/* Pointer to at least k writable bytes at the end of the buffer. */
static inline unsigned char *room(enc *E, size_t k) {
  farm_buf *b = E->b;
  if (b->cap - b->n < k && farm__buf_reserve(b, k) != FARM_OK) raise_nomem(E->L);
  return (unsigned char *)b->p + b->n;
}

static inline size_t uvar_to(unsigned char *q, uint64_t v) {
  size_t i = 0;
  while (v >= 0x80) {
    q[i++] = (unsigned char)(v | 0x80);
    v >>= 7;
  }
  q[i++] = (unsigned char)v;
  return i;
}

static inline size_t uvar_len(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) { v >>= 7; n++; }
  return n;
}

static inline void put_u8(enc *E, unsigned v) {
  *room(E, 1) = (unsigned char)v;
  E->b->n++;
}

static inline void put_uvar(enc *E, uint64_t v) {
  unsigned char *q = room(E, 10);
  E->b->n += uvar_to(q, v);
}

static inline void put_tag_uvar(enc *E, unsigned tag, uint64_t v) {
  unsigned char *q = room(E, 11);
  q[0] = (unsigned char)tag;
  E->b->n += 1 + uvar_to(q + 1, v);
}

static void put_str(enc *E, const char *s, size_t n) {
  unsigned char *q = room(E, 10);
  E->b->n += uvar_to(q, n);
  if (n) {
    memcpy(room(E, n), s, n);
    E->b->n += n;
  }
}

/* ---- error messages ---- */

static int is_identifier(const char *s, size_t n) {
  if (n == 0) return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return 0;
  }
  return 1;
}

/* Push one path step as a string. */
static void push_seg(lua_State *L, const seg *s) {
  switch (s->kind) {
  case SEG_INT:
    lua_pushfstring(L, "[%I]", (LUAI_UACINT)s->i);
    return;
  case SEG_KEY:
    if (lua_type(L, s->idx) == LUA_TSTRING) {
      size_t n;
      const char *k = lua_tolstring(L, s->idx, &n);
      if (is_identifier(k, n)) {
        lua_pushfstring(L, ".%s", k);
        return;
      }
    } else if (lua_isinteger(L, s->idx)) {
      lua_pushfstring(L, "[%I]", (LUAI_UACINT)lua_tointeger(L, s->idx));
      return;
    }
    break;
  case SEG_META:
    lua_pushliteral(L, "<metatable>");
    return;
  }
  lua_pushliteral(L, "[?]");
}

/* Push "'name' (where)" for the function described by the table at desc. */
static void push_fn(lua_State *L, int desc) {
  const char *name = "?";
  if (desc && lua_getfield(L, desc, "name") == LUA_TSTRING) name = lua_tostring(L, -1);
  if (desc && lua_getfield(L, desc, "where") == LUA_TSTRING)
    lua_pushfstring(L, "'%s' (%s)", name, lua_tostring(L, -1));
  else
    lua_pushfstring(L, "'%s'", name);
  if (desc) {
    lua_replace(L, -3);
    lua_pop(L, 1);
  }
}

/* Raise "cannot ship <path> (<type>)" for the value at idx, naming the innermost
   function whose upvalue (or the global) the value was reached through. */
/* Push "cannot ship upvalue 'x" / "cannot ship global 'x" / "cannot ship
   argument 2": where the value at path depth `from` was reached from (the
   innermost upvalue or global on its path, else its root). Returns that step. */
static const seg *push_origin(enc *E, int from, int *u_out) {
  lua_State *L = E->L;
  int u = from;
  while (u > 0 && E->path[u].kind != SEG_UPVAL) u--;
  const seg *s = &E->path[u];
  if (s->kind == SEG_UPVAL)
    lua_pushfstring(L, "cannot ship upvalue '%s", s->name);
  else if (s->kind == SEG_GLOBAL)
    lua_pushfstring(L, "cannot ship global '%s", s->name);
  else if (E->e->root && E->e->root[0] == '=')   /* one value with a name of its own */
    lua_pushfstring(L, "cannot ship %s", E->e->root + 1);
  else
    lua_pushfstring(L, "cannot ship %s %I", E->e->root ? E->e->root : "value",
                    (LUAI_UACINT)s->i);
  *u_out = u;
  return s;
}

static void refuse(enc *E, int idx) {
  lua_State *L = E->L;
  const char *tname = lua_iscfunction(L, idx) ? "C function" : luaL_typename(L, idx);
  int u;
  luaL_checkstack(L, E->depth + 10, NULL);
  int top0 = lua_gettop(L);
  const seg *s = push_origin(E, E->depth, &u);
  for (int j = u + 1; j <= E->depth; j++) push_seg(L, &E->path[j]);
  if (s->kind != SEG_ROOT) lua_pushliteral(L, "'");
  lua_pushfstring(L, " (%s)", tname);
  if (s->kind != SEG_ROOT) {
    lua_pushstring(L, s->kind == SEG_UPVAL ? " of function " : " used by function ");
    push_fn(L, s->idx);
  }
  lua_concat(L, lua_gettop(L) - top0);
  lua_error(L);
}

/* Raise "cannot ship argument 1.x.x.x...: tables nest deeper than 200 levels",
   naming where the value was reached from and the first steps down. */
static void too_deep(enc *E) {
  lua_State *L = E->L;
  int u;
  luaL_checkstack(L, 24, NULL);
  int top0 = lua_gettop(L);
  const seg *s = push_origin(E, E->depth - 1, &u);
  int shown = 0;
  for (int j = u + 1; j < E->depth && shown < 6; j++, shown++) push_seg(L, &E->path[j]);
  if (u + 1 + shown < E->depth) lua_pushliteral(L, "...");
  if (s->kind != SEG_ROOT) lua_pushliteral(L, "'");
  lua_pushfstring(L, ": its tables nest deeper than %d levels, farm's limit (flatten it, or pass it as a string)",
                  FARM_CODEC_MAXDEPTH);
  lua_concat(L, lua_gettop(L) - top0);
  lua_error(L);
}

static void enc_enter(enc *E) {
  if (++E->depth > FARM_CODEC_MAXDEPTH) too_deep(E);
  luaL_checkstack(E->L, 8, NULL);
}

/* The seen table and the pending-globals slot are pushed together when the
   first table or function is met. That is always a top-level value (tables
   and functions are only found inside tables and functions), so nothing of
   ours is above base yet and the slots stay put until we return. */
static void make_seen(enc *E) {
  lua_State *L = E->L;
  luaL_checkstack(L, 10, NULL);
  if (E->e->keep) lua_pushvalue(L, E->e->keep);   /* numbered where a later block finds it */
  else lua_newtable(L);
  E->seen = lua_gettop(L);
  lua_pushnil(L);
  E->pend = lua_gettop(L);
  lua_pushnil(L);                      /* the envs slot */
  lua_pushnil(L);                      /* the mods slot */
  E->mods = lua_gettop(L);
  lua_pushnil(L);                      /* the cls slot */
  E->cls = lua_gettop(L);
}

/* The environments the decoder gives functions share one metatable ({__index =
   the global table}, kept in the registry), so an encoder can tell them: a
   function decoded here and shipped on (a job's own job) travels with GLOBALS
   as its _ENV again, and the globals it had brought are found in its env,
   rather than its env travelling as a table inside a table at every level. */
static const char envmt_key = 0;

static void push_envmt(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &envmt_key) == LUA_TTABLE) return;
  lua_pop(L, 1);
  lua_createtable(L, 0, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  lua_setfield(L, -2, "__index");
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &envmt_key);
}

/* The environment of what arrives from another host (see push_sandbox) has a
   metatable of its own, with no __index: it reaches nothing of ours. It still
   counts as a decoded environment when its functions are shipped on. */
static const char sandboxmt_key = 0;

/* 1 when the table at the top is the registry's table at key. */
static int is_registry_table(lua_State *L, const char *key) {
  int is = lua_rawgetp(L, LUA_REGISTRYINDEX, key) == LUA_TTABLE && lua_rawequal(L, -1, -2);
  lua_pop(L, 1);
  return is;
}

/* 1 when the table at idx is a decoder's environment. */
static int is_decoded_env(lua_State *L, int idx) {
  if (!lua_istable(L, idx) || !lua_getmetatable(L, idx)) return 0;
  int is = is_registry_table(L, &envmt_key) || is_registry_table(L, &sandboxmt_key);
  lua_pop(L, 1);
  return is;
}

static void encode_value(enc *E, int idx);

/* A module reference may carry what a worker needs to load that module: the
   names table's metatable may hold a function __module(qualified name) -> nil
   or a table { module = "its.module", ... } (lua/ship.lua: module_info). The
   first time a block refers to a module that has such a table, the reference
   travels as MODULE with the table; later references in the same block travel
   as MODREF, which the decoder resolves once the MODULE before them has loaded
   the module. Pushes the table and returns 1, or returns 0 with nothing pushed.
   (E->mods: qualified name -> 1 once asked; module name -> 2 once described.) */
static int push_module_info(enc *E, int nm) {
  lua_State *L = E->L;
  luaL_checkstack(L, 6, NULL);
  if (!lua_getmetatable(L, E->e->names)) return 0;
  if (lua_getfield(L, -1, "__module") != LUA_TFUNCTION) {
    lua_pop(L, 2);
    return 0;
  }
  lua_remove(L, -2);
  if (lua_isnil(L, E->mods)) {
    lua_newtable(L);
    lua_replace(L, E->mods);
  }
  lua_pushvalue(L, nm);
  if (lua_rawget(L, E->mods) != LUA_TNIL) {
    lua_pop(L, 2);
    return 0;
  }
  lua_pop(L, 1);
  lua_pushvalue(L, nm);
  lua_pushinteger(L, 1);
  lua_rawset(L, E->mods);
  lua_pushvalue(L, nm);
  lua_call(L, 1, 1);
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    return 0;
  }
  if (lua_getfield(L, -1, "module") != LUA_TSTRING) {
    lua_pop(L, 2);
    return 0;
  }
  lua_pushvalue(L, -1);
  int described = lua_rawget(L, E->mods) == LUA_TNUMBER && lua_tointeger(L, -1) == 2;
  lua_pop(L, 1);
  if (described) {
    lua_pop(L, 2);
    return 0;
  }
  lua_pushinteger(L, 2);
  lua_rawset(L, E->mods);             /* pops the module name */
  return 1;
}

/* GLOBALS and MODREF come before anything else: a value with a name travels as
   that name even when it was also reached some other way. */
static int encode_named(enc *E, int idx) {
  lua_State *L = E->L;
  const farm_encoder *e = E->e;
  if (e->globals && lua_rawequal(L, idx, e->globals)) {
    put_u8(E, FARM_T_GLOBALS);
    return 1;
  }
  if (e->globals && is_decoded_env(L, idx)) {
    if (!E->seen) make_seen(E);
    if (!E->envs) {                      /* where its globals are looked up too */
      lua_newtable(L);
      lua_replace(L, E->pend + 1);
      E->envs = E->pend + 1;
    }
    lua_pushvalue(L, idx);
    lua_rawseti(L, E->envs, (lua_Integer)lua_rawlen(L, E->envs) + 1);
    put_u8(E, FARM_T_GLOBALS);
    return 1;
  }
  if (e->names) {
    lua_pushvalue(L, idx);
    if (lua_rawget(L, e->names) == LUA_TSTRING) {
      if (!E->seen) {          /* top level: the slots go in below the name */
        lua_pop(L, 1);
        make_seen(E);
        lua_pushvalue(L, idx);
        lua_rawget(L, e->names);
      }
      int nm = lua_gettop(L);
      size_t n;
      const char *s = lua_tolstring(L, nm, &n);
      if (push_module_info(E, nm)) {
        put_u8(E, FARM_T_MODULE);
        put_str(E, s, n);
        encode_value(E, nm + 1);
        lua_pop(L, 1);
      } else {
        put_u8(E, FARM_T_MODREF);
        put_str(E, s, n);
      }
      lua_pop(L, 1);
      return 1;
    }
    lua_pop(L, 1);
  }
  return 0;
}

/* A table or function met before travels as REF (met in this block, or in the
   block this one continues); else it gets the next number. */
static int encode_seen(enc *E, int idx) {
  lua_State *L = E->L;
  if (!E->seen) make_seen(E);
  if (E->e->prior) {
    lua_pushvalue(L, idx);
    if (lua_rawget(L, E->e->prior) == LUA_TNUMBER) {
      put_tag_uvar(E, FARM_T_REF, (uint64_t)lua_tointeger(L, -1));
      lua_pop(L, 1);
      return 1;
    }
    lua_pop(L, 1);
  }
  lua_pushvalue(L, idx);
  if (lua_rawget(L, E->seen) == LUA_TNUMBER) {
    put_tag_uvar(E, FARM_T_REF, (uint64_t)lua_tointeger(L, -1));
    lua_pop(L, 1);
    return 1;
  }
  lua_pop(L, 1);
  lua_pushvalue(L, idx);
  lua_pushinteger(L, ++E->nref);
  lua_rawset(L, E->seen);
  return 0;
}

static void encode_value(enc *E, int idx);

/* Encode the key and value at the top of the stack as a hash pair; pops the value. */
static void encode_pair(enc *E, int d) {
  lua_State *L = E->L;
  int k = lua_gettop(L) - 1;
  E->path[d].kind = SEG_OTHER;
  encode_value(E, k);
  E->path[d].kind = SEG_KEY;
  E->path[d].idx = k;
  encode_value(E, k + 1);
  lua_pop(L, 1);
}

/* The array part is t[1..k], the longest run of non-nil values from 1; the
   rest are pairs. Lua's own traversal visits its array part first, in order,
   so a single lua_next walk sees 1..k before anything else whenever those
   keys live in the array part, which is nearly always: that walk does both
   jobs. When the walk stops short of k (some of 1..k live in the hash part)
   the array is finished with rawgeti and the pairs take a second walk that
   skips 1..k. Either way the bytes are the same. */
static void encode_meta(enc *E, int mt);

/* The table at idx, numbered already: TABLE or TABLEMT and its contents. */
static void encode_table_body(enc *E, int idx) {
  lua_State *L = E->L;
  enc_enter(E);
  int d = E->depth;
  int mt = lua_getmetatable(L, idx) ? lua_gettop(L) : 0;
  /* tag, then one byte each for narr and nhash, widened below if need be */
  unsigned char *q = room(E, 3);
  q[0] = mt ? FARM_T_TABLEMT : FARM_T_TABLE;
  size_t hdr = E->b->n + 1;
  E->b->n += 3;

  lua_Integer narr = 0;
  uint64_t nhash = 0;
  int more = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (!lua_isinteger(L, -2) || lua_tointeger(L, -2) != narr + 1) {
      more = 1;     /* key and value stay on the stack */
      break;
    }
    E->path[d].kind = SEG_INT;
    E->path[d].i = ++narr;
    encode_value(E, -1);
    lua_pop(L, 1);
  }
  if (lua_rawgeti(L, idx, narr + 1) == LUA_TNIL) {
    lua_pop(L, 1);
    if (more) {
      do {
        encode_pair(E, d);
        nhash++;
      } while (lua_next(L, idx));
    }
  } else {
    lua_pop(L, more ? 3 : 1);
    while (lua_rawgeti(L, idx, narr + 1) != LUA_TNIL) {
      E->path[d].kind = SEG_INT;
      E->path[d].i = ++narr;
      encode_value(E, -1);
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
      if (lua_isinteger(L, -2)) {
        lua_Integer i = lua_tointeger(L, -2);
        if (i >= 1 && i <= narr) {
          lua_pop(L, 1);
          continue;
        }
      }
      encode_pair(E, d);
      nhash++;
    }
  }

  farm_buf *b = E->b;
  if ((uint64_t)narr < 0x80 && nhash < 0x80) {
    b->p[hdr] = (char)narr;
    b->p[hdr + 1] = (char)nhash;
  } else {
    size_t extra = uvar_len((uint64_t)narr) + uvar_len(nhash) - 2;
    room(E, extra);
    unsigned char *h = (unsigned char *)b->p + hdr;
    memmove(h + 2 + extra, h + 2, b->n - hdr - 2);
    h += uvar_to(h, (uint64_t)narr);
    uvar_to(h, nhash);
    b->n += extra;
  }

  if (mt) {
    E->path[d].kind = SEG_META;
    encode_meta(E, mt);
    lua_pop(L, 1);
  }
  E->depth--;
}

static void encode_table(enc *E, int idx) {
  if (encode_named(E, idx) || encode_seen(E, idx)) return;
  encode_table_body(E, idx);
}

/* ---- classes ---- */

/* A class name: dotted identifiers ("Dog", "animals.Cat"), 1 to 255 bytes. */
static int is_class_name(const char *s, size_t n) {
  if (n == 0 || n > 255) return 0;
  size_t i = 0;
  while (i <= n) {
    const char *dot = memchr(s + i, '.', n - i);
    size_t k = dot ? (size_t)(dot - (s + i)) : n - i;
    if (!is_identifier(s + i, k)) return 0;
    i += k + 1;
  }
  return 1;
}

/* What a decoder that records learnt: metatables and globals by value (weak
   keys: value -> name) and by name (weak values: name -> value). */
static const char byvalue_key = 0, byname_key = 0;

static void push_record(lua_State *L, const char *key, const char *mode) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, key) == LUA_TTABLE) return;
  lua_pop(L, 1);
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushstring(L, mode);
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, key);
}

/* Push the class name of the metatable at mt and return 1, or return 0. Asked
   once per metatable and block: of the names hook (not when home), then of
   what this state recorded (a worker's own jobs name the client's classes too,
   with their values: the worker they go to has none). */
static int class_name(enc *E, int mt) {
  lua_State *L = E->L;
  const farm_encoder *e = E->e;
  if (lua_isnil(L, E->cls)) {
    lua_newtable(L);
    lua_replace(L, E->cls);
  }
  lua_pushvalue(L, mt);
  int t = lua_rawget(L, E->cls);
  if (t == LUA_TSTRING) return 1;
  lua_pop(L, 1);
  if (t != LUA_TNIL) return 0;
  if (!e->home && e->names && luaL_getmetafield(L, e->names, "__class") != LUA_TNIL) {
    lua_pushvalue(L, mt);
    lua_pushvalue(L, E->cls);          /* the same for every question of this block */
    lua_call(L, 2, 1);
  } else {
    lua_pushnil(L);
  }
  if (lua_isnil(L, -1)) {              /* the names this state was sent (a worker's) */
    lua_pop(L, 1);
    push_record(L, &byvalue_key, "k");
    lua_pushvalue(L, mt);
    lua_rawget(L, -2);
    lua_remove(L, -2);
  }
  size_t n = 0;
  const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
  if (!s || !is_class_name(s, n)) {
    lua_pop(L, 1);
    lua_pushboolean(L, 0);
  }
  lua_pushvalue(L, mt);
  lua_pushvalue(L, -2);
  lua_rawset(L, E->cls);
  if (lua_isstring(L, -1)) return 1;
  lua_pop(L, 1);
  return 0;
}

/* A table's metatable: by name (GLOBALS, MODREF), as REF, as CLASS when it has
   a class name (with its value, unless the receiver is home), else by value. */
static void encode_meta(enc *E, int mt) {
  lua_State *L = E->L;
  if (!lua_istable(L, mt)) {
    encode_value(E, mt);
    return;
  }
  if (encode_named(E, mt) || encode_seen(E, mt)) return;
  if (class_name(E, mt)) {
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    put_u8(E, FARM_T_CLASS);
    put_str(E, s, n);
    lua_pop(L, 1);
    if (E->e->home) {
      put_u8(E, FARM_T_NIL);
      return;
    }
  }
  encode_table_body(E, mt);
}

/* Field `k` of the describe table at desc, which must be a string. */
static const char *desc_str(enc *E, int desc, const char *k, size_t *n) {
  lua_State *L = E->L;
  if (lua_getfield(L, desc, k) != LUA_TSTRING)
    luaL_error(L, "describe hook gave no string '%s' for a function", k);
  const char *s = lua_tolstring(L, -1, n);
  lua_pop(L, 1);    /* still referenced by desc */
  return s;
}

/* Queue the global name at the top of the stack for the globals section,
   remembering which function asked first. Pops the name. */
static void add_pending(enc *E, int desc) {
  lua_State *L = E->L;
  if (lua_isnil(L, E->pend)) {
    lua_newtable(L);
    lua_replace(L, E->pend);
  }
  lua_pushvalue(L, -1);
  if (lua_rawget(L, E->pend) != LUA_TNIL) {
    lua_pop(L, 2);
    return;
  }
  lua_pop(L, 1);
  lua_pushvalue(L, -1);
  lua_rawseti(L, E->pend, ++E->npend);
  lua_pushvalue(L, desc);
  lua_rawset(L, E->pend);
}

/* Upvalue i of the function at f, whose value is at v: when a function met
   before in this block (or the block it continues) has the very same variable
   (lua_upvalueid), UPREF to that one's upvalue, and 1. Else the variable is
   noted as f's (its id -> f, in the seen table) and 0: the value follows. */
static int encode_shared_upvalue(enc *E, int f, int i, int v) {
  lua_State *L = E->L;
  const farm_encoder *e = E->e;
  /* the global table travels as GLOBALS, and all of a block's functions get one env */
  if (e->globals && (lua_rawequal(L, v, e->globals) || is_decoded_env(L, v))) return 0;
  void *id = lua_upvalueid(L, f, i);
  if (!id) return 0;
  luaL_checkstack(L, 6, NULL);
  lua_pushlightuserdata(L, id);
  int t = lua_rawget(L, E->seen);
  if (t == LUA_TNIL && e->prior) {
    lua_pop(L, 1);
    lua_pushlightuserdata(L, id);
    t = lua_rawget(L, e->prior);
  }
  if (t != LUA_TFUNCTION) {
    lua_pop(L, 1);
    lua_pushlightuserdata(L, id);
    lua_pushvalue(L, f);
    lua_rawset(L, E->seen);
    return 0;
  }
  int g = lua_gettop(L);
  lua_pushvalue(L, g);
  if (lua_rawget(L, E->seen) != LUA_TNUMBER && e->prior) {
    lua_pop(L, 1);
    lua_pushvalue(L, g);
    lua_rawget(L, e->prior);
  }
  lua_Integer ref = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : 0;
  lua_pop(L, 1);
  const char *un = NULL;
  for (int j = 1; ref > 0 && (un = lua_getupvalue(L, g, j)) != NULL; j++) {
    lua_pop(L, 1);
    if (lua_upvalueid(L, g, j) == id) break;
  }
  if (!un || !*un) {                   /* (cannot happen: g noted it by name) */
    lua_pop(L, 1);
    return 0;
  }
  put_tag_uvar(E, FARM_T_UPREF, (uint64_t)ref);
  put_str(E, un, strlen(un));
  lua_pop(L, 1);
  return 1;
}

static void encode_function(enc *E, int idx) {
  lua_State *L = E->L;
  if (encode_named(E, idx)) return;
  if (lua_iscfunction(L, idx) || !E->e->describe) refuse(E, idx);
  if (encode_seen(E, idx)) return;
  enc_enter(E);
  int d = E->depth;

  lua_pushvalue(L, E->e->describe);
  lua_pushvalue(L, idx);
  lua_call(L, 1, 1);
  int desc = lua_gettop(L);
  if (!lua_istable(L, desc))
    luaL_error(L, "describe hook returned %s for a function", luaL_typename(L, desc));
  size_t nchunk, ntext;
  const char *chunk = desc_str(E, desc, "chunk", &nchunk);
  const char *text = desc_str(E, desc, "text", &ntext);
  int isint;
  lua_getfield(L, desc, "line");
  lua_Integer line = lua_tointegerx(L, -1, &isint);
  lua_pop(L, 1);
  if (!isint || line < 0) luaL_error(L, "describe hook gave no line number for a function");

  put_u8(E, FARM_T_FUNC);
  put_str(E, chunk, nchunk);
  put_uvar(E, (uint64_t)line);
  put_str(E, text, ntext);

  if (lua_getfield(L, desc, "globals") == LUA_TTABLE) {
    int g = lua_gettop(L);
    for (lua_Integer i = 1; lua_rawgeti(L, g, i) != LUA_TNIL; i++) {
      if (lua_type(L, -1) == LUA_TSTRING) add_pending(E, desc);
      else lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);

  /* Upvalues by name; stripped ones (no name) cannot be restored by name. */
  const char *name;
  uint64_t nup = 0;
  for (int i = 1; (name = lua_getupvalue(L, idx, i)) != NULL; i++) {
    if (*name && strcmp(name, "(no name)") != 0) nup++;
    lua_pop(L, 1);
  }
  put_uvar(E, nup);
  for (int i = 1; (name = lua_getupvalue(L, idx, i)) != NULL; i++) {
    if (*name && strcmp(name, "(no name)") != 0) {
      put_str(E, name, strlen(name));
      E->path[d].kind = SEG_UPVAL;
      E->path[d].name = name;
      E->path[d].idx = desc;
      if (!encode_shared_upvalue(E, idx, i, lua_gettop(L))) encode_value(E, lua_gettop(L));
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);    /* desc */
  E->depth--;
}

/* idx may be relative (-1) for scalars: only containers push before they
   are done with it, and they make it absolute first. */
static void encode_value(enc *E, int idx) {
  lua_State *L = E->L;
  if (lua_isinteger(L, idx)) {    /* first: the commonest value by far */
    lua_Integer v = lua_tointeger(L, idx);
    if (v >= 0 && v < 0x80) {
      put_u8(E, FARM_T_SMALLINT + (unsigned)v);
    } else {
      uint64_t u = ((uint64_t)v << 1) ^ (uint64_t)(0 - ((uint64_t)v >> 63));
      put_tag_uvar(E, FARM_T_INT, u);
    }
    return;
  }
  switch (lua_type(L, idx)) {
  case LUA_TNIL:
    put_u8(E, FARM_T_NIL);
    return;
  case LUA_TBOOLEAN:
    put_u8(E, lua_toboolean(L, idx) ? FARM_T_TRUE : FARM_T_FALSE);
    return;
  case LUA_TNUMBER: {
    double x = (double)lua_tonumber(L, idx);
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    unsigned char *q = room(E, 9);
    q[0] = FARM_T_FLT;
    for (int i = 0; i < 8; i++) q[1 + i] = (unsigned char)(bits >> (8 * i));
    E->b->n += 9;
    return;
  }
  case LUA_TSTRING: {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    put_u8(E, FARM_T_STR);
    put_str(E, s, n);
    return;
  }
  case LUA_TTABLE:
    encode_table(E, lua_absindex(L, idx));
    return;
  case LUA_TFUNCTION:
    encode_function(E, lua_absindex(L, idx));
    return;
  case LUA_TUSERDATA:
    idx = lua_absindex(L, idx);
    if (encode_named(E, idx)) return;
    break;
  }
  refuse(E, idx);
}

/* The standard libraries whose fields may travel in the globals section as
   "lib.key": what a script added to them (`function string.trim`, `math.clamp`,
   package.path). Returns the length of the "lib" in such a name, or 0 when the
   name is a plain global. */
static size_t lib_prefix(const char *s, size_t n) {
  static const char *const libs[] = { "string", "table", "math", "os", "io", "utf8",
                                      "coroutine", "debug", "package", NULL };
  const char *dot = memchr(s, '.', n);
  if (!dot || dot + 1 == s + n) return 0;
  size_t k = (size_t)(dot - s);
  for (int i = 0; libs[i]; i++)
    if (strlen(libs[i]) == k && memcmp(libs[i], s, k) == 0) return k;
  return 0;
}

/* Push the field "lib.key" of the library table at t (a key that is not there
   is tried as "sub.key" of its table field sub: package.preload.NAME); nil if none. */
static void lookup_field(lua_State *L, int t, const char *k, size_t kn) {
  lua_pushlstring(L, k, kn);
  if (lua_rawget(L, t) != LUA_TNIL) return;
  lua_pop(L, 1);
  const char *dot = memchr(k, '.', kn);
  if (!dot) {
    lua_pushnil(L);
    return;
  }
  lua_pushlstring(L, k, (size_t)(dot - k));
  if (lua_rawget(L, t) == LUA_TTABLE) {
    lua_pushlstring(L, dot + 1, kn - (size_t)(dot - k) - 1);
    lua_rawget(L, -2);
  } else {
    lua_pushnil(L);
  }
  lua_remove(L, -2);
}

/* Push the value of the global named at nm for the globals section: from
   e->globals, else from a decoded environment met on the way; nil if none.
   A library field ("string.trim") is read from that library in e->globals. */
static void lookup_global(enc *E, int nm) {
  lua_State *L = E->L;
  size_t n;
  const char *s = lua_tolstring(L, nm, &n);
  size_t lib = lib_prefix(s, n);
  if (lib) {
    lua_pushlstring(L, s, lib);
    if (lua_rawget(L, E->e->globals) == LUA_TTABLE) lookup_field(L, lua_gettop(L), s + lib + 1, n - lib - 1);
    else lua_pushnil(L);
    lua_remove(L, -2);
    return;
  }
  lua_pushvalue(L, nm);
  if (lua_rawget(L, E->e->globals) != LUA_TNIL || !E->envs) return;
  lua_pop(L, 1);
  for (lua_Integer k = 1; lua_rawgeti(L, E->envs, k) == LUA_TTABLE; k++) {
    lua_pushvalue(L, nm);
    if (lua_rawget(L, -2) != LUA_TNIL) { lua_remove(L, -2); return; }
    lua_pop(L, 2);
  }
  /* the nil that ended the loop is the result */
}

/* The globals section: every name the block's functions asked for, looked up
   in e->globals. Encoding a global function may ask for more names, so the
   loop re-reads npend. */
static void encode_globals(enc *E) {
  lua_State *L = E->L;
  const farm_encoder *e = E->e;
  if (e->globals && E->pend) {
    for (lua_Integer i = 1; i <= E->npend; i++) {
      lua_rawgeti(L, E->pend, i);
      int name = lua_gettop(L);
      lookup_global(E, name);
      if (lua_isnil(L, -1)) {
        lua_pop(L, 2);
        continue;
      }
      size_t n;
      const char *s = lua_tolstring(L, name, &n);
      put_str(E, s, n);
      lua_pushvalue(L, name);
      lua_rawget(L, E->pend);
      E->path[0].kind = SEG_GLOBAL;
      E->path[0].name = s;
      E->path[0].idx = name + 2;
      encode_value(E, name + 1);
      lua_pop(L, 3);
    }
  }
  put_u8(E, 0);    /* str(""): end of globals */
}

lua_Integer farm__codec_encode(lua_State *L, farm_buf *b, int first, int n,
                              const farm_encoder *e) {
  enc E;
  E.L = L;
  E.b = b;
  E.e = e;
  E.base = lua_gettop(L);
  E.seen = E.pend = E.envs = E.mods = E.cls = 0;
  E.nref = e->prior ? e->nprior : 0;
  E.npend = 0;
  E.depth = 0;
  luaL_checkstack(L, 8, NULL);
  if (first < 0 && first > LUA_REGISTRYINDEX) first = E.base + first + 1;
  put_uvar(&E, (uint64_t)(n > 0 ? n : 0));
  for (int i = 0; i < n; i++) {
    E.path[0].kind = SEG_ROOT;
    E.path[0].i = i + 1;
    encode_value(&E, first + i);
  }
  encode_globals(&E);
  if (E.seen) lua_settop(L, E.base);
  return E.nref;
}

/* ------------------------------------------------------------------------
 * Decoder
 * ------------------------------------------------------------------------ */

typedef struct dec {
  lua_State *L;
  farm_rd r;
  const farm_decoder *d;
  int refs;          /* stack slot: the tables and functions by number (nil until needed) */
  int env;           /* stack slot: the environment when d->env is 0 (nil until needed) */
  int maker;         /* stack slot: the fresh-_ENV-cell maker (nil until needed) */
  int classes;       /* stack slot: untrusted, the classes of ours named so far, value ->
                        true, which later metatables may refer to (nil until needed) */
  lua_Integer nrefs;
  int depth;
  uint64_t slots;    /* table slots that may still be preallocated (see decode_table) */
  uint64_t lines;    /* newlines that compiles may still be fed (see compile) */
  size_t len;        /* of the whole message */
} dec;

static uint64_t lines_budget(size_t len) {
  return (uint64_t)len * LINES_PER_BYTE + MAX_LINE;
}

static void malformed(lua_State *L, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  lua_pushliteral(L, "malformed message: ");
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  lua_concat(L, 2);
  lua_error(L);
}

static inline void check(dec *D) {
  if (D->r.err) malformed(D->L, "truncated");
}

static void dec_enter(dec *D) {
  if (++D->depth > FARM_CODEC_MAXDEPTH) malformed(D->L, DEPTH_MSG);
  luaL_checkstack(D->L, 8, NULL);
}

static const char chain_env_key = 0;

/* What a function from another host may use, as lib, "name name ..." (lib
   NULL: the base functions): the pure part of the standard library, so that
   `function(x) return math.floor(x) end` works there as here. Left out, on
   purpose: whatever reaches our state, files or process (load, loadfile,
   dofile, require, package, io, os, debug, getmetatable, setmetatable, rawset,
   collectgarbage, print, string.dump, math.randomseed). */
static const char *const sandbox_lib[][2] = {
  { NULL, "assert error ipairs next pairs pcall rawequal rawget rawlen select tonumber "
          "tostring type xpcall _VERSION" },
  { "string", "byte char find format gmatch gsub len lower match pack packsize rep reverse "
              "sub unpack upper" },
  { "table", "concat insert move pack remove sort unpack" },
  { "math", "abs ceil cos deg exp floor fmod huge log max maxinteger min mininteger modf pi "
            "rad random sin sqrt tan tointeger type ult" },
  { "utf8", "char charpattern codepoint codes len offset" },
  { "coroutine", "close create isyieldable resume running status wrap yield" },
};

/* Copy the fields named in names (space-separated) from the table at from to
   the table at to. Only C functions, numbers and strings are copied: a field
   our script replaced with a Lua function of its own (which would see our
   globals) is left out, and so is anything else it put there. */
static void copy_fields(lua_State *L, int from, int to, const char *names) {
  while (*names) {
    const char *end = strchr(names, ' ');
    size_t n = end ? (size_t)(end - names) : strlen(names);
    lua_pushlstring(L, names, n);
    lua_pushvalue(L, -1);
    int t = lua_rawget(L, from);
    if (lua_iscfunction(L, -1) || t == LUA_TNUMBER || t == LUA_TSTRING) lua_rawset(L, to);
    else lua_pop(L, 2);
    names += n + (end != NULL);
  }
}

/* Push a new environment for what arrives from another host: copies of the
   libraries in sandbox_lib (fresh tables, so a function that writes math.x
   writes its own math), and nothing else. It has no __index: our globals are
   out of its reach. Its metatable (one per state, empty but for a __name) is
   how is_decoded_env knows it. */
static void push_sandbox(lua_State *L) {
  luaL_checkstack(L, 10, NULL);
  lua_createtable(L, 0, 24);
  int env = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  int g = env + 1;
  if (lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
  }
  int loaded = env + 2;
  for (size_t i = 0; i < sizeof sandbox_lib / sizeof sandbox_lib[0]; i++) {
    const char *lib = sandbox_lib[i][0];
    if (!lib) {
      copy_fields(L, g, env, sandbox_lib[i][1]);
      continue;
    }
    lua_pushstring(L, lib);
    if (lua_rawget(L, loaded) != LUA_TTABLE) {
      lua_pop(L, 1);
      continue;                        /* a library this state never opened */
    }
    lua_pushstring(L, lib);
    lua_newtable(L);
    copy_fields(L, env + 3, env + 5, sandbox_lib[i][1]);
    lua_rawset(L, env);
    lua_pop(L, 1);
  }
  lua_settop(L, env);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &sandboxmt_key) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "farm sandbox");
    lua_setfield(L, -2, "__name");
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &sandboxmt_key);
  }
  lua_setmetatable(L, env);
}

static void push_env(dec *D) {
  lua_State *L = D->L;
  if (D->d->env) {
    lua_pushvalue(L, D->d->env);
    return;
  }
  if (lua_isnil(L, D->env)) {
    if (D->d->untrusted) {
      push_sandbox(L);
    } else {
      lua_newtable(L);
      push_envmt(L);
      lua_setmetatable(L, -2);
    }
    /* its own _G: in the sender, _G is the table its globals are in, and
       `_G.helper` finds the helper that travelled here as a global */
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "_G");
    if (D->d->chain) {                 /* the next block of the chain decodes into it too */
      lua_pushvalue(L, -1);
      lua_rawsetp(L, D->d->chain, &chain_env_key);
    }
    lua_replace(L, D->env);
  }
  lua_pushvalue(L, D->env);
}

static void add_ref(dec *D, int idx) {
  lua_State *L = D->L;
  if (lua_isnil(L, D->refs)) {
    lua_newtable(L);
    lua_replace(L, D->refs);
  }
  lua_pushvalue(L, idx);
  lua_rawseti(L, D->refs, ++D->nrefs);
}

static void decode_value(dec *D);

/* Remember that the value at v is called s (a recording decoder): by value
   (the first name stays) and by name (the last value stays). */
static void record_name(lua_State *L, int v, const char *s, size_t n) {
  v = lua_absindex(L, v);
  luaL_checkstack(L, 6, NULL);
  push_record(L, &byvalue_key, "k");
  lua_pushvalue(L, v);
  if (lua_rawget(L, -2) == LUA_TNIL) {
    lua_pushvalue(L, v);
    lua_pushlstring(L, s, n);
    lua_rawset(L, -4);
  }
  lua_pop(L, 2);
  push_record(L, &byname_key, "v");
  lua_pushlstring(L, s, n);
  lua_pushvalue(L, v);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

/* A table that arrived as global `name` (at v) is recorded, and so are the
   tables in its fields, as "name.key" (as lua/ship.lua's classname looks: not
   in a list, at most CLASS_FIELDS fields): where a worker's results find the
   names of the client's classes that a job reached as globals. */
#define CLASS_FIELDS 256
static void record_global(lua_State *L, int v, const char *s, size_t n) {
  if (!lua_istable(L, v) || !is_class_name(s, n)) return;
  v = lua_absindex(L, v);
  record_name(L, v, s, n);
  luaL_checkstack(L, 6, NULL);
  int list = lua_rawgeti(L, v, 1) != LUA_TNIL;
  lua_pop(L, 1);
  if (list) return;
  int k = 0;
  lua_pushnil(L);
  while (lua_next(L, v)) {
    size_t kn;
    if (lua_type(L, -1) == LUA_TTABLE && lua_type(L, -2) == LUA_TSTRING) {
      const char *ks = lua_tolstring(L, -2, &kn);
      if (is_identifier(ks, kn) && n + 1 + kn <= 255) {
        lua_pushfstring(L, "%s.%s", lua_pushlstring(L, s, n), ks);
        size_t fn;
        const char *f = lua_tolstring(L, -1, &fn);
        record_name(L, -3, f, fn);
        lua_pop(L, 2);
      }
    }
    lua_pop(L, 1);
    if (++k >= CLASS_FIELDS) {
      lua_pop(L, 1);
      break;
    }
  }
}

/* Push the table called s at t (a dotted path of raw fields), or nothing and 0. */
static int walk_name(lua_State *L, int t, const char *s, size_t n) {
  lua_pushvalue(L, t);
  size_t i = 0;
  while (i < n) {
    const char *dot = memchr(s + i, '.', n - i);
    size_t k = dot ? (size_t)(dot - (s + i)) : n - i;
    if (!lua_istable(L, -1)) {
      lua_pop(L, 1);
      return 0;
    }
    lua_pushlstring(L, s + i, k);
    lua_rawget(L, -2);
    lua_remove(L, -2);
    i += k + 1;
  }
  if (lua_istable(L, -1)) return 1;
  lua_pop(L, 1);
  return 0;
}

/* Push the receiver's own class called s: from its global table, the block's
   environment, or the classes it recorded; or nothing and 0. Never writes
   anything but the record, never runs a metamethod. */
static int resolve_class(dec *D, const char *s, size_t n) {
  lua_State *L = D->L;
  luaL_checkstack(L, 6, NULL);
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  int found = walk_name(L, lua_gettop(L), s, n);
  lua_remove(L, found ? -2 : -1);
  if (found) return 1;
  int env = D->d->env ? D->d->env : lua_istable(L, D->env) ? D->env : 0;
  if (env && walk_name(L, env, s, n)) return 1;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &byname_key) == LUA_TTABLE) {
    lua_pushlstring(L, s, n);
    if (lua_rawget(L, -2) == LUA_TTABLE) {
      lua_remove(L, -2);
      return 1;
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return 0;
}

static void decode_table(dec *D, int withmt);

#define METAVALUE_MSG "a value from another host carries a metatable by value " \
                      "(only classes this side names may be metatables)"

/* CLASS str(name) (NIL | TABLE | TABLEMT): pushes the metatable. */
static void decode_class(dec *D) {
  lua_State *L = D->L;
  size_t n;
  const char *s = farm__rd_str(&D->r, &n);
  check(D);
  if (!is_class_name(s, n)) malformed(L, "bad class name");
  if (D->r.p >= D->r.end) malformed(L, "truncated");
  unsigned tag = *D->r.p++;
  if (tag == FARM_T_NIL) {
    if (!resolve_class(D, s, n)) {
      lua_pushlstring(L, s, n);
      lua_pushfstring(L, "a table arrived with class '%s', which is not known here "
                      "(no global or field of a global has that name)", lua_tostring(L, -1));
      lua_error(L);
    }
    add_ref(D, lua_gettop(L));
  } else if (tag == FARM_T_TABLE || tag == FARM_T_TABLEMT) {
    if (D->d->untrusted) malformed(L, METAVALUE_MSG);
    decode_table(D, tag == FARM_T_TABLEMT);   /* the sender's class: this copy */
  } else {
    malformed(L, "bad class value (tag %d)", (int)tag);
  }
  if (D->d->record) record_name(L, -1, s, n);
}

/* A metatable from another host: a metatable runs code of its own (__gc at
   the next collection, __index, __close, ...), so it may only be a table of
   ours that this side names: CLASS name NIL (one of our classes), MODREF or
   MODULE (a value we have loaded), or a REF to a class of ours named before in
   the block. A table of the sender's, however it comes (TABLE, CLASS with a
   copy, GLOBALS, a REF to a table decoded here), is refused. Pushes it. */
static void decode_named_meta(dec *D) {
  lua_State *L = D->L;
  if (D->r.p >= D->r.end) malformed(L, "truncated");
  unsigned tag = *D->r.p;
  if (tag == FARM_T_CLASS) {
    D->r.p++;
    decode_class(D);                   /* (refuses a copy) */
    if (lua_isnil(L, D->classes)) {
      lua_newtable(L);
      lua_replace(L, D->classes);
    }
    lua_pushvalue(L, -1);
    lua_pushboolean(L, 1);
    lua_rawset(L, D->classes);
    return;
  }
  if (tag != FARM_T_MODREF && tag != FARM_T_MODULE && tag != FARM_T_REF)
    malformed(L, METAVALUE_MSG);
  decode_value(D);
  if (tag == FARM_T_REF) {
    int ours = lua_istable(L, D->classes);
    if (ours) {
      lua_pushvalue(L, -1);
      ours = lua_rawget(L, D->classes) != LUA_TNIL;
      lua_pop(L, 1);
    }
    if (!ours) malformed(L, METAVALUE_MSG);
  }
}

static void decode_table(dec *D, int withmt) {
  lua_State *L = D->L;
  uint64_t narr = farm__rd_uvar(&D->r);
  uint64_t nhash = farm__rd_uvar(&D->r);
  check(D);
  size_t left = farm__rd_left(&D->r);
  /* every element takes at least one byte, every pair two */
  if (narr > left || nhash > left / 2 || narr + 2 * nhash > left)
    malformed(L, "table size exceeds message");
  dec_enter(D);
  /* That check alone lets every level of nested tables claim nearly the whole
     message again. Each element of each table begins with a tag byte of its
     own, so in a true message the claims of all its tables (narr + 2 * nhash)
     add up to at most its length: each claim is preallocated only out of what
     is left of that sum, and past it a table starts small and grows as its
     elements really arrive. A true message never runs out. */
  uint64_t pa = narr < D->slots ? narr : D->slots;
  D->slots -= pa;
  uint64_t ph = nhash < D->slots / 2 ? nhash : D->slots / 2;
  D->slots -= 2 * ph;
  lua_createtable(L, pa > INT_MAX ? INT_MAX : (int)pa, ph > INT_MAX ? INT_MAX : (int)ph);
  int t = lua_gettop(L);
  add_ref(D, t);
  for (uint64_t i = 1; i <= narr; i++) {
    decode_value(D);
    lua_rawseti(L, t, (lua_Integer)i);
  }
  for (uint64_t i = 0; i < nhash; i++) {
    decode_value(D);
    int k = lua_gettop(L);
    if (lua_isnil(L, k)) malformed(L, "nil table key");
    if (lua_type(L, k) == LUA_TNUMBER && !lua_isinteger(L, k)) {
      lua_Number x = lua_tonumber(L, k);
      if (x != x) malformed(L, "NaN table key");
    }
    decode_value(D);
    lua_rawset(L, t);
  }
  if (withmt) {
    if (D->d->untrusted) {
      decode_named_meta(D);
    } else if (D->r.p < D->r.end && *D->r.p == FARM_T_CLASS) {
      D->r.p++;
      decode_class(D);
    } else {
      decode_value(D);
    }
    if (!lua_istable(L, -1)) malformed(L, "metatable is not a table");
    lua_setmetatable(L, t);
  }
  D->depth--;
}

/* Feeds lua_load the (line-1) newlines, then the text, without joining them. */
typedef struct fnsrc {
  uint64_t nl;
  const char *text;
  size_t len;
  char lines[256];
} fnsrc;

static const char *fn_reader(lua_State *L, void *ud, size_t *size) {
  fnsrc *s = ud;
  (void)L;
  if (s->nl > 0) {
    size_t k = s->nl < sizeof s->lines ? (size_t)s->nl : sizeof s->lines;
    s->nl -= k;
    *size = k;
    return s->lines;
  }
  if (s->text) {
    const char *t = s->text;
    *size = s->len;
    s->text = NULL;
    return t;
  }
  *size = 0;
  return NULL;
}

/* Push the chunk compiled from text, as if it began on `line` of `chunk`. */
static void compile(dec *D, const char *chunk, size_t nchunk, uint64_t line,
                    const char *text, size_t ntext) {
  lua_State *L = D->L;
  fnsrc s;
  s.nl = line > 0 ? line - 1 : 0;
  if (s.nl > D->lines)
    malformed(L, "functions start on more lines in all than a message of %I bytes allows "
              "(limit %I)", (LUAI_UACINT)D->len, (LUAI_UACINT)lines_budget(D->len));
  D->lines -= s.nl;
  s.text = text;
  s.len = ntext;
  memset(s.lines, '\n', sizeof s.lines);
  lua_pushlstring(L, chunk, nchunk);
  int st = lua_load(L, fn_reader, &s, lua_tostring(L, -1), "t");
  lua_remove(L, -2);
  if (st == LUA_ERRSYNTAX)
    malformed(L, "function text does not compile: %s", lua_tostring(L, -1));
  if (st != LUA_OK) lua_error(L);
  if (D->d->remember) {          /* remember(chunk, text as it stands in its chunk) */
    luaL_Buffer B;
    lua_pushvalue(L, D->d->remember);
    lua_pushlstring(L, chunk, nchunk);
    luaL_buffinit(L, &B);
    for (uint64_t i = 1; i < line; i++) luaL_addchar(&B, '\n');
    luaL_addlstring(&B, text, ntext);
    luaL_pushresult(&B);
    lua_call(L, 2, 0);
  }
}

static int is_lua_function(lua_State *L, int idx) {
  return lua_type(L, idx) == LUA_TFUNCTION && !lua_iscfunction(L, idx);
}

/* Give the chunk at idx a fresh first upvalue (_ENV) cell holding the decode
   env. A cached chunk is called once per copy of its function, and the
   closures it returns share its _ENV cell: lua_setupvalue on the chunk would
   change the environment of every copy already made. lua_upvaluejoin needs a
   Lua closure that owns a fresh cell, which the tiny "maker" chunk provides
   (compiled once per state and kept in the registry). */
static const char maker_key = 0;

/* sealed: the cell holds a new empty table, not the decode env */
static void give_fresh_env_of(dec *D, int idx, int sealed) {
  lua_State *L = D->L;
  if (lua_isnil(L, D->maker)) {
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &maker_key) != LUA_TFUNCTION ||
        !is_lua_function(L, -1)) {
      static const char src[] = "local e = ... return function() return e end";
      lua_pop(L, 1);
      if (luaL_loadbufferx(L, src, sizeof src - 1, "=farm.codec", "t") != LUA_OK)
        lua_error(L);
      lua_pushvalue(L, -1);
      lua_rawsetp(L, LUA_REGISTRYINDEX, &maker_key);
    }
    lua_replace(L, D->maker);
  }
  lua_pushvalue(L, D->maker);
  if (sealed) lua_newtable(L); else push_env(D);
  lua_call(L, 1, 1);
  /* lua_upvaluejoin does not check its arguments in a release build */
  if (!is_lua_function(L, -1) || !lua_getupvalue(L, -1, 1))
    luaL_error(L, "farm codec: the registry's upvalue maker was replaced");
  lua_pop(L, 1);
  lua_upvaluejoin(L, idx, 1, -1, 1);
  lua_pop(L, 1);
}

/* ---- what a function from another host does while it is made ----
 *
 * FUNC text compiles to a chunk that is called to make the function. From
 * another host that call must run nothing the sender wrote: `while true do
 * end` or `("x"):rep(2^30)` before the `return function` would run here, in
 * our process. Honest text (lua/ship.lua's verify_function) is only
 * declarations and the function, `local a, b <const>; local c <close>; return
 * function ... end`, whose main function does nothing but load nils, mark a
 * nil to be closed and make closures. So before the call its compiled form is
 * read (lua_dump, stripped) and every instruction of the main function must be
 * one of those: there are no jumps among them, so the call runs each at most
 * once, in order, and ends. The closures' own bodies run only when called.
 * Anything else (a main chunk, which ships as `return load(...)`, included) is
 * refused unrun. The text is compiled by our own compiler, so the code is
 * well-formed: only what it does is in question.
 */
#if LUA_VERSION_NUM != 504
#error "codec.c reads Lua 5.4's compiled form (check_makes_only): review it for this Lua"
#endif

/* Lua 5.4's opcodes (lopcodes.h), numbered as there, for the message. */
static const char *const opnames[] = {
  "MOVE", "LOADI", "LOADF", "LOADK", "LOADKX", "LOADFALSE", "LFALSESKIP", "LOADTRUE",
  "LOADNIL", "GETUPVAL", "SETUPVAL", "GETTABUP", "GETTABLE", "GETI", "GETFIELD",
  "SETTABUP", "SETTABLE", "SETI", "SETFIELD", "NEWTABLE", "SELF", "ADDI", "ADDK", "SUBK",
  "MULK", "MODK", "POWK", "DIVK", "IDIVK", "BANDK", "BORK", "BXORK", "SHRI", "SHLI", "ADD",
  "SUB", "MUL", "MOD", "POW", "DIV", "IDIV", "BAND", "BOR", "BXOR", "SHL", "SHR", "MMBIN",
  "MMBINI", "MMBINK", "UNM", "BNOT", "NOT", "LEN", "CONCAT", "CLOSE", "TBC", "JMP", "EQ",
  "LT", "LE", "EQK", "EQI", "LTI", "LEI", "GTI", "GEI", "TEST", "TESTSET", "CALL",
  "TAILCALL", "RETURN", "RETURN0", "RETURN1", "FORLOOP", "FORPREP", "TFORPREP", "TFORCALL",
  "TFORLOOP", "SETLIST", "CLOSURE", "VARARG", "VARARGPREP", "EXTRAARG"
};
enum {
  OPC_MOVE = 0, OPC_LOADI = 1, OPC_LOADF = 2, OPC_LOADK = 3, OPC_LOADFALSE = 5,
  OPC_LOADTRUE = 7, OPC_LOADNIL = 8, OPC_TBC = 55, OPC_RETURN = 70, OPC_RETURN0 = 71,
  OPC_RETURN1 = 72, OPC_CLOSURE = 79, OPC_VARARGPREP = 81, OPC_NUM = 83
};

typedef struct dumpbuf {
  luaL_Buffer B;
  int init;
} dumpbuf;

/* lua_dump's writer, as string.dump's: the buffer is begun at the first
   write, once lua_dump has taken the function from the top of the stack. */
static int dump_writer(lua_State *L, const void *p, size_t n, void *ud) {
  dumpbuf *w = ud;
  if (!w->init) {
    w->init = 1;
    luaL_buffinit(L, &w->B);
  }
  luaL_addlstring(&w->B, p, n);
  return 0;
}

/* A size as ldump.c writes it: 7 bits a byte, most significant first, the
   last byte marked by its high bit. 0 when it runs past end. */
static int dumped_size(const unsigned char **p, const unsigned char *end, size_t *out) {
  size_t x = 0;
  unsigned b;
  do {
    if (*p >= end || x > (SIZE_MAX >> 7)) return 0;
    b = *(*p)++;
    x = (x << 7) | (b & 0x7f);
  } while (!(b & 0x80));
  *out = x;
  return 1;
}

/* Raise unless the main function of the chunk at c (compiled from a FUNC's
   text, on `line`) only declares and makes closures (see above). A chunk
   that passed is remembered (weakly), so a cached one is read once. */
static const char checked_key = 0;

static void check_makes_only(dec *D, int c, uint64_t line) {
  lua_State *L = D->L;
  luaL_checkstack(L, 8, NULL);
  push_record(L, &checked_key, "k");
  lua_pushvalue(L, c);
  int known = lua_rawget(L, -2) != LUA_TNIL;
  lua_pop(L, 1);
  if (known) {
    lua_pop(L, 1);
    return;
  }
  int top = lua_gettop(L);
  dumpbuf w;
  w.init = 0;
  lua_pushvalue(L, c);
  lua_dump(L, dump_writer, &w, 1);
  if (!w.init) luaL_buffinit(L, &w.B);
  luaL_pushresult(&w.B);
  size_t n;
  const unsigned char *p = (const unsigned char *)lua_tolstring(L, -1, &n);
  const unsigned char *end = p + n;

  /* header: "\x1bLua", version, format, LUAC_DATA, the sizes of Instruction,
     lua_Integer and lua_Number, LUAC_INT, LUAC_NUM; then the number of
     upvalues, the source (0: stripped), linedefined, lastlinedefined,
     numparams, is_vararg, maxstacksize, and the code */
  static const unsigned char head[] = "\x1bLua\x54\x00\x19\x93\r\n\x1a\n";
  size_t hdr = sizeof head - 1 + 3 + sizeof(lua_Integer) + sizeof(lua_Number);
  size_t src, ldef, lastdef, ncode = 0;
  int ok = n > hdr + 1 && memcmp(p, head, sizeof head - 1) == 0 && p[12] == 4 &&
           p[13] == sizeof(lua_Integer) && p[14] == sizeof(lua_Number);
  if (ok) {
    p += hdr + 1;
    ok = dumped_size(&p, end, &src) && src == 0 && dumped_size(&p, end, &ldef) &&
         dumped_size(&p, end, &lastdef) && end - p > 3;
  }
  if (ok) {
    p += 3;
    ok = dumped_size(&p, end, &ncode) && ncode <= (size_t)(end - p) / 4;
  }
  if (!ok) luaL_error(L, "farm codec: cannot read Lua's compiled form of a function");

  /* registers known to hold nil or false: the only values TBC may mark (a
     value with a __close of some metatable would run it when the chunk returns) */
  unsigned char nilish[512] = {0};
  const char *bad = NULL;
  size_t at = 0;
  for (; at < ncode && !bad; at++, p += 4) {
    uint32_t i;
    memcpy(&i, p, 4);
    unsigned op = i & 0x7f, a = (i >> 7) & 0xff, b = (i >> 16) & 0xff;
    switch (op) {
    case OPC_VARARGPREP: case OPC_RETURN: case OPC_RETURN0: case OPC_RETURN1:
      break;
    case OPC_LOADNIL:
      memset(nilish + a, 1, b + 1);
      break;
    case OPC_LOADFALSE:
      nilish[a] = 1;
      break;
    case OPC_MOVE:
      nilish[a] = nilish[b];
      break;
    case OPC_LOADI: case OPC_LOADF: case OPC_LOADK: case OPC_LOADTRUE: case OPC_CLOSURE:
      nilish[a] = 0;
      break;
    case OPC_TBC:
      if (!nilish[a]) bad = "TBC of a value that may have a __close";
      break;
    default:
      bad = op < OPC_NUM ? opnames[op] : "an unknown instruction";
    }
  }
  if (bad) {
    lua_Debug ar;
    lua_pushvalue(L, c);
    lua_getinfo(L, ">S", &ar);
    malformed(L, "a function from another host runs code while it is made (%s, instruction %d "
              "of the text around it at %s:%I: only local declarations and 'return function' "
              "may stand there, so no statements and no main chunk)",
              bad, (int)at, ar.short_src, (LUAI_UACINT)line);
  }
  lua_settop(L, top);
  lua_pushvalue(L, c);
  lua_pushboolean(L, 1);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

/* The number of the upvalue of the function at f called name[0..n); raises if none. */
static int upvalue_named(lua_State *L, int f, const char *name, size_t n) {
  const char *un;
  for (int u = 1; (un = lua_getupvalue(L, f, u)) != NULL; u++) {
    lua_pop(L, 1);
    if (strlen(un) == n && memcmp(un, name, n) == 0) return u;
  }
  lua_pushlstring(L, name, n);
  malformed(L, "function has no upvalue '%s'", lua_tostring(L, -1));
  return 0;
}

/* UPREF uvar(index) str(name): upvalue u of the function at f becomes the
   variable that upvalue `name` of function number index is. */
static void join_upvalue(dec *D, int f, int u) {
  lua_State *L = D->L;
  uint64_t i = farm__rd_uvar(&D->r);
  size_t n;
  const char *name = farm__rd_str(&D->r, &n);
  check(D);
  if (i == 0 || i > (uint64_t)D->nrefs) malformed(L, "bad upvalue reference %I", (LUAI_UACINT)i);
  lua_rawgeti(L, D->refs, (lua_Integer)i);
  int g = lua_gettop(L);
  /* lua_upvaluejoin does not check its arguments in a release build */
  if (!is_lua_function(L, g) || !is_lua_function(L, f))
    malformed(L, "upvalue reference to something not a Lua function");
  int ug = upvalue_named(L, g, name, n);
  lua_upvaluejoin(L, f, u, g, ug);
  lua_pop(L, 1);
}

static void decode_function(dec *D) {
  lua_State *L = D->L;
  size_t nchunk, ntext;
  const char *chunk = farm__rd_str(&D->r, &nchunk);
  uint64_t line = farm__rd_uvar(&D->r);
  const char *text = farm__rd_str(&D->r, &ntext);
  uint64_t nup = farm__rd_uvar(&D->r);
  check(D);
  if (line > MAX_LINE)
    malformed(L, "function line %I past the limit (%d)",
              (LUAI_UACINT)(line < LUA_MAXINTEGER ? line : LUA_MAXINTEGER), MAX_LINE);
  if (nup > farm__rd_left(&D->r) / 2) malformed(L, "upvalue count exceeds message");
  dec_enter(D);
  int top0 = lua_gettop(L);

  const farm_decoder *d = D->d;
  if (d->cache) {
    char num[32];
    luaL_Buffer B;
    luaL_buffinit(L, &B);
    luaL_addlstring(&B, chunk, nchunk);
    luaL_addchar(&B, '\0');
    snprintf(num, sizeof num, "%llu", (unsigned long long)line);
    luaL_addstring(&B, num);
    luaL_addchar(&B, '\0');
    luaL_addlstring(&B, text, ntext);
    luaL_pushresult(&B);
    lua_pushvalue(L, -1);
    lua_rawget(L, d->cache);
    if (!is_lua_function(L, -1) || !lua_getupvalue(L, -1, 1)) {
      lua_pop(L, 1);
      compile(D, chunk, nchunk, line, text, ntext);
      lua_pushvalue(L, -2);
      lua_pushvalue(L, -2);
      lua_rawset(L, d->cache);
    } else {
      lua_pop(L, 1);    /* the upvalue */
    }
  } else {
    compile(D, chunk, nchunk, line, text, ntext);
  }
  int c = lua_gettop(L);
  if (d->untrusted) check_makes_only(D, c, line);
  give_fresh_env_of(D, c, d->untrusted);
  lua_pushvalue(L, c);
  lua_call(L, 0, 1);
  if (lua_type(L, -1) != LUA_TFUNCTION) malformed(L, "function text does not return a function");
  lua_replace(L, top0 + 1);
  lua_settop(L, top0 + 1);
  int f = top0 + 1;
  if (d->untrusted && is_lua_function(L, f)) {
    /* made in an empty environment; the function itself gets the decode env */
    const char *un;
    for (int u = 1; (un = lua_getupvalue(L, f, u)) != NULL; u++) {
      lua_pop(L, 1);
      if (strcmp(un, "_ENV") == 0) { push_env(D); lua_setupvalue(L, f, u); break; }
    }
  }
  add_ref(D, f);

  for (uint64_t i = 0; i < nup; i++) {
    size_t n;
    const char *name = farm__rd_str(&D->r, &n);
    check(D);
    int shared = D->r.p < D->r.end && *D->r.p == FARM_T_UPREF;
    if (shared) D->r.p++;
    else decode_value(D);
    int u = upvalue_named(L, f, name, n);
    if (shared) join_upvalue(D, f, u);
    else lua_setupvalue(L, f, u);
  }
  D->depth--;
}

static void decode_value(dec *D) {
  lua_State *L = D->L;
  farm_rd *r = &D->r;
  if (r->p >= r->end) malformed(L, "truncated");
  unsigned tag = *r->p++;
  if (tag >= FARM_T_SMALLINT) {
    lua_pushinteger(L, (lua_Integer)(tag - FARM_T_SMALLINT));
    return;
  }
  switch (tag) {
  case FARM_T_NIL:
    lua_pushnil(L);
    return;
  case FARM_T_FALSE:
  case FARM_T_TRUE:
    lua_pushboolean(L, tag == FARM_T_TRUE);
    return;
  case FARM_T_INT: {
    int64_t v = farm__rd_svar(r);
    check(D);
    lua_pushinteger(L, (lua_Integer)v);
    return;
  }
  case FARM_T_FLT: {
    uint64_t bits = farm__rd_u64le(r);
    double x;
    check(D);
    memcpy(&x, &bits, sizeof x);
    lua_pushnumber(L, (lua_Number)x);
    return;
  }
  case FARM_T_STR: {
    size_t n;
    const char *s = farm__rd_str(r, &n);
    check(D);
    lua_pushlstring(L, s, n);
    return;
  }
  case FARM_T_TABLE:
  case FARM_T_TABLEMT:
    decode_table(D, tag == FARM_T_TABLEMT);
    return;
  case FARM_T_REF: {
    uint64_t i = farm__rd_uvar(r);
    check(D);
    if (i == 0 || i > (uint64_t)D->nrefs) malformed(L, "bad reference %I", (LUAI_UACINT)i);
    lua_rawgeti(L, D->refs, (lua_Integer)i);
    return;
  }
  case FARM_T_FUNC:
    decode_function(D);
    return;
  case FARM_T_MODREF: {
    size_t n;
    const char *s = farm__rd_str(r, &n);
    check(D);
    if (!D->d->resolve) malformed(L, "module reference without a resolver");
    lua_pushvalue(L, D->d->resolve);
    lua_pushlstring(L, s, n);
    lua_call(L, 1, 1);
    return;
  }
  case FARM_T_MODULE: {            /* resolve(name, info): info may load the module */
    size_t n;
    const char *s = farm__rd_str(r, &n);
    check(D);
    if (!D->d->resolve) malformed(L, "module reference without a resolver");
    dec_enter(D);                  /* its info may be a MODULE too: nesting is bounded */
    lua_pushvalue(L, D->d->resolve);
    lua_pushlstring(L, s, n);
    decode_value(D);
    lua_call(L, 2, 1);
    D->depth--;
    return;
  }
  case FARM_T_GLOBALS:
    push_env(D);
    return;
  case FARM_T_CLASS:
    malformed(L, "a class where no metatable is");
    return;
  case FARM_T_UPREF:
    malformed(L, "an upvalue reference where no upvalue is");
    return;
  }
  malformed(L, "unknown tag %d", (int)tag);
}

int farm__codec_decode(lua_State *L, const void *p, size_t len,
                      const farm_decoder *d) {
  dec D;
  D.L = L;
  D.d = d;
  D.nrefs = 0;
  D.depth = 0;
  D.slots = len;
  D.len = len;
  D.lines = lines_budget(len);
  farm__rd_init(&D.r, p, len);
  luaL_checkstack(L, 12, NULL);
  int base = lua_gettop(L);
  lua_pushnil(L);
  lua_pushnil(L);
  lua_pushnil(L);
  lua_pushnil(L);
  D.refs = base + 1;
  D.env = base + 2;
  D.maker = base + 3;
  D.classes = base + 4;
  if (d->chain) {                      /* carry on from the block before */
    lua_pushvalue(L, d->chain);
    lua_replace(L, D.refs);
    D.nrefs = (lua_Integer)lua_rawlen(L, d->chain);
    if (!d->env && lua_rawgetp(L, d->chain, &chain_env_key) == LUA_TTABLE) lua_replace(L, D.env);
    else lua_settop(L, base + 4);
  }

  uint64_t n = farm__rd_uvar(&D.r);
  check(&D);
  if (n > farm__rd_left(&D.r)) malformed(L, "value count exceeds message");
  if (n > INT_MAX - 100 || !lua_checkstack(L, (int)n + 8))
    malformed(L, "too many values (%I)", (LUAI_UACINT)n);
  for (uint64_t i = 0; i < n; i++) decode_value(&D);

  /* globals section: name value ... "" */
  for (;;) {
    size_t nn;
    const char *name = farm__rd_str(&D.r, &nn);
    check(&D);
    if (nn == 0) break;
    if (lib_prefix(name, nn)) {          /* a library field: install(name, value), or dropped */
      if (d->install) lua_pushvalue(L, d->install);
      lua_pushlstring(L, name, nn);
      decode_value(&D);
      if (d->install) lua_call(L, 2, 0);
      else lua_pop(L, 2);
      continue;
    }
    push_env(&D);
    lua_pushlstring(L, name, nn);
    decode_value(&D);
    if (d->record) record_global(L, -1, name, nn);
    lua_rawset(L, -3);
    lua_pop(L, 1);
  }
  if (farm__rd_left(&D.r) != 0) malformed(L, "%I trailing bytes",
                                          (LUAI_UACINT)farm__rd_left(&D.r));
  lua_rotate(L, base + 1, (int)n);
  lua_settop(L, base + (int)n);
  return (int)n;
}

/* ------------------------------------------------------------------------
 * farm.core.pack / farm.core.unpack
 * ------------------------------------------------------------------------ */

#define BUF_META "farm.codec.buf"

static int buf_gc(lua_State *L) {
  farm__buf_free(luaL_checkudata(L, 1, BUF_META));
  return 0;
}

/* Field k of the options table at 1 (or nil), pushed; returns its stack index
   or 0 when absent. Raises when it is not of type t. */
static int opt_field(lua_State *L, int opts, const char *k, int t, const char *what) {
  if (opts && lua_getfield(L, opts, k) != LUA_TNIL) {
    if (lua_type(L, -1) != t) {
      const char *msg = lua_pushfstring(L, "option '%s' must be %s", k, what);
      luaL_argerror(L, opts, msg);
    }
    return lua_gettop(L);
  }
  if (opts) lua_pop(L, 1);
  return 0;
}

/* core.pack(opts, ...) -> string [, count]: one block of the values after
   opts, and with opts.keep how many tables and functions it numbers (prior
   ones included: the nprior of a block that continues it).
   opts: nil or {describe = f, names = t, globals = t, root = "argument",
   home = bool, keep = t, prior = t, nprior = n} (codec.h). */
static int l_pack(lua_State *L) {
  int n = lua_gettop(L) - 1;
  if (n < 0) n = 0;
  int opts = lua_isnoneornil(L, 1) ? 0 : 1;
  if (opts) luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checkstack(L, 8, NULL);
  farm_encoder e;
  memset(&e, 0, sizeof e);
  e.describe = opt_field(L, opts, "describe", LUA_TFUNCTION, "a function");
  e.names = opt_field(L, opts, "names", LUA_TTABLE, "a table");
  e.globals = opt_field(L, opts, "globals", LUA_TTABLE, "a table");
  int root = opt_field(L, opts, "root", LUA_TSTRING, "a string");
  e.root = root ? lua_tostring(L, root) : "argument";
  int home = opt_field(L, opts, "home", LUA_TBOOLEAN, "a boolean");
  e.home = home && lua_toboolean(L, home);
  e.keep = opt_field(L, opts, "keep", LUA_TTABLE, "a table");
  e.prior = opt_field(L, opts, "prior", LUA_TTABLE, "a table");
  int np = opt_field(L, opts, "nprior", LUA_TNUMBER, "a number");
  e.nprior = np ? lua_tointeger(L, np) : 0;
  if (e.nprior < 0) e.nprior = 0;

  farm_buf *b = lua_newuserdatauv(L, sizeof *b, 0);
  farm__buf_init(b);
  if (luaL_newmetatable(L, BUF_META)) {
    lua_pushcfunction(L, buf_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  lua_Integer nref = farm__codec_encode(L, b, 2, n, &e);
  lua_pushlstring(L, b->p ? b->p : "", b->n);
  farm__buf_free(b);
  if (!e.keep) return 1;
  lua_pushinteger(L, nref);
  return 2;
}

/* core.unpack(s [, opts]) -> values. opts: {env = t, resolve = f, cache = t, remember = f,
   install = f, chain = t, record = bool, untrusted = bool}. */
static int l_unpack(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  int opts = lua_isnoneornil(L, 2) ? 0 : 2;
  if (opts) luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  farm_decoder d;
  memset(&d, 0, sizeof d);
  d.env = opt_field(L, opts, "env", LUA_TTABLE, "a table");
  d.resolve = opt_field(L, opts, "resolve", LUA_TFUNCTION, "a function");
  d.cache = opt_field(L, opts, "cache", LUA_TTABLE, "a table");
  d.remember = opt_field(L, opts, "remember", LUA_TFUNCTION, "a function");
  d.install = opt_field(L, opts, "install", LUA_TFUNCTION, "a function");
  d.chain = opt_field(L, opts, "chain", LUA_TTABLE, "a table");
  int rec = opt_field(L, opts, "record", LUA_TBOOLEAN, "a boolean");
  d.record = rec && lua_toboolean(L, rec);
  int unt = opt_field(L, opts, "untrusted", LUA_TBOOLEAN, "a boolean");
  d.untrusted = unt && lua_toboolean(L, unt);
  return farm__codec_decode(L, s, len, &d);
}

/* core.is_env(v) -> true when v is an environment the decoder made (the _ENV of
   a function that arrived here), which counts as the global table when shipped on */
static int l_is_env(lua_State *L) {
  lua_pushboolean(L, is_decoded_env(L, 1));
  return 1;
}

static int open_package(lua_State *L) {
  luaL_requiref(L, LUA_LOADLIBNAME, luaopen_package, 0);
  lua_getfield(L, -1, "path");
  lua_getfield(L, -2, "cpath");
  return 2;
}

/* core.default_paths() -> path, cpath: the package.path and package.cpath a
   fresh Lua state of this process starts with (from LUA_PATH_5_4, LUA_PATH and
   the built-in default), which is what a local worker starts with too. */
static int l_default_paths(lua_State *L) {
  lua_State *F = luaL_newstate();
  if (!F) return luaL_error(L, "not enough memory");
  lua_pushcfunction(F, open_package);
  if (lua_pcall(F, 0, 2, 0) != LUA_OK || !lua_isstring(F, -2) || !lua_isstring(F, -1)) {
    lua_close(F);
    return luaL_error(L, "farm: cannot open a fresh package library");
  }
  lua_pushstring(L, lua_tostring(F, -2));
  lua_pushstring(L, lua_tostring(F, -1));
  lua_close(F);
  return 2;
}

void farm__open_codec(lua_State *L, int core) {
  static const luaL_Reg funcs[] = {
    {"pack", l_pack},
    {"unpack", l_unpack},
    {"is_env", l_is_env},
    {"default_paths", l_default_paths},
    {NULL, NULL}
  };
  lua_pushvalue(L, core);
  luaL_setfuncs(L, funcs, 0);
  lua_pop(L, 1);
}
