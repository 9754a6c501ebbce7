/*
 * session.c -- farm keys, and the handshake that seals a node link (see
 * session.h for the protocol and why it looks like this).
 *
 * Threads: the client's connecting threads (one per node, peer_node.c) and
 * a node's main thread; no state shared between calls.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sodium.h>
#include "farm.h"
#include "clock.h"
#include "proto.h"
#include "session.h"

/* ---- keys -------------------------------------------------------------------- */

int farm__key_parse(const char *text, size_t n, unsigned char key[FARM_KEYLEN]) {
  size_t bin = 0;
  const char *end = NULL;
  while (n && (text[n - 1] == '\n' || text[n - 1] == '\r' || text[n - 1] == ' ' || text[n - 1] == '\t')) n--;
  while (n && (*text == ' ' || *text == '\t')) { text++; n--; }
  if (n != 2 * FARM_KEYLEN) return -1;
  if (sodium_hex2bin(key, FARM_KEYLEN, text, n, NULL, &bin, &end) != 0 || bin != FARM_KEYLEN) return -1;
  return 0;
}

void farm__key_hex(const unsigned char key[FARM_KEYLEN], char out[2 * FARM_KEYLEN + 1]) {
  sodium_bin2hex(out, 2 * FARM_KEYLEN + 1, key, FARM_KEYLEN);
}

int farm__key_load(const char *path, unsigned char key[FARM_KEYLEN], char *err, size_t errlen) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    snprintf(err, errlen, "cannot read key file '%s': %s; make one with: farm keygen %s",
             path, strerror(errno), path);
    return FARM_EINVAL;
  }
  struct stat st;
  char text[256];
  ssize_t got = 0;
  if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    close(fd);
    snprintf(err, errlen, "key file '%s' is a directory; give the key file itself (make one with: "
             "farm keygen FILE)", path);
    return FARM_EINVAL;
  }
  if (fstat(fd, &st) == 0 && (st.st_mode & 077)) {
    close(fd);
    snprintf(err, errlen, "key file '%s' can be read by others (mode %03o); run: chmod 600 %s",
             path, (unsigned)(st.st_mode & 0777), path);
    return FARM_EINVAL;
  }
  got = read(fd, text, sizeof text - 1);
  close(fd);
  int rc = got > 0 ? farm__key_parse(text, (size_t)got, key) : -1;
  sodium_memzero(text, sizeof text);
  if (rc < 0) {
    snprintf(err, errlen, "key file '%s' does not hold a farm key (64 hex digits); make one with: farm keygen FILE", path);
    return FARM_EINVAL;
  }
  return 0;
}

int farm__key_write(const char *path, char *err, size_t errlen) {
  unsigned char key[FARM_KEYLEN];
  char hex[2 * FARM_KEYLEN + 2];
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    if (errno == EEXIST) snprintf(err, errlen, "'%s' exists; remove it first or name another file", path);
    else snprintf(err, errlen, "cannot write key file '%s': %s", path, strerror(errno));
    return FARM_EINVAL;
  }
  randombytes_buf(key, sizeof key);
  farm__key_hex(key, hex);
  strcat(hex, "\n");
  ssize_t w = write(fd, hex, strlen(hex));
  int bad = w != (ssize_t)strlen(hex) || fchmod(fd, 0600) != 0;
  bad |= close(fd) != 0;
  sodium_memzero(key, sizeof key);
  sodium_memzero(hex, sizeof hex);
  if (bad) {
    snprintf(err, errlen, "cannot write key file '%s': %s", path, strerror(errno));
    unlink(path);
    return FARM_EINVAL;
  }
  return 0;
}

/* ---- proofs and session keys ---------------------------------------------------- */

