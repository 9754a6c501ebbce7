/*
 * sched.h -- the client's scheduler (sched.c): jobs, function packages, the
 * workers they go to. Lua-agnostic; client.c binds it to Lua.
 */
#ifndef FARM_SCHED_H
#define FARM_SCHED_H
#include <limits.h>
#include <stdint.h>
#include <sys/types.h>
#include "buf.h"
#include "proto.h"
#include "transport.h"
#include "wstate.h"

#define PUMP_INTERVAL 50e-6        /* submit and polling pump at most this often */

typedef struct farm_fn {           /* a function package: hash + codec block */
  unsigned char hash[FARM_HASHLEN];
  char *p;
  size_t n;
  int refs;
} farm_fn;

enum { JOB_QUEUED, JOB_SENT, JOB_DONE, JOB_FAILED, JOB_CANCELLED };

typedef struct farm_job {
  uint64_t id;
  uint8_t state, mode;
  uint16_t attempt;                /* times it was started and killed its worker */
  uint16_t requeues;               /* times it went back because a worker died */
  int refs;                        /* the future's, and the scheduler's while queued or sent */
  int slot;                        /* worker slot while sent, else -1 */
  farm_fn *fn;
  char *args; size_t nargs;        /* args block (freed once done) */
  char *res; size_t nres;          /* result block, or the error message */
  char *tb; size_t ntb;            /* remote traceback */
  char *out; size_t nout;          /* what the job printed */
  double busy;                     /* seconds it ran */
  char where[64];                  /* where it ran */
  struct farm_job *next;           /* queue or in-flight list */
} farm_job;

typedef struct wslot {
  int slot, gen;
  pid_t pid;
  int ready;                       /* HELLO seen */
  int dead;                        /* failed before HELLO: not restarted */
  farm_link *link;
  char url[PATH_MAX + 32];
  farm_job *head, *tail;           /* in flight, in the order sent */
  int inflight;
  farm_buf pend;                   /* a message the link could not take yet */
  uint64_t *known;                 /* open-addressing set of function hashes */
  int nknown;
  int forget;                      /* next JOBS tells the worker to drop its cache */
  farm_wstate *state;              /* which job it runs (shared page), or NULL */
  uint64_t *cancel;                /* ids to tell it to skip (next CANCEL message) */
  size_t ncancel, capcancel;
  uint64_t jobs;                   /* stats */
  double busy;
} wslot;

typedef struct farm_ctx {
  int nw;
  wslot *w;
  int closed;
  int echo;
  char exe[PATH_MAX];
  char dir[PATH_MAX];
  farm_job *qhead, *qtail;
  size_t nqueued;
  uint64_t nextid;
  double est;                      /* EWMA of seconds per job; 0 = not known yet */
  double t0, last_pump, last_reap;
  size_t maxmsg;
  size_t batch_limit;              /* a JOBS message stays under this, one job aside */
  farm_buf msg;                    /* scratch: message being built */
  farm_buf enc;                    /* scratch: values being encoded */
  int rr;                          /* where the next dispatch round starts */
  uint64_t fn_sent, bytes_sent, batches_sent;    /* stats: function blocks and bytes sent */
  char err[512];
} farm_ctx;

/* Start nworkers workers (0: one per online CPU) running exe (NULL: found by
   farm__find_exe) and wait until they are connected. On failure c->err says why. */
int  farm__sched_open(farm_ctx *c, int nworkers, const char *exe, int echo, size_t maxmsg);
/* Stop the workers; jobs not finished fail. */
void farm__sched_close(farm_ctx *c);
/* Make progress for up to timeout seconds (see sched.c); -1 when a signal came. */
int  farm__sched_pump(farm_ctx *c, double timeout);
/* Queue a job (the scheduler holds a reference), then pump if it is time. */
void farm__sched_enqueue(farm_ctx *c, farm_job *j);
void farm__sched_submitted(farm_ctx *c);
/* The bytes just encoded into c->enc, as a block of their own. */
char *farm__sched_take_enc(farm_ctx *c, size_t *n);
int  farm__sched_workers(farm_ctx *c);
/* Cancel a job handed to a worker but not started there; 1 when done. */
int  farm__sched_cancel_sent(farm_ctx *c, farm_job *j);
/* Take a RESULTS message as if worker `slot` sent it (tests, fuzzing). */
int  farm__sched_results(farm_ctx *c, int slot, const void *msg, size_t n);
/* 1 when j is the job its worker is running now. */
int  farm__sched_running(farm_ctx *c, const farm_job *j);
void farm__job_unref(farm_job *j);
void farm__fn_unref(farm_fn *f);
char *farm__dupmem(const void *p, size_t n);
static inline int farm__job_over(const farm_job *j) { return j->state >= JOB_DONE; }
#endif
