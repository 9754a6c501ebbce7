/*
 * test_engine.c -- the engine's loop, driven from C with no Lua in the caller's
 * hands: jobs move while the host sleeps, waits time out and wake, two engines
 * run side by side, and closing one leaves no process. Prints TAP.
 *
 * First, in well under a second, the scheduler's rules on a test engine
 * (farm__engine_test: one peer, no thread, no process), fed the messages a
 * peer sends and the losses the loop reports: each result counts once, a
 * result for another attempt is not this one's, a job that kills its peer is
 * tried again up to its retries and then fails with the cause, one that ran
 * out of time or was cancelled by force ends as such, the others a lost peer
 * held go back in order, a job taken back goes to the front of the queue (or
 * ends, when it was cancelled). Then the same rules with real workers: a
 * timeout, a job that kills its worker every time. spec/engine_spec.lua
 * checks them again through farm.lua, slowly.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sodium.h>
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include "farm.h"
#include "clock.h"
#include "codec.h"
#include "engine.h"
#include "peer.h"
#include "proto.h"

static int n_test = 0, n_fail = 0;

static void ok(int cond, const char *what) {
  n_test++;
  if (!cond) n_fail++;
  printf("%sok %d - %s\n", cond ? "" : "not ", n_test, what);
  fflush(stdout);
}

/* The codec block of the Lua function that the chunk src returns (src is also
   the text it travels as), or of integer args. */
static char *block(const char *src, int nargs, const int *args, size_t *n) {
  static const char describe[] =
    "local text = ... return function() return { chunk = '=test', line = 1, text = text, "
    "name = 'f', where = 'test', globals = {} } end";
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  farm_buf b;
  farm__buf_init(&b);
  farm_encoder e = { .root = "value" };
  if (src) {
    if (luaL_loadstring(L, describe) != LUA_OK) abort();
    lua_pushstring(L, src);
    lua_call(L, 1, 1);
    e.describe = lua_gettop(L);
    lua_pushglobaltable(L);
    e.globals = lua_gettop(L);
    if (luaL_loadstring(L, src) != LUA_OK) abort();
    lua_call(L, 0, 1);
    farm__codec_encode(L, &b, lua_gettop(L), 1, &e);
  } else {
    for (int i = 0; i < nargs; i++) lua_pushinteger(L, args[i]);
    farm__codec_encode(L, &b, 1, nargs, &e);
  }
  lua_close(L);
  return farm__buf_steal(&b, n);
}

static farm_fn *make_fn(const char *text) {
  farm_fn *f = calloc(1, sizeof *f);
  f->p = block(text, 0, NULL, &f->n);
  f->refs = 1;
  crypto_generichash(f->hash, FARM_HASHLEN, (unsigned char *)f->p, f->n, NULL, 0);
  return f;
}

static farm_job *job(farm_engine *e, farm_fn *f, int arg) {
  farm_job *j = farm__job_new();
  j->id = farm__engine_nextid(e);
  j->fn = f;
  __atomic_add_fetch(&f->refs, 1, __ATOMIC_RELAXED);
  j->refs = 1;
  j->args = block(NULL, 1, &arg, &j->nargs);
  farm__engine_submit(e, j);
  return j;
}

/* A job with a time limit and retries, submitted. */
static farm_job *job_with(farm_engine *e, farm_fn *f, int arg, double timeout, int retries) {
  farm_job *j = farm__job_new();
  j->id = farm__engine_nextid(e);
  j->fn = f;
  __atomic_add_fetch(&f->refs, 1, __ATOMIC_RELAXED);
  j->refs = 1;
  j->args = block(NULL, 1, &arg, &j->nargs);
  if (timeout > 0) farm__jx(j)->timeout = timeout;
  j->max_retries = (uint16_t)retries;
  farm__engine_submit(e, j);
  return j;
}

static void sleep_s(double s) {
  struct timespec ts = { (time_t)s, (long)((s - (time_t)s) * 1e9) };
  while (nanosleep(&ts, &ts) != 0) {}
}

static int alive(long pid) { return pid > 0 && kill((pid_t)pid, 0) == 0; }

