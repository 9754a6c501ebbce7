/*
 * transport.c -- links over nanomsg (see transport.h for why it looks like this).
 *
 * Lessons kept here: NN_RCVMAXSIZE defaults to 1 MiB and silently drops larger
 * messages, so every link sets it; ipc:// rather than inproc:// between
 * processes; readiness comes from NN_RCVFD/NN_SNDFD so one poll() serves all.
 *
 * Threads: no thread of its own (nanomsg has its own); a link is used by
 * whoever owns it (the engine's lock holder for a peer's, a node's main
 * thread, a worker's link thread).
 */
#include <dirent.h>
#include <errno.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <string.h>
#include <stdio.h>
#include <stdlib.h>
#include <nanomsg/nn.h>
#include <nanomsg/pair.h>
#include <nanomsg/reqrep.h>
#include <nanomsg/pipeline.h>
#include <sodium.h>
#include "farm.h"
#include "clock.h"
#include "transport.h"

#define TAGLEN 16                  /* both AEADs append a 16-byte tag */

struct farm_link {
  int sock;
  int ep, bound;                   /* its endpoint, and whether it binds */
  char url[256];                   /* (for farm__link_rebind) */
  int rcvfd, sndfd;
  int cipher;                      /* 0: plain; FARM_SEAL_AES or FARM_SEAL_CHACHA */
  unsigned char ktx[32], krx[32];  /* keys of the two directions */
  uint64_t ntx, nrx;               /* frames sealed / opened so far: the nonces */
  double last_recv;
  unsigned long tcp_inode;         /* its TCP connection's socket (farm__link_tcp_up); 0: none found */
  int tcp_fd;                      /* ...the descriptor nanomsg holds it by, when found (-1: not) */
  int tcp_looked;                  /* ...looked for once */
  void *held;                      /* a sealed frame nanomsg could not take yet */
  unsigned char rejected[256];     /* the start of the last frame that did not open */
  size_t nrejected;
};

static void nonce_of(unsigned char nonce[12], uint64_t n) {
  for (int i = 0; i < 8; i++) nonce[i] = (unsigned char)(n >> (8 * i));
  nonce[8] = nonce[9] = nonce[10] = nonce[11] = 0;
}

void farm__link_seal(farm_link *l, int cipher, const unsigned char ktx[32], const unsigned char krx[32]) {
  l->cipher = cipher;
  memcpy(l->ktx, ktx, 32);
  memcpy(l->krx, krx, 32);
  l->ntx = l->nrx = 0;
  l->last_recv = 0;
}

void farm__link_unseal(farm_link *l) {
  /* nothing of the old session may leak into the next: a frame held back under
     its key, when it last spoke, the frame it could not open */
  if (l->held) { nn_freemsg(l->held); l->held = NULL; }
  l->last_recv = 0;
  l->nrejected = 0;
  sodium_memzero(l->ktx, sizeof l->ktx);
  sodium_memzero(l->krx, sizeof l->krx);
  l->cipher = 0;
}

int farm__link_sealed(const farm_link *l) { return l->cipher; }

const void *farm__link_rejected(const farm_link *l, size_t *n) {
  *n = l->nrejected;
  return l->nrejected ? l->rejected : NULL;
}
double farm__link_last_recv(const farm_link *l) { return l->last_recv; }

/* ---- the connection under a link -------------------------------------------------- */

/* The descriptor of this process that holds socket inode, or -1. */
static int own_socket(unsigned long inode) {
  DIR *d = opendir("/proc/self/fd");
  struct dirent *de;
  int found = -1;
  while (d && found < 0 && (de = readdir(d))) {
    char path[300], link[64];
    snprintf(path, sizeof path, "/proc/self/fd/%s", de->d_name);
    ssize_t k = readlink(path, link, sizeof link - 1);
    unsigned long i;
    if (k <= 0) continue;
    link[k] = 0;
    if (sscanf(link, "socket:[%lu]", &i) == 1 && i == inode) found = atoi(de->d_name);
  }
  if (d) closedir(d);
  return found;
}

/* The kernel's IPv4 TCP table, line by line: with inode 0 the socket connected
   to addr:port (network order, host order) that is ours (then *fd is the
   descriptor that holds it); else that inode's state. Returns its state (1:
   established), or 0 when none matched. The table holds every connection of
   the network namespace: read once per link, not at each look (below). */
