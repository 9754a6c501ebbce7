/*
 * client.c -- the client: job table, credit-based scheduler, local pool, and
 * their binding to Lua as farm.core.
 *
 * The client never runs jobs. Each worker holds a credit: how many jobs it may
 * have in flight (running plus prefetched). The credit follows the measured job
 * time, so that about CREDIT_SECONDS of work sits at each worker: trivial jobs
 * travel thousands to a message, long ones two at a time (one running, one
 * waiting, to hide the round trip). Queued jobs are shared out fairly among the
 * workers with free credit, never dealt round-robin. The client knows at every
 * moment which job is at which worker, so a worker that dies gives its jobs back.
 *
 * Progress happens when the client calls in (submit, result, wait, pump): there
 * is no thread. Submit pumps at most every PUMP_INTERVAL so jobs leave in batches.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sodium.h>
#include <lua.h>
#include <lauxlib.h>
#include "farm.h"
#include "client.h"
#include "clock.h"
#include "codec.h"
#include "luafuncs.h"
#include "pool.h"
#include "transport.h"

#define CREDIT_MIN 2
#define CREDIT_MAX 2048
#define CREDIT_SECONDS 0.004       /* work kept queued at each worker */
#define BATCH_BYTES (4u << 20)     /* a JOBS message grows to this, then goes */
#define PUMP_INTERVAL 50e-6        /* submit pumps at most this often */
#define REAP_INTERVAL 0.1
#define KNOWN_MAX 4096             /* functions a worker keeps before it is told to forget */
#define MAX_RETRIES 2              /* a job whose worker died is tried this often more */
#define DEFAULT_MAX_MESSAGE (256u << 20)
#define START_TIMEOUT 30.0         /* seconds for a new pool's workers to connect */

typedef struct wslot {
  int slot, gen;
  pid_t pid;
  int ready;                       /* HELLO seen */
  int dead;                        /* failed before HELLO: not restarted */
  farm_link *link;
  char url[PATH_MAX + 32];
  farm_job *head, *tail;           /* in flight, in the order sent */
  int inflight;
  farm_buf pend;                   /* a message the link could not take yet */
  uint64_t *known;                 /* open-addressing set of function hashes */
  int nknown;
  int forget;                      /* next JOBS tells the worker to drop its cache */
  uint64_t jobs;                   /* stats */
  double busy;
} wslot;

typedef struct farm_ctx {
  int nw;
  wslot *w;
  int closed;
  int echo;
  char exe[PATH_MAX];
  char dir[PATH_MAX];
  farm_job *qhead, *qtail;
  size_t nqueued;
  uint64_t nextid;
  double est;                      /* EWMA of seconds per job; 0 = not known yet */
  double t0, last_pump, last_reap;
  size_t maxmsg;
  farm_buf msg;                    /* scratch: message being built */
  farm_buf enc;                    /* scratch: values being encoded */
  int rr;                          /* where the next dispatch round starts */
  uint64_t fn_sent, bytes_sent;    /* stats: function blocks and bytes sent */
  char err[512];
} farm_ctx;

/* ---- function packages and jobs ------------------------------------------ */

static void fn_unref(farm_fn *f) {
  if (f && --f->refs == 0) { free(f->p); free(f); }
}

static void job_unref(farm_job *j) {
  if (--j->refs > 0) return;
  fn_unref(j->fn);
  free(j->args); free(j->res); free(j->tb); free(j->out);
  free(j);
}

static char *dupmem(const void *p, size_t n) {
  char *d = malloc(n ? n : 1);
  if (d && n) memcpy(d, p, n);
  return d;
}

/* End a job with an error of the client's own making (it never reached a result). */
static void job_fail(farm_job *j, const char *msg) {
  j->state = JOB_FAILED;
  free(j->res);
  j->res = dupmem(msg, strlen(msg));
  j->nres = j->res ? strlen(msg) : 0;
  free(j->args); j->args = NULL; j->nargs = 0;
}

/* ---- the known-function set of a worker ---------------------------------- */

static uint64_t hkey(const unsigned char *h) {
  uint64_t k;
  memcpy(&k, h, sizeof k);
  return k ? k : 1;
}

