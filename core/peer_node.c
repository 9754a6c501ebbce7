/*
 * peer_node.c -- a farm node as a peer: capacity = its workers.
 *
 * A node is `farm node` on another host (or this one): the same engine with
 * its own local workers, serving this client over one nanomsg PAIR link on TCP,
 * sealed after a mutual handshake (session.h: said at the node's lobby, which
 * gives each client a port of its own; a node srun started dials our port and
 * the handshake is on that link). It is either standing (a
 * `node://host:port` line; the user's --key-file) or started for this run over
 * SSH (ssh.c), with a key made for the run and written to its stdin; the node
 * exits when that stdin closes, so a client that dies leaves nothing behind.
 *
 * The link carries the worker protocol (proto.h): JOBS, RESULTS, TAKE/TAKEN,
 * QUIT, plus KILL (stop one job) and BEAT. nanomsg hides a dropped TCP
 * connection, so both sides send a BEAT when they have sent nothing for a
 * heartbeat, and a link silent for LOST_BEATS heartbeats is given up: the
 * node's jobs go back to the queue and run elsewhere; a late result from it is
 * dropped (its jobs are no longer listed as there).
 *
 * Rejoining. A standing node (node://) that is lost for any reason but a
 * protocol violation (p->hostile) is tried again in the background, with a
 * backoff of REJOIN_FIRST seconds doubling to REJOIN_MAX, for the rest of the
 * run (p->rejoining says so to the engine); when it answers (resumed after a
 * SIGSTOP, restarted at the same address), a fresh handshake gives a fresh
 * session (a new link to a new session process of the node's), and the same
 * peer is up again: its jobs were re-queued at the loss and its old link is
 * closed, so nothing from before the loss can arrive. SSH-launched and srun's
 * nodes are not tried again. A node added to a running pool
 * (farm__node_new, farm__engine_add_hosts) connects the same way.
 *
 * Background connects (an `attempt`): connect_one runs on a detached thread
 * over a copy of the node's settings (its own key, options and link, nothing
 * of the engine's), and hands back its link and HELLO under the attempt's own
 * mutex; the loop thread's tick adopts them. The engine's lock is never held
 * by the connecting thread. An engine that closes meanwhile abandons the
 * attempt: the thread frees it when its connect ends (within its timeouts).
 *
 * Threads: farm__nodes_open runs on the caller's thread, with one thread
 * per host to connect (SSH, TCP, the handshake) in parallel (and attempts,
 * above, on threads of their own); after that its
 * ops run on the engine's loop thread with the engine's lock held (peer.h),
 * and it reaches the engine only through the farm_peer_host it is handed.
 * The caller waits for the connect threads in ppoll with every signal blocked
 * but SIGINT, SIGTERM, SIGHUP and SIGQUIT (the threads block them all): a host
 * slow to answer is said after WAIT_SAY ("farm: waiting for node X (what
 * for)"), and such a signal caught by a handler (Ctrl-C in `farm run`) ends
 * the wait at once: the threads still connecting are left to finish on their
 * own and then free their node (struct gate, shared with them), an srun is
 * sent SIGTERM, and farm__nodes_open returns FARM_ECLOSED, "interrupted".
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <sodium.h>
#include "farm.h"
#include "clock.h"
#include "hosts.h"
#include "peer.h"
#include "pool.h"
#include "term.h"
#include "session.h"
#include "ssh.h"

#define CONNECT_TIMEOUT 10.0       /* TCP, handshake and the node's HELLO */
#define WAIT_SAY 1.0               /* a host not connected by then is said... */
#define WAIT_SAY_SSH 3.0           /* ...or, while its SSH login lasts (0.3-0.5 s, more when busy), by then */
#define SSH_TIMEOUT 30.0           /* login and the node's first line */
#define LOST_BEATS 5.0             /* heartbeats of silence before a node is lost */
#define TCP_LOOK 0.2               /* how often the link's TCP connection is looked at */
#define SRUN_TIMEOUT 120.0         /* srun's nodes to start and connect back */
#define SLURM_WAIT 60.0            /* --slurm-wait's default: the step may wait to start */
#define SLURM_SAY 1.0              /* when a step not started yet is asked about, and said */
#define SLURM_ASK 2.0              /* ...and asked about again while it is not pending */
#define SLURM_QUIET_FOR 5.0        /* a step that started but whose nodes have not called */
#define REJOIN_FIRST 0.5           /* a lost standing node is tried again after this long, */
#define REJOIN_MAX 5.0             /* ...doubling up to this */

/* The one srun that starts a node on every node of a Slurm allocation; its
   nodes share it (the last one closed stops it).

   A step may wait to start (other steps hold the allocation's CPUs; or, with a
   stale SLURM_JOB_NODELIST outside an allocation, srun's own job waits in the
   queue). srun runs with --immediate=--slurm-wait: at that limit it gives up
   and withdraws its request itself; its parent-death signal is SIGTERM, on
   which srun withdraws a pending request too (SIGKILL would leave a job
   PENDING) or ends a running step. From SLURM_SAY on, one connect thread asks
   Slurm why (step_why: squeue for the job, scontrol for a step, which squeue
   does not list while it waits) and says it in one line. */
typedef struct srun_step {
  pid_t pid;
  int in_fd, err_fd;               /* its stdin (the key; open while we run), its stderr */
  int refs;                        /* (atomic: abandoned connect threads drop theirs) */
  int ended;
  char last[300];                  /* the last line it wrote on stderr */
  double started, wait;            /* when srun started; --slurm-wait */
  long job;                        /* its job: SLURM_JOB_ID, or the one srun asked for */
  int nodes;                       /* how many nodes it starts */
  double asked;                    /* when Slurm was last asked about it (0: never) */
  int said;                        /* its wait was said */
  int pending;                     /* Slurm said it waits to start (why: what for) */
  char why[300];
  pthread_mutex_t mu;
} srun_step;

typedef struct attempt attempt;

typedef struct node {
  farm_host h;
  char name[340];                  /* as given, for messages */
  farm_ssh *ssh;                   /* NULL: a standing node */
  unsigned char key[FARM_KEYLEN];
  void *hello;                     /* its HELLO, kept for the loop's start() */
  size_t nhello;
  double beat, last_beat;
  double tcp_looked;               /* when its TCP connection was last looked at */
  int quiet, started;
  srun_step *step;                 /* a node started by srun (it connects back to us) */
  int index;                       /* ...its task number there */
  /* while connecting (one thread per host) */
  struct gate *gate;
  int done, abandoned, said;       /* (under gate->mu) */
  const char *phase;               /* what it waits for, for the caller's line (atomic) */
  const farm_engine_opts *o;       /* &oc: what connecting needs of the engine's options, */
  farm_engine_opts oc;             /* ...copied (an attempt outlives the caller's), */
  char remote_farm[256];           /* ...with oc.remote_farm's text */
  size_t maxmsg;
  farm_link *link;
  char err[512];
  int rc;
  /* background connects (the loop thread's) */
  attempt *att;                    /* the one under way (NULL: none) */
  int was_up;                      /* it said HELLO once in this run */
  double retry_at, retry_wait;     /* a lost node: when it is tried next, and the backoff */
} node;

