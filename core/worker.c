/*
 * worker.c -- `farm worker`: one process, one lua_State, jobs from one link.
 *
 * Two threads. The link thread owns receiving: it parses JOBS into a queue,
 * answers TAKE at once from that queue -- even while a job runs -- so the
 * client can move a waiting job elsewhere or cancel it knowing it will never
 * run here, and notices QUIT and an orphaning. The Lua thread takes jobs from
 * the queue (a job it took has started: TAKE no longer finds it) and runs each
 * as a coroutine; it sends the results, in batches: after each job the batch
 * goes if RESULT_DELAY has passed or no job is waiting, and a long job sends
 * what waits before it from a count hook. nanomsg sockets are thread-safe.
 *
 * Function blocks sent once (FN_KEEP) are kept by hash, and the closure
 * compiled from them too: such a function has no upvalue values of its own. A
 * closure with upvalues travels whole with every job (FN_FRESH) and is decoded
 * afresh for each, so no job sees another's upvalues; the compiled text is
 * cached (a weak table: the collector bounds it).
 *
 * Descriptor 1 is a memfd: whatever a job writes to standard output (print,
 * io.write, a child process) is taken from it after the job and sent with its
 * result; the client reads it meanwhile to echo it live. Before and after each
 * job the worker notes in the shared state page (wstate.h) which job runs.
 * A process the job started may outlive it (`cmd &`, an io.popen left open)
 * and write to that memfd later: so when a process may have been started
 * since descriptor 1 was last replaced, it is replaced by a fresh memfd at the
 * end of the stretch, which the client is sent (peer_local.c). What such a
 * process prints after its job ended, or once its job waited, is no job's:
 * it goes to the old memfd, which nobody reads. (Killing those processes when
 * their job ends would be the other way; but a job may start a helper for
 * the jobs after it, or leave an io.popen open, as a plain Lua script may: they
 * live as long as the worker, whose process group they are in, pool.c.)
 *
 * Big argument and result blocks come and go through two regions the client
 * shares with this process (shm.h): a job's arguments are decoded straight
 * from the client's region (checked against its bounds when JOBS is parsed),
 * and a big result is copied into ours, RESULTS naming where.
 *
 * Signals: the worker leads a session of its own (pool.c), so a Ctrl-C at the
 * terminal reaches the client alone; SIGINT sent to the worker itself is
 * ignored all the same. SIGTERM -- what it is sent when its client dies --
 * kills its process group, itself included.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include "farm.h"
#include "clock.h"
#include "codec.h"
#include "hash.h"
#include "job.h"
#include "pool.h"
#include "proto.h"
#include "shm.h"
#include "transport.h"
#include "worker.h"
#include "wstate.h"

#define RESULT_DELAY 0.001      /* results wait at most this long for company */
#define RESULT_BYTES (4u << 20)  /* ...and a RESULTS message grows at most this big */
#define ERROR_BYTES (1u << 16)   /* an error message or traceback travels this much at most */
#define FLUSH_HOOK_COUNT 20000   /* instructions between looks at the clock in a long job */
#define KEPT_MAX 8192            /* function blocks kept; the client forgets at 4096 */

/* ---- the queue the link thread fills (no Lua here) ---------------------------- */

/* Messages and kept blocks are shared by the two threads (the link thread
   parses and takes back under the lock, the Lua thread frees jobs it ran
   without it): their counts are atomic. */
typedef struct wmsg {            /* a JOBS message, alive while a job of it waits or runs */
  void *p;
  void (*release)(void *);
  int refs;
} wmsg;

typedef struct wblock {          /* a function block kept by hash (FN_KEEP) */
  unsigned char hash[FARM_HASHLEN];
  char *p;
  size_t n;
  int refs;
} wblock;

typedef struct wjob {
  struct wjob *next;
  wmsg *msg;
  wblock *kept;                  /* its function's kept block, or NULL */
  uint64_t id, att;
  int mode, fnkind, forget;
  int share;                     /* a SHARE message: its items are in args */
  unsigned char hash[FARM_HASHLEN];
  const char *pkg;               /* the function block: in msg, or kept's */
  size_t npkg;
  const char *args;
  size_t nargs;
} wjob;

struct farm_wjobs {
  wjob *head, *tail;
  size_t n;
  int pool;                      /* the client's pool size, as its last JOBS said */
  int forget;                    /* the job to forget before was taken back: the next does */
  farm_hash kept;                /* by the first 8 bytes of their hash (hash.h) */
  const farm_shm_w *shm;         /* the regions shared with the client (shm.h), or NULL */
};

static void msg_unref(wmsg *m) {
  if (m && __atomic_sub_fetch(&m->refs, 1, __ATOMIC_ACQ_REL) == 0) {
    if (m->release) m->release(m->p);
    free(m);
  }
}

static void block_unref(wblock *b) {
  if (b && __atomic_sub_fetch(&b->refs, 1, __ATOMIC_ACQ_REL) == 0) { free(b->p); free(b); }
}

static void wjob_free(wjob *j) {
  msg_unref(j->msg);
  block_unref(j->kept);
  free(j);
}

farm_wjobs *farm__wjobs_new(void) {
  return calloc(1, sizeof(farm_wjobs));
}

static void kept_clear(farm_wjobs *q) {
  void *b;
  for (size_t i = 0; (i = farm__hash_next(&q->kept, i, NULL, &b)); ) block_unref(b);
  farm__hash_clear(&q->kept);
}

void farm__wjobs_free(farm_wjobs *q) {
  if (!q) return;
  for (wjob *j = q->head, *n; j; j = n) { n = j->next; wjob_free(j); }
  kept_clear(q);
  farm__hash_free(&q->kept);
  free(q);
}

size_t farm__wjobs_count(const farm_wjobs *q) { return q->n; }

static uint64_t kept_key(const unsigned char *h) {
  uint64_t k;
  memcpy(&k, h, sizeof k);
  return k;
}

/* (Two hashes alike in their first 8 bytes, one chance in 2^64 a pair: the
   second is not kept, and the job that needs it fails, saying so.) */
static wblock *kept_find(farm_wjobs *q, const unsigned char *h) {
  wblock *b = farm__hash_get(&q->kept, kept_key(h));
  return b && !memcmp(b->hash, h, FARM_HASHLEN) ? b : NULL;
}

static wblock *kept_add(farm_wjobs *q, const unsigned char *h, const char *p, size_t n) {
  wblock *had = farm__hash_get(&q->kept, kept_key(h));
  if (had) return memcmp(had->hash, h, FARM_HASHLEN) ? NULL : had;
  if (q->kept.n >= KEPT_MAX) return NULL;        /* the client forgets long before */
  wblock *b = calloc(1, sizeof *b);
  if (!b || !(b->p = malloc(n ? n : 1))) { free(b); return NULL; }
  memcpy(b->hash, h, FARM_HASHLEN);
  memcpy(b->p, p, n);
  b->n = n;
  b->refs = 1;
  if (farm__hash_put(&q->kept, kept_key(h), b) < 0) { block_unref(b); return NULL; }
  return b;
}

static wjob *wjobs_pop(farm_wjobs *q) {
  wjob *j = q->head;
  if (!j) return NULL;
  q->head = j->next;
  if (!q->head) q->tail = NULL;
  q->n--;
  if (q->forget) { j->forget = 1; q->forget = 0; }
  return j;
}

static int parse_jobs(farm_wjobs *q, farm_rd *r, wmsg *m, char *err, size_t errlen) {
  wjob *head = NULL, *tail = NULL;
  farm_msg_jobs h;
  if (farm__proto_get_jobs(r, &h, NULL, 0) < 0 || h.count == 0 || h.count > farm__rd_left(r) / 20) goto bad;
  uint32_t count = h.count;
  uint64_t cap = h.pool;
  for (uint32_t i = 0; i < count; i++) {
    wjob *j = calloc(1, sizeof *j);
    if (!j) { snprintf(err, errlen, "out of memory"); goto drop; }
    if (tail) tail->next = j; else head = j;
    tail = j;
    farm_msg_job m;
    if (farm__proto_get_job(r, &m, NULL, 0) < 0 || m.id == 0) goto drop_bad;
    j->id = m.id;
    j->att = m.attempt;
    j->mode = m.mode;
    j->fnkind = m.fn;
    j->pkg = m.fnb;
    j->npkg = m.nfn;
    j->args = m.args;
    j->nargs = m.nargs;
    /* in the region the client shares with us: only inside its bounds (it is
       not read before the job starts, and the client leaves it be until our
       result, or TAKEN, says we are done with it) */
    if (m.shm && !(j->args = q->shm ? farm__shm_args(q->shm, m.args_off, m.nargs) : NULL)) goto drop_bad;
    memcpy(j->hash, m.hash, FARM_HASHLEN);
  }
  if (farm__proto_end(r, "JOBS", NULL, 0) < 0) goto drop_bad;
  /* well formed: now it may change what is kept */
  if (h.forget) { kept_clear(q); head->forget = 1; }
  if (cap > 0 && cap < 1u << 20) q->pool = (int)cap;
  for (wjob *j = head; j; j = j->next) {
    j->msg = m;
    __atomic_add_fetch(&m->refs, 1, __ATOMIC_RELAXED);
    if (j->fnkind == FARM_FN_FRESH) continue;
    wblock *b = j->fnkind == FARM_FN_KEEP ? kept_add(q, j->hash, j->pkg, j->npkg)
                                          : kept_find(q, j->hash);
    if (b) { __atomic_add_fetch(&b->refs, 1, __ATOMIC_RELAXED); j->kept = b; j->pkg = b->p; j->npkg = b->n; }
    else if (j->fnkind == FARM_FN_CACHED) j->pkg = NULL;   /* fails when run: protocol error */
  }
  if (q->tail) q->tail->next = head; else q->head = head;
  q->tail = tail;
  q->n += count;
  return 0;
drop_bad:
bad:
  snprintf(err, errlen, "malformed message from the client");
drop:
  while (head) { wjob *n = head->next; free(head); head = n; }
  return FARM_EPROTO;
}

