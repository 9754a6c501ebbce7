/*
 * journal.c -- `farm run SCRIPT --journal FILE` (journal.h): a run that
 * survives its client. Each job's final result is appended to FILE durably
 * before the script sees it; the same command run again gives every job whose
 * call was recorded its recorded result at submit, without a worker, so the
 * script prints what it would have and no finished job runs again.
 *
 * The file (all integers little-endian), append-only:
 *   header  "FARMJRN1" | u32 format (1) | u32 FARM_PROTOCOL
 *           | script hash (32) | arguments hash (32) | checksum (32)
 *   record  u32 len | body (len bytes) | checksum (32) of len and body
 *   body    call (32) | u8 status (0 done, 1 failed) | u8 untrusted | u8 flags
 *           (1: a traceback, 2: an error value) | then as uvar length + bytes:
 *           result (or error message), traceback, error value, what it printed,
 *           where it ran
 * Checksums and hashes are BLAKE2b-256 (crypto_generichash). The script hash
 * is over its absolute path and the text farm run read; the arguments hash
 * over the script's arguments (cli.c makes both). A record's call is the hash
 * of the function's package hash (the one workers cache functions by), the
 * job's mode and its encoded arguments. The journal is made mode 0600 and
 * held with flock while a run uses it (a second run is refused).
 *
 * Reading (at open): a header that is not ours, or names another script or
 * other arguments, is refused with one line. A last record that ends past the
 * end of the file, or whose checksum fails while it ends exactly at the end
 * (the client died mid-write, or the machine lost the unsynced tail), is cut
 * off silently; a record that fails its checksum with more after it is damage
 * in the middle: one line naming the file and byte. The records are kept in
 * memory (the file is read whole) and looked up by call.
 *
 * Matching: a record is taken once. Two identical calls (same function, same
 * encoded arguments) each take one record of that call, in the order they
 * were recorded; identical calls have interchangeable results, so it does not
 * matter which. A call with no record left runs. A record this run never
 * takes is fine; the number of them is said once at the end (changed
 * arguments?). Arguments are compared as encoded: a table with string keys
 * may encode its keys in another order in another run (Lua's hash order), and
 * then its job simply runs again.
 *
 * What is recorded: results a worker returned, done or failed with an error
 * (after retries: a failure is final when a worker reports it). Not cancelled
 * jobs, nor jobs the engine failed itself (timed out, their worker died every
 * time, lost with a node, the farm closed): they run again. Not a job's
 * sub-jobs (their parent's result is what counts).
 *
 * Durability: the engine (engine.c on_results) hands each RESULTS message's
 * final results to farm__journal_add and finishes those jobs only after
 * farm__journal_sync wrote them with one write() and one fdatasync(). A
 * RESULTS message is the natural group: many small jobs come back in one, so
 * there is one fsync per message, not per job, with no timer and no window in
 * which the script has seen a result that the journal could lose. A failed
 * write (disk full) stops the journal with one line; results still reach the
 * script (those jobs would run again next time).
 *
 * Trust: the journal is the user's own file, as trusted as the script: one
 * that belongs to another user or that others may write is refused, as is a
 * symbolic link (O_NOFOLLOW: a link planted in /tmp cannot point farm at
 * another file), and farm never writes over a file that is not a journal. A
 * result recorded from a node keeps its untrusted mark and is decoded as
 * untrusted again.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <libgen.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sodium.h>
#include "buf.h"
#include "hash.h"
#include "journal.h"

#define MAGIC "FARMJRN1"
#define FORMAT 1
#define SUMLEN 32
#define HEADER_LEN (8 + 4 + 4 + FARM_JOURNAL_IDLEN + SUMLEN)
#define BODY_MIN (SUMLEN + 3 + 5)  /* call, three bytes, five empty lengths */
#define RECORD_MAX (1u << 30)

