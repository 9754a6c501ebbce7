/*
 * worker.c -- `farm worker`: one process, one lua_State, jobs from one link.
 *
 * The worker compiles each function package once and keeps it by hash. Every
 * job runs as a coroutine (so a later version can let a job wait on sub-jobs
 * without blocking this loop). Descriptor 1 is a memfd: whatever a job writes
 * to standard output (print, io.write, io.stdout, a child process) is taken
 * from it after the job and sent with its result. Results go back in batches:
 * after each job the batch is sent if RESULT_DELAY has passed or no job is
 * waiting, and a long job sends what waits before it from a count hook. Between
 * jobs the worker reads its link, so CANCEL reaches a job still waiting here.
 * Before and after each job it notes in the shared state page (wstate.h) which
 * job runs, so the client knows whom to blame if this process dies.
 *
 * The worker exits when told (QUIT), when its link reports nonsense it cannot
 * answer, or when its parent is gone (PR_SET_PDEATHSIG, and a getppid check).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <poll.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include "farm.h"
#include "clock.h"
#include "codec.h"
#include "proto.h"
#include "transport.h"
#include "worker.h"
#include "wstate.h"

#define RESULT_DELAY 0.001      /* results wait at most this long for company */
#define RESULT_BYTES (4u << 20)  /* ...and a RESULTS message grows at most this big */
#define ERROR_BYTES (1u << 16)   /* an error message or traceback travels this much at most */
#define FLUSH_HOOK_COUNT 20000   /* instructions between looks at the clock in a long job */

typedef struct worker {
  lua_State *L;
  farm_link *link;
  int slot;
  pid_t parent;
  size_t maxmsg;
  farm_buf res;          /* RESULTS message being built */
  uint32_t nres;
  double last_flush;
  farm_buf cap;          /* what the running job printed */
  farm_buf enc;          /* scratch for encoding results */
  int fns;               /* registry refs: hash -> function; compiled chunk cache; */
  int chunks;            /*   ship.resolve; ship.describe; ship.names */
  int resolve, describe, names, remember;
  lua_State *co;         /* the coroutine jobs run in, reused while it ends cleanly */
  int co_ref;
  size_t result_limit;   /* a RESULTS message stays under this */
  farm_wstate *state;    /* shared with the client, or NULL */
  int outfd;             /* the memfd on descriptor 1, or -1 */
  void **inbox;          /* JOBS messages received, not yet run (FIFO) */
  size_t *inlen, nin, capin;
  size_t inhead;         /* inbox[inhead..nin) are still to run */
  uint64_t *cancels;     /* ids the client cancelled that have not come up yet */
  size_t ncancel, capcancel;
  int quit;              /* QUIT came */
  char err[256];         /* why the link was abandoned */
} worker;

/* ---- captured output ------------------------------------------------------ */

/* Move what the job wrote to descriptor 1 into w->cap. */
static void collect_output(worker *w) {
  fflush(stdout);
  if (w->outfd < 0) return;
  off_t n = lseek(w->outfd, 0, SEEK_CUR);
  if (n <= 0) return;
  if (farm__buf_reserve(&w->cap, (size_t)n) == 0) {
    ssize_t got = pread(w->outfd, w->cap.p + w->cap.n, (size_t)n, 0);
    if (got > 0) w->cap.n += (size_t)got;
  }
  if (ftruncate(w->outfd, 0) != 0 || lseek(w->outfd, 0, SEEK_SET) != 0) {
    fprintf(stderr, "farm worker %d: cannot reset captured output\n", w->slot + 1);
  }
}

/* ---- results --------------------------------------------------------------- */

static void flush(worker *w) {
  if (!w->nres) return;
  farm__put_u32le_at(&w->res, 4, w->nres);
  if (farm__link_send(w->link, w->res.p, w->res.n, 0) != 0) {
    fprintf(stderr, "farm worker %d: cannot send results: %s\n", w->slot + 1, farm__link_error());
    exit(3);
  }
  farm__msg_begin(&w->res, FARM_MSG_RESULTS);
  farm__buf_put(&w->res, "\0\0\0\0", 4);
  w->nres = 0;
  w->last_flush = farm__now();
}

