/*
 * term.c -- the terminal of a client's engine (term.h). Threads: any queues
 * (mu, held for a copy); one flushes at a time (wmu, held across the writes,
 * taken before mu so that what was queued first is written first).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "buf.h"
#include "term.h"

struct farm_term {
  pthread_mutex_t mu;              /* guards q, line, dirty */
  pthread_mutex_t wmu;             /* one flush at a time; guards shown, gone */
  farm_buf q;                      /* records: u8(fd) u64(n) bytes */
  char line[256];                  /* the progress line ("": none) */
  int dirty;                       /* line changed, or was cleared, since drawn */
  int shown;                       /* a progress line is on the terminal now */
  int gone;                        /* stdout went away: its bytes are dropped */
  int pending;                     /* something to do at the next flush (atomic) */
};

farm_term *farm__term_new(void) {
  farm_term *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  pthread_mutex_init(&t->mu, NULL);
  pthread_mutex_init(&t->wmu, NULL);
  farm__buf_init(&t->q);
  return t;
}

void farm__term_free(farm_term *t) {
  if (!t) return;
  farm__buf_free(&t->q);
  pthread_mutex_destroy(&t->mu);
  pthread_mutex_destroy(&t->wmu);
  free(t);
}

static void queue(farm_term *t, int fd, const char *p, size_t n) {
  uint64_t len = n;
  pthread_mutex_lock(&t->mu);
  /* (out of memory: the bytes are dropped, as a full terminal would) */
  if (farm__buf_u8(&t->q, (uint8_t)fd) == 0 && farm__buf_put(&t->q, &len, sizeof len) == 0)
    farm__buf_put(&t->q, p, n);
  __atomic_store_n(&t->pending, 1, __ATOMIC_RELEASE);
  pthread_mutex_unlock(&t->mu);
}

void farm__term_out(farm_term *t, const char *p, size_t n) {
  if (n && !__atomic_load_n(&t->gone, __ATOMIC_RELAXED)) queue(t, 1, p, n);
}

void farm__term_say(farm_term *t, const char *fmt, ...) {
  char s[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(s, sizeof s - 1, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n > sizeof s - 2) n = (int)sizeof s - 2;
  s[n++] = '\n';
  queue(t, 2, s, (size_t)n);
}

void farm__term_progress(farm_term *t, const char *line) {
  pthread_mutex_lock(&t->mu);
  if (strcmp(t->line, line ? line : "") != 0) {
    snprintf(t->line, sizeof t->line, "%s", line ? line : "");
    t->dirty = 1;
    __atomic_store_n(&t->pending, 1, __ATOMIC_RELEASE);
  }
  pthread_mutex_unlock(&t->mu);
}

static void clear_line(farm_term *t) {
  if (!t->shown) return;
  fputs("\r\033[K", stderr);
  fflush(stderr);
  t->shown = 0;
}

static void stdout_gone(farm_term *t) {
  struct sigaction sa;
  __atomic_store_n(&t->gone, 1, __ATOMIC_RELAXED);
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) kill(getpid(), SIGPIPE);
}

void farm__term_flush(farm_term *t) {
  if (!__atomic_load_n(&t->pending, __ATOMIC_ACQUIRE)) return;   /* the common case */
  pthread_mutex_lock(&t->wmu);
  pthread_mutex_lock(&t->mu);
  __atomic_store_n(&t->pending, 0, __ATOMIC_RELAXED);
  farm_buf q = t->q;               /* taken whole: queueing goes on meanwhile */
  farm__buf_init(&t->q);
  char line[sizeof t->line];
  int dirty = t->dirty;
  memcpy(line, t->line, sizeof line);
  t->dirty = 0;
  pthread_mutex_unlock(&t->mu);
  if (q.n || (dirty && !line[0])) clear_line(t);
  for (size_t at = 0; at + 9 <= q.n; ) {
    int fd = (unsigned char)q.p[at];
    uint64_t n;
    memcpy(&n, q.p + at + 1, sizeof n);
    const char *p = q.p + at + 9;
    at += 9 + (size_t)n;
    if (fd == 2) {
      fwrite(p, 1, (size_t)n, stderr);
      fflush(stderr);
    } else if (!t->gone) {
      fwrite(p, 1, (size_t)n, stdout);
      if (fflush(stdout) != 0 && errno == EPIPE) stdout_gone(t);
    }
  }
  farm__buf_free(&q);
  if (line[0] && (dirty || !t->shown)) {
    fprintf(stderr, "\r\033[K%s", line);
    fflush(stderr);
    t->shown = 1;
  }
  pthread_mutex_unlock(&t->wmu);
}

void farm__term_clear(farm_term *t) {
  pthread_mutex_lock(&t->wmu);
  if (t->shown) {
    clear_line(t);
    pthread_mutex_lock(&t->mu);
    __atomic_store_n(&t->pending, 1, __ATOMIC_RELEASE);   /* drawn again at the next flush */
    pthread_mutex_unlock(&t->mu);
  }
  pthread_mutex_unlock(&t->wmu);
}
