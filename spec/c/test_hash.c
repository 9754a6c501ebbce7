/*
 * test_hash.c -- the hash table (hash.c) against a plain array that knows the
 * answer: puts, replaces, gets and deletes of keys that crowd (ids counting
 * up, keys equal in their low bits, key 0), growth, a clear that keeps the
 * room, and a walk that sees every entry once. A long random run of puts and
 * deletes checks deletion by backward shift: after each step every key is
 * found and no deleted one is. Prints TAP.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "hash.h"

static int n = 0, fails = 0;
#define OK(c, what) do { int ok_ = (c); n++; if (!ok_) fails++; printf("%sok %d - %s\n", ok_ ? "" : "not ", n, what); fflush(stdout); } while (0)

#define NK 5000
static uint64_t keys[NK];
static int in[NK];                 /* the model: keys[i] is in the table */
static char vals[NK];              /* &vals[i]: keys[i]'s value */

static uint64_t rng = 88172645463325252ULL;
static uint64_t next(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }

/* the table holds exactly what the model says */
static int agrees(const farm_hash *h) {
  size_t count = 0;
  for (int i = 0; i < NK; i++) {
    void *v = farm__hash_get(h, keys[i]);
    if (in[i] ? v != &vals[i] : v != NULL) return 0;
    count += in[i];
  }
  return count == h->n && 2 * h->n <= h->cap;
}

int main(void) {
  farm_hash h;
  farm__hash_init(&h);
  OK(farm__hash_get(&h, 1) == NULL && farm__hash_del(&h, 1) == NULL && farm__hash_next(&h, 0, NULL, NULL) == 0,
     "an empty table finds nothing, deletes nothing, walks nothing");

  /* ids counting up, then keys alike in their low 32 bits, then 0 */
  for (int i = 0; i < NK; i++)
    keys[i] = i < 2000 ? (uint64_t)i + 1 : i < 4999 ? ((uint64_t)i << 32) | 7 : 0;
  int okput = 1;
  for (int i = 0; i < NK; i++) { okput &= farm__hash_put(&h, keys[i], &vals[i]) == 0; in[i] = 1; }
  OK(okput && h.n == NK, "5000 keys put (ids, keys equal in their low bits, 0)");
  OK(agrees(&h), "each is found with its value; the table is at most half full");
  OK(farm__hash_put(&h, 0, &vals[1]) == 0 && farm__hash_get(&h, 0) == &vals[1] && h.n == NK,
     "a put of a key there replaces its value");
  farm__hash_put(&h, 0, &vals[NK - 1]);

  size_t seen = 0, i = 0;
  uint64_t k;
  void *v;
  int walk_ok = 1;
  while ((i = farm__hash_next(&h, i, &k, &v))) {
    seen++;
    walk_ok &= v >= (void *)vals && v < (void *)(vals + NK) && keys[(char *)v - vals] == k;
  }
  OK(walk_ok && seen == NK, "a walk meets every entry once, with its key");

  int okdel = 1;
  for (int j = 0; j < NK; j += 2) { okdel &= farm__hash_del(&h, keys[j]) == &vals[j]; in[j] = 0; }
  OK(okdel && agrees(&h), "deleting every other key: the others are still found, the deleted are not");
  OK(farm__hash_del(&h, keys[0]) == NULL, "deleting a key not there returns NULL");

  size_t cap = h.cap;
  farm__hash_clear(&h);
  memset(in, 0, sizeof in);
  OK(h.n == 0 && h.cap == cap && agrees(&h), "clear empties it and keeps its room");

  /* a long random run of puts and deletes over few home slots */
  for (int j = 0; j < NK; j++) keys[j] = next() & 0xffff;   /* duplicates: one model entry per key */
  for (int j = 0; j < NK; j++)
    for (int m = 0; m < j; m++) if (keys[m] == keys[j]) { keys[j] = next() | (1ULL << 40); m = -1; }
  int run_ok = 1;
  for (int step = 0; step < 200000 && run_ok; step++) {
    int j = (int)(next() % NK);
    if (in[j]) { run_ok &= farm__hash_del(&h, keys[j]) == &vals[j]; in[j] = 0; }
    else { run_ok &= farm__hash_put(&h, keys[j], &vals[j]) == 0; in[j] = 1; }
    if (step % 997 == 0) run_ok &= agrees(&h);
  }
  OK(run_ok && agrees(&h), "200000 random puts and deletes agree with the model all along");

  farm__hash_free(&h);
  OK(h.slot == NULL && h.n == 0 && h.cap == 0, "free leaves an empty table");
  printf("1..%d\n", n);
  return fails != 0;
}
