/*
 * engine.h -- the client's engine: the job table, the scheduler and the peers
 * that run jobs, driven by a loop on a thread of its own (engine.c).
 *
 *   caller's thread                        loop thread (no Lua)
 *   farm__engine_submit ──▶ incoming ──▶ queue ──▶ peers (credit, batches, take-back)
 *   farm__engine_wait   ◀── done_fd ◀── results, deaths, timeouts, cancels
 *
 * The caller hands over jobs without a lock (a lock-free list); everything else
 * the two threads share is under the engine's mutex, except a job's state, which
 * the loop publishes with a release store after filling the job's results. Each
 * field of the engine (engine.c) and of a peer (peer.h) says which thread owns it
 * or that the lock guards it; farm__engine_assert_locked checks the lock in debug
 * builds. The loop never calls Lua. Peers are reached only through peer.h.
 */
#ifndef FARM_ENGINE_H
#define FARM_ENGINE_H
#include <assert.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include "buf.h"
#include "job.h"
#include "proto.h"

typedef struct farm_peer farm_peer;

typedef struct farm_engine_opts {
  int workers;                     /* local workers; 0: one per online CPU */
  const char *exe;                 /* the farm executable for workers; NULL: found */
  int echo;                        /* echo what jobs print to stdout */
  int progress;                    /* keep a progress line on stderr */
  size_t maxmsg;                   /* largest message on a link; 0: default */
  int no_local;                    /* no local workers: every job runs on the nodes */
  const struct farm_host *hosts;   /* nodes to start over SSH or connect to (hosts.h) */
  int nhosts;
  const unsigned char *key;        /* the standing nodes' farm key (32 bytes); NULL: none */
  int accept_new_hosts;            /* SSH: add unknown host keys to known_hosts */
  const char *remote_farm;         /* SSH: the farm executable there; NULL: "farm" */
  double heartbeat;                /* seconds between heartbeats on node links; 0: 1 s */
  double slurm_wait;               /* --nodes slurm: seconds the step may wait to start; 0: 60 */
  int quiet;                       /* no "farm: node ... lost" lines on stderr */
  int restart_workers;             /* a fresh worker process for every job (ppserver -r) */
  const char *dest;                /* where farm.send_file's files go; NULL: the run's own
                                      farm-out/YYYYmmdd-HHMMSS-PID below the current
                                      directory, made at the first file */
  size_t max_file;                 /* the largest file that travels; 0: FARM_MAX_FILE_DEFAULT */
  int keep_files;                  /* a node's: sent files are kept for farm__engine_take_files */
  int report_starts;               /* a node's: jobs' ext_ids as they begin, for
                                      farm__engine_take_started */
  const char *journal;             /* farm run --journal: results kept there, and taken from
                                      it at submit (journal.h); NULL: none */
  const unsigned char *journal_id; /* ...and what names the run (FARM_JOURNAL_IDLEN bytes) */
} farm_engine_opts;

typedef struct farm_engine farm_engine;

/* Open an engine with its local workers and start its loop thread; waits until
   the workers are connected. On failure returns a negative code and err says why. */
int  farm__engine_open(farm_engine **out, const farm_engine_opts *o, char *err, size_t errlen);
/* Stop the loop and every peer; jobs not finished fail ("the farm was closed").
   Safe to call twice. farm__engine_free after it frees the engine. */
void farm__engine_close(farm_engine *e);
void farm__engine_free(farm_engine *e);

/* Hand a job (state QUEUED, refs counting the engine's) to the loop. */
void farm__engine_submit(farm_engine *e, farm_job *j);
uint64_t farm__engine_nextid(farm_engine *e);
size_t farm__engine_maxmsg(farm_engine *e);

/* Block until a job finishes (any), the timeout passes (seconds; <0: forever)
   or a signal arrives. Returns 1 when something finished or changed, 0 on
   timeout, -1 on a signal. gen: the caller's last seen farm__engine_gen. */
int  farm__engine_wait(farm_engine *e, uint64_t gen, double timeout);
/* The same, also returning 2 when one of the caller's own fds polls ready
   (their revents are set). */
int  farm__engine_wait_fds(farm_engine *e, uint64_t gen, double timeout,
                           struct pollfd *extra, int nextra);
uint64_t farm__engine_gen(farm_engine *e);
/* Jobs still queued or running. */
size_t farm__engine_outstanding(farm_engine *e);

/* Cancel: a job not started is cancelled (1); a running one only with force
   (its worker is stopped and replaced; 1); else 0. May wait for the peer's answer. */
int  farm__engine_cancel(farm_engine *e, farm_job *j, int force);
/* Cancel every job not finished (force: running ones too); returns how many. */
int  farm__engine_cancel_all(farm_engine *e, int force);
/* Where a job that is out at a peer is now (1), and when it was first seen
   running there (0: not yet); 0 when it is not at a peer. */
