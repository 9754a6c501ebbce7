/*
 * client.h -- the client side of a farm: the job table, the scheduler and the
 * local pool, hung off one context (farm_ctx). Lua-agnostic apart from the
 * binding in client.c's second half.
 */
#ifndef FARM_CLIENT_H
#define FARM_CLIENT_H
#include <stdint.h>
#include <sys/types.h>
#include "buf.h"
#include "proto.h"

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
  uint16_t attempt;
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
#endif
