/*
 * join.c -- a client that nodes join while it runs (join.h says what it does;
 * announce.h what a record is and what a stranger can do with one).
 *
 * One thread polls the PULL socket (--listen), the UDP socket (--discover) and
 * an eventfd that farm__join_close rings. Every message is checked whole before
 * anything in it is used; at most a few records are read per wake-up from each
 * socket, so a flood costs a MAC per message and holds nothing else up (the
 * engine runs on threads of its own).
 *
 * Threads: the join thread owns everything here after farm__join_open; the
 * caller's thread only starts and stops it.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sodium.h>
#include "farm.h"
#include "announce.h"
#include "clock.h"
#include "join.h"
#include "session.h"
#include "transport.h"

#define JOIN_AGAIN 10.0            /* seconds before a node's record is acted on again */
#define LOG_EVERY 60.0             /* a source's bad records are said once a minute */
#define NLOGGED 32
#define LINES_A_MINUTE 10          /* ...and no more than this many lines of them in all */
#define READS 64                   /* messages read from a socket per wake-up */

typedef struct joined { struct in_addr addr; unsigned port; double at; } joined;
typedef struct logged { char src[48]; double at; } logged;

struct farm_join {
  farm_join_opts o;
  unsigned char key[FARM_KEYLEN];
  farm_link *pull;                 /* --listen (NULL: none) */
  int udp;                         /* --discover (-1: none) */
  char iface[16];                  /* (IFNAMSIZ) */
  int stop_fd;
  pthread_t th;
  int started;
  joined nodes[FARM_JOIN_MAX];
  int nnodes, full_told;
  logged said[NLOGGED];
  double minute;                   /* the minute lines are counted in (farm__now), */
  int lines;                       /* ...and the lines said in it */
};

