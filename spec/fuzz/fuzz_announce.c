/*
 * fuzz_announce.c -- libFuzzer target for what a client that lets nodes join
 * reads from anyone (core/announce.c: farm__announce_check, behind `farm run
 * --listen` and `--discover`): a datagram or message of any bytes.
 *
 * The input is checked under a key the fuzzer never sees: it must be refused
 * (the fuzzer cannot forge the MAC), with one of the codes announce.h gives and
 * a message, and never crash or read out of bounds. The same bytes, and the
 * same bytes written over a good record of that key, are checked too: a record
 * changed anywhere must fail.
 *
 *   make fuzz && ./build-fuzz/fuzz_announce -max_total_time=60
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sodium.h>
#include "farm.h"
#include "announce.h"
#include "session.h"

static unsigned char key[FARM_KEYLEN];
static unsigned char good[FARM_ANNOUNCE_LEN];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc; (void)argv;
  if (sodium_init() < 0) abort();
  randombytes_buf(key, sizeof key);
  struct in_addr a;
  inet_pton(AF_INET, "10.203.0.2", &a);
  farm__announce_make(good, key, a, 7070, farm__announce_clock());
  return 0;
}

static void refused(const void *p, size_t n) {
  farm_announce a;
  char err[300] = "";
  int rc = farm__announce_check(p, n, key, farm__announce_clock(), &a, err, sizeof err);
  if (rc != FARM_EPROTO && rc != FARM_EAUTH) abort();   /* accepted, or refused past the MAC */
  if (!err[0]) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  refused(data, size);
  /* the input laid over a good record: unless it changes nothing, refused */
  unsigned char t[FARM_ANNOUNCE_LEN];
  memcpy(t, good, sizeof t);
  size_t at = size ? data[0] % sizeof t : 0, k = size > 1 ? size - 1 : 0;
  if (k > sizeof t - at) k = sizeof t - at;
  if (k) memcpy(t + at, data + 1, k);
  if (memcmp(t, good, sizeof t) != 0) refused(t, sizeof t);
  return 0;
}
