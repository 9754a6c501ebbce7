/*
 * engine.c -- the client's engine: a loop on a thread of its own that moves
 * jobs from the caller to the peers and results back, whatever the caller does
 * meanwhile (computes, sleeps, waits for input).
 *
 * Scheduling is by credit, per peer: each peer may hold about CREDIT_SECONDS of
 * work (running plus prefetched), measured from its own job times and weighted
 * by its capacity, so trivial jobs travel thousands to a message and long ones
 * two at a time. Queued jobs are shared out among the peers with free credit,
 * never dealt round-robin. When a peer sits idle with nothing queued, jobs
 * waiting unstarted at another peer are taken back (TAKE/TAKEN: the peer says
 * which it gave back, so none runs twice) and sent to it. The engine knows at
 * every moment where each job is: a peer that is lost gives its jobs back.
 *
 * Threads: the caller pushes jobs onto a lock-free list and wakes the loop
 * through an eventfd only when it sleeps; everything else is under e->mu. The
 * loop wakes a waiting caller through another eventfd (poll()able, so a signal
 * interrupts the caller's wait). Several callers may wait at once (the C API's
 * threads): that eventfd is one counter, so a caller that ends its wait on it
 * writes it again for the others, and while others wait a caller's poll lasts
 * at most SHARED_WAIT_MS (a wakeup one of them read too early costs no more).
 * The loop never calls Lua.
 *
 * With a journal (farm run --journal, journal.c; the hooks under "the
 * journal"), a job's final result from a worker finishes the job only once its
 * record is synced (one write and fdatasync per RESULTS message), and a call
 * the journal recorded finishes at submit with the recorded result, never
 * reaching the queue. Without one, each hook is one branch.
 *
 * Peers come and go while it runs: farm__engine_set_workers adds and retires
 * local workers; farm__engine_add_hosts adds nodes, which their kind connects
 * in the background and the loop takes in at their HELLO; a node lost and
 * back again (peer_node.c) is the same peer with a fresh session (its jobs
 * went back to the queue at the loss). With no peer left but lost nodes tried
 * again, queued jobs wait REJOIN_WAIT seconds for one before they fail.
 */
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <stdatomic.h>
#include <sodium.h>
#include "farm.h"
#include "clock.h"
#include "engine.h"
#include "files.h"
#include "hash.h"
#include "journal.h"
#include "hosts.h"
#include "peer.h"
#include "pool.h"
#include "sockdir.h"
#include "status.h"
#include "term.h"

#define CREDIT_MAX 2048
#define CREDIT_SECONDS 0.004       /* work kept queued at each worker */
#define BATCH_BYTES (4u << 20)     /* a JOBS message grows to this, then goes */
#define BATCH_MIN 32               /* fewer jobs wait for a busy worker's results */
#define TICK 0.01                  /* timers: deaths, output, timeouts, take-back */
#define IDLE_TICK 0.1              /* ...when no job is outstanding (a death still shows) */
#define SHARED_WAIT_MS 2           /* a caller's poll while other threads wait too */
#define IDLE_BEFORE_TAKE 0.01      /* a peer idle this long takes back waiting jobs */
#define TAKE_DEADLINE 3.0          /* a worker (not a node) that does not answer a TAKE this long
                                      is frozen (SIGSTOP, swapped out): it is replaced */
#define PROGRESS_EVERY 0.2
#define KNOWN_MAX 4096             /* functions a worker keeps before it is told to forget */
#define REQUEUE_MAX 8              /* a job held by lost peers goes back this often */
#define DEFAULT_MAX_MESSAGE (256u << 20)
#define START_TIMEOUT 30.0         /* seconds for a new pool's workers to connect */
#define ECHO_LINE_MAX 65536        /* a partial line longer than this is echoed anyway */
#define QUIT_GRACE_US 30000        /* for QUIT to leave on TCP links before they close */
#define CLEANUP_GRACE_MS 5000      /* workers run farm.on_node's cleanup in this long when the pool closes */

/* farm_job.cancel_req: which cancel is under way */
enum { CANCEL_NONE, CANCEL_TAKE, CANCEL_FORCE };

/* The jobs placed on one peer (a node's name) or on the local pool ("local"). */
struct pinq {
  char name[64];
  farm_job *head, *tail;           /* in order, cancelled ones skipped lazily */
  size_t n;
  int gone;                        /* nothing serves it any more: its jobs fail */
};

/* Who owns each field, at the field (as SQLite's btreeInt.h does):
     [mu]     guarded by e->mu: read or written only with it held, by whichever
              thread holds it (the loop; a caller in submit's or wait's help,
              cancel, stats, set_workers; the kinds' ops, which run under it).
              farm__engine_assert_locked(e) checks it in debug builds.
     [open]   set by farm__engine_open before the loop thread starts (or by
              close after it ended), read-only while it runs: any thread.
     [loop]   the loop thread's alone (loop_main), lock or not.
     [atomic] read and written with atomic operations only, by any thread. */
struct farm_engine {
  pthread_mutex_t mu;
#ifndef NDEBUG
  _Atomic pthread_t holder;        /* [atomic] the thread holding mu (0: none); for asserts */
#endif
  pthread_t thread;                /* [open] the loop thread, */
  int has_thread;                  /* [open] ...while it runs (the opener and the closer) */
  int wake_fd;                     /* [open] caller -> loop (an eventfd) */
  int done_fd;                     /* [open] loop -> waiting caller (an eventfd) */
  farm_job *incoming;              /* [atomic] submitted, not yet taken (a lock-free list) */
  int sleeping, woken, waiters;    /* [atomic] (sleeping is written with mu held, too) */
  uint64_t gen;                    /* [atomic] bumped whenever a job ends or changes */
  int signal_waiters;              /* [mu] something happened this iteration */
  int stop;                        /* [mu] the loop should end */
  atomic_int closed;               /* [atomic] written by close (mu held), read by waits without it */
  farm_peer **peers;               /* [mu] (set up by open before the loop starts) */
  int npeers;                      /* [mu] */
  struct pollfd *pfd;              /* [loop] what the loop polls, */
  int cappfd;                      /* [loop] ...and its room */
  farm_job *qhead, *qtail;         /* [mu] queued, in order (cancelled ones skipped lazily) */
  size_t nqueued;                  /* [mu] */
  struct pinq *pins;               /* [mu] placed jobs' queues, by farm_job.pin (pins[0] unused), */
  int npins, cappins;              /* [mu] ...npins of cappins */
  size_t npinned;                  /* [mu] jobs on them (as nqueued) */
  int nstopping;                   /* [mu] jobs told to stop whose grace runs (stop_at) */
  int events_on;                   /* [mu] farm__engine_events: keep events in ev, */
  farm_event *ev;                  /* [mu] ...nev of capev, oldest first, */
  size_t nev, capev;               /* [mu] */
  uint64_t ev_dropped;             /* [mu] ...and how many did not fit */
  farm_job *fhead, *ftail;         /* [mu] finished jobs someone asked to hear of (fhead is also
                                      read atomically, unlocked, to see the list is empty) */
  size_t outstanding;              /* [atomic] submitted and not over */
  uint64_t nextid;                 /* [atomic] the caller's jobs and sub-jobs take ids */
  int echo, progress;              /* [open] */
  farm_term *term;                 /* [open] the terminal: echo, progress, farm's lines (its own lock) */
  size_t maxmsg, batch_limit;      /* [open] */
  char exe[PATH_MAX];              /* [open] */
  char dir[PATH_MAX];              /* [mu] the socket directory while local workers connect */
  farm_buf msg;                    /* [mu] scratch for whoever holds the lock */
  uint64_t submitted, finished;    /* [atomic] (stats, progress) */
  uint64_t fn_sent, bytes_sent, batches_sent, taken_back;   /* [mu] stats */
  double t0;                       /* [open] */
  double last_tick, last_progress, rate, rate_t, rate_first;   /* [mu] */
  uint64_t rate_done;              /* [mu] */
  int start_failed;                /* [mu] */
  int capacity;                    /* [mu] the peers' capacities summed */
  int restart_workers;             /* [open] a local worker quits after each job, and is replaced */
  struct share { uint8_t kind; char *name; size_t nname; char *p; size_t n; } *shares;  /* [mu] */
  int nshares, capshares;          /* [mu] what every job may use (SHARE), in order */
  farm_files *files_out;           /* [open] where sent files go (its own locks): queued by
                                      on_file, written by whoever releases mu next; while one
                                      waits no message is handled (farm__peer_drain), so what
                                      came after a file (its job's result) is not seen first.
                                      NULL: nowhere (a node's engine, a test engine) */
  size_t max_file;                 /* [open] */
  int keep_files;                  /* [open] a node's engine: sent files wait for the node, and */
  char setup_err[400];             /* [mu] ...the first setup failure, for it to pass on */
  farm_sent_file *files, *files_tail;  /* [mu] */
  int report_starts;               /* [open] a node's engine: jobs as they begin are kept for it */
  uint64_t *begun;                 /* [mu] ...their ext_ids, nbegun of capbegun, */
  size_t nbegun, capbegun;         /* [mu] ...taken by farm__engine_take_started */
  double wall;                     /* [open] time of day minus farm__now() */
  int caller_polls;                /* [atomic] a waiting caller polls the links (and drains them) */
  int loop_skipped;                /* [atomic] the loop sleeps without polling the links */
  char err[512];                   /* [mu] why peers cannot run (the first reason) */
  farm_peer_host host;             /* [open] what the kinds are handed (host_*, below) */
  farm_journal *journal;           /* [open] farm run --journal (journal.c), or NULL; what it
                                      holds is [mu]: see "the journal", below */
  uint64_t failed;                 /* [mu] jobs that failed (the status page) */
  farm_status_error *errs;         /* [mu] the last FARM_STATUS_ERRORS failures, a ring */
  unsigned nerrs;                  /* [mu] failures put in it, ever */
  /* nodes added while it runs (farm__engine_add_hosts) */
  farm_engine_opts nodes_o;        /* [mu] what a node is made with (no hosts; key: key) */
  unsigned char key[32];           /* [mu] the standing nodes' key (nodes_o.key points here) */
  char remote_farm[256];           /* [open] (nodes_o.remote_farm points here) */
  double orphaned;                 /* [mu] since when jobs wait with no peer left but lost
                                      nodes tried again (0: not; awaits_rejoin) */
};

/* The engine's lock. In debug builds it notes its holder, so that
   farm__engine_assert_locked can tell whether the calling thread holds it. */
static void engine_lock(farm_engine *e) {
  pthread_mutex_lock(&e->mu);
#ifndef NDEBUG
  atomic_store_explicit(&e->holder, pthread_self(), memory_order_relaxed);
#endif
}

static int engine_trylock(farm_engine *e) {
  if (pthread_mutex_trylock(&e->mu) != 0) return -1;
#ifndef NDEBUG
  atomic_store_explicit(&e->holder, pthread_self(), memory_order_relaxed);
#endif
  return 0;
}

static void engine_unlock(farm_engine *e) {
#ifndef NDEBUG
  atomic_store_explicit(&e->holder, (pthread_t)0, memory_order_relaxed);
#endif
  pthread_mutex_unlock(&e->mu);
}

#ifndef NDEBUG
int farm__engine_locked(farm_engine *e) {
  /* An engine with no loop thread (being opened, closed, or a test engine) has
     one thread: the one calling. */
  pthread_t h = atomic_load_explicit(&e->holder, memory_order_relaxed);
  return (h && pthread_equal(h, pthread_self())) || !e->has_thread;
}
#endif

/* ---- function packages and jobs ------------------------------------------ */

static void set_text(char **p, size_t *n, const char *s) {
  free(*p);
  *p = farm__dupmem(s, strlen(s));
  *n = *p ? strlen(s) : 0;
}

static void echo_rest(farm_engine *e, farm_job *j);
static void subdone(farm_engine *e, farm_job *j, int state);
static void flush_subdone_of(farm_engine *e, farm_peer *p);

/* ---- events ------------------------------------------------------------------ */

#define EVENTS_MAX 65536           /* kept for a client that does not take them */

static void changed(farm_engine *e);
static void engine_error(farm_engine *e, const char *msg);
static void host_init(farm_engine *e);

static void event(farm_engine *e, int type, uint64_t job, double t, const char *node,
                  const char *text, size_t ntext) {
  if (e->nev == e->capev) {
    size_t cap = e->capev ? 2 * e->capev : 64;
    farm_event *v = cap <= EVENTS_MAX ? realloc(e->ev, cap * sizeof *v) : NULL;
    if (!v) { e->ev_dropped++; return; }
    e->ev = v;
    e->capev = cap;
  }
  farm_event *v = &e->ev[e->nev++];
  v->type = type;
  v->job = job;
  v->time = t;
  snprintf(v->node, sizeof v->node, "%s", node ? node : "");
  size_t n = 0;                    /* the first line of text */
  while (text && n < ntext && n < sizeof v->text - 1 && text[n] != '\n') n++;
  memcpy(v->text, text ? text : "", n);
  v->text[n] = 0;
  changed(e);
}

/* A job of the caller's (not a job's sub-job) has begun or ended at p. */
static void job_event(farm_engine *e, farm_job *j, int type, double t) {
  if (!e->events_on || (j->x && j->x->owner)) return;
  const char *text = type == FARM_EV_JOB_FAILED ? farm__jx(j)->res : NULL;
  farm_peer *p = farm__job_peer(j);
  event(e, type, j->id, t, p ? p->name : "", text, text ? farm__jx(j)->nres : 0);
}

/* A node came up or was lost (local workers come and go unseen). */
static void node_event(farm_engine *e, farm_peer *p, int type, const char *why) {
  if (e->events_on && p->ops->untrusted)
    event(e, type, 0, farm__now(), p->name, why, why ? strlen(why) : 0);
}

void farm__engine_events(farm_engine *e, int on) {
  engine_lock(e);
  int was = e->events_on;
  e->events_on = on;
  if (!on) { e->nev = 0; e->ev_dropped = 0; }
  for (int i = 0; on && !was && i < e->npeers; i++)     /* the nodes up already */
    if (e->peers[i]->ready && !e->peers[i]->dead) node_event(e, e->peers[i], FARM_EV_NODE_UP, NULL);
  engine_unlock(e);
}

size_t farm__engine_take_events(farm_engine *e, farm_event *out, size_t max) {
  engine_lock(e);
  size_t n = e->nev < max ? e->nev : max;
  if (n) {
    memcpy(out, e->ev, n * sizeof *out);
    memmove(e->ev, e->ev + n, (e->nev - n) * sizeof *out);
    e->nev -= n;
  }
  if (n < max && !e->nev && e->ev_dropped) {
    farm_event *v = &out[n++];
    memset(v, 0, sizeof *v);
    v->type = FARM_EV_DROPPED;
    v->time = farm__now();
    snprintf(v->text, sizeof v->text, "%llu", (unsigned long long)e->ev_dropped);
    e->ev_dropped = 0;
  }
  engine_unlock(e);
  return n;
}

/* ---- placement ------------------------------------------------------------------- */

int farm__engine_pin(farm_engine *e, const char *name, char *err, size_t errlen) {
  const char *bare = strncmp(name, "node://", 7) ? name : name + 7;
  engine_lock(e);
  farm_peer *at = NULL;
  int local = !strcmp(name, "local"), any_local = 0;
  char have[200] = "";
  size_t nh = 0;
  for (int i = 0; i < e->npeers; i++) {
    farm_peer *p = e->peers[i];
    int l = p->ops->local_pool;
    if (l && !p->retired) any_local = 1;
    if (!l && !at && (!strcmp(p->name, name) || (!strncmp(p->name, "node://", 7) && !strcmp(p->name + 7, bare))))
      at = p;
    if (!l && nh < sizeof have) nh += (size_t)snprintf(have + nh, sizeof have - nh, ", %s", p->name);
  }
  int rc = FARM_EINVAL;
  const char *canon = local ? "local" : at ? at->name : NULL;
  if (local && !any_local)
    snprintf(err, errlen, "this pool has no local workers (it runs on its nodes only)");
  else if (!canon)
    snprintf(err, errlen, "this pool has no node '%s' (it has: %s%s)", name,
             any_local ? "local" : "", any_local ? have : have[0] ? have + 2 : "");
  else if (at && at->dead)
    snprintf(err, errlen, "node %s was lost in this run; place the job elsewhere", at->name);
  else
    rc = 0;
  for (int k = 1; !rc && k < e->npins; k++)
    if (!strcmp(e->pins[k].name, canon)) { rc = k; break; }
  if (!rc) {
    if (e->npins == 0) e->npins = 1;             /* pins[0]: no placement */
    if (e->npins >= e->cappins) {
      int cap = e->cappins ? 2 * e->cappins : 8;
      struct pinq *v = cap <= 65535 ? realloc(e->pins, (size_t)cap * sizeof *v) : NULL;
      if (!v) { engine_unlock(e); snprintf(err, errlen, "out of memory"); return FARM_ENOMEM; }
      e->pins = v;
      e->cappins = cap;
    }
    struct pinq *q = &e->pins[e->npins];
    memset(q, 0, sizeof *q);
    snprintf(q->name, sizeof q->name, "%s", canon);
    rc = e->npins++;
  }
  engine_unlock(e);
  return rc;
}

