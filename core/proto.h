/*
 * proto.h -- the messages on a farm link.
 *
 * Every message starts with 'F' 'm' VERSION TYPE, so a peer that speaks another
 * protocol version is told so ("protocol version 4, this node speaks 3") instead
 * of being fed garbage. Bodies are built from buf.h primitives and codec blocks:
 *
 *   HELLO    w->c  uvar(pid) uvar(slot) uvar(capacity) [uvar(heartbeat ms) uvar(clients): a node's]
 *   JOBS     c->w  u8(flags: 1 = forget cached functions) uvar(the pool's capacity) u32le(count)
 *                  count * { uvar(id) uvar(attempt) uvar(retries) u8(mode) hash[16]
 *                            u8(fn: FN_CACHED | FN_KEEP | FN_FRESH, + FN_SHM)
 *                            [str(fn block)] (str(args block)
 *                                             | FN_SHM: uvar(offset) uvar(length)) }
 *   RESULTS  w->c  u32le(count) count * { uvar(id) uvar(attempt) u8(status)
 *                  uvar(busy ns) str(stdout) (status 0: str(block)
 *                                             | status 2 (OK, in shared memory):
 *                                               uvar(position) uvar(length)
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
 *                  the slower side; a node's says how many clients it serves now). A node
 *                  beats at its client's interval for that session, within FARM_BEAT_MIN..MAX.
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
 *   PARTIAL  w->c, n->c  uvar(id) str(block): a provisional result of a job that runs
 *                  (farm.provide in it), to be seen in the client at once (future:partial());
 *                  a node passes its workers' on with the client's ids
 *   STOP     c->w, c->n  uvar(id): the client cancels that running job with a grace: from
 *                  now on farm.cancelled() is true in it, so that it can say a last word
 *                  (farm.provide) and return; the client stops it (KILL, or its worker) if
 *                  it has not ended when the grace is over
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
 *
 * proto.c lays out and reads every message but the handshake's (session.c); it
 * runs on whatever thread sends or receives (the engine's loop, a worker's Lua
 * and link threads, a node's main thread) and keeps no state.
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
       FARM_MSG_STARTED, FARM_MSG_PARTIAL, FARM_MSG_STOP,
       FARM_MSG_AUTH1 = 32, FARM_MSG_AUTH2, FARM_MSG_AUTH3, FARM_MSG_AUTHNO, FARM_MSG_AUTHOK };
enum { FARM_MODE_CALL = 0, FARM_MODE_MAP = 1 };
enum { FARM_SHARE_VALUE = 1, FARM_SHARE_SETUP, FARM_SHARE_FILE, FARM_SHARE_LIMIT, FARM_SHARE_XFILE };
#define FARM_MAX_FILE_DEFAULT (64u << 20)   /* files travel up to this size unless configured */
enum { FARM_JOB_OK = 0, FARM_JOB_ERROR = 1, FARM_JOB_OK_SHM = 2 /* on the wire only */ };
enum { FARM_FN_CACHED = 0, FARM_FN_KEEP = 1, FARM_FN_FRESH = 2 };
#define FARM_FN_SHM 0x80           /* JOBS' fn byte: the args block is in shared memory (shm.h) */
#define FARM_HASHLEN 16
#define FARM_BEAT_MIN 0.05         /* seconds: the heartbeats a node adopts from its client */
#define FARM_BEAT_MAX 60.0

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

/* ---- one writer and one reader for each message (proto.c) ---------------------------
 *
 * Every message is laid out and read here and nowhere else. The structs hold a
 * message's fields; a reader's pointers point into the message it read (nothing
 * is copied: they live as long as the message). Writers append to a farm_buf and
 * return 0 or FARM_ENOMEM. A message's writer begins it (farm__msg_begin: the
 * buffer is emptied) unless it writes one item of a list.
 *
 * Readers take a farm_rd past the header (farm__msg_open) and return 0, or
 * FARM_EPROTO with err naming what was malformed (err may be NULL); the reader
 * is then failed (rd->err set, parked at its end). A reader reads its fields and
 * no more: whether bytes may follow is the caller's to check (farm__proto_end),
 * as is what a field's value means to it (ids, counts against its own limits).
 *
 * Lists (JOBS, RESULTS, TAKE, TAKEN, STARTED, SUBMIT, SUBDONE, SHARE) are written
 * as a head with a count of 0, the items one by one, and farm__proto_count once
 * the count is known; they are read as the head (count), then item by item, so
 * that a receiver takes each item where it lies and a bad item stops the read
 * where it is (what the receiver took before it stays taken, as it decides).
 */

