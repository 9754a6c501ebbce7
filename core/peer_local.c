/*
 * peer_local.c -- a local worker process as a peer (capacity 1).
 *
 * Everything that knows about pids, ipc paths, the state page and the output
 * memfd lives here. A worker is `farm worker` exec'd by the engine's loop
 * thread; it connects back over ipc:// to a socket in a directory that exists
 * only while workers connect. Descriptor 1 of the worker is a memfd the client
 * keeps a handle on: the loop reads what the running job prints as it prints it
 * (echoed line by line), and what a worker wrote before it died is not lost.
 * The state page says which job runs, so a death is blamed on that job alone.
 *
 * A process a job started (a background `cmd &`, an io.popen) holds that
 * memfd as its own descriptor 1 and may write to it long after its job is
 * over. So when a process may have been started since the worker's descriptor
 * 1 was last replaced, the worker gives it a fresh memfd at the end of the
 * stretch (worker.c) and sends it here over a socket pair (SCM_RIGHTS) before
 * the state page moves on: the client reads the fresh one from then on, and
 * what is written late into the old one belongs to no job and is dropped.
 * The worker leads a process group with those processes in it; the group dies
 * with the worker (pool.c).
 *
 * Big argument and result blocks go through two memfd regions made for each
 * worker process when it is started (shm.h): the kind owns the client's side
 * of them (the args ring, the results' bounds) and drops them with the process.
 *
 * Threads: its ops run on the engine's loop thread with the engine's lock
 * held (peer.h); it reaches the engine only through the farm_peer_host it
 * is handed.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include "farm.h"
#include "clock.h"
#include "peer.h"
#include "pool.h"
#include "shm.h"
#include "wstate.h"

typedef struct local {
  int slot, gen;
  pid_t pid;
  char url[PATH_MAX + 32];
  farm_wstate *state;
  int outfd;                       /* the worker's descriptor 1, as the client holds it */
  int outsock;                     /* where the worker sends a memfd that replaces it */
  uint64_t sseq;                   /* the stretch of output being streamed... */
  size_t soff;                     /* ...and how much of it was read */
  farm_shm *shm;                   /* the regions shared with this process, or NULL */
} local;

static local *L_(farm_peer *p) { return p->kind; }

static void unlink_sock(local *l) {
  if (strncmp(l->url, "ipc://", 6) == 0) unlink(l->url + 6);
}

/* ---- output ---------------------------------------------------------------- */

/* Take the memfds the worker sent to replace its descriptor 1; the newest is
   the one it writes to now (it sends before it moves the state page on). */
static void take_new_output(local *l) {
  if (l->outsock < 0) return;
  for (;;) {
    char byte;
    union { struct cmsghdr h; char b[CMSG_SPACE(sizeof(int))]; } ctl;
    struct iovec iov = { &byte, 1 };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
                        .msg_controllen = sizeof ctl.b };
    ssize_t got = recvmsg(l->outsock, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return;                /* nothing more (or the worker is gone) */
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
        c->cmsg_len != CMSG_LEN(sizeof(int)))
      continue;
    int fd;
    memcpy(&fd, CMSG_DATA(c), sizeof fd);
    if (l->outfd >= 0) close(l->outfd);
    l->outfd = fd;
    l->soff = 0;
  }
}

/* Read what the running job printed since the last look and hand it to the
   engine. The state page's seq brackets the read: bytes read while the worker
   switched jobs are dropped (the worker sends them with the result anyway). */
static void stream_output(farm_peer *p, int final) {
  local *l = L_(p);
  if (!l->state || l->outfd < 0) return;
  uint64_t s1 = farm__wstate_seq(l->state);
  uint64_t job = farm__wstate_job(l->state);
  if (s1 != l->sseq || final) take_new_output(l);   /* a new memfd comes before a new seq */
  if (s1 != l->sseq) { l->sseq = s1; l->soff = 0; }
  /* a stretch after a wait is not streamed (what the job printed before went
     with the worker's record of it, so the stream would no longer be a prefix
     of its output); a dying worker's last stretch is kept all the same */
  if (!job || (!final && __atomic_load_n(&l->state->resumed, __ATOMIC_RELAXED))) return;
  struct stat st;
  if (fstat(l->outfd, &st) != 0 || (size_t)st.st_size <= l->soff) return;
  size_t n = (size_t)st.st_size - l->soff;
  if (n > (1u << 20)) n = 1u << 20;          /* the rest at the next look */
  char *buf = malloc(n);
  if (!buf) return;
  ssize_t got = pread(l->outfd, buf, n, (off_t)l->soff);
  if (got > 0 && (final || farm__wstate_seq(l->state) == s1)) {
    l->soff += (size_t)got;
    p->host->output(p, job, buf, (size_t)got);
  }
  free(buf);
}

/* ---- start, loss, stop ------------------------------------------------------- */

static void release(local *l) {
  farm__wstate_free(l->state);
  l->state = NULL;
  if (l->outfd >= 0) close(l->outfd);
  l->outfd = -1;
  if (l->outsock >= 0) close(l->outsock);
  l->outsock = -1;
  farm__shm_free(l->shm);           /* (the process is gone: nobody reads its spans) */
  l->shm = NULL;
}

