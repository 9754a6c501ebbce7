/*
 * cli.c -- the farm command line: `farm run`, `farm keygen`, `farm worker`, help
 * and version (`farm node` is nodes/node.c, `farm repl` core/repl.c; the pool
 * options that `farm run` and `farm repl` share are core/cliopts.c's).
 * Part of the executable only, not of the library: it owns the process's
 * signal handling, which a C host embedding libfarm keeps for itself.
 *
 * `farm run --journal FILE` names the script for its journal (journal.c): a
 * hash of its absolute path and the text read, and one of its arguments; the
 * journal is checked before the script runs and handed to the pool through
 * farm.config{journal =, journal_id =}.
 *
 * Every mistake on the command line gets one line naming it and the fix, and
 * exit status 2; an error in the script gets "farm: <message>" and status 1.
 *
 * Threads: the executable's main thread.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include <sodium.h>
#include "farm.h"
#include "journal.h"
#include "worker.h"
#include "cli.h"
#include "cliopts.h"
#include "repl.h"
#include "session.h"
#include "status.h"

static const char usage[] =
  "usage: farm run SCRIPT.lua [-n N] [--nodes HOSTFILE | --hosts LIST] [--key-file F]\n"
  "                [--listen ADDR] [--discover IFACE] [--quiet-jobs] [--progress | --no-progress]\n"
  "                [--stats] [--traceback] [--journal FILE] [--status ADDR [--status-token]]\n"
  "                [-- ARGS...]\n"
  "       farm repl [-n N] [--nodes HOSTFILE | --hosts LIST] [--key-file F]   (farm repl --help)\n"
  "       farm node [--listen ADDR] [-w N] [--key-file F] ...   (farm node --help)\n"
  "       farm status ADDR [--key-file F] [--url]   (farm status --help)\n"
  "       farm keygen FILE\n"
  "       farm worker --connect URL [--slot N] [--parent PID]   (started by farm itself)\n"
  "       farm --version | farm --help\n"
  "\n"
  "  run       run SCRIPT with `farm` loaded; its jobs run on N local workers\n"
  "            (default: one per CPU it may use) and on the nodes given. SCRIPT is\n"
  "            read once, when it starts: `-` (standard input), a pipe such as\n"
  "            /dev/stdin or <(...), and a file edited while it runs all work\n"
  "  -n N      number of local workers; -n 0 (or --no-local): every job runs on the nodes\n"
  "  --nodes HOSTFILE  start `farm node` over SSH on each host in HOSTFILE, one per line:\n"
  "                    'host [workers]', 'user@host:sshport [workers]', or\n"
  "                    'node://host:port [workers]' for a standing node; # comments\n"
  "  --hosts LIST      the same hosts, comma separated (h1,user@h2:2222,node://h3:7070)\n"
  "  --key-file F      the key of standing nodes (default $FARM_KEY_FILE); nodes started\n"
  "                    over SSH get a key made for the run\n"
  "  --accept-new-hosts  add the key of an SSH host not in ~/.ssh/known_hosts\n"
  "  --remote-farm PATH  the farm executable on the SSH hosts (default: farm on their PATH)\n"
  "  --heartbeat S     seconds between heartbeats with nodes (default 1); a node silent\n"
  "                    for 5 heartbeats is lost and its jobs run elsewhere\n"
  "  --slurm-wait S    --nodes slurm: how long srun's step may wait to start (default 60);\n"
  "                    after 1 s farm says why it waits (squeue), at S it gives up\n"
  "  --listen ADDR     let standing nodes join while the run runs (farm node --join ADDR):\n"
  "                    ADDR is HOST:PORT, tcp://HOST:PORT or a PORT on 127.0.0.1; each\n"
  "                    node's address, signed with the key (--key-file), is dialled\n"
  "                    with the key handshake; another key's is ignored, said once\n"
  "  --discover IFACE[:PORT]  the same for nodes that announce themselves on network\n"
  "                    interface IFACE (farm node --announce IFACE), UDP port PORT (7079)\n"
  "  --dest DIR        where files that jobs send back (farm.send_file) go (default: the\n"
  "                    run's own farm-out/YYYYmmdd-HHMMSS-PID, made at the first file);\n"
  "                    a file from a node never replaces one that is there\n"
  "  --max-file SIZE   the largest file that travels to or from a job, in bytes or with\n"
  "                    k or M (default 64M, at most 192M)\n"
  "  --quiet-jobs  do not echo what jobs print (future.stdout still has it)\n"
  "  --progress    keep a live progress line on stderr (the default when it is a terminal)\n"
  "  --no-progress no progress line\n"
  "  --stats       print the pool's statistics (farm.print_stats) on stderr at the end\n"
  "  --traceback   on an error in the script, print the client's traceback too\n"
  "  --journal FILE  keep each finished job's result in FILE; the same command run again\n"
  "                (after a crash, a kill) takes the jobs recorded there from it instead of\n"
  "                running them again\n"
  "  --status ADDR serve a live, read-only status page while the run goes on, at\n"
  "                http://ADDR/ (ADDR: PORT or HOST:PORT; /status.json, /status.txt),\n"
  "                from the first job on. Loopback only, unless --key-file F is given:\n"
  "                then every request needs the token BLAKE2b(key, \"farm status\")\n"
  "                (the page asks for it; farm status --key-file F sends it)\n"
  "  --status-token  the page needs the token on a loopback address too\n"
  "\n"
  "  farm's options go before or after SCRIPT; the script's own arguments follow `--`,\n"
  "  or begin at the first word after SCRIPT that is not one of farm's options.\n"
  "  repl      an interactive Lua prompt with `farm` loaded and the pool (and nodes) running\n"
  "  status    print the figures of a run or node started with --status ADDR, as a table\n"
  "  keygen    write a new farm key to FILE (readable by you alone)\n";

#define fail farm__cli_fail

/* ---- Ctrl-C: as lua.c does it. The handler can reach no context, so the one
   state `farm run` drives is kept here; this is the executable's process-wide
   signal plumbing, not library state (a C host handles its own signals). */
