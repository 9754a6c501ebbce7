/*
 * exec.c -- farm.core.exec(argv [, opts]): run a program (on the worker that
 * runs the job) and capture what it prints; farm.exec (lua/farm.lua) submits it.
 *
 *   core.exec({"sha1sum", "f.bin"}, { input = "...", max_output = bytes })
 *     -> { status = 0, stdout = "...", stderr = "" }
 *
 * - argv[1] is looked up on PATH as execvp does (a name with a slash is a
 *   path); no shell is involved, so arguments need no quoting.
 * - The child's standard input is /dev/null, or a pipe fed opts.input. Its
 *   standard output and error are two pipes, read (and the input written) in
 *   one poll loop: no deadlock whatever the child writes to either, in any
 *   amount, and whether it reads its input or not.
 * - Each stream keeps at most opts.max_output bytes (default 64 MiB). Beyond
 *   that the child is NOT stopped: it runs to its end, what it writes more is
 *   read and dropped, the kept text ends with a note saying so, and the result
 *   gets truncated = { stdout = bytes dropped, stderr = ... }. (So the status
 *   is the program's own, and a program is never killed for talking a lot; a
 *   job's timeout, farm.submit_with's, bounds how long it may run.)
 * - The result: status = the exit code; when a signal killed the child,
 *   signal = its name ("SIGKILL") and status = 128 + its number, as shells say.
 * - A program that cannot be started (not found, not executable) raises
 *   `farm.exec: cannot run 'x': not found on PATH (...)`: the child reports
 *   execvp's errno through a close-on-exec pipe, which reads end-of-file when
 *   the exec succeeds.
 * - The child inherits nothing but 0, 1 and 2 (every other descriptor of the
 *   worker, its sockets and memfds, is closed in the child: close_range), and
 *   starts with every signal at its default disposition and none blocked (the
 *   worker catches SIGINT and SIGPIPE, and its threads block signals). It
 *   stays in the worker's process group, so it dies with the worker (a job's
 *   timeout or cancel kills the worker's group).
 * - It is always waited for (waitpid, EINTR-safe): no zombie; every
 *   descriptor and buffer is released on every path, Lua errors included (the
 *   state lives in a userdata whose __gc releases what is left).
 *
 * The caller's thread blocks while the program runs. SIGPIPE (a child that
 * exits without reading all its input) is blocked in this thread while the
 * input is written, and a SIGPIPE raised meanwhile is taken back.
 *
 * Threads: a worker's Lua thread (it runs inside a job).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <lua.h>
#include <lauxlib.h>
#include "exec.h"

#define EXEC_MT "farm.exec.state"
#define DEFAULT_MAX_OUTPUT ((size_t)64 << 20)
#define CHUNK ((size_t)64 << 10)

typedef struct {
  char *p;
  size_t n, cap;
  size_t dropped;     /* bytes read past the cap */
} stream;

enum { IN_W, OUT_R, ERR_R, EXEC_R, C_IN, C_OUT, C_ERR, EXEC_W, NFD };

typedef struct {
  int fd[NFD];
  pid_t pid;          /* a child not waited for yet, or 0 */
  stream out, err;
} xstate;

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

static pid_t wait_child(pid_t pid, int *status) {
  pid_t r;
  while ((r = waitpid(pid, status, 0)) < 0 && errno == EINTR) {}
  return r;
}

/* Everything left: descriptors, buffers, and a child (killed, then waited). */
static void release(xstate *x) {
  for (int i = 0; i < NFD; i++) close_fd(&x->fd[i]);
  if (x->pid > 0) {
    int st;
    kill(x->pid, SIGKILL);
    wait_child(x->pid, &st);
    x->pid = 0;
  }
  free(x->out.p);
  free(x->err.p);
  memset(&x->out, 0, sizeof x->out);
  memset(&x->err, 0, sizeof x->err);
}

static int x_gc(lua_State *L) {
  release(luaL_checkudata(L, 1, EXEC_MT));
  return 0;
}

/* fd moved to a number >= 3 (what the child puts at 0, 1 and 2 must not be
   there already), close-on-exec; -1 on failure (fd closed) */
static int high_fd(int fd) {
  if (fd < 0 || fd >= 3) return fd;
  int h = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  int e = errno;
  close(fd);
  errno = e;
  return h;
}

static int make_pipe(int *r, int *w) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0) return -1;
  *r = high_fd(p[0]);
  *w = high_fd(p[1]);
  return *r < 0 || *w < 0 ? -1 : 0;
}

/* ---- the child, between fork and exec: async-signal-safe calls only ---- */

