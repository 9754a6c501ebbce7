/*
 * test_wire.c -- what stands between a node and whoever reaches its port, driven
 * byte by byte from C, printing TAP:
 *
 *   - every reader of core/buf.c at its boundary: n bytes with n - 1 left fail,
 *     n with n left succeed (a check one byte too kind reads past a message);
 *   - both node-side checks of the client's proof (core/session.c:
 *     farm__session_node, the PAIR link a Slurm node dials back on, and
 *     farm__lobby_answer, a standing or SSH node's lobby): the right key with a
 *     proof wrong in any one of its 32 bytes is refused, the right proof let in;
 *   - a sealed link (core/transport.c) fed raw frames by a peer that holds the
 *     key and can send any bytes: a frame already accepted, two frames swapped,
 *     or one skipped, fail with FARM_EAUTH.
 *
 * The "peer that can send any bytes" is an unsealed link: it sends what it is
 * given, byte for byte, and receives the sealed frames of a sealed sender as
 * they are on the wire, to be replayed or reordered.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sodium.h>
#include "farm.h"
#include "buf.h"
#include "proto.h"
#include "session.h"
#include "transport.h"

static int n_test = 0, n_fail = 0;

static void ok(int cond, const char *what) {
  n_test++;
  if (!cond) n_fail++;
  printf("%sok %d - %s\n", cond ? "" : "not ", n_test, what);
  fflush(stdout);
}

/* ---- the readers at their boundaries ------------------------------------------- */

/* Read the encoding enc[0..n) with the reader `kind`, given only `have` bytes
   of it: 1 when the read succeeded (no err, value right, all consumed), 0 when
   it failed and left the reader failed, 2 or -1 otherwise. */
enum { RD_U8, RD_BYTES, RD_U64LE, RD_UVAR, RD_SVAR, RD_STR };

static int read_ok(int kind, const unsigned char *enc, size_t have, size_t want_n,
                   uint64_t want_v, int64_t want_s) {
  unsigned char *copy = malloc(have ? have : 1);   /* exactly have bytes: ASan sees a read past them */
  memcpy(copy, enc, have);
  farm_rd r;
  farm__rd_init(&r, copy, have);
  int good = 0;
  size_t k = 0;
  const void *q;
  switch (kind) {
  case RD_U8: { uint8_t v = farm__rd_u8(&r); good = !r.err && v == (uint8_t)want_v; break; }
  case RD_BYTES: q = farm__rd_bytes(&r, want_n); good = q != NULL && !r.err && q == (const void *)copy; break;
  case RD_U64LE: { uint64_t v = farm__rd_u64le(&r); good = !r.err && v == want_v; break; }
  case RD_UVAR: { uint64_t v = farm__rd_uvar(&r); good = !r.err && v == want_v; break; }
  case RD_SVAR: { int64_t v = farm__rd_svar(&r); good = !r.err && v == want_s; break; }
  case RD_STR: q = farm__rd_str(&r, &k); good = q != NULL && !r.err && k == want_n; break;
  }
  /* a failed read leaves the reader failed and at its end: nothing after it reads */
  int sticky = good || (r.err && farm__rd_left(&r) == 0 && farm__rd_bytes(&r, 0) == NULL);
  size_t left = farm__rd_left(&r);
  free(copy);
  if (good) return left == 0 ? 1 : 2;   /* 2: read, but not to the end (or past it) */
  return sticky ? 0 : -1;
}

/* The whole encoding reads; one byte short fails (and stays failed). */
static void boundary(const char *what, int kind, const unsigned char *enc, size_t n,
                     size_t want_n, uint64_t want_v, int64_t want_s) {
  char line[160];
  snprintf(line, sizeof line, "%s: %zu bytes with %zu left read", what, n, n);
  ok(read_ok(kind, enc, n, want_n, want_v, want_s) == 1, line);
  snprintf(line, sizeof line, "%s: %zu bytes with %zu left fail, and the reader stays failed",
           what, n, n - 1);
  ok(read_ok(kind, enc, n - 1, want_n, want_v, want_s) == 0, line);
}

