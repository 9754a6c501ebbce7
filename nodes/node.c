/*
 * node.c -- `farm node`: a standing node (ppserver, dispynode), or one started
 * over SSH for a single run (`--launched`), or by srun inside an allocation
 * (`--connect-back`).
 *
 * A node is the client's engine turned around: it runs the jobs a client sends
 * on its own local workers, through an engine of its own. To the client it is
 * one peer whose capacity is its workers: it answers JOBS with RESULTS, TAKE
 * with TAKEN, KILL by stopping that job, and sends a BEAT whenever it has said
 * nothing for a heartbeat. Jobs that the node's jobs submit (nested jobs) run
 * on this node's workers.
 *
 * Two processes make a node (DESIGN.md, "three walls"):
 *
 * - The lobby (this process, `lobby_main`) listens where clients connect, with
 *   a nanomsg REP socket (session.h): it answers each hello on the connection
 *   it came from, so strangers connected to it, idle or flooding, hold no
 *   honest client off; a message there is at most FARM_LOBBY_MAXMSG bytes;
 *   connections that have not finished a handshake within FARM_LOBBY_DEADLINE
 *   seconds are dropped (nanomsg cannot drop one connection: the lobby finds
 *   its socket among its own descriptors and shuts it down), and no more than
 *   LOBBY_CAP are held at once. It runs no job and decodes nothing.
 *
 * - A session process (`session_main`, `farm node --session`, exec'd afresh so
 *   no nanomsg state crosses a fork) for each client that proved it knows the
 *   key: a PAIR link of its own on a port of its own, its own engine and
 *   workers, its own jobs' directory. It is a child subreaper: whatever its
 *   client's jobs start, even with setsid, stays below it and is killed when
 *   the client goes, with the directory. The lobby shares the node's workers
 *   between the sessions (each session with jobs gets an even share; one with
 *   none keeps one worker) and tells each how many clients the node serves.
 *
 * A standing node may also make itself known (announce.h): with --join
 * HOST:PORT its lobby sends its signed address to a run listening there
 * (`farm run --listen`), with --announce IFACE it broadcasts it on that
 * interface (`farm run --discover`); the run then says hello at the lobby as
 * any client does. The lobby's loop sends them when due (farm_announcer,
 * non-blocking sends), between its looks at connections and kids, so the
 * lobby's deadlines and caps are as they were.
 *
 * A node started by srun dials its client (--connect-back) and serves it in
 * one process, with the PAIR handshake (session.h): its client listens, and
 * holds that listener against strangers itself (peer_node.c).
 *
 * Threads: a lobby and a session are each one main thread (a session's
 * engine runs its loop thread besides, engine.c); the lobby's processes
 * start afresh by exec, never by a bare fork (nanomsg's threads).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sodium.h>
#include "farm.h"
#include "announce.h"
#include "clock.h"
#include "engine.h"
#include "files.h"
#include "hash.h"
#include "join.h"
#include "pool.h"
#include "proto.h"
#include "session.h"
#include "status.h"
#include "transport.h"
#include "cli.h"

#define DEFAULT_LISTEN "tcp://127.0.0.1:7070"
#define LOST_BEATS 5.0
#define MAX_MESSAGE (256u << 20)
#define RESULTS_WAIT 0.0005        /* a result waits this long for others to go with it */
#define RESULTS_BATCH 512
#define RESULTS_BYTES (4u << 20)
#define LOBBY_CAP 64               /* connections held before a handshake, at most */
#define LOBBY_SCAN 0.25            /* seconds between looks at the lobby's connections */
#define LOG_EVERY 60.0             /* a stranger's address is logged once a minute */
#define CTL_FD 3                   /* a session's control socket to its lobby */

enum { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };
static const char *level_names[] = { "error", "warn", "info", "debug" };

typedef struct logger { FILE *f; int level; } logger;

/* What a lobby hands the session process it starts, over CTL_FD, in two
   messages (the same executable reads them, so the layout is shared): how to
   run, at once, so that it starts its workers before any client comes (a warm
   spare); then, when a client has proved the key, who it serves. */
typedef struct session_args {
  int workers, total, restart, loglevel;
  double beat;
} session_args;
typedef struct session_client {
  farm_lobby_client acc;           /* the client's keys and its word for itself */
  char host[256];                  /* where its link listens: the session picks a port
                                      there, binds it, and tells the lobby "P port" */
  int clients;                     /* the clients the node serves, this one included */
} session_client;

/* One client's session (in a session process, or a --connect-back node). */
typedef struct node {
  farm_engine *e;
  farm_link *link;
  char listen[300];
  unsigned char key[FARM_KEYLEN];
  int keyed, launched, workers, restart;
  int connect;                     /* --connect-back: we dial the client (srun) */
  int lobbied;                     /* a session process: the lobby did the handshake */
  logger lg;
  double beat, last_sent, t0;
  double peer_beat;                /* the client's heartbeat (from its BEATs) */
  int sealed;                      /* the client is in session */
  farm_hs hs;                      /* (--connect-back: the handshake on the link) */
  char who[160];
  farm_hash jobs;                  /* client's id -> farm_job (ours, until over) */
  farm_hash fns;                   /* function hash -> farm_fn */
  farm_buf out;
  farm_buf times;                  /* ...and their times (proto.h RESULTS) */
  farm_buf res;                    /* the RESULTS waiting to go (nres entries, */
  uint32_t nres;                   /* ...the first since res_since) */
  double res_since;
  farm_buf pend;                   /* whole messages waiting for the link (length first) */
  int sigfd;
  int stop, status;                /* status: the process's exit status once stopped */
  uint64_t jobs_done, jobs_failed;
  char workdir[PATH_MAX];          /* the jobs' directory, one per client: files land here */
  int setup_told;                  /* the client heard that a worker's setup failed */
  int ctl;                         /* a session's socket to its lobby (-1: none) */
  int total, clients;              /* the node's workers, and the clients it serves */
  int told_active;                 /* what the lobby last heard: has jobs, */
  uint64_t told_done;              /* ...and jobs done, */
  double told_at;                  /* ...when (the counts go at most twice a second) */
  double idle_at;                  /* when it last had no jobs (0: it has some) */
  char stranger[96];               /* the last stranger on our own link, logged once */
  struct procfds *pf;              /* (for a look at who is connected) */
} node;

/* ---- log ------------------------------------------------------------------------- */

static void logf_(logger *lg, int level, const char *fmt, ...) {
  if (level > lg->level) return;
  char when[32];
  time_t t = time(NULL);
  struct tm tm;
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", localtime_r(&t, &tm));
  FILE *f = lg->f ? lg->f : stderr;
  fprintf(f, "%s farm node[%ld] %s: ", when, (long)getpid(), level_names[level]);
  va_list ap;
  va_start(ap, fmt);
  vfprintf(f, fmt, ap);
  va_end(ap);
  fputc('\n', f);
  fflush(f);
}

/* ---- maps (hash.h) ---------------------------------------------------------------- */

/* Drop every value and empty the map. */
static void map_clear(farm_hash *m, void (*drop)(void *)) {
  void *v;
  for (size_t i = 0; (i = farm__hash_next(m, i, NULL, &v)); ) drop(v);
  farm__hash_free(m);
}

static uint64_t hkey(const unsigned char *h) { uint64_t k; memcpy(&k, h, 8); return k; }

/* ---- sending ----------------------------------------------------------------------- */

/* Messages the link could not take yet go out in order when it can: the node
   never blocks on a client (one that vanished is dropped by the heartbeat). */
static int flush_pend(node *n) { return farm__link_flush_queued(n->link, &n->pend); }

static int send_msg(node *n, const farm_buf *b) {
  n->last_sent = farm__now();
  return farm__link_send_queued(n->link, &n->pend, b->p, b->n);
}

static int send_out(node *n) { return send_msg(n, &n->out); }

static void send_hello(node *n) {
  farm_msg_hello m = { .pid = (uint64_t)getpid(), .slot = 0,
                       .capacity = (uint64_t)(n->total ? n->total : farm__engine_workers(n->e)),
                       .beat_ms = (uint64_t)(n->beat * 1e3),   /* our heartbeat, in ms */
                       .clients = (uint64_t)(n->clients > 0 ? n->clients : 1) };
  farm__proto_put_hello(&n->out, &m);
  send_out(n);
}

/* Every finished job's result, in one RESULTS message (or several, for size). */
/* Finished jobs' results go out in RESULTS messages. While more of the
   client's jobs run here, a message waits a moment (RESULTS_WAIT) for others to
   join it: one message per result would cost a sealed frame and a wake-up of
   the client each. The last result of a burst goes at once. */
static void flush_results(node *n) {
  if (!n->nres) return;
  farm__proto_put_times(&n->res, farm__now(), &n->times);   /* (res is the message itself) */
  farm__proto_count(&n->res, n->nres);
  send_msg(n, &n->res);
  n->times.n = 0;
  n->res.n = 0;
  n->nres = 0;
}

/* The client's jobs that began here since the last time: STARTED, so that they
   say "running" there. Before the results: a job that began and ended since
   is then seen running for a moment, never after it ended (the client drops
   what is no longer out). */
static void send_started(node *n) {
  uint64_t ids[512];
  size_t k;
  while ((k = farm__engine_take_started(n->e, ids, 512)) > 0) {
    if (!n->sealed) continue;                  /* nobody to tell */
    farm__proto_put_ids(&n->out, FARM_MSG_STARTED, ids, (uint32_t)k);
    send_out(n);
  }
}