static void say(farm_join *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Once per source per minute, and LINES_A_MINUTE in all (datagrams' sources
   are easy to forge): a stranger who keeps at it fills no terminal. now is
   farm__now()'s (a clock set back changes nothing). */
static int worth_saying(farm_join *j, const char *src, double now) {
  if (now - j->minute >= LOG_EVERY) { j->minute = now; j->lines = 0; }
  if (j->lines > LINES_A_MINUTE) return 0;
  logged *old = &j->said[0];
  for (int i = 0; i < NLOGGED; i++) {
    if (!strcmp(j->said[i].src, src)) {
      if (now - j->said[i].at < LOG_EVERY) return 0;
      old = &j->said[i];
      break;
    }
    if (j->said[i].at < old->at) old = &j->said[i];
  }
  snprintf(old->src, sizeof old->src, "%s", src);
  old->at = now;
  if (++j->lines > LINES_A_MINUTE) {
    say(j, "more announcements were ignored; no more are said this minute");
    return 0;
  }
  return 1;
}

static void say(farm_join *j, const char *fmt, ...) {
  if (j->o.quiet) return;
  char line[600];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (j->o.clear) j->o.clear(j->o.arg);
  fprintf(stderr, "farm: %s\n", line);
}

/* One message from src (where it came from, in words): act on it. */
static void heard(farm_join *j, const void *msg, size_t n, const char *src) {
  double now = farm__now();        /* (the wall clock is only for the record's age) */
  farm_announce a;
  char err[300];
  if (farm__announce_check(msg, n, j->key, farm__announce_clock(), &a, err, sizeof err) < 0) {
    if (worth_saying(j, src, now))
      say(j, "ignored an announcement from %s: %s (said once a minute)", src, err);
    return;
  }
  joined *k = NULL;
  for (int i = 0; i < j->nnodes && !k; i++)
    if (j->nodes[i].addr.s_addr == a.addr.s_addr && j->nodes[i].port == a.port) k = &j->nodes[i];
  if (k && now - k->at < JOIN_AGAIN) return;
  char ip[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &a.addr, ip, sizeof ip);
  if (!k) {
    if (j->nnodes == FARM_JOIN_MAX) {
      if (!j->full_told) say(j, "node://%s:%u announced itself, but %d nodes have joined this run: "
                             "no more are taken", ip, a.port, FARM_JOIN_MAX);
      j->full_told = 1;
      return;
    }
    k = &j->nodes[j->nnodes++];
    k->addr = a.addr;
    k->port = a.port;
    say(j, "node://%s:%u announced itself (%s): adding it", ip, a.port, src);
  }
  k->at = now;
  if (j->o.add(j->o.arg, ip, a.port, err, sizeof err) < 0) {
    char who[48];
    snprintf(who, sizeof who, "node://%s:%u", ip, a.port);
    if (worth_saying(j, who, now)) say(j, "%s: %s", who, err);
  }
}

static void read_pull(farm_join *j) {
  for (int i = 0; i < READS; i++) {
    void *m;
    size_t n;
    if (farm__link_recv(j->pull, &m, &n, 1) < 0) return;
    heard(j, m, n, "--listen");
    farm__link_free(m);
  }
}

static void read_udp(farm_join *j) {
  for (int i = 0; i < READS; i++) {
    unsigned char buf[FARM_ANNOUNCE_LEN + 1];
    struct sockaddr_in from;
    socklen_t fl = sizeof from;
    /* MSG_TRUNC: the datagram's whole length, so a longer one is not taken
       for a record by its first bytes */
    ssize_t r = recvfrom(j->udp, buf, sizeof buf, MSG_TRUNC, (struct sockaddr *)&from, &fl);
    if (r < 0) return;
    char src[48], ip[INET_ADDRSTRLEN + 1] = "?";
    if (fl >= sizeof from && from.sin_family == AF_INET) inet_ntop(AF_INET, &from.sin_addr, ip, sizeof ip);
    snprintf(src, sizeof src, "%s on %s", ip, j->iface);
    heard(j, buf, (size_t)r, src);
  }
}

static void *join_main(void *arg) {
  farm_join *j = arg;
  for (;;) {
    struct pollfd fds[3] = {
      { .fd = j->stop_fd, .events = POLLIN },
      { .fd = j->pull ? farm__link_rcvfd(j->pull) : -1, .events = POLLIN },
      { .fd = j->udp, .events = POLLIN },
    };
    if (poll(fds, 3, 1000) < 0 && errno != EINTR) break;
    if (fds[0].revents) break;
    if (fds[1].revents) read_pull(j);
    if (fds[2].revents) read_udp(j);
  }
  return NULL;
}

int farm__join_url(const char *opt, const char *arg, char *url, size_t n, char *err, size_t errlen) {
  const char *h = strncmp(arg, "tcp://", 6) == 0 ? arg + 6 : arg;
  const char *colon = strrchr(h, ':');
  char host[256];
  const char *port = colon ? colon + 1 : h;
  size_t hl = colon ? (size_t)(colon - h) : 0;
  char *end;
  long p = strtol(port, &end, 10);
  if (!*port || *end || p < 1 || p > 65535 || (colon && hl == 0) || hl >= sizeof host ||
      memchr(h, '/', hl) || h[0] == '[') {
    snprintf(err, errlen, "%s takes HOST:PORT, tcp://HOST:PORT or a PORT (on 127.0.0.1), "
             "with a port from 1 to 65535 and an IPv4 address or name, not '%.200s'", opt, arg);
    return -1;
  }
  if (colon) memcpy(host, h, hl);
  host[hl] = 0;
  snprintf(url, n, "tcp://%s:%ld", hl ? host : "127.0.0.1", p);
  return 0;
}

void farm__join_close(farm_join *j) {
  if (!j) return;
  if (j->started) {
    uint64_t one = 1;
    if (write(j->stop_fd, &one, sizeof one) < 0) { /* the thread sees it within a second anyway */ }
    pthread_join(j->th, NULL);
  }
  if (j->pull) farm__link_close(j->pull);
  if (j->udp >= 0) close(j->udp);
  if (j->stop_fd >= 0) close(j->stop_fd);
  sodium_memzero(j->key, sizeof j->key);
  free(j);
}

int farm__join_open(farm_join **out, const farm_join_opts *o, char *err, size_t errlen) {
  *out = NULL;
  farm_join *j = calloc(1, sizeof *j);
  if (!j) { snprintf(err, errlen, "out of memory"); return FARM_ENOMEM; }
  j->o = *o;
  j->o.listen = j->o.discover = NULL;    /* (the caller's strings: not kept) */
  memcpy(j->key, o->key, FARM_KEYLEN);
  j->o.key = NULL;
  j->udp = -1;
  j->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  int rc = FARM_EINVAL;
  if (j->stop_fd < 0) { snprintf(err, errlen, "eventfd: %s", strerror(errno)); goto fail; }
  if (o->listen) {
    char url[300], why[400];
    if (farm__join_url("--listen", o->listen, url, sizeof url, err, errlen) < 0) goto fail;
    if ((rc = farm__join_link_open(&j->pull, url, 1, why, sizeof why)) < 0) {
      snprintf(err, errlen, "--listen %s: %s%s", o->listen, why,
               strstr(why, "in use") ? " (another run there? pick another port)" : "");
      goto fail;
    }
  }
  if (o->discover) {
    unsigned port;
    struct in_addr a, b;
    char why[400];
    rc = FARM_EINVAL;
    if (farm__iface_parse("--discover", o->discover, j->iface, &port, err, errlen) < 0) goto fail;
    if (farm__iface_addr(j->iface, &a, &b, why, sizeof why) < 0 ||
        (j->udp = farm__udp_open(j->iface, port, 1, why, sizeof why)) < 0) {
      snprintf(err, errlen, "--discover %s: %s", o->discover, why);
      goto fail;
    }
  }
  if (pthread_create(&j->th, NULL, join_main, j) != 0) {
    snprintf(err, errlen, "cannot start the thread that hears nodes join");
    rc = FARM_ENOMEM;
    goto fail;
  }
  j->started = 1;
  *out = j;
  return 0;
fail:
  farm__join_close(j);
  return rc < 0 ? rc : FARM_EINVAL;
}