static lua_State *run_state;
static int run_interrupted;            /* the error that ended the script was Ctrl-C's */

static const char interrupted[] = "interrupted";

/* Ctrl-C raises a table that prints as "interrupted" (so a pcall that catches
   it sees something readable), marked by a metatable of its own. */
static int interrupted_str(lua_State *L) {
  lua_pushstring(L, interrupted);
  return 1;
}

static void push_interrupted(lua_State *L) {
  lua_newtable(L);
  if (luaL_newmetatable(L, "farm.interrupted")) {
    lua_pushcfunction(L, interrupted_str);
    lua_setfield(L, -2, "__tostring");
  }
  lua_setmetatable(L, -2);
}

static int is_interrupted(lua_State *L, int idx) {
  if (!lua_istable(L, idx) || !lua_getmetatable(L, idx)) return 0;
  luaL_getmetatable(L, "farm.interrupted");
  int is = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return is;
}

static void stop_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  push_interrupted(L);                 /* a marker, not a message with a place */
  lua_error(L);
}

static void on_sigint(int sig) {
  signal(sig, SIG_DFL);               /* a second Ctrl-C kills outright */
  if (run_state)
    lua_sethook(run_state, stop_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

static int msghandler(lua_State *L) {
  int tb = lua_toboolean(L, lua_upvalueindex(1));
  const char *msg;
  if (is_interrupted(L, 1)) {
    run_interrupted = 1;
    lua_pushstring(L, interrupted);
    return 1;
  }
  if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) msg = lua_tostring(L, -1);
  else if (!(msg = lua_tostring(L, 1))) msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  if (tb) luaL_traceback(L, L, msg, 1); else lua_pushstring(L, msg);
  return 1;
}

/* Standard libraries, and farm configured as the command line says (protected). */
static int open_farm(lua_State *L) {
  const farm_pool_opts *o = lua_touserdata(L, 1);
  luaL_openlibs(L);
  luaL_requiref(L, "farm", luaopen_farm, 1);
  farm__pool_config(L, o);
  return 0;
}

/* The script ended: wait for the jobs it left (callbacks run), say how many
   failed with their error never read, then stop the pool; with --stats, print
   its table in between. */
static const char finish_lua[] =
  "local stats = ...\n"
  "local pool = require('farm')._default\n"
  "pool:wait_all()\n"
  "require('farm')._report_unread(io.stderr)\n"
  "if stats then pool:print_stats(io.stderr) end\n"
  "pool:close()\n";

static int finish_run(lua_State *L) {
  int stats = lua_toboolean(L, 1);
  if (luaL_loadbufferx(L, finish_lua, sizeof finish_lua - 1, "=farm run", "t") != LUA_OK)
    return lua_error(L);
  lua_pushboolean(L, stats);
  lua_call(L, 1, 0);
  return 0;
}

/* The script, read once -- a file, a pipe (/dev/stdin, <(...)) or standard
   input for "-", as lua reads "-" -- and compiled from what was read, as
   luaL_loadfile compiles a file (no UTF-8 BOM; a first line starting with '#'
   blanked, its newline kept), in text mode. Its text is remembered for shipping
   (farm_remember) under its chunk name, "@SCRIPT" or "=stdin": functions from
   it ship what was loaded, whatever becomes of the file. Leaves the chunk. */
static int p_load_script(lua_State *L) {
  const char *script = lua_touserdata(L, 1);
  unsigned char *script_hash = lua_touserdata(L, 2);   /* (--journal) NULL: not wanted */
  int is_stdin = strcmp(script, "-") == 0;
  const char *chunk = is_stdin ? "=stdin" : lua_pushfstring(L, "@%s", script);
  const char *shown = is_stdin ? "stdin" : script;
  FILE *f = is_stdin ? stdin : fopen(script, "rb");
  if (!f) return luaL_error(L, "cannot open %s: %s", shown, strerror(errno));
  luaL_Buffer B;
  luaL_buffinit(L, &B);
  size_t n;
  do {
    char *p = luaL_prepbuffer(&B);
    n = fread(p, 1, LUAL_BUFFERSIZE, f);
    luaL_addsize(&B, n);
  } while (n > 0);
  int err = ferror(f) ? errno : 0;
  if (!is_stdin) fclose(f);
  if (err) return luaL_error(L, "cannot read %s: %s", shown, strerror(err));
  luaL_pushresult(&B);
  size_t len;
  const char *text = lua_tolstring(L, -1, &len);
  if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) { text += 3; len -= 3; }
  if (len > 0 && text[0] == '#') {    /* a #! line: its newline stays, for line numbers */
    const char *nl = memchr(text, '\n', len);
    if (nl) { len -= (size_t)(nl - text); text = nl; } else { text = "\n"; len = 1; }
  }
  if (script_hash) {                   /* what names the script in a journal: its path and text */
    char abs[PATH_MAX];
    const char *where = is_stdin ? "-" : realpath(script, abs) ? abs : script;
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, 32);
    crypto_generichash_update(&st, (const unsigned char *)where, strlen(where) + 1);
    crypto_generichash_update(&st, (const unsigned char *)text, len);
    crypto_generichash_final(&st, script_hash, 32);
  }
  if (luaL_loadbufferx(L, text, len, chunk, "t") != LUA_OK) return lua_error(L);
  int rc = farm_remember(L, chunk, text, len);
  if (rc != FARM_OK) return luaL_error(L, "cannot keep the text of %s: %s", shown, farm_strerror(rc));
  return 1;
}

