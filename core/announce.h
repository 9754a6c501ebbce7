/*
 * announce.h -- a node makes itself known to a client (announce.c): joining
 * (`farm node --join HOST:PORT` to a `farm run --listen ADDR`) and discovery
 * (`farm node --announce IFACE` to a `farm run --discover IFACE`), as dispy's
 * nodes do. An announcement says only "a node of this farm listens here"; the
 * client then dials that lobby with the ordinary key handshake (session.h), so
 * nothing is trusted before the same handshake as a node named on the command
 * line gets.
 *
 * The record, FARM_ANNOUNCE_LEN (68) bytes, integers big-endian:
 *
 *   off  len
 *     0    4  magic "FmAn"
 *     4    1  FARM_PROTOCOL (proto.h)
 *     5    1  0 (reserved)
 *     6    2  the node's lobby port
 *     8    4  the node's lobby IPv4 address, as the node sees it
 *    12    8  when it was made: milliseconds since the epoch (the node's clock)
 *    20   16  a random nonce
 *    36   32  mac = BLAKE2b-256(key = K, "farm announce 1" | bytes 0..35)
 *
 * K is the farm key (session.h), so a node without a key cannot announce; the
 * domain string keeps a MAC from ever being a proof or a session key of
 * session.c's (those hash "farm proof " and "farm keys"). The receiver drops,
 * before it looks at anything else, a datagram or message of any other length
 * or magic; then checks the MAC (another key, or not farm's: dropped), the
 * protocol, the address (not 0.0.0.0, not a broadcast or multicast one, a port
 * from 1) and freshness (made within FARM_ANNOUNCE_FRESH seconds of its own
 * clock, either way: node and client clocks must agree that closely).
 *
 * What a stranger can do with this: send records that fail the MAC (dropped,
 * logged at most once a minute per source), or replay a record it saw within a
 * minute of its making: that makes a client dial the node that made it, which
 * the node's key holder asked for anyway. A key holder can make a client dial
 * any IPv4 address and port; what answers there still has to pass the
 * handshake before it gets a job.
 *
 * Discovery's datagrams go to UDP port FARM_DISCOVERY_PORT (or the port given
 * as IFACE:PORT) at the interface's broadcast address, from a socket bound to
 * that interface (SO_BINDTODEVICE); the client's socket is bound to the same
 * interface and port, so an announcement from any other interface never
 * reaches it. The helpers below are the sockets' and interfaces' code, shared
 * by the node (nodes/node.c) and the client (join.c).
 *
 * Threads: none of its own; every function is reentrant.
 */
#ifndef FARM_ANNOUNCE_H
#define FARM_ANNOUNCE_H
#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>

#define FARM_ANNOUNCE_LEN 68
#define FARM_ANNOUNCE_FRESH 60.0   /* seconds a record is good for, either side of now */
#define FARM_DISCOVERY_PORT 7079   /* the UDP port of --announce and --discover */
#define FARM_ANNOUNCE_EVERY 1.0    /* seconds between a node's broadcasts (--announce) */
#define FARM_JOIN_EVERY 2.0        /* ...and its messages to a client (--join) */

typedef struct farm_announce {
  struct in_addr addr;             /* the node's lobby: its address, */
  unsigned port;                   /* ...and port */
  double time;                     /* when it was made (seconds since the epoch) */
  unsigned char nonce[16];
} farm_announce;

/* Write a record for the lobby at addr:port, made now (seconds since the
   epoch), with a fresh nonce, under key (FARM_KEYLEN bytes). */
void farm__announce_make(unsigned char out[FARM_ANNOUNCE_LEN], const unsigned char *key,
                         struct in_addr addr, unsigned port, double now);
/* Check n bytes that came: 0 with *a filled when they are a good record of
   this farm made within FARM_ANNOUNCE_FRESH of now; else FARM_EPROTO (not a
   record: length, magic, address), FARM_EAUTH (its MAC does not open under
   key: another farm's key, or forged), FARM_EVERSION (another protocol) or
   FARM_ETIMEDOUT (too old, or from the future), and err says which in words. */
int  farm__announce_check(const void *msg, size_t n, const unsigned char *key, double now,
                          farm_announce *a, char *err, size_t errlen);

/* Seconds since the epoch, with fractions. */
double farm__announce_clock(void);

/* An interface by name: its IPv4 address and broadcast address. 0, or -1 with
   one line in err naming it (no such interface, no IPv4 address on it, no
   broadcast address: a loopback or point-to-point one). */
int  farm__iface_addr(const char *iface, struct in_addr *addr, struct in_addr *bcast,
                      char *err, size_t errlen);
/* "IFACE" or "IFACE:PORT" (port 1..65535; FARM_DISCOVERY_PORT when none):
   0 with the name in iface (IFNAMSIZ bytes) and *port, or -1 (what was wrong
   in err, naming opt, e.g. "--announce"). The interface need not exist yet. */
int  farm__iface_parse(const char *opt, const char *arg, char *iface, unsigned *port,
                       char *err, size_t errlen);
/* A UDP socket bound to iface (SO_BINDTODEVICE), non-blocking and
   close-on-exec. listen: bound to port on every address of it, to receive the
   broadcasts (SO_REUSEADDR: two clients on one host both hear them); else
   allowed to send broadcasts. The socket, or -1 with one line in err. */
int  farm__udp_open(const char *iface, unsigned port, int listen, char *err, size_t errlen);

/* ---- the node's side: a standing node's lobby announces itself ---- */
typedef struct farm_announcer farm_announcer;
/* listen: the lobby's address ("tcp://ADDR:PORT"); joins: njoins clients'
   addresses ("tcp://HOST:PORT", farm__join_url), each sent the record every
   FARM_JOIN_EVERY s over a nanomsg PUSH; iface (NULL: none): broadcast it
   there every FARM_ANNOUNCE_EVERY s to UDP port uport. The address in the
   record is the lobby's when it listens on one address, else the interface's
   (--announce) or the one this host reaches that client from (--join). A
   client's name is looked up here, once (never in the lobby's loop). 0, or
   -1 with one line in err (no such interface or host; a lobby on loopback that
   another host could not reach; a lobby on another address than the
   interface's). key is copied. */
int  farm__announcer_open(farm_announcer **out, const unsigned char *key, const char *listen,
                          const char *const *joins, int njoins, const char *iface, unsigned uport,
                          char *err, size_t errlen);
/* Send what is due at now (farm__now()); returns the seconds until the next
   is due. A failure not said before (an interface gone down, no route to a
   client) is put in note as one line (else note[0] = 0): the caller logs it.
   Never blocks. */
double farm__announcer_tick(farm_announcer *a, double now, char *note, size_t n);
void farm__announcer_close(farm_announcer *a);
#endif
