/*
 * test_capi.c -- the C API of farm.h: every call and its error paths, values of
 * each type both ways, errors and tracebacks, waits and timeouts, cancel, two
 * farms in one process, and a farm opened in one thread and closed in another.
 * Uses nothing but farm.h (no Lua). Prints TAP.
 */
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>
#include "farm.h"

static int n_test = 0, n_fail = 0;

static void ok(int cond, const char *what, const char *detail) {
  n_test++;
  if (!cond) n_fail++;
  printf("%sok %d - %s%s%s\n", cond ? "" : "not ", n_test, what, !cond && detail ? " # " : "",
         !cond && detail ? detail : "");
  fflush(stdout);
}

static void is_int(long long got, long long want, const char *what) {
  char d[96];
  snprintf(d, sizeof d, "got %lld, want %lld", got, want);
  ok(got == want, what, d);
}

static void is_str(const char *got, const char *want, const char *what) {
  char d[1024];
  snprintf(d, sizeof d, "got [%s], want [%s]", got ? got : "(null)", want);
  ok(got && strcmp(got, want) == 0, what, d);
}

static void has_str(const char *got, const char *part, const char *what) {
  char d[1024];
  snprintf(d, sizeof d, "[%s] should contain [%s]", got ? got : "(null)", part);
  ok(got && strstr(got, part) != NULL, what, d);
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static farm *open_farm(int workers) {
  farm_options o;
  char err[512];
  farm *f = NULL;
  farm_options_init(&o);
  o.workers = workers;
  o.errbuf = err;
  o.errlen = sizeof err;
  int rc = farm_open(&f, &o);
  if (rc != FARM_OK) printf("# farm_open: %s: %s\n", farm_strerror(rc), err);
  return f;
}

/* Submit source, wait, and return the future (NULL when the submit failed). */
static farm_future *run(farm *f, const char *src, const farm_value *args, int n) {
  farm_future *fu = NULL;
  int rc = farm_submit_source(f, src, args, n, &fu);
  if (rc != FARM_OK) {
    printf("# submit failed: %s: %s\n", farm_strerror(rc), farm_last_error(f));
    return NULL;
  }
  farm_wait(fu, 60);
  if (farm_status(fu) == FARM_FAILED)
    printf("# job failed: %s\n", farm_error_message(fu));
  return fu;
}

/* The integer a job of src on (a) gives, or -999999. */
static long long int_of(farm *f, const char *src, long long a) {
  farm_value arg = farm_integer(a), v;
  farm_future *fu = run(f, src, &arg, 1);
  long long r = -999999;
  if (fu && farm_result(fu, 0, &v) == FARM_OK && v.type == FARM_TINTEGER) r = v.i;
  farm_future_free(fu);
  return r;
}

static const char *LONG_JOB =
  "function(s) local t = os.clock() + s while os.clock() < t do end return s end";

/* ---- values ---------------------------------------------------------------------- */

static void test_values(farm *f) {
  farm_value args[5], v;
  args[0] = farm_integer(41);
  args[1] = farm_number(2.5);
  args[2] = farm_string("hello");
  args[3] = farm_boolean(1);
  args[4] = farm_nil();
  farm_future *fu = run(f,
    "function(i, d, s, b, n)\n"
    "  return i + 1, d * 2, s .. ' world', not b, n, math.type(i), math.type(d), type(n)\n"
    "end", args, 5);
  ok(fu != NULL, "farm_submit_source takes integer, double, string, boolean and nil", NULL);
  if (!fu) return;
  is_int(farm_status(fu), FARM_DONE, "the job is done");
  is_int(farm_result_count(fu), 8, "eight results");
  ok(farm_result(fu, 0, &v) == FARM_OK && v.type == FARM_TINTEGER && v.i == 42, "an integer result", NULL);
  ok(farm_result(fu, 1, &v) == FARM_OK && v.type == FARM_TNUMBER && v.d == 5.0, "a double result (5.0 stays a float)", NULL);
  ok(farm_result(fu, 2, &v) == FARM_OK && v.type == FARM_TSTRING && v.len == 11 &&
     strcmp(v.s, "hello world") == 0, "a string result, with its length", NULL);
  ok(farm_result(fu, 3, &v) == FARM_OK && v.type == FARM_TBOOLEAN && v.b == 0, "a boolean result", NULL);
  ok(farm_result(fu, 4, &v) == FARM_OK && v.type == FARM_TNIL, "a nil result", NULL);
  farm_result(fu, 5, &v);
  is_str(v.s, "integer", "an integer argument arrives as a Lua integer");
  farm_result(fu, 6, &v);
  is_str(v.s, "float", "a double argument arrives as a Lua float");
  farm_result(fu, 7, &v);
  is_str(v.s, "nil", "a nil argument arrives as nil");
  is_int(farm_result(fu, 8, &v), FARM_EINVAL, "farm_result past the end: FARM_EINVAL");
  ok(v.type == FARM_TNIL, "...and the value is nil", NULL);
  is_int(farm_result(fu, -1, &v), FARM_EINVAL, "farm_result(-1): FARM_EINVAL");
  is_int(farm_result(fu, 0, NULL), FARM_EINVAL, "farm_result with no out: FARM_EINVAL");
  ok(farm_error_message(fu) == NULL && farm_error_traceback(fu) == NULL,
     "a job that is done has no error message or traceback", NULL);
  farm_future_free(fu);

  fu = run(f, "function() end", NULL, 0);
  is_int(fu ? farm_result_count(fu) : -1, 0, "a job that returns nothing has no results");
  ok(fu && farm_result(fu, 0, &v) == FARM_EINVAL, "...and farm_result(0) is FARM_EINVAL", NULL);
  size_t n = 9;
  ok(fu && strcmp(farm_output(fu, &n), "") == 0 && n == 0, "...and printed nothing", NULL);
  farm_future_free(fu);

  /* strings with NUL bytes, both ways */
  args[0] = farm_lstring("a\0b", 3);
  fu = run(f, "function(s) return #s, s .. '\\0c' end", args, 1);
  ok(fu && farm_result(fu, 0, &v) == FARM_OK && v.i == 3, "a string argument keeps its NUL byte", NULL);
  ok(fu && farm_result(fu, 1, &v) == FARM_OK && v.type == FARM_TSTRING && v.len == 5 &&
     memcmp(v.s, "a\0b\0c", 5) == 0 && v.s[5] == 0, "a string result keeps its NUL bytes", NULL);
  farm_future_free(fu);

  /* 64-bit integers and doubles that are not plain */
  args[0] = farm_integer(-9223372036854775807LL - 1);
  args[1] = farm_number(1e300);
  fu = run(f, "function(i, d) return i, d * 1e10, -d * 1e10, 0.1 end", args, 2);
  ok(fu && farm_result(fu, 0, &v) == FARM_OK && v.type == FARM_TINTEGER &&
     v.i == -9223372036854775807LL - 1, "the smallest integer travels both ways", NULL);
  ok(fu && farm_result(fu, 1, &v) == FARM_OK && v.type == FARM_TNUMBER && isinf(v.d) && v.d > 0,
     "an infinite result", NULL);
  ok(fu && farm_result(fu, 3, &v) == FARM_OK && v.d == 0.1, "0.1 comes back exactly", NULL);
  farm_future_free(fu);
}

static void test_tables(farm *f) {
  farm_value args[2], v;
  farm_future *fu = run(f,
    "function() return {1, 2.5, 'x', {true}, name = 'pi', [10] = 3, ['a b'] = false,\n"
    "  [1.5] = 0/0, ['end'] = 1/0, s = 'line\\nnext\\0'} end", NULL, 0);
  ok(fu && farm_result(fu, 0, &v) == FARM_OK && v.type == FARM_TTABLE,
     "a table result comes back as FARM_TTABLE", NULL);
  if (fu)
    is_str(v.s, "{1, 2.5, \"x\", {true}, [1.5] = 0/0, [10] = 3, [\"a b\"] = false, "
           "[\"end\"] = 1/0, name = \"pi\", s = \"line\\nnext\\0\"}",
           "...as Lua-literal text in a fixed order");
  ok(fu && v.len == strlen(v.s), "...with its length", NULL);
  farm_future_free(fu);

  /* text from farm goes back in as an argument */
  args[0] = farm_table("{1, 2, 3, x = 10, inner = {y = 'z'}, [\"k\"] = 1/0}");
  fu = run(f, "function(t) return t[1] + t[2] + t[3] + t.x, t.inner.y, t.k, #t end", args, 1);
  ok(fu && farm_result(fu, 0, &v) == FARM_OK && v.i == 16, "a table argument given as text", NULL);
  ok(fu && farm_result(fu, 1, &v) == FARM_OK && v.type == FARM_TSTRING && strcmp(v.s, "z") == 0,
     "...with a nested table", NULL);
  ok(fu && farm_result(fu, 2, &v) == FARM_OK && isinf(v.d), "...and 1/0 in it", NULL);
  farm_future_free(fu);

  fu = run(f, "function(t) return t end", args, 1);
  ok(fu && farm_result(fu, 0, &v) == FARM_OK && v.type == FARM_TTABLE, "a table round trip", NULL);
  if (fu) is_str(v.s, "{1, 2, 3, inner = {y = \"z\"}, k = 1/0, x = 10}", "...reads as it should");
  farm_future_free(fu);

  /* tables that have no literal text */
  fu = run(f, "function() local t = {} t.self = t return 1, t end", NULL, 0);
  is_int(fu ? farm_result_count(fu) : 0, FARM_EINVAL, "a table that contains itself: FARM_EINVAL");
  has_str(farm_last_error(f), "result 2.self is a table that contains itself",
          "...and farm_last_error says where");
  ok(fu && farm_result(fu, 0, &v) == FARM_EINVAL, "farm_result fails the same way", NULL);
  farm_future_free(fu);
  fu = run(f, "function() return {f = string.len} end", NULL, 0);
  is_int(fu ? farm_result_count(fu) : 0, FARM_EINVAL, "a table holding a function: FARM_EINVAL");
  has_str(farm_last_error(f), "result 1.f is a function", "...naming where the function is");
  farm_future_free(fu);
  fu = run(f, "function() return string.len end", NULL, 0);
  is_int(fu ? farm_result_count(fu) : 0, FARM_EINVAL, "a function result: FARM_EINVAL");
  has_str(farm_last_error(f), "result 1 is a function", "...naming the result");
  farm_future_free(fu);

  /* table arguments that are not */
  farm_future *bad = NULL;
  args[0] = farm_table("{1, 2");
  is_int(farm_submit_source(f, "function(t) return t end", args, 1, &bad), FARM_EINVAL,
         "a table argument that does not parse: FARM_EINVAL");
  has_str(farm_last_error(f), "table argument 1", "...naming the argument");
  ok(bad == NULL, "...and no future", NULL);
  args[0] = farm_integer(1);
  args[1] = farm_table("'not a table'");
  is_int(farm_submit_source(f, "function(t) return t end", args, 2, &bad), FARM_EINVAL,
         "a table argument whose text gives a string: FARM_EINVAL");
  has_str(farm_last_error(f), "argument 2: the text gives string, not a table", "...saying so");
  args[0] = farm_table("{os.exit()}");
  is_int(farm_submit_source(f, "function(t) return t end", args, 1, &bad), FARM_EINVAL,
         "a table argument's text sees no globals");
  args[0] = farm_integer(1);
  args[0].type = 99;
  is_int(farm_submit_source(f, "function(t) return t end", args, 1, &bad), FARM_EINVAL,
         "an argument of an unknown type: FARM_EINVAL");
}

/* ---- sources and kernels -------------------------------------------------------------- */

static void test_sources(farm *f) {
  farm_value args[3], v;
  farm_future *fu = NULL;
  is_int(int_of(f, "local k = 3\nreturn function(x) return x * k end", 14), 42,
         "a chunk that returns a function, with an upvalue");
  is_int(int_of(f, "function(x) return x + 1 end", 1), 2, "an expression giving a function");
  is_int(int_of(f, "function(x) return x + 1 end", 2), 3, "the same source again (cached)");
  is_int(int_of(f, "math.abs", -7), 7, "a library function by expression");
  /* helpers in the chunk travel with the job */
  is_int(int_of(f, "local function sq(x) return x * x end\n"
                   "local function sum(n) local s = 0 for i = 1, n do s = s + sq(i) end return s end\n"
                   "return sum", 3), 14, "local functions of the chunk travel as upvalues");

  is_int(int_of(f, "function(x) return farm.submit(function(y) return y * 2 end, x):result() end", 21),
         42, "a job submits a job of its own through the worker's farm");
  is_int(int_of(f, "local t = {10, 20, 30}\nreturn function(i) t[i] = t[i] + 1 return t[i] end", 2), 21,
         "a table upvalue travels with the job");
  is_int(int_of(f, "local t = {10, 20, 30}\nreturn function(i) t[i] = t[i] + 1 return t[i] end", 2), 21,
         "...afresh for each job");

  is_int(farm_submit_source(f, "function(x) return x + end", NULL, 0, &fu), FARM_EINVAL,
         "a source that does not compile: FARM_EINVAL");
  has_str(farm_last_error(f), "farm_submit_source:1:", "...and the message names the chunk and line");
  ok(fu == NULL, "...and gives no future", NULL);
  is_int(farm_submit_source(f, "local x = 1\nx = = 2", NULL, 0, &fu), FARM_EINVAL,
         "a chunk that does not compile: FARM_EINVAL");
  has_str(farm_last_error(f), "farm_submit_source:2:", "...naming its line");
  is_int(farm_submit_source(f, "42", NULL, 0, &fu), FARM_EINVAL, "a source that gives no function");
  has_str(farm_last_error(f), "gives number, not a function", "...says what it gives");
  is_int(farm_submit_source(f, "error('at submit')", NULL, 0, &fu), FARM_EINVAL,
         "a chunk that raises when it is run");
  has_str(farm_last_error(f), "at submit", "...passes its message on");
  is_int(farm_submit_source(f, NULL, NULL, 0, &fu), FARM_EINVAL, "a NULL source: FARM_EINVAL");
  is_int(farm_submit_source(NULL, "function() end", NULL, 0, &fu), FARM_EINVAL, "a NULL farm: FARM_EINVAL");
  is_int(farm_submit_source(f, "function() end", NULL, 0, NULL), FARM_EINVAL, "a NULL out: FARM_EINVAL");
  is_int(farm_submit_source(f, "function() end", NULL, -1, &fu), FARM_EINVAL, "nargs < 0: FARM_EINVAL");
  is_int(farm_submit_source(f, "function() end", NULL, 2, &fu), FARM_EINVAL, "args NULL with nargs 2: FARM_EINVAL");

  /* kernels and functions by name */
  args[0] = farm_integer(3);
  args[1] = farm_integer(9);
  args[2] = farm_integer(4);
  ok(farm_submit_kernel(f, "math.max", args, 3, &fu) == FARM_OK, "farm_submit_kernel(\"math.max\")", farm_last_error(f));
  if (fu) {
    farm_wait(fu, 30);
    ok(farm_result(fu, 0, &v) == FARM_OK && v.i == 9, "...runs math.max on a worker", NULL);
    farm_future_free(fu);
  }
  args[0] = farm_string("ab");
  args[1] = farm_integer(3);
  ok(farm_submit_kernel(f, "string.rep", args, 2, &fu) == FARM_OK, "farm_submit_kernel(\"string.rep\")", NULL);
  if (fu) {
    farm_wait(fu, 30);
    ok(farm_result(fu, 0, &v) == FARM_OK && strcmp(v.s, "ababab") == 0, "...gives ababab", NULL);
    farm_future_free(fu);
  }
  args[0] = farm_integer(1000);
  args[1] = farm_integer(7);
  ok(farm_submit_kernel(f, "pi_hits", args, 2, &fu) == FARM_OK, "farm_submit_kernel(\"pi_hits\")", NULL);
  if (fu) {
    farm_wait(fu, 30);
    int r = farm_result(fu, 0, &v);
    ok(r == FARM_OK && v.type == FARM_TINTEGER && v.i > 700 && v.i < 870,
       "...runs farm.kernels.pi_hits on a worker", farm_error_message(fu));
    farm_future_free(fu);
  }
  args[0] = farm_integer(100);
  ok(farm_submit_kernel(f, "farm.kernels.sum_primes_below", args, 1, &fu) == FARM_OK,
     "a kernel by its qualified name", NULL);
  if (fu) {
    farm_wait(fu, 30);
    ok(farm_result(fu, 0, &v) == FARM_OK && v.i == 1060, "...sum_primes_below(100) is 1060",
       farm_error_message(fu));
    farm_future_free(fu);
  }
  ok(farm_submit_kernel(f, "no_such_kernel", NULL, 0, &fu) == FARM_OK,
     "an unknown kernel is looked up when the job runs", NULL);
  if (fu) {
    farm_wait(fu, 30);
    is_int(farm_status(fu), FARM_FAILED, "...and the job fails");
    has_str(farm_error_message(fu), "farm.kernels.no_such_kernel", "...naming the kernel");
    farm_future_free(fu);
  }
  is_int(farm_submit_kernel(f, "a..b", NULL, 0, &fu), FARM_EINVAL, "a name that is not one: FARM_EINVAL");
  has_str(farm_last_error(f), "'a..b' is not a name", "...saying so");
  is_int(farm_submit_kernel(f, "", NULL, 0, &fu), FARM_EINVAL, "an empty name: FARM_EINVAL");
  is_int(farm_submit_kernel(f, NULL, NULL, 0, &fu), FARM_EINVAL, "a NULL name: FARM_EINVAL");

  /* what a job prints */
  fu = run(f, "function() print('hello') io.write('x') return 1 end", NULL, 0);
  size_t n = 0;
  const char *out = fu ? farm_output(fu, &n) : NULL;
  ok(out && strcmp(out, "hello\nx") == 0 && n == 7, "farm_output: what the job printed", out);
  farm_future_free(fu);
}

/* ---- errors, waits, cancel ---------------------------------------------------------------- */

static void test_errors(farm *f) {
  farm_value arg = farm_integer(7), v;
  farm_future *fu = run(f, "function(x)\n  local y = x * 2\n  error('boom ' .. y)\nend", &arg, 1);
  is_int(fu ? farm_status(fu) : -1, FARM_FAILED, "a job that raises is FARM_FAILED");
  has_str(fu ? farm_error_message(fu) : NULL, "farm_submit_source:3: boom 14",
          "farm_error_message: the message, with chunk and line");
  has_str(fu ? farm_error_traceback(fu) : NULL, "stack traceback", "farm_error_traceback: the worker's traceback");
  has_str(fu ? farm_error_traceback(fu) : NULL, "farm_submit_source:3", "...naming the line");
  is_int(fu ? farm_result_count(fu) : 0, FARM_EINVAL, "farm_result_count of a failed job: FARM_EINVAL");
  has_str(farm_last_error(f), "the job failed", "...and farm_last_error says so");
  is_int(fu ? farm_result(fu, 0, &v) : 0, FARM_EINVAL, "farm_result of a failed job: FARM_EINVAL");
  farm_future_free(fu);
  fu = run(f, "function() error({code = 1}) end", NULL, 0);
  ok(fu && farm_error_message(fu) != NULL, "a job that raises a table has a message", NULL);
  farm_future_free(fu);
  is_int(farm_wait(NULL, 0), FARM_EINVAL, "farm_wait(NULL): FARM_EINVAL");
  is_int(farm_status(NULL), FARM_EINVAL, "farm_status(NULL): FARM_EINVAL");
  is_int(farm_cancel(NULL), FARM_EINVAL, "farm_cancel(NULL): FARM_EINVAL");
  is_int(farm_result_count(NULL), FARM_EINVAL, "farm_result_count(NULL): FARM_EINVAL");
  ok(farm_error_message(NULL) == NULL && farm_error_traceback(NULL) == NULL, "error of NULL: NULL", NULL);
  farm_future_free(NULL);
  ok(1, "farm_future_free(NULL) is fine", NULL);
}

static void test_wait_cancel(farm *f) {
  farm_value arg = farm_number(30);
  farm_future *slow = NULL, *fast = NULL, *queued = NULL, *list[3];
  int which = 99;
  ok(farm_submit_source(f, LONG_JOB, &arg, 1, &slow) == FARM_OK, "a long job", NULL);
  double t0 = now();
  is_int(farm_wait(slow, 0.3), FARM_ETIMEDOUT, "farm_wait times out on a long job");
  double dt = now() - t0;
  ok(dt >= 0.29 && dt < 3, "...after about the timeout", NULL);
  is_int(farm_wait(slow, 0), FARM_ETIMEDOUT, "farm_wait(0) just looks");
  is_int(farm_status(slow), FARM_RUNNING, "the long job is running");
  ok(farm_error_message(slow) == NULL, "a running job has no error message", NULL);
  is_int(farm_result_count(slow), FARM_EINVAL, "farm_result_count while it runs: FARM_EINVAL");
  has_str(farm_last_error(f), "has not finished", "...saying it has not finished");
  size_t n = 5;
  is_str(farm_output(slow, &n), "", "no output while it runs");

  /* wait_any: the fast one of a slow and a fast job (2 workers) */
  arg = farm_number(0.01);
  farm_submit_source(f, LONG_JOB, &arg, 1, &fast);
  list[0] = slow;
  list[1] = fast;
  is_int(farm_wait_any(list, 2, 20, &which), FARM_OK, "farm_wait_any returns when one is over");
  is_int(which, 1, "...and says which");
  list[1] = slow;
  which = 99;
  is_int(farm_wait_any(list, 2, 0.2, &which), FARM_ETIMEDOUT, "farm_wait_any times out");
  is_int(which, -1, "...with which = -1");
  is_int(farm_wait_any(list, 0, 1, &which), FARM_EINVAL, "farm_wait_any of none: FARM_EINVAL");
  list[1] = NULL;
  is_int(farm_wait_any(list, 2, 1, &which), FARM_EINVAL, "farm_wait_any with a NULL: FARM_EINVAL");

  /* both workers busy: a third job waits in the queue, then is cancelled */
  farm_future *slow2 = NULL;
  arg = farm_number(30);
  farm_submit_source(f, LONG_JOB, &arg, 1, &slow2);
  arg = farm_number(0);
  farm_submit_source(f, LONG_JOB, &arg, 1, &queued);
  is_int(farm_status(queued), FARM_PENDING, "a job behind busy workers is pending");
  is_int(farm_cancel(queued), 1, "farm_cancel of a queued job: 1");
  is_int(farm_status(queued), FARM_CANCELLED, "...it is cancelled");
  is_str(farm_error_message(queued), "the job was cancelled", "...and says so");
  is_int(farm_wait(queued, 0), FARM_OK, "farm_wait of a cancelled job: over");
  t0 = now();
  is_int(farm_cancel(slow), 1, "farm_cancel of a running job: 1 (its worker is replaced)");
  is_int(farm_cancel(slow2), 1, "...and of the other");
  ok(now() - t0 < 10, "cancelling running jobs is quick", NULL);
  is_int(farm_status(slow), FARM_CANCELLED, "the running job is cancelled");
  is_int(farm_cancel(fast), 0, "farm_cancel of a finished job: 0");
  is_int(farm_status(fast), FARM_DONE, "...its results stand");
  farm_future_free(slow);
  farm_future_free(slow2);
  farm_future_free(fast);
  farm_future_free(queued);
  is_int(int_of(f, "function(x) return x end", 5), 5, "the farm works after cancelling running jobs");
  is_int(farm_workers(f), 2, "...with its workers replaced");
}

/* ---- farms --------------------------------------------------------------------------- */

static void test_two_farms(void) {
  farm *a = open_farm(1), *b = open_farm(2);
  ok(a && b, "two farms open in one process", NULL);
  if (!a || !b) { farm_close(a); farm_close(b); return; }
  is_int(farm_workers(a), 1, "the first has its 1 worker");
  is_int(farm_workers(b), 2, "the second has its 2 workers");
  farm_value arg = farm_number(0.2);
  farm_future *fa = NULL, *fb = NULL, *list[2];
  farm_submit_source(a, LONG_JOB, &arg, 1, &fa);
  arg = farm_number(0.05);
  farm_submit_source(b, LONG_JOB, &arg, 1, &fb);
  list[0] = fa;
  list[1] = fb;
  int which = -1;
  is_int(farm_wait_any(list, 2, 20, &which), FARM_OK, "farm_wait_any over futures of two farms");
  is_int(which, 1, "...sees the second farm's job end first");
  is_int(farm_wait(fa, 20), FARM_OK, "the first farm's job ends too");
  farm_future_free(fa);
  farm_future_free(fb);
  is_int(int_of(a, "function(x) return x + 1 end", 1), 2, "a job in the first farm");
  is_int(int_of(b, "function(x) return x + 2 end", 1), 3, "a job in the second farm");
  /* a future outlives its farm's close */
  fb = run(a, "function() return 'kept' end", NULL, 0);
  arg = farm_number(30);
  farm_submit_source(a, LONG_JOB, &arg, 1, &fa);
  farm_close(a);
  ok(1, "closing the first farm with a job running", NULL);
  is_int(farm_status(fa), FARM_FAILED, "its unfinished job failed");
  has_str(farm_error_message(fa), "the farm was closed", "...because the farm was closed");
  is_int(farm_wait(fa, 1), FARM_OK, "farm_wait after the close: over");
  is_int(farm_cancel(fa), 0, "farm_cancel after the close: 0");
  farm_value v;
  ok(fb && farm_result(fb, 0, &v) == FARM_OK && strcmp(v.s, "kept") == 0,
     "a finished job's results are read after the close", NULL);
  farm_future_free(fa);
  farm_future_free(fb);
  is_int(int_of(b, "function(x) return x * 3 end", 3), 9, "the other farm goes on working");
  farm_close(b);
}

/* pp's set_ncpus: the pool grows and shrinks while the farm runs */
static void test_set_workers(void) {
  farm *f = open_farm(1);
  ok(f != NULL, "a farm of 1 worker for set_workers", NULL);
  if (!f) return;
  is_int(farm_set_workers(f, 3), FARM_OK, "farm_set_workers(3)");
  is_int(farm_workers(f), 3, "...and it has 3 workers");
  farm_future *fu[6];
  for (int i = 0; i < 6; i++) {
    farm_value arg = farm_number(0.05);
    fu[i] = NULL;
    farm_submit_source(f, LONG_JOB, &arg, 1, &fu[i]);
  }
  is_int(farm_set_workers(f, 1), FARM_OK, "farm_set_workers(1) while jobs run");
  is_int(farm_workers(f), 1, "...and it counts 1 worker");
  int done = 0;
  for (int i = 0; i < 6; i++) {
    done += fu[i] && farm_wait(fu[i], 30) == FARM_OK && farm_status(fu[i]) == FARM_DONE;
    farm_future_free(fu[i]);
  }
  is_int(done, 6, "every job finished across the shrink");
  is_int(int_of(f, "function(x) return x + 1 end", 41), 42, "the shrunk farm runs jobs");
  is_int(farm_set_workers(f, 0), FARM_EINVAL, "farm_set_workers(0): FARM_EINVAL");
  has_str(farm_last_error(f), "from 1 to 256", "...saying the range");
  farm_close(f);
}

/* farm_add_nodes: a standing node (no key: on 127.0.0.1) added to a running
   farm gets jobs; a bad line is one error and nothing is added */
static void test_add_nodes(void) {
  const char *exe = getenv("FARM_EXE");
  if (!exe || !*exe) { ok(1, "farm_add_nodes # SKIP no FARM_EXE", NULL); return; }
  int port = 29000 + (int)(getpid() * 7 % 20000);
  char listen[64], line[64];
  snprintf(listen, sizeof listen, "tcp://127.0.0.1:%d", port);
  snprintf(line, sizeof line, "node://127.0.0.1:%d", port);
  pid_t node = fork();
  if (node == 0) {
    execl(exe, "farm", "node", "--listen", listen, "-w", "2", "--log-level", "error", (char *)NULL);
    _exit(127);
  }
  farm *f = open_farm(1);
  ok(f != NULL, "a farm of 1 worker for add_nodes", NULL);
  if (!f) { kill(node, SIGTERM); waitpid(node, NULL, 0); return; }
  const char *bad[] = { line, "node://127.0.0.1:99999" };
  is_int(farm_add_nodes(f, bad, 2), FARM_EHOSTS, "farm_add_nodes with a bad line: FARM_EHOSTS");
  has_str(farm_last_error(f), "line 2: bad port '99999'", "...naming the line and what is wrong");
  is_int(farm_workers(f), 1, "...and nothing was added");
  is_int(farm_add_nodes(f, NULL, -1), FARM_EINVAL, "farm_add_nodes(-1): FARM_EINVAL");
  /* the node may not listen yet: added again until it is up (harmless while it is) */
  int workers = 0;
  for (double until = now() + 30; now() < until && (workers = farm_workers(f)) != 3; usleep(100000)) {
    const char *one[] = { line };
    farm_add_nodes(f, one, 1);
  }
  is_int(workers, 3, "farm_add_nodes: the node's 2 workers join the farm's 1");
  int sum = 0;
  for (int i = 0; i < 20; i++) sum += (int)int_of(f, "function(x) return x end", i);
  is_int(sum, 190, "...and the farm runs jobs");
  const char *again[] = { line, "# a comment", "" };
  is_int(farm_add_nodes(f, again, 3), FARM_OK, "farm_add_nodes of a node it has: FARM_OK");
  is_int(farm_workers(f), 3, "...and nothing more");
  farm_close(f);
  kill(node, SIGTERM);
  waitpid(node, NULL, 0);
}

static void *thread_open(void *p) {
  *(farm **)p = open_farm(1);
  return NULL;
}

static void *thread_close(void *p) {
  farm_close((farm *)p);
  return NULL;
}

static void *thread_run(void *p) {
  long long *r = p;
  farm *f = (farm *)(intptr_t)r[0];
  r[1] = int_of(f, "function(x) return x * 2 end", r[2]);
  return NULL;
}

/* r: the farm, then how many round trips are right of r[2] made; r[3] the first value */
static void *thread_trips(void *p) {
  long long *r = p;
  farm *f = (farm *)(intptr_t)r[0];
  for (long long k = 0; k < r[2]; k++)
    r[1] += int_of(f, "function(x) return x + 1 end", r[3] + k) == r[3] + k + 1;
  return NULL;
}

static void test_threads(void) {
  pthread_t t;
  farm *f = NULL;
  pthread_create(&t, NULL, thread_open, &f);
  pthread_join(t, NULL);
  ok(f != NULL, "a farm opened in another thread", NULL);
  if (!f) return;
  is_int(int_of(f, "function(x) return -x end", 4), -4, "...runs jobs submitted from this one");
  pthread_create(&t, NULL, thread_close, f);
  pthread_join(t, NULL);
  ok(1, "...and is closed from a third thread", NULL);

  f = open_farm(2);
  ok(f != NULL, "a farm for threads that submit at once", NULL);
  if (!f) return;
  pthread_t ts[4];
  long long r[4][3];
  for (int i = 0; i < 4; i++) {
    r[i][0] = (long long)(intptr_t)f;
    r[i][1] = 0;
    r[i][2] = i + 1;
    pthread_create(&ts[i], NULL, thread_run, r[i]);
  }
  int good = 1;
  for (int i = 0; i < 4; i++) {
    pthread_join(ts[i], NULL);
    good &= r[i][1] == 2 * (i + 1);
  }
  ok(good, "four threads submit and wait on one farm at once", NULL);
  /* two threads each doing round trips, waiting side by side many times (a
     wakeup meant for one must reach it, whichever thread takes it in) */
  long long tr[2][4];
  for (int i = 0; i < 2; i++) {
    tr[i][0] = (long long)(intptr_t)f;
    tr[i][1] = 0;
    tr[i][2] = 400;
    tr[i][3] = 1000000 * (i + 1);
    pthread_create(&ts[i], NULL, thread_trips, tr[i]);
  }
  for (int i = 0; i < 2; i++) pthread_join(ts[i], NULL);
  ok(tr[0][1] == 400 && tr[1][1] == 400, "two threads doing 400 round trips each at once: every result right", NULL);
  /* a thread waits while another closes the farm */
  farm_value arg = farm_number(30);
  farm_future *fu = NULL;
  farm_submit_source(f, LONG_JOB, &arg, 1, &fu);
  pthread_create(&t, NULL, thread_close, f);
  is_int(farm_wait(fu, 30), FARM_OK, "a wait ends when another thread closes the farm");
  pthread_join(t, NULL);
  is_int(farm_status(fu), FARM_FAILED, "...and the job failed");
  farm_future_free(fu);
}

static void test_open_errors(void) {
  farm_options o;
  char err[256];
  farm *f = (farm *)&o;
  farm_options_init(&o);
  o.errbuf = err;
  o.errlen = sizeof err;
  o.workers = 300;
  is_int(farm_open(&f, &o), FARM_EINVAL, "farm_open with 300 workers: FARM_EINVAL");
  ok(f == NULL, "...and *out is NULL", NULL);
  has_str(err, "workers must be", "...and errbuf says why");
  o.workers = 1;
  o.hosts = "a,,b:x";
  is_int(farm_open(&f, &o), FARM_EHOSTS, "a host list that does not parse: FARM_EHOSTS");
  ok(err[0] != 0, "...and errbuf says why", err);
  o.hosts = "h1";
  o.hostfile = "/nonexistent/hosts";
  is_int(farm_open(&f, &o), FARM_EHOSTS, "both a hostfile and hosts: FARM_EHOSTS");
  has_str(err, "not both", "...saying so");
  o.hosts = NULL;
  is_int(farm_open(&f, &o), FARM_EHOSTS, "a hostfile that is missing: FARM_EHOSTS");
  has_str(err, "/nonexistent/hosts", "...naming it");
  o.hostfile = NULL;
  o.exe = "/nonexistent/farm";
  int rc = farm_open(&f, &o);
  ok(rc < 0 && f == NULL, "a farm executable that is missing: an error", farm_strerror(rc));
  o.exe = NULL;
  o.max_message = 100;
  is_int(farm_open(&f, &o), FARM_EINVAL, "max_message below 64 KiB: FARM_EINVAL");
  is_int(farm_open(NULL, NULL), FARM_EINVAL, "farm_open(NULL): FARM_EINVAL");
  farm_close(NULL);
  ok(1, "farm_close(NULL) is fine", NULL);

  /* a message bigger than max_message */
  o.max_message = 65536;
  f = NULL;
  ok(farm_open(&f, &o) == FARM_OK, "a farm with max_message 64 KiB", err);
  if (f) {
    char *big = malloc(100000);
    memset(big, 'x', 100000);
    farm_value arg = farm_lstring(big, 100000);
    farm_future *fu = NULL;
    is_int(farm_submit_source(f, "function(s) return #s end", &arg, 1, &fu), FARM_ETOOBIG,
           "arguments over max_message: FARM_ETOOBIG");
    has_str(farm_last_error(f), "max_message", "...and the message names the fix");
    free(big);
    farm_close(f);
  }
}

/* farm_open's code and words when no node could be reached: a real `farm node`
   (FARM_EXE) with a key on 127.0.0.1, reached with no key and with a wrong
   one (FARM_EAUTH), and an SSH host that refuses (FARM_ESSH). What it starts,
   it stops by pid; its files are in a directory of its own. */
static void test_open_codes(void) {
  const char *exe = getenv("FARM_EXE");
  char dir[] = "/tmp/farm-capi-XXXXXX", cmd[1024], log[128], hosts[64], err[512];
  if (!exe || !*exe || !mkdtemp(dir)) { ok(0, "FARM_EXE and a directory for a node", NULL); return; }
  int port = 20000 + getpid() % 20000;
  snprintf(cmd, sizeof cmd, "'%s' keygen %s/k >/dev/null 2>&1 && '%s' keygen %s/other >/dev/null 2>&1", exe, dir, exe, dir);
  ok(system(cmd) == 0, "two keys made with farm keygen", cmd);
  snprintf(log, sizeof log, "%s/node.log", dir);
  pid_t node = fork();
  if (node == 0) {
    char listen[64], key[96];
    snprintf(listen, sizeof listen, "tcp://127.0.0.1:%d", port);
    snprintf(key, sizeof key, "%s/k", dir);
    execl(exe, "farm", "node", "--listen", listen, "--key-file", key, "-w", "1", "--log-file", log, (char *)NULL);
    _exit(127);
  }
  int up = 0;
  for (int i = 0; i < 200 && !up && node > 0; i++) {     /* up to 10 s */
    FILE *lf = fopen(log, "r");
    char line[512];
    while (lf && fgets(line, sizeof line, lf)) up |= strstr(line, "listening on") != NULL;
    if (lf) fclose(lf);
    if (!up) usleep(50000);
  }
  ok(up, "a farm node with a key listens", log);

  farm_options o;
  farm *f = (farm *)&o;
  farm_options_init(&o);
  o.no_local = 1;
  o.errbuf = err;
  o.errlen = sizeof err;
  snprintf(hosts, sizeof hosts, "node://127.0.0.1:%d", port);
  o.hosts = hosts;
  char *saved = getenv("FARM_KEY_FILE") ? strdup(getenv("FARM_KEY_FILE")) : NULL;
  unsetenv("FARM_KEY_FILE");
  is_int(farm_open(&f, &o), FARM_EAUTH, "a node with a key, and none given: FARM_EAUTH");
  ok(f == NULL, "...and *out is NULL", NULL);
  has_str(err, "set key_file in farm_options", "...and errbuf names the option field");
  ok(!strstr(err, "--"), "...not a command-line flag", err);
  char other[96];
  snprintf(other, sizeof other, "%s/other", dir);
  o.key_file = other;
  is_int(farm_open(&f, &o), FARM_EAUTH, "a node with another key: FARM_EAUTH");
  has_str(err, "key_file in farm_options", "...and errbuf names the option field");
  ok(!strstr(err, "--"), "...not a command-line flag", err);
  o.key_file = NULL;
  /* nothing listens on the port after the node's: the SSH host refuses */
  snprintf(hosts, sizeof hosts, "127.0.0.1:%d", port + 1);
  is_int(farm_open(&f, &o), FARM_ESSH, "an SSH host that refuses: FARM_ESSH");
  has_str(err, "127.0.0.1", "...and errbuf names it");
  if (saved) { setenv("FARM_KEY_FILE", saved, 1); free(saved); }

  if (node > 0) {
    kill(node, SIGTERM);
    int st = 0;
    ok(waitpid(node, &st, 0) == node, "the node is stopped", NULL);
  }
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) printf("# could not remove %s\n", dir);
}

