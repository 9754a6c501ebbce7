/*
 * pool.c -- local worker processes: spawn, reap, stop.
 *
 * A worker is the farm executable run as `farm worker`, never a bare fork of
 * the client: the client may be any program (lua5.4, a C host) and nanomsg's
 * threads do not survive fork. The child asks the kernel to signal it when its
 * parent dies (SIGTERM, on which it kills its process group, itself included),
 * so a client killed with SIGKILL leaves nothing behind. (The kernel's "parent"
 * is the thread that forked: a C host should start its pool from a thread that
 * lives as long as the pool.)
 *
 * Each worker leads a session, and so a process group, of its own: the
 * programs its jobs start (os.execute, io.popen, a background `cmd &`) are in
 * that group, and the group dies with the worker. Whoever reaps or kills a
 * worker kills its group first -- a worker SIGKILLed or crashed cannot do it
 * itself -- and always before reaping it: until then the worker's pid, which is
 * the group's id, cannot be reused. Being a session of its own also takes the
 * worker away from the terminal: a Ctrl-C there reaches the client alone, which
 * stops the run, and a job (or its child) that reads the terminal cannot be
 * stopped by SIGTTIN; its standard input is /dev/null. A process that leaves
 * the group on purpose (setsid, a daemon) is on its own.
 *
 * Threads: spawn and reap run on the engine's loop thread (the kinds'
 * ops); farm__stop_pids on whichever thread closes the pool.
 */
#include <dlfcn.h>
#include <fcntl.h>
#include <errno.h>
#include <sched.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include "farm.h"
#include "clock.h"
#include "pool.h"

farm_wstate *farm__wstate_new(int *fd) {
  *fd = memfd_create("farm-worker-state", MFD_CLOEXEC);
  if (*fd < 0) return NULL;
  void *p = MAP_FAILED;
  if (ftruncate(*fd, sizeof(farm_wstate)) == 0)
    p = mmap(NULL, sizeof(farm_wstate), PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0);
  if (p == MAP_FAILED) { close(*fd); *fd = -1; return NULL; }
  memset(p, 0, sizeof(farm_wstate));
  return p;
}

farm_wstate *farm__wstate_attach(int fd) {
  void *p = mmap(NULL, sizeof(farm_wstate), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  return p == MAP_FAILED ? NULL : p;
}

void farm__wstate_free(farm_wstate *s) {
  if (s) munmap((void *)s, sizeof *s);
}

pid_t farm__spawn_worker(const char *exe, const char *url, int slot, size_t maxmsg,
                         int statefd, int outfd, int outsock, const int *shmfd,
                         char *err, size_t errlen) {
  int argsfd = shmfd && shmfd[0] >= 0 && shmfd[1] >= 0 ? shmfd[0] : -1;
  int resfd = argsfd >= 0 ? shmfd[1] : -1;
  char sslot[16], sparent[24], smax[24];
  snprintf(smax, sizeof smax, "%zu", maxmsg);
  snprintf(sslot, sizeof sslot, "%d", slot);
  snprintf(sparent, sizeof sparent, "%ld", (long)getpid());
  char *argv[16];
  int k = 0;
  argv[k++] = (char *)"farm"; argv[k++] = (char *)"worker";
  argv[k++] = (char *)"--connect"; argv[k++] = (char *)url;
  argv[k++] = (char *)"--slot"; argv[k++] = sslot;
  argv[k++] = (char *)"--parent"; argv[k++] = sparent;
  argv[k++] = (char *)"--max-message"; argv[k++] = smax;
  if (statefd >= 0) { argv[k++] = (char *)"--state-fd"; argv[k++] = (char *)"3"; }
  if (outfd >= 0) argv[k++] = (char *)"--captured";
  else outsock = -1;                       /* it goes with the captured output only */
  argv[k] = NULL;
  pid_t pid = fork();
  if (pid < 0) {
    snprintf(err, errlen, "cannot start a worker: fork: %s", strerror(errno));
    return FARM_ESPAWN;
  }
  if (pid == 0) {
    /* between fork and exec: async-signal-safe calls only */
    setsid();                              /* its own session and group (see above) */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != (pid_t)atol(sparent)) _exit(127);   /* parent already gone */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* move what it keeps above the numbers it gets, then into place (dup2
       drops close-on-exec; the copies above keep it) */
    int high[5] = { outfd, statefd, outsock, argsfd, resfd },
        want[5] = { 1, FARM_WSTATE_FD, FARM_OUTSOCK_FD, FARM_SHM_ARGS_FD, FARM_SHM_RES_FD };
    for (int i = 0; i < 5; i++)
      if (high[i] >= 0 && (high[i] = fcntl(high[i], F_DUPFD_CLOEXEC, 10)) < 0) _exit(127);
    for (int i = 0; i < 5; i++)
      if (high[i] >= 0 && dup2(high[i], want[i]) < 0) _exit(127);
    int null = open("/dev/null", O_RDONLY);
    if (null >= 0 && null != 0) { dup2(null, 0); close(null); }
#ifdef SYS_close_range
    syscall(SYS_close_range, FARM_SHM_RES_FD + 1, ~0U, 0);
#endif
    if (statefd < 0) close(FARM_WSTATE_FD);
    if (outsock < 0) close(FARM_OUTSOCK_FD);
    if (argsfd < 0) { close(FARM_SHM_ARGS_FD); close(FARM_SHM_RES_FD); }
    execv(exe, argv);
    fprintf(stderr, "farm: cannot run worker %s: %s\n", exe, strerror(errno));
    _exit(127);
  }
  return pid;
}