/* One background connect: a copy of the node, for connect_one on a thread of
   its own. done and abandoned are under mu; the rest is the thread's until done,
   then the loop thread's (or, abandoned, the thread frees it). */
struct attempt {
  pthread_mutex_t mu;
  int done, abandoned;
  node n;
};

static node *N_(farm_peer *p) { return p->kind; }

/* What the connect threads share with the caller that waits for them: a
   thread that is done writes a byte; one the caller abandoned (a signal) frees
   its node itself; the last one out frees the gate. (What a thread reads of
   the options is its node's own copy, node_init: the caller's may be gone.) */
typedef struct gate {
  pthread_mutex_t mu;
  int refs;
  int fd[2];
} gate;

static void gate_unref(gate *g) {
  pthread_mutex_lock(&g->mu);
  int left = --g->refs;
  pthread_mutex_unlock(&g->mu);
  if (left > 0) return;
  close(g->fd[0]);
  close(g->fd[1]);
  pthread_mutex_destroy(&g->mu);
  free(g);
}

static void set_phase(node *n, const char *what) { __atomic_store_n(&n->phase, what, __ATOMIC_RELEASE); }
static const char SSH_PHASE[] = "the SSH login and its farm node";

/* ---- connecting --------------------------------------------------------------- */

/* A plain TCP connect first, for an error a person can act on (nanomsg would
   retry silently forever). Leaves the numeric address in addr. */
static int probe(node *n, char *addr, size_t addrlen) {
  struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM }, *res = NULL;
  char port[16];
  snprintf(port, sizeof port, "%d", n->h.port);
  int g = getaddrinfo(n->h.host, port, &hints, &res);
  if (g != 0) {
    snprintf(n->err, sizeof n->err, "unknown host (%s)", gai_strerror(g));
    return FARM_ELINK;
  }
  int rc = FARM_ELINK, why = 0;
  for (struct addrinfo *a = res; a; a = a->ai_next) {
    int fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) continue;
    int c = connect(fd, a->ai_addr, a->ai_addrlen);
    if (c < 0 && errno == EINPROGRESS) {
      struct pollfd pfd = { .fd = fd, .events = POLLOUT };
      socklen_t sl = sizeof why;
      if (poll(&pfd, 1, (int)(CONNECT_TIMEOUT * 1e3)) == 1 &&
          getsockopt(fd, SOL_SOCKET, SO_ERROR, &why, &sl) == 0 && why == 0) c = 0;
      else if (!why) why = ETIMEDOUT;
    } else if (c < 0) why = errno;
    if (c == 0) {
      inet_ntop(AF_INET, &((struct sockaddr_in *)a->ai_addr)->sin_addr, addr, (socklen_t)addrlen);
      rc = 0;
    }
    close(fd);
    if (rc == 0) break;
  }
  freeaddrinfo(res);
  if (rc < 0) {
    if (why == ECONNREFUSED)
      snprintf(n->err, sizeof n->err, "connection refused (is a farm node listening on port %d?)", n->h.port);
    else
      snprintf(n->err, sizeof n->err, "cannot connect: %s", strerror(why ? why : EHOSTUNREACH));
  }
  return rc;
}

static void shell_quote(char *out, size_t n, const char *s) {
  size_t k = 0;
  if (k + 1 < n) out[k++] = '\'';
  for (; *s && k + 5 < n; s++) {
    if (*s == '\'') { memcpy(out + k, "'\\''", 4); k += 4; }
    else out[k++] = *s;
  }
  if (k + 1 < n) out[k++] = '\'';
  out[k] = 0;
}

/* What the SSH launcher did for the user (a host key added): one line on
   stderr, as ssh says "Permanently added ...". (A launch thread.) */
static void ssh_note(void *ud, const char *line) {
  node *n = ud;
  if (!n->quiet) fprintf(stderr, "farm: %s\n", line);
}

/* Start `farm node --launched` there; it answers "FARM-NODE <protocol> <port>". */
static int launch(node *n, char *addr, size_t addrlen, int *port) {
  const farm_engine_opts *o = n->o;
  char exe[600], cmd[900], line[200], hex[2 * FARM_KEYLEN + 2];
  shell_quote(exe, sizeof exe, o->remote_farm && *o->remote_farm ? o->remote_farm : "farm");
  int len = snprintf(cmd, sizeof cmd, "exec %s node --launched --heartbeat %g", exe, n->beat);
  if (n->h.workers > 0) len += snprintf(cmd + len, sizeof cmd - (size_t)len, " --workers %d", n->h.workers);
  farm__key_hex(n->key, hex);
  strcat(hex, "\n");
  farm_ssh_opts so = {
    .user = n->h.user, .host = n->h.host, .port = n->h.port_given ? n->h.port : 0, .command = cmd,
    .input = hex, .ninput = strlen(hex), .accept_new = o->accept_new_hosts, .timeout = SSH_TIMEOUT,
    .note = ssh_note, .note_ud = n,
  };
  int rc = farm__ssh_launch(&n->ssh, &so, line, sizeof line, n->err, sizeof n->err);
  sodium_memzero(hex, sizeof hex);
  if (rc < 0) return rc;
  int proto = 0;
  if (sscanf(line, "FARM-NODE %d %d", &proto, port) != 2 || *port <= 0 || *port > 65535) {
    snprintf(n->err, sizeof n->err, "its farm did not start a node (it said: %.200s)", line);
    return FARM_ESPAWN;
  }
  if (proto != FARM_PROTOCOL) {
    snprintf(n->err, sizeof n->err, "its farm speaks protocol version %d, this farm speaks %d; "
             "install the same farm release there", proto, FARM_PROTOCOL);
    return FARM_EVERSION;
  }
  snprintf(addr, addrlen, "%s", farm__ssh_addr(n->ssh));
  return 0;
}

/* ---- srun ----------------------------------------------------------------------- */

/* Read what srun wrote on stderr; note when it has ended. (Any thread.) */
static int step_alive(srun_step *st) {
  pthread_mutex_lock(&st->mu);
  char buf[1024];
  ssize_t k;
  while (st->err_fd >= 0 && (k = read(st->err_fd, buf, sizeof buf - 1)) > 0) {
    buf[k] = 0;
    char *line = buf, *nl;
    while ((nl = strchr(line, '\n'))) {
      *nl = 0;
      long job;
      if (sscanf(line, "srun: job %ld queued", &job) == 1 && job > 0) st->job = job;   /* (its own job) */
      if (*line) snprintf(st->last, sizeof st->last, "%.299s", line);
      line = nl + 1;
    }
    if (*line) snprintf(st->last, sizeof st->last, "%.299s", line);
  }
  if (!st->ended && st->pid > 0) {
    int status;
    if (waitpid(st->pid, &status, WNOHANG) == st->pid) { st->ended = 1; st->pid = 0; }
  }
  int alive = !st->ended;
  pthread_mutex_unlock(&st->mu);
  return alive;
}

