/* pool.h -- starting, watching and stopping local worker processes. */
#ifndef FARM_POOL_H
#define FARM_POOL_H
#include <sys/types.h>
#include <stddef.h>
#include "shm.h"
#include "wstate.h"

/* Start `exe worker --connect URL --slot N --parent PID`. The child leads a
   session and a process group of its own, is sent SIGTERM when its parent
   thread dies (PR_SET_PDEATHSIG; it then kills its group), reads /dev/null as
   its standard input and inherits no descriptor but 2, outfd as 1 (the memfd
   that captures what its jobs print; -1: its own), when statefd >= 0 its state
   page (wstate.h) as FARM_WSTATE_FD, and with outfd, when outsock >= 0, one end
   of a socket pair as FARM_OUTSOCK_FD: there it sends the memfd that replaces
   its descriptor 1 when a process a job started may still hold the old one;
   when shmfd[0] and shmfd[1] >= 0, the regions of shm.h as FARM_SHM_ARGS_FD
   and FARM_SHM_RES_FD (shmfd NULL: none).
   Returns the pid, or a negative FARM_E* code with a message in err. */
#define FARM_OUTSOCK_FD 4
pid_t farm__spawn_worker(const char *exe, const char *url, int slot, size_t maxmsg,
                         int statefd, int outfd, int outsock, const int *shmfd,
                         char *err, size_t errlen);
/* 1 and a description ("worker died: SIGSEGV", "worker exited with status 3")
   when pid has ended (its group is killed, and it is reaped), 0 while it runs. */
int farm__reaped(pid_t pid, char *desc, size_t n);
/* SIGKILL a worker and its group, and reap it. */
void farm__kill_worker(pid_t pid);
/* SIGKILL the workers still alive after grace_ms, and reap them all; the group
   of each dies with it, whether it quit by itself or was killed. */
void farm__stop_pids(const pid_t *pids, int n, int grace_ms);
int farm__online_cpus(void);
/* Where the farm executable is: $FARM_EXE, this executable if it is farm,
   `farm` beside the loaded library, or `farm` on PATH. */
int farm__find_exe(char *out, size_t n);
#endif
