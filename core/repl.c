/*
 * repl.c -- `farm repl`: an interactive Lua prompt with the pool (and nodes)
 * behind it. Part of the executable only, as cli.c is: it owns the terminal,
 * the process's SIGINT and libedit, which a C host embedding libfarm keeps for
 * itself.
 *
 * This file reads lines and hands each to lua/repl.lua (session:feed), which
 * compiles, runs and prints. Here is what only the executable can do:
 *
 *   - line editing, history (~/.farm_history) and Tab completion with libedit,
 *     through its readline-compatible API, when stdin and stdout are a terminal;
 *     otherwise lines are read plainly, with no prompt and no colour, so the
 *     same statements give the same output through a pipe. libedit is loaded
 *     (dlopen) only then, not linked: every farm process, each worker too,
 *     would otherwise load it (and ncurses' libtinfo) at exec;
 *   - Ctrl-C: at the prompt it clears the line; while a chunk runs it raises
 *     "interrupted" in it (as lua.c does, from a hook), which ends a wait for a
 *     result but not the job, which goes on;
 *   - the engine's loop thread echoes what jobs print whenever they print it.
 *     While the prompt waits, standard output is held in a pipe and shown above
 *     the line being typed, which is then drawn again, so a job's output never
 *     breaks the line.
 *
 * Threads: the executable's main thread (the engine has its own).
 */
#include <errno.h>
#include <fcntl.h>
#include <langinfo.h>
#include <locale.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include <editline/readline.h>
#include "farm.h"
#include "lazy.h"
#include "cliopts.h"
#include "repl.h"

/* ---- libedit, loaded when a terminal needs it ----------------------------------
   The functions and variables of its readline API used here, in one table
   filled once (pthread_once) and read-only after; the header still declares
   them, so every use below is checked against it. */

#define LIBEDIT_SONAME "libedit.so.2"      /* Debian's libedit2 */
#define LIBEDIT_PACKAGE "libedit2"

#define EDIT_SYMS(X) \
  X(readline) X(rl_initialize) X(rl_forced_update_display) X(rl_resize_terminal) \
  X(add_history) X(stifle_history) X(read_history) X(write_history) \
  X(rl_readline_name) X(rl_instream) X(rl_outstream) X(rl_line_buffer) X(rl_getc_function) \
  X(rl_catch_signals) X(rl_catch_sigwinch) X(rl_attempted_completion_function) \
  X(rl_attempted_completion_over) X(rl_basic_word_break_characters) \
  X(rl_completer_word_break_characters) X(rl_completion_append_character)

static struct edit {
#define EDIT_FIELD(f) __typeof__(f) *f;
  EDIT_SYMS(EDIT_FIELD)
#undef EDIT_FIELD
} edit;
static char edit_err[400];         /* why libedit cannot be used; "" once it can */
static pthread_once_t edit_once = PTHREAD_ONCE_INIT;

static void edit_load(void) {
  static const char *const names[] = { EDIT_SYMS(FARM_LAZY_NAME) };
#define t edit
  void **slots[] = { EDIT_SYMS(FARM_LAZY_SLOT) };
#undef t
  int n = (int)(sizeof names / sizeof *names);
  farm__lazy_load(LIBEDIT_SONAME, LIBEDIT_PACKAGE, names, slots, n, edit_err, sizeof edit_err);
}

/* From here on, libedit's names go through the table. */
#define readline (*edit.readline)
#define rl_initialize (*edit.rl_initialize)
#define rl_forced_update_display (*edit.rl_forced_update_display)
#define rl_resize_terminal (*edit.rl_resize_terminal)
#define add_history (*edit.add_history)
#define stifle_history (*edit.stifle_history)
#define read_history (*edit.read_history)
#define write_history (*edit.write_history)
#define rl_readline_name (*edit.rl_readline_name)
#define rl_instream (*edit.rl_instream)
#define rl_outstream (*edit.rl_outstream)
#define rl_line_buffer (*edit.rl_line_buffer)
#define rl_getc_function (*edit.rl_getc_function)
#define rl_catch_signals (*edit.rl_catch_signals)
#define rl_catch_sigwinch (*edit.rl_catch_sigwinch)
#define rl_attempted_completion_function (*edit.rl_attempted_completion_function)
#define rl_attempted_completion_over (*edit.rl_attempted_completion_over)
#define rl_basic_word_break_characters (*edit.rl_basic_word_break_characters)
#define rl_completer_word_break_characters (*edit.rl_completer_word_break_characters)
#define rl_completion_append_character (*edit.rl_completion_append_character)