static void note_failure(farm_engine *e, farm_job *j);

/* A job is over: publish its state (after its results), count it, tell whoever
   waits. The engine's reference goes with the caller (the lists it was on). */
static void job_over(farm_engine *e, farm_job *j, int state) {
  farm_jobx *jx = farm__jx(j);
  farm__engine_assert_locked(e);
  /* Nothing outside reaches this with a job already over: every caller holds a
     job it has just taken out of the one place a live job is -- the queue
     (JOB_QUEUED, unlinked first), or a peer's in-flight list (take_inflight,
     which answers a given id and attempt once) -- or checks the state itself
     (on_results and peer loss: JOB_SENT; cancel: not yet JOB_DONE), all under
     the loop's hold of the job. A result that comes twice, a TAKEN after a
     result, a cancel after the end are stopped there, before this. The guard
     stays as the last wall: a second pass would count the job out twice
     (outstanding would wrap and a wait would never end) and hand it to its
     waiter twice. (A mutant without it survived the whole suite: issue 22.) */
  if (farm__job_over(j)) return;
  if (jx->stop_at > 0) { jx->stop_at = 0; e->nstopping--; }
  farm__job_drop_args(j);
  jx->ended = farm__now();
  if (e->events_on) {
    if (!j->begun && state != JOB_CANCELLED)   /* too short to be seen running: begun now */
      job_event(e, j, FARM_EV_JOB_STARTED, jx->ran_from > 0 ? jx->ran_from : jx->ended);
    job_event(e, j, state == JOB_DONE ? FARM_EV_JOB_DONE : state == JOB_FAILED ? FARM_EV_JOB_FAILED
              : FARM_EV_JOB_CANCELLED, jx->ran_to > 0 ? jx->ran_to : jx->ended);
  }
  if (state == JOB_FAILED) note_failure(e, j);
  jx->peer = NULL;
  echo_rest(e, j);
  if (jx->owner) subdone(e, j, state);
  if (j->notify) {
    __atomic_add_fetch(&j->refs, 1, __ATOMIC_RELAXED);
    jx->fnext = NULL;
    if (e->ftail) farm__jx(e->ftail)->fnext = j; else __atomic_store_n(&e->fhead, j, __ATOMIC_RELEASE);
    e->ftail = j;
  }
  __atomic_store_n(&j->state, (uint8_t)state, __ATOMIC_RELEASE);
  __atomic_sub_fetch(&e->outstanding, 1, __ATOMIC_SEQ_CST);
  __atomic_add_fetch(&e->finished, 1, __ATOMIC_RELAXED);
  __atomic_add_fetch(&e->gen, 1, __ATOMIC_SEQ_CST);
  e->signal_waiters = 1;
}

/* End a job with an error of the engine's own making. */
static void job_fail(farm_engine *e, farm_job *j, const char *msg) {
  farm_jobx *jx = farm__jx(j);
  if (jx->rx) farm__job_drop_results(j);    /* (res is not its own to free) */
  set_text(&jx->res, &jx->nres, msg);
  job_over(e, j, JOB_FAILED);
}

static void changed(farm_engine *e) {
  __atomic_add_fetch(&e->gen, 1, __ATOMIC_SEQ_CST);
  e->signal_waiters = 1;
}

/* Wake a caller waiting in farm__engine_wait, if any. */
static void wake_waiters(farm_engine *e) {
  if (!e->signal_waiters) return;
  e->signal_waiters = 0;
  if (__atomic_load_n(&e->waiters, __ATOMIC_SEQ_CST) > 0) {
    uint64_t one = 1;
    if (write(e->done_fd, &one, sizeof one) < 0) { /* full counter: it is awake anyway */ }
  }
}

/* ---- output: echoed line by line, never half a line glued to another job's ---- */

static void progress_clear(farm_engine *e) {
  if (e->progress) farm__term_progress(e->term, NULL);
}

/* (queued for the terminal: written with the lock released, term.h) */
static void echo_upto(farm_engine *e, farm_job *j, size_t upto) {
  farm_jobx *jx = farm__jx(j);
  if (!e->echo || upto <= jx->echoed) return;
  farm__term_out(e->term, jx->out.p + jx->echoed, upto - jx->echoed);
  jx->echoed = upto;
}

/* Echo the complete lines not echoed yet (and a very long partial one). */
static void echo_lines(farm_engine *e, farm_job *j) {
  farm_jobx *jx = farm__jx(j);
  size_t n = jx->out.n;
  while (n > jx->echoed && jx->out.p[n - 1] != '\n') n--;
  if (n == jx->echoed && jx->out.n - jx->echoed > ECHO_LINE_MAX) n = jx->out.n;
  echo_upto(e, j, n);
}

/* The job ended: the rest goes out, ending with a newline of its own. */
static void echo_rest(farm_engine *e, farm_job *j) {
  farm_jobx *jx = farm__jx(j);
  if (!e->echo || jx->out.n <= jx->echoed) return;
  echo_upto(e, j, jx->out.n);
  if (jx->out.p[jx->out.n - 1] != '\n') farm__term_out(e->term, "\n", 1);
}

/* A peer's jobs in flight by id (p->idx, hash.h): results come back in any
   order (a node interleaves its workers'), and thousands may be in flight. */
static farm_job *find_inflight(farm_peer *p, uint64_t id) {
  return farm__hash_get(&p->idx, id);
}

static int idx_put(farm_peer *p, farm_job *j) { return farm__hash_put(&p->idx, j->id, j); }

static void idx_del(farm_peer *p, farm_job *j) {
  if (farm__hash_get(&p->idx, j->id) == j) farm__hash_del(&p->idx, j->id);
}

static void idx_clear(farm_peer *p) { farm__hash_clear(&p->idx); }

void farm__engine_output(farm_engine *e, farm_peer *p, uint64_t id, const char *s, size_t n) {
  farm_job *j = find_inflight(p, id);
  if (!j || !n) return;
  if (farm__buf_put(&farm__jx(j)->out, s, n) < 0) return;
  echo_lines(e, j);
}

/* ---- the known-function set of a peer ------------------------------------- */

/* A fresh process behind p: it knows no function and nothing was measured. */
void farm__peer_reset(farm_peer *p) {
  farm__hash_clear(&p->known);
  p->forget = 0;
  p->pend.n = 0;
  p->est = 0;
  p->ready = 0;
  p->closing = 0;
  p->shared_upto = 0;
  p->setup_failed = 0;
}

static uint64_t hkey(const unsigned char *h) {
  uint64_t k;
  memcpy(&k, h, sizeof k);
  return k ? k : 1;
}

/* The peer is told to drop its cache (in the next JOBS message), and so is our
   record of it. Never in the middle of a batch. */
static void known_forget(farm_peer *p) {
  farm__hash_clear(&p->known);
  p->forget = 1;
}

/* 1 if the peer already has it; else records it and returns 0. */
static int known_check_add(farm_peer *p, const unsigned char *h) {
  uint64_t k = hkey(h);
  if (farm__hash_get(&p->known, k)) return 1;
  farm__hash_put(&p->known, k, p);   /* (out of memory: sent whole again next time) */
  return 0;
}

/* ---- the queue -------------------------------------------------------------- */

static void enqueue_back(farm_engine *e, farm_job *j) {
  j->next = NULL;
  j->inqueue = 1;
  if (j->pin) {                    /* placed: on its own queue */
    struct pinq *q = &e->pins[j->pin];
    if (q->tail) q->tail->next = j; else q->head = j;
    q->tail = j;
    q->n++;
    e->npinned++;
    return;
  }
  if (e->qtail) e->qtail->next = j; else e->qhead = j;
  e->qtail = j;
  e->nqueued++;
}

/* A queued job leaves the count of its queue (it stays linked, skipped when met). */
static void unqueue(farm_engine *e, farm_job *j) {
  if (!j->inqueue) return;
  j->inqueue = 0;
  if (j->pin) { e->pins[j->pin].n--; e->npinned--; }
  else e->nqueued--;
}

/* Put a job back at the front of the queue (it keeps its place in line). */
static void requeue_front(farm_engine *e, farm_job *j) {
  __atomic_store_n(&j->state, (uint8_t)JOB_QUEUED, __ATOMIC_RELAXED);
  if (j->x) j->x->peer = NULL;
  j->taking = 0;
  j->inqueue = 1;
  if (j->pin) {
    struct pinq *q = &e->pins[j->pin];
    j->next = q->head;
    q->head = j;
    if (!q->tail) q->tail = j;
    q->n++;
    e->npinned++;
  } else {
    j->next = e->qhead;
    e->qhead = j;
    if (!e->qtail) e->qtail = j;
    e->nqueued++;
  }
  changed(e);
}

/* Move what the caller submitted onto the queue, in submission order. */
static void take_incoming(farm_engine *e) {
  farm__engine_assert_locked(e);
  farm_job *list = __atomic_exchange_n(&e->incoming, NULL, __ATOMIC_ACQ_REL), *rev = NULL;
  while (list) { farm_job *n = list->next; list->next = rev; rev = list; list = n; }
  while (rev) {
    farm_job *n = rev->next;
    if (farm__job_state(rev) == JOB_QUEUED) enqueue_back(e, rev);
    else farm__job_unref(rev);                 /* cancelled before it got here */
    rev = n;
  }
}

/* Fail every job on a queue (head and tail, with its count). */
static void fail_list(farm_engine *e, farm_job **head, farm_job **tail, size_t *n, const char *why) {
  farm_job *j;
  while ((j = *head)) {
    *head = j->next;
    j->inqueue = 0;
    if (j->state == JOB_QUEUED) job_fail(e, j, why);
    farm__job_unref(j);
  }
  *tail = NULL;
  *n = 0;
}

static void fail_queue(farm_engine *e, const char *why) {
  take_incoming(e);
  fail_list(e, &e->qhead, &e->qtail, &e->nqueued, why);
  for (int k = 1; k < e->npins; k++)
    fail_list(e, &e->pins[k].head, &e->pins[k].tail, &e->pins[k].n, why);
  e->npinned = 0;
}

/* ---- sending ---------------------------------------------------------------- */

int farm__peer_send(farm_peer *p, const void *msg, size_t n) {
  farm__engine_assert_locked(p->e);
  if (!p->link) return FARM_ELINK;
  p->bytes_out += n;
  return farm__link_send_queued(p->link, &p->pend, msg, n);
}

/* Messages wait for p's link (here, or sealed and held by the link). */
static int backed_up(farm_peer *p) {
  return p->pend.n || (p->link && farm__link_held(p->link));
}

/* Send what waits for p's link; 0 when nothing is left waiting. */
static int flush_pending(farm_peer *p) {
  return farm__link_flush_queued(p->link, &p->pend);
}

void farm__peer_broken(farm_peer *p, const char *why) {
  if (p->broken) { p->broken_target = 0; return; }   /* broken for good: no target spares it */
  p->broken = 1;
  p->broken_target = 0;
  snprintf(p->broken_why, sizeof p->broken_why, "%s", why);
}

/* Have the loop thread stop p for the sake of job id (a forced cancel): if
   that job is over or gone from p by then, p is spared; if it is killed, that
   job is the one blamed, whatever p runs at that moment. */
static void stop_for(farm_peer *p, uint64_t id, const char *why) {
  if (p->broken) return;
  p->broken = 1;
  p->broken_target = id;
  snprintf(p->broken_why, sizeof p->broken_why, "%s", why);
}

static void peer_broken(farm_engine *e, farm_peer *p, const char *why) {
  char msg[200];
  (void)e;
  snprintf(msg, sizeof msg, "%s: %s", p->name, why);
  farm__peer_broken(p, msg);
}

/* Stop and replace the peers marked broken (loop thread only: the processes
   it starts die with it). */
static void fix_broken(farm_engine *e) {
  for (int i = 0; i < e->npeers; i++) {
    farm_peer *p = e->peers[i];
    if (!p->broken) continue;
    p->broken = 0;
    uint64_t target = p->broken_target;
    if (target && !find_inflight(p, target)) continue;   /* it ended meanwhile: spared */
    p->ops->kill(p, p->broken_why, target);
  }
}

/* j is at p now (sent): last of its jobs in flight. */
static void hold(farm_peer *p, farm_job *j) {
  farm__engine_assert_locked(p->e);
  __atomic_store_n(&j->state, (uint8_t)JOB_SENT, __ATOMIC_RELAXED);
  if (farm__job_timeout(j) > 0) p->ntimed++;
  farm_jobx *jx = farm__jx(j);     /* (a job is given its block when it is first sent) */
  jx->peer = p;
  j->next = NULL;
  jx->prev = p->tail;
  if (p->tail) p->tail->next = j; else p->head = j;
  p->tail = j;
  if (idx_put(p, j) < 0) peer_broken(p->e, p, "out of memory");   /* it is lost: its jobs go back */
  p->inflight++;
}

static int credit(farm_peer *p) {
  int cap = p->capacity > 0 ? p->capacity : 1;
  if (p->e->restart_workers) return cap;   /* one job per worker process: nothing waits there */
  /* a node we may use only part of runs whatever it holds at once, on workers
     we were not given: it gets no more than it may run */
  if (p->capped) return cap;
  if (p->est <= 0) return cap + 1;
  double k = cap * CREDIT_SECONDS / p->est;
  double lo = cap + 1, hi = (double)CREDIT_MAX * cap;
  return k < lo ? (int)lo : k > hi ? (int)hi : (int)k;
}

/* The shared items p has not had yet go first (one SHARE message each: a
   value may be large). Files go only to nodes: local workers share our
   directory. */
static void send_shares(farm_engine *e, farm_peer *p) {
  farm_buf *b = &e->msg;
  int local = p->ops->shares_dir;
  for (; p->shared_upto < e->nshares; p->shared_upto++) {
    struct share *x = &e->shares[p->shared_upto];
    if (!x->kind || (local && (x->kind == FARM_SHARE_FILE || x->kind == FARM_SHARE_XFILE))) continue;
    farm_msg_share m = { .kind = x->kind, .name = x->name, .nname = x->nname, .block = x->p, .nblock = x->n };
    if (x->kind == FARM_SHARE_XFILE && x->n) {   /* its block is u8(execute bits), then the content */
      m.xbits = (unsigned char)x->p[0];
      m.block++;
      m.nblock--;
    }
    farm__proto_put_list(b, FARM_MSG_SHARE);
    farm__proto_put_share(b, &m);
    farm__proto_count(b, 1);
    e->bytes_sent += b->n;
    if (farm__peer_send(p, b->p, b->n) < 0) { peer_broken(e, p, "cannot send shared values"); return; }
  }
}

/* Build one JOBS message of up to k jobs from a queue (head, tail, count) for
   p, and send it. */
