/* worker.h -- the worker process's entry point (`farm worker`). */
#ifndef FARM_WORKER_H
#define FARM_WORKER_H
#include <stddef.h>
/* Serve jobs from the client at url until told to quit or orphaned; returns the exit status. */
/* statefd: the shared state page's descriptor (wstate.h), or -1. */
int farm__worker_main(const char *url, int slot, long parent, size_t maxmsg, int statefd);
#endif
