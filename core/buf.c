/*
 * buf.c -- growable byte buffers and a bounds-checked reader (see buf.h).
 *
 * Writers grow geometrically and report FARM_ENOMEM instead of aborting, so
 * the caller decides what running out of memory means. The reader never
 * trusts a length it has not checked against the bytes left: once anything is
 * out of bounds it sets r->err, stops moving and hands back zeros, so a
 * decoder can check for errors once at a convenient point instead of after
 * every read.
 *
 * Threads: none of its own; a buffer belongs to whoever holds it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include "farm.h"
#include "buf.h"

#define BUF_MIN 64

void farm__buf_init(farm_buf *b) {
  b->p = NULL;
  b->n = b->cap = 0;
}

void farm__buf_free(farm_buf *b) {
  free(b->p);
  farm__buf_init(b);
}

/* Make room for `extra` more bytes. Grows to at least twice the old capacity,
   so a long run of small writes costs amortised O(1) each. */
int farm__buf_reserve(farm_buf *b, size_t extra) {
  if (b->cap - b->n >= extra) return FARM_OK;
  if (extra > SIZE_MAX - b->n) return FARM_ENOMEM;
  size_t need = b->n + extra;
  size_t cap = b->cap < BUF_MIN ? BUF_MIN : b->cap;
  while (cap < need) {
    if (cap > SIZE_MAX / 2) { cap = need; break; }
    cap *= 2;
  }
  char *p = realloc(b->p, cap);
  if (!p) return FARM_ENOMEM;
  b->p = p;
  b->cap = cap;
  return FARM_OK;
}

int farm__buf_put(farm_buf *b, const void *p, size_t n) {
  if (n == 0) return FARM_OK;
  if (farm__buf_reserve(b, n) != FARM_OK) return FARM_ENOMEM;
  memcpy(b->p + b->n, p, n);
  b->n += n;
  return FARM_OK;
}

int farm__buf_u8(farm_buf *b, uint8_t v) {
  if (farm__buf_reserve(b, 1) != FARM_OK) return FARM_ENOMEM;
  b->p[b->n++] = (char)v;
  return FARM_OK;
}

int farm__buf_uvar(farm_buf *b, uint64_t v) {
  if (farm__buf_reserve(b, 10) != FARM_OK) return FARM_ENOMEM;
  unsigned char *q = (unsigned char *)b->p + b->n, *q0 = q;
  while (v >= 0x80) {
    *q++ = (unsigned char)(v | 0x80);
    v >>= 7;
  }
  *q++ = (unsigned char)v;
  b->n += (size_t)(q - q0);
  return FARM_OK;
}

int farm__buf_svar(farm_buf *b, int64_t v) {
  /* zigzag: 0, -1, 1, -2, ... -> 0, 1, 2, 3, ...; computed on unsigned so
     INT64_MIN does not overflow */
  uint64_t u = ((uint64_t)v << 1) ^ (uint64_t)(0 - ((uint64_t)v >> 63));
  return farm__buf_uvar(b, u);
}

int farm__buf_u64le(farm_buf *b, uint64_t v) {
  unsigned char q[8];
  for (int i = 0; i < 8; i++) q[i] = (unsigned char)(v >> (8 * i));
  return farm__buf_put(b, q, 8);
}

int farm__buf_str(farm_buf *b, const void *p, size_t n) {
  if (farm__buf_uvar(b, n) != FARM_OK) return FARM_ENOMEM;
  return farm__buf_put(b, p, n);
}

char *farm__buf_steal(farm_buf *b, size_t *n) {
  char *p = b->p;
  if (n) *n = b->n;
  farm__buf_init(b);
  return p;
}

/* ---- reader ---- */

void farm__rd_init(farm_rd *r, const void *p, size_t n) {
  r->p = p;
  r->end = r->p + n;
  r->err = 0;
}

size_t farm__rd_left(const farm_rd *r) {
  return (size_t)(r->end - r->p);
}