#define PROMPT      "farm> "
#define PROMPT_MORE "  ... "
#define HISTORY_MAX 1000

static const char usage[] =
  "usage: farm repl [-n N] [--nodes HOSTFILE | --hosts LIST] [--key-file F]\n"
  "                 [--accept-new-hosts] [--remote-farm PATH] [--heartbeat S] [--slurm-wait S]\n"
  "                 [--quiet-jobs] [--listen ADDR] [--discover IFACE]\n"
  "\n"
  "  An interactive Lua prompt with `farm` loaded and the pool (and the nodes given)\n"
  "  running: farm.submit a function typed at the prompt, look at its future, wait\n"
  "  for it. :help at the prompt lists the commands (:jobs, :nodes, :stats,\n"
  "  :cancel ID, :workers N, :quit). Options are those of farm run (farm --help).\n"
  "  History is kept in ~/.farm_history ($FARM_HISTORY moves it; empty: none).\n"
  "  With standard input not a terminal, statements are read from it with no\n"
  "  prompt, and the exit status is 1 when one of them failed.\n";

#define fail farm__cli_fail

/* ---- options: farm run's pool options, without a script ------------------------ */

static int parse_opts(int argc, char **argv, farm_pool_opts *o) {
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    int took = farm__pool_option(argc, argv, &i, o);
    if (took == 2) return 2;
    if (took) continue;
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) { fputs(usage, stdout); return 0; }
    if (a[0] == '-' && a[1]) return fail("unknown option '%s' for 'farm repl' (see farm repl --help)", a);
    return fail("'farm repl' takes no script ('%s'): to run one, say 'farm run SCRIPT.lua'", a);
  }
  if (farm__pool_check(o)) return 2;
  return -1;                       /* go on */
}

/* the registry key of the marker Ctrl-C raises (see make_marker) */
static const char interrupt_key = 0;

/* Standard libraries, farm configured as the command line says, the pool
   started, and the session (lua/repl.lua) made; leaves the session (protected). */
static int open_session(lua_State *L) {
  const farm_pool_opts *o = lua_touserdata(L, 1);
  int tty = lua_toboolean(L, 2), color = lua_toboolean(L, 3);
  luaL_openlibs(L);
  luaL_requiref(L, "farm", luaopen_farm, 1);
  farm__pool_config(L, o);         /* (progress is off: a progress line and a prompt would fight) */
  lua_getfield(L, -1, "workers");  /* the pool (and the nodes) start now */
  lua_call(L, 0, 0);
  lua_pop(L, 1);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "farm.repl");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "new");
  lua_createtable(L, 0, 3);
  lua_pushboolean(L, tty);
  lua_setfield(L, -2, "tty");
  lua_pushboolean(L, color);
  lua_setfield(L, -2, "color");
  lua_rawgetp(L, LUA_REGISTRYINDEX, &interrupt_key);   /* the marker Ctrl-C raises */
  lua_setfield(L, -2, "interrupted");
  lua_call(L, 1, 1);
  return 1;
}

/* ---- Ctrl-C ---------------------------------------------------------------------
   As in cli.c (and lua.c): the handler can reach no context, so the one state
   the REPL drives is kept here -- the executable's signal plumbing, not library
   state. While a chunk runs, Ctrl-C sets a hook that raises the interrupt marker
   in it; a second Ctrl-C before the hook ran (Lua stuck in C) ends the process,
   as lua's does. At the prompt it sets a flag the line reader sees. */