static int tcp_lookup(uint32_t addr, unsigned port, unsigned long *inode, int *fd) {
  FILE *f = fopen("/proc/self/net/tcp", "re");
  char line[512];
  int state = 0;
  while (f && !state && fgets(line, sizeof line, f)) {
    unsigned raddr, rport, st;
    unsigned long ino;
    if (sscanf(line, " %*d: %*8X:%*4X %8X:%4X %2X %*s %*s %*s %*s %*s %lu", &raddr, &rport, &st, &ino) != 4 || !ino)
      continue;
    if (*inode) {
      if (ino == *inode) state = (int)st;
    } else if (raddr == addr && rport == port && st == 1 && (*fd = own_socket(ino)) >= 0) {
      *inode = ino;
      state = (int)st;
    }
  }
  if (f) fclose(f);
  return state;
}

int farm__link_tcp_up(farm_link *l) {
  if (!l->tcp_looked) {
    l->tcp_looked = 1;
    char host[64];
    int port;
    struct in_addr a;
    if (!l->bound && sscanf(l->url, "tcp://%63[0-9.]:%d", host, &port) == 2 && inet_pton(AF_INET, host, &a) == 1)
      tcp_lookup(a.s_addr, (unsigned)port, &l->tcp_inode, &l->tcp_fd);
  }
  if (!l->tcp_inode) return -1;
  /* The socket's own state, through the descriptor nanomsg holds it by, while
     that descriptor is still that socket (fstat names its inode; once nanomsg
     closed it, the number may hold another file); no descriptor: the table. */
  struct stat st;
  struct tcp_info ti;
  socklen_t n = sizeof ti;
  if (l->tcp_fd >= 0) {
    if (fstat(l->tcp_fd, &st) != 0 || !S_ISSOCK(st.st_mode) || (unsigned long)st.st_ino != l->tcp_inode)
      return 0;                    /* closed: that socket is gone */
    if (getsockopt(l->tcp_fd, IPPROTO_TCP, TCP_INFO, &ti, &n) == 0 && n >= sizeof ti.tcpi_state)
      return ti.tcpi_state == 1;   /* TCP_ESTABLISHED */
  }
  return tcp_lookup(0, 0, &l->tcp_inode, &l->tcp_fd) == 1;
}

int farm__seal_best(void) {
  return crypto_aead_aes256gcm_is_available() ? FARM_SEAL_AES : FARM_SEAL_CHACHA;
}

const char *farm__link_error(void) { return nn_strerror(nn_errno()); }

static int open_as(farm_link **out, int proto, const char *url, int bind, size_t maxmsg,
                   char *err, size_t errlen) {
  farm_link *l = calloc(1, sizeof *l);
  if (!l) return FARM_ENOMEM;
  l->sock = nn_socket(AF_SP, proto);
  l->ep = -1;
  l->tcp_fd = -1;
  if (l->sock < 0) goto fail;
  if (farm__link_maxmsg(l, maxmsg) < 0) goto fail;
  int linger = 0;   /* close() does not wait for unsent messages to a dead peer */
  nn_setsockopt(l->sock, NN_SOL_SOCKET, NN_LINGER, &linger, sizeof linger);
  int ivl = 20;     /* reconnect quickly: a worker connects right after exec */
  nn_setsockopt(l->sock, NN_SOL_SOCKET, NN_RECONNECT_IVL, &ivl, sizeof ivl);
  if (proto == NN_REQ) {
    /* a hello lost in a flood is asked again, the same request (the lobby
       answers a repeated hello the same way) */
    int resend = 1000;
    nn_setsockopt(l->sock, NN_REQ, NN_REQ_RESEND_IVL, &resend, sizeof resend);
  }
  if (proto == NN_PAIR && strncmp(url, "tcp://", 6) == 0) {
    int big = 4 << 20;   /* megabyte arguments stream without stalls between hosts */
    nn_setsockopt(l->sock, NN_SOL_SOCKET, NN_SNDBUF, &big, sizeof big);
    nn_setsockopt(l->sock, NN_SOL_SOCKET, NN_RCVBUF, &big, sizeof big);
  }
  snprintf(l->url, sizeof l->url, "%s", url);
  l->bound = bind;
  if ((l->ep = bind ? nn_bind(l->sock, url) : nn_connect(l->sock, url)) < 0) goto fail;
  size_t sz = sizeof l->rcvfd;
  l->rcvfd = l->sndfd = -1;        /* (a PUSH only sends, a PULL only receives) */
  if (proto != NN_PUSH && nn_getsockopt(l->sock, NN_SOL_SOCKET, NN_RCVFD, &l->rcvfd, &sz) < 0) goto fail;
  sz = sizeof l->sndfd;
  if (proto != NN_PULL && nn_getsockopt(l->sock, NN_SOL_SOCKET, NN_SNDFD, &l->sndfd, &sz) < 0) goto fail;
  *out = l;
  return 0;
fail:
  snprintf(err, errlen, "cannot %s %s: %s", bind ? "listen on" : "connect to", url,
           nn_strerror(nn_errno()));
  if (l->sock >= 0) nn_close(l->sock);
  free(l);
  return FARM_ELINK;
}

