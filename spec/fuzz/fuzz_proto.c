/*
 * fuzz_proto.c -- libFuzzer target for the readers and writers of every
 * message (core/proto.c), the node's (JOBS, TAKE, SHARE, KILL, BEAT) among
 * them, which no other fuzzer reaches (nodes/node.c is not in the library).
 *
 * The first byte of each input chooses a message type; the rest is its body.
 * The body is read as that message is (a list item by item, up to its count or
 * the first bad item); every part that reads is written again with proto.c's
 * writer and read back, and must read back the same. A reader must never read
 * out of bounds, crash or leak, and a failed read must leave its farm_rd failed.
 *
 *   make fuzz && ./build-fuzz/fuzz_proto -max_total_time=60
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "farm.h"
#include "proto.h"

#define SAME(a, na, b, nb) ((na) == (nb) && (!(na) || memcmp((a), (b), (na)) == 0))
/* seconds travel in whole ns or µs (unit): back, they may differ by a unit and a rounding */
#define NEAR(a, b, unit) (fabs((a) - (b)) <= 2 * (unit) + fabs(b) * 1e-15)

static farm_buf w;                         /* what a writer wrote, read back */
static farm_rd back;

/* w (an item written alone, or a whole message) as a reader over its body */
static void reread(int whole) {
  char err[200];
  if (whole) {
    if (farm__msg_open(&back, w.p, w.n, err, sizeof err) < 0) abort();
  } else farm__rd_init(&back, w.p, w.n);
}

static void check_failed(farm_rd *r, int rc) {
  if (rc < 0 && (!r->err || farm__rd_left(r))) abort();   /* a failed read stays failed */
}

static void one_job(farm_rd *r) {
  farm_msg_job m, m2;
  int rc = farm__proto_get_job(r, &m, NULL, 0);
  check_failed(r, rc);
  if (rc < 0) return;
  w.n = 0;
  if (farm__proto_put_job(&w, &m) < 0) abort();
  reread(0);
  if (farm__proto_get_job(&back, &m2, NULL, 0) < 0 || farm__rd_left(&back) || m2.id != m.id ||
      m2.attempt != m.attempt || m2.retries != m.retries || m2.mode != m.mode || m2.fn != m.fn || memcmp(m2.hash, m.hash, FARM_HASHLEN) ||
      !SAME(m2.fnb, m2.nfn, m.fnb, m.nfn) || (!m.shm && !SAME(m2.args, m2.nargs, m.args, m.nargs)) ||
      m2.shm != m.shm || m2.args_off != m.args_off || m2.nargs != m.nargs) abort();
}

static void one_result(farm_rd *r) {
  farm_msg_result m, m2;
  int rc = farm__proto_get_result(r, &m, NULL, 0);
  check_failed(r, rc);
  if (rc < 0) return;
  w.n = 0;
  if (farm__proto_put_result(&w, &m) < 0) abort();
  reread(0);
  if (farm__proto_get_result(&back, &m2, NULL, 0) < 0 || farm__rd_left(&back) || m2.id != m.id ||
      m2.attempt != m.attempt || m2.status != m.status || !NEAR(m2.busy, m.busy, 1e-9) ||
      !SAME(m2.out, m2.nout, m.out, m.nout) || (!m.shm && !SAME(m2.block, m2.nblock, m.block, m.nblock)) ||
      !SAME(m2.tb, m2.ntb, m.tb, m.ntb) || !SAME(m2.val, m2.nval, m.val, m.nval) ||
      m2.shm != m.shm || m2.pos != m.pos || m2.nblock != m.nblock) abort();
}

static void one_submit(farm_rd *r) {
  farm_msg_submit m, m2;
  int rc = farm__proto_get_submit(r, &m, NULL, 0);
  check_failed(r, rc);
  if (rc < 0) return;
  w.n = 0;
  if (farm__proto_put_submit(&w, &m) < 0) abort();
  reread(0);
  if (farm__proto_get_submit(&back, &m2, NULL, 0) < 0 || farm__rd_left(&back) || m2.subid != m.subid ||
      m2.mode != m.mode || m2.fresh != m.fresh || m2.retries != m.retries || !NEAR(m2.timeout, m.timeout, 1e-6) ||
      !SAME(m2.fnb, m2.nfn, m.fnb, m.nfn) || !SAME(m2.args, m2.nargs, m.args, m.nargs)) abort();
}