static void step_unref(srun_step *st) {
  if (!st || __atomic_sub_fetch(&st->refs, 1, __ATOMIC_ACQ_REL) > 0) return;
  if (st->in_fd >= 0) close(st->in_fd);         /* the nodes see their stdin close */
  if (st->pid > 0) {
    kill(st->pid, SIGTERM);                       /* srun ends the step on every node */
    double until = farm__now() + 5;
    int status;
    while (waitpid(st->pid, &status, WNOHANG) == 0 && farm__now() < until) usleep(10000);
    if (waitpid(st->pid, &status, WNOHANG) == 0) { kill(st->pid, SIGKILL); waitpid(st->pid, &status, 0); }
  }
  if (st->err_fd >= 0) close(st->err_fd);
  pthread_mutex_destroy(&st->mu);
  free(st);
}

/* What Slurm says of job's step that srun (pid) has not started: 1 when it
   waits to start, with why in why; 0 when it does not (or Slurm does not say).
   squeue gives a pending job's reason; a pending step only `scontrol show
   step` lists (Slurm 22.05), with the srun that asked for it. (A connect
   thread; a second or so when slurmctld answers.) */
static int step_why(long job, pid_t pid, char *why, size_t n) {
  char cmd[160], line[1024];
  why[0] = 0;
  if (job <= 0) return 0;
  snprintf(cmd, sizeof cmd, "squeue -h -j %ld -o '%%T %%r' 2>/dev/null", job);
  FILE *f = popen(cmd, "r");
  if (!f) return 0;
  char state[40] = "", reason[200] = "";
  if (fgets(line, sizeof line, f)) sscanf(line, "%39s %199[^\n]", state, reason);
  pclose(f);
  if (!strcmp(state, "PENDING")) {
    snprintf(why, n, "its job %ld is pending (squeue's reason: %s)", job, reason[0] ? reason : "none given");
    return 1;
  }
  if (strcmp(state, "RUNNING")) return 0;
  snprintf(cmd, sizeof cmd, "scontrol -o show step %ld 2>/dev/null", job);
  if (!(f = popen(cmd, "r"))) return 0;
  char mine[40], others[200] = "";
  snprintf(mine, sizeof mine, ":%ld", (long)pid);
  int pending = 0;
  size_t k = 0;
  while (fgets(line, sizeof line, f)) {
    char *srun = strstr(line, "SrunHost:Pid="), *end = srun ? srun + strcspn(srun, " \n") : NULL;
    size_t ml = strlen(mine);
    if (srun && strstr(line, "State=PENDING") && (size_t)(end - srun) > ml && !strncmp(end - ml, mine, ml)) pending = 1;
    else if (strstr(line, "State=RUNNING") && k + 60 < sizeof others) {
      char id[40] = "", name[40] = "";
      const char *s = strstr(line, "StepId="), *nm = strstr(line, " Name=");
      if (s) sscanf(s, "StepId=%39s", id);
      if (nm) sscanf(nm, " Name=%39s", name);
      if (id[0] && !strstr(id, ".extern") && !strstr(id, ".batch"))
        k += (size_t)snprintf(others + k, sizeof others - k, "%s%s (%s)", k ? ", " : "", id, name);
    }
  }
  pclose(f);
  if (!pending) return 0;
  if (others[0]) snprintf(why, n, "job %ld's CPUs are taken by its step%s %s", job, strchr(others, ',') ? "s" : "", others);
  else snprintf(why, n, "job %ld has no free CPUs for it (scontrol: step pending)", job);
  return 1;
}

/* Start `farm node --launched --connect-back` on every node of the allocation,
   one task each, with srun; its stdin (given to every task: --input=all) says
   the key and the port each task connects back to. */
static srun_step *start_srun(const farm_peer_host *h, node **ns, int *idx, int m, const unsigned char *key,
                             const farm_engine_opts *o, char *err, size_t errlen) {
  srun_step *st = calloc(1, sizeof *st);
  int in[2] = { -1, -1 }, errp[2] = { -1, -1 };
  if (!st || pipe2(in, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0) {
    snprintf(err, errlen, "cannot start srun: %s", strerror(errno));
    goto fail;
  }
  pthread_mutex_init(&st->mu, NULL);
  st->in_fd = in[1];
  st->err_fd = errp[0];
  fcntl(st->err_fd, F_SETFL, O_NONBLOCK);
  char nn[32], exe[600];
  snprintf(nn, sizeof nn, "%d", m);
  snprintf(exe, sizeof exe, "%s", o->remote_farm && *o->remote_farm ? o->remote_farm : h->exe);
  /* not --quiet: srun says "job N queued" when it has to ask for a job */
  st->wait = o->slurm_wait > 0 ? o->slurm_wait : SLURM_WAIT;
  char imm[40];
  snprintf(imm, sizeof imm, "--immediate=%ld", (long)(st->wait + 0.999));
  const char *jid = getenv("SLURM_JOB_ID");
  if (!jid || !*jid) jid = getenv("SLURM_JOBID");
  st->job = jid ? atol(jid) : 0;
  st->nodes = m;
  char *argv[] = { "srun", "--nodes", nn, "--ntasks", nn, "--ntasks-per-node", "1", "--input", "all",
                   "--kill-on-bad-exit=1", imm, exe, "node", "--launched", "--connect-back", NULL };
  pid_t parent = getpid();
  st->started = farm__now();
  pid_t pid = fork();
  if (pid < 0) { snprintf(err, errlen, "cannot start srun: %s", strerror(errno)); goto fail; }
  if (pid == 0) {
    /* the step ends with its client; SIGTERM, on which srun also withdraws a
       request still pending (a SIGKILLed srun leaves its job in the queue) */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(127);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    int devnull = open("/dev/null", O_WRONLY);
    if (dup2(in[0], 0) < 0 || dup2(errp[1], 2) < 0 || (devnull >= 0 && dup2(devnull, 1) < 0)) _exit(127);
    execvp("srun", argv);
    static const char msg[] = "cannot run srun (is Slurm installed here?)\n";
    if (write(2, msg, sizeof msg - 1) < 0) { /* nothing more to say */ }
    _exit(127);
  }
  close(in[0]);
  close(errp[1]);
  st->pid = pid;
  st->refs = m;
  /* the key first, then the ports, each task takes its own */
  char line[2 * FARM_KEYLEN + 2];
  farm__key_hex(key, line);
  strcat(line, "\n");
  /* an srun that died at once must not kill us with SIGPIPE: the writes fail instead */
  sigset_t pipe_set, old_set;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, &old_set);
  int ok = write(in[1], line, strlen(line)) == (ssize_t)strlen(line);
  sodium_memzero(line, sizeof line);
  char ports[8 * 1024] = "PORTS";
  size_t k = strlen(ports);
  for (int i = 0; i < m && k + 8 < sizeof ports; i++) k += (size_t)snprintf(ports + k, sizeof ports - k, " %d", ns[idx[i]]->h.port);
  strcat(ports, "\n");
  ok &= write(in[1], ports, strlen(ports)) == (ssize_t)strlen(ports);
  struct timespec zero = { 0, 0 };
  while (sigtimedwait(&pipe_set, NULL, &zero) > 0) {}    /* a SIGPIPE raised meanwhile */
  pthread_sigmask(SIG_SETMASK, &old_set, NULL);
  if (!ok) { snprintf(err, errlen, "cannot talk to srun: %s", strerror(errno)); st->refs = 1; step_unref(st); return NULL; }
  return st;
fail:
  for (int i = 0; i < 2; i++) { if (in[i] >= 0) close(in[i]); if (errp[i] >= 0) close(errp[i]); }
  free(st);
  return NULL;
}

