/*
 * announce.c -- a node's announcement: the record (its layout and why it is
 * safe to receive are in announce.h), the interfaces and UDP sockets of
 * discovery, and the node's side that sends it (farm_announcer: a standing
 * node's lobby calls farm__announcer_tick from its loop; nothing here blocks).
 *
 * Threads: none of its own; reentrant (getifaddrs, no static state).
 */
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <sodium.h>
#include "farm.h"
#include "announce.h"
#include "proto.h"
#include "session.h"
#include "transport.h"

static const char magic[4] = { 'F', 'm', 'A', 'n' };
static const char domain[] = "farm announce 1";   /* never a prefix of session.c's */

#define BODY 36                    /* the bytes the MAC covers */

double farm__announce_clock(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void mac_of(unsigned char mac[32], const unsigned char *body, const unsigned char *key) {
  crypto_generichash_state st;
  crypto_generichash_init(&st, key, FARM_KEYLEN, 32);
  crypto_generichash_update(&st, (const unsigned char *)domain, sizeof domain - 1);
  crypto_generichash_update(&st, body, BODY);
  crypto_generichash_final(&st, mac, 32);
}

void farm__announce_make(unsigned char out[FARM_ANNOUNCE_LEN], const unsigned char *key,
                         struct in_addr addr, unsigned port, double now) {
  memcpy(out, magic, 4);
  out[4] = FARM_PROTOCOL;
  out[5] = 0;
  out[6] = (unsigned char)(port >> 8);
  out[7] = (unsigned char)port;
  memcpy(out + 8, &addr.s_addr, 4);               /* network order already */
  uint64_t ms = now > 0 ? (uint64_t)(now * 1e3) : 0;
  for (int i = 0; i < 8; i++) out[12 + i] = (unsigned char)(ms >> (56 - 8 * i));
  randombytes_buf(out + 20, 16);
  mac_of(out + BODY, out, key);
}

/* An address no lobby has: 0.0.0.0/8, multicast, the limited broadcast. */
static int no_lobby(struct in_addr a) {
  uint32_t h = ntohl(a.s_addr);
  return (h >> 24) == 0 || (h >> 28) == 0xe || h == 0xffffffffu;
}

int farm__announce_check(const void *msg, size_t n, const unsigned char *key, double now,
                         farm_announce *a, char *err, size_t errlen) {
  const unsigned char *p = msg;
  if (n != FARM_ANNOUNCE_LEN || memcmp(p, magic, 4) != 0) {
    snprintf(err, errlen, "not a farm announcement (%zu bytes)", n);
    return FARM_EPROTO;
  }
  unsigned char mac[32];
  mac_of(mac, p, key);
  int good = crypto_verify_32(mac, p + BODY) == 0;
  sodium_memzero(mac, sizeof mac);
  if (!good) {
    snprintf(err, errlen, "made with another key (or not farm's)");
    return FARM_EAUTH;
  }
  if (p[4] != FARM_PROTOCOL) {
    snprintf(err, errlen, "from a node of protocol version %d, this client speaks %d", p[4], FARM_PROTOCOL);
    return FARM_EVERSION;
  }
  memset(a, 0, sizeof *a);
  a->port = (unsigned)p[6] << 8 | p[7];
  memcpy(&a->addr.s_addr, p + 8, 4);
  uint64_t ms = 0;
  for (int i = 0; i < 8; i++) ms = ms << 8 | p[12 + i];
  a->time = (double)ms / 1e3;
  memcpy(a->nonce, p + 20, 16);
  if (p[5] != 0 || a->port == 0 || no_lobby(a->addr)) {
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &a->addr, ip, sizeof ip);
    snprintf(err, errlen, "it names no lobby (%s:%u)", ip, a->port);
    return FARM_EPROTO;
  }
  double age = now - a->time;
  if (!(age <= FARM_ANNOUNCE_FRESH && age >= -FARM_ANNOUNCE_FRESH)) {
    snprintf(err, errlen, "made %.0f s %s by the node's clock (at most %.0f s either way: "
             "are the two clocks set?)", age < 0 ? -age : age, age < 0 ? "ahead" : "ago",
             FARM_ANNOUNCE_FRESH);
    return FARM_ETIMEDOUT;
  }
  return 0;
}

/* ---- interfaces and sockets ------------------------------------------------------- */