int  farm__engine_where(farm_engine *e, farm_job *j, char *out, size_t n, double *since);
/* "pending", "running", "done", "failed", "cancelled" */
const char *farm__engine_status(farm_engine *e, farm_job *j);
/* The next finished job that asked to be told (a callback), with a reference
   the caller drops; NULL when none. */
farm_job *farm__engine_finished(farm_engine *e);

typedef struct farm_peer_stats {
  char name[64];
  char kind[8];                    /* "local", "node" */
  const char *state;               /* "up", "starting", "lost" */
  long pid;
  int capacity;
  uint64_t jobs;
  double busy;
  uint64_t bytes_sent, bytes_received;   /* on its link, whole messages */
  int clients;                     /* a node: the clients it serves now (0: unknown) */
} farm_peer_stats;
typedef struct farm_engine_stats {
  int npeers;
  farm_peer_stats *peers;          /* npeers entries, malloc'd: the caller frees */
  size_t queued, outstanding;
  uint64_t submitted, finished;
  uint64_t fn_sent, bytes_sent, batches_sent, taken_back;
  double elapsed;
} farm_engine_stats;
void farm__engine_stats(farm_engine *e, farm_engine_stats *s);
/* The status page's figures (status.h): totals, one row for the local pool and
   one per node, the last failures; s zeroed by the caller, rows malloc'd
   (farm__status_snap_free). Takes the lock briefly; any thread. */
struct farm_status_snap;
void farm__engine_status_snap(farm_engine *e, struct farm_status_snap *s);
int  farm__engine_workers(farm_engine *e);
int  farm__engine_pids(farm_engine *e, long *pids, int max);
/* Resize the LOCAL pool to n workers (1..256) while it runs (any thread but
   the loop's; farm.set_workers). Growing starts new local workers (or starts
   again retired ones that are gone) and waits until they said HELLO; shrinking
   retires the surplus (farm__peer_retire: those not started or idle first),
   letting their running jobs finish, and does not wait. Nodes are untouched.
   0, or a negative code with err saying why (a new worker would not start). */
int  farm__engine_set_workers(farm_engine *e, int n, char *err, size_t errlen);

/* Add nodes to the running pool (any thread but the loop's; farm.add_nodes,
   farm_add_nodes, a node that joins). Returns at once: each host connects in
   the background (the probe, the lobby's handshake, HELLO: as a host given at
   open), and the loop takes it in as a new peer when it said HELLO (a
   FARM_EV_NODE_UP event; jobs flow to it), or says on stderr why it could not
   (unless quiet) and goes on. A host whose name (farm.nodes()'s) is a peer of
   the pool already is left as it is, unless that peer is lost or never
   answered: then it is tried again now (so an announcement repeated is
   harmless). Standing nodes use the key of the pool (farm__engine_set_key).
   0, or a negative code with one line in err naming a host that cannot be
   taken (not node:// or SSH; one that broke the protocol in this run): then
   none of them is taken. */
struct farm_host;
int  farm__engine_add_hosts(farm_engine *e, const struct farm_host *hosts, int n, char *err, size_t errlen);
/* The standing nodes' key, for nodes added later (the one given at open
   otherwise), and whether the pool has one. Any thread. */
void farm__engine_set_key(farm_engine *e, const unsigned char key[32]);
int  farm__engine_has_key(farm_engine *e);

/* What every job of the pool may use (proto.h, SHARE): appended in order and
   sent once to each peer before its next jobs (any thread). block is copied. */
int  farm__engine_share(farm_engine *e, int kind, const char *name, size_t nname,
                        const void *block, size_t n);
/* Whether any peer is a node (files need to travel only then). */
int  farm__engine_has_nodes(farm_engine *e);
size_t farm__engine_max_file(farm_engine *e);
/* Whether a worker's setup (farm.on_node) failed; its message in out. */
int  farm__engine_setup_failed(farm_engine *e, char *out, size_t n);
/* Seconds to add to farm__now() for the time of day (as os.time, with fractions). */
double farm__engine_wall(farm_engine *e);
/* A node's engine (opts.keep_files): the files its jobs sent, oldest first, for
   the node to pass on; NULL when none. Free each with free() (one block). */
typedef struct farm_sent_file {
  struct farm_sent_file *next;
  uint64_t ext_id;                 /* the client's id of the job that sent it */
  uint16_t ext_attempt;
  uint64_t dev, ino;
  int partial;                     /* not a file: a provisional result (data: its block) */
  char *path, *data;               /* inside this block */
  size_t npath, ndata;
} farm_sent_file;
farm_sent_file *farm__engine_take_files(farm_engine *e);
/* Cancel a job with a grace (future:cancel{force = true, grace = s}): a job
   not started is cancelled at once (1); a running one is told (STOP: in it,
   farm.cancelled() is true) and, unless it ends within grace seconds, stopped
   by force; it ends cancelled, and what it returned in time (or last gave
   farm.provide) is its last word: farm__engine_partial. grace < 0 (a node's
   engine, told by its client): only tell it, the client keeps the time.
   Returns 1 when cancelled now, -1 when it was told, 0 when it is over.
   Never waits. */
