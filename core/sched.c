/*
 * sched.c -- the client's scheduler: the job table, credits, dispatch, and the
 * local pool of workers. No Lua here: the binding (client.c) and, later, other
 * kinds of peer (nodes) use it through sched.h.
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
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sodium.h>
#include "farm.h"
#include "clock.h"
#include "pool.h"
#include "sched.h"
#include "transport.h"

#define CREDIT_MIN 2
#define CREDIT_MAX 2048
#define CREDIT_SECONDS 0.004       /* work kept queued at each worker */
#define BATCH_BYTES (4u << 20)     /* a JOBS message grows to this, then goes */
#define BATCH_MIN 32               /* fewer jobs wait for a busy worker's results */
#define REAP_INTERVAL 0.1
#define KNOWN_MAX 4096             /* functions a worker keeps before it is told to forget */
#define MAX_RETRIES 2              /* a job that killed its worker is tried this often more */
#define REQUEUE_MAX 8              /* a job held by dying workers goes back this often */
#define DEFAULT_MAX_MESSAGE (256u << 20)
#define START_TIMEOUT 30.0         /* seconds for a new pool's workers to connect */


/* ---- function packages and jobs ------------------------------------------ */

void farm__fn_unref(farm_fn *f) {
  if (f && --f->refs == 0) { free(f->p); free(f); }
}

void farm__job_unref(farm_job *j) {
  if (--j->refs > 0) return;
  farm__fn_unref(j->fn);
  free(j->args); free(j->res); free(j->tb); free(j->out);
  free(j);
}

char *farm__dupmem(const void *p, size_t n) {
  char *d = malloc(n ? n : 1);
  if (d && n) memcpy(d, p, n);
  return d;
}

/* End a job with an error of the client's own making (it never reached a result). */
static void job_fail(farm_job *j, const char *msg) {
  j->state = JOB_FAILED;
  free(j->res);
  j->res = farm__dupmem(msg, strlen(msg));
  j->nres = j->res ? strlen(msg) : 0;
  free(j->args); j->args = NULL; j->nargs = 0;
}

/* ---- the known-function set of a worker ---------------------------------- */

static uint64_t hkey(const unsigned char *h) {
  uint64_t k;
  memcpy(&k, h, sizeof k);
  return k ? k : 1;
}

/* The worker is told to drop its cache (in the next JOBS message), and so is
   our record of it. Never in the middle of a batch: jobs before the reset
   would travel as a hash the worker no longer knows. */
static void known_forget(wslot *w) {
  if (w->known) memset(w->known, 0, KNOWN_MAX * 2 * sizeof *w->known);
  w->nknown = 0;
  w->forget = 1;
}

/* 1 if the worker already has it; else records it and returns 0. The caller
   keeps nknown under KNOWN_MAX (see send_batch), so the table has room. */
static int known_check_add(wslot *w, const unsigned char *h) {
  size_t cap = KNOWN_MAX * 2, i;
  if (!w->known && !(w->known = calloc(cap, sizeof *w->known))) return 0;
  uint64_t k = hkey(h);
  for (i = k % cap; w->known[i]; i = (i + 1) % cap)
    if (w->known[i] == k) return 1;
  w->known[i] = k;
  w->nknown++;
  return 0;
}

/* ---- workers ------------------------------------------------------------- */

/* Remove what a client killed while its workers were connecting left behind:
   our own farm-PID-* directories of processes that are gone. */
static void sweep_sockdirs(const char *tmp) {
  DIR *d = opendir(tmp);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d))) {
    long pid;
    char rest[16];
    if (sscanf(e->d_name, "farm-%ld-%15s", &pid, rest) != 2 || pid <= 0) continue;
    if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
    char path[PATH_MAX];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", tmp, e->d_name);
    if (lstat(path, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != getuid()) continue;
    DIR *sub = opendir(path);
    if (sub) {
      struct dirent *f;
      char file[PATH_MAX + 256];
      while ((f = readdir(sub)))
        if (f->d_name[0] != '.') { snprintf(file, sizeof file, "%s/%s", path, f->d_name); unlink(file); }
      closedir(sub);
    }
    rmdir(path);
  }
  closedir(d);
}

/* The socket directory exists only while a worker is connecting: once all are
   connected it goes, so a client that ends by os.exit or SIGKILL leaves nothing
   (and one killed in that moment is swept up by the next client). */
