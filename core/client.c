/*
 * client.c -- the client side as Lua sees it: farm.core's context, function
 * packages and futures, over the scheduler in sched.c.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include <lua.h>
#include <lauxlib.h>
#include "farm.h"
#include "clock.h"
#include "codec.h"
#include "luafuncs.h"
#include "sched.h"

/* ---- Lua binding ---------------------------------------------------------- */

#define CTX_MT "farm.ctx"
#define FN_MT  "farm.fn"
#define JOB_MT "farm.job"

typedef struct { farm_fn *fn; } fn_ud;
typedef struct { farm_job *job; } job_ud;

/* Raise a message as it is: luaL_error would put farm.lua's line in front. */
static int fail_lua(lua_State *L, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  return lua_error(L);
}

static farm_ctx *check_ctx(lua_State *L, int i) {
  farm_ctx *c = luaL_checkudata(L, i, CTX_MT);
  if (c->closed) fail_lua(L, "farm: the pool is closed");
  return c;
}

static farm_job *check_job(lua_State *L, int i) {
  farm_job *j = ((job_ud *)luaL_checkudata(L, i, JOB_MT))->job;
  if (!j) fail_lua(L, "farm: this future was already collected");   /* resurrected by a __gc */
  return j;
}

/* The farm a future belongs to (its user value). */
static farm_ctx *job_ctx(lua_State *L, int i) {
  lua_getiuservalue(L, i, 1);
  farm_ctx *c = luaL_checkudata(L, -1, CTX_MT);
  lua_pop(L, 1);
  return c;
}

/* Polling a future (done, status) makes progress too: a loop on f:done() ends. */
static void poll_progress(lua_State *L, int i, const farm_job *j) {
  if (farm__job_over(j)) return;
  farm_ctx *c = job_ctx(L, i);
  if (!c->closed && farm__now() - c->last_pump >= PUMP_INTERVAL) farm__sched_pump(c, 0);
}

/* core.new{workers=, exe=, echo=, max_message=} -> ctx */
static int l_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "workers");
  int nw = (int)luaL_optinteger(L, -1, 0);
  lua_getfield(L, 1, "exe");
  const char *exe = luaL_optstring(L, -1, NULL);
  lua_getfield(L, 1, "echo");
  int echo = lua_toboolean(L, -1);
  lua_getfield(L, 1, "max_message");
  lua_Integer maxmsg = luaL_optinteger(L, -1, 0);
  lua_pop(L, 4);
  if (nw < 0 || nw > 256) return fail_lua(L, "farm: workers must be between 1 and 256 (got %d)", nw);
  farm_ctx *c = lua_newuserdatauv(L, sizeof *c, 0);
  memset(c, 0, sizeof *c);
  c->closed = 1;                   /* until opened: __gc has nothing to undo */
  luaL_setmetatable(L, CTX_MT);
  int rc = farm__sched_open(c, nw, exe, echo, maxmsg > 0 ? (size_t)maxmsg : 0);
  if (rc < 0) {
    char why[sizeof c->err];
    memcpy(why, c->err, sizeof why);
    c->closed = 0;
    farm__sched_close(c);
    return fail_lua(L, "farm: %s", why[0] ? why : farm_strerror(rc));
  }
  return 1;
}

static int l_close(lua_State *L) {
  farm_ctx *c = luaL_checkudata(L, 1, CTX_MT);
  farm__sched_close(c);
  return 0;
}