int  farm__engine_stop(farm_engine *e, farm_job *j, double grace);
/* A copy of the job's last provisional result (malloc'd block in *out, *n),
   with how many came and whether it is to be decoded untrusted; 0 when none. */
uint32_t farm__engine_partial(farm_engine *e, farm_job *j, char **out, size_t *n, int *untrusted);
/* A node's engine (report_starts): up to max ext_ids of jobs that began since
   the last call, oldest first, into ids; how many. Any thread. */
size_t farm__engine_take_started(farm_engine *e, uint64_t *ids, size_t max);
/* The script writes to the terminal itself (farm run's print): the progress
   line is cleared first, and drawn again later. Any thread. */
void farm__engine_term_clear(farm_engine *e);

/* ---- placement (submit_with{node = ...}) ---- */
/* The placement of jobs that may run only on the peer named (a node as
   farm.nodes() names it, with or without "node://"), or only on the local
   pool ("local"): a number for farm_job.pin, or a negative code with err
   naming what this pool has. Any thread but the loop's. Queued jobs placed on
   a node that is lost fail, saying so. */
int  farm__engine_pin(farm_engine *e, const char *name, char *err, size_t errlen);

/* ---- events (farm.on_event): what happened in the run, for the client ---- */
enum { FARM_EV_NODE_UP = 1, FARM_EV_NODE_LOST, FARM_EV_JOB_STARTED, FARM_EV_JOB_DONE,
       FARM_EV_JOB_FAILED, FARM_EV_JOB_CANCELLED, FARM_EV_DROPPED, FARM_EV_JOB_PARTIAL };
typedef struct farm_event {
  int type;
  uint64_t job;                    /* the job's id (0: a node's event) */
  double time;                     /* farm__now() when it happened (or when the job began) */
  char node[48];                   /* where: the peer's name ("local:2", "node://h:p") */
  char text[160];                  /* a node lost: why; a job failed: its message's first line;
                                      FARM_EV_DROPPED: how many were not kept */
} farm_event;
/* Keep events from now on (on) or not; off drops what was kept. Any thread. */
void farm__engine_events(farm_engine *e, int on);
/* Up to max events, oldest first, into out; how many. Any thread. Jobs that a
   job submitted (sub-jobs) have none; a run that never takes them keeps at most
   65536, then one FARM_EV_DROPPED says how many more there were. */
size_t farm__engine_take_events(farm_engine *e, farm_event *out, size_t max);

/* ---- for peers (peer.h) and tests: called on the loop thread, lock held ---- */
/* Debug builds: whether the calling thread holds e's lock (or e has no loop
   thread yet, or no more: then the caller is its only thread).
   farm__engine_assert_locked(e) asserts it where what the lock guards is
   touched; with NDEBUG it is nothing. */
#ifdef NDEBUG
#define farm__engine_assert_locked(e) ((void)0)
#else
int farm__engine_locked(farm_engine *e);
#define farm__engine_assert_locked(e) assert(farm__engine_locked(e))
#endif
/* Take one message a peer sent (header included). <0 when it was malformed:
   the caller restarts the peer. err says why. */
int  farm__engine_message(farm_engine *e, farm_peer *p, const void *msg, size_t n,
                          char *err, size_t errlen);
/* The same, and msg is the engine's from now on: release(msg) once nothing
   points into it any more (large results point into their RESULTS message
   instead of being copied out of it, until their jobs are freed: any thread). */
int  farm__engine_take(farm_engine *e, farm_peer *p, void *msg, size_t n, void (*release)(void *),
                       char *err, size_t errlen);
/* A peer ended (its process died, its link broke): its jobs go back to the queue
   or fail; `running` is the job it was running, if known (0 otherwise). */
void farm__engine_peer_lost(farm_engine *e, farm_peer *p, uint64_t running, const char *why);
/* One job at p is given up (a node was told to stop it): it ends as a lost
   peer's blamed job would (timed out, cancelled, or tried again). */
void farm__engine_job_lost(farm_engine *e, farm_peer *p, uint64_t id, const char *why);
/* Output a peer's job wrote while it runs: appended to the job, echoed by line. */
void farm__engine_output(farm_engine *e, farm_peer *p, uint64_t id, const char *s, size_t n);
/* A test engine with one peer of the given kind state and no thread (fuzzing). */
farm_engine *farm__engine_test(farm_peer **p);
void farm__engine_test_add(farm_engine *e, farm_job *j);

#endif
