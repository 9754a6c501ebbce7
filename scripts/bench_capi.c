/*
 * bench_capi.c -- `make bench`'s C API figure: round trips (submit a trivial
 * job, wait, read, free) on one farm of 2 workers, from 1 thread, then from 2
 * threads at once. Prints, in bench.lua's "name value unit (detail)" form,
 * each case's mean round trip over all its threads' trips (what a trip costs,
 * a stall included; the median too) and the ratio of the two: farm.h says
 * several threads may submit and wait on one farm.
 *
 *   bench_capi [TRIPS]      (make builds it as build/bench_capi, against libfarm)
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <farm.h>

#define WARM 200
#define MAXT 2

static const char SRC[] = "function(x) return x end";

typedef struct { farm *f; int trips; double *dt; int rc; } worker_arg;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int trip(farm *f) {
  farm_value a = farm_integer(1), v;
  farm_future *fu;
  int rc = farm_submit_source(f, SRC, &a, 1, &fu);
  if (rc != FARM_OK) return rc;
  rc = farm_wait(fu, -1);
  if (rc == FARM_OK) rc = farm_result(fu, 0, &v);
  if (rc == FARM_OK && (v.type != FARM_TINTEGER || v.i != 1)) rc = FARM_EINVAL;
  farm_future_free(fu);
  return rc;
}

static void *run(void *p) {
  worker_arg *w = p;
  for (int i = 0; i < w->trips && !w->rc; i++) {
    double t0 = now();
    w->rc = trip(w->f);
    w->dt[i] = now() - t0;
  }
  return NULL;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* `threads` threads doing `trips` round trips each: the mean round trip (what
   one costs, stalls included) and the median, in µs. */
typedef struct { double mean, median, max; } figures;
static figures measure(farm *f, int threads, int trips) {
  pthread_t t[MAXT];
  worker_arg w[MAXT];
  size_t n = (size_t)trips * threads;
  double *all = malloc(sizeof *all * n);
  if (!all) { fprintf(stderr, "bench_capi: out of memory\n"); exit(1); }
  for (int i = 0; i < threads; i++) {
    w[i] = (worker_arg){ f, trips, all + (size_t)i * trips, FARM_OK };
    if (pthread_create(&t[i], NULL, run, &w[i])) { fprintf(stderr, "bench_capi: no thread\n"); exit(1); }
  }
  for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
  for (int i = 0; i < threads; i++)
    if (w[i].rc != FARM_OK) {
      fprintf(stderr, "bench_capi: a round trip failed: %s (%s)\n", farm_strerror(w[i].rc), farm_last_error(f));
      exit(1);
    }
  qsort(all, n, sizeof *all, cmp);
  double sum = 0;
  for (size_t i = 0; i < n; i++) sum += all[i];
  figures r = { 1e6 * sum / (double)n, 1e6 * all[n / 2], 1e6 * all[n - 1] };
  free(all);
  return r;
}

int main(int argc, char **argv) {
  int trips = argc > 1 ? atoi(argv[1]) : 2000;
  if (trips < 1) { fprintf(stderr, "bench_capi: TRIPS must be a positive number\n"); return 2; }
  farm_options o;
  farm *f;
  char err[256];
  farm_options_init(&o);
  o.workers = 2;
  o.errbuf = err;
  o.errlen = sizeof err;
  if (farm_open(&f, &o) != FARM_OK) { fprintf(stderr, "bench_capi: cannot open a farm: %s\n", err); return 1; }
  for (int i = 0; i < WARM; i++)
    if (trip(f) != FARM_OK) { fprintf(stderr, "bench_capi: %s\n", farm_last_error(f)); return 1; }
  figures one = measure(f, 1, trips);
  figures two = measure(f, 2, trips);
  farm_close(f);
  printf("capi_round_trip_1thread %.1f µs (mean of %d round trips from one thread, 2 workers; "
         "median %.1f, max %.1f µs)\n", one.mean, trips, one.median, one.max);
  printf("capi_round_trip_2threads %.1f µs (mean of %d round trips, %d from each of 2 threads at once; "
         "median %.1f, max %.1f µs)\n", two.mean, 2 * trips, trips, two.median, two.max);
  printf("capi_2threads_vs_1 %.2f x (the mean round trip with 2 threads over the one with 1; "
         "medians: %.2f x)\n", two.mean / one.mean, two.median / one.median);
  return 0;
}
