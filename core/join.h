/*
 * join.h -- a client that nodes may join while it runs (join.c): it hears
 * their announcements (announce.h) and adds each node that made a good one
 * to its pool, which then dials the node's lobby with the key handshake as it
 * dials a node named on the command line.
 *
 *   farm run --listen ADDR      a nanomsg PULL bound at ADDR; `farm node --join
 *                               ADDR` sends its record there every FARM_JOIN_EVERY s
 *   farm run --discover IFACE   a UDP socket bound to IFACE's FARM_DISCOVERY_PORT
 *                               (or IFACE:PORT); `farm node --announce IFACE`
 *                               broadcasts there every FARM_ANNOUNCE_EVERY s
 *
 * A record that does not check (announce.h: another key, another protocol,
 * stale, not a record) is dropped, and said on stderr at most once a minute
 * per source (the datagram's address; "--listen" for the PULL, which does not
 * say who sent). A good one from a node already added within the last
 * JOIN_AGAIN seconds is dropped without a word: the pool keeps a live node as
 * it is, and hears a lost node that still announces again after that. At most
 * FARM_JOIN_MAX nodes join one run.
 *
 * Threads: a thread of its own (started by farm__join_open, joined by
 * farm__join_close), which owns the sockets and calls o->add; nothing else is
 * shared with the caller.
 */
#ifndef FARM_JOIN_H
#define FARM_JOIN_H
#include <stddef.h>

#define FARM_JOIN_MAX 256

typedef struct farm_join farm_join;

typedef struct farm_join_opts {
  const char *listen;              /* --listen ADDR, as farm__join_url reads it; NULL: none */
  const char *discover;            /* --discover IFACE[:PORT]; NULL: none */
  const unsigned char *key;        /* the farm key (FARM_KEYLEN bytes, copied) */
  int quiet;                       /* no lines on stderr */
  /* A node announced itself with a good record: add it (on the join thread).
     0, or a negative code with err saying why (said on stderr). */
  int (*add)(void *arg, const char *ip, unsigned port, char *err, size_t errlen);
  void (*clear)(void *arg);        /* before a line on stderr: clear a progress line (NULL: none) */
  void *arg;
} farm_join_opts;

/* Open the sockets o asks for and start the thread. 0, or a negative code
   with one line in err (the address is taken, no such interface, ...). */
int  farm__join_open(farm_join **out, const farm_join_opts *o, char *err, size_t errlen);
/* Stop the thread and close the sockets (NULL: nothing). */
void farm__join_close(farm_join *j);
/* ADDR as --listen and --join take it: "tcp://HOST:PORT", "HOST:PORT" or
   "PORT" (on 127.0.0.1), into url as tcp://HOST:PORT. opt names the option in
   err. 0, or -1 with one line in err. */
int  farm__join_url(const char *opt, const char *arg, char *url, size_t n, char *err, size_t errlen);
#endif
