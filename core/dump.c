/*
 * dump.c -- what farm reads in a Lua function's bytecode (lua_dump).
 *
 * farm ships jobs as source text, and needs two facts about a compiled function
 * that the debug library does not give:
 *
 *   core.fnsig(f [, full])  a signature of f's code: its lua_dump with the
 *       top-level upvalue descriptors (instack, idx, kind) zeroed, so the same
 *       function text compiled in another enclosing scope compares equal. Without
 *       `full` it is the stripped dump (the contract's signature). With `full` the
 *       debug information stays in (local and upvalue names, line info) and the
 *       top-level source name is dropped: lua/ship.lua compares these, so that a
 *       candidate text which differs only in names (`return a, b` where f has
 *       `return b, a`) is not taken for f.
 *   core.globals(f)  the distinct names f, or any function nested in it, reads or
 *       writes through f's own _ENV upvalue, in order of first appearance.
 *   core.upkinds(f)  the kind of each of f's upvalues, in order: 0 a plain
 *       variable, 1 a <const> one (not a compile-time constant), 2 a <close> one.
 *       fnsig masks them at the top level only: a function nested in f copies
 *       them into its own descriptors, so the text farm ships must declare f's
 *       upvalues with the same attributes.
 *   core.probe(chunk, marker)  the compile-time constants (<const> locals the
 *       compiler folds away) that probe functions read: lua/ship.lua compiles,
 *       never runs, a chunk in which one function holds the string constant
 *       `marker` and nests probes `function() return NAME end`; for the j-th
 *       probe, isconst[j] says whether NAME is such a constant there (the probe
 *       then reads no variable: it has no upvalue) and values[j] is its value.
 *       Returns values, isconst; or nil when no function holds the marker.
 *   core.protoid(f)  the identity of f's prototype, as a light userdata: every
 *       closure one `function` expression makes has the same one, and no two
 *       prototypes alive at once share it (lua/ship.lua and lua/farm.lua key
 *       their caches of a function's description and package on it, so that a
 *       function written in the call costs what a named one does). nil for a C
 *       function, and always nil unless the layout check below passed. The
 *       prototype is not in Lua's public API: it is read where lobject.h of
 *       5.4 puts it (LClosure.p), and only after its first call checked, on
 *       closures made for the purpose, that the bytes there are what that
 *       layout says (the tags, the upvalue count, the lines and parameters
 *       lua_getinfo gives, one prototype for two closures of one expression,
 *       another for another); each call checks the tags again. An id names a
 *       prototype only while a closure of it is alive: whoever keeps one keeps
 *       that closure too (weakly, dropping the id with it).
 *
 * Both parse the Lua 5.4 binary chunk format (ldump.c / lundump.c of 5.4.4)
 * here, with every read bounds-checked: the bytes come from lua_dump in this very
 * process, but a parser that trusts its input is a bug waiting for a Lua update.
 * A dump in another format raises an error rather than being misread.
 *
 * Threads: the thread of the lua_State (the client's caller, a worker's Lua
 * thread).
 */
#include <string.h>
#include <lua.h>
#include <lauxlib.h>
#include "luafuncs.h"

/* ---- the binary chunk format (Lua 5.4) ---- */

#define DUMP_SIGNATURE  "\x1bLua"
#define DUMP_VERSION    0x54
#define DUMP_FORMAT     0
#define DUMP_DATA       "\x19\x93\r\n\x1a\n"
#define DUMP_INT        0x5678
#define DUMP_NUM        370.5
#define DUMP_MAXDEPTH   250      /* the parser nests at most LUAI_MAXCCALLS (200) */

/* constant tags (ttypetag in lobject.h) */
#define K_NIL     0x00
#define K_FALSE   0x01
#define K_TRUE    0x11
#define K_INT     0x03
#define K_FLT     0x13
#define K_SHRSTR  0x04
#define K_LNGSTR  0x14

