/*
 * farm.h -- the public C interface of farm, a task farm whose jobs are Lua 5.4
 * functions.
 *
 * Two ways in:
 *
 *   - The C API below (farm_open, farm_submit_source, farm_wait, ...): a C
 *     host opens a farm and gets a handle; it hands farm jobs as Lua source
 *     text or as a kernel's name, with arguments as C values, and reads the
 *     results as C values. The host needs no Lua of its own: each handle keeps
 *     a private Lua state, used only inside these calls. Link with
 *     `pkg-config --cflags --libs farm`.
 *
 *   - luaopen_farm(): a host that has a Lua state opens the same `farm` module
 *     a script gets (submit, map, wait, ...) into it.
 *
 * There is no global state in the library: two farms open in one process are
 * independent, and a farm may be opened in one thread and used and closed in
 * another. A handle may be used from several threads at once (its calls
 * serialize where they must); a future is used by one thread at a time.
 *
 * Errors are negative FARM_E* codes; farm_strerror() says each in words, and
 * farm_last_error() says what went wrong in the last call on a farm.
 *
 * The declarations are C89 but for `long long` (Lua's integers are 64 bits).
 */
#ifndef FARM_H
#define FARM_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What libfarm exports (it is built so that nothing else is). */
#if defined(__GNUC__) && __GNUC__ >= 4
#define FARM_API __attribute__((visibility("default")))
#else
#define FARM_API
#endif

struct lua_State;

#define FARM_VERSION "0.1.0"
#define FARM_PROTOCOL 5          /* the wire protocol this build speaks */

/* Error codes: negative, with a message for each from farm_strerror(). */
#define FARM_OK        0
#define FARM_ENOMEM   (-1)       /* out of memory */
#define FARM_EINVAL   (-2)       /* bad argument */
#define FARM_EPROTO   (-3)       /* malformed or unexpected message */
#define FARM_EVERSION (-4)       /* peer speaks another protocol version */
#define FARM_ETOOBIG  (-5)       /* a message or value exceeds a limit */
#define FARM_ELINK    (-6)       /* a link failed (nanomsg error) */
#define FARM_ESPAWN   (-7)       /* a worker process could not be started */
#define FARM_ECLOSED  (-8)       /* the farm was closed */
#define FARM_ETIMEDOUT (-9)      /* a wait timed out */
#define FARM_EAUTH    (-10)      /* authentication failed (a wrong or missing key) */
#define FARM_ESSH     (-11)      /* a host could not be reached or logged into over SSH */
#define FARM_EHOSTS   (-12)      /* a hostfile or host list does not parse */

FARM_API const char *farm_strerror(int code);
FARM_API const char *farm_version(void);

/* ======================================================================
 * Values: what arguments and results are in C.
 *
 * A farm_value is a small tagged struct passed by value. Strings are counted
 * (they may hold NUL bytes). A table travels as Lua-literal text:
 *
 *     farm_table("{1, 2.5, 'x', {true}, name = 'pi', [10] = 3}")
 *
 * As an argument, the text is a table constructor read as Lua reads one (no
 * globals, no function calls that reach anything: it is evaluated in an empty
 * environment); its tables arrive in the job as Lua tables. As a result, a
 * table comes back as text of the same form, written by farm: the list part
 * first ({1, 2, 3}), then the other keys in a fixed order (numbers, then
 * strings, then booleans, each ascending), strings quoted as Lua's %q quotes
 * them, floats with enough digits to read back exactly (1.0 stays a float;
 * infinities and NaN as 1/0, -1/0 and 0/0). Metatables are not part of the
 * text. A result the text cannot hold (a function, a userdata, a table that
 * contains itself) makes farm_result() fail with FARM_EINVAL, and
 * farm_last_error() says which value it was.
 *
 * For anything richer, pass strings and let the job's Lua code decode them
 * (a job can `load` a literal too).
 * ====================================================================== */

#define FARM_TNIL     0
#define FARM_TBOOLEAN 1
#define FARM_TINTEGER 2          /* a Lua integer: 64 bits */
#define FARM_TNUMBER  3          /* a Lua float: a double */
#define FARM_TSTRING  4
#define FARM_TTABLE   5          /* s, len: Lua-literal text of the table */

typedef struct farm_value {
  int type;                      /* FARM_TNIL ... FARM_TTABLE */
  int b;                         /* FARM_TBOOLEAN: 0 or 1 */
  long long i;                   /* FARM_TINTEGER */
  double d;                      /* FARM_TNUMBER */
  const char *s;                 /* FARM_TSTRING: the bytes; FARM_TTABLE: the text.
                                    Results are NUL-terminated as well. */
  size_t len;                    /* ...and how many bytes (the NUL not counted) */
} farm_value;

/* Constructors, for argument lists: `farm_value args[2]; args[0] = farm_integer(3); ...`.
   Strings are not copied until the submit, which copies them. */