static void derive(const unsigned char *key, const char *label, const unsigned char *nc,
                   const unsigned char *nn, int cipher, unsigned char *out, size_t outlen) {
  crypto_generichash_state st;
  unsigned char c = (unsigned char)cipher;
  crypto_generichash_init(&st, key, FARM_KEYLEN, outlen);
  crypto_generichash_update(&st, (const unsigned char *)label, strlen(label));
  crypto_generichash_update(&st, nc, FARM_NONCELEN);
  crypto_generichash_update(&st, nn, FARM_NONCELEN);
  crypto_generichash_update(&st, &c, 1);
  crypto_generichash_final(&st, out, outlen);
}

static void seal(farm_link *l, const unsigned char *key, const unsigned char *nc,
                 const unsigned char *nn, int cipher, int client) {
  unsigned char k[64];
  derive(key, "farm keys", nc, nn, cipher, k, sizeof k);
  if (client) farm__link_seal(l, cipher, k, k + 32);
  else farm__link_seal(l, cipher, k + 32, k);
  sodium_memzero(k, sizeof k);
}

/* Send by `until` at most: a peer that went away must not hold us up. */
static int send_until(farm_link *l, farm_buf *b, double until) {
  int rc;
  while ((rc = farm__link_send(l, b->p, b->n, 1)) == FARM_EAGAIN && farm__now() < until) {
    struct pollfd pfd = { .fd = farm__link_sndfd(l), .events = POLLIN };
    poll(&pfd, 1, 50);
  }
  farm__buf_free(b);
  return rc;
}

static int send_msg(farm_link *l, farm_buf *b) { return send_until(l, b, farm__now() + 2.0); }

static void refuse(farm_link *l, const char *why) {
  farm_buf b;
  farm__buf_init(&b);
  farm__msg_begin(&b, FARM_MSG_AUTHNO);
  farm__buf_str(&b, why, strlen(why));
  send_msg(l, &b);
}

/* ---- the client ----------------------------------------------------------------- */

/* AUTH1 in b, with a fresh nonce (left in nc) and who we are. */
static void put_hello(farm_buf *b, int cipher, unsigned char nc[FARM_NONCELEN]) {
  char who[128], host[64] = "?";
  gethostname(host, sizeof host - 1);
  snprintf(who, sizeof who, "%s pid %ld", host, (long)getpid());
  randombytes_buf(nc, FARM_NONCELEN);
  farm__msg_begin(b, FARM_MSG_AUTH1);
  farm__buf_u8(b, (uint8_t)cipher);
  farm__buf_put(b, nc, FARM_NONCELEN);
  farm__buf_str(b, who, strlen(who));
}

/* The next message, within the time left (plain: the link is not sealed yet). */
static int recv_until(farm_link *l, double until, void **m, size_t *n) {
  for (;;) {
    int rc = farm__link_recv(l, m, n, 1);
    if (rc != FARM_EAGAIN) return rc;
    double left = until - farm__now();
    if (left <= 0) return FARM_ETIMEDOUT;
    struct pollfd pfd = { .fd = farm__link_rcvfd(l), .events = POLLIN };
    poll(&pfd, 1, (int)(left * 1e3) + 1);
  }
}

/* An AUTHNO or a message of another version, in words; 0 if m is neither. */
static int refused_why(const void *m, size_t n, char *err, size_t errlen) {
  const unsigned char *h = m;
  if (n >= 4 && h[0] == 'F' && h[1] == 'm' && h[2] != FARM_PROTOCOL) {
    snprintf(err, errlen, "the node speaks protocol version %d, this farm speaks %d; "
             "run the same farm release on both sides", h[2], FARM_PROTOCOL);
    return FARM_EVERSION;
  }
  farm_rd r;
  char e2[64];
  if (farm__msg_open(&r, m, n, e2, sizeof e2) != FARM_MSG_AUTHNO) return 0;
  size_t k;
  const char *why = farm__rd_str(&r, &k);
  if (!why) why = "", k = 0;
  snprintf(err, errlen, "the node refused us: %.*s", (int)(k > 200 ? 200 : k), why);
  if (k >= 13 && memcmp(why, "protocol vers", 13) == 0) return FARM_EVERSION;
  return FARM_EAUTH;
}