static void close_from(unsigned lo, unsigned hi) {
  if (lo > hi) return;
#ifdef SYS_close_range
  if (syscall(SYS_close_range, lo, hi, 0) == 0) return;
#endif
  struct rlimit rl;
  unsigned top = 65536;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < top)
    top = (unsigned)rl.rlim_cur;
  if (hi >= top) hi = top - 1;
  for (unsigned fd = lo; fd <= hi; fd++) close((int)fd);
}

/* The C library's own signals (32 and 33 with glibc), which its sigaction
   refuses: a process that posix_spawn started (as popen, or `timeout`, may
   have started an ancestor of the worker) has them ignored, and an ignored
   signal stays ignored across exec. A zeroed kernel sigaction is SIG_DFL with
   no flags and an empty mask whatever the architecture's layout of it. */
static void raw_default(int sig) {
#ifdef SYS_rt_sigaction
  static const unsigned long zero[16];
  if (syscall(SYS_rt_sigaction, sig, zero, NULL, (size_t)8) < 0)
    syscall(SYS_rt_sigaction, sig, zero, NULL, (size_t)16);   /* a wider kernel sigset_t (mips) */
#else
  (void)sig;
#endif
}

static void child_fail(int errw, int e) {
  while (write(errw, &e, sizeof e) < 0 && errno == EINTR) {}
  _exit(127);
}

static void child(const xstate *x, char *const *argv) {
  int errw = x->fd[EXEC_W];
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_DFL;
  sigemptyset(&sa.sa_mask);
  for (int s = 1; s < NSIG; s++)
    if (s != SIGKILL && s != SIGSTOP && sigaction(s, &sa, NULL) < 0) raw_default(s);
  /* the sources are >= 3 and close-on-exec: dup2 gives 0, 1, 2 without it */
  if (dup2(x->fd[C_IN], 0) < 0 || dup2(x->fd[C_OUT], 1) < 0 || dup2(x->fd[C_ERR], 2) < 0)
    child_fail(errw, errno);
  close_from(3, (unsigned)errw - 1);
  close_from((unsigned)errw + 1, ~0U);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  execvp(argv[0], argv);
  child_fail(errw, errno);
}

/* ---- the parent ---- */

/* Read what fd has into s (up to max kept bytes; the rest dropped).
   1: more may come, 0: end of file (fd closed), -1: out of memory. */
static int drain(int *fd, stream *s, size_t max) {
  char scratch[4096];
  for (;;) {
    char *dst;
    size_t room;
    if (s->n < max) {
      if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : CHUNK;
        if (cap > max || cap < s->cap) cap = max;
        char *p = realloc(s->p, cap);
        if (!p) return -1;
        s->p = p;
        s->cap = cap;
      }
      dst = s->p + s->n;
      room = s->cap - s->n;
    } else {
      dst = scratch;
      room = sizeof scratch;
    }
    ssize_t r = read(*fd, dst, room);
    if (r > 0) {
      if (dst == scratch) s->dropped += (size_t)r;
      else s->n += (size_t)r;
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 1;
    close_fd(fd);                      /* end of file, or an error: nothing more comes */
    return 0;
  }
}

static void nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static int push_stream(lua_State *L, stream *s, const char *name, size_t max) {
  if (!s->dropped) {
    lua_pushlstring(L, s->p ? s->p : "", s->n);
    return 0;
  }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addlstring(&b, s->p ? s->p : "", s->n);
  lua_pushfstring(L, "\n[farm.exec: %s cut at %I bytes: %I more bytes were dropped]\n",
                  name, (lua_Integer)max, (lua_Integer)s->dropped);
  luaL_addvalue(&b);
  luaL_pushresult(&b);
  return 1;
}

static const char *why_not(int e, const char *prog) {
  if (e == ENOENT)
    return strchr(prog, '/') ? "no such file" : "not found on PATH (is it installed on this host?)";
  if (e == EACCES) {
    struct stat st;
    if (strchr(prog, '/') && stat(prog, &st) == 0 && S_ISDIR(st.st_mode)) return "it is a directory";
    return "permission denied";
  }
  if (e == ENOEXEC) return "not an executable this host can run";
  return strerror(e);
}

static int is_option(const char *k) {
  return strcmp(k, "input") == 0 || strcmp(k, "max_output") == 0;
}