static lua_State *volatile eval_state;
static volatile sig_atomic_t sigint_at_prompt, sigint_pending, winch;

static void stop_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  sigint_pending = 0;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &interrupt_key);
  lua_error(L);
}

static void on_sigint(int sig) {
  lua_State *L = eval_state;
  if (!L) { sigint_at_prompt = 1; return; }
  if (sigint_pending) { signal(sig, SIG_DFL); raise(sig); return; }
  sigint_pending = 1;
  lua_sethook(L, stop_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

static void on_sigwinch(int sig) { (void)sig; winch = 1; }

static int interrupted_str(lua_State *L) {
  lua_pushliteral(L, "interrupted");
  return 1;
}

/* The marker Ctrl-C raises: a table that prints as "interrupted" (so a pcall
   in the user's code that catches it sees something readable). */
static void make_marker(lua_State *L) {
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, interrupted_str);
  lua_setfield(L, -2, "__tostring");
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &interrupt_key);
}

/* ---- the session: lines to lua/repl.lua -------------------------------------- */

typedef struct repl {
  lua_State *L;
  int session;                     /* registry ref of the Lua session */
  int tty;                         /* stdin and stdout are a terminal: libedit */
  int failed;                      /* a statement failed (the exit status, from a pipe) */
  char *history;                   /* history file, or NULL */
  char *last;                      /* the last line added to the history */
  int term;                        /* the terminal (standard output as it was) */
  FILE *term_out;                  /* ...as libedit's output */
  int held_rd, held_wr;            /* standard output while the prompt waits */
} repl;

/* libedit's callbacks carry no context: the one REPL of this process. */
static repl *the_repl;

enum { FEED_DONE, FEED_MORE, FEED_FAILED, FEED_QUIT };

/* session:method(line): run with Ctrl-C armed; returns a FEED_ status. An
   error that escapes the session (Ctrl-C between the user's chunk and the
   session's own code) is shown, and the chunk being typed is forgotten. */
static int call_session(repl *r, const char *method, const char *line) {
  lua_State *L = r->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->session);
  lua_getfield(L, -1, method);
  lua_insert(L, -2);
  if (line) lua_pushstring(L, line);
  sigint_pending = 0;
  eval_state = L;
  int st = lua_pcall(L, line ? 2 : 1, 1, 0);
  eval_state = NULL;
  lua_sethook(L, NULL, 0, 0);      /* a Ctrl-C that came too late to act */
  sigint_pending = 0;
  int rc = FEED_DONE;
  if (st != LUA_OK) {
    const char *msg = luaL_tolstring(L, -1, NULL);
    fflush(stdout);
    fprintf(stderr, "%s\n", msg);
    lua_pop(L, 2);
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->session);
    lua_getfield(L, -1, "reset");
    lua_insert(L, -2);
    lua_pcall(L, 1, 0, 0);
    lua_settop(L, 0);
    return FEED_FAILED;
  }
  const char *s = lua_tostring(L, -1);
  if (s && strcmp(s, "more") == 0) rc = FEED_MORE;
  else if (s && strcmp(s, "failed") == 0) rc = FEED_FAILED;
  else if (s && strcmp(s, "quit") == 0) rc = FEED_QUIT;
  lua_settop(L, 0);
  fflush(stdout);
  return rc;
}

/* ---- output held while the prompt waits ------------------------------------------
   The loop thread writes what jobs print to standard output whenever they print
   it. While libedit owns the terminal, standard output is a pipe: what arrives
   is written above the prompt, which is drawn again below it. libedit itself
   writes to a copy of the terminal (r->term). Standard error is left alone on
   purpose: a worker started while the prompt waits (one replaced) would keep
   the pipe as its own standard error, and fill it while nobody reads; the
   engine's rare lines there (a node lost) may break the line being typed. */