static void result_head(worker *w, uint64_t id, uint64_t attempt, int status, double busy) {
  farm__buf_uvar(&w->res, id);
  farm__buf_uvar(&w->res, attempt);
  farm__buf_u8(&w->res, (uint8_t)status);
  farm__buf_uvar(&w->res, (uint64_t)(busy * 1e9));
  farm__buf_str(&w->res, w->cap.p, w->cap.n);
  w->cap.n = 0;
  w->nres++;
}

static void result_error(worker *w, uint64_t id, uint64_t attempt, double busy,
                         const char *msg, size_t nmsg, const char *tb, size_t ntb) {
  result_head(w, id, attempt, FARM_JOB_ERROR, busy);
  size_t cut = w->maxmsg / 8 < ERROR_BYTES ? w->maxmsg / 8 : ERROR_BYTES;  /* a huge message is cut */
  farm__buf_str(&w->res, msg, nmsg < cut ? nmsg : cut);
  farm__buf_str(&w->res, tb, ntb < cut ? ntb : cut);
}

/* ---- protected helpers (every Lua error in them is the job's, not ours) --- */

/* decode(block) -> values ; upvalue-free, the decoder tables come as arguments */
static int p_decode(lua_State *L) {
  worker *w = lua_touserdata(L, 1);
  size_t n;
  const char *p = lua_touserdata(L, 2);
  n = (size_t)lua_tointeger(L, 3);
  lua_settop(L, 0);
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->resolve);
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->chunks);
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->remember);
  farm_decoder d = { .env = 0, .resolve = 1, .cache = 2, .remember = 3 };  /* results can be functions */
  return farm_codec_decode(L, p, n, &d);
}

/* encode(w, values...) into w->enc */
static int p_encode(lua_State *L) {
  worker *w = lua_touserdata(L, 1);
  int n = lua_gettop(L) - 1;
  int top = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->describe);
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->names);
  lua_call(L, 0, 1);
  lua_pushglobaltable(L);
  farm_encoder e = { top + 2, top + 1, top + 3, "result" };
  w->enc.n = 0;
  farm_codec_encode(L, &w->enc, 2, n, &e);
  return 0;
}

/* Decode a block in protected mode: pushes the values and returns their count,
   or leaves the error message on the stack and returns -1. */
static int decode_block(worker *w, const char *p, size_t n) {
  lua_State *L = w->L;
  int top = lua_gettop(L);
  lua_pushcfunction(L, p_decode);
  lua_pushlightuserdata(L, w);
  lua_pushlightuserdata(L, (void *)p);
  lua_pushinteger(L, (lua_Integer)n);
  if (lua_pcall(L, 3, LUA_MULTRET, 0) != LUA_OK) return -1;
  return lua_gettop(L) - top;
}

/* ---- running jobs ----------------------------------------------------------- */

static lua_State *coroutine(worker *w) {
  if (!w->co) {
    w->co = lua_newthread(w->L);
    w->co_ref = luaL_ref(w->L, LUA_REGISTRYINDEX);
  }
  return w->co;
}

static void drop_coroutine(worker *w) {
#if LUA_VERSION_RELEASE_NUM >= 50406
  lua_closethread(w->co, w->L);
#else
  lua_resetthread(w->co);
#endif
  luaL_unref(w->L, LUA_REGISTRYINDEX, w->co_ref);
  w->co = NULL;
}

/* tostring(v), protected: an error object's __tostring may raise, or lie. */
static int p_tostring(lua_State *L) {
  luaL_tolstring(L, 1, NULL);
  return 1;
}

static void push_error_text(lua_State *L, int idx) {
  lua_pushcfunction(L, p_tostring);
  lua_pushvalue(L, idx);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK || lua_type(L, -1) != LUA_TSTRING) {
    lua_pop(L, 1);
    lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, idx));
  }
}

/* While a job runs with results waiting to go, a count hook sends them once
   RESULT_DELAY has passed: a long job does not hold back short ones. */
static void flush(worker *w);
static void flush_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  worker *w = *(worker **)lua_getextraspace(L);
  if (farm__now() - w->last_flush < RESULT_DELAY) return;
  flush(w);
  lua_sethook(L, NULL, 0, 0);
}