/* A step not started after SLURM_SAY: ask Slurm why (one thread for the
   step at a time), and say it once. 1 when it has waited past --slurm-wait
   (and srun, given --immediate, has not given up itself). */
static int step_waits(node *n) {
  srun_step *st = n->step;
  double now = farm__now();
  pthread_mutex_lock(&st->mu);
  int ask = now - st->started >= SLURM_SAY && (!st->asked || (!st->said && now - st->asked >= SLURM_ASK) ||
                                                (now - st->started > st->wait + 5 && now - st->asked >= SLURM_ASK));
  if (ask) st->asked = now;                    /* the others wait for this one's answer */
  long job = st->job;
  pid_t pid = st->pid;
  pthread_mutex_unlock(&st->mu);
  if (!ask) return 0;
  char why[300];
  int pending = step_why(job, pid, why, sizeof why);
  pthread_mutex_lock(&st->mu);
  st->pending = pending;
  if (pending) snprintf(st->why, sizeof st->why, "%s", why);
  int say = !st->said && (pending || farm__now() - st->started >= SLURM_QUIET_FOR);
  if (say) st->said = 1;
  int over = pending && farm__now() - st->started > st->wait + 5;
  pthread_mutex_unlock(&st->mu);
  if (say && !n->quiet) {
    if (pending)
      fprintf(stderr, "farm: the Slurm step for %d node%s waits to start: %s; farm gives up at %g s (--slurm-wait S)\n",
              st->nodes, st->nodes == 1 ? "" : "s", why, st->wait);
    else
      fprintf(stderr, "farm: waiting for the node%s srun started to connect back%s\n",
              st->nodes == 1 ? "" : "s", job > 0 ? "" : " (Slurm did not say which job)");
  }
  return over;
}

/* Why a step that never started was given up: into n->err. */
static void step_not_started(node *n, const char *srun_said) {
  srun_step *st = n->step;
  if (!strncmp(srun_said, "srun: ", 6)) srun_said += 6;
  if (!strncmp(srun_said, "error: ", 7)) srun_said += 7;
  pthread_mutex_lock(&st->mu);
  snprintf(n->err, sizeof n->err, "the Slurm step did not start within %g s: %.200s%s%.150s; "
           "give it longer with --slurm-wait S", st->wait, st->why,
           srun_said[0] ? "; srun: " : "", srun_said);
  pthread_mutex_unlock(&st->mu);
}

/* Until something is connected to n's link (sendable), srun's node or not. */
static int await_connection(node *n, double until) {
  for (;;) {
    struct pollfd pfd = { .fd = farm__link_sndfd(n->link), .events = POLLIN };
    if (poll(&pfd, 1, 100) == 1) return 0;
    if (!step_alive(n->step)) {
      pthread_mutex_lock(&n->step->mu);
      int pending = n->step->pending;
      pthread_mutex_unlock(&n->step->mu);
      if (pending) { step_not_started(n, n->step->last); return FARM_ETIMEDOUT; }
      snprintf(n->err, sizeof n->err, "srun ended before its node connected%s%s",
               n->step->last[0] ? ": " : "", n->step->last);
      return FARM_ESPAWN;
    }
    if (step_waits(n)) { step_not_started(n, ""); return FARM_ETIMEDOUT; }
    if (farm__now() > until) {
      snprintf(n->err, sizeof n->err, "its node did not connect back within %g s (can the "
               "allocation's nodes reach this host? srun said: %s)", SRUN_TIMEOUT,
               n->step->last[0] ? n->step->last : "nothing");
      return FARM_ETIMEDOUT;
    }
  }
}

/* A node srun started connects to the port we listen on for it. */
static int await_step_node(node *n) {
  char url[64], why[300];
  snprintf(url, sizeof url, "tcp://0.0.0.0:%d", n->h.port);
  /* a few KiB a message until the handshake is done: anyone may connect here */
  int rc = farm__link_open(&n->link, url, 1, FARM_LOBBY_MAXMSG, why, sizeof why);
  if (rc < 0) { snprintf(n->err, sizeof n->err, "%s", why); return rc; }
  return await_connection(n, n->step->started + n->step->wait + SRUN_TIMEOUT);
}

/* An AUTHNO where a node's HELLO was due: its words, in err. */
static int refused_first(const void *m, size_t n, char *err, size_t errlen) {
  farm_rd r;
  char e2[64];
  if (farm__msg_open(&r, m, n, e2, sizeof e2) != FARM_MSG_AUTHNO) return 0;
  size_t k;
  const char *why = farm__rd_str(&r, &k);
  snprintf(err, errlen, "the node refused us: %.*s", why ? (int)(k > 200 ? 200 : k) : 0, why ? why : "");
  return 1;
}