/* the opcodes this file looks at (lopcodes.h, Lua 5.4.4, ORDER OP) */
enum {
  OP_LOADI = 1, OP_LOADF = 2, OP_LOADK = 3, OP_LOADKX = 4, OP_LOADFALSE = 5,
  OP_LOADTRUE = 7, OP_LOADNIL = 8, OP_GETUPVAL = 9,
  OP_GETTABUP = 11, OP_GETTABLE = 12, OP_GETFIELD = 14, OP_SETTABUP = 15,
  OP_SETTABLE = 16, OP_SETFIELD = 18, OP_CALL = 68, OP_TFORCALL = 76,
  OP_VARARG = 80, OP_EXTRAARG = 82
};
#define INS_OP(i)  ((int)((i) & 0x7F))
#define INS_A(i)   ((int)(((i) >> 7) & 0xFF))
#define INS_B(i)   ((int)(((i) >> 16) & 0xFF))
#define INS_C(i)   ((int)(((i) >> 24) & 0xFF))
#define INS_BX(i)  ((size_t)((i) >> 15))
#define INS_AX(i)  ((size_t)((i) >> 7))
#define INS_SBX(i) ((lua_Integer)INS_BX(i) - 65535)   /* OFFSET_sBx: MAXARG_Bx >> 1 */

/* A cursor over a dump. Every read goes through rd_need. */
typedef struct Reader {
  lua_State *L;
  const unsigned char *p;
  size_t n, pos;
} Reader;

/* Where the parts of one function sit in the dump (offsets into it). */
typedef struct Proto {
  size_t src, srcend;        /* the source string, size prefix included */
  size_t code;  size_t ncode;
  size_t k;     size_t nk;
  size_t upv;   size_t nupv; /* 3 bytes each: instack, idx, kind */
  size_t protos; size_t nprotos;
  size_t debug, end;
} Proto;

static void rd_fail(Reader *r, const char *what) {
  luaL_error(r->L, "farm: unreadable function dump (%s at byte %d of %d)",
             what, (int)r->pos, (int)r->n);
}

static void rd_need(Reader *r, size_t k) {
  if (k > r->n - r->pos) rd_fail(r, "truncated");
}

static unsigned rd_byte(Reader *r) {
  rd_need(r, 1);
  return r->p[r->pos++];
}

static void rd_skip(Reader *r, size_t k) {
  rd_need(r, k);
  r->pos += k;
}

/* dumpSize: 7-bit groups, most significant first, the last with 0x80 set. */
static size_t rd_size(Reader *r) {
  size_t x = 0;
  unsigned b;
  do {
    if (x > ((size_t)-1 >> 7)) rd_fail(r, "size overflow");
    b = rd_byte(r);
    x = (x << 7) | (b & 0x7F);
  } while (!(b & 0x80));
  return x;
}

/* A count of items at least `each` bytes long: no larger than the bytes left. */
static size_t rd_count(Reader *r, size_t each) {
  size_t k = rd_size(r);
  if (each && k > (r->n - r->pos) / each) rd_fail(r, "count too large");
  return k;
}

/* dumpString: size 0 is NULL (returns 0), else size-1 bytes follow. */
static int rd_string(Reader *r, size_t *off, size_t *len) {
  size_t size = rd_size(r);
  if (size == 0) return 0;
  rd_need(r, size - 1);
  *off = r->pos;
  *len = size - 1;
  r->pos += size - 1;
  return 1;
}