int farm__iface_parse(const char *opt, const char *arg, char *iface, unsigned *port,
                      char *err, size_t errlen) {
  const char *colon = strchr(arg, ':');
  size_t len = colon ? (size_t)(colon - arg) : strlen(arg);
  *port = FARM_DISCOVERY_PORT;
  if (colon) {
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (!colon[1] || *end || p < 1 || p > 65535) {
      snprintf(err, errlen, "%s takes an interface and an optional UDP port, IFACE or IFACE:PORT "
               "(e.g. eth0 or eth0:%d), not '%.100s'", opt, FARM_DISCOVERY_PORT, arg);
      return -1;
    }
    *port = (unsigned)p;
  }
  if (len == 0 || len >= IFNAMSIZ || memchr(arg, '/', len) || memchr(arg, ' ', len)) {
    snprintf(err, errlen, "%s takes a network interface's name (e.g. eth0, at most %d characters), "
             "not '%.100s'", opt, IFNAMSIZ - 1, arg);
    return -1;
  }
  memcpy(iface, arg, len);
  iface[len] = 0;
  return 0;
}

int farm__iface_addr(const char *iface, struct in_addr *addr, struct in_addr *bcast,
                     char *err, size_t errlen) {
  struct ifaddrs *all, *i;
  if (getifaddrs(&all) < 0) {
    snprintf(err, errlen, "cannot list the network interfaces: %s", strerror(errno));
    return -1;
  }
  int found = 0, v4 = 0, rc = -1;
  char names[200] = "";
  size_t at = 0;
  for (i = all; i; i = i->ifa_next) {
    if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET && at < sizeof names - 20 &&
        !strstr(names, i->ifa_name))
      at += (size_t)snprintf(names + at, sizeof names - at, "%s%s", at ? ", " : "", i->ifa_name);
    if (strcmp(i->ifa_name, iface)) continue;
    found = 1;
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET) continue;
    v4 = 1;
    if (!(i->ifa_flags & IFF_BROADCAST)) continue;
    *addr = ((struct sockaddr_in *)i->ifa_addr)->sin_addr;
    /* an address added without `brd` has none set (0.0.0.0): the network's
       own, from the netmask, is where its broadcasts go */
    bcast->s_addr = i->ifa_broadaddr ? ((struct sockaddr_in *)i->ifa_broadaddr)->sin_addr.s_addr : 0;
    if ((!bcast->s_addr || bcast->s_addr == addr->s_addr) && i->ifa_netmask)
      bcast->s_addr = addr->s_addr | ~((struct sockaddr_in *)i->ifa_netmask)->sin_addr.s_addr;
    if (!bcast->s_addr || bcast->s_addr == addr->s_addr) continue;   /* a /32: no one else there */
    rc = 0;
    break;
  }
  freeifaddrs(all);
  if (rc == 0) return 0;
  if (!found)
    snprintf(err, errlen, "no network interface '%s' here (those with an IPv4 address: %s)",
             iface, names[0] ? names : "none");
  else if (!v4)
    snprintf(err, errlen, "network interface '%s' has no IPv4 address (is it up?)", iface);
  else
    snprintf(err, errlen, "network interface '%s' has no broadcast address (loopback or "
             "point-to-point): discovery needs a broadcast network such as an Ethernet", iface);
  return -1;
}

int farm__udp_open(const char *iface, unsigned port, int listen, char *err, size_t errlen) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (s < 0) {
    snprintf(err, errlen, "cannot make a UDP socket: %s", strerror(errno));
    return -1;
  }
  int one = 1;
  if (setsockopt(s, SOL_SOCKET, SO_BINDTODEVICE, iface, (socklen_t)strlen(iface) + 1) < 0) {
    snprintf(err, errlen, "cannot bind a UDP socket to interface '%s': %s", iface, strerror(errno));
    goto fail;
  }
  if (listen) {
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_ANY) };
    if (bind(s, (struct sockaddr *)&sa, sizeof sa) < 0) {
      snprintf(err, errlen, "cannot listen on UDP port %u of interface '%s': %s", port, iface, strerror(errno));
      goto fail;
    }
  } else if (setsockopt(s, SOL_SOCKET, SO_BROADCAST, &one, sizeof one) < 0) {
    snprintf(err, errlen, "cannot broadcast on interface '%s': %s", iface, strerror(errno));
    goto fail;
  }
  return s;
fail:
  close(s);
  return -1;
}

/* ---- the node's side ---------------------------------------------------------------- */

#define MAX_JOINS 16

typedef struct join_to {
  char url[300], host[256];        /* where the client listens (its PULL), */
  unsigned port;
  struct sockaddr_in to;           /* ...found once, at the start (no DNS in the lobby's loop) */
  farm_link *push;
  char said[700];                  /* the last failure said (said once until it changes) */
} join_to;

