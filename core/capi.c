/*
 * capi.c -- farm for C hosts: the farm_* handle API of include/farm.h over the
 * engine (engine.h), with no Lua in sight of the host.
 *
 * Each farm has a private Lua state, used only inside these calls and only
 * under the farm's mutex: it compiles a job's source text and encodes the
 * function (lua/ship.lua finds its text, as for any script), turns C arguments
 * into an argument block and result blocks into C values. Everything else --
 * queueing, sending, waiting, cancelling -- is the engine's, exactly as the
 * Lua binding (client.c) drives it; waits and cancels run outside the mutex,
 * so one thread may wait while another submits.
 *
 * Lifetimes: a farm is shared by the host and every future it made (a count
 * of references). farm_close stops the engine at once and drops the host's
 * reference; the Lua state and the mutex go with the last reference, so a
 * future outlives its farm's close and still reads its results. The engine is
 * freed only once no thread is inside a wait or cancel on it (`inside`).
 *
 * Function packages are cached by source text (and kernels by name) in the
 * private state: the same source submitted a thousand times is compiled,
 * encoded and hashed once, and the workers keep it by its hash. The cache is
 * never trimmed; a host that makes endless distinct sources should pass the
 * varying part as an argument instead.
 */
#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sodium.h>
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include "farm.h"
#include "clock.h"
#include "codec.h"
#include "engine.h"
#include "hosts.h"
#include "session.h"

#define CHUNKNAME "=farm_submit_source"
#define FN_MT "farm.capi.fn"
#define BUF_MT "farm.capi.buf"

struct farm {
  pthread_mutex_t mu;              /* the Lua state, the cache, enc, err, e, closing, inside */
  pthread_cond_t idle;             /* signalled when inside drops to 0 */
  farm_engine *e;                  /* NULL once closed */
  int closing;
  int inside;                      /* threads in an engine call made outside mu */
  int refs;                        /* atomic: the host's, and one per future */
  lua_State *L;                    /* private: never seen by the host */
  int helper;                      /* registry ref: the helper table (HELPER below) */
  int cache;                       /* registry ref: "s" source | "k" name -> fn userdata */
  farm_buf enc;                    /* argument blocks are encoded here */
  char err[1024];                  /* farm_last_error */
  char *key_file;                  /* the options' key_file (or FARM_KEY_FILE's), for
                                      farm_add_nodes; NULL: none */
};

struct farm_future {
  farm *f;                         /* a reference */
  farm_job *j;                     /* a reference */
  int nvals;                       /* -1: results not read yet */
  int readrc;                      /* FARM_OK, or why they cannot be read */
  farm_value *vals;
  char *why;                       /* ...in words */
  char *msg, *tb, *out;            /* NUL-terminated copies, made on demand */
  size_t nout;
};

/* A function package in the private state: its userdata's user value is the
   table numbering its block's values when it travels fresh (codec.h). */
typedef struct { farm_fn *fn; lua_Integer nseen; } fn_ud;

/* Lua that the private state runs once: is a function the same package every
   time (ship.is_constant, the rule lua/farm.lua follows too), and a table as
   Lua-literal text. */
static const char HELPER[] =
  "local ship = require 'farm.ship'\n"
  "local fmt, mtype, sort, concat = string.format, math.type, table.sort, table.concat\n"
  "local type, next, tostring, tonumber = type, next, tostring, tonumber\n"
  "local H = { resolve = ship.resolve_loaded, is_constant = ship.is_constant }\n"
  "local KEYWORDS = {}\n"
  "for w in ('and break do else elseif end false for function goto if in local nil not or '\n"
  "  .. 'repeat return then true until while'):gmatch('%a+') do KEYWORDS[w] = true end\n"
  "local function number(v)\n"
  "  if mtype(v) == 'integer' then\n"
  "    return v == math.mininteger and '0x8000000000000000' or fmt('%d', v)\n"
  "  end\n"
  "  if v ~= v then return '0/0' end\n"
  "  if v == 1/0 then return '1/0' elseif v == -1/0 then return '-1/0' end\n"
  "  local s = fmt('%.14g', v)\n"
  "  if tonumber(s) ~= v then s = fmt('%.17g', v) end\n"
  "  if not s:find('[.e]') then s = s .. '.0' end\n"
  "  return s\n"
  "end\n"
  "local function quote(s) return (fmt('%q', s):gsub('\\\\\\n', '\\\\n')) end\n"
  "local RANK = { number = 1, string = 2, boolean = 3 }\n"
  "local function before(a, b)\n"
  "  local ta, tb = RANK[type(a)], RANK[type(b)]\n"
  "  if ta ~= tb then return ta < tb end\n"
  "  if ta == 3 then return not a and b end\n"
  "  return a < b\n"
  "end\n"
  "local literal\n"
  "local function scalar(v, path)\n"
  "  local t = type(v)\n"
  "  if t == 'number' then return number(v) elseif t == 'string' then return quote(v)\n"
  "  elseif t == 'boolean' or t == 'nil' then return tostring(v) end\n"
  "  error(fmt('%s is a %s: a C host reads nil, booleans, numbers, strings and tables of them',\n"
  "    path, t), 0)\n"
  "end\n"
  "function literal(t, path, open, out)\n"
  "  if open[t] then error(fmt('%s is a table that contains itself: it has no Lua-literal text', path), 0) end\n"
  "  open[t] = true\n"
  "  out[#out + 1] = '{'\n"
  "  local n, first = 0, true\n"
  "  while t[n + 1] ~= nil do\n"
  "    n = n + 1\n"
  "    local v = t[n]\n"
  "    out[#out + 1] = first and '' or ', '\n"
  "    first = false\n"
  "    if type(v) == 'table' then literal(v, path .. '[' .. n .. ']', open, out)\n"
  "    else out[#out + 1] = scalar(v, path .. '[' .. n .. ']') end\n"
  "  end\n"
  "  local keys = {}\n"
  "  for k in next, t do\n"
  "    if not (mtype(k) == 'integer' and k >= 1 and k <= n) then\n"
  "      if not RANK[type(k)] then\n"
  "        error(fmt('%s has a key that is a %s: a C host reads tables keyed by numbers, strings '\n"
  "          .. 'and booleans', path, type(k)), 0)\n"
  "      end\n"
  "      keys[#keys + 1] = k\n"
  "    end\n"
  "  end\n"
  "  sort(keys, before)\n"
  "  for _, k in ipairs(keys) do\n"
  "    out[#out + 1] = first and '' or ', '\n"
  "    first = false\n"
  "    local sub\n"
  "    if type(k) == 'string' and k:match('^[%a_][%w_]*$') and not KEYWORDS[k] then\n"
  "      out[#out + 1] = k .. ' = '\n"
  "      sub = path .. '.' .. k\n"
  "    else\n"
  "      out[#out + 1] = '[' .. scalar(k, path) .. '] = '\n"
  "      sub = path .. '[' .. scalar(k, path) .. ']'\n"
  "    end\n"
  "    local v = t[k]\n"
  "    if type(v) == 'table' then literal(v, sub, open, out) else out[#out + 1] = scalar(v, sub) end\n"
  "  end\n"
  "  out[#out + 1] = '}'\n"
  "  open[t] = nil\n"
  "end\n"
  "function H.literal(t, path)\n"
  "  local out = {}\n"
  "  literal(t, path, {}, out)\n"
  "  return concat(out)\n"
  "end\n"
  "return H\n";