/* Mark the reader failed and park it at the end, so every later read fails too. */
static void rd_fail(farm_rd *r) {
  r->err = 1;
  r->p = r->end;
}

uint8_t farm__rd_u8(farm_rd *r) {
  if (r->p >= r->end) { rd_fail(r); return 0; }
  return *r->p++;
}

/* LEB128, at most 10 bytes; the tenth may only carry the top bit of 64. */
uint64_t farm__rd_uvar(farm_rd *r) {
  uint64_t v = 0;
  const unsigned char *p = r->p;
  for (int shift = 0; shift < 70; shift += 7) {
    if (p >= r->end) break;
    unsigned c = *p++;
    if (shift == 63 && c > 1) break;            /* would overflow 64 bits */
    v |= (uint64_t)(c & 0x7f) << shift;
    if (!(c & 0x80)) { r->p = p; return v; }
  }
  rd_fail(r);
  return 0;
}

int64_t farm__rd_svar(farm_rd *r) {
  uint64_t u = farm__rd_uvar(r);
  return (int64_t)((u >> 1) ^ (0 - (u & 1)));
}

uint64_t farm__rd_u64le(farm_rd *r) {
  const unsigned char *q = farm__rd_bytes(r, 8);
  uint64_t v = 0;
  if (!q) return 0;
  for (int i = 0; i < 8; i++) v |= (uint64_t)q[i] << (8 * i);
  return v;
}

const void *farm__rd_bytes(farm_rd *r, size_t n) {
  if (r->err || n > farm__rd_left(r)) { rd_fail(r); return NULL; }
  const void *q = r->p;
  r->p += n;
  return q;
}

const char *farm__rd_str(farm_rd *r, size_t *n) {
  uint64_t len = farm__rd_uvar(r);
  *n = 0;
  /* Where size_t is 64 bits, farm__rd_bytes below checks the length again, so
     a mutant of this check cannot be told (spec/mutants.txt leaves it out); it
     stays for a 32-bit size_t, where (size_t)len would cut a length of 2^32 + 1
     down to 1 and let a short read through. */
  if (r->err || len > farm__rd_left(r)) { rd_fail(r); return NULL; }
  *n = (size_t)len;
  return farm__rd_bytes(r, (size_t)len);
}

const char *farm__size_text(size_t n, char *out, size_t len) {
  if (n < 1024) snprintf(out, len, "%zu bytes", n);
  else if (n < (1u << 20)) snprintf(out, len, "%.1f KiB", n / 1024.0);
  else snprintf(out, len, "%.1f MiB", n / 1048576.0);
  return out;
}

int farm__file_take(const char *path, size_t limit, farm_buf *b, struct stat *st,
                    char *err, size_t errlen) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    snprintf(err, errlen, "cannot read %s: %s", path, strerror(e));
    errno = e;
    return -1;
  }
  int rc = -1;
  if (fstat(fd, st) < 0 || !S_ISREG(st->st_mode)) {
    snprintf(err, errlen, "%s is not a regular file", path);
    goto out;
  }
  if ((uint64_t)st->st_size > limit) {
    char have[32], max[32];
    snprintf(err, errlen, "%s is %s; files travel up to %s (farm.config{max_file = bytes} "
             "or farm run --max-file raises it)", path,
             farm__size_text((size_t)st->st_size, have, sizeof have),
             farm__size_text(limit, max, sizeof max));
    goto out;
  }
  if (!b) { rc = 0; goto out; }
  size_t len = (size_t)st->st_size, got = 0;
  if (farm__buf_reserve(b, len) < 0) { snprintf(err, errlen, "out of memory for %s", path); goto out; }
  while (got < len) {
    ssize_t k = read(fd, b->p + b->n + got, len - got);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) break;
    got += (size_t)k;
  }
  if (got != len) { snprintf(err, errlen, "%s changed while it was read", path); goto out; }
  b->n += len;
  rc = 0;
out:
  close(fd);
  return rc;
}