static int fail_with(lua_State *L, const char *msg) {
  lua_pushstring(L, msg);
  lua_pushliteral(L, "");
  return -1;
}

/* Call the function under nargs arguments on top of L, in the job coroutine.
   Leaves the results on L and returns their count, or leaves the error
   message and traceback on L and returns -1. */
static int run(worker *w, int nargs) {
  lua_State *L = w->L, *co = coroutine(w);
  if (!lua_checkstack(co, nargs + 1 + LUA_MINSTACK)) {
    lua_pop(L, nargs + 1);
    return fail_with(L, "too many arguments for one job");
  }
  lua_xmove(L, co, nargs + 1);
  if (w->nres) lua_sethook(co, flush_hook, LUA_MASKCOUNT, FLUSH_HOOK_COUNT);
  int nres = 0;
  int st = lua_resume(co, L, nargs, &nres);
  lua_sethook(co, NULL, 0, 0);
  if (st == LUA_OK) {
    if (lua_checkstack(L, nres + LUA_MINSTACK)) {
      lua_xmove(co, L, nres);
      return nres;
    }
    lua_settop(co, 0);
    return fail_with(L, "too many results from one job");
  }
  if (st == LUA_YIELD) {
    lua_pop(co, nres);
    fail_with(L, "the job yielded: coroutine.yield outside a coroutine of its own is not supported");
  } else {
    lua_xmove(co, L, 1);                 /* the error object */
    int e = lua_gettop(L);
    luaL_traceback(L, co, NULL, 0);
    push_error_text(L, e);
    lua_insert(L, -2);                   /* message, traceback */
    lua_remove(L, e);
  }
  drop_coroutine(w);                     /* a failed coroutine is not reused */
  return -1;
}

/* Encode the n values on top of L as the job's result; pops them. 0 or -1 (error on L). */
static int encode_results(worker *w, int n) {
  lua_State *L = w->L;
  lua_pushcfunction(L, p_encode);
  lua_insert(L, -n - 1);
  lua_pushlightuserdata(L, w);
  lua_insert(L, -n - 1);
  if (lua_pcall(L, n + 1, 0, 0) != LUA_OK) return -1;
  return 0;   /* (whether it fits the link, finish() decides) */
}

/* Append a finished job's result: its encoded values (w->enc) when ok, else
   the message and traceback on top of L. */
static void finish(worker *w, uint64_t id, uint64_t att, double busy, int ok) {
  collect_output(w);
  size_t room = w->maxmsg - (4u << 10);   /* the client drops a message over its limit */
  if (w->cap.n > room / 2) {              /* output that cannot travel is cut, and says so */
    char note[96];
    int k = snprintf(note, sizeof note, "\n[farm: %zu bytes of output cut]\n", w->cap.n - room / 2);
    w->cap.n = room / 2 - (size_t)k;
    farm__buf_put(&w->cap, note, (size_t)k);
  }
  if (ok && w->enc.n + w->cap.n > room) {
    lua_pushfstring(w->L, "the job's results and output take %d MiB; a link carries at most %d MiB",
                    (int)((w->enc.n + w->cap.n) >> 20), (int)(w->maxmsg >> 20));
    lua_pushliteral(w->L, "");
    ok = 0;
  }
  size_t size = (ok ? w->enc.n : 2 * ERROR_BYTES) + w->cap.n + 64;
  if (w->nres && w->res.n + size > w->result_limit) flush(w);
  if (ok) {
    result_head(w, id, att, FARM_JOB_OK, busy);
    farm__buf_str(&w->res, w->enc.p, w->enc.n);
    return;
  }
  size_t nm, nt;
  const char *tb = lua_tolstring(w->L, -1, &nt);
  const char *m = lua_tolstring(w->L, -2, &nm);
  result_error(w, id, att, busy, m ? m : "error", m ? nm : 5, tb ? tb : "", tb ? nt : 0);
}

static void job_call(worker *w, uint64_t id, uint64_t att, const char *a, size_t na) {
  lua_State *L = w->L;
  int top = lua_gettop(L) - 1;           /* the function is on top */
  double t0 = farm__now();
  int nargs = decode_block(w, a, na);
  int n = -1;
  if (nargs >= 0) n = run(w, nargs);
  else lua_pushliteral(L, "");           /* no traceback for a bad argument block */
  int ok = n >= 0 && encode_results(w, n) == 0;
  if (!ok && n >= 0) lua_pushliteral(L, "");    /* encoding failed: no traceback */
  finish(w, id, att, farm__now() - t0, ok);
  lua_settop(L, top);
}

