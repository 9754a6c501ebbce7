/*
 * embed.c -- a C host that uses farm through farm.h alone: it estimates pi
 * with the pi_hits kernel, and computes Parallel Python's sums of primes with a
 * Lua function given as source text. No Lua in the host.
 *
 *   cc embed.c $(pkg-config --cflags --libs farm) -o embed
 *   ./embed [WORKERS]
 *
 * (make builds it as build/examples/embed.)
 */
#include <stdio.h>
#include <stdlib.h>
#include <farm.h>

/* pp's sum_primes, as farm_submit_source takes it: a chunk that returns the
   job's function (isprime travels with it, as an upvalue). */
static const char SUM_PRIMES[] =
  "local function isprime(n)\n"
  "  if n < 2 then return false end\n"
  "  for i = 2, math.floor(math.sqrt(n)) do\n"
  "    if n % i == 0 then return false end\n"
  "  end\n"
  "  return true\n"
  "end\n"
  "return function(n)\n"
  "  local sum = 0\n"
  "  for x = 2, n - 1 do\n"
  "    if isprime(x) then sum = sum + x end\n"
  "  end\n"
  "  return sum\n"
  "end\n";

#define PI_JOBS 16
#define PI_POINTS 1000000
#define NPRIMES 8

static int fail(const char *what, int rc, farm *f) {
  fprintf(stderr, "embed: %s: %s (%s)\n", what, farm_strerror(rc), f ? farm_last_error(f) : "");
  return 1;
}

int main(int argc, char **argv) {
  farm_options o;
  farm *f;
  farm_future *pi[PI_JOBS], *sums[NPRIMES];
  farm_value args[2], v;
  char err[256];
  long long hits = 0;
  int i, rc;

  farm_options_init(&o);
  o.workers = argc > 1 ? atoi(argv[1]) : 0;   /* 0: one per CPU */
  o.errbuf = err;
  o.errlen = sizeof err;
  if ((rc = farm_open(&f, &o)) != FARM_OK) {
    fprintf(stderr, "embed: cannot open a farm: %s\n", err);
    return 1;
  }

  /* pi: PI_JOBS jobs of the C kernel farm.kernels.pi_hits(points, seed) */
  for (i = 0; i < PI_JOBS; i++) {
    args[0] = farm_integer(PI_POINTS);
    args[1] = farm_integer(i + 1);
    if ((rc = farm_submit_kernel(f, "pi_hits", args, 2, &pi[i])) != FARM_OK)
      return fail("farm_submit_kernel", rc, f);
  }
  /* the sums of primes: one Lua job for each n */
  for (i = 0; i < NPRIMES; i++) {
    args[0] = farm_integer(100000 + 100 * i);
    if ((rc = farm_submit_source(f, SUM_PRIMES, args, 1, &sums[i])) != FARM_OK)
      return fail("farm_submit_source", rc, f);
  }

  for (i = 0; i < PI_JOBS; i++) {
    farm_wait(pi[i], -1);
    if (farm_result(pi[i], 0, &v) != FARM_OK || v.type != FARM_TINTEGER) {
      fprintf(stderr, "embed: pi job %d: %s\n", i + 1,
              farm_error_message(pi[i]) ? farm_error_message(pi[i]) : farm_last_error(f));
      return 1;
    }
    hits += v.i;
    farm_future_free(pi[i]);
  }
  printf("pi is about %.6f (%d points in %d jobs)\n",
         4.0 * (double)hits / ((double)PI_JOBS * PI_POINTS), PI_JOBS * PI_POINTS, PI_JOBS);

  for (i = 0; i < NPRIMES; i++) {
    farm_wait(sums[i], -1);
    if (farm_result(sums[i], 0, &v) != FARM_OK) {
      fprintf(stderr, "embed: sum_primes job: %s\n%s\n", farm_error_message(sums[i]),
              farm_error_traceback(sums[i]));
      return 1;
    }
    printf("Sum of primes below %d is %lld\n", 100000 + 100 * i, v.i);
    farm_future_free(sums[i]);
  }
  farm_close(f);
  return 0;
}