static int l_closed(lua_State *L) {
  lua_pushboolean(L, ((farm_ctx *)luaL_checkudata(L, 1, CTX_MT))->closed);
  return 1;
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

/* core.package(ctx, describe, namesfn, f) -> fn: f's block and its hash */
static int l_package(lua_State *L) {
  farm_ctx *c = check_ctx(L, 1);
  luaL_checktype(L, 4, LUA_TFUNCTION);
  int top = lua_gettop(L);
  farm_encoder e;
  setup_encoder(L, &e, 2, 3, 4, 1, "function");
  c->enc.n = 0;
  farm_codec_encode(L, &c->enc, 4, 1, &e);
  lua_settop(L, top);
  fn_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
  u->fn = NULL;
  luaL_setmetatable(L, FN_MT);
  farm_fn *f = calloc(1, sizeof *f);
  if (!f || !(f->p = farm__dupmem(c->enc.p, c->enc.n))) { free(f); return luaL_error(L, "farm: out of memory"); }
  f->n = c->enc.n;
  f->refs = 1;
  crypto_generichash(f->hash, FARM_HASHLEN, (const unsigned char *)f->p, f->n, NULL, 0);
  u->fn = f;
  return 1;
}

static int l_fn_gc(lua_State *L) {
  fn_ud *u = luaL_checkudata(L, 1, FN_MT);
  farm__fn_unref(u->fn);
  u->fn = NULL;
  return 0;
}

static farm_job *new_job(lua_State *L, farm_ctx *c, farm_fn *f, int mode) {
  job_ud *u = lua_newuserdatauv(L, sizeof *u, 1);
  u->job = NULL;
  luaL_setmetatable(L, JOB_MT);
  lua_pushvalue(L, 1);             /* the future keeps its farm alive */
  lua_setiuservalue(L, -2, 1);
  farm_job *j = calloc(1, sizeof *j);
  if (!j) { luaL_error(L, "farm: out of memory"); return NULL; }
  j->id = c->nextid++;
  j->mode = (uint8_t)mode;
  j->slot = -1;
  j->refs = 2;                     /* the future, and the queue */
  j->fn = f;
  f->refs++;
  u->job = j;
  return j;
}



static void check_size(lua_State *L, farm_ctx *c, size_t n, const char *what) {
  if (n + (4u << 10) <= c->maxmsg) return;
  char msg[256];   /* lua_pushfstring knows no %.1f */
  snprintf(msg, sizeof msg, "farm: %s take %.1f MiB encoded; a link carries at most %.1f MiB "
           "per job (farm.config{max_message = bytes} raises it)", what,
           n / 1048576.0, c->maxmsg / 1048576.0);
  fail_lua(L, "%s", msg);
}


static farm_fn *check_fn(lua_State *L, int i) {
  farm_fn *f = ((fn_ud *)luaL_checkudata(L, i, FN_MT))->fn;
  if (!f) fail_lua(L, "farm: this function package was already collected");
  return f;
}

/* core.submit(ctx, fn, describe, namesfn, ...) -> future */
static int l_submit(lua_State *L) {
  farm_ctx *c = check_ctx(L, 1);
  farm_fn *f = check_fn(L, 2);
  int first = 5, n = lua_gettop(L) - 4;
  if (n < 0) n = 0;
  farm_encoder e;
  setup_encoder(L, &e, 3, 4, first, n, "argument");
  c->enc.n = 0;
  farm_codec_encode(L, &c->enc, first, n, &e);
  check_size(L, c, c->enc.n + f->n, "the function and its arguments");
  farm_job *j = new_job(L, c, f, FARM_MODE_CALL);
  j->args = farm__sched_take_enc(c, &j->nargs);
  if (!j->args) return luaL_error(L, "farm: out of memory");
  farm__sched_enqueue(c, j);
  farm__sched_submitted(c);
  return 1;
}

/* core.submit_map(ctx, fn, describe, namesfn, i, j, list1, ...) -> future for
   rows i..j of the lists (one MAP job: the worker calls fn on each row). */
static int l_submit_map(lua_State *L) {
  farm_ctx *c = check_ctx(L, 1);
  farm_fn *f = check_fn(L, 2);
  lua_Integer lo = luaL_checkinteger(L, 5), hi = luaL_checkinteger(L, 6);
  int nl = lua_gettop(L) - 6;
  luaL_argcheck(L, nl >= 1 && hi >= lo, 7, "a list and a nonempty range");
  luaL_checkstack(L, nl + LUA_MINSTACK, "too many lists for farm.map");
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
  c->enc.n = 0;
  farm_codec_encode(L, &c->enc, base, nl + 1, &e);
  check_size(L, c, c->enc.n + f->n, "the function and the items of one map chunk");
  lua_settop(L, 6 + nl);
  farm_job *j = new_job(L, c, f, FARM_MODE_MAP);
  j->args = farm__sched_take_enc(c, &j->nargs);
  if (!j->args) return luaL_error(L, "farm: out of memory");
  farm__sched_enqueue(c, j);
  farm__sched_submitted(c);
  return 1;
}

static int l_job_gc(lua_State *L) {
  job_ud *u = luaL_checkudata(L, 1, JOB_MT);
  if (u->job) farm__job_unref(u->job);
  u->job = NULL;
  return 0;
}

static const char *const state_names[] = { "pending", "running", "done", "failed", "cancelled" };

/* pending: not started (in the queue, or waiting at a worker); running: its
   worker runs it now (the worker's state page says so). */
static int l_status(lua_State *L) {
  farm_job *j = check_job(L, 1);
  poll_progress(L, 1, j);
  int st = j->state;
  if (st == JOB_SENT && !farm__sched_running(job_ctx(L, 1), j)) st = JOB_QUEUED;
  lua_pushstring(L, state_names[st]);
  return 1;
}

static int l_done(lua_State *L) {
  farm_job *j = check_job(L, 1);
  poll_progress(L, 1, j);
  lua_pushboolean(L, farm__job_over(j));
  return 1;
}

static int l_id(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)check_job(L, 1)->id);
  return 1;
}

