/* worker.h -- the worker process (`farm worker`) and its message parser. */
#ifndef FARM_WORKER_H
#define FARM_WORKER_H
#include <stddef.h>
#include <stdint.h>

/* Serve jobs from the client at url until told to quit or orphaned; returns the
   exit status. statefd: the shared state page's descriptor (wstate.h), or -1;
   captured: descriptor 1 is the memfd the client reads job output from. */
int farm__worker_main(const char *url, int slot, long parent, size_t maxmsg, int statefd,
                      int captured);

/* ---- sub-jobs: a job's own farm calls (client.c), on the worker's Lua thread ---- */
struct lua_State;
struct farm_job;
typedef struct worker worker;
/* The worker whose Lua state L is (NULL in a client). */
worker  *farm__worker_of(struct lua_State *L);
size_t   farm__worker_maxmsg(worker *w);
int      farm__worker_pool(worker *w);     /* the client's workers, as far as it knows */
uint64_t farm__worker_gen(worker *w);
/* Send j (its fn and args set) to the client's scheduler; it gets an id of
   this worker's and a reference kept until its result comes. */
int farm__worker_submit(worker *w, struct farm_job *j);
/* After a submit from L: what was submitted leaves within about RESULT_DELAY
   even if the job computes on without waiting (a count hook on L sends it). */
void farm__worker_submitted(struct lua_State *L, worker *w);
/* Wait for j to end, or for any sub-job to end after gen; pushes true when it
   did (false on timeout; timeout < 0: none). Yields when L is the job's own
   coroutine, so the worker runs other jobs meanwhile: call as `return ...`. */
int farm__worker_wait(struct lua_State *L, worker *w, struct farm_job *j, double timeout);
int farm__worker_pump(struct lua_State *L, worker *w, uint64_t gen, double timeout);
/* farm.shared.name in a job: pushes its value (decoded at the first read) and
   returns 1, or returns 0 when the client set no such name. */
int farm__worker_shared(struct lua_State *L, worker *w, const char *name, size_t n);
/* farm.send_file(path) in a job: the file goes to the client now (before the
   job's result). 0, or -1 with why in err. */
int farm__worker_send_file(worker *w, const char *path, char *err, size_t errlen);
/* farm.provide(value) in a job: a provisional result (an encoded block) goes to
   the client now. 0, or -1 with why in err. */
int farm__worker_provide(worker *w, const char *block, size_t n, char *err, size_t errlen);
/* farm.cancelled() in a job: whether the client cancelled it with a grace (STOP). */
int farm__worker_cancelled(worker *w);

/* ---- the link thread's parser, exposed for the fuzzer ---- */
typedef struct farm_wjobs farm_wjobs;    /* parsed jobs and the function blocks kept */
farm_wjobs *farm__wjobs_new(void);
void farm__wjobs_free(farm_wjobs *q);
/* Take one message from the client (header included) as the worker's link
   thread does: JOBS are queued (and keep msg, released with release(msg) when
   their last job is gone; otherwise msg is released before returning), TAKE
   removes queued jobs (the ids given back are appended to *given, a malloc'd
   array of *ngiven), QUIT is reported. Returns the message type, or a negative
   code (err says why) when it is malformed; nothing of a malformed message is
   kept. */
int farm__wjobs_take(farm_wjobs *q, void *msg, size_t n, void (*release)(void *),
                     uint64_t **given, size_t *ngiven, char *err, size_t errlen);
size_t farm__wjobs_count(const farm_wjobs *q);
#endif
