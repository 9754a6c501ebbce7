/* cliopts.h -- the options `farm run` (cli.c) and `farm repl` (repl.c) share:
   the pool and its nodes. Part of the executable only, not of the library. */
#ifndef FARM_CLIOPTS_H
#define FARM_CLIOPTS_H
struct lua_State;
typedef struct farm_pool_opts {
  long nworkers;                   /* -1: not given; 0: nodes only */
  int echo, progress, accept_new;
  const char *nodes, *hosts, *key_file, *remote_farm;
  double heartbeat;
  const char *dest;                /* --dest: where farm.send_file's files go */
  long long max_file;              /* --max-file: the largest file that travels; 0: default */
  double slurm_wait;               /* --slurm-wait: seconds a Slurm step may wait; 0: default */
  const char *status;              /* --status ADDR: the live status page (status.h) */
  int status_token;                /* --status-token: the page needs its token on loopback too */
  const char *listen;              /* --listen: where nodes join (join.h) */
  const char *discover;            /* --discover: the interface nodes announce themselves on */
} farm_pool_opts;
#define FARM_POOL_OPTS_INIT { -1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 }
/* argv[*i] is one of those options: take it (and its value; *i moves on) and
   return 1; 0 when it is not one of them; 2 after saying in one line what is
   wrong with it (the command's exit status). */
int farm__pool_option(int argc, char **argv, int *i, farm_pool_opts *o);
/* What the options ask once all are read: 0, or 2 after one line. */
int farm__pool_check(const farm_pool_opts *o);
/* Configure the farm module on top of L's stack as the options say. */
void farm__pool_config(struct lua_State *L, const farm_pool_opts *o);
/* One line "farm: <fmt with a>" on stderr; returns 2 (a command line's mistake). */
int farm__cli_fail(const char *fmt, const char *a);
#endif
