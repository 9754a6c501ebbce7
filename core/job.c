/*
 * job.c -- jobs and function packages (job.h): made, copied into and
 * released. Reference counts are atomic: any thread may call these.
 */
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include "job.h"

void farm__fn_unref(farm_fn *f) {
  if (f && __atomic_sub_fetch(&f->refs, 1, __ATOMIC_ACQ_REL) == 0) { free(f->p); free(f); }
}

void farm__fn_hash(farm_fn *f) {
  crypto_generichash(f->hash, FARM_HASHLEN, (const unsigned char *)f->p, f->n, NULL, 0);
}

farm_job *farm__job_new(void) {
  farm_job *j = calloc(1, sizeof *j);
  if (!j) return NULL;
  farm__buf_init(&j->out);
  j->max_retries = FARM_DEFAULT_RETRIES;
  return j;
}

void farm__job_unref(farm_job *j) {
  if (!j || __atomic_sub_fetch(&j->refs, 1, __ATOMIC_ACQ_REL) > 0) return;
  farm__fn_unref(j->fn);
  free(j->args); free(j->res); free(j->tb); free(j->val);
  farm__buf_free(&j->out);
  free(j);
}

char *farm__dupmem(const void *p, size_t n) {
  char *d = malloc(n ? n : 1);
  if (d && n) memcpy(d, p, n);
  return d;
}