static void one_subdone(farm_rd *r) {
  farm_msg_subdone m, m2;
  int rc = farm__proto_get_subdone(r, &m, NULL, 0);
  check_failed(r, rc);
  if (rc < 0) return;
  w.n = 0;
  if (farm__proto_put_subdone(&w, &m) < 0) abort();
  reread(0);
  if (farm__proto_get_subdone(&back, &m2, NULL, 0) < 0 || farm__rd_left(&back) || m2.subid != m.subid ||
      m2.status != m.status || !SAME(m2.out, m2.nout, m.out, m.nout) ||
      !SAME(m2.block, m2.nblock, m.block, m.nblock) || !SAME(m2.tb, m2.ntb, m.tb, m.ntb) ||
      !SAME(m2.val, m2.nval, m.val, m.nval) || !SAME(m2.where, m2.nwhere, m.where, m.nwhere)) abort();
}

static void one_share(farm_rd *r) {
  farm_msg_share m, m2;
  int rc = farm__proto_get_share(r, &m, NULL, 0);
  check_failed(r, rc);
  if (rc < 0) return;
  w.n = 0;
  if (farm__proto_put_share(&w, &m) < 0) abort();
  reread(0);
  if (farm__proto_get_share(&back, &m2, NULL, 0) < 0 || farm__rd_left(&back) || m2.kind != m.kind ||
      m2.xbits != m.xbits || !SAME(m2.name, m2.nname, m.name, m.nname) ||
      !SAME(m2.block, m2.nblock, m.block, m.nblock)) abort();
}

static void one_id(farm_rd *r) {
  uint64_t id, id2;
  int rc = farm__proto_get_id(r, &id, NULL, 0);
  check_failed(r, rc);
  if (rc < 0) return;
  w.n = 0;
  if (farm__proto_put_id(&w, id) < 0) abort();
  reread(0);
  if (farm__proto_get_id(&back, &id2, NULL, 0) < 0 || farm__rd_left(&back) || id2 != id) abort();
}

