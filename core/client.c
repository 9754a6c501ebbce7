/*
 * client.c -- the client side as Lua sees it: farm.core's pool objects,
 * function packages and futures, over the engine in engine.c.
 *
 * All of this runs on the caller's thread: it encodes arguments, decodes
 * results and hands jobs to the engine, whose own thread does the rest.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sodium.h>
#include <lua.h>
#include <lauxlib.h>
#include "farm.h"
#include "clock.h"
#include "codec.h"
#include "engine.h"
#include "hosts.h"
#include "journal.h"
#include "join.h"
#include "session.h"
#include "status.h"
#include "luafuncs.h"
#include "exec.h"
#include "worker.h"

#define CTX_MT   "farm.ctx"
#define FN_MT    "farm.fn"
#define JOB_MT   "farm.job"
#define GUARD_MT "farm.encguard"
#define BOX_MT   "farm.encbox"

typedef struct ctx {
  farm_engine *e;                  /* a client's pool, or */
  farm_status_srv *status;             /* ...its status page (status.h), stopped before e closes */
  farm_join *jn;                   /* ...with the nodes that join it (listen, discover; join.h) */
  worker *w;                       /* ...a job's own farm calls, through its worker */
  farm_buf enc;                    /* scratch for encoding, while not busy */
  int enc_busy;                    /* a submit is encoding (a finalizer may submit meanwhile) */
  /* The script's own jobs (farm.submit, submit_with, exec; not map's chunks),
     each with a reference, while they may yet fail unread: farm run's end says
     how many failed with their error never read (core.unread). Swept at
     submits, when it has doubled: jobs over that did not fail, or whose error
     was read, leave it; so it holds the jobs out plus the failures unread. */
  farm_job **watched;
  size_t nwatched, capwatched, sweep_at;
  /* Its futures keep it alive: while it has any (nfutures), the registry holds
     it (ref); a future holds only a pointer to it (job_ud). */
  size_t nfutures;
  int ref;
} ctx;

typedef struct {
  farm_fn *fn;
  lua_Integer nseen;   /* a fresh function's block: how many values it numbers (its
                          user value keeps them, value -> number: the argument
                          blocks of its jobs continue that numbering, codec.h) */
} fn_ud;
typedef struct { farm_job *job; ctx *c; } job_ud;   /* a future: no user value (16 bytes less each) */
typedef struct { ctx *c; } guard_ud;
typedef struct { farm_buf b; } box_ud;

/* Raise a message as it is: luaL_error would put farm.lua's line in front. */
static int fail_lua(lua_State *L, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  return lua_error(L);
}

static ctx *check_ctx(lua_State *L, int i) {
  ctx *c = luaL_checkudata(L, i, CTX_MT);
  if (!c->e && !c->w) fail_lua(L, "farm: the pool is closed");
  return c;
}

static farm_job *check_job(lua_State *L, int i) {
  farm_job *j = ((job_ud *)luaL_checkudata(L, i, JOB_MT))->job;
  if (!j) fail_lua(L, "farm: this future was already collected");   /* resurrected by a __gc */
  return j;
}

/* The pool a future belongs to (kept alive by the registry while it has futures). */
static ctx *job_ctx(lua_State *L, int i) {
  job_ud *u = luaL_checkudata(L, i, JOB_MT);
  if (!u->c) fail_lua(L, "farm: this future was already collected");   /* resurrected by a __gc */
  return u->c;
}

/* Its engine; NULL when it is closed, or a job's future on a worker. */
static farm_engine *job_engine(lua_State *L, int i) { return job_ctx(L, i)->e; }

/* core.worker_ctx() -> the pool a job's own farm calls go to (on a worker) */
static const char wctx_key = 0;
static int l_worker_ctx(lua_State *L) {
  worker *w = farm__worker_of(L);
  if (!w) return fail_lua(L, "farm: not on a worker");
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &wctx_key) == LUA_TUSERDATA) return 1;
  lua_pop(L, 1);
  ctx *c = lua_newuserdatauv(L, sizeof *c, 1);
  memset(c, 0, sizeof *c);
  farm__buf_init(&c->enc);
  c->w = w;
  luaL_setmetatable(L, CTX_MT);
  guard_ud *g = lua_newuserdatauv(L, sizeof *g, 0);
  g->c = c;
  luaL_setmetatable(L, GUARD_MT);
  lua_setiuservalue(L, -2, 1);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &wctx_key);
  return 1;
}

/* The status page's figures (on its server's thread; the server stops
   before the engine closes). */
static void status_fill(void *arg, farm_status_snap *s) {
  farm__engine_status_snap(arg, s);
  char host[64] = "";
  gethostname(host, sizeof host - 1);
  snprintf(s->kind, sizeof s->kind, "run");
  snprintf(s->name, sizeof s->name, "%s pid %ld", host, (long)getpid());
}

/* A node announced itself (join.h; on the join thread): the pool dials it. */
static int join_add(void *arg, const char *ip, unsigned port, char *err, size_t errlen) {
  farm_host h;
  memset(&h, 0, sizeof h);
  h.kind = FARM_HOST_NODE;
  snprintf(h.host, sizeof h.host, "%s", ip);
  h.port = (int)port;
  h.port_given = 1;
  snprintf(h.origin, sizeof h.origin, "announced itself");
  return farm__engine_add_hosts(arg, &h, 1, err, errlen);
}

static void join_clear(void *arg) { farm__engine_term_clear(arg); }

