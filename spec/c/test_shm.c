/*
 * test_shm.c -- the shared-memory regions of a client and a local worker
 * (shm.c), both sides in one process: the worker's side maps the descriptors
 * the client made for it, as a worker does at exec. The args ring fills and
 * says so (the block then goes by the socket), frees out of order, wraps; a
 * span named out of the region's bounds is refused on both sides; a result
 * block comes back exact and the worker's ring is freed by the client's
 * header word; an impossible header stops the worker using the region; the
 * worker's args mapping cannot be made writable. Prints TAP.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/mman.h>
#include "shm.h"

static int n = 0, fails = 0;
#define OK(c, what) do { int ok_ = (c); n++; if (!ok_) fails++; printf("%sok %d - %s\n", ok_ ? "" : "not ", n, what); fflush(stdout); } while (0)

#define REGION (1u << 20)

int main(void) {
  setenv("FARM_SHM_BYTES", "1048576", 1);
  int afd, rfd;
  farm_shm *s = farm__shm_new(&afd, &rfd);
  OK(s && afd >= 0 && rfd >= 0 && s->nargs == REGION && s->nres == REGION, "the client makes both regions");
  if (!s) { printf("1..%d\n", n); return 1; }
  /* the worker's side, as at exec */
  int ha = fcntl(afd, F_DUPFD, 20), hr = fcntl(rfd, F_DUPFD, 20);   /* (either may be 5 or 6 now) */
  close(afd);
  close(rfd);
  OK(dup2(ha, FARM_SHM_ARGS_FD) == FARM_SHM_ARGS_FD && dup2(hr, FARM_SHM_RES_FD) == FARM_SHM_RES_FD,
     "the descriptors go where a worker finds them");
  close(ha);
  close(hr);
  farm_shm_w w;
  farm__shm_attach(&w);
  OK(w.args && w.res && w.nargs == REGION && w.nres == REGION, "the worker maps both");
  OK(fcntl(FARM_SHM_ARGS_FD, F_GETFD) < 0 && fcntl(FARM_SHM_RES_FD, F_GETFD) < 0,
     "...and closes the descriptors (a job's children never get them)");
  OK(mprotect((void *)w.released, 4096, PROT_READ | PROT_WRITE) != 0,
     "the worker cannot make the args region writable (its descriptor was read-only)");

  /* args: small blocks stay in the message */
  char *blk = malloc(REGION);
  for (size_t i = 0; i < REGION; i++) blk[i] = (char)(i * 7 + 3);
  uint64_t off[8];
  OK(farm__shm_put_args(s, 1, blk, FARM_SHM_MIN - 1, &off[0]) < 0, "a block under the threshold is not put");
  size_t q = REGION / 4;               /* four quarters fill it */
  int put = 0;
  for (int i = 0; i < 4; i++) put += farm__shm_put_args(s, 10 + i, blk + i, q, &off[i]) == 0;
  OK(put == 4, "four quarters fit");
  OK(farm__shm_put_args(s, 20, blk, FARM_SHM_MIN, &off[4]) < 0, "a full region refuses the next (it goes by the socket)");
  const char *a2 = farm__shm_args(&w, off[2], q);
  OK(a2 && !memcmp(a2, blk + 2, q), "the worker reads a span as the client wrote it");
  OK(!farm__shm_args(&w, REGION, 1) && !farm__shm_args(&w, REGION - 10, 11) && !farm__shm_args(&w, 5, UINT64_MAX) &&
     !farm__shm_args(&w, UINT64_MAX, 2), "a span out of the region is refused by the worker");
  farm__shm_args_done(s, 13);           /* out of order (the newest): nothing frees yet */
  OK(farm__shm_put_args(s, 21, blk, FARM_SHM_MIN, &off[5]) < 0, "a span freed out of order waits for the older ones");
  farm__shm_args_done(s, 10);
  farm__shm_args_done(s, 11);           /* 10, 11 done: the first half is free */
  OK(farm__shm_put_args(s, 22, blk, 2 * q, &off[5]) == 0 && off[5] == 0, "the ring wraps to the start");
  OK(farm__shm_put_args(s, 23, blk, q + 1, &off[6]) < 0, "...and holds no more than is free");
  farm__shm_args_done(s, 12);
  farm__shm_args_done(s, 22);
  farm__shm_args_done(s, 999);          /* not there: nothing happens */
  OK(farm__shm_put_args(s, 24, blk, REGION, &off[7]) == 0, "all freed: a block as big as the region fits");
  farm__shm_args_done(s, 24);

  /* results */
  uint64_t pos[4];
  OK(farm__shm_put_result(&w, blk, FARM_SHM_MIN - 1, &pos[0]) < 0, "a small result is not put");
  OK(farm__shm_put_result(&w, blk, q, &pos[0]) == 0 && farm__shm_put_result(&w, blk + 1, q, &pos[1]) == 0 &&
     farm__shm_put_result(&w, blk + 2, q, &pos[2]) == 0, "three result blocks go in");
  OK(farm__shm_put_result(&w, blk, 2 * q, &pos[3]) < 0, "a full results region refuses the next");
  char *out = NULL;
  OK(farm__shm_take_result(s, pos[1], q, &out) == 0 && out && !memcmp(out, blk + 1, q),
     "the client copies a result out exact");
  free(out);
  OK(farm__shm_take_result(s, REGION - 10, 11, &out) < 0 && !out && farm__shm_take_result(s, 0, REGION + 1, &out) < 0 &&
     farm__shm_take_result(s, UINT64_MAX, 2, &out) < 0, "a result span out of the region is refused by the client");
  OK(farm__shm_put_result(&w, blk, 2 * q, &pos[3]) == 0 && pos[3] == REGION,
     "taken up to the second: the worker wraps to the start");
  OK(farm__shm_take_result(s, pos[3], 2 * q, NULL) == 0, "a result not wanted is let go of all the same");
  __atomic_store_n((uint64_t *)s->args, UINT64_MAX, __ATOMIC_RELEASE);   /* an impossible header */
  OK(farm__shm_put_result(&w, blk, q, &pos[0]) < 0 && w.broken, "an impossible header stops the worker using it");

  farm__shm_detach(&w);
  farm__shm_free(s);
  setenv("FARM_SHM_BYTES", "0", 1);
  OK(farm__shm_new(&afd, &rfd) == NULL && afd < 0 && rfd < 0, "FARM_SHM_BYTES=0: no regions");
  free(blk);
  printf("1..%d\n", n);
  return fails != 0;
}
