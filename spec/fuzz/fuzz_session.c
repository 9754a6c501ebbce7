/*
 * fuzz_session.c -- libFuzzer target for the node's side of the handshake
 * (core/session.c: farm__session_node on a link, and farm__lobby_answer, a
 * node's lobby): what anyone who reaches a node's port can send before it is
 * authenticated.
 *
 * Each input is a sequence of messages (u16le length + bytes, the first byte of
 * each choosing AUTH1, AUTH3, AUTHNO or a raw header); they reach one handshake
 * in order, over a real link whose other end drains the answers. The handshake
 * must refuse what is malformed, never seal the link without the key's proof
 * (the fuzzer cannot forge it), and never crash, read out of bounds or leak.
 * The same messages reach a lobby, which must never accept a client (the
 * fuzzer cannot forge a proof there either) and answers only in whole messages
 * of its own, at most FARM_LOBBY_MAXMSG bytes.
 *
 *   make fuzz && ./build-fuzz/fuzz_session -max_total_time=60
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sodium.h>
#include "farm.h"
#include "proto.h"
#include "session.h"
#include "transport.h"

static farm_link *node_end, *client_end;

static void drain(void) {
  void *m;
  size_t n;
  while (farm__link_recv(client_end, &m, &n, 1) == 0) farm__link_free(m);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc; (void)argv;
  char url[64], err[256];
  if (sodium_init() < 0) abort();
  snprintf(url, sizeof url, "ipc:///tmp/farm-fuzz-session-%ld", (long)getpid());
  if (farm__link_open(&node_end, url, 1, 1 << 20, err, sizeof err) < 0 ||
      farm__link_open(&client_end, url, 0, 1 << 20, err, sizeof err) < 0) {
    fprintf(stderr, "fuzz_session: %s\n", err);
    abort();
  }
  unlink(url + 6);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const unsigned char key[FARM_KEYLEN] = { 7 };
  static farm_lobby lb;            /* (kept from input to input, as a node's is) */
  farm_hs hs;
  memset(&hs, 0, sizeof hs);
  farm_buf out;
  farm__buf_init(&out);
  size_t at = 0;
  while (at + 3 <= size) {
    size_t n = (size_t)data[at] | (size_t)data[at + 1] << 8;
    uint8_t kind = data[at + 2];
    at += 3;
    if (n > size - at) n = size - at;
    static const uint8_t types[4] = { FARM_MSG_AUTH1, FARM_MSG_AUTH3, FARM_MSG_AUTHNO, 0 };
    uint8_t *msg = malloc(n + 4);
    size_t len;
    if ((kind & 3) == 3) {                     /* raw bytes: any header at all */
      memcpy(msg, data + at, n);
      len = n;
    } else {
      msg[0] = 'F'; msg[1] = 'm'; msg[2] = FARM_PROTOCOL; msg[3] = types[kind & 3];
      memcpy(msg + 4, data + at, n);
      len = n + 4;
    }
    at += n;
    char err[256];
    err[0] = 0;
    int rc = farm__session_node(&hs, node_end, key, msg, len, err, sizeof err);
    if (rc == 1) abort();                      /* sealed without the key's proof */
    if (rc < 0 && !err[0]) abort();            /* a refusal always says why */
    drain();
    farm_lobby_client acc;
    err[0] = 0;
    rc = farm__lobby_answer(&lb, key, msg, len, &out, &acc, err, sizeof err);
    free(msg);
    if (rc == 1) abort();                      /* let in without the key's proof */
    if (rc < 0 && !err[0]) abort();
    if (out.n > FARM_LOBBY_MAXMSG) abort();
    if (out.n && (out.n < 4 || memcmp(out.p, "Fm", 2) != 0)) abort();
  }
  farm__buf_free(&out);
  farm__link_unseal(node_end);
  return 0;
}