FARM_API farm_value farm_nil(void);
FARM_API farm_value farm_boolean(int b);
FARM_API farm_value farm_integer(long long i);
FARM_API farm_value farm_number(double d);
FARM_API farm_value farm_string(const char *s);                 /* up to its NUL */
FARM_API farm_value farm_lstring(const char *s, size_t len);    /* len bytes, NULs allowed */
FARM_API farm_value farm_table(const char *lua_literal);        /* "{...}" */

/* ======================================================================
 * Farms.
 * ====================================================================== */

typedef struct farm farm;                /* a farm: workers, nodes, the jobs' queue */
typedef struct farm_future farm_future;  /* one job: its state, then results or error */

typedef struct farm_options {
  int workers;                   /* local worker processes; 0: one per CPU (at most 256) */
  int no_local;                  /* 1: no local workers, every job runs on the nodes */
  const char *hostfile;          /* nodes from a hostfile (see farm(1): "host [workers]",
                                    "node://host:port", ...), or "slurm", "pbs", "sge",
                                    "auto": the batch system's allocation; NULL: none */
  const char *hosts;             /* or nodes as a list: "h1,user@h2:2222,node://h3:7070" */
  const char *key_file;          /* the standing nodes' farm key (farm keygen);
                                    NULL: $FARM_KEY_FILE, if set */
  const char *exe;               /* the farm executable workers run as `farm worker`;
                                    NULL: $FARM_EXE, else the one installed with this
                                    library (PREFIX/bin/farm), else `farm` on PATH */
  int echo;                      /* 1: copy what jobs print to this process's stdout
                                    (default 0: read it with farm_output) */
  size_t max_message;            /* the largest message on a link, bytes; 0: 256 MiB */
  int accept_new_hosts;          /* SSH: add unknown host keys to known_hosts */
  const char *remote_farm;       /* SSH: the farm executable on the nodes; NULL: "farm" */
  double heartbeat;              /* seconds between heartbeats on node links; 0: 1 s */
  char *errbuf;                  /* where farm_open says why it failed (or NULL)... */
  size_t errlen;                 /* ...and that buffer's size */
} farm_options;

/* Fill o with the defaults (all zero: one worker per CPU, no nodes). */
FARM_API void farm_options_init(farm_options *o);

/* Open a farm: start its workers (and reach its nodes) and wait until they are
   up. o NULL: the defaults. Returns FARM_OK with *out set, or a negative code
   with *out NULL and o->errbuf (when given) saying why, e.g.
   "hosts:3: bad worker count 'x'; a line is 'host [workers]'":
   FARM_EINVAL (bad options), FARM_EHOSTS, FARM_ESPAWN (no farm executable for
   the workers: set FARM_EXE or o->exe), FARM_ESSH, FARM_EAUTH, FARM_ENOMEM.
   When no local worker is asked for and no node could be reached, the code and
   the words are the first host's: FARM_EAUTH (a wrong key, or none), FARM_ESSH
   (an SSH host that refuses), else FARM_ELINK or FARM_ETIMEDOUT. The words name
   the fields of farm_options (key_file, accept_new_hosts, ...), not farm(1)'s flags. */
FARM_API int farm_open(farm **out, const farm_options *o);

/* Close a farm: stop its workers and its links to nodes. Jobs not finished
   fail ("the farm was closed before the job finished"); wait for them first
   when their results matter. Futures stay valid (read them, then free them):
   the last of farm_close and farm_future_free frees what they share. NULL is
   fine. Any thread may close a farm, but only once, and with no other call on
   it still running or made after. */
FARM_API void farm_close(farm *f);

/* How many workers the farm has (local and on nodes), or a negative code. */
FARM_API int farm_workers(farm *f);

/* Resize the local pool to n workers (1 to 256) while the farm runs (pp's
   set_ncpus); nodes are not touched. Growing starts the new workers and
   returns once they are up; shrinking retires the surplus (idle ones first)
   and returns at once: a retired worker gets no new job, its jobs not started
   run elsewhere, the ones it runs finish there, then it quits. FARM_OK, or
   FARM_EINVAL / FARM_ESPAWN with farm_last_error() saying why. */
FARM_API int farm_set_workers(farm *f, int n);

/* What the last call on f that failed said, in words (naming the thing and
   the fix where it can): "" when none did. Valid until the next call on f. */
FARM_API const char *farm_last_error(farm *f);

/* ======================================================================
 * Jobs.
 * ====================================================================== */

