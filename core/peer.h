/*
 * peer.h -- what runs jobs, as the scheduler sees it: a table of operations and
 * the bookkeeping every kind of peer shares (its link, its jobs in flight, its
 * credit). A local worker process (peer_local.c) is one kind, of capacity 1; a
 * node on another host will be another, of capacity = its workers. What is
 * special about a kind (pids, ipc paths, the state page; TCP sessions, SSH
 * channels, heartbeats) lives in that kind's file, never in engine.c.
 *
 * The engine knows a kind only by its ops and its flags, never by its name;
 * a kind knows the engine only by the farm_peer_host it is handed when its
 * peers are made (as nng hands a transport its pipe's callbacks): engine.c
 * calls peer_local.c and peer_node.c, and they call nothing of engine.c's.
 *
 * Every operation runs on the engine's loop thread with the engine's lock held.
 */
#ifndef FARM_PEER_H
#define FARM_PEER_H
#include <poll.h>
#include <stdint.h>
#include "buf.h"
#include "engine.h"
#include "hash.h"
#include "transport.h"

typedef struct farm_peer_ops {
  const char *kind;                /* its name in stats ("local", "node"): shown, never tested */
  int untrusted;                   /* what it sends is decoded untrusted (another host) */
  int local_pool;                  /* one of the client's own worker processes: the pool that
                                      placement calls "local", that farm.set_workers resizes
                                      and whose setup cleanup the engine waits for at close */
  int shares_dir;                  /* it runs in our directory: shared files need not travel,
                                      and the dev and ino of a file it sends are ours */
  int restartable;                 /* it may quit after each job for a fresh process
                                      (restart_workers, ppserver -r) */
  int remote;                      /* a farm node: an engine of its own with workers behind
                                      it (it names them in SETUPFAIL; it may say QUIT) */
  /* (Re)start the peer: a fresh process or connection; 0 or a negative code (e->err). */
  int  (*start)(farm_peer *p);
  /* Stop it at once (a job it runs timed out or was cancelled by force); the
     loss is reported through farm__engine_peer_lost, now or from tick(), with
     blame on job `blame` (0: the job the kind sees running). */
  void (*kill)(farm_peer *p, const char *why, uint64_t blame);
  /* Stop it for good and free what the kind holds (the engine is closing). */
  void (*close)(farm_peer *p);
  /* Timers: notice a death, stream output. Called every tick of the loop. */
  void (*tick)(farm_peer *p, double now);
  /* The id of the job it runs now, when the kind can tell (0: none or unknown). */
  uint64_t (*running)(farm_peer *p);
  /* The pid behind it, for stats and tests (0 when none). */
  long (*pid)(farm_peer *p);
  /* It said HELLO (optional). */
  void (*connected)(farm_peer *p);
  /* Shared memory with the peer (shm.h; optional, a local worker's): put job
     id's argument block where the peer reads it, 0 and *off when it did (JOBS
     then carries the offset), -1 when it goes in the message; args_done: the
     peer no longer holds job id (its result came, it was given back); and a
     result block at (pos, n) copied out into *out (malloc'd) and given back,
     <0 when the span is not the peer's to name (a malformed message). A kind
     without them has every block travel in its messages, and a RESULTS that
     names a span from it is malformed. */
  int  (*args_put)(farm_peer *p, uint64_t id, const char *args, size_t n, uint64_t *off);
  void (*args_done)(farm_peer *p, uint64_t id);
  int  (*result_take)(farm_peer *p, uint64_t pos, size_t n, char **out);
} farm_peer_ops;

/* What the engine hands a kind when its peers are made, and all a kind may
   call of the engine's. Every callback runs with the engine's lock held, on
   the loop thread (or wherever the ops run). */
