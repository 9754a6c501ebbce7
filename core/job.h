/*
 * job.h -- the job record and the function package it runs (job.c): what the
 * client's engine schedules, a node's engine keeps for its client, and a
 * worker keeps for each sub-job its jobs submitted.
 *
 * Threads: a job is made on the caller's thread and handed over (the engine's
 * submit, a worker's SUBMIT); from then on the thread that holds it writes it
 * (the engine's loop under its lock, a worker's link thread under its lock),
 * and its state is published with a release store once its results are in, so
 * a reader that loads the state with acquire (farm__job_state) sees them.
 * References are counted atomically: any thread may drop one.
 *
 * Memory: a million jobs may wait in the queue, so a queued job is its record
 * (farm_job: 80 bytes, its args block inside when small) and nothing else; what
 * a job needs once it is sent or ends is its farm_jobx, made by the holder
 * (farm__jx) at the latest before the end is published, so that x pointer is
 * published with the state: a reader of an over job finds it made.
 */
#ifndef FARM_JOB_H
#define FARM_JOB_H
#include <stddef.h>
#include <stdint.h>
#include "buf.h"
#include "proto.h"

typedef struct farm_peer farm_peer;   /* where a job is (peer.h); only a pointer here */

typedef struct farm_fn {           /* a function package: hash + codec block */
  unsigned char hash[FARM_HASHLEN];
  char *p;
  size_t n;
  int fresh;                       /* has upvalue values: travels whole with every job */
  int refs;                        /* atomic */
} farm_fn;

/* A message received whole (a RESULTS) that jobs' results point into: a large
   result is not copied out of its message, the message is kept until the last
   job that points into it lets go (engine.c on_results says which results). */
typedef struct farm_rxmsg {
  void *p;                         /* the message, released with release(p) */
  size_t n;                        /* its size */
  void (*release)(void *);
  int refs;                        /* atomic: the receiver's while it reads, and a job's each */
} farm_rxmsg;

#define WHERE_MAX 95               /* bytes of a job's where, at most */
enum { JOB_QUEUED, JOB_SENT, JOB_DONE, JOB_FAILED, JOB_CANCELLED };
#define FARM_DEFAULT_RETRIES 2     /* a job that killed its worker is tried this often more */

/* What a job needs only once it is sent, ends, or is more than a plain queued
   job (a sub-job, a node's job, one with partial results or a stop grace): made
   by the first farm__jx (hold gives it to a job first sent), freed with the job.
   Written and read by whoever holds the job, as the record's other fields; a
   job is given its block before its end is published (job_over, a worker's
   SUBDONE), so a reader of an over job never makes one. */
typedef struct farm_jobx {
  farm_peer *peer;                 /* where it is while sent, else NULL (farm__job_peer) */
  struct farm_job *prev;           /* in-flight list (with the record's next) */
  double timeout;                  /* seconds it may run, 0: no limit (farm__job_timeout) */
  farm_peer *owner;                /* a sub-job: the peer whose job submitted it, */
  uint64_t owner_gen, subid;       /* ...that peer's generation, and its id there */
  char *res; size_t nres;          /* result block, or the error message */
  char *tb; size_t ntb;            /* remote traceback */
  char *val; size_t nval;          /* the value a failed job raised, as a block (or NULL) */
  farm_rxmsg *rx;                  /* res, tb and val point into it (NULL: they are malloc'd) */
  char *part; size_t npart;        /* its last provisional result (farm.provide), a block, */
  uint32_t nparts;                 /* ...and how many came (engine lock) */
  uint8_t part_untrusted;          /* ...from a node: decode it untrusted */
  uint16_t ext_attempt;            /* on a node: the attempt the client gave it (with ext_id) */
  double stop_at;                  /* cancelled with a grace (STOP sent): stopped at this time */
  farm_buf out;                    /* what the job printed */
  size_t echoed;                   /* bytes of out already echoed */
  double started;                  /* when its peer was first seen running it */
  double busy;                     /* seconds it ran */
  double ended;                    /* when it ended */
  /* when it began and ended where it ran, on our clock (0: not told, see RESULTS'
     times in proto.h): one clock for both, so jobs one worker ran in turn have
     them in turn */
  double ran_from, ran_to;
  char *where;                     /* where it ran (NULL: not yet; read farm__job_where) */
  uint64_t ext_id;                 /* on a node: the id the client gave it */
  struct farm_job *fnext;          /* finished list */
} farm_jobx;

