/*
 * test_sendfail.c -- a send that fails is never silent: when a peer's link
 * refuses a batch (here: nanomsg terminated under it), the peer is marked for
 * the loop to stop and replace, with the reason, and its jobs are not lost.
 * (Before, five sends in the scheduler ignored every error but EAGAIN.) TAP.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <nanomsg/nn.h>
#include "farm.h"
#include "engine.h"
#include "peer.h"

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);     /* each line as its check ends: run-test watches them */
  int n = 0, fails = 0;
#define OK(c, what) do { int ok_ = (c); n++; if (!ok_) fails++; printf("%sok %d - %s\n", ok_ ? "" : "not ", n, what); } while (0)
  farm_peer *p;
  farm_engine *e = farm__engine_test(&p);
  char url[64], err[256];
  snprintf(url, sizeof url, "ipc:///tmp/farm-sendfail-%ld", (long)getpid());
  OK(farm__link_open(&p->link, url, 1, 1 << 20, err, sizeof err) == 0, "a peer with a real link");
  farm_fn *fn = calloc(1, sizeof *fn);
  fn->refs = 1;
  fn->p = strdup("x");
  fn->n = 1;
  farm_job *j = farm__job_new();
  j->id = farm__engine_nextid(e);
  j->fn = fn;
  fn->refs++;
  j->refs = 1;
  j->args = strdup("a");
  j->nargs = 1;
  farm__engine_submit(e, j);
  nn_term();                                 /* every send fails from now on (ETERM) */
  farm__engine_wait(e, farm__engine_gen(e), 0);   /* the caller dispatches: the send fails */
  OK(p->broken, "the failed send marks the peer broken");
  OK(strstr(p->broken_why, "cannot send jobs") != NULL, "with the reason");
  OK(farm__job_state(j) == JOB_SENT && farm__job_peer(j) == p, "its job is held where it went, to come back when the peer is replaced");
  farm__engine_peer_lost(e, p, 0, p->broken_why);   /* what the loop's kill does */
  OK(farm__job_state(j) == JOB_QUEUED, "losing the peer puts the job back in the queue");
  farm__link_close(p->link);
  p->link = NULL;
  unlink(url + 6);
  farm__engine_free(e);
  OK(farm__job_state(j) == JOB_FAILED, "closing the engine fails it with a reason, nothing vanishes");
  farm__job_unref(j);
  farm__fn_unref(fn);
  printf("1..%d\n", n);
  return fails != 0;
}