/* ---- small things ----------------------------------------------------------------- */

static void set_err(farm *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(farm *f, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(f->err, sizeof f->err, fmt, ap);
  va_end(ap);
}

static char *cstr(const char *p, size_t n) {
  char *s = malloc(n + 1);
  if (!s) return NULL;
  if (n) memcpy(s, p, n);
  s[n] = 0;
  return s;
}

/* A Lua failure as a code (the message is on top of L: into f->err, popped). */
static int lua_failure(farm *f, int st) {
  const char *m = lua_tostring(f->L, -1);
  set_err(f, "%s", m ? m : "error");
  lua_pop(f->L, 1);
  return st == LUA_ERRMEM ? FARM_ENOMEM : FARM_EINVAL;
}

static void farm_ref(farm *f) { __atomic_add_fetch(&f->refs, 1, __ATOMIC_RELAXED); }

static void farm_unref(farm *f) {
  if (__atomic_sub_fetch(&f->refs, 1, __ATOMIC_ACQ_REL) > 0) return;
  /* the last reference: nobody else can reach f now */
  if (f->L) lua_close(f->L);       /* the cached packages' __gc drops them */
  farm__buf_free(&f->enc);
  free(f->key_file);
  pthread_cond_destroy(&f->idle);
  pthread_mutex_destroy(&f->mu);
  free(f);
}

/* The engine for a call made outside the mutex (wait, cancel), or NULL once
   the farm is closed; leave() after. */
static farm_engine *enter(farm *f) {
  pthread_mutex_lock(&f->mu);
  farm_engine *e = f->e;
  if (e) f->inside++;
  pthread_mutex_unlock(&f->mu);
  return e;
}

static void leave(farm *f) {
  pthread_mutex_lock(&f->mu);
  if (--f->inside == 0) pthread_cond_broadcast(&f->idle);
  pthread_mutex_unlock(&f->mu);
}

/* ---- values ------------------------------------------------------------------------ */

farm_value farm_nil(void) {
  farm_value v;
  memset(&v, 0, sizeof v);
  v.type = FARM_TNIL;
  return v;
}

farm_value farm_boolean(int b) {
  farm_value v = farm_nil();
  v.type = FARM_TBOOLEAN;
  v.b = b != 0;
  return v;
}

farm_value farm_integer(long long i) {
  farm_value v = farm_nil();
  v.type = FARM_TINTEGER;
  v.i = i;
  return v;
}

farm_value farm_number(double d) {
  farm_value v = farm_nil();
  v.type = FARM_TNUMBER;
  v.d = d;
  return v;
}

farm_value farm_lstring(const char *s, size_t len) {
  farm_value v = farm_nil();
  v.type = FARM_TSTRING;
  v.s = s;
  v.len = len;
  return v;
}

farm_value farm_string(const char *s) { return farm_lstring(s, s ? strlen(s) : 0); }

farm_value farm_table(const char *lua_literal) {
  farm_value v = farm_lstring(lua_literal, lua_literal ? strlen(lua_literal) : 0);
  v.type = FARM_TTABLE;
  return v;
}

/* ---- open and close ---------------------------------------------------------------- */

void farm_options_init(farm_options *o) {
  if (o) memset(o, 0, sizeof *o);
}

static int p_open_state(lua_State *L) {
  farm *f = lua_touserdata(L, 1);
  luaL_openlibs(L);
  luaL_requiref(L, "farm", luaopen_farm, 0);
  if (luaL_loadbufferx(L, HELPER, sizeof HELPER - 1, "=farm capi", "t") != LUA_OK) return lua_error(L);
  lua_call(L, 0, 1);
  f->helper = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_newtable(L);
  f->cache = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

static int l_fn_gc(lua_State *L) {
  fn_ud *u = lua_touserdata(L, 1);
  farm__fn_unref(u->fn);
  u->fn = NULL;
  return 0;
}

static int l_buf_gc(lua_State *L) {
  farm__buf_free(lua_touserdata(L, 1));
  return 0;
}

/* The private Lua state: the standard libraries, farm (for ship.lua), the helper. */
static int open_state(farm *f, char *err, size_t errlen) {
  f->L = luaL_newstate();
  if (!f->L) { snprintf(err, errlen, "out of memory"); return FARM_ENOMEM; }
  lua_State *L = f->L;
  luaL_newmetatable(L, FN_MT);
  lua_pushcfunction(L, l_fn_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_newmetatable(L, BUF_MT);
  lua_pushcfunction(L, l_buf_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  lua_pushcfunction(L, p_open_state);
  lua_pushlightuserdata(L, f);
  int st = lua_pcall(L, 1, 0, 0);
  if (st != LUA_OK) {
    snprintf(err, errlen, "cannot start farm's Lua state: %s", lua_tostring(L, -1));
    return st == LUA_ERRMEM ? FARM_ENOMEM : FARM_EPROTO;
  }
  return FARM_OK;
}

/* PREFIX/bin/farm beside PREFIX/lib/libfarm.so, when the host set nothing. */
static const char *installed_exe(char *out, size_t n) {
  const char *env = getenv("FARM_EXE");
  if (env && *env) return NULL;                 /* the engine takes it from there */
  Dl_info info;
  if (!dladdr((void *)farm_open, &info) || !info.dli_fname) return NULL;
  const char *slash = strrchr(info.dli_fname, '/');
  if (!slash) return NULL;
  snprintf(out, n, "%.*s/../bin/farm", (int)(slash - info.dli_fname), info.dli_fname);
  return access(out, X_OK) == 0 ? out : NULL;
}

/* The hosts the options name: 0 and *out NULL for none, or -1 with err. */
static int option_hosts(const farm_options *o, farm_host **out, char *err, size_t errlen) {
  *out = NULL;
  if (o->hostfile && *o->hostfile && o->hosts && *o->hosts) {
    snprintf(err, errlen, "give the nodes as a hostfile or as a hosts list, not both");
    return -1;
  }
  if (o->hostfile && *o->hostfile) return farm__hosts_named(o->hostfile, out, err, errlen);
  if (o->hosts && *o->hosts) return farm__hosts_list(o->hosts, out, err, errlen);
  return 0;
}

/* The words a C host reads. The engine, hosts, SSH and session code speak to
   `farm run`'s user, in its command-line flags; a C host set farm_options
   fields instead, so those flags are renamed in what farm_open tells it. (One
   table here rather than a flag through every layer that words an error.) */
static const char *const C_HOST_WORDS[][2] = {
  { "pass --key-file F, or set FARM_KEY_FILE", "set key_file in farm_options, or FARM_KEY_FILE" },
  { "the same --key-file", "the same key: key_file in farm_options" },
  { "--key-file", "key_file" },
  { "pass --accept-new-hosts", "set accept_new_hosts in farm_options" },
  { "pass --remote-farm PATH", "set remote_farm in farm_options" },
  { "--remote-farm", "remote_farm" },
  { "--hosts", "hosts" },
  { "--nodes", "hostfile" },
};

static void c_host_words(char *err, size_t errlen) {
  char out[2048];
  size_t n = 0;
  for (const char *p = err; *p && n + 1 < sizeof out;) {
    size_t i, k = 0;
    for (i = 0; i < sizeof C_HOST_WORDS / sizeof C_HOST_WORDS[0]; i++) {
      k = strlen(C_HOST_WORDS[i][0]);
      if (strncmp(p, C_HOST_WORDS[i][0], k) == 0) break;
    }
    if (i < sizeof C_HOST_WORDS / sizeof C_HOST_WORDS[0]) {
      n += (size_t)snprintf(out + n, sizeof out - n, "%s", C_HOST_WORDS[i][1]);
      if (n >= sizeof out) n = sizeof out - 1;
      p += k;
    } else {
      out[n++] = *p++;
    }
  }
  out[n] = 0;
  snprintf(err, errlen, "%s", out);
}

static int open_farm(farm **out, const farm_options *o);

int farm_open(farm **out, const farm_options *o) {
  int rc = open_farm(out, o);
  if (rc < 0 && o && o->errbuf && o->errlen) c_host_words(o->errbuf, o->errlen);
  return rc;
}

static int open_farm(farm **out, const farm_options *o) {
  farm_options defaults;
  char scratch[512], *err = scratch;
  size_t errlen = sizeof scratch;
  farm_host *hosts = NULL;
  unsigned char key[FARM_KEYLEN];
  int rc = FARM_EINVAL;
  farm *f = NULL;
  if (!o) { farm_options_init(&defaults); o = &defaults; }
  if (o->errbuf && o->errlen) { err = o->errbuf; errlen = o->errlen; }
  err[0] = 0;
  if (!out) { snprintf(err, errlen, "farm_open: out is NULL"); return FARM_EINVAL; }
  *out = NULL;
  if (o->workers < 0 || o->workers > 256) {
    snprintf(err, errlen, "workers must be from 0 (one per CPU) to 256 (got %d)", o->workers);
    return FARM_EINVAL;
  }
  if (o->heartbeat < 0 || o->heartbeat != o->heartbeat) {
    snprintf(err, errlen, "heartbeat must be a number of seconds, 0 for the default");
    return FARM_EINVAL;
  }
  if (o->max_message && o->max_message < 65536) {
    snprintf(err, errlen, "max_message must be at least 65536 bytes (or 0 for the default)");
    return FARM_EINVAL;
  }
  farm_engine_opts eo;
  memset(&eo, 0, sizeof eo);
  eo.workers = o->workers;
  eo.no_local = o->no_local != 0;
  eo.echo = o->echo != 0;
  eo.maxmsg = o->max_message;
  eo.accept_new_hosts = o->accept_new_hosts != 0;
  eo.remote_farm = o->remote_farm;
  eo.heartbeat = o->heartbeat;
  eo.quiet = 0;
  int nh = option_hosts(o, &hosts, err, errlen);
  if (nh < 0) return FARM_EHOSTS;
  eo.hosts = hosts;
  eo.nhosts = nh;
  const char *keyfile = o->key_file && *o->key_file ? o->key_file : getenv("FARM_KEY_FILE");
  int standing = 0;
  for (int i = 0; i < nh; i++) standing |= hosts[i].kind == FARM_HOST_NODE;
  if (standing && keyfile && *keyfile) {
    if ((rc = farm__key_load(keyfile, key, err, errlen)) < 0) goto fail;
    eo.key = key;
  }
  char exe[4096];
  eo.exe = o->exe && *o->exe ? o->exe : installed_exe(exe, sizeof exe);

  rc = FARM_ENOMEM;
  if (!(f = calloc(1, sizeof *f))) { snprintf(err, errlen, "out of memory"); goto fail; }
  pthread_mutex_init(&f->mu, NULL);
  pthread_cond_init(&f->idle, NULL);
  f->refs = 1;
  farm__buf_init(&f->enc);
  if (keyfile && *keyfile && !(f->key_file = strdup(keyfile))) { snprintf(err, errlen, "out of memory"); goto fail; }
  if ((rc = open_state(f, err, errlen)) < 0) goto fail;
  if ((rc = farm__engine_open(&f->e, &eo, err, errlen)) < 0) {
    if (!err[0]) snprintf(err, errlen, "%s", farm_strerror(rc));
    goto fail;
  }
  sodium_memzero(key, sizeof key);
  free(hosts);
  *out = f;
  return FARM_OK;
fail:
  sodium_memzero(key, sizeof key);
  free(hosts);
  if (f) farm_unref(f);
  return rc;
}

void farm_close(farm *f) {
  if (!f) return;
  pthread_mutex_lock(&f->mu);
  farm_engine *e = f->e;
  f->closing = 1;                  /* no submit from here on */
  pthread_mutex_unlock(&f->mu);
  if (e) {
    farm__engine_close(e);         /* unfinished jobs fail; waiters wake */
    pthread_mutex_lock(&f->mu);
    while (f->inside > 0) pthread_cond_wait(&f->idle, &f->mu);
    f->e = NULL;
    pthread_mutex_unlock(&f->mu);
    farm__engine_free(e);
  }
  farm_unref(f);
}

int farm_workers(farm *f) {
  if (!f) return FARM_EINVAL;
  farm_engine *e = enter(f);
  if (!e) return FARM_ECLOSED;
  int n = farm__engine_workers(e);
  leave(f);
  return n;
}

int farm_set_workers(farm *f, int n) {
  if (!f) return FARM_EINVAL;
  farm_engine *e = enter(f);
  if (!e) return FARM_ECLOSED;
  char why[300];
  int rc = farm__engine_set_workers(e, n, why, sizeof why);
  leave(f);
  if (rc < 0) {
    pthread_mutex_lock(&f->mu);
    set_err(f, "farm_set_workers: %s", why[0] ? why : farm_strerror(rc));
    pthread_mutex_unlock(&f->mu);
  }
  return rc < 0 ? rc : FARM_OK;
}

int farm_add_nodes(farm *f, const char *const *lines, int n) {
  if (!f) return FARM_EINVAL;
  char why[600] = "";
  int rc = FARM_OK, nh = 0, standing = 0;
  farm_host *hs = NULL;
  if (n < 0 || n > 4096 || (n > 0 && !lines)) {
    snprintf(why, sizeof why, "give from 0 to 4096 hostfile lines (got %d%s)", n, n > 0 && !lines ? ", and no array" : "");
    rc = FARM_EINVAL;
  } else if (!(hs = calloc((size_t)(n > 0 ? n : 1), sizeof *hs))) {
    snprintf(why, sizeof why, "out of memory");
    rc = FARM_ENOMEM;
  }
  for (int i = 0; rc == FARM_OK && i < n; i++) {
    char origin[48];
    snprintf(origin, sizeof origin, "line %d", i + 1);
    int k = lines[i] ? farm__hosts_line(lines[i], origin, &hs[nh], why, sizeof why) : -1;
    if (!lines[i]) snprintf(why, sizeof why, "line %d is NULL; give hostfile lines, as 'node://host:port [workers]'", i + 1);
    if (k < 0) rc = FARM_EHOSTS;
    else if (k == 1) standing |= hs[nh++].kind == FARM_HOST_NODE;
  }
  farm_engine *e = rc == FARM_OK ? enter(f) : NULL;
  if (rc == FARM_OK && !e) { snprintf(why, sizeof why, "the farm is closed"); rc = FARM_ECLOSED; }
  if (e) {
    if (standing && !farm__engine_has_key(e)) {
      const char *kf = f->key_file ? f->key_file : getenv("FARM_KEY_FILE");
      unsigned char key[FARM_KEYLEN];
      if (kf && *kf) {
        if ((rc = farm__key_load(kf, key, why, sizeof why)) == 0) farm__engine_set_key(e, key);
        sodium_memzero(key, sizeof key);
      }
    }
    if (rc == FARM_OK) rc = farm__engine_add_hosts(e, hs, nh, why, sizeof why);
    leave(f);
  }
  free(hs);
  if (rc < 0) {
    pthread_mutex_lock(&f->mu);
    set_err(f, "farm_add_nodes: %s", why[0] ? why : farm_strerror(rc));
    pthread_mutex_unlock(&f->mu);
  }
  return rc < 0 ? rc : FARM_OK;
}

const char *farm_last_error(farm *f) { return f ? f->err : "farm_last_error: no farm"; }

/* ---- submitting -------------------------------------------------------------------- */

typedef struct submit_req {
  farm *f;
  const char *what;                /* the source text, or the kernel's name */
  int kernel;
  const farm_value *args;
  int nargs;
  farm_fn *fn;                     /* out */
} submit_req;

/* A kernel's qualified name: "pi_hits" -> "farm.kernels.pi_hits"; dotted names as they are. */
static void push_qualified(lua_State *L, const char *name) {
  size_t n = strlen(name);
  int ok = n > 0 && name[0] != '.' && name[n - 1] != '.' && !strstr(name, "..");
  for (size_t i = 0; ok && i < n; i++)
    ok = name[i] == '_' || name[i] == '.' || (name[i] >= '0' && name[i] <= '9') ||
         ((name[i] | 0x20) >= 'a' && (name[i] | 0x20) <= 'z');
  if (!ok)
    luaL_error(L, "farm_submit_kernel: '%s' is not a name (a kernel such as \"pi_hits\", "
               "or a qualified name such as \"math.max\")", name);
  if (strchr(name, '.')) lua_pushstring(L, name);
  else lua_pushfstring(L, "farm.kernels.%s", name);
}

/* Compile the source: an expression ("return " in front), else a chunk. Pushes
   the function it gives. */
static void compile_source(lua_State *L, const char *src) {
  size_t n = strlen(src);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addstring(&b, "return ");
  luaL_addlstring(&b, src, n);
  luaL_pushresult(&b);
  size_t ne;
  const char *expr = lua_tolstring(L, -1, &ne);
  const char *text = expr;
  size_t ntext = ne;
  if (luaL_loadbufferx(L, expr, ne, CHUNKNAME, "t") != LUA_OK) {
    /* not an expression: a chunk? Say what is wrong with the form it looks like. */
    const char *p = src;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    int looks_expr = strncmp(p, "function", 8) == 0 || *p == '(';
    if (luaL_loadbufferx(L, src, n, CHUNKNAME, "t") != LUA_OK) {
      if (looks_expr) lua_pop(L, 1); else lua_remove(L, -2);
      lua_error(L);
    }
    lua_remove(L, -2);             /* the expression's error */
    text = src;
    ntext = n;
  }
  /* ship.lua cuts the function's text from this: it must know it */
  int rc = farm_remember(L, CHUNKNAME, text, ntext);
  if (rc < 0) luaL_error(L, "farm_submit_source: %s", farm_strerror(rc));
  lua_call(L, 0, 1);
  lua_remove(L, -2);               /* the "return ..." text */
  if (!lua_isfunction(L, -1))
    luaL_error(L, "farm_submit_source: the source gives %s, not a function (give an "
               "expression such as \"function(x) return x end\", or a chunk that returns one)",
               luaL_typename(L, -1));
}

/* Push the package for r (from the cache, or made now). */
static void push_package(lua_State *L, submit_req *r) {
  farm *f = r->f;
  lua_rawgeti(L, LUA_REGISTRYINDEX, f->cache);
  int cache = lua_gettop(L);
  lua_pushstring(L, r->kernel ? "k" : "s");
  lua_pushstring(L, r->what);
  lua_concat(L, 2);
  int key = lua_gettop(L);
  lua_pushvalue(L, key);
  if (lua_rawget(L, cache) == LUA_TUSERDATA) {
    lua_replace(L, cache);
    lua_settop(L, cache);
    return;
  }
  lua_pop(L, 1);
  fn_ud *u = lua_newuserdatauv(L, sizeof *u, 1);   /* made first: a __gc frees what follows */
  u->fn = NULL;
  u->nseen = 0;
  luaL_setmetatable(L, FN_MT);
  int ud = lua_gettop(L);
  farm_fn *fn = calloc(1, sizeof *fn);
  if (!fn) luaL_error(L, "out of memory");
  fn->refs = 1;
  u->fn = fn;
  /* the block is encoded into a box whose __gc frees it if encoding raises */
  farm_buf *b = lua_newuserdatauv(L, sizeof *b, 0);
  farm__buf_init(b);
  luaL_setmetatable(L, BUF_MT);
  farm_encoder e;
  memset(&e, 0, sizeof e);
  e.root = "function";
  if (r->kernel) {
    /* A stand-in value named by the qualified name travels as MODREF: the
       worker looks the name up (ship.resolve) when the job runs. */
    lua_newtable(L);                                  /* the stand-in */
    int v = lua_gettop(L);
    lua_newtable(L);                                  /* names: stand-in -> name */
    e.names = lua_gettop(L);
    lua_pushvalue(L, v);
    push_qualified(L, r->what);
    lua_rawset(L, e.names);
    fn->fresh = 0;
    u->nseen = farm__codec_encode(L, b, v, 1, &e);
  } else {
    compile_source(L, r->what);
    int fnidx = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, f->helper);
    lua_getfield(L, -1, "is_constant");
    lua_pushvalue(L, fnidx);
    lua_call(L, 1, 1);
    fn->fresh = !lua_toboolean(L, -1);
    lua_pop(L, 2);
    if (fn->fresh) {
      lua_newtable(L);
      e.keep = lua_gettop(L);
      lua_pushvalue(L, e.keep);
      lua_setiuservalue(L, ud, 1);
    }
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_getfield(L, -1, "farm.ship");
    lua_getfield(L, -1, "describe");
    e.describe = lua_gettop(L);
    lua_getfield(L, -2, "names");
    lua_call(L, 0, 1);
    e.names = lua_gettop(L);
    lua_pushglobaltable(L);
    e.globals = lua_gettop(L);
    u->nseen = farm__codec_encode(L, b, fnidx, 1, &e);
  }
  if (!b->n) luaL_error(L, "out of memory");
  fn->p = farm__buf_steal(b, &fn->n);
  farm__fn_hash(fn);
  lua_pushvalue(L, key);
  lua_pushvalue(L, ud);
  lua_rawset(L, cache);
  lua_pushvalue(L, ud);
  lua_replace(L, cache);
  lua_settop(L, cache);
}

/* Push a C value as a Lua value; a table's text is read in an empty environment. */
static void push_value(lua_State *L, const farm_value *v, int i) {
  switch (v->type) {
  case FARM_TNIL: lua_pushnil(L); return;
  case FARM_TBOOLEAN: lua_pushboolean(L, v->b); return;
  case FARM_TINTEGER: lua_pushinteger(L, (lua_Integer)v->i); return;
  case FARM_TNUMBER: lua_pushnumber(L, (lua_Number)v->d); return;
  case FARM_TSTRING:
    if (!v->s && v->len) luaL_error(L, "argument %d: a string with no bytes (s is NULL)", i);
    lua_pushlstring(L, v->s ? v->s : "", v->len);
    return;
  case FARM_TTABLE: {
    if (!v->s) luaL_error(L, "argument %d: a table with no text (s is NULL)", i);
    char name[48];
    snprintf(name, sizeof name, "=table argument %d", i);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "return ");
    luaL_addlstring(&b, v->s, v->len);
    luaL_pushresult(&b);
    size_t n;
    const char *text = lua_tolstring(L, -1, &n);
    if (luaL_loadbufferx(L, text, n, name, "t") != LUA_OK) lua_error(L);
    lua_newtable(L);               /* its _ENV: no globals */
    lua_setupvalue(L, -2, 1);
    lua_call(L, 0, 1);
    lua_remove(L, -2);
    if (!lua_istable(L, -1))
      luaL_error(L, "argument %d: the text gives %s, not a table (give a table constructor "
                 "such as \"{1, 2, x = 3}\")", i, luaL_typename(L, -1));
    return;
  }
  default:
    luaL_error(L, "argument %d: unknown type %d (FARM_TNIL ... FARM_TTABLE)", i, v->type);
  }
}

/* p_submit(req): the package and the argument block (into f->enc). */
static int p_submit(lua_State *L) {
  submit_req *r = lua_touserdata(L, 1);
  push_package(L, r);              /* 2 */
  fn_ud *u = lua_touserdata(L, 2);
  luaL_checkstack(L, r->nargs + LUA_MINSTACK, "too many arguments");
  int first = lua_gettop(L) + 1;
  for (int i = 0; i < r->nargs; i++) push_value(L, &r->args[i], i + 1);
  farm_encoder e;
  memset(&e, 0, sizeof e);
  e.root = "argument";
  if (u->fn->fresh && lua_getiuservalue(L, 2, 1) == LUA_TTABLE) {
    e.prior = lua_gettop(L);       /* the argument block continues the function's */
    e.nprior = u->nseen;
  }
  r->f->enc.n = 0;
  farm__codec_encode(L, &r->f->enc, first, r->nargs, &e);
  r->fn = u->fn;
  return 0;
}

static int submit(farm *f, const char *what, int kernel, const farm_value *args, int nargs,
                  farm_future **out) {
  if (out) *out = NULL;
  if (!f) return FARM_EINVAL;
  pthread_mutex_lock(&f->mu);
  int rc = FARM_EINVAL;
  farm_future *fu = NULL;
  farm_job *j = NULL;
  if (!out || !what || nargs < 0 || (nargs > 0 && !args)) {
    set_err(f, "%s: %s", kernel ? "farm_submit_kernel" : "farm_submit_source",
            !out ? "out is NULL" : !what ? (kernel ? "no name" : "no source")
                 : "a bad argument list (nargs < 0, or args NULL)");
    goto done;
  }
  if (f->closing || !f->e) { rc = FARM_ECLOSED; set_err(f, "the farm was closed"); goto done; }
  submit_req r = { f, what, kernel, args, nargs, NULL };
  lua_State *L = f->L;
  int top = lua_gettop(L);
  lua_pushcfunction(L, p_submit);
  lua_pushlightuserdata(L, &r);
  int st = lua_pcall(L, 1, 0, 0);
  if (st != LUA_OK) { rc = lua_failure(f, st); lua_settop(L, top); goto done; }
  lua_settop(L, top);
  size_t max = farm__engine_maxmsg(f->e);
  if (f->enc.n + r.fn->n + (4u << 10) > max) {
    char have[32], most[32];
    set_err(f, "the function and its arguments take %s encoded; a link carries at most %s "
            "per job (farm_options.max_message raises it)",
            farm__size_text(f->enc.n + r.fn->n, have, sizeof have),
            farm__size_text(max, most, sizeof most));
    rc = FARM_ETOOBIG;
    goto done;
  }
  rc = FARM_ENOMEM;
  set_err(f, "out of memory");
  if (!(fu = calloc(1, sizeof *fu)) || !(j = farm__job_new_args(f->enc.p, f->enc.n))) goto done;
  j->id = farm__engine_nextid(f->e);
  j->mode = FARM_MODE_CALL;
  j->refs = 1;                     /* the future's; the engine takes its own */
  j->fn = r.fn;
  __atomic_add_fetch(&r.fn->refs, 1, __ATOMIC_RELAXED);
  fu->f = f;
  fu->j = j;
  fu->nvals = -1;
  farm_ref(f);
  farm__engine_submit(f->e, j);
  *out = fu;
  fu = NULL;
  j = NULL;
  rc = FARM_OK;
  f->err[0] = 0;
done:
  if (f->enc.cap > (1u << 20)) farm__buf_free(&f->enc);   /* keep no huge scratch */
  pthread_mutex_unlock(&f->mu);
  if (j) { j->refs = 1; farm__job_unref(j); }   /* (it holds no fn yet) */
  free(fu);
  return rc;
}

int farm_submit_source(farm *f, const char *lua_source, const farm_value *args, int nargs,
                       farm_future **out) {
  return submit(f, lua_source, 0, args, nargs, out);
}

int farm_submit_kernel(farm *f, const char *name, const farm_value *args, int nargs,
                       farm_future **out) {
  return submit(f, name, 1, args, nargs, out);
}

/* ---- waiting ----------------------------------------------------------------------- */

int farm_wait(farm_future *fu, double timeout) {
  if (!fu) return FARM_EINVAL;
  farm *f = fu->f;
  double until = timeout < 0 || timeout != timeout ? HUGE_VAL : farm__now() + timeout;
  for (;;) {
    if (farm__job_over(fu->j)) return FARM_OK;
    farm_engine *e = enter(f);
    if (!e) return farm__job_over(fu->j) ? FARM_OK : FARM_ECLOSED;
    uint64_t gen = farm__engine_gen(e);
    double left = until - farm__now();
    if (farm__job_over(fu->j) || left <= 0) {
      leave(f);
      return farm__job_over(fu->j) ? FARM_OK : FARM_ETIMEDOUT;
    }
    farm__engine_wait(e, gen, left > 1e6 ? 1e6 : left);   /* (a signal: look again) */
    leave(f);
  }
}

int farm_wait_any(farm_future **fus, int n, double timeout, int *which) {
  if (which) *which = -1;
  if (!fus || n < 1) return FARM_EINVAL;
  for (int i = 0; i < n; i++) if (!fus[i]) return FARM_EINVAL;
  farm *one = fus[0]->f;
  for (int i = 1; i < n; i++) if (fus[i]->f != one) one = NULL;
  double until = timeout < 0 || timeout != timeout ? HUGE_VAL : farm__now() + timeout;
  for (;;) {
    /* the farm of the first future not over: its changes end the wait */
    farm *f = NULL;
    for (int i = 0; i < n && !f; i++) if (!farm__job_over(fus[i]->j)) f = fus[i]->f;
    farm_engine *e = f ? enter(f) : NULL;
    uint64_t gen = e ? farm__engine_gen(e) : 0;
    for (int i = 0; i < n; i++)
      if (farm__job_over(fus[i]->j)) {
        if (e) leave(f);
        if (which) *which = i;
        return FARM_OK;
      }
    double left = until - farm__now();
    if (left <= 0 || !e) {
      if (e) leave(f);
      if (!e && left > 0) return FARM_ECLOSED;   /* (a closed farm's jobs are all over) */
      return FARM_ETIMEDOUT;
    }
    double step = one ? left : (left < 0.02 ? left : 0.02);
    farm__engine_wait(e, gen, step > 1e6 ? 1e6 : step);
    leave(f);
  }
}

int farm_status(farm_future *fu) {
  if (!fu) return FARM_EINVAL;
  switch (farm__job_state(fu->j)) {
  case JOB_DONE: return FARM_DONE;
  case JOB_FAILED: return FARM_FAILED;
  case JOB_CANCELLED: return FARM_CANCELLED;
  case JOB_QUEUED: return FARM_PENDING;
  default: break;
  }
  farm_engine *e = enter(fu->f);
  if (!e) return farm_status(fu);  /* closed: it is over now */
  int running = strcmp(farm__engine_status(e, fu->j), "running") == 0;
  leave(fu->f);
  return running ? FARM_RUNNING : FARM_PENDING;
}

int farm_cancel(farm_future *fu) {
  if (!fu) return FARM_EINVAL;
  if (farm__job_over(fu->j)) return 0;
  farm_engine *e = enter(fu->f);
  if (!e) return 0;                /* closed: every job is over */
  int rc = farm__engine_cancel(e, fu->j, 1);
  leave(fu->f);
  return rc ? 1 : 0;
}

/* ---- results ----------------------------------------------------------------------- */

/* p_results(job): decode the results; pushes, for each, its value -- a
   table as its literal text -- and whether it was a table. */
static int p_results(lua_State *L) {
  farm *f = lua_touserdata(L, 1);
  farm_job *j = lua_touserdata(L, 2);
  lua_settop(L, 0);
  lua_rawgeti(L, LUA_REGISTRYINDEX, f->helper);          /* 1 */
  lua_getfield(L, 1, "resolve");                          /* 2: never a require */
  lua_getfield(L, 1, "literal");                          /* 3 */
  farm_decoder d;
  memset(&d, 0, sizeof d);
  d.resolve = 2;                   /* (env 0: globals a result brings stay its own) */
  d.untrusted = 1;                 /* a C host takes no functions: none runs while made */
  int n = farm__codec_decode(L, farm__jx(j)->res, farm__jx(j)->nres, &d);
  luaL_checkstack(L, n + LUA_MINSTACK, "too many results");
  for (int i = 0; i < n; i++) {
    int idx = 4 + 2 * i;
    if (lua_istable(L, idx)) {
      lua_pushvalue(L, 3);
      lua_pushvalue(L, idx);
      lua_pushfstring(L, "result %d", i + 1);
      lua_call(L, 2, 1);
      lua_replace(L, idx);
      lua_pushboolean(L, 1);
    } else {
      int t = lua_type(L, idx);
      if (t != LUA_TNIL && t != LUA_TBOOLEAN && t != LUA_TNUMBER && t != LUA_TSTRING)
        luaL_error(L, "result %d is a %s: a C host reads nil, booleans, numbers, strings and "
                   "tables of them", i + 1, luaL_typename(L, idx));
      lua_pushboolean(L, 0);
    }
    lua_insert(L, idx + 1);
  }
  return 2 * n;
}

/* Read a done job's results into fu->vals, once. Under f->mu. */
static int read_results(farm_future *fu) {
  farm *f = fu->f;
  if (fu->nvals >= 0 || fu->readrc < 0) return fu->readrc;
  lua_State *L = f->L;
  int top = lua_gettop(L);
  lua_pushcfunction(L, p_results);
  lua_pushlightuserdata(L, f);
  lua_pushlightuserdata(L, fu->j);
  int st = lua_pcall(L, 2, LUA_MULTRET, 0);
  if (st != LUA_OK) {
    fu->readrc = lua_failure(f, st);
    fu->why = cstr(f->err, strlen(f->err));
    lua_settop(L, top);
    return fu->readrc;
  }
  int n = (lua_gettop(L) - top) / 2;
  fu->vals = calloc((size_t)n + 1, sizeof *fu->vals);
  if (!fu->vals) { lua_settop(L, top); set_err(f, "out of memory"); return FARM_ENOMEM; }
  for (int i = 0; i < n; i++) {
    int idx = top + 1 + 2 * i;
    farm_value *v = &fu->vals[i];
    *v = farm_nil();
    switch (lua_type(L, idx)) {
    case LUA_TBOOLEAN: *v = farm_boolean(lua_toboolean(L, idx)); break;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) *v = farm_integer((long long)lua_tointeger(L, idx));
      else *v = farm_number((double)lua_tonumber(L, idx));
      break;
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);
      char *copy = cstr(s, len);
      if (!copy) {
        for (int k = 0; k < i; k++) free((char *)fu->vals[k].s);
        free(fu->vals);
        fu->vals = NULL;
        lua_settop(L, top);
        set_err(f, "out of memory");
        return FARM_ENOMEM;
      }
      *v = farm_lstring(copy, len);
      if (lua_toboolean(L, idx + 1)) v->type = FARM_TTABLE;
      break;
    }
    default: break;
    }
  }
  lua_settop(L, top);
  fu->nvals = n;
  return FARM_OK;
}