/* core.new{workers=, exe=, echo=, max_message=, progress=} -> ctx */
static int l_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  farm_engine_opts o;
  memset(&o, 0, sizeof o);
  lua_getfield(L, 1, "workers");
  o.workers = (int)luaL_optinteger(L, -1, 0);
  lua_getfield(L, 1, "exe");
  o.exe = luaL_optstring(L, -1, NULL);
  lua_getfield(L, 1, "echo");
  o.echo = lua_toboolean(L, -1);
  lua_getfield(L, 1, "max_message");
  lua_Integer maxmsg = luaL_optinteger(L, -1, 0);
  lua_getfield(L, 1, "progress");
  o.progress = lua_toboolean(L, -1);
  if (o.workers < 0 || o.workers > 256)
    return fail_lua(L, "farm: workers must be between 1 and 256 (got %d)", o.workers);
  o.maxmsg = maxmsg > 0 ? (size_t)maxmsg : 0;
  lua_getfield(L, 1, "local_workers");
  o.no_local = lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1);
  lua_getfield(L, 1, "accept_new_hosts");
  o.accept_new_hosts = lua_toboolean(L, -1);
  lua_getfield(L, 1, "remote_farm");
  o.remote_farm = luaL_optstring(L, -1, NULL);
  lua_getfield(L, 1, "heartbeat");
  o.heartbeat = luaL_optnumber(L, -1, 0);
  lua_getfield(L, 1, "slurm_wait");
  o.slurm_wait = luaL_optnumber(L, -1, 0);
  lua_getfield(L, 1, "dest");
  o.dest = luaL_optstring(L, -1, NULL);
  lua_getfield(L, 1, "max_file");
  lua_Integer maxfile = luaL_optinteger(L, -1, 0);
  o.max_file = maxfile > 0 ? (size_t)maxfile : 0;
  lua_getfield(L, 1, "journal");
  o.journal = luaL_optstring(L, -1, NULL);
  lua_getfield(L, 1, "journal_id");        /* farm run names the script (cli.c); else none */
  size_t nid = 0;
  const char *jid = luaL_optlstring(L, -1, NULL, &nid);
  static const unsigned char no_id[FARM_JOURNAL_IDLEN];
  o.journal_id = jid && nid == FARM_JOURNAL_IDLEN ? (const unsigned char *)jid : no_id;
  lua_getfield(L, 1, "nodes");
  const char *nodes = luaL_optstring(L, -1, NULL);
  lua_getfield(L, 1, "hosts");
  const char *hosts = luaL_optstring(L, -1, NULL);
  lua_getfield(L, 1, "key_file");
  const char *keyfile = luaL_optstring(L, -1, NULL);
  if (!keyfile || !*keyfile) keyfile = getenv("FARM_KEY_FILE");
  lua_getfield(L, 1, "listen");
  const char *listen = luaL_optstring(L, -1, NULL);
  lua_getfield(L, 1, "discover");
  const char *discover = luaL_optstring(L, -1, NULL);
  char err[1536];                  /* room for every unreachable host's reason */
  err[0] = 0;
  farm_host *hl = NULL;
  int nh = 0;
  unsigned char key[FARM_KEYLEN];
  if (nodes || hosts) {
    nh = nodes ? farm__hosts_named(nodes, &hl, err, sizeof err) : farm__hosts_list(hosts, &hl, err, sizeof err);
    if (nh < 0) return fail_lua(L, "farm: %s", err);
  }
  int standing = listen || discover;   /* nodes that join are standing ones */
  for (int i = 0; i < nh; i++) standing |= hl[i].kind == FARM_HOST_NODE;
  if ((listen || discover) && (!keyfile || !*keyfile)) {
    free(hl);
    return fail_lua(L, "farm: %s needs a key_file (or FARM_KEY_FILE): the key the nodes that join "
                    "sign with and prove they know", listen ? "listen" : "discover");
  }
  if (standing && keyfile && *keyfile) {
    if (farm__key_load(keyfile, key, err, sizeof err) < 0) { free(hl); return fail_lua(L, "farm: %s", err); }
    o.key = key;
  }
  o.hosts = hl;
  o.nhosts = nh;
  ctx *c = lua_newuserdatauv(L, sizeof *c, 1);
  memset(c, 0, sizeof *c);
  farm__buf_init(&c->enc);
  luaL_setmetatable(L, CTX_MT);
  guard_ud *g = lua_newuserdatauv(L, sizeof *g, 0);   /* resets enc_busy, even on error */
  g->c = c;
  luaL_setmetatable(L, GUARD_MT);
  lua_setiuservalue(L, -2, 1);
  int rc = farm__engine_open(&c->e, &o, err, sizeof err);
  free(hl);
  if (rc == 0 && (listen || discover)) {
    farm_join_opts jo = { .listen = listen, .discover = discover, .key = key, .quiet = o.quiet,
                          .add = join_add, .clear = join_clear, .arg = c->e };
    if ((rc = farm__join_open(&c->jn, &jo, err, sizeof err)) < 0) {
      farm__engine_free(c->e);
      c->e = NULL;
    }
  }
  sodium_memzero(key, sizeof key);
  if (rc < 0) return fail_lua(L, "farm: %s", err[0] ? err : farm_strerror(rc));
  lua_getfield(L, 1, "status");
  const char *status = luaL_optstring(L, -1, NULL);
  lua_getfield(L, 1, "status_token");
  if (status && farm__status_open(&c->status, status, keyfile, lua_toboolean(L, -1), status_fill, c->e,
                                  err, sizeof err) < 0)
    return fail_lua(L, "farm: %s", err);
  lua_pop(L, 2);                   /* the ctx on top */
  return 1;
}

static void unwatch_all(ctx *c) {
  for (size_t i = 0; i < c->nwatched; i++) farm__job_unref(c->watched[i]);
  free(c->watched);
  c->watched = NULL;
  c->nwatched = c->capwatched = c->sweep_at = 0;
}

static int l_close(lua_State *L) {
  ctx *c = luaL_checkudata(L, 1, CTX_MT);
  if (c->w) return 0;              /* a job's farm calls end with the worker */
  farm_engine *e = c->e;
  farm__status_stop(c->status);
  c->status = NULL;
  c->e = NULL;
  farm__join_close(c->jn);         /* (before the engine it adds nodes to) */
  c->jn = NULL;
  farm__engine_free(e);
  unwatch_all(c);
  return 0;
}

static int l_gc(lua_State *L) {
  l_close(L);
  ctx *c = luaL_checkudata(L, 1, CTX_MT);
  farm__buf_free(&c->enc);
  return 0;
}

static int l_closed(lua_State *L) {
  ctx *c = luaL_checkudata(L, 1, CTX_MT);
  lua_pushboolean(L, c->e == NULL && c->w == NULL);
  return 1;
}

static int l_guard_close(lua_State *L) {
  guard_ud *g = luaL_checkudata(L, 1, GUARD_MT);
  g->c->enc_busy = 0;
  return 0;
}

static int l_box_gc(lua_State *L) {
  farm__buf_free(&((box_ud *)luaL_checkudata(L, 1, BOX_MT))->b);
  return 0;
}

/* The buffer to encode into: the pool's scratch, guarded by a to-be-closed
   slot that frees it again however the encoding ends; or, when a finalizer
   submits while another submit encodes, a buffer of its own. Pushes one value. */
static farm_buf *enc_begin(lua_State *L, ctx *c) {
  if (!c->enc_busy) {
    c->enc_busy = 1;
    lua_getiuservalue(L, 1, 1);
    lua_toclose(L, -1);
    c->enc.n = 0;
    return &c->enc;
  }
  box_ud *b = lua_newuserdatauv(L, sizeof *b, 0);
  farm__buf_init(&b->b);
  luaL_setmetatable(L, BOX_MT);
  return &b->b;
}

/* Done with the buffer enc_begin pushed at slot: the scratch is free again. */
static void enc_end(lua_State *L, int slot) {
  if (luaL_testudata(L, slot, GUARD_MT)) lua_closeslot(L, slot);
}

/* The encoded bytes, as a block of their own: big ones by handing the buffer
   over, small ones by copying (the scratch keeps its capacity). */
static char *enc_take(farm_buf *b, size_t *n) {
  if (b->n >= (64u << 10)) return farm__buf_steal(b, n);
  *n = b->n;
  return farm__dupmem(b->p, b->n);
}

/* Fill an encoder from stack slots: describe, names-function (called only when
   a value needs it), globals. */
static void setup_encoder(lua_State *L, farm_encoder *e, int describe, int namesfn,
                          int first, int n, const char *root) {
  memset(e, 0, sizeof *e);
  e->root = root;
  int needs = 0;
  for (int i = 0; i < n && !needs; i++) {
    int t = lua_type(L, first + i);
    needs = t == LUA_TTABLE || t == LUA_TFUNCTION || t == LUA_TUSERDATA || t == LUA_TTHREAD
            || t == LUA_TLIGHTUSERDATA;
  }
  if (!needs) return;
  if (!lua_isnoneornil(L, namesfn)) {
    lua_pushvalue(L, namesfn);
    lua_call(L, 0, 1);
    e->names = lua_gettop(L);
  }
  if (!lua_isnoneornil(L, describe)) e->describe = describe;
  lua_pushglobaltable(L);
  e->globals = lua_gettop(L);
}