typedef struct farm_peer_host {
  farm_engine *engine;             /* for the peers' p->e (opaque to the kinds) */
  const char *exe;                 /* the farm executable, for workers */
  size_t maxmsg;                   /* the largest message on a link */
  struct farm_term *term;          /* a kind's lines for the user go there (term.h), so that
                                      they are written outside the engine's lock and never
                                      glued onto the progress line */
  /* Send a whole message now or keep it for when the link can take it
     (never blocks, never drops). <0 when the link failed. */
  int  (*send)(farm_peer *p, const void *msg, size_t n);
  /* A fresh process or connection behind p (a kind calls it when it starts one). */
  void (*reset)(farm_peer *p);
  /* One message p sent (header included); <0 when it was malformed (err says why). */
  int  (*message)(farm_peer *p, const void *msg, size_t n, char *err, size_t errlen);
  /* p ended (its process died, its link broke): its jobs go back to the queue
     or fail; running: the job it was running, if known (0 otherwise). */
  void (*lost)(farm_peer *p, uint64_t running, const char *why);
  /* One job at p is given up (a node was told to stop it). */
  void (*job_lost)(farm_peer *p, uint64_t id, const char *why);
  /* Output p's job id wrote while it runs. */
  void (*output)(farm_peer *p, uint64_t id, const char *s, size_t n);
  /* Why peers cannot run (the first reason is kept: open and a queue that can
     never run report it). */
  void (*error)(farm_peer *p, const char *msg);
  /* The directory for local workers' sockets while they connect (made at the
     first call); sockdir_done: it goes once every local peer said HELLO. */
  const char *(*sockdir)(farm_peer *p, char *err, size_t errlen);
  void (*sockdir_done)(farm_peer *p);
} farm_peer_host;

/* Who owns each field (as for the engine's, engine.c): [made] set when the
   peer is made (farm__local_new, farm__nodes_open), before any other thread
   sees it, and fixed after; [mu] guarded by the engine's lock, read and
   written by whichever thread holds it (the loop; a waiting caller that drains
   the links; a caller in cancel, stats or set_workers); every op runs with it
   held. No field of a peer is touched without the lock once the loop runs. */
struct farm_peer {
  const farm_peer_ops *ops;        /* [made] */
  const farm_peer_host *host;      /* [made] what the engine handed its kind */
  farm_engine *e;                  /* [made] (the engine's; a kind never looks inside) */
  void *kind;                      /* [mu] the kind's own state (its ops run under the lock) */
  char name[48];                   /* [made] "local:2" */
  int capacity;                    /* [mu] jobs it runs at once (from HELLO) */
  int cap_limit;                   /* [made] at most this capacity whatever HELLO says (0: none);
                                      a hostfile's `node://host:port N` (set by the kind) */
  int capped;                      /* [mu] HELLO said more than cap_limit: no prefetch either */
  int same_clock;                  /* [made] its farm__now() is ours (a process on this host) */
  int ready;                       /* [mu] HELLO seen */
  int dead;                        /* [mu] failed before HELLO: not restarted */
  /* retirement (farm__peer_retire, farm__engine_set_workers) */
  int retired;                     /* [mu] no new jobs; QUIT once empty; gone for good when it ends */
  int start_pending;               /* [mu] added to a running pool: the loop thread starts it */
  double quit_at;                  /* [mu] a retired peer: when it was sent QUIT (0: not yet) */
  char retired_why[160];           /* [mu] why it was retired */
  int closing;                     /* [mu] QUIT sent */
  int broken;                      /* [mu] to be stopped and replaced by the loop thread: */
  char broken_why[200];            /* [mu] ...why (only the loop thread starts processes), */
  uint64_t broken_target;          /* [mu] ...and for which job (0: for its own sake) */
  int ntimed;                      /* [mu] jobs in flight with a timeout */
  farm_link *link;                 /* [mu] (made and closed by the loop thread's ops) */
  farm_buf pend;                   /* [mu] messages the link could not take yet (whole messages) */
  farm_job *head, *tail;           /* [mu] in flight, in the order sent (doubly linked) */
  farm_hash idx;                   /* [mu] ...and by id (hash.h) */
  int inflight;                    /* [mu] */
  int suspended;                   /* [mu] of those, started and waiting on sub-jobs */
  uint64_t gen;                    /* [mu] bumped when it is lost: sub-job results for the
                                      old process are dropped */
  farm_buf subdone;                /* [mu] SUBDONE message being built for it */
  uint32_t nsubdone;               /* [mu] */
  int takes;                       /* [mu] TAKE messages not yet answered */
  double take_sent;                /* [mu] when the oldest of those went (0: none) */
  farm_hash known;                 /* [mu] the function hashes it keeps (a set: hash.h) */
  int forget;                      /* [mu] next JOBS tells it to drop its cache */
  double est;                      /* [mu] EWMA of its seconds per job; 0 = not known yet */
  double idle_since;               /* [mu] when it last ran out of work (0: busy) */
  uint64_t running_id;             /* [mu] the job it was last seen running */
  uint64_t jobs;                   /* [mu] stats */
  double busy;                     /* [mu] */
  int shared_upto;                 /* [mu] the engine's shared items it was sent */
  int setup_failed;                /* [mu] said SETUPFAIL: taken out of the run */
  uint64_t bytes_out, bytes_in;    /* [mu] on its link, whole messages */
  int clients;                     /* [mu] a node: the clients it serves (from its BEATs; 0: unknown) */
  /* lost and back again (a standing node, peer_node.c) */
  int hostile;                     /* [mu] it broke the protocol (a malformed message, or one
                                      not its to send): lost for good, never tried again */
  int rejoining;                   /* [mu] dead, and its kind tries it again in the background
                                      (set by the kind at the loss; by farm__engine_add_hosts
                                      for a host announced again): a queue with no other peer
                                      waits for it a while (engine.c, REJOIN_WAIT) */
  int rejoined;                    /* [mu] times it came back (its NODE_UP says "rejoined") */
};