/* 1 if the worker already has it; else records it and returns 0. */
static int known_check_add(wslot *w, const unsigned char *h) {
  size_t cap = KNOWN_MAX * 2, i;
  if (!w->known && !(w->known = calloc(cap, sizeof *w->known))) return 0;
  uint64_t k = hkey(h);
  for (i = k % cap; w->known[i]; i = (i + 1) % cap)
    if (w->known[i] == k) return 1;
  if (w->nknown >= KNOWN_MAX) {           /* full: start over, and tell the worker */
    memset(w->known, 0, cap * sizeof *w->known);
    w->nknown = 0;
    w->forget = 1;
    for (i = k % cap; w->known[i]; i = (i + 1) % cap) {}
  }
  w->known[i] = k;
  w->nknown++;
  return 0;
}

/* ---- workers ------------------------------------------------------------- */

/* The socket directory exists only while a worker is connecting: once all are
   connected it goes, so a client that ends by os.exit or SIGKILL leaves nothing. */
static int sockdir(farm_ctx *c) {
  if (c->dir[0]) return 0;
  const char *tmp = getenv("TMPDIR");
  if (!tmp || !*tmp) tmp = "/tmp";
  snprintf(c->dir, sizeof c->dir, "%s/farm-XXXXXX", tmp);
  if (mkdtemp(c->dir)) return 0;
  snprintf(c->err, sizeof c->err, "cannot make a directory for worker sockets in %s: %s",
           tmp, strerror(errno));
  c->dir[0] = 0;
  return FARM_ESPAWN;
}

static void unlink_sock(wslot *w) {
  if (strncmp(w->url, "ipc://", 6) == 0) unlink(w->url + 6);
}

static void connected(farm_ctx *c, wslot *w) {
  w->ready = 1;
  unlink_sock(w);
  for (int i = 0; i < c->nw; i++)
    if (!c->w[i].dead && !c->w[i].ready) return;
  if (c->dir[0]) rmdir(c->dir);
  c->dir[0] = 0;
}

static int slot_start(farm_ctx *c, wslot *w) {
  int rc = sockdir(c);
  if (rc < 0) return rc;
  w->gen++;
  snprintf(w->url, sizeof w->url, "ipc://%s/w%d.%d", c->dir, w->slot, w->gen);
  rc = farm__link_open(&w->link, w->url, 1, c->maxmsg + (1u << 16), c->err, sizeof c->err);
  if (rc < 0) return rc;
  pid_t pid = farm__spawn_worker(c->exe, w->url, w->slot, c->maxmsg, c->err, sizeof c->err);
  if (pid < 0) { farm__link_close(w->link); w->link = NULL; return (int)pid; }
  w->pid = pid;
  w->ready = 0;
  w->nknown = 0;
  if (w->known) memset(w->known, 0, KNOWN_MAX * 2 * sizeof *w->known);
  w->forget = 0;
  w->pend.n = 0;
  return 0;
}

/* Put a job back at the front of the queue (it keeps its place in line). */
static void requeue_front(farm_ctx *c, farm_job *j) {
  j->state = JOB_QUEUED;
  j->slot = -1;
  j->next = c->qhead;
  c->qhead = j;
  if (!c->qtail) c->qtail = j;
  c->nqueued++;
}

/* A worker ended: its jobs go back to the queue (or fail after MAX_RETRIES),
   and it is replaced unless it never came up. */
static void slot_lost(farm_ctx *c, wslot *w, const char *why) {
  farm_job *j = w->head, *next;
  farm_job *rev = NULL;
  for (; j; j = next) { next = j->next; j->next = rev; rev = j; }   /* requeue in order */
  for (j = rev; j; j = next) {
    next = j->next;
    if (j->state == JOB_SENT && j->attempt < MAX_RETRIES) {
      j->attempt++;
      requeue_front(c, j);
    } else {
      j->slot = -1;
      if (j->state == JOB_SENT) job_fail(j, why);
      job_unref(j);
    }
  }
  w->head = w->tail = NULL;
  w->inflight = 0;
  farm__link_close(w->link);
  unlink_sock(w);
  w->link = NULL;
  w->pid = 0;
  if (!w->ready) {
    w->dead = 1;
    snprintf(c->err, sizeof c->err, "cannot start a worker (%.300s): %.150s", c->exe, why);
    return;
  }
  if (slot_start(c, w) < 0) w->dead = 1;
}

