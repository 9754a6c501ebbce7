/*
 * shm.h -- big job arguments and results through shared memory between the
 * client and its own local workers, instead of through the socket (which
 * copies a message through the kernel twice).
 *
 * Only for local workers (peer_local.c: same host, same user, started by the
 * client); never for nodes over TCP, which keep the socket path. Two memfd
 * regions per worker process, made by the client when it starts the worker
 * and handed to it at exec as descriptors FARM_SHM_ARGS_FD and FARM_SHM_RES_FD
 * (as the state page is, pool.c: a known number, no path, no /proc lookup; the
 * worker maps them and closes the descriptors at once, so the processes its
 * jobs start never hold them). Each region is sealed against shrinking and
 * growing (F_SEAL_SHRINK | F_SEAL_GROW, then F_SEAL_SEAL): a worker cannot
 * truncate a region under the client's mapping, which would make the client's
 * reads fault (SIGBUS).
 *
 *   args region (client writes, worker reads): a header page, then the data.
 *     The client copies a job's encoded argument block (at least FARM_SHM_MIN
 *     bytes) into a span of it, in a ring (first in, first out, freed in any
 *     order: the ring's tail moves past freed spans), and JOBS carries (offset,
 *     length) in place of the bytes (proto.h, FN_SHM). A span is freed when
 *     the client no longer holds the job at that worker: its result came, it
 *     was given back (TAKEN), or the worker was lost (the regions go with the
 *     process, and a new process gets new ones). The worker decodes straight
 *     from the mapping, once, when the job starts; it checks offset + length
 *     against the region's size before it looks. The client keeps the job's
 *     own copy of its arguments (job.h) for retries, so a span never needs to
 *     outlive its worker. The worker gets a read-only descriptor of it (a
 *     reopening of the memfd, O_RDONLY): it cannot map it writable.
 *     The header holds one word the client writes: how far it has read the
 *     worker's results (below).
 *   results region (worker writes, client reads): a ring the worker fills
 *     in order. A job's result block of at least FARM_SHM_MIN bytes is copied
 *     into it and RESULTS carries (position, length) in place of the bytes
 *     (status FARM_JOB_OK_SHM); positions grow without end, the offset is the
 *     position modulo the region's size. The client checks the span against
 *     the region's bounds, copies it into private memory at once (a job's code
 *     runs in the worker and may write to that mapping at any time: the
 *     client's decoder never reads memory another process can change), and
 *     then says in the args region's header that the worker may reuse
 *     everything up to its end. A header the worker finds impossible (beyond
 *     what it wrote) stops it using the region: the socket carries the rest.
 *
 * Whenever a span does not fit (a region full, a block larger than the
 * region), the block goes through the socket as before: nothing blocks,
 * nothing is lost. FARM_SHM_BYTES in the environment sets each region's size
 * (0: no shared memory); tests use it to fill a region.
 *
 * Threads: the client's side (farm_shm) is the peer kind's, under the
 * engine's lock; the worker's side (farm_shm_w) is read by its link thread
 * (the args region's bounds, fixed) and written by its Lua thread alone (the
 * results ring).
 */
#ifndef FARM_SHM_H
#define FARM_SHM_H
#include <stddef.h>
#include <stdint.h>

#define FARM_SHM_ARGS_FD 5
#define FARM_SHM_RES_FD 6
#define FARM_SHM_MIN (64u << 10)             /* blocks this big or bigger go through it */
#define FARM_SHM_BYTES_DEFAULT (32u << 20)   /* each region (pages are touched as used) */
#define FARM_SHM_HEAD 4096                   /* the args region's header page */
#define FARM_SHM_SPANS 512                   /* args spans in flight at most */

/* ---- the client's side (one per worker process) ---- */
typedef struct farm_shm {
  char *args;                      /* the args region, mapped read-write (header included) */
  size_t nargs;                    /* its data bytes (after the header) */
  const char *res;                 /* the results region, mapped read-only */
  size_t nres;
  uint64_t head, tail;             /* the args ring: next position, oldest one still held */
  struct { uint64_t id, pos, len; int done; } span[FARM_SHM_SPANS];
  unsigned first, nspan;           /* the spans held, oldest first (a ring of span[]) */
  uint64_t released;               /* how far the worker's results were read */
} farm_shm;

/* Make both regions (NULL when shared memory is off or cannot be had: the
   socket carries everything). *argsfd (read-only) and *resfd are for the
   worker (close-on-exec; the caller closes them once it has spawned it). */
farm_shm *farm__shm_new(int *argsfd, int *resfd);
void farm__shm_free(farm_shm *s);
/* Copy job id's argument block into the args region: 0 and *off, or -1 when
   it is small or does not fit (it goes in the message). */
int  farm__shm_put_args(farm_shm *s, uint64_t id, const void *p, size_t n, uint64_t *off);
/* The worker is done with job id's span (if it has one). */
void farm__shm_args_done(farm_shm *s, uint64_t id);
/* A result block at (pos, n) in the results region: copied into *out
   (malloc'd; out NULL: only let go of) and the span given back to the worker.
   0, or -1 when the span is out of the region's bounds (a malformed message);
   0 with *out NULL when memory ran out (the span is given back all the same). */
int  farm__shm_take_result(farm_shm *s, uint64_t pos, size_t n, char **out);

/* ---- the worker's side ---- */
typedef struct farm_shm_w {
  const char *args;                /* the args region's data, read-only (NULL: none) */
  size_t nargs;
  const uint64_t *released;        /* the header word the client writes */
  char *res;                       /* the results region (NULL: none) */
  size_t nres;
  uint64_t head;                   /* the next position in it */
  int broken;                      /* the header was found impossible: not used again */
} farm_shm_w;

/* Map the regions at FARM_SHM_ARGS_FD and FARM_SHM_RES_FD if the client gave
   them (and close those descriptors); w is zeroed otherwise. -1 when they were
   given but cannot be mapped (the client will put blocks there: the worker
   must not start). */
int  farm__shm_attach(farm_shm_w *w);
void farm__shm_detach(farm_shm_w *w);
/* The args block at (off, n), or NULL when it is not inside the region. */
const char *farm__shm_args(const farm_shm_w *w, uint64_t off, uint64_t n);
/* Copy a result block into the results region: 0 and *pos, or -1 when it is
   small or does not fit now (it goes in the message). */
int  farm__shm_put_result(farm_shm_w *w, const void *p, size_t n, uint64_t *pos);
#endif