static void test_readers(void) {
  unsigned char raw[40];
  for (int i = 0; i < 40; i++) raw[i] = (unsigned char)(0xa0 + i);
  boundary("u8", RD_U8, raw, 1, 0, 0xa0, 0);
  size_t sizes[] = { 1, 2, 4, 8, 32, 40 };
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
    char what[32];
    snprintf(what, sizeof what, "bytes(%zu)", sizes[i]);
    boundary(what, RD_BYTES, raw, sizes[i], sizes[i], 0, 0);
  }
  unsigned char le[8] = { 1, 2, 3, 4, 5, 6, 7, 0x88 };
  boundary("u64le", RD_U64LE, le, 8, 0, 0x8807060504030201ull, 0);

  uint64_t uv[] = { 0, 127, 128, 300, 1ull << 35, 1ull << 63, UINT64_MAX };
  for (size_t i = 0; i < sizeof uv / sizeof *uv; i++) {
    farm_buf b;
    farm__buf_init(&b);
    farm__buf_uvar(&b, uv[i]);
    char what[64];
    snprintf(what, sizeof what, "uvar(%llu)", (unsigned long long)uv[i]);
    boundary(what, RD_UVAR, (unsigned char *)b.p, b.n, 0, uv[i], 0);
    farm__buf_free(&b);
  }
  int64_t sv[] = { 0, -1, 63, -64, 64, INT64_MIN, INT64_MAX };
  for (size_t i = 0; i < sizeof sv / sizeof *sv; i++) {
    farm_buf b;
    farm__buf_init(&b);
    farm__buf_svar(&b, sv[i]);
    char what[64];
    snprintf(what, sizeof what, "svar(%lld)", (long long)sv[i]);
    boundary(what, RD_SVAR, (unsigned char *)b.p, b.n, 0, 0, sv[i]);
    farm__buf_free(&b);
  }
  /* an uvar of 11 bytes, or one whose tenth byte carries more than bit 63 */
  unsigned char longv[11];
  memset(longv, 0x80, 10);
  longv[10] = 0;
  ok(read_ok(RD_UVAR, longv, 11, 0, 0, 0) == 0, "uvar: 11 bytes fail");
  memset(longv, 0xff, 9);
  longv[9] = 2;
  ok(read_ok(RD_UVAR, longv, 10, 0, 0, 0) == 0, "uvar: a tenth byte past 64 bits fails");

  size_t lens[] = { 0, 1, 3, 127, 128, 300 };
  for (size_t i = 0; i < sizeof lens / sizeof *lens; i++) {
    farm_buf b;
    farm__buf_init(&b);
    char *s = malloc(lens[i] + 1);
    memset(s, 'x', lens[i]);
    farm__buf_str(&b, s, lens[i]);
    char what[64];
    snprintf(what, sizeof what, "str of %zu", lens[i]);
    boundary(what, RD_STR, (unsigned char *)b.p, b.n, lens[i], 0, 0);
    free(s);
    farm__buf_free(&b);
  }
  /* a length that claims one byte more than follows, then bytes after it */
  unsigned char claim[5] = { 4, 'a', 'b', 'c' };
  ok(read_ok(RD_STR, claim, 4, 4, 0, 0) == 0, "str: a length one past the end fails");
}

/* ---- the handshake's proof, at both node-side checks ---------------------------- */

static const unsigned char KEY[FARM_KEYLEN] = { 0x5a, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 };

/* session.h: proof_x = BLAKE2b-256(key = K, "farm proof " x | nonce_c | nonce_n | cipher);
   written out here again so that a change on one side only fails here. */