/* A MAP job: its block is n, then one slice per list; returns one table. */
static void job_map(worker *w, uint64_t id, uint64_t att, const char *a, size_t na) {
  lua_State *L = w->L;
  int fn = lua_gettop(L);
  int top = fn - 1;
  double t0 = farm__now();
  int k = decode_block(w, a, na);
  int err = 0;
  if (k < 2 || !lua_isinteger(L, fn + 1)) {
    if (k >= 0) { lua_settop(L, fn); lua_pushliteral(L, "malformed message: bad map chunk"); }
    lua_pushliteral(L, "");
    err = 1;
  } else if (!lua_checkstack(L, k + LUA_MINSTACK)) {
    lua_settop(L, fn);
    fail_with(L, "too many lists for one map");
    err = 1;
  } else {
    lua_Integer n = lua_tointeger(L, fn + 1);
    int nl = k - 1, out;
    lua_createtable(L, (int)(n > 0 && n < 1 << 24 ? n : 0), 0);
    out = lua_gettop(L);
    for (lua_Integer i = 1; i <= n && !err; i++) {
      lua_pushvalue(L, fn);
      for (int l = 0; l < nl; l++) lua_geti(L, fn + 2 + l, i);
      int r = run(w, nl);
      if (r < 0) { err = 1; break; }
      if (r > 0) { lua_pop(L, r - 1); lua_rawseti(L, out, i); }
    }
    if (!err) {
      lua_pushvalue(L, out);
      if (encode_results(w, 1) < 0) { lua_pushliteral(L, ""); err = 1; }
    }
  }
  finish(w, id, att, farm__now() - t0, !err);
  lua_settop(L, top);
}

/* Find (or compile from its block) the function for hash; pushes it, or pushes
   an error message and returns -1. */
static int get_function(worker *w, const unsigned char *hash, const char *pkg, size_t npkg) {
  lua_State *L = w->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->fns);
  lua_pushlstring(L, (const char *)hash, FARM_HASHLEN);
  if (lua_rawget(L, -2) == LUA_TFUNCTION) { lua_remove(L, -2); return 0; }
  lua_pop(L, 1);
  if (!pkg) {
    lua_pop(L, 1);
    lua_pushliteral(L, "protocol error: function not cached on this worker");
    return -1;
  }
  int n = decode_block(w, pkg, npkg);
  if (n != 1 || !lua_isfunction(L, -1)) {
    if (n >= 0) { lua_pop(L, n); lua_pushliteral(L, "malformed message: function block"); }
    lua_remove(L, -2);
    return -1;
  }
  lua_pushlstring(L, (const char *)hash, FARM_HASHLEN);
  lua_pushvalue(L, -2);
  lua_rawset(L, -4);
  lua_remove(L, -2);
  return 0;
}

/* ---- the link: jobs in, cancels, quit ----------------------------------------- */

static int grow(void **p, size_t *cap, size_t need, size_t size) {
  if (need <= *cap) return 0;
  size_t n = *cap ? *cap * 2 : 16;
  while (n < need) n *= 2;
  void *q = realloc(*p, n * size);
  if (!q) return -1;
  *p = q;
  *cap = n;
  return 0;
}

static int was_cancelled(worker *w, uint64_t id) {
  for (size_t i = 0; i < w->ncancel; i++)
    if (w->cancels[i] == id) { w->cancels[i] = w->cancels[--w->ncancel]; return 1; }
  return 0;
}

/* Take every message waiting on the link (without blocking): JOBS go to the
   inbox, CANCEL ids to the cancel list, QUIT sets quit. -1 (w->err says why)
   on anything else. */