struct farm_announcer {
  unsigned char key[FARM_KEYLEN];
  struct in_addr lobby;            /* the lobby's address; INADDR_ANY: every address */
  unsigned lobby_port;
  join_to joins[MAX_JOINS];
  int njoins;
  char iface[IFNAMSIZ];            /* --announce ("": none) */
  unsigned uport;
  int udp;
  char said[700];
  double next_join, next_udp;
};

static int is_loopback(struct in_addr a) { return (ntohl(a.s_addr) >> 24) == 127; }

/* host:port's IPv4 address (a name is looked up: at the start only). 0, or -1 with err. */
static int find_host(const char *host, unsigned port, struct sockaddr_in *to, char *err, size_t errlen) {
  struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_DGRAM }, *res = NULL;
  int g = getaddrinfo(host, NULL, &hints, &res);
  if (g != 0 || !res) {
    snprintf(err, errlen, "cannot find host '%.200s': %s", host, gai_strerror(g));
    return -1;
  }
  *to = *(struct sockaddr_in *)res->ai_addr;
  freeaddrinfo(res);
  to->sin_port = htons((uint16_t)port);
  return 0;
}

/* The address this host reaches to from (a UDP socket connected there says
   which, sending nothing and asking no one). 0, or -1 with err. */
static int route_to(const struct sockaddr_in *to, struct in_addr *src, char *err, size_t errlen) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), rc = -1;
  struct sockaddr_in me;
  socklen_t ml = sizeof me;
  if (s >= 0 && connect(s, (const struct sockaddr *)to, sizeof *to) == 0 &&
      getsockname(s, (struct sockaddr *)&me, &ml) == 0) {
    *src = me.sin_addr;
    rc = 0;
  } else {
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &to->sin_addr, ip, sizeof ip);
    snprintf(err, errlen, "no route to %s: %s", ip, strerror(errno));
  }
  if (s >= 0) close(s);
  return rc;
}

void farm__announcer_close(farm_announcer *a) {
  if (!a) return;
  for (int i = 0; i < a->njoins; i++) if (a->joins[i].push) farm__link_close(a->joins[i].push);
  if (a->udp >= 0) close(a->udp);
  sodium_memzero(a->key, sizeof a->key);
  free(a);
}

int farm__announcer_open(farm_announcer **out, const unsigned char *key, const char *listen,
                         const char *const *joins, int njoins, const char *iface, unsigned uport,
                         char *err, size_t errlen) {
  *out = NULL;
  if (njoins > MAX_JOINS) {
    snprintf(err, errlen, "--join: at most %d clients", MAX_JOINS);
    return -1;
  }
  farm_announcer *a = calloc(1, sizeof *a);
  if (!a) { snprintf(err, errlen, "out of memory"); return -1; }
  a->udp = -1;
  memcpy(a->key, key, FARM_KEYLEN);
  char host[256];
  int port = 0;
  if (sscanf(listen, "tcp://%255[^:]:%d", host, &port) != 2 || port < 1 || port > 65535) {
    snprintf(err, errlen, "the node's --listen '%.200s' is not tcp://ADDRESS:PORT", listen);
    goto fail;
  }
  a->lobby_port = (unsigned)port;
  if (!strcmp(host, "localhost")) snprintf(host, sizeof host, "127.0.0.1");
  if (!strcmp(host, "*")) snprintf(host, sizeof host, "0.0.0.0");
  if (inet_pton(AF_INET, host, &a->lobby) != 1) {
    snprintf(err, errlen, "--join and --announce need a node that listens on an IPv4 address "
             "(--listen tcp://0.0.0.0:%d, say), not on '%.200s'", port, host);
    goto fail;
  }
  for (int i = 0; i < njoins; i++) {
    join_to *t = &a->joins[a->njoins++];
    char jh[256];
    int jp = 0;
    if (sscanf(joins[i], "tcp://%255[^:]:%d", jh, &jp) != 2) {
      snprintf(err, errlen, "--join '%.200s' is not tcp://HOST:PORT", joins[i]);
      goto fail;
    }
    snprintf(t->host, sizeof t->host, "%s", jh);
    t->port = (unsigned)jp;
    struct in_addr via;
    char why[300], ip[INET_ADDRSTRLEN];
    if (find_host(jh, t->port, &t->to, why, sizeof why) < 0) {
      snprintf(err, errlen, "--join %s:%u: %s", jh, t->port, why);
      goto fail;
    }
    inet_ntop(AF_INET, &t->to.sin_addr, ip, sizeof ip);
    snprintf(t->url, sizeof t->url, "tcp://%s:%u", ip, t->port);
    if (is_loopback(a->lobby) && route_to(&t->to, &via, why, sizeof why) == 0 && !is_loopback(via)) {
      snprintf(err, errlen, "--join %s:%u: the node listens on %s, which that client cannot reach; "
               "--listen on an address it can (tcp://0.0.0.0:%u)", jh, t->port, host, a->lobby_port);
      goto fail;
    }
    if (farm__join_link_open(&t->push, t->url, 0, why, sizeof why) < 0) {
      snprintf(err, errlen, "--join %s:%u: %s", jh, t->port, why);
      goto fail;
    }
  }
  if (iface) {
    struct in_addr ia, bc;
    char why[400];
    snprintf(a->iface, sizeof a->iface, "%s", iface);
    a->uport = uport;
    if (farm__iface_addr(iface, &ia, &bc, why, sizeof why) < 0 ||
        (a->udp = farm__udp_open(iface, 0, 0, why, sizeof why)) < 0) {
      snprintf(err, errlen, "--announce %s: %s", iface, why);
      goto fail;
    }
    if (a->lobby.s_addr != htonl(INADDR_ANY) && a->lobby.s_addr != ia.s_addr) {
      char mine[INET_ADDRSTRLEN];
      inet_ntop(AF_INET, &ia, mine, sizeof mine);
      snprintf(err, errlen, "--announce %s: the node listens on %s, not on %s's address %s; "
               "--listen tcp://%s:%u or tcp://0.0.0.0:%u", iface, host, iface, mine, mine,
               a->lobby_port, a->lobby_port);
      goto fail;
    }
  }
  *out = a;
  return 0;
fail:
  farm__announcer_close(a);
  return -1;
}