static void derive(const char *label, const unsigned char *nc, const unsigned char *nn, int cipher,
                   unsigned char *out, size_t outlen) {
  crypto_generichash_state st;
  unsigned char c = (unsigned char)cipher;
  crypto_generichash_init(&st, KEY, FARM_KEYLEN, outlen);
  crypto_generichash_update(&st, (const unsigned char *)label, strlen(label));
  crypto_generichash_update(&st, nc, FARM_NONCELEN);
  crypto_generichash_update(&st, nn, FARM_NONCELEN);
  crypto_generichash_update(&st, &c, 1);
  crypto_generichash_final(&st, out, outlen);
}

static void auth1(farm_buf *b, const unsigned char *nc) {
  farm__msg_begin(b, FARM_MSG_AUTH1);
  farm__buf_u8(b, FARM_SEAL_CHACHA);
  farm__buf_put(b, nc, FARM_NONCELEN);
  farm__buf_str(b, "test_wire", 9);
}

/* An AUTH2's nonce_n and cipher, after checking it echoes nc and proves the key. */
static int read_auth2(const void *m, size_t n, const unsigned char *nc, unsigned char *nn, int *cipher) {
  farm_rd r;
  char err[128];
  if (farm__msg_open(&r, m, n, err, sizeof err) != FARM_MSG_AUTH2) return -1;
  const unsigned char *echo = farm__rd_bytes(&r, FARM_NONCELEN);
  *cipher = farm__rd_u8(&r);
  const unsigned char *n2 = farm__rd_bytes(&r, FARM_NONCELEN), *pn = farm__rd_bytes(&r, 32);
  if (r.err || farm__rd_left(&r) || memcmp(echo, nc, FARM_NONCELEN) != 0) return -1;
  memcpy(nn, n2, FARM_NONCELEN);
  unsigned char want[32];
  derive("farm proof node", nc, nn, *cipher, want, sizeof want);
  return memcmp(want, pn, 32) == 0 ? 0 : -1;
}

static int recv_wait(farm_link *l, void **m, size_t *n) {
  for (int i = 0; i < 2000; i++) {
    int rc = farm__link_recv(l, m, n, 1);
    if (rc != FARM_EAGAIN) return rc;
    usleep(1000);
  }
  return FARM_ETIMEDOUT;
}

static void drain(farm_link *l) {
  void *m;
  size_t n;
  while (farm__link_recv(l, &m, &n, 1) == 0) farm__link_free(m);
}

/* farm__session_node: a hello, then a proof whose byte `flip` is wrong (-1: none).
   Returns what the node's side returned for the proof. */
static int pair_handshake(farm_link *node_end, farm_link *client_end, int flip) {
  farm_hs hs;
  memset(&hs, 0, sizeof hs);
  unsigned char nc[FARM_NONCELEN], nn[FARM_NONCELEN], pc[32];
  randombytes_buf(nc, sizeof nc);
  farm_buf b;
  farm__buf_init(&b);
  auth1(&b, nc);
  char err[256];
  int rc = farm__session_node(&hs, node_end, KEY, b.p, b.n, err, sizeof err);
  void *m = NULL;
  size_t n;
  int cipher = 0;
  if (rc != 0 || recv_wait(client_end, &m, &n) != 0 || read_auth2(m, n, nc, nn, &cipher) != 0) {
    farm__link_free(m);
    farm__buf_free(&b);
    return -1000;
  }
  farm__link_free(m);
  derive("farm proof client", nc, nn, cipher, pc, sizeof pc);
  if (flip >= 0) pc[flip] ^= 0x01;
  farm__msg_begin(&b, FARM_MSG_AUTH3);
  farm__buf_put(&b, pc, sizeof pc);
  rc = farm__session_node(&hs, node_end, KEY, b.p, b.n, err, sizeof err);
  farm__buf_free(&b);
  if (rc == FARM_EAUTH) {           /* the client is told, before anything else */
    farm_rd r;
    m = NULL;
    if (recv_wait(client_end, &m, &n) != 0 ||
        farm__msg_open(&r, m, n, err, sizeof err) != FARM_MSG_AUTHNO) rc = -2000;
    farm__link_free(m);
  }
  drain(client_end);
  if (rc == 1) {
    /* sealed under session.h's keys: the first half client->node, the second back */
    unsigned char k[64];
    derive("farm keys", nc, nn, cipher, k, sizeof k);
    farm__link_seal(client_end, cipher, k, k + 32);
    m = NULL;
    if (farm__link_send(client_end, "ping", 5, 0) != 0 || recv_wait(node_end, &m, &n) != 0 ||
        n != 5 || memcmp(m, "ping", 5) != 0) rc = -3000;
    farm__link_free(m);
    m = NULL;
    if (rc == 1 && (farm__link_send(node_end, "pong", 5, 0) != 0 || recv_wait(client_end, &m, &n) != 0 ||
                    n != 5 || memcmp(m, "pong", 5) != 0)) rc = -3001;
    farm__link_free(m);
    farm__link_unseal(client_end);
    farm__link_unseal(node_end);
  }
  return rc;
}