/* Kill the group pid leads (its jobs' children), and pid itself: a worker that
   has not called setsid yet leads none. pid must not have been reaped. */
static void kill_group(pid_t pid) {
  kill(-pid, SIGKILL);
  kill(pid, SIGKILL);
}

/* 1 when pid has ended (a zombie, not reaped yet), 0 while it runs, -1 when it
   is no child of ours. */
static int ended(pid_t pid) {
  siginfo_t si;
  si.si_pid = 0;
  if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0) return errno == EINTR ? 0 : -1;
  return si.si_pid != 0;
}

static void reap(pid_t pid, int *st) {
  while (waitpid(pid, st, 0) < 0 && errno == EINTR) {}
}

int farm__reaped(pid_t pid, char *desc, size_t n) {
  int st = 0, e = ended(pid);
  if (e == 0) return 0;
  if (e < 0) { snprintf(desc, n, "worker lost: %s", strerror(errno)); return 1; }
  kill_group(pid);                         /* what its jobs started dies with it */
  reap(pid, &st);
  if (WIFSIGNALED(st))
    snprintf(desc, n, "worker died: SIG%s", sigabbrev_np(WTERMSIG(st)) ? sigabbrev_np(WTERMSIG(st)) : "?");
  else
    snprintf(desc, n, "worker exited with status %d", WEXITSTATUS(st));
  return 1;
}

void farm__kill_worker(pid_t pid) {
  kill_group(pid);
  reap(pid, NULL);
}

void farm__stop_pids(const pid_t *pids, int n, int grace_ms) {
  double until = farm__now() + grace_ms / 1e3;
  int alive;
  char *gone = calloc((size_t)n + 1, 1);
  do {
    alive = 0;
    for (int i = 0; i < n; i++) {
      if (pids[i] <= 0 || (gone && gone[i])) continue;
      int e = ended(pids[i]);
      if (e == 0) { alive++; continue; }
      if (e > 0) farm__kill_worker(pids[i]);   /* it quit: its group goes too */
      if (gone) gone[i] = 1;
    }
    if (alive) usleep(2000);
  } while (alive && gone && farm__now() < until);
  for (int i = 0; i < n; i++) {
    if (pids[i] <= 0 || (gone && gone[i]) || ended(pids[i]) < 0) continue;
    farm__kill_worker(pids[i]);
  }
  free(gone);
}

/* The CPUs this process may run on (taskset, cgroups' cpusets), else those online. */
int farm__online_cpus(void) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n < 1 ? 1 : (int)n;
}

static int executable(const char *p) { return access(p, X_OK) == 0; }

int farm__find_exe(char *out, size_t n) {
  const char *env = getenv("FARM_EXE");
  if (env && *env) { snprintf(out, n, "%s", env); return executable(out) ? 0 : FARM_ESPAWN; }
  char self[PATH_MAX];
  ssize_t k = readlink("/proc/self/exe", self, sizeof self - 1);
  if (k > 0) {
    self[k] = 0;
    const char *base = strrchr(self, '/');
    if (base && strcmp(base + 1, "farm") == 0) { snprintf(out, n, "%s", self); return 0; }
  }
  Dl_info info;
  if (dladdr((void *)farm__find_exe, &info) && info.dli_fname) {
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", info.dli_fname);
    char *slash = strrchr(dir, '/');
    if (slash) {
      *slash = 0;
      snprintf(out, n, "%s/farm", dir);                    /* build tree */
      if (executable(out)) return 0;
      snprintf(out, n, "%s/../../../bin/farm", dir);       /* lib/lua/5.4 -> bin */
      if (executable(out)) return 0;
    }
  }
  const char *path = getenv("PATH");
  if (path) {
    char *copy = strdup(path), *save = NULL;
    for (char *d = copy ? strtok_r(copy, ":", &save) : NULL; d; d = strtok_r(NULL, ":", &save)) {
      snprintf(out, n, "%s/farm", d);
      if (executable(out)) { free(copy); return 0; }
    }
    free(copy);
  }
  snprintf(out, n, "farm");
  return FARM_ESPAWN;
}