static int local_start(farm_peer *p) {
  local *l = L_(p);
  const farm_peer_host *h = p->host;
  char err[400];
  err[0] = 0;
  const char *dir = h->sockdir(p, err, sizeof err);
  if (!dir) goto fail;
  l->gen++;
  snprintf(l->url, sizeof l->url, "ipc://%s/w%d.%d", dir, l->slot, l->gen);
  size_t maxmsg = h->maxmsg;
  if (farm__link_open(&p->link, l->url, 1, maxmsg + (1u << 16), err, sizeof err) < 0) goto fail;
  int statefd = -1;
  l->state = farm__wstate_new(&statefd);   /* without it, blame falls on the oldest job */
  l->outfd = memfd_create("farm-job-output", MFD_CLOEXEC);
  int pair[2] = { -1, -1 };              /* without it, the worker keeps one memfd */
  if (l->outfd >= 0 && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0)
    l->outsock = pair[0];
  int shmfd[2];                          /* without them, every block goes by the socket */
  l->shm = farm__shm_new(&shmfd[0], &shmfd[1]);
  pid_t pid = farm__spawn_worker(h->exe, l->url, l->slot, maxmsg, statefd,
                                 l->outfd, pair[1], shmfd, err, sizeof err);
  for (int i = 0; i < 2; i++) if (shmfd[i] >= 0) close(shmfd[i]);
  if (statefd >= 0) close(statefd);
  if (pair[1] >= 0) close(pair[1]);
  if (pid < 0) {
    farm__link_close(p->link);
    p->link = NULL;
    release(l);
    goto fail;
  }
  l->pid = pid;
  l->sseq = 0;
  l->soff = 0;
  h->reset(p);
  return 0;
fail:
  h->error(p, err);
  return FARM_ESPAWN;
}

/* The worker is gone (reaped): what it printed is kept, its jobs go back, and
   it is replaced -- unless it never came up, which would only loop, or it was
   retired (farm__peer_retire). */
static void lost(farm_peer *p, const char *why, uint64_t blame) {
  local *l = L_(p);
  uint64_t running = blame ? blame : farm__wstate_job(l->state);
  stream_output(p, 1);
  p->host->lost(p, running, why);
  farm__link_close(p->link);
  p->link = NULL;
  unlink_sock(l);
  release(l);
  l->pid = 0;
  if (p->retired) {                /* farm__peer_retire: gone for good, not replaced */
    if (!p->ready) p->host->sockdir_done(p);
    return;
  }
  if (!p->ready) {
    char msg[512];
    p->dead = 1;
    snprintf(msg, sizeof msg, "cannot start a worker (%.300s): %.150s", p->host->exe, why);
    p->host->error(p, msg);
    p->host->sockdir_done(p);
    return;
  }
  if (local_start(p) < 0) p->dead = 1;
}

static void local_kill(farm_peer *p, const char *why, uint64_t blame) {
  local *l = L_(p);
  if (l->pid <= 0) return;
  farm__kill_worker(l->pid);             /* and the processes its jobs started */
  lost(p, why, blame);
}

static void local_tick(farm_peer *p, double now) {
  local *l = L_(p);
  (void)now;
  char why[128];
  if (l->pid > 0 && farm__reaped(l->pid, why, sizeof why)) { lost(p, why, 0); return; }
  stream_output(p, 0);
}

static uint64_t local_running(farm_peer *p) { return farm__wstate_job(L_(p)->state); }
static long local_pid(farm_peer *p) { return L_(p)->pid; }

/* The engine sent every peer QUIT first: most have gone by now. */
static void local_close(farm_peer *p) {
  local *l = L_(p);
  if (l->pid > 0) farm__stop_pids(&l->pid, 1, 200);
  farm__link_close(p->link);
  p->link = NULL;
  unlink_sock(l);
  release(l);
  free(l);
  p->kind = NULL;
}

/* It said HELLO: its socket, and once all did, their directory, can go. */
static void local_connected(farm_peer *p) {
  unlink_sock(L_(p));
  p->host->sockdir_done(p);
}

/* (shm.h; no regions, or the peer closed: every block goes by the socket) */
static int local_args_put(farm_peer *p, uint64_t id, const char *args, size_t n, uint64_t *off) {
  return L_(p) ? farm__shm_put_args(L_(p)->shm, id, args, n, off) : -1;
}
static void local_args_done(farm_peer *p, uint64_t id) { if (L_(p)) farm__shm_args_done(L_(p)->shm, id); }
static int local_result_take(farm_peer *p, uint64_t pos, size_t n, char **out) {
  if (out) *out = NULL;
  return L_(p) ? farm__shm_take_result(L_(p)->shm, pos, n, out) : -1;
}

static const farm_peer_ops local_ops = {
  .kind = "local",
  .local_pool = 1,
  .shares_dir = 1,
  .restartable = 1,
  .start = local_start,
  .kill = local_kill,
  .close = local_close,
  .tick = local_tick,
  .running = local_running,
  .pid = local_pid,
  .connected = local_connected,
  .args_put = local_args_put,
  .args_done = local_args_done,
  .result_take = local_result_take,
};

farm_peer *farm__local_new(const farm_peer_host *h, int index, char *err, size_t errlen) {
  farm_peer *p = calloc(1, sizeof *p);
  local *l = calloc(1, sizeof *l);
  if (!p || !l) {
    free(p);
    free(l);
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  l->slot = index;
  l->outfd = -1;
  l->outsock = -1;
  p->ops = &local_ops;
  p->host = h;
  p->e = h->engine;
  p->kind = l;
  p->capacity = 1;
  p->same_clock = 1;               /* CLOCK_MONOTONIC is the host's */
  snprintf(p->name, sizeof p->name, "local:%d", index + 1);
  farm__buf_init(&p->pend);
  return p;
}