static int live_workers(farm_ctx *c) {
  int n = 0;
  for (int i = 0; i < c->nw; i++) n += !c->w[i].dead;
  return n;
}

/* With no worker left, nothing queued can ever run: fail it, with the cause. */
static void fail_queue(farm_ctx *c, const char *why) {
  farm_job *j;
  while ((j = c->qhead)) {
    c->qhead = j->next;
    if (j->state == JOB_QUEUED) job_fail(j, why);
    job_unref(j);
  }
  c->qtail = NULL;
  c->nqueued = 0;
}

static void reap(farm_ctx *c) {
  char why[128];
  for (int i = 0; i < c->nw; i++) {
    wslot *w = &c->w[i];
    if (w->pid > 0 && farm__reaped(w->pid, why, sizeof why)) slot_lost(c, w, why);
  }
  if (live_workers(c) == 0) fail_queue(c, c->err[0] ? c->err : "no workers left");
  c->last_reap = farm__now();
}

/* ---- dispatch ------------------------------------------------------------ */

static int credit(farm_ctx *c) {
  if (c->est <= 0) return CREDIT_MIN;
  double k = CREDIT_SECONDS / c->est;
  return k < CREDIT_MIN ? CREDIT_MIN : k > CREDIT_MAX ? CREDIT_MAX : (int)k;
}

static int flush_pending(wslot *w) {
  if (!w->pend.n) return 0;
  int rc = farm__link_send(w->link, w->pend.p, w->pend.n, 1);
  if (rc == 0) w->pend.n = 0;
  return rc;
}

/* Build one JOBS message of up to k queued jobs for w, and send it. */
static void send_batch(farm_ctx *c, wslot *w, int k) {
  farm_buf *b = &c->msg;
  farm__msg_begin(b, FARM_MSG_JOBS);
  size_t flags_at = b->n;
  farm__buf_u8(b, 0);
  size_t count_at = b->n;
  farm__buf_put(b, "\0\0\0\0", 4);
  uint32_t count = 0;
  while (count < (uint32_t)k && c->qhead) {
    farm_job *j = c->qhead;
    c->qhead = j->next;
    if (!c->qhead) c->qtail = NULL;
    c->nqueued--;
    if (j->state != JOB_QUEUED) { job_unref(j); continue; }   /* cancelled */
    int has = known_check_add(w, j->fn->hash);
    farm__buf_uvar(b, j->id);
    farm__buf_uvar(b, j->attempt);
    farm__buf_u8(b, j->mode);
    farm__buf_put(b, j->fn->hash, FARM_HASHLEN);
    farm__buf_u8(b, !has);
    if (!has) { farm__buf_str(b, j->fn->p, j->fn->n); c->fn_sent++; }
    farm__buf_str(b, j->args, j->nargs);
    j->state = JOB_SENT;
    j->slot = w->slot;
    j->next = NULL;
    if (w->tail) w->tail->next = j; else w->head = j;
    w->tail = j;
    w->inflight++;
    count++;
    if (b->n >= BATCH_BYTES) break;
  }
  if (!count) return;
  c->bytes_sent += b->n;
  b->p[flags_at] = (char)(w->forget ? 1 : 0);
  w->forget = 0;
  farm__put_u32le_at(b, count_at, count);
  if (farm__link_send(w->link, b->p, b->n, 1) == FARM_EAGAIN) {
    farm_buf t = w->pend;        /* keep it; swap buffers rather than copy */
    w->pend = *b;
    *b = t;
    b->n = 0;
  }
}