int farm__link_open(farm_link **out, const char *url, int bind, size_t maxmsg,
                    char *err, size_t errlen) {
  return open_as(out, NN_PAIR, url, bind, maxmsg, err, errlen);
}

int farm__lobby_link_open(farm_link **out, const char *url, int bind, char *err, size_t errlen) {
  return open_as(out, bind ? NN_REP : NN_REQ, url, bind, FARM_LOBBY_MAXMSG, err, errlen);
}

int farm__join_link_open(farm_link **out, const char *url, int bind, char *err, size_t errlen) {
  return open_as(out, bind ? NN_PULL : NN_PUSH, url, bind, FARM_LOBBY_MAXMSG, err, errlen);
}

int farm__link_maxmsg(farm_link *l, size_t maxmsg) {
  int max = maxmsg == 0 || maxmsg > 0x7fffffff ? -1 : (int)maxmsg;
  return nn_setsockopt(l->sock, NN_SOL_SOCKET, NN_RCVMAXSIZE, &max, sizeof max) < 0 ? FARM_ELINK : 0;
}

int farm__link_rebind(farm_link *l) {
  if (l->ep >= 0) nn_shutdown(l->sock, l->ep);
  for (int i = 0; i < 40; i++) {       /* the port just closed may be busy a moment */
    l->ep = l->bound ? nn_bind(l->sock, l->url) : nn_connect(l->sock, l->url);
    if (l->ep >= 0 || nn_errno() != EADDRINUSE) break;
    usleep(25000);
  }
  return l->ep >= 0 ? 0 : FARM_ELINK;
}

void farm__link_close(farm_link *l) {
  if (!l) return;
  farm__link_unseal(l);            /* (frees a frame held back) */
  nn_close(l->sock);
  free(l);
}

/* Send the frame held back, if any: 0 when none is left. */
static int flush_held(farm_link *l, int nowait) {
  while (l->held) {
    int rc = nn_send(l->sock, &l->held, NN_MSG, nowait ? NN_DONTWAIT : 0);
    if (rc >= 0) { l->held = NULL; return 0; }
    if (nn_errno() == EAGAIN) return FARM_EAGAIN;
    if (nn_errno() == EINTR && !nowait) continue;
    return FARM_ELINK;
  }
  return 0;
}

int farm__link_flush(farm_link *l) { return l->held ? flush_held(l, 1) : 0; }
int farm__link_held(const farm_link *l) { return l->held != NULL; }

int farm__link_send_queued(farm_link *l, farm_buf *q, const void *msg, size_t n) {
  if (!q->n) {
    int rc = farm__link_send(l, msg, n, 1);
    if (rc != FARM_EAGAIN) return rc;
  }
  if (farm__buf_u64le(q, n) < 0 || farm__buf_put(q, msg, n) < 0) return FARM_ENOMEM;
  return 0;
}

int farm__link_flush_queued(farm_link *l, farm_buf *q) {
  size_t at = 0;
  int rc = farm__link_flush(l);
  while (!rc && at < q->n) {
    uint64_t n;
    memcpy(&n, q->p + at, 8);
    rc = farm__link_send(l, q->p + at + 8, (size_t)n, 1);
    if (!rc) at += 8 + (size_t)n;
  }
  if (at) {
    memmove(q->p, q->p + at, q->n - at);
    q->n -= at;
  }
  return rc;
}