int farm__session_client(farm_link *l, const unsigned char key[FARM_KEYLEN], double timeout,
                         char *err, size_t errlen) {
  double until = farm__now() + timeout;
  unsigned char nc[FARM_NONCELEN], proof[32], want[32];
  int cipher = farm__seal_best();
  farm_buf b;
  farm__buf_init(&b);
  put_hello(&b, cipher, nc);
  int sent = send_msg(l, &b);
  if (sent == FARM_EAGAIN) {       /* the port answered, but no farm node took the link */
    snprintf(err, errlen, "no answer (no farm node took the link)");
    return FARM_ETIMEDOUT;
  }
  if (sent < 0) { snprintf(err, errlen, "cannot send: %s", farm__link_error()); return FARM_ELINK; }
  void *m;
  size_t n;
  farm_rd r;
  const unsigned char *echo;
  int type;
  for (;;) {                       /* an answer to an earlier hello of ours is skipped */
    int rc = recv_until(l, until, &m, &n);
    if (rc == FARM_ETIMEDOUT) {
      snprintf(err, errlen, "no answer within %g s (what connected is not a farm node of this run)",
               timeout);
      return rc;
    }
    if (rc < 0) { snprintf(err, errlen, "link failed: %s", farm__link_error()); return FARM_ELINK; }
    char e2[128];
    type = farm__msg_open(&r, m, n, e2, sizeof e2);
    if (type != FARM_MSG_AUTH2) {
      rc = refused_why(m, n, err, errlen);
      if (!rc) { snprintf(err, errlen, "not a farm node (it answered something else)"); rc = FARM_EPROTO; }
      farm__link_free(m);
      return rc;
    }
    echo = farm__rd_bytes(&r, FARM_NONCELEN);
    if (echo && sodium_memcmp(echo, nc, FARM_NONCELEN) == 0) break;
    farm__link_free(m);
  }
  int chosen = farm__rd_u8(&r);
  const unsigned char *nn = farm__rd_bytes(&r, FARM_NONCELEN);
  const unsigned char *pn = farm__rd_bytes(&r, 32);
  if (r.err || farm__rd_left(&r) || (chosen != FARM_SEAL_AES && chosen != FARM_SEAL_CHACHA) ||
      (chosen == FARM_SEAL_AES && cipher != FARM_SEAL_AES)) {
    farm__link_free(m);
    snprintf(err, errlen, "malformed handshake from the node");
    return FARM_EPROTO;
  }
  derive(key, "farm proof node", nc, nn, chosen, want, sizeof want);
  if (sodium_memcmp(want, pn, 32) != 0) {
    farm__link_free(m);
    refuse(l, "authentication failed: the node does not know the client's key");
    snprintf(err, errlen, "authentication failed: the node does not know our key "
             "(give both sides the same --key-file)");
    return FARM_EAUTH;
  }
  unsigned char nnc[FARM_NONCELEN];
  memcpy(nnc, nn, sizeof nnc);
  farm__link_free(m);
  derive(key, "farm proof client", nc, nnc, chosen, proof, sizeof proof);
  farm__msg_begin(&b, FARM_MSG_AUTH3);
  farm__buf_put(&b, proof, sizeof proof);
  if (send_msg(l, &b) < 0) { snprintf(err, errlen, "cannot send: %s", farm__link_error()); return FARM_ELINK; }
  seal(l, key, nc, nnc, chosen, 1);
  return 0;
}

/* ---- the node ------------------------------------------------------------------- */

/* An AUTH1's body: the cipher we take (AES when both ends run it fast), the
   client's nonce (pointing into r), and its word for itself, made printable. */