static void send_from(farm_engine *e, farm_peer *p, int k, farm_job **qhead, farm_job **qtail,
                      size_t *nqueued) {
  if (p->shared_upto < e->nshares) send_shares(e, p);
  farm_buf *b = &e->msg;
  if (p->known.n + (size_t)k > KNOWN_MAX) known_forget(p);   /* only ever between batches */
  /* the pool's size, for farm.workers() in a job */
  farm__proto_put_jobs(b, p->forget, (uint64_t)e->capacity);
  uint32_t count = 0;
  while (count < (uint32_t)k && *qhead) {
    farm_job *j = *qhead;
    /* a batch never outgrows its limit unless one job alone does (and that
       fits the link): the receiver drops a message over its limit silently */
    if (count && j->state == JOB_QUEUED && b->n + j->nargs + j->fn->n + 64 > e->batch_limit) break;
    *qhead = j->next;
    if (!*qhead) *qtail = NULL;
    if (j->state != JOB_QUEUED) { farm__job_unref(j); continue; }   /* cancelled (uncounted) */
    (*nqueued)--;
    j->inqueue = 0;
    /* retries: what is left of the job's (a node's engine retries it itself) */
    farm_msg_job m = { .id = j->id, .attempt = j->attempt,
                       .retries = j->attempt < j->max_retries ? j->max_retries - j->attempt : 0,
                       .mode = j->mode, .hash = j->fn->hash,
                       .fnb = j->fn->p, .nfn = j->fn->n, .args = j->args, .nargs = j->nargs };
    /* a big argument block goes through the memory it shares with a local worker */
    if (p->ops->args_put && p->ops->args_put(p, j->id, j->args, j->nargs, &m.args_off) == 0) m.shm = 1;
    if (j->fn->fresh) {
      m.fn = FARM_FN_FRESH;
    } else if (known_check_add(p, j->fn->hash)) {
      m.fn = FARM_FN_CACHED;
    } else {
      m.fn = FARM_FN_KEEP;
      e->fn_sent++;
    }
    farm__proto_put_job(b, &m);
    hold(p, j);
    count++;
  }
  if (!count) return;
  p->idle_since = 0;
  e->bytes_sent += b->n;
  e->batches_sent++;
  p->forget = 0;
  farm__proto_count(b, count);
  if (farm__peer_send(p, b->p, b->n) < 0) peer_broken(e, p, "cannot send jobs");
}

static void send_batch(farm_engine *e, farm_peer *p, int k) {
  send_from(e, p, k, &e->qhead, &e->qtail, &e->nqueued);
}

static int peer_open(farm_peer *p) {
  return p->ready && p->link && !p->closing && !p->retired;   /* retired: no new jobs */
}

/* Whether p may run the jobs placed on q. */
static int serves(const farm_peer *p, const struct pinq *q) {
  if (!strcmp(q->name, "local")) return p->ops->local_pool;
  return !strcmp(p->name, q->name);
}

/* Placed jobs go first, each to a peer that may run them, up to its credit. */
static void dispatch_placed(farm_engine *e) {
  for (int i = 0; i < e->npeers && e->npinned; i++) {
    farm_peer *p = e->peers[i];
    if (!peer_open(p) || backed_up(p)) continue;
    for (int k = 1; k < e->npins; k++) {
      struct pinq *q = &e->pins[k];
      if (!q->n || !serves(p, q)) continue;
      int held = p->inflight - p->suspended, cr = credit(p);
      if (held >= cr) break;
      size_t before = q->n;
      send_from(e, p, cr - held, &q->head, &q->tail, &q->n);
      e->npinned -= before - q->n;
    }
  }
}

/* Placed jobs whose peer is gone for good (a node lost) fail, saying so. */
static void fail_gone_placed(farm_engine *e) {
  for (int k = 1; k < e->npins; k++) {
    struct pinq *q = &e->pins[k];
    if (!q->n) continue;
    int alive = 0;
    for (int i = 0; i < e->npeers && !alive; i++)
      alive = serves(e->peers[i], q) && !e->peers[i]->dead && !e->peers[i]->retired;
    if (alive) continue;
    q->gone = 1;
    if (!q->n) continue;
    char why[200];
    snprintf(why, sizeof why, "farm: the job was placed on %s (submit_with{node = ...}), which is gone "
             "from this run", q->name);
    size_t n = q->n;
    fail_list(e, &q->head, &q->tail, &q->n, why);
    e->npinned -= n;
  }
}

/* Share the queue out: first to peers with a free slot (nobody waits while a
   slot is idle), then as prefetch up to each peer's credit. */
static void dispatch(farm_engine *e) {
  farm__engine_assert_locked(e);
  if (e->npinned) dispatch_placed(e);
  for (int pass = 0; pass < 2 && e->nqueued; pass++) {
    int open = 0;
    for (int i = 0; i < e->npeers; i++) {
      farm_peer *p = e->peers[i];
      if (peer_open(p) && !backed_up(p) && p->inflight - p->suspended < (pass ? credit(p) : p->capacity)) open++;
    }
    for (int i = 0; i < e->npeers && e->nqueued && open; i++) {
      farm_peer *p = e->peers[i];
      if (!peer_open(p) || backed_up(p)) continue;
      int cr = credit(p), held = p->inflight - p->suspended;
      if (held >= (pass ? cr : p->capacity)) continue;
      int share = (int)((e->nqueued + (size_t)open - 1) / (size_t)open);
      int k = cr - held;
      if (share < k) k = share;
      /* A peer that has work gets no crumbs: its results will bring it the
         queue grown meanwhile, in one message. Without this, a worker that keeps
         pace with the submitter gets one job a message and every job pays a round
         trip. (Long jobs have a small credit, and still get their prefetch.) */
      if (pass && k < BATCH_MIN && k < cr / 2) { open--; continue; }
      send_batch(e, p, k);
      open--;
    }
  }
}

/* ---- take-back: waiting jobs move to an idle peer ---------------------------- */

/* Ask p to give back the jobs marked taking (one TAKE at a time per peer). */
static void send_take(farm_engine *e, farm_peer *p) {
  farm_buf *b = &e->msg;
  farm__proto_put_list(b, FARM_MSG_TAKE);
  uint32_t n = 0;
  for (farm_job *j = p->head; j; j = j->next)
    if (j->taking) { farm__proto_put_id(b, j->id); n++; }
  if (!n) return;
  farm__proto_count(b, n);
  if (!p->takes) p->take_sent = farm__now();
  p->takes++;
  if (farm__peer_send(p, b->p, b->n) < 0) peer_broken(e, p, "cannot send a take-back");
}

static void rebalance(farm_engine *e, double now) {
  if (e->nqueued) return;
  for (int i = 0; i < e->npeers; i++) {
    farm_peer *idle = e->peers[i];
    if (!peer_open(idle) || idle->inflight > idle->suspended || !idle->idle_since ||
        now - idle->idle_since < IDLE_BEFORE_TAKE) continue;
    farm_peer *from = NULL;
    int most = 0;
    for (int k = 0; k < e->npeers; k++) {
      farm_peer *q = e->peers[k];
      int waiting = q->inflight - q->suspended - q->capacity;
      if (q == idle || !peer_open(q) || q->takes || waiting <= most) continue;
      most = waiting;
      from = q;
    }
    if (!from) return;
    /* the newest half of what waits there, at least one: the ones least likely
       to have started by the time the TAKE arrives */
    int want = (most + 1) / 2, skip = from->inflight - want;
    for (farm_job *j = from->head; j; j = j->next, skip--)
      if (skip <= 0 && (!j->pin || serves(idle, &e->pins[j->pin]))) j->taking = 1;
    send_take(e, from);
    idle->idle_since = now;        /* one take at a time for it */
    return;
  }
}

/* ---- receiving ---------------------------------------------------------------- */

static farm_job *take_inflight(farm_peer *p, uint64_t id, int attempt) {
  farm__engine_assert_locked(p->e);
  farm_job *j = find_inflight(p, id);
  if (j && (attempt < 0 || j->attempt == (unsigned)attempt)) {
    if (j->x->prev) j->x->prev->next = j->next; else p->head = j->next;
    if (j->next) j->next->x->prev = j->x->prev; else p->tail = j->x->prev;
    idx_del(p, j);
    if (p->ops->args_done) p->ops->args_done(p, id);   /* its shared args span, if any */
    j->x->prev = NULL;
    p->inflight--;
    if (farm__job_timeout(j) > 0) p->ntimed--;
    j->next = NULL;
    if (p->inflight <= p->suspended && !p->idle_since) p->idle_since = farm__now();
    return j;
  }
  return NULL;
}

static void where(farm_peer *p, char *out, size_t n) {
  long pid = p->ops->pid ? p->ops->pid(p) : 0;
  if (pid > 0) snprintf(out, n, "%s (pid %ld)", p->name, pid);
  else snprintf(out, n, "%s", p->name);
}

/* j ran (or was lost) at p: its own copy of where (a queued job has none). */
static void set_where(farm_peer *p, farm_job *j) {
  char w[WHERE_MAX + 1];
  where(p, w, sizeof w);
  farm__job_set_where(j, w, strlen(w));
}

/* The times after count RESULTS entries at r (proto.h), on our clock, into
   times[2 * count]: 1 when they are there and sound, else 0 (a peer that does
   not send them: its jobs' times come from what we saw). Read before the
   entries are taken, because a job's times must be set before it is over. */
static int results_times(farm_peer *p, farm_rd r, uint32_t count, double *times) {
  farm_msg_result m;
  for (uint32_t i = 0; i < count && !r.err; i++) farm__proto_get_result(&r, &m, NULL, 0);
  if (r.err || !farm__rd_left(&r)) return 0;
  double now = farm__now(), sent;
  farm__proto_get_sent(&r, &sent, NULL, 0);
  /* a process of this host reads our clock; another host's is shifted by the
     gap between its now and ours (the link's delay comes in: the same for
     every job of one message) */
  double shift = p->same_clock ? 0 : now - sent;
  if (p->same_clock && sent > now + 1) return 0;
  for (uint32_t i = 0; i < count; i++) {
    double a, b;
    if (farm__proto_get_time(&r, &a, &b, NULL, 0) < 0) return 0;
    a += shift;
    b += shift;
    if (a > b || b > now + 1) return 0;
    times[2 * i] = a;
    times[2 * i + 1] = b < now ? b : now;
  }
  return !r.err && !farm__rd_left(&r);
}

/* ---- the journal (journal.c): farm run --journal; e->journal NULL costs one branch ---- */

/* A job's final result from a worker waits in the journal's batch, and the job
   with it (a reference of its own), until journal_release. */
static void journal_hold(farm_engine *e, farm_job *j, int st) {
  __atomic_add_fetch(&j->refs, 1, __ATOMIC_RELAXED);
  if (farm__journal_add(e->journal, j, st) == 0) return;
  job_over(e, j, st);              /* not recorded: it runs again next time */
  farm__job_unref(j);
}

/* The batch is written and synced: only now do its jobs finish (a result the
   script sees is one the journal keeps). Once per RESULTS message. */
static void journal_release(farm_engine *e) {
  size_t n;
  farm_journal_held *h = farm__journal_sync(e->journal, &n);
  for (size_t i = 0; i < n; i++) {
    job_over(e, h[i].j, h[i].state);
    farm__job_unref(h[i].j);
  }
  const char *why = farm__journal_error(e->journal);
  if (why) farm__term_say(e->term, "farm: %s", why);
}

/* At submit (the caller's thread): a call the journal recorded ends at once
   with its recorded result, without going to a worker. 1 when it did. */
static int journal_replay(farm_engine *e, farm_job *j) {
  engine_lock(e);
  int st = farm__journal_replay(e->journal, j);
  if (st) {
    job_over(e, j, st);            /* (events, echo of what it printed, callbacks) */
    farm__job_unref(j);            /* the engine's */
    wake_waiters(e);
  }
  engine_unlock(e);
  if (st) farm__term_flush(e->term);
  return st != 0;
}

/* The run ends: records no call took are said once. */
static void journal_end(farm_engine *e) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s", farm__journal_path(e->journal));
  size_t left = farm__journal_close(e->journal);
  if (left)
    farm__term_say(e->term, "farm: journal %s: %zu recorded job%s did not match this run's calls (changed arguments?)",
                   path, left, left == 1 ? "" : "s");
  e->journal = NULL;
}

/* A result of at least this many bytes that takes at least 1/KEEP_PART of its
   message points into the message (rx) instead of being copied out of it:
   large results are the ones a copy costs, and a small one never keeps a large
   message alive (what a job keeps is at most KEEP_PART times its results, and
   a message is never kept longer than a job it holds a result of). */
#define KEEP_MIN (16u << 10)
#define KEEP_PART 8

/* RESULTS from p. rx: the message r reads, which results may point into (NULL:
   every result is copied out of it). */
static int on_results(farm_engine *e, farm_peer *p, farm_rd *r, farm_rxmsg *rx) {
  uint32_t count;
  farm__proto_get_list(r, &count, NULL, 0);
  double busy_sum = 0;
  uint32_t got = 0;
  /* an entry takes at least 6 bytes: count cannot ask for more than that allows */
  double *times = !r->err && count && count <= farm__rd_left(r) / 6 ? malloc(2 * sizeof(double) * count) : NULL;
  if (times && !results_times(p, *r, count, times)) { free(times); times = NULL; }
  for (uint32_t i = 0; i < count && !r->err; i++) {
    farm_msg_result m;
    if (farm__proto_get_result(r, &m, NULL, 0) < 0) break;
    int status = m.status;
    double busy = m.busy;
    char *shared = NULL;           /* a block in the memory it shares with us: copied out at once */
    if (m.shm && (!p->ops->result_take || p->ops->result_take(p, m.pos, m.nblock, &shared) < 0)) {
      r->err = 1;
      break;
    }
    farm_job *j = take_inflight(p, m.id, (int)(unsigned)m.attempt);
    if (m.shm && (!shared || !j || j->state != JOB_SENT)) {
      free(shared);                /* (no memory: the job fails, saying so) */
      m.block = shared = NULL;
      if (j && j->state == JOB_SENT) { status = FARM_JOB_ERROR; m.block = "farm: out of memory"; m.nblock = 19; }
    }
    if (!j) continue;              /* not ours (any more): a result arrives at most once */
    if (j->state == JOB_SENT) {
      farm_jobx *jx = farm__jx(j);
      jx->busy = busy;
      if (times) { jx->ran_from = times[2 * i]; jx->ran_to = times[2 * i + 1]; }
      j->untrusted = p->ops->untrusted;
      set_where(p, j);
      farm__job_drop_results(j);
      size_t kept = m.nblock + m.ntb + m.nval;
      if (shared) {
        jx->res = shared; jx->nres = m.nblock;
      } else if (rx && kept >= KEEP_MIN && kept >= rx->n / KEEP_PART) {
        __atomic_add_fetch(&rx->refs, 1, __ATOMIC_RELAXED);
        jx->rx = rx;
        jx->res = (char *)m.block; jx->nres = m.nblock;
        if (m.tb) { jx->tb = (char *)m.tb; jx->ntb = m.ntb; }
        if (m.val && m.nval) { jx->val = (char *)m.val; jx->nval = m.nval; }
      } else {
        jx->res = farm__dupmem(m.block, m.nblock); jx->nres = m.nblock;
        if (m.tb) { jx->tb = farm__dupmem(m.tb, m.ntb); jx->ntb = m.ntb; }
        if (m.val && m.nval) { jx->val = farm__dupmem(m.val, m.nval); jx->nval = m.nval; }
      }
      /* out carries all the job printed; streaming may have echoed a prefix */
      size_t echoed = jx->echoed < m.nout ? jx->echoed : m.nout;
      jx->out.n = 0;
      farm__buf_put(&jx->out, m.out, m.nout);
      jx->echoed = echoed;
      int st = status == FARM_JOB_OK ? JOB_DONE : JOB_FAILED;
      if (jx->stop_at > 0) {          /* cancelled with a grace: it ended in time */
        st = JOB_CANCELLED;
        j->cancel_req = CANCEL_FORCE;
        char *word = status == FARM_JOB_OK ? farm__dupmem(jx->res, jx->nres) : NULL;
        if (word) {                  /* what it returned is its last word */
          free(jx->part);
          jx->part = word;
          jx->npart = jx->nres;
          jx->nparts++;
          jx->part_untrusted = p->ops->untrusted;
        }
      }
      if (e->journal && !jx->owner && st != JOB_CANCELLED) journal_hold(e, j, st);
      else job_over(e, j, st);
    }
    p->jobs++;
    p->busy += busy;
    busy_sum += busy;
    got++;
    farm__job_unref(j);
  }
  if (e->journal) journal_release(e);
  if (got && e->restart_workers && p->ops->restartable && !p->inflight && !p->closing) {
    farm_buf q;                    /* a fresh process for the next job: this one quits */
    farm__buf_init(&q);
    farm__proto_put_empty(&q, FARM_MSG_QUIT);
    if (farm__peer_send(p, q.p, q.n) == 0) p->closing = 1;
    farm__buf_free(&q);
  }
  if (got) {
    double per = busy_sum / got;
    p->est = p->est <= 0 ? per : 0.7 * p->est + 0.3 * per;
    if (p->est < 1e-7) p->est = 1e-7;
  }
  free(times);
  return r->err ? FARM_EPROTO : (int)got;
}