struct rec {
  unsigned char call[SUMLEN];
  uint8_t status, untrusted, flags, used;
  const char *res, *tb, *val, *out, *where;
  size_t nres, ntb, nval, nout, nwhere;
  struct rec *same, *last;         /* the records of calls that share a key, in order (last: the head's) */
};

struct farm_journal {
  char path[PATH_MAX];
  int fd;
  char *data;                      /* the file as read: records point into it */
  struct rec *recs;
  size_t nrecs, nused;
  farm_hash bykey;                 /* the call's first 8 bytes -> the first record of that key */
  farm_buf batch;                  /* records not yet written */
  farm_journal_held *held;
  size_t nheld, capheld;
  int stopped, said;
  char err[PATH_MAX + 200];
};

static void put32(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8);
  p[2] = (unsigned char)(v >> 16); p[3] = (unsigned char)(v >> 24);
}
static uint32_t get32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t key_of(const unsigned char *call) {
  uint64_t k;
  memcpy(&k, call, sizeof k);
  return k;
}

static void call_hash(const farm_job *j, unsigned char out[SUMLEN]) {
  crypto_generichash_state st;
  crypto_generichash_init(&st, NULL, 0, SUMLEN);
  unsigned char mode = j->mode;
  crypto_generichash_update(&st, j->fn->hash, FARM_HASHLEN);
  crypto_generichash_update(&st, &mode, 1);
  crypto_generichash_update(&st, (const unsigned char *)j->args, j->nargs);
  crypto_generichash_final(&st, out, SUMLEN);
}

static int write_all(int fd, const void *p, size_t n) {
  const char *c = p;
  while (n) {
    ssize_t k = write(fd, c, n);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return -1;
    c += k;
    n -= (size_t)k;
  }
  return 0;
}

/* The directory entry of a file just made is durable too. */
static void sync_dir(const char *path) {
  char copy[PATH_MAX];
  snprintf(copy, sizeof copy, "%s", path);
  int dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) { fsync(dfd); close(dfd); }
}

static int fail(char *err, size_t errlen, const char *path, const char *what) {
  snprintf(err, errlen, "journal %s %s", path, what);
  return -1;
}

/* The records after the header; cuts a torn tail off. */
static int read_records(farm_journal *jn, size_t size, char *err, size_t errlen) {
  size_t off = HEADER_LEN, cap = 0;
  const unsigned char *d = (const unsigned char *)jn->data;
  farm__hash_init(&jn->bykey);
  while (off < size) {
    if (size - off < 4) break;                   /* torn */
    uint32_t len = get32(d + off);
    size_t total = 4 + (size_t)len + SUMLEN;
    if (len > RECORD_MAX || total > size - off) break;   /* torn: it ends past the end */
    unsigned char sum[SUMLEN];
    crypto_generichash(sum, SUMLEN, d + off, 4 + (size_t)len, NULL, 0);
    int bad = sodium_memcmp(sum, d + off + 4 + len, SUMLEN) != 0;
    if (bad && off + total == size) break;       /* the last one, half written */
    farm_rd r;
    farm__rd_init(&r, d + off + 4, len);
    struct rec x;
    memset(&x, 0, sizeof x);
    if (!bad && len >= BODY_MIN) {
      memcpy(x.call, farm__rd_bytes(&r, SUMLEN), SUMLEN);
      x.status = farm__rd_u8(&r);
      x.untrusted = farm__rd_u8(&r);
      x.flags = farm__rd_u8(&r);
      x.res = farm__rd_str(&r, &x.nres);
      x.tb = farm__rd_str(&r, &x.ntb);
      x.val = farm__rd_str(&r, &x.nval);
      x.out = farm__rd_str(&r, &x.nout);
      x.where = farm__rd_str(&r, &x.nwhere);
    }
    if (bad || len < BODY_MIN || r.err || farm__rd_left(&r) || x.status > 1) {
      char what[200];
      snprintf(what, sizeof what, "is damaged at byte %zu (a record does not match its checksum); "
               "remove it (its jobs run again) or pass another --journal", off);
      return fail(err, errlen, jn->path, what);
    }
    if (jn->nrecs == cap) {
      cap = cap ? 2 * cap : 64;
      struct rec *v = realloc(jn->recs, cap * sizeof *v);
      if (!v) return fail(err, errlen, jn->path, "cannot be read: out of memory");
      jn->recs = v;
    }
    jn->recs[jn->nrecs++] = x;
    off += total;
  }
  for (size_t i = 0; i < jn->nrecs; i++) {       /* (recs no longer moves) */
    struct rec *x = &jn->recs[i];
    struct rec *head = farm__hash_get(&jn->bykey, key_of(x->call));
    if (!head) {
      x->last = x;
      if (farm__hash_put(&jn->bykey, key_of(x->call), x) < 0)
        return fail(err, errlen, jn->path, "cannot be read: out of memory");
    } else {
      head->last->same = x;
      head->last = x;
    }
  }
  if (off < size) {                              /* a torn tail goes */
    if (ftruncate(jn->fd, (off_t)off) < 0 || fdatasync(jn->fd) < 0) {
      char what[200];
      snprintf(what, sizeof what, "cannot be repaired: %s", strerror(errno));
      return fail(err, errlen, jn->path, what);
    }
  }
  return 0;
}