/* Submit a job given as Lua source: lua_source is an expression whose value is
   a function,
       "function(a, b) return a + b end"      "math.max"
   or, when it does not read as an expression, a chunk that returns one,
       "local k = 3\nreturn function(x) return x * k end"
   The function is called on a worker with args[0..nargs) and its results come
   back (a job may return several). It sees the worker's standard libraries and
   farm; what the chunk's locals hold goes with it (the upvalues travel by
   value). Each distinct source text is compiled and encoded once per farm and
   kept while the farm lives; submitting the same text again costs only the
   arguments. Tracebacks name the chunk "farm_submit_source".

   Returns FARM_OK with *out a new future (free it with farm_future_free), or:
   FARM_EINVAL with farm_last_error() saying why (the source does not compile,
   does not give a function, refers to something that cannot travel; a table
   argument's text is not a table), FARM_ETOOBIG (the function and arguments
   exceed max_message), FARM_ECLOSED, FARM_ENOMEM. */
FARM_API int farm_submit_source(farm *f, const char *lua_source,
                                const farm_value *args, int nargs, farm_future **out);

/* Submit a job that calls a function the workers have by name: a name without
   a dot is a kernel, farm.kernels.NAME ("pi_hits", "sum_primes_below"); a
   dotted name is any value a worker's require can reach ("math.max",
   "string.rep", "farm.kernels.mandelbrot", "mymodule.work"). The name is
   looked up on the worker, when the job runs: a name it cannot find fails the
   job ("module 'x.y' is not available on this worker"). Returns as
   farm_submit_source does. */
FARM_API int farm_submit_kernel(farm *f, const char *name,
                                const farm_value *args, int nargs, farm_future **out);

/* Wait until the job is over (done, failed or cancelled), at most timeout
   seconds (< 0: as long as it takes; 0: just look). FARM_OK when it is over,
   FARM_ETIMEDOUT when not (the job goes on), FARM_EINVAL for NULL. */
FARM_API int farm_wait(farm_future *fu, double timeout);

/* Wait until any of fus[0..n) is over, at most timeout seconds (< 0: no limit).
   FARM_OK with *which the index of one that is over (the lowest), or
   FARM_ETIMEDOUT with *which -1; FARM_EINVAL when n < 1 or an entry is NULL.
   Futures may come from several farms (then it looks every 20 ms). */
FARM_API int farm_wait_any(farm_future **fus, int n, double timeout, int *which);

/* Where a job is. */
#define FARM_PENDING   0         /* queued, or waiting at a worker */
#define FARM_RUNNING   1
#define FARM_DONE      2         /* it returned: farm_result_count, farm_result */
#define FARM_FAILED    3         /* it raised an error (or its worker died, it timed
                                    out, the farm closed): farm_error_message */
#define FARM_CANCELLED 4
FARM_API int farm_status(farm_future *fu);

/* A done job's results: how many (>= 0), and result i (from 0). The values,
   strings and table texts included, belong to the future and stay valid until
   farm_future_free. farm_result_count: FARM_EINVAL when the job is not done
   (see farm_status) or a result cannot be read as a C value (farm_last_error
   of its farm says which). farm_result: FARM_OK, or FARM_EINVAL as above or
   when i is out of range (*out is then nil). */
FARM_API int farm_result_count(farm_future *fu);
FARM_API int farm_result(farm_future *fu, int i, farm_value *out);

/* A failed job's error message ("farm_submit_source:1: attempt to ..."), and
   the worker's traceback ("" when there is none); "the job was cancelled"
   for a cancelled job. NULL for a job that is done or not over. Owned by the
   future. */
FARM_API const char *farm_error_message(farm_future *fu);
FARM_API const char *farm_error_traceback(farm_future *fu);

/* What the job printed (io.write, print), once it is over; *len its length
   (NULL is fine). "" when nothing. Owned by the future. */
FARM_API const char *farm_output(farm_future *fu, size_t *len);

/* Cancel a job: one not started never starts; a running one is stopped (its
   worker is replaced). 1 when this call cancelled it, 0 when it was over
   already (its results stand), FARM_EINVAL for NULL. */
FARM_API int farm_cancel(farm_future *fu);

/* Free a future (any time: a job still running goes on, its results are
   dropped). NULL is fine. */
FARM_API void farm_future_free(farm_future *fu);

/* ======================================================================
 * Lua hosts.
 * ====================================================================== */

/* Open the `farm` Lua module into L and leave it on the stack (as require does). */
FARM_API int luaopen_farm(struct lua_State *L);

/* Jobs travel as source text. farm keeps the text of every chunk compiled by
   load, loadfile, dofile and require once luaopen_farm has run; a chunk the
   host compiles itself (luaL_loadbuffer(L, text, len, "=embedded")) has no
   text farm could see, and its functions cannot ship until the host gives it:
   farm_remember(L, "=embedded", text, len), with the very chunk name it was
   compiled with, before or after compiling it. The same as
   farm.remember(chunkname, text) in Lua. Needs luaopen_farm(L) first; leaves
   the stack as it was. Returns FARM_OK, FARM_EINVAL (farm not open in L, or
   a NULL argument) or FARM_ENOMEM. */
FARM_API int farm_remember(struct lua_State *L, const char *chunkname, const char *text, size_t len);

#ifdef __cplusplus
}
#endif
#endif