/* j is seen to have begun at its peer (loop thread, mu held): a node's engine
   keeps its client's id, for the node to tell its client (STARTED), so that a
   job on a node says "running" there too. Once per job. */
static void job_begun(farm_engine *e, farm_job *j, double now) {
  if (!farm__jx(j)->started) farm__jx(j)->started = now;
  if (j->begun) return;
  j->begun = 1;
  if (e->events_on) job_event(e, j, FARM_EV_JOB_STARTED, now);
  if (!e->report_starts) return;
  if (e->nbegun == e->capbegun) {
    size_t cap = e->capbegun ? 2 * e->capbegun : 64;
    uint64_t *b = realloc(e->begun, cap * sizeof *b);
    if (!b) return;                /* the client is not told: its result still comes */
    e->begun = b;
    e->capbegun = cap;
  }
  e->begun[e->nbegun++] = farm__jx(j)->ext_id;
  changed(e);
}

size_t farm__engine_take_started(farm_engine *e, uint64_t *ids, size_t max) {
  engine_lock(e);
  size_t n = e->nbegun < max ? e->nbegun : max;
  if (n) {                         /* (none yet: begun may still be NULL) */
    memcpy(ids, e->begun, n * sizeof *ids);
    memmove(e->begun, e->begun + n, (e->nbegun - n) * sizeof *ids);
    e->nbegun -= n;
  }
  engine_unlock(e);
  return n;
}

static int on_taken(farm_engine *e, farm_peer *p, farm_rd *r) {
  uint32_t count;
  farm__proto_get_list(r, &count, NULL, 0);
  if (!p->takes) return FARM_EPROTO;
  for (uint32_t i = 0; i < count && !r->err; i++) {
    uint64_t id;
    if (farm__proto_get_id(r, &id, NULL, 0) < 0) break;
    farm_job *j = find_inflight(p, id);
    if (!j || !j->taking) continue;          /* it never asked for that one */
    take_inflight(p, id, -1);
    if (j->cancel_req) {
      job_over(e, j, JOB_CANCELLED);
      farm__job_unref(j);
    } else {
      e->taken_back++;
      requeue_front(e, j);
    }
  }
  if (r->err) return FARM_EPROTO;
  p->takes--;
  p->take_sent = p->takes ? farm__now() : 0;
  for (farm_job *j = p->head; j; j = j->next) {
    if (!j->taking) continue;
    j->taking = 0;                           /* not given back: it has begun there */
    job_begun(e, j, farm__now());
    if (j->cancel_req == CANCEL_FORCE) stop_for(p, j->id, "a job was cancelled by force");
    else j->cancel_req = 0;
  }
  changed(e);
  return 0;
}

/* Jobs a job submitted: they join the queue at its front (the deepest work
   first, so nested jobs finish and free their parents), owned by p. */
static int on_submit(farm_engine *e, farm_peer *p, farm_rd *r) {
  uint32_t count;
  if (farm__proto_get_list(r, &count, NULL, 0) < 0 || count > farm__rd_left(r) / 4) return FARM_EPROTO;
  farm_job *head = NULL, *tail = NULL;
  int rc = 0;
  for (uint32_t i = 0; i < count; i++) {
    farm_msg_submit m;
    if (farm__proto_get_submit(r, &m, NULL, 0) < 0) { rc = FARM_EPROTO; break; }
    size_t nf = m.nfn, na = m.nargs;
    farm_job *j = farm__job_new();
    farm_fn *f = calloc(1, sizeof *f);
    if (!j || !f || !(f->p = farm__dupmem(m.fnb, nf)) || !(j->args = farm__dupmem(m.args, na))) {
      if (f) free(f->p);
      free(f);
      farm__job_unref(j);
      rc = FARM_ENOMEM;
      break;
    }
    f->n = nf;
    f->fresh = m.fresh;
    f->refs = 1;
    farm__fn_hash(f);
    j->fn = f;
    j->nargs = na;
    j->mode = (uint8_t)m.mode;
    farm__jx(j)->timeout = m.timeout;
    j->max_retries = (uint16_t)(m.retries < 0 ? FARM_DEFAULT_RETRIES : m.retries);
    j->id = farm__engine_nextid(e);
    farm__jx(j)->owner = p;
    farm__jx(j)->owner_gen = p->gen;
    farm__jx(j)->subid = m.subid;
    j->refs = 1;                               /* the engine's: nobody here holds a future */
    j->state = JOB_QUEUED;
    j->inqueue = 1;
    __atomic_add_fetch(&e->outstanding, 1, __ATOMIC_SEQ_CST);
    __atomic_add_fetch(&e->submitted, 1, __ATOMIC_RELAXED);
    if (tail) tail->next = j; else head = j;
    tail = j;
    e->nqueued++;
  }
  if (head) {                                  /* what was well formed goes in, in order */
    tail->next = e->qhead;
    e->qhead = head;
    if (!e->qtail) e->qtail = tail;
    changed(e);
  }
  if (!rc && farm__rd_left(r)) rc = FARM_EPROTO;
  return rc;
}

/* A sub-job ended: its result goes back to the peer whose job submitted it
   (in the next SUBDONE message to it), unless that process is gone. */
static void subdone(farm_engine *e, farm_job *j, int state) {
  farm_jobx *jx = farm__jx(j);
  farm_peer *p = jx->owner;
  if (p->gen != jx->owner_gen || !p->link) return;
  farm_buf *b = &p->subdone;
  const char *w = farm__job_where(j);
  size_t size = jx->out.n + jx->nres + jx->ntb + jx->nval + strlen(w) + 48;
  if (p->nsubdone && b->n + size > e->batch_limit) flush_subdone_of(e, p);   /* the receiver drops a message over its limit */
  if (!p->nsubdone) farm__proto_put_list(b, FARM_MSG_SUBDONE);
  int status = state == JOB_DONE ? 0 : state == JOB_FAILED ? 1 : 2;
  farm_msg_subdone m = { .subid = jx->subid, .status = status, .out = jx->out.p, .nout = jx->out.n,
                         .block = jx->res, .nblock = status == 2 ? 0 : jx->nres,
                         .tb = jx->tb, .ntb = jx->ntb, .val = jx->val, .nval = jx->nval,
                         .where = w, .nwhere = strlen(w) };
  farm__proto_put_subdone(b, &m);
  p->nsubdone++;
}

static void flush_subdone_of(farm_engine *e, farm_peer *p) {
  if (!p->nsubdone) return;
  farm__proto_count(&p->subdone, p->nsubdone);
  p->nsubdone = 0;
  if (farm__peer_send(p, p->subdone.p, p->subdone.n) < 0) peer_broken(e, p, "cannot send results of sub-jobs");
}

static void flush_subdone(farm_engine *e) {
  for (int i = 0; i < e->npeers; i++) flush_subdone_of(e, e->peers[i]);
}

/* ---- files the jobs send (farm.send_file) ------------------------------------ */

/* A provisional result of a job that runs at p (farm.provide): kept as the
   job's last one (a node's engine keeps it for the node to pass on). */
static int on_partial(farm_engine *e, farm_peer *p, farm_rd *r) {
  uint64_t id;
  const char *block;
  size_t n;
  if (farm__proto_get_partial(r, &id, &block, &n, NULL, 0) < 0 || farm__proto_end(r, "PARTIAL", NULL, 0) < 0)
    return FARM_EPROTO;
  farm_job *j = find_inflight(p, id);
  if (!j || j->state != JOB_SENT) return 0;   /* not wanted there any more */
  job_begun(e, j, farm__now());              /* (it runs: it said so) */
  if (e->keep_files) {                       /* a node: on to the client, in order with files */
    farm_sent_file *f = malloc(sizeof *f + n + 1);
    if (!f) return FARM_ENOMEM;
    memset(f, 0, sizeof *f);
    f->ext_id = farm__jx(j)->ext_id;
    f->ext_attempt = farm__jx(j)->ext_attempt;
    f->partial = 1;
    f->path = f->data = (char *)(f + 1);
    memcpy(f->data, block, n);
    f->ndata = n;
    if (e->files_tail) e->files_tail->next = f; else e->files = f;
    e->files_tail = f;
    e->signal_waiters = 1;
    return 0;
  }
  char *copy = farm__dupmem(block, n);
  if (!copy) return FARM_ENOMEM;
  free(farm__jx(j)->part);
  farm__jx(j)->part = copy;
  farm__jx(j)->npart = n;
  farm__jx(j)->nparts++;
  farm__jx(j)->part_untrusted = p->ops->untrusted;
  if (e->events_on) job_event(e, j, FARM_EV_JOB_PARTIAL, farm__now());
  changed(e);
  return 0;
}

static int on_file(farm_engine *e, farm_peer *p, farm_rd *r, char *err, size_t errlen) {
  farm_msg_file m;
  if (farm__proto_get_file(r, &m, NULL, 0) < 0 || farm__proto_end(r, "FILE", NULL, 0) < 0) return FARM_EPROTO;
  uint64_t id = m.id, dev = m.dev, ino = m.ino;
  size_t npath = m.npath, ndata = m.ndata;
  const char *path = m.path, *data = m.data;
  char name[PATH_MAX];
  if (ndata > e->max_file && !e->keep_files) {   /* (a node's client checks it, by its own limit) */
    snprintf(err, errlen, "%s sent a file larger than farm's limit", p->name);
    return FARM_EPROTO;
  }
  farm_job *j = find_inflight(p, id);
  if (!j || j->state != JOB_SENT) return 0;   /* not wanted there any more */
  if (!e->files_out && !e->keep_files) return 0;  /* a test engine: nowhere to write */
  if (!e->keep_files && farm__files_name(path, npath, p->ops->untrusted, name, sizeof name) < 0) {
    farm__term_say(e->term, "farm: refused the file '%.*s' that job %llu sent from %s: %s",
            (int)(npath < 200 ? npath : 200), path, (unsigned long long)j->id, p->name,
            p->ops->untrusted ? "no part of a name from another host may begin with a dot"
                              : "it names no file");
    return 0;
  }
  if (e->keep_files) {                   /* a node: the client is the one to write it */
    farm_sent_file *f = malloc(sizeof *f + npath + ndata + 1);
    if (!f) return FARM_ENOMEM;
    memset(f, 0, sizeof *f);
    f->ext_id = farm__jx(j)->ext_id;
    f->ext_attempt = farm__jx(j)->ext_attempt;
    f->dev = dev;
    f->ino = ino;
    f->path = (char *)(f + 1);
    memcpy(f->path, path, npath);
    f->npath = npath;
    f->data = f->path + npath;
    memcpy(f->data, data, ndata);
    f->ndata = ndata;
    if (e->files_tail) e->files_tail->next = f; else e->files = f;
    e->files_tail = f;
    e->signal_waiters = 1;
    return 0;
  }
  /* written once the lock is released (farm__files_flush) */
  int local = p->ops->shares_dir;              /* (dev and ino mean something only here) */
  return farm__files_queue(e->files_out, name, data, ndata, local ? dev : 0, local ? ino : 0,
                           p->ops->untrusted, j->id, p->name);
}

farm_sent_file *farm__engine_take_files(farm_engine *e) {
  engine_lock(e);
  farm_sent_file *f = e->files;
  e->files = e->files_tail = NULL;
  engine_unlock(e);
  return f;
}

/* ---- what every job may use ------------------------------------------------- */

int farm__engine_share(farm_engine *e, int kind, const char *name, size_t nname,
                       const void *block, size_t n) {
  engine_lock(e);
  int rc = 0;
  int file = kind == FARM_SHARE_FILE || kind == FARM_SHARE_XFILE;
  if (file)                              /* only the newest version of a file is kept */
    for (int i = 0; i < e->nshares; i++) {
      struct share *x = &e->shares[i];
      if ((x->kind != FARM_SHARE_FILE && x->kind != FARM_SHARE_XFILE) || x->nname != nname ||
          memcmp(x->name, name, nname)) continue;
      free(x->p);
      x->p = NULL;
      x->n = 0;
      x->kind = 0;                       /* skipped from now on */
    }
  if (e->nshares == e->capshares) {
    int cap = e->capshares ? 2 * e->capshares : 8;
    struct share *x = realloc(e->shares, (size_t)cap * sizeof *x);
    if (!x) { rc = FARM_ENOMEM; goto out; }
    e->shares = x;
    e->capshares = cap;
  }
  struct share *x = &e->shares[e->nshares];
  x->kind = (uint8_t)kind;
  x->name = farm__dupmem(name, nname);
  x->nname = nname;
  x->p = farm__dupmem(block, n);
  x->n = n;
  if (!x->name || !x->p) { free(x->name); free(x->p); rc = FARM_ENOMEM; goto out; }
  e->nshares++;
out:
  engine_unlock(e);
  return rc;
}

int farm__engine_has_nodes(farm_engine *e) {
  engine_lock(e);
  int n = 0;
  for (int i = 0; i < e->npeers; i++) n |= e->peers[i]->ops->remote;
  engine_unlock(e);
  return n;
}

size_t farm__engine_max_file(farm_engine *e) { return e->max_file; }

int farm__engine_setup_failed(farm_engine *e, char *out, size_t n) {
  engine_lock(e);
  int failed = e->setup_err[0] != 0;
  if (failed) snprintf(out, n, "%s", e->setup_err);
  engine_unlock(e);
  return failed;
}
double farm__engine_wall(farm_engine *e) { return e->wall; }

/* What a node may send its client: the rest (SUBMIT and SUSPENDED, which only
   the client's own workers send -- a node's jobs' sub-jobs run on the node --
   and whatever goes the other way) would have the client run the node's code
   on its own workers, or is nonsense. */
static int node_may_send(int type) {
  switch (type) {
  case FARM_MSG_HELLO: case FARM_MSG_RESULTS: case FARM_MSG_TAKEN: case FARM_MSG_BEAT:
  case FARM_MSG_FILE: case FARM_MSG_SETUPFAIL: case FARM_MSG_QUIT: case FARM_MSG_STARTED:
  case FARM_MSG_PARTIAL:
    return 1;
  default:
    return 0;
  }
}