static int parse_take(farm_wjobs *q, farm_rd *r, uint64_t **given, size_t *ngiven,
                      char *err, size_t errlen) {
  uint32_t count;
  if (farm__proto_get_list(r, &count, NULL, 0) < 0 || count > farm__rd_left(r)) goto bad;
  /* read it all before touching the queue: a malformed TAKE takes nothing */
  uint64_t *ids = malloc((count ? count : 1) * sizeof *ids);
  uint64_t *g = realloc(*given, (*ngiven + count + 1) * sizeof *g);
  if (g) *given = g;
  if (!ids || !g) { free(ids); snprintf(err, errlen, "out of memory"); return FARM_ENOMEM; }
  for (uint32_t i = 0; i < count && !r->err; i++) farm__proto_get_id(r, &ids[i], NULL, 0);
  if (farm__proto_end(r, "TAKE", NULL, 0) < 0) { free(ids); goto bad; }
  for (uint32_t i = 0; i < count; i++) {
    wjob *prev = NULL;
    for (wjob *j = q->head; j; prev = j, j = j->next) {
      if (j->id != ids[i]) continue;
      g[(*ngiven)++] = ids[i];
      if (prev) prev->next = j->next; else q->head = j->next;
      if (q->tail == j) q->tail = prev;
      q->n--;
      if (j->forget) {                           /* the forgetting moves on */
        if (j->next) j->next->forget = 1; else q->forget = 1;
      }
      wjob_free(j);
      break;
    }
  }
  free(ids);
  return 0;
bad:
  snprintf(err, errlen, "malformed message from the client");
  return FARM_EPROTO;
}

int farm__wjobs_take(farm_wjobs *q, void *msg, size_t n, void (*release)(void *),
                     uint64_t **given, size_t *ngiven, char *err, size_t errlen) {
  farm_rd r;
  int type = farm__msg_open(&r, msg, n, err, errlen), rc = type;
  if (type == FARM_MSG_JOBS) {
    wmsg *m = calloc(1, sizeof *m);
    if (!m) { snprintf(err, errlen, "out of memory"); rc = FARM_ENOMEM; }
    else {
      m->p = msg;
      m->release = release;
      m->refs = 1;                   /* ours, until the jobs have theirs */
      int prc = parse_jobs(q, &r, m, err, errlen);
      if (prc < 0) rc = prc;
      msg_unref(m);
      return rc;
    }
  } else if (type == FARM_MSG_SHARE) {
    /* checked whole now, applied by the Lua thread in its turn among the jobs */
    const char *items = (const char *)r.p;
    uint32_t count;
    farm__proto_get_list(&r, &count, NULL, 0);
    for (uint32_t i = 0; i < count && !r.err; i++) {
      farm_msg_share x;
      if (farm__proto_get_share(&r, &x, NULL, 0) == 0 && x.kind > FARM_SHARE_LIMIT) r.err = 1;
    }
    wjob *j = NULL;
    wmsg *m = NULL;
    if (farm__proto_end(&r, "SHARE", NULL, 0) < 0 || count == 0) {
      snprintf(err, errlen, "malformed message from the client");
      rc = FARM_EPROTO;
    } else if (!(j = calloc(1, sizeof *j)) || !(m = calloc(1, sizeof *m))) {
      free(j);
      snprintf(err, errlen, "out of memory");
      rc = FARM_ENOMEM;
    } else {
      m->p = msg;
      m->release = release;
      m->refs = 1;
      j->msg = m;
      j->share = 1;
      j->args = items;
      j->nargs = (size_t)((const char *)r.p - items);
      if (q->tail) q->tail->next = j; else q->head = j;
      q->tail = j;
      q->n++;
      return rc;
    }
  } else if (type == FARM_MSG_TAKE) {
    int prc = parse_take(q, &r, given, ngiven, err, errlen);
    if (prc < 0) rc = prc;
  } else if (type >= 0 && type != FARM_MSG_QUIT) {
    snprintf(err, errlen, "malformed message from the client");
    rc = FARM_EPROTO;
  }
  if (release) release(msg);
  return rc;
}

/* ---- the worker ---------------------------------------------------------------- */

typedef struct wrun {            /* a job started here: running, or waiting on sub-jobs */
  struct wrun *next;
  wjob *j;
  lua_State *co;                 /* its coroutine, and the registry ref that keeps it */
  int co_ref;
  farm_buf out;                  /* what it printed in its earlier stretches */
  double busy, t0;               /* seconds run so far; when this stretch began */
  double began;                  /* when its first stretch began */
  farm_job *waitjob;             /* it waits for this sub-job to end, */
  int waitany;                   /* ...or for any sub-job to end after waitgen, */
  uint64_t waitgen;
  double deadline;               /* ...or until then (0: no deadline) */
} wrun;

struct worker {
  lua_State *L;
  farm_link *link;
  int slot;
  pid_t parent;
  size_t maxmsg;
  pthread_t io;
  pthread_mutex_t mu;            /* guards q, quit, failed, subs and the sub-jobs' results */
  pthread_cond_t cv;               /* the Lua thread waits on it (blocking waits) */
  pthread_cond_t io_cv;            /* the link thread waits on it until it should listen */
  int idle;                        /* the Lua thread waits for work, receiving itself */
  int listen;                      /* the link thread should receive (the Lua thread is busy) */
  double busy_since;               /* when the Lua thread took up work, 0 while idle */
  farm_wjobs *q;
  int quit;                      /* QUIT came, or the client is gone */
  int failed;                    /* the link thread gave up: err says why */
  char err[256];
  farm_buf res;                  /* RESULTS message being built (Lua thread) */
  farm_buf times;                /* ...and its entries' times (proto.h), to go after them */
  uint32_t nres;
  double last_flush;
  farm_buf cap;                  /* what the running job printed */
  farm_buf enc;                  /* scratch for encoding results */
  farm_buf errval;               /* the value a failing job raised, encoded (or empty) */
  int fns, chunks;               /* registry refs: hash -> function; compiled chunks (weak) */
  int resolve, describe, names, remember, runner;
  lua_State *freeco[8];          /* finished coroutines, kept for the next jobs */
  int freeco_ref[8], nfreeco;
  size_t result_limit;           /* a RESULTS message stays under this */
  farm_wstate *state;            /* shared with the client, or NULL */
  farm_shm_w shm;                /* the regions for big blocks shared with the client (shm.h) */
  int outfd;                     /* the memfd on descriptor 1, or -1 */
  int outsock;                   /* where a fresh memfd for it goes to the client, or -1 */
  int renew;                     /* 1 when descriptor 1 may be replaced */
  long children_sig;             /* children_moved()'s counters when it was last replaced */
  wrun *cur;                     /* the job running now */
  uint64_t stop_id;              /* atomic: the job the client asked to stop (STOP) */
  wrun *waiting;                 /* jobs waiting on sub-jobs */
  int nwaiting;
  int nblocked;                  /* jobs waiting blocked (they could not yield) */
  farm_job **subs;               /* sub-jobs submitted from here, not yet ended */
  size_t nsubs, capsubs;
  uint64_t subid;
  uint64_t gen;                  /* bumped (under mu) whenever a sub-job ends */
  farm_buf submit;               /* SUBMIT message being built (Lua thread) */
  uint32_t nsubmit;
  int shared_raw, shared_vals;   /* registry refs: farm.shared's blocks, and values decoded */
  int cleanup;                   /* registry ref of {cleanup, args} once setup ran, or LUA_NOREF */
  int stopped;                   /* the pool's setup failed here: no job runs any more */
  int in_setup;                  /* setup or cleanup runs: it may not wait for jobs */
  size_t max_file;               /* the largest file farm.send_file sends */
};