static void forward_files(node *n);
static void send_results(node *n) {
  farm_job *j;
  send_started(n);
  forward_files(n);                /* files and provisional results, as they come */
  while ((j = farm__engine_finished(n->e))) {
    forward_files(n);              /* what it sent came before it finished: it goes first */
    int st = farm__job_state(j);
    farm_jobx *jx = farm__jx(j);   /* (over: it has its block) */
    farm_job *mine = farm__hash_get(&n->jobs, jx->ext_id);
    if (mine == j) {                           /* (not a newer try of that id) */
      farm__hash_del(&n->jobs, jx->ext_id);
      farm__job_unref(mine);                   /* the map's reference */
    }
    if (!n->sealed || st == JOB_CANCELLED) { farm__job_unref(j); continue; }   /* nobody wants it */
    if (!n->nres) {
      n->res_since = farm__now();
      farm__proto_put_list(&n->res, FARM_MSG_RESULTS);
    }
    farm_buf *b = &n->res;
    /* when it ran, on our clock (as our worker told; else as we saw it) */
    double to = jx->ran_to > 0 ? jx->ran_to : jx->ended;
    double from = jx->ran_to > 0 ? jx->ran_from : jx->ended - jx->busy;
    farm__proto_put_time(&n->times, from > 0 ? from : 0, to > from ? to : from > 0 ? from : 0);
    farm_msg_result m = { .id = jx->ext_id, .attempt = jx->ext_attempt,
                          .status = st == JOB_DONE ? FARM_JOB_OK : FARM_JOB_ERROR, .busy = jx->busy,
                          .out = jx->out.p, .nout = jx->out.n, .block = jx->res, .nblock = jx->nres,
                          .tb = jx->tb, .ntb = jx->ntb, .val = jx->val, .nval = jx->val ? jx->nval : 0 };
    farm__proto_put_result(b, &m);
    if (st != JOB_DONE) n->jobs_failed++;
    else n->jobs_done++;
    n->nres++;
    farm__job_unref(j);
    if (b->n > RESULTS_BYTES) flush_results(n);
  }
  if (n->nres && (!n->jobs.n || n->nres >= RESULTS_BATCH || farm__now() - n->res_since >= RESULTS_WAIT))
    flush_results(n);
}


/* ---- connections on a port of ours ------------------------------------------------ */

/* nanomsg does not say who is connected, nor drop one connection alone. The
   kernel does: the established TCP connections to a local port, whose sockets
   are among this process's descriptors (a session's link, or the lobby's). */
typedef struct conn { unsigned long inode; int fd; char addr[64]; } conn;

/* The descriptors a look at our connections reads through: opened once and
   kept, because a stranger's flood may leave none free when we need to look. */
typedef struct procfds { int dir, tcp; } procfds;   /* (its tag is named in node) */

static void procfds_open(procfds *pf) {
  pf->dir = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  pf->tcp = open("/proc/self/net/tcp", O_RDONLY | O_CLOEXEC);
}
static void procfds_close(procfds *pf) {
  if (pf->dir >= 0) close(pf->dir);
  if (pf->tcp >= 0) close(pf->tcp);
  pf->dir = pf->tcp = -1;
}

static int scan_conns(const procfds *pf, unsigned port, conn *out, int max) {
  unsigned long *ino = NULL;
  int *fds = NULL, nfd = 0, cap = 0, n = 0;
  char dents[8192];
  ssize_t got;
  lseek(pf->dir, 0, SEEK_SET);
  while (pf->dir >= 0 && (got = getdents64(pf->dir, dents, sizeof dents)) > 0) {
    for (ssize_t at = 0; at < got; ) {
      struct dirent64 *de = (struct dirent64 *)(dents + at);
      at += de->d_reclen;
      char path[64], link[64];
      snprintf(path, sizeof path, "/proc/self/fd/%.20s", de->d_name);
      ssize_t k = readlink(path, link, sizeof link - 1);
      unsigned long i;
      if (k <= 0) continue;
      link[k] = 0;
      if (sscanf(link, "socket:[%lu]", &i) != 1) continue;
      if (nfd == cap) {
        cap = cap ? 2 * cap : 256;
        unsigned long *a = realloc(ino, (size_t)cap * sizeof *a);
        if (a) ino = a;
        int *b = a ? realloc(fds, (size_t)cap * sizeof *b) : NULL;
        if (!b) { got = 0; break; }
        fds = b;
      }
      ino[nfd] = i;
      fds[nfd++] = atoi(de->d_name);
    }
  }
  /* the table of TCP sockets, read whole from its start through the kept descriptor */
  farm_buf t;
  farm__buf_init(&t);
  for (off_t off = 0; pf->tcp >= 0 && farm__buf_reserve(&t, 65536) == 0; off += got) {
    got = pread(pf->tcp, t.p + t.n, 65536, off);
    if (got <= 0) break;
    t.n += (size_t)got;
  }
  for (size_t at = 0; at < t.n && n < max; ) {
    char *line = t.p + at, *end = memchr(line, '\n', t.n - at);
    if (!end) break;
    *end = 0;
    at = (size_t)(end - t.p) + 1;
    unsigned lport, raddr, rport, st;
    unsigned long inode;
    if (sscanf(line, " %*d: %*8X:%4X %8X:%4X %2X %*s %*s %*s %*s %*s %lu", &lport, &raddr, &rport, &st, &inode) != 5 ||
        lport != port || (st != 1 && st != 8) || !inode)   /* established, or closed by it just now */
      continue;
    for (int i = 0; i < nfd; i++) {
      if (ino[i] != inode) continue;
      struct in_addr a = { .s_addr = raddr };
      char ip[INET_ADDRSTRLEN];
      inet_ntop(AF_INET, &a, ip, sizeof ip);
      out[n].inode = inode;
      out[n].fd = fds[i];
      snprintf(out[n].addr, sizeof out[n].addr, "%s:%u", ip, rport);
      n++;
      break;
    }
  }
  farm__buf_free(&t);
  free(ino);
  free(fds);
  return n;
}

/* Drop one connection under nanomsg's feet: it sees the end of the stream and
   closes that connection alone. The descriptor is checked to be that socket
   still (nanomsg may have closed it and reused the number meanwhile). */
static int drop_conn(const conn *c) {
  struct stat st;
  if (fstat(c->fd, &st) < 0 || !S_ISSOCK(st.st_mode) || (unsigned long)st.st_ino != c->inode) return -1;
  return shutdown(c->fd, SHUT_RDWR);
}

static unsigned port_of(const char *url) {
  const char *colon = strrchr(url, ':');
  return colon ? (unsigned)atoi(colon + 1) : 0;
}

