/* pool.h -- starting, watching and stopping local worker processes. */
#ifndef FARM_POOL_H
#define FARM_POOL_H
#include <sys/types.h>
#include <stddef.h>
#include "wstate.h"

/* Start `exe worker --connect URL --slot N --parent PID`. The child dies with
   its parent thread (PR_SET_PDEATHSIG) and inherits no descriptor but 0, 2,
   outfd as 1 (the memfd that captures what its jobs print; -1: its own) and,
   when statefd >= 0, its state page (wstate.h) as descriptor 3.
   Returns the pid, or a negative FARM_E* code with a message in err. */
pid_t farm__spawn_worker(const char *exe, const char *url, int slot, size_t maxmsg,
                         int statefd, int outfd, char *err, size_t errlen);
/* 1 and a description ("worker died: SIGSEGV", "worker exited with status 3")
   when pid has ended (and is reaped), 0 while it runs. */
int farm__reaped(pid_t pid, char *desc, size_t n);
/* SIGKILL the pids still alive after grace_ms, and reap them all. */
void farm__stop_pids(const pid_t *pids, int n, int grace_ms);
int farm__online_cpus(void);
/* Where the farm executable is: $FARM_EXE, this executable if it is farm,
   `farm` beside the loaded library, or `farm` on PATH. */
int farm__find_exe(char *out, size_t n);
#endif
