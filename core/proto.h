/*
 * proto.h -- the messages on a farm link.
 *
 * Every message starts with 'F' 'm' VERSION TYPE, so a peer that speaks another
 * protocol version is told so ("protocol version 4, this node speaks 3") instead
 * of being fed garbage. Bodies are built from buf.h primitives and codec blocks:
 *
 *   HELLO    w->c  uvar(pid) uvar(slot) uvar(capacity) [uvar(heartbeat ms) uvar(clients): a node's]
 *   JOBS     c->w  u8(flags: 1 = forget cached functions) uvar(the pool's capacity) u32le(count)
 *                  count * { uvar(id) uvar(attempt) u8(mode) hash[16]
 *                            u8(fn: FN_CACHED | FN_KEEP | FN_FRESH)
 *                            [str(fn block)] str(args block) }
 *   RESULTS  w->c  u32le(count) count * { uvar(id) uvar(attempt) u8(status)
 *                  uvar(busy ns) str(stdout) (status 0: str(block)
 *                                             | status 1: str(message) str(traceback)
 *                                                         str(raised value block, or empty)) }
 *                  [uvar(now ns) count * { uvar(began ns) uvar(ended ns) }]: the times,
 *                  optional, on the sender's monotonic clock: when each job first
 *                  began and when it ended there, and when the message went. A
 *                  receiver on another host shifts them by (its now - the sender's now).
 *   QUIT     c->w  (empty)
 *   TAKE     c->w  u32le(count) count * uvar(id): give these jobs back unless they
 *                  have started. Answered at once, even while a job runs (the
 *                  worker's link thread answers), by exactly one TAKEN, in order.
 *   TAKEN    w->c  u32le(count) count * uvar(id): the ids of the last TAKE that were
 *                  given back (they will never run there); the others had started.
 *   SUSPENDED w->c uvar(n) uvar(id): n of its jobs wait on sub-jobs (their slots are
 *                  free); job id has just begun to wait, or goes on.
 *   SUBMIT   w->c  u32le(count) count * { uvar(subid) u8(mode) u8(fresh) u8(options: 1 a
 *                  timeout, 2 retries) [uvar(timeout µs)] [uvar(retries)] str(fn block)
 *                  str(args block) }: jobs a job submitted, for the client's scheduler.
 *   BEAT     both  [uvar(heartbeat ms) [uvar(clients)]]: a node link's heartbeat, sent when
 *                  nothing else went for a while (each says its interval: silence is judged by
 *                  the slower side; a node's says how many clients it serves now)
 *   KILL     c->n  uvar(id): stop that job at once (out of time, or cancelled by force);
 *                  its result, if it comes, is not wanted
 *   AUTH1..AUTHOK: the handshake on a node link or lobby, before it is sealed (session.h)
 *   SHARE    c->w  u32le(count) count * { u8(kind) str(name) str(block) }: what every job
 *                  of the pool may use, sent once to each peer before the first JOBS
 *                  that follows it (a fresh peer gets them all again), in the order
 *                  they were made. Kinds: SHARE_VALUE (farm.shared.name = the value
 *                  block), SHARE_SETUP (farm.on_node: a block of one table
 *                  {setup=, cleanup=, args=}), SHARE_FILE (a file by its relative
 *                  path: only to nodes, which put it in their jobs' directory),
 *                  SHARE_LIMIT (name "max_file": the largest file, in decimal),
 *                  SHARE_XFILE (as SHARE_FILE, for a file someone may execute: the
 *                  block is u8(its execute bits, mode & 0111) then the content; the
 *                  node sets those bits and no others, never setuid or setgid. A
 *                  kind of its own, so a node that cannot keep them refuses the
 *                  SHARE rather than write a file that would not run).
 *   SETUPFAIL w->c str(message): the pool's setup function failed here; the worker
 *                  runs no job from now on and waits to be told to QUIT
 *   FILE     w->c  uvar(id) uvar(dev) uvar(ino) str(path) str(content): a job's
 *                  farm.send_file, for the client's --dest directory (dev and ino
 *                  say which file it was, so a local one is not copied onto itself)
 *   STARTED  n->c  u32le(count) count * uvar(id): these of the client's jobs have begun on
 *                  the node (sent with its results, by a node only: a local worker's
 *                  client reads its state page, and drops one that sends it)
 *   SUBDONE  c->w  u32le(count) count * { uvar(subid) u8(status: 0 ok, 1 error, 2 cancelled)
 *                  str(stdout) str(block | message) [status 1: str(traceback) str(value)]
 *                  str(where) }
 *
 * A job's mode is CALL (fn(args...), all results) or MAP (args are n, then one
 * slice per list; the worker calls fn on each row and returns one table of the
 * first results). A function block is cached by hash (FN_KEEP: keep it, FN_CACHED:
 * only the hash travels) when the function has no upvalue values of its own;
 * a closure with upvalues travels whole with every job (FN_FRESH) and every job
 * gets a closure of its own, so no job sees another's upvalues.
 */