static int read_hello(farm_rd *r, int *cipher, const unsigned char **nc, char *who, size_t wholen) {
  int want = farm__rd_u8(r);
  *nc = farm__rd_bytes(r, FARM_NONCELEN);
  size_t k;
  const char *w = farm__rd_str(r, &k);
  if (r->err || farm__rd_left(r) || (want != FARM_SEAL_AES && want != FARM_SEAL_CHACHA)) return -1;
  snprintf(who, wholen, "%.*s", (int)(k > 100 ? 100 : k), w);
  for (char *c = who; *c; c++) if ((unsigned char)*c < ' ' || *c == 0x7f) *c = '?';
  *cipher = want == FARM_SEAL_AES && farm__seal_best() == FARM_SEAL_AES ? FARM_SEAL_AES : FARM_SEAL_CHACHA;
  return 0;
}

/* AUTH2 in b: the client's nonce, ours, and the proof that we know the key. */
static void put_answer(farm_buf *b, const unsigned char *key, const unsigned char *nc,
                       const unsigned char *nn, int cipher) {
  unsigned char proof[32];
  derive(key, "farm proof node", nc, nn, cipher, proof, sizeof proof);
  farm__msg_begin(b, FARM_MSG_AUTH2);
  farm__buf_put(b, nc, FARM_NONCELEN);
  farm__buf_u8(b, (uint8_t)cipher);
  farm__buf_put(b, nn, FARM_NONCELEN);
  farm__buf_put(b, proof, sizeof proof);
}

int farm__session_node(farm_hs *hs, farm_link *l, const unsigned char key[FARM_KEYLEN],
                       const void *msg, size_t n, char *err, size_t errlen) {
  farm_rd r;
  int type = farm__msg_open(&r, msg, n, err, errlen);
  if (type == FARM_EVERSION) {
    char why[160];
    snprintf(why, sizeof why, "%s", err);
    refuse(l, why);
    hs->state = 0;
    return FARM_EVERSION;
  }
  if (type < 0) return type;
  if (type == FARM_MSG_AUTH1) {
    const unsigned char *nc;
    if (read_hello(&r, &hs->cipher, &nc, hs->who, sizeof hs->who) < 0) {
      snprintf(err, errlen, "malformed handshake");
      hs->state = 0;
      return FARM_EPROTO;
    }
    memcpy(hs->nc, nc, FARM_NONCELEN);
    randombytes_buf(hs->nn, FARM_NONCELEN);
    farm_buf b;
    farm__buf_init(&b);
    put_answer(&b, key, hs->nc, hs->nn, hs->cipher);
    if (send_msg(l, &b) < 0) { snprintf(err, errlen, "cannot answer: %s", farm__link_error()); return FARM_ELINK; }
    hs->state = 1;
    return 0;
  }
  if (type == FARM_MSG_AUTH3 && hs->state == 1) {
    const unsigned char *pc = farm__rd_bytes(&r, 32);
    unsigned char want[32];
    hs->state = 0;
    if (r.err || farm__rd_left(&r)) { snprintf(err, errlen, "malformed handshake"); return FARM_EPROTO; }
    derive(key, "farm proof client", hs->nc, hs->nn, hs->cipher, want, sizeof want);
    if (sodium_memcmp(want, pc, 32) != 0) {
      refuse(l, "authentication failed: the client does not know the node's key");
      snprintf(err, errlen, "authentication failed");
      return FARM_EAUTH;
    }
    seal(l, key, hs->nc, hs->nn, hs->cipher, 0);
    return 1;
  }
  if (type == FARM_MSG_AUTHNO) {
    hs->state = 0;
    snprintf(err, errlen, "authentication failed (the client found that we do not know its key)");
    return FARM_EAUTH;
  }
  snprintf(err, errlen, "unexpected message %d before the handshake", type);
  hs->state = 0;
  return FARM_EPROTO;
}

/* ---- the lobby (session.h) -------------------------------------------------------- */

static void lobby_keys(const unsigned char *key, const unsigned char *nc, const unsigned char *nn,
                       int cipher, unsigned char *k64) {
  derive(key, "farm keys", nc, nn, cipher, k64, 64);
}