/* ---- the scheduler's rules, on a test engine ------------------------------------ */

static farm_fn *tfn;                 /* a package the test engine never opens */

/* A job held at the test engine's peer, as if sent (JOB_SENT). */
static farm_job *held(farm_engine *e, int max_retries, double timeout) {
  farm_job *j = farm__job_new();
  j->id = farm__engine_nextid(e);
  j->fn = tfn;
  __atomic_add_fetch(&tfn->refs, 1, __ATOMIC_RELAXED);
  j->refs = 1;
  j->args = strdup("a");
  j->nargs = 1;
  j->max_retries = (uint16_t)max_retries;
  if (timeout > 0) farm__jx(j)->timeout = timeout;
  farm__engine_test_add(e, j);
  return j;
}

/* RESULTS for one job, as a worker lays it out (engine.c on_results). */
static int result(farm_engine *e, farm_peer *p, uint64_t id, unsigned attempt, int status) {
  farm_buf b;
  farm__buf_init(&b);
  farm_msg_result m = { .id = id, .attempt = attempt, .status = status,
                        .busy = 1e-6,          /* 1000 ns */
                        .out = "", .nout = 0,  /* what it printed */
                        .block = "R", .nblock = 1,   /* the result block (opaque to the engine) */
                        .tb = "", .val = "" };
  farm__proto_put_list(&b, FARM_MSG_RESULTS);
  farm__proto_put_result(&b, &m);
  farm__proto_count(&b, 1);
  char err[256];
  int rc = farm__engine_message(e, p, b.p, b.n, err, sizeof err);
  farm__buf_free(&b);
  return rc;
}

/* TAKEN for one job. */
static int taken(farm_engine *e, farm_peer *p, uint64_t id) {
  farm_buf b;
  farm__buf_init(&b);
  farm__proto_put_ids(&b, FARM_MSG_TAKEN, &id, 1);
  char err[256];
  int rc = farm__engine_message(e, p, b.p, b.n, err, sizeof err);
  farm__buf_free(&b);
  return rc;
}

static int res_has(farm_job *j, const char *text) {
  return farm__jx(j)->res && farm__jx(j)->nres && memmem(farm__jx(j)->res, farm__jx(j)->nres, text, strlen(text)) != NULL;
}

static int released;
static void count_release(void *m) { released++; free(m); }

