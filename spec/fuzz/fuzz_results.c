/*
 * fuzz_results.c -- libFuzzer target for the client's RESULTS parser
 * (core/sched.c): what a broken or hostile worker can send the client.
 *
 * Each input, after a valid header, is handed to a context with one worker
 * slot (no process behind it) holding four jobs in flight. The parser must
 * take what is well formed, refuse the rest with FARM_EPROTO, and never crash,
 * read out of bounds or leak; a job must end at most once.
 *
 *   make fuzz && ./build-fuzz/fuzz_results -max_total_time=60
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "farm.h"
#include "sched.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  farm_ctx c;
  memset(&c, 0, sizeof c);
  c.nw = 1;
  c.w = calloc(1, sizeof *c.w);
  c.maxmsg = 1u << 20;
  if (!c.w) return 0;
  farm_fn *fn = calloc(1, sizeof *fn);
  fn->refs = 1;
  farm_job *jobs[4];
  for (int i = 0; i < 4; i++) {
    farm_job *j = calloc(1, sizeof *j);
    j->id = (uint64_t)i + 1;
    j->state = JOB_SENT;
    j->refs = 2;                          /* the test's, and the in-flight list's */
    j->fn = fn;
    fn->refs++;
    if (c.w->tail) c.w->tail->next = j; else c.w->head = j;
    c.w->tail = j;
    c.w->inflight++;
    jobs[i] = j;
  }
  uint8_t *msg = malloc(size + 4);
  memcpy(msg, "Fm\x01\x03", 4);           /* RESULTS, this protocol version */
  memcpy(msg + 4, data, size);
  int taken = farm__sched_results(&c, 0, msg, size + 4);
  if (taken > 4) abort();                 /* a result arrives at most once per job */
  free(msg);
  for (farm_job *j = c.w->head, *next; j; j = next) { next = j->next; farm__job_unref(j); }
  for (int i = 0; i < 4; i++) farm__job_unref(jobs[i]);
  farm__fn_unref(fn);
  free(c.w);
  return 0;
}