/* The address of the peer on our port ("?" if none, "one of N" if several). */
static void peer_addr(const procfds *pf, unsigned port, char *out, size_t len) {
  conn c[8];
  int k = scan_conns(pf, port, c, 8);
  if (k == 1) snprintf(out, len, "%s", c[0].addr);
  else if (k > 1) snprintf(out, len, "%s (one of %d connected)", c[k - 1].addr, k);
  else snprintf(out, len, "?");
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

/* A session's jobs' directory, hidden from the node's other sessions: in a
   mount namespace of the session's own, the directory holds (bind mount) a
   directory kept under the lobby's `-d` directory, and that one is covered by
   an empty tmpfs, so no process of another client's, which sees neither
   mount, finds this client's files by any path; and none of ours finds
   theirs. Needs CAP_SYS_ADMIN (a node run as root); else -1 and the directory
   is plain (README, security model). */
static int hide_workdir(const char *data, const char *work, const char *parent) {
  if (unshare(CLONE_NEWNS) < 0) return -1;
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) return -1;
  if (mount(data, work, NULL, MS_BIND, NULL) < 0) return -1;
  if (mount("tmpfs", parent, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=0") < 0) {
    umount2(work, MNT_DETACH);
    return -1;
  }
  return 0;
}

/* Each client's jobs run in a directory of their own (files shipped to them
   land there, and what they leave goes with the client): the workers start in
   it, so the node works from it while that engine lives. */
static int open_engine(node *n, char *err, size_t errlen) {
  const char *tmp = getenv("TMPDIR");
  if (!tmp || !*tmp) tmp = "/tmp";
  char who[64];                    /* a session's: its lobby's pid, then its own */
  if (n->lobbied) snprintf(who, sizeof who, "%ld-%ld", (long)getppid(), (long)getpid());
  else snprintf(who, sizeof who, "%ld", (long)getpid());
  snprintf(n->workdir, sizeof n->workdir, "%s/farm-node-%s-XXXXXX", tmp, who);
  if (!mkdtemp(n->workdir)) {
    snprintf(err, errlen, "cannot make the jobs' directory %.300s: %s", n->workdir, strerror(errno));
    n->workdir[0] = 0;
    return -1;
  }
  if (n->lobbied) {
    char parent[PATH_MAX], data[PATH_MAX];
    snprintf(parent, sizeof parent, "%s/farm-node-%ld-d", tmp, (long)getppid());
    int k = snprintf(data, sizeof data, "%s/%ld-XXXXXX", parent, (long)getpid());
    if (k > 0 && (size_t)k < sizeof data && (mkdir(parent, 0700) == 0 || errno == EEXIST) && mkdtemp(data)) {
      if (hide_workdir(data, n->workdir, parent) < 0) {
        logf_(&n->lg, LOG_DEBUG, "the jobs' directory of %s is not hidden from other clients' jobs: %s",
              n->who, strerror(errno));
        rmdir(data);
      }
    }
  }
  if (chdir(n->workdir) < 0) {
    snprintf(err, errlen, "cannot work in the jobs' directory %.300s: %s", n->workdir, strerror(errno));
    return -1;
  }
  farm_engine_opts o = { .workers = n->workers, .maxmsg = MAX_MESSAGE, .restart_workers = n->restart,
                         .keep_files = 1, .report_starts = 1 };
  return farm__engine_open(&n->e, &o, err, errlen);
}

static void kill_tree(logger *lg);
static void close_engine(node *n) {
  if (n->e) {
    farm__engine_close(n->e);
    farm__engine_free(n->e);
    n->e = NULL;
  }
  kill_tree(&n->lg);               /* what the jobs started goes before their directory */
  if (n->workdir[0]) {
    if (chdir("/") < 0) { /* nothing else to stand on */ }
    nftw(n->workdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    n->workdir[0] = 0;
  }
}

/* A file the client ships for its jobs, at its path below the jobs' directory
   (the client sends only plain relative paths; another is logged and skipped:
   the job that needs it will say so). */
static void put_file(node *n, const char *path, size_t np, const char *data, size_t nd, unsigned xbits) {
  char rel[PATH_MAX], probe[PATH_MAX + 2], why[300];
  /* !np and path[0] == '/' are redundant: the probe below ("/" rel "/") holds
     "//" for both. They stay, as the plain words of the rule; spec/mutants.txt
     leaves them out (no test can tell a mutant without them). */
  if (!np || np >= sizeof rel || memchr(path, 0, np) || path[0] == '/') goto bad;
  memcpy(rel, path, np);
  rel[np] = 0;
  snprintf(probe, sizeof probe, "/%s/", rel);
  if (strstr(probe, "/../") || strstr(probe, "/./") || strstr(probe, "//")) goto bad;
  if (farm__write_below(n->workdir, rel, data, nd, 0, 0, xbits & 0111, why, sizeof why) < 0)
    logf_(&n->lg, LOG_ERROR, "cannot write the file %s for the jobs in %s: %s", rel, n->workdir, why);
  else
    logf_(&n->lg, LOG_DEBUG, "file %s (%zu bytes) for the jobs", rel, nd);
  return;
bad:
  logf_(&n->lg, LOG_WARN, "skipped a file for the jobs with a name that is not a plain relative path: '%.*s'",
        (int)(np < 200 ? np : 200), path);
}

/* SHARE from the client: values and the setup go to our workers; files here. */
static int on_share(node *n, farm_rd *r, char *err, size_t errlen) {
  uint32_t count;
  farm__proto_get_list(r, &count, err, errlen);
  for (uint32_t i = 0; i < count && !r->err; i++) {
    farm_msg_share x;
    if (farm__proto_get_share(r, &x, err, errlen) < 0) return FARM_EPROTO;
    if (x.kind == FARM_SHARE_FILE) put_file(n, x.name, x.nname, x.block, x.nblock, 0);
    else if (x.kind == FARM_SHARE_XFILE) put_file(n, x.name, x.nname, x.block, x.nblock, x.xbits & 0111);
    else if (farm__engine_share(n->e, x.kind, x.name, x.nname, x.block, x.nblock) < 0) return FARM_ENOMEM;
  }
  return farm__proto_end(r, "SHARE", err, errlen);
}

/* Files our jobs sent (farm.send_file) go on to the client, before their results. */
static void forward_files(node *n) {
  farm_sent_file *f = farm__engine_take_files(n->e);
  while (f) {
    farm_sent_file *next = f->next;
    if (n->sealed && f->partial) {   /* a provisional result (farm.provide), in its turn */
      farm__proto_put_partial(&n->out, f->ext_id, f->data, f->ndata);
      send_out(n);
    } else if (n->sealed) {
      farm_msg_file m = { .id = f->ext_id, .dev = f->dev, .ino = f->ino, .path = f->path, .npath = f->npath,
                          .data = f->data, .ndata = f->ndata };
      farm__proto_put_file(&n->out, &m);
      send_out(n);
    }
    free(f);
    f = next;
  }
}


/* ---- the session ------------------------------------------------------------------- */

static void drop_job(void *p) { farm__job_unref(p); }
static void drop_fn(void *p) { farm__fn_unref(p); }

static int open_link(node *n, size_t maxmsg, char *err, size_t errlen) {
  /* a port just closed can be busy for a moment */
  for (int i = 0; ; i++) {
    int rc = farm__link_open(&n->link, n->listen, !n->connect, maxmsg, err, errlen);
    if (rc == 0 || i >= 20 || !strstr(err, "in use")) return rc;
    usleep(50000);
  }
}

/* The client is gone, or going: its jobs are stopped, and the session with it
   (a session process ends with its client; so does a node srun started). */
static void end_session(node *n, const char *why) {
  if (!n->stop && n->sealed) logf_(&n->lg, LOG_INFO, "session with %s ended: %s", n->who, why);
  n->sealed = 0;
  n->stop = 1;
  if (n->e) {
    farm__engine_cancel_all(n->e, 1);
    for (farm_job *j; (j = farm__engine_finished(n->e)); ) farm__job_unref(j);
  }
}

/* Our client spoke, under the session's keys: serve it. */
static void start_session(node *n, const char *who) {
  n->sealed = 1;
  if (who != n->who) snprintf(n->who, sizeof n->who, "%s", who);
  char addr[96];
  peer_addr(n->pf, port_of(n->listen), addr, sizeof addr);
  logf_(&n->lg, LOG_INFO, "client at %s (%s) authenticated; serving it", addr, n->who);
  /* the handshake is over: from now on a frame may be as large as a job's */
  farm__link_maxmsg(n->link, MAX_MESSAGE + (1u << 16));
  send_hello(n);
}

/* Every process our client's jobs started is below us (we are a child
   subreaper: an orphan of theirs, even one that called setsid, becomes ours):
   kill them all, children first, until none is left. */
static void kill_tree(logger *lg) {
  pid_t me = getpid();
  int killed = 0;
  for (int round = 0; round < 100; round++) {
    int found = 0;
    DIR *d = opendir("/proc");
    struct dirent *de;
    while (d && (de = readdir(d))) {
      char path[64], buf[512];
      long pid = atol(de->d_name);
      if (pid <= 0) continue;
      snprintf(path, sizeof path, "/proc/%ld/stat", pid);
      FILE *f = fopen(path, "r");
      if (!f) continue;
      size_t k = fread(buf, 1, sizeof buf - 1, f);
      fclose(f);
      buf[k] = 0;
      char *rp = strrchr(buf, ')');           /* the name may hold spaces and parentheses */
      long ppid = 0;
      char state = 0;
      if (!rp || sscanf(rp + 1, " %c %ld", &state, &ppid) != 2 || ppid != me) continue;
      if (state == 'Z') continue;             /* gone already: reaped below */
      kill((pid_t)pid, SIGKILL);
      found++;
    }
    if (d) closedir(d);
    while (waitpid(-1, NULL, WNOHANG) > 0) {}
    if (!found) break;
    killed += found;
    usleep(10000);
  }
  if (killed) logf_(lg, LOG_INFO, "stopped %d process%s the client's jobs had left running", killed,
                    killed == 1 ? "" : "es");
}

/* JOBS from the client: each becomes a job of our engine. */
static int on_jobs(node *n, farm_rd *r, char *err, size_t errlen) {
  farm_msg_jobs h;                           /* (the client's pool size: ours counts here) */
  farm__proto_get_jobs(r, &h, err, errlen);
  uint32_t count = h.count;
  if (h.forget) map_clear(&n->fns, drop_fn);
  for (uint32_t i = 0; i < count && !r->err; i++) {
    farm_msg_job m;
    if (farm__proto_get_job(r, &m, err, errlen) < 0) return FARM_EPROTO;
    if (m.attempt > 65535) { snprintf(err, errlen, "malformed message: a job tried %llu times",
                                      (unsigned long long)m.attempt); return FARM_EPROTO; }
    if (m.shm) {                             /* shared memory is for a client's own workers */
      snprintf(err, errlen, "malformed message: a job whose arguments are in shared memory");
      return FARM_EPROTO;
    }
    uint64_t id = m.id, attempt = m.attempt;
    int mode = m.mode, kind = m.fn;
    const unsigned char *hash = m.hash;
    size_t nfn = m.nfn, nargs = m.nargs;
    const char *fnb = m.fnb, *args = m.args;
    farm_fn *fn = NULL;
    if (kind == FARM_FN_CACHED) {
      fn = farm__hash_get(&n->fns, hkey(hash));
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
        farm_fn *old = farm__hash_del(&n->fns, hkey(hash));
        if (old) farm__fn_unref(old);
        fn->refs++;
        if (farm__hash_put(&n->fns, hkey(hash), fn) < 0) { farm__fn_unref(fn); farm__fn_unref(fn); return FARM_ENOMEM; }
      }
    }
    farm_job *j = farm__job_new_args(args, nargs);
    if (!j) { farm__fn_unref(fn); return FARM_ENOMEM; }
    j->fn = fn;
    j->id = farm__engine_nextid(n->e);
    farm__jx(j)->ext_id = id;
    farm__jx(j)->ext_attempt = (uint16_t)attempt;
    j->max_retries = (uint16_t)m.retries;   /* the client's, not our default */
    j->mode = (uint8_t)mode;
    j->notify = 1;
    j->refs = 1;                             /* the map's */
    farm_job *old = farm__hash_del(&n->jobs, id);   /* the client tries it again: the old try is not wanted */
    if (old) { farm__engine_cancel(n->e, old, 1); farm__job_unref(old); }
    if (farm__hash_put(&n->jobs, id, j) < 0) { farm__job_unref(j); return FARM_ENOMEM; }
    farm__engine_submit(n->e, j);
  }
  return r->err ? FARM_EPROTO : 0;
}

/* TAKE: give back the jobs that have not started; TAKEN says which. */
static int on_take(node *n, farm_rd *r, char *err, size_t errlen) {
  uint32_t count;
  farm__proto_get_list(r, &count, err, errlen);
  /* TAKEN is written as the TAKE is read (n->out is ours until send_out), and
     sent only when the TAKE read whole */
  farm__proto_put_list(&n->out, FARM_MSG_TAKEN);
  uint32_t given = 0;
  for (uint32_t i = 0; i < count && !r->err; i++) {
    uint64_t id;
    if (farm__proto_get_id(r, &id, err, errlen) < 0) break;
    farm_job *j = farm__hash_get(&n->jobs, id);
    if (j && farm__engine_cancel(n->e, j, 0) == 1) { farm__proto_put_id(&n->out, id); given++; }
  }
  if (!r->err) {
    farm__proto_count(&n->out, given);
    send_out(n);
  }
  return r->err ? FARM_EPROTO : 0;
}


static void on_message(node *n, const void *m, size_t len) {
  char err[200] = "";
  if (!n->sealed) {
    if (n->lobbied) {
      /* the first frame that opened under the keys the lobby agreed: our client */
      start_session(n, n->who);
    } else {                       /* --connect-back: the handshake is on this link */
      int rc = farm__session_node(&n->hs, n->link, n->key, m, len, err, sizeof err);
      if (rc == 1) start_session(n, n->hs.who);
      else if (rc == FARM_EAUTH)
        logf_(&n->lg, LOG_WARN, "authentication failed: the client (says it is %s) does not know this node's key",
              n->hs.who[0] ? n->hs.who : "?");
      else if (rc < 0) logf_(&n->lg, LOG_WARN, "dropped %zu bytes from an unauthenticated peer: %s", len, err);
      return;
    }
  }
  farm_rd r;
  int type = farm__msg_open(&r, m, len, err, sizeof err);
  int rc = type < 0 ? type : 0;
  switch (type) {
  case FARM_MSG_JOBS: rc = on_jobs(n, &r, err, sizeof err); break;
  case FARM_MSG_TAKE: rc = on_take(n, &r, err, sizeof err); break;
  case FARM_MSG_SHARE: rc = on_share(n, &r, err, sizeof err); break;
  case FARM_MSG_KILL: {
    uint64_t id;
    rc = farm__proto_get_kill(&r, &id, err, sizeof err);
    farm_job *j = rc < 0 ? NULL : farm__hash_get(&n->jobs, id);
    if (j) farm__engine_cancel(n->e, j, 1);
    break;
  }
  case FARM_MSG_STOP: {             /* cancelled with a grace: the job is told; the client keeps the time */
    uint64_t id;
    rc = farm__proto_get_stop(&r, &id, err, sizeof err);
    if (rc == 0) rc = farm__proto_end(&r, "STOP", err, sizeof err);
    farm_job *j = rc < 0 ? NULL : farm__hash_get(&n->jobs, id);
    if (j) farm__engine_stop(n->e, j, -1);
    break;
  }
  case FARM_MSG_BEAT: {             /* may say the client's heartbeat, in ms */
    farm_msg_beat m;                /* (what does not read is not held against it) */
    farm__proto_get_beat(&r, &m, NULL, 0);
    if (m.n >= 1 && m.beat_ms >= 10 && m.beat_ms <= 3600000) {
      n->peer_beat = m.beat_ms / 1e3;
      /* the client's heartbeat is the session's, both ways (within sane bounds) */
      n->beat = n->peer_beat < FARM_BEAT_MIN ? FARM_BEAT_MIN : n->peer_beat > FARM_BEAT_MAX ? FARM_BEAT_MAX : n->peer_beat;
    }
    break;
  }
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
    if (rc == FARM_EAUTH && !n->sealed && n->lobbied) {
      /* not our client (it would open under our keys): a stranger holds our
         port; drop it, and our client's connection comes (nanomsg retries) */
      char addr[96];
      peer_addr(n->pf, port_of(n->listen), addr, sizeof addr);
      if (strcmp(addr, n->stranger)) {
        logf_(&n->lg, LOG_WARN, "a stranger at %s spoke first on %s's link (its frame does not open "
              "under the session's keys): dropped it", addr, n->who);
        snprintf(n->stranger, sizeof n->stranger, "%s", addr);
      }
      if (farm__link_rebind(n->link) < 0) { end_session(n, "cannot listen again"); n->status = 1; }
      return;
    }
    if (rc == FARM_EAUTH) {
      end_session(n, "a frame did not authenticate (the client went away, or the link was tampered with)");
      return;
    }
    if (rc < 0) { logf_(&n->lg, LOG_ERROR, "link failed: %s", farm__link_error()); n->stop = 1; n->status = 1; return; }
    on_message(n, m, len);
    farm__link_free(m);
  }
}

/* ---- serving one client --------------------------------------------------------------- */

static void stats_line(node *n) {
  logf_(&n->lg, LOG_WARN, "stats: session with %s: %llu jobs done, %llu failed, %zu running or queued",
        n->sealed ? n->who : "no client", (unsigned long long)n->jobs_done,
        (unsigned long long)n->jobs_failed, n->jobs.n);
}

/* Tell the lobby whether we have jobs (after a moment without: a gap between
   two bursts is no reason to give workers away) and how many were done. */
static void tell_lobby(node *n, double now) {
  if (n->ctl < 0) return;
  int active = n->jobs.n > 0;
  if (active) n->idle_at = 0;
  else if (!n->idle_at) n->idle_at = now;
  if (!active && n->told_active && now - n->idle_at < 0.3) active = 1;
  if (active == n->told_active && (n->jobs_done + n->jobs_failed == n->told_done ||
                                    (n->jobs.n && now - n->told_at < 0.5))) return;
  char msg[96];
  int k = snprintf(msg, sizeof msg, "A %d %llu %llu", active, (unsigned long long)n->jobs_done,
                   (unsigned long long)n->jobs_failed);
  if (send(n->ctl, msg, (size_t)k, MSG_DONTWAIT | MSG_NOSIGNAL) == k) {
    n->told_active = active;
    n->told_done = n->jobs_done + n->jobs_failed;
    n->told_at = now;
  }
}

/* What the lobby says: our share of the node's workers, and how many clients
   the node serves. Its end (the lobby is gone) ends the session. */
static void hear_lobby(node *n) {
  char msg[96];
  ssize_t k;
  while ((k = recv(n->ctl, msg, sizeof msg - 1, MSG_DONTWAIT)) > 0) {
    msg[k] = 0;
    int share, clients;
    if (sscanf(msg, "S %d %d", &share, &clients) != 2 || share < 1 || share > 4096) continue;
    n->clients = clients;
    char err[200];
    if (n->e && share != farm__engine_workers(n->e) && farm__engine_set_workers(n->e, share, err, sizeof err) < 0)
      logf_(&n->lg, LOG_WARN, "cannot run on %d workers: %s", share, err);
    else if (n->e) logf_(&n->lg, LOG_DEBUG, "%d worker(s) for %s (the node serves %d client(s))", share, n->who, clients);
  }
  if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR)) {
    /* as for SIGTERM: the client hears QUIT and takes its jobs back */
    logf_(&n->lg, LOG_INFO, "the node's lobby is gone: stopping");
    n->stop = 1;
  }
}