/* core.package(ctx, describe, namesfn, f, fresh) -> fn: f's block and its hash.
   fresh: f has upvalue values of its own, so it travels whole with each job,
   and the argument blocks of its jobs continue its block (codec.h). */
static int l_package(lua_State *L) {
  ctx *c = check_ctx(L, 1);
  luaL_checktype(L, 4, LUA_TFUNCTION);
  int fresh = lua_toboolean(L, 5);
  lua_settop(L, 5);
  if (fresh) lua_newtable(L); else lua_pushnil(L);   /* 6: the block's numbering */
  farm_buf *b = enc_begin(L, c);
  int top = lua_gettop(L);
  farm_encoder e;
  setup_encoder(L, &e, 2, 3, 4, 1, "function");
  if (fresh) e.keep = 6;
  lua_Integer nseen = farm__codec_encode(L, b, 4, 1, &e);
  lua_settop(L, top);
  farm_fn *f = calloc(1, sizeof *f);
  if (!f || !(f->p = farm__dupmem(b->p, b->n))) { free(f); return luaL_error(L, "farm: out of memory"); }
  f->n = b->n;
  enc_end(L, top);
  fn_ud *u = lua_newuserdatauv(L, sizeof *u, 1);
  u->fn = NULL;
  u->nseen = nseen;
  luaL_setmetatable(L, FN_MT);
  lua_pushvalue(L, 6);
  lua_setiuservalue(L, -2, 1);
  f->refs = 1;
  f->fresh = fresh;
  farm__fn_hash(f);
  u->fn = f;
  return 1;
}

static int l_fn_gc(lua_State *L) {
  fn_ud *u = luaL_checkudata(L, 1, FN_MT);
  farm__fn_unref(u->fn);
  u->fn = NULL;
  return 0;
}

static farm_fn *check_fn(lua_State *L, int i) {
  farm_fn *f = ((fn_ud *)luaL_checkudata(L, i, FN_MT))->fn;
  if (!f) fail_lua(L, "farm: this function package was already collected");
  return f;
}

/* The argument block of a job of the fn at i continues its function block
   when that travels fresh: pushes what e needs for it (or nil). */
static void continue_fn(lua_State *L, int i, farm_encoder *e) {
  fn_ud *u = luaL_checkudata(L, i, FN_MT);
  if (lua_getiuservalue(L, i, 1) == LUA_TTABLE && u->fn && u->fn->fresh) {
    e->prior = lua_gettop(L);
    e->nprior = u->nseen;
  }
}

static void check_size(lua_State *L, ctx *c, size_t n, const char *what) {
  size_t max = c->e ? farm__engine_maxmsg(c->e) : farm__worker_maxmsg(c->w);
  if (n + (4u << 10) <= max) return;
  char have[32], most[32];
  fail_lua(L, "farm: %s take %s encoded; a link carries at most %s per job "
           "(farm.config{max_message = bytes} raises it)", what,
           farm__size_text(n, have, sizeof have), farm__size_text(max, most, sizeof most));
}

