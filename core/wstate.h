/*
 * wstate.h -- a page a local worker shares with its client: which job it runs.
 *
 * The worker writes it at every switch -- a job starts, ends, waits or goes on
 * -- (a few stores, no syscall); the client reads it when it needs the truth:
 * which job to blame when a worker dies, which job is really running (status,
 * timeouts, forced cancels), and whose output descriptor 1 holds now. `seq`
 * is bumped (release) after every change, so the client can tell that what it
 * read belongs to one job (a seqlock: read seq, read, read seq again).
 * It travels to the exec'd worker as file descriptor 3 (a memfd).
 */
#ifndef FARM_WSTATE_H
#define FARM_WSTATE_H
#include <stdint.h>

typedef struct farm_wstate {
  uint64_t seq;                /* bumped after every change */
  uint64_t job;                /* id of the job running now, 0 between jobs */
  uint64_t attempt;
  uint64_t resumed;            /* the job ran before and waited: its output so far went
                                  with its result, so the client does not stream this stretch */
} farm_wstate;

#define FARM_WSTATE_FD 3

static inline void farm__wstate_resume(farm_wstate *s, uint64_t job, uint64_t attempt, int resumed) {
  if (!s) return;
  __atomic_store_n(&s->resumed, (uint64_t)resumed, __ATOMIC_RELAXED);
  __atomic_store_n(&s->attempt, attempt, __ATOMIC_RELAXED);
  __atomic_store_n(&s->job, job, __ATOMIC_RELAXED);
  __atomic_add_fetch(&s->seq, 1, __ATOMIC_RELEASE);
}
static inline void farm__wstate_set(farm_wstate *s, uint64_t job, uint64_t attempt) {
  farm__wstate_resume(s, job, attempt, 0);
}
static inline uint64_t farm__wstate_job(const farm_wstate *s) {
  return s ? __atomic_load_n(&s->job, __ATOMIC_ACQUIRE) : 0;
}
static inline uint64_t farm__wstate_seq(const farm_wstate *s) {
  return __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE);
}

/* Client: make a page and its descriptor (close-on-exec). NULL on failure. */
farm_wstate *farm__wstate_new(int *fd);
/* Worker: map the page it was given; NULL when there is none. */
farm_wstate *farm__wstate_attach(int fd);
void farm__wstate_free(farm_wstate *s);
#endif