static int results_ready(farm_future *fu) {
  farm *f = fu->f;
  int st = farm__job_state(fu->j);
  if (st != JOB_DONE) {
    set_err(f, "the job %s: it has no results%s",
            st == JOB_FAILED ? "failed" : st == JOB_CANCELLED ? "was cancelled" : "has not finished",
            st == JOB_FAILED ? " (farm_error_message says why)" : st < JOB_DONE ? " yet (farm_wait)" : "");
    return FARM_EINVAL;
  }
  int rc = read_results(fu);
  if (rc < 0 && fu->why) set_err(f, "%s", fu->why);
  return rc;
}

int farm_result_count(farm_future *fu) {
  if (!fu) return FARM_EINVAL;
  pthread_mutex_lock(&fu->f->mu);
  int rc = results_ready(fu);
  pthread_mutex_unlock(&fu->f->mu);
  return rc < 0 ? rc : fu->nvals;
}

int farm_result(farm_future *fu, int i, farm_value *out) {
  if (out) *out = farm_nil();
  if (!fu || !out) return FARM_EINVAL;
  pthread_mutex_lock(&fu->f->mu);
  int rc = results_ready(fu);
  if (rc == FARM_OK && (i < 0 || i >= fu->nvals)) {
    set_err(fu->f, "farm_result: result %d of %d (they count from 0)", i, fu->nvals);
    rc = FARM_EINVAL;
  }
  if (rc == FARM_OK) *out = fu->vals[i];
  pthread_mutex_unlock(&fu->f->mu);
  return rc;
}