/* ---- the link thread ---------------------------------------------------------- */

static void link_release(void *m) { farm__link_free(m); }

static void send_taken(worker *w, const uint64_t *ids, size_t n) {
  farm_buf b;
  farm__buf_init(&b);
  farm__proto_put_ids(&b, FARM_MSG_TAKEN, ids, (uint32_t)n);
  if (farm__link_send(w->link, b.p, b.n, 0) != 0)
    fprintf(stderr, "farm worker %d: cannot answer a take-back: %s\n", w->slot + 1, farm__link_error());
  farm__buf_free(&b);
}

/* SUBDONE from the client: sub-jobs of ours ended. Fills them in (under mu). */
static int on_subdone(worker *w, farm_rd *r) {
  uint32_t count;
  farm__proto_get_list(r, &count, NULL, 0);
  for (uint32_t i = 0; i < count && !r->err; i++) {
    farm_msg_subdone m;
    if (farm__proto_get_subdone(r, &m, NULL, 0) < 0) return FARM_EPROTO;
    for (size_t k = 0; k < w->nsubs; k++) {
      farm_job *j = w->subs[k];
      if (j->id != m.subid) continue;
      w->subs[k] = w->subs[--w->nsubs];
      farm__jx(j)->res = farm__dupmem(m.block, m.nblock); farm__jx(j)->nres = m.nblock;
      if (m.tb) { farm__jx(j)->tb = farm__dupmem(m.tb, m.ntb); farm__jx(j)->ntb = m.ntb; }
      if (m.val && m.nval) { farm__jx(j)->val = farm__dupmem(m.val, m.nval); farm__jx(j)->nval = m.nval; }
      farm__buf_put(&farm__jx(j)->out, m.out, m.nout);
      size_t nw = m.nwhere;
      farm__job_set_where(j, m.where, nw < WHERE_MAX ? nw : WHERE_MAX);
      __atomic_store_n(&j->state, (uint8_t)(m.status == 0 ? JOB_DONE : m.status == 1 ? JOB_FAILED : JOB_CANCELLED),
                       __ATOMIC_RELEASE);
      farm__job_unref(j);
      break;
    }
  }
  if (farm__proto_end(r, "SUBDONE", NULL, 0) < 0) return FARM_EPROTO;
  w->gen++;
  return 0;
}

/* Receive and handle every message waiting on the link (mu held). Returns 0,
   or 1 when the worker must stop (QUIT, or a malformed message: w->err). */
static int take_link(worker *w) {
  for (;;) {
    void *m;
    size_t n;
    if (farm__link_recv(w->link, &m, &n, 1) != 0) return 0;
    uint64_t *given = NULL;
    size_t ngiven = 0;
    char err[256];
    farm_rd r;
    int type;
    int first = farm__msg_open(&r, m, n, err, sizeof err);
    if (first == FARM_MSG_SUBDONE) {
      type = on_subdone(w, &r) < 0 ? FARM_EPROTO : FARM_MSG_SUBDONE;
      if (type < 0) snprintf(err, sizeof err, "malformed message from the client");
      farm__link_free(m);
    } else if (first == FARM_MSG_STOP) {   /* farm.cancelled() says so from now on */
      uint64_t id;
      type = farm__proto_get_stop(&r, &id, err, sizeof err) < 0 ||
             farm__proto_end(&r, "STOP", err, sizeof err) < 0 ? FARM_EPROTO : FARM_MSG_STOP;
      if (type == FARM_MSG_STOP) __atomic_store_n(&w->stop_id, id, __ATOMIC_RELEASE);
      farm__link_free(m);
    } else {
      type = farm__wjobs_take(w->q, m, n, link_release, &given, &ngiven, err, sizeof err);
    }
    if (type < 0) { w->failed = 1; snprintf(w->err, sizeof w->err, "%s", err); }
    if (type == FARM_MSG_QUIT) w->quit = 1;
    pthread_cond_signal(&w->cv);
    if (type == FARM_MSG_TAKE) send_taken(w, given, ngiven);
    free(given);
    if (type < 0 || type == FARM_MSG_QUIT) return 1;
  }
}

static int orphaned(worker *w) { return w->parent > 0 && getppid() != w->parent; }

#define LISTEN_AFTER 0.05         /* a job busy this long has the link thread listen */

/* The link thread receives while the Lua thread is busy with a job that takes
   a while (it notices within LISTEN_AFTER) or waits blocking. While the Lua
   thread is idle it receives itself, and short jobs never wake this thread:
   that saves hops between threads on every round trip. (A count hook could say
   sooner, but a hook slows every instruction of the job.) */
static void *io_main(void *arg) {
  worker *w = arg;
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  for (;;) {
    pthread_mutex_lock(&w->mu);
    while (!w->quit && !w->failed && (w->idle || !w->listen)) {
      if (!w->idle && w->busy_since && farm__now() - w->busy_since >= LISTEN_AFTER) {
        w->listen = 1;
        break;
      }
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      ts.tv_nsec += (long)(LISTEN_AFTER * 1e9);
      if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
      pthread_cond_timedwait(&w->io_cv, &w->mu, &ts);
    }
    int stop = w->quit || w->failed;
    pthread_mutex_unlock(&w->mu);
    if (stop) return NULL;
    struct pollfd pfd = { .fd = farm__link_rcvfd(w->link), .events = POLLIN };
    int pr = poll(&pfd, 1, 1000);
    if (orphaned(w)) {                   /* nobody wants our results */
      pthread_mutex_lock(&w->mu);
      w->quit = 1;
      pthread_cond_signal(&w->cv);
      pthread_mutex_unlock(&w->mu);
      return NULL;
    }
    if (pr <= 0) continue;
    pthread_mutex_lock(&w->mu);
    stop = w->idle ? 0 : take_link(w);   /* idle: the Lua thread takes it */
    pthread_mutex_unlock(&w->mu);
    if (stop) return NULL;
  }
}

/* ---- captured output ------------------------------------------------------------ */

/* Whether a process a job started may still hold descriptor 1: a child of
   ours runs (or has not been waited for), or one was waited for since the
   last look -- what it left in the background may live on (the counters of
   children waited for have moved). Two cheap system calls, and nothing that
   other processes do counts. *sig gets the counters as they are now. A child
   reaped without a wait (SIGCHLD set to SIG_IGN by a C module) is not seen. */
static int children_moved(worker *w, long *sig) {
  struct rusage ru;
  siginfo_t si;
  long s = 0;
  if (getrusage(RUSAGE_CHILDREN, &ru) == 0)
    s = ru.ru_minflt + ru.ru_majflt + ru.ru_nvcsw + ru.ru_nivcsw + (long)ru.ru_utime.tv_sec +
        (long)ru.ru_utime.tv_usec + (long)ru.ru_stime.tv_sec + (long)ru.ru_stime.tv_usec;
  *sig = s;
  if (s != w->children_sig) return 1;
  memset(&si, 0, sizeof si);
  return waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) == 0;   /* else ECHILD: none */
}

static int send_fd(int sock, int fd) {
  char byte = 'o';
  union { struct cmsghdr h; char b[CMSG_SPACE(sizeof(int))]; } ctl;
  memset(&ctl, 0, sizeof ctl);
  struct iovec iov = { &byte, 1 };
  struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
                      .msg_controllen = sizeof ctl.b };
  struct cmsghdr *c = CMSG_FIRSTHDR(&m);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &fd, sizeof fd);
  ssize_t r;
  while ((r = sendmsg(sock, &m, MSG_DONTWAIT | MSG_NOSIGNAL)) < 0 && errno == EINTR) {}
  return r == 1 ? 0 : -1;
}

/* At the end of a stretch (descriptor 1 just emptied): when a process a job
   started may still hold descriptor 1, give it a fresh memfd, the client
   first. When the client cannot be told (its socket is full: it reads it every
   tick), the old one stays and the next stretch's end tries again. */
static void renew_output(worker *w) {
  long sig;
  if (!children_moved(w, &sig)) return;
  int fd = memfd_create("farm-job-output", MFD_CLOEXEC);
  if (fd < 0) return;
  if ((w->outsock >= 0 && send_fd(w->outsock, fd) != 0) || dup2(fd, 1) != 1) {
    close(fd);
    return;
  }
  close(fd);
  w->children_sig = sig;
}

/* Move what the job wrote to descriptor 1 into w->cap, and empty the memfd
   (before the state page says the job is over: the client's reads rely on it). */
static void collect_output(worker *w) {
  fflush(stdout);
  if (w->outfd < 0) return;
  off_t n = lseek(w->outfd, 0, SEEK_END);
  if (n > 0) {
    if (farm__buf_reserve(&w->cap, (size_t)n) == 0) {
      ssize_t got = pread(w->outfd, w->cap.p + w->cap.n, (size_t)n, 0);
      if (got > 0) w->cap.n += (size_t)got;
    }
    if (ftruncate(w->outfd, 0) != 0 || lseek(w->outfd, 0, SEEK_SET) != 0)
      fprintf(stderr, "farm worker %d: cannot reset captured output\n", w->slot + 1);
  }
  if (w->renew) renew_output(w);
}