/* the head of any list but JOBS (its count is 0 until farm__proto_count) */
int  farm__proto_put_list(farm_buf *b, int type);
/* set the count of the list message in b (JOBS included) */
void farm__proto_count(farm_buf *b, uint32_t count);
/* the head of any list but JOBS: its count */
int  farm__proto_get_list(farm_rd *r, uint32_t *count, char *err, size_t errlen);
/* an item of TAKE, TAKEN or STARTED: a job's id */
int  farm__proto_put_id(farm_buf *b, uint64_t id);
int  farm__proto_get_id(farm_rd *r, uint64_t *id, char *err, size_t errlen);
/* TAKE, TAKEN or STARTED whole, from n ids */
int  farm__proto_put_ids(farm_buf *b, int type, const uint64_t *ids, uint32_t n);
/* FARM_EPROTO when bytes are left in r ("trailing bytes after TYPE") */
int  farm__proto_end(farm_rd *r, const char *what, char *err, size_t errlen);
/* "HELLO", "JOBS", ...; "a handshake message"; NULL for a type no message has */
const char *farm__proto_name(int type);
/* QUIT, and any message with no body */
int  farm__proto_put_empty(farm_buf *b, int type);

/* HELLO. A worker's says pid, slot and capacity; a node's (clients > 0) its
   heartbeat and the clients it serves too. The reader refuses a capacity
   outside 1..65536; a node part that is malformed reads as absent (0, 0). */
typedef struct farm_msg_hello {
  uint64_t pid, slot, capacity;
  uint64_t beat_ms, clients;       /* a node's; 0: not said */
} farm_msg_hello;
int farm__proto_put_hello(farm_buf *b, const farm_msg_hello *m);
int farm__proto_get_hello(farm_rd *r, farm_msg_hello *m, char *err, size_t errlen);

/* JOBS: the head (forget: the receiver forgets the functions it kept), then
   farm__proto_put_job for each job. The reader refuses more than 65535 retries. */
typedef struct farm_msg_jobs {
  int forget;
  uint64_t pool;                   /* the client's pool size */
  uint32_t count;
} farm_msg_jobs;
typedef struct farm_msg_job {
  uint64_t id, attempt;
  uint64_t retries;                /* how often more it may be tried where it killed its worker */
  int mode;                        /* FARM_MODE_* */
  const unsigned char *hash;       /* FARM_HASHLEN bytes */
  int fn;                          /* FARM_FN_*: fnb is there unless FARM_FN_CACHED */
  const char *fnb; size_t nfn;
  const char *args; size_t nargs;
  int shm;                         /* the args block is at args_off in the worker's args region
                                      (shm.h; a local worker only): args is NULL when read */
  uint64_t args_off;
} farm_msg_job;
int farm__proto_put_jobs(farm_buf *b, int forget, uint64_t pool);
int farm__proto_put_job(farm_buf *b, const farm_msg_job *m);
int farm__proto_get_jobs(farm_rd *r, farm_msg_jobs *m, char *err, size_t errlen);
int farm__proto_get_job(farm_rd *r, farm_msg_job *m, char *err, size_t errlen);

/* RESULTS: farm__proto_put_list, then an entry for each job (into the message,
   or into a buffer of entries that farm__proto_put_results makes a message of),
   then the times: farm__proto_put_times once the entries are in (the times
   themselves, two per entry in its order, gathered by farm__proto_put_time). */
typedef struct farm_msg_result {
  uint64_t id, attempt;
  int status;                      /* FARM_JOB_OK or FARM_JOB_ERROR */
  double busy;                     /* seconds (nanoseconds on the wire; at most 1e9 s) */
  const char *out; size_t nout;    /* what it printed */
  const char *block; size_t nblock;   /* OK: the values' block; ERROR: the message */
  const char *tb; size_t ntb;      /* ERROR: the traceback (NULL when OK) */
  const char *val; size_t nval;    /* ERROR: the raised value's block, or empty */
  int shm;                         /* OK: the block (nblock bytes) is at pos in the worker's
                                      results region (shm.h; a local worker only): block is
                                      NULL when read */
  uint64_t pos;
} farm_msg_result;
int farm__proto_put_result(farm_buf *b, const farm_msg_result *m);
int farm__proto_put_time(farm_buf *times, double began, double ended);
int farm__proto_put_times(farm_buf *b, double now, const farm_buf *times);
/* a whole RESULTS of count entries laid out in entries, with their times */
int farm__proto_put_results(farm_buf *b, uint32_t count, const farm_buf *entries, double now,
                            const farm_buf *times);