static int sockdir(farm_ctx *c) {
  if (c->dir[0]) return 0;
  const char *tmp = getenv("TMPDIR");
  if (!tmp || !*tmp) tmp = "/tmp";
  sweep_sockdirs(tmp);
  snprintf(c->dir, sizeof c->dir, "%s/farm-%ld-XXXXXX", tmp, (long)getpid());
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
  int statefd = -1;
  w->state = farm__wstate_new(&statefd);   /* without it, blame falls on the oldest job */
  pid_t pid = farm__spawn_worker(c->exe, w->url, w->slot, c->maxmsg, statefd, c->err, sizeof c->err);
  if (statefd >= 0) close(statefd);
  if (pid < 0) {
    farm__link_close(w->link);
    w->link = NULL;
    farm__wstate_free(w->state);
    w->state = NULL;
    return (int)pid;
  }
  w->pid = pid;
  w->ready = 0;
  w->nknown = 0;
  if (w->known) memset(w->known, 0, KNOWN_MAX * 2 * sizeof *w->known);
  w->forget = 0;
  w->pend.n = 0;
  w->ncancel = 0;
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
  /* The job it was running is to blame: it is tried again up to MAX_RETRIES
     times, then fails with the cause. The others it held go back as they were
     (only a worker lost again and again, REQUEUE_MAX times, fails them). */
  uint64_t running = w->state ? w->state->job : (w->head ? w->head->id : 0);
  farm_job *j = w->head, *next;
  farm_job *rev = NULL;
  for (; j; j = next) { next = j->next; j->next = rev; rev = j; }   /* requeue in order */
  for (j = rev; j; j = next) {
    next = j->next;
    j->slot = -1;
    if (j->state != JOB_SENT) { farm__job_unref(j); continue; }   /* cancelled meanwhile */
    int blamed = j->id == running;
    snprintf(j->where, sizeof j->where, "local:%d (pid %ld)", w->slot + 1, (long)w->pid);
    if (blamed ? j->attempt >= MAX_RETRIES : j->requeues >= REQUEUE_MAX) {
      job_fail(j, why);
      farm__job_unref(j);
      continue;
    }
    if (blamed) j->attempt++;
    else j->requeues++;
    requeue_front(c, j);
  }
  w->head = w->tail = NULL;
  w->inflight = 0;
  farm__link_close(w->link);
  unlink_sock(w);
  farm__wstate_free(w->state);
  w->state = NULL;
  w->link = NULL;
  w->pid = 0;
  if (!w->ready) {
    w->dead = 1;
    snprintf(c->err, sizeof c->err, "cannot start a worker (%.300s): %.150s", c->exe, why);
    return;
  }
  if (slot_start(c, w) < 0) w->dead = 1;
}

int farm__sched_workers(farm_ctx *c) {
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
    farm__job_unref(j);
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
  if (farm__sched_workers(c) == 0) fail_queue(c, c->err[0] ? c->err : "no workers left");
  c->last_reap = farm__now();
}

/* ---- dispatch ------------------------------------------------------------ */

static int credit(farm_ctx *c) {
  if (c->est <= 0) return CREDIT_MIN;
  double k = CREDIT_SECONDS / c->est;
  return k < CREDIT_MIN ? CREDIT_MIN : k > CREDIT_MAX ? CREDIT_MAX : (int)k;
}

/* Send what waits for w's link: a message it could not take before, then the
   ids cancelled since (one CANCEL message). 0 when nothing is left waiting. */
static int flush_pending(farm_ctx *c, wslot *w) {
  if (w->pend.n) {
    int rc = farm__link_send(w->link, w->pend.p, w->pend.n, 1);
    if (rc != 0) return rc;
    w->pend.n = 0;
  }
  if (!w->ncancel) return 0;
  farm_buf *b = &c->msg;
  farm__msg_begin(b, FARM_MSG_CANCEL);
  farm__buf_put(b, "\0\0\0\0", 4);
  for (size_t i = 0; i < w->ncancel; i++) farm__buf_uvar(b, w->cancel[i]);
  farm__put_u32le_at(b, 4, (uint32_t)w->ncancel);
  int rc = farm__link_send(w->link, b->p, b->n, 1);
  if (rc == 0) w->ncancel = 0;
  return rc;
}

