/*
 * journal.h -- `farm run SCRIPT --journal FILE`: each finished job's result,
 * kept durably, so that the same run started again after its client died
 * gives the jobs that had finished their recorded results instead of running
 * them (journal.c has the format and the rules).
 *
 * Threads: a journal belongs to one engine (engine.c: e->journal) and is
 * touched only with the engine's lock held (the loop, or a caller in submit or
 * in its wait's help); farm__journal_check runs alone, before the engine.
 */
#ifndef FARM_JOURNAL_H
#define FARM_JOURNAL_H
#include <stddef.h>
#include "job.h"

#define FARM_JOURNAL_IDLEN 64      /* what names the run: the script's hash, then its arguments' */

typedef struct farm_journal farm_journal;

/* Open (or make) the journal at path for the run named id: its records are
   read and checked, a torn last record is cut off. 0, or -1 with one line in
   err naming the file and the fix (another script's journal, a damaged one, a
   directory that does not exist, one in use by another run). */
int  farm__journal_open(farm_journal **out, const char *path, const unsigned char *id,
                        char *err, size_t errlen);
/* The same, then closed again: farm run checks the journal before the script runs. */
int  farm__journal_check(const char *path, const unsigned char *id, char *err, size_t errlen);
/* How many records no call of this run took; then closes and frees it. */
size_t farm__journal_close(farm_journal *jn);
const char *farm__journal_path(const farm_journal *jn);

/* A job about to be submitted: when a record of the same call (function and
   arguments) is there and not yet taken, j gets its result (res, tb, val,
   out, untrusted, where) and the record is taken; returns JOB_DONE or
   JOB_FAILED. 0: none (the job runs). */
int  farm__journal_replay(farm_journal *jn, farm_job *j);

/* A job's final result came from a worker: its record joins the batch, and j
   (with the reference the caller gives) and state wait in the journal until
   farm__journal_sync. 0; -1 when the journal is not writing (it failed
   before): the caller finishes j itself. */
int  farm__journal_add(farm_journal *jn, farm_job *j, int state);
typedef struct farm_journal_held { farm_job *j; int state; } farm_journal_held;
/* Write the batch and make it durable (one write, one fdatasync); returns the
   jobs held (*n of them, their references the caller's now; valid until the
   next add). When writing fails the journal stops (farm__journal_error says
   why, once) and the jobs are handed back all the same. */
farm_journal_held *farm__journal_sync(farm_journal *jn, size_t *n);
/* Why writing failed, the first time it is asked; NULL otherwise. */
const char *farm__journal_error(farm_journal *jn);
#endif