static void serve(node *n) {
  double started = farm__now(), rebound = 0;
  while (!n->stop) {
    uint64_t gen = farm__engine_gen(n->e);
    receive(n);
    if (n->stop) break;
    char why[400];
    if (n->sealed && !n->setup_told && farm__engine_setup_failed(n->e, why, sizeof why)) {
      /* the node is out of the client's run: the client takes its jobs back */
      logf_(&n->lg, LOG_WARN, "%s; telling the client", why);
      farm__proto_put_setupfail(&n->out, why, strlen(why));
      send_out(n);
      n->setup_told = 1;
    }
    send_results(n);
    double now = farm__now();
    if (n->sealed) {
      double last = farm__link_last_recv(n->link);
      double beat = n->peer_beat > n->beat ? n->peer_beat : n->beat;
      if (last > 0 && now - last > LOST_BEATS * beat) {
        snprintf(why, sizeof why, "no word from it for %.1f s", now - last);
        end_session(n, why);
        break;
      }
      if (now - n->last_sent >= n->beat) {
        farm_msg_beat m = { .n = 2, .beat_ms = (uint64_t)(n->beat * 1e3),
                            .clients = (uint64_t)(n->clients > 0 ? n->clients : 1) };
        farm__proto_put_beat(&n->out, &m);
        send_out(n);
      }
    } else if (n->lobbied) {
      /* our client connects at once; a stranger may have been quicker (a PAIR
         takes one connection): drop whoever is there now and then */
      if (now - started > FARM_LOBBY_DEADLINE) {
        logf_(&n->lg, LOG_WARN, "%s did not come to its link within %g s: given up", n->who, FARM_LOBBY_DEADLINE);
        n->status = 2;
        break;
      }
      if (now - started > 1.0 && now - rebound > 1.0) {
        conn c[4];
        if (rebound > 0 || scan_conns(n->pf, port_of(n->listen), c, 4) > 0) farm__link_rebind(n->link);
        rebound = now;
      }
    } else if (now - started > 60) {
      logf_(&n->lg, LOG_ERROR, "no client finished a handshake within 60 s: giving up");
      n->status = 1;
      break;
    }
    tell_lobby(n, now);
    int backed = n->pend.n || farm__link_held(n->link);
    if (backed && flush_pend(n) == 0) backed = 0;
    struct pollfd fds[4] = {
      { .fd = farm__link_rcvfd(n->link), .events = POLLIN },
      { .fd = n->sigfd, .events = POLLIN },
      { .fd = n->ctl >= 0 ? n->ctl : n->launched ? 0 : -1, .events = POLLIN },
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
          logf_(&n->lg, LOG_INFO, "%s: stopping", strsignal((int)si.ssi_signo));
          n->stop = 1;
        }
      }
    }
    if (rc == 2 && fds[2].revents) {
      if (n->ctl >= 0) hear_lobby(n);
      else {
        /* the SSH channel or srun's stdin closed: the client is gone */
        char c;
        if (read(0, &c, 1) <= 0) {
          logf_(&n->lg, LOG_INFO, "stdin closed: the client is gone");
          end_session(n, "its connection closed");
        }
      }
    }
  }
  if (n->sealed && n->link) {                   /* the client takes back what did not finish */
    send_results(n);
    flush_results(n);
    farm__proto_put_empty(&n->out, FARM_MSG_QUIT);
    send_out(n);
    for (double until = farm__now() + 1; (n->pend.n || farm__link_held(n->link)) && flush_pend(n) == FARM_EAGAIN &&
         farm__now() < until; ) usleep(5000);
    usleep(100000);                               /* nanomsg sends it after we close: let it go */
    end_session(n, "the node is stopping");
  }
}

static int block_signals(void) {
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGUSR1);
  sigaddset(&sigs, SIGHUP);
  sigaddset(&sigs, SIGPIPE);
  sigaddset(&sigs, SIGCHLD);
  pthread_sigmask(SIG_BLOCK, &sigs, NULL);
  sigdelset(&sigs, SIGPIPE);
  return signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
}

/* Free what a session holds; its jobs' directory and every process of its
   client's go with it. */
static void session_free(node *n) {
  map_clear(&n->jobs, drop_job);
  map_clear(&n->fns, drop_fn);
  close_engine(n);
  farm__link_close(n->link);
  n->link = NULL;
  farm__buf_free(&n->out);
  farm__buf_free(&n->pend);
  farm__buf_free(&n->res);
  farm__buf_free(&n->times);
  if (n->sigfd >= 0) close(n->sigfd);
  sodium_memzero(n->key, sizeof n->key);
}

/* `farm node --session`: one client's session, started by the lobby with the
   client's keys on CTL_FD (never on a command line). */