static int held_setup(repl *r) {
  int p[2];
  r->term = fcntl(1, F_DUPFD_CLOEXEC, 10);
  if (r->term < 0 || !(r->term_out = fdopen(r->term, "w"))) return -1;
  if (pipe2(p, O_CLOEXEC) < 0) return -1;
  r->held_rd = p[0];
  r->held_wr = p[1];
  fcntl(r->held_rd, F_SETFL, O_NONBLOCK);
  fcntl(r->held_wr, F_SETPIPE_SZ, 1 << 20);   /* best effort: room while a key is handled */
  return 0;
}

static void write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    p += w;
    n -= (size_t)w;
  }
}

/* Write what the pipe holds to the terminal. At the prompt (redraw), the
   prompt's line is cleared first, and drawn again after. */
static void held_show(repl *r, int redraw) {
  char buf[8192];
  int any = 0, nl = 1;
  ssize_t n;
  while ((n = read(r->held_rd, buf, sizeof buf)) > 0) {
    if (!any && redraw) write_all(r->term, "\r\033[K", 4);
    any = 1;
    write_all(r->term, buf, (size_t)n);
    nl = buf[n - 1] == '\n';
  }
  if (any && redraw) {
    if (!nl) write_all(r->term, "\n", 1);
    rl_forced_update_display();
  }
}

static void held_on(repl *r) {
  fflush(stdout);
  dup2(r->held_wr, 1);
}

static void held_off(repl *r) {
  fflush(stdout);
  dup2(r->term, 1);
  held_show(r, 0);
}

static void held_close(repl *r) {
  if (r->held_rd >= 0) close(r->held_rd);
  if (r->held_wr >= 0) close(r->held_wr);
  r->held_rd = r->held_wr = -1;
  if (r->term_out) fclose(r->term_out);   /* closes r->term */
  else if (r->term >= 0) close(r->term);
  r->term_out = NULL;
  r->term = -1;
}

/* ---- libedit ------------------------------------------------------------------------ */

/* libedit's getc: waits for a key while showing held output and noticing Ctrl-C
   and window changes. Returns a character (decoded from UTF-8 when the locale's
   characters are multibyte, as libedit wants them), or -1: end of input, or
   Ctrl-C (sigint_at_prompt says which). */
static int term_getc(FILE *f) {
  (void)f;
  repl *r = the_repl;
  for (;;) {
    if (sigint_at_prompt) return -1;
    if (winch) { winch = 0; rl_resize_terminal(); }
    struct pollfd p[2] = { { .fd = 0, .events = POLLIN }, { .fd = r->held_rd, .events = POLLIN } };
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (p[1].revents) held_show(r, 1);
    if (!p[0].revents) continue;
    unsigned char c;
    ssize_t got = read(0, &c, 1);
    if (got < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (got <= 0) return -1;
    if (c < 0x80 || MB_CUR_MAX == 1) return c;
    int more = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
    int cp = c & (0x3F >> more);
    for (int i = 0; i < more; i++) {
      if (read(0, &c, 1) != 1 || (c & 0xC0) != 0x80) return 0xFFFD;
      cp = (cp << 6) | (c & 0x3F);
    }
    return more ? cp : 0xFFFD;
  }
}

/* Tab: session:complete(word, at_start) -> the candidates; libedit wants the
   common prefix first, then the candidates, malloc'd. */
static char **term_complete(const char *text, int start, int end) {
  (void)end;
  repl *r = the_repl;
  lua_State *L = r->L;
  rl_attempted_completion_over = 1;        /* never file names */
  int at_start = 1;
  for (int i = 0; i < start && rl_line_buffer[i]; i++)
    if (rl_line_buffer[i] != ' ' && rl_line_buffer[i] != '\t') at_start = 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->session);
  lua_getfield(L, -1, "complete");
  lua_insert(L, -2);
  lua_pushstring(L, text);
  lua_pushboolean(L, at_start);
  if (lua_pcall(L, 3, 1, 0) != LUA_OK || !lua_istable(L, -1)) { lua_settop(L, 0); return NULL; }
  size_t n = (size_t)luaL_len(L, -1);
  char **list = n ? calloc(n + 2, sizeof *list) : NULL;
  if (!list) { lua_settop(L, 0); return NULL; }
  for (size_t i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, (lua_Integer)i);
    list[i] = strdup(lua_tostring(L, -1) ? lua_tostring(L, -1) : "");
    lua_pop(L, 1);
  }
  lua_settop(L, 0);
  size_t common = strlen(list[1]);
  for (size_t i = 2; i <= n; i++) {
    size_t j = 0;
    while (j < common && list[i][j] == list[1][j]) j++;
    common = j;
  }
  list[0] = strndup(list[1], common);
  return list;
}

