/*
 * proto.c -- the messages on a farm link (proto.h): one writer and one reader
 * for each, and nothing else. The handshake's messages are session.c's.
 *
 * No thread of its own and no state: it runs on whichever thread sends or
 * receives (the engine's loop thread, a worker's Lua and link threads, a node's
 * main thread, a fuzzer).
 *
 * Readers face untrusted peers: every length is checked against what is left
 * before it is trusted (farm_rd does it), every field whose value decides the
 * layout (a status, a kind, an option) is checked before the layout is read on,
 * and a reader that fails parks its farm_rd at the end, so a caller that reads
 * on gets nothing. Nothing is copied and nothing allocated: what a reader hands
 * back points into the message. Writers append to a farm_buf and stop at the
 * first failure to grow it (FARM_ENOMEM: the message is not to be sent).
 */
#include <stdarg.h>
#include "proto.h"

#define COUNT_AT 4                 /* the count of a list, after the header (JOBS: later) */

static const char *const names[] = { "?", "HELLO", "JOBS", "RESULTS", "QUIT", "TAKE", "TAKEN",
                                     "SUSPENDED", "SUBMIT", "SUBDONE", "BEAT", "KILL", "SHARE",
                                     "SETUPFAIL", "FILE", "STARTED", "PARTIAL", "STOP" };

/* r is malformed: it fails (parked at its end), err says what. FARM_EPROTO. */
static int bad(farm_rd *r, char *err, size_t errlen, const char *fmt, ...)
  __attribute__((format(printf, 4, 5)));
static int bad(farm_rd *r, char *err, size_t errlen, const char *fmt, ...) {
  r->err = 1;
  r->p = r->end;
  if (err && errlen) {
    int k = snprintf(err, errlen, "malformed message: ");
    va_list ap;
    va_start(ap, fmt);
    if (k > 0 && (size_t)k < errlen) vsnprintf(err + k, errlen - (size_t)k, fmt, ap);
    va_end(ap);
  }
  return FARM_EPROTO;
}

/* ---- lists ------------------------------------------------------------------- */

int farm__proto_put_list(farm_buf *b, int type) {
  return farm__msg_begin(b, type) || farm__buf_put(b, "\0\0\0\0", 4) ? FARM_ENOMEM : 0;
}

void farm__proto_count(farm_buf *b, uint32_t count) {
  if (b->n < COUNT_AT) return;             /* (its head did not fit: it is not sent) */
  size_t at = COUNT_AT;
  if ((unsigned char)b->p[3] == FARM_MSG_JOBS) {   /* after u8(flags) uvar(pool) */
    at++;
    while (at < b->n && (b->p[at] & 0x80)) at++;
    at++;
  }
  if (at + 4 > b->n) return;
  for (int i = 0; i < 4; i++) b->p[at + i] = (char)(count >> (8 * i));
}