/* farm__lobby_answer: the same, at a lobby. acc gets the keys when let in. */
static int lobby_handshake(farm_lobby *lb, int flip, farm_lobby_client *acc, int *cipher,
                           unsigned char *nc, unsigned char *nn) {
  unsigned char pc[32];
  randombytes_buf(nc, FARM_NONCELEN);
  farm_buf b, out;
  farm__buf_init(&b);
  farm__buf_init(&out);
  auth1(&b, nc);
  char err[256];
  int rc = farm__lobby_answer(lb, KEY, b.p, b.n, &out, acc, err, sizeof err);
  if (rc != 0 || read_auth2(out.p, out.n, nc, nn, cipher) != 0) {
    farm__buf_free(&b);
    farm__buf_free(&out);
    return -1000;
  }
  derive("farm proof client", nc, nn, *cipher, pc, sizeof pc);
  if (flip >= 0) pc[flip] ^= 0x80;
  farm__msg_begin(&b, FARM_MSG_AUTH3);
  farm__buf_put(&b, nc, FARM_NONCELEN);
  farm__buf_put(&b, pc, sizeof pc);
  rc = farm__lobby_answer(lb, KEY, b.p, b.n, &out, acc, err, sizeof err);
  /* a refusal is answered with an AUTHNO, a welcome is left to the caller */
  if (rc == FARM_EAUTH) {
    farm_rd r;
    if (farm__msg_open(&r, out.p, out.n, err, sizeof err) != FARM_MSG_AUTHNO) rc = -2000;
  }
  /* one proof per hello: the same AUTH3 again (a replay) lets nobody in */
  if (rc == 1) {
    farm_lobby_client again;
    if (farm__lobby_answer(lb, KEY, b.p, b.n, &out, &again, err, sizeof err) == 1) rc = -4000;
  }
  farm__buf_free(&b);
  farm__buf_free(&out);
  return rc;
}

