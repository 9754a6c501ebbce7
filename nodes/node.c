/*
 * node.c -- `farm node`: a standing node (ppserver, dispynode), or one started
 * over SSH for a single run (`--launched`).
 *
 * A node is the client's engine turned around: it listens on one nanomsg PAIR
 * link, lets a client in only after the mutual handshake (session.h), and runs
 * the jobs the client sends on its own local workers, through an engine of its
 * own. To the client it is one peer whose capacity is its workers: it answers
 * JOBS with RESULTS, TAKE with TAKEN, KILL by stopping that job, and sends a
 * BEAT whenever it has said nothing for a heartbeat. Jobs that the node's jobs
 * submit (nested jobs) run on this node's workers.
 *
 * One client at a time: a bound PAIR takes one connection, and nanomsg drops
 * a second while the first is up (the second client says hello again on a fresh
 * connection every second, and gets in once the first is gone, or gives up after
 * 10 s saying the node is busy). A client that goes away
 * (QUIT, silence for 5 heartbeats, a frame that does not authenticate) ends its
 * session: its jobs are stopped with fresh workers for the next, its functions
 * forgotten, the link reopened
 * for the next client. Nothing from a peer is decoded before the handshake.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sodium.h>
#include "farm.h"
#include "clock.h"
#include "engine.h"
#include "pool.h"
#include "proto.h"
#include "session.h"
#include "transport.h"
#include "cli.h"

#define DEFAULT_LISTEN "tcp://127.0.0.1:7070"
#define LOST_BEATS 5.0
#define MAX_MESSAGE (256u << 20)
#define RESULTS_WAIT 0.0005        /* a result waits this long for others to go with it */
#define RESULTS_BATCH 512
#define RESULTS_BYTES (4u << 20)

enum { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };
static const char *level_names[] = { "error", "warn", "info", "debug" };

typedef struct entry {             /* a map from a 64-bit key to a pointer */
  uint64_t key;
  void *val;
  struct entry *next;
} entry;
typedef struct map { entry **b; size_t nb, n; } map;

typedef struct node {
  farm_engine *e;
  farm_link *link;
  char listen[300];
  unsigned char key[FARM_KEYLEN];
  int keyed, launched, workers, loglevel, restart;
  int connect;                     /* --connect-back: we dial the client (srun) */
  FILE *log;
  double beat, idle_timeout, idle_since, last_sent;
  double peer_beat;                /* the client's heartbeat (from its BEATs) */
  int sealed;                      /* a client is in session */
  farm_hs hs;
  char who[160];
  map jobs;                        /* client's id -> farm_job (ours, until over) */
  map fns;                         /* function hash -> farm_fn */
  farm_buf out;
  farm_buf res;                    /* RESULTS entries waiting to go (nres of them, */
  uint32_t nres;                   /* ...the first since res_since) */
  double res_since;
  farm_buf pend;                   /* whole messages waiting for the link (length first) */
  int sigfd;
  int stop;
  uint64_t sessions, jobs_done, jobs_failed, auth_failed, dropped;
  double t0;
  char workdir[PATH_MAX];          /* the jobs' directory, one per client: files land here */
  int setup_told;                  /* the client heard that a worker's setup failed */
  char hello_from[64];             /* the address the last hello (AUTH1) came from */
} node;

/* ---- log ------------------------------------------------------------------------- */

static void logf_(node *n, int level, const char *fmt, ...) {
  if (level > n->loglevel) return;
  char when[32];
  time_t t = time(NULL);
  struct tm tm;
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", localtime_r(&t, &tm));
  FILE *f = n->log ? n->log : stderr;
  fprintf(f, "%s farm node[%ld] %s: ", when, (long)getpid(), level_names[level]);
  va_list ap;
  va_start(ap, fmt);
  vfprintf(f, fmt, ap);
  va_end(ap);
  fputc('\n', f);
  fflush(f);
}

/* ---- maps ------------------------------------------------------------------------ */

static uint64_t mix(uint64_t k) { k ^= k >> 33; k *= 0xff51afd7ed558ccdULL; k ^= k >> 33; return k; }

static void *map_get(map *m, uint64_t key) {
  if (!m->nb) return NULL;
  for (entry *x = m->b[mix(key) & (m->nb - 1)]; x; x = x->next) if (x->key == key) return x->val;
  return NULL;
}

static int map_put(map *m, uint64_t key, void *val) {
  if (m->n + 1 > m->nb) {
    size_t nb = m->nb ? 2 * m->nb : 64;
    entry **b = calloc(nb, sizeof *b);
    if (!b) return -1;
    for (size_t i = 0; i < m->nb; i++)
      for (entry *x = m->b[i], *next; x; x = next) { next = x->next; size_t h = mix(x->key) & (nb - 1); x->next = b[h]; b[h] = x; }
    free(m->b);
    m->b = b;
    m->nb = nb;
  }
  entry *x = malloc(sizeof *x);
  if (!x) return -1;
  size_t h = mix(key) & (m->nb - 1);
  *x = (entry){ key, val, m->b[h] };
  m->b[h] = x;
  m->n++;
  return 0;
}