static void rd_header(Reader *r) {
  lua_Integer i;
  lua_Number x;
  rd_need(r, 4 + 2 + 6 + 3);
  if (memcmp(r->p, DUMP_SIGNATURE, 4) != 0) rd_fail(r, "not a binary chunk");
  r->pos = 4;
  if (rd_byte(r) != DUMP_VERSION) rd_fail(r, "not Lua 5.4");
  if (rd_byte(r) != DUMP_FORMAT) rd_fail(r, "unknown format");
  if (memcmp(r->p + r->pos, DUMP_DATA, 6) != 0) rd_fail(r, "corrupted header");
  r->pos += 6;
  if (rd_byte(r) != 4 || rd_byte(r) != sizeof(lua_Integer) ||
      rd_byte(r) != sizeof(lua_Number))
    rd_fail(r, "unexpected type sizes");
  rd_need(r, sizeof i + sizeof x);
  memcpy(&i, r->p + r->pos, sizeof i);
  r->pos += sizeof i;
  memcpy(&x, r->p + r->pos, sizeof x);
  r->pos += sizeof x;
  if (i != DUMP_INT || x != DUMP_NUM) rd_fail(r, "unexpected number format");
  rd_byte(r);  /* sizeupvalues of the main closure */
}

static void skip_constants(Reader *r, size_t nk) {
  size_t off, len;
  for (size_t j = 0; j < nk; j++) {
    switch (rd_byte(r)) {
      case K_NIL: case K_FALSE: case K_TRUE: break;
      case K_INT: case K_FLT: rd_skip(r, 8); break;
      case K_SHRSTR: case K_LNGSTR: rd_string(r, &off, &len); break;
      default: rd_fail(r, "unknown constant tag");
    }
  }
}

static void skip_debug(Reader *r) {
  size_t k, off, len;
  k = rd_count(r, 1);                                   /* lineinfo */
  rd_skip(r, k);
  k = rd_count(r, 2);                                   /* abslineinfo */
  for (size_t j = 0; j < k; j++) { rd_size(r); rd_size(r); }
  k = rd_count(r, 3);                                   /* locvars */
  for (size_t j = 0; j < k; j++) { rd_string(r, &off, &len); rd_size(r); rd_size(r); }
  k = rd_count(r, 1);                                   /* upvalue names */
  for (size_t j = 0; j < k; j++) rd_string(r, &off, &len);
}

/*
 * Reads the function starting at r->pos into *P (nested functions are skipped
 * over, not recorded) and leaves r->pos after it.
 */
static void scan_proto(Reader *r, Proto *P, int depth) {
  size_t off, len;
  if (depth > DUMP_MAXDEPTH) rd_fail(r, "functions nested too deep");
  P->src = r->pos;
  rd_string(r, &off, &len);
  P->srcend = r->pos;
  rd_size(r);                         /* linedefined */
  rd_size(r);                         /* lastlinedefined */
  rd_skip(r, 3);                      /* numparams, is_vararg, maxstacksize */
  P->ncode = rd_count(r, 4);
  P->code = r->pos;
  rd_skip(r, P->ncode * 4);
  P->nk = rd_count(r, 1);
  P->k = r->pos;
  skip_constants(r, P->nk);
  P->nupv = rd_count(r, 3);
  P->upv = r->pos;
  rd_skip(r, P->nupv * 3);
  P->nprotos = rd_count(r, 1);
  P->protos = r->pos;
  for (size_t j = 0; j < P->nprotos; j++) {
    Proto child;
    scan_proto(r, &child, depth + 1);
  }
  P->debug = r->pos;
  skip_debug(r);
  P->end = r->pos;
}

/* ---- dumping ---- */

typedef struct DumpBuf { int init; luaL_Buffer b; } DumpBuf;

static int dump_writer(lua_State *L, const void *p, size_t n, void *ud) {
  DumpBuf *d = (DumpBuf *)ud;
  if (!d->init) { d->init = 1; luaL_buffinit(L, &d->b); }
  luaL_addlstring(&d->b, (const char *)p, n);
  return 0;
}

/*
 * Pushes the dump of the Lua function at index 1 (the stack is cut to it) and
 * points a reader at it.
 */