static void test_proofs(const char *base) {
  char url[300], err[256];
  farm_link *node_end = NULL, *client_end = NULL;
  snprintf(url, sizeof url, "ipc://%s-pair", base);
  if (farm__link_open(&node_end, url, 1, 1 << 20, err, sizeof err) < 0 ||
      farm__link_open(&client_end, url, 0, 1 << 20, err, sizeof err) < 0) {
    unlink(url + 6);
    ok(0, err);
    return;
  }
  unlink(url + 6);                  /* connected: the path is not needed again */
  ok(pair_handshake(node_end, client_end, -1) == 1, "PAIR: the right proof seals the link, "
     "under the keys of session.h both ways");
  int refused = 0, last = 0, first = 0;
  for (int i = 0; i < 32; i++) {
    int rc = pair_handshake(node_end, client_end, i);
    refused += rc == FARM_EAUTH;
    if (i == 0) first = rc == FARM_EAUTH;
    if (i == 31) last = rc == FARM_EAUTH;
  }
  ok(first, "PAIR: a proof wrong in its first byte is refused");
  ok(last, "PAIR: a proof wrong only in its last byte is refused");
  ok(refused == 32, "PAIR: a proof wrong in any one of its 32 bytes is refused");
  farm__link_close(client_end);
  farm__link_close(node_end);

  farm_lobby *lb = calloc(1, sizeof *lb);
  farm_lobby_client acc;
  unsigned char nc[FARM_NONCELEN], nn[FARM_NONCELEN], k[64];
  int cipher = 0;
  int rc = lobby_handshake(lb, -1, &acc, &cipher, nc, nn);
  derive("farm keys", nc, nn, cipher, k, sizeof k);
  ok(rc == 1 && acc.cipher == cipher && memcmp(acc.krx, k, 32) == 0 && memcmp(acc.ktx, k + 32, 32) == 0,
     "lobby: the right proof lets the client in, with the keys of session.h, once (not on a replay)");
  refused = last = first = 0;
  for (int i = 0; i < 32; i++) {
    rc = lobby_handshake(lb, i, &acc, &cipher, nc, nn);
    refused += rc == FARM_EAUTH;
    if (i == 0) first = rc == FARM_EAUTH;
    if (i == 31) last = rc == FARM_EAUTH;
  }
  ok(first, "lobby: a proof wrong in its first byte is refused");
  ok(last, "lobby: a proof wrong only in its last byte is refused");
  ok(refused == 32 && lb->refused == 32, "lobby: a proof wrong in any one of its 32 bytes is refused, and counted");
  free(lb);
}

/* ---- a sealed link fed replayed and reordered frames ----------------------------- */

typedef struct frames {
  void *m[3];
  size_t n[3];
} frames;

/* Three frames "zero", "one", "two" sealed by a sealed sender under k1, as they
   are on the wire (received by an unsealed link). */
static int capture(const char *base, int cipher, const unsigned char *k1, const unsigned char *k2,
                   frames *f) {
  char url[300], err[256];
  farm_link *s = NULL, *raw = NULL;
  snprintf(url, sizeof url, "ipc://%s-capture", base);
  if (farm__link_open(&raw, url, 1, 1 << 20, err, sizeof err) < 0 ||
      farm__link_open(&s, url, 0, 1 << 20, err, sizeof err) < 0) {
    unlink(url + 6);
    return -1;
  }
  unlink(url + 6);                  /* connected: the path is not needed again */
  farm__link_seal(s, cipher, k1, k2);
  static const char *words[3] = { "zero", "one", "two" };
  int rc = 0;
  for (int i = 0; i < 3 && rc == 0; i++) {
    rc = farm__link_send(s, words[i], strlen(words[i]) + 1, 0);
    if (rc == 0) rc = recv_wait(raw, &f->m[i], &f->n[i]);
  }
  farm__link_close(s);
  farm__link_close(raw);
  return rc;
}

/* A fresh sealed receiver (keys swapped: it opens what the sender sealed),
   fed the captured frames in the order given by idx; the results of each
   receive in rcs, the words opened in got. */
static void feed(const char *base, int cipher, const unsigned char *k1, const unsigned char *k2,
                 const frames *f, const int *idx, int count, int *rcs, char got[][8]) {
  char url[300], err[256];
  static int serial;
  farm_link *rx = NULL, *raw = NULL;
  snprintf(url, sizeof url, "ipc://%s-feed%d", base, serial++);
  for (int i = 0; i < count; i++) rcs[i] = -9999, got[i][0] = 0;
  if (farm__link_open(&rx, url, 1, 1 << 20, err, sizeof err) < 0 ||
      farm__link_open(&raw, url, 0, 1 << 20, err, sizeof err) < 0) {
    unlink(url + 6);
    return;
  }
  unlink(url + 6);
  farm__link_seal(rx, cipher, k2, k1);
  for (int i = 0; i < count; i++) {
    if (farm__link_send(raw, f->m[idx[i]], f->n[idx[i]], 0) != 0) break;
    void *m;
    size_t n;
    rcs[i] = recv_wait(rx, &m, &n);
    if (rcs[i] == 0) {
      snprintf(got[i], 8, "%.*s", (int)(n < 7 ? n : 7), (char *)m);
      farm__link_free(m);
    }
  }
  farm__link_close(raw);
  farm__link_close(rx);
}