static void *map_del(map *m, uint64_t key) {
  if (!m->nb) return NULL;
  for (entry **pp = &m->b[mix(key) & (m->nb - 1)], *x; (x = *pp); pp = &x->next)
    if (x->key == key) { void *v = x->val; *pp = x->next; free(x); m->n--; return v; }
  return NULL;
}

static void map_clear(map *m, void (*drop)(void *)) {
  for (size_t i = 0; i < m->nb; i++)
    for (entry *x = m->b[i], *next; x; x = next) { next = x->next; if (drop) drop(x->val); free(x); }
  free(m->b);
  *m = (map){ 0 };
}

static uint64_t hkey(const unsigned char *h) { uint64_t k; memcpy(&k, h, 8); return k; }

/* ---- sending ----------------------------------------------------------------------- */

/* Messages the link could not take yet go out in order when it can: the node
   never blocks on a client (one that vanished is dropped by the heartbeat). */
static int flush_pend(node *n) {
  int rc = farm__link_flush(n->link);
  size_t at = 0;
  while (!rc && at < n->pend.n) {
    uint64_t len;
    memcpy(&len, n->pend.p + at, 8);
    rc = farm__link_send(n->link, n->pend.p + at + 8, (size_t)len, 1);
    if (!rc) at += 8 + (size_t)len;
  }
  if (at) {
    memmove(n->pend.p, n->pend.p + at, n->pend.n - at);
    n->pend.n -= at;
  }
  return rc;
}

static int send_out(node *n) {
  n->last_sent = farm__now();
  int rc = n->pend.n ? FARM_EAGAIN : farm__link_send(n->link, n->out.p, n->out.n, 1);
  if (rc != FARM_EAGAIN) return rc;
  if (farm__buf_u64le(&n->pend, n->out.n) < 0 || farm__buf_put(&n->pend, n->out.p, n->out.n) < 0) return FARM_ENOMEM;
  return 0;
}

static void send_hello(node *n) {
  farm__msg_begin(&n->out, FARM_MSG_HELLO);
  farm__buf_uvar(&n->out, (uint64_t)getpid());
  farm__buf_uvar(&n->out, 0);
  farm__buf_uvar(&n->out, (uint64_t)farm__engine_workers(n->e));
  farm__buf_uvar(&n->out, (uint64_t)(n->beat * 1e3));   /* our heartbeat, in ms */
  send_out(n);
}

/* Every finished job's result, in one RESULTS message (or several, for size). */
/* Finished jobs' results go out in RESULTS messages. While more of the
   client's jobs run here, a message waits a moment (RESULTS_WAIT) for others to
   join it: one message per result would cost a sealed frame and a wake-up of
   the client each. The last result of a burst goes at once. */
static void flush_results(node *n) {
  if (!n->nres) return;
  farm__msg_begin(&n->out, FARM_MSG_RESULTS);
  farm__buf_put(&n->out, "\0\0\0\0", 4);
  farm__put_u32le_at(&n->out, 4, n->nres);
  farm__buf_put(&n->out, n->res.p, n->res.n);
  send_out(n);
  n->res.n = 0;
  n->nres = 0;
}

static void forward_files(node *n);
static void send_results(node *n) {
  farm_job *j;
  while ((j = farm__engine_finished(n->e))) {
    forward_files(n);              /* what it sent came before it finished: it goes first */
    int st = farm__job_state(j);
    farm_job *mine = map_get(&n->jobs, j->ext_id);
    if (mine == j) {                           /* (not a newer try of that id) */
      map_del(&n->jobs, j->ext_id);
      farm__job_unref(mine);                   /* the map's reference */
    }
    if (!n->sealed || st == JOB_CANCELLED) { farm__job_unref(j); continue; }   /* nobody wants it */
    if (!n->nres) n->res_since = farm__now();
    farm_buf *b = &n->res;
    farm__buf_uvar(b, j->ext_id);
    farm__buf_uvar(b, j->ext_attempt);
    farm__buf_u8(b, st == JOB_DONE ? FARM_JOB_OK : FARM_JOB_ERROR);
    farm__buf_uvar(b, (uint64_t)(j->busy * 1e9));
    farm__buf_str(b, j->out.p, j->out.n);
    farm__buf_str(b, j->res, j->nres);
    if (st != JOB_DONE) {
      farm__buf_str(b, j->tb, j->ntb);
      farm__buf_str(b, j->val, j->val ? j->nval : 0);
      n->jobs_failed++;
    } else n->jobs_done++;
    n->nres++;
    farm__job_unref(j);
    if (b->n > RESULTS_BYTES) flush_results(n);
  }
  if (n->nres && (!n->jobs.n || n->nres >= RESULTS_BATCH || farm__now() - n->res_since >= RESULTS_WAIT))
    flush_results(n);
}

/* The address of the peer on our listening port (nanomsg does not say): the
   established TCP connection to that port whose socket is ours. "?" if none. */