static void *connect_one(void *arg) {
  node *n = arg;
  char addr[64], url[128], why[300];
  int port = n->h.port;
  if (n->step) {
    n->rc = await_step_node(n);
    if (n->rc < 0) return NULL;
    goto handshake;
  }
  set_phase(n, n->h.kind == FARM_HOST_SSH ? SSH_PHASE : "a TCP connection");
  n->rc = n->h.kind == FARM_HOST_SSH ? launch(n, addr, sizeof addr, &port) : probe(n, addr, sizeof addr);
  if (n->rc < 0) return NULL;
  set_phase(n, "its answer to our handshake");
  snprintf(url, sizeof url, "tcp://%s:%d", addr, port);
  /* hello at the node's lobby, then a link of our own (session.h) */
  n->rc = farm__lobby_client(url, n->key, CONNECT_TIMEOUT, n->maxmsg, &n->link, why, sizeof why);
  goto hello;
handshake:
  /* Our port is open to anyone: a stranger who connects first holds it (a PAIR
     takes one connection), and does not answer as our node would. Drop it
     (rebind: our node's nanomsg connects again) and try again, until srun's
     time is up. */
  for (double until = farm__now() + SRUN_TIMEOUT;;) {
    n->rc = farm__session_client(n->link, n->key, FARM_LOBBY_DEADLINE, why, sizeof why);
    if (n->rc == 0 || n->rc == FARM_EVERSION || farm__now() > until || !step_alive(n->step)) break;
    if (farm__link_rebind(n->link) < 0) break;
    if ((n->rc = await_connection(n, until)) < 0) return NULL;
  }
  if (n->rc == 0) farm__link_maxmsg(n->link, n->maxmsg);
hello:
  if (n->rc == FARM_EAUTH && n->h.kind == FARM_HOST_NODE && !n->o->key)
    snprintf(why, sizeof why, "authentication failed: the node has a key and none was given here "
             "(pass --key-file F, or set FARM_KEY_FILE)");
  if (n->rc < 0) { snprintf(n->err, sizeof n->err, "%s", why); return NULL; }
  set_phase(n, "its HELLO");
  double until = farm__now() + CONNECT_TIMEOUT;
  for (;;) {
    void *m;
    size_t len;
    int rc = farm__link_recv(n->link, &m, &len, 1);
    char e2[300];
    if (rc == 0 && refused_first(m, len, e2, sizeof e2)) {
      /* the node could not serve us after all (it could not start our workers) */
      snprintf(n->err, sizeof n->err, "%s", e2);
      farm__link_free(m);
      n->rc = FARM_ESPAWN;
      return NULL;
    }
    if (rc == 0) {
      n->hello = malloc(len ? len : 1);
      if (n->hello) memcpy(n->hello, m, len);
      n->nhello = len;
      farm__link_free(m);
      n->rc = n->hello ? 0 : FARM_ENOMEM;
      return NULL;
    }
    if (rc != FARM_EAGAIN || farm__now() > until) {
      snprintf(n->err, sizeof n->err, rc == FARM_EAUTH ? "its first message did not authenticate"
               : "it did not say hello within %g s", CONNECT_TIMEOUT);
      n->rc = rc == FARM_EAUTH ? FARM_EAUTH : FARM_ETIMEDOUT;
      return NULL;
    }
    struct pollfd pfd = { .fd = farm__link_rcvfd(n->link), .events = POLLIN };
    poll(&pfd, 1, 50);
  }
}

/* A node nobody will use: what it holds, and itself. */
static void node_discard(node *n) {
  farm__link_close(n->link);
  farm__ssh_close(n->ssh);
  step_unref(n->step);
  free(n->hello);
  sodium_memzero(n->key, sizeof n->key);
  free(n);
}

/* A connect thread: connect_one, then tell the caller (or, when it has left,
   free the node). */
static void *connect_thread(void *arg) {
  node *n = arg;
  gate *g = n->gate;
  connect_one(n);
  pthread_mutex_lock(&g->mu);
  n->done = 1;
  int abandoned = n->abandoned;
  char one = 1;
  if (write(g->fd[1], &one, 1) < 0) { /* full: the caller is awake anyway */ }
  pthread_mutex_unlock(&g->mu);
  if (abandoned) node_discard(n);
  gate_unref(g);
  return NULL;
}

/* Wait for the connect threads (started[i]); say each host still connecting
   after WAIT_SAY (WAIT_SAY_SSH while it logs in). 0 when all are done, -1 when
   a signal (Ctrl-C) came first. */
static int await_threads(gate *g, node **ns, const int *started, int nh, int quiet) {
  /* during ppoll only the signals that ask to stop are let in (as the caller
     has them); any other waits until ppoll returns */
  sigset_t mask;
  pthread_sigmask(SIG_BLOCK, NULL, &mask);
  static const int stop[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGTRAP };
  for (int s = 1; s < NSIG; s++) {
    int keep = 0;
    for (size_t k = 0; k < sizeof stop / sizeof *stop; k++) keep |= stop[k] == s;
    if (!keep) sigaddset(&mask, s);
  }
  double t0 = farm__now();
  for (;;) {
    int left = 0;
    double now = farm__now();
    pthread_mutex_lock(&g->mu);
    for (int i = 0; i < nh; i++) {
      node *n = ns[i];
      if (!started[i] || n->done) continue;
      left++;
      const char *what = __atomic_load_n(&n->phase, __ATOMIC_ACQUIRE);
      /* (a Slurm step says its own wait: step_waits) */
      if (n->said || quiet || n->h.kind == FARM_HOST_SLURM || now - t0 < (what == SSH_PHASE ? WAIT_SAY_SSH : WAIT_SAY)) continue;
      n->said = 1;
      fprintf(stderr, "farm: waiting for node %s (%s; Ctrl-C stops)\n", n->name, what ? what : "its thread to start");
    }
    pthread_mutex_unlock(&g->mu);
    if (!left) return 0;
    double t = now - t0 < WAIT_SAY ? t0 + WAIT_SAY - now : 0.25;
    struct timespec ts = { (time_t)t, (long)((t - (double)(time_t)t) * 1e9) };
    struct pollfd pfd = { .fd = g->fd[0], .events = POLLIN };
    int pr = ppoll(&pfd, 1, &ts, &mask);
    if (pr < 0 && errno == EINTR) return -1;
    char buf[64];
    if (pr > 0) while (read(g->fd[0], buf, sizeof buf) > 0) {}
  }
}

/* ---- settings, and connecting in the background ------------------------------------ */

/* n's settings for host hs, from the engine's options o (copied: they outlive o). */
static void node_init(node *n, const farm_host *hs, const farm_engine_opts *o, const farm_peer_host *h,
                      const unsigned char *runkey) {
  n->h = *hs;
  if (n->h.kind == FARM_HOST_SLURM) snprintf(n->name, sizeof n->name, "slurm:%s", n->h.host);
  else farm__host_name(&n->h, n->name, sizeof n->name);
  if (n->h.kind == FARM_HOST_SSH) memcpy(n->key, runkey, FARM_KEYLEN);
  else if (o->key) memcpy(n->key, o->key, FARM_KEYLEN);
  n->beat = o->heartbeat > 0 ? o->heartbeat : 1.0;
  if (n->beat < FARM_BEAT_MIN) n->beat = FARM_BEAT_MIN;   /* the fastest a node beats */
  n->quiet = o->quiet;
  snprintf(n->remote_farm, sizeof n->remote_farm, "%s", o->remote_farm ? o->remote_farm : "");
  n->oc = (farm_engine_opts){ .key = o->key ? n->key : NULL, .accept_new_hosts = o->accept_new_hosts,
                              .remote_farm = o->remote_farm ? n->remote_farm : NULL,
                              .heartbeat = o->heartbeat, .quiet = o->quiet };
  n->o = &n->oc;
  n->maxmsg = h->maxmsg + (1u << 16);
}