/* farm__engine_message; rx: the message kept, which results may point into */
static int engine_message(farm_engine *e, farm_peer *p, const void *msg, size_t n, farm_rxmsg *rx,
                          char *err, size_t errlen) {
  farm__engine_assert_locked(e);
  farm_rd r;
  int type = farm__msg_open(&r, msg, n, err, errlen);
  if (type < 0) return type;
  if (p->ops->untrusted && !node_may_send(type)) {
    /* A protocol violation by a peer that holds the key: it is dropped for
       the rest of the run (a node lost is not used again), its jobs run
       elsewhere, and the line that says so (the kind's, on the loss) names
       what it sent. Nothing of the message is read. */
    char why[160];
    const char *name = farm__proto_name(type);
    if (type == FARM_MSG_SUBMIT || type == FARM_MSG_SUSPENDED)
      snprintf(why, sizeof why, "it sent %s, which only the client's own workers may send "
               "(a protocol violation; not used again in this run)", name);
    else if (name)
      snprintf(why, sizeof why, "it sent %s, which no node sends (a protocol violation; not used again in this run)", name);
    else
      snprintf(why, sizeof why, "it sent a message of unknown type %d (a protocol violation; not used again "
               "in this run)", type);
    p->hostile = 1;                /* (never tried again: peer_node.c) */
    farm__peer_broken(p, why);
    return 0;
  }
  switch (type) {
  case FARM_MSG_HELLO: {
    farm_msg_hello m;
    if (farm__proto_get_hello(&r, &m, NULL, 0) < 0) break;
    uint64_t cap = m.capacity;
    p->capped = p->cap_limit > 0 && cap > (uint64_t)p->cap_limit;
    p->capacity = p->capped ? p->cap_limit : (int)cap;
    p->ready = 1;
    e->capacity = 0;
    for (int i = 0; i < e->npeers; i++)
      e->capacity += e->peers[i]->ready && !e->peers[i]->retired ? e->peers[i]->capacity : 0;
    p->idle_since = farm__now();
    if (p->ops->connected) p->ops->connected(p);
    node_event(e, p, FARM_EV_NODE_UP, p->rejoined ? "rejoined" : NULL);
    changed(e);
    return 0;
  }
  case FARM_MSG_RESULTS:
    if (on_results(e, p, &r, rx) >= 0) return 0;
    break;
  case FARM_MSG_TAKEN:
    if (on_taken(e, p, &r) >= 0) return 0;
    break;
  case FARM_MSG_SUSPENDED: {
    uint64_t k, id;
    if (farm__proto_get_suspended(&r, &k, &id, NULL, 0) < 0 || farm__proto_end(&r, "SUSPENDED", NULL, 0) < 0 ||
        k > (uint64_t)p->inflight) break;
    p->suspended = (int)k;
    farm_job *j = find_inflight(p, id);
    if (j) job_begun(e, j, farm__now());     /* it waits, or goes on: it has begun */
    if (p->inflight <= p->suspended) { if (!p->idle_since) p->idle_since = farm__now(); }
    else p->idle_since = 0;
    changed(e);
    return 0;
  }
  case FARM_MSG_SUBMIT:
    if (on_submit(e, p, &r) >= 0) return 0;
    break;
  case FARM_MSG_BEAT:              /* a node link's heartbeat: its arrival is the news; */
    {                              /* ...a node's says its heartbeat and the clients it serves */
      farm_msg_beat m;
      if (farm__proto_get_beat(&r, &m, NULL, 0) < 0 || farm__proto_end(&r, "BEAT", NULL, 0) < 0) break;
      if (m.clients >= 1 && m.clients <= 65536) p->clients = (int)m.clients;
    }
    return 0;
  case FARM_MSG_PARTIAL:
    if (on_partial(e, p, &r) >= 0) return 0;
    break;
  case FARM_MSG_FILE:
    if (on_file(e, p, &r, err, errlen) >= 0) return 0;
    break;
  case FARM_MSG_SETUPFAIL: {       /* its setup failed: it is out of the run, not the run */
    size_t nm;
    const char *m;
    if (farm__proto_get_setupfail(&r, &m, &nm, NULL, 0) < 0 || farm__proto_end(&r, "SETUPFAIL", NULL, 0) < 0) break;
    if (p->setup_failed) return 0;
    p->setup_failed = 1;
    char why[400];
    long pid = p->ops->pid ? p->ops->pid(p) : 0;
    if (p->ops->remote)                  /* the node names its worker */
      snprintf(why, sizeof why, "node %s: %.*s", p->name, (int)(nm < 300 ? nm : 300), m);
    else
      snprintf(why, sizeof why, "the setup function of farm.on_node failed on %s%s%s%.0ld%s: %.*s",
               e->keep_files ? "this node's worker " : "", p->name,   /* (a node's engine) */
               pid > 0 ? " (pid " : "", pid > 0 ? pid : 0L, pid > 0 ? ")" : "",
               (int)(nm < 300 ? nm : 300), m);
    farm__term_say(e->term, "farm: %s; that %s is out of the run", why, p->ops->remote ? "node" : "worker");
    engine_error(e, why);
    if (!e->setup_err[0]) snprintf(e->setup_err, sizeof e->setup_err, "%s", why);
    farm__peer_retire(p, why);
    changed(e);
    return 0;
  }
  case FARM_MSG_STARTED: {         /* a node's jobs that have begun there (only a node says so) */
    if (!p->ops->untrusted) break;
    uint32_t count;
    if (farm__proto_get_list(&r, &count, NULL, 0) < 0 || count > farm__rd_left(&r)) break;
    double now = farm__now();
    for (uint32_t i = 0; i < count && !r.err; i++) {
      uint64_t id;
      if (farm__proto_get_id(&r, &id, NULL, 0) < 0) break;
      farm_job *j = find_inflight(p, id);
      if (j && j->state == JOB_SENT) job_begun(e, j, now);   /* (not ours any more: dropped) */
    }
    if (farm__proto_end(&r, "STARTED", NULL, 0) < 0) break;
    changed(e);
    return 0;
  }
  case FARM_MSG_QUIT:              /* a node stops (SIGTERM): what it held runs elsewhere */
    if (farm__proto_end(&r, "QUIT", NULL, 0) < 0 || !p->ops->remote) break;
    farm__peer_broken(p, "it is stopping");
    return 0;
  default:
    snprintf(err, errlen, "unexpected message %d from %s", type, p->name);
    return FARM_EPROTO;
  }
  snprintf(err, errlen, "malformed message from %s", p->name);
  return FARM_EPROTO;
}

int farm__engine_message(farm_engine *e, farm_peer *p, const void *msg, size_t n,
                         char *err, size_t errlen) {
  return engine_message(e, p, msg, n, NULL, err, errlen);
}

int farm__engine_take(farm_engine *e, farm_peer *p, void *msg, size_t n, void (*release)(void *),
                      char *err, size_t errlen) {
  /* only RESULTS are kept (nothing else holds on to what it read) */
  farm_rxmsg *rx = n > 3 && ((unsigned char *)msg)[3] == FARM_MSG_RESULTS
                   ? farm__rxmsg_new(msg, n, release) : NULL;
  int rc = engine_message(e, p, msg, n, rx, err, errlen);
  if (rx) farm__rxmsg_unref(rx);
  else if (release) release(msg);
  return rc;
}

int farm__peer_drain(farm_peer *p) {
  int handled = 0;
  /* a file waits to be written (farm__files_flush): what came after it waits too */
  while (p->link && !p->broken && !farm__files_pending(p->e->files_out)) {
    void *m;
    size_t n;
    if (farm__link_recv(p->link, &m, &n, 1) != 0) break;
    char why[200];
    p->bytes_in += n;
    int rc = farm__engine_take(p->e, p, m, n, farm__link_free, why, sizeof why);
    handled++;
    if (rc < 0) {                  /* a peer that talks nonsense is replaced */
      /* (a node is not: it is lost for the run, and its kind says so) */
      if (!p->ops->untrusted) farm__term_say(p->e->term, "farm: %s; restarting it", why);
      else p->hostile = 1;         /* (a node that talks nonsense is not tried again) */
      farm__peer_broken(p, why);
      break;
    }
  }
  return handled;
}

/* ---- losing a peer ------------------------------------------------------------- */

/* The jobs p's jobs submitted (generation gen) have nobody to wait for them
   any more: the job that submitted them failed, was cancelled, or will run
   again and submit them anew. Queued ones are cancelled; ones at peers are
   taken back, or stopped with their worker when they have begun. */
static void cancel_orphans(farm_engine *e, farm_peer *p, uint64_t gen) {
  for (farm_job *j = e->qhead; j; j = j->next)
    if (j->x && j->x->owner == p && j->x->owner_gen == gen && j->state == JOB_QUEUED) {
      j->inqueue = 0;
      e->nqueued--;
      j->cancel_req = CANCEL_TAKE;
      job_over(e, j, JOB_CANCELLED);
    }
  for (int i = 0; i < e->npeers; i++) {
    farm_peer *q = e->peers[i];
    int take = 0;
    for (farm_job *j = q->head; j; j = j->next) {
      if (!j->x || j->x->owner != p || j->x->owner_gen != gen || j->state != JOB_SENT || j->cancel_req) continue;
      uint64_t r = q->ops->running ? q->ops->running(q) : 0;
      if (r == j->id) {
        j->cancel_req = CANCEL_FORCE;
        stop_for(q, j->id, "a job whose submitter is gone was stopped");
      } else if (!j->begun && !j->taking && !q->takes) {
        j->cancel_req = CANCEL_FORCE;
        j->taking = 1;
        take = 1;
      }
      /* one waiting there runs on; nobody takes its result */
    }
    if (take && q->link) send_take(e, q);
  }
}

/* j (taken off p's list) is lost with p: back to the queue, or over. */
static void lose_job(farm_engine *e, farm_peer *p, farm_job *j, int blamed, const char *why) {
  if (j->x) j->x->peer = NULL;
  j->taking = 0;
  if (j->state != JOB_SENT) { farm__job_unref(j); return; }
  set_where(p, j);
  j->untrusted = p->ops->untrusted;        /* future.node names the node that held it too */
  if ((blamed && j->cancel_req) || j->cancel_req == CANCEL_FORCE) {
    job_over(e, j, JOB_CANCELLED);
  } else if (blamed && j->timed_out) {
    char msg[160];
    snprintf(msg, sizeof msg, "the job timed out after %g s and was stopped", farm__job_timeout(j));
    job_fail(e, j, msg);
  } else if (blamed ? j->attempt >= j->max_retries : j->requeues >= REQUEUE_MAX) {
    job_fail(e, j, why);
  } else {
    if (blamed) j->attempt++; else j->requeues++;
    j->cancel_req = 0;
    j->timed_out = 0;
    j->begun = 0;
    if (j->x) {                    /* what this try printed was echoed; the next starts afresh */
      j->x->started = 0;
      j->x->out.n = 0;
      j->x->echoed = 0;
    }
    requeue_front(e, j);
    return;
  }
  farm__job_unref(j);
}

void farm__engine_job_lost(farm_engine *e, farm_peer *p, uint64_t id, const char *why) {
  farm_job *j = take_inflight(p, id, -1);
  if (!j) return;
  lose_job(e, p, j, 1, why);
  changed(e);
}

void farm__engine_peer_lost(farm_engine *e, farm_peer *p, uint64_t running, const char *why) {
  farm__engine_assert_locked(e);
  /* The job it was running is to blame: tried again up to its retries, then it
     fails with the cause. The others it held go back as they were (only a peer
     lost again and again, REQUEUE_MAX times, fails them). A job cancelled by
     force or out of time ends as such. */
  if (!running && p->head && !(p->ops->running)) running = p->head->id;
  node_event(e, p, FARM_EV_NODE_LOST, why);
  farm_job *j = p->head, *next, *rev = NULL;
  for (; j; j = next) { next = j->next; j->next = rev; rev = j; }   /* requeue in order */
  for (j = rev; j; j = next) {
    next = j->next;
    lose_job(e, p, j, j->id == running, why);
  }
  p->head = p->tail = NULL;
  idx_clear(p);
  p->inflight = 0;
  p->ntimed = 0;
  p->suspended = 0;
  cancel_orphans(e, p, p->gen);
  p->gen++;
  p->nsubdone = 0;
  p->takes = 0;
  p->take_sent = 0;
  p->pend.n = 0;
  p->running_id = 0;
  changed(e);
}

int farm__engine_workers(farm_engine *e) {
  engine_lock(e);
  int n = 0;
  for (int i = 0; i < e->npeers; i++) {
    farm_peer *p = e->peers[i];      /* (a node still connecting has said no number yet) */
    n += p->dead || p->retired || (p->ops->remote && !p->ready) ? 0 : p->capacity;
  }
  engine_unlock(e);
  return n;
}

static int live_peers(farm_engine *e) {
  int n = 0;
  for (int i = 0; i < e->npeers; i++) n += !e->peers[i]->dead && !e->peers[i]->retired;
  return n;
}

/* No peer is left to run the queue (live_peers is 0): whether the queue waits
   for a lost node that is being tried again (p->rejoining), for REJOIN_WAIT
   seconds from when jobs began to wait (said once on the terminal). After
   that the queue fails; jobs submitted later wait as long again. */
#define REJOIN_WAIT 30.0
static int awaits_rejoin(farm_engine *e, double now) {
  int any = 0;
  for (int i = 0; i < e->npeers && !any; i++)
    any = e->peers[i]->rejoining && !e->peers[i]->retired && !e->peers[i]->hostile;
  if (!any) return 0;
  if (!e->nqueued && !e->npinned && !__atomic_load_n(&e->incoming, __ATOMIC_SEQ_CST)) {
    e->orphaned = 0;               /* nothing waits */
    return 1;
  }
  if (!e->orphaned) {
    e->orphaned = now;
    if (!e->nodes_o.quiet)
      farm__term_say(e->term, "farm: no workers left; waiting up to %g s for a lost node to come back", REJOIN_WAIT);
  }
  return now - e->orphaned < REJOIN_WAIT;
}

/* ---- timers ------------------------------------------------------------------ */

static farm_job *job_running_at(farm_peer *p, uint64_t id) {
  return id ? find_inflight(p, id) : NULL;
}

/* A job's timeout counts from when its peer was first seen running it, waits
   on its own jobs included. */
static void check_timeouts(farm_engine *e, double now) {
  for (int i = 0; i < e->npeers; i++) {
    farm_peer *p = e->peers[i];
    if (!p->link) continue;
    uint64_t id = p->ops->running ? p->ops->running(p) : 0;
    if (id != p->running_id) {
      p->running_id = id;
      farm_job *j = job_running_at(p, id);
      if (j) job_begun(e, j, now);
    }
    if ((!p->ntimed && !e->nstopping) || p->broken) continue;
    for (farm_job *j = p->head; j; j = j->next) {
      farm_jobx *jx = j->x;          /* (none yet: not begun, no stop asked) */
      if (jx && jx->stop_at > 0 && now > jx->stop_at && j->state == JOB_SENT) {
        /* cancelled with a grace, and the grace is over: stopped as a forced cancel */
        stop_for(p, j->id, "a job cancelled with a grace did not end within it");
        break;
      }
      if (!jx || jx->timeout <= 0 || !jx->started || j->timed_out || now - jx->started <= jx->timeout) continue;
      char why[160];
      j->timed_out = 1;
      snprintf(why, sizeof why, "job %llu timed out after %g s", (unsigned long long)j->id, jx->timeout);
      p->ops->kill(p, why, j->id);
      break;                                 /* p is a fresh process now */
    }
  }
}

static void draw_progress(farm_engine *e, double now) {
  size_t out = __atomic_load_n(&e->outstanding, __ATOMIC_RELAXED);
  if (!e->progress) return;
  if (!out) { progress_clear(e); return; }
  uint64_t done = __atomic_load_n(&e->finished, __ATOMIC_RELAXED);
  uint64_t total = __atomic_load_n(&e->submitted, __ATOMIC_RELAXED);
  if (e->rate_t == 0) { e->rate_t = now; e->rate_done = done; }
  else if (now - e->rate_t >= 1.0) {
    double r = (done - e->rate_done) / (now - e->rate_t);
    e->rate = e->rate > 0 ? 0.5 * e->rate + 0.5 * r : r;
    e->rate_t = now;
    e->rate_done = done;
  } else if (e->rate <= 0 && done > e->rate_done) {
    e->rate_first = (done - e->rate_done) / (now - e->rate_t);   /* the first second: so far */
  }
  double rate = e->rate > 0 ? e->rate : e->rate_first;
  int busy = 0, cap = 0;
  for (int i = 0; i < e->npeers; i++) {
    farm_peer *p = e->peers[i];
    if (p->dead || p->retired) continue;
    cap += p->capacity;
    busy += p->inflight < p->capacity ? p->inflight : p->capacity;
  }
  char eta[32] = "?";
  if (rate > 0) snprintf(eta, sizeof eta, "%.0fs", (double)out / rate);
  char line[200];
  snprintf(line, sizeof line, "farm: %llu/%llu jobs done, %.0f jobs/s, ETA %s, %d/%d workers busy",
           (unsigned long long)done, (unsigned long long)total, rate, eta, busy, cap);
  farm__term_progress(e->term, line);
}

static void tick(farm_engine *e, double now) {
  farm__engine_assert_locked(e);
  e->last_tick = now;
  for (int i = 0; i < e->npeers; i++) {
    farm_peer *p = e->peers[i];
    if (p->ops->tick) p->ops->tick(p, now);
    /* a worker's link thread answers a TAKE at once, even while a job runs: one
       that does not is frozen, and holds its waiting jobs for as long (a node's
       silence is its heartbeat's to judge, and its engine watches its workers) */
    if (p->takes && p->take_sent > 0 && now - p->take_sent > TAKE_DEADLINE && !p->ops->remote &&
        !p->broken && p->link) {
      char why[100];
      snprintf(why, sizeof why, "it did not answer a take-back within %g s (frozen?)", TAKE_DEADLINE);
      peer_broken(e, p, why);
    }
  }
  check_timeouts(e, now);
  if (e->npins > 1) fail_gone_placed(e);
  rebalance(e, now);
  /* (a node's queue waits for its client to take it back: the client hears
     of a setup failure from the node, and runs those jobs elsewhere) */
  if (live_peers(e)) e->orphaned = 0;
  else if (!(e->keep_files && e->setup_err[0]) && !awaits_rejoin(e, now))
    fail_queue(e, e->err[0] ? e->err : "no workers left");
  if (e->progress && now - e->last_progress >= PROGRESS_EVERY) {
    e->last_progress = now;
    draw_progress(e, now);
  }
}