static int session_main(void) {
  session_args a;
  session_client c;
  node N = { .sigfd = -1, .ctl = CTL_FD, .lobbied = 1, .launched = 1 };
  node *n = &N;
  memset(&c, 0, sizeof c);
  ssize_t k = recv(CTL_FD, &a, sizeof a, 0);
  if (k != (ssize_t)sizeof a) {
    fprintf(stderr, "farm node: --session is for the node itself (it starts one for each client)\n");
    return 2;
  }
  fcntl(CTL_FD, F_SETFD, FD_CLOEXEC);
  n->lg.level = a.loglevel;
  n->lg.f = fdopen(4, "a");                     /* the node's log, when it has one */
  n->beat = a.beat;
  n->workers = a.workers;
  n->total = a.total;
  n->restart = a.restart;
  snprintf(n->who, sizeof n->who, "a client to come");
  procfds pf;
  procfds_open(&pf);
  n->pf = &pf;
  /* whatever the client's jobs start stays below us, to be stopped with them */
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  n->sigfd = block_signals();
  farm__buf_init(&n->out);
  farm__buf_init(&n->pend);
  farm__buf_init(&n->res);
  farm__buf_init(&n->times);
  char err[600];
  int rc = 1;
  /* workers first, before any client: its first job finds them warm */
  if (open_engine(n, err, sizeof err) < 0) {
    logf_(&n->lg, LOG_ERROR, "cannot start workers for a session: %s", err);
    goto out;
  }
  for (;;) {                       /* then the client, or the end of the lobby */
    struct pollfd p[2] = { { .fd = CTL_FD, .events = POLLIN }, { .fd = n->sigfd, .events = POLLIN } };
    if (poll(p, 2, -1) < 0 && errno != EINTR) goto out;
    if (p[1].revents) {            /* told to stop while waiting; a SIGCHLD is its workers' (one
                                      stopped, continued with a SIGSTOPped node, or replaced) */
      struct signalfd_siginfo si;
      int stop = 0;
      while (read(n->sigfd, &si, sizeof si) == (ssize_t)sizeof si)
        stop |= si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT || si.ssi_signo == SIGHUP;
      if (stop) { rc = 0; goto out; }
    }
    if (!p[0].revents) continue;
    k = recv(CTL_FD, &c, sizeof c, 0);
    if (k == (ssize_t)sizeof c) break;
    if (k == 0 || (k < 0 && errno != EINTR && errno != EAGAIN)) { rc = 0; goto out; }
  }
  n->clients = c.clients;
  snprintf(n->who, sizeof n->who, "%s", c.acc.who);
  /* a port of our own (we, not the lobby, whose descriptors a flood may have
     taken; and a port taken between a look and a bind is tried again), until
     our client has spoken under its keys taking a few KiB a frame at most */
  for (int tries = 0; ; tries++) {
    int port = farm__free_port(strcmp(c.host, "0.0.0.0") ? c.host : NULL);
    snprintf(n->listen, sizeof n->listen, "tcp://%.200s:%d", c.host, port);
    if (port > 0 && farm__link_open(&n->link, n->listen, 1, FARM_LOBBY_MAXMSG, err, sizeof err) == 0) break;
    if (port < 0) snprintf(err, sizeof err, "no free port on %.200s", c.host);
    if (tries >= 20) {
      logf_(&n->lg, LOG_ERROR, "cannot give %s a link: %s", n->who, err);
      goto out;
    }
  }
  char said[32];
  int len = snprintf(said, sizeof said, "P %u", port_of(n->listen));
  if (send(CTL_FD, said, (size_t)len, MSG_NOSIGNAL) != len) goto out;
  farm__lobby_seal(n->link, &c.acc);
  sodium_memzero(&c, sizeof c);
  n->t0 = farm__now();
  serve(n);
  rc = n->status;
out:
  sodium_memzero(&c, sizeof c);
  session_free(n);
  procfds_close(&pf);
  if (n->lg.f) fclose(n->lg.f);
  return rc;
}

/* ---- the lobby ---------------------------------------------------------------------- */

#define MAX_KIDS 64

typedef struct kid {               /* a session process: one client */
  pid_t pid;
  int ctl;                         /* our end of its control socket */
  char who[128];
  int active, share, clients;      /* what it said; what it was told */
  uint64_t done, failed;
} kid;

typedef struct seen { unsigned long inode; double since; } seen;
typedef struct told { char addr[64]; double at; } told;

typedef struct lobby {
  farm_link *link;
  farm_lobby lb;
  logger lg;
  char listen[300], host[256], exe[PATH_MAX];
  unsigned char key[FARM_KEYLEN];
  int launched, workers, restart, logfd;
  double beat, idle_timeout, idle_since, t0, scanned, summed;
  unsigned port;
  kid kids[MAX_KIDS];
  int nkids;
  kid spare;                       /* a session started before its client (pid 0: none) */
  double spare_at;                 /* when the last one was started */
  seen *conns;                     /* connections to the lobby, and since when */
  int nconns;
  told logged[32];                 /* addresses logged in the last minute */
  int sigfd, stop, status, served;
  procfds pf;                      /* (kept open: a flood may leave no descriptor free) */
  farm_announcer *ann;             /* --join, --announce (NULL: neither) */
  double next_ann;                 /* when it is next due */
  uint64_t sessions, auth_failed, dropped, dropped_conns, done, failed;
  uint64_t unanswered_told;
  farm_status_srv *page;           /* --status: the page (status.h), fed by lobby_status */
  double status_at;
} lobby;

/* Once per address per minute: a stranger who keeps at it fills no log. */
static int worth_logging(lobby *L, const char *addr, double now) {
  char host[64];
  snprintf(host, sizeof host, "%s", addr);
  char *colon = strrchr(host, ':');
  if (colon) *colon = 0;                        /* the address, whatever its port */
  told *old = &L->logged[0];
  for (int i = 0; i < 32; i++) {
    if (!strcmp(L->logged[i].addr, host)) {
      if (now - L->logged[i].at < LOG_EVERY) return 0;
      old = &L->logged[i];
      break;
    }
    if (L->logged[i].at < old->at) old = &L->logged[i];
  }
  snprintf(old->addr, sizeof old->addr, "%s", host);
  old->at = now;
  return 1;
}

/* Each session with jobs gets an even share of the node's workers; one with
   none keeps one (it costs nothing idle, and starts at once); with nobody
   busy, each may use them all. */
static void share_workers(lobby *L) {
  int active = 0, rank = 0;
  for (int i = 0; i < L->nkids; i++) active += L->kids[i].active;
  for (int i = 0; i < L->nkids; i++) {
    kid *k = &L->kids[i];
    int s = !active ? L->workers : !k->active ? 1 : L->workers / active + (rank++ < L->workers % active);
    if (s < 1) s = 1;
    if (s == k->share && k->clients == L->nkids) continue;
    char msg[64];
    int len = snprintf(msg, sizeof msg, "S %d %d", s, L->nkids);
    if (send(k->ctl, msg, (size_t)len, MSG_DONTWAIT | MSG_NOSIGNAL) == len) {
      k->share = s;
      k->clients = L->nkids;
    }
  }
}

/* Start a session process (exec'd afresh: nanomsg's threads do not survive a
   fork) and tell it how to run; it starts its workers and waits to be told
   whom it serves. 0, or -1 with why. */
static int start_process(lobby *L, kid *k, char *why, size_t whylen) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
    snprintf(why, whylen, "the node is short of resources (%s); try again later", strerror(errno));
    return -1;
  }
  session_args a = { .workers = L->workers, .total = L->workers, .restart = L->restart,
                     .loglevel = L->lg.level, .beat = L->beat };
  pid_t lobby_pid = getpid(), pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != lobby_pid) _exit(1);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* a flood may have filled the table: keep only what the session needs */
    unsigned keep1 = (unsigned)sv[1], keep2 = L->logfd >= 0 ? (unsigned)L->logfd : keep1;
    if (keep2 < keep1) { unsigned t = keep1; keep1 = keep2; keep2 = t; }
    if (keep1 > 3) close_range(3, keep1 - 1, 0);
    if (keep2 > keep1 + 1) close_range(keep1 + 1, keep2 - 1, 0);
    close_range(keep2 + 1, ~0U, 0);
    /* (out of the way first: either may be 3 or 4 now) */
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    int ctl = fcntl(sv[1], F_DUPFD_CLOEXEC, 10), log = L->logfd >= 0 ? fcntl(L->logfd, F_DUPFD_CLOEXEC, 10) : -1;
    if (null < 0 || ctl < 0 || dup2(ctl, CTL_FD) < 0 || dup2(null, 0) < 0) _exit(1);
    if (log >= 0 ? dup2(log, 4) < 0 : close(4) < 0 && errno != EBADF) _exit(1);
    execl(L->exe, "farm", "node", "--session", (char *)NULL);
    _exit(127);
  }
  close(sv[1]);
  if (pid < 0 || send(sv[0], &a, sizeof a, MSG_NOSIGNAL) != (ssize_t)sizeof a) {
    snprintf(why, whylen, "the node cannot start a session now (%s); try again later", strerror(errno));
    if (pid > 0) kill(pid, SIGKILL);
    close(sv[0]);
    return -1;
  }
  *k = (kid){ .pid = pid, .ctl = sv[0], .share = L->workers };
  L->spare_at = farm__now();
  return 0;
}

/* The warm spare, when there is none (at most one start a second: a spare
   that keeps failing is not started in a loop). A node started for one run
   needs one only until its client came. */
static void keep_spare(lobby *L, double now) {
  char why[200];
  if (L->spare.pid || (L->launched && L->served) || now - L->spare_at < 1.0) return;
  if (start_process(L, &L->spare, why, sizeof why) < 0)
    logf_(&L->lg, LOG_WARN, "cannot start a session ahead of its client: %s", why);
}

/* A session for a client that proved it knows the key: the warm spare, or one
   started now; its port, or -1 with why. */