static void attempt_free(attempt *a) {
  farm__link_close(a->n.link);
  farm__ssh_close(a->n.ssh);
  free(a->n.hello);
  sodium_memzero(a->n.key, sizeof a->n.key);
  pthread_mutex_destroy(&a->mu);
  free(a);
}

static void *attempt_main(void *arg) {
  attempt *a = arg;
  connect_one(&a->n);
  pthread_mutex_lock(&a->mu);
  a->done = 1;
  int abandoned = a->abandoned;
  pthread_mutex_unlock(&a->mu);
  if (abandoned) attempt_free(a);
  return NULL;
}

/* Connect n again in the background (loop thread): a copy of its settings goes
   to a detached thread. One that cannot start is an attempt that failed. */
static void attempt_start(node *n) {
  attempt *a = calloc(1, sizeof *a);
  if (!a) return;                  /* tried again at the next turn */
  pthread_mutex_init(&a->mu, NULL);
  a->n = *n;
  a->n.ssh = NULL;
  a->n.step = NULL;
  a->n.link = NULL;
  a->n.hello = NULL;
  a->n.att = NULL;
  a->n.gate = NULL;                /* (not one of the caller's threads) */
  a->n.err[0] = 0;
  a->n.rc = 0;
  a->n.oc.key = n->oc.key ? a->n.key : NULL;
  a->n.oc.remote_farm = n->oc.remote_farm ? a->n.remote_farm : NULL;
  a->n.o = &a->n.oc;
  pthread_attr_t at;
  pthread_t t;
  pthread_attr_init(&at);
  pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
  if (pthread_create(&t, &at, attempt_main, a) != 0) {
    a->done = 1;
    a->n.rc = FARM_ENOMEM;
    snprintf(a->n.err, sizeof a->n.err, "cannot start a thread to connect");
  }
  pthread_attr_destroy(&at);
  n->att = a;
}

/* Give up n's attempt (the engine closes): freed now if it is over, else by
   its thread when it is. */
static void attempt_abandon(node *n) {
  attempt *a = n->att;
  if (!a) return;
  n->att = NULL;
  pthread_mutex_lock(&a->mu);
  int done = a->done;
  a->abandoned = 1;
  pthread_mutex_unlock(&a->mu);
  if (done) attempt_free(a);
}

/* ---- the kind ---------------------------------------------------------------------- */

static void drop(farm_peer *p) {
  node *n = N_(p);
  farm__link_close(p->link);
  p->link = NULL;
  farm__ssh_close(n->ssh);
  n->ssh = NULL;
  step_unref(n->step);
  n->step = NULL;
}

/* The node is gone: its jobs go back to the queue. A standing node that was
   up, and did not break the protocol, is tried again in the background. */
static void lose(farm_peer *p, const char *why) {
  node *n = N_(p);
  char msg[600];
  snprintf(msg, sizeof msg, "node %s lost: %s", n->name, why);
  if (!p->retired) {               /* a retired node (farm__peer_retire) goes quietly */
    if (!n->quiet) farm__term_say(p->host->term, "farm: %s; its jobs run elsewhere", msg);
    p->host->error(p, msg);
  }
  p->host->lost(p, 0, why);
  drop(p);
  p->dead = 1;
  p->rejoining = n->h.kind == FARM_HOST_NODE && n->was_up && !p->hostile && !p->retired && !p->setup_failed;
  n->retry_wait = REJOIN_FIRST;
  n->retry_at = farm__now() + n->retry_wait;
}

/* Its link is up and its HELLO came (n->hello): it is ready. */
static void adopt(farm_peer *p) {
  node *n = N_(p);
  p->host->reset(p);
  char why[200] = "";
  if (p->host->message(p, n->hello, n->nhello, why, sizeof why) < 0 || !p->ready) {
    p->hostile = 1;
    lose(p, why[0] ? why : "its hello was malformed");
  } else {
    n->was_up = 1;
  }
  /* HELLO ends with the node's heartbeat (it takes ours for this session) and clients */
  farm_rd r;
  farm_msg_hello m;
  char e2[64];
  if (farm__msg_open(&r, n->hello, n->nhello, e2, sizeof e2) == FARM_MSG_HELLO &&
      farm__proto_get_hello(&r, &m, NULL, 0) == 0) {
    if (m.clients >= 1 && m.clients <= 65536) p->clients = (int)m.clients;   /* ...and the clients it serves */
  }
  free(n->hello);
  n->hello = NULL;
  n->last_beat = 0;                /* the first BEAT goes at once: it says our heartbeat */
  if (p->link) farm__link_tcp_up(p->link);   /* finds its connection, while it is there */
}

static int node_start(farm_peer *p) {
  node *n = N_(p);
  if (n->started || p->dead) return 0;      /* (a node lost comes back by its tick) */
  n->started = 1;
  if (!n->hello) attempt_start(n);          /* added to a running pool: connects now */
  else adopt(p);
  return 0;
}

/* Its background connect ended (loop thread): up again, or why not. */
static void attempt_end(farm_peer *p, attempt *a) {
  node *n = N_(p);
  n->att = NULL;
  if (a->n.rc == 0 && !p->retired) {
    p->link = a->n.link;
    a->n.link = NULL;
    n->hello = a->n.hello;
    n->nhello = a->n.nhello;
    a->n.hello = NULL;
    int back = p->dead;
    p->dead = 0;
    p->rejoining = 0;
    if (back) p->rejoined++;
    adopt(p);
    if (back && p->ready && !n->quiet)
      farm__term_say(p->host->term, "farm: node %s is back; jobs run there again", n->name);
  } else if (!n->was_up && a->n.rc < 0) {   /* an added host that did not answer */
    char msg[900];
    if (strncmp(a->n.err, "host ", 5) == 0) snprintf(msg, sizeof msg, "%s", a->n.err);   /* ssh.c names it */
    else snprintf(msg, sizeof msg, "host %s: %s", n->name, a->n.err);
    if (!n->quiet) farm__term_say(p->host->term, "farm: %s; going on without it", msg);
    p->host->error(p, msg);
    p->dead = 1;
    p->rejoining = 0;
    p->capacity = 0;
  } else {                         /* a lost node still away: later */
    n->retry_wait = n->retry_wait * 2 > REJOIN_MAX ? REJOIN_MAX : n->retry_wait * 2;
    n->retry_at = farm__now() + n->retry_wait;
  }
  attempt_free(a);
}

static void node_kill(farm_peer *p, const char *why, uint64_t blame) {
  if (!p->link) return;
  if (!blame) { lose(p, why); return; }
  /* one job out of time or cancelled by force: the node stops it; the node stays */
  farm_buf b;
  farm__buf_init(&b);
  farm__proto_put_kill(&b, blame);
  int rc = p->host->send(p, b.p, b.n);
  farm__buf_free(&b);
  p->host->job_lost(p, blame, why);
  if (rc < 0) lose(p, "cannot send to it");
}