/* ---- the engine's own, over peers (engine.c; the kinds reach them through
   their host) ---- */
int  farm__peer_send(farm_peer *p, const void *msg, size_t n);   /* farm_peer_host.send */
void farm__peer_reset(farm_peer *p);                             /* farm_peer_host.reset */
/* Have the loop thread stop and replace p (from either thread, lock held). */
void farm__peer_broken(farm_peer *p, const char *why);
/* Receive and handle everything waiting on p's link (header checks; a malformed
   message marks the peer broken). Returns messages handled. */
int  farm__peer_drain(farm_peer *p);
/* Retire p for good (lock held; on the loop thread, or wherever messages are
   handled, as farm__engine_message is; it starts and stops no process itself).
   From now on p gets no new job and counts neither in the pool's capacity nor
   in farm.workers(); its jobs not yet started are taken back (TAKE/TAKEN) and
   run elsewhere; the jobs it has begun run to their end there (a death still
   gives them back, as for any peer). Once it holds nothing, the loop thread
   sends it QUIT, and stops it (ops->kill, blame 0) if it has not gone within
   a grace of 2 s; a peer that never said HELLO is stopped at once. When it
   ends it is NOT replaced; it stays in the peer list with state "retired"
   (pid 0 once gone). Any kind of peer; calling it again does nothing. why
   (copied) names the cause: it reaches the user when no peer is left to run
   the queue ("no workers left: local:2 was retired (why)"). */
void farm__peer_retire(farm_peer *p, const char *why);

/* ---- the kinds (engine.c makes its peers with them) ---- */
/* The node kind (peer_node.c): a farm node on another host (or this one),
   reached over TCP, started over SSH when the host says so. Connects (in
   parallel, from the caller's thread, before the loop starts) and returns one
   peer per host; a host that cannot be reached gets a peer that is dead, and a
   line on stderr (or in err when quiet). err says why the first one failed, and
   *first_rc its code (FARM_EAUTH, FARM_ESSH, ...; left as it was when none did). */
struct farm_host;
int  farm__nodes_open(const farm_peer_host *h, const farm_engine_opts *o, farm_peer **out,
                      char *err, size_t errlen, int *first_rc);

/* A node added to a running engine (farm__engine_add_hosts), for host (o: the
   engine's options, of which it copies what it needs). Not connected: its
   start (loop thread) connects in the background, and its tick adopts it once
   its HELLO came, or says why not on the terminal and it is dead. NULL when
   out of memory. */
farm_peer *farm__node_new(const farm_peer_host *h, const farm_engine_opts *o, const struct farm_host *host);

/* The local kind (peer_local.c): worker process number index+1 of this host. */
farm_peer *farm__local_new(const farm_peer_host *h, int index, char *err, size_t errlen);
#endif