/* A list: its items one by one, as a receiver takes them. */
static void list(farm_rd *r, uint32_t count, void (*item)(farm_rd *)) {
  for (uint32_t i = 0; i < count && !r->err; i++) item(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  static const uint8_t types[16] = { FARM_MSG_HELLO, FARM_MSG_JOBS, FARM_MSG_RESULTS, FARM_MSG_QUIT,
                                     FARM_MSG_TAKE, FARM_MSG_TAKEN, FARM_MSG_SUSPENDED, FARM_MSG_SUBMIT,
                                     FARM_MSG_SUBDONE, FARM_MSG_BEAT, FARM_MSG_KILL, FARM_MSG_SHARE,
                                     FARM_MSG_SETUPFAIL, FARM_MSG_FILE, FARM_MSG_STARTED, FARM_MSG_RESULTS };
  int type = types[data[0] & 15];
  farm_buf in;
  farm__buf_init(&in);
  farm__buf_init(&w);
  farm__msg_begin(&in, type);
  farm__buf_put(&in, data + 1, size - 1);
  farm_rd r;
  char err[200];
  if (farm__msg_open(&r, in.p, in.n, err, sizeof err) != type) abort();
  uint32_t count = 0;
  int rc;
  switch (type) {
  case FARM_MSG_HELLO: {
    farm_msg_hello m, m2;
    rc = farm__proto_get_hello(&r, &m, err, sizeof err);
    check_failed(&r, rc);
    if (rc < 0) break;
    if (farm__proto_put_hello(&w, &m) < 0) abort();
    reread(1);
    if (farm__proto_get_hello(&back, &m2, NULL, 0) < 0 || m2.pid != m.pid || m2.slot != m.slot ||
        m2.capacity != m.capacity || m2.beat_ms != m.beat_ms || m2.clients != m.clients) abort();
    break;
  }
  case FARM_MSG_JOBS: {
    farm_msg_jobs h;
    if (farm__proto_get_jobs(&r, &h, err, sizeof err) == 0) list(&r, h.count, one_job);
    break;
  }
  case FARM_MSG_RESULTS:
    if (farm__proto_get_list(&r, &count, err, sizeof err) < 0) break;
    list(&r, count, one_result);
    if (!r.err && farm__rd_left(&r)) {       /* the times */
      double sent, a, b;
      if (farm__proto_get_sent(&r, &sent, NULL, 0) == 0)
        for (uint32_t i = 0; i < count && farm__proto_get_time(&r, &a, &b, NULL, 0) == 0; i++) {}
    }
    farm__proto_end(&r, "RESULTS", err, sizeof err);
    break;
  case FARM_MSG_TAKE: case FARM_MSG_TAKEN: case FARM_MSG_STARTED:
    if (farm__proto_get_list(&r, &count, err, sizeof err) == 0) list(&r, count, one_id);
    break;
  case FARM_MSG_SUBMIT:
    if (farm__proto_get_list(&r, &count, err, sizeof err) == 0) list(&r, count, one_submit);
    break;
  case FARM_MSG_SUBDONE:
    if (farm__proto_get_list(&r, &count, err, sizeof err) == 0) list(&r, count, one_subdone);
    break;
  case FARM_MSG_SHARE:
    if (farm__proto_get_list(&r, &count, err, sizeof err) == 0) list(&r, count, one_share);
    break;
  case FARM_MSG_SUSPENDED: {
    uint64_t k, id, k2, id2;
    if (farm__proto_get_suspended(&r, &k, &id, err, sizeof err) < 0) break;
    if (farm__proto_put_suspended(&w, k, id) < 0) abort();
    reread(1);
    if (farm__proto_get_suspended(&back, &k2, &id2, NULL, 0) < 0 || k2 != k || id2 != id) abort();
    break;
  }
  case FARM_MSG_BEAT: {
    farm_msg_beat m, m2;
    rc = farm__proto_get_beat(&r, &m, err, sizeof err);
    check_failed(&r, rc);
    if (farm__proto_put_beat(&w, &m) < 0) abort();      /* what read, even before a bad part */
    reread(1);
    if (farm__proto_get_beat(&back, &m2, NULL, 0) < 0 || m2.n != m.n || m2.beat_ms != m.beat_ms ||
        m2.clients != m.clients) abort();
    break;
  }
  case FARM_MSG_KILL: {
    uint64_t id, id2;
    if (farm__proto_get_kill(&r, &id, err, sizeof err) < 0) break;
    if (farm__proto_put_kill(&w, id) < 0) abort();
    reread(1);
    if (farm__proto_get_kill(&back, &id2, NULL, 0) < 0 || id2 != id) abort();
    break;
  }
  case FARM_MSG_STOP: {
    uint64_t id, id2;
    if (farm__proto_get_stop(&r, &id, err, sizeof err) < 0) break;
    if (farm__proto_put_stop(&w, id) < 0) abort();
    reread(1);
    if (farm__proto_get_stop(&back, &id2, NULL, 0) < 0 || id2 != id) abort();
    break;
  }
  case FARM_MSG_PARTIAL: {
    uint64_t id, id2;
    const char *p, *p2;
    size_t n, n2;
    if (farm__proto_get_partial(&r, &id, &p, &n, err, sizeof err) < 0) break;
    if (farm__proto_put_partial(&w, id, p, n) < 0) abort();
    reread(1);
    if (farm__proto_get_partial(&back, &id2, &p2, &n2, NULL, 0) < 0 || id2 != id || n2 != n ||
        (n && memcmp(p, p2, n) != 0)) abort();
    break;
  }
  case FARM_MSG_SETUPFAIL: {
    const char *m, *m2;
    size_t n, n2;
    if (farm__proto_get_setupfail(&r, &m, &n, err, sizeof err) < 0) break;
    if (farm__proto_put_setupfail(&w, m, n) < 0) abort();
    reread(1);
    if (farm__proto_get_setupfail(&back, &m2, &n2, NULL, 0) < 0 || !SAME(m2, n2, m, n)) abort();
    break;
  }
  case FARM_MSG_FILE: {
    farm_msg_file m, m2;
    if (farm__proto_get_file(&r, &m, err, sizeof err) < 0) break;
    if (farm__proto_put_file(&w, &m) < 0) abort();
    reread(1);
    if (farm__proto_get_file(&back, &m2, NULL, 0) < 0 || m2.id != m.id || m2.dev != m.dev ||
        m2.ino != m.ino || !SAME(m2.path, m2.npath, m.path, m.npath) ||
        !SAME(m2.data, m2.ndata, m.data, m.ndata)) abort();
    break;
  }
  default:                                   /* QUIT: nothing to read but its end */
    farm__proto_end(&r, "QUIT", err, sizeof err);
  }
  farm__buf_free(&w);
  farm__buf_free(&in);
  return 0;
}