/* Cancel a job that sits at a worker but has not started there (the state
   page says which job runs). Its future is cancelled now; the worker is told
   to skip it, and whatever it sends for it is dropped. 1 when cancelled. */
int farm__sched_cancel_sent(farm_ctx *c, farm_job *j) {
  if (j->state != JOB_SENT || j->slot < 0 || j->slot >= c->nw) return 0;
  wslot *w = &c->w[j->slot];
  if (!w->state || w->state->job == j->id) return 0;
  if (w->ncancel == w->capcancel) {
    size_t n = w->capcancel ? 2 * w->capcancel : 16;
    uint64_t *p = realloc(w->cancel, n * sizeof *p);
    if (!p) return 0;
    w->cancel = p;
    w->capcancel = n;
  }
  w->cancel[w->ncancel++] = j->id;
  j->state = JOB_CANCELLED;
  free(j->args); j->args = NULL; j->nargs = 0;
  flush_pending(c, w);
  return 1;
}

int farm__sched_running(farm_ctx *c, const farm_job *j) {
  if (j->state != JOB_SENT || j->slot < 0 || j->slot >= c->nw) return 0;
  const wslot *w = &c->w[j->slot];
  return w->state ? w->state->job == j->id : w->head == j;
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
  if (w->nknown + k > KNOWN_MAX) known_forget(w);   /* only ever between batches */
  while (count < (uint32_t)k && c->qhead) {
    farm_job *j = c->qhead;
    /* a batch never outgrows its limit unless one job alone does (and that
       fits the link): the receiver drops a message over its limit silently */
    if (count && j->state == JOB_QUEUED && b->n + j->nargs + j->fn->n + 64 > c->batch_limit) break;
    c->qhead = j->next;
    if (!c->qhead) c->qtail = NULL;
    if (j->state != JOB_QUEUED) { farm__job_unref(j); continue; }   /* cancelled (and uncounted) */
    c->nqueued--;
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
  }
  if (!count) return;
  c->bytes_sent += b->n;
  c->batches_sent++;
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
    if (flush_pending(c, w) != 0) continue;
    int share = (int)((c->nqueued + (size_t)open - 1) / (size_t)open);
    int k = cr - w->inflight;
    if (share < k) k = share;
    /* A worker that has work gets no crumbs: its results will bring it the
       queue grown meanwhile, in one message. Without this, a worker that keeps
       pace with the submitter gets one job a message and every job pays a round
       trip. (Long jobs have a small credit, and still get their prefetch.) */
    if (w->inflight > 0 && k < BATCH_MIN && k < cr / 2) continue;
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

static int on_results(farm_ctx *c, wslot *w, farm_rd *r);

/* A RESULTS message from the worker in slot (header included): what drain()
   does with it, without the restart that follows a malformed one. For tests
   and the fuzzer. Returns results taken, or FARM_EPROTO / FARM_EVERSION. */
int farm__sched_results(farm_ctx *c, int slot, const void *msg, size_t n) {
  farm_rd r;
  char why[160];
  int type = farm__msg_open(&r, msg, n, why, sizeof why);
  if (type < 0) return type;
  if (type != FARM_MSG_RESULTS || slot < 0 || slot >= c->nw) return FARM_EPROTO;
  return on_results(c, &c->w[slot], &r);
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
    const char *a = NULL, *bt = NULL;
    na = 0;
    if (status != FARM_JOB_CANCELLED) a = farm__rd_str(r, &na);
    if (status == FARM_JOB_ERROR) bt = farm__rd_str(r, &nb);
    if (status > FARM_JOB_CANCELLED) r->err = 1;
    if (r->err) break;
    farm_job *j = take_inflight(w, id, attempt);
    if (!j) continue;              /* not ours (any more): a result arrives at most once */
    j->slot = -1;
    if (j->state == JOB_SENT && status == FARM_JOB_CANCELLED) {
      job_fail(j, "protocol error: the worker skipped a job nobody cancelled");
    } else if (j->state == JOB_SENT) {
      j->state = status == FARM_JOB_OK ? JOB_DONE : JOB_FAILED;
      j->busy = busy;
      snprintf(j->where, sizeof j->where, "local:%d (pid %ld)", w->slot + 1, (long)w->pid);
      j->res = farm__dupmem(a, na); j->nres = na;
      if (bt) { j->tb = farm__dupmem(bt, nb); j->ntb = nb; }
      if (nout) {
        j->out = farm__dupmem(out, nout); j->nout = nout;
        if (c->echo) { fwrite(out, 1, nout, stdout); fflush(stdout); }
      }
      free(j->args); j->args = NULL; j->nargs = 0;
    }
    w->jobs++;
    w->busy += busy;
    busy_sum += busy;
    got++;
    farm__job_unref(j);
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
        if (w->pid > 0) kill(w->pid, SIGKILL);
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
int farm__sched_pump(farm_ctx *c, double timeout) {
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
      if (w->pend.n || w->ncancel)
        fds[nf++] = (struct pollfd){ .fd = farm__link_sndfd(w->link), .events = POLLIN };
    }
    int ms = (int)ceil((left < REAP_INTERVAL ? left : REAP_INTERVAL) * 1e3);
    int rc = poll(fds, (nfds_t)nf, ms);
    if (rc < 0 && errno == EINTR) return -1;
    c->last_pump = farm__now();
    for (int i = 0; i < c->nw; i++)
      if (c->w[i].link && (c->w[i].pend.n || c->w[i].ncancel)) flush_pending(c, &c->w[i]);
    dispatch(c);
    got = drain(c);
    if (got) { dispatch(c); return got; }
    if (rc == 0) reap(c);
  }
}