/* Make the future for a job of f, with args from b; pushes it. */
static farm_job *new_job(lua_State *L, ctx *c, farm_fn *f, int mode, farm_buf *b) {
  job_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
  u->job = NULL;
  u->c = NULL;
  luaL_setmetatable(L, JOB_MT);
  if (c->nfutures == 0) {          /* the future keeps its pool alive */
    lua_pushvalue(L, 1);
    c->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  c->nfutures++;
  u->c = c;
  farm_job *j;
  if (b->n <= JOB_INLINE_ARGS) j = farm__job_new_args(b->p, b->n);   /* (in the record) */
  else if ((j = farm__job_new()) && !(j->args = enc_take(b, &j->nargs))) { free(j); j = NULL; }
  if (!j) { luaL_error(L, "farm: out of memory"); return NULL; }
  j->id = c->e ? farm__engine_nextid(c->e) : 0;    /* a worker numbers its own */
  j->mode = (uint8_t)mode;
  j->refs = 1;                     /* the future's; the engine takes its own */
  j->fn = f;
  __atomic_add_fetch(&f->refs, 1, __ATOMIC_RELAXED);
  u->job = j;
  return j;
}

/* The job goes to the engine, or from a job on a worker to the client's. */
static void hand_over(lua_State *L, ctx *c, farm_job *j) {
  if (c->e) farm__engine_submit(c->e, j);
  else if (farm__worker_submit(c->w, j) < 0) luaL_error(L, "farm: out of memory");
  else farm__worker_submitted(L, c->w);
}

/* Per-job options at stack slot o (a table, or none): timeout, retries, notify. */
static void job_options(lua_State *L, int o, farm_job *j) {
  if (!o) return;
  lua_getfield(L, o, "timeout");
  if (!lua_isnil(L, -1)) farm__jx(j)->timeout = lua_tonumber(L, -1);   /* (a job with a timeout has its block at once) */
  lua_getfield(L, o, "retries");
  if (!lua_isnil(L, -1)) j->max_retries = (uint16_t)lua_tointeger(L, -1);
  lua_getfield(L, o, "notify");
  j->notify = (uint8_t)lua_toboolean(L, -1);
  lua_getfield(L, o, "pin");
  j->pin = (uint16_t)lua_tointeger(L, -1);
  lua_pop(L, 4);
}

static int failed_unread(farm_job *j) {
  return farm__job_over(j) && farm__job_state(j) == JOB_FAILED && !j->read;
}

/* Keep j (a reference of our own) among the jobs watched for failures unread. */
static void watch(lua_State *L, ctx *c, farm_job *j) {
  if (c->nwatched >= c->sweep_at) {
    size_t k = 0;
    for (size_t i = 0; i < c->nwatched; i++) {
      farm_job *w = c->watched[i];
      if (!farm__job_over(w) || failed_unread(w)) c->watched[k++] = w;
      else farm__job_unref(w);
    }
    c->nwatched = k;
    c->sweep_at = k < 32 ? 64 : 2 * k;
  }
  if (c->nwatched == c->capwatched) {
    size_t cap = c->capwatched ? 2 * c->capwatched : 64;
    farm_job **p = realloc(c->watched, cap * sizeof *p);
    if (!p) { luaL_error(L, "farm: out of memory"); return; }
    c->watched = p;
    c->capwatched = cap;
  }
  __atomic_add_fetch(&j->refs, 1, __ATOMIC_RELAXED);
  c->watched[c->nwatched++] = j;
}

/* core.unread(ctx) -> how many of the script's jobs failed with their error
   never read (future:result), and the first of them: its id and message */
static int l_unread(lua_State *L) {
  ctx *c = luaL_checkudata(L, 1, CTX_MT);
  lua_Integer n = 0;
  farm_job *first = NULL;
  for (size_t i = 0; i < c->nwatched; i++) {
    farm_job *j = c->watched[i];
    if (!failed_unread(j)) continue;
    n++;
    if (!first || j->id < first->id) first = j;
  }
  lua_pushinteger(L, n);
  if (!first) return 1;
  lua_pushinteger(L, (lua_Integer)first->id);
  lua_pushlstring(L, farm__jx(first)->res ? farm__jx(first)->res : "", farm__jx(first)->nres);
  return 3;
}

/* core.timed_out(job) -> true when the job was stopped by its own timeout
   (submit_with{timeout =}): here, or on a node, which says so in its words */
static int l_timed_out(lua_State *L) {
  farm_job *j = check_job(L, 1);
  int yes = farm__job_over(j) && farm__job_state(j) == JOB_FAILED && farm__job_timeout(j) > 0;
  if (yes && !j->timed_out) {
    static const char words[] = "the job timed out after ";
    yes = j->untrusted && farm__jx(j)->res && farm__jx(j)->nres > sizeof words - 1 &&
          memcmp(farm__jx(j)->res, words, sizeof words - 1) == 0;
  }
  lua_pushboolean(L, yes);
  return 1;
}

/* core.submit(ctx, opts|nil, fn, describe, namesfn, ...) -> future (opts.watch:
   one of the script's own, watched for a failure never read) */
static int l_submit(lua_State *L) {
  ctx *c = check_ctx(L, 1);
  int opts = lua_istable(L, 2) ? 2 : 0;
  farm_fn *f = check_fn(L, 3);
  int first = 6, n = lua_gettop(L) - 5;
  if (n < 0) n = 0;
  int top = lua_gettop(L);
  farm_buf *b = enc_begin(L, c);
  farm_encoder e;
  setup_encoder(L, &e, 4, 5, first, n, "argument");
  continue_fn(L, 3, &e);
  farm__codec_encode(L, b, first, n, &e);
  check_size(L, c, b->n + f->n, "the function and its arguments");
  farm_job *j = new_job(L, c, f, FARM_MODE_CALL, b);
  job_options(L, opts, j);
  if (opts && c->e) {
    lua_getfield(L, opts, "watch");
    if (lua_toboolean(L, -1)) watch(L, c, j);
    lua_pop(L, 1);
  }
  hand_over(L, c, j);
  enc_end(L, top + 1);
  return 1;
}

/* core.submit_map(ctx, fn, describe, namesfn, i, j, list1, ...) -> future for
   rows i..j of the lists (one MAP job: the worker calls fn on each row). */
static int l_submit_map(lua_State *L) {
  ctx *c = check_ctx(L, 1);
  farm_fn *f = check_fn(L, 2);
  lua_Integer lo = luaL_checkinteger(L, 5), hi = luaL_checkinteger(L, 6);
  int nl = lua_gettop(L) - 6;
  luaL_argcheck(L, nl >= 1 && hi >= lo, 7, "a list and a nonempty range");
  luaL_checkstack(L, nl + LUA_MINSTACK, "too many lists for farm.map");
  int top = lua_gettop(L);
  farm_buf *b = enc_begin(L, c);
  int base = lua_gettop(L) + 1;
  lua_pushinteger(L, hi - lo + 1);
  for (int k = 0; k < nl; k++) {
    lua_createtable(L, (int)(hi - lo + 1), 0);
    for (lua_Integer i = lo; i <= hi; i++) {
      lua_geti(L, 7 + k, i);
      lua_rawseti(L, -2, i - lo + 1);
    }
  }
  farm_encoder e;
  setup_encoder(L, &e, 3, 4, base, nl + 1, "argument");
  continue_fn(L, 2, &e);
  farm__codec_encode(L, b, base, nl + 1, &e);
  check_size(L, c, b->n + f->n, "the function and the items of one map chunk");
  lua_settop(L, base - 1);
  farm_job *j = new_job(L, c, f, FARM_MODE_MAP, b);
  hand_over(L, c, j);
  enc_end(L, top + 1);
  return 1;
}

/* ---- what every job may use: farm.shared, farm.on_node, files ---------------- */

/* core.share(ctx, kind, name, describe, namesfn, value): value encoded once, for
   every peer (kind "value" or "setup"). */
static int l_share(lua_State *L) {
  ctx *c = check_ctx(L, 1);
  const char *kind = luaL_checkstring(L, 2);
  size_t nn;
  const char *name = luaL_checklstring(L, 3, &nn);
  if (!c->e) return fail_lua(L, "farm: only the client shares values with the jobs");
  int k = strcmp(kind, "setup") == 0 ? FARM_SHARE_SETUP : FARM_SHARE_VALUE;
  lua_settop(L, 6);
  if (k == FARM_SHARE_SETUP) lua_pushliteral(L, "=farm.on_node's");
  else lua_pushfstring(L, "=farm.shared.%s", name);       /* 7: its name in messages */
  int top = lua_gettop(L);
  farm_buf *b = enc_begin(L, c);
  farm_encoder e;
  setup_encoder(L, &e, 4, 5, 6, 1, lua_tostring(L, 7));
  farm__codec_encode(L, b, 6, 1, &e);
  check_size(L, c, b->n, k == FARM_SHARE_SETUP ? "the setup, cleanup and their arguments"
                                              : "the shared value");
  int rc = farm__engine_share(c->e, k, name, nn, b->p, b->n);
  enc_end(L, top + 1);
  if (rc < 0) return fail_lua(L, "farm: out of memory");
  lua_pushinteger(L, (lua_Integer)b->n);
  return 1;
}

/* core.file_key(path) -> "dev:ino:size:mtime" of a regular file, or raises
   with what is wrong; and its size. */
static int l_file_key(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  const char *what = luaL_optstring(L, 2, "farm");
  struct stat st;
  if (stat(path, &st) < 0)
    return fail_lua(L, "%s: cannot read %s: %s", what, path, strerror(errno));
  if (!S_ISREG(st.st_mode)) return fail_lua(L, "%s: %s is not a regular file", what, path);
  lua_pushfstring(L, "%I:%I:%I:%I.%I", (lua_Integer)st.st_dev, (lua_Integer)st.st_ino,
                  (lua_Integer)st.st_size, (lua_Integer)st.st_mtim.tv_sec,
                  (lua_Integer)st.st_mtim.tv_nsec);
  lua_pushinteger(L, (lua_Integer)st.st_size);
  return 2;
}

/* core.share_file(ctx, path) -> true when it was read for the nodes (none:
   local workers see our files). Raises when it is missing or too large. */
static int l_share_file(lua_State *L) {
  ctx *c = check_ctx(L, 1);
  size_t np;
  const char *path = luaL_checklstring(L, 2, &np);
  const char *what = luaL_optstring(L, 3, "farm");
  if (!c->e) return fail_lua(L, "%s: files are shipped by the client", what);
  int nodes = farm__engine_has_nodes(c->e);  /* (local workers read our files where they are) */
  farm_buf data;
  farm__buf_init(&data);
  char why[400];
  struct stat st;
  if (farm__file_take(path, farm__engine_max_file(c->e), nodes ? &data : NULL, &st, why, sizeof why) < 0)
    return fail_lua(L, "%s: %s", what, why);
  int rc = 0;
  if (nodes && (st.st_mode & 0111)) {    /* a program: its execute bits go with it */
    farm_buf x;
    farm__buf_init(&x);
    farm__buf_u8(&x, (uint8_t)(st.st_mode & 0111));
    farm__buf_put(&x, data.p, data.n);
    rc = x.n == data.n + 1 ? farm__engine_share(c->e, FARM_SHARE_XFILE, path, np, x.p, x.n) : FARM_ENOMEM;
    farm__buf_free(&x);
  } else if (nodes) {
    rc = farm__engine_share(c->e, FARM_SHARE_FILE, path, np, data.p, data.n);
  }
  farm__buf_free(&data);
  if (rc < 0) return fail_lua(L, "farm: out of memory");
  lua_pushboolean(L, nodes);
  return 1;
}

/* core.shared_get(name) -> the value (in a job), or nothing */
static int l_shared_get(lua_State *L) {
  size_t n;
  const char *name = luaL_checklstring(L, 1, &n);
  worker *w = farm__worker_of(L);
  if (!w) return 0;
  return farm__worker_shared(L, w, name, n);
}

/* core.send_file(path) (in a job) */
static int l_send_file(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  worker *w = farm__worker_of(L);
  if (!w) return fail_lua(L, "farm.send_file: only a job sends files back (the client has %s already)", path);
  char err[600];
  if (farm__worker_send_file(w, path, err, sizeof err) < 0) return fail_lua(L, "%s", err);
  lua_pushboolean(L, 1);
  return 1;
}

/* core.provide(ctx, describe, namesfn, value) (in a job): a provisional result */
static int l_provide(lua_State *L) {
  ctx *c = check_ctx(L, 1);
  if (!c->w) return fail_lua(L, "farm.provide: only a job provides results; the client reads them with future:partial()");
  lua_settop(L, 4);
  int top = lua_gettop(L);
  farm_buf *b = enc_begin(L, c);
  farm_encoder e;
  setup_encoder(L, &e, 2, 3, 4, 1, "provisional result");
  farm__codec_encode(L, b, 4, 1, &e);
  check_size(L, c, b->n, "the provisional result");
  char err[300];
  if (farm__worker_provide(c->w, b->p, b->n, err, sizeof err) < 0) return fail_lua(L, "%s", err);
  enc_end(L, top + 1);
  return 0;
}

/* core.stop(future, grace) -> true when cancelled at once, false when told (it
   ends within the grace, or is stopped then), nil when it was over */
static int l_stop(lua_State *L) {
  farm_job *j = check_job(L, 1);
  ctx *c = job_ctx(L, 1);
  if (!c->e) return fail_lua(L, "future:cancel: a job cannot cancel its own jobs yet; the client can");
  int rc = farm__engine_stop(c->e, j, luaL_checknumber(L, 2));
  if (rc == 0) lua_pushnil(L); else lua_pushboolean(L, rc > 0);
  return 1;
}

/* core.partial(future, resolve, cache, resolve_loaded) -> the last provisional
   result (its first value) and how many came; nil and 0 when none */
static int l_partial(lua_State *L) {
  farm_job *j = check_job(L, 1);
  farm_engine *e = job_engine(L, 1);
  char *block = NULL;
  size_t n = 0;
  int untrusted = 0;
  uint32_t k = e ? farm__engine_partial(e, j, &block, &n, &untrusted) : 0;
  if (!k) { lua_pushnil(L); lua_pushinteger(L, 0); return 2; }
  lua_settop(L, 4);
  farm_decoder d = {0};              /* as result_decoder, with the block's own trust */
  if (untrusted) lua_pushnil(L); else lua_pushglobaltable(L);
  d.env = untrusted ? 0 : lua_gettop(L);
  d.untrusted = untrusted;
  if (!lua_isnoneornil(L, 2)) d.resolve = untrusted ? (lua_isnoneornil(L, 4) ? 0 : 4) : 2;
  if (!lua_isnoneornil(L, 3)) d.cache = 3;
  lua_pushlstring(L, block, n);      /* (kept on the stack while it decodes: no leak if it raises) */
  free(block);
  int nv = farm__codec_decode(L, lua_tostring(L, -1), n, &d);
  if (nv == 0) lua_pushnil(L);
  else if (nv > 1) lua_pop(L, nv - 1);
  lua_pushinteger(L, (lua_Integer)k);
  return 2;
}

/* core.cancelled() -> true in a job the client cancelled with a grace */
static int l_cancelled(lua_State *L) {
  worker *w = farm__worker_of(L);
  lua_pushboolean(L, w && farm__worker_cancelled(w));
  return 1;
}

/* core.meta(job) -> {submitted=, started=, finished=, attempts=, node=, worker=} once over, else nil */
static int l_meta(lua_State *L) {
  farm_job *j = check_job(L, 1);
  farm_engine *e = job_engine(L, 1);
  if (!farm__job_over(j) || !e) { lua_pushnil(L); return 1; }
  farm_jobx *jx = farm__jx(j);     /* (over: it has its block) */
  double wall = farm__engine_wall(e);
  lua_createtable(L, 0, 6);
  lua_pushnumber(L, j->submitted + wall);
  lua_setfield(L, -2, "submitted");
  /* When it ran, as its worker told (one clock for both ends, so the jobs a
     worker ran in turn have them in turn); else the earliest sign we saw: when
     it was seen running, or its end less what it ran. */
  double started, ended = jx->ended;
  if (jx->ran_to > 0) {
    started = jx->ran_from;
    ended = jx->ran_to;
  } else {
    started = jx->busy > 0 ? jx->ended - jx->busy : 0;
    if (jx->started > 0 && (started <= 0 || jx->started < started)) started = jx->started;
  }
  if (started > 0 && started < j->submitted) started = j->submitted;
  if (ended < started) ended = started;
  if (started > 0) { lua_pushnumber(L, started + wall); lua_setfield(L, -2, "started"); }
  lua_pushnumber(L, ended + wall);
  lua_setfield(L, -2, "finished");
  lua_pushinteger(L, 1 + j->attempt + j->requeues);
  lua_setfield(L, -2, "attempts");
  const char *w = farm__job_where(j);
  if (w[0]) {
    lua_pushstring(L, w);
    lua_setfield(L, -2, "worker");
    lua_pushstring(L, j->untrusted ? w : "local");
    if (j->untrusted) {                  /* a node's name: up to " (" */
      const char *sp = strstr(w, " (");
      lua_pushlstring(L, w, sp ? (size_t)(sp - w) : strlen(w));
      lua_remove(L, -2);
    }
    lua_setfield(L, -2, "node");
  }
  return 1;
}

static int l_job_gc(lua_State *L) {
  job_ud *u = luaL_checkudata(L, 1, JOB_MT);
  if (u->job) farm__job_unref(u->job);
  u->job = NULL;
  if (u->c && --u->c->nfutures == 0) luaL_unref(L, LUA_REGISTRYINDEX, u->c->ref);
  u->c = NULL;
  return 0;
}

static const char *const state_names[] = { "pending", "running", "done", "failed", "cancelled" };

/* pending: not started (queued, or waiting at a worker); running: its worker runs it now. */
static int l_status(lua_State *L) {
  farm_job *j = check_job(L, 1);
  farm_engine *e = job_engine(L, 1);
  if (e) lua_pushstring(L, farm__engine_status(e, j));
  else lua_pushstring(L, state_names[farm__job_state(j) == JOB_SENT ? JOB_QUEUED : farm__job_state(j)]);
  return 1;
}

static int l_done(lua_State *L) {
  lua_pushboolean(L, farm__job_over(check_job(L, 1)));
  return 1;
}

static int l_id(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)check_job(L, 1)->id);
  return 1;
}