/* ---- results ----------------------------------------------------------------------- */

/* Send a message of *count entries (RESULTS, SUBMIT) and start the next. A
   client that cannot be told is gone: nothing is left to do. */
static void send_entries(worker *w, farm_buf *b, uint32_t *count, int type, const char *what) {
  farm__proto_count(b, *count);
  if (farm__link_send(w->link, b->p, b->n, 0) != 0) {
    fprintf(stderr, "farm worker %d: cannot send %s: %s\n", w->slot + 1, what, farm__link_error());
    exit(3);
  }
  farm__proto_put_list(b, type);
  *count = 0;
}

static void flush_submits(worker *w);

/* Results go after the jobs their jobs submitted: the client knows of those
   before the job that submitted them is over (a run ends only when they are). */
static void flush(worker *w) {
  flush_submits(w);
  if (!w->nres) return;
  farm__proto_put_times(&w->res, farm__now(), &w->times);
  w->times.n = 0;
  send_entries(w, &w->res, &w->nres, FARM_MSG_RESULTS, "results");
  w->last_flush = farm__now();
}

/* Append m, with what the job printed (w->cap), to the RESULTS being built. */
static void put_result(worker *w, farm_msg_result *m, double began) {
  /* began and now are read from the clock the busy time was: one clock */
  farm__proto_put_time(&w->times, began, farm__now());
  m->out = w->cap.p;
  m->nout = w->cap.n;
  farm__proto_put_result(&w->res, m);
  w->cap.n = 0;
  w->nres++;
}

static void result_error(worker *w, uint64_t id, uint64_t attempt, double busy, double began,
                         const char *msg, size_t nmsg, const char *tb, size_t ntb) {
  size_t cut = w->maxmsg / 8 < ERROR_BYTES ? w->maxmsg / 8 : ERROR_BYTES;  /* a huge message is cut */
  farm_msg_result m = { .id = id, .attempt = attempt, .status = FARM_JOB_ERROR, .busy = busy,
                        .block = msg, .nblock = nmsg < cut ? nmsg : cut, .tb = tb, .ntb = ntb < cut ? ntb : cut,
                        /* the raised value itself, when it could be encoded and is not too big */
                        .val = w->errval.p, .nval = w->errval.n <= cut ? w->errval.n : 0 };
  put_result(w, &m, began);
  w->errval.n = 0;
}

/* ---- protected helpers (every Lua error in them is the job's, not ours) ------------- */

/* decode(block, chain) -> values ; upvalue-free, the decoder tables come as
   arguments. chain: a table, the same for a job's function and argument blocks
   (the second continues the first, codec.h), or nil */
static int p_decode(lua_State *L) {
  worker *w = lua_touserdata(L, 1);
  size_t n;
  const char *p = lua_touserdata(L, 2);
  n = (size_t)lua_tointeger(L, 3);
  int own = lua_toboolean(L, 5);         /* the worker's own globals are its environment */
  lua_settop(L, 4);
  lua_rotate(L, 1, 1);                   /* 1: the chain */
  lua_settop(L, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->resolve);
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->chunks);
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->remember);
  /* what the script added to the standard libraries goes into ours (ship.install) */
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_getfield(L, -1, "farm.ship");
  if (lua_istable(L, -1)) lua_getfield(L, -1, "install"); else lua_pushnil(L);
  lua_replace(L, 5);
  lua_settop(L, 5);
  if (own) lua_pushglobaltable(L);
  farm_decoder d = { .env = own ? 6 : 0, .resolve = 2, .cache = 3, .remember = 4,
                     .install = lua_isfunction(L, 5) ? 5 : 0,   /* results can be functions */
                     .chain = lua_istable(L, 1) ? 1 : 0,
                     .record = 1 };      /* the client's classes, to name them in results */
  return farm__codec_decode(L, p, n, &d);
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
  farm_encoder e = { .names = top + 2, .describe = top + 1, .globals = top + 3, .root = "result",
                     .home = 1 };        /* the client's classes go back by name */
  w->enc.n = 0;
  farm__codec_encode(L, &w->enc, 2, n, &e);
  return 0;
}

/* Decode a block in protected mode: pushes the values and returns their count,
   or leaves the error message on the stack and returns -1. chain: the stack
   index of the job's chain table, or 0. */
static int decode_block_in(worker *w, const char *p, size_t n, int chain, int own) {
  lua_State *L = w->L;
  int top = lua_gettop(L);
  lua_pushcfunction(L, p_decode);
  lua_pushlightuserdata(L, w);
  lua_pushlightuserdata(L, (void *)p);
  lua_pushinteger(L, (lua_Integer)n);
  if (chain) lua_pushvalue(L, chain); else lua_pushnil(L);
  lua_pushboolean(L, own);
  if (lua_pcall(L, 5, LUA_MULTRET, 0) != LUA_OK) return -1;
  return lua_gettop(L) - top;
}

static int decode_block(worker *w, const char *p, size_t n, int chain) {
  return decode_block_in(w, p, n, chain, 0);
}

/* ---- running jobs ------------------------------------------------------------------- */
/*
 * Every job runs in a coroutine of its own. A job that waits for a sub-job
 * (future:result, farm.wait, farm.map in a job) yields from inside farm's wait
 * with a marker; its coroutine is kept, the worker tells the client how many
 * of its jobs wait (their slots are free), and runs other jobs meanwhile. When
 * what it waits for has ended (SUBDONE from the client) it goes on where it
 * stopped. Nothing blocks with one worker: a waiting job never holds the
 * worker, only its coroutine.
 */

static const char wait_marker = 0;

static lua_State *new_coroutine(worker *w, int *ref) {
  if (w->nfreeco) {
    w->nfreeco--;
    *ref = w->freeco_ref[w->nfreeco];
    return w->freeco[w->nfreeco];
  }
  lua_State *co = lua_newthread(w->L);
  *ref = luaL_ref(w->L, LUA_REGISTRYINDEX);
  return co;
}

/* A coroutine that ended cleanly is kept for another job; a failed one is closed. */
static void end_coroutine(worker *w, lua_State *co, int ref, int ok) {
  if (ok && w->nfreeco < 8) {
    lua_settop(co, 0);
    w->freeco[w->nfreeco] = co;
    w->freeco_ref[w->nfreeco++] = ref;
    return;
  }
#if LUA_VERSION_RELEASE_NUM >= 50406
  lua_closethread(co, w->L);
#else
  lua_resetthread(co);
#endif
  luaL_unref(w->L, LUA_REGISTRYINDEX, ref);
}

/* tostring(v), protected: an error object's __tostring may raise, or lie. */
/* An error's text: a string or number as it is, a value with __tostring by it,
   anything else as lua.c says it ("(error object is a table value)": its
   address would say nothing; the value itself travels as err.value). */
static int p_tostring(lua_State *L) {
  int t = lua_type(L, 1);
  if (t != LUA_TSTRING && t != LUA_TNUMBER && luaL_getmetafield(L, 1, "__tostring") == LUA_TNIL) {
    lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    return 1;
  }
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
   RESULT_DELAY has passed: a long job does not hold back short ones (nor the
   sub-jobs it submitted). */
static void flush_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  worker *w = *(worker **)lua_getextraspace(L);
  if (farm__now() - w->last_flush < RESULT_DELAY) return;
  flush(w);
  lua_sethook(L, NULL, 0, 0);            /* a hook slows every instruction: only while needed */
}