int farm__l_exec(lua_State *L) {
  /* ---- arguments ---- */
  if (lua_type(L, 1) != LUA_TTABLE)
    return luaL_error(L, "farm.exec: the command must be a table such as {\"sha1sum\", \"f.bin\"} "
                         "(got %s)", luaL_typename(L, 1));
  lua_Unsigned n = lua_rawlen(L, 1);
  if (n == 0)
    return luaL_error(L, "farm.exec: the command is empty (give the program and its arguments, "
                         "as {\"sha1sum\", \"f.bin\"})");
  if (n > 1u << 20) return luaL_error(L, "farm.exec: the command has too many items");
  const char *input = NULL;
  size_t inlen = 0, max = DEFAULT_MAX_OUTPUT;
  int t2 = lua_type(L, 2);
  if (t2 != LUA_TNONE && t2 != LUA_TNIL) {
    if (t2 != LUA_TTABLE)
      return luaL_error(L, "farm.exec: the options must be a table (got %s)", luaL_typename(L, 2));
    lua_pushnil(L);
    while (lua_next(L, 2)) {
      if (lua_type(L, -2) != LUA_TSTRING || !is_option(lua_tostring(L, -2)))
        return luaL_error(L, "farm.exec: unknown option '%s' (input, max_output)",
                          lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : luaL_typename(L, -2));
      lua_pop(L, 1);
    }
    int t = lua_getfield(L, 2, "input");
    if (t == LUA_TSTRING) input = lua_tolstring(L, -1, &inlen);   /* held by opts */
    else if (t != LUA_TNIL)
      return luaL_error(L, "farm.exec: input must be a string (got %s)", luaL_typename(L, -1));
    lua_pop(L, 1);
    t = lua_getfield(L, 2, "max_output");
    if (t != LUA_TNIL) {
      int isint = 0;
      lua_Integer m = lua_tointegerx(L, -1, &isint);
      if (t != LUA_TNUMBER || !isint || m < 0)
        return luaL_error(L, "farm.exec: max_output must be a number of bytes (an integer >= 0)");
      max = (lua_Unsigned)m > SIZE_MAX ? SIZE_MAX : (size_t)m;
    }
    lua_pop(L, 1);
  }
  char **argv = lua_newuserdatauv(L, ((size_t)n + 1) * sizeof *argv, 0);
  for (lua_Unsigned i = 1; i <= n; i++) {
    int t = lua_rawgeti(L, 1, (lua_Integer)i);
    if (t != LUA_TSTRING)
      return luaL_error(L, "farm.exec: item %I of the command must be a string (got %s)",
                        (lua_Integer)i, luaL_typename(L, -1));
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    if (strlen(s) != len)
      return luaL_error(L, "farm.exec: item %I of the command holds a zero byte", (lua_Integer)i);
    argv[i - 1] = (char *)s;              /* the table holds the string while we run */
    lua_pop(L, 1);
  }
  argv[n] = NULL;
  if (!argv[0][0]) return luaL_error(L, "farm.exec: the program's name (item 1 of the command) is empty");
  const char *prog = argv[0];

  /* ---- descriptors ---- */
  xstate *x = lua_newuserdatauv(L, sizeof *x, 0);
  memset(x, 0, sizeof *x);
  for (int i = 0; i < NFD; i++) x->fd[i] = -1;
  if (luaL_newmetatable(L, EXEC_MT)) {
    lua_pushcfunction(L, x_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  int ok;
  if (input) ok = make_pipe(&x->fd[C_IN], &x->fd[IN_W]) == 0;
  else ok = (x->fd[C_IN] = high_fd(open("/dev/null", O_RDONLY | O_CLOEXEC))) >= 0;
  ok = ok && make_pipe(&x->fd[OUT_R], &x->fd[C_OUT]) == 0
          && make_pipe(&x->fd[ERR_R], &x->fd[C_ERR]) == 0
          && make_pipe(&x->fd[EXEC_R], &x->fd[EXEC_W]) == 0;
  if (!ok) {
    int e = errno;
    release(x);
    return luaL_error(L, "farm.exec: cannot run '%s': %s", prog, strerror(e));
  }

  /* SIGPIPE blocked in this thread while we write the input (see the top) */
  sigset_t pipeset, oldmask, pending;
  sigemptyset(&pipeset);
  sigaddset(&pipeset, SIGPIPE);
  int had_pipe = 0;
  if (input) {
    pthread_sigmask(SIG_BLOCK, &pipeset, &oldmask);
    had_pipe = sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE);
  }

  pid_t pid = fork();
  if (pid == 0) child(x, argv);
  int fork_err = errno;
  close_fd(&x->fd[C_IN]);
  close_fd(&x->fd[C_OUT]);
  close_fd(&x->fd[C_ERR]);
  close_fd(&x->fd[EXEC_W]);
  const char *fail = NULL;
  int fail_errno = 0;
  if (pid < 0) {
    fail = "cannot start";
    fail_errno = fork_err;
  } else {
    x->pid = pid;
    int e;
    ssize_t r;
    while ((r = read(x->fd[EXEC_R], &e, sizeof e)) < 0 && errno == EINTR) {}
    close_fd(&x->fd[EXEC_R]);
    if (r == (ssize_t)sizeof e) {          /* execvp failed: the child has exited */
      int st;
      wait_child(pid, &st);
      x->pid = 0;
      fail = "exec";
      fail_errno = e;
    }
  }

  /* ---- the loop: input out, output in ---- */
  size_t inoff = 0;
  int oom = 0;
  if (!fail) {
    if (x->fd[IN_W] >= 0) nonblock(x->fd[IN_W]);
    nonblock(x->fd[OUT_R]);
    nonblock(x->fd[ERR_R]);
    if (x->fd[IN_W] >= 0 && inlen == 0) close_fd(&x->fd[IN_W]);
    while (!oom && (x->fd[IN_W] >= 0 || x->fd[OUT_R] >= 0 || x->fd[ERR_R] >= 0)) {
      struct pollfd p[3];
      int np = 0, iw = -1, io = -1, ie = -1;
      if (x->fd[IN_W] >= 0) { iw = np; p[np++] = (struct pollfd){ x->fd[IN_W], POLLOUT, 0 }; }
      if (x->fd[OUT_R] >= 0) { io = np; p[np++] = (struct pollfd){ x->fd[OUT_R], POLLIN, 0 }; }
      if (x->fd[ERR_R] >= 0) { ie = np; p[np++] = (struct pollfd){ x->fd[ERR_R], POLLIN, 0 }; }
      if (poll(p, (nfds_t)np, -1) < 0) {
        if (errno == EINTR || errno == EAGAIN) continue;
        break;                             /* cannot happen with valid descriptors */
      }
      if (io >= 0 && p[io].revents && drain(&x->fd[OUT_R], &x->out, max) < 0) oom = 1;
      if (ie >= 0 && p[ie].revents && drain(&x->fd[ERR_R], &x->err, max) < 0) oom = 1;
      if (iw >= 0 && p[iw].revents) {
        for (;;) {
          size_t k = inlen - inoff < CHUNK ? inlen - inoff : CHUNK;
          ssize_t w = write(x->fd[IN_W], input + inoff, k);
          if (w > 0) {
            inoff += (size_t)w;
            if (inoff == inlen) { close_fd(&x->fd[IN_W]); break; }
            continue;
          }
          if (w < 0 && errno == EINTR) continue;
          if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
          close_fd(&x->fd[IN_W]);           /* EPIPE: the child reads no more */
          break;
        }
      }
    }
    for (int i = 0; i < NFD; i++) close_fd(&x->fd[i]);
    if (oom) kill(pid, SIGKILL);
  }

  int status = 0;
  if (x->pid > 0) {
    pid_t r = wait_child(pid, &status);
    x->pid = 0;
    if (r < 0 && !fail) { fail = "wait"; fail_errno = errno; }
  }
  if (input) {
    if (!had_pipe && sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE)) {
      struct timespec zero = { 0, 0 };
      while (sigtimedwait(&pipeset, NULL, &zero) < 0 && errno == EINTR) {}
    }
    pthread_sigmask(SIG_SETMASK, &oldmask, NULL);
  }
  if (oom) {
    release(x);
    return luaL_error(L, "farm.exec: out of memory for the output of '%s' (see max_output)", prog);
  }
  if (fail) {
    release(x);
    if (strcmp(fail, "exec") == 0)
      return luaL_error(L, "farm.exec: cannot run '%s': %s", prog, why_not(fail_errno, prog));
    if (strcmp(fail, "wait") == 0)
      return luaL_error(L, "farm.exec: the exit status of '%s' was lost: %s%s", prog,
                        strerror(fail_errno),
                        fail_errno == ECHILD ? " (SIGCHLD is ignored in this process)" : "");
    return luaL_error(L, "farm.exec: cannot run '%s': %s", prog, strerror(fail_errno));
  }

  /* ---- the result ---- */
  lua_createtable(L, 0, 5);
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    const char *abbrev = sigabbrev_np(sig);
    if (abbrev) lua_pushfstring(L, "SIG%s", abbrev);
    else lua_pushfstring(L, "SIG%d", sig);
    lua_setfield(L, -2, "signal");
    lua_pushinteger(L, 128 + sig);
  } else {
    lua_pushinteger(L, WIFEXITED(status) ? WEXITSTATUS(status) : 255);
  }
  lua_setfield(L, -2, "status");
  int cut = push_stream(L, &x->out, "stdout", max);
  lua_setfield(L, -2, "stdout");
  cut |= push_stream(L, &x->err, "stderr", max);
  lua_setfield(L, -2, "stderr");
  if (cut) {
    lua_createtable(L, 0, 2);
    if (x->out.dropped) { lua_pushinteger(L, (lua_Integer)x->out.dropped); lua_setfield(L, -2, "stdout"); }
    if (x->err.dropped) { lua_pushinteger(L, (lua_Integer)x->err.dropped); lua_setfield(L, -2, "stderr"); }
    lua_setfield(L, -2, "truncated");
  }
  release(x);
  return 1;
}
