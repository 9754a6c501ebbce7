/*
 * cliopts.c -- the options `farm run` (cli.c) and `farm repl` (repl.c) share:
 * the pool's size, its nodes (hostfile or host list), the key, and what jobs'
 * output and files do. Read from the command line, checked before anything
 * starts (a hostfile or key that does not read is the command line's mistake),
 * and handed to farm.config. Part of the executable only; runs on its main
 * thread, before the pool starts.
 *
 * Threads: the executable's main thread.
 */
#include <stdio.h>
#include <stdlib.h>
#include <net/if.h>
#include <string.h>
#include <sys/stat.h>
#include <lua.h>
#include <sodium.h>
#include "farm.h"
#include "cliopts.h"
#include "announce.h"
#include "hosts.h"
#include "join.h"
#include "session.h"
#include "status.h"

int farm__cli_fail(const char *fmt, const char *a) {
  fputs("farm: ", stderr);
  fprintf(stderr, fmt, a);
  fputs("\n", stderr);
  return 2;
}

#define fail farm__cli_fail

static void set_str(lua_State *L, const char *k, const char *v) {
  if (v) { lua_pushstring(L, v); lua_setfield(L, -2, k); }
}

int farm__pool_option(int argc, char **argv, int *i, farm_pool_opts *o) {
  const char *a = argv[*i];
  if (strcmp(a, "-n") == 0 || strcmp(a, "--workers") == 0) {
    char *end;
    if (*i + 1 >= argc) return fail("%s needs a number of workers, e.g. -n 4", a);
    const char *v = argv[++*i];
    o->nworkers = strtol(v, &end, 10);
    if (*end || !*v || o->nworkers < 0 || o->nworkers > 256)
      return fail("-n takes a number of workers from 0 (only nodes) to 256, not '%s'", v);
    return 1;
  }
  if (strcmp(a, "--no-local") == 0) { o->nworkers = 0; return 1; }
  if (strcmp(a, "--quiet-jobs") == 0) { o->echo = 0; return 1; }
  if (strcmp(a, "--accept-new-hosts") == 0) { o->accept_new = 1; return 1; }
  if (strcmp(a, "--status-token") == 0) { o->status_token = 1; return 1; }
  if (strcmp(a, "--status") == 0) {
    if (*i + 1 >= argc || !*argv[*i + 1]) return fail("%s needs an address, e.g. --status 127.0.0.1:8642", a);
    o->status = argv[++*i];
    return 1;
  }
  if (strcmp(a, "--nodes") && strcmp(a, "--hosts") && strcmp(a, "--key-file") &&
      strcmp(a, "--remote-farm") && strcmp(a, "--heartbeat") && strcmp(a, "--dest") &&
      strcmp(a, "--max-file") && strcmp(a, "--slurm-wait") && strcmp(a, "--listen") && strcmp(a, "--discover"))
    return 0;
  if (*i + 1 >= argc || !*argv[*i + 1])
    return fail(!strcmp(a, "--nodes") ? "%s needs a hostfile, e.g. --nodes hosts"
                : !strcmp(a, "--hosts") ? "%s needs a list of hosts, e.g. --hosts h1,h2:2222,node://h3:7070"
                : !strcmp(a, "--heartbeat") ? "%s needs a number of seconds, e.g. --heartbeat 1"
                : !strcmp(a, "--slurm-wait") ? "%s needs a number of seconds, e.g. --slurm-wait 300"
                : !strcmp(a, "--dest") ? "%s needs a directory, e.g. --dest results"
                : !strcmp(a, "--max-file") ? "%s needs a size, e.g. --max-file 200M"
                : !strcmp(a, "--listen") ? "%s needs an address for nodes to join at, e.g. --listen 127.0.0.1:7078"
                : !strcmp(a, "--discover") ? "%s needs a network interface, e.g. --discover eth0"
                : "%s needs a path", a);
  const char *v = argv[++*i];
  if (!strcmp(a, "--nodes")) { if (o->hosts) return fail("%s", "give --nodes or --hosts, not both"); o->nodes = v; }
  else if (!strcmp(a, "--hosts")) { if (o->nodes) return fail("%s", "give --nodes or --hosts, not both"); o->hosts = v; }
  else if (!strcmp(a, "--key-file")) o->key_file = v;
  else if (!strcmp(a, "--remote-farm")) o->remote_farm = v;
  else if (!strcmp(a, "--listen") || !strcmp(a, "--discover")) {
    char url[300], iface[IFNAMSIZ], err[400];
    unsigned port;
    int bad = !strcmp(a, "--listen") ? farm__join_url(a, v, url, sizeof url, err, sizeof err)
                                     : farm__iface_parse(a, v, iface, &port, err, sizeof err);
    if (bad) return fail("%s", err);
    if (!strcmp(a, "--listen")) o->listen = v; else o->discover = v;
  }
  else if (!strcmp(a, "--dest")) {
    struct stat st;
    if (stat(v, &st) < 0 || !S_ISDIR(st.st_mode))
      return fail("--dest %s: no such directory (make it first)", v);
    o->dest = v;
  } else if (!strcmp(a, "--max-file")) {
    char *end;
    double x = strtod(v, &end);
    double mul = *end == 'k' || *end == 'K' ? 1024.0 : *end == 'M' ? 1048576.0
               : *end == 'G' ? 1073741824.0 : 1.0;
    if (mul > 1) end++;
    if (*end || end == v || !(x >= 1) || x * mul > 192.0 * 1048576)
      return fail("--max-file takes a size such as 1000000, 500k or 100M (at most 192M), not '%s'", v);
    o->max_file = (long long)(x * mul);
  } else if (!strcmp(a, "--slurm-wait")) {
    char *end;
    o->slurm_wait = strtod(v, &end);
    if (*end || !(o->slurm_wait >= 1 && o->slurm_wait <= 86400))
      return fail("--slurm-wait takes seconds from 1 to 86400, not '%s'", v);
  } else {
    char *end;
    o->heartbeat = strtod(v, &end);
    if (*end || !(o->heartbeat >= 0.05 && o->heartbeat <= 3600))
      return fail("--heartbeat takes seconds from 0.05 to 3600, not '%s'", v);
  }
  return 1;
}