static int lobby_once(const char *url, const unsigned char key[FARM_KEYLEN], double timeout,
                      double until, size_t maxmsg, farm_link **out, char *err, size_t errlen) {
  farm_link *l = NULL;
  int rc = farm__lobby_link_open(&l, url, 0, err, errlen);
  if (rc < 0) return rc;
  unsigned char nc[FARM_NONCELEN], k[64];
  int cipher = farm__seal_best(), port = 0;
  farm_buf b;
  farm__buf_init(&b);
  put_hello(&b, cipher, nc);
  void *m = NULL;
  size_t n;
  farm_rd r;
  char e2[128];
  /* two requests, each answered on this connection: AUTH1 -> AUTH2, AUTH3 -> AUTHOK */
  for (int step = 0; step < 2; step++) {
    if ((rc = send_until(l, &b, until)) < 0) {
      if (rc == FARM_EAGAIN)
        snprintf(err, errlen, "no answer within %g s (is a farm node listening there?)", timeout);
      else snprintf(err, errlen, "cannot send: %s", farm__link_error());
      rc = rc == FARM_EAGAIN ? FARM_ETIMEDOUT : FARM_ELINK;
      goto out;
    }
    if ((rc = recv_until(l, until, &m, &n)) < 0) {
      if (rc == FARM_ETIMEDOUT)
        snprintf(err, errlen, "no answer within %g s (is a farm node of protocol %d listening there?)",
                 timeout, FARM_PROTOCOL);
      else snprintf(err, errlen, "link failed: %s", farm__link_error());
      if (rc != FARM_ETIMEDOUT) rc = FARM_ELINK;
      goto out;
    }
    int type = farm__msg_open(&r, m, n, e2, sizeof e2);
    if (type != (step ? FARM_MSG_AUTHOK : FARM_MSG_AUTH2)) {
      rc = refused_why(m, n, err, errlen);
      if (!rc) { snprintf(err, errlen, "not a farm node (it answered something else)"); rc = FARM_EPROTO; }
      goto out;
    }
    if (step) {
      uint64_t p = farm__rd_uvar(&r);
      if (r.err || farm__rd_left(&r) || p < 1 || p > 65535) {
        snprintf(err, errlen, "malformed handshake from the node");
        rc = FARM_EPROTO;
        goto out;
      }
      port = (int)p;
      break;
    }
    const unsigned char *echo = farm__rd_bytes(&r, FARM_NONCELEN);
    int chosen = farm__rd_u8(&r);
    const unsigned char *nn = farm__rd_bytes(&r, FARM_NONCELEN), *pn = farm__rd_bytes(&r, 32);
    if (r.err || farm__rd_left(&r) || sodium_memcmp(echo, nc, FARM_NONCELEN) != 0 ||
        (chosen != FARM_SEAL_AES && chosen != FARM_SEAL_CHACHA) ||
        (chosen == FARM_SEAL_AES && cipher != FARM_SEAL_AES)) {
      snprintf(err, errlen, "malformed handshake from the node");
      rc = FARM_EPROTO;
      goto out;
    }
    unsigned char want[32], proof[32];
    derive(key, "farm proof node", nc, nn, chosen, want, sizeof want);
    if (sodium_memcmp(want, pn, 32) != 0) {
      /* the node hears it too (its log says so); its answer is not waited for long */
      static const char no[] = "authentication failed: the node does not know the client's key";
      farm__link_free(m);
      m = NULL;
      farm__buf_init(&b);
      farm__msg_begin(&b, FARM_MSG_AUTHNO);
      farm__buf_str(&b, no, sizeof no - 1);
      farm__buf_put(&b, nc, sizeof nc);
      if (send_until(l, &b, farm__now() + 0.5) == 0) recv_until(l, farm__now() + 0.5, &m, &n);
      snprintf(err, errlen, "authentication failed: the node does not know our key "
               "(give both sides the same --key-file)");
      rc = FARM_EAUTH;
      goto out;
    }
    derive(key, "farm proof client", nc, nn, chosen, proof, sizeof proof);
    lobby_keys(key, nc, nn, chosen, k);
    cipher = chosen;
    farm__link_free(m);
    m = NULL;
    farm__buf_init(&b);
    farm__msg_begin(&b, FARM_MSG_AUTH3);
    farm__buf_put(&b, nc, sizeof nc);
    farm__buf_put(&b, proof, sizeof proof);
  }
  farm__link_free(m);
  m = NULL;
  farm__link_close(l);
  l = NULL;
  /* the link of our own, on the same host */
  char url2[300];
  const char *hp = strstr(url, "://");
  hp = hp ? hp + 3 : url;
  const char *colon = strrchr(hp, ':');
  snprintf(url2, sizeof url2, "tcp://%.*s:%d", (int)(colon ? colon - hp : (long)strlen(hp)), hp, port);
  if ((rc = farm__link_open(&l, url2, 0, maxmsg, err, errlen)) < 0) goto out;
  farm__link_seal(l, cipher, k, k + 32);
  farm__buf_init(&b);
  farm__msg_begin(&b, FARM_MSG_BEAT);     /* we speak first: the node answers HELLO */
  rc = farm__link_send(l, b.p, b.n, 1);
  farm__buf_free(&b);
  while (rc == 0 && farm__link_held(l) && farm__now() < until) {   /* (sealed: held until connected) */
    struct pollfd pfd = { .fd = farm__link_sndfd(l), .events = POLLIN };
    poll(&pfd, 1, 20);
    rc = farm__link_flush(l);
    if (rc == FARM_EAGAIN) rc = 0;
  }
  if (rc < 0 || farm__link_held(l)) {
    if (rc < 0) snprintf(err, errlen, "cannot send: %s", farm__link_error());
    else snprintf(err, errlen, "no answer within %g s on the link the node gave us (port %d: can this "
                  "host reach it? a firewall?)", timeout, port);
    rc = rc < 0 ? FARM_ELINK : FARM_ETIMEDOUT;
    goto out;
  }
  *out = l;
  l = NULL;
  rc = 0;
out:
  farm__buf_free(&b);
  farm__link_free(m);
  farm__link_close(l);
  sodium_memzero(k, sizeof k);
  return rc;
}