static void dump_function(lua_State *L, int strip, Reader *r) {
  DumpBuf d;
  luaL_checktype(L, 1, LUA_TFUNCTION);
  luaL_argcheck(L, !lua_iscfunction(L, 1), 1, "Lua function expected, got C function");
  lua_settop(L, 1);
  d.init = 0;
  if (lua_dump(L, dump_writer, &d, strip) != 0 || !d.init)
    luaL_error(L, "farm: unable to dump function");
  luaL_pushresult(&d.b);
  r->L = L;
  r->p = (const unsigned char *)lua_tolstring(L, -1, &r->n);
  r->pos = 0;
}

/* core.fnsig(f [, full]) -> string */
static int l_fnsig(lua_State *L) {
  int full = lua_toboolean(L, 2);
  Reader r;
  Proto P;
  luaL_Buffer b;
  dump_function(L, !full, &r);
  rd_header(&r);
  scan_proto(&r, &P, 0);
  /* copy with the top-level source replaced by NULL (one byte, size 0) */
  size_t cut = P.srcend - P.src - 1;
  char *out = luaL_buffinitsize(L, &b, r.n - cut);
  memcpy(out, r.p, P.src);
  out[P.src] = (char)0x80;
  memcpy(out + P.src + 1, r.p + P.srcend, r.n - P.srcend);
  memset(out + P.upv - cut, 0, P.nupv * 3);
  luaL_pushresultsize(&b, r.n - cut);
  return 1;
}

/* ---- globals ---- */

/* The names found so far: a set (stack index `set`) and an array (`arr`). */
typedef struct Names { int set, arr; lua_Integer n; } Names;

static void add_name(lua_State *L, Names *N, const unsigned char *s, size_t len) {
  lua_pushlstring(L, (const char *)s, len);
  if (lua_rawget(L, N->set) == LUA_TNIL) {
    lua_pushlstring(L, (const char *)s, len);
    lua_pushboolean(L, 1);
    lua_rawset(L, N->set);
    lua_pushlstring(L, (const char *)s, len);
    lua_rawseti(L, N->arr, ++N->n);
  }
  lua_pop(L, 1);
}

/* A string constant: offset and length in the dump; len (size_t)-1 if none. */
typedef struct KStr { size_t off, len; } KStr;

static void read_kstrings(Reader *r, const Proto *P, KStr *ks) {
  r->pos = P->k;
  for (size_t j = 0; j < P->nk; j++) {
    unsigned tag = rd_byte(r);
    ks[j].len = (size_t)-1;
    switch (tag) {
      case K_NIL: case K_FALSE: case K_TRUE: break;
      case K_INT: case K_FLT: rd_skip(r, 8); break;
      case K_SHRSTR: case K_LNGSTR:
        if (!rd_string(r, &ks[j].off, &ks[j].len)) ks[j].len = (size_t)-1;
        break;
      default: rd_fail(r, "unknown constant tag");
    }
  }
}

static void add_kname(Reader *r, Names *N, const KStr *ks, size_t nk, size_t j) {
  if (j < nk && ks[j].len != (size_t)-1) add_name(r->L, N, r->p + ks[j].off, ks[j].len);
}

static unsigned ins_at(const Reader *r, const Proto *P, size_t pc) {
  const unsigned char *q = r->p + P->code + 4 * pc;
  unsigned i;
  memcpy(&i, q, 4);   /* same machine that dumped it: native byte order */
  return i;
}

/*
 * Scans P's code for accesses through an upvalue marked in env[].
 * GETTABUP/SETTABUP are the common case. A global whose name is long (over 40
 * bytes) or whose constant index is over 255 is reached another way: the
 * compiler loads _ENV into a register (GETUPVAL) and indexes it with a
 * register key (LOADK + GETTABLE/SETTABLE). A light register tracking catches
 * that: it follows which registers hold _ENV and which a string constant, and
 * forgets a register once an instruction writes it. It ignores control flow,
 * so it can only err by reporting a name too many, never by missing one on a
 * straight path.
 */