static int fail_with(lua_State *L, const char *msg) {
  lua_pushstring(L, msg);
  lua_pushliteral(L, "");
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
   the message and traceback on top of L. early: what it printed before its
   last stretch (or NULL). */
static void finish(worker *w, uint64_t id, uint64_t att, double busy, double began, int ok,
                   farm_buf *early) {
  collect_output(w);
  if (early && early->n) {                /* earlier stretches first */
    farm__buf_put(early, w->cap.p, w->cap.n);
    farm_buf t = w->cap;
    w->cap = *early;
    *early = t;
  }
  size_t room = w->maxmsg - (4u << 10);   /* the client drops a message over its limit */
  if (w->cap.n > room / 2) {              /* output that cannot travel is cut, and says so */
    char note[96];
    int k = snprintf(note, sizeof note, "\n[farm: %zu bytes of output cut]\n", w->cap.n - room / 2);
    w->cap.n = room / 2 - (size_t)k;
    farm__buf_put(&w->cap, note, (size_t)k);
  }
  if (ok && w->enc.n + w->cap.n > room) {
    char have[32], max[32];
    lua_pushfstring(w->L, "the job's results and output take %s; a link carries at most %s "
                    "(farm.config{max_message = bytes} raises it)",
                    farm__size_text(w->enc.n + w->cap.n, have, sizeof have),
                    farm__size_text(w->maxmsg, max, sizeof max));
    lua_pushliteral(w->L, "");
    ok = 0;
  }
  size_t size = (ok ? w->enc.n : 2 * ERROR_BYTES) + w->cap.n + 64;
  if (w->nres && w->res.n + size > w->result_limit) flush(w);
  if (ok) {
    farm_msg_result m = { .id = id, .attempt = att, .status = FARM_JOB_OK, .busy = busy,
                          .block = w->enc.p, .nblock = w->enc.n };
    /* a big block goes through the region we share with the client (shm.h) */
    if (farm__shm_put_result(&w->shm, w->enc.p, w->enc.n, &m.pos) == 0) m.shm = 1;
    put_result(w, &m, began);
    return;
  }
  size_t nm, nt;
  const char *tb = lua_tolstring(w->L, -1, &nt);
  const char *m = lua_tolstring(w->L, -2, &nm);
  result_error(w, id, att, busy, began, m ? m : "error", m ? nm : 5, tb ? tb : "", tb ? nt : 0);
}

/* Push the job's function: kept by hash when it has no upvalue values of its
   own, decoded afresh from its block otherwise. Or push an error message and
   return -1. */
static int get_function(worker *w, wjob *j, int chain) {
  lua_State *L = w->L;
  int keep = j->fnkind != FARM_FN_FRESH;
  if (keep) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, w->fns);
    lua_pushlstring(L, (const char *)j->hash, FARM_HASHLEN);
    if (lua_rawget(L, -2) == LUA_TFUNCTION) { lua_remove(L, -2); return 0; }
    lua_pop(L, 2);
  }
  if (!j->pkg) {
    lua_pushliteral(L, "protocol error: function not cached on this worker");
    return -1;
  }
  int n = decode_block(w, j->pkg, j->npkg, keep ? 0 : chain);
  if (n != 1 || !lua_isfunction(L, -1)) {
    if (n >= 0) { lua_pop(L, n); lua_pushliteral(L, "malformed message: function block"); }
    return -1;
  }
  if (keep) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, w->fns);
    lua_pushlstring(L, (const char *)j->hash, FARM_HASHLEN);
    lua_pushvalue(L, -3);
    lua_rawset(L, -3);
    lua_pop(L, 1);
  }
  return 0;
}

/* Tell the client how many of our jobs wait (their slots are free to others). */
static void send_suspended(worker *w, uint64_t id) {
  char m[32];                            /* (4 + 2 * 10 bytes at most: nothing to allocate) */
  farm_buf b = { m, 0, sizeof m };
  farm__proto_put_suspended(&b, (uint64_t)(w->nwaiting + w->nblocked), id);
  if (farm__link_send(w->link, m, b.n, 0) != 0) {
    fprintf(stderr, "farm worker %d: cannot send to the client: %s\n", w->slot + 1, farm__link_error());
    exit(3);
  }
}

static void free_run(worker *w, wrun *r) {
  (void)w;
  farm__buf_free(&r->out);
  if (r->waitjob) farm__job_unref(r->waitjob);
  wjob_free(r->j);
  free(r);
}

/* Resume r's coroutine with nargs values on top of L (the function and its
   arguments the first time), until it ends or waits. */
static void resume_run(worker *w, wrun *r, int nargs) {
  lua_State *L = w->L, *co = r->co;
  int top = lua_gettop(L) - nargs;
  wjob *j = r->j;
  if (!lua_checkstack(co, nargs + LUA_MINSTACK)) {
    lua_settop(L, top);
    fail_with(L, "too many arguments for one job");
    finish(w, j->id, j->att, r->busy, r->began, 0, &r->out);
    end_coroutine(w, co, r->co_ref, 0);
    r->co = NULL;
    goto done;
  }
  lua_xmove(L, co, nargs);
  if (w->nres || w->nsubmit) lua_sethook(co, flush_hook, LUA_MASKCOUNT, FLUSH_HOOK_COUNT);
  w->cur = r;
  r->t0 = farm__now();
  int nres = 0;
  int st = lua_resume(co, L, lua_status(co) == LUA_YIELD ? nargs : nargs - 1, &nres);
  r->busy += farm__now() - r->t0;
  w->cur = NULL;
  lua_sethook(co, NULL, 0, 0);
  if (st == LUA_YIELD && nres == 1 && lua_touserdata(co, -1) == &wait_marker) {
    lua_pop(co, 1);                      /* it waits: keep what it printed, free its slot */
    collect_output(w);
    farm__buf_put(&r->out, w->cap.p, w->cap.n);
    w->cap.n = 0;
    farm__wstate_set(w->state, 0, 0);
    r->next = w->waiting;
    w->waiting = r;
    w->nwaiting++;
    flush_submits(w);
    send_suspended(w, j->id);
    return;
  }
  int ok = 0;
  if (st == LUA_OK) {
    if (!lua_checkstack(L, nres + LUA_MINSTACK)) {
      lua_settop(co, 0);
      fail_with(L, "too many results from one job");
    } else {
      lua_xmove(co, L, nres);
      ok = encode_results(w, nres) == 0;
      if (!ok) lua_pushliteral(L, "");   /* encoding failed: no traceback */
    }
  } else if (st == LUA_YIELD) {
    lua_pop(co, nres);
    fail_with(L, "the job yielded: coroutine.yield outside a coroutine of its own is not supported");
  } else {
    lua_xmove(co, L, 1);                 /* the error object */
    int e = lua_gettop(L);
    lua_pushvalue(L, e);                 /* the value travels too, when it can */
    if (encode_results(w, 1) == 0) {
      farm_buf t = w->errval;
      w->errval = w->enc;
      w->enc = t;
    } else {
      lua_pop(L, 1);                     /* it cannot: its text will do */
      w->errval.n = 0;
    }
    luaL_traceback(L, co, NULL, 0);
    push_error_text(L, e);
    lua_insert(L, -2);                   /* message, traceback */
    lua_remove(L, e);
  }
  finish(w, j->id, j->att, r->busy, r->began, ok, &r->out);
  end_coroutine(w, co, r->co_ref, st == LUA_OK);
  r->co = NULL;
done:
  farm__wstate_set(w->state, 0, 0);
  lua_settop(L, top);
  free_run(w, r);
}

/* ---- what every job may use (SHARE): farm.shared, farm.on_node, limits ------------ */

static int p_traceback(lua_State *L) {   /* an error's text: one line for the client */
  push_error_text(L, 1);
  return 1;
}

/* Call the function below the table of its arguments on top of L (the table
   gives way to its items, 200 at most), with the error handler at h, as setup
   or cleanup (no waiting for jobs); lua_pcall's status. */
static int call_with_args(worker *w, int h) {
  lua_State *L = w->L;
  int nargs = 0;
  if (lua_istable(L, -1)) {
    int a = lua_gettop(L);
    lua_Integer k = luaL_len(L, a);
    if (k > 200 || !lua_checkstack(L, (int)k + 4)) k = 0;
    for (lua_Integer i = 1; i <= k; i++) lua_geti(L, a, i);
    lua_remove(L, a);
    nargs = (int)k;
  } else lua_pop(L, 1);
  w->in_setup = 1;
  int st = lua_pcall(L, nargs, 0, h);
  w->in_setup = 0;
  return st;
}

/* The pool's setup function, once (its globals are the jobs' globals): its
   cleanup is kept for the end. When it fails, the client is told, and no job
   runs here any more: the client takes them back and tells us to quit. */
static void run_setup(worker *w, const char *p, size_t n) {
  lua_State *L = w->L;
  int top = lua_gettop(L);
  const char *why = NULL;
  lua_pushcfunction(L, p_traceback);
  int nv = decode_block_in(w, p, n, 0, 1);   /* the globals it sets are the jobs' */
  if (nv != 1 || !lua_istable(L, -1)) {
    why = nv < 0 ? lua_tostring(L, -1) : "malformed message: setup block";
  } else {
    int t = lua_gettop(L);
    if (lua_getfield(L, t, "setup") != LUA_TFUNCTION) lua_settop(L, t);   /* only a cleanup */
    else {
      lua_getfield(L, t, "args");
      if (call_with_args(w, top + 1) != LUA_OK) why = lua_tostring(L, -1);
    }
    if (!why) {
      lua_createtable(L, 2, 0);
      lua_getfield(L, t, "cleanup");
      lua_rawseti(L, -2, 1);
      lua_getfield(L, t, "args");
      lua_rawseti(L, -2, 2);
      w->cleanup = luaL_ref(L, LUA_REGISTRYINDEX);
    }
  }
  if (why) {
    farm_buf b;
    farm__buf_init(&b);
    size_t k = strlen(why);
    farm__proto_put_setupfail(&b, why, k < ERROR_BYTES ? k : ERROR_BYTES);
    w->stopped = 1;
    if (farm__link_send(w->link, b.p, b.n, 0) != 0) {
      fprintf(stderr, "farm worker %d: cannot send to the client: %s\n", w->slot + 1, farm__link_error());
      exit(3);
    }
    farm__buf_free(&b);
  }
  lua_settop(L, top);
}