/* ---- the loop ------------------------------------------------------------------ */

/* While a waiting caller polls the links itself, the loop leaves them to it:
   both waking for the same result would cost a hop on every round trip. The
   two flags are set first and read second on each side, so one of them always
   sees the other (and a caller that stops polling wakes a loop that skipped). */
static int loop_polls_links(farm_engine *e) {
  __atomic_store_n(&e->loop_skipped, 1, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(&e->caller_polls, __ATOMIC_SEQ_CST)) return 0;
  __atomic_store_n(&e->loop_skipped, 0, __ATOMIC_SEQ_CST);
  return 1;
}

static void caller_stops_polling(farm_engine *e) {
  if (__atomic_exchange_n(&e->caller_polls, 0, __ATOMIC_SEQ_CST) &&
      __atomic_load_n(&e->loop_skipped, __ATOMIC_SEQ_CST)) {
    uint64_t one = 1;
    if (write(e->wake_fd, &one, sizeof one) < 0) { /* counter full: it wakes anyway */ }
  }
}

static int want_fds(farm_engine *e) {
  int need = 1 + 2 * e->npeers;
  if (need > e->cappfd) {
    struct pollfd *p = realloc(e->pfd, (size_t)need * sizeof *p);
    if (!p) return -1;
    e->pfd = p;
    e->cappfd = need;
  }
  int nf = 0, links = loop_polls_links(e);
  e->pfd[nf++] = (struct pollfd){ .fd = e->wake_fd, .events = POLLIN };
  for (int i = 0; i < e->npeers; i++) {
    farm_peer *p = e->peers[i];
    if (!p->link) continue;
    if (links) e->pfd[nf++] = (struct pollfd){ .fd = farm__link_rcvfd(p->link), .events = POLLIN };
    if (backed_up(p)) e->pfd[nf++] = (struct pollfd){ .fd = farm__link_sndfd(p->link), .events = POLLIN };
  }
  return nf;
}

static void pool_steps(farm_engine *e);
static void *loop_main(void *arg) {
  farm_engine *e = arg;
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);    /* signals are the caller's */
  engine_lock(e);
  /* workers are started from this thread: they die with it (PR_SET_PDEATHSIG
     follows the thread that forked), and it lives exactly as long as the engine */
  for (int i = 0; i < e->npeers; i++) {
    farm_peer *p = e->peers[i];
    if (p->ops->start(p) < 0) {
      p->dead = 1;
      e->start_failed = 1;
      break;
    }
  }
  if (e->dir[0]) farm__sockdir_sweep();     /* (while they start: sockdir.h) */
  changed(e);
  while (!e->stop) {
    fix_broken(e);
    pool_steps(e);                           /* set_workers, farm__peer_retire */
    take_incoming(e);
    double now = farm__now();
    double period = __atomic_load_n(&e->outstanding, __ATOMIC_RELAXED) ? TICK : IDLE_TICK;
    if (now - e->last_tick >= period) tick(e, now);
    for (int i = 0; i < e->npeers; i++)
      if (e->peers[i]->link && backed_up(e->peers[i])) flush_pending(e->peers[i]);
    dispatch(e);
    flush_subdone(e);
    wake_waiters(e);
    int nf = want_fds(e);
    __atomic_store_n(&e->sleeping, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&e->incoming, __ATOMIC_SEQ_CST) || nf < 0) {
      __atomic_store_n(&e->sleeping, 0, __ATOMIC_SEQ_CST);
      continue;
    }
    double left = e->last_tick + period - farm__now();
    int ms = left <= 0 ? 0 : (int)ceil(left * 1e3);
    engine_unlock(e);
    farm__files_flush(e->files_out);
    farm__term_flush(e->term);
    poll(e->pfd, (nfds_t)nf, ms);
    engine_lock(e);
    __atomic_store_n(&e->sleeping, 0, __ATOMIC_SEQ_CST);
    if (e->pfd[0].revents) {
      uint64_t v;
      if (read(e->wake_fd, &v, sizeof v) < 0) { /* nothing to read: fine */ }
    }
    __atomic_store_n(&e->woken, 0, __ATOMIC_SEQ_CST);
    if (!__atomic_load_n(&e->caller_polls, __ATOMIC_SEQ_CST))
      for (int i = 0; i < e->npeers; i++) farm__peer_drain(e->peers[i]);
  }
  /* The workers are this thread's children and die when it ends: when the
     pool has a cleanup (farm.on_node), they are told to QUIT first and given
     a moment to run it. */
  int cleanup = 0;
  for (int i = 0; i < e->nshares; i++) cleanup |= e->shares[i].kind == FARM_SHARE_SETUP;
  if (cleanup) {
    farm_buf q;
    farm__buf_init(&q);
    farm__proto_put_empty(&q, FARM_MSG_QUIT);
    pid_t pids[256];
    int np = 0;
    for (int i = 0; i < e->npeers; i++) {
      farm_peer *p = e->peers[i];
      if (!p->link || !p->ready || !p->ops->local_pool) continue;
      farm__link_send(p->link, q.p, q.n, 1);
      long pid = p->ops->pid ? p->ops->pid(p) : 0;
      if (pid > 0 && np < 256) pids[np++] = (pid_t)pid;
    }
    farm__buf_free(&q);
    engine_unlock(e);
    farm__stop_pids(pids, np, CLEANUP_GRACE_MS);
    engine_lock(e);
  }
  engine_unlock(e);
  return NULL;
}

static void wake_loop(farm_engine *e) {
  if (__atomic_load_n(&e->sleeping, __ATOMIC_SEQ_CST) &&
      !__atomic_exchange_n(&e->woken, 1, __ATOMIC_SEQ_CST)) {
    uint64_t one = 1;
    if (write(e->wake_fd, &one, sizeof one) < 0) { /* counter full: it wakes anyway */ }
  }
}

/* ---- retiring peers; resizing the local pool (farm.set_workers) ------------------ */

#define RETIRE_GRACE 2.0           /* seconds a retired peer has to go once sent QUIT */
#define SHRINK_WHY "the pool was made smaller (farm.set_workers)"

static int is_local(farm_peer *p) { return p->ops->local_pool; }

static void recount_capacity(farm_engine *e) {
  e->capacity = 0;
  for (int i = 0; i < e->npeers; i++)
    e->capacity += e->peers[i]->ready && !e->peers[i]->retired ? e->peers[i]->capacity : 0;
}

/* Ask a retired peer for its jobs not begun yet (one TAKE at a time; what it
   does not give back has begun, on_taken, and is not asked for again). */
static void retire_take(farm_engine *e, farm_peer *p) {
  if (!p->link || !p->ready || p->takes || p->broken) return;
  int n = 0;
  for (farm_job *j = p->head; j; j = j->next)
    if (j->state == JOB_SENT && !j->begun && !j->taking && !j->cancel_req) { j->taking = 1; n++; }
  if (n) send_take(e, p);
}

void farm__peer_retire(farm_peer *p, const char *why) {
  farm_engine *e = p->e;
  farm__engine_assert_locked(e);
  if (p->retired) return;
  p->retired = 1;
  p->start_pending = 0;            /* not started yet: it never will be */
  p->quit_at = 0;
  snprintf(p->retired_why, sizeof p->retired_why, "%s", why && *why ? why : "retired");
  recount_capacity(e);
  retire_take(e, p);
  changed(e);
}

/* Each turn of the loop: start the peers set_workers added, and walk the
   retired ones to their end (take back, QUIT when empty, stop after a grace).
   With every peer retired or dead, the queue fails, saying so. */
static void pool_steps(farm_engine *e) {
  double now = farm__now();
  farm_peer *last = NULL;
  int dead = 0;
  for (int i = 0; i < e->npeers; i++) {
    farm_peer *p = e->peers[i];
    dead += p->dead;
    if (p->start_pending) {
      p->start_pending = 0;
      if (!p->retired && !p->dead && p->ops->start(p) < 0) p->dead = 1;   /* e->err says why */
      changed(e);
      continue;
    }
    if (!p->retired) continue;
    last = p;
    if (!p->link || p->broken) continue;     /* gone (or being stopped anyway) */
    if (!p->ready) { p->ops->kill(p, p->retired_why, 0); continue; }   /* still starting */
    retire_take(e, p);
    if (p->takes || p->inflight) continue;   /* its running jobs end there */
    if (!p->quit_at) {
      p->quit_at = now;
      if (!p->closing) {
        farm_buf q;
        farm__buf_init(&q);
        farm__proto_put_empty(&q, FARM_MSG_QUIT);
        if (farm__peer_send(p, q.p, q.n) < 0) peer_broken(e, p, "cannot send QUIT");
        else p->closing = 1;
        farm__buf_free(&q);
      }
    } else if (now - p->quit_at > RETIRE_GRACE) {
      p->ops->kill(p, p->retired_why, 0);    /* it did not go by itself */
    }
  }
  if (last && !live_peers(e) && !(e->keep_files && e->setup_err[0]) && !awaits_rejoin(e, now)) {
    char why[sizeof e->err + 300];
    snprintf(why, sizeof why, "no workers left: %s was retired (%s)%s%s", last->name,
             last->retired_why, dead && e->err[0] ? "; " : "", dead ? e->err : "");
    fail_queue(e, why);
  }
}

int farm__engine_set_workers(farm_engine *e, int n, char *err, size_t errlen) {
  if (errlen) err[0] = 0;
  if (n < 1 || n > 256) {
    snprintf(err, errlen, "the number of workers must be from 1 to 256 (got %d)", n);
    return FARM_EINVAL;
  }
  farm_peer *fresh[256];
  int nfresh = 0, active = 0, nlocal = 0, rc = 0;
  engine_lock(e);
  if (atomic_load(&e->closed) || e->stop) {
    engine_unlock(e);
    snprintf(err, errlen, "the pool is closed");
    return FARM_ECLOSED;
  }
  for (int i = 0; i < e->npeers; i++) {
    farm_peer *p = e->peers[i];
    if (!is_local(p)) continue;
    nlocal++;
    active += !p->dead && !p->retired;
  }
  /* growing: first the retired workers that are gone start again (their names
     and slots come back), then new ones */
  for (int i = 0; i < e->npeers && active < n; i++) {
    farm_peer *p = e->peers[i];
    if (!is_local(p) || !p->retired || p->dead || p->link || p->start_pending) continue;
    p->retired = 0;
    p->retired_why[0] = 0;
    p->quit_at = 0;
    p->ready = 0;
    p->start_pending = 1;
    fresh[nfresh++] = p;
    active++;
  }
  if (active < n) {
    farm_peer **grown = realloc(e->peers, (size_t)(e->npeers + n - active) * sizeof *grown);
    if (!grown) { snprintf(err, errlen, "out of memory"); rc = FARM_ENOMEM; }
    else e->peers = grown;
    while (!rc && active < n) {
      farm_peer *p = farm__local_new(&e->host, nlocal, err, errlen);
      if (!p) { rc = FARM_ENOMEM; break; }
      nlocal++;
      p->start_pending = 1;
      e->peers[e->npeers++] = p;
      fresh[nfresh++] = p;
      active++;
    }
  }
  /* shrinking: the workers not started first, then the idle, then those with
     the fewest jobs begun (the newest among equals) */
  while (active > n) {
    farm_peer *best = NULL;
    long best_score = LONG_MAX;
    for (int i = 0; i < e->npeers; i++) {
      farm_peer *p = e->peers[i];
      if (!is_local(p) || p->dead || p->retired) continue;
      long score = -1;
      if (p->link && p->ready) {
        uint64_t running = p->ops->running ? p->ops->running(p) : 0;
        long begun = 0;
        for (farm_job *j = p->head; j; j = j->next) begun += j->begun || (running && j->id == running);
        score = begun * 65536 + p->inflight;
      }
      if (score <= best_score) { best = p; best_score = score; }
    }
    if (!best) break;
    farm__peer_retire(best, SHRINK_WHY);
    active--;
  }
  recount_capacity(e);
  changed(e);
  wake_waiters(e);
  engine_unlock(e);
  uint64_t one = 1;
  if (write(e->wake_fd, &one, sizeof one) < 0) { /* counter full: it wakes anyway */ }
  if (rc < 0 || !nfresh) return rc;
  /* the new workers say hello before the call returns, as a new pool's do */
  double until = farm__now() + START_TIMEOUT;
  for (;;) {
    uint64_t gen = farm__engine_gen(e);
    int waiting = 0, failed = 0;
    engine_lock(e);
    int closed = atomic_load(&e->closed) || e->stop;
    for (int k = 0; !closed && k < nfresh; k++) {
      farm_peer *p = fresh[k];
      if (p->retired) continue;              /* retired meanwhile */
      if (p->start_pending || (!p->ready && !p->dead)) waiting++;
      else if (p->dead) failed++;
    }
    if (failed && !waiting) snprintf(err, errlen, "%s", e->err[0] ? e->err : "a new worker did not start");
    engine_unlock(e);
    if (closed) { snprintf(err, errlen, "the pool is closed"); return FARM_ECLOSED; }
    if (!waiting) return failed ? FARM_ESPAWN : 0;
    if (farm__now() > until) {
      snprintf(err, errlen, "%d of %d new workers (%.300s) did not start within %g s",
               waiting, nfresh, e->exe, START_TIMEOUT);
      return FARM_ETIMEDOUT;
    }
    if (farm__engine_wait(e, gen, 0.05) < 0) return 0;   /* a signal: they go on starting */
  }
}

/* ---- nodes added while it runs ---------------------------------------------------- */

void farm__engine_set_key(farm_engine *e, const unsigned char key[32]) {
  engine_lock(e);
  memcpy(e->key, key, sizeof e->key);
  e->nodes_o.key = e->key;
  engine_unlock(e);
}

int farm__engine_has_key(farm_engine *e) {
  engine_lock(e);
  int has = e->nodes_o.key != NULL;
  engine_unlock(e);
  return has;
}

/* The node peer named name (as farm.nodes() names it), or NULL. */
static farm_peer *node_named(farm_engine *e, const char *name) {
  for (int i = 0; i < e->npeers; i++)
    if (e->peers[i]->ops->remote && !strcmp(e->peers[i]->name, name)) return e->peers[i];
  return NULL;
}

int farm__engine_add_hosts(farm_engine *e, const farm_host *hosts, int n, char *err, size_t errlen) {
  if (errlen) err[0] = 0;
  if (n < 0 || (n > 0 && !hosts)) { snprintf(err, errlen, "no hosts given"); return FARM_EINVAL; }
  engine_lock(e);
  int rc = 0;
  if (atomic_load(&e->closed) || e->stop) {
    snprintf(err, errlen, "the pool is closed");
    rc = FARM_ECLOSED;
  }
  /* every host is looked at before any is taken: one that cannot be is said */
  for (int i = 0; !rc && i < n; i++) {
    char name[400], short_name[sizeof e->peers[0]->name];
    farm__host_name(&hosts[i], name, sizeof name);
    snprintf(short_name, sizeof short_name, "%.47s", name);
    farm_peer *p = node_named(e, short_name);
    if (hosts[i].kind != FARM_HOST_NODE && hosts[i].kind != FARM_HOST_SSH) {
      snprintf(err, errlen, "host %s: only a standing node (node://host:port) or an SSH host can be "
               "added to a running pool", name);
      rc = FARM_EINVAL;
    } else if (p && p->hostile) {
      snprintf(err, errlen, "host %s: it broke the protocol earlier in this run, and is not taken back", name);
      rc = FARM_EINVAL;
    }
  }
  int grown = 0;
  if (!rc && n > 0) {
    farm_peer **v = realloc(e->peers, (size_t)(e->npeers + n) * sizeof *v);
    if (!v) { snprintf(err, errlen, "out of memory"); rc = FARM_ENOMEM; }
    else e->peers = v;
  }
  for (int i = 0; !rc && i < n; i++) {
    char name[400], short_name[sizeof e->peers[0]->name];
    farm__host_name(&hosts[i], name, sizeof name);
    snprintf(short_name, sizeof short_name, "%.47s", name);
    farm_peer *p = node_named(e, short_name);
    if (p && (!p->dead || p->rejoining || p->retired)) continue;   /* live, tried again already, or out */
    if (p) {                       /* lost, or never reached: its kind tries it again now */
      p->rejoining = 1;
      grown++;
      continue;
    }
    if (!(p = farm__node_new(&e->host, &e->nodes_o, &hosts[i]))) {
      snprintf(err, errlen, "out of memory");
      rc = FARM_ENOMEM;
      break;
    }
    p->start_pending = 1;
    e->peers[e->npeers++] = p;
    grown++;
  }
  if (grown) changed(e);
  engine_unlock(e);
  uint64_t one = 1;
  if (grown && write(e->wake_fd, &one, sizeof one) < 0) { /* counter full: it wakes anyway */ }
  return rc;
}

