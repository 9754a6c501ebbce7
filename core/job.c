/*
 * job.c -- jobs, function packages and the messages results point into
 * (job.h): made, copied into and released. Reference counts are atomic: any thread may call these.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include "job.h"

void farm__fn_unref(farm_fn *f) {
  if (f && __atomic_sub_fetch(&f->refs, 1, __ATOMIC_ACQ_REL) == 0) { free(f->p); free(f); }
}

farm_rxmsg *farm__rxmsg_new(void *p, size_t n, void (*release)(void *)) {
  farm_rxmsg *m = malloc(sizeof *m);
  if (m) *m = (farm_rxmsg){ .p = p, .n = n, .release = release, .refs = 1 };
  return m;
}

void farm__rxmsg_unref(farm_rxmsg *m) {
  if (m && __atomic_sub_fetch(&m->refs, 1, __ATOMIC_ACQ_REL) == 0) {
    if (m->release) m->release(m->p);
    free(m);
  }
}

void farm__job_drop_results(farm_job *j) {
  farm_jobx *x = j->x;
  if (!x) return;
  if (x->rx) farm__rxmsg_unref(x->rx);
  else { free(x->res); free(x->tb); free(x->val); }
  x->rx = NULL;
  x->res = x->tb = x->val = NULL;
  x->nres = x->ntb = x->nval = 0;
}

void farm__fn_hash(farm_fn *f) {
  crypto_generichash(f->hash, FARM_HASHLEN, (const unsigned char *)f->p, f->n, NULL, 0);
}

farm_job *farm__job_new(void) {
  farm_job *j = calloc(1, sizeof *j);
  if (!j) return NULL;
  j->max_retries = FARM_DEFAULT_RETRIES;
  return j;
}

farm_job *farm__job_new_args(const void *p, size_t n) {
  if (n > JOB_INLINE_ARGS) {
    farm_job *j = farm__job_new();
    if (j && !(j->args = farm__dupmem(p, n))) { free(j); return NULL; }
    if (j) j->nargs = n;
    return j;
  }
  farm_job *j = calloc(1, sizeof *j + (n ? n : 1));
  if (!j) return NULL;
  j->max_retries = FARM_DEFAULT_RETRIES;
  if (n) memcpy(j->inl, p, n);
  j->args = j->inl;
  j->nargs = n;
  return j;
}

void farm__job_drop_args(farm_job *j) {
  if (j->args != j->inl) free(j->args);
  j->args = NULL;
  j->nargs = 0;
}

void farm__job_unref(farm_job *j) {
  if (!j || __atomic_sub_fetch(&j->refs, 1, __ATOMIC_ACQ_REL) > 0) return;
  farm__fn_unref(j->fn);
  farm__job_drop_args(j);
  if (j->x) {
    free(j->x->part);
    farm__job_drop_results(j);
    farm__buf_free(&j->x->out);
    free(j->x->where);
    free(j->x);
  }
  free(j);
}

farm_jobx *farm__job_grow(farm_job *j) {
  farm_jobx *x = calloc(1, sizeof *x);
  if (!x) {
    fputs("farm: out of memory for a job's record\n", stderr);
    abort();
  }
  farm__buf_init(&x->out);
  return j->x = x;
}

void farm__job_set_where(farm_job *j, const char *s, size_t n) {
  char *w = malloc(n + 1);
  if (w) { memcpy(w, s, n); w[n] = 0; }
  farm_jobx *x = farm__jx(j);
  free(x->where);
  x->where = w;
}

char *farm__dupmem(const void *p, size_t n) {
  char *d = malloc(n ? n : 1);
  if (d && n) memcpy(d, p, n);
  return d;
}