/* core.cancel(job, force) -> true when cancelled */
static int l_cancel(lua_State *L) {
  farm_job *j = check_job(L, 1);
  ctx *c = job_ctx(L, 1);
  if (c->w) return fail_lua(L, "future:cancel: a job cannot cancel its own jobs yet; the client can");
  lua_pushboolean(L, c->e ? farm__engine_cancel(c->e, j, lua_toboolean(L, 2)) : 0);
  return 1;
}

/* core.cancel_all(ctx, force) -> how many were cancelled */
static int l_cancel_all(lua_State *L) {
  ctx *c = check_ctx(L, 1);
  if (!c->e) return fail_lua(L, "farm: a job cannot cancel jobs yet; the client can");
  lua_pushinteger(L, farm__engine_cancel_all(c->e, lua_toboolean(L, 2)));
  return 1;
}

/* core.pump(ctx, timeout) -> true when something finished or changed, false on
   timeout, nil when a signal came (the Lua caller decides whether to go on). */
static int l_pump(lua_State *L) {
  ctx *c = luaL_checkudata(L, 1, CTX_MT);
  if (c->w) {
    uint64_t gen = (uint64_t)luaL_optinteger(L, 3, (lua_Integer)farm__worker_gen(c->w));
    return farm__worker_pump(L, c->w, gen, luaL_optnumber(L, 2, 0));
  }
  if (!c->e) { lua_pushboolean(L, 1); return 1; }
  uint64_t gen = (uint64_t)luaL_optinteger(L, 3, (lua_Integer)farm__engine_gen(c->e));
  int rc = farm__engine_wait(c->e, gen, luaL_optnumber(L, 2, 0));
  if (rc < 0) lua_pushnil(L); else lua_pushboolean(L, rc);
  return 1;
}