static void test_sealed(const char *base, int cipher, const char *name) {
  unsigned char k1[32], k2[32];
  randombytes_buf(k1, sizeof k1);
  randombytes_buf(k2, sizeof k2);
  frames f = {0};
  char line[160];
  int rcs[4];
  char got[4][8];
  if (capture(base, cipher, k1, k2, &f) != 0) {
    snprintf(line, sizeof line, "%s: three sealed frames captured", name);
    ok(0, line);
    return;
  }
  int in_order[3] = { 0, 1, 2 };
  feed(base, cipher, k1, k2, &f, in_order, 3, rcs, got);
  snprintf(line, sizeof line, "%s: frames in order open (the captured bytes are the wire's)", name);
  ok(rcs[0] == 0 && rcs[1] == 0 && rcs[2] == 0 && strcmp(got[0], "zero") == 0 &&
     strcmp(got[2], "two") == 0, line);

  int replay[2] = { 0, 0 };
  feed(base, cipher, k1, k2, &f, replay, 2, rcs, got);
  snprintf(line, sizeof line, "%s: a frame already accepted, sent again, fails with FARM_EAUTH", name);
  ok(rcs[0] == 0 && rcs[1] == FARM_EAUTH, line);

  int replay_later[3] = { 0, 1, 1 };
  feed(base, cipher, k1, k2, &f, replay_later, 3, rcs, got);
  snprintf(line, sizeof line, "%s: the last frame accepted, sent again, fails with FARM_EAUTH", name);
  ok(rcs[0] == 0 && rcs[1] == 0 && rcs[2] == FARM_EAUTH, line);

  int swapped[2] = { 1, 0 };
  feed(base, cipher, k1, k2, &f, swapped, 2, rcs, got);
  snprintf(line, sizeof line, "%s: two frames swapped: the first to come fails with FARM_EAUTH", name);
  ok(rcs[0] == FARM_EAUTH, line);

  int swapped_later[3] = { 0, 2, 1 };
  feed(base, cipher, k1, k2, &f, swapped_later, 3, rcs, got);
  snprintf(line, sizeof line, "%s: frames 1 and 2 swapped after 0: frame 2 fails with FARM_EAUTH", name);
  ok(rcs[0] == 0 && rcs[1] == FARM_EAUTH, line);

  int skipped[2] = { 0, 2 };
  feed(base, cipher, k1, k2, &f, skipped, 2, rcs, got);
  snprintf(line, sizeof line, "%s: a frame skipped (dropped): the next fails with FARM_EAUTH", name);
  ok(rcs[0] == 0 && rcs[1] == FARM_EAUTH, line);

  /* the right bytes under the wrong direction's key */
  int one[1] = { 0 };
  feed(base, cipher, k2, k1, &f, one, 1, rcs, got);
  snprintf(line, sizeof line, "%s: a frame sealed the other way fails with FARM_EAUTH", name);
  ok(rcs[0] == FARM_EAUTH, line);
  for (int i = 0; i < 3; i++) farm__link_free(f.m[i]);
}

int main(void) {
  if (sodium_init() < 0) { printf("1..0 # SKIP libsodium does not start\n"); return 0; }
  /* the links' ipc paths: each unlinked as soon as both ends are open, so
     that nothing is left behind, even when a bug makes this test crash */
  char base[64];
  snprintf(base, sizeof base, "/tmp/farm-test-wire-%ld", (long)getpid());
  test_readers();
  test_proofs(base);
  test_sealed(base, FARM_SEAL_CHACHA, "ChaCha20-Poly1305");
  if (crypto_aead_aes256gcm_is_available()) test_sealed(base, FARM_SEAL_AES, "AES-256-GCM");
  printf("1..%d\n", n_test);
  return n_fail != 0;
}