static void scan_code(Reader *r, const Proto *P, const unsigned char *env,
                      const KStr *ks, Names *N) {
  unsigned char isenv[256];
  size_t regk[256];
  const size_t none = (size_t)-1;
  memset(isenv, 0, sizeof isenv);
  for (int j = 0; j < 256; j++) regk[j] = none;
  for (size_t pc = 0; pc < P->ncode; pc++) {
    unsigned i = ins_at(r, P, pc);
    int op = INS_OP(i), a = INS_A(i), b = INS_B(i), c = INS_C(i);
    switch (op) {
      case OP_GETTABUP:
        if (env[b]) add_kname(r, N, ks, P->nk, (size_t)c);
        break;
      case OP_SETTABUP:
        if (env[a]) add_kname(r, N, ks, P->nk, (size_t)b);
        break;
      case OP_GETTABLE:
        if (isenv[b] && regk[c] != none) add_kname(r, N, ks, P->nk, regk[c]);
        break;
      case OP_GETFIELD:
        if (isenv[b]) add_kname(r, N, ks, P->nk, (size_t)c);
        break;
      case OP_SETTABLE:
        if (isenv[a] && regk[b] != none) add_kname(r, N, ks, P->nk, regk[b]);
        break;
      case OP_SETFIELD:
        if (isenv[a]) add_kname(r, N, ks, P->nk, (size_t)b);
        break;
      default: break;
    }
    /* what register A holds now */
    if (op == OP_CALL || op == OP_TFORCALL || op == OP_VARARG || op == OP_LOADNIL) {
      memset(isenv + a, 0, (size_t)(256 - a));
      for (int j = a; j < 256; j++) regk[j] = none;
    }
    isenv[a] = 0;
    regk[a] = none;
    if (op == OP_GETUPVAL) isenv[a] = env[b];
    else if (op == OP_LOADK) regk[a] = INS_BX(i);
    else if (op == OP_LOADKX && pc + 1 < P->ncode &&
             INS_OP(ins_at(r, P, pc + 1)) == OP_EXTRAARG)
      regk[a] = INS_AX(ins_at(r, P, pc + 1));
  }
}

/*
 * Collects the globals of the function at `start` and of every function nested
 * in it; returns the offset after it. At depth 0, `outer` already marks the
 * function's own _ENV upvalue; deeper, it marks the parent's, and a child's
 * upvalue is the same _ENV when it is the parent's upvalue (instack 0) of that
 * index. A child upvalue on a parent's local (`local _ENV = {}`) is not.
 */
static size_t globals_in(Reader *r, size_t start, const unsigned char *outer,
                         int depth, Names *N) {
  lua_State *L = r->L;
  Proto P;
  unsigned char env[256];
  r->pos = start;
  scan_proto(r, &P, depth);
  if (depth == 0) memcpy(env, outer, sizeof env);
  else {
    memset(env, 0, sizeof env);
    for (size_t j = 0; j < P.nupv && j < 256; j++) {
      const unsigned char *d = r->p + P.upv + 3 * j;
      env[j] = (unsigned char)(d[0] == 0 && outer[d[1]]);
    }
  }
  luaL_checkstack(L, 4, "globals");
  KStr *ks = (KStr *)lua_newuserdatauv(L, P.nk * sizeof(KStr) + 1, 0);
  read_kstrings(r, &P, ks);
  scan_code(r, &P, env, ks, N);
  lua_pop(L, 1);
  size_t pos = P.protos;
  for (size_t j = 0; j < P.nprotos; j++)
    pos = globals_in(r, pos, env, depth + 1, N);
  return P.end;
}

/* Marks the top-level upvalues named "_ENV", from the debug section. */
static void top_env(Reader *r, const Proto *P, unsigned char *env) {
  size_t k, off, len;
  memset(env, 0, 256);
  r->pos = P->debug;
  k = rd_count(r, 1);
  rd_skip(r, k);
  k = rd_count(r, 2);
  for (size_t j = 0; j < k; j++) { rd_size(r); rd_size(r); }
  k = rd_count(r, 3);
  for (size_t j = 0; j < k; j++) { rd_string(r, &off, &len); rd_size(r); rd_size(r); }
  k = rd_count(r, 1);
  for (size_t j = 0; j < k; j++) {
    if (rd_string(r, &off, &len) && j < 256 && len == 4 &&
        memcmp(r->p + off, "_ENV", 4) == 0)
      env[j] = 1;
  }
}