/* Seal n bytes into a nanomsg message of its own (sent without another copy).
   A frame nanomsg cannot take at once is held by the link (and counts as
   sent): sealing costs more than copying, so it is never done twice. */
static int send_sealed(farm_link *l, const void *p, size_t n, int nowait) {
  int rc = flush_held(l, nowait);
  if (rc < 0) return rc;
  unsigned char nonce[12];
  nonce_of(nonce, l->ntx);
  unsigned char *m = nn_allocmsg(n + TAGLEN, 0);
  if (!m) return FARM_ENOMEM;
  unsigned long long cn;
  if (l->cipher == FARM_SEAL_AES)
    crypto_aead_aes256gcm_encrypt(m, &cn, p, n, NULL, 0, NULL, nonce, l->ktx);
  else
    crypto_aead_chacha20poly1305_ietf_encrypt(m, &cn, p, n, NULL, 0, NULL, nonce, l->ktx);
  l->ntx++;
  l->held = m;
  rc = flush_held(l, nowait);
  return rc == FARM_EAGAIN ? 0 : rc;
}

/* Open a sealed frame where it lies; a frame that does not open (altered,
   injected, replayed, out of order, or under another key) fails the link. */
static int open_sealed(farm_link *l, unsigned char *m, size_t *n) {
  unsigned char nonce[12];
  unsigned long long pn;
  /* a small frame that does not open may be a new peer's plain hello (nanomsg
     replaced a dead connection with a new one): keep it for farm__link_rejected */
  l->nrejected = *n <= sizeof l->rejected ? *n : 0;
  memcpy(l->rejected, m, l->nrejected);
  if (*n < TAGLEN) return FARM_EAUTH;
  nonce_of(nonce, l->nrx);
  int rc = l->cipher == FARM_SEAL_AES
    ? crypto_aead_aes256gcm_decrypt(m, &pn, NULL, m, *n, NULL, 0, nonce, l->krx)
    : crypto_aead_chacha20poly1305_ietf_decrypt(m, &pn, NULL, m, *n, NULL, 0, nonce, l->krx);
  if (rc != 0) return FARM_EAUTH;
  l->nrejected = 0;
  l->nrx++;
  *n = (size_t)pn;
  return 0;
}

int farm__link_send(farm_link *l, const void *p, size_t n, int nowait) {
  if (l->cipher) return send_sealed(l, p, n, nowait);
  for (;;) {
    int rc = nn_send(l->sock, p, n, nowait ? NN_DONTWAIT : 0);
    if (rc >= 0) return 0;
    if (nn_errno() == EAGAIN) return FARM_EAGAIN;
    if (nn_errno() == EINTR && !nowait) continue;
    return FARM_ELINK;
  }
}

int farm__link_recv(farm_link *l, void **msg, size_t *n, int nowait) {
  for (;;) {
    void *buf = NULL;
    int rc = nn_recv(l->sock, &buf, NN_MSG, nowait ? NN_DONTWAIT : 0);
    if (rc >= 0) {
      *msg = buf;
      *n = (size_t)rc;
      if (l->cipher && open_sealed(l, buf, n) < 0) { nn_freemsg(buf); return FARM_EAUTH; }
      if (l->cipher) l->last_recv = farm__now();
      return 0;
    }
    if (nn_errno() == EAGAIN) return FARM_EAGAIN;
    if (nn_errno() == EINTR && !nowait) continue;
    return FARM_ELINK;
  }
}

void farm__link_free(void *msg) { if (msg) nn_freemsg(msg); }
int farm__link_rcvfd(farm_link *l) { return l->rcvfd; }
int farm__link_sndfd(farm_link *l) { return l->sndfd; }

int farm__free_port(const char *addr) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sa = { .sin_family = AF_INET };
  socklen_t sl = sizeof sa;
  int port = -1;
  if (fd >= 0 && (!addr || inet_pton(AF_INET, addr, &sa.sin_addr) == 1) &&
      bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
      getsockname(fd, (struct sockaddr *)&sa, &sl) == 0) port = ntohs(sa.sin_port);
  if (fd >= 0) close(fd);
  return port;
}