/* The cleanup of the pool's setup, when the worker ends (a failure is said on
   the worker's stderr: there is no job to give it to). */
static void run_cleanup(worker *w) {
  lua_State *L = w->L;
  if (!L || w->cleanup == LUA_NOREF) return;
  int top = lua_gettop(L);
  lua_pushcfunction(L, p_traceback);
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->cleanup);
  int t = lua_gettop(L);
  if (lua_rawgeti(L, t, 1) == LUA_TFUNCTION) {
    lua_rawgeti(L, t, 2);
    if (call_with_args(w, top + 1) != LUA_OK)
      fprintf(stderr, "farm worker %d: the cleanup function of farm.on_node failed: %s\n",
              w->slot + 1, lua_tostring(L, -1));
  }
  lua_settop(L, top);
}

static void apply_shares(worker *w, wjob *j) {
  lua_State *L = w->L;
  farm_rd r;
  farm__rd_init(&r, j->args, j->nargs);      /* SHARE past its header, checked whole */
  uint32_t count;
  farm__proto_get_list(&r, &count, NULL, 0);
  for (uint32_t i = 0; i < count && !r.err; i++) {
    farm_msg_share x;
    if (farm__proto_get_share(&r, &x, NULL, 0) < 0) break;
    int kind = x.kind;
    size_t nn = x.nname, nb = x.nblock;
    const char *name = x.name, *b = x.block;
    if (kind == FARM_SHARE_VALUE) {
      lua_rawgeti(L, LUA_REGISTRYINDEX, w->shared_vals);
      lua_pushlstring(L, name, nn);
      int have = lua_rawget(L, -2) != LUA_TNIL;
      lua_pop(L, 2);
      if (have) continue;                /* a name is set once */
      lua_rawgeti(L, LUA_REGISTRYINDEX, w->shared_raw);
      lua_pushlstring(L, name, nn);
      lua_pushlstring(L, b, nb);
      lua_rawset(L, -3);
      lua_pop(L, 1);
    } else if (kind == FARM_SHARE_SETUP) {
      if (w->cleanup == LUA_NOREF && !w->stopped) run_setup(w, b, nb);
    } else if (kind == FARM_SHARE_LIMIT && nn == 8 && memcmp(name, "max_file", 8) == 0) {
      char num[32];
      if (nb < sizeof num) {
        memcpy(num, b, nb);
        num[nb] = 0;
        unsigned long long v = strtoull(num, NULL, 10);
        if (v > 0) w->max_file = (size_t)v;
      }
    }                                    /* files are a node's business */
  }
}

int farm__worker_shared(lua_State *L, worker *w, const char *name, size_t n) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->shared_vals);
  lua_pushlstring(L, name, n);
  if (lua_rawget(L, -2) != LUA_TNIL) { lua_remove(L, -2); return 1; }
  lua_pop(L, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->shared_raw);
  lua_pushlstring(L, name, n);
  if (lua_rawget(L, -2) != LUA_TSTRING) { lua_pop(L, 3); return 0; }
  size_t nb;
  const char *b = lua_tolstring(L, -1, &nb);
  int base = lua_gettop(L);                /* vals raw block */
  lua_pushcfunction(L, p_decode);
  lua_pushlightuserdata(L, w);
  lua_pushlightuserdata(L, (void *)b);
  lua_pushinteger(L, (lua_Integer)nb);
  lua_pushnil(L);
  if (lua_pcall(L, 4, LUA_MULTRET, 0) != LUA_OK) return lua_error(L);
  if (lua_gettop(L) != base + 1) return luaL_error(L, "farm.shared.%s: malformed shared value", name);
  lua_pushlstring(L, name, n);             /* decoded once: the block goes */
  lua_pushvalue(L, -2);
  lua_rawset(L, base - 2);
  lua_pushlstring(L, name, n);
  lua_pushnil(L);
  lua_rawset(L, base - 1);
  lua_replace(L, base - 2);
  lua_settop(L, base - 2);
  return 1;
}

/* Whether this worker is a node's: they start in the node's jobs' directory. */
static int in_node_dir(void) {
  char cwd[PATH_MAX];
  return getcwd(cwd, sizeof cwd) && strstr(cwd, "/farm-node-") != NULL;
}