const char *farm_error_message(farm_future *fu) {
  if (!fu) return NULL;
  int st = farm__job_state(fu->j);
  if (st == JOB_CANCELLED) return "the job was cancelled";
  if (st != JOB_FAILED) return NULL;
  farm_jobx *x = farm__jx(fu->j);  /* (over: it has its block) */
  if (!fu->msg) fu->msg = cstr(x->res ? x->res : "", x->res ? x->nres : 0);
  return fu->msg ? fu->msg : "(out of memory)";
}

const char *farm_error_traceback(farm_future *fu) {
  if (!fu) return NULL;
  int st = farm__job_state(fu->j);
  if (st == JOB_CANCELLED) return "";
  if (st != JOB_FAILED) return NULL;
  farm_jobx *x = farm__jx(fu->j);  /* (over: it has its block) */
  if (!fu->tb) fu->tb = cstr(x->tb ? x->tb : "", x->tb ? x->ntb : 0);
  return fu->tb ? fu->tb : "";
}

const char *farm_output(farm_future *fu, size_t *len) {
  if (len) *len = 0;
  if (!fu || !farm__job_over(fu->j)) return "";
  if (!fu->out) {
    farm_jobx *x = farm__jx(fu->j);  /* (over: it has its block) */
    fu->out = cstr(x->out.p ? x->out.p : "", x->out.n);
    fu->nout = fu->out ? x->out.n : 0;
  }
  if (len) *len = fu->nout;
  return fu->out ? fu->out : "";
}

void farm_future_free(farm_future *fu) {
  if (!fu) return;
  if (fu->vals)
    for (int i = 0; i < fu->nvals; i++) free((char *)fu->vals[i].s);
  free(fu->vals);
  free(fu->why);
  free(fu->msg);
  free(fu->tb);
  free(fu->out);
  farm__job_unref(fu->j);
  farm_unref(fu->f);
  free(fu);
}