static int take_messages(worker *w) {
  for (;;) {
    void *m;
    size_t n;
    if (farm__link_recv(w->link, &m, &n, 1) != 0) return 0;
    farm_rd r;
    int type = farm__msg_open(&r, m, n, w->err, sizeof w->err);
    if (type == FARM_MSG_JOBS) {
      if (grow((void **)&w->inbox, &w->capin, w->nin + 1, sizeof *w->inbox) < 0) goto nomem;
      size_t cap = w->capin;   /* inlen grows alongside */
      void *q = realloc(w->inlen, cap * sizeof *w->inlen);
      if (!q) goto nomem;
      w->inlen = q;
      w->inbox[w->nin] = m;
      w->inlen[w->nin++] = n;
      continue;
    }
    if (type == FARM_MSG_CANCEL) {
      uint32_t k = farm__rd_u32le(&r);
      for (uint32_t i = 0; i < k && !r.err; i++) {
        uint64_t id = farm__rd_uvar(&r);
        if (grow((void **)&w->cancels, &w->capcancel, w->ncancel + 1, sizeof *w->cancels) < 0) goto nomem;
        if (!r.err) w->cancels[w->ncancel++] = id;
      }
      farm__link_free(m);
      if (!r.err) continue;
      snprintf(w->err, sizeof w->err, "malformed message from the client");
      return -1;
    }
    farm__link_free(m);
    if (type == FARM_MSG_QUIT) { w->quit = 1; return 0; }
    if (type >= 0) snprintf(w->err, sizeof w->err, "malformed message from the client");
    return -1;
  nomem:
    farm__link_free(m);
    snprintf(w->err, sizeof w->err, "out of memory");
    return -1;
  }
}

static int on_jobs(worker *w, farm_rd *r) {
  lua_State *L = w->L;
  int flags = farm__rd_u8(r);
  if (flags & 1) {                       /* the client forgot what we have: so do we */
    lua_newtable(L);
    lua_rawseti(L, LUA_REGISTRYINDEX, w->fns);
  }
  uint32_t count = farm__rd_u32le(r);
  for (uint32_t i = 0; i < count && !r->err && !w->quit; i++) {
    uint64_t id = farm__rd_uvar(r), att = farm__rd_uvar(r);
    int mode = farm__rd_u8(r);
    const unsigned char *hash = farm__rd_bytes(r, FARM_HASHLEN);
    int has = farm__rd_u8(r);
    size_t npkg = 0, na;
    const char *pkg = has ? farm__rd_str(r, &npkg) : NULL;
    const char *a = farm__rd_str(r, &na);
    if (r->err || (has && !pkg) || !a) break;
    int top = lua_gettop(L);
    if (get_function(w, hash, pkg, npkg) < 0) {   /* compiled even if cancelled: it is cached */
      size_t nm;
      const char *m = lua_tolstring(L, -1, &nm);
      result_error(w, id, att, 0, m, nm, "", 0);
    } else if (w->ncancel && was_cancelled(w, id)) {
      result_head(w, id, att, FARM_JOB_CANCELLED, 0);
    } else {
      if (w->state) { w->state->attempt = att; w->state->job = id; }
      if (mode == FARM_MODE_MAP) job_map(w, id, att, a, na);
      else job_call(w, id, att, a, na);
      if (w->state) w->state->job = 0;
    }
    lua_settop(L, top);
    if (w->res.n >= w->result_limit || farm__now() - w->last_flush >= RESULT_DELAY) {
      flush(w);
      if (take_messages(w) < 0) return -1;
    }
  }
  if (r->err) snprintf(w->err, sizeof w->err, "malformed message from the client");
  return r->err ? -1 : 0;
}

/* Serve until QUIT, an orphaning, or a link error; returns the exit status. */
static int serve(worker *w) {
  while (!w->quit) {
    if (w->inhead < w->nin) {
      void *m = w->inbox[w->inhead];
      size_t n = w->inlen[w->inhead++];
      farm_rd r;
      farm__rd_init(&r, m, n);
      farm__rd_bytes(&r, 4);             /* the header, checked in take_messages */
      int rc = on_jobs(w, &r);
      farm__link_free(m);
      if (rc < 0) return 3;
      continue;
    }
    w->inhead = w->nin = 0;
    flush(w);
    struct pollfd pfd = { .fd = farm__link_rcvfd(w->link), .events = POLLIN };
    int pr = poll(&pfd, 1, 1000);
    if (w->parent > 0 && getppid() != w->parent) return 0;   /* orphaned: nobody wants our results */
    if (pr > 0 && take_messages(w) < 0) return 3;
  }
  return 0;
}