static void test_rules(void) {
  tfn = calloc(1, sizeof *tfn);
  tfn->refs = 1;
  tfn->p = strdup("x");
  tfn->n = 1;
  farm_peer *p;
  farm_engine *e;

  /* each result once */
  e = farm__engine_test(&p);
  farm_job *a = held(e, 0, 0);
  ok(farm__job_state(a) == JOB_SENT && farm__engine_outstanding(e) == 1, "rules: a job held at its peer is sent and outstanding");
  ok(result(e, p, a->id, 1, FARM_JOB_OK) == 0 && farm__job_state(a) == JOB_SENT,
     "rules: a result for another attempt of the job is not this one's");
  ok(result(e, p, a->id, 0, FARM_JOB_OK) == 0 && farm__job_state(a) == JOB_DONE &&
     farm__engine_outstanding(e) == 0, "rules: its result ends it, and it is counted out");
  farm_engine_stats st0, st1;
  farm__engine_stats(e, &st0);
  ok(result(e, p, a->id, 0, FARM_JOB_OK) == 0 && farm__job_state(a) == JOB_DONE &&
     farm__engine_outstanding(e) == 0, "rules: the same result again changes nothing");
  farm__engine_stats(e, &st1);
  ok(st1.finished == st0.finished, "rules: ...and is not counted again");
  free(st0.peers);
  free(st1.peers);
  farm_job *b = held(e, 0, 0);
  ok(result(e, p, b->id, 0, FARM_JOB_ERROR) == 0 && farm__job_state(b) == JOB_FAILED,
     "rules: an error result fails the job");
  farm__engine_free(e);

  /* retries: the job to blame is tried again up to its retries, then fails with the cause */
  e = farm__engine_test(&p);
  farm_job *r = held(e, 2, 0), *other = held(e, 0, 0);
  farm__engine_peer_lost(e, p, r->id, "worker died (killed by signal 9)");
  ok(farm__job_state(r) == JOB_QUEUED && r->attempt == 1, "rules: the job a lost peer was running goes back, its attempt counted");
  ok(farm__job_state(other) == JOB_QUEUED && other->attempt == 0 && other->requeues == 1,
     "rules: the others it held go back, not blamed");
  farm_job *r2 = held(e, 2, 0);              /* (a fresh one at the peer: r waits in the queue) */
  r2->attempt = 2;                           /* its retries are spent */
  farm__engine_peer_lost(e, p, r2->id, "worker died (killed by signal 9)");
  ok(farm__job_state(r2) == JOB_FAILED && res_has(r2, "killed by signal 9"),
     "rules: a job lost with its retries spent fails, with the cause");
  farm_job *r0 = held(e, 0, 0);
  farm__engine_peer_lost(e, p, 0, "worker died");
  ok(farm__job_state(r0) == JOB_FAILED, "rules: with no retries, a job whose peer died running it fails at once "
     "(a peer that cannot say what it ran blames its first job)");
  farm__engine_free(e);

  /* timeouts and forced cancels end as such, not as a retry */
  e = farm__engine_test(&p);
  farm_job *t = held(e, 3, 0.5);
  t->timed_out = 1;                          /* what the loop's timer sets before it stops the peer */
  farm__engine_peer_lost(e, p, t->id, "stopped");
  ok(farm__job_state(t) == JOB_FAILED && res_has(t, "timed out after 0.5 s"),
     "rules: a job out of time fails as timed out, its retries not used");
  farm_job *c = held(e, 3, 0), *c2 = held(e, 0, 0);
  c->cancel_req = 2;                         /* CANCEL_FORCE (engine.c): a forced cancel */
  farm__engine_peer_lost(e, p, c->id, "stopped");
  ok(farm__job_state(c) == JOB_CANCELLED, "rules: a job cancelled by force ends cancelled when its worker is stopped");
  ok(farm__job_state(c2) == JOB_QUEUED, "rules: ...and the job behind it goes back to the queue");
  farm__engine_free(e);

  /* a peer lost again and again: the jobs it held but did not run fail in the end */
  e = farm__engine_test(&p);
  farm_job *blamed = held(e, 100, 0), *bystander = held(e, 0, 0);
  bystander->requeues = 8;                   /* REQUEUE_MAX */
  farm__engine_peer_lost(e, p, blamed->id, "lost");
  ok(farm__job_state(bystander) == JOB_FAILED, "rules: a job whose peers were lost too often fails");
  farm__engine_free(e);

  /* take-back: TAKEN puts a job back at the front, or ends it when it was cancelled */
  e = farm__engine_test(&p);
  farm_job *x = held(e, 0, 0), *y = held(e, 0, 0);
  p->takes = 1;                              /* a TAKE is out, but not for y */
  ok(taken(e, p, y->id) == 0 && farm__job_state(y) == JOB_SENT,
     "rules: a TAKEN for a job nobody asked for gives nothing back");
  p->takes = 1;                              /* (each TAKEN answers one TAKE) */
  y->taking = 1;
  ok(taken(e, p, y->id) == 0 && farm__job_state(y) == JOB_QUEUED && farm__job_state(x) == JOB_SENT,
     "rules: a job taken back is queued again, the other stays where it is");
  farm__engine_stats(e, &st0);
  ok(st0.taken_back == 1, "rules: ...and counted as taken back");
  free(st0.peers);
  p->takes = 1;
  x->taking = 1;
  x->cancel_req = 1;                         /* CANCEL_TAKE: a cancel waiting for the TAKE */
  ok(taken(e, p, x->id) == 0 && farm__job_state(x) == JOB_CANCELLED, "rules: a job taken back to be cancelled ends cancelled");
  ok(result(e, p, x->id, 0, FARM_JOB_OK) == 0 && farm__job_state(x) == JOB_CANCELLED,
     "rules: its result, arriving after, changes nothing");
  farm__engine_free(e);

  /* a large result points into its message, kept until the last job of it goes;
     a small one is copied out (it does not keep the message) */
  e = farm__engine_test(&p);
  farm_job *big1 = held(e, 0, 0), *big2 = held(e, 0, 0), *small = held(e, 0, 0);
  farm_buf b2;
  farm__buf_init(&b2);
  char *block = malloc(100000);
  memset(block, 'v', 100000);
  farm__proto_put_list(&b2, FARM_MSG_RESULTS);
  farm_msg_result m1 = { .id = big1->id, .status = FARM_JOB_OK, .out = "o", .nout = 1, .block = block, .nblock = 100000 };
  farm_msg_result m2 = { .id = small->id, .status = FARM_JOB_OK, .block = "s", .nblock = 1 };
  farm_msg_result m3 = { .id = big2->id, .status = FARM_JOB_ERROR, .block = block, .nblock = 50000,
                         .tb = "tb", .ntb = 2, .val = block, .nval = 20000 };
  farm__proto_put_result(&b2, &m1);
  farm__proto_put_result(&b2, &m2);
  farm__proto_put_result(&b2, &m3);
  farm__proto_count(&b2, 3);
  char *msg = malloc(b2.n);                  /* the engine's from now on: freed by release */
  memcpy(msg, b2.p, b2.n);
  released = 0;
  char err[256];
  ok(farm__engine_take(e, p, msg, b2.n, count_release, err, sizeof err) == 0 &&
     farm__job_state(big1) == JOB_DONE && farm__job_state(big2) == JOB_FAILED && farm__job_state(small) == JOB_DONE,
     "rules: RESULTS taken whole end their jobs");
  ok(farm__jx(big1)->rx && farm__jx(big1)->res >= msg && farm__jx(big1)->res < msg + b2.n && farm__jx(big1)->nres == 100000 &&
     memcmp(farm__jx(big1)->res, block, 100000) == 0 && farm__jx(big1)->out.n == 1,
     "rules: a large result points into its message, not copied out");
  ok(farm__jx(big2)->rx == farm__jx(big1)->rx && farm__jx(big2)->nres == 50000 && farm__jx(big2)->ntb == 2 && memcmp(farm__jx(big2)->tb, "tb", 2) == 0 &&
     farm__jx(big2)->nval == 20000 && memcmp(farm__jx(big2)->val, block, 20000) == 0,
     "rules: ...an error's message, traceback and value too");
  ok(!farm__jx(small)->rx && farm__jx(small)->nres == 1 && farm__jx(small)->res[0] == 's' && !released,
     "rules: a small result is copied out, and the message is kept while a job points into it");
  farm__engine_free(e);
  farm__job_unref(big1);
  ok(!released, "rules: ...until the last of its jobs goes");
  farm__job_unref(big2);
  ok(released == 1, "rules: ...then it is released, once");
  farm__job_unref(small);
  farm__buf_free(&b2);
  free(block);

  farm_job *all[] = { a, b, r, other, r2, r0, t, c, c2, blamed, bystander, x, y };
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) farm__job_unref(all[i]);
  farm__fn_unref(tfn);
}