static int read_all(int fd, char **out, size_t *n) {
  struct stat st;
  if (fstat(fd, &st) < 0) return -1;
  if (!S_ISREG(st.st_mode)) { errno = EINVAL; return -1; }
  size_t size = (size_t)st.st_size, got = 0;
  char *p = malloc(size ? size : 1);
  if (!p) { errno = ENOMEM; return -1; }
  while (got < size) {
    ssize_t k = pread(fd, p + got, size - got, (off_t)got);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) { free(p); if (k == 0) errno = EIO; return -1; }
    got += (size_t)k;
  }
  *out = p;
  *n = size;
  return 0;
}

int farm__journal_open(farm_journal **out, const char *path, const unsigned char *id,
                       char *err, size_t errlen) {
  *out = NULL;
  farm_journal *jn = calloc(1, sizeof *jn);
  if (!jn) return fail(err, errlen, path, "cannot be opened: out of memory");
  snprintf(jn->path, sizeof jn->path, "%s", path);
  farm__buf_init(&jn->batch);
  char what[300];
  struct stat st;
  int existed = stat(path, &st) == 0;
  jn->fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (jn->fd < 0) {
    if (errno == ELOOP)
      snprintf(what, sizeof what, "is a symbolic link (farm does not follow one there; pass the file's own path)");
    else if (errno == ENOENT)
      snprintf(what, sizeof what, "cannot be made: its directory does not exist (make it first, or pass another --journal)");
    else
      snprintf(what, sizeof what, "cannot be opened: %s (pass another --journal)", strerror(errno));
    goto bad;
  }
  if (fstat(jn->fd, &st) == 0 && S_ISREG(st.st_mode) && (st.st_uid != geteuid() || (st.st_mode & 022))) {
    /* its records are decoded as the script's own: nobody else may have written them */
    snprintf(what, sizeof what, st.st_uid != geteuid() ? "belongs to another user (pass a file of your own)"
             : "may be written by others (chmod go-w it, or pass another --journal)");
    goto bad;
  }
  if (flock(jn->fd, LOCK_EX | LOCK_NB) < 0) {
    snprintf(what, sizeof what, "is in use by another farm run (wait for it to end, or pass another --journal)");
    goto bad;
  }
  size_t size;
  if (read_all(jn->fd, &jn->data, &size) < 0) {
    if (errno == EINVAL) snprintf(what, sizeof what, "is not a regular file (pass a file's path to --journal)");
    else snprintf(what, sizeof what, "cannot be read: %s", strerror(errno));
    goto bad;
  }
  const unsigned char *d = (const unsigned char *)jn->data;
  size_t m = size < 8 ? size : 8;
  if (memcmp(d, MAGIC, m) != 0) {
    snprintf(what, sizeof what, "is not a farm journal (farm will not write over it); pass another --journal");
    goto bad;
  }
  if (size < HEADER_LEN) {                       /* new, or its header never made it */
    unsigned char h[HEADER_LEN];
    memcpy(h, MAGIC, 8);
    put32(h + 8, FORMAT);
    put32(h + 12, FARM_PROTOCOL);
    memcpy(h + 16, id, FARM_JOURNAL_IDLEN);
    crypto_generichash(h + 16 + FARM_JOURNAL_IDLEN, SUMLEN, h, 16 + FARM_JOURNAL_IDLEN, NULL, 0);
    if (ftruncate(jn->fd, 0) < 0 || write_all(jn->fd, h, sizeof h) < 0 || fdatasync(jn->fd) < 0) {
      snprintf(what, sizeof what, "cannot be written: %s", strerror(errno));
      goto bad;
    }
    if (!existed) sync_dir(path);
    *out = jn;
    return 0;
  }
  unsigned char sum[SUMLEN];
  crypto_generichash(sum, SUMLEN, d, 16 + FARM_JOURNAL_IDLEN, NULL, 0);
  if (sodium_memcmp(sum, d + 16 + FARM_JOURNAL_IDLEN, SUMLEN) != 0) {
    snprintf(what, sizeof what, "is damaged at byte 0 (its header does not match its checksum); "
             "remove it (its jobs run again) or pass another --journal");
    goto bad;
  }
  if (get32(d + 8) != FORMAT || get32(d + 12) != FARM_PROTOCOL) {
    snprintf(what, sizeof what, "was written by another version of farm (journal format %u, protocol %u; "
             "this farm writes %d, %d); remove it or pass another --journal",
             get32(d + 8), get32(d + 12), FORMAT, FARM_PROTOCOL);
    goto bad;
  }
  if (memcmp(d + 16, id, 32) != 0) {
    snprintf(what, sizeof what, "was written by another script (its path or text differ); "
             "remove it or pass another --journal");
    goto bad;
  }
  if (memcmp(d + 48, id + 32, 32) != 0) {
    snprintf(what, sizeof what, "was written by another script (the same script with other arguments); "
             "remove it or pass another --journal");
    goto bad;
  }
  if (read_records(jn, size, err, errlen) < 0) { farm__journal_close(jn); return -1; }
  *out = jn;
  return 0;
bad:
  fail(err, errlen, path, what);
  farm__journal_close(jn);
  return -1;
}