static void test_strerror(void) {
  int good = 1;
  for (int c = FARM_OK; c >= FARM_EHOSTS; c--)
    good &= farm_strerror(c) && *farm_strerror(c) && strcmp(farm_strerror(c), "unknown error") != 0;
  ok(good, "farm_strerror names every code from FARM_OK to FARM_EHOSTS", NULL);
  is_str(farm_strerror(FARM_ETIMEDOUT), "timed out", "farm_strerror(FARM_ETIMEDOUT)");
  is_str(farm_strerror(-999), "unknown error", "farm_strerror of an unknown code");
  is_str(farm_version(), FARM_VERSION, "farm_version matches the header");
}

int main(void) {
  test_strerror();
  farm *f = NULL;
  ok(farm_open(&f, NULL) == FARM_OK && f, "farm_open with NULL options (one worker per CPU)", NULL);
  if (f) {
    ok(farm_workers(f) >= 1, "...has workers", NULL);
    is_str(farm_last_error(f), "", "farm_last_error is empty at first");
    farm_close(f);
  }
  f = open_farm(2);
  ok(f != NULL, "farm_open with 2 workers", NULL);
  if (f) {
    is_int(farm_workers(f), 2, "farm_workers: 2");
    test_values(f);
    test_tables(f);
    test_sources(f);
    test_errors(f);
    test_wait_cancel(f);
    farm_close(f);
  }
  test_two_farms();
  test_set_workers();
  test_add_nodes();
  test_threads();
  test_open_errors();
  test_open_codes();
  printf("1..%d\n", n_test);
  return n_fail != 0;
}