static void peer_addr(node *n, char *out, size_t len) {
  snprintf(out, len, "?");
  const char *colon = strrchr(n->listen, ':');
  unsigned port = colon ? (unsigned)atoi(colon + 1) : 0;
  FILE *f = fopen("/proc/self/net/tcp", "r");
  if (!f || !port) { if (f) fclose(f); return; }
  char line[512];
  while (fgets(line, sizeof line, f)) {
    unsigned lport, raddr, rport, st;
    unsigned long inode;
    if (sscanf(line, " %*d: %*8X:%4X %8X:%4X %2X %*s %*s %*s %*s %*s %lu", &lport, &raddr, &rport, &st, &inode) != 5 ||
        lport != port || (st != 1 && st != 8))   /* established, or closed by it just now */
      continue;
    char want[64], link[64], path[64];
    snprintf(want, sizeof want, "socket:[%lu]", inode);
    int mine = 0;
    for (int fd = 0; fd < 1024 && !mine; fd++) {
      snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
      ssize_t k = readlink(path, link, sizeof link - 1);
      if (k > 0) { link[k] = 0; mine = !strcmp(link, want); }
    }
    if (!mine) continue;
    struct in_addr a = { .s_addr = raddr };
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &a, ip, sizeof ip);
    snprintf(out, len, "%s:%u", ip, rport);
    break;
  }
  fclose(f);
}

/* ---- the engine and the jobs' directory ------------------------------------------------ */

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *f) {
  (void)st; (void)flag; (void)f;
  remove(path);
  return 0;
}

/* The jobs' directories that nodes killed outright (SIGKILL) left behind:
   theirs by name (farm-node-PID-...), ours by owner, and their node is gone. */
static void sweep_workdirs(void) {
  const char *tmp = getenv("TMPDIR");
  if (!tmp || !*tmp) tmp = "/tmp";
  DIR *d = opendir(tmp);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d))) {
    long pid;
    char rest[16], path[PATH_MAX];
    struct stat st;
    if (sscanf(e->d_name, "farm-node-%ld-%15s", &pid, rest) != 2 || pid <= 0) continue;
    if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
    snprintf(path, sizeof path, "%s/%s", tmp, e->d_name);
    if (lstat(path, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != getuid()) continue;
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  }
  closedir(d);
}

/* Each client's jobs run in a directory of their own (files shipped to them
   land there, and what they leave goes with the client): the workers start in
   it, so the node works from it while that engine lives. */
static int open_engine(node *n, char *err, size_t errlen) {
  const char *tmp = getenv("TMPDIR");
  snprintf(n->workdir, sizeof n->workdir, "%s/farm-node-%ld-XXXXXX", tmp && *tmp ? tmp : "/tmp",
           (long)getpid());
  if (!mkdtemp(n->workdir) || chdir(n->workdir) < 0) {
    snprintf(err, errlen, "cannot make the jobs' directory %.300s: %s", n->workdir, strerror(errno));
    n->workdir[0] = 0;
    return -1;
  }
  farm_engine_opts o = { .workers = n->workers, .maxmsg = MAX_MESSAGE, .restart_workers = n->restart,
                         .keep_files = 1 };
  return farm__engine_open(&n->e, &o, err, errlen);
}