int farm__journal_check(const char *path, const unsigned char *id, char *err, size_t errlen) {
  farm_journal *jn;
  if (farm__journal_open(&jn, path, id, err, errlen) < 0) return -1;
  jn->nused = jn->nrecs;                         /* (nothing to say) */
  farm__journal_close(jn);
  return 0;
}

size_t farm__journal_close(farm_journal *jn) {
  if (!jn) return 0;
  size_t left = jn->nrecs - jn->nused;
  if (jn->fd >= 0) close(jn->fd);                /* (the lock goes with it) */
  free(jn->data);
  free(jn->recs);
  farm__hash_free(&jn->bykey);
  farm__buf_free(&jn->batch);
  free(jn->held);
  free(jn);
  return left;
}

const char *farm__journal_path(const farm_journal *jn) { return jn->path; }

int farm__journal_replay(farm_journal *jn, farm_job *j) {
  if (!jn->nrecs || jn->nused == jn->nrecs) return 0;
  unsigned char call[SUMLEN];
  call_hash(j, call);
  struct rec *x = farm__hash_get(&jn->bykey, key_of(call));
  while (x && (x->used || memcmp(x->call, call, SUMLEN) != 0)) x = x->same;
  if (!x) return 0;
  farm__job_drop_results(j);
  farm_jobx *jx = farm__jx(j);
  jx->res = farm__dupmem(x->res, x->nres);
  jx->nres = x->nres;
  if (x->flags & 1) { jx->tb = farm__dupmem(x->tb, x->ntb); jx->ntb = x->ntb; }
  if (x->flags & 2) { jx->val = farm__dupmem(x->val, x->nval); jx->nval = x->nval; }
  if (!jx->res || ((x->flags & 1) && !jx->tb) || ((x->flags & 2) && !jx->val)) {
    farm__job_drop_results(j);
    return 0;                                    /* out of memory: it runs */
  }
  jx->out.n = 0;
  farm__buf_put(&jx->out, x->out, x->nout);
  j->untrusted = x->untrusted;
  char where[96];
  int nw = snprintf(where, sizeof where, "%.*s, as the journal recorded", (int)(x->nwhere < 60 ? x->nwhere : 60),
                    x->where ? x->where : "");
  farm__job_set_where(j, where, nw > 0 ? ((size_t)nw < sizeof where ? (size_t)nw : sizeof where - 1) : 0);
  x->used = 1;
  jn->nused++;
  return x->status ? JOB_FAILED : JOB_DONE;
}