/* ---- open and close ------------------------------------------------------- */

void farm__sched_close(farm_ctx *c) {
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
      if (j->state == JOB_SENT) job_fail(j, "the farm was closed before the job finished");
      farm__job_unref(j);
    }
    farm__link_close(w->link);
    unlink_sock(w);
    farm__buf_free(&w->pend);
    farm__wstate_free(w->state);
    free(w->known);
    free(w->cancel);
  }
  fail_queue(c, "the farm was closed before the job ran");
  free(c->w);
  c->w = NULL;
  c->nw = 0;
  if (c->dir[0]) rmdir(c->dir);
  farm__buf_free(&c->msg);
  farm__buf_free(&c->enc);
}

int farm__sched_open(farm_ctx *c, int nworkers, const char *exe, int echo, size_t maxmsg) {
  memset(c, 0, sizeof *c);
  c->t0 = farm__now();
  c->echo = echo;
  c->maxmsg = maxmsg ? maxmsg : DEFAULT_MAX_MESSAGE;
  c->batch_limit = c->maxmsg < BATCH_BYTES ? c->maxmsg : BATCH_BYTES;
  c->nextid = 1;
  farm__buf_init(&c->msg);
  farm__buf_init(&c->enc);
  if (sodium_init() < 0) { snprintf(c->err, sizeof c->err, "libsodium failed to start"); return FARM_ENOMEM; }
  if (exe && *exe) snprintf(c->exe, sizeof c->exe, "%s", exe);
  else if (farm__find_exe(c->exe, sizeof c->exe) < 0) {
    const char *env = getenv("FARM_EXE");
    if (env && *env)
      snprintf(c->err, sizeof c->err, "FARM_EXE=%.300s is not an executable; point it at the farm executable", env);
    else
      snprintf(c->err, sizeof c->err, "cannot find the farm executable for workers; set FARM_EXE to its path");
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
    farm__sched_pump(c, 0.05);
  }
  if (farm__sched_workers(c) == 0) return FARM_ESPAWN;
  return 0;
}

void farm__sched_enqueue(farm_ctx *c, farm_job *j) {
  j->state = JOB_QUEUED;
  if (c->qtail) c->qtail->next = j; else c->qhead = j;
  c->qtail = j;
  c->nqueued++;
}

/* Take the encoded bytes out of the scratch buffer: big ones by handing the
   buffer over, small ones by copying (the scratch keeps its capacity). */
char *farm__sched_take_enc(farm_ctx *c, size_t *n) {
  if (c->enc.n >= (64u << 10)) return farm__buf_steal(&c->enc, n);
  *n = c->enc.n;
  return farm__dupmem(c->enc.p, c->enc.n);
}

void farm__sched_submitted(farm_ctx *c) {
  if (farm__now() - c->last_pump >= PUMP_INTERVAL || c->nqueued == 1) farm__sched_pump(c, 0);
}