/* A node short of something for a moment (descriptors under a flood of
   connections) says "try again": so we do, while time is left. */
int farm__lobby_client(const char *url, const unsigned char key[FARM_KEYLEN], double timeout,
                       size_t maxmsg, farm_link **out, char *err, size_t errlen) {
  double until = farm__now() + timeout;
  for (;;) {
    int rc = lobby_once(url, key, timeout, until, maxmsg, out, err, errlen);
    if (rc != FARM_EAUTH || !strstr(err, "try again") || farm__now() + 0.2 >= until) return rc;
    usleep(200000);
  }
}

static farm_lobby_hs *lobby_find(farm_lobby *lb, const unsigned char *nc, double now) {
  for (int i = 0; i < FARM_LOBBY_PENDING; i++) {
    farm_lobby_hs *h = &lb->hs[i];
    if (h->at > 0 && now - h->at > FARM_LOBBY_DEADLINE) h->at = 0;    /* too late */
    if (h->at > 0 && sodium_memcmp(h->nc, nc, FARM_NONCELEN) == 0) return h;
  }
  return NULL;
}

void farm__lobby_refuse(farm_buf *out, const char *why) {
  farm__msg_begin(out, FARM_MSG_AUTHNO);
  farm__buf_str(out, why, strlen(why));
}

void farm__lobby_welcome(farm_buf *out, int port) {
  farm__msg_begin(out, FARM_MSG_AUTHOK);
  farm__buf_uvar(out, (uint64_t)port);
}

void farm__lobby_seal(farm_link *l, const farm_lobby_client *acc) {
  farm__link_seal(l, acc->cipher, acc->ktx, acc->krx);
}