/* core.cancel(job): a job not started yet (in the client's queue, or waiting
   at a worker) is cancelled and true returned; a running or finished one is not. */
static int l_cancel(lua_State *L) {
  farm_job *j = check_job(L, 1);
  farm_ctx *c = job_ctx(L, 1);
  int ok = 0;
  if (j->state == JOB_QUEUED) {
    j->state = JOB_CANCELLED;      /* dropped from the queue when dispatch meets it */
    c->nqueued--;
    free(j->args); j->args = NULL; j->nargs = 0;
    ok = 1;
  } else if (!c->closed) {
    ok = farm__sched_cancel_sent(c, j);
  }
  lua_pushboolean(L, ok);
  return 1;
}

/* core.pump(ctx, timeout) -> messages handled (false when interrupted) */
static int l_pump(lua_State *L) {
  farm_ctx *c = check_ctx(L, 1);
  int n = farm__sched_pump(c, luaL_optnumber(L, 2, 0));
  if (n < 0) lua_pushboolean(L, 0); else lua_pushinteger(L, n);
  return 1;
}

/* core.wait(job, timeout) -> true when the job is over; false on timeout
   or when a signal arrived (the Lua caller decides whether to go on). */
static int l_wait(lua_State *L) {
  farm_job *j = check_job(L, 1);
  farm_ctx *c = job_ctx(L, 1);
  double timeout = luaL_optnumber(L, 2, HUGE_VAL);
  luaL_argcheck(L, timeout == timeout, 2, "timeout is not a number");
  double until = farm__now() + timeout;
  while (!farm__job_over(j) && !c->closed) {   /* at least one look, even with no time */
    double left = until - farm__now();
    if (farm__sched_pump(c, left > 0 ? left : 0) < 0 || left <= 0) break;
  }
  lua_pushboolean(L, farm__job_over(j));
  return 1;
}

/* core.result(job, resolve, cache) -> true, values... | false, message, traceback, where */
static int l_result(lua_State *L) {
  farm_job *j = check_job(L, 1);
  if (j->state == JOB_DONE) {
    farm_decoder d = {0};
    lua_pushglobaltable(L);
    d.env = lua_gettop(L);
    if (!lua_isnoneornil(L, 2)) d.resolve = 2;
    if (!lua_isnoneornil(L, 3)) d.cache = 3;
    lua_pushboolean(L, 1);
    int n = farm_codec_decode(L, j->res, j->nres, &d);
    return n + 1;
  }
  lua_pushboolean(L, 0);
  if (j->state == JOB_CANCELLED) lua_pushliteral(L, "the job was cancelled");
  else if (j->state == JOB_FAILED) lua_pushlstring(L, j->res ? j->res : "", j->nres);
  else lua_pushliteral(L, "the job has not finished");
  lua_pushlstring(L, j->tb ? j->tb : "", j->ntb);
  lua_pushstring(L, j->where);
  return 4;
}