static int spawn_session(lobby *L, const farm_lobby_client *acc, char *why, size_t whylen) {
  if (L->launched && L->served) {
    snprintf(why, whylen, "this node was started for one run, and serves it already");
    return -1;
  }
  if (L->nkids >= MAX_KIDS) {
    snprintf(why, whylen, "the node serves %d clients, as many as it takes; try again later", MAX_KIDS);
    return -1;
  }
  kid k = L->spare;
  L->spare.pid = 0;
  int sent = 0, port = -1;
  /* the spare, or a process started now; a spare that ended unseen (its end
     not reaped yet: the node was just resumed, or it failed) gives way to a
     fresh one, once */
  for (int fresh = !k.pid; ; fresh = 1) {
    if (!k.pid && start_process(L, &k, why, whylen) < 0) return -1;
    session_client c = { .acc = *acc, .clients = L->nkids + 1 };
    snprintf(c.host, sizeof c.host, "%s", L->host);
    sent = send(k.ctl, &c, sizeof c, MSG_NOSIGNAL) == (ssize_t)sizeof c;
    sodium_memzero(&c, sizeof c);
    /* the port it bound: a moment (its workers are up: it only binds); a
       session that says nothing in time is given up */
    int ended = !sent;
    for (double until = farm__now() + 3; sent && port < 0 && farm__now() < until; ) {
      struct pollfd p = { .fd = k.ctl, .events = POLLIN };
      char said[32];
      if (poll(&p, 1, 100) <= 0) continue;
      ssize_t len = recv(k.ctl, said, sizeof said - 1, MSG_DONTWAIT);
      if (len <= 0) { ended = 1; break; }
      said[len] = 0;
      if (sscanf(said, "P %d", &port) != 1 || port < 1 || port > 65535) port = -1;
    }
    if (port > 0 || fresh || !ended) break;
    logf_(&L->lg, LOG_DEBUG, "the session started ahead of its client (pid %ld) had ended; starting another",
          (long)k.pid);
    kill(k.pid, SIGKILL);
    close(k.ctl);
    k.ctl = -1;
    L->kids[L->nkids++] = k;       /* reaped, and forgotten, as any */
    k = (kid){ 0 };
    if (L->nkids >= MAX_KIDS) {
      snprintf(why, whylen, "the node serves %d clients, as many as it takes; try again later", MAX_KIDS);
      return -1;
    }
  }
  if (!sent || port < 0) {         /* (it died, or hangs: reap() will see it go) */
    snprintf(why, whylen, "the node cannot start a session now (%s); try again later",
             sent ? "it did not take a port" : strerror(errno));
    kill(k.pid, SIGKILL);
    close(k.ctl);
    k.ctl = -1;
    L->kids[L->nkids++] = k;       /* reaped, and forgotten, as any */
    return -1;
  }
  snprintf(k.who, sizeof k.who, "%s", acc->who);
  L->kids[L->nkids++] = k;
  L->sessions++;
  L->served = 1;
  keep_spare(L, farm__now() + 1.0);   /* the next client's, now */
  return port;
}

static void remove_dirs_named(const char *in, const char *prefix) {
  DIR *d = opendir(in);
  struct dirent *e;
  while (d && (e = readdir(d))) {
    char path[PATH_MAX];
    if (strncmp(e->d_name, prefix, strlen(prefix))) continue;
    snprintf(path, sizeof path, "%s/%s", in, e->d_name);
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  }
  if (d) closedir(d);
}

/* A session's jobs' directory and the one behind it (open_engine). */
static void remove_workdirs_of(pid_t lobby_pid, pid_t pid) {
  const char *tmp = getenv("TMPDIR");
  if (!tmp || !*tmp) tmp = "/tmp";
  char prefix[64], parent[PATH_MAX];
  snprintf(prefix, sizeof prefix, "farm-node-%ld-%ld-", (long)lobby_pid, (long)pid);
  remove_dirs_named(tmp, prefix);
  snprintf(parent, sizeof parent, "%s/farm-node-%ld-d", tmp, (long)lobby_pid);
  snprintf(prefix, sizeof prefix, "%ld-", (long)pid);
  remove_dirs_named(parent, prefix);
}

static void reap(lobby *L) {
  int st;
  pid_t pid;
  while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
    if (pid == L->spare.pid) {     /* a spare that did not last (its workers would not start?) */
      logf_(&L->lg, LOG_WARN, "a session started ahead of its client (pid %ld) ended %s %d", (long)pid,
            WIFSIGNALED(st) ? "by signal" : "with status", WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
      close(L->spare.ctl);
      L->spare.pid = 0;
      remove_workdirs_of(getpid(), pid);
      continue;
    }
    for (int i = 0; i < L->nkids; i++) {
      kid *k = &L->kids[i];
      if (k->pid != pid) continue;
      if (WIFSIGNALED(st) || (WIFEXITED(st) && WEXITSTATUS(st) != 0))
        logf_(&L->lg, LOG_WARN, "the session of %s (pid %ld) ended %s %d", k->who, (long)pid,
              WIFSIGNALED(st) ? "by signal" : "with status", WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
      /* its directories: empty after a clean end (the one its jobs saw was a
         mount point there, which only we may remove); one killed outright
         leaves them full */
      remove_workdirs_of(getpid(), pid);
      L->done += k->done;
      L->failed += k->failed;
      if (k->ctl >= 0) close(k->ctl);
      L->kids[i] = L->kids[--L->nkids];
      break;
    }
  }
  if (!L->nkids) L->idle_since = farm__now();
  share_workers(L);
}

static void hear_kid(lobby *L, kid *k) {
  char msg[96];
  ssize_t len;
  while ((len = recv(k->ctl, msg, sizeof msg - 1, MSG_DONTWAIT)) > 0) {
    msg[len] = 0;
    int active;
    unsigned long long done, failed;
    if (sscanf(msg, "A %d %llu %llu", &active, &done, &failed) != 3) continue;
    k->active = active != 0;
    k->done = done;
    k->failed = failed;
  }
  share_workers(L);
}

/* Connections that have not finished a handshake in time are dropped, and no
   more than LOBBY_CAP are held (the oldest go first: an honest client is done
   in milliseconds). An honest client's lobby connection closes once it has its
   own link, so everything here is someone's handshake, or a stranger. */
static void watch_lobby(lobby *L, double now) {
  int cap = 4096;
  conn *c = malloc((size_t)cap * sizeof *c);
  seen *s = malloc((size_t)cap * sizeof *s);
  if (!c || !s) { free(c); free(s); return; }
  int n = scan_conns(&L->pf, L->port, c, cap), kept = 0;
  for (int i = 0; i < n; i++) {
    s[i] = (seen){ c[i].inode, now };
    for (int j = 0; j < L->nconns; j++)
      if (L->conns[j].inode == c[i].inode) { s[i].since = L->conns[j].since; break; }
  }
  for (int i = 0; i < n; i++) kept += now - s[i].since <= FARM_LOBBY_DEADLINE;
  for (int i = 0; i < n; i++) {
    int late = now - s[i].since > FARM_LOBBY_DEADLINE;
    if (!late && kept > LOBBY_CAP) {             /* too many: the oldest of the rest go */
      int older = 0;
      for (int j = 0; j < n; j++)
        older += now - s[j].since <= FARM_LOBBY_DEADLINE && s[j].since < s[i].since;
      if (older < kept - LOBBY_CAP) late = 2;
    }
    if (!late || drop_conn(&c[i]) < 0) continue;
    L->dropped_conns++;
    if (!worth_logging(L, c[i].addr, now)) continue;
    if (late == 2)
      logf_(&L->lg, LOG_WARN, "dropped a connection from %s: more than %d connections before a handshake "
            "(logged once a minute)", c[i].addr, LOBBY_CAP);
    else
      logf_(&L->lg, LOG_WARN, "dropped a connection from %s: no handshake within %g s (logged once a minute)",
            c[i].addr, FARM_LOBBY_DEADLINE);
  }
  free(L->conns);
  L->conns = s;
  L->nconns = n;
  free(c);
  if (now - L->summed >= LOG_EVERY) {            /* hellos over the rate, once a minute */
    if (L->lb.unanswered > L->unanswered_told)
      logf_(&L->lg, LOG_WARN, "%llu hellos left unanswered in the last minute (more than %d a second: a flood?)",
            (unsigned long long)(L->lb.unanswered - L->unanswered_told), FARM_LOBBY_RATE);
    L->unanswered_told = L->lb.unanswered;
    L->summed = now;
  }
}

static void lobby_receive(lobby *L) {
  for (int k = 0; k < 256 && !L->stop; k++) {
    void *m;
    size_t len;
    int rc = farm__link_recv(L->link, &m, &len, 1);
    if (rc == FARM_EAGAIN) return;
    if (rc < 0) {
      logf_(&L->lg, LOG_ERROR, "the lobby failed: %s", farm__link_error());
      L->stop = 1;
      L->status = 1;
      return;
    }
    farm_buf out;
    farm__buf_init(&out);
    farm_lobby_client acc;
    memset(&acc, 0, sizeof acc);
    char err[200] = "";
    int r = farm__lobby_answer(&L->lb, L->key, m, len, &out, &acc, err, sizeof err);
    farm__link_free(m);
    char addr[96];
    if (r == 1) {
      char why[200];
      int port = spawn_session(L, &acc, why, sizeof why);
      if (port > 0) {
        logf_(&L->lg, LOG_DEBUG, "%s proved it knows the key: its session (pid %ld) is on port %d",
              acc.who, (long)L->kids[L->nkids - 1].pid, port);
        farm__lobby_welcome(&out, port);
        share_workers(L);
      } else {
        logf_(&L->lg, LOG_WARN, "cannot serve %s: %s", acc.who, why);
        farm__lobby_refuse(&out, why);
      }
    } else if (r == FARM_EAUTH) {
      L->auth_failed++;
      peer_addr(&L->pf, L->port, addr, sizeof addr);
      logf_(&L->lg, LOG_WARN, "authentication failed: client at %s (says it is %s): %s",
            addr, acc.who[0] ? acc.who : "?", err + sizeof "authentication failed: " - 1);
    } else if (err[0]) {
      L->dropped++;
      peer_addr(&L->pf, L->port, addr, sizeof addr);
      if (worth_logging(L, addr, farm__now()))
        logf_(&L->lg, LOG_WARN, "dropped %zu bytes from %s before a handshake: %s (logged once a minute)",
              len, addr, err);
    }
    sodium_memzero(&acc, sizeof acc);
    if (out.n) farm__link_send(L->link, out.p, out.n, 1);   /* (lost: REQ asks again) */
    farm__buf_free(&out);
  }
}

static void lobby_stats(lobby *L) {
  char who[600] = "";
  size_t at = 0;
  uint64_t done = L->done, failed = L->failed;
  for (int i = 0; i < L->nkids && at < sizeof who - 1; i++) {
    kid *k = &L->kids[i];
    done += k->done;
    failed += k->failed;
    at += (size_t)snprintf(who + at, sizeof who - at, "%s%s (%d worker%s%s)", i ? ", " : "", k->who,
                           k->share, k->share == 1 ? "" : "s", k->active ? ", busy" : "");
  }
  logf_(&L->lg, LOG_WARN, "stats: %d clients now, %llu sessions, %llu jobs done, %llu failed, "
        "%llu failed authentications, %llu messages dropped, %llu connections dropped before a handshake, "
        "up %.0f s; %s",
        L->nkids, (unsigned long long)L->sessions, (unsigned long long)done, (unsigned long long)failed,
        (unsigned long long)L->auth_failed, (unsigned long long)L->dropped,
        (unsigned long long)L->dropped_conns, farm__now() - L->t0, L->nkids ? who : "no client");
}

/* The status page's figures: the node, and the clients it serves now (the
   page's server copies them; it never reads the lobby itself). */
static void lobby_status(lobby *L, double now) {
  if (!L->page || now - L->status_at < 0.2) return;
  L->status_at = now;
  farm_status_row row = { .workers = L->workers };
  farm_status_client cl[MAX_KIDS];
  farm_status_snap s = { .rows = &row, .nrows = 1, .clients = cl, .nclients = L->nkids,
                         .done = L->done, .failed = L->failed, .elapsed = now - L->t0 };
  snprintf(s.kind, sizeof s.kind, "node");
  snprintf(s.name, sizeof s.name, "%.127s", L->listen);
  snprintf(row.name, sizeof row.name, "%.63s", L->listen + (strncmp(L->listen, "tcp://", 6) ? 0 : 6));
  snprintf(row.kind, sizeof row.kind, "node");
  snprintf(row.state, sizeof row.state, "up");
  for (int i = 0; i < L->nkids; i++) {
    kid *k = &L->kids[i];
    cl[i] = (farm_status_client){ .workers = k->share, .active = k->active, .done = k->done, .failed = k->failed };
    snprintf(cl[i].name, sizeof cl[i].name, "%s", k->who);
    s.done += k->done;
    s.failed += k->failed;
    row.busy += k->active ? k->share : 0;
  }
  if (row.busy > row.workers) row.busy = row.workers;
  row.done = s.done;
  s.running = (uint64_t)row.busy;
  s.total = s.done + s.failed + s.running;
  farm__status_publish(L->page, &s);
}

static void stop_kids(lobby *L) {
  if (L->spare.pid) {
    kill(L->spare.pid, SIGTERM);
    close(L->spare.ctl);
    L->kids[L->nkids++] = L->spare;   /* (reaped as any) */
    L->spare.pid = 0;
  }
  for (int i = 0; i < L->nkids; i++) kill(L->kids[i].pid, SIGTERM);
  for (double until = farm__now() + 5; L->nkids && farm__now() < until; ) {
    usleep(20000);
    reap(L);
  }
  for (int i = 0; i < L->nkids; i++) kill(L->kids[i].pid, SIGKILL);
  while (L->nkids) { usleep(10000); reap(L); }
}

static int lobby_main(lobby *L) {
  L->t0 = L->idle_since = L->scanned = L->summed = farm__now();
  while (!L->stop) {
    lobby_receive(L);
    double now = farm__now();
    if (now - L->scanned >= LOBBY_SCAN) { watch_lobby(L, now); L->scanned = now; }
    keep_spare(L, now);
    lobby_status(L, now);
    if (L->ann && now >= L->next_ann) {
      char note[700];
      L->next_ann = now + farm__announcer_tick(L->ann, now, note, sizeof note);
      if (note[0]) logf_(&L->lg, LOG_WARN, "%s", note);
    }
    if (!L->nkids && L->idle_timeout > 0 && now - L->idle_since > L->idle_timeout) {
      logf_(&L->lg, LOG_INFO, "no client for %g s: exiting", L->idle_timeout);
      break;
    }
    struct pollfd fds[3 + MAX_KIDS];
    int nfds = 3;
    fds[0] = (struct pollfd){ .fd = farm__link_rcvfd(L->link), .events = POLLIN };
    fds[1] = (struct pollfd){ .fd = L->sigfd, .events = POLLIN };
    fds[2] = (struct pollfd){ .fd = L->launched ? 0 : -1, .events = POLLIN };
    for (int i = 0; i < L->nkids; i++) fds[nfds++] = (struct pollfd){ .fd = L->kids[i].ctl, .events = POLLIN };
    if (poll(fds, (nfds_t)nfds, 250) <= 0) continue;
    if (fds[1].revents) {
      struct signalfd_siginfo si;
      while (read(L->sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo == SIGUSR1) lobby_stats(L);
        else if (si.ssi_signo == SIGCHLD) {
          reap(L);
          if (L->launched && L->served && !L->nkids) L->stop = 1;   /* it ends with its run */
        } else if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT || si.ssi_signo == SIGHUP) {
          logf_(&L->lg, LOG_INFO, "%s: stopping", strsignal((int)si.ssi_signo));
          L->stop = 1;
        }
      }
    }
    if (fds[2].revents) {
      /* the SSH channel closed: the client is gone (sshd does not kill us) */
      char c;
      if (read(0, &c, 1) <= 0) {
        logf_(&L->lg, LOG_INFO, "stdin closed: the client is gone");
        L->stop = 1;
      }
    }
    for (int i = 3; i < nfds; i++)
      if (fds[i].revents)
        for (int j = 0; j < L->nkids; j++) if (L->kids[j].ctl == fds[i].fd) { hear_kid(L, &L->kids[j]); break; }
  }
  stop_kids(L);
  free(L->conns);
  const char *tmp = getenv("TMPDIR");
  char parent[PATH_MAX];
  snprintf(parent, sizeof parent, "%s/farm-node-%ld-d", tmp && *tmp ? tmp : "/tmp", (long)getpid());
  rmdir(parent);
  return L->status;
}