int farm__pool_check(const farm_pool_opts *o) {
  if (o->nworkers == 0 && !o->nodes && !o->hosts && (o->listen || o->discover))
    return fail("%s", "-n 0 with nodes that join only: a run starts with a worker or a node; keep a "
                "local worker (-n 1) or name a node with --hosts as well");
  if (o->nworkers == 0 && !o->nodes && !o->hosts)
    return fail("%s", "-n 0 runs every job on nodes: give them with --nodes HOSTFILE or --hosts LIST");
  const char *keyfile = o->key_file && *o->key_file ? o->key_file : getenv("FARM_KEY_FILE");
  char err[512];
  if (o->listen || o->discover) {
    /* nodes that join sign their address with the key: no key, nothing to check */
    unsigned char key[FARM_KEYLEN];
    if (!keyfile || !*keyfile)
      return fail("%s needs --key-file F (or FARM_KEY_FILE): the key the nodes that join sign with "
                  "and prove they know", o->listen ? "--listen" : "--discover");
    int rc = farm__key_load(keyfile, key, err, sizeof err);
    sodium_memzero(key, sizeof key);
    if (rc < 0) return fail("%s", err);
  }
  if (o->status_token && !o->status) return fail("%s", "--status-token goes with --status ADDR");
  if (o->status && farm__status_open(NULL, o->status, o->key_file, o->status_token, NULL, NULL, err, sizeof err) < 0)
    return fail("%s", err);
  if (!o->nodes && !o->hosts) return 0;
  /* the hostfile (or allocation) and the key are read now, before the script
     runs: a mistake there is the command line's, not something the script's
     first submit should find after its own work */
  farm_host *hl = NULL;
  int n = o->nodes ? farm__hosts_named(o->nodes, &hl, err, sizeof err)
                   : farm__hosts_list(o->hosts, &hl, err, sizeof err);
  if (n < 0) return fail("%s", err);
  int standing = 0;
  for (int i = 0; i < n; i++) standing |= hl[i].kind == FARM_HOST_NODE;
  free(hl);
  if (standing && keyfile && *keyfile) {
    unsigned char key[FARM_KEYLEN];
    int rc = farm__key_load(keyfile, key, err, sizeof err);
    sodium_memzero(key, sizeof key);
    if (rc < 0) return fail("%s", err);
  }
  return 0;
}

void farm__pool_config(lua_State *L, const farm_pool_opts *o) {
  lua_getfield(L, -1, "config");
  lua_createtable(L, 0, 8);
  if (o->nworkers > 0) { lua_pushinteger(L, o->nworkers); lua_setfield(L, -2, "workers"); }
  if (o->nworkers == 0) { lua_pushboolean(L, 0); lua_setfield(L, -2, "local_workers"); }
  lua_pushboolean(L, o->echo);
  lua_setfield(L, -2, "echo");
  lua_pushboolean(L, o->progress);
  lua_setfield(L, -2, "progress");
  set_str(L, "nodes", o->nodes);
  set_str(L, "hosts", o->hosts);
  set_str(L, "key_file", o->key_file);
  set_str(L, "remote_farm", o->remote_farm);
  if (o->accept_new) { lua_pushboolean(L, 1); lua_setfield(L, -2, "accept_new_hosts"); }
  if (o->heartbeat > 0) { lua_pushnumber(L, o->heartbeat); lua_setfield(L, -2, "heartbeat"); }
  if (o->slurm_wait > 0) { lua_pushnumber(L, o->slurm_wait); lua_setfield(L, -2, "slurm_wait"); }
  set_str(L, "dest", o->dest);
  if (o->max_file > 0) { lua_pushinteger(L, o->max_file); lua_setfield(L, -2, "max_file"); }
  set_str(L, "status", o->status);
  if (o->status_token) { lua_pushboolean(L, 1); lua_setfield(L, -2, "status_token"); }
  set_str(L, "listen", o->listen);
  set_str(L, "discover", o->discover);
  lua_call(L, 1, 0);
}