/* farm.config{journal = path, journal_id = id} (protected). */
static int p_journal_config(lua_State *L) {
  const char *path = lua_touserdata(L, 1);
  const unsigned char *id = lua_touserdata(L, 2);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_getfield(L, -1, "farm");
  lua_getfield(L, -1, "config");
  lua_createtable(L, 0, 2);
  lua_pushstring(L, path);
  lua_setfield(L, -2, "journal");
  lua_pushlstring(L, (const char *)id, FARM_JOURNAL_IDLEN);
  lua_setfield(L, -2, "journal_id");
  lua_call(L, 1, 0);
  return 0;
}

/* --journal: the journal names this script (path and text, hashed as it was
   read) and its arguments; one that names another is refused now, before the
   script runs, as is one that cannot be made or is damaged (journal.c). Then
   the pool is configured with it. 0, or 2 after one line. */
static int use_journal(lua_State *L, const char *path, unsigned char *id, char **args, int nargs) {
  crypto_generichash_state st;
  crypto_generichash_init(&st, NULL, 0, 32);
  for (int i = 0; i < nargs; i++)
    crypto_generichash_update(&st, (const unsigned char *)args[i], strlen(args[i]) + 1);
  crypto_generichash_final(&st, id + 32, 32);
  char err[PATH_MAX + 400];
  if (farm__journal_check(path, id, err, sizeof err) < 0) return fail("%s", err);
  lua_pushcfunction(L, p_journal_config);
  lua_pushlightuserdata(L, (void *)path);
  lua_pushlightuserdata(L, id);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
    fprintf(stderr, "farm: %s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
    return 2;
  }
  return 0;
}