int main(void) {
  test_rules();
  char err[512] = "";
  farm_engine_opts o = { .workers = 2, .echo = 0 };
  farm_engine *e = NULL, *e2 = NULL;
  int rc = farm__engine_open(&e, &o, err, sizeof err);
  ok(rc == 0, "an engine opens with two local workers");
  if (rc) { printf("# %s\n1..%d\n", err, n_test); return 1; }
  ok(farm__engine_workers(e) == 2, "it counts two workers");

  /* jobs of 0.1 s each: they finish while the host sleeps and never calls farm */
  farm_fn *spin = make_fn("return function(x) local t = os.clock() + 0.1 "
                          "while os.clock() < t do end return x * 2 end");
  farm_job *js[8];
  for (int i = 0; i < 8; i++) js[i] = job(e, spin, i);
  sleep_s(2.0);
  int over = 0;
  for (int i = 0; i < 8; i++) over += farm__job_state(js[i]) == JOB_DONE;
  ok(over == 8, "every job finished while the host slept");
  ok(farm__engine_outstanding(e) == 0, "nothing is outstanding after");

  /* a wait with nothing to come times out; one with a job to come wakes */
  uint64_t gen = farm__engine_gen(e);
  double t0 = farm__now();
  ok(farm__engine_wait(e, gen, 0.2) == 0 && farm__now() - t0 >= 0.19, "a wait with nothing to come times out");
  farm_job *q = job(e, spin, 21);
  int woke = 0;
  while (!farm__job_over(q)) woke |= farm__engine_wait(e, farm__engine_gen(e), 10.0) == 1;
  ok(woke && farm__job_state(q) == JOB_DONE, "a wait wakes when a job ends");

  /* a second engine beside the first */
  o.workers = 1;
  rc = farm__engine_open(&e2, &o, err, sizeof err);
  ok(rc == 0 && farm__engine_workers(e2) == 1, "a second engine opens beside the first");
  farm_job *r = rc ? NULL : job(e2, spin, 5);
  while (r && !farm__job_over(r)) farm__engine_wait(e2, farm__engine_gen(e2), 10.0);
  ok(r && farm__job_state(r) == JOB_DONE, "the second engine runs its job");

  /* a job that would run forever, cancelled by force: its worker is replaced */
  farm_fn *forever = make_fn("return function() while true do end end");
  farm_job *inf = job(e, forever, 0);
  for (int i = 0; i < 200 && strcmp(farm__engine_status(e, inf), "running") != 0; i++) sleep_s(0.01);
  ok(strcmp(farm__engine_status(e, inf), "running") == 0, "the endless job runs");
  ok(farm__engine_cancel(e, inf, 0) == 0, "a plain cancel does not stop a running job");
  ok(farm__engine_cancel(e, inf, 1) == 1 && farm__job_state(inf) == JOB_CANCELLED,
     "a forced cancel stops it");
  farm_job *after = job(e, spin, 1);
  while (!farm__job_over(after)) farm__engine_wait(e, farm__engine_gen(e), 10.0);
  ok(farm__job_state(after) == JOB_DONE && farm__engine_workers(e) == 2, "the pool is whole after");

  /* a job past its time limit fails as timed out (its retries unused), and
     its worker is replaced */
  farm_job *late = job_with(e, forever, 0, 0.3, 2);
  double t1 = farm__now();
  while (!farm__job_over(late) && farm__now() - t1 < 20) farm__engine_wait(e, farm__engine_gen(e), 10.0);
  ok(farm__job_state(late) == JOB_FAILED && late->attempt == 0 && farm__jx(late)->res &&
     memmem(farm__jx(late)->res, farm__jx(late)->nres, "timed out", 9), "a job past its timeout fails as timed out, not tried again");
  ok(farm__now() - t1 < 5, "...within seconds of its limit");
  /* a job that kills its worker each time: tried again up to its retries,
     then failed with the cause; the pool is whole after */
  farm_fn *die = make_fn("return function() os.exit(3) end");
  farm_job *dying = job_with(e, die, 0, 0, 2);
  while (!farm__job_over(dying)) farm__engine_wait(e, farm__engine_gen(e), 10.0);
  ok(farm__job_state(dying) == JOB_FAILED && dying->attempt == 2,
     "a job that kills its worker runs 1 + its 2 retries, then fails");
  ok(farm__jx(dying)->res && memmem(farm__jx(dying)->res, farm__jx(dying)->nres, "exit", 4), "...saying how its worker ended");
  /* a worker lost under its job (killed from outside): the job runs again */
  /* a second of the worker's own CPU time: os.time() + 1 could end within a
     millisecond (the next whole second), before the kill lands */
  farm_fn *nap = make_fn("return function(x) local t = os.clock() + 1 while os.clock() < t do end return x end");
  farm_job *victim = job_with(e, nap, 9, 0, 1);
  for (int i = 0; i < 300 && strcmp(farm__engine_status(e, victim), "running") != 0; i++) sleep_s(0.01);
  char at[128] = "";
  double since;
  farm__engine_where(e, victim, at, sizeof at, &since);
  const char *pp = strstr(at, "pid ");
  long vpid = pp ? atol(pp + 4) : 0;
  ok(vpid > 0 && kill((pid_t)vpid, SIGKILL) == 0, "the worker running a job is killed from outside");
  while (!farm__job_over(victim)) farm__engine_wait(e, farm__engine_gen(e), 10.0);
  ok(farm__job_state(victim) == JOB_DONE && victim->attempt == 1,
     "a job whose worker was killed under it runs again and finishes");
  farm_job *whole = job(e, spin, 2);
  while (!farm__job_over(whole)) farm__engine_wait(e, farm__engine_gen(e), 10.0);
  long wp[4];
  int nw = 0, live = 0;
  for (int k = 0; k < 500; k++) {   /* the replacement says HELLO in its own time */
    nw = farm__engine_pids(e, wp, 4);
    live = 0;
    for (int i = 0; i < nw; i++) live += alive(wp[i]) && wp[i] != vpid;
    if (live == 2) break;
    sleep_s(0.01);
  }
  ok(farm__job_state(whole) == JOB_DONE && live == 2, "the pool is whole after");
  farm__job_unref(late);
  farm__job_unref(dying);
  farm__job_unref(victim);
  farm__job_unref(whole);
  farm__fn_unref(die);
  farm__fn_unref(nap);

  /* farm__engine_set_workers: grown, its new workers are up when it returns;
     shrunk, a retired worker finishes its job, then quits and is not replaced */
  char serr[256] = "";
  ok(farm__engine_set_workers(e, 0, serr, sizeof serr) == FARM_EINVAL && serr[0],
     "set_workers refuses 0 workers");
  ok(farm__engine_set_workers(e, 3, serr, sizeof serr) == 0 && farm__engine_workers(e) == 3,
     "set_workers grows the pool to 3");
  long three[8];
  int n3 = farm__engine_pids(e, three, 8), up = n3 == 3;
  for (int i = 0; i < n3; i++) up &= alive(three[i]);
  ok(up, "three workers run");
  farm_job *busy[3];
  for (int i = 0; i < 3; i++) busy[i] = job(e, spin, 100 + i);
  ok(farm__engine_set_workers(e, 1, serr, sizeof serr) == 0 && farm__engine_workers(e) == 1,
     "set_workers shrinks it to 1 at once");
  int right = 1;
  for (int i = 0; i < 3; i++) {
    while (!farm__job_over(busy[i])) farm__engine_wait(e, farm__engine_gen(e), 10.0);
    right &= farm__job_state(busy[i]) == JOB_DONE;
  }
  ok(right, "the jobs held when it shrank finish");
  for (int i = 0; i < 3; i++) farm__job_unref(busy[i]);
  long one[8];
  int n1 = 0;
  for (int k = 0; k < 500 && (n1 = farm__engine_pids(e, one, 8)) != 1; k++) sleep_s(0.01);
  int gone3 = 0;
  for (int i = 0; i < n3; i++) gone3 += !alive(three[i]);
  ok(n1 == 1 && gone3 == 2 && alive(one[0]), "the two retired workers are gone, one runs");
  ok(farm__engine_set_workers(e, 2, serr, sizeof serr) == 0 && farm__engine_workers(e) == 2,
     "set_workers grows it again");

  long pids[4];
  int np = farm__engine_pids(e, pids, 4);
  farm__engine_free(e);
  int gone = 1;
  for (int i = 0; i < np; i++) gone &= !alive(pids[i]);
  ok(np == 2 && gone, "closing an engine stops its workers");
  farm__engine_free(e2);

  for (int i = 0; i < 8; i++) farm__job_unref(js[i]);
  farm__job_unref(q);
  if (r) farm__job_unref(r);
  farm__job_unref(inf);
  farm__job_unref(after);
  farm__fn_unref(spin);
  farm__fn_unref(forever);
  printf("1..%d\n", n_test);
  return n_fail != 0;
}