/* core.ctx_of(future) -> its pool's ctx */
static int l_ctx_of(lua_State *L) {
  check_job(L, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, job_ctx(L, 1)->ref);
  return 1;
}

/* core.gen(ctx) -> the engine's change count (for pump's third argument) */
static int l_gen(lua_State *L) {
  ctx *c = luaL_checkudata(L, 1, CTX_MT);
  lua_pushinteger(L, c->e ? (lua_Integer)farm__engine_gen(c->e)
                      : c->w ? (lua_Integer)farm__worker_gen(c->w) : 0);
  return 1;
}

/* core.wait(job, timeout) -> true when the job is over; false on timeout
   or when a signal arrived. */
static int l_wait(lua_State *L) {
  farm_job *j = check_job(L, 1);
  farm_engine *e = job_engine(L, 1);
  double timeout = luaL_optnumber(L, 2, HUGE_VAL);
  luaL_argcheck(L, timeout == timeout, 2, "timeout is not a number");
  ctx *c = job_ctx(L, 1);
  if (c->w) return farm__worker_wait(L, c->w, j, timeout == HUGE_VAL ? -1 : timeout);
  double until = farm__now() + timeout;
  while (e && !farm__job_over(j)) {
    uint64_t gen = farm__engine_gen(e);
    if (farm__job_over(j)) break;
    double left = until - farm__now();
    if (left <= 0) break;
    if (farm__engine_wait(e, gen, left) < 0) break;
  }
  lua_pushboolean(L, farm__job_over(j));
  return 1;
}

/* core.result(job, resolve, cache, resolve_loaded) -> true, values... | false, message,
   traceback, where [, the raised value]. A job that ran on a node decodes
   untrusted: its module references resolve through resolve_loaded (what this
   state has loaded, never a require) and its globals never reach ours. */
/* How l_result decodes j's blocks (its arguments 2-4: resolve, cache,
   resolve_loaded); pushes one slot (the env, or nil for a fresh one). From
   another host: decoding runs none of its code, its metatables are only our
   classes, and its globals and functions get a sandbox of their own, never
   our globals (codec.h). */
static farm_decoder result_decoder(lua_State *L, farm_job *j) {
  farm_decoder d = {0};
  if (j->untrusted) lua_pushnil(L); else lua_pushglobaltable(L);
  d.env = j->untrusted ? 0 : lua_gettop(L);
  d.untrusted = j->untrusted;
  if (!lua_isnoneornil(L, 2)) d.resolve = j->untrusted ? (lua_isnoneornil(L, 4) ? 0 : 4) : 2;
  if (!lua_isnoneornil(L, 3)) d.cache = 3;
  return d;
}

static int l_result(lua_State *L) {
  farm_job *j = check_job(L, 1);
  int st = farm__job_state(j);
  if (st == JOB_DONE) {
    farm_decoder d = result_decoder(L, j);
    lua_pushboolean(L, 1);
    int n = farm__codec_decode(L, farm__jx(j)->res, farm__jx(j)->nres, &d);
    return n + 1;
  }
  lua_pushboolean(L, 0);
  if (st == JOB_FAILED) j->read = 1;
  if (st == JOB_CANCELLED) lua_pushliteral(L, "the job was cancelled");
  else if (st == JOB_FAILED) lua_pushlstring(L, farm__jx(j)->res ? farm__jx(j)->res : "", farm__jx(j)->nres);
  else lua_pushliteral(L, "the job has not finished");
  if (st >= JOB_DONE && farm__jx(j)->tb) lua_pushlstring(L, farm__jx(j)->tb, farm__jx(j)->ntb);
  else lua_pushliteral(L, "");   /* (a job not over has no block of its own to read yet) */
  lua_pushstring(L, st == JOB_FAILED ? farm__job_where(j) : "");
  if (st != JOB_FAILED || !farm__jx(j)->val) return 4;
  /* the raised value, as it was (one value in its block) */
  farm_decoder d = result_decoder(L, j);
  int n = farm__codec_decode(L, farm__jx(j)->val, farm__jx(j)->nval, &d);
  if (n != 1) { lua_pop(L, n + 1); return 4; }
  lua_remove(L, -2);
  return 5;
}

/* core.stdout(job) -> what it printed (nil while it runs and before) */
static int l_stdout(lua_State *L) {
  farm_job *j = check_job(L, 1);
  if (farm__job_over(j) && farm__jx(j)->out.n) lua_pushlstring(L, farm__jx(j)->out.p, farm__jx(j)->out.n);
  else lua_pushnil(L);
  return 1;
}

/* core.where(job) -> where it ran (over); where it is and since when it runs there (out at a peer); or nil */
static int l_where(lua_State *L) {
  farm_job *j = check_job(L, 1);
  if (farm__job_over(j)) {
    if (farm__job_where(j)[0]) lua_pushstring(L, farm__job_where(j)); else lua_pushnil(L);
    return 1;
  }
  /* out at a peer: where it is, and since when it runs there (nil: not started) */
  farm_engine *e = job_engine(L, 1);
  char buf[96];
  double since = 0;
  if (!e || !farm__engine_where(e, j, buf, sizeof buf, &since)) { lua_pushnil(L); return 1; }
  lua_pushstring(L, buf);
  if (since > 0) lua_pushnumber(L, since); else lua_pushnil(L);
  return 2;
}