/* The history file: $FARM_HISTORY (empty: none), else ~/.farm_history. */
static char *history_path(void) {
  const char *env = getenv("FARM_HISTORY");
  if (env) return *env ? strdup(env) : NULL;
  const char *home = getenv("HOME");
  if (!home || !*home) {
    struct passwd *pw = getpwuid(getuid());
    home = pw ? pw->pw_dir : NULL;
  }
  if (!home) return NULL;
  size_t n = strlen(home) + sizeof "/.farm_history";
  char *p = malloc(n);
  if (p) snprintf(p, n, "%s/.farm_history", home);
  return p;
}

static void history_keep(repl *r, const char *line) {
  if (!*line || (r->last && strcmp(r->last, line) == 0)) return;
  add_history(line);
  free(r->last);
  r->last = strdup(line);
  if (r->history) write_history(r->history);   /* kept at once: a killed REPL loses nothing */
}

/* libedit wants the locale's multibyte characters; Lua ignores LC_CTYPE. A
   plain C locale becomes C.UTF-8 here, as Python's does, so UTF-8 typed at
   the prompt stays UTF-8. */
static void term_locale(void) {
  const char *loc = setlocale(LC_CTYPE, "");
  if (!loc || strcmp(loc, "C") == 0 || strcmp(loc, "POSIX") == 0) setlocale(LC_CTYPE, "C.UTF-8");
}

static int term_setup(repl *r) {
  term_locale();
  if (held_setup(r) < 0) return -1;
  rl_readline_name = "farm";               /* "farm" lines of ~/.editrc apply */
  rl_instream = stdin;
  rl_outstream = r->term_out;
  rl_getc_function = term_getc;
  rl_catch_signals = 0;
  rl_catch_sigwinch = 0;
  rl_attempted_completion_function = term_complete;
  rl_basic_word_break_characters = " \t\n\"\\'`@$><=;|&{(+-*/%^#~,[]}";
  rl_completer_word_break_characters = (char *)rl_basic_word_break_characters;
  rl_completion_append_character = '\0';
  if (rl_initialize() != 0) return -1;
  stifle_history(HISTORY_MAX);
  r->history = history_path();
  if (r->history) read_history(r->history);
  setvbuf(stdout, NULL, _IOLBF, 0);        /* its first write may be to a held pipe */
  return 0;
}

/* One line from the terminal, NULL at the end of input; Ctrl-C clears the line
   (and a chunk being continued) and asks again. */
static char *term_read(repl *r, int more) {
  for (;;) {
    sigint_at_prompt = 0;
    held_on(r);
    char *line = readline(more ? PROMPT_MORE : PROMPT);
    held_off(r);
    if (line || !sigint_at_prompt) return line;
    sigint_at_prompt = 0;
    fputs("^C\n", r->term_out);
    fflush(r->term_out);
    if (more) { call_session(r, "reset", NULL); more = 0; }
  }
}

/* One line from a pipe or file, without its newline; NULL at the end. */
static char *plain_read(void) {
  char *line = NULL;
  size_t cap = 0;
  ssize_t n;
  while ((n = getline(&line, &cap, stdin)) < 0) {
    if (ferror(stdin) && errno == EINTR) { clearerr(stdin); continue; }
    free(line);
    return NULL;
  }
  if (n > 0 && line[n - 1] == '\n') line[--n] = '\0';
  if (n > 0 && line[n - 1] == '\r') line[--n] = '\0';
  return line;
}

