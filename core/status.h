/*
 * status.h -- the live status page (`farm run --status ADDR`, `farm node
 * --status ADDR`): a read-only HTTP server (libmicrohttpd, loaded with dlopen
 * when first needed: see status.c) that answers GET /, /status.json and
 * /status.txt, and the client side of `farm status ADDR`.
 *
 * What it serves is a snapshot (farm_status_snap): taken on the server's own
 * thread by a callback (a client: farm__engine_status_snap under the engine's
 * lock, briefly), or published by the owner's thread (the node's lobby, which
 * has no lock: farm__status_publish). No global state: a server hangs off its
 * owner (a client's context, the lobby) and farm__status_stop ends it.
 */
#ifndef FARM_STATUS_H
#define FARM_STATUS_H
#include <stddef.h>
#include <stdint.h>

#define FARM_STATUS_ERRORS 10      /* the last failures kept (the engine's ring) */

typedef struct farm_status_client {
  char name[128];                  /* who (its word for itself, from the handshake) */
  int workers, active;             /* its share of the node's workers; it has jobs */
  uint64_t done, failed;
} farm_status_client;

typedef struct farm_status_row {   /* a node, or the local pool */
  char name[64];
  char kind[8];                    /* "local", "node" */
  char state[12];                  /* "up", "starting", "lost", "failed", "retired" */
  int workers, busy, clients;      /* clients: a node's, as it said (0: unknown) */
  uint64_t done;
} farm_status_row;

typedef struct farm_status_error {
  uint64_t job;
  char worker[64];
  char msg[512];
  char tb[2048];
} farm_status_error;

typedef struct farm_status_snap {
  char kind[8];                    /* "run" or "node" */
  char name[128];
  uint64_t total, done, running, failed, queued;
  double elapsed;
  int nrows;                       /* rows: malloc'd (farm__status_snap_free) */
  farm_status_row *rows;
  int nclients;                    /* a node's: the clients it serves (malloc'd) */
  farm_status_client *clients;
  int nerrors;                     /* the last failures, oldest first */
  farm_status_error errors[FARM_STATUS_ERRORS];
} farm_status_snap;
void farm__status_snap_free(farm_status_snap *s);

typedef struct farm_status_srv farm_status_srv;
/* Fill s (zeroed) with the figures now; called on the server's thread. */
typedef void (*farm_status_fill)(void *arg, farm_status_snap *s);

/* Parse ADDR (host:port or port; host an IPv4 address or localhost) into a
   dotted address and port; 1 when it is a loopback address, 0 when not, -1
   (err says why, naming ADDR) when it is not an address. */
int farm__status_addr(const char *addr, char *host, size_t nhost, int *port, char *err, size_t errlen);
/* The token a key gives: BLAKE2b-256(key, "farm status") in hex (64 chars + NUL). */
void farm__status_token(const unsigned char *key, char out[65]);
/* Start serving on addr. key: every data request needs its token (NULL: none;
   the caller refuses non-loopback addresses without one). fill: NULL to serve
   what farm__status_publish gave. 0, or -1 with err saying why. */
int farm__status_start(farm_status_srv **out, const char *addr, const unsigned char *key,
                       farm_status_fill fill, void *arg, char *err, size_t errlen);
/* What --status ADDR [--status-token] asks, checked: ADDR reads, and a key
   (keyfile, else $FARM_KEY_FILE) is there and reads when ADDR is not loopback
   or token is set. 0; -1 with err naming the option and the fix. With out,
   the server also starts (fill, arg as farm__status_start). */
int farm__status_open(farm_status_srv **out, const char *addr, const char *keyfile, int token,
                      farm_status_fill fill, void *arg, char *err, size_t errlen);
/* Serve s from now on (its contents are copied; the caller still frees s). */
void farm__status_publish(farm_status_srv *st, const farm_status_snap *s);
/* Stop the server and free it (NULL: nothing). */
void farm__status_stop(farm_status_srv *st);

/* `farm status ADDR [--key-file F]`: the table of a running farm's page, from
   GET /status.txt over a plain socket. Returns the exit status. */
int farm__status_main(int argc, char **argv);
#endif