int farm__lobby_answer(farm_lobby *lb, const unsigned char key[FARM_KEYLEN], const void *msg,
                       size_t n, farm_buf *out, farm_lobby_client *acc, char *err, size_t errlen) {
  farm_rd r;
  out->n = 0;
  int type = farm__msg_open(&r, msg, n, err, errlen);
  if (type == FARM_EVERSION) {
    char why[160];
    snprintf(why, sizeof why, "%s", err);
    farm__lobby_refuse(out, why);
    return 0;
  }
  if (type < 0) return 0;
  double now = farm__now();
  if (type == FARM_MSG_AUTH1) {
    const unsigned char *nc;
    int cipher;
    char who[128];
    if (read_hello(&r, &cipher, &nc, who, sizeof who) < 0) {
      snprintf(err, errlen, "malformed hello");
      return 0;
    }
    farm_lobby_hs *h = lobby_find(lb, nc, now);
    if (!h) {                      /* a new hello (a repeated one is answered the same) */
      if (now - lb->window >= 1.0) { lb->window = now; lb->answered = 0; }
      if (lb->answered >= FARM_LOBBY_RATE) {   /* (counted, and logged once a minute) */
        lb->unanswered++;
        return 0;
      }
      lb->answered++;
      h = &lb->hs[0];              /* a free slot, else the oldest */
      for (int i = 0; i < FARM_LOBBY_PENDING && h->at > 0; i++)
        if (lb->hs[i].at < h->at) h = &lb->hs[i];
      memcpy(h->nc, nc, FARM_NONCELEN);
      randombytes_buf(h->nn, FARM_NONCELEN);
      h->cipher = cipher;
      h->at = now;
      snprintf(h->who, sizeof h->who, "%s", who);
    }
    put_answer(out, key, h->nc, h->nn, h->cipher);
    return 0;
  }
  if (type == FARM_MSG_AUTH3) {
    const unsigned char *nc = farm__rd_bytes(&r, FARM_NONCELEN), *pc = farm__rd_bytes(&r, 32);
    if (r.err || farm__rd_left(&r)) { snprintf(err, errlen, "malformed handshake"); return 0; }
    farm_lobby_hs *h = lobby_find(lb, nc, now);
    if (!h) {
      snprintf(err, errlen, "a proof for no hello of the last %g s", FARM_LOBBY_DEADLINE);
      farm__lobby_refuse(out, "the handshake took too long; try again");
      return 0;
    }
    unsigned char want[32], k[64];
    derive(key, "farm proof client", h->nc, h->nn, h->cipher, want, sizeof want);
    h->at = 0;                     /* one proof per hello */
    snprintf(acc->who, sizeof acc->who, "%s", h->who);
    if (sodium_memcmp(want, pc, 32) != 0) {
      lb->refused++;
      snprintf(err, errlen, "authentication failed: the client does not know this node's key");
      farm__lobby_refuse(out, "authentication failed: the client does not know the node's key");
      return FARM_EAUTH;
    }
    lobby_keys(key, h->nc, h->nn, h->cipher, k);
    acc->cipher = h->cipher;
    memcpy(acc->krx, k, 32);       /* the first half seals client->node */
    memcpy(acc->ktx, k + 32, 32);
    sodium_memzero(k, sizeof k);
    return 1;
  }
  if (type == FARM_MSG_AUTHNO) {    /* the client found that we do not know its key */
    size_t k;
    farm__rd_str(&r, &k);
    const unsigned char *nc = farm__rd_bytes(&r, FARM_NONCELEN);
    farm_lobby_hs *h = r.err || farm__rd_left(&r) ? NULL : lobby_find(lb, nc, now);
    if (!h) { snprintf(err, errlen, "malformed handshake"); return 0; }
    snprintf(acc->who, sizeof acc->who, "%s", h->who);
    h->at = 0;
    lb->refused++;
    snprintf(err, errlen, "authentication failed: the client found that this node does not know its key");
    farm__lobby_refuse(out, "so be it");
    return FARM_EAUTH;
  }
  snprintf(err, errlen, "unexpected message %d in the lobby", type);
  return 0;
}