static void ssh_log(void *ud, const char *line) {
  farm_peer *p = ud;
  node *n = N_(p);
  if (!n->quiet) farm__term_say(p->host->term, "farm: node %s: %s", n->name, line);
}

static void node_tick(farm_peer *p, double now) {
  node *n = N_(p);
  if (n->att) {                    /* connecting in the background */
    pthread_mutex_lock(&n->att->mu);
    int done = n->att->done;
    pthread_mutex_unlock(&n->att->mu);
    if (done) attempt_end(p, n->att);
    return;
  }
  if (p->dead && p->rejoining && !p->retired && !p->hostile && now >= n->retry_at) {
    attempt_start(n);              /* a lost node (or one announced again): try it */
    return;
  }
  if (!p->link) return;
  if (n->ssh) {
    char why[300];
    int rc = farm__ssh_poll(n->ssh, ssh_log, p, why, sizeof why);
    if (rc != 0) { lose(p, rc > 0 ? why : "its SSH connection failed"); return; }
  }
  if (n->step && !step_alive(n->step)) {
    char why[400];
    snprintf(why, sizeof why, "srun ended%s%s", n->step->last[0] ? ": " : "", n->step->last);
    lose(p, why);
    return;
  }
  /* A node that died (SIGKILL, a crash) closed its connection at once; nanomsg
     would only dial again, so silence would tell after LOST_BEATS heartbeats.
     The kernel tells now. What it sent before it closed is read first. */
  if (now - n->tcp_looked >= TCP_LOOK) {
    n->tcp_looked = now;
    struct pollfd pfd = { .fd = farm__link_rcvfd(p->link), .events = POLLIN };
    if (farm__link_tcp_up(p->link) == 0 && poll(&pfd, 1, 0) == 0) {
      lose(p, "its connection closed");
      return;
    }
  }
  double last = farm__link_last_recv(p->link);
  /* the node beats at our interval (proto.h: it adopts it from our first BEAT,
     which goes at once; ours is at least FARM_BEAT_MIN, and at most
     FARM_BEAT_MAX it beats faster than we judge) */
  if (last > 0 && now - last > LOST_BEATS * n->beat) {
    char why[120];
    snprintf(why, sizeof why, "no word from it for %.1f s", now - last);
    lose(p, why);
    return;
  }
  if (now - n->last_beat >= n->beat) {
    farm_buf b;
    farm__buf_init(&b);
    farm__proto_put_beat(&b, &(farm_msg_beat){ .n = 1, .beat_ms = (uint64_t)(n->beat * 1e3) });   /* our heartbeat, in ms */
    if (!p->pend.n && p->host->send(p, b.p, b.n) < 0) { farm__buf_free(&b); lose(p, "cannot send to it"); return; }
    farm__buf_free(&b);
    n->last_beat = now;
  }
  /* a job's time limit counts from when it was sent: the node does not say
     when each job starts */
  if (p->ntimed)
    for (farm_job *j = p->head; j; j = j->next)
      if (farm__job_timeout(j) > 0 && !farm__jx(j)->started) { farm__jx(j)->started = now; j->begun = 1; }
}

static uint64_t node_running(farm_peer *p) { (void)p; return 0; }
static long node_pid(farm_peer *p) { (void)p; return 0; }

static void node_close(farm_peer *p) {
  node *n = N_(p);
  attempt_abandon(n);
  drop(p);
  free(n->hello);
  sodium_memzero(n->key, sizeof n->key);
  free(n);
  p->kind = NULL;
}

static const farm_peer_ops node_ops = {
  .kind = "node",
  .untrusted = 1,
  .remote = 1,
  .start = node_start,
  .kill = node_kill,
  .close = node_close,
  .tick = node_tick,
  .running = node_running,
  .pid = node_pid,
};

/* The peer for node n (which it owns from now on); NULL when out of memory. */
static farm_peer *peer_of(const farm_peer_host *h, node *n) {
  farm_peer *p = calloc(1, sizeof *p);
  if (!p) return NULL;
  p->ops = &node_ops;
  p->host = h;
  p->e = h->engine;
  p->kind = n;
  p->capacity = n->h.workers > 0 ? n->h.workers : 1;
  /* `node://host:port N`: a standing node has workers of its own (for other
     clients too); N is how many of them this client may use */
  p->cap_limit = n->h.workers > 0 ? n->h.workers : 0;
  snprintf(p->name, sizeof p->name, "%.47s", n->name);
  farm__buf_init(&p->pend);
  return p;
}

farm_peer *farm__node_new(const farm_peer_host *h, const farm_engine_opts *o, const farm_host *host) {
  node *n = calloc(1, sizeof *n);
  if (!n) return NULL;
  unsigned char runkey[FARM_KEYLEN];
  randombytes_buf(runkey, sizeof runkey);   /* an SSH host's node is started for this run */
  node_init(n, host, o, h, runkey);
  sodium_memzero(runkey, sizeof runkey);
  farm_peer *p = peer_of(h, n);
  if (!p) { sodium_memzero(n->key, sizeof n->key); free(n); }
  return p;
}

/* Where the hosts were given, for a message: "hosts" (a hostfile, from its
   lines' "hosts:3"), "--hosts", "SLURM_JOB_NODELIST"; "" when they differ. */
static void hosts_source(node **ns, int nh, char *out, size_t n) {
  out[0] = 0;
  for (int i = 0; i < nh; i++) {
    const char *o = ns[i]->h.origin;
    const char *item = strstr(o, " item ");
    size_t len = item ? (size_t)(item - o) : strlen(o);
    if (!item) {                   /* FILE:LINE */
      size_t k = len;
      while (k > 0 && o[k - 1] >= '0' && o[k - 1] <= '9') k--;
      if (k > 0 && k < len && o[k - 1] == ':') len = k - 1;
    }
    if (i == 0) snprintf(out, n, "%.*s", (int)len, o);
    else if (strlen(out) != len || strncmp(out, o, len)) { out[0] = 0; return; }
  }
}

/* None of the hosts answered (nh > 1): one line for them all, each with why,
   into err, and on stderr too when the local workers go on without them. */
static void none_reached(node **ns, int nh, const farm_engine_opts *o, char *err, size_t errlen) {
  char src[330];
  hosts_source(ns, nh, src, sizeof src);
  int k = snprintf(err, errlen, "none of the %d hosts%s%s could be reached: ", nh, *src ? " in " : "", src);
  if (k < 0 || (size_t)k >= errlen) return;
  size_t room = errlen - (size_t)k;
  int left = nh;
  for (int i = 0; i < nh; i++, left--) {
    const char *why = ns[i]->err;
    char one[900];
    if (!strncmp(why, "host ", 5)) snprintf(one, sizeof one, "%s%s", i ? "; " : "", why + 5);   /* ssh.c names it */
    else snprintf(one, sizeof one, "%s%s: %s", i ? "; " : "", ns[i]->name, why);
    size_t ol = strlen(one);
    if (ol + 40 > room && left > 1) {             /* keep room to say how many more */
      snprintf(err + k, room, "; and %d more", left);
      break;
    }
    snprintf(err + k, room, "%s", one);
    if (ol >= room) break;
    k += (int)ol;
    room -= ol;
  }
  if (!o->quiet && !o->no_local) {
    int nw = o->workers > 0 ? o->workers : farm__online_cpus();
    fprintf(stderr, "farm: %s; going on with the %d local worker%s\n", err, nw, nw == 1 ? "" : "s");
  }
}