/* Say why in err; -1. */
static int say(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int say(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return -1;
}

int farm__worker_send_file(worker *w, const char *path, char *err, size_t errlen) {
  if (!w->cur) return say(err, errlen, "farm.send_file: only a job can send a file (not the setup)");
  farm_buf data, b;
  farm__buf_init(&data);
  farm__buf_init(&b);
  char why[400];
  struct stat st;
  if (farm__file_take(path, w->max_file ? w->max_file : FARM_MAX_FILE_DEFAULT, &data, &st,
                      why, sizeof why) < 0) {
    int missing = errno == ENOENT;
    farm__buf_free(&data);
    return say(err, errlen, "farm.send_file: %s%s", why, missing && in_node_dir() ?
               " (a job on a node runs in a directory of its own there; ship what it reads with "
               "files = {...})" : "");
  }
  farm_msg_file m = { .id = w->cur->j->id, .dev = (uint64_t)st.st_dev, .ino = (uint64_t)st.st_ino,
                      .path = path, .npath = strlen(path), .data = data.p, .ndata = data.n };
  int rc = farm__proto_put_file(&b, &m) < 0 ? FARM_ENOMEM : farm__link_send(w->link, b.p, b.n, 0);
  farm__buf_free(&data);
  farm__buf_free(&b);
  if (rc == FARM_ENOMEM) return say(err, errlen, "farm.send_file: out of memory for %s", path);
  if (rc != 0) return say(err, errlen, "farm.send_file: cannot send %s: %s", path, farm__link_error());
  return 0;
}

int farm__worker_provide(worker *w, const char *block, size_t n, char *err, size_t errlen) {
  if (!w->cur) return say(err, errlen, "farm.provide: only a job provides results (not the setup)");
  farm_buf b;
  farm__buf_init(&b);
  int rc = farm__proto_put_partial(&b, w->cur->j->id, block, n) < 0 ? FARM_ENOMEM
           : farm__link_send(w->link, b.p, b.n, 0);
  farm__buf_free(&b);
  if (rc == FARM_ENOMEM) return say(err, errlen, "farm.provide: out of memory");
  if (rc != 0) return say(err, errlen, "farm.provide: cannot send it: %s", farm__link_error());
  return 0;
}

int farm__worker_cancelled(worker *w) {
  return w->cur && __atomic_load_n(&w->stop_id, __ATOMIC_ACQUIRE) == w->cur->j->id;
}

static void start_job(worker *w, wjob *j) {
  lua_State *L = w->L;
  if (j->forget) {                       /* the client forgot what we have: so do we */
    lua_newtable(L);
    lua_rawseti(L, LUA_REGISTRYINDEX, w->fns);
  }
  if (j->share) { apply_shares(w, j); wjob_free(j); return; }
  int top = lua_gettop(L);
  /* a fresh function's block and the job's argument block decode as one (codec.h) */
  int chain = 0;
  if (j->fnkind == FARM_FN_FRESH) {
    lua_newtable(L);
    chain = lua_gettop(L);
  }
  wrun *r = calloc(1, sizeof *r);
  if (!r) { fprintf(stderr, "farm worker %d: out of memory\n", w->slot + 1); exit(3); }
  r->j = j;
  farm__buf_init(&r->out);
  farm__wstate_set(w->state, j->id, j->att);
  double t0 = farm__now();
  r->began = t0;
  if (j->mode == FARM_MODE_MAP) lua_rawgeti(L, LUA_REGISTRYINDEX, w->runner);
  int nargs = -1;
  if (get_function(w, j, chain) == 0) {
    nargs = decode_block(w, j->args, j->nargs, chain);
    if (nargs < 0) lua_pushliteral(L, "");            /* no traceback for a bad argument block */
    else if (j->mode == FARM_MODE_MAP && (nargs < 2 || !lua_isinteger(L, -nargs))) {
      lua_settop(L, top);
      lua_pushliteral(L, "malformed message: bad map chunk");
      lua_pushliteral(L, "");
      nargs = -1;
    }
  } else {
    lua_pushliteral(L, "");
  }
  if (nargs < 0) {                       /* message and traceback on top */
    finish(w, j->id, j->att, farm__now() - t0, t0, 0, NULL);
    farm__wstate_set(w->state, 0, 0);
    lua_settop(L, top);
    free_run(w, r);
    return;
  }
  if (chain) lua_remove(L, chain);
  r->co = new_coroutine(w, &r->co_ref);
  r->busy = farm__now() - t0;
  resume_run(w, r, lua_gettop(L) - top);
}

/* A waiting job whose sub-job ended (or whose wait timed out) goes on. */
static wrun *ready_run(worker *w, double now) {
  wrun **pp = &w->waiting;
  for (wrun *r; (r = *pp); pp = &r->next) {
    int over = r->waitjob ? farm__job_over(r->waitjob) : r->waitany ? w->gen != r->waitgen : 0;
    if (over || (r->deadline > 0 && now >= r->deadline)) {
      *pp = r->next;
      w->nwaiting--;
      return r;
    }
  }
  return NULL;
}

static void continue_run(worker *w, wrun *r) {
  int over = r->waitjob ? farm__job_over(r->waitjob) : r->waitany ? farm__worker_gen(w) != r->waitgen : 0;
  if (r->waitjob) { farm__job_unref(r->waitjob); r->waitjob = NULL; }
  r->waitany = 0;
  r->deadline = 0;
  send_suspended(w, r->j->id);
  farm__wstate_resume(w->state, r->j->id, r->j->att, 1);
  lua_pushboolean(w->L, over);
  resume_run(w, r, 1);
}

/* The earliest deadline of the waiting jobs, or 0. */
static double next_deadline(worker *w) {
  double d = 0;
  for (wrun *r = w->waiting; r; r = r->next)
    if (r->deadline > 0 && (d == 0 || r->deadline < d)) d = r->deadline;
  return d;
}

/* Wait for work as the idle Lua thread: poll the link itself (mu held; it is
   released meanwhile), until the deadline of a waiting job at the latest. */
static void idle_wait(worker *w) {
  double d = next_deadline(w), left = d > 0 ? d - farm__now() : 1.0;
  int ms = left <= 0 ? 0 : left > 1.0 ? 1000 : (int)(left * 1e3) + 1;
  w->idle = 1;
  w->listen = 0;
  w->busy_since = 0;
  pthread_mutex_unlock(&w->mu);
  struct pollfd pfd = { .fd = farm__link_rcvfd(w->link), .events = POLLIN };
  int pr = poll(&pfd, 1, ms);
  pthread_mutex_lock(&w->mu);
  w->idle = 0;
  if (orphaned(w)) w->quit = 1;
  else if (pr > 0) take_link(w);
}

/* Serve until QUIT, an orphaning, or a link error; returns the exit status. */
static int serve(worker *w) {
  for (;;) {
    pthread_mutex_lock(&w->mu);
    wjob *j = NULL;
    wrun *r = NULL;
    while (!(r = ready_run(w, farm__now())) && !(j = w->stopped ? NULL : wjobs_pop(w->q)) &&
           !w->quit && !w->failed) {
      if (w->nres || w->nsubmit) {         /* nothing to run: results go now */
        pthread_mutex_unlock(&w->mu);
        flush(w);
        flush_submits(w);
        pthread_mutex_lock(&w->mu);
        continue;
      }
      idle_wait(w);
    }
    int quit = w->quit, failed = w->failed;
    if (!w->busy_since) w->busy_since = farm__now();   /* the link thread listens if it lasts */
    pthread_mutex_unlock(&w->mu);
    if (!j && !r) { flush(w); return failed ? 3 : 0; }
    if (r) continue_run(w, r);
    else start_job(w, j);
    if (w->res.n >= w->result_limit || farm__now() - w->last_flush >= RESULT_DELAY) flush(w);
    if (quit) { flush(w); return 0; }
  }
}

/* ---- sub-jobs: what a job submits goes through the client's scheduler ---------------- */

static void flush_submits(worker *w) {
  if (w->nsubmit) send_entries(w, &w->submit, &w->nsubmit, FARM_MSG_SUBMIT, "jobs");
}

worker *farm__worker_of(lua_State *L) { return *(worker **)lua_getextraspace(L); }
size_t farm__worker_maxmsg(worker *w) { return w->maxmsg; }
int farm__worker_pool(worker *w) {
  pthread_mutex_lock(&w->mu);
  int n = w->q->pool > 0 ? w->q->pool : 1;
  pthread_mutex_unlock(&w->mu);
  return n;
}
uint64_t farm__worker_gen(worker *w) {
  pthread_mutex_lock(&w->mu);
  uint64_t g = w->gen;
  pthread_mutex_unlock(&w->mu);
  return g;
}

int farm__worker_submit(worker *w, farm_job *j) {
  pthread_mutex_lock(&w->mu);          /* the link thread takes sub-jobs off this list */
  if (w->nsubs == w->capsubs) {
    size_t n = w->capsubs ? 2 * w->capsubs : 16;
    farm_job **p = realloc(w->subs, n * sizeof *p);
    if (!p) { pthread_mutex_unlock(&w->mu); return FARM_ENOMEM; }
    w->subs = p;
    w->capsubs = n;
  }
  j->id = ++w->subid;
  __atomic_store_n(&j->state, (uint8_t)JOB_QUEUED, __ATOMIC_RELAXED);
  __atomic_add_fetch(&j->refs, 1, __ATOMIC_RELAXED);
  w->subs[w->nsubs++] = j;
  pthread_mutex_unlock(&w->mu);
  if (w->nsubmit && w->submit.n + j->nargs + j->fn->n + 64 > w->result_limit) flush_submits(w);
  farm_msg_submit m = { .subid = j->id, .mode = j->mode, .fresh = j->fn->fresh, .timeout = farm__job_timeout(j),
                        .retries = j->max_retries != FARM_DEFAULT_RETRIES ? j->max_retries : -1,
                        .fnb = j->fn->p, .nfn = j->fn->n, .args = j->args, .nargs = j->nargs };
  farm__proto_put_submit(&w->submit, &m);
  w->nsubmit++;
  farm__job_drop_args(j);
  return 0;
}

void farm__worker_submitted(lua_State *L, worker *w) {
  if (w->nsubmit && !lua_gethook(L)) lua_sethook(L, flush_hook, LUA_MASKCOUNT, FLUSH_HOOK_COUNT);
}

/* Wait in L for what wait_over says: by yielding when L is the job's own
   coroutine (the worker runs other jobs meanwhile), else by blocking. */
static int wait_in(lua_State *L, worker *w, farm_job *j, int any, uint64_t gen, double timeout) {
  if (w->in_setup)   /* no job has a slot to free, and none may run before it */
    return luaL_error(L, "farm.on_node: the setup and cleanup functions cannot wait for jobs "
                      "(setup runs before the worker's first job)");
  flush_submits(w);
  wrun *r = w->cur;
  if (r && L == r->co && lua_isyieldable(L)) {
    if (j) __atomic_add_fetch(&j->refs, 1, __ATOMIC_RELAXED);
    r->waitjob = j;
    r->waitany = any;
    r->waitgen = gen;
    r->deadline = timeout >= 0 && timeout < 1e9 ? farm__now() + timeout : 0;
    lua_pushlightuserdata(L, (void *)&wait_marker);
    return lua_yield(L, 1);
  }
  /* Inside a coroutine of the job's own (or a metamethod) it cannot yield to
     us: it blocks, and the worker runs its other work from here meanwhile
     (jobs queued here, waiting jobs whose turn came), one level down the C
     stack, so what it waits for is never stuck behind it. */
  flush(w);
  double until = timeout >= 0 && timeout < 1e9 ? farm__now() + timeout : 0;
  uint64_t id = r ? r->j->id : 0;
  int told = 0;
  for (;;) {
    pthread_mutex_lock(&w->mu);
    int over = j ? farm__job_over(j) : w->gen != gen;
    if (over || w->quit || w->failed || (until && farm__now() >= until)) {
      pthread_mutex_unlock(&w->mu);
      if (told) { w->nblocked--; send_suspended(w, id); }
      lua_pushboolean(L, over);
      return 1;
    }
    if (!told) {                         /* its slot is free to others, as a waiting job's */
      w->listen = 1;                     /* and the link thread listens meanwhile */
      pthread_cond_signal(&w->io_cv);
      pthread_mutex_unlock(&w->mu);
      told = 1;
      w->nblocked++;
      send_suspended(w, id);
      continue;
    }
    wrun *next = ready_run(w, farm__now());
    wjob *job = next || w->stopped ? NULL : wjobs_pop(w->q);
    if (!next && !job) {
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      ts.tv_nsec += 50 * 1000000L;
      if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
      pthread_cond_timedwait(&w->cv, &w->mu, &ts);
      pthread_mutex_unlock(&w->mu);
      continue;
    }
    pthread_mutex_unlock(&w->mu);
    if (r) {                             /* what it printed so far is its own */
      collect_output(w);
      farm__buf_put(&r->out, w->cap.p, w->cap.n);
      w->cap.n = 0;
    }
    if (next) continue_run(w, next); else start_job(w, job);
    flush(w);
    w->cur = r;
    if (r) farm__wstate_resume(w->state, r->j->id, r->j->att, 1);
  }
}

int farm__worker_wait(lua_State *L, worker *w, farm_job *j, double timeout) {
  if (farm__job_over(j) || timeout == 0) { lua_pushboolean(L, farm__job_over(j)); return 1; }
  return wait_in(L, w, j, 0, 0, timeout);
}

int farm__worker_pump(lua_State *L, worker *w, uint64_t gen, double timeout) {
  if (farm__worker_gen(w) != gen || timeout == 0) {
    lua_pushboolean(L, farm__worker_gen(w) != gen);
    return 1;
  }
  return wait_in(L, w, NULL, 1, gen, timeout);
}

/* ---- set-up ---------------------------------------------------------------------------- */

static void weak_table(lua_State *L, const char *mode) {
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushstring(L, mode);
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
}

/* A MAP job runs this in its coroutine: fn on each row of the lists, the first
   result of each kept. In Lua, so that a row may wait on sub-jobs like any job. */
static const char map_runner[] =
  "local select, unpack = select, table.unpack\n"
  "return function(fn, n, l1, ...)\n"
  "  local out = {}\n"
  "  if select('#', ...) == 0 then\n"
  "    for i = 1, n do out[i] = (fn(l1[i])) end\n"
  "  else\n"
  "    local lists, nl, row = { l1, ... }, select('#', ...) + 1, {}\n"
  "    for i = 1, n do\n"
  "      for k = 1, nl do row[k] = lists[k][i] end\n"
  "      out[i] = (fn(unpack(row, 1, nl)))\n"
  "    end\n"
  "  end\n"
  "  return out\n"
  "end\n";

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
  w->shared_raw = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_newtable(L);
  w->shared_vals = luaL_ref(L, LUA_REGISTRYINDEX);
  weak_table(L, "v");                      /* compiled chunks, as long as something uses them */
  w->chunks = luaL_ref(L, LUA_REGISTRYINDEX);
  if (luaL_loadbufferx(L, map_runner, sizeof map_runner - 1, "=farm.map", "t") != LUA_OK)
    return lua_error(L);
  lua_call(L, 0, 1);
  w->runner = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

static void on_ignored(int sig) { (void)sig; }

/* SIGTERM (the client died: PR_SET_PDEATHSIG, pool.c): the processes our jobs
   started go with us. Only a group we lead: a worker started by hand is not
   one, and its group is its shell's job. */
static void on_term(int sig) {
  if (getpgrp() == getpid()) kill(0, SIGKILL);
  signal(sig, SIG_DFL);
  raise(sig);
}

/* SIGINT is ignored (the terminal's Ctrl-C is the client's, and reaches it
   alone anyway: we lead a session of our own); SIGPIPE too, unless the client
   kept it (a write to a closed pipe fails instead). Both are caught by a
   handler that does nothing rather than set to SIG_IGN: a disposition SIG_IGN
   is inherited across exec, and the programs a job starts should begin with
   the signals a child of `lua` would have (`yes | head -1` ends quietly). */
static void set_signals(void) {
  struct sigaction sa, old;
  memset(&sa, 0, sizeof sa);
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sa.sa_handler = on_ignored;
  sigaction(SIGINT, &sa, NULL);
  if (sigaction(SIGPIPE, NULL, &old) == 0 && old.sa_handler != SIG_IGN) sigaction(SIGPIPE, &sa, NULL);
  sa.sa_handler = on_term;
  sigaction(SIGTERM, &sa, NULL);
}

int farm__worker_main(const char *url, int slot, long parent, size_t maxmsg, int statefd,
                      int captured) {
  worker w;
  memset(&w, 0, sizeof w);
  w.slot = slot;
  w.parent = (pid_t)parent;
  w.cleanup = LUA_NOREF;
  w.maxmsg = maxmsg;
  set_signals();
  farm__buf_init(&w.res);
  farm__buf_init(&w.times);
  farm__buf_init(&w.cap);
  farm__buf_init(&w.enc);
  farm__buf_init(&w.errval);
  farm__buf_init(&w.submit);
  pthread_mutex_init(&w.mu, NULL);
  pthread_cond_init(&w.cv, NULL);
  pthread_cond_init(&w.io_cv, NULL);
  w.result_limit = maxmsg - (4u << 10) < RESULT_BYTES ? maxmsg - (4u << 10) : RESULT_BYTES;
  w.state = statefd >= 0 ? farm__wstate_attach(statefd) : NULL;
  /* descriptor 1 is a memfd: all a job writes there is its output (the client
     gave us one it reads too; else we make our own) */
  w.outfd = -1;
  if (captured && lseek(1, 0, SEEK_END) >= 0) w.outfd = 1;
  else {
    int ofd = memfd_create("farm-job-output", MFD_CLOEXEC);
    if (ofd >= 0 && dup2(ofd, 1) == 1) w.outfd = 1;
    if (ofd >= 0 && ofd != 1) close(ofd);
  }
  setvbuf(stdout, NULL, _IOLBF, 0);      /* lines keep their order with a child's output */
  /* a fresh memfd goes to the client, when it gave us a way (else we keep one) */
  struct stat sst;
  w.outsock = captured && fstat(FARM_OUTSOCK_FD, &sst) == 0 && S_ISSOCK(sst.st_mode) ? FARM_OUTSOCK_FD : -1;
  w.renew = w.outfd == 1 && (!captured || w.outsock >= 0);
  children_moved(&w, &w.children_sig);
  int rc = 2;
  char err[256];
  if (farm__shm_attach(&w.shm) < 0) {
    fprintf(stderr, "farm worker: cannot map the memory its client shares with it: %s\n", strerror(errno));
    goto out;
  }
  if (!(w.q = farm__wjobs_new())) { fprintf(stderr, "farm worker: out of memory\n"); goto out; }
  if (w.shm.args) w.q->shm = &w.shm;
  if (farm__link_open(&w.link, url, 0, maxmsg + (1u << 16), err, sizeof err) < 0) {
    fprintf(stderr, "farm worker: %s\n", err);
    goto out;
  }
  w.L = luaL_newstate();
  if (w.L) {
    lua_pushcfunction(w.L, setup);
    lua_pushlightuserdata(w.L, &w);
  }
  if (!w.L || lua_pcall(w.L, 1, 0, 0) != LUA_OK) {
    fprintf(stderr, "farm worker: cannot set up Lua: %s\n", w.L ? lua_tostring(w.L, -1) : "out of memory");
    goto out;
  }
  /* HELLO, without blocking: a client that never listens must not hold us */
  farm_buf hello;
  farm__buf_init(&hello);
  farm__proto_put_hello(&hello, &(farm_msg_hello){ .pid = (uint64_t)getpid(), .slot = (uint64_t)slot,
                                                   .capacity = 1 });
  int orphan = 0;
  while (farm__link_send(w.link, hello.p, hello.n, 1) == FARM_EAGAIN) {
    struct pollfd pfd = { .fd = farm__link_sndfd(w.link), .events = POLLIN };
    poll(&pfd, 1, 1000);
    if (w.parent > 0 && getppid() != w.parent) { orphan = 1; break; }
  }
  farm__buf_free(&hello);
  rc = 0;
  if (orphan) goto out;
  farm__proto_put_list(&w.res, FARM_MSG_RESULTS);
  farm__proto_put_list(&w.submit, FARM_MSG_SUBMIT);
  w.last_flush = farm__now();
  if (pthread_create(&w.io, NULL, io_main, &w) != 0) {
    fprintf(stderr, "farm worker: cannot start its link thread\n");
    rc = 2;
    goto out;
  }
  rc = serve(&w);
  if (rc) fprintf(stderr, "farm worker %d: %s\n", slot + 1, w.err);
  else run_cleanup(&w);
  pthread_mutex_lock(&w.mu);             /* the link thread ends (QUIT, orphaned, failed) */
  w.quit = 1;
  pthread_cond_signal(&w.io_cv);
  pthread_mutex_unlock(&w.mu);
  pthread_join(w.io, NULL);
out:
  for (wrun *r; (r = w.waiting); ) { w.waiting = r->next; free_run(&w, r); }
  for (size_t i = 0; i < w.nsubs; i++) farm__job_unref(w.subs[i]);
  free(w.subs);
  farm__buf_free(&w.submit);
  farm__wjobs_free(w.q);
  farm__wstate_free(w.state);
  if (w.L) lua_close(w.L);
  farm__shm_detach(&w.shm);              /* (after the jobs that point into it) */
  farm__link_close(w.link);
  farm__buf_free(&w.res);
  farm__buf_free(&w.times);
  farm__buf_free(&w.cap);
  farm__buf_free(&w.enc);
  farm__buf_free(&w.errval);
  return rc;
}