static int l_stdout(lua_State *L) {
  farm_job *j = check_job(L, 1);
  if (j->out) lua_pushlstring(L, j->out, j->nout); else lua_pushnil(L);
  return 1;
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
    lua_rawseti(L, farm__job_over(u->job) ? 2 : 3, farm__job_over(u->job) ? ++nd : ++np);
  }
  return 2;
}

/* core.stats(ctx) -> { workers = { {name=, pid=, jobs=, busy=}, ... }, jobs=, busy=, elapsed= } */
static int l_stats(lua_State *L) {
  farm_ctx *c = luaL_checkudata(L, 1, CTX_MT);
  lua_newtable(L);
  lua_newtable(L);
  uint64_t jobs = 0;
  double busy = 0;
  for (int i = 0; i < c->nw; i++) {
    wslot *w = &c->w[i];
    lua_createtable(L, 0, 4);
    lua_pushfstring(L, "local:%d", i + 1);
    lua_setfield(L, -2, "name");
    lua_pushinteger(L, w->pid);
    lua_setfield(L, -2, "pid");
    lua_pushinteger(L, (lua_Integer)w->jobs);
    lua_setfield(L, -2, "jobs");
    lua_pushnumber(L, w->busy);
    lua_setfield(L, -2, "busy");
    lua_rawseti(L, -2, i + 1);
    jobs += w->jobs;
    busy += w->busy;
  }
  lua_setfield(L, -2, "workers");
  lua_pushinteger(L, (lua_Integer)jobs);
  lua_setfield(L, -2, "jobs");
  lua_pushnumber(L, busy);
  lua_setfield(L, -2, "busy");
  lua_pushnumber(L, farm__now() - c->t0);
  lua_setfield(L, -2, "elapsed");
  lua_pushinteger(L, (lua_Integer)c->nqueued);
  lua_setfield(L, -2, "queued");
  lua_pushinteger(L, (lua_Integer)c->fn_sent);
  lua_setfield(L, -2, "functions_sent");
  lua_pushinteger(L, (lua_Integer)c->bytes_sent);
  lua_setfield(L, -2, "bytes_sent");
  lua_pushinteger(L, (lua_Integer)c->batches_sent);
  lua_setfield(L, -2, "batches_sent");
  return 1;
}

static int l_workers(lua_State *L) {
  farm_ctx *c = luaL_checkudata(L, 1, CTX_MT);
  lua_pushinteger(L, c->closed ? 0 : farm__sched_workers(c));
  return 1;
}

static int l_pids(lua_State *L) {
  farm_ctx *c = luaL_checkudata(L, 1, CTX_MT);
  lua_newtable(L);
  for (int i = 0; i < c->nw; i++) {
    lua_pushinteger(L, c->w[i].pid);
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

void farm__open_client(lua_State *L, int core) {
  static const luaL_Reg ctx_m[] = { { "__gc", l_close }, { "__close", l_close }, { NULL, NULL } };
  luaL_newmetatable(L, CTX_MT);
  luaL_setfuncs(L, ctx_m, 0);
  lua_pop(L, 1);
  luaL_newmetatable(L, FN_MT);
  lua_pushcfunction(L, l_fn_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_newmetatable(L, JOB_MT);
  lua_pushcfunction(L, l_job_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  static const luaL_Reg fns[] = {
    { "new", l_new }, { "close", l_close }, { "closed", l_closed },
    { "package", l_package }, { "submit", l_submit }, { "submit_map", l_submit_map },
    { "status", l_status }, { "done", l_done }, { "id", l_id }, { "cancel", l_cancel },
    { "pump", l_pump }, { "wait", l_wait }, { "result", l_result }, { "stdout", l_stdout },
    { "split_done", l_split_done }, { "stats", l_stats }, { "workers", l_workers },
    { "pids", l_pids }, { "set_future_mt", l_set_future_mt }, { "is_future", l_is_future },
    { "now", l_now },
    { NULL, NULL } };
  lua_pushvalue(L, core);
  luaL_setfuncs(L, fns, 0);
  lua_pop(L, 1);
}