static void dispatch(farm_ctx *c) {
  if (!c->nqueued) return;
  int cr = credit(c);
  int open = 0;
  for (int i = 0; i < c->nw; i++) {
    wslot *w = &c->w[i];
    if (w->ready && w->link && !w->pend.n && w->inflight < cr) open++;
  }
  for (int n = 0; n < c->nw && c->nqueued && open; n++) {
    wslot *w = &c->w[(c->rr + n) % c->nw];
    if (!w->ready || !w->link || w->inflight >= cr) continue;
    if (flush_pending(w) != 0) continue;
    int share = (int)((c->nqueued + (size_t)open - 1) / (size_t)open);
    int k = cr - w->inflight;
    if (share < k) k = share;
    send_batch(c, w, k);
    open--;
  }
  c->rr = (c->rr + 1) % c->nw;
}

/* ---- receiving ------------------------------------------------------------ */

static farm_job *take_inflight(wslot *w, uint64_t id, unsigned attempt) {
  farm_job *prev = NULL;
  for (farm_job *j = w->head; j; prev = j, j = j->next) {
    if (j->id != id || j->attempt != attempt) continue;
    if (prev) prev->next = j->next; else w->head = j->next;
    if (w->tail == j) w->tail = prev;
    w->inflight--;
    j->next = NULL;
    return j;
  }
  return NULL;
}

static int on_results(farm_ctx *c, wslot *w, farm_rd *r) {
  uint32_t count = farm__rd_u32le(r);
  double busy_sum = 0;
  uint32_t got = 0;
  for (uint32_t i = 0; i < count && !r->err; i++) {
    uint64_t id = farm__rd_uvar(r);
    unsigned attempt = (unsigned)farm__rd_uvar(r);
    int status = farm__rd_u8(r);
    double busy = farm__rd_uvar(r) * 1e-9;
    size_t nout, na, nb = 0;
    const char *out = farm__rd_str(r, &nout);
    const char *a = farm__rd_str(r, &na), *bt = NULL;
    if (status == FARM_JOB_ERROR) bt = farm__rd_str(r, &nb);
    if (r->err) break;
    farm_job *j = take_inflight(w, id, attempt);
    if (!j) continue;              /* not ours (any more): a result arrives at most once */
    j->slot = -1;
    if (j->state == JOB_SENT) {
      j->state = status == FARM_JOB_OK ? JOB_DONE : JOB_FAILED;
      j->busy = busy;
      snprintf(j->where, sizeof j->where, "local:%d (pid %ld)", w->slot + 1, (long)w->pid);
      j->res = dupmem(a, na); j->nres = na;
      if (bt) { j->tb = dupmem(bt, nb); j->ntb = nb; }
      if (nout) {
        j->out = dupmem(out, nout); j->nout = nout;
        if (c->echo) { fwrite(out, 1, nout, stdout); fflush(stdout); }
      }
      free(j->args); j->args = NULL; j->nargs = 0;
    }
    w->jobs++;
    w->busy += busy;
    busy_sum += busy;
    got++;
    job_unref(j);
  }
  if (got) {
    double per = busy_sum / got;
    c->est = c->est <= 0 ? per : 0.7 * c->est + 0.3 * per;
    if (c->est < 1e-7) c->est = 1e-7;
  }
  return r->err ? FARM_EPROTO : (int)got;
}

/* Read everything waiting on every link; returns how many messages came. */
static int drain(farm_ctx *c) {
  int handled = 0;
  for (int i = 0; i < c->nw; i++) {
    wslot *w = &c->w[i];
    while (w->link) {
      void *m; size_t n;
      if (farm__link_recv(w->link, &m, &n, 1) != 0) break;
      farm_rd r;
      char why[160];
      int type = farm__msg_open(&r, m, n, why, sizeof why);
      int bad = 0;
      if (type == FARM_MSG_HELLO) {
        farm__rd_uvar(&r);
        connected(c, w);
      } else if (type == FARM_MSG_RESULTS) {
        bad = on_results(c, w, &r) < 0;
        if (bad) snprintf(why, sizeof why, "malformed message from worker %d", w->slot + 1);
      } else {
        bad = 1;
        if (type >= 0) snprintf(why, sizeof why, "unexpected message %d from worker %d", type, w->slot + 1);
      }
      farm__link_free(m);
      handled++;
      if (bad) {                   /* a worker that talks nonsense is replaced */
        fprintf(stderr, "farm: %s; restarting it\n", why);
        kill(w->pid, SIGKILL);
        farm__stop_pids(&w->pid, 1, 0);
        slot_lost(c, w, why);
      }
    }
  }
  return handled;
}