/* core.globals(f) -> { name, ... } */
static int l_globals(lua_State *L) {
  Reader r;
  Proto P;
  Names N;
  unsigned char env[256];
  dump_function(L, 0, &r);
  rd_header(&r);
  size_t start = r.pos;
  scan_proto(&r, &P, 0);
  top_env(&r, &P, env);
  lua_newtable(L);
  N.set = lua_gettop(L);
  lua_newtable(L);
  N.arr = lua_gettop(L);
  N.n = 0;
  globals_in(&r, start, env, 0, &N);
  return 1;
}

/* ---- upvalue kinds ---- */

/* core.upkinds(f) -> { kind, ... } */
static int l_upkinds(lua_State *L) {
  Reader r;
  Proto P;
  dump_function(L, 1, &r);
  rd_header(&r);
  scan_proto(&r, &P, 0);
  lua_createtable(L, (int)(P.nupv < 256 ? P.nupv : 256), 0);
  for (size_t j = 0; j < P.nupv; j++) {
    lua_pushinteger(L, r.p[P.upv + 3 * j + 2]);
    lua_rawseti(L, -2, (lua_Integer)j + 1);
  }
  return 1;
}

/* ---- compile-time constants ---- */

/* Pushes constant j of P; 0 (nothing pushed) if there is none such. */
static int push_constant(Reader *r, const Proto *P, size_t j) {
  size_t off, len;
  if (j >= P->nk) return 0;
  r->pos = P->k;
  skip_constants(r, j);
  switch (rd_byte(r)) {
    case K_NIL: lua_pushnil(r->L); return 1;
    case K_FALSE: lua_pushboolean(r->L, 0); return 1;
    case K_TRUE: lua_pushboolean(r->L, 1); return 1;
    case K_INT: {
      lua_Integer i;
      rd_need(r, sizeof i);
      memcpy(&i, r->p + r->pos, sizeof i);
      lua_pushinteger(r->L, i);
      return 1;
    }
    case K_FLT: {
      lua_Number x;
      rd_need(r, sizeof x);
      memcpy(&x, r->p + r->pos, sizeof x);
      lua_pushnumber(r->L, x);
      return 1;
    }
    case K_SHRSTR: case K_LNGSTR:
      if (!rd_string(r, &off, &len)) return 0;
      lua_pushlstring(r->L, (const char *)r->p + off, len);
      return 1;
    default: return 0;
  }
}

/*
 * A probe `function() return NAME end` with no upvalue starts by loading the
 * constant into a register: LOADI, LOADF, LOADK (LOADKX), LOADFALSE, LOADTRUE
 * or LOADNIL. Pushes the value; 0 (nothing pushed) for any other code.
 */
static int probe_value(Reader *r, const Proto *P) {
  if (P->nupv != 0 || P->ncode < 2) return 0;
  unsigned i = ins_at(r, P, 0);
  switch (INS_OP(i)) {
    case OP_LOADI: lua_pushinteger(r->L, INS_SBX(i)); return 1;
    case OP_LOADF: lua_pushnumber(r->L, (lua_Number)INS_SBX(i)); return 1;
    case OP_LOADK: return push_constant(r, P, INS_BX(i));
    case OP_LOADKX: {
      unsigned x = ins_at(r, P, 1);
      if (INS_OP(x) != OP_EXTRAARG) return 0;
      return push_constant(r, P, INS_AX(x));
    }
    case OP_LOADFALSE: lua_pushboolean(r->L, 0); return 1;
    case OP_LOADTRUE: lua_pushboolean(r->L, 1); return 1;
    case OP_LOADNIL: if (INS_B(i) != 0) return 0; lua_pushnil(r->L); return 1;
    default: return 0;
  }
}