typedef struct farm_job {
  uint64_t id;
  uint8_t state;                   /* written under the lock; JOB_DONE.. with a release store */
  uint8_t mode;
  uint8_t taking;                  /* a TAKE for it is on its way to its peer */
  uint8_t cancel_req;              /* ...and it is cancelled if given back */
  uint8_t notify;                  /* goes to the finished list (a callback waits) */
  uint8_t timed_out;
  uint8_t inqueue;                 /* on the engine's queue proper */
  uint8_t begun;                   /* its peer was seen running it (or would not give it back) */
  uint16_t attempt;                /* times it was started and killed its worker */
  uint16_t requeues;               /* times it went back because a peer was lost */
  uint16_t max_retries;
  uint8_t untrusted;               /* its results came from a node: decode them untrusted */
  uint8_t read;                    /* the caller's thread only: its error was read (client.c) */
  uint16_t pin;                    /* runs only where placement pin says (farm__engine_pin); 0: anywhere */
  int refs;                        /* atomic: the future's, and the engine's while it holds it */
  farm_fn *fn;
  char *args; size_t nargs;        /* args block (dropped once over: farm__job_drop_args) */
  double submitted;                /* when it was handed to the engine */
  farm_jobx *x;                    /* the rest, once needed (farm__jx), else NULL */
  struct farm_job *next;           /* queue, in-flight or finished list */
  char inl[];                      /* small args live here, in the record (farm__job_new_args) */
} farm_job;
#define JOB_INLINE_ARGS 64         /* args blocks this long or shorter are made part of the record */

/* ---- jobs and function packages (refcounted, any thread) ---- */
farm_job *farm__job_new(void);
/* a job with a copy of the n bytes at p as its args block (in the record when
   n <= JOB_INLINE_ARGS), or NULL when out of memory */
farm_job *farm__job_new_args(const void *p, size_t n);
/* its args block is freed (whether its own or in the record): NULL, 0 */
void farm__job_drop_args(farm_job *j);
void farm__job_unref(farm_job *j);
void farm__fn_unref(farm_fn *f);
/* a message kept with one reference (the caller's), or NULL when out of memory */
farm_rxmsg *farm__rxmsg_new(void *p, size_t n, void (*release)(void *));
void farm__rxmsg_unref(farm_rxmsg *m);
/* j's res, tb and val are freed (or let go of the message they point into): NULL, 0 */
void farm__job_drop_results(farm_job *j);
/* f->hash from its block (f->p, f->n): BLAKE2b, FARM_HASHLEN bytes; the one
   place a function package is hashed (client, C API, a worker's sub-job). */
void farm__fn_hash(farm_fn *f);
char *farm__dupmem(const void *p, size_t n);
/* j->where becomes the n bytes at s (a copy; out of memory: unknown, ""). */
void farm__job_set_where(farm_job *j, const char *s, size_t n);
/* j's block (farm_jobx), made if it has none yet; out of memory: farm ends
   with one line (a job's record cannot go on without it). */
farm_jobx *farm__job_grow(farm_job *j);
static inline farm_jobx *farm__jx(farm_job *j) { return j->x ? j->x : farm__job_grow(j); }
static inline double farm__job_timeout(const farm_job *j) { return j->x ? j->x->timeout : 0; }
static inline farm_peer *farm__job_peer(const farm_job *j) { return j->x ? j->x->peer : NULL; }
static inline const char *farm__job_where(const farm_job *j) {
  return j->x && j->x->where ? j->x->where : "";
}
static inline int farm__job_state(const farm_job *j) {
  return __atomic_load_n(&j->state, __ATOMIC_ACQUIRE);
}
static inline int farm__job_over(const farm_job *j) { return farm__job_state(j) >= JOB_DONE; }

#endif