/* Make progress: send what can go, take what came. Waits up to timeout seconds
   for at least one message. Returns messages handled, or -1 when interrupted
   by a signal (the caller returns to Lua so a hook or handler can act). */
static int pump(farm_ctx *c, double timeout) {
  c->last_pump = farm__now();
  dispatch(c);
  int got = drain(c);
  if (got) { dispatch(c); return got; }
  double until = c->last_pump + timeout;
  for (;;) {
    if (c->last_pump - c->last_reap > REAP_INTERVAL) { reap(c); dispatch(c); }
    double left = until - farm__now();
    if (left <= 0) return 0;
    struct pollfd fds[2 * 256];
    int nf = 0;
    for (int i = 0; i < c->nw && nf < 2 * 256 - 1; i++) {
      wslot *w = &c->w[i];
      if (!w->link) continue;
      fds[nf++] = (struct pollfd){ .fd = farm__link_rcvfd(w->link), .events = POLLIN };
      if (w->pend.n) fds[nf++] = (struct pollfd){ .fd = farm__link_sndfd(w->link), .events = POLLIN };
    }
    int ms = (int)ceil((left < REAP_INTERVAL ? left : REAP_INTERVAL) * 1e3);
    int rc = poll(fds, (nfds_t)nf, ms);
    if (rc < 0 && errno == EINTR) return -1;
    c->last_pump = farm__now();
    for (int i = 0; i < c->nw; i++) if (c->w[i].link && c->w[i].pend.n) flush_pending(&c->w[i]);
    dispatch(c);
    got = drain(c);
    if (got) { dispatch(c); return got; }
    if (rc == 0) reap(c);
  }
}

/* ---- open and close ------------------------------------------------------- */

static void ctx_close(farm_ctx *c) {
  if (c->closed) return;
  c->closed = 1;
  pid_t *pids = calloc((size_t)c->nw + 1, sizeof *pids);
  farm_buf q;
  farm__buf_init(&q);
  farm__msg_begin(&q, FARM_MSG_QUIT);
  for (int i = 0; i < c->nw; i++) {
    wslot *w = &c->w[i];
    if (w->link && w->ready) farm__link_send(w->link, q.p, q.n, 1);
    if (pids) pids[i] = w->pid;
  }
  farm__buf_free(&q);
  if (pids) farm__stop_pids(pids, c->nw, 200);
  free(pids);
  for (int i = 0; i < c->nw; i++) {
    wslot *w = &c->w[i];
    for (farm_job *j = w->head, *next; j; j = next) {
      next = j->next;
      job_fail(j, "the farm was closed before the job finished");
      job_unref(j);
    }
    farm__link_close(w->link);
    unlink_sock(w);
    farm__buf_free(&w->pend);
    free(w->known);
  }
  fail_queue(c, "the farm was closed before the job ran");
  free(c->w);
  c->w = NULL;
  c->nw = 0;
  if (c->dir[0]) rmdir(c->dir);
  farm__buf_free(&c->msg);
  farm__buf_free(&c->enc);
}