static uint32_t rd_u32le(farm_rd *r) {
  const unsigned char *p = farm__rd_bytes(r, 4);
  return p ? (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24 : 0;
}

int farm__proto_get_list(farm_rd *r, uint32_t *count, char *err, size_t errlen) {
  *count = rd_u32le(r);
  return r->err ? bad(r, err, errlen, "a list without its count") : 0;
}

int farm__proto_put_id(farm_buf *b, uint64_t id) { return farm__buf_uvar(b, id); }

int farm__proto_get_id(farm_rd *r, uint64_t *id, char *err, size_t errlen) {
  *id = farm__rd_uvar(r);
  return r->err ? bad(r, err, errlen, "a bad job id") : 0;
}

int farm__proto_put_ids(farm_buf *b, int type, const uint64_t *ids, uint32_t n) {
  if (farm__proto_put_list(b, type) < 0) return FARM_ENOMEM;
  for (uint32_t i = 0; i < n; i++)
    if (farm__buf_uvar(b, ids[i]) < 0) return FARM_ENOMEM;
  farm__proto_count(b, n);
  return 0;
}

int farm__proto_end(farm_rd *r, const char *what, char *err, size_t errlen) {
  if (r->err) return FARM_EPROTO;
  if (farm__rd_left(r)) return bad(r, err, errlen, "%zu bytes after %s", farm__rd_left(r), what);
  return 0;
}

int farm__proto_put_empty(farm_buf *b, int type) { return farm__msg_begin(b, type); }

/* ---- HELLO ------------------------------------------------------------------- */

int farm__proto_put_hello(farm_buf *b, const farm_msg_hello *m) {
  if (farm__msg_begin(b, FARM_MSG_HELLO) || farm__buf_uvar(b, m->pid) || farm__buf_uvar(b, m->slot) ||
      farm__buf_uvar(b, m->capacity)) return FARM_ENOMEM;
  if ((m->beat_ms || m->clients) && farm__buf_uvar(b, m->beat_ms)) return FARM_ENOMEM;
  if (m->clients && farm__buf_uvar(b, m->clients)) return FARM_ENOMEM;
  return 0;
}

int farm__proto_get_hello(farm_rd *r, farm_msg_hello *m, char *err, size_t errlen) {
  m->pid = farm__rd_uvar(r);
  m->slot = farm__rd_uvar(r);
  m->capacity = farm__rd_uvar(r);
  m->beat_ms = m->clients = 0;
  if (r->err) return bad(r, err, errlen, "HELLO cut short");
  if (m->capacity < 1 || m->capacity > 65536)
    return bad(r, err, errlen, "HELLO with a capacity of %llu", (unsigned long long)m->capacity);
  /* a node's part: read as absent when it does not read (r stays where it was) */
  farm_rd t = *r;
  uint64_t ms = farm__rd_left(&t) ? farm__rd_uvar(&t) : 0;
  uint64_t clients = farm__rd_left(&t) ? farm__rd_uvar(&t) : 0;
  if (!t.err) {
    *r = t;
    m->beat_ms = ms;
    m->clients = clients;
  }
  return 0;
}

/* ---- JOBS -------------------------------------------------------------------- */

int farm__proto_put_jobs(farm_buf *b, int forget, uint64_t pool) {
  return farm__msg_begin(b, FARM_MSG_JOBS) || farm__buf_u8(b, forget ? 1 : 0) ||
         farm__buf_uvar(b, pool) || farm__buf_put(b, "\0\0\0\0", 4) ? FARM_ENOMEM : 0;
}

int farm__proto_put_job(farm_buf *b, const farm_msg_job *m) {
  if (farm__buf_uvar(b, m->id) || farm__buf_uvar(b, m->attempt) || farm__buf_uvar(b, m->retries) ||
      farm__buf_u8(b, (uint8_t)m->mode) || farm__buf_put(b, m->hash, FARM_HASHLEN) ||
      farm__buf_u8(b, (uint8_t)(m->fn | (m->shm ? FARM_FN_SHM : 0)))) return FARM_ENOMEM;
  if (m->fn != FARM_FN_CACHED && farm__buf_str(b, m->fnb, m->nfn)) return FARM_ENOMEM;
  if (m->shm) return farm__buf_uvar(b, m->args_off) || farm__buf_uvar(b, m->nargs) ? FARM_ENOMEM : 0;
  return farm__buf_str(b, m->args, m->nargs);
}

int farm__proto_get_jobs(farm_rd *r, farm_msg_jobs *m, char *err, size_t errlen) {
  m->forget = farm__rd_u8(r) & 1;
  m->pool = farm__rd_uvar(r);
  m->count = rd_u32le(r);
  return r->err ? bad(r, err, errlen, "JOBS cut short") : 0;
}

int farm__proto_get_job(farm_rd *r, farm_msg_job *m, char *err, size_t errlen) {
  m->id = farm__rd_uvar(r);
  m->attempt = farm__rd_uvar(r);
  m->retries = farm__rd_uvar(r);
  m->mode = farm__rd_u8(r);
  m->hash = farm__rd_bytes(r, FARM_HASHLEN);
  m->fn = farm__rd_u8(r);
  m->shm = (m->fn & FARM_FN_SHM) != 0;
  m->fn &= ~FARM_FN_SHM;
  m->fnb = NULL;
  m->nfn = 0;
  m->args_off = 0;
  if (m->fn != FARM_FN_CACHED) m->fnb = farm__rd_str(r, &m->nfn);
  if (m->shm) {                    /* (offset, length) in the region: its reader checks them */
    m->args = NULL;
    m->args_off = farm__rd_uvar(r);
    uint64_t n = farm__rd_uvar(r);
    m->nargs = (size_t)n;
    if (n != (uint64_t)m->nargs) r->err = 1;
  } else {
    m->args = farm__rd_str(r, &m->nargs);
  }
  if (r->err) return bad(r, err, errlen, "a job of JOBS cut short");
  if (m->mode > FARM_MODE_MAP) return bad(r, err, errlen, "a job of JOBS in mode %d", m->mode);
  if (m->fn > FARM_FN_FRESH) return bad(r, err, errlen, "a job of JOBS with function kind %d", m->fn);
  if (m->retries > 65535)
    return bad(r, err, errlen, "a job of JOBS with %llu retries", (unsigned long long)m->retries);
  return 0;
}

/* ---- RESULTS ----------------------------------------------------------------- */

int farm__proto_put_result(farm_buf *b, const farm_msg_result *m) {
  int shm = m->shm && m->status == FARM_JOB_OK;
  if (farm__buf_uvar(b, m->id) || farm__buf_uvar(b, m->attempt) ||
      farm__buf_u8(b, (uint8_t)(shm ? FARM_JOB_OK_SHM : m->status)) ||
      farm__buf_uvar(b, (uint64_t)(m->busy * 1e9)) || farm__buf_str(b, m->out, m->nout)) return FARM_ENOMEM;
  if (shm) return farm__buf_uvar(b, m->pos) || farm__buf_uvar(b, m->nblock) ? FARM_ENOMEM : 0;
  if (farm__buf_str(b, m->block, m->nblock)) return FARM_ENOMEM;
  if (m->status == FARM_JOB_ERROR && (farm__buf_str(b, m->tb, m->ntb) || farm__buf_str(b, m->val, m->nval)))
    return FARM_ENOMEM;
  return 0;
}

int farm__proto_put_time(farm_buf *times, double began, double ended) {
  return farm__buf_uvar(times, (uint64_t)(began * 1e9)) || farm__buf_uvar(times, (uint64_t)(ended * 1e9))
         ? FARM_ENOMEM : 0;
}

int farm__proto_put_times(farm_buf *b, double now, const farm_buf *times) {
  return farm__buf_uvar(b, (uint64_t)(now * 1e9)) || farm__buf_put(b, times->p, times->n) ? FARM_ENOMEM : 0;
}

int farm__proto_put_results(farm_buf *b, uint32_t count, const farm_buf *entries, double now,
                            const farm_buf *times) {
  if (farm__proto_put_list(b, FARM_MSG_RESULTS) || farm__buf_put(b, entries->p, entries->n) ||
      farm__proto_put_times(b, now, times)) return FARM_ENOMEM;
  farm__proto_count(b, count);
  return 0;
}

int farm__proto_get_result(farm_rd *r, farm_msg_result *m, char *err, size_t errlen) {
  m->id = farm__rd_uvar(r);
  m->attempt = farm__rd_uvar(r);
  m->status = farm__rd_u8(r);
  m->busy = farm__rd_uvar(r) * 1e-9;
  m->out = farm__rd_str(r, &m->nout);
  m->tb = m->val = NULL;
  m->ntb = m->nval = 0;
  m->shm = 0;
  m->pos = 0;
  if (m->status > FARM_JOB_OK_SHM) return bad(r, err, errlen, "a result of status %d", m->status);
  if (m->status == FARM_JOB_OK_SHM) {   /* (position, length) in the region: its reader checks them */
    m->status = FARM_JOB_OK;
    m->shm = 1;
    m->block = NULL;
    m->pos = farm__rd_uvar(r);
    uint64_t n = farm__rd_uvar(r);
    m->nblock = (size_t)n;
    if (n != (uint64_t)m->nblock) r->err = 1;
  } else {
    m->block = farm__rd_str(r, &m->nblock);
  }
  if (m->status == FARM_JOB_ERROR) {
    m->tb = farm__rd_str(r, &m->ntb);
    m->val = farm__rd_str(r, &m->nval);
  }
  if (r->err) return bad(r, err, errlen, "a result of RESULTS cut short");
  if (m->busy < 0 || m->busy > 1e9) return bad(r, err, errlen, "a result busy for %g s", m->busy);
  return 0;
}

int farm__proto_get_sent(farm_rd *r, double *sent, char *err, size_t errlen) {
  *sent = farm__rd_uvar(r) * 1e-9;
  return r->err ? bad(r, err, errlen, "the times of RESULTS cut short") : 0;
}

int farm__proto_get_time(farm_rd *r, double *began, double *ended, char *err, size_t errlen) {
  *began = farm__rd_uvar(r) * 1e-9;
  *ended = farm__rd_uvar(r) * 1e-9;
  return r->err ? bad(r, err, errlen, "the times of RESULTS cut short") : 0;
}

/* ---- SUSPENDED ----------------------------------------------------------------- */

int farm__proto_put_suspended(farm_buf *b, uint64_t waiting, uint64_t id) {
  return farm__msg_begin(b, FARM_MSG_SUSPENDED) || farm__buf_uvar(b, waiting) || farm__buf_uvar(b, id)
         ? FARM_ENOMEM : 0;
}

int farm__proto_get_suspended(farm_rd *r, uint64_t *waiting, uint64_t *id, char *err, size_t errlen) {
  *waiting = farm__rd_uvar(r);
  *id = farm__rd_uvar(r);
  return r->err ? bad(r, err, errlen, "SUSPENDED cut short") : 0;
}

/* ---- SUBMIT ------------------------------------------------------------------ */

int farm__proto_put_submit(farm_buf *b, const farm_msg_submit *m) {
  int opts = (m->timeout > 0 ? 1 : 0) | (m->retries >= 0 ? 2 : 0);
  if (farm__buf_uvar(b, m->subid) || farm__buf_u8(b, (uint8_t)m->mode) || farm__buf_u8(b, (uint8_t)m->fresh) ||
      farm__buf_u8(b, (uint8_t)opts)) return FARM_ENOMEM;
  if ((opts & 1) && farm__buf_uvar(b, (uint64_t)(m->timeout * 1e6))) return FARM_ENOMEM;
  if ((opts & 2) && farm__buf_uvar(b, (uint64_t)m->retries)) return FARM_ENOMEM;
  return farm__buf_str(b, m->fnb, m->nfn) || farm__buf_str(b, m->args, m->nargs) ? FARM_ENOMEM : 0;
}

int farm__proto_get_submit(farm_rd *r, farm_msg_submit *m, char *err, size_t errlen) {
  m->subid = farm__rd_uvar(r);
  m->mode = farm__rd_u8(r);
  m->fresh = farm__rd_u8(r);
  int opts = farm__rd_u8(r);
  uint64_t timeout_us = opts & 1 ? farm__rd_uvar(r) : 0, retries = opts & 2 ? farm__rd_uvar(r) : 0;
  m->fnb = farm__rd_str(r, &m->nfn);
  m->args = farm__rd_str(r, &m->nargs);
  if (r->err) return bad(r, err, errlen, "a job of SUBMIT cut short");
  if (m->mode > FARM_MODE_MAP || m->fresh > 1 || opts > 3)
    return bad(r, err, errlen, "a job of SUBMIT with mode %d, fresh %d, options %d", m->mode, m->fresh, opts);
  if (retries > 1000 || timeout_us > (uint64_t)1e15)
    return bad(r, err, errlen, "a job of SUBMIT with %llu retries or a timeout of %llu µs",
               (unsigned long long)retries, (unsigned long long)timeout_us);
  m->timeout = timeout_us * 1e-6;
  m->retries = opts & 2 ? (int)retries : -1;
  return 0;
}

/* ---- SUBDONE ----------------------------------------------------------------- */

int farm__proto_put_subdone(farm_buf *b, const farm_msg_subdone *m) {
  if (farm__buf_uvar(b, m->subid) || farm__buf_u8(b, (uint8_t)m->status) || farm__buf_str(b, m->out, m->nout) ||
      farm__buf_str(b, m->block, m->nblock)) return FARM_ENOMEM;
  if (m->status == 1 && (farm__buf_str(b, m->tb, m->ntb) || farm__buf_str(b, m->val, m->nval)))
    return FARM_ENOMEM;
  return farm__buf_str(b, m->where, m->nwhere);
}

int farm__proto_get_subdone(farm_rd *r, farm_msg_subdone *m, char *err, size_t errlen) {
  m->subid = farm__rd_uvar(r);
  m->status = farm__rd_u8(r);
  m->out = farm__rd_str(r, &m->nout);
  m->block = farm__rd_str(r, &m->nblock);
  m->tb = m->val = NULL;
  m->ntb = m->nval = 0;
  if (m->status == 1) {
    m->tb = farm__rd_str(r, &m->ntb);
    m->val = farm__rd_str(r, &m->nval);
  }
  m->where = farm__rd_str(r, &m->nwhere);
  if (r->err) return bad(r, err, errlen, "an entry of SUBDONE cut short");
  if (m->status > 2) return bad(r, err, errlen, "an entry of SUBDONE of status %d", m->status);
  return 0;
}

/* ---- BEAT -------------------------------------------------------------------- */

int farm__proto_put_beat(farm_buf *b, const farm_msg_beat *m) {
  if (farm__msg_begin(b, FARM_MSG_BEAT)) return FARM_ENOMEM;
  if (m->n >= 1 && farm__buf_uvar(b, m->beat_ms)) return FARM_ENOMEM;
  if (m->n >= 2 && farm__buf_uvar(b, m->clients)) return FARM_ENOMEM;
  return 0;
}

int farm__proto_get_beat(farm_rd *r, farm_msg_beat *m, char *err, size_t errlen) {
  m->n = 0;
  m->beat_ms = m->clients = 0;
  if (!farm__rd_left(r)) return 0;
  m->beat_ms = farm__rd_uvar(r);
  if (r->err) return bad(r, err, errlen, "BEAT with a bad heartbeat");
  m->n = 1;
  if (!farm__rd_left(r)) return 0;
  m->clients = farm__rd_uvar(r);
  if (r->err) return bad(r, err, errlen, "BEAT with a bad count of clients");
  m->n = 2;
  return 0;
}

/* ---- KILL -------------------------------------------------------------------- */

int farm__proto_put_kill(farm_buf *b, uint64_t id) {
  return farm__msg_begin(b, FARM_MSG_KILL) || farm__buf_uvar(b, id) ? FARM_ENOMEM : 0;
}

int farm__proto_get_kill(farm_rd *r, uint64_t *id, char *err, size_t errlen) {
  *id = farm__rd_uvar(r);
  return r->err ? bad(r, err, errlen, "KILL without a job id") : 0;
}

/* ---- SHARE ------------------------------------------------------------------- */

int farm__proto_put_share(farm_buf *b, const farm_msg_share *m) {
  if (farm__buf_u8(b, (uint8_t)m->kind) || farm__buf_str(b, m->name, m->nname)) return FARM_ENOMEM;
  if (m->kind != FARM_SHARE_XFILE) return farm__buf_str(b, m->block, m->nblock);
  return farm__buf_uvar(b, (uint64_t)m->nblock + 1) || farm__buf_u8(b, (uint8_t)m->xbits) ||
         farm__buf_put(b, m->block, m->nblock) ? FARM_ENOMEM : 0;
}

int farm__proto_get_share(farm_rd *r, farm_msg_share *m, char *err, size_t errlen) {
  m->kind = farm__rd_u8(r);
  m->name = farm__rd_str(r, &m->nname);
  m->block = farm__rd_str(r, &m->nblock);
  m->xbits = 0;
  if (r->err) return bad(r, err, errlen, "an item of SHARE cut short");
  if (m->kind < FARM_SHARE_VALUE || m->kind > FARM_SHARE_XFILE)
    return bad(r, err, errlen, "an item of SHARE of kind %d", m->kind);
  if (m->kind == FARM_SHARE_XFILE) {       /* u8(execute bits), then the content */
    if (!m->nblock) return bad(r, err, errlen, "a program of SHARE without its execute bits");
    m->xbits = (unsigned char)m->block[0];
    m->block++;
    m->nblock--;
  }
  return 0;
}

/* ---- SETUPFAIL --------------------------------------------------------------- */

int farm__proto_put_setupfail(farm_buf *b, const char *msg, size_t n) {
  return farm__msg_begin(b, FARM_MSG_SETUPFAIL) || farm__buf_str(b, msg, n) ? FARM_ENOMEM : 0;
}

int farm__proto_get_setupfail(farm_rd *r, const char **msg, size_t *n, char *err, size_t errlen) {
  *msg = farm__rd_str(r, n);
  return r->err ? bad(r, err, errlen, "SETUPFAIL without its message") : 0;
}

/* ---- FILE -------------------------------------------------------------------- */

int farm__proto_put_file(farm_buf *b, const farm_msg_file *m) {
  return farm__msg_begin(b, FARM_MSG_FILE) || farm__buf_uvar(b, m->id) || farm__buf_uvar(b, m->dev) ||
         farm__buf_uvar(b, m->ino) || farm__buf_str(b, m->path, m->npath) ||
         farm__buf_str(b, m->data, m->ndata) ? FARM_ENOMEM : 0;
}

int farm__proto_get_file(farm_rd *r, farm_msg_file *m, char *err, size_t errlen) {
  m->id = farm__rd_uvar(r);
  m->dev = farm__rd_uvar(r);
  m->ino = farm__rd_uvar(r);
  m->path = farm__rd_str(r, &m->npath);
  m->data = farm__rd_str(r, &m->ndata);
  return r->err ? bad(r, err, errlen, "FILE cut short") : 0;
}

/* ---- PARTIAL, STOP ----------------------------------------------------------------- */

int farm__proto_put_partial(farm_buf *b, uint64_t id, const char *block, size_t n) {
  return farm__msg_begin(b, FARM_MSG_PARTIAL) || farm__buf_uvar(b, id) || farm__buf_str(b, block, n)
         ? FARM_ENOMEM : 0;
}

int farm__proto_get_partial(farm_rd *r, uint64_t *id, const char **block, size_t *n, char *err, size_t errlen) {
  *id = farm__rd_uvar(r);
  *block = farm__rd_str(r, n);
  return r->err ? bad(r, err, errlen, "PARTIAL cut short") : 0;
}

int farm__proto_put_stop(farm_buf *b, uint64_t id) {
  return farm__msg_begin(b, FARM_MSG_STOP) || farm__buf_uvar(b, id) ? FARM_ENOMEM : 0;
}

int farm__proto_get_stop(farm_rd *r, uint64_t *id, char *err, size_t errlen) {
  *id = farm__rd_uvar(r);
  return r->err ? bad(r, err, errlen, "STOP without a job id") : 0;
}

const char *farm__proto_name(int type) {
  if (type > 0 && type < (int)(sizeof names / sizeof *names)) return names[type];
  if (type >= FARM_MSG_AUTH1 && type <= FARM_MSG_AUTHOK) return "a handshake message";
  return NULL;
}