int farm__nodes_open(const farm_peer_host *h, const farm_engine_opts *o, farm_peer **out,
                     char *err, size_t errlen, int *first_rc) {
  int nh = o->nhosts;
  node **ns = calloc((size_t)nh, sizeof *ns);
  pthread_t *th = calloc((size_t)nh, sizeof *th);
  int *started = calloc((size_t)nh, sizeof *started);
  gate *g = calloc(1, sizeof *g);
  unsigned char runkey[FARM_KEYLEN];
  randombytes_buf(runkey, sizeof runkey);   /* for the nodes started for this run */
  int rc = 0, made = 0, first = 0;
  if (g && pipe2(g->fd, O_CLOEXEC | O_NONBLOCK) < 0) { free(g); g = NULL; }
  if (!ns || !th || !started || !g) { rc = FARM_ENOMEM; goto done; }
  pthread_mutex_init(&g->mu, NULL);
  g->refs = 1;
  for (int i = 0; i < nh; i++) {
    node *n = ns[i] = calloc(1, sizeof *n);
    if (!n) { rc = FARM_ENOMEM; goto done; }
    node_init(n, &o->hosts[i], o, h, runkey);
    n->gate = g;
  }
  /* the allocation's nodes: one srun starts them all, each connects back */
  int m = 0;
  for (int i = 0; i < nh; i++) if (ns[i]->h.kind == FARM_HOST_SLURM) m++;
  if (m) {
    int *idx = calloc((size_t)m, sizeof *idx);
    if (!idx) { rc = FARM_ENOMEM; goto done; }
    for (int i = 0, k = 0; i < nh; i++)
      if (ns[i]->h.kind == FARM_HOST_SLURM) {
        idx[k++] = i;
        memcpy(ns[i]->key, runkey, FARM_KEYLEN);
        ns[i]->h.port = farm__free_port(NULL);
      }
    char why[400];
    srun_step *st = start_srun(h, ns, idx, m, runkey, o, why, sizeof why);
    for (int k = 0; k < m; k++) {
      node *n = ns[idx[k]];
      n->index = k;
      n->step = st;
      if (!st) { n->rc = FARM_ESPAWN; snprintf(n->err, sizeof n->err, "%s", why); }
    }
    free(idx);
  }
  /* the threads take no signal: the caller's wait hears Ctrl-C */
  sigset_t all, old;
  sigfillset(&all);
  static const int sync_sigs[] = { SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGTRAP, SIGSYS };
  for (size_t k = 0; k < sizeof sync_sigs / sizeof *sync_sigs; k++) sigdelset(&all, sync_sigs[k]);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  for (int i = 0; i < nh; i++) {
    if (ns[i]->rc < 0) continue;
    pthread_mutex_lock(&g->mu);
    g->refs++;
    pthread_mutex_unlock(&g->mu);
    started[i] = pthread_create(&th[i], NULL, connect_thread, ns[i]) == 0;
    if (!started[i]) { gate_unref(g); connect_one(ns[i]); }
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  int stopped = await_threads(g, ns, started, nh, o->quiet) < 0;
  if (stopped) {
    /* interrupted: the threads still connecting finish on their own, and an
       srun is told to stop now (SIGTERM: it withdraws a pending request) */
    pthread_mutex_lock(&g->mu);
    for (int i = 0; i < nh; i++)
      if (started[i] && !ns[i]->done) {
        pthread_detach(th[i]);
        started[i] = 2;
        ns[i]->abandoned = 1;
        srun_step *st = ns[i]->step;
        if (st) {
          pthread_mutex_lock(&st->mu);
          if (st->pid > 0 && !st->ended) kill(st->pid, SIGTERM);
          pthread_mutex_unlock(&st->mu);
        }
        ns[i] = NULL;                /* its thread's now */
      }
    pthread_mutex_unlock(&g->mu);
  }
  /* the threads that are done are joined: a thread's own state (OpenSSL's, for
     one) is gone once it has ended */
  for (int i = 0; i < nh; i++) if (started[i] == 1) pthread_join(th[i], NULL);
  if (stopped) {
    snprintf(err, errlen, "interrupted while connecting to the nodes");
    rc = FARM_ECLOSED;
    goto done;
  }
  err[0] = 0;
  int up = 0, told = 0;
  for (int i = 0; i < nh; i++) up += ns[i]->rc >= 0;
  if (!up && nh > 1) {
    none_reached(ns, nh, o, err, errlen);
    told = 1;
  }
  for (int i = 0; i < nh; i++) {
    node *n = ns[i];
    farm_peer *p = peer_of(h, n);
    if (!p) { rc = FARM_ENOMEM; goto done; }
    if (n->rc < 0) {
      char msg[900];
      if (strncmp(n->err, "host ", 5) == 0) snprintf(msg, sizeof msg, "%s", n->err);   /* ssh.c names it */
      else snprintf(msg, sizeof msg, "host %s: %s", n->name, n->err);
      if (!told) {
        snprintf(err, errlen, "%s", msg);
        told = 1;
      }
      if (!first) first = n->rc;
      /* a host lost among others that answer is told on its own; when none
         answers, none_reached told them all in one line */
      if (!o->quiet && (up > 0 || (nh == 1 && !o->no_local))) fprintf(stderr, "farm: %s; going on without it\n", msg);
      farm__link_close(n->link);
      n->link = NULL;
      farm__ssh_close(n->ssh);
      n->ssh = NULL;
      step_unref(n->step);
      n->step = NULL;
      p->dead = 1;
      p->capacity = 0;             /* it never said how many it has: none of them ours */
    } else {
      p->link = n->link;
    }
    n->link = NULL;
    out[made++] = p;
    ns[i] = NULL;
  }
done:
  if (first) *first_rc = first;
  sodium_memzero(runkey, sizeof runkey);
  for (int i = 0; ns && i < nh; i++)
    if (ns[i]) node_discard(ns[i]);
  free(ns);
  free(th);
  free(started);
  if (g) gate_unref(g);
  if (rc < 0) {
    for (int i = 0; i < made; i++) { node_close(out[i]); farm__buf_free(&out[i]->pend); free(out[i]); }
    if (rc == FARM_ENOMEM) snprintf(err, errlen, "out of memory");
    return rc;
  }
  return made;
}