/* ---- options ----------------------------------------------------------------------- */

static const char node_usage[] =
  "usage: farm node [--listen ADDR] [-w N] [--key-file F] [--idle-timeout S] [--heartbeat S]\n"
  "                 [--restart-workers] [--pid-file F] [--log-file F] [--log-level L] [--daemon]\n"
  "                 [--status ADDR [--status-token]]\n"
  "                 [--join HOST:PORT]... [--announce IFACE[:PORT]]\n"
  "\n"
  "A standing node: runs the jobs of its clients on N local workers, shared evenly\n"
  "between the clients that have jobs; each client gets workers, a directory and a\n"
  "process tree of its own, all gone when it leaves.\n"
  "  --listen ADDR     where clients connect (default " DEFAULT_LISTEN ");\n"
  "                    any address but loopback needs a key. Each client is then given\n"
  "                    a port of its own on the same address (open them in a firewall)\n"
  "  -w, --workers N   workers (default: the CPUs this process may use)\n"
  "  --key-file F      the farm key clients must prove they know (default $FARM_KEY_FILE);\n"
  "                    make one with: farm keygen F (it must be readable by you alone)\n"
  "  --idle-timeout S  exit after S seconds with no client\n"
  "  --heartbeat S     seconds between heartbeats (default 1) until a client says its\n"
  "                    own; a client silent for 5 heartbeats is dropped, its jobs cancelled\n"
  "  --restart-workers a fresh worker process for every job (as ppserver -r): no job\n"
  "                    sees what an earlier one left in its Lua state\n"
  "  --pid-file F      write the node's pid to F, locked (removed at exit; a live node's is refused)\n"
  "  --log-file F      log there instead of stderr\n"
  "  --log-level L     error, warn, info (default) or debug\n"
  "  --daemon          detach from the terminal (with --log-file, or logs are lost)\n"
  "  --status ADDR     serve a live, read-only status page at http://ADDR/ (PORT or\n"
  "                    HOST:PORT): the clients served, their workers and jobs. Loopback\n"
  "                    only, unless --key-file F is given: then every request needs the\n"
  "                    token BLAKE2b(key, \"farm status\") (farm status ADDR --key-file F)\n"
  "  --status-token    the page needs the token on a loopback address too\n"
  "  --join HOST:PORT  offer this node to the run listening there (farm run --listen):\n"
  "                    every 2 s it is sent this node's address, signed with the key;\n"
  "                    the client then connects with the key handshake (repeatable)\n"
  "  --announce IFACE[:PORT]  broadcast the same every second on network interface\n"
  "                    IFACE only, to UDP port PORT (default 7079), for runs started\n"
  "                    with farm run --discover IFACE; both need --key-file\n"
  "Signals: SIGUSR1 logs statistics; SIGTERM or SIGINT cancels the clients' jobs and exits.\n"
  "A client reaches it with: farm run SCRIPT --hosts node://HOST:PORT --key-file F\n";

/* Take the pid file at path: open it, lock it (flock: the lock belongs to the
   open file, so it outlives daemon()'s fork and goes when the node's last
   descriptor of it closes, however the node ends) and write our pid. A node
   that holds it is alive: the file is left as it is, and err says whose it is.
   A file no one holds is a dead node's, and is taken over. Returns the locked
   descriptor (kept open while the node runs), or -1 and err. The descriptor is
   close-on-exec: a session or worker must not keep a node's lock. */
static int take_pid_file(const char *path, char *err, size_t errlen) {
  for (int tries = 0; tries < 10; tries++) {
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) {
      snprintf(err, errlen, "cannot write pid file '%.400s': %s", path, strerror(errno));
      return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
      int e = errno;
      char buf[32] = "";
      ssize_t k = pread(fd, buf, sizeof buf - 1, 0);
      long owner = k > 0 ? strtol(buf, NULL, 10) : 0;
      close(fd);
      if (e != EWOULDBLOCK) {
        snprintf(err, errlen, "cannot lock pid file '%.400s': %s", path, strerror(e));
      } else if (owner > 0) {
        snprintf(err, errlen, "pid file '%.400s' belongs to node %ld, which is still running "
                 "(stop it first, or give this node another --pid-file)", path, owner);
      } else {
        snprintf(err, errlen, "pid file '%.400s' is held by another node that is still running "
                 "(stop it first, or give this node another --pid-file)", path);
      }
      return -1;
    }
    /* the node we raced with may have removed the file after we opened it:
       a lock on a name no longer there guards nothing, so try again */
    struct stat a, b;
    if (fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
      char line[32];
      int n = snprintf(line, sizeof line, "%ld\n", (long)getpid());
      if (ftruncate(fd, 0) < 0 || pwrite(fd, line, (size_t)n, 0) != n) {
        snprintf(err, errlen, "cannot write pid file '%.400s': %s", path, strerror(errno));
        close(fd);
        return -1;
      }
      return fd;
    }
    close(fd);
  }
  snprintf(err, errlen, "cannot take pid file '%.400s': it keeps being replaced", path);
  return -1;
}

/* After daemon(): the pid in the file is the daemon's. */
static void rewrite_pid_file(int fd) {
  char line[32];
  int n = snprintf(line, sizeof line, "%ld\n", (long)getpid());
  if (ftruncate(fd, 0) < 0 || pwrite(fd, line, (size_t)n, 0) != n) { /* the old pid stays: logged by no one */ }
}

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

/* ---- main ------------------------------------------------------------------------------ */

static int cpus(void) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
  long k = sysconf(_SC_NPROCESSORS_ONLN);
  return k > 0 ? (int)k : 1;
}