/* core.split_done(list) -> done, pending: the futures of list that are over, and the rest */
static int l_split_done(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer n = luaL_len(L, 1), nd = 0, np = 0;
  lua_newtable(L);
  lua_newtable(L);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, 1, i);
    job_ud *u = luaL_testudata(L, -1, JOB_MT);
    if (!u) return luaL_error(L, "farm: item %d is not a future", (int)i);
    if (!u->job) return fail_lua(L, "farm: item %d is a future that was already collected", (int)i);
    int over = farm__job_over(u->job);
    lua_rawseti(L, over ? 2 : 3, over ? ++nd : ++np);
  }
  return 2;
}

/* core.stats(ctx) -> { workers = { {name=, pid=, jobs=, busy=}, ... }, jobs=, busy=, elapsed=, ... } */
static int l_stats(lua_State *L) {
  ctx *c = luaL_checkudata(L, 1, CTX_MT);
  farm_engine_stats s;
  memset(&s, 0, sizeof s);
  if (c->e) farm__engine_stats(c->e, &s);
  lua_newtable(L);
  lua_createtable(L, s.npeers, 0);
  uint64_t jobs = 0;
  double busy = 0;
  for (int i = 0; i < s.npeers; i++) {
    farm_peer_stats *p = &s.peers[i];
    lua_createtable(L, 0, 5);
    lua_pushstring(L, p->name);
    lua_setfield(L, -2, "name");
    lua_pushinteger(L, p->pid);
    lua_setfield(L, -2, "pid");
    lua_pushinteger(L, p->capacity);
    lua_setfield(L, -2, "capacity");
    lua_pushinteger(L, (lua_Integer)p->jobs);
    lua_setfield(L, -2, "jobs");
    lua_pushnumber(L, p->busy);
    lua_setfield(L, -2, "busy");
    lua_pushstring(L, p->kind);
    lua_setfield(L, -2, "kind");
    lua_pushstring(L, p->state ? p->state : "up");
    lua_setfield(L, -2, "state");
    lua_pushinteger(L, (lua_Integer)p->bytes_sent);
    lua_setfield(L, -2, "bytes_sent");
    lua_pushinteger(L, (lua_Integer)p->bytes_received);
    lua_setfield(L, -2, "bytes_received");
    if (p->clients) {
      lua_pushinteger(L, p->clients);
      lua_setfield(L, -2, "clients");
    }
    lua_rawseti(L, -2, i + 1);
    jobs += p->jobs;
    busy += p->busy;
  }
  free(s.peers);
  lua_setfield(L, -2, "workers");
  lua_pushinteger(L, (lua_Integer)jobs);        lua_setfield(L, -2, "jobs");
  lua_pushnumber(L, busy);                      lua_setfield(L, -2, "busy");
  lua_pushnumber(L, s.elapsed);                 lua_setfield(L, -2, "elapsed");
  lua_pushinteger(L, (lua_Integer)s.queued);    lua_setfield(L, -2, "queued");
  lua_pushinteger(L, (lua_Integer)s.outstanding); lua_setfield(L, -2, "outstanding");
  lua_pushinteger(L, (lua_Integer)s.submitted); lua_setfield(L, -2, "submitted");
  lua_pushinteger(L, (lua_Integer)s.fn_sent);   lua_setfield(L, -2, "functions_sent");
  lua_pushinteger(L, (lua_Integer)s.bytes_sent); lua_setfield(L, -2, "bytes_sent");
  lua_pushinteger(L, (lua_Integer)s.batches_sent); lua_setfield(L, -2, "batches_sent");
  lua_pushinteger(L, (lua_Integer)s.taken_back); lua_setfield(L, -2, "taken_back");
  return 1;
}

static int l_workers(lua_State *L) {
  ctx *c = luaL_checkudata(L, 1, CTX_MT);
  lua_pushinteger(L, c->e ? farm__engine_workers(c->e) : c->w ? farm__worker_pool(c->w) : 0);
  return 1;
}

/* core.set_workers(ctx, n): resize the running pool's local workers (farm.set_workers) */
static int l_set_workers(lua_State *L) {
  ctx *c = luaL_checkudata(L, 1, CTX_MT);
  lua_Integer n = luaL_checkinteger(L, 2);
  if (c->w) return fail_lua(L, "farm.set_workers: only the client can resize the pool");
  if (!c->e) return fail_lua(L, "farm.set_workers: the pool is closed");
  if (n < 1 || n > 256)
    return fail_lua(L, "farm.set_workers: the number of workers must be from 1 to 256 (got %d)", (int)n);
  char err[512];
  if (farm__engine_set_workers(c->e, (int)n, err, sizeof err) < 0)
    return fail_lua(L, "farm.set_workers: %s", err);
  return 0;
}

/* core.add_nodes(ctx, {line...}, key_file): hostfile lines, added to the
   running pool (farm.add_nodes); they connect in the background */
static int l_add_nodes(lua_State *L) {
  ctx *c = luaL_checkudata(L, 1, CTX_MT);
  luaL_checktype(L, 2, LUA_TTABLE);
  const char *keyfile = luaL_optstring(L, 3, NULL);
  if (!keyfile || !*keyfile) keyfile = getenv("FARM_KEY_FILE");
  if (c->w) return fail_lua(L, "farm.add_nodes: only the client can add nodes");
  if (!c->e) return fail_lua(L, "farm.add_nodes: the pool is closed");
  lua_Integer n = luaL_len(L, 2);
  if (n > 4096) return fail_lua(L, "farm.add_nodes: at most 4096 hosts at once (got %d)", (int)n);
  farm_host *hs = calloc((size_t)(n > 0 ? n : 1), sizeof *hs);
  if (!hs) return fail_lua(L, "farm.add_nodes: out of memory");
  int nh = 0, standing = 0;
  char err[600];
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, 2, i);
    const char *line = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    char origin[48];
    snprintf(origin, sizeof origin, "farm.add_nodes item %d", (int)i);
    int k = line ? farm__hosts_line(line, origin, &hs[nh], err, sizeof err) : -2;
    lua_pop(L, 1);
    if (k == -2) {
      free(hs);
      return fail_lua(L, "farm.add_nodes: item %d is not a string; give hostfile lines, as "
                      "'node://host:port [workers]'", (int)i);
    }
    if (k < 0) { free(hs); return fail_lua(L, "farm.add_nodes: %s", err); }
    if (k == 1) standing |= hs[nh++].kind == FARM_HOST_NODE;
  }
  if (standing && keyfile && *keyfile && !farm__engine_has_key(c->e)) {
    unsigned char key[FARM_KEYLEN];
    if (farm__key_load(keyfile, key, err, sizeof err) < 0) { free(hs); return fail_lua(L, "farm.add_nodes: %s", err); }
    farm__engine_set_key(c->e, key);
    sodium_memzero(key, sizeof key);
  }
  int rc = farm__engine_add_hosts(c->e, hs, nh, err, sizeof err);
  free(hs);
  if (rc < 0) return fail_lua(L, "farm.add_nodes: %s", err);
  return 0;
}