/* Does P have the string constant m[0..mlen)? */
static int has_string(Reader *r, const Proto *P, const char *m, size_t mlen) {
  size_t off, len;
  r->pos = P->k;
  for (size_t j = 0; j < P->nk; j++) {
    switch (rd_byte(r)) {
      case K_NIL: case K_FALSE: case K_TRUE: break;
      case K_INT: case K_FLT: rd_skip(r, 8); break;
      case K_SHRSTR: case K_LNGSTR:
        if (rd_string(r, &off, &len) && len == mlen && memcmp(r->p + off, m, len) == 0)
          return 1;
        break;
      default: rd_fail(r, "unknown constant tag");
    }
  }
  return 0;
}

/* Finds the function at `start`, or nested in it, that holds the marker. */
static int find_marked(Reader *r, size_t start, int depth, const char *m, size_t mlen,
                       Proto *out) {
  Proto P;
  r->pos = start;
  scan_proto(r, &P, depth);
  if (has_string(r, &P, m, mlen)) { *out = P; return 1; }
  size_t pos = P.protos;
  for (size_t j = 0; j < P.nprotos; j++) {
    Proto C;
    if (find_marked(r, pos, depth + 1, m, mlen, out)) return 1;
    r->pos = pos;
    scan_proto(r, &C, depth + 1);
    pos = C.end;
  }
  return 0;
}

/* core.probe(chunk, marker) -> values, isconst | nil */
static int l_probe(lua_State *L) {
  char marker[128];
  size_t mlen;
  const char *m = luaL_checklstring(L, 2, &mlen);
  luaL_argcheck(L, mlen <= sizeof marker, 2, "marker too long");
  memcpy(marker, m, mlen);
  Reader r;
  Proto P, C;
  dump_function(L, 1, &r);     /* the stack is now: chunk, dump */
  rd_header(&r);
  if (!find_marked(&r, r.pos, 0, marker, mlen, &P)) {
    lua_pushnil(L);
    return 1;
  }
  luaL_checkstack(L, 4, "probe");
  lua_createtable(L, (int)(P.nprotos < 256 ? P.nprotos : 256), 0);   /* values */
  lua_createtable(L, (int)(P.nprotos < 256 ? P.nprotos : 256), 0);   /* isconst */
  size_t pos = P.protos;
  for (size_t j = 0; j < P.nprotos; j++) {
    r.pos = pos;
    scan_proto(&r, &C, 1);
    pos = C.end;
    int ok = probe_value(&r, &C);
    if (ok) lua_rawseti(L, -3, (lua_Integer)j + 1);
    lua_pushboolean(L, ok);
    lua_rawseti(L, -2, (lua_Integer)j + 1);
  }
  return 2;
}

/* ---- a closure's prototype ---- */

/* Lua 5.4's LClosure and Proto, their first fields as lobject.h lays them out
   (CommonHeader: next, tt, marked). */
typedef struct LClosure54 {
  void *next;
  unsigned char tt, marked, nupvalues;
  void *gclist;
  const void *p;
} LClosure54;
typedef struct Proto54 {
  void *next;
  unsigned char tt, marked, numparams, is_vararg, maxstacksize;
  int sizeupvalues, sizek, sizecode, sizelineinfo, sizep, sizelocvars, sizeabslineinfo;
  int linedefined, lastlinedefined;
} Proto54;
#define VLCL 6       /* LUA_VLCL: makevariant(LUA_TFUNCTION, 0) */
#define VPROTO 10    /* LUA_VPROTO: makevariant(LUA_NUMTYPES + 1, 0) */

/* The prototype of the Lua function at idx, or NULL (a C function, or tags
   that are not what they must be). */