/* A node srun started: it dials its client and serves it in this process. */
static int connect_main(node *n) {
  char err[600];
  n->sigfd = block_signals();
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  procfds pf;
  procfds_open(&pf);
  n->pf = &pf;
  farm__buf_init(&n->out);
  farm__buf_init(&n->pend);
  farm__buf_init(&n->res);
  farm__buf_init(&n->times);
  int rc = 1;
  if (open_link(n, FARM_LOBBY_MAXMSG, err, sizeof err) < 0) {
    fprintf(stderr, "farm node: %s\n", err);
    goto out;
  }
  if (open_engine(n, err, sizeof err) < 0) {
    logf_(&n->lg, LOG_ERROR, "%s", err);
    goto out;
  }
  n->t0 = farm__now();
  serve(n);
  rc = n->status;
out:
  session_free(n);
  procfds_close(&pf);
  return rc;
}

int farm_node_main(int argc, char **argv) {
  node N = { .beat = 1.0, .sigfd = -1, .ctl = -1, .lg.level = LOG_INFO };
  node *n = &N;
  const char *keyfile = getenv("FARM_KEY_FILE"), *pidfile = NULL, *logfile = NULL, *status = NULL;
  int daemonize = 0, ok = 1, listen_given = 0, status_token = 0, njoins = 0;
  char joins[16][300];             /* --join, as tcp://HOST:PORT */
  const char *joinp[16];
  char ann_iface[IFNAMSIZ] = "";   /* --announce */
  unsigned ann_port = 0;
  snprintf(n->listen, sizeof n->listen, "%s", DEFAULT_LISTEN);
  if (argc == 3 && !strcmp(argv[2], "--session")) return session_main();
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) { fputs(node_usage, stdout); return 0; }
    if (!strcmp(a, "--daemon")) { daemonize = 1; continue; }
    if (!strcmp(a, "--launched")) { n->launched = 1; continue; }
    if (!strcmp(a, "--restart-workers")) { n->restart = 1; continue; }
    if (!strcmp(a, "--connect-back")) { n->connect = 1; continue; }
    if (!strcmp(a, "--status-token")) { status_token = 1; continue; }
    if (a[0] != '-') return bad("unexpected argument '%s' (see farm node --help)", a);
    if (strcmp(a, "--listen") && strcmp(a, "-w") && strcmp(a, "--workers") && strcmp(a, "--key-file") &&
        strcmp(a, "--idle-timeout") && strcmp(a, "--heartbeat") && strcmp(a, "--pid-file") &&
        strcmp(a, "--log-file") && strcmp(a, "--log-level") && strcmp(a, "--status") && strcmp(a, "--join") &&
        strcmp(a, "--announce"))
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
    else if (!strcmp(a, "--idle-timeout")) { N.t0 = num(v, &ok); if (!ok) return bad("--idle-timeout takes seconds, not '%s'", v); }
    else if (!strcmp(a, "--heartbeat")) { n->beat = num(v, &ok); if (!ok) return bad("--heartbeat takes seconds, not '%s'", v); }
    else if (!strcmp(a, "--pid-file")) pidfile = v;
    else if (!strcmp(a, "--join")) {
      char why[400];
      if (njoins == 16) return bad("%s", "--join: at most 16 clients");
      if (farm__join_url("--join", v, joins[njoins], sizeof joins[njoins], why, sizeof why) < 0) return bad("%s", why);
      joinp[njoins] = joins[njoins];
      njoins++;
    } else if (!strcmp(a, "--announce")) {
      char why[400];
      if (farm__iface_parse("--announce", v, ann_iface, &ann_port, why, sizeof why) < 0) return bad("%s", why);
    }
    else if (!strcmp(a, "--log-file")) logfile = v;
    else if (!strcmp(a, "--status")) status = v;
    else {
      int l = -1;
      for (int k = 0; k < 4; k++) if (!strcmp(v, level_names[k])) l = k;
      if (l < 0) return bad("--log-level takes error, warn, info or debug, not '%s'", v);
      n->lg.level = l;
    }
  }
  double idle_timeout = N.t0;
  N.t0 = 0;
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
      const char *cpus_on = getenv("SLURM_CPUS_ON_NODE");
      if (!n->workers && cpus_on && atoi(cpus_on) > 0 && atoi(cpus_on) <= 256) n->workers = atoi(cpus_on);
    }
    n->keyed = 1;
    n->lg.level = n->lg.level == LOG_INFO ? LOG_WARN : n->lg.level;
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
  if (status_token && !status) return bad("%s", "--status-token goes with --status ADDR");
  if (status && farm__status_open(NULL, status, keyfile, status_token, NULL, NULL, err, sizeof err) < 0)
    return bad("%s", err);
  if ((njoins || ann_iface[0]) && (n->launched || n->connect))
    return bad("%s", "--join and --announce are for a standing node, not one a client started");
  if ((njoins || ann_iface[0]) && !n->keyed)
    return bad("%s", "--join and --announce need --key-file F: the node signs its address with the "
               "key, and a client takes only what the key signed (make one with: farm keygen F)");
  if (n->connect) return connect_main(n);

  static lobby L;                               /* (large: not on the stack; one per process) */
  memset(&L, 0, sizeof L);
  L.pf.dir = L.pf.tcp = -1;
  L.lg.level = n->lg.level;
  L.logfd = -1;
  L.launched = n->launched;
  L.restart = n->restart;
  L.beat = n->beat;
  L.idle_timeout = idle_timeout;
  L.workers = n->workers ? n->workers : cpus();
  L.port = port_of(n->listen);
  memcpy(L.key, n->key, sizeof L.key);
  sodium_memzero(n->key, sizeof n->key);
  snprintf(L.listen, sizeof L.listen, "%.299s", n->listen);
  snprintf(L.host, sizeof L.host, "%.*s", (int)(strrchr(n->listen, ':') - (n->listen + 6)), n->listen + 6);
  if (!strcmp(L.host, "localhost")) snprintf(L.host, sizeof L.host, "127.0.0.1");
  if (farm__find_exe(L.exe, sizeof L.exe) < 0) return bad("%s", "cannot find the farm executable (set FARM_EXE to its path)");
  if (logfile && !(L.lg.f = fopen(logfile, "a"))) return bad("cannot open log file '%s'", logfile);
  if (L.lg.f) L.logfd = fileno(L.lg.f);
  /* descriptors: as many as we may (strangers' connections are capped anyway) */
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  int rc = 1, pidfd = -1;
  char pidpath[4096];
  if (pidfile && pidfile[0] != '/') {           /* a daemon works from / */
    char cwd[3000];
    if (!getcwd(cwd, sizeof cwd)) { bad("cannot tell the current directory for '%s'", pidfile); goto out; }
    snprintf(pidpath, sizeof pidpath, "%s/%s", cwd, pidfile);
    pidfile = pidpath;
  }
  /* the pid file first: a second node given it stops here, before it takes a
     port or touches anything of the first one's */
  if (pidfile && (pidfd = take_pid_file(pidfile, err, sizeof err)) < 0) {
    fprintf(stderr, "farm node: %s\n", err);
    pidfile = NULL;
    goto out;
  }
  if (farm__lobby_link_open(&L.link, L.listen, 1, err, sizeof err) < 0) {
    for (int i = 0; i < 20 && strstr(err, "in use"); i++) {   /* a port just closed can be busy a moment */
      usleep(50000);
      if (farm__lobby_link_open(&L.link, L.listen, 1, err, sizeof err) == 0) break;
    }
  }
  if (!L.link) {
    if (strstr(err, "in use")) fprintf(stderr, "farm node: %s (another node there? pick another port with --listen)\n", err);
    else if (strstr(err, "No such device"))
      fprintf(stderr, "farm node: %s (the address must be one of this host's IP addresses, or 0.0.0.0)\n", err);
    else fprintf(stderr, "farm node: %s\n", err);
    goto out;
  }
  if (daemonize) {
    farm__link_close(L.link);                   /* nanomsg's threads do not survive fork */
    L.link = NULL;
    if (daemon(0, 0) < 0) { bad("cannot become a daemon: %s", strerror(errno)); goto out; }
    if (pidfd >= 0) rewrite_pid_file(pidfd);
    if (farm__lobby_link_open(&L.link, L.listen, 1, err, sizeof err) < 0) { logf_(&L.lg, LOG_ERROR, "%s", err); goto out; }
  }
  /* the page's server thread: after daemon()'s fork, before the sessions */
  if (status && farm__status_open(&L.page, status, keyfile, status_token, NULL, NULL, err, sizeof err) < 0) {
    fprintf(stderr, "farm node: %s\n", err);
    logf_(&L.lg, LOG_ERROR, "%s", err);
    goto out;
  }
  if ((njoins || ann_iface[0]) &&
      farm__announcer_open(&L.ann, L.key, L.listen, joinp, njoins, ann_iface[0] ? ann_iface : NULL,
                           ann_port, err, sizeof err) < 0) {
    if (daemonize) logf_(&L.lg, LOG_ERROR, "%s", err);
    else fprintf(stderr, "farm node: %s\n", err);
    goto out;
  }
  L.sigfd = block_signals();
  procfds_open(&L.pf);
  sweep_workdirs();
  if (L.launched) {
    printf("FARM-NODE %d %u\n", FARM_PROTOCOL, L.port);
    fflush(stdout);
  } else {
    logf_(&L.lg, LOG_INFO, "listening on %s with %d workers%s", L.listen, L.workers,
          n->keyed ? "" : " (no key: any local user can connect)");
    for (int i = 0; i < njoins; i++)
      logf_(&L.lg, LOG_INFO, "offering this node to the run at %s every %.0f s (--join)", joins[i], FARM_JOIN_EVERY);
    if (ann_iface[0])
      logf_(&L.lg, LOG_INFO, "announcing this node on %s, UDP port %u, every %.0f s (--announce)",
            ann_iface, ann_port, FARM_ANNOUNCE_EVERY);
  }
  rc = lobby_main(&L);
out:
  farm__status_stop(L.page);
  if (pidfd >= 0) {               /* ours (locked): removed while we still hold it */
    unlink(pidfile);
    close(pidfd);
  }
  farm__announcer_close(L.ann);
  farm__link_close(L.link);
  procfds_close(&L.pf);
  if (L.sigfd > 0) close(L.sigfd);
  sodium_memzero(L.key, sizeof L.key);
  if (L.lg.f) fclose(L.lg.f);
  return rc;
}