int farm__proto_get_result(farm_rd *r, farm_msg_result *m, char *err, size_t errlen);
/* After the entries: the times, if any (farm__rd_left says), on the sender's
   clock: when it sent the message, then when each entry's job began and ended. */
int farm__proto_get_sent(farm_rd *r, double *sent, char *err, size_t errlen);
int farm__proto_get_time(farm_rd *r, double *began, double *ended, char *err, size_t errlen);

/* SUSPENDED */
int farm__proto_put_suspended(farm_buf *b, uint64_t waiting, uint64_t id);
int farm__proto_get_suspended(farm_rd *r, uint64_t *waiting, uint64_t *id, char *err, size_t errlen);

/* SUBMIT: farm__proto_put_list, then each sub-job. The reader refuses a
   mode, option or number it does not know, more than 1000 retries or a
   timeout over 1e15 µs. */
typedef struct farm_msg_submit {
  uint64_t subid;
  int mode;                        /* FARM_MODE_* */
  int fresh;                       /* 0 or 1: the function travels whole with every job */
  double timeout;                  /* seconds (µs on the wire); 0: none */
  int retries;                     /* -1: not said (the pool's default) */
  const char *fnb; size_t nfn;
  const char *args; size_t nargs;
} farm_msg_submit;
int farm__proto_put_submit(farm_buf *b, const farm_msg_submit *m);
int farm__proto_get_submit(farm_rd *r, farm_msg_submit *m, char *err, size_t errlen);

/* SUBDONE: farm__proto_put_list, then each sub-job's end. */
typedef struct farm_msg_subdone {
  uint64_t subid;
  int status;                      /* 0 ok, 1 error, 2 cancelled */
  const char *out; size_t nout;
  const char *block; size_t nblock;   /* the values' block, or the message */
  const char *tb; size_t ntb;      /* status 1 (NULL otherwise) */
  const char *val; size_t nval;    /* status 1 */
  const char *where; size_t nwhere;
} farm_msg_subdone;
int farm__proto_put_subdone(farm_buf *b, const farm_msg_subdone *m);
int farm__proto_get_subdone(farm_rd *r, farm_msg_subdone *m, char *err, size_t errlen);

/* BEAT: n of its fields said (0, 1: the heartbeat, 2: and the clients). The
   reader keeps what it read before a malformed part (n says how much). */
typedef struct farm_msg_beat {
  int n;
  uint64_t beat_ms, clients;
} farm_msg_beat;
int farm__proto_put_beat(farm_buf *b, const farm_msg_beat *m);
int farm__proto_get_beat(farm_rd *r, farm_msg_beat *m, char *err, size_t errlen);

/* KILL */
int farm__proto_put_kill(farm_buf *b, uint64_t id);
int farm__proto_get_kill(farm_rd *r, uint64_t *id, char *err, size_t errlen);

/* SHARE: farm__proto_put_list, then each item. The reader refuses a kind it
   does not know. SHARE_XFILE's block is its content, its execute bits apart. */
typedef struct farm_msg_share {
  int kind;                        /* FARM_SHARE_* */
  unsigned xbits;                  /* SHARE_XFILE: the byte of execute bits, as sent */
  const char *name; size_t nname;
  const char *block; size_t nblock;
} farm_msg_share;
int farm__proto_put_share(farm_buf *b, const farm_msg_share *m);
int farm__proto_get_share(farm_rd *r, farm_msg_share *m, char *err, size_t errlen);

/* SETUPFAIL */
int farm__proto_put_setupfail(farm_buf *b, const char *msg, size_t n);
int farm__proto_get_setupfail(farm_rd *r, const char **msg, size_t *n, char *err, size_t errlen);

/* PARTIAL */
int farm__proto_put_partial(farm_buf *b, uint64_t id, const char *block, size_t n);
int farm__proto_get_partial(farm_rd *r, uint64_t *id, const char **block, size_t *n, char *err, size_t errlen);

/* STOP */
int farm__proto_put_stop(farm_buf *b, uint64_t id);
int farm__proto_get_stop(farm_rd *r, uint64_t *id, char *err, size_t errlen);

/* FILE */
typedef struct farm_msg_file {
  uint64_t id, dev, ino;
  const char *path; size_t npath;
  const char *data; size_t ndata;
} farm_msg_file;
int farm__proto_put_file(farm_buf *b, const farm_msg_file *m);
int farm__proto_get_file(farm_rd *r, farm_msg_file *m, char *err, size_t errlen);

#endif
