/*
 * fuzz_results.c -- libFuzzer target for what a peer sends the client's engine
 * (core/engine.c): RESULTS, TAKEN, HELLO, SUSPENDED and SUBMIT (sub-jobs) from a
 * broken or hostile worker.
 *
 * Each input is split at its first byte into a message type and a body, given a
 * valid header and handed to a test engine with one peer (no process, no
 * thread) holding four jobs in flight, two of them being taken back. The engine
 * must take what is well formed, refuse the rest, and never crash, read out of
 * bounds or leak; a job must end at most once.
 *
 *   make fuzz && ./build-fuzz/fuzz_results -max_total_time=60
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "farm.h"
#include "engine.h"
#include "peer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  farm_peer *p;
  farm_engine *e = farm__engine_test(&p);
  farm_fn *fn = calloc(1, sizeof *fn);
  fn->refs = 1;
  farm_job *jobs[4];
  for (int i = 0; i < 4; i++) {
    farm_job *j = farm__job_new();
    j->id = (uint64_t)i + 1;
    j->refs = 1;                          /* the test's; the engine adds its own */
    j->fn = fn;
    fn->refs++;
    j->taking = i >= 2;
    farm__engine_test_add(e, j);
    jobs[i] = j;
  }
  if (data[0] & 1) p->takes = 1;
  static const uint8_t types[8] = { FARM_MSG_RESULTS, FARM_MSG_TAKEN, FARM_MSG_HELLO, FARM_MSG_JOBS,
                                    FARM_MSG_SUBMIT, FARM_MSG_SUSPENDED, FARM_MSG_RESULTS, FARM_MSG_SUBMIT };
  farm_buf msg;                           /* the header as proto.h has it, then the body */
  farm__buf_init(&msg);
  farm__msg_begin(&msg, types[(data[0] >> 1) & 7]);
  farm__buf_put(&msg, data + 1, size - 1);
  char err[200];
  farm__engine_message(e, p, msg.p, msg.n, err, sizeof err);
  farm__buf_free(&msg);
  int over = 0;
  for (int i = 0; i < 4; i++) over += farm__job_over(jobs[i]);
  if (over > 4) abort();
  farm__engine_free(e);                   /* fails and drops what it still holds */
  for (int i = 0; i < 4; i++) farm__job_unref(jobs[i]);
  farm__fn_unref(fn);
  return 0;
}
