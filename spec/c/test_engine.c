/*
 * test_engine.c -- the engine's loop, driven from C with no Lua in the caller's
 * hands: jobs move while the host sleeps, waits time out and wake, two engines
 * run side by side, and closing one leaves no process. Prints TAP.
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

static void sleep_s(double s) {
  struct timespec ts = { (time_t)s, (long)((s - (time_t)s) * 1e9) };
  while (nanosleep(&ts, &ts) != 0) {}
}

static int alive(long pid) { return pid > 0 && kill((pid_t)pid, 0) == 0; }

int main(void) {
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