static int cmd_run(int argc, char **argv) {
  const char *script = NULL, *journal = NULL;
  unsigned char journal_id[FARM_JOURNAL_IDLEN];
  farm_pool_opts o = FARM_POOL_OPTS_INIT;
  o.progress = isatty(2);
  int traceback = 0, stats = 0, i, first_arg = argc;
  for (i = 2; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--") == 0) { first_arg = i + 1; break; }
    int took = farm__pool_option(argc, argv, &i, &o);
    if (took == 2) return 2;
    if (took) continue;
    if (strcmp(a, "--progress") == 0) o.progress = 1;
    else if (strcmp(a, "--no-progress") == 0) o.progress = 0;
    else if (strcmp(a, "--stats") == 0) stats = 1;
    else if (strcmp(a, "--traceback") == 0) traceback = 1;
    else if (strcmp(a, "--journal") == 0) {
      if (i + 1 >= argc || !*argv[i + 1]) return fail("%s needs a file, e.g. --journal run.journal", a);
      journal = argv[++i];
    }
    else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) { fputs(usage, stdout); return 0; }
    else if (a[0] == '-' && a[1]) return fail("unknown option '%s' for 'farm run' (see farm --help; the script's own options go after --)", a);
    else if (!script) script = a;
    else { first_arg = i; break; }
  }
  if (farm__pool_check(&o)) return 2;
  if (!script) return fail("%s", "'farm run' needs a script: farm run SCRIPT.lua");
  lua_State *L = luaL_newstate();
  if (!L) return fail("%s", "out of memory");
  lua_pushcfunction(L, open_farm);
  lua_pushlightuserdata(L, &o);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    fprintf(stderr, "farm: cannot load the farm module: %s\n", lua_tostring(L, -1));
    lua_close(L);
    return 1;
  }
  /* arg, as lua sets it: arg[0] the script, arg[1..] its arguments */
  lua_createtable(L, argc - first_arg, 3);
  lua_pushstring(L, argv[0]); lua_rawseti(L, -2, -2);
  lua_pushstring(L, "run"); lua_rawseti(L, -2, -1);
  lua_pushstring(L, script); lua_rawseti(L, -2, 0);
  for (i = first_arg; i < argc; i++) { lua_pushstring(L, argv[i]); lua_rawseti(L, -2, i - first_arg + 1); }
  lua_setglobal(L, "arg");
  int rc = 0;
  lua_pushboolean(L, traceback);
  lua_pushcclosure(L, msghandler, 1);
  int mh = lua_gettop(L);
  lua_pushcfunction(L, p_load_script);
  lua_pushlightuserdata(L, (void *)script);
  lua_pushlightuserdata(L, journal ? journal_id : NULL);
  if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
    fprintf(stderr, "farm: %s\n", lua_tostring(L, -1));
    rc = 1;
  } else if (journal && (rc = use_journal(L, journal, journal_id, argv + first_arg, argc - first_arg))) {
    /* (said) */
  } else {
    for (i = first_arg; i < argc; i++) lua_pushstring(L, argv[i]);
    run_state = L;
    signal(SIGINT, on_sigint);
    int st = lua_pcall(L, argc - first_arg, 0, mh);
    if (st == LUA_OK) {                /* jobs left unfinished are waited for */
      lua_pushcfunction(L, finish_run);
      lua_pushboolean(L, stats);
      st = lua_pcall(L, 1, 0, mh);
    }
    if (st != LUA_OK) {
      const char *msg = lua_tostring(L, -1);
      fprintf(stderr, "farm: %s\n", strncmp(msg, "farm: ", 6) == 0 ? msg + 6 : msg);
      rc = run_interrupted ? 130 : 1;
    }
    signal(SIGINT, SIG_DFL);
    run_state = NULL;
  }
  lua_close(L);                        /* closes the pool: workers stop */
  return rc;
}