static void banner(repl *r) {
  static const char text[] =
    "local farm = require 'farm'\n"
    "local n, nodes = farm.workers(), farm.nodes()\n"
    "local s = ('farm %s (%s): %d worker%s'):format(farm._VERSION:match('[%d.]+$') or '',\n"
    "  _VERSION, n, n == 1 and '' or 's')\n"
    "if #nodes > 0 then s = s .. (' with %d node%s'):format(#nodes, #nodes == 1 and '' or 's') end\n"
    "io.write(s, '. :help for help, Ctrl-D to quit.\\n')\n";
  if (luaL_loadbufferx(r->L, text, sizeof text - 1, "=farm repl", "t") != LUA_OK ||
      lua_pcall(r->L, 0, 0, 0) != LUA_OK)
    lua_pop(r->L, 1);
  fflush(stdout);
}

int farm_repl_main(int argc, char **argv) {
  farm_pool_opts o = FARM_POOL_OPTS_INIT;
  int rc = parse_opts(argc, argv, &o);
  if (rc >= 0) return rc;
  repl r;
  memset(&r, 0, sizeof r);
  r.term = r.held_rd = r.held_wr = -1;
  r.tty = isatty(0) && isatty(1);
  if (r.tty) {
    pthread_once(&edit_once, edit_load);
    if (edit_err[0]) {
      fprintf(stderr, "farm: %s; reading lines plainly\n", edit_err);
      r.tty = 0;
    }
  }
  const char *nc = getenv("NO_COLOR"), *term = getenv("TERM");
  int color = r.tty && !(nc && *nc) && !(term && strcmp(term, "dumb") == 0);
  lua_State *L = r.L = luaL_newstate();
  if (!L) return fail("%s", "out of memory");
  make_marker(L);
  lua_pushcfunction(L, open_session);
  lua_pushlightuserdata(L, &o);
  lua_pushboolean(L, r.tty);
  lua_pushboolean(L, color);
  if (lua_pcall(L, 3, 1, 0) != LUA_OK) {
    const char *msg = luaL_tolstring(L, -1, NULL);
    fprintf(stderr, "farm: %s\n", strncmp(msg, "farm: ", 6) == 0 ? msg + 6 : msg);
    lua_close(L);
    return 1;
  }
  r.session = luaL_ref(L, LUA_REGISTRYINDEX);
  the_repl = &r;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;        /* poll() is interrupted all the same */
  sa.sa_handler = on_sigint;
  sigaction(SIGINT, &sa, NULL);
  if (r.tty) {
    sa.sa_handler = on_sigwinch;
    sigaction(SIGWINCH, &sa, NULL);
    if (term_setup(&r) < 0) {
      fprintf(stderr, "farm: cannot set up the terminal (%s); reading lines plainly\n", strerror(errno));
      held_close(&r);
      r.tty = 0;
    } else banner(&r);
  }
  int more = 0, eof = 0;
  for (;;) {
    char *line = r.tty ? term_read(&r, more) : plain_read();
    if (!line) { eof = 1; break; }
    if (r.tty) history_keep(&r, line);
    int st = call_session(&r, "feed", line);
    free(line);
    sigint_at_prompt = 0;
    more = st == FEED_MORE;
    if (st == FEED_FAILED) r.failed = 1;
    if (st == FEED_QUIT) break;
  }
  if (!r.tty && call_session(&r, "finish", NULL) == FEED_FAILED) r.failed = 1;
  if (r.tty && eof) { fputs("\n", stdout); fflush(stdout); }   /* after Ctrl-D's empty line */
  call_session(&r, "bye", NULL);
  signal(SIGINT, SIG_DFL);
  the_repl = NULL;
  lua_close(L);                    /* closes the pool: workers and nodes stop */
  if (r.tty) held_close(&r);
  free(r.history);
  free(r.last);
  return !r.tty && r.failed ? 1 : 0;
}
