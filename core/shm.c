/*
 * shm.c -- the shared-memory regions of a client and a local worker (shm.h
 * says what goes where and why; this file is their allocators and bounds).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include "shm.h"

/* ---- the client's side --------------------------------------------------------- */

/* A sealed memfd of n bytes (close-on-exec), or -1. */
static int region_fd(const char *name, size_t n) {
  int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return -1;
  if (ftruncate(fd, (off_t)n) != 0 ||
      fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static size_t region_bytes(void) {
  const char *v = getenv("FARM_SHM_BYTES");
  if (!v || !*v) return FARM_SHM_BYTES_DEFAULT;
  char *end;
  unsigned long long n = strtoull(v, &end, 10);
  if (*end || n > (1ull << 32)) return FARM_SHM_BYTES_DEFAULT;
  return (size_t)n & ~(size_t)4095;            /* whole pages (0: none) */
}

farm_shm *farm__shm_new(int *argsfd, int *resfd) {
  *argsfd = *resfd = -1;
  size_t n = region_bytes();
  if (n < 2 * FARM_SHM_MIN) return NULL;
  farm_shm *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->args = MAP_FAILED;
  s->res = MAP_FAILED;
  int afd = region_fd("farm-args", FARM_SHM_HEAD + n), rfd = region_fd("farm-results", n);
  if (afd < 0 || rfd < 0) goto fail;
  s->args = mmap(NULL, FARM_SHM_HEAD + n, PROT_READ | PROT_WRITE, MAP_SHARED, afd, 0);
  s->res = mmap(NULL, n, PROT_READ, MAP_SHARED, rfd, 0);
  if (s->args == MAP_FAILED || s->res == MAP_FAILED) goto fail;
  s->nargs = s->nres = n;
  /* the worker's descriptor of the args region is read-only: a reopening */
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", afd);
  *argsfd = open(path, O_RDONLY | O_CLOEXEC);
  if (*argsfd < 0) goto fail;
  close(afd);
  *resfd = rfd;
  return s;
fail:
  if (afd >= 0) close(afd);
  if (rfd >= 0) close(rfd);
  farm__shm_free(s);
  return NULL;
}

void farm__shm_free(farm_shm *s) {
  if (!s) return;
  if (s->args != MAP_FAILED) munmap(s->args, FARM_SHM_HEAD + s->nargs);
  if (s->res != MAP_FAILED) munmap((void *)s->res, s->nres);
  free(s);
}

int farm__shm_put_args(farm_shm *s, uint64_t id, const void *p, size_t n, uint64_t *off) {
  if (!s || n < FARM_SHM_MIN || n > s->nargs || s->nspan == FARM_SHM_SPANS) return -1;
  uint64_t pos = s->head;
  size_t at = (size_t)(pos % s->nargs);
  if (at + n > s->nargs) { pos += s->nargs - at; at = 0; }   /* the end is skipped: contiguous */
  if (s->nspan && pos + n - s->tail > s->nargs) return -1;   /* full: the socket takes it */
  memcpy(s->args + FARM_SHM_HEAD + at, p, n);
  if (!s->nspan) s->tail = pos;                              /* (empty: it starts here) */
  unsigned k = (s->first + s->nspan++) % FARM_SHM_SPANS;
  s->span[k].id = id;
  s->span[k].pos = pos;
  s->span[k].len = n;
  s->span[k].done = 0;
  s->head = pos + n;
  *off = at;
  return 0;
}

void farm__shm_args_done(farm_shm *s, uint64_t id) {
  if (!s || !s->nspan) return;
  for (unsigned i = 0; i < s->nspan; i++) {
    unsigned k = (s->first + i) % FARM_SHM_SPANS;
    if (s->span[k].id != id || s->span[k].done) continue;
    s->span[k].done = 1;
    break;
  }
  /* the tail moves past the oldest spans that are done */
  while (s->nspan && s->span[s->first].done) {
    s->tail = s->span[s->first].pos + s->span[s->first].len;
    s->first = (s->first + 1) % FARM_SHM_SPANS;
    s->nspan--;
  }
  if (!s->nspan) s->tail = s->head;
}

int farm__shm_take_result(farm_shm *s, uint64_t pos, size_t n, char **out) {
  if (out) *out = NULL;
  if (!s) return -1;
  size_t at = (size_t)(pos % s->nres);
  if (n > s->nres - at) return -1;             /* (at < nres: no overflow) */
  if (out) {
    /* copied before anything reads it: the worker may change it meanwhile */
    char *c = malloc(n ? n : 1);
    if (c) memcpy(c, s->res + at, n);
    *out = c;
  }
  uint64_t end = pos + n;
  if (end > s->released) {
    s->released = end;
    __atomic_store_n((uint64_t *)s->args, end, __ATOMIC_RELEASE);
  }
  return 0;
}

/* ---- the worker's side ---------------------------------------------------------- */

/* The size of the sealed memfd at fd, or 0 when fd is not one. */
static size_t sealed_size(int fd) {
  int seals = fcntl(fd, F_GET_SEALS);
  struct stat st;
  if (seals < 0 || !(seals & F_SEAL_SHRINK) || fstat(fd, &st) != 0 || st.st_size <= 0) return 0;
  return (size_t)st.st_size;
}

int farm__shm_attach(farm_shm_w *w) {
  memset(w, 0, sizeof *w);
  size_t na = sealed_size(FARM_SHM_ARGS_FD), nr = sealed_size(FARM_SHM_RES_FD);
  int rc = 0;
  if (na > FARM_SHM_HEAD && nr) {
    void *a = mmap(NULL, na, PROT_READ, MAP_SHARED, FARM_SHM_ARGS_FD, 0);
    void *r = mmap(NULL, nr, PROT_READ | PROT_WRITE, MAP_SHARED, FARM_SHM_RES_FD, 0);
    if (a != MAP_FAILED && r != MAP_FAILED) {
      w->released = a;
      w->args = (const char *)a + FARM_SHM_HEAD;
      w->nargs = na - FARM_SHM_HEAD;
      w->res = r;
      w->nres = nr;
    } else {
      if (a != MAP_FAILED) munmap(a, na);
      if (r != MAP_FAILED) munmap(r, nr);
      rc = -1;
    }
  }
  /* the mappings stay; the descriptors go (a job's children never get them) */
  if (na) close(FARM_SHM_ARGS_FD);
  if (nr) close(FARM_SHM_RES_FD);
  return rc;
}

void farm__shm_detach(farm_shm_w *w) {
  if (w->args) munmap((void *)w->released, FARM_SHM_HEAD + w->nargs);
  if (w->res) munmap(w->res, w->nres);
  memset(w, 0, sizeof *w);
}

const char *farm__shm_args(const farm_shm_w *w, uint64_t off, uint64_t n) {
  if (!w->args || off > w->nargs || n > w->nargs - off) return NULL;
  return w->args + off;
}

int farm__shm_put_result(farm_shm_w *w, const void *p, size_t n, uint64_t *pos) {
  if (!w->res || w->broken || n < FARM_SHM_MIN || n > w->nres) return -1;
  uint64_t released = __atomic_load_n(w->released, __ATOMIC_ACQUIRE);
  if (released > w->head || w->head - released > w->nres) { w->broken = 1; return -1; }
  uint64_t at = w->head % w->nres, start = w->head;
  if (at + n > w->nres) { start += w->nres - at; at = 0; }
  if (released != w->head && start + n - released > w->nres) return -1;   /* full: the socket takes it */
  memcpy(w->res + at, p, n);
  w->head = start + n;
  *pos = start;
  return 0;
}
