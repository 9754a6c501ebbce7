/*
 * wstate.h -- a page a worker shares with its client: which job it runs now.
 *
 * The worker writes it before and after each job (two stores, no syscall); the
 * client reads it when it needs the truth: which job to blame when a worker
 * dies, which of a worker's jobs is really running, whether a job can still be
 * cancelled. It travels to the exec'd worker as file descriptor 3 (a memfd).
 */
#ifndef FARM_WSTATE_H
#define FARM_WSTATE_H
#include <stdint.h>

typedef struct farm_wstate {
  volatile uint64_t job;       /* id of the job running now, 0 between jobs */
  volatile uint64_t attempt;
} farm_wstate;

#define FARM_WSTATE_FD 3

/* Client: make a page and its descriptor (close-on-exec). NULL on failure. */
farm_wstate *farm__wstate_new(int *fd);
/* Worker: map the page it was given; NULL when there is none. */
farm_wstate *farm__wstate_attach(int fd);
void farm__wstate_free(farm_wstate *s);
#endif