static int ctx_open(farm_ctx *c, int nworkers, const char *exe, int echo, size_t maxmsg) {
  memset(c, 0, sizeof *c);
  c->t0 = farm__now();
  c->echo = echo;
  c->maxmsg = maxmsg ? maxmsg : DEFAULT_MAX_MESSAGE;
  c->nextid = 1;
  farm__buf_init(&c->msg);
  farm__buf_init(&c->enc);
  if (sodium_init() < 0) { snprintf(c->err, sizeof c->err, "libsodium failed to start"); return FARM_ENOMEM; }
  if (exe && *exe) snprintf(c->exe, sizeof c->exe, "%s", exe);
  else if (farm__find_exe(c->exe, sizeof c->exe) < 0) {
    snprintf(c->err, sizeof c->err,
             "cannot find the farm executable for workers; set FARM_EXE to its path");
    return FARM_ESPAWN;
  }
  c->nw = nworkers > 0 ? nworkers : farm__online_cpus();
  if (!(c->w = calloc((size_t)c->nw, sizeof *c->w))) return FARM_ENOMEM;
  for (int i = 0; i < c->nw; i++) {
    c->w[i].slot = i;
    farm__buf_init(&c->w[i].pend);
    int rc = slot_start(c, &c->w[i]);
    if (rc < 0) return rc;
  }
  /* Wait for every worker to say hello: start-up errors show here, and the
     socket directory is gone before the caller goes on. */
  double until = farm__now() + START_TIMEOUT;
  for (;;) {
    int waiting = 0;
    for (int i = 0; i < c->nw; i++) waiting += !c->w[i].ready && !c->w[i].dead;
    if (!waiting) break;
    if (farm__now() > until) {
      snprintf(c->err, sizeof c->err, "%d of %d workers (%.300s) did not start within %g s",
               waiting, c->nw, c->exe, START_TIMEOUT);
      return FARM_ESPAWN;
    }
    pump(c, 0.05);
  }
  if (live_workers(c) == 0) return FARM_ESPAWN;
  return 0;
}

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
  return ((job_ud *)luaL_checkudata(L, i, JOB_MT))->job;
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
  int rc = ctx_open(c, nw, exe, echo, maxmsg > 0 ? (size_t)maxmsg : 0);
  if (rc < 0) {
    char why[sizeof c->err];
    memcpy(why, c->err, sizeof why);
    c->closed = 0;
    ctx_close(c);
    return fail_lua(L, "farm: %s", why[0] ? why : farm_strerror(rc));
  }
  return 1;
}

static int l_close(lua_State *L) {
  farm_ctx *c = luaL_checkudata(L, 1, CTX_MT);
  ctx_close(c);
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
  if (!f || !(f->p = dupmem(c->enc.p, c->enc.n))) { free(f); return luaL_error(L, "farm: out of memory"); }
  f->n = c->enc.n;
  f->refs = 1;
  crypto_generichash(f->hash, FARM_HASHLEN, (const unsigned char *)f->p, f->n, NULL, 0);
  u->fn = f;
  return 1;
}

static int l_fn_gc(lua_State *L) {
  fn_ud *u = luaL_checkudata(L, 1, FN_MT);
  fn_unref(u->fn);
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

static void enqueue(farm_ctx *c, farm_job *j) {
  j->state = JOB_QUEUED;
  if (c->qtail) c->qtail->next = j; else c->qhead = j;
  c->qtail = j;
  c->nqueued++;
}

/* Take the encoded bytes out of the scratch buffer: big ones by handing the
   buffer over, small ones by copying (the scratch keeps its capacity). */
static char *take_enc(farm_ctx *c, size_t *n) {
  if (c->enc.n >= (64u << 10)) return farm__buf_steal(&c->enc, n);
  *n = c->enc.n;
  return dupmem(c->enc.p, c->enc.n);
}

static void check_size(lua_State *L, farm_ctx *c, size_t n, const char *what) {
  if (n + (4u << 10) <= c->maxmsg) return;
  char msg[256];   /* lua_pushfstring knows no %.1f */
  snprintf(msg, sizeof msg, "farm: %s take %.1f MiB encoded; a link carries at most %.1f MiB "
           "per job (farm.config{max_message = bytes} raises it)", what,
           n / 1048576.0, c->maxmsg / 1048576.0);
  fail_lua(L, "%s", msg);
}

static void submitted(farm_ctx *c) {
  if (farm__now() - c->last_pump >= PUMP_INTERVAL || c->nqueued == 1) pump(c, 0);
}

/* core.submit(ctx, fn, describe, namesfn, ...) -> future */
static int l_submit(lua_State *L) {
  farm_ctx *c = check_ctx(L, 1);
  farm_fn *f = ((fn_ud *)luaL_checkudata(L, 2, FN_MT))->fn;
  int first = 5, n = lua_gettop(L) - 4;
  if (n < 0) n = 0;
  farm_encoder e;
  setup_encoder(L, &e, 3, 4, first, n, "argument");
  c->enc.n = 0;
  farm_codec_encode(L, &c->enc, first, n, &e);
  check_size(L, c, c->enc.n, "the arguments");
  farm_job *j = new_job(L, c, f, FARM_MODE_CALL);
  j->args = take_enc(c, &j->nargs);
  if (!j->args) return luaL_error(L, "farm: out of memory");
  enqueue(c, j);
  submitted(c);
  return 1;
}

/* core.submit_map(ctx, fn, describe, namesfn, i, j, list1, ...) -> future for
   rows i..j of the lists (one MAP job: the worker calls fn on each row). */
static int l_submit_map(lua_State *L) {
  farm_ctx *c = check_ctx(L, 1);
  farm_fn *f = ((fn_ud *)luaL_checkudata(L, 2, FN_MT))->fn;
  lua_Integer lo = luaL_checkinteger(L, 5), hi = luaL_checkinteger(L, 6);
  int nl = lua_gettop(L) - 6;
  luaL_argcheck(L, nl >= 1 && hi >= lo, 7, "a list and a nonempty range");
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
  check_size(L, c, c->enc.n, "the items of one map chunk");
  lua_settop(L, 6 + nl);
  farm_job *j = new_job(L, c, f, FARM_MODE_MAP);
  j->args = take_enc(c, &j->nargs);
  if (!j->args) return luaL_error(L, "farm: out of memory");
  enqueue(c, j);
  submitted(c);
  return 1;
}

static int l_job_gc(lua_State *L) {
  job_ud *u = luaL_checkudata(L, 1, JOB_MT);
  if (u->job) job_unref(u->job);
  u->job = NULL;
  return 0;
}

static const char *const state_names[] = { "pending", "running", "done", "failed", "cancelled" };

static int l_status(lua_State *L) {
  lua_pushstring(L, state_names[check_job(L, 1)->state]);
  return 1;
}

static int is_over(const farm_job *j) { return j->state >= JOB_DONE; }

static int l_done(lua_State *L) {
  lua_pushboolean(L, is_over(check_job(L, 1)));
  return 1;
}

static int l_id(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)check_job(L, 1)->id);
  return 1;
}