int farm__journal_add(farm_journal *jn, farm_job *j, int state) {
  farm_jobx *jx = farm__jx(j);
  if (jn->stopped) return -1;
  if (jn->nheld == jn->capheld) {
    size_t cap = jn->capheld ? 2 * jn->capheld : 64;
    farm_journal_held *v = realloc(jn->held, cap * sizeof *v);
    if (!v) return -1;
    jn->held = v;
    jn->capheld = cap;
  }
  farm_buf *b = &jn->batch;
  size_t at = b->n;
  unsigned char call[SUMLEN];
  call_hash(j, call);
  int rc = farm__buf_put(b, "\0\0\0\0", 4);
  rc |= farm__buf_put(b, call, SUMLEN);
  rc |= farm__buf_u8(b, state == JOB_DONE ? 0 : 1);
  rc |= farm__buf_u8(b, j->untrusted);
  rc |= farm__buf_u8(b, (uint8_t)((jx->tb ? 1 : 0) | (jx->val ? 2 : 0)));
  rc |= farm__buf_str(b, jx->res, jx->nres);
  rc |= farm__buf_str(b, jx->tb, jx->ntb);
  rc |= farm__buf_str(b, jx->val, jx->nval);
  rc |= farm__buf_str(b, jx->out.p, jx->out.n);
  rc |= farm__buf_str(b, farm__job_where(j), strlen(farm__job_where(j)));
  size_t len = b->n - at - 4;
  if (!rc && len <= RECORD_MAX) rc = farm__buf_reserve(b, SUMLEN);
  if (rc || len > RECORD_MAX) { b->n = at; return -1; }   /* it is not recorded, and runs again */
  unsigned char *p = (unsigned char *)b->p + at;
  put32(p, (uint32_t)len);
  crypto_generichash(p + 4 + len, SUMLEN, p, 4 + len, NULL, 0);
  b->n += SUMLEN;
  jn->held[jn->nheld++] = (farm_journal_held){ j, state };
  return 0;
}

farm_journal_held *farm__journal_sync(farm_journal *jn, size_t *n) {
  *n = jn->nheld;
  jn->nheld = 0;
  if (!jn->batch.n) return jn->held;
  if (!jn->stopped && (write_all(jn->fd, jn->batch.p, jn->batch.n) < 0 || fdatasync(jn->fd) < 0)) {
    jn->stopped = 1;
    snprintf(jn->err, sizeof jn->err, "journal %s cannot be written (%s): the run goes on without it",
             jn->path, strerror(errno));
  }
  jn->batch.n = 0;
  return jn->held;
}

const char *farm__journal_error(farm_journal *jn) {
  if (!jn->stopped || jn->said) return NULL;
  jn->said = 1;
  return jn->err;
}