static int cmd_worker(int argc, char **argv) {
  const char *url = NULL;
  long slot = 0, parent = 0;
  size_t maxmsg = 256u << 20;
  int statefd = -1, captured = 0;
  for (int i = 2; i < argc; i++) {
    if (strcmp(argv[i], "--captured") == 0) { captured = 1; continue; }
    if (i + 1 >= argc) return fail("worker option '%s' needs a value", argv[i]);
    if (strcmp(argv[i], "--connect") == 0) url = argv[++i];
    else if (strcmp(argv[i], "--slot") == 0) slot = atol(argv[++i]);
    else if (strcmp(argv[i], "--parent") == 0) parent = atol(argv[++i]);
    else if (strcmp(argv[i], "--max-message") == 0) maxmsg = (size_t)atoll(argv[++i]);
    else if (strcmp(argv[i], "--state-fd") == 0) statefd = atoi(argv[++i]);
    else return fail("unknown option '%s' for 'farm worker'", argv[i]);
  }
  if (!url) return fail("%s", "'farm worker' needs --connect URL (workers are started by farm itself)");
  if (maxmsg < (64u << 10)) return fail("%s", "--max-message must be at least 65536 bytes");
  return farm__worker_main(url, (int)slot, parent, maxmsg, statefd, captured);
}

int farm_main(int argc, char **argv) {
  if (argc < 2) { fputs(usage, stderr); return 2; }
  const char *cmd = argv[1];
  if (strcmp(cmd, "run") == 0) return cmd_run(argc, argv);
  if (strcmp(cmd, "worker") == 0) return cmd_worker(argc, argv);
  if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
    printf("farm %s (protocol %d, %s)\n", FARM_VERSION, FARM_PROTOCOL, LUA_RELEASE);
    return 0;
  }
  if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
    fputs(usage, stdout);
    return 0;
  }
  if (strcmp(cmd, "node") == 0) return farm_node_main(argc, argv);
  if (strcmp(cmd, "keygen") == 0) {
    char err[400];
    if (argc != 3 || argv[2][0] == '-') return fail("%s", "usage: farm keygen FILE (writes a new farm key, mode 600)");
    if (farm__key_write(argv[2], err, sizeof err) < 0) return fail("%s", err);
    fprintf(stderr, "farm: wrote a new key to %s; give it to the nodes and clients that share it "
            "(--key-file %s)\n", argv[2], argv[2]);
    return 0;
  }
  if (strcmp(cmd, "repl") == 0) return farm_repl_main(argc, argv);
  if (strcmp(cmd, "status") == 0) return farm__status_main(argc, argv);
  if (strstr(cmd, ".lua")) return fail("to run a script, say 'farm run %s'", cmd);
  return fail("unknown command '%s' (commands: run, repl, node, status, keygen; see farm --help)", cmd);
}