/* ---- set-up and the loop ----------------------------------------------------- */

static int setup(lua_State *L) {
  worker *w = lua_touserdata(L, 1);
  *(worker **)lua_getextraspace(L) = w;    /* for hooks; threads copy it */
  luaL_openlibs(L);
  luaL_requiref(L, "farm", luaopen_farm, 1);
  lua_getfield(L, -1, "_on_worker");
  lua_call(L, 0, 0);
  lua_pop(L, 1);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "farm.ship");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "resolve");
  w->resolve = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_getfield(L, -1, "describe");
  w->describe = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_getfield(L, -1, "names");
  w->names = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_getfield(L, -1, "remember");
  w->remember = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pop(L, 1);                           /* (farm.lua hooked load: chunks are remembered) */
  lua_newtable(L);
  w->fns = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_newtable(L);
  w->chunks = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

int farm__worker_main(const char *url, int slot, long parent, size_t maxmsg, int statefd) {
  worker w;
  memset(&w, 0, sizeof w);
  w.slot = slot;
  w.parent = (pid_t)parent;
  w.maxmsg = maxmsg;
  signal(SIGINT, SIG_IGN);               /* Ctrl-C is the client's to handle */
  signal(SIGPIPE, SIG_IGN);
  farm__buf_init(&w.res);
  farm__buf_init(&w.cap);
  farm__buf_init(&w.enc);
  w.result_limit = maxmsg - (4u << 10) < RESULT_BYTES ? maxmsg - (4u << 10) : RESULT_BYTES;
  w.state = statefd >= 0 ? farm__wstate_attach(statefd) : NULL;
  /* descriptor 1 becomes a memfd: all a job writes there is its output */
  w.outfd = -1;
  int ofd = memfd_create("farm-job-output", MFD_CLOEXEC);
  if (ofd >= 0 && dup2(ofd, 1) == 1) w.outfd = 1;
  if (ofd >= 0 && ofd != 1) close(ofd);
  setvbuf(stdout, NULL, _IOLBF, 0);      /* lines keep their order with a child's output */
  char err[256];
  if (farm__link_open(&w.link, url, 0, maxmsg + (1u << 16), err, sizeof err) < 0) {
    fprintf(stderr, "farm worker: %s\n", err);
    return 2;
  }
  w.L = luaL_newstate();
  if (w.L) {
    lua_pushcfunction(w.L, setup);
    lua_pushlightuserdata(w.L, &w);
  }
  if (!w.L || lua_pcall(w.L, 1, 0, 0) != LUA_OK) {
    fprintf(stderr, "farm worker: cannot set up Lua: %s\n", w.L ? lua_tostring(w.L, -1) : "out of memory");
    return 2;
  }
  /* HELLO, without blocking: a client that never listens must not hold us */
  farm_buf hello;
  farm__buf_init(&hello);
  farm__msg_begin(&hello, FARM_MSG_HELLO);
  farm__buf_uvar(&hello, (uint64_t)getpid());
  farm__buf_uvar(&hello, (uint64_t)slot);
  while (farm__link_send(w.link, hello.p, hello.n, 1) == FARM_EAGAIN) {
    struct pollfd pfd = { .fd = farm__link_sndfd(w.link), .events = POLLIN };
    poll(&pfd, 1, 1000);
    if (w.parent > 0 && getppid() != w.parent) { w.quit = 1; break; }
  }
  farm__buf_free(&hello);
  farm__msg_begin(&w.res, FARM_MSG_RESULTS);
  farm__buf_put(&w.res, "\0\0\0\0", 4);
  w.last_flush = farm__now();
  int rc = serve(&w);
  if (rc) fprintf(stderr, "farm worker %d: %s\n", slot + 1, w.err);
  for (size_t i = w.inhead; i < w.nin; i++) farm__link_free(w.inbox[i]);
  free(w.inbox);
  free(w.inlen);
  free(w.cancels);
  farm__wstate_free(w.state);
  lua_close(w.L);
  farm__link_close(w.link);
  farm__buf_free(&w.res);
  farm__buf_free(&w.cap);
  farm__buf_free(&w.enc);
  return rc;
}