#ifndef FARM_PROTO_H
#define FARM_PROTO_H
#include <stdint.h>
#include <string.h>
#include <stdio.h>
#include "farm.h"
#include "buf.h"

enum { FARM_MSG_HELLO = 1, FARM_MSG_JOBS, FARM_MSG_RESULTS, FARM_MSG_QUIT, FARM_MSG_TAKE,
       FARM_MSG_TAKEN, FARM_MSG_SUSPENDED, FARM_MSG_SUBMIT, FARM_MSG_SUBDONE,
       FARM_MSG_BEAT, FARM_MSG_KILL, FARM_MSG_SHARE, FARM_MSG_SETUPFAIL, FARM_MSG_FILE,
       FARM_MSG_STARTED,
       FARM_MSG_AUTH1 = 32, FARM_MSG_AUTH2, FARM_MSG_AUTH3, FARM_MSG_AUTHNO, FARM_MSG_AUTHOK };
enum { FARM_MODE_CALL = 0, FARM_MODE_MAP = 1 };
enum { FARM_SHARE_VALUE = 1, FARM_SHARE_SETUP, FARM_SHARE_FILE, FARM_SHARE_LIMIT, FARM_SHARE_XFILE };
#define FARM_MAX_FILE_DEFAULT (64u << 20)   /* files travel up to this size unless configured */
enum { FARM_JOB_OK = 0, FARM_JOB_ERROR = 1 };
enum { FARM_FN_CACHED = 0, FARM_FN_KEEP = 1, FARM_FN_FRESH = 2 };
#define FARM_HASHLEN 16

static inline int farm__msg_begin(farm_buf *b, int type) {
  b->n = 0;
  unsigned char h[4] = { 'F', 'm', FARM_PROTOCOL, (unsigned char)type };
  return farm__buf_put(b, h, 4);
}

/* Check a message's header; returns its type or a negative code with a message. */
static inline int farm__msg_open(farm_rd *r, const void *p, size_t n,
                                 char *err, size_t errlen) {
  farm__rd_init(r, p, n);
  const unsigned char *h = farm__rd_bytes(r, 4);
  if (!h || h[0] != 'F' || h[1] != 'm') {
    snprintf(err, errlen, "malformed message: not a farm message");
    return FARM_EPROTO;
  }
  if (h[2] != FARM_PROTOCOL) {
    snprintf(err, errlen, "protocol version %d, this node speaks %d", h[2], FARM_PROTOCOL);
    return FARM_EVERSION;
  }
  return h[3];
}

static inline void farm__put_u32le_at(farm_buf *b, size_t at, uint32_t v) {
  for (int i = 0; i < 4; i++) b->p[at + i] = (char)(v >> (8 * i));
}
static inline uint32_t farm__rd_u32le(farm_rd *r) {
  const unsigned char *p = farm__rd_bytes(r, 4);
  return p ? (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24 : 0;
}
#endif
