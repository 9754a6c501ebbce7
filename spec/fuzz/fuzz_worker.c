/*
 * fuzz_worker.c -- libFuzzer target for the worker's link-thread parser
 * (core/worker.c, farm__wjobs_take): the JOBS and TAKE messages a client sends.
 *
 * Each input is a sequence of messages (u16le length + bytes, the first byte of
 * each choosing JOBS, TAKE or QUIT for the header); they go through one queue in
 * order, as a worker's link thread would take them. The parser must keep what
 * is well formed, refuse the rest whole, answer a TAKE only with ids it held,
 * and never crash, read out of bounds or leak.
 *
 *   make fuzz && ./build-fuzz/fuzz_worker -max_total_time=60
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "farm.h"
#include "proto.h"
#include "worker.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  farm_wjobs *q = farm__wjobs_new();
  if (!q) return 0;
  size_t at = 0;
  while (at + 3 <= size) {
    size_t n = (size_t)data[at] | (size_t)data[at + 1] << 8;
    uint8_t kind = data[at + 2];
    at += 3;
    if (n > size - at) n = size - at;
    static const uint8_t types[4] = { FARM_MSG_JOBS, FARM_MSG_TAKE, FARM_MSG_JOBS, FARM_MSG_QUIT };
    farm_buf b;                                   /* the header as proto.h has it, then the body */
    farm__buf_init(&b);
    farm__msg_begin(&b, types[kind & 3]);
    farm__buf_put(&b, data + at, n);
    at += n;
    void *msg = farm__buf_steal(&b, NULL);
    size_t before = farm__wjobs_count(q);
    uint64_t *given = NULL;
    size_t ngiven = 0;
    char err[256];
    int rc = farm__wjobs_take(q, msg, n + 4, free, &given, &ngiven, err, sizeof err);
    if (ngiven > before) abort();                 /* gave back more than it held */
    if (rc < 0 && farm__wjobs_count(q) != before) abort();   /* kept part of a bad message */
    free(given);
  }
  farm__wjobs_free(q);
  return 0;
}
