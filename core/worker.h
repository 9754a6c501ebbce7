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