static const Proto54 *proto_of(lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TFUNCTION || lua_iscfunction(L, idx)) return NULL;
  const LClosure54 *cl = lua_topointer(L, idx);
  if (!cl || cl->tt != VLCL || !cl->p) return NULL;
  const Proto54 *p = cl->p;
  return p->tt == VPROTO ? p : NULL;
}

/* Does the Lua function at idx have the prototype proto_of reads, by all that
   lua_getinfo says of it? */
static int proto_agrees(lua_State *L, int idx) {
  const Proto54 *p = proto_of(L, idx);
  lua_Debug ar;
  lua_pushvalue(L, idx);
  if (!p || !lua_getinfo(L, ">Su", &ar)) return 0;
  const LClosure54 *cl = lua_topointer(L, idx);
  return cl->nupvalues == ar.nups && p->sizeupvalues == ar.nups
         && p->numparams == ar.nparams && p->is_vararg == ar.isvararg
         && p->linedefined == ar.linedefined && p->lastlinedefined == ar.lastlinedefined;
}

/* The layout check: closures made for it (two of one expression, with an
   upvalue, and one of another) must agree with lua_getinfo, and share their
   prototype exactly when they share their expression. */
static int proto_layout_ok(lua_State *L) {
  static const char probe[] =
    "local u = ...\n"
    "local function mk(k)\n"
    "  return function(a, b, c)\n"
    "    return u, a, b, c, k\n"
    "  end\n"
    "end\n"
    "return mk(1), mk(2), function(...) return u end\n";
  int top = lua_gettop(L), ok = 0;
  if (luaL_loadbufferx(L, probe, sizeof probe - 1, "=farm.protoid", "t") == LUA_OK) {
    lua_pushinteger(L, 7);
    if (lua_pcall(L, 1, 3, 0) == LUA_OK) {
      int a = top + 1, b = top + 2, c = top + 3;
      ok = proto_agrees(L, a) && proto_agrees(L, b) && proto_agrees(L, c)
           && proto_of(L, a) == proto_of(L, b) && proto_of(L, a) != proto_of(L, c)
           && proto_of(L, a)->linedefined == 3 && proto_of(L, c)->linedefined == 7
           && proto_of(L, a)->numparams == 3 && proto_of(L, c)->is_vararg == 1;
    }
  }
  lua_settop(L, top);
  return ok;
}

/* Upvalue 1: nil until the first call ran the layout check, then its verdict
   (lazily: a worker that is never given a function to key on, and every state's
   start, do without it). The check runs without the caller's hook (a job's
   count hook, debug.sethook's), as it did when the state opened. */
static int l_protoid(lua_State *L) {
  if (lua_isnil(L, lua_upvalueindex(1))) {
    lua_Hook hook = lua_gethook(L);
    int mask = lua_gethookmask(L), count = lua_gethookcount(L);
    lua_sethook(L, NULL, 0, 0);
    lua_pushboolean(L, proto_layout_ok(L));
    lua_sethook(L, hook, mask, count);
    lua_replace(L, lua_upvalueindex(1));
  }
  const Proto54 *p = lua_toboolean(L, lua_upvalueindex(1)) ? proto_of(L, 1) : NULL;
  if (p) lua_pushlightuserdata(L, (void *)p); else lua_pushnil(L);
  return 1;
}

static const luaL_Reg dump_funcs[] = {
  {"fnsig", l_fnsig},
  {"globals", l_globals},
  {"upkinds", l_upkinds},
  {"probe", l_probe},
  {NULL, NULL}
};

void farm__open_dump(lua_State *L, int core) {
  core = lua_absindex(L, core);
  for (const luaL_Reg *f = dump_funcs; f->name; f++) {
    lua_pushcfunction(L, f->func);
    lua_setfield(L, core, f->name);
  }
  lua_pushnil(L);                        /* the layout check: at the first call */
  lua_pushcclosure(L, l_protoid, 1);
  lua_setfield(L, core, "protoid");
}