/* A failure is said once, until another one (or none) comes. */
static void note_once(char *said, size_t saidlen, const char *what, char *note, size_t n) {
  if (!strcmp(said, what)) return;
  snprintf(said, saidlen, "%s", what);
  if (*what && !*note) snprintf(note, n, "%s", what);
}

double farm__announcer_tick(farm_announcer *a, double now, char *note, size_t n) {
  note[0] = 0;
  unsigned char rec[FARM_ANNOUNCE_LEN];
  int any = a->lobby.s_addr == htonl(INADDR_ANY);
  if (a->njoins && now >= a->next_join) {
    a->next_join = now + FARM_JOIN_EVERY;
    for (int i = 0; i < a->njoins; i++) {
      join_to *t = &a->joins[i];
      struct in_addr me = a->lobby;
      char why[300] = "", line[700] = "";
      if (!any || route_to(&t->to, &me, why, sizeof why) == 0) {
        farm__announce_make(rec, a->key, me, a->lobby_port, farm__announce_clock());
        /* nobody there yet (or any more): it goes nowhere, and is sent again */
        farm__link_send(t->push, rec, sizeof rec, 1);
      } else {
        snprintf(line, sizeof line, "--join %s:%u: %s (trying again every %.0f s)", t->host, t->port,
                 why, FARM_JOIN_EVERY);
      }
      note_once(t->said, sizeof t->said, line, note, n);
    }
  }
  if (a->udp >= 0 && now >= a->next_udp) {
    a->next_udp = now + FARM_ANNOUNCE_EVERY;
    struct in_addr ia, bc;
    char why[400] = "", line[600] = "";
    if (farm__iface_addr(a->iface, &ia, &bc, why, sizeof why) == 0) {
      farm__announce_make(rec, a->key, any ? ia : a->lobby, a->lobby_port, farm__announce_clock());
      struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons((uint16_t)a->uport), .sin_addr = bc };
      if (sendto(a->udp, rec, sizeof rec, MSG_DONTWAIT, (struct sockaddr *)&to, sizeof to) < 0 && errno != EAGAIN)
        snprintf(line, sizeof line, "--announce %s: cannot broadcast: %s", a->iface, strerror(errno));
    } else {
      snprintf(line, sizeof line, "--announce %s: %s (trying again every %.0f s)", a->iface, why,
               FARM_ANNOUNCE_EVERY);
    }
    note_once(a->said, sizeof a->said, line, note, n);
  }
  double next = 3600;
  if (a->njoins && a->next_join - now < next) next = a->next_join - now;
  if (a->udp >= 0 && a->next_udp - now < next) next = a->next_udp - now;
  return next > 0 ? next : 0;
}