/* core.cancel(job): a job still in the client's queue is cancelled; one handed
   to a worker is not (it may be running already). */
static int l_cancel(lua_State *L) {
  farm_job *j = check_job(L, 1);
  int ok = j->state == JOB_QUEUED;
  if (ok) {
    j->state = JOB_CANCELLED;      /* dropped from the queue when dispatch meets it */
    free(j->args); j->args = NULL; j->nargs = 0;
  }
  lua_pushboolean(L, ok);
  return 1;
}

/* core.pump(ctx, timeout) -> messages handled (false when interrupted) */
static int l_pump(lua_State *L) {
  farm_ctx *c = check_ctx(L, 1);
  int n = pump(c, luaL_optnumber(L, 2, 0));
  if (n < 0) lua_pushboolean(L, 0); else lua_pushinteger(L, n);
  return 1;
}

/* core.wait(job, timeout) -> true when the job is over; false on timeout
   or when a signal arrived (the Lua caller decides whether to go on). */
static int l_wait(lua_State *L) {
  farm_job *j = check_job(L, 1);
  lua_getiuservalue(L, 1, 1);
  farm_ctx *c = luaL_checkudata(L, -1, CTX_MT);
  double timeout = luaL_optnumber(L, 2, HUGE_VAL);
  double until = farm__now() + timeout;
  while (!is_over(j) && !c->closed) {
    double left = until - farm__now();
    if (left <= 0) break;
    if (pump(c, left) < 0) break;
  }
  lua_pushboolean(L, is_over(j));
  return 1;
}

/* core.result(job, resolve, cache) -> true, values... | false, message, traceback, where */
static int l_result(lua_State *L) {
  farm_job *j = check_job(L, 1);
  if (j->state == JOB_DONE) {
    farm_decoder d = { 0, 0, 0 };
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
    lua_rawseti(L, is_over(u->job) ? 2 : 3, is_over(u->job) ? ++nd : ++np);
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
  return 1;
}

static int l_workers(lua_State *L) {
  farm_ctx *c = luaL_checkudata(L, 1, CTX_MT);
  lua_pushinteger(L, c->closed ? 0 : live_workers(c));
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