static void close_engine(node *n) {
  if (n->e) {
    farm__engine_close(n->e);
    farm__engine_free(n->e);
    n->e = NULL;
  }
  if (n->workdir[0]) {
    if (chdir("/") < 0) { /* nothing else to stand on */ }
    nftw(n->workdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    n->workdir[0] = 0;
  }
}

/* A file the client ships for its jobs, at its path below the jobs' directory
   (the client sends only plain relative paths; another is logged and skipped:
   the job that needs it will say so). */
static void put_file(node *n, const char *path, size_t np, const char *data, size_t nd) {
  char rel[PATH_MAX], probe[PATH_MAX + 2], why[300];
  if (!np || np >= sizeof rel || memchr(path, 0, np) || path[0] == '/') goto bad;
  memcpy(rel, path, np);
  rel[np] = 0;
  snprintf(probe, sizeof probe, "/%s/", rel);
  if (strstr(probe, "/../") || strstr(probe, "/./") || strstr(probe, "//")) goto bad;
  if (farm__write_below(n->workdir, rel, data, nd, 0, 0, why, sizeof why) < 0)
    logf_(n, LOG_ERROR, "cannot write the file %s for the jobs in %s: %s", rel, n->workdir, why);
  else
    logf_(n, LOG_DEBUG, "file %s (%zu bytes) for the jobs", rel, nd);
  return;
bad:
  logf_(n, LOG_WARN, "skipped a file for the jobs with a name that is not a plain relative path: '%.*s'",
        (int)(np < 200 ? np : 200), path);
}

/* SHARE from the client: values and the setup go to our workers; files here. */
static int on_share(node *n, farm_rd *r) {
  uint32_t count = farm__rd_u32le(r);
  for (uint32_t i = 0; i < count && !r->err; i++) {
    int kind = farm__rd_u8(r);
    size_t nn, nb;
    const char *name = farm__rd_str(r, &nn), *b = farm__rd_str(r, &nb);
    if (r->err || kind < FARM_SHARE_VALUE || kind > FARM_SHARE_LIMIT) return FARM_EPROTO;
    if (kind == FARM_SHARE_FILE) put_file(n, name, nn, b, nb);
    else if (farm__engine_share(n->e, kind, name, nn, b, nb) < 0) return FARM_ENOMEM;
  }
  return r->err || farm__rd_left(r) ? FARM_EPROTO : 0;
}

/* Files our jobs sent (farm.send_file) go on to the client, before their results. */
static void forward_files(node *n) {
  farm_sent_file *f = farm__engine_take_files(n->e);
  while (f) {
    farm_sent_file *next = f->next;
    if (n->sealed) {
      farm__msg_begin(&n->out, FARM_MSG_FILE);
      farm__buf_uvar(&n->out, f->ext_id);
      farm__buf_uvar(&n->out, f->dev);
      farm__buf_uvar(&n->out, f->ino);
      farm__buf_str(&n->out, f->path, f->npath);
      farm__buf_str(&n->out, f->data, f->ndata);
      send_out(n);
    }
    free(f);
    f = next;
  }
}

/* ---- sessions ------------------------------------------------------------------------ */

static void drop_job(void *p) { farm__job_unref(p); }
static void drop_fn(void *p) { farm__fn_unref(p); }

static int open_link(node *n, char *err, size_t errlen) {
  /* a port just closed can be busy for a moment */
  for (int i = 0; ; i++) {
    int rc = farm__link_open(&n->link, n->listen, !n->connect, MAX_MESSAGE + (1u << 16), err, errlen);
    if (rc == 0 || i >= 20 || !strstr(err, "in use")) return rc;
    usleep(50000);
  }
}

/* The client's jobs are cancelled and its functions forgotten. */
static void forget_client(node *n, const char *why) {
  logf_(n, LOG_INFO, "session with %s ended: %s", n->who, why);
  n->sealed = 0;
  n->setup_told = 0;
  n->peer_beat = 0;
  n->pend.n = 0;
  n->res.n = 0;
  n->nres = 0;
  map_clear(&n->jobs, drop_job);
  map_clear(&n->fns, drop_fn);
  memset(&n->hs, 0, sizeof n->hs);
  if (n->launched) {               /* the node ends with its only client */
    farm__engine_cancel_all(n->e, 1);
    for (farm_job *j; (j = farm__engine_finished(n->e)); ) farm__job_unref(j);
    return;
  }
  /* A standing node gives the next client fresh workers: nothing one client
     left in a worker's Lua state (library fields it installed, paths, classes,
     modules) is seen by the next. Closing the engine stops the old client's
     jobs with their workers. */
  char err[300];
  close_engine(n);
  if (open_engine(n, err, sizeof err) < 0) {
    logf_(n, LOG_ERROR, "cannot start fresh workers for the next client: %s", err);
    n->stop = 1;
  }
}

static void end_session(node *n, const char *why) {
  if (!n->sealed) return;
  forget_client(n, why);
  /* a new link: the old connection is dropped, the next client can come in */
  farm__link_close(n->link);
  n->link = NULL;
  char err[300];
  if (n->launched) { n->stop = 1; return; }
  if (open_link(n, err, sizeof err) < 0) { logf_(n, LOG_ERROR, "%s", err); n->stop = 1; }
  n->idle_since = farm__now();
}

/* JOBS from the client: each becomes a job of our engine. */
static int on_jobs(node *n, farm_rd *r) {
  int flags = farm__rd_u8(r);
  farm__rd_uvar(r);                          /* the client's pool size: ours counts here */
  uint32_t count = farm__rd_u32le(r);
  if (flags & 1) map_clear(&n->fns, drop_fn);
  for (uint32_t i = 0; i < count && !r->err; i++) {
    uint64_t id = farm__rd_uvar(r);
    uint64_t attempt = farm__rd_uvar(r);
    int mode = farm__rd_u8(r);
    const unsigned char *hash = farm__rd_bytes(r, FARM_HASHLEN);
    int kind = farm__rd_u8(r);
    size_t nfn = 0, nargs = 0;
    const char *fnb = kind != FARM_FN_CACHED ? farm__rd_str(r, &nfn) : NULL;
    const char *args = farm__rd_str(r, &nargs);
    if (r->err || mode > FARM_MODE_MAP || kind > FARM_FN_FRESH || attempt > 65535) return FARM_EPROTO;
    farm_fn *fn = NULL;
    if (kind == FARM_FN_CACHED) {
      fn = map_get(&n->fns, hkey(hash));
      if (!fn || memcmp(fn->hash, hash, FARM_HASHLEN)) return FARM_EPROTO;   /* never sent */
      __atomic_add_fetch(&fn->refs, 1, __ATOMIC_RELAXED);
    } else {
      fn = calloc(1, sizeof *fn);
      if (!fn || !(fn->p = farm__dupmem(fnb, nfn))) { free(fn); return FARM_ENOMEM; }
      memcpy(fn->hash, hash, FARM_HASHLEN);
      fn->n = nfn;
      fn->fresh = kind == FARM_FN_FRESH;
      fn->refs = 1;
      if (kind == FARM_FN_KEEP) {
        farm_fn *old = map_del(&n->fns, hkey(hash));
        if (old) farm__fn_unref(old);
        fn->refs++;
        if (map_put(&n->fns, hkey(hash), fn) < 0) { farm__fn_unref(fn); farm__fn_unref(fn); return FARM_ENOMEM; }
      }
    }
    farm_job *j = farm__job_new();
    if (!j || !(j->args = farm__dupmem(args, nargs))) { farm__fn_unref(fn); free(j); return FARM_ENOMEM; }
    j->nargs = nargs;
    j->fn = fn;
    j->id = farm__engine_nextid(n->e);
    j->ext_id = id;
    j->ext_attempt = (uint16_t)attempt;
    j->mode = (uint8_t)mode;
    j->notify = 1;
    j->refs = 1;                             /* the map's */
    farm_job *old = map_del(&n->jobs, id);   /* the client tries it again: the old try is not wanted */
    if (old) { farm__engine_cancel(n->e, old, 1); farm__job_unref(old); }
    if (map_put(&n->jobs, id, j) < 0) { farm__job_unref(j); return FARM_ENOMEM; }
    farm__engine_submit(n->e, j);
  }
  return r->err ? FARM_EPROTO : 0;
}

/* TAKE: give back the jobs that have not started; TAKEN says which. */
static int on_take(node *n, farm_rd *r) {
  uint32_t count = farm__rd_u32le(r);
  farm_buf ids;
  farm__buf_init(&ids);
  uint32_t given = 0;
  for (uint32_t i = 0; i < count && !r->err; i++) {
    uint64_t id = farm__rd_uvar(r);
    if (r->err) break;
    farm_job *j = map_get(&n->jobs, id);
    if (j && farm__engine_cancel(n->e, j, 0) == 1) { farm__buf_uvar(&ids, id); given++; }
  }
  if (!r->err) {
    farm__msg_begin(&n->out, FARM_MSG_TAKEN);
    farm__buf_put(&n->out, "\0\0\0\0", 4);
    farm__put_u32le_at(&n->out, 4, given);
    farm__buf_put(&n->out, ids.p, ids.n);
    send_out(n);
  }
  farm__buf_free(&ids);
  return r->err ? FARM_EPROTO : 0;
}

static void on_message(node *n, const void *m, size_t len) {
  char err[200];
  if (!n->sealed) {
    /* whose hello: asked now, while its connection is surely up (a client
       refused a moment later may have closed it by the time we log) */
    if (len >= 4 && ((const unsigned char *)m)[3] == FARM_MSG_AUTH1) peer_addr(n, n->hello_from, sizeof n->hello_from);
    int rc = farm__session_node(&n->hs, n->link, n->key, m, len, err, sizeof err);
    if (rc == 1) {
      n->sealed = 1;
      n->sessions++;
      snprintf(n->who, sizeof n->who, "%s", n->hs.who);
      const char *addr = n->hello_from[0] ? n->hello_from : "?";
      logf_(n, LOG_INFO, "client at %s (%s) authenticated; serving it", addr, n->who);
      send_hello(n);
    } else if (rc == FARM_EAUTH) {
      const char *addr = n->hello_from[0] ? n->hello_from : "?";
      n->auth_failed++;
      logf_(n, LOG_WARN, "authentication failed: client at %s (says it is %s) does not know this node's key",
            addr, n->hs.who[0] ? n->hs.who : "?");
    } else if (rc < 0) {
      n->dropped++;
      logf_(n, LOG_WARN, "dropped %zu bytes from an unauthenticated peer: %s", len, err);
    }
    return;
  }
  farm_rd r;
  int type = farm__msg_open(&r, m, len, err, sizeof err);
  int rc = type < 0 ? type : 0;
  switch (type) {
  case FARM_MSG_JOBS: rc = on_jobs(n, &r); break;
  case FARM_MSG_TAKE: rc = on_take(n, &r); break;
  case FARM_MSG_SHARE: rc = on_share(n, &r); break;
  case FARM_MSG_KILL: {
    uint64_t id = farm__rd_uvar(&r);
    farm_job *j = r.err ? NULL : map_get(&n->jobs, id);
    if (j) farm__engine_cancel(n->e, j, 1);
    rc = r.err ? FARM_EPROTO : 0;
    break;
  }
  case FARM_MSG_BEAT:               /* may say the client's heartbeat, in ms */
    if (farm__rd_left(&r)) {
      uint64_t ms = farm__rd_uvar(&r);
      if (!r.err && ms >= 10 && ms <= 3600000) n->peer_beat = ms / 1e3;
    }
    break;
  case FARM_MSG_QUIT: end_session(n, "the client said goodbye"); return;
  default: if (type >= 0) { rc = FARM_EPROTO; snprintf(err, sizeof err, "unexpected message %d", type); }
  }
  if (rc < 0) end_session(n, rc == FARM_ENOMEM ? "out of memory" : err[0] ? err : "a malformed message");
}

static void receive(node *n) {
  for (int k = 0; k < 256 && n->link && !n->stop; k++) {
    void *m;
    size_t len;
    int rc = farm__link_recv(n->link, &m, &len, 1);
    if (rc == FARM_EAGAIN) return;
    if (rc == FARM_EAUTH) {
      size_t k;
      const unsigned char *raw = farm__link_rejected(n->link, &k);
      if (raw && k >= 4 && raw[0] == 'F' && raw[1] == 'm' && raw[3] == FARM_MSG_AUTH1 && !n->launched) {
        /* the client's connection died unnoticed and a new client took its
           place (a PAIR takes one connection at a time): serve the new one */
        unsigned char hello[256];
        memcpy(hello, raw, k);
        forget_client(n, "its connection was replaced by a new client's");
        farm__link_unseal(n->link);
        on_message(n, hello, k);
        continue;
      }
      end_session(n, "a frame did not authenticate (the client went away, or the link was tampered with)");
      return;
    }
    if (rc < 0) { logf_(n, LOG_ERROR, "link failed: %s", farm__link_error()); n->stop = 1; return; }
    on_message(n, m, len);
    farm__link_free(m);
  }
}

/* ---- options ----------------------------------------------------------------------- */

static const char node_usage[] =
  "usage: farm node [--listen ADDR] [-w N] [--key-file F] [--idle-timeout S] [--heartbeat S]\n"
  "                 [--restart-workers] [--pid-file F] [--log-file F] [--log-level L] [--daemon]\n"
  "\n"
  "A standing node: runs the jobs of one client at a time on N local workers.\n"
  "  --listen ADDR     where clients connect (default " DEFAULT_LISTEN ");\n"
  "                    any address but loopback needs a key\n"
  "  -w, --workers N   workers (default: the CPUs this process may use)\n"
  "  --key-file F      the farm key clients must prove they know (default $FARM_KEY_FILE);\n"
  "                    make one with: farm keygen F (it must be readable by you alone)\n"
  "  --idle-timeout S  exit after S seconds with no client\n"
  "  --heartbeat S     seconds between heartbeats (default 1); a client silent for\n"
  "                    5 heartbeats is dropped and its jobs cancelled\n"
  "  --restart-workers a fresh worker process for every job (as ppserver -r): no job\n"
  "                    sees what an earlier one left in its Lua state\n"
  "  --pid-file F      write the node's pid to F (removed at exit)\n"
  "  --log-file F      log there instead of stderr\n"
  "  --log-level L     error, warn, info (default) or debug\n"
  "  --daemon          detach from the terminal (with --log-file, or logs are lost)\n"
  "Signals: SIGUSR1 logs statistics; SIGTERM or SIGINT cancels the client's jobs and exits.\n"
  "A client reaches it with: farm run SCRIPT --hosts node://HOST:PORT --key-file F\n";

static int bad(const char *fmt, const char *a) {
  fputs("farm node: ", stderr);
  fprintf(stderr, fmt, a);
  fputs("\n", stderr);
  return 2;
}

static int loopback(const char *url) {
  const char *h = strstr(url, "://");
  h = h ? h + 3 : url;
  return strncmp(h, "127.", 4) == 0 || strncmp(h, "localhost:", 10) == 0 || strncmp(h, "[::1]:", 6) == 0;
}


static double num(const char *s, int *ok) {
  char *end;
  double v = strtod(s, &end);
  *ok = *s && !*end && v > 0 && v < 1e9;
  return v;
}

/* ---- main ------------------------------------------------------------------------------ */

static void stats_line(node *n) {
  logf_(n, LOG_WARN, "stats: %llu sessions, %llu jobs done, %llu failed, %zu running or queued, "
        "%llu failed authentications, %llu messages dropped, up %.0f s; %s",
        (unsigned long long)n->sessions, (unsigned long long)n->jobs_done,
        (unsigned long long)n->jobs_failed, n->jobs.n, (unsigned long long)n->auth_failed,
        (unsigned long long)n->dropped, farm__now() - n->t0,
        n->sealed ? n->who : "no client");
}

int farm_node_main(int argc, char **argv) {
  node N = { .beat = 1.0, .loglevel = LOG_INFO, .sigfd = -1 };
  node *n = &N;
  const char *keyfile = getenv("FARM_KEY_FILE"), *pidfile = NULL, *logfile = NULL;
  int daemonize = 0, ok = 1, listen_given = 0;
  snprintf(n->listen, sizeof n->listen, "%s", DEFAULT_LISTEN);
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) { fputs(node_usage, stdout); return 0; }
    if (!strcmp(a, "--daemon")) { daemonize = 1; continue; }
    if (!strcmp(a, "--launched")) { n->launched = 1; continue; }
    if (!strcmp(a, "--restart-workers")) { n->restart = 1; continue; }
    if (!strcmp(a, "--connect-back")) { n->connect = 1; continue; }
    if (a[0] != '-') return bad("unexpected argument '%s' (see farm node --help)", a);
    if (strcmp(a, "--listen") && strcmp(a, "-w") && strcmp(a, "--workers") && strcmp(a, "--key-file") &&
        strcmp(a, "--idle-timeout") && strcmp(a, "--heartbeat") && strcmp(a, "--pid-file") &&
        strcmp(a, "--log-file") && strcmp(a, "--log-level"))
      return bad("unknown option '%s' (see farm node --help)", a);
    if (i + 1 >= argc) return bad("%s needs a value (see farm node --help)", a);
    const char *v = argv[++i];
    if (!strcmp(a, "--listen")) {
      const char *colon = strncmp(v, "tcp://", 6) ? NULL : strrchr(v + 6, ':');
      char *end = NULL;
      long port = colon ? strtol(colon + 1, &end, 10) : 0;
      if (!colon || colon == v + 6 || *end || port < 1 || port > 65535 || strlen(v) >= sizeof n->listen)
        return bad("--listen takes tcp://ADDRESS:PORT with a port from 1 to 65535 (e.g. tcp://0.0.0.0:7070), not '%s'", v);
      snprintf(n->listen, sizeof n->listen, "%s", v);
      listen_given = 1;
    } else if (!strcmp(a, "-w") || !strcmp(a, "--workers")) {
      char *end;
      long w = strtol(v, &end, 10);
      if (*end || w < 1 || w > 256) return bad("--workers takes a number from 1 to 256, not '%s'", v);
      n->workers = (int)w;
    } else if (!strcmp(a, "--key-file")) keyfile = v;
    else if (!strcmp(a, "--idle-timeout")) { n->idle_timeout = num(v, &ok); if (!ok) return bad("--idle-timeout takes seconds, not '%s'", v); }
    else if (!strcmp(a, "--heartbeat")) { n->beat = num(v, &ok); if (!ok) return bad("--heartbeat takes seconds, not '%s'", v); }
    else if (!strcmp(a, "--pid-file")) pidfile = v;
    else if (!strcmp(a, "--log-file")) logfile = v;
    else {
      int l = -1;
      for (int k = 0; k < 4; k++) if (!strcmp(v, level_names[k])) l = k;
      if (l < 0) return bad("--log-level takes error, warn, info or debug, not '%s'", v);
      n->loglevel = l;
    }
  }
  if (sodium_init() < 0) return bad("%s", "libsodium failed to start");
  char err[600];
  if (n->launched) {
    /* started over SSH for one run: the key comes on stdin, never on a command line */
    char line[256];
    size_t k = 0;
    while (k + 1 < sizeof line) {
      ssize_t r = read(0, line + k, 1);
      if (r <= 0 || line[k] == '\n') break;
      k++;
    }
    if (farm__key_parse(line, k, n->key) < 0) return bad("%s", "--launched: no key on stdin");
    sodium_memzero(line, sizeof line);
    if (n->connect) {
      /* started by srun in an allocation: the next line lists the port each task
         dials on the host srun was started from */
      char ports[8192];
      k = 0;
      while (k + 1 < sizeof ports) {
        ssize_t r = read(0, ports + k, 1);
        if (r <= 0 || ports[k] == '\n') break;
        k++;
      }
      ports[k] = 0;
      const char *task = getenv("SLURM_PROCID"), *host = getenv("SLURM_LAUNCH_NODE_IPADDR");
      long want = task ? atol(task) : -1, port = -1;
      char *at = strncmp(ports, "PORTS", 5) == 0 ? ports + 5 : NULL;
      for (long i = 0; at && *at && i <= want; i++) {
        char *end;
        long v = strtol(at, &end, 10);
        if (end == at) break;
        if (i == want) port = v;
        at = end;
      }
      if (!host || port <= 0 || port > 65535)
        return bad("%s", "--connect-back: run by farm under srun (SLURM_PROCID, SLURM_LAUNCH_NODE_IPADDR and the ports on stdin)");
      snprintf(n->listen, sizeof n->listen, "tcp://%s:%ld", host, port);
      listen_given = 1;
      const char *cpus = getenv("SLURM_CPUS_ON_NODE");
      if (!n->workers && cpus && atoi(cpus) > 0 && atoi(cpus) <= 256) n->workers = atoi(cpus);
    }
    n->keyed = 1;
    n->loglevel = n->loglevel == LOG_INFO ? LOG_WARN : n->loglevel;
    const char *conn = getenv("SSH_CONNECTION");      /* "client port server port" */
    char addr[64] = "0.0.0.0";
    if (conn) sscanf(conn, "%*s %*s %63s", addr);
    if (!strchr(addr, '.')) snprintf(addr, sizeof addr, "0.0.0.0");
    if (!listen_given) {
      int port = farm__free_port(addr);
      if (port < 0) return bad("cannot find a free port on %s", addr);
      snprintf(n->listen, sizeof n->listen, "tcp://%s:%d", addr, port);
    }
  } else if (keyfile && *keyfile) {
    if (farm__key_load(keyfile, n->key, err, sizeof err) < 0) return bad("%s", err);
    n->keyed = 1;
  }
  if (!n->keyed && !n->connect && !loopback(n->listen)) {
    fprintf(stderr, "farm node: refusing to listen on %s without a key: anyone who reaches it could "
            "run code here; pass --key-file F (make one with: farm keygen F)\n", n->listen);
    return 2;
  }
  if (logfile && !(n->log = fopen(logfile, "a"))) return bad("cannot open log file '%s'", logfile);
  if (open_link(n, err, sizeof err) < 0) {
    if (strstr(err, "in use")) fprintf(stderr, "farm node: %s (another node there? pick another port with --listen)\n", err);
    else if (strstr(err, "No such device"))
      fprintf(stderr, "farm node: %s (the address must be one of this host's IP addresses, or 0.0.0.0)\n", err);
    else fprintf(stderr, "farm node: %s\n", err);
    if (n->log) fclose(n->log);
    return 1;
  }
  char pidpath[4096];
  if (pidfile && pidfile[0] != '/') {           /* a daemon works from / */
    char cwd[3000];
    if (!getcwd(cwd, sizeof cwd)) return bad("cannot tell the current directory for '%s'", pidfile);
    snprintf(pidpath, sizeof pidpath, "%s/%s", cwd, pidfile);
    pidfile = pidpath;
  }
  if (daemonize) {
    farm__link_close(n->link);                  /* nanomsg's threads do not survive fork */
    n->link = NULL;
    if (daemon(0, 0) < 0) return bad("cannot become a daemon: %s", strerror(errno));
    if (open_link(n, err, sizeof err) < 0) { logf_(n, LOG_ERROR, "%s", err); return 1; }
  }
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGUSR1);
  sigaddset(&sigs, SIGHUP);
  sigaddset(&sigs, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &sigs, NULL);
  n->sigfd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
  sweep_workdirs();
  if (open_engine(n, err, sizeof err) < 0) {
    logf_(n, LOG_ERROR, "%s", err);
    close_engine(n);
    farm__link_close(n->link);
    return 1;
  }
  if (pidfile) {
    FILE *f = fopen(pidfile, "w");
    if (!f) logf_(n, LOG_ERROR, "cannot write pid file '%s': %s", pidfile, strerror(errno));
    else { fprintf(f, "%ld\n", (long)getpid()); fclose(f); }
  }
  farm__buf_init(&n->out);
  farm__buf_init(&n->pend);
  farm__buf_init(&n->res);
  n->t0 = n->idle_since = farm__now();
  if (n->launched && !n->connect) {
    const char *port = strrchr(n->listen, ':');
    printf("FARM-NODE %d %s\n", FARM_PROTOCOL, port ? port + 1 : "0");
    fflush(stdout);
  } else if (!n->launched) {
    logf_(n, LOG_INFO, "listening on %s with %d workers%s", n->listen, farm__engine_workers(n->e),
          n->keyed ? "" : " (no key: any local user can connect)");
  }
  while (!n->stop) {
    uint64_t gen = farm__engine_gen(n->e);
    receive(n);
    if (n->stop) break;
    char why[400];
    if (n->sealed && !n->setup_told && farm__engine_setup_failed(n->e, why, sizeof why)) {
      /* the node is out of the client's run: the client takes its jobs back */
      logf_(n, LOG_WARN, "%s; telling the client", why);
      farm__msg_begin(&n->out, FARM_MSG_SETUPFAIL);
      farm__buf_str(&n->out, why, strlen(why));
      send_out(n);
      n->setup_told = 1;
    }
    send_results(n);
    double now = farm__now();
    if (n->sealed) {
      double last = farm__link_last_recv(n->link);
      double beat = n->peer_beat > n->beat ? n->peer_beat : n->beat;
      if (last > 0 && now - last > LOST_BEATS * beat) {
        char why[100];
        snprintf(why, sizeof why, "no word from it for %.1f s", now - last);
        end_session(n, why);
        continue;
      }
      if (now - n->last_sent >= n->beat) {
        farm__msg_begin(&n->out, FARM_MSG_BEAT);
        send_out(n);
      }
    } else if (n->idle_timeout > 0 && now - n->idle_since > n->idle_timeout) {
      logf_(n, LOG_INFO, "no client for %g s: exiting", n->idle_timeout);
      break;
    }
    int backed = n->pend.n || farm__link_held(n->link);
    if (backed && flush_pend(n) == 0) backed = 0;
    struct pollfd fds[4] = {
      { .fd = farm__link_rcvfd(n->link), .events = POLLIN },
      { .fd = n->sigfd, .events = POLLIN },
      { .fd = n->launched ? 0 : -1, .events = POLLIN },
      { .fd = backed ? farm__link_sndfd(n->link) : -1, .events = POLLIN },
    };
    double wait = n->beat / 4 < 0.25 ? n->beat / 4 : 0.25;
    if (n->nres) wait = RESULTS_WAIT;            /* results wait for company this long at most */
    int rc = farm__engine_wait_fds(n->e, gen, wait, fds, 4);
    if (rc == 2 && fds[1].revents) {
      struct signalfd_siginfo si;
      while (read(n->sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo == SIGUSR1) stats_line(n);
        else if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT || si.ssi_signo == SIGHUP) {
          logf_(n, LOG_INFO, "%s: stopping", strsignal((int)si.ssi_signo));
          n->stop = 1;
        }
      }
    }
    if (rc == 2 && fds[2].revents) {
      /* the SSH channel closed: the client is gone (sshd does not kill us) */
      char c;
      if (read(0, &c, 1) <= 0) {
        logf_(n, LOG_INFO, "stdin closed: the client is gone");
        n->stop = 1;
        end_session(n, "its SSH connection closed");
      }
    }
  }
  if (n->sealed && n->link) {                   /* the client takes back what did not finish */
    send_results(n);
    flush_results(n);
    farm__msg_begin(&n->out, FARM_MSG_QUIT);
    send_out(n);
    for (double until = farm__now() + 1; (n->pend.n || farm__link_held(n->link)) && flush_pend(n) == FARM_EAGAIN &&
         farm__now() < until; ) usleep(5000);
    usleep(100000);                               /* nanomsg sends it after we close: let it go */
    end_session(n, "the node is stopping");
  }
  map_clear(&n->jobs, drop_job);
  map_clear(&n->fns, drop_fn);
  close_engine(n);
  farm__link_close(n->link);
  farm__buf_free(&n->out);
  farm__buf_free(&n->pend);
  farm__buf_free(&n->res);
  if (n->sigfd >= 0) close(n->sigfd);
  sodium_memzero(n->key, sizeof n->key);
  if (pidfile) unlink(pidfile);
  if (n->log) fclose(n->log);
  return 0;
}