/* ---- the caller's side ------------------------------------------------------------ */

void farm__engine_submit(farm_engine *e, farm_job *j) {
  j->state = JOB_QUEUED;
  j->submitted = farm__now();
  __atomic_add_fetch(&j->refs, 1, __ATOMIC_RELAXED);   /* the engine's */
  size_t outstanding = __atomic_add_fetch(&e->outstanding, 1, __ATOMIC_SEQ_CST);
  __atomic_add_fetch(&e->submitted, 1, __ATOMIC_RELAXED);
  if (e->journal && journal_replay(e, j)) return;
  farm_job *head = __atomic_load_n(&e->incoming, __ATOMIC_RELAXED);
  do j->next = head;
  while (!__atomic_compare_exchange_n(&e->incoming, &head, j, 1, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
  /* A lone job (nothing else outstanding) is sent by the caller itself while
     the loop sleeps: it leaves without waiting for the loop thread to wake. A
     stream of jobs is the loop's, which sends them in batches. */
  if (outstanding == 1 && __atomic_load_n(&e->sleeping, __ATOMIC_SEQ_CST) &&
      engine_trylock(e) == 0) {
    int sent = 0;
    if (!e->stop && e->sleeping) {
      take_incoming(e);
      dispatch(e);
      sent = !e->nqueued && !e->npinned;
      for (int i = 0; i < e->npeers; i++) sent &= !backed_up(e->peers[i]) && !e->peers[i]->broken;
    }
    engine_unlock(e);
    if (sent) return;
  }
  wake_loop(e);
}

uint64_t farm__engine_nextid(farm_engine *e) { return __atomic_fetch_add(&e->nextid, 1, __ATOMIC_RELAXED); }
size_t farm__engine_maxmsg(farm_engine *e) { return e->maxmsg; }
uint64_t farm__engine_gen(farm_engine *e) { return __atomic_load_n(&e->gen, __ATOMIC_SEQ_CST); }
size_t farm__engine_outstanding(farm_engine *e) {
  return __atomic_load_n(&e->outstanding, __ATOMIC_SEQ_CST);
}

/* A waiting caller lends the loop a hand when the loop is not busy: it sends
   what was just submitted and takes what came, saving the hops through the
   loop thread on a round trip. It never starts or stops processes (broken
   peers are the loop's). Fills fds with what to poll; returns how many. */
static int help(farm_engine *e, struct pollfd *fds, int max) {
  int nf = 0;
  fds[nf++] = (struct pollfd){ .fd = e->done_fd, .events = POLLIN };
  if (atomic_load(&e->closed) || engine_trylock(e) != 0) {
    caller_stops_polling(e);               /* the loop does it */
    return nf;
  }
  if (!e->stop) {
    take_incoming(e);
    for (int i = 0; i < e->npeers; i++)
      if (e->peers[i]->link && backed_up(e->peers[i])) flush_pending(e->peers[i]);
    dispatch(e);
    for (int i = 0; i < e->npeers; i++) farm__peer_drain(e->peers[i]);
    dispatch(e);
    flush_subdone(e);
    int kick = 0;
    for (int i = 0; i < e->npeers; i++) {
      farm_peer *p = e->peers[i];
      kick |= p->broken || backed_up(p);
      if (p->link && nf < max) fds[nf++] = (struct pollfd){ .fd = farm__link_rcvfd(p->link), .events = POLLIN };
    }
    if (nf - 1 == e->npeers) __atomic_store_n(&e->caller_polls, 1, __ATOMIC_SEQ_CST);
    else caller_stops_polling(e);           /* it could not poll them all */
    /* We are awake; another thread waiting (C API: several may) is not, and
       what we just took may be its job's end: it must hear it. */
    if (__atomic_load_n(&e->waiters, __ATOMIC_SEQ_CST) > 1) wake_waiters(e);
    else e->signal_waiters = 0;             /* the only waiter is us */
    if (kick) { uint64_t one = 1; if (write(e->wake_fd, &one, sizeof one) < 0) { /* awake anyway */ } }
  }
  engine_unlock(e);
  farm__files_flush(e->files_out);
  farm__term_flush(e->term);
  return nf;
}

int farm__engine_wait_fds(farm_engine *e, uint64_t gen, double timeout,
                          struct pollfd *extra, int nextra) {
  __atomic_add_fetch(&e->waiters, 1, __ATOMIC_SEQ_CST);
  double until = timeout < 0 ? HUGE_VAL : farm__now() + timeout;
  int rc = 0;
  struct pollfd fds[17 + 8];
  if (nextra > 8) nextra = 8;
  for (;;) {
    int nf = help(e, fds, 17);
    if (farm__engine_gen(e) != gen || atomic_load(&e->closed)) { rc = 1; break; }
    double left = until - farm__now();
    if (left <= 0) break;
    int ms = left > 1 ? 1000 : (int)ceil(left * 1e3);
    /* Several threads waiting (a C host's): done_fd is one counter, and one of
       them may read the write meant for another between that one's look at
       gen and its poll. A short poll bounds what such a lost wakeup costs. */
    if (ms > SHARED_WAIT_MS && __atomic_load_n(&e->waiters, __ATOMIC_SEQ_CST) > 1) ms = SHARED_WAIT_MS;
    for (int i = 0; i < nextra; i++) fds[nf + i] = extra[i];
    int pr = poll(fds, (nfds_t)(nf + nextra), ms);
    if (pr < 0 && errno == EINTR) { rc = -1; break; }
    if (pr > 0 && fds[0].revents) {
      uint64_t v;
      /* (a wakeup this caller ends its wait on is passed on to the others) */
      if (read(e->done_fd, &v, sizeof v) == sizeof v && farm__engine_gen(e) != gen &&
          __atomic_load_n(&e->waiters, __ATOMIC_SEQ_CST) > 1 &&
          write(e->done_fd, &v, sizeof v) < 0) { /* full counter: they are awake anyway */ }
    }
    int mine = 0;
    for (int i = 0; i < nextra; i++) mine |= (extra[i].revents = fds[nf + i].revents) != 0;
    if (pr > 0 && mine) { rc = 2; break; }
  }
  caller_stops_polling(e);
  __atomic_sub_fetch(&e->waiters, 1, __ATOMIC_SEQ_CST);
  return rc;
}

int farm__engine_wait(farm_engine *e, uint64_t gen, double timeout) {
  return farm__engine_wait_fds(e, gen, timeout, NULL, 0);
}

/* Under the lock: cancel j as far as its state allows without waiting.
   1 cancelled, 0 cannot be, -1 asked its peer (wait for the answer). */
static int cancel_step(farm_engine *e, farm_job *j, int force) {
  int st = farm__job_state(j);
  if (st >= JOB_DONE) return st == JOB_CANCELLED && j->cancel_req ? 1 : 0;
  if (st == JOB_QUEUED) {
    /* in the queue (or not yet taken from incoming): skipped when met */
    unqueue(e, j);
    j->cancel_req = 1;
    job_over(e, j, JOB_CANCELLED);
    return 1;
  }
  farm_peer *p = farm__job_peer(j);
  if (!p) return 0;
  if (j->cancel_req == CANCEL_FORCE) return -1;   /* the loop is stopping it: wait */
  uint64_t running = p->ops->running ? p->ops->running(p) : 0;
  if (running == j->id) job_begun(e, j, farm__now());
  if (j->begun || running == j->id || (!p->ops->running && p->head == j)) {
    /* running, or waiting on its own jobs there */
    if (!force) return 0;
    j->cancel_req = CANCEL_FORCE;
    stop_for(p, j->id, "a running job was cancelled by force");
    return -1;
  }
  if (j->taking) return -1;                   /* a TAKE is on its way: wait for it */
  if (p->takes) return -1;                    /* one at a time: wait for the other */
  j->taking = 1;
  j->cancel_req = force ? CANCEL_FORCE : CANCEL_TAKE;
  send_take(e, p);
  return -1;
}

#define CANCEL_WAIT 10.0             /* a peer that does not answer a TAKE in this long is not waited for */

int farm__engine_stop(farm_engine *e, farm_job *j, double grace) {
  if (atomic_load(&e->closed)) return 0;
  engine_lock(e);
  int rc = 0, st = farm__job_state(j);
  if (st == JOB_QUEUED) {
    rc = cancel_step(e, j, 1);               /* not started: cancelled now */
  } else if (st == JOB_SENT && farm__job_peer(j) && !j->x->stop_at && j->cancel_req != CANCEL_FORCE) {
    farm_buf b;
    farm__buf_init(&b);
    if (farm__proto_put_stop(&b, j->id) == 0 && farm__peer_send(j->x->peer, b.p, b.n) == 0) {
      if (grace >= 0) {              /* (a loss meanwhile ends it cancelled too) */
        j->x->stop_at = farm__now() + (grace > 0 ? grace : 1e-3);
        j->cancel_req = CANCEL_FORCE;
        e->nstopping++;
      }
      rc = -1;
    } else {
      peer_broken(e, j->x->peer, "cannot send a stop");
    }
    farm__buf_free(&b);
  } else if (st == JOB_SENT) {
    rc = -1;                                 /* being stopped already */
  }
  wake_waiters(e);
  engine_unlock(e);
  wake_loop(e);
  return rc;
}

uint32_t farm__engine_partial(farm_engine *e, farm_job *j, char **out, size_t *n, int *untrusted) {
  *out = NULL;
  *n = 0;
  engine_lock(e);
  farm_jobx *x = j->x;             /* (none yet: nothing provided) */
  uint32_t k = x ? x->nparts : 0;
  if (k && x->part) {
    *out = farm__dupmem(x->part, x->npart);
    *n = x->npart;
    *untrusted = x->part_untrusted;
    if (!*out) k = 0;
  }
  engine_unlock(e);
  return k;
}

int farm__engine_cancel(farm_engine *e, farm_job *j, int force) {
  if (atomic_load(&e->closed)) return 0;
  int rc;
  double until = farm__now() + CANCEL_WAIT;
  for (;;) {
    uint64_t gen = farm__engine_gen(e);
    engine_lock(e);
    rc = cancel_step(e, j, force);
    if (rc >= 0) {
      int over = farm__job_state(j) >= JOB_DONE;
      if (!over && j->cancel_req != CANCEL_FORCE) j->cancel_req = 0;
      wake_waiters(e);
      engine_unlock(e);
      wake_loop(e);
      return rc;
    }
    engine_unlock(e);
    wake_loop(e);
    /* the peer answers a TAKE at once, even mid-job: only a frozen one is slow
       (then the job may still run, so it is not cancelled) */
    if (farm__engine_wait(e, gen, 0.5) < 0 || farm__now() > until) return 0;
  }
}

int farm__engine_cancel_all(farm_engine *e, int force) {
  /* queued jobs first, in one go; then what is at the peers */
  int n = 0;
  engine_lock(e);
  take_incoming(e);
  for (int k = 0; k < e->npins || k == 0; k++)
    for (farm_job *j = k ? e->pins[k].head : e->qhead; j; j = j->next)
      if (j->state == JOB_QUEUED) {
        j->cancel_req = CANCEL_TAKE;
        unqueue(e, j);
        job_over(e, j, JOB_CANCELLED);
        n++;
      }
  /* then every job at a peer, each asked once (a job that cannot be
     cancelled stays as it is: it is not asked again) */
  size_t ns = 0, cap = 0;
  farm_job **sent = NULL;
  for (int i = 0; i < e->npeers; i++)
    for (farm_job *j = e->peers[i]->head; j; j = j->next) {
      if (j->state != JOB_SENT || j->cancel_req) continue;
      if (ns == cap) {
        size_t c2 = cap ? 2 * cap : 64;
        farm_job **p2 = realloc(sent, c2 * sizeof *p2);
        if (!p2) break;
        sent = p2;
        cap = c2;
      }
      __atomic_add_fetch(&j->refs, 1, __ATOMIC_RELAXED);
      sent[ns++] = j;
    }
  engine_unlock(e);
  for (size_t k = 0; k < ns; k++) {
    n += farm__engine_cancel(e, sent[k], force);
    farm__job_unref(sent[k]);
  }
  free(sent);
  return n;
}

const char *farm__engine_status(farm_engine *e, farm_job *j) {
  static const char *const names[] = { "pending", "running", "done", "failed", "cancelled" };
  int st = farm__job_state(j);
  if (st != JOB_SENT) return names[st];
  engine_lock(e);
  int running = 0;
  farm_peer *p = farm__job_peer(j);
  if (j->state == JOB_SENT && p) {
    int seen = p->ops->running && p->ops->running(p) == j->id;
    if (seen) job_begun(e, j, farm__now());     /* (before the loop's next look) */
    running = j->begun || seen || (!p->ops->running && p->head == j);
  }
  engine_unlock(e);
  return names[running ? JOB_SENT : JOB_QUEUED];
}

int farm__engine_where(farm_engine *e, farm_job *j, char *out, size_t n, double *since) {
  int found = 0;
  engine_lock(e);
  if (j->state == JOB_SENT && farm__job_peer(j)) {
    where(farm__job_peer(j), out, n);
    if (since) *since = farm__jx(j)->started;
    found = 1;
  }
  engine_unlock(e);
  return found;
}

farm_job *farm__engine_finished(farm_engine *e) {
  if (!__atomic_load_n(&e->fhead, __ATOMIC_ACQUIRE)) return NULL;   /* the common case, unlocked */
  engine_lock(e);
  farm_job *j = e->fhead;
  if (j) {
    e->fhead = farm__jx(j)->fnext;
    if (!e->fhead) e->ftail = NULL;
  }
  engine_unlock(e);
  return j;
}

void farm__engine_stats(farm_engine *e, farm_engine_stats *s) {
  memset(s, 0, sizeof *s);
  engine_lock(e);
  s->peers = calloc((size_t)e->npeers + 1, sizeof *s->peers);
  for (int i = 0; s->peers && i < e->npeers; i++) {
    farm_peer *p = e->peers[i];
    farm_peer_stats *t = &s->peers[s->npeers++];
    snprintf(t->name, sizeof t->name, "%s", p->name);
    snprintf(t->kind, sizeof t->kind, "%s", p->ops->kind);
    t->state = p->retired ? "retired" : p->dead ? (p->ready ? "lost" : "failed") : p->ready ? "up" : "starting";
    t->pid = p->ops->pid ? p->ops->pid(p) : 0;
    t->capacity = p->capacity;
    t->jobs = p->jobs;
    t->busy = p->busy;
    t->bytes_sent = p->bytes_out;
    t->bytes_received = p->bytes_in;
    t->clients = p->clients;
  }
  s->queued = e->nqueued + e->npinned;
  s->outstanding = farm__engine_outstanding(e);
  s->submitted = __atomic_load_n(&e->submitted, __ATOMIC_RELAXED);
  s->finished = __atomic_load_n(&e->finished, __ATOMIC_RELAXED);
  s->fn_sent = e->fn_sent;
  s->bytes_sent = e->bytes_sent;
  s->batches_sent = e->batches_sent;
  s->taken_back = e->taken_back;
  s->elapsed = farm__now() - e->t0;
  engine_unlock(e);
}

/* ---- the status page (status.h) ------------------------------------------------ */

/* A job failed: counted, and kept in the ring of the last ones (lock held). */
static void note_failure(farm_engine *e, farm_job *j) {
  e->failed++;
  if (!e->errs && !(e->errs = calloc(FARM_STATUS_ERRORS, sizeof *e->errs))) return;
  farm_status_error *r = &e->errs[e->nerrs++ % FARM_STATUS_ERRORS];
  r->job = j->id;
  snprintf(r->worker, sizeof r->worker, "%s", farm__job_peer(j) ? farm__job_peer(j)->name : "");
  snprintf(r->msg, sizeof r->msg, "%.*s", (int)(farm__jx(j)->nres < sizeof r->msg ? farm__jx(j)->nres : sizeof r->msg - 1),
           farm__jx(j)->res ? farm__jx(j)->res : "");
  snprintf(r->tb, sizeof r->tb, "%.*s", (int)(farm__jx(j)->ntb < sizeof r->tb ? farm__jx(j)->ntb : sizeof r->tb - 1),
           farm__jx(j)->tb ? farm__jx(j)->tb : "");
}

/* The figures of the status page: copied under the lock, at once. The local
   workers are one row, each node one. */
void farm__engine_status_snap(farm_engine *e, farm_status_snap *s) {
  engine_lock(e);
  s->rows = calloc((size_t)e->npeers + 1, sizeof *s->rows);
  farm_status_row *local = NULL;
  for (int i = 0; s->rows && i < e->npeers; i++) {
    farm_peer *p = e->peers[i];
    int is_local = !p->ops->untrusted, live = !p->dead && !p->retired;
    int busy = live ? (p->inflight < p->capacity ? p->inflight : p->capacity) : 0;
    s->running += (uint64_t)busy;
    farm_status_row *r = is_local && local ? local : &s->rows[s->nrows++];
    if (is_local && !local) {
      local = r;
      snprintf(r->name, sizeof r->name, "local");
      snprintf(r->state, sizeof r->state, "starting");
    } else if (!is_local) {
      snprintf(r->name, sizeof r->name, "%s", p->name);
      snprintf(r->state, sizeof r->state, "%s", p->retired ? "retired" : p->dead ? (p->ready ? "lost" : "failed")
               : p->ready ? "up" : "starting");
      r->clients = p->clients;
    }
    if (is_local && live && p->ready) snprintf(r->state, sizeof r->state, "up");
    snprintf(r->kind, sizeof r->kind, "%s", is_local ? "local" : "node");
    r->workers += live ? p->capacity : 0;
    r->busy += busy;
    r->done += p->jobs;
  }
  s->total = __atomic_load_n(&e->submitted, __ATOMIC_RELAXED);
  s->failed = e->failed;
  uint64_t fin = __atomic_load_n(&e->finished, __ATOMIC_RELAXED);
  s->done = fin > e->failed ? fin - e->failed : 0;
  s->queued = e->nqueued + e->npinned;
  s->elapsed = farm__now() - e->t0;
  unsigned n = e->nerrs < FARM_STATUS_ERRORS ? e->nerrs : FARM_STATUS_ERRORS;
  for (unsigned i = 0; e->errs && i < n; i++)
    s->errors[s->nerrors++] = e->errs[(e->nerrs - n + i) % FARM_STATUS_ERRORS];
  engine_unlock(e);
}

int farm__engine_pids(farm_engine *e, long *pids, int max) {
  engine_lock(e);
  int n = 0;
  for (int i = 0; i < e->npeers && n < max; i++) {
    long pid = e->peers[i]->ops->pid ? e->peers[i]->ops->pid(e->peers[i]) : 0;
    if (e->peers[i]->retired && pid <= 0) continue;   /* retired and gone: no entry */
    pids[n++] = pid;
  }
  engine_unlock(e);
  return n;
}

/* ---- what the kinds are handed (farm_peer_host) -------------------------------------- */

static void engine_error(farm_engine *e, const char *msg) {
  if (!e->err[0]) snprintf(e->err, sizeof e->err, "%s", msg);
}

/* The local workers' socket directory (sockdir.c), for as long as they connect. */
static const char *engine_sockdir(farm_engine *e, char *err, size_t errlen) {
  return farm__sockdir_make(e->dir, err, errlen);
}

static void engine_sockdir_done(farm_engine *e) {
  for (int i = 0; i < e->npeers; i++)
    if (e->peers[i]->ops->local_pool && !e->peers[i]->dead && !e->peers[i]->ready &&
        !(e->peers[i]->retired && !e->peers[i]->link)) return;   /* retired and gone: not waited for */
  farm__sockdir_remove(e->dir);
}

static int host_message(farm_peer *p, const void *msg, size_t n, char *err, size_t errlen) {
  return farm__engine_message(p->e, p, msg, n, err, errlen);
}
static void host_lost(farm_peer *p, uint64_t running, const char *why) {
  farm__engine_peer_lost(p->e, p, running, why);
}
static void host_job_lost(farm_peer *p, uint64_t id, const char *why) {
  farm__engine_job_lost(p->e, p, id, why);
}
static void host_output(farm_peer *p, uint64_t id, const char *s, size_t n) {
  farm__engine_output(p->e, p, id, s, n);
}
static void host_error(farm_peer *p, const char *msg) { engine_error(p->e, msg); }
static const char *host_sockdir(farm_peer *p, char *err, size_t errlen) {
  return engine_sockdir(p->e, err, errlen);
}
static void host_sockdir_done(farm_peer *p) { engine_sockdir_done(p->e); }

/* Filled by open, once exe and maxmsg are known. */
static void host_init(farm_engine *e) {
  e->host = (farm_peer_host){
    .engine = e, .exe = e->exe, .maxmsg = e->maxmsg, .term = e->term,
    .send = farm__peer_send, .reset = farm__peer_reset, .message = host_message,
    .lost = host_lost, .job_lost = host_job_lost, .output = host_output,
    .error = host_error, .sockdir = host_sockdir, .sockdir_done = host_sockdir_done,
  };
}

/* ---- open and close ------------------------------------------------------------------ */

static farm_engine *engine_alloc(void) {
  farm_engine *e = calloc(1, sizeof *e);
  if (!e) return NULL;
  e->term = farm__term_new();
  if (!e->term) { free(e); return NULL; }
  pthread_mutex_init(&e->mu, NULL);
  e->wake_fd = e->done_fd = -1;
  e->t0 = farm__now();
  e->nextid = 1;
  e->maxmsg = DEFAULT_MAX_MESSAGE;
  e->batch_limit = BATCH_BYTES;
  farm__buf_init(&e->msg);
  return e;
}

int farm__engine_open(farm_engine **out, const farm_engine_opts *o, char *err, size_t errlen) {
  *out = NULL;
  if (sodium_init() < 0) { snprintf(err, errlen, "libsodium failed to start"); return FARM_ENOMEM; }
  farm_engine *e = engine_alloc();
  if (!e) { snprintf(err, errlen, "out of memory"); return FARM_ENOMEM; }
  e->echo = o->echo;
  e->progress = o->progress;
  e->restart_workers = o->restart_workers;
  if (o->maxmsg) e->maxmsg = o->maxmsg;
  int rc = FARM_ESPAWN;
  e->keep_files = o->keep_files;
  e->report_starts = o->report_starts;
  e->max_file = o->max_file ? o->max_file : FARM_MAX_FILE_DEFAULT;
  {                                      /* a file and its message's head fit a link */
    size_t room = e->maxmsg > (128u << 10) ? e->maxmsg - (64u << 10) : e->maxmsg / 2;
    if (e->max_file > room) e->max_file = room;
    if (e->max_file < 1) e->max_file = 1;
  }
  {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    e->wall = (double)ts.tv_sec + ts.tv_nsec * 1e-9 - farm__now();
    char lim[32];
    int k = snprintf(lim, sizeof lim, "%zu", e->max_file);
    if (farm__engine_share(e, FARM_SHARE_LIMIT, "max_file", 8, lim, (size_t)k) < 0) {
      rc = FARM_ENOMEM;
      goto fail;
    }
  }
  if (o->journal && farm__journal_open(&e->journal, o->journal, o->journal_id, err, errlen) < 0) {
    rc = FARM_EINVAL;
    goto fail;
  }
  if (!o->keep_files && !(e->files_out = farm__files_new(e->term, o->dest))) {
    snprintf(err, errlen, "out of memory");
    rc = FARM_ENOMEM;
    goto fail;
  }
  e->batch_limit = e->maxmsg < BATCH_BYTES ? e->maxmsg : BATCH_BYTES;
  if (o->exe && *o->exe) snprintf(e->exe, sizeof e->exe, "%s", o->exe);
  else if (farm__find_exe(e->exe, sizeof e->exe) < 0) {
    const char *env = getenv("FARM_EXE");
    if (env && *env)
      snprintf(err, errlen, "FARM_EXE=%.300s is not an executable; point it at the farm executable", env);
    else
      snprintf(err, errlen, "cannot find the farm executable for workers; set FARM_EXE to its path");
    goto fail;
  }
  host_init(e);                          /* (exe and maxmsg are known) */
  e->nodes_o = (farm_engine_opts){ .heartbeat = o->heartbeat, .quiet = o->quiet,
                                   .accept_new_hosts = o->accept_new_hosts, .no_local = o->no_local };
  if (o->key) { memcpy(e->key, o->key, sizeof e->key); e->nodes_o.key = e->key; }
  if (o->remote_farm) {
    snprintf(e->remote_farm, sizeof e->remote_farm, "%s", o->remote_farm);
    e->nodes_o.remote_farm = e->remote_farm;
  }
  e->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  e->done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (e->wake_fd < 0 || e->done_fd < 0) { snprintf(err, errlen, "eventfd: %s", strerror(errno)); goto fail; }
  int nw = o->no_local ? 0 : o->workers > 0 ? o->workers : farm__online_cpus();
  if (!nw && o->nhosts <= 0) { snprintf(err, errlen, "no workers and no nodes: nothing could run a job"); rc = FARM_EINVAL; goto fail; }
  if (!(e->peers = calloc((size_t)nw + (size_t)(o->nhosts > 0 ? o->nhosts : 0), sizeof *e->peers))) { rc = FARM_ENOMEM; goto fail; }
  for (int i = 0; i < nw; i++) {
    if (!(e->peers[i] = farm__local_new(&e->host, i, err, errlen))) { rc = FARM_ENOMEM; goto fail; }
    e->npeers++;
  }
  if (o->nhosts > 0) {
    /* every host at once: an SSH login costs a third of a second or more */
    int first_rc = FARM_ELINK;
    int n = farm__nodes_open(&e->host, o, e->peers + nw, err, errlen, &first_rc);
    if (n < 0) { rc = n; goto fail; }
    e->npeers += n;
    int up = 0;
    for (int i = nw; i < e->npeers; i++) up += !e->peers[i]->dead;
    /* err says why (the first host's own line), and rc is that host's code:
       a wrong key is FARM_EAUTH, a refused SSH login FARM_ESSH (farm.h) */
    if (!up && !nw) { rc = first_rc < 0 ? first_rc : FARM_ELINK; goto fail; }
    err[0] = 0;
  }
  e->has_thread = 1;               /* before the thread runs (farm__engine_locked reads it) */
  if (pthread_create(&e->thread, NULL, loop_main, e) != 0) {
    e->has_thread = 0;
    snprintf(err, errlen, "cannot start the engine's thread");
    goto fail;
  }
  /* Wait for every worker to say hello: start-up errors show here, and the
     socket directory is gone before the caller goes on. */
  double until = farm__now() + START_TIMEOUT;
  for (;;) {
    uint64_t gen = farm__engine_gen(e);
    engine_lock(e);
    int waiting = 0;
    for (int i = 0; i < e->npeers; i++)
      waiting += !e->peers[i]->ready && !e->peers[i]->dead && !e->peers[i]->retired;
    int live = live_peers(e), failed = e->start_failed;
    if (failed || (!live && e->err[0])) snprintf(err, errlen, "%s", e->err);
    engine_unlock(e);
    if (failed || !live) { if (!err[0]) snprintf(err, errlen, "no worker started"); goto fail; }
    if (!waiting) break;
    if (farm__now() > until) {
      snprintf(err, errlen, "%d of %d workers (%.300s) did not start within %g s",
               waiting, e->npeers, e->exe, START_TIMEOUT);
      goto fail;
    }
    farm__engine_wait(e, gen, 0.05);
  }
  *out = e;
  return 0;
fail:
  if (e->journal) { farm__journal_close(e->journal); e->journal = NULL; }   /* (nothing to say) */
  farm__engine_close(e);
  farm__engine_free(e);
  return rc;
}

void farm__engine_close(farm_engine *e) {
  if (!e || atomic_load(&e->closed)) return;
  engine_lock(e);
  e->stop = 1;
  engine_unlock(e);
  if (e->has_thread) {
    uint64_t one = 1;
    if (write(e->wake_fd, &one, sizeof one) < 0) { /* it wakes within a tick anyway */ }
    pthread_join(e->thread, NULL);
    e->has_thread = 0;
  }
  farm__files_flush(e->files_out);     /* what came before the end is written */
  engine_lock(e);
  progress_clear(e);
  for (int i = 0; i < e->npeers; i++) {
    farm_peer *p = e->peers[i];
    for (farm_job *j = p->head, *next; j; j = next) {
      next = j->next;
      if (j->state == JOB_SENT) job_fail(e, j, "the farm was closed before the job finished");
      farm__job_unref(j);
    }
    p->head = p->tail = NULL;
    p->inflight = 0;
  }
  fail_queue(e, "the farm was closed before the job ran");
  farm_buf q;                      /* QUIT to all first: they stop together */
  farm__buf_init(&q);
  farm__proto_put_empty(&q, FARM_MSG_QUIT);
  int remote = 0;
  for (int i = 0; i < e->npeers; i++)
    if (e->peers[i]->link && e->peers[i]->ready) {
      farm__link_send(e->peers[i]->link, q.p, q.n, 1);
      remote |= e->peers[i]->ops->untrusted;
    }
  farm__buf_free(&q);
  /* nanomsg sends after the call returns and drops what is unsent at close: a
     node must hear QUIT, or it waits for our heartbeats to stop before it takes
     its next client */
  if (remote) usleep(QUIT_GRACE_US);
  for (int i = 0; i < e->npeers; i++) {
    farm_peer *p = e->peers[i];
    p->ops->close(p);
    farm__buf_free(&p->pend);
    farm__buf_free(&p->subdone);
    farm__hash_free(&p->known);
    farm__hash_free(&p->idx);
    free(p);
  }
  e->npeers = 0;
  if (e->journal) journal_end(e);
  farm__sockdir_remove(e->dir);
  atomic_store(&e->closed, 1);
  changed(e);
  wake_waiters(e);                 /* a thread waiting on this engine hears at once */
  engine_unlock(e);
  farm__term_flush(e->term);
}

void farm__engine_term_clear(farm_engine *e) { farm__term_clear(e->term); }

void farm__engine_free(farm_engine *e) {
  if (!e) return;
  farm__engine_close(e);
  for (farm_job *j; (j = e->fhead); ) { e->fhead = farm__jx(j)->fnext; farm__job_unref(j); }
  for (int i = 0; i < e->nshares; i++) { free(e->shares[i].name); free(e->shares[i].p); }
  free(e->shares);
  free(e->begun);
  free(e->pins);
  free(e->ev);
  free(e->errs);
  for (farm_sent_file *f; (f = e->files); ) { e->files = f->next; free(f); }
  free(e->peers);
  free(e->pfd);
  farm__buf_free(&e->msg);
  sodium_memzero(e->key, sizeof e->key);
  if (e->wake_fd >= 0) close(e->wake_fd);
  if (e->done_fd >= 0) close(e->done_fd);
  farm__files_free(e->files_out);
  pthread_mutex_destroy(&e->mu);
  farm__term_free(e->term);
  free(e);
}

/* ---- a test engine: one peer, no thread, no process (fuzzing) --------------------- */

static int t_start(farm_peer *p) { (void)p; return 0; }
static void t_kill(farm_peer *p, const char *why, uint64_t blame) { farm__engine_peer_lost(p->e, p, blame, why); }
static void t_close(farm_peer *p) { (void)p; }
static const farm_peer_ops test_ops = {
  .kind = "test", .start = t_start, .kill = t_kill, .close = t_close,
};

farm_engine *farm__engine_test(farm_peer **out) {
  farm_engine *e = engine_alloc();
  farm_peer *p = calloc(1, sizeof *p);
  e->peers = calloc(1, sizeof *e->peers);
  e->peers[0] = p;
  e->npeers = 1;
  p->e = e;
  p->ops = &test_ops;
  p->capacity = 1;
  p->ready = 1;
  snprintf(p->name, sizeof p->name, "test:1");
  farm__buf_init(&p->pend);
  *out = p;
  return e;
}

void farm__engine_test_add(farm_engine *e, farm_job *j) {
  farm_peer *p = e->peers[0];
  __atomic_add_fetch(&j->refs, 1, __ATOMIC_RELAXED);
  __atomic_add_fetch(&e->outstanding, 1, __ATOMIC_RELAXED);
  hold(p, j);
}
