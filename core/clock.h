/* clock.h -- the one clock farm measures with: monotonic seconds. */
#ifndef FARM_CLOCK_H
#define FARM_CLOCK_H
#include <time.h>
static inline double farm__now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}
#endif