static int l_outstanding(lua_State *L) {
  ctx *c = luaL_checkudata(L, 1, CTX_MT);
  lua_pushinteger(L, c->e ? (lua_Integer)farm__engine_outstanding(c->e) : 0);
  return 1;
}

/* core.pin(ctx, name) -> the placement number for submit_with{node = name}, or
   raises why there is none */
static int l_pin(lua_State *L) {
  ctx *c = check_ctx(L, 1);
  const char *name = luaL_checkstring(L, 2);
  char err[400];
  int k = c->e ? farm__engine_pin(c->e, name, err, sizeof err) : -1;
  if (!c->e) snprintf(err, sizeof err, "a job's own jobs run where the client places them");
  if (k < 0) return luaL_error(L, "%s", err);
  lua_pushinteger(L, k);
  return 1;
}

/* core.term_clear(ctx): the script writes to the terminal: the progress line goes first */
static int l_term_clear(lua_State *L) {
  ctx *c = check_ctx(L, 1);
  if (c->e) farm__engine_term_clear(c->e);
  return 0;
}

/* core.events_on(ctx, on): keep the run's events (farm.on_event) */
static int l_events_on(lua_State *L) {
  ctx *c = check_ctx(L, 1);
  if (c->e) farm__engine_events(c->e, lua_toboolean(L, 2));
  return 0;
}

/* core.events(ctx) -> a list of the events kept since the last call, oldest
   first: { event = "job_done", job = id, time = os.time()-like, node = name
   ("local" for the local pool), worker = "local:N", error | reason | count,
   rejoined = true (node_up: a lost node is back) } */
static int l_events(lua_State *L) {
  static const char *const names[] = { "", "node_up", "node_lost", "job_started", "job_done",
                                       "job_failed", "job_cancelled", "dropped", "job_partial" };
  ctx *c = check_ctx(L, 1);
  farm_event ev[64];
  size_t n = c->e ? farm__engine_take_events(c->e, ev, 64) : 0;
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_createtable(L, 0, 5);
    lua_pushstring(L, names[ev[i].type]);
    lua_setfield(L, -2, "event");
    if (ev[i].job) { lua_pushinteger(L, (lua_Integer)ev[i].job); lua_setfield(L, -2, "job"); }
    lua_pushnumber(L, ev[i].time + farm__engine_wall(c->e));
    lua_setfield(L, -2, "time");
    if (!strncmp(ev[i].node, "local:", 6)) {   /* node: where submit_with{node =} places */
      lua_pushstring(L, "local");
      lua_setfield(L, -2, "node");
      lua_pushstring(L, ev[i].node);
      lua_setfield(L, -2, "worker");
    } else if (ev[i].node[0]) {
      lua_pushstring(L, ev[i].node);
      lua_setfield(L, -2, "node");
    }
    if (ev[i].type == FARM_EV_DROPPED) {
      lua_pushinteger(L, (lua_Integer)strtoll(ev[i].text, NULL, 10));
      lua_setfield(L, -2, "count");
    } else if (ev[i].type == FARM_EV_NODE_UP) {   /* text "rejoined": a lost node is back */
      if (ev[i].text[0]) { lua_pushboolean(L, 1); lua_setfield(L, -2, "rejoined"); }
    } else if (ev[i].text[0]) {
      lua_pushstring(L, ev[i].text);
      lua_setfield(L, -2, ev[i].type == FARM_EV_JOB_FAILED ? "error" : "reason");
    }
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

/* core.finished(ctx) -> the id of the next finished job with a callback, or nil */
static int l_finished(lua_State *L) {
  ctx *c = luaL_checkudata(L, 1, CTX_MT);
  farm_job *j = c->e ? farm__engine_finished(c->e) : NULL;
  if (!j) return 0;
  lua_pushinteger(L, (lua_Integer)j->id);
  farm__job_unref(j);
  return 1;
}

static int l_pids(lua_State *L) {
  ctx *c = luaL_checkudata(L, 1, CTX_MT);
  long pids[256];
  int n = c->e ? farm__engine_pids(c->e, pids, 256) : 0;
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    lua_pushinteger(L, pids[i]);
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

static int l_now(lua_State *L) {
  lua_pushnumber(L, farm__now());
  return 1;
}

static int l_set_future_mt(lua_State *L) {
  /* farm.lua gives futures their methods: copy its fields into the job metatable */
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_getmetatable(L, JOB_MT);
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, -4);
  }
  return 0;
}

static int l_is_future(lua_State *L) {
  lua_pushboolean(L, luaL_testudata(L, 1, JOB_MT) != NULL);
  return 1;
}

static void metatable(lua_State *L, const char *name, const char *event, lua_CFunction f) {
  luaL_newmetatable(L, name);
  lua_pushcfunction(L, f);
  lua_setfield(L, -2, event);
  lua_pop(L, 1);
}

void farm__open_client(lua_State *L, int core) {
  static const luaL_Reg ctx_m[] = { { "__gc", l_gc }, { "__close", l_close }, { NULL, NULL } };
  luaL_newmetatable(L, CTX_MT);
  luaL_setfuncs(L, ctx_m, 0);
  lua_pop(L, 1);
  metatable(L, GUARD_MT, "__close", l_guard_close);
  metatable(L, BOX_MT, "__gc", l_box_gc);
  metatable(L, FN_MT, "__gc", l_fn_gc);
  metatable(L, JOB_MT, "__gc", l_job_gc);
  static const luaL_Reg fns[] = {
    { "new", l_new }, { "close", l_close }, { "closed", l_closed },
    { "package", l_package }, { "submit", l_submit }, { "pin", l_pin },
    { "events_on", l_events_on }, { "events", l_events }, { "term_clear", l_term_clear }, { "submit_map", l_submit_map },
    { "status", l_status }, { "done", l_done }, { "id", l_id }, { "cancel", l_cancel },
    { "cancel_all", l_cancel_all }, { "pump", l_pump }, { "gen", l_gen }, { "ctx_of", l_ctx_of }, { "wait", l_wait },
    { "result", l_result }, { "stdout", l_stdout }, { "where", l_where },
    { "split_done", l_split_done }, { "stats", l_stats }, { "workers", l_workers },
    { "outstanding", l_outstanding }, { "finished", l_finished },
    { "pids", l_pids }, { "set_workers", l_set_workers },
    { "add_nodes", l_add_nodes },
    { "set_future_mt", l_set_future_mt }, { "is_future", l_is_future }, { "now", l_now },
    { "worker_ctx", l_worker_ctx }, { "unread", l_unread }, { "timed_out", l_timed_out },
    { "share", l_share }, { "file_key", l_file_key }, { "share_file", l_share_file },
    { "shared_get", l_shared_get }, { "send_file", l_send_file }, { "provide", l_provide }, { "cancelled", l_cancelled },
    { "stop", l_stop }, { "partial", l_partial }, { "meta", l_meta },
    { "exec", farm__l_exec },            /* exec.c */
    { NULL, NULL } };
  lua_pushvalue(L, core);
  luaL_setfuncs(L, fns, 0);
  lua_pop(L, 1);
}
